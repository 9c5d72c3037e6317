"""Where to recruit: the suggested sites cover what a brute-force enumeration says is best."""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import combinations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher.recruit import SITE_COLUMNS, SOLVE_COLUMNS, RecruitSuggestions, recruit_sites

from .oracle import gc_km, gc_km_array, in_radius

KM_PER_DEG = 111.19508


def frame(rows: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    """A clusters table from (cluster_id, category, lat, lon, unmet) rows."""
    return pd.DataFrame(
        {
            "cluster_id": [r[0] for r in rows],
            "category": [r[1] for r in rows],
            "centroid_lat": [r[2] for r in rows],
            "centroid_lon": [r[3] for r in rows],
            "unmet": [r[4] for r in rows],
            "unmet_reason": ["no_partner_in_range"] * len(rows),
        }
    )


# --------------------------------------------------------------------------- the oracle


def _flow(quanta: list[int], cover: np.ndarray, sites: tuple[int, ...], cap: int | None) -> int:
    """Most quanta the sites can serve: networkx max flow source -> cluster -> site -> sink."""
    g = nx.DiGraph()
    g.add_nodes_from(["s", "t"])
    for i, q in enumerate(quanta):
        g.add_edge("s", ("c", i), capacity=q)
        for j in sites:
            if cover[i, j]:
                g.add_edge(("c", i), ("x", j))
    for j in sites:  # unlimited: the total demand bounds every flow
        g.add_edge(("x", j), "t", capacity=sum(quanta) if cap is None else cap)
    return int(nx.maximum_flow_value(g, "s", "t")) if sites else 0


def _category(clusters: pd.DataFrame, category: str, radius_km: float):
    sub = clusters[(clusters["category"] == category) & (clusters["unmet"] > 0)]
    sub = sub.reset_index(drop=True)
    lat, lon = sub["centroid_lat"].to_numpy(), sub["centroid_lon"].to_numpy()
    # the oracle's own haversine and "within" (d <= r up to oracle.RADIUS_RTOL)
    d = gc_km_array(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    cover = in_radius(d, radius_km)
    quanta = [round(u * 10) for u in sub["unmet"]]
    return sub, cover, quanta


def brute_force(
    clusters: pd.DataFrame, category: str, k: int, radius_km: float, capacity: float | None
) -> int:
    """Best quanta any k candidate sites (the unmet clusters' centroids) can serve."""
    sub, cover, quanta = _category(clusters, category, radius_km)
    cap = None if capacity is None else math.floor(capacity * 10 + 1e-9)
    n = len(sub)
    return max((_flow(quanta, cover, s, cap) for s in combinations(range(n), min(k, n))), default=0)


def check_against_oracle(
    clusters: pd.DataFrame, k: int, radius_km: float, capacity: float | None
) -> RecruitSuggestions:
    res = recruit_sites(clusters, k, radius_km, capacity)
    sites, solves = res.sites, res.solves
    assert list(sites.columns) == list(SITE_COLUMNS)
    assert list(solves.columns) == list(SOLVE_COLUMNS)
    for category in sorted(set(clusters["category"])):
        best = brute_force(clusters, category, k, radius_km, capacity)
        row = solves.set_index("category").loc[category]
        assert row["status"] == "optimal"
        assert round(row["objective"] * 10) == best, (category, row["formulation"])
        assert row["bound"] == row["objective"] and row["gap"] == 0.0
        mine = sites[sites["category"] == category]
        assert len(mine) <= k
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        assert (mine["covered_units"] > 0).all()
        assert round(mine["covered_units"].sum() * 10) == best
        # the suggested sites themselves serve that much (independent max flow)
        sub, cover, quanta = _category(clusters, category, radius_km)
        pos = {cid: p for p, cid in enumerate(sub["cluster_id"])}
        chosen = tuple(pos[c] for c in mine["site_cluster_id"])
        cap = None if capacity is None else math.floor(capacity * 10 + 1e-9)
        assert _flow(quanta, cover, chosen, cap) == best
        # marginal gains: each rank adds its covered units to the ranks before it
        for r in range(1, len(mine) + 1):
            prefix = round(mine["covered_units"].iloc[:r].sum() * 10)
            assert _flow(quanta, cover, chosen[:r], cap) == prefix
        for site in mine.itertuples():
            if capacity is not None:
                assert site.covered_units <= capacity + 1e-9
            assert site.covered_units <= site.units_in_range + 1e-9
            members = site.cluster_ids.split(";")
            assert len(members) == site.clusters_covered
            for cid in members:
                assert cover[pos[cid], pos[site.site_cluster_id]]
    return res


def random_clusters(rng: np.random.Generator, n: int, n_cat: int = 1) -> pd.DataFrame:
    """Clusters scattered over ~6 km x 6 km near Chicago, some with no unmet demand."""
    lat = 41.85 + rng.uniform(0, 6, n) / KM_PER_DEG
    lon = -87.65 + rng.uniform(0, 6, n) / (KM_PER_DEG * math.cos(math.radians(41.85)))
    unmet = rng.integers(1, 60, n) / 10
    unmet[rng.random(n) < 0.1] = 0.0
    cats = rng.choice([f"cat{c}" for c in range(n_cat)], n)
    rows = [(f"c{i:02d}", cats[i], lat[i], lon[i], float(unmet[i])) for i in range(n)]
    return frame(rows)


# --------------------------------------------------------------------------- brute force


def test_small_random_instances_match_brute_force() -> None:
    rng = np.random.default_rng(7)
    seen: Counter[str] = Counter()
    for _ in range(70):
        n = int(rng.integers(1, 9))
        clusters = random_clusters(rng, n, n_cat=int(rng.integers(1, 3)))
        k = int(rng.integers(1, 4))
        radius = float(rng.choice([0.8, 1.5, 2.5, 4.0]))
        capacity = None if rng.random() < 0.35 else float(rng.integers(0, 120)) / 10
        res = check_against_oracle(clusters, k, radius, capacity)
        seen.update(res.solves["formulation"])
    # every path to optimality is exercised
    assert {"trivial", "greedy_bound", "mclp"} <= set(seen), seen
    assert seen["capacitated_mclp"] + seen["mclp_bound"] > 0, seen


def test_instances_that_need_the_milp_match_brute_force() -> None:
    """Denser instances, where the greedy sites are often not optimal."""
    rng = np.random.default_rng(5)
    seen: Counter[str] = Counter()
    for _ in range(40):
        clusters = random_clusters(rng, int(rng.integers(7, 10)))
        k = int(rng.integers(2, 4))
        radius = float(rng.choice([1.5, 2.5]))
        capacity = None if rng.random() < 0.3 else float(rng.integers(30, 150)) / 10
        res = check_against_oracle(clusters, k, radius, capacity)
        seen.update(res.solves["formulation"])
    assert seen["mclp"] >= 5 and seen["capacitated_mclp"] >= 5, seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    points=st.lists(
        st.tuples(
            st.floats(0, 5), st.floats(0, 5), st.integers(0, 80), st.sampled_from(["a", "b"])
        ),
        min_size=1,
        max_size=7,
    ),
    k=st.integers(1, 3),
    radius=st.floats(0.3, 4.0),
    capacity=st.one_of(st.none(), st.integers(0, 150).map(lambda q: q / 10)),
)
def test_hypothesis_instances_match_brute_force(points, k, radius, capacity) -> None:
    rows = [
        (f"c{i}", cat, 41.85 + y / KM_PER_DEG, -87.65 + x / (KM_PER_DEG * 0.745), q / 10)
        for i, (x, y, q, cat) in enumerate(points)
    ]
    check_against_oracle(frame(rows), k, radius, capacity)


def line(xs_km: list[float], units: list[float], category: str = "food_access") -> pd.DataFrame:
    """Clusters on the equator at the given km east of 10 E."""
    rows = [
        (f"p{i}", category, 0.0, 10.0 + x / KM_PER_DEG, u)
        for i, (x, u) in enumerate(zip(xs_km, units, strict=True))
    ]
    return frame(rows)


#: e(-1) a(0) b(1) c(2) f(3): b covers a, b, c (9) but a + c cover everything (15).
GREEDY_TRAP = line([-1.0, 0.0, 1.0, 2.0, 3.0], [3.0, 4.0, 1.0, 4.0, 3.0])


def test_greedy_trap_is_solved_exactly() -> None:
    res = check_against_oracle(GREEDY_TRAP, 2, 1.05, None)
    assert res.solves["formulation"].tolist() == ["mclp"]
    assert res.solves["objective"].tolist() == [15.0]
    assert sorted(res.sites["site_cluster_id"]) == ["p1", "p3"]


def test_greedy_trap_with_capacity() -> None:
    for cap in (4.0, 6.0, 7.5, 8.0, 20.0):
        check_against_oracle(GREEDY_TRAP, 2, 1.05, cap)


# --------------------------------------------------------------------------- behaviour


def test_determinism_and_row_order() -> None:
    rng = np.random.default_rng(3)
    clusters = random_clusters(rng, 40, n_cat=2)
    a = recruit_sites(clusters, 3, 1.5, 6.0)
    b = recruit_sites(clusters, 3, 1.5, 6.0)
    c = recruit_sites(clusters.sample(frac=1.0, random_state=1), 3, 1.5, 6.0)
    for other in (b, c):
        pd.testing.assert_frame_equal(a.sites, other.sites)
        pd.testing.assert_frame_equal(
            a.solves.drop(columns="seconds"), other.solves.drop(columns="seconds")
        )
    assert json.dumps(a.to_geojson()) == json.dumps(c.to_geojson())


def test_k_larger_than_candidates() -> None:
    clusters = line([0.0, 0.5, 5.0], [1.0, 2.0, 3.0])
    res = recruit_sites(clusters, 10, 1.0)
    assert res.solves["formulation"].tolist() == ["trivial"]
    assert res.solves["objective"].tolist() == [6.0]
    # the site at 0 km or 0.5 km covers both: a third site would add nothing
    assert len(res.sites) == 2
    assert res.sites["covered_units"].tolist() == [3.0, 3.0]
    check_against_oracle(clusters, 10, 1.0, 2.0)


def test_categories_without_unmet_demand_get_no_sites() -> None:
    clusters = pd.concat(
        [line([0.0, 1.0], [2.0, 1.0]), line([0.0, 1.0], [0.0, 0.0], "education")],
        ignore_index=True,
    )
    clusters["cluster_id"] = [f"k{i}" for i in range(len(clusters))]
    res = recruit_sites(clusters, 2, 2.0, 5.0)
    assert res.sites["category"].unique().tolist() == ["food_access"]
    edu = res.solves.set_index("category").loc["education"]
    assert (edu["candidates"], edu["objective"], edu["sites"], edu["status"]) == (
        0,
        0.0,
        0,
        "optimal",
    )
    only = recruit_sites(clusters, 2, 2.0, categories=["education", "unknown"])
    assert only.sites.empty and list(only.sites.columns) == list(SITE_COLUMNS)
    assert only.solves["category"].tolist() == ["education", "unknown"]
    assert only.to_geojson() == {"type": "FeatureCollection", "features": []}
    one = recruit_sites(clusters, 2, 2.0, categories="food_access")
    assert one.solves["category"].tolist() == ["food_access"]


def test_zero_capacity_serves_nothing() -> None:
    res = recruit_sites(GREEDY_TRAP, 2, 1.05, 0.0)
    assert res.sites.empty
    assert res.solves["objective"].tolist() == [0.0]


def test_antimeridian_and_pole() -> None:
    rows = [
        ("w", "x", 0.0, 179.99, 2.0),  # 2.2 km from e across the antimeridian
        ("e", "x", 0.0, -179.99, 3.0),
        ("m", "x", 0.0, 179.95, 1.5),  # 4.4 km west of w
        ("n1", "y", 89.95, 0.0, 2.0),  # 11.1 km from n2 across the pole
        ("n2", "y", 89.95, 180.0, 2.0),
        ("n3", "y", 89.9, 90.0, 1.0),
    ]
    clusters = frame(rows)
    res = check_against_oracle(clusters, 1, 3.0, None)
    x = res.sites[res.sites["category"] == "x"]
    assert x["covered_units"].tolist() == [5.0]
    assert sorted(x["cluster_ids"].iloc[0].split(";")) == ["e", "w"]
    y = recruit_sites(clusters, 1, 11.2, categories="y").sites
    assert y["covered_units"].tolist() == [4.0]  # n1 + n2, across the pole; n3 is 12.4 km away
    assert sorted(y["cluster_ids"].iloc[0].split(";")) == ["n1", "n2"]
    y = recruit_sites(clusters, 1, 12.5, categories="y").sites
    assert y["covered_units"].tolist() == [5.0]
    for k in (1, 2):
        for cap in (None, 2.5):
            check_against_oracle(clusters, k, 11.2, cap)


def test_coverage_at_the_radius_edge() -> None:
    clusters = line([0.0, 2.0], [1.0, 1.0])
    d = gc_km(0.0, 10.0, 0.0, 10.0 + 2.0 / KM_PER_DEG)
    assert recruit_sites(clusters, 1, d).solves["objective"].tolist() == [2.0]
    assert recruit_sites(clusters, 1, d * (1 - 1e-9)).solves["objective"].tolist() == [1.0]


def test_time_limit_reports_a_valid_bound() -> None:
    res = recruit_sites(GREEDY_TRAP, 2, 1.05, time_limit=1e-9)
    row = res.solves.iloc[0]
    assert row["objective"] <= 15.0 <= row["bound"]
    assert row["status"] in ("optimal", "time_limit")
    if row["status"] == "optimal":
        assert row["objective"] == 15.0
    assert row["gap"] == pytest.approx((row["bound"] - row["objective"]) / row["bound"])
    assert res.sites["covered_units"].sum() == pytest.approx(row["objective"])


def test_a_larger_instance_is_consistent() -> None:
    rng = np.random.default_rng(11)
    clusters = random_clusters(rng, 300, n_cat=2)
    for cap in (None, 5.0, 40.0):
        res = recruit_sites(clusters, 4, 1.0, cap, time_limit=20)
        for row in res.solves.itertuples():
            mine = res.sites[res.sites["category"] == row.category]
            assert mine["covered_units"].sum() == pytest.approx(row.objective)
            assert row.objective <= row.bound + 1e-9
            assert 0.0 <= row.gap <= 1.0
            if row.status == "optimal":
                assert row.gap == 0.0


def test_geojson_and_frame() -> None:
    res = recruit_sites(GREEDY_TRAP, 2, 1.05)
    gj = res.to_geojson()
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 2
    json.dumps(gj, allow_nan=False)
    for feat, row in zip(gj["features"], res.sites.itertuples(), strict=True):
        assert feat["geometry"]["type"] == "Point"
        assert feat["geometry"]["coordinates"] == [round(row.lon, 7), round(row.lat, 7)]
        props = feat["properties"]
        assert props["feature_type"] == "recruit_site"
        assert props["capacity"] is None
        assert props["rank"] == row.rank and props["cluster_ids"] == row.cluster_ids
    framed = res.to_frame()
    pd.testing.assert_frame_equal(framed, res.sites)
    framed.loc[0, "rank"] = 99
    assert res.sites.loc[0, "rank"] == 1  # a copy
    capped = recruit_sites(GREEDY_TRAP, 2, 1.05, 7.5).to_geojson()
    assert {f["properties"]["capacity"] for f in capped["features"]} == {7.5}


def test_accepts_a_plan_like_object() -> None:
    class PlanLike:
        clusters = GREEDY_TRAP

    assert recruit_sites(PlanLike(), 2, 1.05).solves["objective"].tolist() == [15.0]


# --------------------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, r"k must be an integer 1\.\.100 \(sites per category\)"),
        ({"k": -3}, r"k must be an integer 1\.\.100 \(sites per category\)"),
        ({"k": 1.5}, r"k must be an integer 1\.\.100 \(sites per category\)"),
        ({"k": True}, r"k must be an integer 1\.\.100 \(sites per category\)"),
        ({"radius_km": 0.0}, r"radius_km must be a number > 0 and <= 1000 \(km\)"),
        ({"radius_km": -1.0}, r"radius_km must be a number > 0 and <= 1000 \(km\)"),
        ({"radius_km": float("nan")}, r"radius_km must be a number > 0 and <= 1000 \(km\)"),
        ({"radius_km": float("inf")}, r"radius_km must be a number > 0 and <= 1000 \(km\)"),
        (
            {"capacity": -0.1},
            r"capacity must be None \(unlimited\) or a number >= 0 and <= 1,000,000",
        ),
        ({"capacity": float("nan")}, r"capacity must be None"),
        ({"capacity": "10"}, r"capacity must be None"),
        ({"time_limit": 0}, r"time_limit must be a number > 0"),
        ({"quantum": 0.0}, r"quantum must be a finite number > 0"),
    ],
)
def test_invalid_parameters(kwargs, message) -> None:
    args = {"k": 2, "radius_km": 1.0, "capacity": None} | kwargs
    with pytest.raises(ValueError, match=message):
        recruit_sites(GREEDY_TRAP, **args)


