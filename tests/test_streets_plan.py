"""Plans on streets (``travel="walk"|"drive"`` with a network), against an independent oracle.

The oracle (``tests/oracle.py``) rebuilds each street network as a networkx graph from
the same raw node and edge tables by the documented rules (directions, lengths never
below the great circle, speeds, parallel edges, the largest strongly connected part),
snaps points to their nearest node by brute force, runs Dijkstra, decides eligibility
(category, street km within ``radius_km``, minutes within the partner's own
``radius_min`` or the run's) and solves the lexicographic LP over those pairs. The rest
checks the outputs and the command line: straight-line plans unchanged, byte-identical
street plans (twice, and on Dask), precise errors, explanations, the partner's own time
limit, and one-way streets.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString

from matcher import MatchConfig, plan
from matcher.network import build_network, read_network

from .conftest import assert_clean_exit, plan_cli, read_csv
from .oracle import (
    WALK_KMH,
    R,
    destination,
    gc_km,
    lexicographic_optimum_of_pairs,
    nearest_node,
    street_digraph,
    street_eligible_pairs,
    street_trips,
)

ROOT = Path(__file__).resolve().parents[1]
SOUTHSIDE = ROOT / "data" / "southside"
WALK_GPKG = SOUTHSIDE / "southside_walk.gpkg"

#: Metres per degree of latitude (R = 6371.0088 km), to lay out grids.
M_PER_DEG = 2 * math.pi * R * 1000.0 / 360.0

#: The assignment columns and plan parameters of straight-line plans before streets.
STRAIGHT_ASSIGNMENT_COLUMNS = [
    "cluster_id",
    "partner_id",
    "units",
    "distance_km",
    "cost",
    "language_km",
    "capacity_used",
    "capacity_left",
    "runner_up_id",
    "runner_up_distance_km",
    "runner_up_extra_cost",
    "runner_up_full",
    "reason",
    "partner_name",
    "partner_kind",
    "category",
    "neighborhood",
]
STRAIGHT_PARAMETERS = {
    "objective",
    "cluster_km",
    "min_samples",
    "max_cluster_radius_km",
    "language_penalty_km",
    "quantum",
    "seed",
    "solver",
    "taxonomy",
    "min_coverage",
    "vulnerability_column",
    "vulnerability_weight",
    "max_partner_share",
    "churn_penalty_km",
    "volunteer_points",
}



def shown(minutes: float) -> str:
    """Minutes as a reason writes them: tenths below ten minutes, whole minutes above."""
    return f"{minutes:.1f}" if minutes < 9.95 else f"{minutes:.0f}"

def files_of(p, out: Path) -> dict[str, bytes]:
    p.to_dir(out)
    return {f.name: f.read_bytes() for f in sorted(out.iterdir())}


def dir_bytes(out: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(out.iterdir())}


def assert_same_files(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert a.keys() == b.keys()
    assert [name for name in a if a[name] != b[name]] == []


def write_network_gpkg(path: Path, nodes: pd.DataFrame, edges: pd.DataFrame) -> Path:
    """Write a network GeoPackage as matcher reads it: layers nodes (osmid) and edges."""
    where = {
        str(i): (float(lo), float(la))
        for i, la, lo in zip(nodes["id"], nodes["lat"], nodes["lon"], strict=True)
    }
    gpd.GeoDataFrame(
        {"osmid": nodes["id"].to_numpy()},
        geometry=gpd.points_from_xy(nodes["lon"], nodes["lat"]),
        crs="EPSG:4326",
    ).to_file(path, layer="nodes", driver="GPKG")
    lines = [
        LineString([where[str(u)], where[str(v)]])
        for u, v in zip(edges["u"], edges["v"], strict=True)
    ]
    gpd.GeoDataFrame(edges, geometry=lines, crs="EPSG:4326").to_file(
        path, layer="edges", driver="GPKG"
    )
    return path


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False, lineterminator="\n")


# ---------------------------------------------------------------------------------------
# 1. random street networks against the oracle
# ---------------------------------------------------------------------------------------

CATS = ["food_access", "elderly_support"]
# a mid-latitude city, the southern hemisphere, and a grid across the antimeridian
STREET_CENTRES = [(41.88, -87.63), (-33.87, 151.21), (-17.8, 179.995)]
TWO_WAY = ["no", "", "False", None]
ONEWAY = ["yes", "True", "1", "-1", "reverse", "no", "", "False", None]
HIGHWAYS = ["residential", "primary", "tertiary", "service", "track"]
MAXSPEEDS = [None, None, None, "40", "20 mph", "25 km/h", "none"]
RADII_KM = [0.3, 0.6, 1.0, 1.6, 3.0]
MINUTES = {"walk": [3.0, 6.0, 10.0, 20.0], "drive": [0.5, 1.0, 2.0, 3.0]}
NETWORK_SHA = "5" * 64


@st.composite
def street_instances(draw, mode: str | None = None, time_limit: bool = False):
    """A grid-like street network, needs and partners near its nodes, and a config.

    The grid's outer ring is always present and two-way, so it is one strongly connected
    part holding at least half the nodes; inner streets may be missing, one-way (every
    documented tag spelling) or doubled (parallel edges), and a few diagonals are added.
    Continuous values (jitter, lengths, offsets) come from a seeded generator, so that no
    two candidate nodes are ever equally near a point.
    """
    mode = mode or draw(st.sampled_from(["walk", "drive"]))
    lat0, lon0 = draw(st.sampled_from(STREET_CENTRES))
    n_rows, n_cols = draw(st.integers(2, 4)), draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    spacing = float(rng.uniform(150.0, 400.0))
    ids = [1000 + k for k in range(n_rows * n_cols)]
    lat, lon = [], []
    for r in range(n_rows):
        for c in range(n_cols):
            jy, jx = rng.uniform(-0.15, 0.15, 2) * spacing
            lat.append(lat0 + (r * spacing + jy) / M_PER_DEG)
            x = lon0 + (c * spacing + jx) / (M_PER_DEG * math.cos(math.radians(lat0)))
            lon.append((x + 180.0) % 360.0 - 180.0)
    nodes = pd.DataFrame({"id": ids, "lat": lat, "lon": lon})
    links = []
    for r in range(n_rows):
        for c in range(n_cols):
            k = r * n_cols + c
            if c + 1 < n_cols:
                links.append((k, k + 1, r in (0, n_rows - 1)))
            if r + 1 < n_rows:
                links.append((k, k + n_cols, c in (0, n_cols - 1)))
    diagonals = draw(
        st.lists(
            st.tuples(st.integers(0, n_rows - 2), st.integers(0, n_cols - 2)),
            max_size=3,
            unique=True,
        )
    )
    links += [(r * n_cols + c, (r + 1) * n_cols + c + 1, False) for r, c in diagonals]
    edges = []
    for a, b, ring in links:
        if not ring and not draw(st.booleans()):
            continue
        for _ in range(2 if rng.random() < 0.15 else 1):  # sometimes a parallel edge
            u, v = (a, b) if rng.random() < 0.5 else (b, a)
            straight = 1000.0 * gc_km(lat[u], lon[u], lat[v], lon[v])
            roll = rng.random()
            # NaN: the great circle; 0.8x: raised to it; else a detour of up to 60 %
            length = (
                math.nan
                if roll < 0.1
                else straight * (0.8 if roll < 0.2 else float(rng.uniform(1.0, 1.6)))
            )
            edges.append(
                {
                    "u": ids[u],
                    "v": ids[v],
                    "length_m": length,
                    "highway": HIGHWAYS[int(rng.integers(len(HIGHWAYS)))],
                    "oneway": draw(st.sampled_from(TWO_WAY if ring else ONEWAY)),
                    "maxspeed": MAXSPEEDS[int(rng.integers(len(MAXSPEEDS)))],
                }
            )
    edges = pd.DataFrame(edges)

    def near_node(share: float) -> tuple[float, float]:
        k = draw(st.integers(0, len(ids) - 1))
        return destination(
            lat[k], lon[k], float(rng.uniform(0, 360)), float(rng.uniform(0, share)) * spacing / 1e3
        )

    n_needs, n_partners = draw(st.integers(1, 14)), draw(st.integers(1, 6))
    need_points = [near_node(0.2) for _ in range(n_needs)]
    needs = pd.DataFrame(
        {
            "need_id": [f"n{i:02d}" for i in range(n_needs)],
            "category": draw(st.lists(st.sampled_from(CATS), min_size=n_needs, max_size=n_needs)),
            "lat": [p[0] for p in need_points],
            "lon": [p[1] for p in need_points],
            "demand": draw(st.lists(st.integers(1, 9), min_size=n_needs, max_size=n_needs)),
            "severity": draw(st.lists(st.integers(1, 5), min_size=n_needs, max_size=n_needs)),
        }
    )
    minutes = MINUTES[mode]
    partner_points = [near_node(0.25) for _ in range(n_partners)]
    cats = draw(
        st.lists(
            st.lists(st.sampled_from(CATS), min_size=1, max_size=2, unique=True),
            min_size=n_partners,
            max_size=n_partners,
        )
    )
    own = draw(
        st.lists(st.none() | st.sampled_from(minutes), min_size=n_partners, max_size=n_partners)
    )
    partners = pd.DataFrame(
        {
            "partner_id": [f"p{i}" for i in range(n_partners)],
            "kind": ["organization"] * n_partners,
            "lat": [p[0] for p in partner_points],
            "lon": [p[1] for p in partner_points],
            "categories": [";".join(c) for c in cats],
            "capacity": draw(
                st.lists(st.integers(0, 20), min_size=n_partners, max_size=n_partners)
            ),
            "radius_km": draw(
                st.lists(st.sampled_from(RADII_KM), min_size=n_partners, max_size=n_partners)
            ),
            "radius_min": [math.nan if m is None else m for m in own],
        }
    )
    if all(m is None for m in own) and draw(st.booleans()):
        partners = partners.drop(columns="radius_min")
    run_min = draw(st.sampled_from(minutes) if time_limit else st.none() | st.sampled_from(minutes))
    config = MatchConfig(
        travel=mode,
        objective=draw(st.sampled_from(["distance", "distance", "default"])),
        cluster_km=draw(st.sampled_from([0.1, 0.3])),
        min_samples=1,
        radius_min=run_min,
        max_snap_m=2000.0,
        solver=draw(st.sampled_from(["lemon", "ortools", "networkx"])),
    )
    return nodes, edges, needs, partners, config


def check_against_oracle(nodes, edges, needs, partners, config) -> None:
    q = config.quantum
    net = build_network(nodes, edges, config.travel, sha256=NETWORK_SHA)
    graph = street_digraph(nodes, edges, config.travel)
    assert sorted(net.node_id) == sorted(graph.nodes)  # the same strongly connected part
    p = plan(needs, partners, config=config, network=net)
    # nearest nodes are never a near-tie (the generator's continuous values make sure)
    for la, lo in [
        *zip(p.clusters["centroid_lat"], p.clusters["centroid_lon"], strict=True),
        *zip(partners["lat"], partners["lon"], strict=True),
    ]:
        _, first, second = nearest_node(graph, la, lo)
        assume(second - first > 1e-3)
    trips = street_trips(graph, p.clusters, partners)
    eligible = street_eligible_pairs(trips, partners, config.radius_min)
    opt = lexicographic_optimum_of_pairs(
        p.clusters, partners, eligible, q, severity=config.objective == "default"
    )
    km_of = {(c, pid): km for c, pid, km in eligible}
    a = p.assignments
    # the optimum: units served, [severity], integer metres x quanta
    served_q = round(a["units"].sum() / q)
    assert served_q == opt["served"]
    assert round(p.metrics["units"]["served"] / q) == served_q
    if config.objective == "default":
        cl = p.clusters
        weight = np.rint(cl["served"] / q) * np.rint(10 * cl["severity"])
        assert weight.sum() == opt["severity"]
    assert p.solver["assignment_cost_scaled"] == round(opt["cost"])
    # every row: an oracle-eligible pair, at the oracle's street km, minutes and straight km,
    # costing whole metres of street per unit; their sum is the optimum again
    total = 0
    for row in a.itertuples(index=False):
        pair = (row.cluster_id, row.partner_id)
        assert pair in km_of, (pair, trips.get(pair))
        km, minutes, straight = trips[pair]
        assert abs(row.distance_km - km) <= 1e-6, (pair, row.distance_km, km)
        assert abs(row.travel_min - minutes) <= 1e-6, (pair, row.travel_min, minutes)
        assert abs(row.straight_km - straight) <= 1e-6, (pair, row.straight_km, straight)
        metres = round(1000 * row.cost / row.units)
        assert metres == round(1000 * km), (pair, row.cost, row.units, km)
        total += round(row.units / q) * metres
    assert total == p.solver["assignment_cost_scaled"]
    # capacity, demand, runner-ups and unmet reasons against the oracle's eligibility
    used = a.groupby("partner_id")["units"].sum()
    cap = partners.set_index("partner_id")["capacity"]
    assert (used <= cap.reindex(used.index) + 1e-9).all()
    cl = p.clusters.set_index("cluster_id")
    np.testing.assert_allclose(cl["served"] + cl["unmet"], cl["demand"], atol=1e-9)
    left = cap - used.reindex(cap.index, fill_value=0)
    for row in a.itertuples(index=False):
        serving = set(a.loc[a["cluster_id"] == row.cluster_id, "partner_id"])
        others = {pid for (c, pid) in km_of if c == row.cluster_id} - serving
        assert (row.runner_up_id in others) if row.runner_up_id else not others
        if row.runner_up_id:
            assert abs(row.runner_up_distance_km - km_of[(row.cluster_id, row.runner_up_id)]) < 1e-6
    for cid, row in cl.iterrows():
        reach = {pid for (c, pid) in km_of if c == cid}
        if row["unmet"] <= 0:
            assert row["unmet_reason"] == ""
        elif not reach:
            assert row["unmet_reason"] == "no_partner_in_range"
        else:
            assert row["unmet_reason"] == "partners_in_range_full"
            assert all(left[pid] <= 1e-9 for pid in reach)
    # the plan's record of its network and travel
    travel = p.metrics["travel"]
    assert travel["mode"] == config.travel and p.input_hashes["network"] == NETWORK_SHA
    assert travel["nodes"] == graph.number_of_nodes()
    units = a["units"].to_numpy()
    if len(a):
        ratio = (units * a["distance_km"]).sum() / (units * a["straight_km"]).sum()
        assert travel["detour_factor"] == pytest.approx(ratio, abs=1e-6)
    else:
        assert travel["detour_factor"] is None
    assert p.parameters["travel"] == config.travel
    assert p.parameters["radius_min"] == config.radius_min


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(street_instances())
def test_street_plans_match_the_lp_oracle(inst):
    check_against_oracle(*inst)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(street_instances(mode="drive", time_limit=True))
def test_drive_plans_with_time_limits_match_the_lp_oracle(inst):
    check_against_oracle(*inst)


# ---------------------------------------------------------------------------------------
# 2. straight-line plans are unchanged
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def walk_net():
    return read_network(WALK_GPKG, "walk")


@pytest.fixture(scope="module")
def southside_part() -> tuple[pd.DataFrame, pd.DataFrame]:
    needs = pd.read_csv(SOUTHSIDE / "needs.csv", dtype={"neighborhood": str}).iloc[::6]
    partners = pd.read_csv(SOUTHSIDE / "partners.csv")
    return needs.reset_index(drop=True), partners


def test_straight_line_plans_are_unchanged(tmp_path, walk_net, southside_part):
    needs, partners = southside_part
    base = plan(needs, partners)
    straight = plan(needs, partners, config=MatchConfig(travel="straight"), network=None)
    files = files_of(base, tmp_path / "base")
    assert_same_files(files, files_of(straight, tmp_path / "straight"))
    assert len(base.assignments) > 20
    assert list(base.assignment_table.columns) == STRAIGHT_ASSIGNMENT_COLUMNS
    header = files["assignments.csv"].decode().splitlines()[0].split(",")
    assert header == STRAIGHT_ASSIGNMENT_COLUMNS
    summary = json.loads(files["summary.json"])
    assert set(summary["parameters"]) == STRAIGHT_PARAMETERS
    assert "travel" not in summary["metrics"] and "network" not in summary["input_hashes"]
    where = base.assignments["reason"].str.split(";").str[0]
    assert where.str.endswith("km from the cluster centre, within its radius").all()
    assert not base.assignments["reason"].str.contains("by street").any()
    # a partner's radius_min means nothing on straight lines: only the partners hash moves
    timed = plan(needs, partners.assign(radius_min=1.0))
    other = files_of(timed, tmp_path / "timed")
    assert_same_files(
        {k: v for k, v in files.items() if k != "summary.json"},
        {k: v for k, v in other.items() if k != "summary.json"},
    )
    s2 = json.loads(other["summary.json"])
    s2["input_hashes"]["partners"] = summary["input_hashes"]["partners"]
    assert s2 == summary
    # the same inputs on streets do carry the travel columns, parameters and metrics
    street = plan(needs, partners, config=MatchConfig(travel="walk"), network=walk_net)
    assert {"straight_km", "travel_min"} <= set(street.assignment_table.columns)
    assert {"travel", "radius_min", "max_snap_m"} <= set(street.parameters)
    assert "travel" in street.metrics and "network" in street.input_hashes


# ---------------------------------------------------------------------------------------
# 3. the South Side on foot: byte-identical runs, and on Dask
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def southside_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("southside")
    runs = {}
    for name in ("first", "second"):
        result = plan_cli(
            SOUTHSIDE / "needs.csv",
            SOUTHSIDE / "partners.csv",
            base / name,
            base / "models",
            "--travel",
            "walk",
            "--network",
            str(WALK_GPKG),
        )
        assert_clean_exit(result, 0)
        runs[name] = base / name
    return runs


def test_the_southside_walk_plan_is_byte_identical_twice(southside_runs):
    first, second = dir_bytes(southside_runs["first"]), dir_bytes(southside_runs["second"])
    assert {"assignments.csv", "clusters.csv", "summary.json", "plan.geojson"} <= set(first)
    assert_same_files(first, second)
    header = first["assignments.csv"].decode().splitlines()[0].split(",")
    assert header[:7] == [
        "cluster_id",
        "partner_id",
        "units",
        "distance_km",
        "straight_km",
        "travel_min",
        "cost",
    ]
    summary = json.loads(first["summary.json"])
    assert summary["input_hashes"]["network"] == hashlib.sha256(WALK_GPKG.read_bytes()).hexdigest()
    assert summary["parameters"]["travel"] == "walk"
    assert summary["metrics"]["travel"]["mode"] == "walk"
    assert summary["metrics"]["counts"]["assignments"] > 500


def test_a_dask_street_plan_is_byte_identical_to_one_process(tmp_path):
    # partners of small radii: the plan splits into independent regions
    partners = pd.read_csv(SOUTHSIDE / "partners.csv", dtype=str, keep_default_na=False)
    partners = partners[partners["radius_km"].astype(float) <= 2.5]
    (tmp_path / "partners.csv").write_text(csv_text(partners), encoding="utf-8")
    outs = {}
    for name, extra in (("one", []), ("dask", ["--dask", "local:2"])):
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "matcher.cli",
                "plan",
                "--needs",
                str(SOUTHSIDE / "needs.csv"),
                "--partners",
                str(tmp_path / "partners.csv"),
                "--out",
                str(tmp_path / name),
                "--models-dir",
                str(tmp_path / "models"),
                "--travel",
                "walk",
                "--network",
                str(WALK_GPKG),
                "--radius-min",
                "30",
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        outs[name] = (dir_bytes(tmp_path / name), done.stderr)
    regions = re.search(r"(\d+) independent region\(s\)", outs["dask"][1])
    assert regions is not None and int(regions.group(1)) > 1, outs["dask"][1]
    assert_same_files(outs["one"][0], outs["dask"][0])
    assert b"min walking" in outs["one"][0]["assignments.csv"]


# ---------------------------------------------------------------------------------------
# small hand-made networks, in files for the command line
# ---------------------------------------------------------------------------------------

LAT0, LON0 = 41.88, -87.63


def line_street(n: int = 21, step_km: float = 0.1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A two-way street due north from (LAT0, LON0): nodes 500.. every ``step_km``."""
    points = [destination(LAT0, LON0, 0.0, k * step_km) for k in range(n)]
    nodes = pd.DataFrame(
        {"id": [500 + k for k in range(n)], "lat": [p[0] for p in points],
         "lon": [p[1] for p in points]}
    )  # fmt: skip
    edges = pd.DataFrame(
        {
            "u": [500 + k for k in range(n - 1)],
            "v": [501 + k for k in range(n - 1)],
            "length_m": [math.nan] * (n - 1),
            "highway": ["residential"] * (n - 1),
            "oneway": ["no"] * (n - 1),
        }
    )
    return nodes, edges


