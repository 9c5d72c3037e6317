"""Explanations: why each assignment was made, its runner-up, and why demand stays unmet."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .costs import COST_SCALE

__all__ = ["UNMET_REASONS", "explain_assignments", "unmet_reasons"]

#: The reasons a unit can stay unmet.
UNMET_REASONS = ("no_partner_in_range", "partners_in_range_full")


def unmet_reasons(n_clusters: int, pairs: pd.DataFrame, unmet: np.ndarray) -> np.ndarray:
    """Reason per cluster for its unmet units ('' when fully served).

    In an optimal flow, a cluster with unmet units and an eligible partner has every
    eligible partner at full capacity (otherwise sending a unit there would lower
    the cost), so the two reasons are exhaustive and truthful.
    """
    reachable = np.zeros(n_clusters, dtype=bool)
    reachable[pairs["cluster"].to_numpy()] = True
    reason = np.where(reachable, UNMET_REASONS[1], UNMET_REASONS[0]).astype(object)
    reason[np.asarray(unmet) <= 0] = ""
    return reason


def _minutes(value: float) -> str:
    """Format travel minutes: tenths below ten minutes, whole minutes above.

    Examples
    --------
    >>> _minutes(0.42), _minutes(5.16), _minutes(59.96)
    ('0.4', '5.2', '60')
    """
    return f"{value:.1f}" if value < 9.95 else f"{value:.0f}"


def explain_assignments(
    assigned: pd.DataFrame,
    pairs: pd.DataFrame,
    partners: pd.DataFrame,
    clusters: pd.DataFrame,
    used: np.ndarray,
    capacity: np.ndarray,
    travel_mode: str = "",
) -> pd.DataFrame:
    """Add capacity use, the runner-up partner and a reason text to each assignment.

    Parameters
    ----------
    assigned : pandas.DataFrame
        Rows of ``pairs`` with flow: ``cluster, partner, distance_km, language_km,
        cost_per_unit, units``.
    pairs : pandas.DataFrame
        Every eligible pair with its ``cost_per_unit``.
    partners, clusters : pandas.DataFrame
        The tables the positions refer to.
    used, capacity : numpy.ndarray
        Units used by the plan and offered, per partner.
    travel_mode : str
        ``"walking"`` or ``"driving"`` on a street plan (its pairs carry
        ``straight_km`` and ``travel_min``).

    Returns
    -------
    pandas.DataFrame
        ``assigned`` plus ``capacity_used, capacity_left, runner_up_id,
        runner_up_distance_km, runner_up_extra_cost, runner_up_full, reason``.

    Notes
    -----
    The runner-up of an assignment is the cheapest eligible partner of the cluster
    that serves none of it (ties broken by ``partner_id``). Its extra cost is its cost
    per unit minus the assigned partner's. A runner-up cheaper than the assigned
    partner is, by optimality, out of capacity; the reason says so.
    """
    pid = partners["partner_id"].to_numpy().astype(str)
    # alternatives: eligible pairs of the cluster whose partner serves none of it
    n_p = max(len(partners), 1)
    key = pairs["cluster"].to_numpy() * n_p + pairs["partner"].to_numpy()
    serving = assigned["cluster"].to_numpy() * n_p + assigned["partner"].to_numpy()
    alt = pairs[~np.isin(key, serving)]
    # the cheapest alternative per cluster, ties by partner_id: a sort by (cluster,
    # weight, rank of partner_id) in integers, then the first row of each cluster
    id_rank = np.empty(pid.size, dtype=np.int64)
    id_rank[np.argsort(pid, kind="stable")] = np.arange(pid.size)
    alt_cluster = alt["cluster"].to_numpy()
    order = np.lexsort((id_rank[alt["partner"].to_numpy()], alt["weight"].to_numpy(), alt_cluster))
    first = np.unique(alt_cluster[order], return_index=True)[1]
    best = alt.iloc[order[first]].set_index("cluster")
    out = assigned.copy()
    p = out["partner"].to_numpy()
    out["capacity_used"] = used[p]
    out["capacity_left"] = capacity[p] - used[p]
    runner = best.reindex(out["cluster"].to_numpy())
    has = runner["partner"].notna().to_numpy()
    rp = runner["partner"].fillna(-1).to_numpy(dtype=np.int64)
    out["runner_up_id"] = np.where(has, pid[np.maximum(rp, 0)], "")
    out["runner_up_distance_km"] = np.where(has, runner["distance_km"].to_numpy(), np.nan)
    # in the solver's integer cost units, so that the sign is exactly what the solver saw
    extra_w = runner["weight"].to_numpy(dtype=np.float64) - out["weight"].to_numpy(dtype=np.float64)
    out["runner_up_extra_cost"] = np.where(has, extra_w / COST_SCALE, np.nan)
    left_runner = np.where(has, capacity[np.maximum(rp, 0)] - used[np.maximum(rp, 0)], np.nan)
    out["runner_up_full"] = has & (left_runner <= 1e-9)
    names = partners["name"].to_numpy().astype(str)
    kinds = partners["kind"].to_numpy().astype(str)
    cats = clusters["category"].to_numpy().astype(str)
    reasons = []
    street = "travel_min" in out
    for row, h, rp_i in zip(out.itertuples(index=False), has, rp, strict=True):
        where = (
            f"{row.distance_km:.2f} km by street from the cluster centre "
            f"({_minutes(row.travel_min)} min {travel_mode}; {row.straight_km:.2f} km in a "
            "straight line), within its reach"
            if street
            else f"{row.distance_km:.2f} km from the cluster centre, within its radius"
        )
        text = (
            f"{names[row.partner]} ({kinds[row.partner]}) offers {cats[row.cluster]} and is "
            f"{where}; it serves {row.units:g} units"
        )
        if row.language_km > 0:
            text += f" (language mismatch adds {row.language_km:.2f} km per unit)"
        total = row.capacity_used + row.capacity_left
        text += f"; {row.capacity_used:g} of its {total:g} units are used."
        if not h:
            text += " No other partner in range offers this category."
        else:
            extra = row.runner_up_extra_cost
            if extra < 0:
                text += (
                    f" Runner-up {pid[rp_i]} is {-extra:.3f} km per unit cheaper"
                    " but has no capacity left."
                )
            elif extra == 0:
                text += f" Runner-up {pid[rp_i]} would cost the same; ties go by partner order."
            else:
                text += f" Runner-up {pid[rp_i]} would cost {extra:.3f} km per unit more."
        reasons.append(text)
    out["reason"] = reasons
    return out