def test_invalid_clusters() -> None:
    with pytest.raises(ValueError, match=r"missing column\(s\) \['unmet'\]"):
        recruit_sites(GREEDY_TRAP.drop(columns="unmet"), 1, 1.0)
    bad = GREEDY_TRAP.copy()
    bad.loc[2, "unmet"] = 0.15
    with pytest.raises(ValueError, match=r"unmet must be a whole multiple of the quantum 0.1"):
        recruit_sites(bad, 1, 1.0)
    bad.loc[2, "unmet"] = -1.0
    with pytest.raises(ValueError, match=r"unmet must be a finite number >= 0.*'p2'"):
        recruit_sites(bad, 1, 1.0)
    bad = GREEDY_TRAP.copy()
    bad.loc[0, "centroid_lat"] = 91.0
    with pytest.raises(ValueError, match=r"centroid_lat must be a finite latitude in -90..90.*91"):
        recruit_sites(bad, 1, 1.0)
    bad = GREEDY_TRAP.copy()
    bad.loc[1, "cluster_id"] = "p0"
    with pytest.raises(ValueError, match=r"cluster_id must be unique"):
        recruit_sites(bad, 1, 1.0)
    # a coarser quantum accepts what the default one would not
    ok = GREEDY_TRAP.assign(unmet=[0.25, 0.5, 0.25, 0.5, 0.25])
    assert recruit_sites(ok, 1, 1.05, quantum=0.05).solves["objective"].tolist() == [1.25]


def test_a_plan_with_recruit_sites_writes_the_same_bytes_twice():
    """summary.json holds no solve times: the same inputs give byte-identical files."""
    from pathlib import Path

    import matcher
    from matcher.output import plan_files
    from matcher.scenario import with_recruit_parameters

    sample = Path(__file__).resolve().parents[1] / "data" / "sample"
    runs = []
    for _ in range(2):
        p = matcher.plan(sample / "needs.csv", sample / "partners.csv")
        runs.append(plan_files(with_recruit_parameters(p, {"k": 2, "radius_km": 2.0})))
    assert "recruit.csv" in runs[0]
    assert runs[0] == runs[1]
