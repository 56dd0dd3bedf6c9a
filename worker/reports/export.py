"""The export of one business day: the transaction that decides what goes into its files.

    <out>/<D>/settlement-<D>.csv    one row per journal entry (pay, refund, void, reversal)
    <out>/<D>/settlement-<D>.xlsx   the same rows as a workbook (identifiers as text), totals sheet
    <out>/<D>/summary-<D>.csv       per merchant, currency and section: count, gross, refunds, net
    <out>/<D>/manifest-<D>.json     rows, SHA-256 of every file, totals, the chain link; written last

A restatement is version N beside the old files (`settlement-<D>.vN.csv`, ...); a day not over
yet is exported as `settlement-<D>.provisional.csv`, ... and nothing is recorded. The files'
names and their atomic writing are in `files.py`, the CSV's columns and cell rules in
`csv_cells.py`, the workbook in `workbook.py`.

Rules (why the code looks the way it does):
- Same ledger, same bytes: rows come in a fixed order, nothing in any file depends on the time
  of the export, and the manifest's JSON keys are sorted.
- Each journal entry goes into exactly one day's file: an export takes the entries still in
  `entries_awaiting_file` (filled by a trigger on every new entry) dated before the day's end,
  and files them as runs of consecutive entry ids (`filed_runs`, a row per run, sql/009).
  Those of earlier days (a late notify, an old day closed late, a backfill) are
  `prior_day_adjustment` rows, in their own summary section and named in the manifest.
- The manifest names the previous closed day's manifest and its SHA-256: the series is a chain
  (`iotledger files verify` walks it). A restatement's manifest names the version it supersedes
  and the entries added, removed and changed.
- A closed day exported again gives back its latest files (regenerated and checked against the
  stored SHA-256 when they are missing), unless `restate` is asked for.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.types.json import Jsonb

from worker import db, logs
from worker.config import DEFAULT_WORKBOOK_MAX_ROWS
from worker.errors import IotLedgerError
from worker.reports.businessday import BusinessDay, business_day
from worker.reports.csv_cells import COLUMNS, PRIOR_DAY_ADJUSTMENT, csv_bytes, row_values, settlement_table, \
    summary_frame, table_csv
from worker.reports.files import AtomicFile, commit_all, csv_rows_by_entry, file_names, manifest_bytes, manifest_name, \
    matches, paths
from worker.reports.rows import read_ahead
from worker.reports.workbook import MAX_ROWS as MAX_WORKBOOK_ROWS
from worker.reports.workbook import SettlementWorkbook
from worker.sqlfiles import q

log = logs.get("worker.reports.export")

SECTIONS = ("business_day", "prior_day_adjustments", "total")
NOTE = ("Rows with record=prior_day_adjustment are transactions of an earlier business day (business_date) "
        "that reached the ledger after that day's file was closed; they are settled in this file. "
        "amount_cents/amount are always positive with direction 'in' (money IOTPay owes the merchant: pays) "
        "or 'out' (money returned: refunds, voids); signed_amount_cents/signed_amount are negative for 'out', "
        "so summing them gives the net. net = gross - refunds. Totals are per merchant and currency.")


WORKBOOK_OMITTED = ("This day has more rows than a workbook is written for (IOTLEDGER_WORKBOOK_MAX_ROWS): "
                    "the settlement CSV is the file. Import it with its text columns as text (identifiers "
                    "keep their digits), or export the day again with a larger limit to another folder.")


class ExportError(IotLedgerError):
    """The export cannot be produced as asked (for example a closed day whose ledger rows changed)."""


class FileClashError(ExportError):
    """A file of another content stands where a file would be handed out: nothing is recorded or
    written (the operator moves it away or exports to another folder)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the files are and what they hold."""

    day: BusinessDay
    folder: Path
    files: dict[str, Path]
    manifest: dict[str, Any]
    # final, provisional, restated, unchanged (a closed day given back as it was), restored (its
    # recorded bytes written again where missing or altered on disk), or no_change (a restate
    # that would have changed nothing: nothing written)
    status: str
    # seconds per phase (assign, rows, format, csv, workbook, summary, checks, db_commit, rename):
    # logged with export.written, printed by bench_reports
    seconds: dict[str, float] = field(default_factory=dict, compare=False)

    @property
    def totals(self) -> dict[str, dict[str, int]]:
        """Per currency: count, gross_cents, refunds_cents, net_cents (business day + adjustments)."""
        return self.manifest["totals"]


def summary_rows(cur: psycopg.Cursor, day: date) -> list[dict[str, Any]]:
    """Per merchant, currency and section of one day's file: count and cents (Python integers),
    with a `total` section per merchant and currency, from the ledger's clearing postings
    (export_summary). The export writes the same totals from the rows it writes, and writes
    nothing when they differ; the daily summary alert reads them from here. Raises psycopg errors."""
    return _summary(_ledger_totals(cur, day))


def _ledger_totals(cur: psycopg.Cursor, day: date) -> dict[tuple[str, str, str], tuple[int, int, int]]:
    cur.execute(q("export_summary"), {"day": day})
    return {(m, c, sec): (int(n), int(g), int(r)) for m, c, sec, n, g, r in cur.fetchall()}


def _ledger_check(cur: psycopg.Cursor, day: date) -> dict[tuple[str, str], tuple[int, int, int]]:
    """Per merchant and currency: count, money in, money out of the clearing postings of the day's file."""
    cur.execute(q("export_ledger_check"), {"day": day})
    return {(m, c): (int(n), int(g), int(r)) for m, c, n, g, r in cur.fetchall()}


