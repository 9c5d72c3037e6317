"""New-concern intake: take a report without losing it, place it in a cluster, recommend.

:func:`take_report` stores a reported concern: the server gives it an id when it has none,
fills in its neighborhood (the stored polygon holding it) and its ``reported_at`` (now), and
links it to an existing need of the same category reported within
:attr:`IntakePolicy.duplicate_m` and :attr:`IntakePolicy.duplicate_hours` instead of
counting its demand twice (the report itself is kept, linked). :func:`recommend_for_need`
then places the need in a cluster of the latest plan and recommends partners.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import InputValidationError, Problem
from ._validate import NEED_FIELDS
from .clustering import ClusterModel
from .nearby import NearbyIndex
from .outreach import NeighborhoodLookup

if TYPE_CHECKING:
    import geopandas as gpd

    from .store import Store

__all__ = [
    "IntakePolicy",
    "IntakeResult",
    "Report",
    "new_need_id",
    "recommend_for_need",
    "take_report",
    "MAX_DUPLICATE_M",
    "MAX_DUPLICATE_HOURS",
    "MAX_NOTE_CHARS",
    "note_problem",
]

#: Longest note on a report, in characters.
MAX_NOTE_CHARS = 500
_NOTE_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
#: How old and how far ahead a report's ``reported_at`` may be.
REPORT_PAST = _dt.timedelta(days=366)
REPORT_FUTURE = _dt.timedelta(hours=1)
#: Bounds of the near-duplicate check (0 turns it off).
MAX_DUPLICATE_M = 5_000.0
MAX_DUPLICATE_HOURS = 24.0 * 30


@dataclass(frozen=True)
class IntakePolicy:
    """When a report is the same concern as a stored need.

    Attributes
    ----------
    duplicate_m : float
        A need of the same category within this many metres (great circle) ...
    duplicate_hours : float
        ... reported within this many hours of the report (either side) is the same
        concern: the report is linked to it. 0 in either turns the check off.
    """

    duplicate_m: float = 50.0
    duplicate_hours: float = 24.0

    def __post_init__(self) -> None:
        problems = []
        for name, high in (("duplicate_m", MAX_DUPLICATE_M), ("duplicate_hours",
                                                                MAX_DUPLICATE_HOURS)):  # fmt: skip
            value = getattr(self, name)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and 0 <= value <= high):
                problems.append(
                    Problem("intake policy", None, name, value, f"must be from 0 to {high:g}")
                )
        if problems:
            raise InputValidationError(problems)


@dataclass(frozen=True)
class Report:
    """What :func:`take_report` did with a report.

    Attributes
    ----------
    need : dict
        The stored need: the new one, or the one the report was linked to.
    created : bool
        True for a new need; False when the report was linked to ``need``.
    report_id : str
        The report's id (the new need's id, or the linked report's).
    statement : str
        What happened, in one sentence (why it was linked, and to what).
    """

    need: dict[str, Any]
    created: bool
    report_id: str
    statement: str


def note_problem(note: Any) -> str | None:
    """Return why a report's note is not acceptable, or None.

    A note is text of at most :data:`MAX_NOTE_CHARS` characters; line breaks are allowed,
    other control characters are not.

    Examples
    --------
    >>> note_problem("gate at the back is broken"), note_problem(3) is not None
    (None, True)
    """
    if not isinstance(note, str):
        return f"must be text, not {type(note).__name__}"
    if len(note) > MAX_NOTE_CHARS:
        return f"is {len(note):,} characters long; at most {MAX_NOTE_CHARS} are allowed"
    if _NOTE_CONTROL.search(note):
        return "contains a control character other than a line break"
    return None


def new_need_id() -> str:
    """Return a new need id for a report that has none (``r-`` and 20 random hex digits)."""
    return "r-" + uuid.uuid4().hex[:20]


def _utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _time(text: str) -> _dt.datetime | None:
    """Parse a ``reported_at`` (ISO date or date-time; no zone is UTC); None when empty."""
    if not text:
        return None
    try:
        t = _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=_dt.UTC)


def neighborhood_of(lat: float, lon: float, hoods: gpd.GeoDataFrame | None) -> str:
    """Return the id of the neighborhood polygon holding a point ('' for none).

    When polygons overlap, the smallest id (as text) wins, as in a plan
    (:meth:`matcher.outreach.NeighborhoodLookup.neighborhood_id`).
    """
    return NeighborhoodLookup(hoods).neighborhood_id(lat, lon)


def take_report(
    store: Store,
    record: dict[str, Any],
    actor: str,
    policy: IntakePolicy | None = None,
    *,
    note: str = "",
) -> Report:
    """Store a validated report as a new need, or link it to the need it duplicates.

    Parameters
    ----------
    store : Store
        Where needs are kept; everything happens in one write transaction (writers are
        serialized, so two reports of one concern at once still make one need).
    record : dict
        A validated need record (``matcher.read_needs`` rules). An empty ``neighborhood``
        is filled from the stored neighborhoods, an empty ``reported_at`` with now (UTC).
    actor : str
        Who reports (the API key id).
    policy : IntakePolicy, optional
        The near-duplicate rule (defaults: 50 m, 24 h).
    note : str
        The reporter's short note (:func:`note_problem`), kept with the report
        (:meth:`matcher.store.Store.report_notes`); '' for none.

    Returns
    -------
    Report

    Raises
    ------
    AlreadyExistsError
        The record's ``need_id`` is a stored need or linked report (never overwritten).
    """
    policy = policy or IntakePolicy()
    note = note.strip() if isinstance(note, str) else note
    reason = note_problem(note)
    if reason is not None:
        raise InputValidationError([Problem("request body", None, "note", str(note)[:40], reason)])
    rec = dict(record)
    if not rec.get("reported_at"):
        rec["reported_at"] = _utc_now()
    at = _time(str(rec["reported_at"]))
    now = _dt.datetime.now(_dt.UTC)
    if at is not None and not (now - REPORT_PAST <= at <= now + REPORT_FUTURE):
        raise InputValidationError(
            [Problem("request body", None, "reported_at", rec["reported_at"],
                     "a report is from the last 366 days, and not later than an hour from "
                     "now (leave it out for now)")]  # fmt: skip
        )
    if not rec.get("neighborhood"):
        rec["neighborhood"] = neighborhood_of(
            float(rec["lat"]), float(rec["lon"]), store.neighborhoods_frame()
        )
    with store.transaction():
        if store.get_need(str(rec["need_id"])) is not None:
            from .store import AlreadyExistsError

            raise AlreadyExistsError("need", str(rec["need_id"]))
        twin = _duplicate_of(store, rec, policy)
        if twin is not None:
            need, distance_m, hours = twin
            need = {k: v for k, v in need.items() if k != "distance_m"}
            linked = store.link_report(rec, str(need["need_id"]), actor)
            statement = (
                f"linked to need {need['need_id']}: the same {need['category']} concern "
                f"reported {distance_m:g} m and {hours:.1f} h away; its demand is not "
                "counted twice"
            )
            # the concern is as large and as urgent as its largest, most urgent report
            demand = max(float(need["demand"]), float(rec["demand"]))
            severity = max(int(need["severity"]), int(rec["severity"]))
            if (demand, severity) != (float(need["demand"]), int(need["severity"])):
                fields = {k: need[k] for k in NEED_FIELDS}
                need = store.update_need(
                    str(need["need_id"]), fields | {"demand": demand, "severity": severity},
                    expected_version=int(need["version"]), actor=actor,
                )  # fmt: skip
                statement += f"; the need now has demand {demand:g} and severity {severity}"
            if note:
                store.add_report_note(str(linked["report_id"]), str(need["need_id"]), note, actor)
            return Report(need, False, str(linked["report_id"]), statement)
        stored = store.create_need(rec, actor)
        if note:
            store.add_report_note(str(stored["need_id"]), str(stored["need_id"]), note, actor)
    return Report(stored, True, str(stored["need_id"]), "a new need")


def _duplicate_of(
    store: Store, rec: dict[str, Any], policy: IntakePolicy
) -> tuple[dict[str, Any], float, float] | None:
    """Return (need, metres, hours) of the nearest stored need the report duplicates."""
    if policy.duplicate_m <= 0 or policy.duplicate_hours <= 0:
        return None
    at = _time(str(rec["reported_at"]))
    if at is None:
        return None
    near = store.needs_near(
        str(rec["category"]), float(rec["lat"]), float(rec["lon"]), policy.duplicate_m / 1000.0
    )
    for need in near:
        other = _time(str(need.get("reported_at") or ""))
        if other is None:
            continue
        hours = abs((at - other).total_seconds()) / 3600.0
        if hours <= policy.duplicate_hours:
            return need, float(need["distance_m"]), hours
    return None


@dataclass(frozen=True)
class IntakeResult:
    """What matcher recommends for one new need.

    Attributes
    ----------
    need_id, category : str
        The need.
    cluster_id : str or None
        The existing cluster the need joins (None: it would start a cluster of its own,
        or there is no saved model).
    recommendations : list of dict
        Partners offering the category whose radius reaches the need and that have
        free capacity, nearest first, each with a ``reason``.
    statement : str
        A one-line summary; when there is no recommendation, why.
    reachable : int
        Partners offering the category whose radius reaches the need (free or full).
    """

    need_id: str
    category: str
    cluster_id: str | None
    recommendations: list[dict[str, Any]] = field(default_factory=list)
    statement: str = ""
    reachable: int = 0


def recommend_for_need(
    need: dict[str, Any], index: NearbyIndex, model: ClusterModel | None, *, limit: int = 5
) -> IntakeResult:
    """Place a validated need in an existing cluster and recommend partners.

    Parameters
    ----------
    need : dict
        ``need_id, category, lat, lon, demand`` (validated, canonical category).
    index : NearbyIndex
        Partners with their free capacity under the latest plan.
    model : ClusterModel or None
        The saved clustering of the latest plan.
    limit : int
        At most this many recommendations.

    Returns
    -------
    IntakeResult

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"partner_id": ["a", "b"], "name": ["A", "B"],
    ...     "kind": ["organization"] * 2, "categories": ["food_access"] * 2,
    ...     "lat": [41.88, 41.90], "lon": [-87.63, -87.63], "capacity": [10.0, 5.0],
    ...     "radius_km": [3.0, 3.0]})
    >>> idx = NearbyIndex.from_frame(df, {"a": 10.0})
    >>> r = recommend_for_need({"need_id": "n", "category": "food_access", "lat": 41.881,
    ...                         "lon": -87.63, "demand": 2}, idx, None)
    >>> [x["partner_id"] for x in r.recommendations], r.reachable
    (['b'], 2)
    """
    lat, lon, category = float(need["lat"]), float(need["lon"]), str(need["category"])
    hood = str(need.get("neighborhood") or "") or None
    cluster_id = model.assign(lat, lon, category, hood) if model is not None else None
    reach = index.reachable(lat, lon, category)
    free = reach[reach["free_capacity"] > 0].head(limit)
    recs = []
    for row in free.to_dict("records"):
        recs.append(
            {
                "partner_id": row["partner_id"],
                "name": row["name"],
                "kind": row["kind"],
                "distance_km": round(float(row["distance_km"]), 4),
                "free_capacity": float(row["free_capacity"]),
                "capacity": float(row["capacity"]),
                "lat": float(row["lat"]),
                "lon": float(row["lon"]),
                "languages": [x for x in str(row.get("languages") or "").split(";") if x],
                "reason": (
                    f"offers {category}, is {row['distance_km']:.2f} km away (within its "
                    f"{row['radius_km']:g} km radius) and has {row['free_capacity']:g} units free"
                ),
            }
        )
    if recs:
        statement = f"{len(recs)} partner(s) with free capacity can take this {category} need"
    elif len(reach):
        statement = (
            f"none: all {len(reach)} partner(s) offering {category} within reach are at "
            "capacity: the latest plan and referral holds take it all (partners_in_range_full)"
        )
    else:
        statement = (
            f"none: no partner offering {category} reaches this location (no_partner_in_range)"
        )
    return IntakeResult(
        str(need["need_id"]), category, cluster_id, recs, statement, int(len(reach))
    )