NODES, EDGES = line_street()
NEEDS_HEADER = "need_id,category,lat,lon,demand,severity\n"
PARTNERS_HEADER = "partner_id,name,kind,lat,lon,categories,capacity,radius_km,radius_min\n"


def node_point(k: int) -> str:
    return f"{float(NODES['lat'][k])!r},{float(NODES['lon'][k])!r}"


@pytest.fixture(scope="module")
def line(tmp_path_factory) -> dict[str, Path]:
    """The line street as a GeoPackage, with one need and one partner on it."""
    base = tmp_path_factory.mktemp("line")
    paths = {
        "network": write_network_gpkg(base / "line.gpkg", NODES, EDGES),
        "needs": base / "needs.csv",
        "partners": base / "partners.csv",
    }
    paths["needs"].write_text(NEEDS_HEADER + f"n1,food_access,{node_point(4)},3,3\n")
    paths["partners"].write_text(
        PARTNERS_HEADER + f"p1,P,organization,{node_point(0)},food_access,10,3,\n"
    )
    return paths


def run_plan(tmp_path: Path, needs: Path, partners: Path, *extra: str):
    return plan_cli(needs, partners, tmp_path / "out", tmp_path / "models", *extra)


def test_the_line_street_plans(tmp_path, line):
    result = run_plan(
        tmp_path, line["needs"], line["partners"], "--travel", "walk", "--network",
        str(line["network"]),
    )  # fmt: skip
    assert_clean_exit(result, 0)
    (row,) = read_csv(tmp_path / "out" / "assignments.csv")
    assert row["partner_id"] == "p1" and float(row["units"]) == 3
    assert float(row["distance_km"]) == pytest.approx(0.4, abs=1e-6)


