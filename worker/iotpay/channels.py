"""IOTPay's API families and channels: which family answers for a channel, and what each allows.

IOTPay has two APIs. V3 serves the card channels (`PF_CC`, `UPI_EX`): JSON, CAD only. v1
serves everything else (WeChat, Alipay, POS terminals such as `CC_PAX`...): form fields, CAD
or USD. An order belongs to one family for its whole life: its notifies, queries and refunds.
"""

from __future__ import annotations

from typing import Literal

Family = Literal["v3", "v1"]
FAMILIES: tuple[Family, ...] = ("v3", "v1")
V3_CHANNELS = frozenset({"PF_CC", "UPI_EX"})
# POS terminals: polled every 2 seconds (IOTPay's POS guide), ids prefixed CP by the gateway
POS_CHANNELS = frozenset({"CC_PAX"})
CURRENCIES = frozenset({"CAD", "USD"})
V3_CURRENCIES = frozenset({"CAD"})


def family_for_channel(channel: str) -> Family:
    """Which API family answers for a channel: V3 for cards (PF_CC, UPI_EX), v1 for the rest."""
    return "v3" if channel in V3_CHANNELS else "v1"
