"""An independent oracle for plans: brute-force geometry, DBSCAN and scipy's HiGHS LP.

Nothing here imports matcher (not even its geometry): distances are recomputed
from the haversine formula written out below, clustering is checked against a
brute-force DBSCAN, the privacy grid is written out from its documented definition,
and the optimum comes from linear programs solved lexicographically (serve most,
then severity, then cost).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import lil_matrix

#: Mean Earth radius (IUGG), km: the R of the contract (README, "Eligibility").
R = 6371.0088

#: Tolerance of "distance <= radius": a distance counts as within a radius ``r`` when
#: it is at most ``r * (1 + RADIUS_RTOL)``. Two correct haversine implementations can
#: differ by a few ulps (numpy's SIMD and scalar sin/cos differ), so a pair placed
#: exactly at the radius must be decided the same way by both; 1e-12 is below a
#: micrometre at 1,000 km. Test data never places a pair in (r, r * (1 + 1e-12)]
#: other than exactly at r.
RADIUS_RTOL = 1e-12

#: Tolerance of DBSCAN's "distance <= eps" for the clustering oracle. Needs are
#: given in degrees, so a pair "exactly" ``cluster_km`` apart is only exact to about
#: 1e-12 of eps (the spacing of doubles near a latitude of 45 degrees is ~0.4 nm);
#: the oracle counts such a pair as neighbours (``<=``, as for the radius) and
#: decides every pair outside this band exactly. 1e-9 of 0.5 km is 0.5 micrometre.
EPS_RTOL = 1e-9


def gc_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km (haversine, R = 6371.0088 km), with the math module."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * R * math.asin(math.sqrt(min(1.0, max(0.0, h))))


def gc_km_array(lat1, lon1, lat2, lon2) -> np.ndarray:
    """:func:`gc_km` for numpy arrays (broadcasting), written out independently of matcher."""
    p1 = np.asarray(lat1, dtype=np.float64) * (math.pi / 180.0)
    p2 = np.asarray(lat2, dtype=np.float64) * (math.pi / 180.0)
    dl = (np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64)) * (
        math.pi / 180.0
    )
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * R * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0)))


def in_radius(distance_km, radius_km, rtol: float = RADIUS_RTOL) -> np.ndarray:
    """Whether ``distance_km <= radius_km`` up to the explicit tolerance ``rtol``."""
    return np.asarray(distance_km) <= np.asarray(radius_km) * (1.0 + rtol)


def destination(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    """The point ``km`` along the great circle from (lat, lon) at an initial bearing."""
    p1, l1, b = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    d = km / R
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(
        math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2)
    )
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0


def unit_vectors(lat, lon) -> np.ndarray:
    """(n, 3) unit vectors of points in degrees."""
    p = np.radians(np.asarray(lat, dtype=np.float64))
    lm = np.radians(np.asarray(lon, dtype=np.float64))
    return np.column_stack([np.cos(p) * np.cos(lm), np.cos(p) * np.sin(lm), np.sin(p)])


def weighted_centroid(lat, lon, weight) -> tuple[float, float]:
    """The contract's centroid: the direction of the weighted sum of unit vectors."""
    v = (unit_vectors(lat, lon) * np.asarray(weight, dtype=np.float64)[:, None]).sum(axis=0)
    return (
        math.degrees(math.atan2(v[2], math.hypot(v[0], v[1]))),
        math.degrees(math.atan2(v[1], v[0])),
    )


def group_radius_km(lat, lon, weight) -> float:
    """Largest great-circle distance of a group's points from its weighted centroid."""
    clat, clon = weighted_centroid(lat, lon, weight)
    return float(gc_km_array(clat, clon, np.asarray(lat), np.asarray(lon)).max())


# ---------------------------------------------------------------------------------------
# the volunteers' privacy grid
# ---------------------------------------------------------------------------------------


