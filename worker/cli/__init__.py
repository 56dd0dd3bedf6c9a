"""`iotledger`: the command line. Each module of this package registers its subcommands.

Commands are thin: parse, call one domain function, print or log one line.
Exit codes: 0 ok, 1 the thing checked is not right (invalid sign, violations, rejections),
2 usage or configuration error, 3 a service (database, broker, gateway) unavailable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import psycopg

from worker import db, runtime
from worker.cli import admin, books, console, gateway, ledger, pipeline, protocol, reports
from worker.errors import ConfigError, PermanentError, RetryableError
from worker.migrations import MigrationError

MODULES = [admin, protocol, ledger, books, pipeline, gateway, reports, console]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="iotledger",
        description="Ledger and reconciliation worker for the IOTPay payment gateway.",
        epilog="Configuration comes from the environment; see README.md. "
        "Run 'iotledger COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"iotledger {_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--log-level", choices=runtime.LOG_LEVELS, type=str.upper,
                        help="the level of the log lines on stderr (default INFO, or IOTLEDGER_LOG_LEVEL)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `iotledger` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = args.log_level or ("WARNING" if args.quiet else os.environ.get("IOTLEDGER_LOG_LEVEL", "INFO").upper())
    if level not in runtime.LOG_LEVELS:
        print(f"iotledger: configuration error: IOTLEDGER_LOG_LEVEL: must be DEBUG, INFO, WARNING or ERROR, "
              f"got {level!r}", file=sys.stderr)
        return 2
    runtime.set_log_level(level)
    try:
        runtime.app_settings()  # an invalid configuration fails at start, whatever the command
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"iotledger: configuration error: {exc}", file=sys.stderr)
        return 2
    except RetryableError as exc:
        print(f"iotledger: service unavailable: {exc}", file=sys.stderr)
        return 3
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn, psycopg.errors.UndefinedFunction) as exc:
        database = _database_name()
        print(f"iotledger: database {database} has no ledger schema or an older one ({exc.diag.message_primary}): "
              f"run iotledger migrate", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        err = db.connect_error(exc)
        if isinstance(err, ConfigError):
            print(f"iotledger: configuration error: {err}", file=sys.stderr)
            return 2
        print(f"iotledger: service unavailable: {err}", file=sys.stderr)
        return 3
    except MigrationError as exc:
        print(f"iotledger: migrations: {exc}", file=sys.stderr)
        return 2
    except PermanentError as exc:
        print(f"iotledger {getattr(args, 'command', '')}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"iotledger {getattr(args, 'command', '')}: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("iotpay-ledger")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def _database_name() -> str:
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(runtime.app_endpoints().database_url)
        return repr(f"{info.get('dbname', '?')} on {info.get('host') or 'localhost'}")
    except Exception:  # noqa: BLE001 - only for the message
        return "(the configured one)"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
