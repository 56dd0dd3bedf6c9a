"""The daily settlement files: one CSV row per transaction, a summary per currency, a manifest.

    <out>/<YYYY-MM-DD>/settlement-<date>.csv   one row per journal entry (pay, refund, void, reversal)
    <out>/<YYYY-MM-DD>/summary-<date>.csv      per currency: count, gross, refunds, net
    <out>/<YYYY-MM-DD>/manifest-<date>.json    row counts and SHA-256 of both files, written last

Rules (why the code looks the way it does):
- Same ledger, same bytes: rows come in a fixed order, nothing in any file depends on the time
  of the export, and the manifest's JSON keys are sorted.
- Each journal entry goes into exactly one day's file (exported_entries, primary key entry_id).
  An entry that arrives after its day was closed goes into the next file as a
  `prior_day_adjustment` row, counted in its own summary section and named in the manifest.
- A closed day exported again gives back the original files (regenerated and checked against
  the stored SHA-256 when they are missing), unless `restate` is asked for.
- A day that has not ended yet can be exported as `provisional`: the same files, nothing
  recorded (the transaction is rolled back), replaced by the final files after the day closes.
- Files are written to a temporary name, fsynced and renamed: never half a file.
- Spreadsheet safety: every text cell is quoted (ids stay text, leading zeros kept) and a text
  cell that would start with = + - @ (or tab, CR) is prefixed with an apostrophe. Amounts are
  positive; `direction` says in or out, so no cell starts with a minus sign.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import psycopg
from psycopg.types.json import Jsonb

from worker import logs
from worker.errors import IotLedgerError, RetryableError
from worker.reports.businessday import BusinessDay, business_day
from worker.sqlfiles import q

log = logs.get("worker.reports.export")

COLUMNS = [
    "settlement_date", "business_date", "record", "local_time", "utc_time", "mch_id", "channel", "pay_type",
    "pay_order_id", "original_order_id", "mch_order_no", "currency", "direction", "amount_cents", "amount",
    "card_type", "card_num", "auth_num", "trans_num", "entry_id",
]
SUMMARY_COLUMNS = [
    "settlement_date", "currency", "section", "count", "gross_cents", "refunds_cents", "net_cents", "gross",
    "refunds", "net",
]
SECTIONS = ("business_day", "prior_day_adjustments", "total")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
CHUNK_ROWS = 50_000
NOTE = ("Rows with record=prior_day_adjustment are transactions of an earlier business day (business_date) "
        "that reached the ledger after that day's file was closed; they are settled in this file. "
        "Amounts are integer cents (amount_cents) and decimal strings (amount), always positive: "
        "direction 'in' is money IOTPay owes the merchant (pays), 'out' money returned (refunds, voids). "
        "net = gross - refunds.")


class ExportError(IotLedgerError):
    """The export cannot be produced as asked (for example a closed day whose ledger rows changed)."""


@dataclass(frozen=True)
class ExportResult:
    """Where the files are and what they hold."""

    day: BusinessDay
    folder: Path
    files: dict[str, Path]
    manifest: dict[str, Any]
    status: str  # final, provisional, restated, or unchanged (a closed day given back as it was)

    @property
    def totals(self) -> dict[str, dict[str, int]]:
        """Per currency: count, gross_cents, refunds_cents, net_cents (business day + adjustments)."""
        return self.manifest["totals"]


def money_strings(cents: pd.Series) -> pd.Series:
    """Non-negative integer cents -> '1234.56' strings, vectorised, no float on the way."""
    cents = cents.astype("int64")
    return (cents // 100).astype(str) + "." + (cents % 100).astype(str).str.zfill(2)


def defuse(column: pd.Series) -> pd.Series:
    """Prefix text cells that a spreadsheet would run as a formula with an apostrophe."""
    text = column.astype("object")
    mask = text.str.startswith(FORMULA_STARTS).fillna(False).astype(bool)
    if mask.any():
        text = text.where(~mask, "'" + text.astype(str))
    return text


def _frame(rows: list[tuple], names: list[str]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(rows, columns=names)
    df["amount_cents"] = df["amount_cents"].astype("int64")
    df["entry_id"] = df["entry_id"].astype("int64")
    df["amount"] = money_strings(df["amount_cents"])
    for col in COLUMNS:
        if col not in ("amount_cents", "entry_id"):
            df[col] = defuse(df[col])
    return df[COLUMNS]


def _csv_bytes(df: pd.DataFrame, header: bool) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, header=header, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n", na_rep="")
    return buf.getvalue().encode("utf-8")


class _AtomicFile:
    """A file written under a temporary name in the target folder, hashed as it goes."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        self.fh = open(self.tmp, "wb")
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self.fh.write(data)
        self.sha.update(data)
        self.size += len(data)

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()

    def commit(self) -> None:
        os.replace(self.tmp, self.target)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _summary(acc: dict[tuple[str, str], list[int]], day: date) -> pd.DataFrame:
    rows = []
    for currency in sorted({c for c, _ in acc}):
        total = [0, 0, 0]
        for section in SECTIONS[:2]:
            count, gross, refunds = acc.get((currency, section), [0, 0, 0])
            total = [total[0] + count, total[1] + gross, total[2] + refunds]
            if count or section == "business_day":
                rows.append([str(day), currency, section, count, gross, refunds, gross - refunds])
        rows.append([str(day), currency, "total", *total, total[1] - total[2]])
    # totals stay Python integers (object columns): a sum never wraps as an int64 would
    df = pd.DataFrame(rows, columns=SUMMARY_COLUMNS[:7], dtype=object)
    for name in ("gross", "refunds", "net"):
        df[name] = df[f"{name}_cents"].map(_accounting)
    return df[SUMMARY_COLUMNS]


