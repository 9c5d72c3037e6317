"""Impact: whether new needs and incidents changed where partnerships served.

Per neighborhood x category (a *cell*), over a *before* and an *after* window, this
module counts new needs (by ``reported_at``) and, optionally, events from an events
file (311 requests or incident records). It compares the cells that partnerships
served with comparable cells that nothing served, by difference in differences.

Which cells are compared
------------------------
A partnership serves its cell (its cluster's neighborhood and category) from the day
its partner accepted it until the day it was completed or cancelled (still serving
when neither). Relative to the windows, a cell is:

* **served** (the treated group): a partnership served it on the first day of the
  after window, and none served it during the before window;
* **comparison**: no partnership served it from the first day of the before window to
  the last day of the after window (offers declined, lapsed or never accepted do not
  serve);
* **left out**, with the reason: served during the before window, service that began
  during the after window, or service that ended before it.

The test
--------
For each measure (new needs, events) the counts ``y`` of cell ``i`` in window ``t``
follow a Poisson model with a fixed effect per cell, a before/after change per
category, and the effect of being served in the after window::

    log E[y_it] = a_i + b_category(i) * after_t + d * served_i * after_t + log(days_t)

``exp(d)`` is the **rate ratio**: how the served cells' counts changed relative to the
comparison cells of the same category (1 = no difference, 0.8 = 20 % fewer). The cell
effects make each cell its own baseline; the per-category change absorbs trends and
seasons common to a category (the difference-in-differences assumption is that the
served cells would have followed them). This is the Poisson fixed-effects estimator
(Hausman, Hall & Griliches 1984): conditional on each cell's total, its after count is
binomial, so the estimate is the maximum of that likelihood, found by Newton's method
(the same estimate as a Poisson GLM with one dummy per cell; the tests check it
against statsmodels). The standard error is the larger of the cluster-robust one,
clustered by neighborhood (Wooldridge 1999; a neighborhood's categories are served by
the same programs, so its cells are not independent), with the small-sample factor
``G / (G - 1)`` for ``G`` neighborhoods, and the model-based (Poisson) one: counts that
vary more than Poisson's widen the interval, and a few cells that happen to agree cannot
shrink it to nothing (the rule of Angrist & Pischke 2009, section 8.2). The 95 %
interval and the p-value use Student's t with ``G - 1`` degrees of freedom, as advised
for few clusters (Cameron & Miller 2015).

With one category the estimate has a closed form, which the tests check by hand::

    rate ratio = (served_after / served_before) / (comparison_after / comparison_before)

Cells with no count in either window say nothing about a change and are left out of
the fit; a category whose served or comparison cells have no count in a window is left
out of the tests (the notes say which). Days are UTC days: a date-time with a zone is
converted to UTC before its day is taken (the store writes UTC). When the counts are
small the result says, in plain words, that nothing can be concluded
(:data:`MIN_CELLS`, :data:`MIN_COUNT`).

Partnerships are not assigned at random: planners send partners where needs are, so
served cells differ from the others, and reports themselves rise when outreach makes
people report. Every result carries these cautions.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from ._errors import InputValidationError, Problem
from .equity import natural_order
from .io import RowProblems, text_table, utc_days
from .limits import MAX_ID_CHARS

__all__ = [
    "EVENT_COLUMNS",
    "GROUPS",
    "ImpactResult",
    "ImpactTest",
    "MAX_EVENT_ROWS",
    "MAX_WINDOW_DAYS",
    "MIN_CELLS",
    "MIN_COUNT",
    "PARTNERSHIP_COLUMNS",
    "Window",
    "did_test",
    "impact",
    "parse_windows",
    "read_events",
    "read_partnerships",
    "service_periods",
    "usable_categories",
]

#: The columns of an events file (``category`` is a matcher category or alias).
EVENT_COLUMNS: tuple[str, ...] = ("id", "category", "lat", "lon", "date")
#: The columns read from a partnerships file (``matcher partnerships list`` writes them).
PARTNERSHIP_COLUMNS: tuple[str, ...] = (
    "partnership_id", "partner_id", "state", "category", "neighborhood", "units",
    "answered_at", "updated_at",
)  # fmt: skip
#: Most rows of an events or partnerships file.
MAX_EVENT_ROWS = 2_000_000
#: Longest window, in days (ten years).
MAX_WINDOW_DAYS = 3_660
#: The first and last day a window may hold.
FIRST_DAY, LAST_DAY = _dt.date(1900, 1, 1), _dt.date(2199, 12, 31)
#: Fewer served or comparison cells than this: too few areas to conclude anything.
MIN_CELLS = 10
#: Fewer counts than this in a group and window: too few to conclude anything.
MIN_COUNT = 20
#: The groups of :attr:`ImpactResult.cells`.
GROUPS: tuple[str, ...] = ("served", "comparison", "left_out")
#: The measures: new needs, and events when an events file is given.
MEASURES: tuple[str, ...] = ("needs", "events")

_WINDOW = re.compile(r"^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$")


@dataclass(frozen=True)
class Window:
    """A window of whole days, first and last day included."""

    start: _dt.date
    end: _dt.date

    @property
    def days(self) -> int:
        """Number of days in the window."""
        return (self.end - self.start).days + 1

    def __str__(self) -> str:
        return f"{self.start.isoformat()}..{self.end.isoformat()}"


def _window(text: str, name: str) -> Window | Problem:
    m = _WINDOW.match(str(text).strip())
    valid = "FIRST..LAST, two ISO dates (e.g. 2014-01-01..2014-06-30)"
    if not m:
        return Problem("windows", None, name, str(text)[:40], f"must be {valid}")
    try:
        start, end = (_dt.date.fromisoformat(g) for g in m.groups())
    except ValueError as exc:
        return Problem("windows", None, name, str(text)[:40], f"not a date: {exc}")
    window = Window(start, end)
    if not (FIRST_DAY <= start and end <= LAST_DAY):
        return Problem("windows", None, name, str(text), f"days from {FIRST_DAY} to {LAST_DAY}")
    if end < start:
        return Problem("windows", None, name, str(text), "the last day is before the first")
    if window.days > MAX_WINDOW_DAYS:
        return Problem("windows", None, name, str(text), f"at most {MAX_WINDOW_DAYS} days long")
    return window


def parse_windows(before: str, after: str) -> tuple[Window, Window]:
    """Return the before and after windows from ``FIRST..LAST`` texts.

    Raises
    ------
    InputValidationError
        Naming the window and what would be valid: not two ISO dates, the last day
        before the first, longer than :data:`MAX_WINDOW_DAYS`, or an after window that
        does not start after the before window ends.

    Examples
    --------
    >>> b, a = parse_windows("2014-01-01..2014-06-30", "2014-07-01..2014-12-31")
    >>> b.days, a.days, str(a)
    (181, 184, '2014-07-01..2014-12-31')
    """
    b, a = _window(before, "before"), _window(after, "after")
    problems = [w for w in (b, a) if isinstance(w, Problem)]
    if problems:
        raise InputValidationError(problems)
    assert isinstance(b, Window) and isinstance(a, Window)
    if a.start <= b.end:
        raise InputValidationError([Problem(
            "windows", None, "after", str(a),
            f"must start after the before window ends ({b.end.isoformat()})",
        )])  # fmt: skip
    return b, a


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------


def _categories(names: pd.Series, taxonomy: Any, problems: RowProblems) -> pd.Series:
    """Matcher categories of names (aliases resolve); unknown names are problems."""
    from .taxonomy import default_taxonomy

    tax = taxonomy or default_taxonomy()
    cats = names.map({n: tax.resolve(n) for n in names.unique()})
    problems.flag(cats.isna(), names, "category", tax.describe_unknown)
    return cats


def read_events(
    content: bytes,
    label: str,
    neighborhoods: Any,
    taxonomy: Any | None = None,
) -> pd.DataFrame:
    """Read an events file (CSV: ``id, category, lat, lon, date``) into cells.

    Parameters
    ----------
    content : bytes
        The file's bytes.
    label : str
        The file's name, for problems.
    neighborhoods : geopandas.GeoDataFrame
        The polygons that place each event in a neighborhood.
    taxonomy : Taxonomy, optional
        Categories and aliases (default: the default taxonomy).

    Returns
    -------
    pandas.DataFrame
        ``neighborhood, category, date`` (its UTC day) per event inside a neighborhood;
        ``attrs["outside"]`` counts the events outside every polygon.

    Raises
    ------
    InputValidationError
        With the bad rows (file, row, field, value, what would be valid; the header is
        row 1; at most 1,000): a missing or duplicate id, an unknown category, a
        coordinate out of range, a date that is not ISO 8601.
    """
    from .pipeline import assign_neighborhoods

    frame = text_table(content, label, EVENT_COLUMNS, MAX_EVENT_ROWS)
    problems = RowProblems(label)
    ids = frame["id"].str.strip()
    bad_id = (ids.str.len() == 0) | (ids.str.len() > MAX_ID_CHARS)
    problems.flag(bad_id, ids, "id", f"must be 1 to {MAX_ID_CHARS} characters")
    problems.flag(ids.duplicated(keep="first") & ~bad_id, ids, "id", "listed twice")
    cats = _categories(frame["category"].str.strip(), taxonomy, problems)
    lat = pd.to_numeric(frame["lat"], errors="coerce")
    lon = pd.to_numeric(frame["lon"], errors="coerce")
    for col, val, lim in (("lat", lat, 90), ("lon", lon, 180)):
        problems.flag(~val.between(-lim, lim), frame[col], col,
                      f"must be a number from -{lim} to {lim} (WGS84)")  # fmt: skip
    dates = utc_days(frame["date"])
    problems.flag(dates.isna(), frame["date"], "date",
                  "must be an ISO 8601 date (YYYY-MM-DD) or date-time")  # fmt: skip
    problems.raise_any()
    points = pd.DataFrame({"lat": lat, "lon": lon, "neighborhood": ""})
    hood = assign_neighborhoods(points, neighborhoods)
    inside = hood != ""
    out = pd.DataFrame({
        "neighborhood": hood[inside].to_numpy(),
        "category": cats[inside].to_numpy(),
        "date": dates[inside].to_numpy(),
    })  # fmt: skip
    out.attrs["outside"] = int((~inside).sum())
    return out


def read_partnerships(
    content: bytes, label: str, taxonomy: Any | None = None
) -> list[dict[str, Any]]:
    """Read a partnerships CSV as ``matcher partnerships list --all`` writes it.

    Only :data:`PARTNERSHIP_COLUMNS` are read (others are ignored); cells that matcher
    neutralised for spreadsheets are restored.

    Returns
    -------
    list of dict
        One record per row, as :func:`impact` takes them.

    Raises
    ------
    InputValidationError
        With the bad rows (at most 1,000): an id or a neighborhood out of bounds, an
        unknown state or category, units that are not a number from 0 to
        ``limits.MAX_UNITS``, a date that is not ISO 8601.
    """
    from .limits import MAX_TEXT_CHARS, MAX_UNITS, id_problem
    from .output import restore_cell
    from .partnerships import STATES

    frame = text_table(content, label, PARTNERSHIP_COLUMNS, MAX_EVENT_ROWS)
    frame = frame[list(PARTNERSHIP_COLUMNS)]
    frame = frame.apply(lambda c: c.map(restore_cell))
    problems = RowProblems(label)
    for col in ("partnership_id", "partner_id"):
        problems.flag(frame[col].map(id_problem).notna(), frame[col], col, id_problem)
    hood = frame["neighborhood"]
    problems.flag(hood.str.len() > MAX_TEXT_CHARS, hood, "neighborhood",
                  f"at most {MAX_TEXT_CHARS} characters")  # fmt: skip
    problems.flag(~frame["state"].isin(STATES), frame["state"], "state",
                  f"must be one of {', '.join(STATES)}")  # fmt: skip
    cats = _categories(frame["category"], taxonomy, problems)
    units = pd.to_numeric(frame["units"], errors="coerce")
    problems.flag(~units.between(0, MAX_UNITS), frame["units"], "units",
                  f"must be a number from 0 to {MAX_UNITS:g}")  # fmt: skip
    for col, required in (("answered_at", False), ("updated_at", True)):
        given = frame[col].str.strip() != ""
        bad = utc_days(frame[col]).isna() & (given | required)
        problems.flag(bad, frame[col], col, "must be an ISO 8601 date or date-time")
    problems.raise_any()
    return frame.assign(category=cats, units=units).to_dict("records")


# ---------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------


def service_periods(partnerships: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Return when each partnership served its cell: ``neighborhood, category, start, end``.

    A partnership serves from the (UTC) day its partner accepted it (``answered_at`` of an
    accepted, active or completed one, or of one cancelled after it was accepted) to the
    day it was completed or cancelled (``updated_at``); ``end`` is NaT while it serves.
    Partnerships never accepted are not listed.
    """
    cols = ["state", "answered_at", "updated_at", "neighborhood", "category", "units"]
    frame = pd.DataFrame([{c: p.get(c) for c in cols} for p in partnerships], columns=cols)
    frame = frame.fillna({"answered_at": "", "updated_at": "", "neighborhood": "",
                          "units": 0.0})  # fmt: skip
    state = frame["state"].astype(str)
    answered = utc_days(frame["answered_at"])
    accepted = state.isin(["accepted", "active", "completed"]) | (
        (state == "cancelled") & answered.notna()
    )
    ended = state.isin(["completed", "cancelled"])
    keep = (accepted & answered.notna() & (frame["neighborhood"].astype(str) != "")).to_numpy()
    return pd.DataFrame({
        "neighborhood": frame["neighborhood"].astype(str).to_numpy()[keep],
        "category": frame["category"].astype(str).to_numpy()[keep],
        "start": answered.to_numpy()[keep],
        "end": utc_days(frame["updated_at"]).where(ended).to_numpy()[keep],
        "units": frame["units"].astype(float).to_numpy()[keep],
    })  # fmt: skip


