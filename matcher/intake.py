"""New-concern intake: place one reported need in a cluster and recommend partners."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .clustering import ClusterModel
from .nearby import NearbyIndex

__all__ = ["IntakeResult", "recommend_for_need"]


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
            "capacity under the latest plan (partners_in_range_full)"
        )
    else:
        statement = (
            f"none: no partner offering {category} reaches this location (no_partner_in_range)"
        )
    return IntakeResult(
        str(need["need_id"]), category, cluster_id, recs, statement, int(len(reach))
    )
