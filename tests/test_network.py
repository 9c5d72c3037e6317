"""Street networks (:mod:`matcher.network`) against an independent oracle.

Every network distance, travel time, snap and eligible pair that matcher computes is
recomputed here without matcher: a :class:`networkx.DiGraph` is built from the same raw
edge table by the documented rules (directions from ``oneway``, lengths raised to the
great circle, speeds from ``maxspeed`` or the road class, parallel edges merged to the
shortest and to the fastest, the largest strongly connected part kept), and searched
with networkx's own Dijkstra; great-circle lengths come from the haversine of
:mod:`tests.oracle`. Random networks are drawn with hypothesis (derandomized).

The readers are checked on files written here: GeoPackages (geopandas), an OSM XML file
loaded by OSMnx and saved as GraphML (plain and projected), and OSM PBF files written with
pyosmium (read by pyrosm); and, when present, on the shipped South Side networks.

Notes
-----
Nothing touches the network: OSMnx only reads a local XML file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import geopandas as gpd
import networkx as nx
import numpy as np
import pandas as pd
import pyogrio
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from shapely.geometry import LineString, Point

from matcher._errors import InputValidationError
from matcher.network import (
    DEFAULT_DRIVE_KMH,
    DRIVE_SPEEDS_KMH,
    WALK_SPEED_KMH,
    StreetNetwork,
    build_network,
    read_network,
    shortest,
    trip_minutes,
)
from matcher.network import street_pairs as eligible_pairs

from .oracle import destination, gc_km

SOUTHSIDE = Path(__file__).resolve().parents[1] / "data" / "southside"


def street_pairs(clusters, partners, net, radius_min, **kwargs) -> pd.DataFrame:
    """:func:`matcher.network.street_pairs` with every pair's minutes.

    Without a time limit a driving pair gets its minutes only from
    :func:`matcher.network.trip_minutes` (a plan asks for those of its assignments).
    """
    got = eligible_pairs(clusters, partners, net, radius_min, **kwargs)
    if net.mode == "drive" and radius_min is None and "radius_min" not in partners:
        assert got["travel_min"].isna().all()
    return got.assign(travel_min=trip_minutes(net, clusters, partners, got))

#: Derandomized property tests: the same examples on every run, no example database.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

#: Two values are the same when within this relative tolerance (sums in another order).
RTOL = 1e-9

# --------------------------------------------------------------------------------------
# The oracle: the documented rules, written out again; nothing from matcher.
# --------------------------------------------------------------------------------------

#: Walking speed, km/h (documented: 4.8 everywhere).
ORACLE_WALK_KMH = 4.8
#: The documented driving speed of each road class, km/h, and of any other class.
ORACLE_CLASS_KMH: dict[str, float] = {
    "motorway": 90.0,
    "motorway_link": 50.0,
    "trunk": 70.0,
    "trunk_link": 40.0,
    "primary": 50.0,
    "primary_link": 40.0,
    "secondary": 45.0,
    "secondary_link": 35.0,
    "tertiary": 40.0,
    "tertiary_link": 30.0,
    "unclassified": 30.0,
    "residential": 30.0,
    "living_street": 10.0,
    "service": 15.0,
    "road": 30.0,
}
ORACLE_OTHER_KMH = 30.0
ORACLE_FORWARD = {"yes", "true", "1"}
ORACLE_BACKWARD = {"-1", "reverse"}


def oracle_maxspeed_kmh(value: Any) -> float | None:
    """km/h of a ``maxspeed`` in a documented form (``50``, ``30 mph``, ``50 km/h``).

    None when unreadable (``none``, a list) or outside 1..200 km/h: the class decides.
    """
    if _blank(value):
        return None
    text, factor = str(value), 1.0
    for unit, per in ((" mph", 1.609344), (" km/h", 1.0)):
        if text.endswith(unit):
            text, factor = text[: -len(unit)], per
    if not text.replace(".", "", 1).isdigit():
        return None
    kmh = float(text) * factor
    return kmh if 1.0 <= kmh <= 200.0 else None


def wrap_lon(lon: float) -> float:
    """Longitude in [-180, 180)."""
    return (lon + 180.0) % 360.0 - 180.0


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle metres between two (lat, lon) points."""
    return 1000.0 * gc_km(a[0], a[1], b[0], b[1])


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def oracle_graph(
    points: Mapping[str, tuple[float, float]],
    edges: list[dict[str, Any]],
    mode: str,
    *,
    directed: bool = False,
    speeds: Mapping[str, float] | None = None,
) -> nx.DiGraph:
    """The directed graph of the documented rules: ``length`` (m) and ``time`` (s) per edge.

    Only nodes with an edge between two distinct nodes are in it.
    """
    table = {**ORACLE_CLASS_KMH, **(speeds or {})}
    g = nx.DiGraph()
    for e in edges:
        u, v = str(e["u"]), str(e["v"])
        if u == v:
            continue
        straight = metres(points[u], points[v])
        given: Any = e.get("length_m")
        length = straight if _blank(given) else max(float(given), straight)
        if mode == "walk":
            kmh = ORACLE_WALK_KMH
        else:
            limit = oracle_maxspeed_kmh(e.get("maxspeed"))
            road = e.get("highway")
            kmh = limit if limit is not None else table.get(road or "", ORACLE_OTHER_KMH)
        seconds = length / (kmh / 3.6)
        if directed:
            arcs = [(u, v), (v, u)] if mode == "walk" else [(u, v)]
        elif mode == "walk":
            arcs = [(u, v), (v, u)]
        else:
            tag = "" if _blank(e.get("oneway")) else str(e["oneway"])
            if tag in ORACLE_FORWARD:
                arcs = [(u, v)]
            elif tag in ORACLE_BACKWARD:
                arcs = [(v, u)]
            else:
                arcs = [(u, v), (v, u)]
        for a, b in arcs:
            if g.has_edge(a, b):
                g[a][b]["length"] = min(g[a][b]["length"], length)
                g[a][b]["time"] = min(g[a][b]["time"], seconds)
            else:
                g.add_edge(a, b, length=length, time=seconds)
    return g


def oracle_largest(g: nx.DiGraph) -> tuple[bool, list[set[str]]]:
    """Whether the network is refused, and the largest strongly connected parts (ties)."""
    parts = [set(c) for c in nx.strongly_connected_components(g)]
    if not parts:
        return True, []
    best = max(len(c) for c in parts)
    refused = best < 2 or best / g.number_of_nodes() < 0.5
    return refused, [c for c in parts if len(c) == best]


def oracle_snap(
    points: Mapping[str, tuple[float, float]], kept: set[str], lat: float, lon: float
) -> tuple[str, float]:
    """The nearest kept node of a point by brute force, and its metres."""
    best = min(kept, key=lambda k: metres((lat, lon), points[k]))
    return best, metres((lat, lon), points[best])


# --------------------------------------------------------------------------------------
# Helpers on the matcher side
# --------------------------------------------------------------------------------------