def coarsen_grid(lat: float, lon: float, km: float = 0.5) -> tuple[float, float]:
    """Expected grid point of a volunteer, from the documented rule (``matcher.privacy``).

    "Snap points to the centre of a ~km grid cell. The latitude step is km of arc; the
    longitude step is widened by 1/cos(lat) of the cell's latitude band so cells stay
    about km wide, capped near poles." Latitude cells are counted from the equator,
    longitude cells from -180; the cap keeps cos(lat) at least 0.01. Coordinates are
    given to 6 decimals (compare with a tolerance of 1e-6 degrees).
    """
    step = km / (2 * math.pi * R / 360.0)  # degrees of arc in km
    row = math.floor(lat / step)
    clat = min(90.0, max(-90.0, (row + 0.5) * step))
    lon_step = step / max(math.cos(math.radians(clat)), 0.01)
    col = math.floor((lon + 180.0) / lon_step)
    clon = min(180.0, max(-180.0, (col + 0.5) * lon_step - 180.0))
    return clat, clon


def grid_point(lat: float, lon: float) -> tuple[float, float]:
    """:func:`coarsen_grid` as the outputs give it: degrees to 6 decimals."""
    clat, clon = coarsen_grid(float(lat), float(lon))
    return round(clat, 6), round(clon, 6)


# ---------------------------------------------------------------------------------------
# DBSCAN by brute force
# ---------------------------------------------------------------------------------------


