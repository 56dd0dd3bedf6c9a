"""What the books' imports raise: a bad input names its file, line and column; a contradiction lists its differences."""

from __future__ import annotations

from worker.errors import PermanentError


class InputError(PermanentError):
    """A file, mapping or value the operator gave cannot be used (one readable line: exit 2)."""


class ContradictionError(PermanentError):
    """A document contradicts one imported earlier (or an adjustment key its earlier use): nothing was imported.

    `differences` holds one readable line per difference.
    """

    def __init__(self, what: str, differences: list[str]) -> None:
        self.what = what
        self.differences = differences
        super().__init__(f"{what} contradicts what was imported before ({len(differences)} difference(s)); "
                         f"nothing was imported: {differences[0] if differences else ''}")
