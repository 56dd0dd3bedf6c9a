"""The console's people: users with a role, their argon2id password hashes, their sessions.

    add_user / list_users / disable_user      `iotledger users add|list|disable`
    check_password                            a sign-in: the user, or None (same time either way)
    start_session / session_user / end_session  the server's side of Flask's signed cookie

Passwords are hashed by argon2-cffi (argon2id, its RFC 9106 low-memory profile) and never
stored, logged or shown. A session's id is random; the cookie carries it signed, the table holds
only its SHA-256 (sql/020_console_users.sql).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psycopg
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from psycopg.rows import dict_row

from worker.errors import PermanentError
from worker.sqlfiles import q

ROLES = ("viewer", "resolver")
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_hasher = PasswordHasher()


class UserError(PermanentError):
    """A user cannot be added or changed as asked (the message says why)."""


@dataclass(frozen=True)
class User:
    """A signed-in person."""

    id: int
    name: str
    role: str

    @property
    def may_resolve(self) -> bool:
        """True for a resolver: may act on mismatches (resolve, reopen) and run `files verify`."""
        return self.role == "resolver"


def check_new_password(password: str) -> None:
    """Raises UserError unless the password is long enough (and not absurdly long)."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"password: at least {MIN_PASSWORD_CHARS} characters, got {len(password)}")
    if len(password) > MAX_PASSWORD_CHARS:
        raise UserError(f"password: at most {MAX_PASSWORD_CHARS} characters")


def add_user(conn: psycopg.Connection, name: str, role: str, password: str) -> dict[str, Any]:
    """Add a user and commit. Raises UserError for a bad name, role or password, or a name taken."""
    if not NAME.match(name):
        raise UserError(f"NAME: letters, digits and . _ @ - (at most 64, starting with a letter or digit), got {name!r}")
    if role not in ROLES:
        raise UserError(f"--role: one of {', '.join(ROLES)}, got {role!r}")
    check_new_password(password)
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("console_user_add"), {"name": name, "role": role,
                                                  "password_hash": _hasher.hash(password)}).fetchone()
    if row is None:
        raise UserError(f"NAME: a user {name!r} exists already")
    return {"id": row["id"], "name": row["name"], "role": row["role"], "created_at": row["created_at"].isoformat()}


def list_users(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every user (never a hash), with the count of live sessions. Raises psycopg errors."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(q("console_users_list")).fetchall()
    return [{"name": r["name"], "role": r["role"], "created_at": r["created_at"].isoformat(),
             "password_changed_at": r["password_changed_at"].isoformat(),
             "disabled_at": r["disabled_at"].isoformat() if r["disabled_at"] else None,
             "sessions": int(r["sessions"])} for r in rows]


def disable_user(conn: psycopg.Connection, name: str) -> None:
    """Disable a user and end their sessions, and commit. Raises UserError when there is no such user."""
    with conn.transaction():
        row = conn.execute(q("console_user_disable"), {"name": name}).fetchone()
    if row is None:
        raise UserError(f"NAME: no user {name!r}")


@lru_cache(maxsize=1)
def _decoy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def check_password(conn: psycopg.Connection, name: str, password: str) -> User | None:
    """The user when the name and password are right and the user is not disabled, else None.
    An unknown name costs the same hashing as a known one. Raises psycopg errors."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("console_user_for_signin"), {"name": name}).fetchone()
    stored = row["password_hash"] if row else _decoy_hash()
    try:
        _hasher.verify(stored, password[:MAX_PASSWORD_CHARS])
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row["disabled_at"] is not None:
        return None
    if _hasher.check_needs_rehash(stored):  # the library's parameters moved on: keep up
        with conn.transaction():
            conn.execute(q("console_user_rehash"), {"id": row["id"], "password_hash": _hasher.hash(password)})
    return User(row["id"], row["name"], row["role"])


def _digest(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode("ascii", "replace")).digest()


def start_session(conn: psycopg.Connection, user: User, hours: int, remote_addr: str | None) -> str:
    """A new session for the user, lasting `hours`; returns its id (for the signed cookie) and commits."""
    session_id = secrets.token_urlsafe(32)
    with conn.transaction():
        conn.execute(q("console_session_start"), {"id_sha256": _digest(session_id), "user_id": user.id,
                                                  "hours": hours, "remote_addr": remote_addr})
    return session_id


def session_user(conn: psycopg.Connection, session_id: str) -> User | None:
    """The user of a live session, or None (ended, expired, unknown, or the user disabled)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(q("console_session_user"), {"id_sha256": _digest(session_id)}).fetchone()
    return User(row["id"], row["name"], row["role"]) if row else None


def end_session(conn: psycopg.Connection, session_id: str) -> None:
    """End a session (sign-out) and commit."""
    with conn.transaction():
        conn.execute(q("console_session_end"), {"id_sha256": _digest(session_id)})
