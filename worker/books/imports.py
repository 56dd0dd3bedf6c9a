"""One imported document: its bytes and digest, and the record of an import that brought something new."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from worker import db
from worker.books.errors import InputError
from worker.books.mapping import ColumnMapping
from worker.sqlfiles import q


@dataclass(frozen=True)
class Document:
    """A file as read once: its name, bytes and SHA-256."""

    path: Path
    data: bytes

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def read_document(path: str | Path) -> Document:
    """Read a whole file. Raises InputError naming it when it cannot be read (missing, a folder, no permission)."""
    path = Path(path)
    try:
        return Document(path, path.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class ImportResult:
    """What an import did: `imported` (with the new import's id) or `unchanged` (everything was there already)."""

    source: str
    file: str
    status: str
    rows_read: int
    import_id: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    totals: list[dict[str, Any]] = field(default_factory=list)  # per merchant (or account) and currency

    def as_json(self) -> dict[str, Any]:
        return {"source": self.source, "file": self.file, "status": self.status, "import_id": self.import_id,
                "rows_read": self.rows_read, "counts": self.counts, "totals": self.totals}


def lock(cur: psycopg.Cursor) -> None:
    """Serialise with every other import and adjustment until the transaction ends."""
    cur.execute(q("books_lock_imports"), {"key": db.BOOKS_LOCK_KEY})


def record_import(cur: psycopg.Cursor, source: str, fmt: str, doc: Document, mapping: ColumnMapping | None,
                  rows_read: int, rows_new: int) -> int:
    """Record an import that brings rows_new (> 0) new rows; returns its id."""
    return cur.execute(q("books_record_import"), {
        "source": source, "format": fmt, "file_name": doc.name, "file_sha256": doc.sha256,
        "mapping_name": mapping.name if mapping else None, "mapping_sha256": mapping.sha256 if mapping else None,
        "rows_read": rows_read, "rows_new": rows_new,
    }).fetchone()["id"]