def tables(
    points: Mapping[str, tuple[float, float]], edges: list[dict[str, Any]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The node and edge tables of :func:`build_network`."""
    nodes = pd.DataFrame(
        {
            "id": list(points),
            "lat": [p[0] for p in points.values()],
            "lon": [p[1] for p in points.values()],
        }
    )
    cols = ["u", "v", "length_m", "highway", "oneway", "maxspeed"]
    frame = pd.DataFrame([{c: e.get(c) for c in cols} for e in edges], columns=cols)
    frame["length_m"] = pd.to_numeric(frame["length_m"], errors="coerce")
    return nodes, frame


def positions(net: StreetNetwork) -> dict[str, int]:
    """Node id -> position in the network."""
    return {str(k): i for i, k in enumerate(net.node_id)}


def all_shortest(net: StreetNetwork, weight: str, limit: float = math.inf) -> np.ndarray:
    """matcher's shortest value of every ordered pair of nodes, as a matrix."""
    n = net.n_nodes
    src, dst = np.divmod(np.arange(n * n, dtype=np.int64), n)
    return shortest(net, weight, src, dst, np.full(n * n, limit)).reshape(n, n)


def close(a: float, b: float, rtol: float = RTOL, atol: float = 1e-9) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def refused(call: Callable[[], Any], *words: str) -> InputValidationError:
    """Assert ``call`` raises a clean InputValidationError whose report holds ``words``."""
    with pytest.raises(InputValidationError) as info:
        call()
    err = info.value
    text = err.report()
    assert err.problems, text
    assert "Traceback" not in text and 'File "' not in text, text
    # no chained exception travels with it (raised outside an except, or "from None")
    assert err.__cause__ is None, text
    assert err.__context__ is None or err.__suppress_context__, text
    for word in words:
        assert word in text, (word, text)
    return err


def check_against_oracle(
    net: StreetNetwork, g: nx.DiGraph, kept: set[str], limit: float = math.inf
) -> None:
    """Every pair's shortest metres and seconds equal networkx Dijkstra on ``g``."""
    pos = positions(net)
    assert set(pos) == kept
    sub = g.subgraph(kept)
    for weight in ("length", "time"):
        got = all_shortest(net, weight, limit)
        for s in kept:
            want = nx.single_source_dijkstra_path_length(sub, s, weight=weight)
            for t in kept:
                value = got[pos[s], pos[t]]
                if want[t] <= limit * (1 - RTOL):
                    assert close(value, want[t]), (weight, s, t, value, want[t])
                elif want[t] > limit * (1 + RTOL):
                    # beyond the limit the answer may be inf, else it is still exact
                    assert value == math.inf or close(value, want[t]), (weight, s, t, value)


# --------------------------------------------------------------------------------------
# Random networks
# --------------------------------------------------------------------------------------

ONEWAY = [None, "", "no", "yes", "true", "1", "-1", "reverse", "alternating"]
HIGHWAY = [None, "residential", "primary", "tertiary", "service", "motorway", "footway"]
MAXSPEED = [None, None, None, "50", "15", "25 mph", "40 km/h", "none", "300"]


@st.composite
def raw_networks(draw: st.DrawFn, oneway: list[Any] | None = None) -> dict[str, Any]:
    """A grid-ish network: jittered points, most grid streets, a few extra (parallel) ones."""
    rows, cols = draw(st.integers(2, 4)), draw(st.integers(2, 5))
    lat0 = draw(st.floats(-80.0, 80.0))
    lon0 = draw(st.floats(-180.0, 180.0))
    step = draw(st.floats(0.0005, 0.004))
    n = rows * cols
    shift = st.floats(-0.3, 0.3)
    jitter = draw(st.lists(st.tuples(shift, shift), min_size=n, max_size=n))
    points: dict[str, tuple[float, float]] = {}
    for k, (a, b) in enumerate(jitter):
        r, c = divmod(k, cols)
        lat = lat0 + (r + a) * step
        points[f"n{k}"] = (lat, wrap_lon(lon0 + (c + b) * step / math.cos(math.radians(lat0))))
    pairs = [(k, k + 1) for k in range(n) if (k + 1) % cols]
    pairs += [(k, k + cols) for k in range(n - cols)]
    pairs += draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4))
    present = draw(
        st.lists(st.sampled_from([True, True, True, False]), min_size=len(pairs),
                 max_size=len(pairs))
    )  # fmt: skip
    edge = st.fixed_dictionaries(
        {
            "factor": st.one_of(st.just(math.nan), st.floats(0.0, 3.0)),
            "oneway": st.sampled_from(oneway or ONEWAY),
            "highway": st.sampled_from(HIGHWAY),
            "maxspeed": st.sampled_from(MAXSPEED),
        }
    )
    attrs = draw(st.lists(edge, min_size=len(pairs), max_size=len(pairs)))
    edges = []
    for (i, j), keep, at in zip(pairs, present, attrs, strict=True):
        if not keep:
            continue
        u, v = f"n{i}", f"n{j}"
        swap = draw(st.booleans())
        if swap:
            u, v = v, u
        edges.append(
            {
                "u": u,
                "v": v,
                "length_m": at["factor"] * metres(points[u], points[v]),
                "highway": at["highway"],
                "oneway": at["oneway"],
                "maxspeed": at["maxspeed"],
            }
        )
    speeds = draw(st.one_of(st.none(), st.fixed_dictionaries({"residential": st.floats(5, 120)})))
    return {
        "points": points,
        "edges": edges,
        "directed": draw(st.booleans()),
        "speeds": speeds,
        "origin": (lat0, lon0, step, rows, cols),
    }


@PROPERTY
@given(raw=raw_networks(), mode=st.sampled_from(["walk", "drive"]))
def test_shortest_equals_networkx_dijkstra(raw: dict[str, Any], mode: str) -> None:
    """Network metres and seconds of every pair equal networkx's Dijkstra (or it's refused)."""
    g = oracle_graph(
        raw["points"], raw["edges"], mode, directed=raw["directed"], speeds=raw["speeds"]
    )
    is_refused, largest = oracle_largest(g)
    nodes, edges = tables(raw["points"], raw["edges"])

    def build() -> StreetNetwork:
        return build_network(
            nodes, edges, mode, directed=raw["directed"], speeds=raw["speeds"], source="net"
        )

    event("refused" if is_refused else "built")
    if not edges.empty and is_refused:
        word = "disconnected" if g.number_of_edges() else "no street"
        refused(build, word)
        return
    if edges.empty:
        refused(build, "no street")
        return
    net = build()
    kept = set(positions(net))
    assert kept in largest, (kept, largest)
    assert net.mode == mode
    check_against_oracle(net, g, kept)
    # with a limit: within it exact, beyond it inf (or exact)
    diameter = max(
        max(nx.single_source_dijkstra_path_length(g.subgraph(kept), s, weight="length").values())
        for s in kept
    )
    check_against_oracle(net, g, kept, limit=diameter / 2)


def street_oracle(
    raw: dict[str, Any],
    mode: str,
    kept: set[str],
    clusters: pd.DataFrame,
    partners: pd.DataFrame,
) -> dict[tuple[int, int], tuple[float, float, float]]:
    """(cluster, partner) -> (street km, straight km, minutes) for every category match."""
    g = oracle_graph(
        raw["points"], raw["edges"], mode, directed=raw["directed"], speeds=raw["speeds"]
    )
    sub = g.subgraph(kept)
    walk_mps = ORACLE_WALK_KMH / 3.6
    out = {}
    for p, prow in enumerate(partners.itertuples(index=False)):
        pn, ps = oracle_snap(raw["points"], kept, prow.lat, prow.lon)
        length = nx.single_source_dijkstra_path_length(sub, pn, weight="length")
        time = nx.single_source_dijkstra_path_length(sub, pn, weight="time")
        cats = str(prow.categories).split(";")
        for c, crow in enumerate(clusters.itertuples(index=False)):
            if crow.category not in cats:
                continue
            cn, cs = oracle_snap(raw["points"], kept, crow.centroid_lat, crow.centroid_lon)
            street_m = ps + length[cn] + cs
            if mode == "walk":
                seconds = street_m / walk_mps
            else:
                seconds = (ps + cs) / walk_mps + time[cn]
            straight = gc_km(prow.lat, prow.lon, crow.centroid_lat, crow.centroid_lon)
            out[(c, p)] = (street_m / 1000.0, straight, seconds / 60.0)
    return out


@st.composite
def street_cases(draw: st.DrawFn) -> dict[str, Any]:
    """A random network (mostly two-way) with clusters and partners around it."""
    raw = draw(raw_networks(oneway=[None, "", "no", "no", "yes", "-1"]))
    lat0, lon0, step, rows, cols = raw["origin"]
    lat_at = st.floats(lat0 - step, lat0 + rows * step)
    lon_at = st.floats(-1.0, cols).map(
        lambda c: wrap_lon(lon0 + c * step / math.cos(math.radians(lat0)))
    )
    clusters = draw(
        st.lists(st.tuples(st.sampled_from(["a", "b"]), lat_at, lon_at), min_size=2, max_size=6)
    )
    frac = st.one_of(st.floats(0.02, 1.2), st.floats(0.5, 1.1))
    partners = draw(
        st.lists(
            st.tuples(
                st.sampled_from(["a", "b", "a;b"]),
                lat_at,
                lon_at,
                frac,
                st.one_of(st.none(), frac),
            ),
            min_size=2,
            max_size=5,
        )
    )
    return {
        "raw": raw,
        "clusters": clusters,
        "partners": partners,
        "own_minutes": draw(st.booleans()),
        "run_minutes": draw(st.one_of(st.none(), frac)),
    }


