"""Row-level validation of needs and partners tables (vectorised, all problems at once)."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from ._errors import Problem
from .limits import (
    _CONTROL,
    FORMULA_PREFIXES,
    MAX_ID_CHARS,
    MAX_RADIUS_KM,
    MAX_RADIUS_MIN,
    MAX_TEXT_CHARS,
    MAX_UNITS,
    id_problem,
    text_problem,
)
from .taxonomy import Taxonomy

__all__ = [
    "NEED_COLUMNS",
    "NEED_FIELDS",
    "PARTNER_COLUMNS",
    "PARTNER_FIELDS",
    "validate_needs",
    "validate_partners",
    "Validated",
]

#: Required and optional columns of each table (lat/lon may come from a geometry).
NEED_COLUMNS = {
    "required": ("need_id", "category", "lat", "lon", "demand"),
    "optional": ("severity", "neighborhood", "languages", "reported_at", "source"),
}
PARTNER_COLUMNS = {
    "required": ("partner_id", "kind", "lat", "lon", "categories", "capacity", "radius_km"),
    "optional": ("name", "languages", "contact", "radius_min"),
}
#: The columns of a validated needs table (``read_needs(...).frame``), in order.
NEED_FIELDS: tuple[str, ...] = NEED_COLUMNS["required"] + NEED_COLUMNS["optional"]
#: The columns of a validated partners table (``read_partners(...).frame``), in order.
PARTNER_FIELDS: tuple[str, ...] = (
    "partner_id",
    "name",
    "kind",
    "lat",
    "lon",
    "categories",
    "capacity",
    "radius_km",
    "languages",
    "contact",
)
KINDS = ("organization", "volunteer")
_T = TypeVar("_T")
_LANG = re.compile(r"^[a-z]{2}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ][0-9:.+\-Z]*)?$")


def _is_date(value: str) -> bool:
    """Whether ``value`` is an ISO 8601 date or date-time that exists (not 2023-02-30)."""
    if not _DATE.match(value):
        return False
    try:
        _dt.datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Validated:
    """The result of validating one table.

    Attributes
    ----------
    table : pandas.DataFrame
        The valid rows, typed and normalised, in input order.
    problems : tuple of Problem
        Every problem found.
    bad_rows : numpy.ndarray of bool
        Per input row, whether it has at least one problem.
    """

    table: pd.DataFrame
    problems: tuple[Problem, ...]
    bad_rows: np.ndarray


class _Collector:
    """Collect problems per row and field, vectorised by column."""

    def __init__(self, df: pd.DataFrame, rows: Sequence[int], file: str) -> None:
        self.df = df
        self.rows = np.asarray(rows)
        self.file = file
        self.bad = np.zeros(len(df), dtype=bool)
        self.found: list[tuple[int, int, Problem]] = []
        self._texts: dict[str, tuple[pd.Series, list[str]]] = {}

    def text(self, field: str) -> pd.Series:
        """Return the stripped text of a column (:func:`_text_values`), once per column."""
        return self._text_and_list(field)[0]

    def text_list(self, field: str) -> list[str]:
        """Return the values of :meth:`text` as a list of str."""
        return self._text_and_list(field)[1]

    def _text_and_list(self, field: str) -> tuple[pd.Series, list[str]]:
        if field not in self._texts:
            if field in self.df:
                self._texts[field] = _text_values(self.df[field])
            else:
                blank = [""] * len(self.df)
                self._texts[field] = (pd.Series(blank, index=self.df.index), blank)
        return self._texts[field]

    def number(self, field: str) -> np.ndarray:
        """Float values of a column; non-numeric, empty and boolean values become NaN."""
        if self.df[field].dtype == bool:
            return np.full(len(self.df), np.nan)
        return _parse_numbers(*self._text_and_list(field))

    def flag(self, mask: np.ndarray, field: str, reason: str | Callable[[object], str]) -> None:
        """Record a problem for every row where ``mask`` is true."""
        mask = np.asarray(mask, dtype=bool)
        if not mask.any():
            return
        self.bad |= mask
        values = self.df[field].to_numpy() if field in self.df else np.full(len(self.df), None)
        order = list(self.df.columns).index(field) if field in self.df else 0
        for i in np.flatnonzero(mask):
            value = values[i]
            text = reason(value) if callable(reason) else reason
            self.found.append(
                (int(i), order, Problem(self.file, int(self.rows[i]), field, value, text))
            )

    def problems(self) -> tuple[Problem, ...]:
        return tuple(p for _, _, p in sorted(self.found, key=lambda t: (t[0], t[1])))


#: The dtype of ``pd.Series(list_of_str, dtype=str)``: what :func:`_text_values` returns.
_STR = pd.Series([""], dtype=str).dtype
#: The ASCII characters that ``str.strip()`` removes (``str.isspace``).
_ASCII_SPACE = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f "
#: An id after a ``"\n"`` that starts with a formula prefix (``id_problem``'s rule).
_FORMULA_START = re.compile("\n[" + re.escape("".join(FORMULA_PREFIXES[:4])) + "]")


def _has_space(values: list[str]) -> bool:
    """Whether any value may have whitespace to strip (False only when none has any)."""
    joined = "".join(values)
    return not joined.isascii() or any(ch in joined for ch in _ASCII_SPACE)


def _text_values(series: pd.Series) -> tuple[pd.Series, list[str]]:
    """Return a column's values as stripped strings (NaN/None as ""): a Series and a list.

    A column of plain strings without missing values (every column of a CSV file) takes
    one pass of ``str.strip`` and keeps its own storage when nothing was stripped; any
    other column takes the per-value pass ``str(v).strip()``, missing values as "".
    """
    values = series.tolist()
    if series.dtype == _STR or (series.dtype == object and set(map(type, values)) <= {str}):
        try:
            if series.dtype == _STR and not _has_space(values):  # nothing to strip
                return pd.Series(series.array, index=series.index, copy=False), values
            out = [v.strip() for v in values]
        except (TypeError, AttributeError):  # a missing value (NaN) in a str column
            pass
        else:
            if series.dtype == _STR and out == values:
                return pd.Series(series.array, index=series.index, copy=False), values
            return pd.Series(out, index=series.index, dtype=str), out
    missing = series.isna().to_numpy()
    raw = series.to_numpy(dtype=object)
    out = ["" if gone else str(v).strip() for v, gone in zip(raw, missing, strict=True)]
    return pd.Series(out, index=series.index, dtype=str), out


def _parse_numbers(text: pd.Series, values: list[str]) -> np.ndarray:
    """Float values of stripped text (:func:`_text_values`): ``pd.to_numeric``, "" as NaN.

    A long column of few distinct values (amounts, severities) is parsed once per
    distinct value: the same numbers, in a fraction of the time.
    """
    if len(values) >= 4096 and len(set(values[:1000])) <= 100:
        codes, uniques = pd.factorize(text)
        if 8 * len(uniques) <= len(values):
            distinct = list(uniques)
            return _parse_numbers(pd.Series(distinct, dtype=str), distinct)[codes]
    if "" in values:
        text = text.where(text != "", None)
    return pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


def _longest(values: list[str]) -> int:
    return max(map(len, values), default=0)


def _check_id(c: _Collector, field: str) -> pd.Series:
    ids, values = c.text(field), c.text_list(field)
    if "" in values:
        c.flag((ids == "").to_numpy(), field, "must be a non-empty identifier")
    if (
        _longest(values) > MAX_ID_CHARS
        or not "".join(values).isprintable()  # a control character, or other unprintables
        or _FORMULA_START.search("\n" + "\n".join(values))
    ):
        # the exact rule only for the values a vector test cannot clear
        suspect = np.flatnonzero(
            (ids.str.len() > MAX_ID_CHARS).to_numpy()
            | ids.str.contains(_CONTROL.pattern, regex=True).to_numpy(dtype=bool)
            | ids.str.startswith(FORMULA_PREFIXES[:4]).to_numpy(dtype=bool)
        )
        found: dict[str, list[int]] = {}
        for i in suspect:
            reason = id_problem(values[i]) if values[i] else None
            if reason is not None:
                found.setdefault(reason, []).append(int(i))
        for reason in sorted(found):
            mask = np.zeros(len(values), dtype=bool)
            mask[found[reason]] = True
            c.flag(mask, field, reason)
    if len(set(values)) != len(values):
        dup = ids.duplicated(keep="first").to_numpy() & (ids != "").to_numpy()
        if dup.any():
            first = {v: int(c.rows[i]) for i, v in reversed(list(enumerate(values))) if v}
            c.flag(
                dup,
                field,
                lambda v: f"duplicate {field}; first used on row {first[str(v).strip()]}",
            )
    return ids


def _check_coordinates(c: _Collector) -> tuple[np.ndarray, np.ndarray]:
    lat, lon = c.number("lat"), c.number("lon")
    for name, arr, lim in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        nan = np.isnan(arr)
        missing = nan & (c.text(name) == "").to_numpy() if nan.any() else nan
        c.flag(missing, name, f"is empty; a {name} in degrees WGS84 is required")
        finite = np.isfinite(arr)
        c.flag(~finite & ~missing, name, f"must be a finite number in -{lim:g}..{lim:g}")
        c.flag(
            finite & (np.abs(np.where(finite, arr, 0.0)) > lim),
            name,
            f"out of range; must be in -{lim:g}..{lim:g}",
        )
    c.flag(
        (lat == 0) & (lon == 0),
        "lat",
        "(lat, lon) is exactly (0, 0), most likely a missing value; give the real location",
    )
    return lat, lon


def _check_amount(c: _Collector, field: str, *, strict: bool, high: float) -> np.ndarray:
    values = c.number(field)
    rule = f"a number {'>' if strict else '>='} 0 and <= {high:,.0f}"
    finite = np.isfinite(values)
    low = np.where(finite, values, 1.0) <= 0 if strict else np.where(finite, values, 0.0) < 0
    c.flag(~finite | low | (np.where(finite, values, 0.0) > high), field, f"must be {rule}")
    return values


def _check_texts(c: _Collector, fields: Sequence[str]) -> None:
    """Flag free-text cells longer than :data:`matcher.limits.MAX_TEXT_CHARS`."""
    for name in fields:
        if name not in c.df or _longest(c.text_list(name)) <= MAX_TEXT_CHARS:
            continue
        long = (c.text(name).str.len() > MAX_TEXT_CHARS).to_numpy()
        c.flag(long, name, lambda v: str(text_problem(str(v).strip())))


def _per_distinct(text: pd.Series, func: Callable[[str], _T]) -> tuple[np.ndarray, list[_T]]:
    """Codes of each row's distinct value and ``func`` of each distinct value."""
    codes, uniques = pd.factorize(text)  # stripped text: no missing values
    return codes, [func(u) for u in uniques]


