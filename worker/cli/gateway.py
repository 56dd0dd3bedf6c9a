"""Subcommands of the gateway area (registered in worker/cli/__init__.py)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the parser."""
