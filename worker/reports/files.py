"""The settlement files on disk: their names, the manifest's bytes, atomic writing, reading back.

    <out>/<D>/settlement-<D>.csv, .xlsx, summary-<D>.csv, manifest-<D>.json   version 1 of a closed day
    ... settlement-<D>.vN.csv ...                                           version N (a restatement)
    ... settlement-<D>.provisional.csv ...                                  a day not over yet

A day with more rows than IOTLEDGER_WORKBOOK_MAX_ROWS has no .xlsx: its manifest lists none and
says why (`workbook_omitted`).

Files are written to a temporary name in the target folder, fsynced and renamed: never half a
file. A file handed out under a name is never written again with other bytes (a provisional
one excepted), unless its manifest's bytes are being restored.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any


def file_names(day: date, version: int = 1, status: str = "final") -> dict[str, str]:
    """The names of one version of a day's files: `.vN` from version 2, `.provisional` before the day ends."""
    suffix = ".provisional" if status == "provisional" else (f".v{version}" if version > 1 else "")
    return {"settlement": f"settlement-{day}{suffix}.csv", "workbook": f"settlement-{day}{suffix}.xlsx",
            "summary": f"summary-{day}{suffix}.csv", "manifest": f"manifest-{day}{suffix}.json"}


def paths(folder: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """Where the files a manifest describes are, under `folder` (no `workbook` for a day without one)."""
    names = file_names(date.fromisoformat(manifest["settlement_date"]), manifest["version"], manifest["status"])
    return {k: folder / v for k, v in names.items() if k != "workbook" or v in manifest["files"]}


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as written: sorted keys, two-space indent, final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def manifest_name(manifest: dict[str, Any]) -> str:
    """The file name a stored manifest was written under."""
    return file_names(date.fromisoformat(manifest["settlement_date"]), manifest["version"], manifest["status"])["manifest"]


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file's bytes, in hex, read a block at a time (a day's CSV can be hundreds of
    MiB). Raises FileNotFoundError when it is missing."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def matches(folder: Path, manifest: dict[str, Any]) -> list[str]:
    """What on disk differs from a stored manifest (empty: the files prove themselves)."""
    problems = []
    name = manifest_name(manifest)
    try:
        if (folder / name).read_bytes() != manifest_bytes(manifest):
            problems.append(f"{name}: differs from the manifest recorded in the database")
    except FileNotFoundError:
        problems.append(f"{name}: missing")
    for fname, meta in sorted(manifest["files"].items()):
        try:
            if sha256_of(folder / fname) != meta["sha256"]:
                problems.append(f"{fname}: SHA-256 differs from its manifest")
        except FileNotFoundError:
            problems.append(f"{fname}: missing")
    return problems


def read_rows(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a settlement or summary CSV as text (what a careful reader does)."""
    with open(path, newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)


def csv_rows_by_entry(path: Path) -> dict[str, dict[str, str]] | None:
    """A settlement CSV's rows keyed by entry_id (None when the file is missing)."""
    try:
        return {r["entry_id"]: r for r in read_rows(path)}
    except FileNotFoundError:
        return None


class AtomicFile:
    """A file written under a temporary name in the target folder, hashed as it goes."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        self.fh = open(self.tmp, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        """Append bytes to the temporary file and to its hash."""
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)

    def close(self) -> None:
        """Flush, fsync and close the temporary file."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def hash_written(self) -> None:
        """Fsync and hash a file another library wrote at the temporary name."""
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
            fh.seek(0)
            self.sha = hashlib.file_digest(fh, "sha256")
            self.size = fh.tell()

    def rewrite(self, data: bytes) -> None:
        """Replace the (closed) temporary file's content."""
        with open(self.tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self.sha = hashlib.sha256(data)
        self.size = len(data)

    def clashes(self) -> bool:
        """True when the target is a file handed out (not provisional) holding other bytes."""
        return (self.target.exists() and ".provisional." not in self.target.name
                and sha256_of(self.target) != self.sha.hexdigest())

    def commit(self, *, restore: bool = False) -> None:
        """Rename into place. A file handed out is never overwritten: without `restore` a target
        holding other bytes raises FileExistsError; with `restore` (putting back the bytes its
        manifest recorded) the altered file is first moved aside as `NAME.altered-<UTC time>`."""
        if self.clashes():
            if not restore:
                raise FileExistsError(f"{self.target} exists with other content; refusing to overwrite it")
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
            os.replace(self.target, self.target.with_name(f"{self.target.name}.altered-{stamp}"))
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        """Close and remove the temporary file, whatever state it is in."""
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def commit_all(files: list[AtomicFile], folder: Path, *, restore: bool = False) -> None:
    """Rename every file into place in order, then fsync the folder. Raises FileExistsError (see
    commit); the temporary files not renamed are removed."""
    try:
        for f in files:  # the manifest is last in the list: a reader that finds it finds whole files
            f.commit(restore=restore)
    finally:
        for f in files:
            f.discard()  # a no-op for a file renamed into place
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Make a folder's renames durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