def _check_languages(c: _Collector) -> pd.Series:
    if "languages" not in c.df:
        return pd.Series([""] * len(c.df), index=c.df.index)

    def check(raw: str) -> tuple[bool, str]:
        value = raw.lower().replace(" ", "")
        ok = all(_LANG.match(code) for code in value.split(";") if code) if value else True
        return ok, ";".join(sorted({x for x in value.split(";") if x}))

    text = c.text("languages")
    codes, checked = _per_distinct(text, check)
    ok = np.array([good for good, _ in checked], dtype=bool)
    c.flag(
        ~ok[codes], "languages", "must be ';'-separated two-letter ISO 639-1 codes, e.g. 'en;es'"
    )
    return pd.Series(np.array([norm for _, norm in checked], dtype=object)[codes], index=text.index)


def _resolve_categories(value: str, taxonomy: Taxonomy, multi: bool) -> tuple[str, str | None]:
    """Return (resolved codes joined by ';', reason or None) for one raw cell."""
    names = [n for n in value.split(";") if n.strip()] if multi else [value]
    if not value or not names:
        return "", ("must name at least one category" if multi else "must not be empty")
    codes = set()
    for name in names:
        code = taxonomy.resolve(name)
        if code is None:
            return "", f"{name.strip()!r}: {taxonomy.describe_unknown(name)}"
        codes.add(code)
    return ";".join(sorted(codes)), None