class Dbscan:
    """Brute-force DBSCAN on great-circle distances (eps in km, ``min_samples``).

    Points of different ``groups`` (category, or category and neighborhood) are never
    neighbours. A point's neighbours are the points within ``eps`` of it (itself
    included, distance ``<= eps`` up to :data:`EPS_RTOL`); a core point has at least
    ``min_samples`` of them. Core points that are neighbours are density-connected:
    the connected components of that relation are the clusters' cores. A non-core
    point within eps of a core point is a border point and may join the cluster of
    any of those core points (DBSCAN leaves the choice open); every other point is
    noise.

    Attributes
    ----------
    neighbours : (n, n) bool array
    core : (n,) bool array
    component : (n,) int array, the component of each core point (-1 otherwise)
    options : list of frozenset, the components each point may belong to (one for a
        core point, one or more for a border point, none for noise)
    """

    def __init__(
        self,
        lat: Sequence[float],
        lon: Sequence[float],
        groups: Sequence[Hashable],
        eps_km: float,
        min_samples: int,
    ) -> None:
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        n = lat.size
        d = gc_km_array(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
        same = np.array(
            [[groups[i] == groups[j] for j in range(n)] for i in range(n)], dtype=bool
        ).reshape(n, n)
        self.distance = d
        self.neighbours = (d <= eps_km * (1.0 + EPS_RTOL)) & same
        self.core = self.neighbours.sum(axis=1) >= min_samples
        self.component = np.full(n, -1, dtype=np.int64)
        label = 0
        for start in range(n):
            if not self.core[start] or self.component[start] >= 0:
                continue
            stack = [start]
            self.component[start] = label
            while stack:
                i = stack.pop()
                for j in np.flatnonzero(self.neighbours[i] & self.core):
                    if self.component[j] < 0:
                        self.component[j] = label
                        stack.append(int(j))
            label += 1
        self.n_components = label
        self.options = [
            frozenset([int(self.component[i])])
            if self.core[i]
            else frozenset(int(c) for c in self.component[self.neighbours[i] & self.core])
            for i in range(n)
        ]

    @property
    def noise(self) -> np.ndarray:
        return np.array([not o for o in self.options], dtype=bool)


# ---------------------------------------------------------------------------------------
# the cost of a plan, recomputed from its assignment rows
# ---------------------------------------------------------------------------------------


def assignment_cost_m(assignments, clusters, partners, quantum: float) -> int:
    """The contract's objective of a plan's rows: sum of quanta x integer metres per unit.

    A row's ``cost`` is its units x its cost per unit, the cost per unit being whole
    metres (the contract scales km to integer metres, ``round(1000 * km)``), so the
    metres per unit of a row are ``round(1000 * cost / units)``. Each row is checked
    against a distance recomputed here (partner point to cluster centroid, with
    :func:`gc_km`): ``distance_km`` to 1e-6 km (rows carry 6 decimals), and the metres
    per unit to ``1000 * (km + language_km)`` within the 0.5 m of rounding (+1e-6).
    Units are counted in quanta, ``round(units / quantum)``, exact to 1e-9. The result
    is on the same integer scale as the oracle LPs' objective.
    """
    cl = clusters.set_index("cluster_id")
    pt = partners.set_index("partner_id")
    total = 0
    for a in assignments.itertuples(index=False):
        c, p = cl.loc[a.cluster_id], pt.loc[a.partner_id]
        km = gc_km(float(p["lat"]), float(p["lon"]), c["centroid_lat"], c["centroid_lon"])
        assert abs(km - a.distance_km) <= 1e-6, (a.cluster_id, a.partner_id, km, a.distance_km)
        lang = float(getattr(a, "language_km", 0.0) or 0.0)
        q = a.units / quantum
        assert a.units > 0 and abs(q - round(q)) <= 1e-9, a.units
        metres = round(1000 * a.cost / a.units)
        assert abs(1000 * a.cost / a.units - metres) <= 1e-6, (a, "not whole metres per unit")
        assert abs(metres - 1000 * (km + lang)) <= 0.5 + 1e-6, (a, km, lang)
        total += round(q) * metres
    return int(total)


def eligible_pairs(clusters, partners) -> list[tuple[str, str, float]]:
    """Every (cluster_id, partner_id, km) with the category offered and km <= radius.

    "km <= radius" is :func:`in_radius`, with its explicit tolerance RADIUS_RTOL.
    """
    out = []
    for c in clusters.itertuples(index=False):
        for p in partners.itertuples(index=False):
            if c.category not in str(p.categories).split(";"):
                continue
            d = gc_km(p.lat, p.lon, c.centroid_lat, c.centroid_lon)
            if in_radius(d, p.radius_km):
                out.append((c.cluster_id, p.partner_id, d))
    return out


def lexicographic_optimum(clusters, partners, quantum: float, *, severity: bool) -> dict:
    """Solve max served, [max severity-weighted served], min cost as successive LPs.

    Over the great-circle pairs of :func:`eligible_pairs` (see
    :func:`lexicographic_optimum_of_pairs`).
    """
    return lexicographic_optimum_of_pairs(
        clusters, partners, eligible_pairs(clusters, partners), quantum, severity=severity
    )


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
    exclude: set | None = None,
) -> dict:
    """Lexicographic optimum with neighborhood floors, share caps, locks and churn.

    ``exclude`` holds ``(cluster_id, partner_id)`` pairs whose flow is fixed at 0 (the
    plan leaves them out of its candidates instead: another mechanism, same optimum).

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
        elif (c, p) in (exclude or ()):
            bounds[i] = (0, 0)
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


# ---------------------------------------------------------------------------------------
# street networks: directions, lengths, times, snapping and shortest trips
# ---------------------------------------------------------------------------------------

#: Walking speed, km/h: on every street, and on the legs between a point and its nearest
#: node in both modes (matcher.network: "Walking is 4.8 km/h everywhere").
WALK_KMH = 4.8

#: Driving speeds (km/h) of the road classes the tests use, from the documented table
#: (matcher.network.DRIVE_SPEEDS_KMH); a class not listed drives at DEFAULT_DRIVE_KMH.
DRIVE_KMH = {"primary": 50.0, "tertiary": 40.0, "residential": 30.0, "service": 15.0}
DEFAULT_DRIVE_KMH = 30.0


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def maxspeed_kmh(value) -> float | None:
    """The documented reading of an OpenStreetMap ``maxspeed``: ``50``, ``30 mph``, ``50 km/h``.

    None when the value is missing, unreadable (``none``, ``signals``) or outside
    1..200 km/h.
    """
    import re

    if _missing(value):
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(mph|km/h)?\s*", str(value).lower())
    if m is None:
        return None
    kmh = float(m.group(1)) * (1.609344 if m.group(2) == "mph" else 1.0)
    return kmh if 1.0 <= kmh <= 200.0 else None


def street_digraph(nodes, edges, mode: str):
    """The directed street graph of one mode, by the documented rules, as a networkx DiGraph.

    ``nodes``: ``id, lat, lon``; ``edges``: ``u, v, length_m`` (NaN: the great-circle
    length) and optional ``highway, oneway, maxspeed``. An edge is never shorter than
    the great circle between its ends; walking goes both ways at :data:`WALK_KMH`;
    driving follows ``oneway`` (``yes/true/1``: u to v; ``-1/reverse``: v to u; any
    other value both ways, case and spaces ignored) at the edge's readable maxspeed,
    else its class's speed. Between two nodes the shortest edge gives the length and
    the fastest the time. Self-loops are left out, and only the largest strongly
    connected part is kept (a tie for the largest raises ValueError). Each node keeps
    its ``lat`` and ``lon``; each arc its ``length`` (m) and ``time`` (s).
    """
    import networkx as nx

    where = {
        str(i): (float(la), float(lo))
        for i, la, lo in zip(nodes["id"], nodes["lat"], nodes["lon"], strict=True)
    }
    graph = nx.DiGraph()
    for e in edges.to_dict("records"):
        u, v = str(e["u"]), str(e["v"])
        if u == v:
            continue
        straight = 1000.0 * gc_km(*where[u], *where[v])
        given = e.get("length_m")
        metres = straight if _missing(given) else max(float(given), straight)
        if mode == "walk":
            kmh = WALK_KMH
        else:
            kmh = maxspeed_kmh(e.get("maxspeed")) or DRIVE_KMH.get(
                str(e.get("highway")), DEFAULT_DRIVE_KMH
            )
        seconds = metres / (kmh / 3.6)
        tag = str(e.get("oneway")).strip().lower()
        if mode == "walk" or tag not in ("yes", "true", "1", "-1", "reverse"):
            arcs = [(u, v), (v, u)]
        elif tag in ("yes", "true", "1"):
            arcs = [(u, v)]
        else:
            arcs = [(v, u)]
        for a, b in arcs:
            if graph.has_edge(a, b):
                arc = graph[a][b]
                arc["length"] = min(arc["length"], metres)
                arc["time"] = min(arc["time"], seconds)
            else:
                graph.add_edge(a, b, length=metres, time=seconds)
    parts = sorted(nx.strongly_connected_components(graph), key=len, reverse=True)
    if len(parts) > 1 and len(parts[0]) == len(parts[1]):
        raise ValueError("two largest strongly connected parts of the same size")
    kept = graph.subgraph(parts[0]).copy()
    for n in kept:
        kept.nodes[n]["lat"], kept.nodes[n]["lon"] = where[n]
    return kept


def nearest_node(graph, lat: float, lon: float) -> tuple[str, float, float]:
    """The node nearest a point by brute force: (node, metres, metres to the runner-up)."""
    found = sorted(
        (1000.0 * gc_km(lat, lon, a["lat"], a["lon"]), n) for n, a in graph.nodes(data=True)
    )
    second = found[1][0] if len(found) > 1 else math.inf
    return found[0][1], found[0][0], second


def street_trips(graph, clusters, partners) -> dict[tuple[str, str], tuple[float, float, float]]:
    """Per (cluster_id, partner_id) whose category the partner offers: (km, minutes, straight km).

    A trip runs from the partner's point to its nearest node (great circle, walked),
    along the network to the node nearest the cluster centroid, and on to the centroid
    (walked): its km is the shortest such route (Dijkstra on ``length``), its minutes
    the fastest (Dijkstra on ``time``); the straight km is the great circle between
    the partner and the centroid. Unreachable: ``inf``.
    """
    import networkx as nx

    walk_mps = WALK_KMH / 3.6
    snapped = {
        c.cluster_id: nearest_node(graph, c.centroid_lat, c.centroid_lon)
        for c in clusters.itertuples(index=False)
    }
    out = {}
    for p in partners.itertuples(index=False):
        node, leg, _ = nearest_node(graph, p.lat, p.lon)
        metres = nx.single_source_dijkstra_path_length(graph, node, weight="length")
        seconds = nx.single_source_dijkstra_path_length(graph, node, weight="time")
        for c in clusters.itertuples(index=False):
            if c.category not in str(p.categories).split(";"):
                continue
            target, c_leg, _ = snapped[c.cluster_id]
            ends = leg + c_leg
            out[(c.cluster_id, p.partner_id)] = (
                (metres.get(target, math.inf) + ends) / 1000.0,
                (seconds.get(target, math.inf) + ends / walk_mps) / 60.0,
                gc_km(p.lat, p.lon, c.centroid_lat, c.centroid_lon),
            )
    return out


def street_eligible_pairs(trips, partners, radius_min=None) -> list[tuple[str, str, float]]:
    """Every (cluster_id, partner_id, street km) of ``trips`` within the partner's reach.

    Within reach: km <= ``radius_km`` and, when a time limit applies, minutes <= it
    (both :func:`in_radius`). The limit is the partner's own ``radius_min`` when it has
    one (a column value that is not NaN), else the run's ``radius_min`` (None: none).
    """
    own = {}
    if "radius_min" in partners:
        own = dict(zip(partners["partner_id"], partners["radius_min"], strict=True))
    radius = dict(zip(partners["partner_id"], partners["radius_km"], strict=True))
    out = []
    for (c, p), (km, minutes, _) in sorted(trips.items()):
        limit = radius_min if _missing(own.get(p)) else float(own[p])
        if in_radius(km, radius[p]) and (limit is None or in_radius(minutes, limit)):
            out.append((c, p, km))
    return out


def lexicographic_optimum_of_pairs(
    clusters, partners, pairs, quantum: float, *, severity: bool
) -> dict:
    """Solve max served, [max severity-weighted served], min cost over given pairs.

    ``pairs`` is a list of ``(cluster_id, partner_id, km)``: the great-circle pairs of
    :func:`eligible_pairs`, or the street pairs of :func:`street_eligible_pairs`.
    Demands and capacities are in quanta; costs are integer metres per quantum
    (``round(1000 * km)``), as in the contract. Returns the optimal values of each stage.
    """
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
    a = a.tocsr()
    b = np.concatenate([demand, cap])
    weight = np.array([round(d * 1000) for _, _, d in pairs], dtype=float)
    sev = np.array(
        [round(10 * clusters["severity"].to_numpy()[cidx[c]]) for c, _, _ in pairs], dtype=float
    )
    eq_a, eq_b = [np.ones(n)], []
    res = linprog(-np.ones(n), A_ub=a, b_ub=b, bounds=(0, None), method="highs")
    assert res.status == 0, res.message
    served = float(round(-res.fun))  # integral: the constraint matrix is totally unimodular
    eq_b.append(served)
    sev_opt = 0.0
    if severity:
        res = linprog(-sev, A_ub=a, b_ub=b, A_eq=np.array(eq_a), b_eq=np.array(eq_b),
                      bounds=(0, None), method="highs")  # fmt: skip
        assert res.status == 0, res.message
        sev_opt = float(round(-res.fun))
        eq_a.append(sev)
        eq_b.append(sev_opt)
    res = linprog(weight, A_ub=a, b_ub=b, A_eq=np.array(eq_a), b_eq=np.array(eq_b),
                  bounds=(0, None), method="highs")  # fmt: skip
    assert res.status == 0, res.message
    return {"served": served, "severity": sev_opt, "cost": res.fun, "pairs": pairs}