def _per_merchant(found: dict[tuple[str, str, str], tuple[int, int, int]]
                  ) -> dict[tuple[str, str], tuple[int, int, int]]:
    out: dict[tuple[str, str], tuple[int, int, int]] = {}
    for (m, c, _), (n, g, r) in found.items():
        was = out.get((m, c), (0, 0, 0))
        out[(m, c)] = (was[0] + n, was[1] + g, was[2] + r)
    return out


def _summary(found: dict[tuple[str, str, str], tuple[int, int, int]]) -> list[dict[str, Any]]:
    out = []
    for mch_id, currency in sorted({(m, c) for m, c, _ in found}):
        total = [0, 0, 0]
        for section in SECTIONS[:2]:
            n, g, r = found.get((mch_id, currency, section), (0, 0, 0))
            total = [total[0] + n, total[1] + g, total[2] + r]
            if n or section == "business_day":
                out.append({"mch_id": mch_id, "currency": currency, "section": section, "count": n,
                            "gross_cents": g, "refunds_cents": r, "net_cents": g - r})
        out.append({"mch_id": mch_id, "currency": currency, "section": "total", "count": total[0],
                    "gross_cents": total[1], "refunds_cents": total[2], "net_cents": total[1] - total[2]})
    return out


_EXACT = pa.decimal128(38, 0)  # sums of cents in Arrow, never int64 (which could wrap)


def _accumulate(acc: dict[tuple[str, str, str], list[int]], values: pa.Table) -> None:
    """Count, money in and money out per merchant, currency and section of the rows written
    (their values, before any cell rule), in Python integers."""
    money_in = pc.equal(values.column("direction"), "in")
    amount = pc.cast(values.column("amount_cents"), _EXACT)
    zero = pa.scalar(0, _EXACT)
    part = pa.table({
        "m": values.column("mch_id"), "c": values.column("currency"),
        "s": pc.if_else(pc.equal(values.column("record"), PRIOR_DAY_ADJUSTMENT), SECTIONS[1], SECTIONS[0]),
        "g": pc.if_else(money_in, amount, zero), "r": pc.if_else(money_in, zero, amount)})
    groups = part.group_by(["m", "c", "s"]).aggregate([("g", "count"), ("g", "sum"), ("r", "sum")])
    for m, c, sec, n, g, r in zip(*(col.to_pylist() for col in groups.select(
            ["m", "c", "s", "g_count", "g_sum", "r_sum"]).columns)):
        slot = acc.setdefault((m, c, sec), [0, 0, 0])
        slot[0] += n
        slot[1] += int(g)
        slot[2] += int(r)