# ---------------------------------------------------------------------------------------
# 4. command-line errors: exit 2, a precise message, no traceback, nothing written
# ---------------------------------------------------------------------------------------


def _not_gpkg(base: Path) -> Path:
    path = base / "streets.gpkg"
    path.write_text("not a geopackage\n")
    return path


def _txt(base: Path) -> Path:
    path = base / "streets.txt"
    path.write_text("u,v\n1,2\n")
    return path


def _no_layers(base: Path) -> Path:
    path = base / "roads.gpkg"
    gpd.GeoDataFrame(
        {"name": ["a"]}, geometry=gpd.points_from_xy([LON0], [LAT0]), crs="EPSG:4326"
    ).to_file(path, layer="roads", driver="GPKG")
    return path


def _in_pieces(base: Path) -> Path:
    # three separate streets of 3 nodes: the largest strongly connected part holds a
    # third of the nodes, below the half a network needs
    parts = []
    for i, bearing in enumerate((0.0, 120.0, 240.0)):
        pts = [destination(LAT0, LON0, bearing, 1.0 + 0.1 * k) for k in range(3)]
        parts.append(
            pd.DataFrame(
                {
                    "id": [10 * i + k for k in range(3)],
                    "lat": [p[0] for p in pts],
                    "lon": [p[1] for p in pts],
                }
            )  # fmt: skip
        )
    nodes = pd.concat(parts, ignore_index=True)
    edges = pd.DataFrame(
        {"u": [10 * i + k for i in range(3) for k in range(2)],
         "v": [10 * i + k + 1 for i in range(3) for k in range(2)],
         "length_m": math.nan, "highway": "residential", "oneway": "no"}
    )  # fmt: skip
    return write_network_gpkg(base / "pieces.gpkg", nodes, edges)


