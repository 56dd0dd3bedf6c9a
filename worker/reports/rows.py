"""The rows of one day's file, streamed from PostgreSQL as Arrow tables.

`COPY (export_rows) TO STDOUT (FORMAT csv)` sends each row as one message (PostgreSQL's COPY
protocol: one CopyData per row), so whole rows are gathered CHUNK_ROWS at a time and Arrow's CSV
reader parses them into typed columns: a million rows never become a million tuples of Python
objects, and PostgreSQL's own text for each value (its dates, its numbers) is what the file gets.
In PostgreSQL's CSV an unquoted empty field is NULL and "" is an empty text: read the same way.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import date

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql

from worker.reports.csv_cells import raw_types
from worker.sqlfiles import q

CHUNK_ROWS = 20_000  # about 5 MB of CSV a chunk: the peak memory stays well under the goal of 400 MiB
_PARSE = pacsv.ParseOptions(newlines_in_values=True)


def day_rows(cur: psycopg.Cursor, day: date) -> Iterator[pa.Table]:
    """The rows of `day`'s file (export_rows, in its order), CHUNK_ROWS at a time, as Arrow tables
    with export_rows' columns. The caller has set the session's zone (export_session_tz). Raises
    psycopg errors."""
    stmt = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER)").format(sql.SQL(q("export_rows")))
    with cur.copy(stmt, {"day": day}) as copy:
        blocks = iter(copy)
        names = next(csv.reader([bytes(next(blocks)).decode("utf-8")]))
        read = pacsv.ReadOptions(column_names=names)
        convert = pacsv.ConvertOptions(column_types=raw_types(names), null_values=[""], strings_can_be_null=True,
                                       quoted_strings_can_be_null=False)
        rows: list[bytes] = []
        for row in blocks:
            rows.append(row)
            if len(rows) == CHUNK_ROWS:
                yield pacsv.read_csv(pa.py_buffer(b"".join(rows)), read, _PARSE, convert)
                rows = []
        if rows:
            yield pacsv.read_csv(pa.py_buffer(b"".join(rows)), read, _PARSE, convert)
