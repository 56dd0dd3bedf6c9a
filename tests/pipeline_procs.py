"""Helpers of the pipeline tests and benchmarks beside the processes they start (those are
worker/processes.py, shared with the demo; the TCP proxy the test can cut is tests/fix_proxy.py):
a notify body as IOTPay encodes it.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode


def encode(params: dict[str, Any], form: bool) -> tuple[bytes, str]:
    """A notify body as IOTPay sends it: JSON (V3) or form fields (v1)."""
    if form:
        return urlencode(params).encode(), "application/x-www-form-urlencoded"
    return json.dumps(params, ensure_ascii=False).encode(), "application/json;charset=UTF-8"