BAD_NETWORKS = {
    "not-a-geopackage": (_not_gpkg, ["streets.gpkg: is not a readable GeoPackage"]),
    "unknown-format": (
        _txt,
        ["streets.txt, field 'network', value 'streets.txt': is not a street network format"],
    ),
    "no-street-layers": (
        _no_layers,
        ["roads.gpkg, field 'layers', value 'roads'", "layers 'nodes' and 'edges' (its layers"],
    ),
    "missing": (lambda base: base / "nope.gpkg", ["nope.gpkg: file not found"]),
    "in-pieces": (_in_pieces, ["pieces.gpkg: is disconnected", "3 of 9 nodes (33%)"]),
}


@pytest.mark.parametrize("case", sorted(BAD_NETWORKS))
def test_a_bad_network_file_exits_2_naming_it(tmp_path, line, case):
    make, says = BAD_NETWORKS[case]
    path = make(tmp_path)
    result = run_plan(
        tmp_path, line["needs"], line["partners"], "--travel", "walk", "--network", str(path)
    )
    assert_clean_exit(result, 2)
    assert "error: invalid input\n1 problem(s) in the input:" in result.stderr
    for text in says:
        assert text in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


NET = "{network}"
OPTION_ERRORS = {
    "walk-without-network": (
        ["--travel", "walk"],
        "field 'network': travel 'walk' needs a street network file (--network)",
    ),
    "network-without-travel": (
        ["--network", NET],
        "field 'travel', value 'straight': a street network was given: choose travel "
        "'walk' or 'drive'",
    ),
    "radius-min-0": (
        ["--travel", "walk", "--network", NET, "--radius-min", "0"],
        "field 'radius_min', value '0.0': must be a number of minutes > 0 and <= 1440",
    ),
    "radius-min-2000": (
        ["--travel", "walk", "--network", NET, "--radius-min", "2000"],
        "field 'radius_min', value '2000.0': must be a number of minutes > 0 and <= 1440",
    ),
    "radius-min-without-network": (
        ["--radius-min", "10"],
        "field 'radius_min', value '10.0': needs a street network: travel 'walk' or 'drive'",
    ),
    "speed-0": (
        ["--travel", "drive", "--network", NET, "--speed", "residential=0"],
        "field 'speed', value 'residential=0",
    ),
    "speed-without-equals": (
        ["--travel", "drive", "--network", NET, "--speed", "foo"],
        "field '--speed', value 'foo': written CLASS=KMH",
    ),
    "speed-when-walking": (
        ["--travel", "walk", "--network", NET, "--speed", "residential=20"],
        "field '--speed', value 'residential=20': sets driving speeds: add --travel drive",
    ),
    "max-snap-0": (
        ["--travel", "walk", "--network", NET, "--max-snap-m", "0"],
        "field 'max_snap_m', value '0.0': must be a finite number >= 1 and <= 5,000",
    ),
}