@PROPERTY
@given(case=street_cases(), mode=st.sampled_from(["walk", "drive"]))
def test_street_pairs_equal_brute_force(case: dict[str, Any], mode: str) -> None:
    """street_pairs keeps exactly the oracle's eligible pairs, with its km and minutes.

    The oracle snaps by brute force, runs networkx Dijkstra from every partner (metres
    and, separately, seconds) and decides every (cluster, partner) pair; radii and time
    limits are drawn as fractions of the largest street distance and time, so some pairs
    are in and some out. Pairs within 1e-9 of a limit may go either way.
    """
    raw = case["raw"]
    g = oracle_graph(
        raw["points"], raw["edges"], mode, directed=raw["directed"], speeds=raw["speeds"]
    )
    is_refused, _ = oracle_largest(g)
    event("refused" if is_refused or not raw["edges"] else "built")
    if is_refused or not raw["edges"]:
        return  # refusals are the business of test_shortest_equals_networkx_dijkstra
    nodes, edges = tables(raw["points"], raw["edges"])
    net = build_network(nodes, edges, mode, directed=raw["directed"], speeds=raw["speeds"])
    kept = set(positions(net))
    clusters = pd.DataFrame(case["clusters"], columns=["category", "centroid_lat", "centroid_lon"])
    partners = pd.DataFrame(
        [(cat, lat, lon) for cat, lat, lon, _, _ in case["partners"]],
        columns=["categories", "lat", "lon"],
    )
    truth = street_oracle(raw, mode, kept, clusters, partners)
    top_km = max((v[0] for v in truth.values()), default=1.0)
    top_min = max((v[2] for v in truth.values()), default=1.0)
    partners["radius_km"] = [f * top_km for *_, f, _ in case["partners"]]
    if case["own_minutes"]:
        partners["radius_min"] = [
            np.nan if m is None else m * top_min for *_, m in case["partners"]
        ]
    run_min = None if case["run_minutes"] is None else case["run_minutes"] * top_min

    got = street_pairs(clusters, partners, net, run_min)

    assert list(got.columns) == ["cluster", "partner", "distance_km", "straight_km", "travel_min"]
    assert got.equals(got.sort_values(["cluster", "partner"]))
    found = {
        (int(c), int(p)): i for i, (c, p) in enumerate(zip(got.cluster, got.partner, strict=True))
    }
    for (c, p), (km, straight, minutes) in truth.items():
        radius = partners["radius_km"].iloc[p]
        limit = run_min if run_min is not None else math.inf
        if "radius_min" in partners and not math.isnan(partners["radius_min"].iloc[p]):
            limit = partners["radius_min"].iloc[p]
        surely_in = km <= radius * (1 - RTOL) and minutes <= limit * (1 - RTOL)
        surely_out = km > radius * (1 + RTOL) or minutes > limit * (1 + RTOL)
        if surely_in:
            assert (c, p) in found, ("missed", c, p, km, radius, minutes, limit)
        if surely_out:
            assert (c, p) not in found, ("wrongly kept", c, p, km, radius, minutes, limit)
        if (c, p) in found:
            row = got.iloc[found[(c, p)]]
            assert close(row.distance_km, km), (c, p, row.distance_km, km)
            assert close(row.straight_km, straight), (c, p, row.straight_km, straight)
            assert close(row.travel_min, minutes), (c, p, row.travel_min, minutes)
            assert row.distance_km >= row.straight_km * (1 - RTOL)
    # nothing outside the category matches
    assert set(found) <= set(truth)
    event(f"pairs kept: {'none' if not found else 'all' if len(found) == len(truth) else 'some'}")


# --------------------------------------------------------------------------------------
# Hand-made networks
# --------------------------------------------------------------------------------------

#: A square near Chicago: a (SW), b (SE), c (NE), d (NW), sides ~111 m (N-S) and ~83 m (E-W).
SQUARE = {
    "a": (41.8000, -87.6000),
    "b": (41.8000, -87.5990),
    "c": (41.8010, -87.5990),
    "d": (41.8010, -87.6000),
}


def loop_edges(tag: str) -> list[dict[str, Any]]:
    """One-way loop a -> b -> c -> d -> a (200, 300, 400 and 500 m), tagged ``tag``."""
    forward = [("a", "b", 200.0), ("b", "c", 300.0), ("c", "d", 400.0), ("d", "a", 500.0)]
    rows = forward if tag != "-1" else [(v, u, m) for u, v, m in forward]
    return [
        {"u": u, "v": v, "length_m": m, "highway": "residential", "oneway": tag, "maxspeed": None}
        for u, v, m in rows
    ]


@pytest.mark.parametrize("tag", ["yes", "-1"])
def test_one_way_loop_is_driven_one_way_and_walked_both_ways(tag: str) -> None:
    nodes, edges = tables(SQUARE, loop_edges(tag))
    drive = build_network(nodes, edges, "drive")
    walk = build_network(nodes, edges, "walk")
    for net in (drive, walk):
        assert sorted(net.node_id) == ["a", "b", "c", "d"]
    pd_, pw = positions(drive), positions(walk)
    # a -> d: driving goes round the loop (200 + 300 + 400 m); walking takes d-a (500 m)
    assert shortest(drive, "length", np.array([pd_["a"]]), np.array([pd_["d"]]),
                    np.array([np.inf]))[0] == pytest.approx(900.0, rel=1e-12)  # fmt: skip
    assert shortest(walk, "length", np.array([pw["a"]]), np.array([pw["d"]]),
                    np.array([np.inf]))[0] == pytest.approx(500.0, rel=1e-12)  # fmt: skip
    # d -> a is the one-way street itself in both modes
    assert all_shortest(drive, "length")[pd_["d"], pd_["a"]] == pytest.approx(500.0)
    # residential: 30 km/h; walking 4.8 km/h
    assert all_shortest(drive, "time")[pd_["a"], pd_["d"]] == pytest.approx(900 / (30 / 3.6))
    assert all_shortest(walk, "time")[pw["a"], pw["d"]] == pytest.approx(500 / (4.8 / 3.6))
    # and street_pairs: a partner on a, a cluster on d
    clusters = pd.DataFrame({"category": ["f"], "centroid_lat": [41.8010], "centroid_lon": [-87.6]})
    partners = pd.DataFrame(
        {"categories": ["f"], "lat": [41.8], "lon": [-87.6], "radius_km": [0.95]}
    )
    got_drive = street_pairs(clusters, partners, drive, None)
    got_walk = street_pairs(clusters, partners, walk, None)
    assert got_drive.distance_km.tolist() == pytest.approx([0.9])
    assert got_drive.travel_min.tolist() == pytest.approx([900 / (30 / 3.6) / 60])
    assert got_walk.distance_km.tolist() == pytest.approx([0.5])
    assert got_walk.travel_min.tolist() == pytest.approx([500 / (4.8 / 3.6) / 60])
    # a radius between the two: the walk keeps the pair, the drive does not
    partners["radius_km"] = 0.7
    assert len(street_pairs(clusters, partners, walk, None)) == 1
    assert len(street_pairs(clusters, partners, drive, None)) == 0


@pytest.mark.parametrize("tag", ["true", "1", "reverse", "no", "", None, "alternating"])
def test_oneway_tag_values(tag: str | None) -> None:
    """yes/true/1 forward, -1/reverse backward, anything else both ways (driving)."""
    edges = [{"u": "a", "v": "b", "length_m": 300.0, "oneway": tag}] + [
        {"u": "b", "v": "c", "length_m": 300.0},
        {"u": "c", "v": "a", "length_m": 300.0},
    ]
    nodes, frame = tables(SQUARE, edges)
    net = build_network(nodes, frame, "drive")
    pos = positions(net)
    d = all_shortest(net, "length")
    ab, ba = d[pos["a"], pos["b"]], d[pos["b"], pos["a"]]
    if tag in ("true", "1"):
        assert (ab, ba) == pytest.approx((300.0, 600.0))
    elif tag == "reverse":
        assert (ab, ba) == pytest.approx((600.0, 300.0))
    else:
        assert (ab, ba) == pytest.approx((300.0, 300.0))


def test_speeds_maxspeed_then_class_then_default() -> None:
    """Driving time: a readable maxspeed, else the class (overridable), else 30 km/h."""
    assert DEFAULT_DRIVE_KMH == ORACLE_OTHER_KMH and WALK_SPEED_KMH == ORACLE_WALK_KMH
    assert dict(DRIVE_SPEEDS_KMH) == ORACLE_CLASS_KMH
    cases = [
        ("residential", "25 mph", 25 * 1.609344),
        ("residential", "50 km/h", 50.0),
        ("residential", "none", 30.0),
        ("residential", "250", 30.0),
        ("primary", None, 50.0),
        ("motorway", None, 90.0),
        ("footway", None, 30.0),
        (None, None, 30.0),
        ("tertiary", None, 55.0),  # overridden below
    ]
    for highway, maxspeed, kmh in cases:
        edges = [{"u": "a", "v": "b", "length_m": 1000.0, "highway": highway, "maxspeed": maxspeed}]
        nodes, frame = tables(SQUARE, edges)
        net = build_network(nodes, frame, "drive", speeds={"tertiary": 55})
        pos = positions(net)
        t = all_shortest(net, "time")[pos["a"], pos["b"]]
        assert t == pytest.approx(1000.0 / (kmh / 3.6), rel=1e-12), (highway, maxspeed, t)


def test_snap_leg_is_added_to_distance_and_walked() -> None:
    """A cluster 40 m north of node c: 40 m more street and 40 m more walking."""
    edges = [{"u": "a", "v": "b", "length_m": 700.0, "highway": "primary"},
             {"u": "b", "v": "c", "length_m": 800.0, "highway": "primary"},
             {"u": "c", "v": "d", "length_m": 900.0, "highway": "primary"}]  # fmt: skip
    nodes, frame = tables(SQUARE, edges)
    clat, clon = destination(*SQUARE["c"], 0.0, 0.040)
    plat, plon = destination(*SQUARE["a"], 180.0, 0.025)
    clusters = pd.DataFrame({"category": ["f"], "centroid_lat": [clat], "centroid_lon": [clon]})
    partners = pd.DataFrame({"categories": ["f"], "lat": [plat], "lon": [plon], "radius_km": [5]})
    for mode in ("walk", "drive"):
        net = build_network(nodes, frame, mode)
        node, snapped = net.snap([clat, plat], [clon, plon])
        assert [net.node_id[i] for i in node] == ["c", "a"]
        assert snapped == pytest.approx([40.0, 25.0], rel=1e-9)
        got = street_pairs(clusters, partners, net, None)
        assert got.distance_km.iloc[0] == pytest.approx((25 + 700 + 800 + 40) / 1000, rel=1e-12)
        network_s = 1500 / (50 / 3.6) if mode == "drive" else 1500 / (4.8 / 3.6)
        want_min = (network_s + 65 / (4.8 / 3.6)) / 60
        assert got.travel_min.iloc[0] == pytest.approx(want_min, rel=1e-12)
        assert got.straight_km.iloc[0] == pytest.approx(gc_km(plat, plon, clat, clon), rel=1e-12)