def _classify(periods: pd.DataFrame, before: Window, after: Window) -> pd.DataFrame:
    """Group, reason and served units per cell that any partnership served."""
    b0, b1 = pd.Timestamp(before.start), pd.Timestamp(before.end)
    a0, a1 = pd.Timestamp(after.start), pd.Timestamp(after.end)
    end = periods["end"].fillna(pd.Timestamp("2200-01-01"))  # still serving
    start = periods["start"]
    at_after = (start <= a0) & (end >= a0)
    p = periods.assign(
        in_before=(start <= b1) & (end >= b0),
        at_after=at_after,
        any_time=(start <= a1) & (end >= b0),
        units_at_after=np.where(at_after, periods["units"], 0.0),
        began_after=(start > a0) & (start <= a1),
    )
    g = p.groupby(["neighborhood", "category"], sort=True).agg(
        in_before=("in_before", "any"), at_after=("at_after", "any"),
        any_time=("any_time", "any"), partnerships=("at_after", "sum"),
        units=("units_at_after", "sum"),
        began_after=("began_after", "any"),
    ).astype({"in_before": bool, "at_after": bool, "any_time": bool, "began_after": bool})
    group = np.select(
        [g["in_before"], g["at_after"], ~g["any_time"]],
        ["left_out", "served", "comparison"],
        "left_out",
    )
    reason = np.select(
        [g["in_before"], g["at_after"], ~g["any_time"], g["began_after"]],
        ["served during the before window", "", "", "service began during the after window"],
        "service ended before the after window",
    )
    return g.assign(group=group, reason=reason)[["group", "reason", "partnerships", "units"]]


