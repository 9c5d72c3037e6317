"""Domain exceptions and the field-level problem record they carry."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "MatcherError",
    "InputValidationError",
    "InfeasibleMatchError",
    "UnboundedMatchError",
    "Problem",
]


@dataclass(frozen=True)
class Problem:
    """One problem found in the input.

    Parameters
    ----------
    file : str or None
        The file (or input name) the problem was found in.
    row : int or None
        CSV: the line number in the file (the header is line 1); GeoJSON, GeoPackage
        and DataFrames: the 0-based feature or row position.
    field : str or None
        The column or property concerned.
    value : Any
        The offending value, as read.
    reason : str
        What is wrong and what would be valid.
    """

    file: str | None
    row: int | None
    field: str | None
    value: Any
    reason: str

    def __str__(self) -> str:
        parts = []
        if self.file:
            parts.append(str(self.file))
        if self.row is not None:
            parts.append(f"row {self.row}")
        if self.field:
            parts.append(f"field {self.field!r}")
        if self.value is not None:
            parts.append(f"value {_short(self.value)!r}")
        where = ", ".join(parts)
        return f"{where}: {self.reason}" if where else self.reason

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the problem."""
        d = asdict(self)
        d["value"] = None if self.value is None else _short(self.value)
        return d


def _short(value: Any, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class MatcherError(Exception):
    """Base class of every error raised by matcher."""


class InputValidationError(MatcherError, ValueError):
    """The input is invalid; ``problems`` lists every problem found.

    Parameters
    ----------
    problems : sequence of Problem
        Every problem found, in file and row order.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: Sequence[Problem] = tuple(problems)
        super().__init__(self.report())

    def report(self, limit: int = 50) -> str:
        """Return a human-readable report of (at most ``limit``) problems."""
        lines = [f"{len(self.problems)} problem(s) in the input:"]
        lines += [f"  - {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more")
        return "\n".join(lines)


class InfeasibleMatchError(MatcherError):
    """The flow model has no feasible solution (should not happen with unmet arcs)."""


class UnboundedMatchError(MatcherError):
    """The flow model is unbounded (a negative-cost cycle of infinite capacity)."""