@PROPERTY
@given(
    centre=st.tuples(st.floats(-85, 85), st.floats(-180, 180)),
    offsets=st.lists(
        st.tuples(st.floats(-0.05, 0.05), st.floats(-0.05, 0.05)),
        min_size=3,
        max_size=30,
        unique=True,
    ),  # fmt: skip
    queries=st.lists(
        st.one_of(
            st.tuples(st.floats(-0.08, 0.08), st.floats(-0.08, 0.08), st.just(True)),
            st.tuples(st.floats(-90, 90), st.floats(-180, 180), st.just(False)),
        ),
        min_size=1,
        max_size=20,
    ),
)
def test_snap_is_the_brute_force_nearest_node(centre, offsets, queries) -> None:
    """snap() gives the node nearest by great circle (anywhere on Earth) and its metres."""
    lat0, lon0 = centre
    points = {
        f"n{k}": (max(-90.0, min(90.0, lat0 + a)), wrap_lon(lon0 + b))
        for k, (a, b) in enumerate(offsets)
    }
    ids = list(points)
    ring = [{"u": ids[k], "v": ids[(k + 1) % len(ids)]} for k in range(len(ids))]
    nodes, frame = tables(points, ring)
    net = build_network(nodes, frame, "walk")
    kept = set(positions(net))
    assert kept == set(ids)
    lat = [lat0 + q[0] if q[2] else q[0] for q in queries]
    lon = [wrap_lon(lon0 + q[1]) if q[2] else q[1] for q in queries]
    lat = [max(-90.0, min(90.0, x)) for x in lat]
    node, snapped = net.snap(lat, lon)
    assert node.dtype == np.int64 and snapped.shape == (len(queries),)
    for i in range(len(queries)):
        best, best_m = oracle_snap(points, kept, lat[i], lon[i])
        got_id = str(net.node_id[node[i]])
        assert close(snapped[i], best_m, atol=1e-6), (snapped[i], best_m)
        # the node found is the nearest (another one at the same distance would do)
        assert close(metres((lat[i], lon[i]), points[got_id]), best_m, atol=1e-6), (got_id, best)


def test_largest_strongly_connected_part_is_kept() -> None:
    """e is reached from d by a one-way street only: dropped by car, kept on foot."""
    points = {**SQUARE, "e": (41.8020, -87.6000)}
    edges = [{"u": u, "v": v, "length_m": 200.0} for u, v in
             [("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")]]  # fmt: skip
    edges.append({"u": "d", "v": "e", "length_m": 150.0, "oneway": "yes"})
    nodes, frame = tables(points, edges)
    drive = build_network(nodes, frame, "drive")
    walk = build_network(nodes, frame, "walk")
    assert sorted(drive.node_id) == ["a", "b", "c", "d"] and drive.dropped == 1
    assert sorted(walk.node_id) == ["a", "b", "c", "d", "e"] and walk.dropped == 0
    pw = positions(walk)
    assert all_shortest(walk, "length")[pw["e"], pw["b"]] == pytest.approx(550.0)
    # every kept node reaches every other
    assert np.isfinite(all_shortest(drive, "length")).all()
    assert drive.summary()["nodes_left_out"] == 1


def test_parallel_edges_take_the_shortest_and_the_fastest() -> None:
    """Two streets a-b: 300 m at 30 km/h (36 s) and 500 m at 100 km/h (18 s)."""
    edges = [
        {"u": "a", "v": "b", "length_m": 300.0, "highway": "residential"},
        {"u": "b", "v": "a", "length_m": 500.0, "highway": "primary", "maxspeed": "100"},
        {"u": "a", "v": "b", "length_m": 700.0, "highway": "service"},
    ]
    nodes, frame = tables(SQUARE, edges)
    net = build_network(nodes, frame, "drive")
    pos = positions(net)
    assert net.n_edges == 2  # a->b and b->a, merged
    length, time = all_shortest(net, "length"), all_shortest(net, "time")
    for s, t in (("a", "b"), ("b", "a")):
        assert length[pos[s], pos[t]] == pytest.approx(300.0, rel=1e-12)
        assert time[pos[s], pos[t]] == pytest.approx(18.0, rel=1e-12)
    g = oracle_graph(SQUARE, edges, "drive")
    check_against_oracle(net, g, {"a", "b"})


def test_zero_length_edges_and_short_lengths() -> None:
    """Coincident nodes joined at 0 m; a length below the straight line is raised to it."""
    points = {**SQUARE, "a2": SQUARE["a"]}
    straight_ab = metres(SQUARE["a"], SQUARE["b"])
    edges = [
        {"u": "a", "v": "a2", "length_m": 0.0},
        {"u": "a2", "v": "b", "length_m": 1.0},  # far shorter than the ~83 m line: raised
        {"u": "b", "v": "c", "length_m": math.nan},  # missing: the straight line
        {"u": "c", "v": "d", "length_m": 0.0},  # zero between distinct points: raised
        {"u": "d", "v": "a", "length_m": 250.0},
    ]
    nodes, frame = tables(points, edges)
    for mode in ("walk", "drive"):
        net = build_network(nodes, frame, mode)
        pos = positions(net)
        assert set(pos) == {"a", "a2", "b", "c", "d"}
        d = all_shortest(net, "length")
        assert d[pos["a"], pos["a2"]] == pytest.approx(0.0, abs=1e-300)
        assert d[pos["a2"], pos["b"]] == pytest.approx(straight_ab, rel=1e-12)
        assert d[pos["a"], pos["b"]] == pytest.approx(straight_ab, rel=1e-12)
        assert d[pos["b"], pos["c"]] == pytest.approx(metres(SQUARE["b"], SQUARE["c"]), rel=1e-12)
        assert d[pos["c"], pos["d"]] == pytest.approx(metres(SQUARE["c"], SQUARE["d"]), rel=1e-12)
        check_against_oracle(net, oracle_graph(points, edges, mode), set(pos))
        # a partner at a2 and a cluster 30 m south of a: the 0 m street costs nothing
        clat, clon = destination(*SQUARE["a"], 180.0, 0.030)
        clusters = pd.DataFrame({"category": ["f"], "centroid_lat": [clat],
                                 "centroid_lon": [clon]})  # fmt: skip
        partners = pd.DataFrame({"categories": ["f"], "lat": [41.8], "lon": [-87.6],
                                 "radius_km": [0.5]})  # fmt: skip
        got = street_pairs(clusters, partners, net, None)
        assert got.distance_km.tolist() == [pytest.approx(0.030, rel=1e-9)]


def test_negative_or_infinite_lengths_are_refused() -> None:
    for bad in (-1.0, math.inf):
        nodes, frame = tables(SQUARE, [{"u": "a", "v": "b", "length_m": bad}])

        def build(n: pd.DataFrame = nodes, f: pd.DataFrame = frame) -> StreetNetwork:
            return build_network(n, f, "walk")

        err = refused(build, "finite and >= 0")
        assert err.problems[0].field == "length_m"


def at_limit_cases(
    cluster_m: float, partner_m: float
) -> list[tuple[str, pd.DataFrame, pd.DataFrame, pd.DataFrame, StreetNetwork]]:
    """Pairs on a two-node street (a-b, 4089.893 m) for offsets 1..59 of a cluster and partner.

    The cluster lies ``k * cluster_m`` metres north of b (``cluster_m`` 0: south of a, by
    ``k * 0.61`` m), the partner ``k * partner_m`` metres south of a. Each case is (mode,
    clusters, partners, the pair street_pairs reports with an unlimited radius, network).
    """
    points = {"a": (41.8, -87.6), "b": (41.8, -87.58)}
    nodes, frame = tables(points, [{"u": "a", "v": "b", "length_m": 4089.893}])
    out = []
    for mode in ("walk", "drive"):
        net = build_network(nodes, frame, mode)
        for k in range(1, 60):
            if cluster_m:
                clat, clon = destination(*points["b"], 0.0, k * cluster_m / 1000)
            else:
                clat, clon = destination(*points["a"], 0.0, k * 0.61 / 1000)
            plat, plon = destination(*points["a"], 180.0, k * partner_m / 1000)
            clusters = pd.DataFrame(
                {"category": ["f"], "centroid_lat": [clat], "centroid_lon": [clon]}
            )
            partners = pd.DataFrame(
                {"categories": ["f"], "lat": [plat], "lon": [plon], "radius_km": [10.0]}
            )
            first = street_pairs(clusters, partners, net, None)
            assert len(first) == 1
            out.append((mode, clusters, partners, first, net))
    return out


