"""What a demo run did: the report the steps fill in, and the summary a newcomer reads at the end."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from worker.errors import IotLedgerError
from worker.money import decimal as money
from worker.services import masked


class DemoError(IotLedgerError):
    """A step of the demo did not happen as planned (the message says which and why)."""


@dataclass
class DemoReport:
    """What the demo did, for the summary and for the test."""

    database_url: str = ""
    dropped_database: bool = False  # the scratch database was dropped at the end (external server, no --keep)
    services_left: str | None = None  # the embedded services left running, and where
    day: date | None = None
    tz: str = ""
    logs: Path | None = None
    pays: dict[str, int] = field(default_factory=dict)  # channel -> count
    refunds: int = 0
    voids: int = 0
    notifies: dict[str, int] = field(default_factory=dict)  # delivery outcome -> count
    orders_notified: int = 0
    forged_status: int = 0
    lost_order: str = ""
    lost_recovered_by: str = ""
    entries: int = 0
    check_ok: bool = False
    totals: dict[str, dict[str, int]] = field(default_factory=dict)
    reconcile: dict[str, Any] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def summary(report: DemoReport) -> str:
    """What a newcomer reads at the end of the demo."""
    lines = [
        "",
        f"iotpay-ledger demo: business day {report.day} ({report.tz}) played against a simulated IOTPay gateway",
        "",
        f"  payments ........... {sum(report.pays.values())} pays at the gateway ("
        + ", ".join(f"{n} {ch}" for ch, n in sorted(report.pays.items())) + f"), {report.refunds} partial refunds, "
        f"{report.voids} void",
        f"  notifies ........... {sum(report.notifies.values())} notify deliveries for {report.orders_notified} orders ("
        + ", ".join(f"{n} {k}" for k, n in sorted(report.notifies.items())) + "): every duplicate was recognised "
        "and posted nothing",
        f"  forged notify ...... refused by the ingress with HTTP {report.forged_status}: nothing stored, nothing posted",
        f"  lost notify ........ {report.lost_order} was paid but never notified; the sweep asked the gateway "
        f"(source={report.lost_recovered_by}) and posted it",
        f"  ledger ............. {report.entries} journal entries, every one balanced "
        f"(iotledger check: {'ok' if report.check_ok else 'FAILED'})",
    ]
    for currency, t in sorted(report.totals.items()):
        lines.append(f"  {currency} .............. gross {money(t['gross_cents'])}, refunds {money(t['refunds_cents'])}, "
                     f"net {money(t['net_cents'])} (what IOTPay owes the merchant for the day)")
    lines += _reconciliation(report.reconcile) + _files(report) + [""] + _next_steps(report)
    if report.problems:
        lines += ["", "NOT AS PLANNED:"] + [f"  - {p}" for p in report.problems]
    return "\n".join(lines)


def _reconciliation(rec: dict[str, Any]) -> list[str]:
    lines = [f"  reconciliation ..... {rec.get('mismatch_count', 0)} difference(s) for finance to look at "
             "(`iotledger reconcile` exits 1 when there are any):"]
    for m in rec.get("mismatches", []):
        amounts = ", ".join(f"{k} {m[k + '_amount']}" for k in ("expected", "gateway", "ledger")
                            if m.get(k + "_amount") is not None)
        lines.append(f"      {m['class']}: {m['subject']} - {m['description']}" + (f" ({amounts})" if amounts else ""))
    return lines


def _files(report: DemoReport) -> list[str]:
    exp = report.export
    if not exp:
        return []
    lines = [
        f"  settlement files ... {exp['status']}, in {exp['folder']}:",
        f"      {exp['files']['settlement']}  (one row per pay, refund, void; open it in a spreadsheet)",
        f"      {exp['files']['workbook']}  (the same rows as a workbook: identifiers stay text)",
        f"      {exp['files']['summary']}  (per merchant and currency: count, gross, refunds, net)",
        f"      {exp['files']['manifest']}  (row counts and SHA-256 of each file)",
    ]
    if not report.dropped_database:
        lines.append(f"      audit the series: iotledger files verify --out {Path(exp['folder']).parent} "
                     "(with the DATABASE_URL below)")
    return lines


def _next_steps(report: DemoReport) -> list[str]:
    if report.dropped_database:
        lines = ["The demo's scratch database was dropped (iotledger demo --keep keeps it)."]
    else:
        lines = ["Explore the demo's database:",
                 f"  export DATABASE_URL='{masked(report.database_url)}'",
                 f"  iotledger order {report.lost_order} ; iotledger check ; iotledger reconcile --date {report.day}"]
    if report.services_left:
        lines.append(report.services_left)
    lines.append(f"Process logs: {report.logs}")
    return lines
