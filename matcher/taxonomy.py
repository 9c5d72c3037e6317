"""The category taxonomy: codes, aliases, loading from a file and suggestions."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ._errors import InputValidationError, Problem
from .limits import read_file

__all__ = ["DEFAULT_CATEGORIES", "DEFAULT_ALIASES", "Taxonomy", "default_taxonomy"]

#: The default category codes of DESIGN.md, in their documented order.
DEFAULT_CATEGORIES: tuple[str, ...] = (
    "youth_engagement",
    "crime_prevention",
    "elderly_support",
    "victim_support",
    "mental_health",
    "substance_use",
    "housing_stability",
    "food_access",
    "environmental_design",
    "language_access",
    "digital_access",
    "education",
    "transportation",
    "conflict_mediation",
    "reentry_support",
)

#: Common spellings that planners use for the default codes.
DEFAULT_ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "youth": "youth_engagement",
        "youth_services": "youth_engagement",
        "crime": "crime_prevention",
        "public_safety": "crime_prevention",
        "seniors": "elderly_support",
        "senior_services": "elderly_support",
        "elderly": "elderly_support",
        "victims": "victim_support",
        "victim_services": "victim_support",
        "domestic_violence": "victim_support",
        "behavioral_health": "mental_health",
        "substance_abuse": "substance_use",
        "addiction": "substance_use",
        "housing": "housing_stability",
        "homelessness": "housing_stability",
        "food": "food_access",
        "food_security": "food_access",
        "lighting": "environmental_design",
        "vacant_lots": "environmental_design",
        "sanitation": "environmental_design",
        "cpted": "environmental_design",
        "language": "language_access",
        "translation": "language_access",
        "digital": "digital_access",
        "internet": "digital_access",
        "digital_literacy": "digital_access",
        "schools": "education",
        "tutoring": "education",
        "transport": "transportation",
        "mediation": "conflict_mediation",
        "violence_interruption": "conflict_mediation",
        "reentry": "reentry_support",
    }
)

_NORMALISE = re.compile(r"[\s\-/]+")


def _normalise(name: str) -> str:
    return _NORMALISE.sub("_", str(name).strip().lower())


_CODE = re.compile(r"[a-z0-9_]+")


def _check_codes(codes: list[tuple[int | None, str | None]], file: str) -> None:
    """Report every bad or repeated code of a taxonomy file, with its row (CSV line)."""
    problems: list[Problem] = []
    first: dict[str, int | None] = {}
    for row, raw in codes:
        code = _normalise(raw or "")
        if not code or not _CODE.fullmatch(code):
            problems.append(
                Problem(file, row, "code", raw,
                        "codes are letters, digits and '_' (spaces and '-' become '_'); "
                        "';' separates a partner's categories")
            )  # fmt: skip
        elif code in first:
            where = f"row {first[code]}" if first[code] is not None else "an earlier entry"
            problems.append(Problem(file, row, "code", raw, f"duplicate code; first at {where}"))
        else:
            first[code] = row
    if problems:
        raise InputValidationError(problems)


@dataclass(frozen=True)
class Taxonomy:
    """An immutable set of category codes with aliases.

    Parameters
    ----------
    codes : tuple of str
        The canonical category codes, lower-case snake case.
    aliases : mapping of str to str
        Alternative names, each mapping to one of ``codes``.

    Examples
    --------
    >>> tax = default_taxonomy()
    >>> tax.resolve("Seniors")
    'elderly_support'
    >>> tax.resolve("food-access")
    'food_access'
    >>> tax.resolve("gardening") is None
    True
    >>> tax.suggest("food_acess")
    'food_access'
    """

    codes: tuple[str, ...]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if not self.codes:
            problems.append(Problem(None, None, "codes", "", "a taxonomy needs at least one code"))
        seen: set[str] = set()
        for code in self.codes:
            if code != _normalise(code) or not code:
                problems.append(
                    Problem(
                        None, None, "code", code, "codes must be non-empty lower-case snake_case"
                    )
                )
            if code in seen:
                problems.append(Problem(None, None, "code", code, "duplicate code"))
            seen.add(code)
        for alias, target in self.aliases.items():
            if target not in seen:
                problems.append(
                    Problem(None, None, "alias", alias, f"maps to unknown code {target!r}")
                )
        if problems:
            raise InputValidationError(problems)
        object.__setattr__(
            self,
            "aliases",
            MappingProxyType({_normalise(k): v for k, v in self.aliases.items()}),
        )

    def resolve(self, name: str) -> str | None:
        """Return the canonical code for ``name`` (a code or an alias), or None.

        Matching ignores case and treats spaces, hyphens and slashes as underscores.
        """
        key = _normalise(name)
        if key in self.codes:
            return key
        return self.aliases.get(key)

    def suggest(self, name: str) -> str | None:
        """Return the closest known code or alias to an unknown ``name``, or None."""
        key = _normalise(name)
        choices = list(self.codes) + list(self.aliases)
        close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
        if not close:
            return None
        return self.resolve(close[0])

    def describe_unknown(self, name: str) -> str:
        """Return the reason text for an unknown category, with a suggestion."""
        hint = self.suggest(name)
        text = "unknown category"
        if hint:
            text += f"; did you mean {hint!r}?"
        return text + f" Valid codes: {', '.join(self.codes)}"

    @classmethod
    def from_file(cls, path: str | Path) -> Taxonomy:
        """Load a taxonomy from a JSON or CSV file.

        Parameters
        ----------
        path : str or Path
            JSON: ``{"codes": [...], "aliases": {"alias": "code", ...}}``.
            CSV: columns ``code`` and optional ``aliases`` (``;``-separated).

        Returns
        -------
        Taxonomy

        Raises
        ------
        InputValidationError
            When the file cannot be read or its content is not a valid taxonomy.
        """
        path = Path(path)
        try:
            text = read_file(path).decode("utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputValidationError(
                [Problem(str(path), None, None, None, f"cannot read taxonomy file: {exc}")]
            ) from exc
        if path.suffix.lower() == ".json":
            try:
                raw = json.loads(text)
                if not isinstance(raw.get("codes"), list) or not all(
                    isinstance(c, str) for c in raw["codes"]
                ):
                    raise TypeError("'codes' must be a list of strings")
                _check_codes([(None, c) for c in raw["codes"]], str(path))
                codes = tuple(_normalise(c) for c in raw["codes"])
                aliases = {str(k): _normalise(v) for k, v in raw.get("aliases", {}).items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise InputValidationError(
                    [
                        Problem(
                            str(path),
                            None,
                            "codes",
                            None,
                            f"expected {{'codes': [...], 'aliases': {{...}}}}: {exc}",
                        )
                    ]
                ) from exc
            return cls(codes, aliases)
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(text)))
        if not rows or "code" not in rows[0]:
            raise InputValidationError(
                [Problem(str(path), None, "code", None, "a taxonomy CSV needs a 'code' column")]
            )
        _check_codes([(line, row["code"]) for line, row in enumerate(rows, start=2)], str(path))
        codes_list: list[str] = []
        alias_map: dict[str, str] = {}
        for row in rows:
            code = _normalise(row["code"])
            codes_list.append(code)
            for alias in (row.get("aliases") or "").split(";"):
                if alias.strip():
                    alias_map[alias.strip()] = code
        return cls(tuple(codes_list), alias_map)

    def with_codes(self, extra: Iterable[str]) -> Taxonomy:
        """Return a taxonomy extended by ``extra`` codes."""
        codes = self.codes + tuple(c for c in extra if c not in self.codes)
        return Taxonomy(codes, dict(self.aliases))


def default_taxonomy() -> Taxonomy:
    """Return the default taxonomy of DESIGN.md."""
    return Taxonomy(DEFAULT_CATEGORIES, dict(DEFAULT_ALIASES))
