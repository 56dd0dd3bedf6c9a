"""`iotledger files verify`: the audit finance runs on the settlement file series.

Four checks, every problem listed (the clock runs it nightly after the export and alerts):

1. every closed day's files on disk match their manifests' SHA-256 (every version kept); where a
   settlement file is missing or altered, the entries it should hold are named; a day whose
   manifest says it has no workbook (more rows than IOTLEDGER_WORKBOOK_MAX_ROWS) has none on disk
   under its name (a workbook there is not one the series wrote);
2. every journal entry dated before the end of the last closed day is in exactly one file (an
   entry posted after the newest file was written waits for the next one: not a problem);
3. the series has no gap: every business day from the first closed day to the last has files,
   and each manifest names the previous day's manifest by its SHA-256 (a chain);
4. the files add up: their net per merchant and currency equals the ledger's.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg.rows import dict_row

from worker import money
from worker.reports.businessday import business_day
from worker.reports.files import csv_rows_by_entry, file_names, manifest_bytes, sha256_of
from worker.sqlfiles import q

MAX_NAMED = 50  # entries named per finding; the count is always whole
OVERDUE_AFTER = timedelta(hours=1)  # the clock closes a day at 00:15; a day still open an hour after its end is late


@dataclass(frozen=True)
class Finding:
    """One problem: which check, a sentence, and what it is about."""

    check: str  # file, entry, chain, totals
    detail: str
    settlement_date: str | None = None
    file: str | None = None
    entry_ids: tuple[int, ...] = ()


@dataclass
class VerifyReport:
    """Everything verify found, and what it looked at."""

    out_dir: str
    closed_days: int = 0
    first_day: str | None = None
    last_day: str | None = None
    files_checked: int = 0
    entries_awaiting_next_file: int = 0
    totals: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON-ready object."""
        out = asdict(self)
        out["ok"] = self.ok
        out["findings"] = [{**asdict(f), "entry_ids": list(f.entry_ids)} for f in self.findings]
        return out


def verify_files(conn: psycopg.Connection, out_dir: Path, tz: ZoneInfo, *, now: datetime | None = None) -> VerifyReport:
    """Run the four checks over the recorded series and the files under `out_dir`. Raises psycopg errors.

    A business day that ended more than OVERDUE_AFTER before `now` without files is a gap too
    (a close that keeps failing is reported until it closes).
    """
    now = now or datetime.now(timezone.utc)
    report = VerifyReport(str(out_dir))
    with conn.cursor(row_factory=dict_row) as cur:
        versions = cur.execute(q("files_versions")).fetchall()
        latest: dict[date, dict[str, Any]] = {}
        for v in versions:
            latest[v["export_date"]] = v
        _check_files(cur, Path(out_dir), versions, latest, report)
        if latest:
            days = sorted(latest)
            report.first_day, report.last_day, report.closed_days = str(days[0]), str(days[-1]), len(days)
            _check_chain(versions, days, report)
            _check_overdue(days[-1], tz, now, report)
            end = business_day(days[-1], tz).end
            last_written = max(v["created_at"] for v in versions)
            _check_entries(cur, end, last_written, report)
            _check_totals(cur, end, last_written, latest, report)
    conn.rollback()
    return report


def _check_files(cur: psycopg.Cursor, out: Path, versions: list[dict[str, Any]], latest: dict[date, dict[str, Any]],
                 report: VerifyReport) -> None:
    for v in versions:
        day, manifest = v["export_date"], v["manifest"]
        folder = out / str(day)
        body = manifest_bytes(manifest)
        if hashlib.sha256(body).hexdigest() != v["manifest_sha256"]:
            report.findings.append(Finding("file", "the recorded manifest does not hash to its recorded SHA-256",
                                           str(day), v["manifest_name"]))
        names = [v["manifest_name"], *sorted(manifest["files"])]
        for name in names:
            report.files_checked += 1
            want = v["manifest_sha256"] if name == v["manifest_name"] else manifest["files"][name]["sha256"]
            try:
                got = sha256_of(folder / name)
            except FileNotFoundError:
                report.findings.append(Finding("file", f"{name} is missing", str(day), name))
                continue
            if got != want:
                report.findings.append(Finding("file", f"{name} differs from its manifest (SHA-256 {got[:12]}, "
                                                       f"recorded {want[:12]})", str(day), name))
        omitted = manifest.get("workbook_omitted")
        book = file_names(day, manifest["version"], manifest["status"])["workbook"]
        if omitted is not None and (folder / book).exists():
            report.findings.append(Finding("file", f"{book} is not part of the series: {v['manifest_name']} says the "
                                                   f"day has no workbook ({omitted['rows']} rows, more than "
                                                   f"{omitted['workbook_max_rows']})", str(day), book))
        if latest[day] is v:
            _check_rows(cur, folder, day, v, report)