class _Phases:
    """Seconds spent per phase of one export, summed over the chunks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(phase, time.perf_counter() - t0)

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] = self.seconds.get(phase, 0.0) + seconds

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.seconds.items()}


def _by_currency(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    totals: dict[str, dict[str, int]] = {}
    for r in rows:
        if r["section"] != "total":
            continue
        t = totals.setdefault(r["currency"], {"count": 0, "gross_cents": 0, "refunds_cents": 0, "net_cents": 0})
        for k in t:
            t[k] += r[k]
    return totals


def _write_files(cur: psycopg.Cursor, bd: BusinessDay, folder: Path, status: str, version: int,
                 links: dict[str, Any], phase: _Phases, book_rows: int | None,
                 ledger: dict[tuple[str, str], tuple[int, int, int]],
                 omitted: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[AtomicFile]]:
    """Stream the day's rows from exported_entries into temporary files (the first `book_rows` of
    them into the workbook too; no workbook when None, `omitted` saying why); return the manifest
    and the files. Raises ExportError when the rows do not add up to the `ledger`'s totals."""
    names = file_names(bd.day, version, status)
    folder.mkdir(parents=True, exist_ok=True)
    kinds = ("settlement", "workbook", "summary", "manifest") if book_rows is not None else \
        ("settlement", "summary", "manifest")
    files = [AtomicFile(folder / names[k]) for k in kinds]
    settle, summary, manifest_file = files[0], files[-2], files[-1]
    book = None
    try:
        if book_rows is not None:
            files[1].fh.close()  # the workbook writes its file itself
            book = SettlementWorkbook(files[1].tmp, COLUMNS, bd.day, book_rows)
        cur.execute(q("export_session_tz"), {"tz": bd.tz_name})
        rows_out = n_adj = 0
        adjustment_dates: set[str] = set()
        written: dict[tuple[str, str, str], list[int]] = {}
        settle.write(csv_bytes(pd.DataFrame(columns=COLUMNS), header=True))
        with read_ahead(cur, bd.day) as chunks:  # on an error, the COPY is cancelled before the rollback
            while True:
                with phase("rows"):  # waiting for PostgreSQL's query and COPY, and Arrow's parsing
                    raw = next(chunks, None)
                if raw is None:
                    break
                with phase("format"):
                    values = row_values(raw, bd.day)
                    cells = settlement_table(values)
                    _accumulate(written, values)
                    adjusting = pc.equal(values.column("record"), PRIOR_DAY_ADJUSTMENT)
                    adj = pc.filter(values.column("business_date"), adjusting)
                    n_adj += len(adj)
                    adjustment_dates.update(pc.unique(adj).to_pylist())
                with phase("csv"):
                    settle.write(table_csv(cells, header=False))
                if book is not None and book.rows < book.planned:
                    with phase("workbook"):
                        book.add(values.slice(0, book.planned - book.rows))
                rows_out += raw.num_rows
        with phase("csv"):
            settle.close()
        with phase("summary"):
            found = {k: (v[0], v[1], v[2]) for k, v in written.items()}
            if _per_merchant(found) != ledger:
                raise ExportError(f"{bd.day}: the rows {_shown(_per_merchant(found))} do not add up to the "
                                  f"ledger's clearing postings {_shown(ledger)}; nothing written")
            totals = _summary(found)
            summary_df = summary_frame(totals, bd.day)
            summary.write(csv_bytes(summary_df, header=True))
            summary.close()
        files_meta = {
            names["settlement"]: {"rows": rows_out, "sha256": settle.sha.hexdigest(), "bytes": settle.size},
            names["summary"]: {"rows": len(summary_df), "sha256": summary.sha.hexdigest(), "bytes": summary.size},
        }
        if book is not None:
            with phase("workbook"):
                book.close(totals)
                files[1].hash_written()
            files_meta[names["workbook"]] = {"rows": book.rows, "sha256": files[1].sha.hexdigest(),
                                             "bytes": files[1].size, "complete": book.rows == rows_out}
        manifest = {
            "settlement_date": str(bd.day),
            "timezone": bd.tz_name,
            "window_start_utc": bd.start.isoformat(),
            "window_end_utc": bd.end.isoformat(),
            "hours": bd.hours,
            "status": status,
            "version": version,
            "files": files_meta,
            "rows": {"business_day": rows_out - n_adj, "prior_day_adjustments": n_adj},
            "prior_day_adjustment_dates": sorted(adjustment_dates),
            "totals": _by_currency(totals),
            "totals_by_merchant": [r for r in totals if r["section"] == "total"],
            "note": NOTE,
            **({"workbook_omitted": omitted} if omitted is not None else {}),
            **links,
        }
        manifest_file.write(manifest_bytes(manifest))
        manifest_file.close()
        return manifest, files
    except BaseException:
        if book is not None:
            book.discard()
        for f in files:
            f.discard()
        raise


def _shown(found: dict[tuple[str, ...], Any]) -> dict[str, list[int]]:
    return {"/".join(k): list(v) for k, v in sorted(found.items())}