def _categories(c: _Collector, field: str, taxonomy: Taxonomy, *, multi: bool) -> pd.Series:
    text = c.text(field)
    codes, resolved = _per_distinct(text, lambda v: _resolve_categories(v, taxonomy, multi))
    reasons = [reason for _, reason in resolved]
    by_reason: dict[str, list[int]] = {}
    for k, reason in enumerate(reasons):
        if reason is not None:
            by_reason.setdefault(str(reason), []).append(k)
    for reason in sorted(by_reason):
        c.flag(np.isin(codes, by_reason[reason]), field, reason)
    out = np.array([code for code, _ in resolved], dtype=object)
    return pd.Series(out[codes], index=text.index)


def validate_needs(
    df: pd.DataFrame, rows: Sequence[int], file: str, taxonomy: Taxonomy
) -> Validated:
    """Validate a raw needs table.

    Parameters
    ----------
    df : pandas.DataFrame
        Raw values (strings or numbers), one row per need, with at least the required
        columns of ``NEED_COLUMNS``.
    rows : sequence of int
        The row number to report for each row of ``df``.
    file : str
        The file name to report.
    taxonomy : Taxonomy
        Categories and aliases.

    Returns
    -------
    Validated
    """
    c = _Collector(df, rows, file)
    ids = _check_id(c, "need_id")
    category = _categories(c, "category", taxonomy, multi=False)
    lat, lon = _check_coordinates(c)
    demand = _check_amount(c, "demand", strict=True, high=MAX_UNITS)
    _check_texts(c, ("neighborhood", "languages", "reported_at", "source"))
    if "severity" in df:
        sev = c.number("severity")
        if "" in c.text_list("severity"):
            sev = np.where(c.text("severity").to_numpy() == "", 3.0, sev)
        c.flag(
            ~np.isfinite(sev) | (sev < 1) | (sev > 5) | (np.nan_to_num(sev) % 1 != 0),
            "severity",
            "must be an integer 1..5 (or empty for the default 3)",
        )
    else:
        sev = np.full(len(df), 3.0)
    languages = _check_languages(c)
    optional = {n: c.text(n) for n in ("neighborhood", "reported_at", "source")}
    codes, dated = _per_distinct(optional["reported_at"], lambda v: not v or _is_date(v))
    c.flag(
        ~np.array(dated, dtype=bool)[codes],
        "reported_at",
        "must be an ISO 8601 date (YYYY-MM-DD) or empty",
    )
    table = pd.DataFrame(
        {
            "need_id": ids,
            "category": category,
            "lat": lat,
            "lon": lon,
            "demand": demand,
            # rows outside 1..5 are rejected: 3 keeps the cast of inf or 1e300 quiet
            "severity": np.where((sev >= 1) & (sev <= 5), sev, 3.0).astype(np.int64),
            "neighborhood": optional["neighborhood"],
            "languages": languages,
            "reported_at": optional["reported_at"],
            "source": optional["source"],
        }
    )
    good = ~c.bad
    return Validated(table.loc[good].reset_index(drop=True), c.problems(), c.bad)