def test_pair_exactly_at_its_radius_km_is_kept() -> None:
    """A partner whose radius_km is the street distance street_pairs reports keeps the pair.

    Eligibility is ``distance_km <= radius_km`` up to a relative 1e-12 (matcher.geo.within):
    a pair at exactly its radius is eligible, whatever the rounding of the limit of the
    bounded Dijkstra search (radius minus the two snap legs).
    """
    missed = []
    for mode, clusters, partners, first, net in at_limit_cases(1.0, 0.0):
        radius = float(first.distance_km.iloc[0])
        if len(street_pairs(clusters, partners.assign(radius_km=radius), net, None)) != 1:
            missed.append((mode, radius))
    assert not missed, f"{len(missed)} pair(s) at exactly radius_km were dropped: {missed}"


def test_pair_exactly_at_its_radius_min_is_kept() -> None:
    """A partner whose radius_min is the travel time street_pairs reports keeps the pair.

    Checked on trips along the street and on trips whose two ends snap to the same node
    (the whole trip is the two walked snap legs), with the time limit given per partner
    and run-wide.
    """
    missed = []
    for cluster_m, partner_m in ((1.0, 0.0), (0.0, 0.37)):
        for mode, clusters, partners, first, net in at_limit_cases(cluster_m, partner_m):
            minutes = float(first.travel_min.iloc[0])
            own = street_pairs(clusters, partners.assign(radius_min=minutes), net, None)
            run = street_pairs(clusters, partners, net, minutes)
            if len(own) != 1 or len(run) != 1:
                missed.append((mode, cluster_m, minutes, len(own), len(run)))
    assert not missed, f"{len(missed)} pair(s) at exactly radius_min were dropped: {missed}"


# --------------------------------------------------------------------------------------
# GeoPackage files and their errors
# --------------------------------------------------------------------------------------

