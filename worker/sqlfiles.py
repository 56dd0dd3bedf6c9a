"""Where the SQL lives, and named queries loaded from `sql/queries/*.sql`.

A query file holds several statements, each under a `-- name: <name>` header (the
procrastinate convention). Python refers to queries by name and never formats values in.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def sql_dir() -> Path:
    """`sql/` beside the package in a checkout, or the copy packed into the wheel."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "sql", here / "_sql"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("cannot find the sql/ folder next to the worker package")


def parse_queries(text: str) -> dict[str, str]:
    """Split a query file into {name: statement}."""
    out: dict[str, str] = {}
    parts = _HEADER.split(text)
    for name, body in zip(parts[1::2], parts[2::2]):
        if name in out:
            raise ValueError(f"query {name!r} defined twice")
        out[name] = body.strip().rstrip(";").strip()
    return out


@lru_cache(maxsize=1)
def queries() -> dict[str, str]:
    """Every named query of sql/queries/, by name."""
    out: dict[str, str] = {}
    for path in sorted((sql_dir() / "queries").glob("*.sql")):
        for name, q in parse_queries(path.read_text(encoding="utf-8")).items():
            if name in out:
                raise ValueError(f"query {name!r} defined twice (second in {path.name})")
            out[name] = q
    return out


def q(name: str) -> str:
    """One named query. Raises KeyError with the name when it does not exist."""
    try:
        return queries()[name]
    except KeyError:
        raise KeyError(f"no SQL query named {name!r} in sql/queries/") from None