def _counts(points: pd.DataFrame, window: Window, name: str) -> pd.Series:
    d = points["date"]
    inside = (d >= pd.Timestamp(window.start)) & (d <= pd.Timestamp(window.end))
    sel = points[inside]
    return sel.groupby(["neighborhood", "category"], sort=True).size().rename(name)


# ---------------------------------------------------------------------------------------
# the test
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImpactTest:
    """One difference-in-differences test: a measure, over one category or all.

    ``rate_ratio``, ``ci_low``, ``ci_high``, ``p_value`` and ``se`` (of the log rate
    ratio) are None when the test cannot be estimated (``caution`` says why).
    """

    measure: str
    category: str
    served_cells: int
    comparison_cells: int
    served_before: int
    served_after: int
    comparison_before: int
    comparison_after: int
    rate_ratio: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    se: float | None
    conclusion: str
    caution: str

    def to_dict(self) -> dict[str, Any]:
        """Return the test as a JSON-ready dict (floats rounded to 6 digits)."""
        out: dict[str, Any] = {}
        for k, v in self.__dict__.items():
            out[k] = round(v, 6) if isinstance(v, float) else v
        return out


def _fit(
    n: np.ndarray, ya: np.ndarray, x: np.ndarray, offset: float, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Maximise the conditional (binomial) likelihood by Newton's method.

    ``n`` cell totals, ``ya`` after counts, ``x`` the design (one column per category's
    change, then ``served``), ``offset`` ``log(after days / before days)``, ``start``
    the first estimate. Return the estimate, the inverse information (the model-based
    covariance) and each cell's score; None when the fit does not converge.
    """

    def loglik(t: np.ndarray) -> float:
        eta = offset + x @ t
        return float(np.sum(ya * eta - n * np.logaddexp(0.0, eta)))

    def parts(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = 1.0 / (1.0 + np.exp(-(offset + x @ t)))
        return x * (ya - n * p)[:, None], (x * (n * p * (1 - p))[:, None]).T @ x

    theta, current = start.astype(float), loglik(start)
    for _ in range(100):
        scores, info = parts(theta)
        try:
            step = np.linalg.solve(info, scores.sum(axis=0))
        except np.linalg.LinAlgError:
            return None
        if not np.all(np.isfinite(step)):
            return None
        step *= min(1.0, 5.0 / max(float(np.max(np.abs(step))), 1e-300))  # at most e^5
        k = 1.0
        while k > 1e-9:  # never a step that lowers the likelihood (it is concave)
            value = loglik(theta + k * step)
            if value >= current:
                break
            k /= 2
        else:
            break  # no step improves it: the maximum, within rounding
        theta, current = theta + k * step, value
        if float(np.max(np.abs(k * step))) < 1e-12:
            break
    scores, info = parts(theta)
    if float(np.max(np.abs(scores.sum(axis=0)))) > 1e-7 * max(float(n.sum()), 1.0):
        return None
    try:
        inv = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        return None
    if not np.all(np.isfinite(inv)):
        return None
    return theta, inv, scores


def _pct(x: float) -> str:
    return f"{abs(x - 1) * 100:.0f}%"


def _cannot(base: dict[str, Any], why: str) -> ImpactTest:
    return ImpactTest(**base, rate_ratio=None, ci_low=None, ci_high=None, p_value=None,
                      se=None, conclusion="Cannot be estimated.", caution=why)  # fmt: skip


def did_test(cells: pd.DataFrame, measure: str, category: str, before: Window,
             after: Window) -> ImpactTest:  # fmt: skip
    """Run the test on ``cells`` (served and comparison rows) for one measure.

    Parameters
    ----------
    cells : pandas.DataFrame
        ``neighborhood, category, group`` and ``{measure}_before``, ``{measure}_after``
        per cell.
    measure : str
        ``"needs"`` or ``"events"``.
    category : str
        The category tested, or ``"all"`` (pooled, with a change per category).
    before, after : Window
        The windows (their lengths are the exposure).

    Returns
    -------
    ImpactTest
        The test over the categories :func:`usable_categories` keeps.
    """
    from scipy import stats

    word = "new needs" if measure == "needs" else "events"
    c = cells[cells["group"].isin(("served", "comparison"))]
    if category != "all":
        c = c[c["category"] == category]
    c = c[(c[f"{measure}_before"] + c[f"{measure}_after"]) > 0]
    usable = usable_categories(c, measure)
    c = c[c["category"].isin(usable)]
    served = (c["group"] == "served").to_numpy()
    yb = c[f"{measure}_before"].to_numpy(dtype=np.int64)
    ya = c[f"{measure}_after"].to_numpy(dtype=np.int64)
    counts = (int(yb[served].sum()), int(ya[served].sum()), int(yb[~served].sum()),
              int(ya[~served].sum()))  # fmt: skip
    n_served, n_comp = int(served.sum()), int((~served).sum())
    hoods = pd.factorize(c["neighborhood"].astype(str))[0]
    g = int(hoods.max()) + 1 if len(hoods) else 0
    base: dict[str, Any] = dict(measure=measure, category=category, served_cells=n_served,
                                comparison_cells=n_comp, served_before=counts[0],
                                served_after=counts[1], comparison_before=counts[2],
                                comparison_after=counts[3])  # fmt: skip
    if n_served < 2 or n_comp < 2 or g < 2:
        return _cannot(base, f"Too few areas to compare: {n_served} served and {n_comp} "
                       f"comparison areas, in {g} neighborhood(s), had {word} in either "
                       f"window (at least 2 of each are needed, and {MIN_CELLS} to conclude "
                       "anything).")  # fmt: skip
    codes = pd.Categorical(c["category"], categories=usable).codes
    x = np.zeros((len(c), len(usable) + 1))
    x[np.arange(len(c)), codes] = 1.0
    x[:, -1] = served
    offset = math.log(after.days / before.days)
    # start: each category's comparison share of counts after, the pooled ratio of ratios
    start = np.zeros(x.shape[1])
    for j in range(len(usable)):
        ctrl = (codes == j) & ~served
        share = ya[ctrl].sum() / (yb[ctrl].sum() + ya[ctrl].sum())
        start[j] = math.log(share / (1 - share)) - offset
    start[-1] = math.log((counts[1] / counts[0]) / (counts[3] / counts[2]))
    fit = _fit((yb + ya).astype(float), ya.astype(float), x, offset, start)
    if fit is None:
        return _cannot(base, "The model did not converge on these counts.")
    theta, inv, scores = fit
    by_hood = np.zeros((g, x.shape[1]))
    np.add.at(by_hood, hoods, scores)
    robust = (inv @ (by_hood.T @ by_hood) @ inv)[-1, -1] * g / (g - 1)
    d, se = float(theta[-1]), float(math.sqrt(max(robust, inv[-1, -1])))
    q = float(stats.t.ppf(0.975, g - 1))
    rr, lo, hi = math.exp(d), math.exp(d - q * se), math.exp(d + q * se)
    p = float(2 * stats.t.sf(abs(d) / se, g - 1))
    pv = "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
    figures = f"rate ratio {rr:.2f}, 95% CI {lo:.2f} to {hi:.2f}, {pv}"
    if lo > 1 or hi < 1:
        way = "rose" if rr > 1 else "fell"
        conclusion = (f"In served areas, {word} {way} by {_pct(rr)} relative to comparison "
                      f"areas ({figures}).")  # fmt: skip
    else:
        conclusion = f"No change in {word} that can be told apart from chance ({figures})."
    small = []
    few = [f"{k} {what}" for k, what in ((n_served, "served areas"),
                                          (n_comp, "comparison areas"), (g, "neighborhoods"))
           if k < MIN_CELLS]  # fmt: skip
    if few:
        small.append(f"only {' and '.join(few)} (at least {MIN_CELLS} are needed)")
    if min(counts) < MIN_COUNT:
        small.append(f"{counts[0]} {word} in served areas before and {counts[1]} after, "
                     f"{counts[2]} and {counts[3]} in comparison areas (fewer than "
                     f"{MIN_COUNT} in a window)")  # fmt: skip
    caution = ""
    if small:
        caution = ("Too little data to conclude anything: " + "; ".join(small) + ". At "
                   "these numbers a change this large can happen by chance, and the "
                   "interval is not reliable.")  # fmt: skip
    return ImpactTest(**base, rate_ratio=rr, ci_low=lo, ci_high=hi, p_value=p, se=se,
                      conclusion=conclusion, caution=caution)  # fmt: skip


def usable_categories(cells: pd.DataFrame, measure: str) -> list[str]:
    """Categories whose served and comparison cells both have counts in both windows.

    The others cannot be compared (a group without counts in a window gives no finite
    change) and are left out of a test; :func:`impact` notes which.
    """
    served = cells["group"] == "served"
    sums = cells.groupby([cells["category"], served])[[f"{measure}_before",
                                                       f"{measure}_after"]].sum()  # fmt: skip
    ok = (sums > 0).all(axis=1).groupby(level=0).agg(lambda s: bool(s.all()) and len(s) == 2)
    return sorted(str(k) for k, v in ok.items() if v)


# ---------------------------------------------------------------------------------------
# the whole analysis
# ---------------------------------------------------------------------------------------

#: What every result says about the method's limits.
CAVEATS: tuple[str, ...] = (
    "Partnerships were not assigned at random: planners send partners where needs are, "
    "so served areas differ from comparison areas. The comparison assumes that, without "
    "the partnerships, their counts would have changed as the comparison areas' did.",
    "Counts are reports, not the needs themselves: outreach can make people report more, "
    "so a rise is not necessarily harm and a fall not necessarily help.",
)

METHOD = (
    "Difference in differences on counts: a Poisson model with a fixed effect per "
    "neighborhood x category, a before/after change per category and the window's length "
    "as exposure (the Poisson fixed-effects estimator); the standard error is the larger "
    "of the cluster-robust one (by neighborhood) and the Poisson one, and the interval "
    "uses Student's t with (neighborhoods - 1) degrees of freedom. Days are UTC days."
)


@dataclass(frozen=True)
class ImpactResult:
    """The cells, the tests and the notes of one impact analysis."""

    before: Window
    after: Window
    cells: pd.DataFrame
    tests: tuple[ImpactTest, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    method: str = METHOD
    caveats: tuple[str, ...] = CAVEATS
    #: The polygons the areas are in, when the source had them (for the report's map).
    neighborhoods: Any = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict (cells as a list of records)."""
        cells = self.cells.astype(object).where(self.cells.notna(), None)
        return {
            "before": {"start": self.before.start.isoformat(), "end": self.before.end.isoformat(),
                       "days": self.before.days},
            "after": {"start": self.after.start.isoformat(), "end": self.after.end.isoformat(),
                      "days": self.after.days},
            "method": self.method,
            "caveats": list(self.caveats),
            "notes": list(self.notes),
            "tests": [t.to_dict() for t in self.tests],
            "cells": cells.to_dict("records"),
        }  # fmt: skip

    def to_json(self) -> str:
        """Return :meth:`to_dict` as JSON text (sorted keys; the same input gives the same text)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def table(self) -> str:
        """Return the before/after table with each test, its conclusion and caution (text)."""
        head = (f"{'measure':<8} {'category':<22} {'areas s/c':>10} {'served b->a':>14} "
                f"{'comparison b->a':>16} {'rate ratio':>10} {'95% CI':>13} {'p':>6}")  # fmt: skip
        lines = [f"before {self.before} ({self.before.days} days), after {self.after} "
                 f"({self.after.days} days)", "", head, "-" * len(head)]  # fmt: skip
        for t in self.tests:
            rr = "-" if t.rate_ratio is None else f"{t.rate_ratio:.2f}"
            ci = "-" if t.ci_low is None else f"{t.ci_low:.2f}-{t.ci_high:.2f}"
            p = "-" if t.p_value is None else f"{t.p_value:.3f}"
            lines.append(
                f"{t.measure:<8} {t.category[:22]:<22} "
                f"{f'{t.served_cells}/{t.comparison_cells}':>10} "
                f"{f'{t.served_before}->{t.served_after}':>14} "
                f"{f'{t.comparison_before}->{t.comparison_after}':>16} {rr:>10} {ci:>13} {p:>6}"
            )
        lines.append("")
        for t in self.tests:
            lines.append(f"{t.measure}, {t.category}: {t.conclusion}")
            if t.caution:
                lines.append(f"  CAUTION: {t.caution}")
        lines += ["", f"Method: {self.method}"]
        lines += [f"Note: {n}" for n in self.notes]
        lines += [f"Caveat: {c}" for c in self.caveats]
        return "\n".join(lines) + "\n"


#: The columns of :attr:`ImpactResult.cells`.
CELL_COLUMNS: tuple[str, ...] = (
    "neighborhood", "category", "group", "reason", "partnerships", "units",
    "needs_before", "needs_after", "events_before", "events_after",
)  # fmt: skip


def impact(
    needs: pd.DataFrame,
    partnerships: Iterable[Mapping[str, Any]],
    before: Window,
    after: Window,
    *,
    events: pd.DataFrame | None = None,
) -> ImpactResult:
    """Compare served and comparison cells before and after (see the module docstring).

    Parameters
    ----------
    needs : pandas.DataFrame
        ``neighborhood, category, reported_at`` per need (a need without a date or a
        neighborhood is not counted, and the notes say how many).
    partnerships : iterable of mappings
        Partnership records (``state, category, neighborhood, units, answered_at,
        updated_at``), as the store or :func:`read_partnerships` gives them.
    before, after : Window
        The windows (:func:`parse_windows`).
    events : pandas.DataFrame, optional
        ``neighborhood, category, date`` per event (:func:`read_events`).

    Returns
    -------
    ImpactResult
        One test per measure over all categories, then one per category that has
        served and comparison cells; the cells sorted by neighborhood and category.
    """
    notes: list[str] = []
    n = needs[["neighborhood", "category"]].astype(str).assign(
        date=utc_days(needs["reported_at"].fillna("").astype(str))
        if "reported_at" in needs.columns else pd.NaT
    )
    undated = int((n["date"].isna() | (n["neighborhood"] == "")).sum())
    if undated:
        notes.append(f"{undated} need(s) without a date or a neighborhood are not counted.")
    n = n[n["date"].notna() & (n["neighborhood"] != "")]
    offered = [p for p in partnerships if str(p.get("neighborhood") or "")]
    periods = service_periods(offered)
    served = _classify(periods, before, after)
    parts = [_counts(n, before, "needs_before"), _counts(n, after, "needs_after")]
    measures = MEASURES if events is not None else MEASURES[:1]
    if events is not None:
        parts += [_counts(events, before, "events_before"), _counts(events, after, "events_after")]
        if events.attrs.get("outside"):
            notes.append(f"{events.attrs['outside']} event(s) outside every neighborhood are "
                         "not counted.")  # fmt: skip
    # every cell with a need or an event (any date) or a partnership (any state)
    keys = pd.concat([
        needs[["neighborhood", "category"]].astype(str),
        *([events[["neighborhood", "category"]]] if events is not None else []),
        pd.DataFrame([(str(p["neighborhood"]), str(p["category"])) for p in offered],
                     columns=["neighborhood", "category"]),
    ]).drop_duplicates()  # fmt: skip
    keys = keys[keys["neighborhood"] != ""]
    index = pd.MultiIndex.from_frame(keys).sort_values()
    cells = pd.DataFrame(index=index)
    cells = cells.join(served).join(parts)
    cells["group"] = cells["group"].fillna("comparison")
    cells["reason"] = cells["reason"].fillna("")
    cells["partnerships"] = cells["partnerships"].fillna(0).astype(np.int64)
    cells["units"] = cells["units"].fillna(0.0).astype(float).round(6)
    for col in ("needs_before", "needs_after", "events_before", "events_after"):
        if col in cells.columns:
            cells[col] = cells[col].fillna(0).astype(np.int64)
        else:
            cells[col] = pd.array([pd.NA] * len(cells), dtype="Int64")
    cells = cells.reset_index()[list(CELL_COLUMNS)]
    # neighborhoods as people sort them ("2" before "10"), then categories
    hood_rank = pd.Series(np.arange(len(cells)), dtype=np.int64)
    hood_rank.iloc[natural_order(cells["neighborhood"])] = np.arange(len(cells))
    cells = cells.iloc[np.lexsort((cells["category"].to_numpy(), hood_rank.to_numpy()))]
    cells = cells.reset_index(drop=True)
    left = cells[cells["group"] == "left_out"]
    if len(left):
        why = left["reason"].value_counts().sort_index()
        notes.append("Left out of the comparison: " + "; ".join(
            f"{int(k)} area(s) {r}" for r, k in why.items()) + ".")  # fmt: skip
    tests = []
    for m in measures:
        tests.append(did_test(cells, m, "all", before, after))
        # one test per category with served cells and counts, when there are several
        counted = cells[(cells[f"{m}_before"] + cells[f"{m}_after"]) > 0]
        cats = sorted(set(counted.loc[counted["group"] == "served", "category"]))
        if len(cats) > 1:
            tests += [did_test(cells, m, c, before, after) for c in cats]
        # (areas without counts add nothing to a group's sums: no need to leave them out)
        pair = cells[cells["group"].isin(("served", "comparison"))]
        unused = sorted(set(cats) - set(usable_categories(pair, m)))
        if unused:
            notes.append(f"Left out of the {m} tests: {', '.join(unused)} (its served or its "
                         "comparison areas have no count in a window).")  # fmt: skip
    return ImpactResult(before, after, cells, tuple(tests), tuple(notes))


# ---------------------------------------------------------------------------------------
# sources and files
# ---------------------------------------------------------------------------------------


def _placed(needs: pd.DataFrame, hoods: Any) -> pd.DataFrame:
    """Needs with the neighborhood of the polygon that holds them (as a plan places them)."""
    from .pipeline import assign_neighborhoods

    frame = pd.DataFrame({
        "lat": needs["lat"].to_numpy(), "lon": needs["lon"].to_numpy(),
        "category": needs["category"].astype(str).to_numpy(),
        "neighborhood": needs["neighborhood"].fillna("").astype(str).to_numpy()
        if "neighborhood" in needs.columns else "",
        "reported_at": needs["reported_at"].fillna("").astype(str).to_numpy()
        if "reported_at" in needs.columns else "",
    })  # fmt: skip
    if hoods is not None and len(hoods):
        frame["neighborhood"] = assign_neighborhoods(frame, hoods).to_numpy()
    return frame


def _events(events: bytes | None, label: str, hoods: Any) -> pd.DataFrame | None:
    if events is None:
        return None
    if hoods is None or not len(hoods):
        raise InputValidationError([Problem(
            label, None, None, None,
            "events are placed in neighborhoods, and there are none: load the "
            "neighborhoods' polygons (--neighborhoods, or import them into the store)",
        )])  # fmt: skip
    return read_events(events, label, hoods)


def store_impact(
    store: Any,
    before: Window,
    after: Window,
    *,
    events: bytes | None = None,
    events_label: str = "events",
) -> ImpactResult:
    """Run :func:`impact` on a store's needs, neighborhoods and partnerships.

    Parameters
    ----------
    store : Store
        The store (its needs are placed in its neighborhoods as a plan places them).
    before, after : Window
        The windows.
    events : bytes, optional
        An events file's content (:func:`read_events`).
    events_label : str
        The events file's name, for problems.

    Returns
    -------
    ImpactResult
    """
    hoods = store.neighborhoods_frame()
    ev = _events(events, events_label, hoods)
    needs = _placed(store.needs_frame(), hoods)
    result = impact(needs, store.list_partnerships(limit=None), before, after, events=ev)
    return replace(result, neighborhoods=hoods)


def file_impact(
    needs: str | Any,
    partnerships: str | Any,
    before: Window,
    after: Window,
    *,
    neighborhoods: str | Any | None = None,
    events: str | Any | None = None,
) -> ImpactResult:
    """Run :func:`impact` on files: needs, partnerships CSV, neighborhoods, events.

    Parameters
    ----------
    needs : str or Path
        A needs file (as :func:`matcher.plan` reads it).
    partnerships : str or Path
        A partnerships CSV (:func:`read_partnerships`).
    before, after : Window
        The windows.
    neighborhoods : str or Path, optional
        Polygons that place needs and events (needs keep their own ``neighborhood``
        without them); required with ``events``.
    events : str or Path, optional
        An events CSV (:func:`read_events`).

    Returns
    -------
    ImpactResult

    Raises
    ------
    InputValidationError
        Naming the file, row, field and value of every problem.
    """
    from .io import read_needs, read_neighborhoods
    from .limits import read_file

    loaded = read_needs(needs, points=False).frame
    hoods = read_neighborhoods(neighborhoods)[0] if neighborhoods is not None else None
    ev = None if events is None else _events(read_file(events), str(events), hoods)
    rows = read_partnerships(read_file(partnerships), str(partnerships))
    result = impact(_placed(loaded, hoods), rows, before, after, events=ev)
    return replace(result, neighborhoods=hoods)


def impact_files(result: ImpactResult) -> dict[str, bytes]:
    """Return the files of an impact analysis by name.

    ``impact_cells.csv`` (the cells), ``impact.json`` (:meth:`ImpactResult.to_dict`) and
    ``impact.html`` (the report, with a map when the result has its neighborhoods).
    """
    from .output import csv_bytes
    from .report import impact_html

    return {
        "impact_cells.csv": csv_bytes(result.cells),
        "impact.json": result.to_json().encode("utf-8"),
        "impact.html": impact_html(result, result.neighborhoods).encode("utf-8"),
    }
