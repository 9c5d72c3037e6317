"""Equity and stable re-planning against the independent LP oracle: floors, vulnerability,
share caps, locked pairs and churn."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from matcher import MatchConfig, plan
from matcher._errors import InputValidationError

from .oracle import assignment_cost_m, equity_optimum
from .test_plan_properties import SETTINGS, check_invariants, instances

HOODS = ["A", "B", "C"]


@st.composite
def hood_instances(draw):
    needs, partners, cluster_km = draw(instances())
    needs["neighborhood"] = draw(
        st.lists(st.sampled_from(HOODS), min_size=len(needs), max_size=len(needs))
    )
    return needs, partners, cluster_km


def quanta(p, q=0.1):
    a = p.assignments
    return {
        (c, k): round(u / q)
        for c, k, u in zip(a["cluster_id"], a["partner_id"], a["units"], strict=True)
    }


def served_by_hood(p, q=0.1):
    cl = p.clusters
    return (np.rint(cl["served"] / q)).groupby(cl["neighborhood"]).sum()


@SETTINGS
@given(hood_instances(), st.sampled_from([0.3, 0.5, 0.9, 1.0]))
def test_floors_are_met_whenever_a_plan_can_meet_them(inst, m):
    needs, partners, cluster_km = inst
    cfg = MatchConfig(objective="distance", cluster_km=cluster_km, min_coverage=m)
    p = plan(needs, partners, config=cfg)
    check_invariants(p, needs, partners)
    # clusters never cross a neighborhood when floors are on
    hood_of = needs.set_index("need_id")["neighborhood"]
    per_cluster = hood_of.groupby(p.need_clusters.set_index("need_id")["cluster_id"]).nunique()
    assert (per_cluster == 1).all()
    opt = equity_optimum(p.clusters, partners, cfg.quantum, min_coverage=m)
    served = served_by_hood(p)
    shortfall = sum(max(0, f - served.get(h, 0)) for h, f in opt["floors"].items())
    assert shortfall == opt["shortfall"]
    assert round(p.metrics["units"]["served"] / cfg.quantum) == opt["served"]
    assert assignment_cost_m(p.assignments, p.clusters, partners, cfg.quantum) == round(opt["cost"])
    # the plan says which floors are not met, and why
    fl = p.floors.set_index("neighborhood_id")
    for h, f in opt["floors"].items():
        met = served.get(h, 0) >= f
        assert bool(fl.loc[h, "floor_met"]) == met
        assert (fl.loc[h, "reason"] == "") == met
    if opt["shortfall"] == 0:
        assert p.metrics["floors"]["not_met"] == []
    # networkx on the same constrained graph finds the same optimum
    nxp = plan(
        needs,
        partners,
        config=MatchConfig(
            objective="distance", cluster_km=cluster_km, min_coverage=m, solver="networkx"
        ),
    )
    assert nxp.solver["objective_scaled"] == p.solver["objective_scaled"]
    assert assignment_cost_m(nxp.assignments, nxp.clusters, partners, cfg.quantum) == round(
        opt["cost"]
    )


@SETTINGS
@given(hood_instances(), st.sampled_from([0.5, 2.0]))
def test_vulnerability_raises_priority_exactly(inst, weight):
    needs, partners, cluster_km = inst
    hoods = pd.DataFrame({"neighborhood_id": HOODS, "hardship": [10.0, 55.0, 100.0]})
    polys = _hood_polygons(needs, hoods)
    cfg = MatchConfig(
        objective="distance",
        cluster_km=cluster_km,
        vulnerability_column="hardship",
        vulnerability_weight=weight,
    )
    p = plan(needs, partners, neighborhoods=polys, config=cfg)
    v = {"A": 0.0, "B": 0.5, "C": 1.0}
    mult = {
        c: 100 + round(100 * weight * v[h])
        for c, h in zip(p.clusters["cluster_id"], p.clusters["neighborhood"], strict=True)
    }
    opt = equity_optimum(p.clusters, partners, cfg.quantum, multiplier=mult)
    cl = p.clusters
    served_q = np.rint(cl["served"] / cfg.quantum)
    assert served_q.sum() == opt["served"]
    assert sum(served_q * cl["cluster_id"].map(mult)) == opt["priority"]
    assert assignment_cost_m(p.assignments, p.clusters, partners, cfg.quantum) == round(opt["cost"])


@SETTINGS
@given(hood_instances(), st.sampled_from([0.25, 0.5]), st.sampled_from([0.0, 0.6]))
def test_share_cap_holds_and_plan_is_optimal(inst, share, m):
    needs, partners, cluster_km = inst
    cfg = MatchConfig(
        objective="distance", cluster_km=cluster_km, max_partner_share=share, min_coverage=m
    )
    p = plan(needs, partners, config=cfg)
    a = p.assignment_table  # each row names its cluster's neighborhood
    hood = p.clusters.set_index("cluster_id")["neighborhood"]
    assert a["neighborhood"].tolist() == hood.loc[a["cluster_id"]].astype(str).tolist()
    per = np.rint(a.groupby(["partner_id", "neighborhood"])["units"].sum() / cfg.quantum)
    cap = partners.set_index("partner_id")["capacity"]
    for (pid, _), units in per.items():
        assert units <= math.floor(share * round(cap[pid] / cfg.quantum) + 1e-9)
    opt = equity_optimum(p.clusters, partners, cfg.quantum, min_coverage=m, share=share)
    assert round(p.metrics["units"]["served"] / cfg.quantum) == opt["served"]
    assert assignment_cost_m(p.assignments, p.clusters, partners, cfg.quantum) == round(opt["cost"])


@SETTINGS
@given(hood_instances(), st.data())
def test_locked_pairs_are_unchanged_and_the_rest_is_optimal(inst, data):
    needs, partners, cluster_km = inst
    cfg = MatchConfig(objective="distance", cluster_km=cluster_km)
    base = plan(needs, partners, config=cfg)
    pairs = equity_optimum(base.clusters, partners, cfg.quantum)["pairs"]
    assume(pairs)  # no eligible pair, nothing to lock: draw another instance
    # lock a few eligible pairs at amounts that fit every demand and capacity
    chosen = data.draw(st.lists(st.sampled_from(pairs), max_size=3, unique_by=lambda t: t[:2]))
    dem = base.clusters.set_index("cluster_id")["demand"].to_dict()
    cap = partners.set_index("partner_id")["capacity"].astype(float).to_dict()
    lock = {}
    for c, k, _ in chosen:
        units = min(dem[c], cap[k], data.draw(st.sampled_from([0.5, 1.0, 3.0])))
        if units >= 0.1:
            lock[(c, k)] = round(units / cfg.quantum)
            dem[c] -= units
            cap[k] -= units
    rows = pd.DataFrame(
        [(c, k, v * cfg.quantum) for (c, k), v in lock.items()],
        columns=["cluster_id", "partner_id", "units"],
    )
    p = plan(needs, partners, config=cfg, lock=rows)
    got = quanta(p)
    for key, v in lock.items():
        assert got.get(key, 0) == v
    opt = equity_optimum(p.clusters, partners, cfg.quantum, lock=lock)
    assert sum(got.values()) == opt["served"]
    assert assignment_cost_m(p.assignments, p.clusters, partners, cfg.quantum) == round(opt["cost"])


@SETTINGS
@given(hood_instances(), st.data())
def test_excluded_pairs_are_never_proposed_and_the_rest_is_optimal(inst, data):
    """Agreements as a re-plan sees them: locked pairs, declined pairs excluded, optimal."""
    needs, partners, cluster_km = inst
    cfg = MatchConfig(objective="distance", cluster_km=cluster_km)
    base = plan(needs, partners, config=cfg)
    pairs = equity_optimum(base.clusters, partners, cfg.quantum)["pairs"]
    assume(pairs)
    drawn = data.draw(st.lists(st.sampled_from(pairs), max_size=4, unique_by=lambda t: t[:2]))
    declined = {(c, k) for c, k, _ in drawn[: len(drawn) // 2 + 1]}
    dem = base.clusters.set_index("cluster_id")["demand"].to_dict()
    cap = partners.set_index("partner_id")["capacity"].astype(float).to_dict()
    lock = {}
    for c, k, _ in drawn:
        units = min(dem[c], cap[k], 1.0)
        if (c, k) not in declined and units >= 0.1:
            lock[(c, k)] = round(units / cfg.quantum)
            dem[c] -= units
            cap[k] -= units
    rows = pd.DataFrame(
        [(c, k, v * cfg.quantum) for (c, k), v in lock.items()],
        columns=["cluster_id", "partner_id", "units"],
    )
    out = pd.DataFrame(sorted(declined), columns=["cluster_id", "partner_id"])
    p = plan(needs, partners, config=cfg, lock=rows if lock else None, exclude=out)
    got = quanta(p)
    assert not declined & set(got), "an excluded pair was proposed"
    for key, v in lock.items():
        assert got.get(key, 0) == v
    opt = equity_optimum(p.clusters, partners, cfg.quantum, lock=lock, exclude=declined)
    assert sum(got.values()) == opt["served"]
    assert assignment_cost_m(p.assignments, p.clusters, partners, cfg.quantum) == round(opt["cost"])
    assert p.metrics["excluded_pairs"] == len(declined)


@SETTINGS
@given(hood_instances(), st.sampled_from([0.5, 50.0]))
def test_churn_penalty_prefers_previous_pairs_exactly(inst, penalty_km):
    needs, partners, cluster_km = inst
    # the previous plan served a shuffled partner list: different pairs than the base optimum
    prev = plan(
        needs,
        partners.assign(capacity=partners["capacity"][::-1].to_numpy()),
        config=MatchConfig(objective="distance", cluster_km=cluster_km),
    )
    cfg = MatchConfig(objective="distance", cluster_km=cluster_km, churn_penalty_km=penalty_km)
    p = plan(needs, partners, config=cfg, previous=prev.assignments)
    keep = quanta(prev)
    w = round(penalty_km * 1000)
    opt = equity_optimum(p.clusters, partners, cfg.quantum, keep=keep, churn_weight=w)
    got = quanta(p)
    assert sum(got.values()) == opt["served"]
    cost = assignment_cost_m(p.assignments, p.clusters, partners, cfg.quantum)
    kept = sum(min(v, keep.get(k, 0)) for k, v in got.items())
    assert cost + w * (sum(got.values()) - kept) == round(opt["cost"])
    assert p.churn["units_kept"] == pytest.approx(kept * cfg.quantum)


def test_previous_plan_with_churn_reproduces_itself():
    needs = pd.DataFrame(
        {
            "need_id": ["a", "b", "c"],
            "category": ["food_access"] * 3,
            "lat": [41.88, 41.90, 41.92],
            "lon": [-87.63] * 3,
            "demand": [4, 4, 4],
        }
    )
    partners = pd.DataFrame(
        {
            "partner_id": ["x", "y"],
            "kind": ["organization"] * 2,
            "lat": [41.89, 41.91],
            "lon": [-87.63] * 2,
            "categories": ["food_access"] * 2,
            "capacity": [6, 6],
            "radius_km": [5.0, 5.0],
        }
    )
    cfg = MatchConfig(objective="distance", cluster_km=0.3, min_samples=1)
    base = plan(needs, partners, config=cfg)
    again = plan(
        needs,
        partners,
        config=MatchConfig(objective="distance", cluster_km=0.3, min_samples=1,
                           churn_penalty_km=1.0),
        previous=base.assignments,
    )  # fmt: skip
    pd.testing.assert_frame_equal(
        base.assignments[["cluster_id", "partner_id", "units"]],
        again.assignments[["cluster_id", "partner_id", "units"]],
    )
    assert again.churn["units_moved"] == 0.0


def test_bad_lock_rows_name_file_row_field_and_value(tmp_path):
    needs = pd.DataFrame(
        {"need_id": ["a"], "category": ["food_access"], "lat": [41.88], "lon": [-87.63],
         "demand": [4]}
    )  # fmt: skip
    partners = pd.DataFrame(
        {"partner_id": ["x", "far"], "kind": ["organization"] * 2, "lat": [41.881, 45.0],
         "lon": [-87.63, -87.63], "categories": ["food_access"] * 2, "capacity": [6, 6],
         "radius_km": [5.0, 5.0]}
    )  # fmt: skip
    lock = tmp_path / "lock.csv"
    lock.write_text(
        "cluster_id,partner_id,units\nfood_access-000000,x,-1\nfood_access-000009,x,1\n"
    )
    with pytest.raises(InputValidationError) as err:
        plan(needs, partners, lock=lock)
    text = str(err.value)
    assert "lock.csv" in text and "row 2" in text and "'units'" in text and "'-1'" in text
    lock.write_text(
        "cluster_id,partner_id,units\nfood_access-000009,x,1\nfood_access-000000,far,1\n"
    )
    with pytest.raises(InputValidationError) as err:
        plan(needs, partners, lock=lock)
    text = str(err.value)
    assert "no such cluster" in text and "not eligible" in text and "row 3" in text
    lock.write_text("cluster_id,partner_id,units\nfood_access-000000,x,5\n")
    with pytest.raises(InputValidationError, match="exceed its demand") as err:
        plan(needs, partners, lock=lock)
    assert "lock.csv" in str(err.value)
    lock.write_text("cluster_id,partner_id,units\nfood_access-000000,x,0.04\n")
    with pytest.raises(InputValidationError, match="smaller than the plan's resolution"):
        plan(needs, partners, lock=lock)


def test_min_coverage_without_neighborhoods_is_a_clear_error():
    needs = pd.DataFrame(
        {"need_id": ["a"], "category": ["food_access"], "lat": [41.88], "lon": [-87.63],
         "demand": [4]}
    )  # fmt: skip
    partners = pd.DataFrame(
        {"partner_id": ["x"], "kind": ["organization"], "lat": [41.881], "lon": [-87.63],
         "categories": ["food_access"], "capacity": [6], "radius_km": [5.0]}
    )  # fmt: skip
    with pytest.raises(InputValidationError, match="need neighborhoods"):
        plan(needs, partners, config=MatchConfig(min_coverage=0.5))


def test_vulnerability_column_missing_lists_numeric_columns():
    needs = pd.DataFrame(
        {"need_id": ["a"], "category": ["food_access"], "lat": [41.88], "lon": [-87.63],
         "demand": [4], "neighborhood": ["A"]}
    )  # fmt: skip
    partners = pd.DataFrame(
        {"partner_id": ["x"], "kind": ["organization"], "lat": [41.881], "lon": [-87.63],
         "categories": ["food_access"], "capacity": [6], "radius_km": [5.0]}
    )  # fmt: skip
    hoods = _hood_polygons(needs, pd.DataFrame({"neighborhood_id": ["A"], "pop": [5]}))
    msg = r"column missing; numeric columns are \['pop'\]"
    with pytest.raises(InputValidationError, match=msg):
        plan(needs, partners, neighborhoods=hoods,
             config=MatchConfig(vulnerability_column="hardship"))  # fmt: skip


def _hood_polygons(needs, attrs):
    """One polygon per neighborhood: the convex hull of its needs, buffered (A, B, C disjoint
    or not does not matter: the test needs carry their neighborhood already, so each need is
    put in its own neighborhood by giving the polygons of other ones no area near it)."""
    import geopandas as gpd
    from shapely.geometry import Polygon

    # tiny far-away squares: the needs keep the neighborhood column they already have
    geoms = [
        Polygon([(i, -80), (i + 0.1, -80), (i + 0.1, -79.9), (i, -79.9)]) for i in range(len(attrs))
    ]
    return gpd.GeoDataFrame(attrs, geometry=geoms, crs="EPSG:4326")


def _model(cids, pids, demand, penalty, capacity, pc, pp, w):
    from matcher.transport import TransportModel

    a = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return TransportModel(
        tuple(cids), tuple(pids), a(demand), a(penalty), a(capacity), a(pc), a(pp), a(w),
        a([0] * len(cids)), a([0] * len(pids)),
    )  # fmt: skip


@pytest.mark.parametrize("backend", ["lemon", "ortools", "networkx"])
@pytest.mark.parametrize(("k", "lo", "hi"), [(5, 50, 90), (3, 5000, 18000)])
def test_floor_shortfall_is_least_even_through_a_chain_of_neighborhoods(backend, k, lo, hi):
    """A regression found in review: one big floor penalty is not enough when a residual
    cycle passes several neighborhoods at their floor (each swaps a high- for a
    low-priority cluster). The two-phase solve finds the least shortfall (0 here)."""
    from matcher.constraints import Constraints, solve_constrained

    cids, hood, mult = ["a"], [0], [lo]
    for i in range(1, k):
        cids += [f"b{i}", f"b{i}x"]
        hood += [i, i]
        mult += [hi, lo]
    cids.append("z")
    hood.append(-1)
    mult.append(hi)
    idx = {c: j for j, c in enumerate(cids)}
    pc, pp = [idx["a"]], [0]
    for i in range(1, k):
        pc += [idx[f"b{i}"], idx[f"b{i}x"]]
        pp += [i - 1, i]
    pc.append(idx["z"])
    pp.append(k - 1)
    base = 1 + min(len(cids), k) * 1000
    model = _model(cids, [f"p{i}" for i in range(k)], [1] * len(cids),
                   np.array(mult) * base, [1] * k, pc, pp, [1000] * len(pc))  # fmt: skip
    zero = np.zeros(len(pc), dtype=np.int64)
    cons = Constraints(
        tuple(["A"] + [f"B{i}" for i in range(1, k)]),
        np.array(hood, dtype=np.int64),
        np.array([0] + [1] * (k - 1), dtype=np.int64),
        None,
        zero,
        zero,
    )
    sol, shortfall = solve_constrained(model, cons, backend)
    assert shortfall.tolist() == [0] * k
    assert sol.unmet[idx["a"]] == 0


@pytest.mark.parametrize("backend", ["lemon", "networkx"])
def test_share_caps_still_serve_the_most_units(backend):
    """A regression found in review: with (partner, neighborhood) nodes the partner-side
    penalty bound is not valid; the cluster-side one is."""
    from matcher.constraints import Constraints, solve_constrained
    from matcher.costs import unmet_penalties

    cids, pids = ["c1", "c2", "c4", "c5", "c6"], ["p", "q", "r"]
    big, e = 10_000, 1
    pairs = [("c1", "p", big), ("c2", "p", e), ("c2", "q", 100), ("c4", "q", e),
             ("c4", "p", big), ("c5", "p", e), ("c5", "r", 100), ("c6", "q", e)]  # fmt: skip
    ci, pi = {c: i for i, c in enumerate(cids)}, {p: i for i, p in enumerate(pids)}
    frame = pd.DataFrame(
        {"cluster": [ci[a] for a, _, _ in pairs], "partner": [pi[b] for _, b, _ in pairs],
         "weight": [w for *_, w in pairs]}
    )  # fmt: skip
    zero_c, zero_p = np.zeros(5, dtype=np.int64), np.zeros(3, dtype=np.int64)
    penalty = unmet_penalties(frame, zero_c, zero_p, np.ones(5, np.int64), partner_side=False)
    cap = np.array([2, 2, 2])
    model = _model(cids, pids, [1] * 5, penalty, cap, frame["cluster"], frame["partner"],
                   frame["weight"])  # fmt: skip
    cons = Constraints(
        ("h1", "h2", "h3"),
        np.array([0, 0, 1, 1, 2], dtype=np.int64),
        np.array([-1, -1, -1], dtype=np.int64),
        np.floor(cap * 0.5).astype(np.int64),
        np.zeros(len(pairs), dtype=np.int64),
        np.zeros(len(pairs), dtype=np.int64),
    )
    sol, _ = solve_constrained(model, cons, backend)
    assert int(sol.unmet.sum()) == 0  # all five served: p: c1, c4; q: c2, c6; r: c5


def test_a_neighborhood_floor_column_clusters_within_neighborhoods(tmp_path):
    """A per-neighborhood min_coverage (without a run-wide one) also keeps clusters
    inside neighborhoods, and row numbers in its errors are the file's."""
    import geopandas as gpd
    from shapely.geometry import box

    needs = pd.DataFrame(
        {"need_id": ["n1", "n2", "n3"], "category": ["food_access"] * 3,
         "lat": [41.8800, 41.8801, 41.8802], "lon": [-87.6302, -87.6300, -87.6298],
         "demand": [1, 1, 1]}
    )  # fmt: skip
    partners = pd.DataFrame(
        {"partner_id": ["x"], "kind": ["organization"], "lat": [41.8801], "lon": [-87.63],
         "categories": ["food_access"], "capacity": [1], "radius_km": [1.0]}
    )  # fmt: skip
    hoods = gpd.GeoDataFrame(
        {"neighborhood_id": ["B", "A"], "min_coverage": [None, 1.0]},
        geometry=[box(-87.6300, 41.87, -87.62, 41.89), box(-87.64, 41.87, -87.6301, 41.89)],
        crs="EPSG:4326",
    )
    p = plan(needs, partners, neighborhoods=hoods, config=MatchConfig(min_samples=1))
    hood_of = p.needs.set_index("need_id")["neighborhood"]
    per = hood_of.groupby(p.need_clusters.set_index("need_id")["cluster_id"]).nunique()
    assert (per == 1).all()
    fl = p.floors.set_index("neighborhood_id")
    assert fl.loc["A", "demand"] == 1.0 and bool(fl.loc["A", "floor_met"])
    bad = hoods.assign(min_coverage=["2", None])
    path = tmp_path / "hoods.geojson"
    bad.to_file(path, driver="GeoJSON")
    with pytest.raises(InputValidationError) as err:
        plan(needs, partners, neighborhoods=path)
    assert "row 0" in str(err.value) and "min_coverage" in str(err.value)