def _commit(files: list[AtomicFile], folder: Path, *, restore: bool) -> None:
    """Rename the written files into place. Raises ExportError when a file handed out would change."""
    try:
        commit_all(files, folder, restore=restore)
    except FileExistsError as exc:
        raise FileClashError(str(exc)) from None


def _changes(old: dict[str, dict[str, str]] | None, new: dict[str, dict[str, str]]) -> dict[str, Any]:
    if old is None:
        return {"known": False, "note": "the superseded settlement file is missing: changes cannot be listed"}
    changed = sorted((k for k in old.keys() & new.keys() if old[k] != new[k]), key=int)
    return {"known": True, "added": sorted(new.keys() - old.keys(), key=int),
            "removed": sorted(old.keys() - new.keys(), key=int), "changed": changed,
            "fields_changed": {k: sorted(f for f in new[k] if new[k][f] != old[k].get(f)) for k in changed}}


def export_day(conn: psycopg.Connection, day: date, tz: ZoneInfo, out_dir: Path, *, restate: bool = False,
               now: datetime | None = None, workbook_limit: int = MAX_WORKBOOK_ROWS,
               workbook_max_rows: int = DEFAULT_WORKBOOK_MAX_ROWS) -> ExportResult:
    """Write (or give back) the settlement files of one business day.

    A day that has ended is closed by its first export; a day not ended yet is exported as
    provisional and nothing is recorded. A restate writes version N+1 beside the old files, or
    nothing when nothing would change (status `no_change`). A day of more than
    `workbook_max_rows` rows gets no workbook (its manifest says so: `workbook_omitted`); the
    workbook of a smaller one holds its first `workbook_limit` rows (at most Excel's
    MAX_WORKBOOK_ROWS; the manifest says whether it is complete); a closed day given back keeps
    the workbook it was closed with. Raises ExportError when a closed
    day's files cannot be reproduced byte for byte (ask for `restate`), RetryableError when
    PostgreSQL is down.
    """
    now = now or datetime.now(timezone.utc)
    bd = business_day(day, tz)
    folder = Path(out_dir) / str(day)
    closed = now >= bd.end
    files: list[AtomicFile] = []
    phase = _Phases()
    commit_from: float | None = None
    try:
        with db.translated(f"while exporting {day}"), conn.transaction() as txn, conn.cursor() as cur:
            cur.execute(q("export_lock"), {"key": db.EXPORT_LOCK_KEY})
            cur.execute(q("export_record"), {"day": day})
            record = cur.fetchone()
            window = {"day": day, "tz": bd.tz_name, "start": bd.start, "end": bd.end}
            if record is not None and not restate:
                stored = record[3]
                problems = matches(folder, stored)
                if not problems:
                    return ExportResult(bd, folder, paths(folder, stored), stored, "unchanged")
                links = {k: stored[k] for k in LINK_KEYS if k in stored}
                with phase("checks"):
                    ledger = _ledger_check(cur, day)
                manifest, files = _write_files(cur, bd, folder, stored["status"], stored["version"], links, phase,
                                               _workbook_rows_of(stored), ledger, stored.get("workbook_omitted"))
                if manifest != stored:
                    raise ExportError(
                        f"{day} was closed with other content than the ledger now gives "
                        f"(stored sha256 {_shas(stored)}, now {_shas(manifest)}); use --restate to write a new version"
                    )
                status = "restored"  # the recorded bytes, written again where missing or altered on disk
                log.warning("export.restored", settlement_date=str(day), problems=problems)
            else:
                if restate and not closed:
                    raise ExportError(f"{day} has not ended in {bd.tz_name}: nothing to restate yet")
                version = record[2] + 1 if record is not None else 1
                with phase("assign"):
                    cur.execute(q("export_assign"), {**window, "with_prior": record is None})
                    assigned, runs = cur.fetchone()
                status = "provisional" if not closed else ("restated" if record is not None else "final")
                links = _links(cur, day, record[3] if record is not None else None)
                with phase("checks"):
                    ledger = _ledger_check(cur, day)
                (n_rows,) = cur.execute(q("export_row_count"), {"day": day}).fetchone()
                book_rows, omitted = min(n_rows, workbook_limit, MAX_WORKBOOK_ROWS), None
                if n_rows > workbook_max_rows:
                    book_rows, omitted = None, {"rows": n_rows, "workbook_max_rows": workbook_max_rows,
                                                "note": WORKBOOK_OMITTED}
                manifest, files = _write_files(cur, bd, folder, status, version, links, phase, book_rows, ledger,
                                               omitted)
                if record is not None:
                    old = record[3]
                    new_rows = csv_rows_by_entry(files[0].tmp) or {}
                    old_rows = csv_rows_by_entry(folder / file_names(day, old["version"], old["status"])["settlement"])
                    changes = _changes(old_rows, new_rows)
                    if not assigned and changes.get("known") and not (changes["added"] or changes["removed"]
                                                                       or changes["changed"]):
                        for f in files:
                            f.discard()
                        raise psycopg.Rollback(txn)  # nothing would change: nothing is written
                    manifest["changes"] = changes
                    files[-1].rewrite(manifest_bytes(manifest))
                with phase("checks"):
                    _check_adds_up(day, manifest, ledger)
                clashing = [f.target for f in files if f.clashes()]
                if clashing:  # checked before anything is recorded: a refused export leaves no trace
                    raise FileClashError(f"{clashing[0]} exists with other content; refusing to overwrite it "
                                         f"(nothing recorded: move it away or export to another --out)")
                if closed:
                    cur.execute(q("export_save"), {"day": day, "tz": bd.tz_name, "version": version,
                                                   "manifest": Jsonb(manifest)})
                    cur.execute(q("export_file_version"), {
                        "day": day, "version": version, "status": status, "manifest_name": files[-1].target.name,
                        "manifest_sha256": files[-1].sha.hexdigest(), "manifest": Jsonb(manifest)})
                    commit_from = time.perf_counter()
                else:
                    raise psycopg.Rollback(txn)  # provisional: files written, nothing recorded
        if commit_from is not None:  # the transaction's commit runs the deferred checks
            phase.add("db_commit", time.perf_counter() - commit_from)
    except BaseException:  # PostgreSQL unavailable (a RetryableError) included: no file is left behind
        for f in files:
            f.discard()
        raise
    if restate and record is not None and files and not files[0].tmp.exists():
        stored = record[3]
        log.info("export.no_change", settlement_date=str(day), version=stored["version"])
        return ExportResult(bd, folder, paths(folder, stored), stored, "no_change")
    with phase("rename"):
        _commit(files, folder, restore=status == "restored")
    log.info("export.written", settlement_date=str(day), status=status, folder=str(folder),
             rows=manifest["rows"], version=manifest["version"], seconds=phase.rounded())
    return ExportResult(bd, folder, paths(folder, manifest), manifest, status, phase.rounded())