GRID_POINTS = {
    str(100 + k): (41.80 + (k // 4) * 0.0015, -87.60 + (k % 4) * 0.002) for k in range(12)
}
GRID_EDGES = [
    {"u": str(100 + k), "v": str(100 + k + 1), "length_m": 180.0 + 7 * k,
     "highway": "residential", "oneway": "yes" if k in (1, 5) else None, "maxspeed": None}
    for k in range(12) if (k + 1) % 4
] + [
    {"u": str(100 + k), "v": str(100 + k + 4), "length_m": math.nan,
     "highway": "primary", "oneway": "-1" if k == 2 else "no", "maxspeed": "25 mph"}
    for k in range(8)
]  # fmt: skip


def write_gpkg(
    path: Path,
    points: Mapping[str, tuple[float, float]],
    edges: list[dict[str, Any]],
    crs: Any = "EPSG:4326",
    id_column: str = "osmid",
    length_column: str = "length_m",
) -> Path:
    """A network GeoPackage in the form of data/southside (layers nodes and edges)."""
    geo = gpd.GeoDataFrame(
        {id_column: [int(k) for k in points]},
        geometry=[Point(lon, lat) for lat, lon in points.values()],
        crs="EPSG:4326",
    )
    if crs is None:
        geo = geo.set_crs(None, allow_override=True)
    elif crs != "EPSG:4326":
        geo = geo.to_crs(crs)
    geo.to_file(path, layer="nodes", driver="GPKG")
    frame = pd.DataFrame(edges).rename(columns={"length_m": length_column})
    frame["u"], frame["v"] = frame["u"].astype("int64"), frame["v"].astype("int64")
    lines = [LineString([points[str(e["u"])][::-1], points[str(e["v"])][::-1]]) for e in edges]
    gpd.GeoDataFrame(frame, geometry=lines, crs="EPSG:4326").to_file(
        path, layer="edges", driver="GPKG"
    )
    return path


@pytest.mark.parametrize("mode", ["walk", "drive"])
def test_gpkg_reads_to_the_oracle_network(tmp_path: Path, mode: str) -> None:
    path = write_gpkg(tmp_path / "grid.gpkg", GRID_POINTS, GRID_EDGES)
    net = read_network(path, mode)
    g = oracle_graph(GRID_POINTS, GRID_EDGES, mode)
    is_refused, largest = oracle_largest(g)
    assert not is_refused and len(largest) == 1
    check_against_oracle(net, g, largest[0])
    assert net.source == str(path) and len(net.sha256) == 64
    lat = dict(zip(net.node_id, net.lat, strict=True))
    assert all(lat[k] == pytest.approx(p[0], abs=1e-12) for k, p in GRID_POINTS.items()
               if k in lat)  # fmt: skip


def test_gpkg_id_and_length_columns(tmp_path: Path) -> None:
    """Nodes may be keyed by 'id', lengths may be 'length'."""
    a = read_network(write_gpkg(tmp_path / "a.gpkg", GRID_POINTS, GRID_EDGES), "drive")
    b = read_network(
        write_gpkg(tmp_path / "b.gpkg", GRID_POINTS, GRID_EDGES, id_column="id",
                   length_column="length"),
        "drive",
    )  # fmt: skip
    assert list(a.node_id) == list(b.node_id)
    np.testing.assert_array_equal(all_shortest(a, "length"), all_shortest(b, "length"))


@pytest.mark.parametrize("crs", ["EPSG:32616", "EPSG:3857", "EPSG:26971", "EPSG:4269"])
def test_gpkg_in_another_crs_is_transformed(tmp_path: Path, crs: str) -> None:
    """Nodes written in a projected (or other geographic) CRS read as the WGS84 file does."""
    base = read_network(write_gpkg(tmp_path / "wgs84.gpkg", GRID_POINTS, GRID_EDGES), "drive")
    other = read_network(
        write_gpkg(tmp_path / "other.gpkg", GRID_POINTS, GRID_EDGES, crs=crs), "drive"
    )
    assert list(base.node_id) == list(other.node_id)
    # NAD83 -> WGS84 is a null (or ~1 m) shift; the projections round-trip to ~1e-9 degrees
    tol = 2e-5 if crs == "EPSG:4269" else 1e-8
    np.testing.assert_allclose(other.lat, base.lat, rtol=0, atol=tol)
    np.testing.assert_allclose(other.lon, base.lon, rtol=0, atol=tol)
    np.testing.assert_allclose(
        all_shortest(other, "length"), all_shortest(base, "length"), rtol=1e-5
    )


@pytest.mark.filterwarnings("ignore:'crs' was not provided:UserWarning")
def test_gpkg_without_crs_is_refused(tmp_path: Path) -> None:
    path = write_gpkg(tmp_path / "nocrs.gpkg", GRID_POINTS, GRID_EDGES, crs=None)
    err = refused(lambda: read_network(path, "walk"), "declares no coordinate reference system")
    assert err.problems[0].field == "crs" and err.problems[0].file == str(path)


def test_gpkg_with_coordinates_out_of_degree_range_is_refused(tmp_path: Path) -> None:
    """Projected coordinates labelled EPSG:4326 are not degrees."""
    path = tmp_path / "mislabelled.gpkg"
    write_gpkg(path, GRID_POINTS, GRID_EDGES, crs="EPSG:32616")
    nodes = gpd.read_file(path, layer="nodes").set_crs("EPSG:4326", allow_override=True)
    nodes.to_file(path, layer="nodes", driver="GPKG")
    err = refused(lambda: read_network(path, "walk"), "not WGS84 longitude/latitude degrees",
                  "12 node(s)")  # fmt: skip
    assert err.problems[0].field == "node"


def test_gpkg_with_an_empty_edges_layer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.gpkg"
    write_gpkg(path, GRID_POINTS, GRID_EDGES)
    empty = gpd.GeoDataFrame(
        {"u": pd.Series([], dtype="int64"), "v": pd.Series([], dtype="int64"),
         "length_m": pd.Series([], dtype="float64")},
        geometry=gpd.GeoSeries([], crs="EPSG:4326"),
    )  # fmt: skip
    empty.to_file(path, layer="edges", driver="GPKG")
    assert len(pyogrio.read_dataframe(path, layer="edges")) == 0
    refused(lambda: read_network(path, "walk"), str(path), "holds no street")


def test_gpkg_in_pieces_is_refused(tmp_path: Path) -> None:
    """Ten separate two-node streets: the largest part holds 10% of the nodes."""
    points = {str(k): (41.8 + (k // 2) * 0.01, -87.6 + (k % 2) * 0.001) for k in range(20)}
    edges = [{"u": str(k), "v": str(k + 1), "length_m": 100.0} for k in range(0, 20, 2)]
    path = write_gpkg(tmp_path / "pieces.gpkg", points, edges)
    refused(lambda: read_network(path, "walk"), "is disconnected", "2 of 20 nodes (10%)")
    # a one-way chain: no two nodes reach each other by car
    chain = [{"u": str(k), "v": str(k + 1), "oneway": "yes"} for k in range(19)]
    path = write_gpkg(tmp_path / "chain.gpkg", points, chain)
    refused(lambda: read_network(path, "drive"), "is disconnected", "by drive")
    assert read_network(path, "walk").n_nodes == 20


def test_gpkg_edges_naming_missing_nodes_are_refused(tmp_path: Path) -> None:
    path = write_gpkg(tmp_path / "grid.gpkg", GRID_POINTS, GRID_EDGES)
    edges = pyogrio.read_dataframe(path, layer="edges")
    edges.loc[3, "v"] = 999
    edges.to_file(path, layer="edges", driver="GPKG")
    err = refused(lambda: read_network(path, "walk"), "1 edge(s) name a node that is not among")
    assert err.problems[0].value == "104 -> 999"


def test_files_that_are_not_networks_are_refused(tmp_path: Path) -> None:
    roads = tmp_path / "roads.gpkg"
    gpd.GeoDataFrame({"name": ["x"]}, geometry=[Point(-87.6, 41.8)], crs="EPSG:4326").to_file(
        roads, layer="roads", driver="GPKG"
    )
    err = refused(lambda: read_network(roads, "walk"), "layers 'nodes' and 'edges'",
                  "field 'layers', value 'roads'")  # fmt: skip
    assert err.problems[0].field == "layers"

    csv = tmp_path / "table.gpkg"
    csv.write_text("u,v,length_m\n1,2,30\n", encoding="utf-8")
    refused(lambda: read_network(csv, "walk"), "is not a readable GeoPackage")

    empty = tmp_path / "zero.gpkg"
    empty.write_bytes(b"")
    refused(lambda: read_network(empty, "walk"), "is not a readable GeoPackage")

    text = tmp_path / "notes.graphml"
    text.write_text("these are my notes, not a graph\n", encoding="utf-8")
    refused(lambda: read_network(text, "walk"), "is not a readable GraphML file")

    xml = tmp_path / "other.graphml"
    xml.write_text("<?xml version='1.0'?><root><a/></root>\n", encoding="utf-8")
    refused(lambda: read_network(xml, "walk"), "is not a readable GraphML file")

    shp = tmp_path / "streets.shp"
    shp.write_bytes(b"\x00\x00\x27\x0a")
    err = refused(lambda: read_network(shp, "walk"), "is not a street network format",
                  ".gpkg", ".graphml", ".osm.pbf")  # fmt: skip
    assert err.problems[0].value == "streets.shp"

    refused(lambda: read_network(tmp_path / "absent.gpkg", "walk"), "not found")
    refused(lambda: read_network(tmp_path, "walk"))  # a directory

    good = write_gpkg(tmp_path / "grid.gpkg", GRID_POINTS, GRID_EDGES)
    err = refused(lambda: read_network(good, "bike"), "must be one of walk, drive")
    assert err.problems[0].field == "travel"


def test_gpkg_layers_missing_columns_are_refused(tmp_path: Path) -> None:
    path = write_gpkg(tmp_path / "grid.gpkg", GRID_POINTS, GRID_EDGES)
    edges = pyogrio.read_dataframe(path, layer="edges").rename(columns={"v": "to"})
    edges.to_file(path, layer="edges", driver="GPKG")
    refused(lambda: read_network(path, "walk"), "needs the columns u and v", "'v'")
    path = write_gpkg(tmp_path / "noid.gpkg", GRID_POINTS, GRID_EDGES, id_column="node")
    refused(lambda: read_network(path, "walk"), "'osmid' (or 'id')")


@pytest.mark.parametrize(
    ("speeds", "words"),
    [
        ({"residential": 0}, ["a speed is a number of km/h >= 1 and <= 200", "residential=0"]),
        ({"residential": 250.0}, ["residential=250.0"]),
        ({"residential": -5}, ["residential=-5"]),
        ({"residential": math.nan}, ["residential=nan"]),
        ({"residential": math.inf}, ["residential=inf"]),
        ({"residential": "fast"}, ["residential=fast"]),
        ({"Residential": 30}, ["a road class is an OpenStreetMap highway value", "Residential"]),
        ({"motor way": 30}, ["a road class is"]),
        ({"": 30}, ["a road class is"]),
        ({"x" * 41: 30}, ["a road class is"]),
    ],
)
def test_bad_speeds_are_refused(speeds: dict[str, Any], words: list[str]) -> None:
    nodes, frame = tables(SQUARE, loop_edges("no"))
    err = refused(lambda: build_network(nodes, frame, "drive", speeds=speeds), *words)
    assert all(p.field == "speed" for p in err.problems)


def test_bad_speeds_are_all_reported_and_also_by_read_network(tmp_path: Path) -> None:
    nodes, frame = tables(SQUARE, loop_edges("no"))
    err = refused(
        lambda: build_network(nodes, frame, "drive", speeds={"residential": 0, "Bad!": 9}),
        "residential=0", "Bad!",
    )  # fmt: skip
    assert len(err.problems) == 2
    path = write_gpkg(tmp_path / "grid.gpkg", GRID_POINTS, GRID_EDGES)
    refused(lambda: read_network(path, "drive", speeds={"primary": 1000}), "primary=1000")
    # a good override is used: primary at 20 km/h instead of the maxspeed-less default
    fast = read_network(path, "drive", speeds={"primary": 20})
    assert fast.speeds["primary"] == 20.0 and fast.speeds["residential"] == 30.0


def test_unknown_mode_and_tables_without_streets_are_refused() -> None:
    nodes, frame = tables(SQUARE, loop_edges("no"))
    refused(lambda: build_network(nodes, frame, "fly"), "must be one of walk, drive")
    refused(lambda: build_network(nodes, frame.iloc[:0], "walk"), "holds no street")
    loops = pd.DataFrame({"u": ["a", "b"], "v": ["a", "b"], "length_m": [5.0, 5.0]})
    refused(lambda: build_network(nodes, loops, "walk"), "between two distinct nodes")
    dup = pd.concat([nodes, nodes.iloc[:1]])
    refused(lambda: build_network(dup, frame, "walk"), "node ids must be unique")


# --------------------------------------------------------------------------------------
# GraphML (OSMnx)
# --------------------------------------------------------------------------------------

#: A 3 x 3 grid of OSM nodes 1..9 (rows 150 m apart, columns ~166 m) and a footway to 10.
OSM_POINTS = {str(k + 1): (41.8 + (k // 3) * 0.0015, -87.6 + (k % 3) * 0.002) for k in range(9)} | {
    "10": (41.8022, -87.597)
}
OSM_WAYS: list[tuple[int, list[int], dict[str, str]]] = [
    (100, [1, 2, 3], {"highway": "residential"}),
    (101, [4, 5, 6], {"highway": "primary", "oneway": "yes"}),
    (102, [7, 8, 9], {"highway": "residential", "oneway": "-1"}),
    (200, [1, 4, 7], {"highway": "tertiary", "maxspeed": "40"}),
    (201, [2, 5, 8], {"highway": "residential", "maxspeed": "25 mph"}),
    (202, [3, 6, 9], {"highway": "secondary"}),
    (300, [5, 10], {"highway": "footway"}),
]


def osm_edge_rows(drop: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """The oracle's edge table of OSM_WAYS: one row per segment, tags copied."""
    rows = []
    for _, refs, tags in OSM_WAYS:
        if tags["highway"] in drop:
            continue
        for a, b in zip(refs, refs[1:], strict=False):
            rows.append({"u": str(a), "v": str(b), **tags})
    return rows


def write_osm_xml(path: Path) -> Path:
    lines = ["<?xml version='1.0' encoding='UTF-8'?>", '<osm version="0.6" generator="test">']
    for k, (lat, lon) in OSM_POINTS.items():
        lines.append(f' <node id="{k}" lat="{lat!r}" lon="{lon!r}" version="1"/>')
    for wid, refs, tags in OSM_WAYS:
        lines.append(f' <way id="{wid}" version="1">')
        lines += [f'  <nd ref="{r}"/>' for r in refs]
        lines += [f'  <tag k="{k}" v="{v}"/>' for k, v in tags.items()]
        lines.append(" </way>")
    lines.append("</osm>")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _osmnx_time(tags: Mapping[str, Any]) -> float:
    """Seconds of an OSMnx edge by car.

    A simplified OSMnx edge may carry lists (``highway: ['secondary', 'residential']``):
    its class is the first listed, and a list of speeds is not one readable speed.
    """
    speed = tags.get("maxspeed")
    limit = None if isinstance(speed, list) else oracle_maxspeed_kmh(speed)
    road = tags["highway"][0] if isinstance(tags["highway"], list) else tags["highway"]
    kmh = limit if limit is not None else ORACLE_CLASS_KMH.get(road, ORACLE_OTHER_KMH)
    return float(tags["length"]) / (kmh / 3.6)


def seconds_of(mode: str) -> Callable[[Any, Any, dict[Any, dict[str, Any]]], float]:
    """networkx weight: the fastest of the parallel OSMnx edges u-v, in seconds."""

    def weight(u: Any, v: Any, parallel: dict[Any, dict[str, Any]]) -> float:
        if mode == "walk":
            return min(float(x["length"]) for x in parallel.values()) / (ORACLE_WALK_KMH / 3.6)
        return min(_osmnx_time(x) for x in parallel.values())

    return weight


@pytest.mark.parametrize("simplify", [False, True])
def test_graphml_saved_by_osmnx_reads_to_the_same_distances(tmp_path: Path, simplify: bool) -> None:
    import osmnx as ox

    graph = ox.graph_from_xml(write_osm_xml(tmp_path / "grid.osm"), simplify=simplify)
    path = tmp_path / "grid.graphml"
    ox.save_graphml(graph, path)
    for mode in ("walk", "drive"):
        net = read_network(path, mode)
        # osmnx's own graph: directed as OSM says (walking: every street both ways)
        g = graph if mode == "drive" else graph.to_undirected()
        pos = positions(net)
        assert set(pos) <= {str(n) for n in graph.nodes}
        if mode == "walk":
            assert len(pos) == graph.number_of_nodes()
        length, time = all_shortest(net, "length"), all_shortest(net, "time")
        for s in graph.nodes:
            if str(s) not in pos:
                continue
            by_length = nx.single_source_dijkstra_path_length(g, s, weight="length")
            by_time = nx.single_source_dijkstra_path_length(g, s, weight=seconds_of(mode))
            for t in graph.nodes:
                if str(t) in pos:
                    i, j = pos[str(s)], pos[str(t)]
                    assert close(length[i, j], by_length[t]), (mode, s, t)
                    assert close(time[i, j], by_time[t]), (mode, s, t)
    # driving keeps osmnx's largest strongly connected part (the one-way rows make it
    # smaller than the graph only if they trap a node; osmnx reads the footway as a street)
    drive = read_network(path, "drive")
    scc = max(nx.strongly_connected_components(graph), key=len)
    assert set(positions(drive)) == {str(n) for n in scc}


def test_projected_graphml_reads_to_the_same_network(tmp_path: Path) -> None:
    import osmnx as ox

    graph = ox.graph_from_xml(write_osm_xml(tmp_path / "grid.osm"), simplify=False)
    plain, projected = tmp_path / "plain.graphml", tmp_path / "utm.graphml"
    ox.save_graphml(graph, plain)
    ox.save_graphml(ox.project_graph(graph), projected)
    assert "32616" in projected.read_text(encoding="utf-8")  # UTM 16N is declared
    for mode in ("walk", "drive"):
        a, b = read_network(plain, mode), read_network(projected, mode)
        # the same nodes (osmnx reorders them when projecting): b's order, as a's positions
        order = np.array([positions(a)[str(k)] for k in b.node_id])
        assert sorted(a.node_id) == sorted(b.node_id) and a.n_edges == b.n_edges
        np.testing.assert_allclose(b.lat, a.lat[order], rtol=0, atol=1e-9)
        np.testing.assert_allclose(b.lon, a.lon[order], rtol=0, atol=1e-9)
        for weight in ("length", "time"):
            np.testing.assert_allclose(
                all_shortest(b, weight), all_shortest(a, weight)[np.ix_(order, order)], rtol=1e-9
            )
        # and the coordinates are the OSM file's
        for k, i in positions(a).items():
            assert (a.lat[i], a.lon[i]) == pytest.approx(OSM_POINTS[k], abs=1e-12)


def test_graphml_without_coordinates_or_with_an_unknown_crs_is_refused(tmp_path: Path) -> None:
    g = nx.DiGraph(crs="epsg:4326")
    g.add_node("1", x="-87.6", y="41.8")
    g.add_node("2", y="41.801")
    g.add_edge("1", "2", length="120")
    path = tmp_path / "nox.graphml"
    nx.write_graphml(g, path)
    refused(lambda: read_network(path, "walk"), "need x and y")
    g.nodes["2"]["x"] = "-87.6"
    g.graph["crs"] = "EPSG:999999"
    nx.write_graphml(g, path)
    err = refused(lambda: read_network(path, "walk"), "coordinate reference system")
    assert err.problems[0].field == "crs"


# --------------------------------------------------------------------------------------
# OSM PBF (pyosmium writes, pyrosm reads)
# --------------------------------------------------------------------------------------


def write_pbf(path: Path, ways: list[tuple[int, list[int], dict[str, str]]] = OSM_WAYS) -> Path:
    import osmium
    from osmium.osm.mutable import Node, Way

    writer = osmium.SimpleWriter(str(path))
    try:
        for k, (lat, lon) in OSM_POINTS.items():
            writer.add_node(Node(id=int(k), location=(lon, lat), version=1, tags={}))
        for wid, refs, tags in ways:
            writer.add_way(Way(id=wid, nodes=refs, tags=tags, version=1))
    finally:
        writer.close()
    return path


@pytest.mark.parametrize("mode", ["walk", "drive"])
def test_pbf_reads_to_the_oracle_network(tmp_path: Path, mode: str) -> None:
    path = write_pbf(tmp_path / "grid.osm.pbf")
    net = read_network(path, mode)
    # a footway is walked, not driven
    rows = osm_edge_rows(drop=frozenset() if mode == "walk" else frozenset({"footway"}))
    g = oracle_graph(OSM_POINTS, rows, mode)
    is_refused, largest = oracle_largest(g)
    assert not is_refused and len(largest) == 1
    assert net.n_nodes == (10 if mode == "walk" else 9)
    assert set(positions(net)) == largest[0]
    for k, i in positions(net).items():
        assert (net.lat[i], net.lon[i]) == pytest.approx(OSM_POINTS[k], abs=1e-7)
    # pyrosm writes lengths rounded to the millimetre: compare to 1 mm per street
    pos = positions(net)
    for weight, per_edge in (("length", 1e-3), ("time", 1e-3 / (15 / 3.6))):
        got = all_shortest(net, weight)
        for s in pos:
            want = nx.single_source_dijkstra_path_length(g, s, weight=weight)
            for t in pos:
                assert got[pos[s], pos[t]] == pytest.approx(want[t], abs=6 * per_edge), (s, t)
    # 4 -> 6 by car on the one-way primary (2 x 166 m), 6 -> 4 around it
    if mode == "drive":
        d = all_shortest(net, "length")
        assert d[pos["4"], pos["6"]] < d[pos["6"], pos["4"]] - 300


def test_broken_pbf_files_are_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.osm.pbf"
    empty.write_bytes(b"")
    refused(lambda: read_network(empty, "walk"), "is not a readable OpenStreetMap PBF file")
    garbage = tmp_path / "garbage.osm.pbf"
    garbage.write_bytes(b"this is not a protocol buffer\n" * 40)
    refused(lambda: read_network(garbage, "drive"), "is not a readable OpenStreetMap PBF file")
    truncated = tmp_path / "truncated.osm.pbf"
    whole = write_pbf(tmp_path / "whole.osm.pbf").read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    refused(lambda: read_network(truncated, "walk"), str(truncated))


@pytest.mark.filterwarnings("ignore:Could not find any edges for given area:UserWarning")
def test_pbf_without_streets_for_the_mode_is_refused(tmp_path: Path) -> None:
    path = write_pbf(tmp_path / "paths.osm.pbf", ways=[(300, [5, 10], {"highway": "footway"})])
    refused(lambda: read_network(path, "drive"), "holds no street that can be travelled by drive")
    assert read_network(path, "walk").n_nodes == 2


# --------------------------------------------------------------------------------------
# The shipped South Side networks
# --------------------------------------------------------------------------------------


def southside_oracle(path: Path, mode: str) -> tuple[nx.DiGraph, dict[str, tuple[float, float]]]:
    """The oracle graph of a shipped network, read with geopandas and pyogrio."""
    nodes = gpd.read_file(path, layer="nodes")
    assert nodes.crs is not None and nodes.crs.to_epsg() == 4326
    points = {
        str(k): (y, x)
        for k, x, y in zip(nodes["osmid"], nodes.geometry.x, nodes.geometry.y, strict=True)
    }
    edges = pyogrio.read_dataframe(path, layer="edges", read_geometry=False)
    cols = [c for c in ("u", "v", "length_m", "highway", "oneway", "maxspeed") if c in edges]
    table = edges[cols].astype(object)
    rows = table.where(table.notna(), None).to_dict("records")
    for row in rows:
        row["u"], row["v"] = str(row["u"]), str(row["v"])
    return oracle_graph(points, rows, mode), points


@pytest.mark.skipif(
    not (SOUTHSIDE / "southside_walk.gpkg").exists()
    or not (SOUTHSIDE / "southside_drive.gpkg").exists(),
    reason="the South Side networks are not in this checkout",
)
@pytest.mark.parametrize("mode", ["walk", "drive"])
def test_southside_networks_match_networkx(mode: str) -> None:
    path = SOUTHSIDE / f"southside_{mode}.gpkg"
    net = read_network(path, mode)
    g, _ = southside_oracle(path, mode)
    is_refused, largest = oracle_largest(g)
    assert not is_refused and len(largest) == 1
    kept = largest[0]
    pos = positions(net)
    assert set(pos) == kept and net.dropped == g.number_of_nodes() - len(kept)
    rng = np.random.default_rng(20240517)
    ids = sorted(kept)
    sources = rng.choice(ids, size=10, replace=False)
    checked = 0
    for s in sources:
        targets = rng.choice(ids, size=5, replace=False)
        for weight in ("length", "time"):
            want = nx.single_source_dijkstra_path_length(g, s, weight=weight)
            got = shortest(
                net, weight, np.full(5, pos[s], dtype=np.int64),
                np.array([pos[t] for t in targets], dtype=np.int64), np.full(5, np.inf),
            )  # fmt: skip
            for t, value in zip(targets, got, strict=True):
                assert close(value, want[t]), (mode, weight, s, t, value, want[t])
                checked += 1
    assert checked == 100
    # the walk is slower than the drive everywhere but at the same distance, never shorter
    if mode == "walk":
        assert net.max_kmh == ORACLE_WALK_KMH


def test_trip_minutes_searches_again_past_the_mean_speed() -> None:
    """A trip slower than the network's mean speed is found by the second, safe search.

    Two ways from a to c: a fast primary road around (90 km/h, 3 km) and a slow
    residential road straight through (10 km/h, 1 km). The shortest path is the slow road
    (6 min), the fastest trip the primary (2 min). A trip along a slow dead end is slower
    than the length-weighted mean speed, so its first search stops short and the second
    one finds it; both values equal networkx Dijkstra on the times.
    """
    lat0, lon0 = 41.80, -87.60
    pts = {
        "a": (lat0, lon0),
        "b": destination(lat0, lon0, 90.0, 0.5),
        "c": destination(lat0, lon0, 90.0, 1.0),
        "d": destination(lat0, lon0, 0.0, 1.0),
        "e": destination(lat0, lon0, 180.0, 1.0),
    }
    nodes = pd.DataFrame(
        [(k, la, lo) for k, (la, lo) in pts.items()], columns=["id", "lat", "lon"]
    )
    edges = pd.DataFrame(
        [
            ("a", "b", 500.0, "residential", "10"),
            ("b", "c", 500.0, "residential", "10"),
            ("a", "d", 1500.0, "primary", "90"),
            ("d", "c", 1500.0, "primary", "90"),
            ("a", "e", 1000.0, "residential", "10"),
        ],
        columns=["u", "v", "length_m", "highway", "maxspeed"],
    )
    net = build_network(nodes, edges, "drive")
    assert net.min_kmh == 10.0 and 10.0 < net.mean_kmh < 90.0
    at = {k: (la, lo) for k, (la, lo) in pts.items()}
    clusters = pd.DataFrame(
        {"category": ["x", "x"], "centroid_lat": [at["c"][0], at["e"][0]],
         "centroid_lon": [at["c"][1], at["e"][1]]}
    )  # fmt: skip
    partners = pd.DataFrame(
        {"categories": ["x"], "lat": [at["a"][0]], "lon": [at["a"][1]], "radius_km": [5.0]}
    )
    got = eligible_pairs(clusters, partners, net, None)
    assert got["travel_min"].isna().all()
    minutes = trip_minutes(net, clusters, partners, got)
    g = nx.DiGraph()
    for u, v, m, _, kmh in edges.itertuples(index=False):
        g.add_edge(u, v, t=m / (float(kmh) / 3.6))
        g.add_edge(v, u, t=m / (float(kmh) / 3.6))
    want = [nx.dijkstra_path_length(g, "a", t, weight="t") / 60 for t in ("c", "e")]
    assert minutes.tolist() == pytest.approx(want, rel=1e-12)
    assert want[0] == pytest.approx(2.0) and want[1] == pytest.approx(6.0)
    assert got["distance_km"].tolist() == pytest.approx([1.0, 1.0])


def test_searches_in_several_processes_give_the_same_values() -> None:
    """shortest() in forked processes returns exactly what it returns in this one.

    Run in a fresh interpreter (one thread, so that it may fork), on the South Side walk
    network with more sources than :data:`matcher.network.paths.PARALLEL_MIN_SOURCES`.
    """
    import subprocess
    import sys

    script = f"""
import numpy as np
from matcher.network import read_network, shortest
from matcher.network import paths
net = read_network({str(SOUTHSIDE / "southside_walk.gpkg")!r}, "walk")
rng = np.random.default_rng(7)
n = paths.PARALLEL_MIN_SOURCES + 500
src = rng.integers(0, net.n_nodes, n)
dst = rng.integers(0, net.n_nodes, n)
lim = rng.uniform(2000.0, 12000.0, n)
one = shortest(net, "length", src, dst, lim, workers=1)
pools = []
class Counting(paths.ProcessPoolExecutor):
    def __init__(self, *args, **kwargs):
        pools.append(args[0])
        super().__init__(*args, **kwargs)
paths.ProcessPoolExecutor = Counting
two = shortest(net, "length", src, dst, lim, workers=2)
assert pools == [2], pools
assert np.isfinite(one).sum() > n // 10
assert np.array_equal(one, two), "values differ"
print("same", int(np.isfinite(one).sum()))
"""
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("same")


def test_searches_in_threads_do_not_mix_their_graphs() -> None:
    """Two threads searching two graphs at once get what each gets alone."""
    from concurrent.futures import ThreadPoolExecutor

    net = read_network(SOUTHSIDE / "southside_drive.gpkg", "drive")
    rng = np.random.default_rng(3)
    n = 3000
    src, dst = rng.integers(0, net.n_nodes, n), rng.integers(0, net.n_nodes, n)
    lim = rng.uniform(1000.0, 6000.0, n)
    alone = {w: shortest(net, w, src, dst, lim) for w in ("length", "time")}
    with ThreadPoolExecutor(2) as pool:
        for _ in range(3):
            got = dict(zip(("length", "time"), pool.map(
                lambda w: shortest(net, w, src, dst, lim), ("length", "time")
            ), strict=True))  # fmt: skip
            assert np.array_equal(got["length"], alone["length"])
            assert np.array_equal(got["time"], alone["time"])


@pytest.mark.parametrize(
    ("crs", "kind"), [("EPSG:5714", "vertical"), ("EPSG:4978", "geocentric")]
)
def test_a_crs_that_places_no_point_on_the_map_is_refused(tmp_path: Path, crs, kind) -> None:
    """A vertical or geocentric CRS (GeoPackage or GraphML) is refused, naming the CRS."""
    points = {"1": (41.80, -87.60), "2": (41.80, -87.59)}
    path = write_gpkg(tmp_path / "n.gpkg", points, [{"u": 1, "v": 2, "length_m": 900.0}])
    nodes = gpd.read_file(path, layer="nodes").set_crs(crs, allow_override=True)
    nodes.to_file(path, layer="nodes", driver="GPKG")
    err = refused(lambda: read_network(path, "walk"), "cannot be transformed to WGS84")
    assert err.problems[0].field == "crs"
    g = nx.MultiDiGraph(crs=crs)
    g.add_node("1", x="-87.60", y="41.80")
    g.add_node("2", x="-87.59", y="41.80")
    g.add_edge("1", "2", length="900")
    g.add_edge("2", "1", length="900")
    nx.write_graphml(g, tmp_path / "n.graphml")
    err = refused(lambda: read_network(tmp_path / "n.graphml", "walk"), "cannot be transformed")
    assert err.problems[0].field == "crs", kind


def test_a_nodes_layer_without_points_and_forged_layer_names(tmp_path: Path) -> None:
    """A nodes table without geometry is refused; layer names cannot forge lines."""
    path = tmp_path / "plain.gpkg"
    pyogrio.write_dataframe(
        pd.DataFrame({"osmid": [1, 2], "lon": [-87.6, -87.59], "lat": [41.8, 41.8]}),
        path, layer="nodes", driver="GPKG",
    )  # fmt: skip
    pyogrio.write_dataframe(
        pd.DataFrame({"u": [1], "v": [2], "length_m": [900.0]}), path, layer="edges",
        driver="GPKG", append=True,
    )  # fmt: skip
    refused(lambda: read_network(path, "walk"), "layer 'nodes'", "holds no points")
    evil = tmp_path / "evil.gpkg"
    pyogrio.write_dataframe(
        pd.DataFrame({"a": [1]}), evil, layer="x\nCRITICAL: all good", driver="GPKG"
    )
    err = refused(lambda: read_network(evil, "walk"), "layers 'nodes' and 'edges'")
    assert "\nCRITICAL" not in err.report()


def test_a_network_past_the_node_or_edge_bound_is_refused(monkeypatch) -> None:
    """Networks are bounded by rows too (a small file can expand): the bound is named."""
    import matcher.network.model as model

    monkeypatch.setattr(model, "MAX_NETWORK_NODES", 3)
    nodes = pd.DataFrame({"id": ["1", "2", "3", "4"], "lat": [41.8] * 4,
                          "lon": [-87.60, -87.59, -87.58, -87.57]})  # fmt: skip
    edges = pd.DataFrame({"u": ["1", "2", "3"], "v": ["2", "3", "4"]})
    refused(lambda: build_network(nodes, edges, "walk"), "holds 4 nodes", "at most 3")
    monkeypatch.setattr(model, "MAX_NETWORK_NODES", 10)
    assert build_network(nodes, edges, "walk").n_nodes == 4
