"""Rows of a CSV document read through a column mapping, each naming its file, line and columns."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date

from worker.books.amounts import parse_amount
from worker.books.errors import InputError
from worker.books.mapping import ColumnMapping


@dataclass(frozen=True)
class Row:
    """One data row: its cells by canonical field (stripped text; '' when empty or absent)."""

    source: str
    line: int
    cells: Mapping[str, str]
    headers: Mapping[str, str]  # field -> the column it came from ('[values]' for a mapping constant)
    mapping: ColumnMapping

    def has(self, name: str) -> bool:
        return bool(self.cells.get(name))

    def text(self, name: str, *, required: bool = True) -> str:
        """The field's text; raises InputError when required and empty."""
        value = self.cells.get(name, "")
        if required and not value:
            raise self.error(name, "is empty")
        if "\x00" in value:
            raise self.error(name, "holds a NUL character")
        return value

    def amount(self, name: str) -> int | None:
        """The field as integer cents (None when empty). Raises InputError naming line and column."""
        value = self.text(name, required=False)
        if not value:
            return None
        try:
            return parse_amount(value, unit=self.mapping.amounts, decimal_separator=self.mapping.decimal_separator)
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def date(self, name: str) -> date:
        """The field as a date, in the mapping's format. Raises InputError naming line and column."""
        try:
            return self.mapping.parse_date(self.text(name))
        except ValueError as exc:
            raise self.error(name, str(exc)) from None

    def error(self, name: str, problem: str) -> InputError:
        """An InputError naming the file, the line and the column of a field."""
        header = self.headers.get(name, name)
        column = f"column {header!r}" + (f" ({name})" if header != name else "")
        if header == "[values]":
            column = f"[values] {name} of the mapping"
        return InputError(f"{self.source} line {self.line}, {column}: {problem}")


def read_rows(data: bytes, source: str, mapping: ColumnMapping) -> Iterator[Row]:
    """Every non-blank data row of a CSV document. Raises InputError naming the file (and line) when the
    text cannot be decoded or the header lacks a mapped column."""
    try:
        text = data.decode(mapping.encoding)
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not {mapping.encoding} text (byte {exc.start})") from None
    lines = text.splitlines(keepends=True)[mapping.skip_lines:]
    reader = csv.reader(iter(lines), delimiter=mapping.delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{source}: no header row (after {mapping.skip_lines} skipped line(s))")
        positions = _positions(header, source, mapping)
        headers = {f: mapping.columns[f] for f in positions} | {f: "[values]" for f in mapping.values}
        for cells in reader:
            line = mapping.skip_lines + reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                raise InputError(f"{source} line {line}: {len(cells)} cells but the header has {len(header)}")
            row = {f: (cells[i].strip() if i < len(cells) else "") for f, i in positions.items()}
            yield Row(source, line, row | dict(mapping.values), headers, mapping)
    except csv.Error as exc:
        raise InputError(f"{source} line {mapping.skip_lines + reader.line_num}: not CSV ({exc})") from None


def _positions(header: list[str], source: str, mapping: ColumnMapping) -> dict[str, int]:
    names = [h.strip() for h in header]
    where = f"{source} line {mapping.skip_lines + 1} (the header)"
    positions: dict[str, int] = {}
    for name, column in mapping.columns.items():
        if names.count(column) > 1:
            raise InputError(f"{where}: column {column!r} appears {names.count(column)} times")
        if column in names:
            positions[name] = names.index(column)
    if mapping.auto:
        missing = [r if isinstance(r, str) else " or ".join(r) for r in mapping.fields.required
                   if not any(f in positions for f in ((r,) if isinstance(r, str) else r))]
        if missing:
            raise InputError(f"{where}: no column {', '.join(repr(m) for m in missing)} (the canonical columns are "
                             f"{', '.join(mapping.fields.names)}; give --mapping for another layout)")
    else:
        missing = [c for f, c in mapping.columns.items() if f not in positions]
        if missing:
            raise InputError(f"{where}: no column {', '.join(repr(m) for m in missing)} "
                             f"(named in the mapping {mapping.name})")
    return positions
