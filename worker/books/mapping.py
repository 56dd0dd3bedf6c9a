"""A column mapping: how a CSV export (a merchant portal's, a bank's) maps onto a canonical format.

A TOML file, every key optional but `[columns]` or `[values]` giving each required field:

    delimiter = ","              # one character; "\\t" for tabs
    encoding = "utf-8-sig"       # any Python codec; the default also reads a UTF-8 byte-order mark
    skip_lines = 0               # lines before the header row (a title, a blank line)
    date_format = "%Y-%m-%d"     # strftime codes of the date columns
    amounts = "decimal"          # "decimal" (12.34) or "cents" (1234)
    decimal_separator = "."      # "," for 1.234,56

    [columns]                    # canonical field = the export's column header
    gross = "Amount"

    [values]                     # a field the export lacks: the same text on every row
    currency = "CAD"

Without a mapping file a CSV is read in the canonical format itself: its header names the fields.
"""

from __future__ import annotations

import codecs
import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from worker.books.errors import InputError

SETTINGS = ("delimiter", "encoding", "skip_lines", "date_format", "amounts", "decimal_separator")


@dataclass(frozen=True)
class Fields:
    """The canonical fields of one format: `required` entries are a field or a tuple of alternatives (one of)."""

    required: tuple[str | tuple[str, ...], ...]
    optional: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        out: list[str] = []
        for r in self.required:
            out += list(r) if isinstance(r, tuple) else [r]
        return tuple(out) + self.optional


@dataclass(frozen=True)
class ColumnMapping:
    """How to read one CSV. `columns`: field -> header; `values`: field -> constant text. `auto`: the canonical
    format (each field a column of its own name, the optional ones where the header has them)."""

    fields: Fields
    columns: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict)
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    skip_lines: int = 0
    date_format: str = "%Y-%m-%d"
    amounts: str = "decimal"
    decimal_separator: str = "."
    name: str | None = None
    sha256: str | None = None
    auto: bool = False

    @classmethod
    def canonical(cls, fields: Fields) -> ColumnMapping:
        """The canonical format: the header names the fields."""
        return cls(fields, columns={f: f for f in fields.names}, auto=True)

    def parse_date(self, text: str) -> date:
        """A date cell -> date. Raises ValueError naming the expected format."""
        try:
            return datetime.strptime(text.strip(), self.date_format).date()
        except ValueError:
            raise ValueError(f"{text!r} is not a date in the format {self.date_format!r}") from None


def load_mapping(path: str | Path, fields: Fields) -> ColumnMapping:
    """Read and validate a mapping file for these fields. Raises InputError naming the file and the key."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"mapping {path}: cannot read it: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(f"mapping {path}: not valid TOML ({exc})") from None

    def bad(problem: str) -> InputError:
        return InputError(f"mapping {path}: {problem}")

    unknown = set(data) - set(SETTINGS) - {"columns", "values"}
    if unknown:
        raise bad(f"unknown key(s) {sorted(unknown)} (known: {', '.join(SETTINGS)}, [columns], [values])")
    tables: dict[str, dict[str, str]] = {}
    for table in ("columns", "values"):
        t = data.get(table, {})
        if not isinstance(t, dict):
            raise bad(f"[{table}] must be a table of field = \"text\"")
        for key, value in t.items():
            if key not in fields.names:
                raise bad(f"[{table}] {key}: not a field of this format (fields: {', '.join(fields.names)})")
            if not isinstance(value, str) or not value.strip():
                raise bad(f"[{table}] {key}: must be non-empty text, got {value!r}")
        tables[table] = dict(t)
    both = set(tables["columns"]) & set(tables["values"])
    if both:
        raise bad(f"{sorted(both)} given both in [columns] and in [values]")
    given = set(tables["columns"]) | set(tables["values"])
    for need in fields.required:
        options = need if isinstance(need, tuple) else (need,)
        if not given & set(options):
            raise bad(f"no {' or '.join(options)} in [columns] or [values]")
    settings = _settings(data, bad)
    return ColumnMapping(fields, tables["columns"], tables["values"], name=path.name,
                         sha256=hashlib.sha256(raw).hexdigest(), **settings)


def _settings(data: Mapping[str, Any], bad: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("delimiter", "encoding", "date_format"):
        if key in data:
            if not isinstance(data[key], str) or not data[key]:
                raise bad(f"{key}: must be non-empty text, got {data[key]!r}")
            out[key] = data[key]
    if len(out.get("delimiter", ",")) != 1:
        raise bad(f"delimiter: must be one character, got {out['delimiter']!r}")
    if "encoding" in out:
        try:
            codecs.lookup(out["encoding"])
        except LookupError:
            raise bad(f"encoding: unknown encoding {out['encoding']!r}") from None
    if "date_format" in out:
        probe = date(2026, 1, 31)
        try:
            back = datetime.strptime(probe.strftime(out["date_format"]), out["date_format"]).date()
        except ValueError:
            back = None
        if back != probe:
            raise bad(f"date_format: {out['date_format']!r} does not read back the date it writes "
                      "(it needs a year, a month and a day)")
    if "skip_lines" in data:
        n = data["skip_lines"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise bad(f"skip_lines: must be a whole number >= 0, got {n!r}")
        out["skip_lines"] = n
    if "amounts" in data:
        if data["amounts"] not in ("decimal", "cents"):
            raise bad(f"amounts: must be \"decimal\" or \"cents\", got {data['amounts']!r}")
        out["amounts"] = data["amounts"]
    if "decimal_separator" in data:
        if data["decimal_separator"] not in (".", ","):
            raise bad(f"decimal_separator: must be \".\" or \",\", got {data['decimal_separator']!r}")
        out["decimal_separator"] = data["decimal_separator"]
    return out
