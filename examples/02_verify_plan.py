"""Check a written plan against every rule of DESIGN.md, independently of the solver.

Usage (from the repository root)::

    python examples/02_verify_plan.py --needs N --partners P --plan DIR \
        [--lock LOCK.csv] [--exclude DECLINED.csv]
    python examples/02_verify_plan.py            # plans the bundled sample first

The checks read only the input files (parsed with ``matcher.read_needs`` /
``read_partners``) and the plan's CSV files. Distances are recomputed here with
numpy, eligibility by brute force over every cluster x partner pair, and the
optimum by scipy's HiGHS linear programs solved lexicographically: serve as many
units as possible, then minimise units x metres. For ``objective="distance"`` the
plan's cost must equal that optimum exactly (integer metres per quantum, as in
the contract). With ``--lock`` (``cluster_id, partner_id, units``: agreed pairs kept
at their units) and ``--exclude`` (``cluster_id, partner_id``: declined pairs never
proposed), the optimum is the one under those constraints, as ``matcher plan --lock
--exclude`` and a re-plan with agreements promise: locked pairs are fixed by the LP's
bounds and excluded pairs are not in it (nor "in range" for the unmet reasons).
Exit code 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import linprog
from scipy.sparse import coo_matrix, vstack

import matcher

R_KM = 6371.0088
ROOT = Path(__file__).resolve().parents[1]


def great_circle(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * R_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def brute_force_pairs(clusters: pd.DataFrame, partners: pd.DataFrame) -> pd.DataFrame:
    """Every eligible (cluster, partner) pair, by checking them all."""
    rows = []
    offers = partners["categories"].str.split(";")
    for cat, group in clusters.groupby("category"):
        pmask = offers.map(lambda cats, c=cat: c in cats).to_numpy()
        ps = partners[pmask]
        if ps.empty:
            continue
        d = great_circle(
            group["centroid_lat"].to_numpy()[:, None],
            group["centroid_lon"].to_numpy()[:, None],
            ps["lat"].to_numpy()[None, :],
            ps["lon"].to_numpy()[None, :],
        )
        # within the radius up to floating-point rounding, as the contract's tolerance says
        ci, pi = np.nonzero(d <= ps["radius_km"].to_numpy()[None, :] * (1 + 1e-12))
        rows.append(
            pd.DataFrame(
                {
                    "cluster_id": group["cluster_id"].to_numpy()[ci],
                    "partner_id": ps["partner_id"].to_numpy()[pi],
                    "km": d[ci, pi],
                }
            )
        )
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["cluster_id", "partner_id", "km"])
    )


def lp_optimum(clusters, partners, pairs, quantum, lock=None):
    """(max units served, min metres at that service) by two HiGHS LPs, in quanta.

    ``lock`` maps (cluster_id, partner_id) to units that pair must carry exactly.
    """
    n = len(pairs)
    if n == 0:
        return 0, 0
    bounds = [(0, None)] * n
    for i, (c, p) in enumerate(zip(pairs["cluster_id"], pairs["partner_id"], strict=True)):
        if (c, p) in (lock or {}):
            bounds[i] = (round(lock[(c, p)] / quantum),) * 2
    ci = pd.Index(clusters["cluster_id"]).get_indexer(pairs["cluster_id"])
    pi = pd.Index(partners["partner_id"]).get_indexer(pairs["partner_id"])
    cols = np.arange(n)
    a = vstack(
        [
            coo_matrix((np.ones(n), (ci, cols)), shape=(len(clusters), n)),
            coo_matrix((np.ones(n), (pi, cols)), shape=(len(partners), n)),
        ]
    ).tocsr()
    b = np.concatenate(
        [
            np.rint(clusters["demand"].to_numpy() / quantum),
            np.floor(partners["capacity"].to_numpy() / quantum + 1e-9),
        ]
    )
    first = linprog(-np.ones(n), A_ub=a, b_ub=b, bounds=bounds, method="highs")
    served = round(-first.fun)
    weight = np.rint(pairs["km"].to_numpy() * 1000)
    second = linprog(
        weight,
        A_ub=a,
        b_ub=b,
        A_eq=np.ones((1, n)),
        b_eq=[served],
        bounds=bounds,
        method="highs",
    )
    return served, round(second.fun)


def read_pairs(path: Path | None, units: bool) -> dict:
    """(cluster_id, partner_id) -> units (or None) of a lock or exclude CSV."""
    if path is None:
        return {}
    df = pd.read_csv(path, dtype={"cluster_id": str, "partner_id": str})
    vals = df["units"].astype(float) if units else [None] * len(df)
    return dict(zip(zip(df["cluster_id"], df["partner_id"], strict=True), vals, strict=True))


def verify(
    needs_path: Path, partners_path: Path, plan_dir: Path, lock: dict | None = None,
    exclude: dict | None = None,
) -> list[str]:
    """Return the failed checks (empty when the plan satisfies every rule)."""
    lock, exclude = lock or {}, exclude or {}
    failures: list[str] = []

    def check(ok: bool, what: str) -> None:
        print(("ok   " if ok else "FAIL ") + what)
        if not ok:
            failures.append(what)

    summary = json.loads((plan_dir / "summary.json").read_text())
    travel = summary["parameters"].get("travel", "straight")
    if travel != "straight":  # its eligibility and costs are great-circle ones
        check(False, f"a plan on streets (travel {travel}) is not a straight-line plan: this "
                     "verifier checks great-circle plans; tests/test_streets_plan.py checks "
                     "street plans against networkx and the LP oracle")  # fmt: skip
        return failures
    quantum = summary["parameters"]["quantum"]
    needs = matcher.read_needs(needs_path).frame
    partners = pd.DataFrame(matcher.read_partners(partners_path).frame.drop(columns="geometry"))
    clusters = pd.read_csv(plan_dir / "clusters.csv", keep_default_na=False)
    assign = pd.read_csv(plan_dir / "assignments.csv", keep_default_na=False)
    nc = pd.read_csv(plan_dir / "need_clusters.csv", dtype=str)

    check(
        nc["need_id"].is_unique and set(nc["need_id"]) == set(needs["need_id"]),
        "every need is in exactly one cluster",
    )
    check(set(nc["cluster_id"]) == set(clusters["cluster_id"]), "every cluster has members")
    m = needs.merge(nc, on="need_id")
    demand = m.groupby("cluster_id")["demand"].sum().reindex(clusters["cluster_id"]).to_numpy()
    check(np.allclose(demand, clusters["demand"]), "cluster demand = sum of member demand")
    one_cat = m.groupby("cluster_id")["category"].nunique().max() == 1
    check(one_cat, "each cluster holds one category")
    # spherical demand-weighted centroid
    phi, lam = np.radians(m["lat"]), np.radians(m["lon"])
    xyz = np.column_stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)])
    acc = (
        pd.DataFrame(xyz * m["demand"].to_numpy()[:, None])
        .groupby(m["cluster_id"].to_numpy())
        .sum()
    )
    acc = acc.reindex(clusters["cluster_id"]).to_numpy()
    clat = np.degrees(np.arctan2(acc[:, 2], np.hypot(acc[:, 0], acc[:, 1])))
    clon = np.degrees(np.arctan2(acc[:, 1], acc[:, 0]))
    off = great_circle(clat, clon, clusters["centroid_lat"], clusters["centroid_lon"])
    check(
        float(np.max(off)) < 1e-6,
        f"centroids are demand-weighted spherical means (max off {np.max(off):.2e} km)",
    )
    check(
        np.allclose(clusters["served"] + clusters["unmet"], clusters["demand"]),
        "served + unmet = demand",
    )

    pairs = brute_force_pairs(clusters, partners)
    if exclude:
        gone = [(c, p) in exclude for c, p in zip(pairs["cluster_id"], pairs["partner_id"],
                                                  strict=True)]  # fmt: skip
        pairs = pairs[~np.array(gone, dtype=bool)].reset_index(drop=True)
    key = set(zip(pairs["cluster_id"], pairs["partner_id"], strict=True))
    given = dict(zip(zip(assign["cluster_id"], assign["partner_id"], strict=True),
                     assign["units"], strict=True))  # fmt: skip
    if lock:
        check(all(abs(given.get(k, 0.0) - u) < 1e-9 for k, u in lock.items()),
              f"every locked pair carries its units ({len(lock)} pair(s))")  # fmt: skip
    if exclude:
        check(not any(k in given for k in exclude),
              f"no excluded pair is proposed ({len(exclude)} pair(s))")  # fmt: skip
    check(
        all((c, p) in key for c, p in zip(assign["cluster_id"], assign["partner_id"], strict=True)),
        "every assignment is eligible (category offered, within radius)",
    )
    km = pairs.set_index(["cluster_id", "partner_id"])["km"]
    d = km.reindex(pd.MultiIndex.from_frame(assign[["cluster_id", "partner_id"]])).to_numpy()
    check(
        np.allclose(d, assign["distance_km"], atol=1e-6), "assignment distances are great-circle km"
    )
    used = assign.groupby("partner_id")["units"].sum()
    cap = partners.set_index("partner_id")["capacity"]
    check(bool((used <= cap.reindex(used.index) + 1e-9).all()), "no partner over capacity")
    served = (
        assign.groupby("cluster_id")["units"].sum().reindex(clusters["cluster_id"], fill_value=0)
    )
    check(
        np.allclose(served.to_numpy(), clusters["served"]),
        "cluster served = sum of its assignments",
    )
    left = cap - used.reindex(cap.index, fill_value=0)
    reach = pairs.groupby("cluster_id")["partner_id"].agg(list)
    truthful = True
    for row in clusters[clusters["unmet"] > 0].itertuples():
        ps = reach.get(row.cluster_id, [])
        want = "partners_in_range_full" if ps else "no_partner_in_range"
        truthful &= row.unmet_reason == want and all(left[p] <= 1e-9 for p in ps)
    check(truthful, "every unmet reason is true (no partner in range / all in range full)")
    runner_ok = all(
        (
            r == ""
            and not (set(reach.get(c, [])) - set(assign.loc[assign.cluster_id == c, "partner_id"]))
        )
        or (r != "" and (c, r) in key)
        for c, r in zip(assign["cluster_id"], assign["runner_up_id"], strict=True)
    )
    check(runner_ok, "every runner-up is a real eligible partner, or none exists")

    lp_served, lp_cost = lp_optimum(clusters, partners, pairs, quantum, lock)
    plan_served = round(clusters["served"].sum() / quantum)
    check(
        plan_served == lp_served, f"units served = LP maximum ({plan_served} = {lp_served} quanta)"
    )
    if summary["objective"] == "distance" and np.isnan(d).any():
        check(False, "cost = LP optimum (not computed: an assignment is not eligible)")
    elif summary["objective"] == "distance":
        w = np.rint(d * 1000)
        plan_cost = round(float(np.sum(np.rint(assign["units"].to_numpy() / quantum) * w)))
        check(plan_cost == lp_cost, f"cost = LP optimum ({plan_cost} = {lp_cost} quantum-metres)")
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--needs", type=Path)
    ap.add_argument("--partners", type=Path)
    ap.add_argument("--plan", type=Path, help="a directory written by `matcher plan`")
    ap.add_argument("--lock", type=Path, help="cluster_id,partner_id,units kept as agreed")
    ap.add_argument("--exclude", type=Path, help="cluster_id,partner_id never proposed")
    args = ap.parse_args()
    if args.plan is None:
        sample = ROOT / "data" / "sample"
        args.needs, args.partners = sample / "needs.csv", sample / "partners.csv"
        tmp = tempfile.TemporaryDirectory()
        args.plan = Path(tmp.name)
        matcher.plan(
            args.needs, args.partners, config=matcher.MatchConfig(objective="distance")
        ).to_dir(args.plan)
    failures = verify(args.needs, args.partners, args.plan, read_pairs(args.lock, True),
                      read_pairs(args.exclude, False))
    print(f"{len(failures)} check(s) failed" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
