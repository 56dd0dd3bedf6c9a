"""The rows of one day's file, streamed from PostgreSQL as Arrow tables.

`COPY (export_rows) TO STDOUT (FORMAT csv)` sends each row as one message (PostgreSQL's COPY
protocol: one CopyData per row), so whole rows are gathered CHUNK_ROWS at a time and Arrow's CSV
reader parses them into typed columns: a million rows never become a million tuples of Python
objects, and PostgreSQL's own text for each value (its dates, its numbers) is what the file gets.
In PostgreSQL's CSV an unquoted empty field is NULL and "" is an empty text: read the same way.

`read_ahead` reads them in a thread of its own, a chunk or two ahead of the caller: psycopg's
loop over the COPY's messages holds the interpreter while Arrow's formatting, the CSV writer and
the SHA-256 release it, so on two cores the rows are read while the last ones are written.
"""

from __future__ import annotations

import csv
import queue
import threading
from collections.abc import Iterator
from contextlib import closing, contextmanager
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


AHEAD = 2  # chunks read but not yet taken: a few MB


class _Reader(threading.Thread):
    """day_rows into a queue; stops (cancelling the COPY) when told to."""

    def __init__(self, cur: psycopg.Cursor, day: date) -> None:
        super().__init__(name="export-rows", daemon=True)
        self.cur, self.day = cur, day
        self.chunks: queue.Queue[object] = queue.Queue(maxsize=AHEAD)
        self.stop = threading.Event()

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            with closing(day_rows(self.cur, self.day)) as chunks:  # closed early: the COPY is cancelled
                for chunk in chunks:
                    if not self._put(chunk):
                        return
            self._put(None)
        except BaseException as exc:  # handed to the caller, raised there
            self._put(exc)


@contextmanager
def read_ahead(cur: psycopg.Cursor, day: date) -> Iterator[Iterator[pa.Table]]:
    """day_rows, read by a thread of its own while the caller works on the chunks before. Leaving
    the block early (an error) stops the reading and cancels the COPY before it returns; the
    connection is the caller's again when it does. Raises what day_rows raises."""
    reader = _Reader(cur, day)
    reader.start()

    def chunks() -> Iterator[pa.Table]:
        while True:
            item = reader.chunks.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]

    try:
        yield chunks()
    finally:
        reader.stop.set()
        reader.join()