def _accounting(cents: int) -> str:
    """Integer cents as an accounting amount: 1234 -> '12.34', -1234 -> '(12.34)'."""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"({whole}.{frac:02d})" if cents < 0 else f"{whole}.{frac:02d}"


def _accumulate(acc: dict[tuple[str, str], list[int]], df: pd.DataFrame) -> None:
    section = df["record"].map({"transaction": "business_day", "prior_day_adjustment": "prior_day_adjustments"})
    cents = df["amount_cents"].astype(object)  # Python integers: sums never wrap
    inflow = cents.where(df["direction"] == "in", 0)
    outflow = cents.where(df["direction"] == "out", 0)
    g = pd.DataFrame({"currency": df["currency"], "section": section, "n": 1, "in": inflow, "out": outflow})
    for (currency, sec), row in g.groupby(["currency", "section"], sort=True)[["n", "in", "out"]].sum().iterrows():
        slot = acc.setdefault((currency, sec), [0, 0, 0])
        slot[0] += int(row["n"])
        slot[1] += int(row["in"])
        slot[2] += int(row["out"])


def _names(day: date) -> dict[str, str]:
    return {"settlement": f"settlement-{day}.csv", "summary": f"summary-{day}.csv", "manifest": f"manifest-{day}.json"}


def _write_files(cur: psycopg.Cursor, bd: BusinessDay, folder: Path, status: str, version: int
                 ) -> tuple[dict[str, Any], list[_AtomicFile]]:
    """Stream the day's rows from exported_entries into temporary files; return the manifest and the files."""
    names = _names(bd.day)
    folder.mkdir(parents=True, exist_ok=True)
    files = [_AtomicFile(folder / names["settlement"]), _AtomicFile(folder / names["summary"]),
             _AtomicFile(folder / names["manifest"])]
    settle, summary, manifest_file = files
    try:
        cur.execute(q("export_session_tz"), {"tz": bd.tz_name})
        acc: dict[tuple[str, str], list[int]] = {}
        rows_out = 0
        adjustment_dates: set[str] = set()
        settle.write(_csv_bytes(pd.DataFrame(columns=COLUMNS), header=True))
        with cur.connection.cursor(name=f"export_{bd.day:%Y%m%d}") as rows_cur:
            rows_cur.itersize = CHUNK_ROWS
            rows_cur.execute(q("export_rows"), {"day": bd.day})
            names_sql: list[str] | None = None
            while True:
                chunk = rows_cur.fetchmany(CHUNK_ROWS)
                if names_sql is None:
                    names_sql = [d.name for d in rows_cur.description or ()]
                if not chunk:
                    break
                df = _frame(chunk, names_sql)
                settle.write(_csv_bytes(df, header=False))
                _accumulate(acc, df)
                rows_out += len(df)
                adj = df.loc[df["record"] == "prior_day_adjustment", "business_date"]
                adjustment_dates.update(adj.unique().tolist())
        settle.close()
        summary_df = _summary(acc, bd.day)
        summary.write(_csv_bytes(summary_df, header=True))
        summary.close()
        totals = {}
        for (currency, _), (count, gross, refunds) in sorted(acc.items()):
            t = totals.setdefault(currency, {"count": 0, "gross_cents": 0, "refunds_cents": 0, "net_cents": 0})
            t["count"] += count
            t["gross_cents"] += gross
            t["refunds_cents"] += refunds
            t["net_cents"] += gross - refunds
        n_adj = sum(v[0] for (c, s), v in acc.items() if s == "prior_day_adjustments")
        manifest = {
            "settlement_date": str(bd.day),
            "timezone": bd.tz_name,
            "window_start_utc": bd.start.isoformat(),
            "window_end_utc": bd.end.isoformat(),
            "hours": bd.hours,
            "status": status,
            "version": version,
            "files": {
                names["settlement"]: {"rows": rows_out, "sha256": settle.sha.hexdigest(), "bytes": settle.size},
                names["summary"]: {"rows": len(summary_df), "sha256": summary.sha.hexdigest(), "bytes": summary.size},
            },
            "rows": {"business_day": rows_out - n_adj, "prior_day_adjustments": n_adj},
            "prior_day_adjustment_dates": sorted(adjustment_dates),
            "totals": totals,
            "note": NOTE,
        }
        manifest_file.write(manifest_bytes(manifest))
        manifest_file.close()
        return manifest, files
    except BaseException:
        for f in files:
            f.discard()
        raise


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """The manifest as written: sorted keys, two-space indent, final newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _matches(folder: Path, manifest: dict[str, Any]) -> bool:
    names = _names(date.fromisoformat(manifest["settlement_date"]))
    try:
        if (folder / names["manifest"]).read_bytes() != manifest_bytes(manifest):
            return False
        return all(hashlib.sha256((folder / name).read_bytes()).hexdigest() == meta["sha256"]
                   for name, meta in manifest["files"].items())
    except FileNotFoundError:
        return False


def _commit_files(files: list[_AtomicFile], folder: Path) -> None:
    for f in files:  # the manifest is last in the list: a reader that finds it finds whole files
        f.commit()
    _fsync_dir(folder)


def export_day(conn: psycopg.Connection, day: date, tz: ZoneInfo, out_dir: Path, *, restate: bool = False,
               now: datetime | None = None) -> ExportResult:
    """Write (or give back) the settlement files of one business day.

    A day that has ended is closed by its first export; a day not ended yet is exported as
    provisional and nothing is recorded. Raises ExportError when a closed day's files cannot
    be reproduced byte for byte (ask for `restate`), RetryableError when PostgreSQL is down.
    """
    now = now or datetime.now(timezone.utc)
    bd = business_day(day, tz)
    folder = Path(out_dir) / str(day)
    closed = now >= bd.end
    files: list[_AtomicFile] = []
    try:
        with conn.transaction() as txn, conn.cursor() as cur:
            cur.execute(q("export_lock"))
            cur.execute(q("export_record"), {"day": day})
            record = cur.fetchone()
            window = {"day": day, "tz": bd.tz_name, "start": bd.start, "end": bd.end}
            if record is not None and not restate:
                stored = record[3]
                if _matches(folder, stored):
                    return ExportResult(bd, folder, _paths(folder, day), stored, "unchanged")
                manifest, files = _write_files(cur, bd, folder, stored["status"], stored["version"])
                if manifest != stored:
                    raise ExportError(
                        f"{day} was closed with other content than the ledger now gives "
                        f"(stored sha256 {_shas(stored)}, now {_shas(manifest)}); use --restate to write a new version"
                    )
                status = "unchanged"
            else:
                if restate and not closed:
                    raise ExportError(f"{day} has not ended in {bd.tz_name}: nothing to restate yet")
                version = record[2] + 1 if record is not None else 1
                cur.execute(q("export_assign"), {**window, "with_prior": record is None})
                status = "provisional" if not closed else ("restated" if record is not None else "final")
                manifest, files = _write_files(cur, bd, folder, status, version)
                _check_adds_up(cur, day, manifest)
                if closed:
                    cur.execute(q("export_save"), {"day": day, "tz": bd.tz_name, "version": version,
                                                   "manifest": Jsonb(manifest)})
                else:
                    raise psycopg.Rollback(txn)  # provisional: files written, nothing recorded
    except psycopg.OperationalError as exc:
        for f in files:
            f.discard()
        raise RetryableError(f"PostgreSQL unavailable while exporting {day}: {exc}") from exc
    except BaseException:
        for f in files:
            f.discard()
        raise
    _commit_files(files, folder)
    log.info("export.written", settlement_date=str(day), status=status, folder=str(folder),
             rows=manifest["rows"], version=manifest["version"])
    return ExportResult(bd, folder, _paths(folder, day), manifest, status)


def _check_adds_up(cur: psycopg.Cursor, day: date, manifest: dict[str, Any]) -> None:
    """The files must add up to the ledger's clearing postings of the entries they hold, or nothing is written."""
    cur.execute(q("export_ledger_totals"), {"day": day})
    ledger = {c: (int(n), int(dr), int(cr)) for c, n, dr, cr in cur.fetchall()}
    files = {c: (t["count"], t["gross_cents"], t["refunds_cents"]) for c, t in manifest["totals"].items()}
    if ledger != files:
        raise ExportError(f"{day}: the files do not add up to the ledger (files {files}, ledger {ledger}); nothing written")


def _paths(folder: Path, day: date) -> dict[str, Path]:
    return {k: folder / v for k, v in _names(day).items()}


def _shas(manifest: dict[str, Any]) -> str:
    return ", ".join(f"{n} {m['sha256'][:12]}" for n, m in sorted(manifest["files"].items()))


def read_rows(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a settlement or summary CSV as text (what a careful reader does)."""
    with open(path, newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)
