"""Row-level validation of needs and partners tables (vectorised, all problems at once)."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ._errors import Problem
from .limits import MAX_RADIUS_KM, MAX_TEXT_CHARS, MAX_UNITS, id_problem, text_problem
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
    "optional": ("name", "languages", "contact"),
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


def _text(series: pd.Series) -> pd.Series:
    """Strings with NaN/None as empty, stripped.

    One pass in Python over the values: faster than pandas' string methods at every size
    (they cost about 1 ms a call on a one-row table, the service's single records).
    """
    missing = series.isna().to_numpy()
    values = series.to_numpy(dtype=object)
    out = ["" if gone else str(v).strip() for v, gone in zip(values, missing, strict=True)]
    return pd.Series(out, index=series.index, dtype=str)


def _map_unique(series: pd.Series, func: Callable[[str], object]) -> pd.Series:
    """``series.map(func)``, calling ``func`` once per distinct value."""
    codes, uniques = pd.factorize(series)  # missing values get code -1: map them as ""
    extra = [func("")] if (codes < 0).any() else []
    values = np.array([func(u) for u in uniques] + extra, dtype=object)
    return pd.Series(values[codes], index=series.index)


def _number(series: pd.Series) -> np.ndarray:
    """Float values; non-numeric, empty and boolean values become NaN."""
    if series.dtype == bool:
        return np.full(len(series), np.nan)
    return pd.to_numeric(_text(series).where(lambda s: s != "", None), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )


def _check_id(c: _Collector, field: str) -> pd.Series:
    ids = _text(c.df[field])
    c.flag((ids == "").to_numpy(), field, "must be a non-empty identifier")
    reasons = _map_unique(ids, lambda v: id_problem(v) if v else None)
    for reason in sorted(set(reasons.dropna())):
        c.flag((reasons == reason).to_numpy(), field, reason)
    dup = ids.duplicated(keep="first").to_numpy() & (ids != "").to_numpy()
    if dup.any():
        first = {v: int(c.rows[i]) for i, v in reversed(list(enumerate(ids))) if v}
        c.flag(
            dup, field, lambda v: f"duplicate {field}; first used on row {first[str(v).strip()]}"
        )
    return ids


def _check_coordinates(c: _Collector) -> tuple[np.ndarray, np.ndarray]:
    lat, lon = _number(c.df["lat"]), _number(c.df["lon"])
    for name, arr, lim in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        missing = np.isnan(arr) & (_text(c.df[name]) == "").to_numpy()
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
    values = _number(c.df[field])
    rule = f"a number {'>' if strict else '>='} 0 and <= {high:,.0f}"
    finite = np.isfinite(values)
    low = np.where(finite, values, 1.0) <= 0 if strict else np.where(finite, values, 0.0) < 0
    c.flag(~finite | low | (np.where(finite, values, 0.0) > high), field, f"must be {rule}")
    return values


def _check_texts(c: _Collector, fields: Sequence[str]) -> None:
    """Flag free-text cells longer than :data:`matcher.limits.MAX_TEXT_CHARS`."""
    for name in fields:
        if name not in c.df:
            continue
        text = _text(c.df[name])
        long = (text.str.len() > MAX_TEXT_CHARS).to_numpy()
        c.flag(long, name, lambda v: str(text_problem(str(v).strip())))


def _check_languages(c: _Collector) -> pd.Series:
    if "languages" not in c.df:
        return pd.Series([""] * len(c.df), index=c.df.index)
    text = _text(c.df["languages"]).str.lower().str.replace(" ", "", regex=False)

    def ok(value: str) -> bool:
        return all(_LANG.match(code) for code in value.split(";") if code) if value else True

    bad = ~_map_unique(text, ok).to_numpy(dtype=bool)
    c.flag(bad, "languages", "must be ';'-separated two-letter ISO 639-1 codes, e.g. 'en;es'")
    return _map_unique(text, lambda v: ";".join(sorted({x for x in v.split(";") if x})))


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
    text = _text(c.df[field])
    lookup = {v: _resolve_categories(v, taxonomy, multi) for v in text.unique()}
    reasons = _map_unique(text, lambda v: lookup[v][1])
    bad = reasons.notna().to_numpy()
    for reason in sorted(set(reasons[bad])):
        c.flag(bad & (reasons == reason).to_numpy(), field, reason)
    return _map_unique(text, lambda v: lookup[v][0])


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
        sev_text = _text(df["severity"])
        sev = _number(df["severity"])
        sev = np.where(sev_text.to_numpy() == "", 3.0, sev)
        c.flag(
            ~np.isfinite(sev) | (sev < 1) | (sev > 5) | (np.nan_to_num(sev) % 1 != 0),
            "severity",
            "must be an integer 1..5 (or empty for the default 3)",
        )
    else:
        sev = np.full(len(df), 3.0)
    languages = _check_languages(c)
    optional = {
        n: _text(df[n]) if n in df else pd.Series([""] * len(df), index=df.index)
        for n in ("neighborhood", "reported_at", "source")
    }
    c.flag(
        ~_map_unique(optional["reported_at"], lambda v: not v or _is_date(v)).to_numpy(
            dtype=bool
        ),
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
            "severity": np.nan_to_num(sev, nan=3.0).astype(np.int64),
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
    kind = _text(df["kind"]).str.lower()
    c.flag(~kind.isin(KINDS).to_numpy(), "kind", f"must be one of {', '.join(KINDS)}")
    categories = _categories(c, "categories", taxonomy, multi=True)
    lat, lon = _check_coordinates(c)
    capacity = _check_amount(c, "capacity", strict=False, high=MAX_UNITS)
    radius = _check_amount(c, "radius_km", strict=True, high=MAX_RADIUS_KM)
    _check_texts(c, ("name", "categories", "languages", "contact"))
    languages = _check_languages(c)
    name = _text(df["name"]) if "name" in df else ids
    name = name.where(name != "", ids)
    contact = _text(df["contact"]) if "contact" in df else pd.Series([""] * len(df), index=df.index)
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
        }
    )
    good = ~c.bad
    return Validated(table.loc[good].reset_index(drop=True), c.problems(), c.bad)
