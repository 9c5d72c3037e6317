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


def equity_optimum(
    clusters,
    partners,
    quantum: float,
    *,
    min_coverage: float = 0.0,
    multiplier: dict | None = None,
    share: float | None = None,
    lock: dict | None = None,
    keep: dict | None = None,
    churn_weight: int = 0,
) -> dict:
    """Lexicographic optimum with neighborhood floors, share caps, locks and churn.

    Stages, each an LP fixing the previous optima: (1) minimise the total shortfall
    below ``ceil(min_coverage * demand)`` per neighborhood; (2) maximise units served;
    (3) maximise sum(multiplier * served) when given; (4) minimise cost plus
    ``churn_weight`` per unit not kept on a ``keep`` pair. ``lock`` fixes pairs'
    flows. Units are quanta; costs integer metres per quantum.
    """
    from scipy.sparse import hstack, vstack

    lock, keep = lock or {}, keep or {}
    pairs = eligible_pairs(clusters, partners)
    cids = list(clusters["cluster_id"])
    pids = list(partners["partner_id"])
    cidx = {c: i for i, c in enumerate(cids)}
    pidx = {p: i for i, p in enumerate(pids)}
    hood = dict(zip(cids, clusters["neighborhood"].astype(str), strict=True))
    demand = np.rint(clusters["demand"].to_numpy() / quantum)
    cap = np.floor(partners["capacity"].to_numpy() / quantum + 1e-9)
    n = len(pairs)
    hoods = sorted({h for h in hood.values() if h})
    hdem = {h: sum(demand[cidx[c]] for c in cids if hood[c] == h) for h in hoods}
    floors = {h: math.ceil(min_coverage * hdem[h] - 1e-9) for h in hoods} if min_coverage else {}
    fh = sorted(floors)
    if not pairs:
        total = sum(floors.values())
        return {"pairs": [], "floors": floors, "shortfall": total, "served": 0,
                "priority": 0, "cost": 0.0}  # fmt: skip
    kp = [i for i, (c, p, _) in enumerate(pairs) if keep.get((c, p), 0) > 0]
    nx_, ns, nk = n, len(fh), len(kp)
    nv = nx_ + ns + nk
    rows, rhs = [], []

    def row():
        r = lil_matrix((1, nv))
        rows.append(r)
        return r

    for c in cids:  # cluster demand
        r = row()
        for i, (cc, _, _) in enumerate(pairs):
            if cc == c:
                r[0, i] = 1
        rhs.append(demand[cidx[c]])
    for p in pids:  # partner capacity
        r = row()
        for i, (_, pp, _) in enumerate(pairs):
            if pp == p:
                r[0, i] = 1
        rhs.append(cap[pidx[p]])
    if share is not None:
        for p in pids:
            for h in hoods:
                idx = [i for i, (c, pp, _) in enumerate(pairs) if pp == p and hood[c] == h]
                if idx:
                    r = row()
                    for i in idx:
                        r[0, i] = 1
                    rhs.append(math.floor(share * cap[pidx[p]] + 1e-9))
    for j, h in enumerate(fh):  # -served_h - s_h <= -floor_h
        r = row()
        for i, (c, _, _) in enumerate(pairs):
            if hood[c] == h:
                r[0, i] = -1
        r[0, nx_ + j] = -1
        rhs.append(-floors[h])
    for j, i in enumerate(kp):  # k <= x, k <= keep
        r = row()
        r[0, nx_ + ns + j] = 1
        r[0, i] = -1
        rhs.append(0)
    bounds = [(0, None)] * nx_ + [(0, None)] * ns
    bounds += [(0, keep[(pairs[i][0], pairs[i][1])] / 1) for i in kp]
    for i, (c, p, _) in enumerate(pairs):
        if (c, p) in lock:
            bounds[i] = (lock[(c, p)], lock[(c, p)])
    a = vstack([r.tocsr() for r in rows]).tocsr() if rows else None
    b = np.array(rhs, dtype=float)
    weight = np.array([round(d * 1000) for _, _, d in pairs], dtype=float)
    objs = []
    zeros = np.zeros(nv)
    c1 = zeros.copy()
    c1[nx_ : nx_ + ns] = 1
    objs.append(("shortfall", c1))
    c2 = zeros.copy()
    c2[:nx_] = -1
    objs.append(("served", c2))
    if multiplier is not None:
        c3 = zeros.copy()
        c3[:nx_] = [-multiplier[c] for c, _, _ in pairs]
        objs.append(("priority", c3))
    c4 = zeros.copy()
    c4[:nx_] = weight + churn_weight
    c4[nx_ + ns :] = -churn_weight
    objs.append(("cost", c4))
    out = {"pairs": pairs, "floors": floors}
    fixed_a, fixed_b = [], []
    for name, obj in objs:
        a_ub = a if not fixed_a else vstack([a, *fixed_a]).tocsr()
        b_ub = b if not fixed_b else np.concatenate([b, fixed_b])
        res = linprog(obj, A_ub=a_ub, b_ub=b_ub, bounds=bounds, method="highs")
        assert res.status == 0, res.message
        val = float(res.fun)
        out[name] = round(abs(val)) if name != "cost" else val
        fixed_a.append(hstack([lil_matrix(obj.reshape(1, -1))]).tocsr())
        # the stages before cost have integral optima (network matrices): fix them exactly
        fixed_b.append(round(val) + 1e-7 if name != "cost" else val)
    return out
