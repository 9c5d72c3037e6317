"""An independent oracle for plans: brute-force eligibility and scipy's HiGHS LP.

Nothing here imports matcher's candidate, cost, graph or solver code: distances
are recomputed with the math module and the optimum comes from linear programs
solved lexicographically (serve most, then severity, then cost).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import lil_matrix

R = 6371.0088


def gc_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R * math.asin(math.sqrt(min(1.0, max(0.0, h))))


def eligible_pairs(clusters, partners) -> list[tuple[str, str, float]]:
    """Every (cluster_id, partner_id, km) with the category offered and km <= radius."""
    out = []
    for c in clusters.itertuples(index=False):
        for p in partners.itertuples(index=False):
            if c.category not in str(p.categories).split(";"):
                continue
            d = gc_km(p.lat, p.lon, c.centroid_lat, c.centroid_lon)
            if d <= p.radius_km:
                out.append((c.cluster_id, p.partner_id, d))
    return out


def lexicographic_optimum(clusters, partners, quantum: float, *, severity: bool) -> dict:
    """Solve max served, [max severity-weighted served], min cost as successive LPs.

    Demands and capacities are in quanta; costs are integer metres per quantum, as in
    the contract. Returns the optimal values of each stage.
    """
    pairs = eligible_pairs(clusters, partners)
    cidx = {c: i for i, c in enumerate(clusters["cluster_id"])}
    pidx = {p: i for i, p in enumerate(partners["partner_id"])}
    demand = np.rint(clusters["demand"].to_numpy() / quantum)
    cap = np.floor(partners["capacity"].to_numpy() / quantum + 1e-9)
    n = len(pairs)
    if n == 0:
        return {"served": 0.0, "severity": 0.0, "cost": 0.0, "pairs": pairs}
    a = lil_matrix((len(cidx) + len(pidx), n))
    for k, (c, p, _) in enumerate(pairs):
        a[cidx[c], k] = 1
        a[len(cidx) + pidx[p], k] = 1
    b = np.concatenate([demand, cap])
    a = a.tocsr()
    weight = np.array([round(d * 1000) for _, _, d in pairs], dtype=float)
    sev = np.array(
        [round(10 * clusters["severity"].to_numpy()[cidx[c]]) for c, _, _ in pairs], dtype=float
    )
    eq_a, eq_b = [], []
    res = linprog(-np.ones(n), A_ub=a, b_ub=b, bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    served = float(round(-res.fun))  # integral: the constraint matrix is totally unimodular
    eq_a.append(np.ones(n))
    eq_b.append(served)
    sev_opt = 0.0
    if severity:
        res = linprog(
            -sev,
            A_ub=a,
            b_ub=b,
            A_eq=np.array(eq_a),
            b_eq=np.array(eq_b),
            bounds=(0, None),
            method="highs",
        )
        assert res.status == 0, res.message
        sev_opt = float(round(-res.fun))
        eq_a.append(sev)
        eq_b.append(sev_opt)
    res = linprog(
        weight,
        A_ub=a,
        b_ub=b,
        A_eq=np.array(eq_a),
        b_eq=np.array(eq_b),
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0, res.message
    return {"served": served, "severity": sev_opt, "cost": res.fun, "pairs": pairs}
