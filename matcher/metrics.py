"""Plan metrics: units by category, coverage by neighborhood, distances, equity."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

__all__ = ["gini", "weighted_quantile", "plan_metrics"]


def gini(values: npt.ArrayLike) -> float:
    """Gini coefficient of non-negative values (0 = equal, 1 = concentrated).

    Examples
    --------
    >>> gini([1, 1, 1, 1])
    0.0
    >>> round(gini([0, 0, 0, 1]), 3)
    0.75
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0 or x.sum() == 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(np.sum((2 * i - n - 1) * x) / (n * x.sum()))


def weighted_quantile(values: npt.ArrayLike, weights: npt.ArrayLike, q: float) -> float:
    """Return the smallest value whose cumulative weight reaches ``q`` of the total (NaN if empty).

    Examples
    --------
    >>> weighted_quantile([1.0, 2.0, 10.0], [1, 1, 8], 0.9)
    10.0
    """
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if v.size == 0 or w.sum() <= 0:
        return float("nan")
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    return float(v[order][np.searchsorted(cum, q * cum[-1] - 1e-12)])


def _r(x: float) -> float:
    return round(float(x), 6)


def _units(frame: pd.DataFrame, key: str) -> dict[str, dict[str, float]]:
    g = frame.groupby(key, sort=True)[["demand", "served", "unmet"]].sum()
    return {
        str(k): {
            "demand": _r(r.demand),
            "served": _r(r.served),
            "unmet": _r(r.unmet),
            "coverage": _r(r.served / r.demand) if r.demand > 0 else 1.0,
        }
        for k, r in g.iterrows()
    }


def plan_metrics(
    clusters: pd.DataFrame, needs: pd.DataFrame, assignments: pd.DataFrame
) -> dict[str, Any]:
    """Compute the summary metrics of a plan.

    Parameters
    ----------
    clusters : pandas.DataFrame
        ``category, demand, served, unmet, unmet_reason`` per cluster.
    needs : pandas.DataFrame
        ``demand, neighborhood, served`` per need (served is the cluster's served share
        of the need's demand).
    assignments : pandas.DataFrame
        ``units, distance_km`` per assignment.

    Returns
    -------
    dict
        ``units`` (total and by category), ``unmet_by_reason``, ``coverage_by_neighborhood``,
        ``distance_per_unit`` (mean, p90) and ``equity`` (min, max and Gini of
        neighborhood coverage).
    """
    total = clusters[["demand", "served", "unmet"]].sum()
    units = {
        "demand": _r(total.demand),
        "served": _r(total.served),
        "unmet": _r(total.unmet),
        "coverage": _r(total.served / total.demand) if total.demand > 0 else 1.0,
    }
    by_reason = clusters[clusters["unmet"] > 0].groupby("unmet_reason")["unmet"].sum()
    u = assignments["units"].to_numpy(dtype=np.float64)
    d = assignments["distance_km"].to_numpy(dtype=np.float64)
    mean = _r(np.sum(u * d) / u.sum()) if u.sum() > 0 else None
    p90 = _r(weighted_quantile(d, u, 0.9)) if u.sum() > 0 else None
    nb = needs.assign(unmet=needs["demand"] - needs["served"])
    nb = nb[nb["neighborhood"].astype(str) != ""]
    coverage = _units(nb, "neighborhood") if len(nb) else {}
    cov = np.array([v["coverage"] for v in coverage.values()])
    return {
        "units": units,
        "units_by_category": _units(clusters, "category"),
        "unmet_by_reason": {str(k): _r(v) for k, v in by_reason.items()},
        "coverage_by_neighborhood": coverage,
        "distance_per_unit_km": {"mean": mean, "p90": p90},
        "equity": {
            "neighborhoods": int(cov.size),
            "coverage_min": _r(cov.min()) if cov.size else None,
            "coverage_max": _r(cov.max()) if cov.size else None,
            "coverage_gini": _r(gini(cov)) if cov.size else None,
        },
        "counts": {
            "needs": int(len(needs)),
            "clusters": int(len(clusters)),
            "assignments": int(len(assignments)),
            "clusters_fully_served": int((clusters["unmet"] <= 0).sum()),
        },
    }


def travel_metrics(network: Any, assignments: pd.DataFrame) -> dict[str, Any]:
    """Describe the street network of a plan and how far its trips are from straight lines.

    Parameters
    ----------
    network : matcher.network.StreetNetwork
        The plan's network.
    assignments : pandas.DataFrame
        ``units, distance_km`` (street), ``straight_km``, ``travel_min``.

    Returns
    -------
    dict
        The network's summary, plus ``detour_factor`` (unit-weighted street km over
        straight km of the assignments; None without assignments),
        ``street_km_per_unit``, ``straight_km_per_unit`` and ``minutes_per_unit``.
    """
    units = assignments["units"].to_numpy(dtype=np.float64)
    total = float(units.sum())
    street = float((units * assignments["distance_km"].to_numpy(dtype=np.float64)).sum())
    straight = float((units * assignments["straight_km"].to_numpy(dtype=np.float64)).sum())
    minutes = float((units * assignments["travel_min"].to_numpy(dtype=np.float64)).sum())
    out = network.summary()
    out.update(
        {
            "detour_factor": round(street / straight, 6) if straight > 0 else None,
            "street_km_per_unit": round(street / total, 6) if total else None,
            "straight_km_per_unit": round(straight / total, 6) if total else None,
            "minutes_per_unit": round(minutes / total, 6) if total else None,
        }
    )
    return out