LINK_KEYS = ("previous_manifest", "supersedes")


def _links(cur: psycopg.Cursor, day: date, superseded: dict[str, Any] | None) -> dict[str, Any]:
    """The chain link (the previous closed day's newest manifest) and, for a restate, what it supersedes."""
    cur.execute(q("export_previous_manifest"), {"day": day})
    prev = cur.fetchone()
    links: dict[str, Any] = {"previous_manifest": None if prev is None else {
        "settlement_date": str(prev[0]), "version": prev[1], "name": prev[2], "sha256": prev[3]}}
    if superseded is not None:
        links["supersedes"] = {"version": superseded["version"], "name": manifest_name(superseded),
                               "sha256": hashlib.sha256(manifest_bytes(superseded)).hexdigest()}
    return links


def _workbook_rows_of(manifest: dict[str, Any]) -> int | None:
    """How many rows the workbook a manifest describes holds (None: the day has no workbook)."""
    name = file_names(date.fromisoformat(manifest["settlement_date"]), manifest["version"],
                      manifest["status"])["workbook"]
    return manifest["files"][name]["rows"] if name in manifest["files"] else None


def _check_adds_up(day: date, manifest: dict[str, Any], ledger: dict[tuple[str, str], tuple[int, int, int]]) -> None:
    """The manifest must add up to the ledger's clearing postings of the entries its files hold, or
    nothing is written."""
    totals = _summary({(m, c, SECTIONS[0]): v for (m, c), v in ledger.items()})
    want = (_by_currency(totals), [r for r in totals if r["section"] == "total"],
            sum(n for n, _, _ in ledger.values()))
    got = (manifest["totals"], manifest["totals_by_merchant"], sum(manifest["rows"].values()))
    if got != want:
        raise ExportError(f"{day}: the files do not add up to the ledger (files {got[0]}, ledger {want[0]}); "
                          "nothing written")


def _shas(manifest: dict[str, Any]) -> str:
    return ", ".join(f"{n} {m['sha256'][:12]}" for n, m in sorted(manifest["files"].items()))
