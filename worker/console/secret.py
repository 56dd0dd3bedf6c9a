"""The key that signs the console's session cookies: IOTLEDGER_CONSOLE_SECRET_KEY, or one generated
once and kept in the data folder (`<data dir>/console/secret_key`, readable by its owner only),
so that every server process, and the next start, signs alike. Never logged or shown.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from worker.config import MIN_CONSOLE_SECRET_CHARS, Settings


def secret_path(settings: Settings) -> Path:
    """Where a generated key is kept."""
    return settings.data_dir / "console" / "secret_key"


def session_secret(settings: Settings) -> str:
    """The configured key, else the kept one, else a new one kept for next time. Several processes
    starting at once end with the same key (it is created by an atomic link). Raises OSError when
    the data folder cannot be written or read."""
    if settings.console_secret_key:
        return settings.console_secret_key
    path = secret_path(settings)
    with contextlib.suppress(FileNotFoundError):
        return _read(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(f".secret_key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(48) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs stands
            os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    return _read(path)


def _read(path: Path) -> str:
    key = path.read_text(encoding="utf-8").strip()
    if len(key) < MIN_CONSOLE_SECRET_CHARS:
        raise OSError(f"{path} holds no usable key (shorter than {MIN_CONSOLE_SECRET_CHARS} characters): "
                      "delete it to have a new one made")
    return key