def validate_partners(
    df: pd.DataFrame, rows: Sequence[int], file: str, taxonomy: Taxonomy
) -> Validated:
    """Validate a raw partners table (see :func:`validate_needs` for the parameters)."""
    c = _Collector(df, rows, file)
    ids = _check_id(c, "partner_id")
    kind = c.text("kind").str.lower()
    c.flag(~kind.isin(KINDS).to_numpy(), "kind", f"must be one of {', '.join(KINDS)}")
    categories = _categories(c, "categories", taxonomy, multi=True)
    lat, lon = _check_coordinates(c)
    capacity = _check_amount(c, "capacity", strict=False, high=MAX_UNITS)
    radius = _check_amount(c, "radius_km", strict=True, high=MAX_RADIUS_KM)
    _check_texts(c, ("name", "categories", "languages", "contact"))
    languages = _check_languages(c)
    name = c.text("name") if "name" in df else ids
    name = name.where(name != "", ids)
    contact = c.text("contact")
    extra = {}
    if "radius_min" in df:  # a travel time limit, used with a street network
        minutes = c.number("radius_min")
        blank = (c.text("radius_min") == "").to_numpy()
        c.flag(
            ~blank & ~((minutes > 0) & (minutes <= MAX_RADIUS_MIN)),
            "radius_min",
            f"must be a number of minutes > 0 and <= {MAX_RADIUS_MIN:,.0f}, or empty",
        )
        extra["radius_min"] = np.where(blank, np.nan, minutes)
    table = pd.DataFrame(
        {
            "partner_id": ids,
            "name": name,
            "kind": kind,
            "lat": lat,
            "lon": lon,
            "categories": categories,
            "capacity": capacity,
            "radius_km": radius,
            "languages": languages,
            "contact": contact,
            **extra,
        }
    )
    good = ~c.bad
    return Validated(table.loc[good].reset_index(drop=True), c.problems(), c.bad)
