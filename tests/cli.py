"""Run the real `iotledger` console script in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent / "iotledger"


def run(*args: str, stdin: str | None = None, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `iotledger ARGS` with env added to a clean copy of os.environ; never raises on exit code."""
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "IOTPAY_MERCHANTS", "IOTPAY_MERCHANTS_FILE")}
    full.update(env or {})
    return subprocess.run([str(BIN), *args], input=stdin, capture_output=True, text=True, env=full, timeout=timeout)
