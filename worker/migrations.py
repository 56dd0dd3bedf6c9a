"""Forward-only migrations: `sql/NNN_name.sql`, applied in order, each once.

Safe when several processes run it at once: a session-level advisory lock serialises them,
and each file is applied and recorded in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg

from worker import db
from worker.errors import IotLedgerError
from worker.sqlfiles import sql_dir

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    """One file of sql/."""

    version: int
    name: str
    path: Path

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


class MigrationError(IotLedgerError):
    """An applied migration was edited, or the files are misnumbered."""


def discover(folder: Path | None = None) -> list[Migration]:
    """The migrations in folder, ordered; raises MigrationError on duplicate numbers."""
    folder = folder or sql_dir()
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            continue
        version = int(m.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version:03d}: {found[version].name} and {path.name}")
        found[version] = Migration(version, path.name, path)
    return [found[v] for v in sorted(found)]


def migrate(database_url: str, folder: Path | None = None) -> list[str]:
    """Apply every pending migration; return the names applied (empty when up to date).

    Raises MigrationError when a file that was applied has changed since.
    """
    pending = discover(folder)
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (db.MIGRATE_LOCK_KEY,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {row[0]: (row[1], row[2]) for row in conn.execute("SELECT version, name, checksum FROM schema_migrations")}
            for mig in pending:
                if mig.version in done:
                    name, checksum = done[mig.version]
                    if checksum != mig.checksum:
                        raise MigrationError(
                            f"{mig.name} was changed after it was applied (as {name}); migrations are forward-only: add a new file"
                        )
                    continue
                with conn.transaction():
                    conn.execute(mig.path.read_text(encoding="utf-8"))
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (mig.version, mig.name, mig.checksum),
                    )
                applied_now.append(mig.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (db.MIGRATE_LOCK_KEY,))
    return applied_now
