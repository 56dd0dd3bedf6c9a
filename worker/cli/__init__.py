"""`iotledger`: the command line. Each module of this package registers its subcommands.

Commands are thin: parse, call one domain function, print or log one line.
Exit codes: 0 ok, 1 the thing checked is not right (invalid sign, violations, rejections),
2 usage or configuration error, 3 a service (database, broker, gateway) unavailable.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from worker.cli import admin, gateway, ledger, pipeline, protocol, reports
from worker.cli.context import app_settings
from worker.errors import ConfigError, RetryableError

MODULES = [admin, protocol, ledger, pipeline, gateway, reports]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="iotledger",
        description="Ledger and reconciliation worker for the IOTPay payment gateway.",
        epilog="Configuration comes from the environment; see README.md. "
        "Run 'iotledger COMMAND --help' for the options of each command.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `iotledger` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        app_settings()  # an invalid configuration fails at start, whatever the command
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"iotledger: configuration error: {exc}", file=sys.stderr)
        return 2
    except RetryableError as exc:
        print(f"iotledger: service unavailable: {exc}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
