"""Merchants known to this worker: their mchId, signing keys, login name and fee schedule.

Several keys for one merchant means key rotation: a message signed with any of them verifies,
and the first key is the one used to sign outgoing requests. The fee schedule (`fees`, per
channel: a percent plus fixed cents) is described in worker/fees.py.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import ConfigError, UnknownMerchantError
from worker.fees import FeeSchedule, parse_schedule


@dataclass(frozen=True)
class Merchant:
    """One IOTPay merchant account. Keys are excluded from repr so they never reach a log."""

    mch_id: str
    keys: tuple[str, ...] = field(repr=False)
    login_name: str = ""
    fees: FeeSchedule = field(default_factory=FeeSchedule)

    @property
    def signing_key(self) -> str:
        """The key used to sign requests we send (the first configured)."""
        return self.keys[0]


@dataclass(frozen=True)
class Merchants(Mapping[str, Merchant]):
    """The merchant registry, keyed by mchId."""

    by_id: Mapping[str, Merchant] = field(default_factory=dict)

    def __getitem__(self, mch_id: str) -> Merchant:
        return self.by_id[mch_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_id)

    def __len__(self) -> int:
        return len(self.by_id)

    def require(self, mch_id: str) -> Merchant:
        """Return the merchant or raise UnknownMerchantError."""
        try:
            return self.by_id[mch_id]
        except KeyError:
            raise UnknownMerchantError(mch_id) from None

    def all_keys(self) -> frozenset[str]:
        """Every configured key (the log redactor needs them)."""
        return frozenset(k for m in self.by_id.values() for k in m.keys)


def _parse_entries(data: Any, variable: str) -> dict[str, Merchant]:
    if not isinstance(data, dict):
        raise ConfigError(variable, "must be an object mapping mchId to {keys, loginName, fees}")
    out: dict[str, Merchant] = {}
    for mch_id, entry in data.items():
        where = f"merchant {mch_id!r}"
        if not isinstance(mch_id, str) or not mch_id.strip():
            raise ConfigError(variable, "an mchId is empty")
        if not isinstance(entry, dict):
            raise ConfigError(variable, f"{where}: must be an object with 'keys'")
        keys = entry.get("keys")
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list) or not keys:
            raise ConfigError(variable, f"{where}: 'keys' must be a non-empty list of strings")
        if not all(isinstance(k, str) and k for k in keys):
            raise ConfigError(variable, f"{where}: every key must be a non-empty string")
        login = entry.get("loginName", "")
        if not isinstance(login, str):
            raise ConfigError(variable, f"{where}: 'loginName' must be a string")
        unknown = set(entry) - {"keys", "loginName", "fees"}
        if unknown:
            raise ConfigError(variable, f"{where}: unknown setting(s) {sorted(unknown)}")
        fees = parse_schedule(entry["fees"], variable, where) if "fees" in entry else FeeSchedule()
        out[mch_id] = Merchant(mch_id=mch_id, keys=tuple(keys), login_name=login, fees=fees)
    return out


def load_merchants(json_text: str | None, toml_path: str | None) -> Merchants:
    """Build the registry from IOTPAY_MERCHANTS (JSON) and/or IOTPAY_MERCHANTS_FILE (TOML).

    Both may be given; an mchId in both takes the keys of both (JSON first), and the fee rates
    of both (JSON's rate of a channel first).
    Raises ConfigError naming the variable on any invalid value.
    """
    merged: dict[str, Merchant] = {}
    if json_text:
        try:
            data = json.loads(json_text)
        except json.JSONDecodeError as exc:
            raise ConfigError("IOTPAY_MERCHANTS", f"not valid JSON ({exc.msg} at char {exc.pos})") from None
        merged.update(_parse_entries(data, "IOTPAY_MERCHANTS"))
    if toml_path:
        path = Path(toml_path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError("IOTPAY_MERCHANTS_FILE", f"cannot read {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("IOTPAY_MERCHANTS_FILE", f"{path} is not valid TOML ({exc})") from None
        for mch_id, m in _parse_entries(data, "IOTPAY_MERCHANTS_FILE").items():
            if mch_id in merged:
                prev = merged[mch_id]
                keys = prev.keys + tuple(k for k in m.keys if k not in prev.keys)
                fees = FeeSchedule({**m.fees.rates, **prev.fees.rates})
                m = Merchant(mch_id, keys, prev.login_name or m.login_name, fees)
            merged[mch_id] = m
    return Merchants(merged)