def _check_rows(cur: psycopg.Cursor, folder: Path, day: date, v: dict[str, Any], report: VerifyReport) -> None:
    """Name the entries of the newest settlement file that are missing, extra or altered on disk."""
    name = file_names(day, v["manifest"]["version"], v["manifest"]["status"])["settlement"]
    meta = v["manifest"]["files"].get(name)
    path = folder / name
    try:
        if meta and sha256_of(path) == meta["sha256"]:
            return
    except FileNotFoundError:
        pass
    expected = {r["entry_id"]: r for r in cur.execute(q("files_day_entries"), {"day": day}).fetchall()}
    rows = csv_rows_by_entry(path)
    if rows is None:
        _entries(report, "entry", f"{len(expected)} entr(y/ies) of {day} are in no file on disk ({name} is missing)",
                 str(day), name, expected)
        return
    found = {int(k): r for k, r in rows.items() if k.isdigit()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    altered = sorted(e for e in set(expected) & set(found) if _differs(expected[e], found[e]))
    if missing:
        _entries(report, "entry", f"{name}: row(s) of entr(y/ies) {_ids(missing)} removed", str(day), name, missing)
    if extra:
        _entries(report, "entry", f"{name}: row(s) for entr(y/ies) {_ids(extra)} that belong to no such file",
                 str(day), name, extra)
    if altered:
        _entries(report, "entry", f"{name}: row(s) of entr(y/ies) {_ids(altered)} edited (money, merchant or order "
                                  f"differs from the ledger)", str(day), name, altered)


def _differs(ledger: dict[str, Any], row: dict[str, str]) -> bool:
    """True when a row's money, merchant or order is not the ledger's (every money column is checked)."""
    signed = int(ledger["signed_amount_cents"])
    return (row.get("pay_order_id") != ledger["pay_order_id"] or row.get("mch_id") != ledger["mch_id"]
            or row.get("currency") != ledger["currency"]
            or row.get("signed_amount_cents") != str(signed) or row.get("amount_cents") != str(abs(signed))
            or row.get("amount") != money.decimal(abs(signed)) or row.get("signed_amount") != money.decimal(signed)
            or row.get("direction") != ("in" if signed > 0 else "out"))


def _ids(ids: list[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:MAX_NAMED])
    return shown + (f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else "")


def _entries(report: VerifyReport, check: str, detail: str, day: str, name: str, ids: Any) -> None:
    report.findings.append(Finding(check, detail, day, name, tuple(sorted(ids))[:MAX_NAMED]))


def _check_chain(versions: list[dict[str, Any]], days: list[date], report: VerifyReport) -> None:
    day = days[0]
    while day < days[-1]:
        day += timedelta(days=1)
        if day not in {d for d in days}:
            report.findings.append(Finding("chain", f"{day} has no files: the series has a gap", str(day)))
    by_day: dict[date, set[str]] = {}
    first_written: dict[date, datetime] = {}
    for v in versions:
        by_day.setdefault(v["export_date"], set()).add(v["manifest_sha256"])
        first_written.setdefault(v["export_date"], v["created_at"])
    for v in versions:
        link = v["manifest"].get("previous_manifest")
        # the days closed before this version was written (an old day exported late came after it)
        prior = [d for d in days if d < v["export_date"] and first_written[d] < v["created_at"]]
        name = v["manifest_name"]
        if not prior:
            continue
        if link is None:
            report.findings.append(Finding("chain", f"{name} names no previous manifest, but {prior[-1]} was closed "
                                                    "before it", str(v["export_date"]), name))
        elif link["sha256"] not in by_day.get(date.fromisoformat(link["settlement_date"]), set()):
            report.findings.append(Finding("chain", f"{name} names {link['name']} ({link['sha256'][:12]}), which is not "
                                                    "a recorded version of that day", str(v["export_date"]), name))


def _check_overdue(last: date, tz: ZoneInfo, now: datetime, report: VerifyReport) -> None:
    day = last + timedelta(days=1)
    while business_day(day, tz).end + OVERDUE_AFTER <= now:
        report.findings.append(Finding("chain", f"{day} ended but has no files: it was not closed (see the clock's "
                                                "close_failed alerts)", str(day)))
        day += timedelta(days=1)


def _check_entries(cur: psycopg.Cursor, end: datetime, last_written: datetime, report: VerifyReport) -> None:
    rows = cur.execute(q("files_unfiled"), {"end": end, "last_written": last_written}).fetchall()
    missed = [r["entry_id"] for r in rows if not r["awaiting_next"]]
    report.entries_awaiting_next_file = sum(1 for r in rows if r["awaiting_next"])
    if missed:
        _entries(report, "entry", f"entr(y/ies) {_ids(missed)} dated before the end of the last closed day are in "
                                  "no file", None, None, missed)


def _check_totals(cur: psycopg.Cursor, end: datetime, last_written: datetime, latest: dict[date, dict[str, Any]],
                  report: VerifyReport) -> None:
    files: dict[tuple[str, str], int] = {}
    for v in latest.values():
        for t in v["manifest"].get("totals_by_merchant", []):
            key = (t["mch_id"], t["currency"])
            files[key] = files.get(key, 0) + int(t["net_cents"])
    ledger = {(r["mch_id"], r["currency"]): int(r["net_cents"])
              for r in cur.execute(q("files_ledger_net"), {"end": end, "last_written": last_written}).fetchall()}
    for key in sorted(set(files) | set(ledger)):
        f, g = files.get(key, 0), ledger.get(key, 0)
        report.totals.append({"mch_id": key[0], "currency": key[1], **money.fields("files_net", f),
                              **money.fields("ledger_net", g)})
        if f != g:
            report.findings.append(Finding("totals", f"merchant {key[0]} {key[1]}: the files hold net {f} cents, "
                                                     f"the ledger {g} cents (difference {g - f})"))