@pytest.mark.parametrize("case", sorted(OPTION_ERRORS))
def test_a_bad_street_option_exits_2_with_a_precise_message(tmp_path, line, case):
    args, says = OPTION_ERRORS[case]
    args = [a.replace(NET, str(line["network"])) for a in args]
    result = run_plan(tmp_path, line["needs"], line["partners"], *args)
    assert_clean_exit(result, 2)
    assert "error: invalid input\n1 problem(s) in the input:" in result.stderr
    assert says in result.stderr, result.stderr
    if case.startswith("speed-") and case not in ("speed-when-walking", "speed-without-equals"):
        assert "a speed is a number of km/h >= 1 and <= 200, written CLASS=KMH" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_bad_partner_radius_min_names_its_row_and_field(tmp_path, line):
    partners = tmp_path / "partners.csv"
    partners.write_text(
        PARTNERS_HEADER
        + f"p1,A,organization,{node_point(0)},food_access,10,3,abc\n"  # row 2
        + f"p2,B,organization,{node_point(1)},food_access,10,3,-5\n"  # row 3
        + f"p3,C,organization,{node_point(2)},food_access,10,3,\n"  # row 4: none of its own
        + f"p4,D,organization,{node_point(3)},food_access,10,3,1441\n"  # row 5
        + f"p5,E,organization,{node_point(3)},food_access,10,3,1440\n"  # row 6: the largest
    )
    result = run_plan(
        tmp_path, line["needs"], partners, "--travel", "walk", "--network", str(line["network"])
    )
    assert_clean_exit(result, 2)
    err = result.stderr
    assert "3 problem(s) in the input:" in err
    reason = "must be a number of minutes > 0 and <= 1,440, or empty"
    for row, value in ((2, "abc"), (3, "-5"), (5, "1441")):
        assert f"partners.csv, row {row}, field 'radius_min', value '{value}': {reason}" in err
    assert "row 4" not in err and "row 6" not in err
    assert not (tmp_path / "out").exists()


def off_network_inputs(tmp_path: Path) -> tuple[Path, Path, tuple[float, float], float]:
    """A need and a partner 2 km east of the line street (line 3 of each file)."""
    far = destination(NODES["lat"][5], NODES["lon"][5], 90.0, 2.0)
    metres = 1000 * gc_km(*far, NODES["lat"][5], NODES["lon"][5])
    needs = tmp_path / "needs.csv"
    needs.write_text(
        NEEDS_HEADER
        + f"n1,food_access,{node_point(4)},3,3\n"
        + f"n2,food_access,{far[0]!r},{far[1]!r},2,3\n"
        + f"n3,food_access,{node_point(5)},1,3\n"
    )
    partners = tmp_path / "partners.csv"
    partners.write_text(
        PARTNERS_HEADER
        + f"p1,P,organization,{node_point(0)},food_access,10,3,\n"
        + f"p2,Q,organization,{far[0]!r},{far[1]!r},food_access,10,3,\n"
    )
    return needs, partners, far, metres


def test_rows_off_the_network_are_invalid_and_skippable(tmp_path, line):
    needs, partners, far, metres = off_network_inputs(tmp_path)
    net = ["--travel", "walk", "--network", str(line["network"])]
    result = run_plan(tmp_path, needs, partners, *net)
    assert_clean_exit(result, 2)
    reason = (
        f"is {metres:,.0f} m from the nearest node of the walk network (at most 500 m; the "
        "point is outside the network's area, or raise max_snap_m)"
    )
    point = f"{far[0]:.6f}, {far[1]:.6f}"
    assert "2 problem(s) in the input:" in result.stderr
    assert f"needs.csv, row 3, field 'lat/lon', value '{point}': {reason}" in result.stderr
    assert f"partners.csv, row 3, field 'lat/lon', value '{point}': {reason}" in result.stderr
    assert not (tmp_path / "out").exists()
    # a larger --max-snap-m lets them in
    result = run_plan(tmp_path, needs, partners, *net, "--max-snap-m", "2100", "-q")
    assert_clean_exit(result, 0)
    assert not list((tmp_path / "out").glob("rejects_*"))
    # --skip-invalid plans the rest and reports the two rows
    result = run_plan(tmp_path, needs, partners, *net, "--skip-invalid", "--max-snap-m", "1999")
    assert_clean_exit(result, 0)
    out = tmp_path / "out"
    (need,) = read_csv(out / "rejects_needs.csv")
    (partner,) = read_csv(out / "rejects_partners.csv")
    assert (need["row"], need["need_id"]) == ("3", "n2")
    assert (partner["row"], partner["partner_id"]) == ("3", "p2")
    for r in (need, partner):
        assert "m from the nearest node of the walk network (at most 1,999 m" in r["problems"]
    assert sorted(r["need_id"] for r in read_csv(out / "need_clusters.csv")) == ["n1", "n3"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["rejected_rows"] == {"needs": 1, "partners": 1}
    assert summary["metrics"]["units"] == pytest.approx(
        {"demand": 4.0, "served": 4.0, "unmet": 0.0, "coverage": 1.0}
    )


def test_off_network_rejects_are_the_rows_as_read(tmp_path, line):
    far = destination(NODES["lat"][5], NODES["lon"][5], 90.0, 2.0)
    needs = tmp_path / "needs.csv"
    needs.write_text(
        "need_id,category,lat,lon,demand,severity,note\n"
        + f"n1,food_access,{node_point(4)},3,3,kept\n"
        + f"n2,food_access,{far[0]!r},{far[1]!r},2,3,far away\n"  # row 3: off the network
        + f"n3,food_acess,{node_point(5)},1,3,typo\n"  # row 4: an unknown category
    )
    result = run_plan(
        tmp_path, needs, line["partners"], "--travel", "walk", "--network",
        str(line["network"]), "--skip-invalid",
    )  # fmt: skip
    assert_clean_exit(result, 0)
    rejects = read_csv(tmp_path / "out" / "rejects_needs.csv")
    assert [r["row"] for r in rejects] == ["3", "4"]
    far_row = rejects[0]
    assert far_row["problems"].startswith("lat/lon: ")
    assert (far_row["demand"], far_row["note"]) == ("2", "far away")
    assert list(far_row) == ["row", "need_id", "category", "lat", "lon", "demand", "severity",
                             "note", "problems"]  # fmt: skip


# ---------------------------------------------------------------------------------------
# 5. explanations and travel metrics
# ---------------------------------------------------------------------------------------


def test_street_reasons_minutes_and_detour_factor(southside_runs):
    out = southside_runs["first"]
    rows = read_csv(out / "assignments.csv")
    clusters = {r["cluster_id"]: r for r in read_csv(out / "clusters.csv")}
    partners = {r["partner_id"]: r for r in read_csv(SOUTHSIDE / "partners.csv")}
    assert len(rows) > 500
    units = street = straight = 0.0
    for r in rows:
        km, s_km, minutes = float(r["distance_km"]), float(r["straight_km"]), float(r["travel_min"])
        assert (
            f"is {km:.2f} km by street from the cluster centre ({shown(minutes)} min walking; "
            f"{s_km:.2f} km in a straight line), within its reach; it serves "
        ) in r["reason"], r
        # walking: minutes are street km at 4.8 km/h
        assert minutes == pytest.approx(km / WALK_KMH * 60, abs=2e-5)
        # the straight km is the great circle from the partner to the centroid
        c, p = clusters[r["cluster_id"]], partners[r["partner_id"]]
        gc = gc_km(float(p["lat"]), float(p["lon"]),
                   float(c["centroid_lat"]), float(c["centroid_lon"]))  # fmt: skip
        assert s_km == pytest.approx(gc, abs=2e-4)
        assert km >= s_km - 1e-6
        assert km <= float(p["radius_km"]) + 1e-6
        u = float(r["units"])
        units, street, straight = units + u, street + u * km, straight + u * s_km
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    travel = summary["metrics"]["travel"]
    assert travel["detour_factor"] == pytest.approx(street / straight, abs=2e-6)
    assert travel["detour_factor"] > 1.0
    assert travel["street_km_per_unit"] == pytest.approx(street / units, abs=2e-6)
    assert travel["straight_km_per_unit"] == pytest.approx(straight / units, abs=2e-6)
    assert travel["minutes_per_unit"] == pytest.approx(street / units / WALK_KMH * 60, abs=1e-4)
    assert travel["walk_speed_kmh"] == WALK_KMH and travel["speeds_kmh"] == {}


# ---------------------------------------------------------------------------------------
# 6. a partner's own radius_min beats the run's --radius-min
# ---------------------------------------------------------------------------------------

# three partners at node 0, one per category; the needs at node 12, 1.2 km (15 min on
# foot) up the street. Own limits: 20 min (food), 10 min (youth), none (elderly).
TIMED_PARTNERS = (
    PARTNERS_HEADER
    + f"P20,Twenty,organization,{node_point(0)},food_access,10,5,20\n"
    + f"P10,Ten,organization,{node_point(0)},youth_engagement,10,5,10\n"
    + f"PRUN,Run,organization,{node_point(0)},elderly_support,10,5,\n"
)
TIMED_NEEDS = NEEDS_HEADER + "".join(
    f"{c},{c},{node_point(12)},2,3\n"
    for c in ("food_access", "youth_engagement", "elderly_support")
)


@pytest.mark.parametrize(
    ("run_min", "served"),
    [
        (None, {"P20", "PRUN"}),  # no run-wide limit: only P10's own 10 min excludes it
        ("10", {"P20"}),  # P20's own 20 min wins over the run's stricter 10
        ("20", {"P20", "PRUN"}),  # P10's own 10 min wins over the run's looser 20
    ],
)
def test_a_partners_own_time_limit_beats_the_runs(tmp_path, line, run_min, served):
    (tmp_path / "needs.csv").write_text(TIMED_NEEDS)
    (tmp_path / "partners.csv").write_text(TIMED_PARTNERS)
    extra = ["--radius-min", run_min] if run_min else []
    result = run_plan(
        tmp_path, tmp_path / "needs.csv", tmp_path / "partners.csv", "--travel", "walk",
        "--network", str(line["network"]), *extra,
    )  # fmt: skip
    assert_clean_exit(result, 0)
    out = tmp_path / "out"
    rows = read_csv(out / "assignments.csv")
    assert {r["partner_id"] for r in rows} == served
    for r in rows:
        assert float(r["distance_km"]) == pytest.approx(1.2, abs=1e-6)
        assert float(r["travel_min"]) == pytest.approx(15.0, abs=1e-6)
        name = {"P20": "Twenty", "PRUN": "Run"}[r["partner_id"]]
        assert r["reason"] == (
            f"{name} (organization) offers {r['category']} and is 1.20 km by street from the "
            "cluster centre (15 min walking; 1.20 km in a straight line), within its reach; "
            "it serves 2 units; 2 of its 10 units are used. No other partner in range offers "
            "this category."
        )
    unmet = {r["category"]: r["reason"] for r in read_csv(out / "unmet.csv")}
    by_partner = {"P20": "food_access", "P10": "youth_engagement", "PRUN": "elderly_support"}
    assert unmet == {by_partner[p]: "no_partner_in_range" for p in by_partner.keys() - served}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["parameters"]["radius_min"] == (float(run_min) if run_min else None)


# ---------------------------------------------------------------------------------------
# 7. one-way streets
# ---------------------------------------------------------------------------------------


def rectangle(ab: tuple[str, str, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A block: A, B 300 m north, C 600 m east of B, D 600 m east of A.

    The street A-B is ``ab`` = (u, v, oneway); the others are two-way. Driving from A to
    B when A-B runs only from B to A goes round the block: 1.5 km.
    """
    a = (LAT0, LON0)
    b = destination(*a, 0.0, 0.3)
    c = destination(*b, 90.0, 0.6)
    d = destination(*a, 90.0, 0.6)
    nodes = pd.DataFrame(
        {"id": list("ABCD"), "lat": [p[0] for p in (a, b, c, d)],
         "lon": [p[1] for p in (a, b, c, d)]}
    )  # fmt: skip
    edges = pd.DataFrame(
        {"u": [ab[0], "B", "C", "D"], "v": [ab[1], "C", "D", "A"], "length_m": math.nan,
         "highway": "residential", "oneway": [ab[2], "no", "no", ""]}
    )  # fmt: skip
    return nodes, edges


def block_inputs(nodes: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Partner PA at A (food) and PB at B (elderly); a food need at B, an elderly one at A."""
    at = {k: (la, lo) for k, la, lo in zip(nodes["id"], nodes["lat"], nodes["lon"], strict=True)}
    needs = pd.DataFrame(
        {"need_id": ["food-at-B", "elderly-at-A"], "category": ["food_access", "elderly_support"],
         "lat": [at["B"][0], at["A"][0]], "lon": [at["B"][1], at["A"][1]], "demand": [3, 3]}
    )  # fmt: skip
    partners = pd.DataFrame(
        {"partner_id": ["PA", "PB"], "kind": ["organization"] * 2,
         "lat": [at["A"][0], at["B"][0]], "lon": [at["A"][1], at["B"][1]],
         "categories": ["food_access", "elderly_support"], "capacity": [10, 10],
         "radius_km": [1.0, 1.0]}
    )  # fmt: skip
    return needs, partners


# every spelling of "only from B to A"
B_TO_A = [("B", "A", "yes"), ("B", "A", "True"), ("B", "A", "1"), ("A", "B", "-1"),
          ("A", "B", "reverse")]  # fmt: skip


@pytest.mark.parametrize("ab", B_TO_A, ids=lambda ab: f"{ab[0]}{ab[1]}-{ab[2]}")
def test_a_one_way_street_keeps_a_partner_out_of_reach_by_car_not_on_foot(ab):
    nodes, edges = rectangle(ab)
    needs, partners = block_inputs(nodes)
    served = {}
    for mode in ("walk", "drive"):
        net = build_network(nodes, edges, mode)
        p = plan(needs, partners, config=MatchConfig(travel=mode), network=net)
        served[mode] = dict(
            zip(p.assignments["partner_id"], p.assignments["distance_km"], strict=True)
        )
        # the oracle agrees on the street km of PA to the food cluster
        food = p.clusters[p.clusters["category"] == "food_access"]
        trips = street_trips(street_digraph(nodes, edges, mode), food, partners)
        km = trips[(food["cluster_id"].iloc[0], "PA")][0]
        assert km == pytest.approx(0.3 if mode == "walk" else 1.5, abs=1e-6)
        if mode == "drive":
            assert food["unmet_reason"].tolist() == ["no_partner_in_range"]
    assert served["walk"] == pytest.approx({"PA": 0.3, "PB": 0.3}, abs=1e-6)
    # by car PB drives down the one-way street; PA would have to go round the block
    assert served["drive"] == pytest.approx({"PB": 0.3}, abs=1e-6)


@pytest.mark.parametrize("mode", ["walk", "drive"])
def test_a_one_way_street_in_a_geopackage_on_the_command_line(tmp_path, mode):
    nodes, edges = rectangle(("B", "A", "yes"))
    needs, partners = block_inputs(nodes)
    nodes = nodes.assign(id=[11, 12, 13, 14])  # OpenStreetMap-like integer ids
    edges = edges.assign(
        u=edges["u"].map({"A": 11, "B": 12, "C": 13, "D": 14}),
        v=edges["v"].map({"A": 11, "B": 12, "C": 13, "D": 14}),
    )
    network = write_network_gpkg(tmp_path / "block.gpkg", nodes, edges)
    (tmp_path / "needs.csv").write_text(csv_text(needs))
    (tmp_path / "partners.csv").write_text(csv_text(partners))
    speed = ["--speed", "residential=24"] if mode == "drive" else []
    result = run_plan(
        tmp_path, tmp_path / "needs.csv", tmp_path / "partners.csv", "--travel", mode,
        "--network", str(network), *speed,
    )  # fmt: skip
    assert_clean_exit(result, 0)
    rows = {r["partner_id"]: r for r in read_csv(tmp_path / "out" / "assignments.csv")}
    assert set(rows) == ({"PA", "PB"} if mode == "walk" else {"PB"})
    pb = rows["PB"]
    # PB's 300 m: on foot at 4.8 km/h; by car at residential=24 km/h (legs of 0 m)
    minutes = 0.3 / (WALK_KMH if mode == "walk" else 24.0) * 60
    assert float(pb["travel_min"]) == pytest.approx(minutes, abs=1e-5)
    word = "walking" if mode == "walk" else "driving"
    took = re.search(r"0\.30 km by street from the cluster centre \(([0-9.]+) min (\w+);",
                     pb["reason"])  # fmt: skip
    assert took is not None and took.group(2) == word, pb["reason"]
    assert float(took.group(1)) == pytest.approx(minutes, abs=0.05 + 1e-9)  # tenths shown
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    travel = summary["metrics"]["travel"]
    assert travel["mode"] == mode and travel["nodes"] == 4
    assert travel["edges"] == (8 if mode == "walk" else 7)  # A-B one way by car
    assert summary["input_hashes"]["network"] == hashlib.sha256(network.read_bytes()).hexdigest()
    if mode == "drive":
        assert travel["speeds_kmh"] == {"residential": 24.0}


# ---------------------------------------------------------------------------------------
# at the limit: a trip exactly at its radius or time limit is within it
# ---------------------------------------------------------------------------------------


def _exact_street() -> tuple[pd.DataFrame, pd.DataFrame]:
    # four nodes 30 m apart due north; the edges' given lengths 106.4 + 149.8 + 43.8 m
    # make exactly 300 m, which doubles add up to 300.00000000000006
    pts = [destination(LAT0, LON0, 0.0, 0.03 * k) for k in range(4)]
    nodes = pd.DataFrame({"id": list("ABCD"), "lat": [p[0] for p in pts],
                          "lon": [p[1] for p in pts]})  # fmt: skip
    edges = pd.DataFrame({"u": list("ABC"), "v": list("BCD"), "length_m": [106.4, 149.8, 43.8],
                          "highway": "residential", "oneway": "no"})  # fmt: skip
    return nodes, edges


def _at_the_limit(mode: str, radius_km: float, radius_min: float | None):
    nodes, edges = _exact_street()
    needs = pd.DataFrame({"need_id": ["n"], "category": ["food_access"], "lat": [nodes["lat"][3]],
                          "lon": [nodes["lon"][3]], "demand": [1]})  # fmt: skip
    partners = pd.DataFrame({"partner_id": ["p"], "kind": ["organization"],
                             "lat": [nodes["lat"][0]], "lon": [nodes["lon"][0]],
                             "categories": ["food_access"], "capacity": [5],
                             "radius_km": [radius_km]})  # fmt: skip
    config = MatchConfig(travel=mode, objective="distance", radius_min=radius_min)
    return plan(needs, partners, config=config, network=build_network(nodes, edges, mode))


@pytest.mark.parametrize(
    ("mode", "radius_km", "radius_min", "minutes"),
    [
        ("walk", 0.3, None, 3.75),  # 300 m: the radius
        ("drive", 0.3, None, 0.6),
        ("walk", 5.0, 3.75, 3.75),  # 300 m at 4.8 km/h: 3.75 min, the limit
        ("drive", 5.0, 0.6, 0.6),  # 300 m at 30 km/h (residential): 36 s, the limit
        ("drive", 0.3, 0.6, 0.6),  # both at once
    ],
)
def test_a_trip_exactly_at_its_radius_or_time_limit_is_within_it(
    mode, radius_km, radius_min, minutes
):
    # regression: the bounded searches once stopped exactly at the radius, so a path
    # summing a few ulps past it (300.00000000000006 m here) was out of reach
    p = _at_the_limit(mode, radius_km, radius_min)
    assert p.assignments["partner_id"].tolist() == ["p"]
    assert p.assignments["distance_km"].iloc[0] == pytest.approx(0.3, rel=1e-12)
    assert p.assignments["travel_min"].iloc[0] == pytest.approx(minutes, rel=1e-12)
    # and a metre less of radius, or a second less of time, is out of reach
    tighter = _at_the_limit(
        mode, radius_km - 0.001 if radius_min is None else radius_km,
        None if radius_min is None else radius_min - 1 / 60,
    )  # fmt: skip
    assert tighter.assignments.empty
    assert tighter.clusters["unmet_reason"].tolist() == ["no_partner_in_range"]


# ---------------------------------------------------------------------------------------
# 8. found in review: scenarios, tables read already, straight plans with radius_min
# ---------------------------------------------------------------------------------------


def test_a_scenario_replans_a_drive_plan_on_its_network_with_the_speeds_given(tmp_path):
    """`matcher scenario` reproduces a drive plan whose network has no road classes.

    The plan met only edges without ``highway`` (the default speed), and was given
    ``--speed residential=24`` and a time limit: the scenario reads the network again with
    the speeds given (not the classes met), reproduces the base plan's optimum, and finds
    the network where ``--network`` says when it moved.
    """
    from .conftest import invoke

    edges = EDGES.drop(columns="highway")
    network = write_network_gpkg(tmp_path / "line.gpkg", NODES, edges)
    needs = tmp_path / "needs.csv"
    needs.write_text(NEEDS_HEADER + f"n1,food_access,{node_point(4)},3,3\n")
    partners = tmp_path / "partners.csv"
    partners.write_text(
        PARTNERS_HEADER
        + f"p1,P,organization,{node_point(0)},food_access,10,3,\n"
        + f"p2,Q,organization,{node_point(8)},food_access,10,3,\n"
    )
    base = tmp_path / "base"
    result = plan_cli(needs, partners, base, tmp_path / "models", "--travel", "drive",
                      "--network", str(network), "--speed", "residential=24",
                      "--radius-min", "5")  # fmt: skip
    assert_clean_exit(result, 0)
    summary = json.loads((base / "summary.json").read_text())
    assert summary["metrics"]["travel"]["speeds_kmh"] == {"": 30.0}
    assert summary["metrics"]["travel"]["speed_overrides_kmh"] == {"residential": 24.0}
    result = invoke("scenario", "--base", str(base), "--out", str(tmp_path / "s1"),
                    "--remove-partners", "p1")  # fmt: skip
    assert_clean_exit(result, 0)
    facts = json.loads((tmp_path / "s1" / "scenario.json").read_text())
    assert facts["facts"]["base_reproduced"] is True
    moved = network.rename(tmp_path / "moved.gpkg")
    result = invoke("scenario", "--base", str(base), "--out", str(tmp_path / "s2"),
                    "--remove-partners", "p1")  # fmt: skip
    assert_clean_exit(result, 2)
    assert "line.gpkg" in result.stderr and "file not found" in result.stderr
    result = invoke("scenario", "--base", str(base), "--out", str(tmp_path / "s3"),
                    "--remove-partners", "p1", "--network", str(moved))  # fmt: skip
    assert_clean_exit(result, 0)
    again = json.loads((tmp_path / "s3" / "scenario.json").read_text())
    assert again["facts"]["base_reproduced"] is True
    assert again["metrics"] == facts["metrics"]


def test_tables_read_already_skip_their_rows_off_the_network(tmp_path, line):
    """A needs table read by the caller is checked against the network as a file is."""
    from matcher import read_needs

    needs, partners, far, _ = off_network_inputs(tmp_path)
    table = read_needs(needs, on_invalid="skip")
    config = MatchConfig(travel="walk", on_invalid="skip")
    got = plan(table, partners, config=config, network=line["network"])
    assert sorted(got.need_table["need_id"]) == ["n1", "n3"]
    rejects = got.rejects["needs"]
    assert rejects["row"].tolist() == [3]
    assert rejects["problems"].iloc[0].startswith("lat/lon: is ")
    with pytest.raises(Exception) as err:
        plan(table, partners, config=MatchConfig(travel="walk"), network=line["network"])
    assert "from the nearest node of the walk network" in str(err.value)


def test_a_straight_plan_warns_that_radius_min_does_not_apply(tmp_path, line, caplog):
    """A partners file with travel time limits, planned on straight lines, says so."""
    partners = tmp_path / "partners.csv"
    partners.write_text(
        PARTNERS_HEADER + f"p1,P,organization,{node_point(0)},food_access,10,3,1\n"
    )
    with caplog.at_level("WARNING", logger="matcher"):
        got = plan(line["needs"], partners)
    assert got.metrics["units"]["served"] == 3.0  # the 1-minute limit does not apply
    assert any("have a radius_min" in r.getMessage() for r in caplog.records)
