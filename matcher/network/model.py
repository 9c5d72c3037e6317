"""A street network for one travel mode: nodes, directed edges, lengths and times.

The network is a directed graph held as two sparse matrices (metres and seconds), the
form :mod:`scipy.sparse.csgraph` searches. :func:`build_network` makes it from a node
table and an edge table (see :mod:`matcher.network.readers` for the file formats) and
keeps its largest strongly connected part, so that every kept node reaches every other.

Rules
-----
* **Directions.** Walking ignores one-way tags: every street is walked both ways.
  Driving follows them: ``oneway`` ``yes``/``true``/``1`` runs from ``u`` to ``v``,
  ``-1``/``reverse`` from ``v`` to ``u``, anything else both ways. A file whose edges are
  already directed (an OSMnx GraphML) is driven as it is.
* **Lengths.** An edge is never shorter than the great-circle distance between its
  ends (a shorter given length is raised to it), so a network distance is never
  shorter than the straight line; this is what lets candidates come from the
  great-circle index without missing a pair.
* **Times.** Walking is :data:`WALK_SPEED_KMH` everywhere. Driving takes an edge's
  ``maxspeed`` when it can be read (``50``, ``30 mph``, ``50 km/h``), else the speed of
  its road class (:data:`DRIVE_SPEEDS_KMH`, overridable), else :data:`DEFAULT_DRIVE_KMH`.
  These are free-flow speeds: no congestion, turns or signals.
* **Parallel edges.** Between two nodes the shortest edge gives the distance and the
  fastest the time.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .._errors import InputValidationError, Problem
from ..geo import haversine_km, to_unit_vectors
from ..limits import MAX_NETWORK_EDGES, MAX_NETWORK_NODES

__all__ = [
    "DEFAULT_DRIVE_KMH",
    "DRIVE_SPEEDS_KMH",
    "MIN_CONNECTED_SHARE",
    "MODES",
    "StreetNetwork",
    "WALK_SPEED_KMH",
    "build_network",
    "speed_kmh",
]

logger = logging.getLogger(__name__)

#: The travel modes on a street network.
MODES: tuple[str, ...] = ("walk", "drive")

#: Walking speed, km/h, on every street and on the way to and from the nearest node.
WALK_SPEED_KMH = 4.8

#: Free-flow driving speed per OpenStreetMap road class (``highway``), km/h: typical
#: urban limits (US city streets 30 mph ~ 48 km/h are rounded down for stops and
#: signals). Override with ``speeds=`` or ``--speed CLASS=KMH``.
DRIVE_SPEEDS_KMH: Mapping[str, float] = {
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
#: Driving speed, km/h, of a road class not in the table.
DEFAULT_DRIVE_KMH = 30.0
#: Bounds of a speed, km/h.
MIN_SPEED_KMH, MAX_SPEED_KMH = 1.0, 200.0

#: The largest strongly connected part must hold at least this share of the nodes: a
#: network in pieces is refused instead of silently losing most of its streets.
MIN_CONNECTED_SHARE = 0.5

_FORWARD = frozenset({"yes", "true", "1"})
_BACKWARD = frozenset({"-1", "reverse"})
_MAXSPEED = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$", re.IGNORECASE)
_CLASS = re.compile(r"[A-Za-z_]+")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def speed_kmh(maxspeed: Any) -> float | None:
    """Return the speed, km/h, of an OpenStreetMap ``maxspeed`` value (None: unreadable).

    Examples
    --------
    >>> speed_kmh("30 mph"), speed_kmh("50"), speed_kmh("none"), speed_kmh("['25', '30']")
    (48.28032, 50.0, None, None)
    """
    if maxspeed is None or (isinstance(maxspeed, float) and math.isnan(maxspeed)):
        return None
    m = _MAXSPEED.match(str(maxspeed))
    if m is None:
        return None
    value = float(m.group(1)) * (1.609344 if (m.group(2) or "").lower() == "mph" else 1.0)
    return value if MIN_SPEED_KMH <= value <= MAX_SPEED_KMH else None


def _road_class(highway: Any) -> str:
    """Return the first road class of a ``highway`` value (OSMnx writes lists as text)."""
    if highway is None or (isinstance(highway, float) and math.isnan(highway)):
        return ""
    if isinstance(highway, list | tuple):
        return str(highway[0]) if highway else ""
    found = _CLASS.search(str(highway))
    return found.group(0) if found else ""


def _distinct(column: pd.Series | None, n: int) -> tuple[IntArray, list[Any]]:
    """Codes of each row's value and the distinct values (lists, as OSM may give, as text)."""
    if column is None:
        return np.zeros(n, dtype=np.int64), [""]
    values = column.astype(object).to_numpy()
    try:
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
    except TypeError:  # unhashable values (lists): compare their text
        codes, uniques = pd.factorize(np.array([str(v) for v in values], dtype=object))
        first = np.unique(codes, return_index=True)[1]
        return codes.astype(np.int64), [values[i] for i in first]
    return codes.astype(np.int64), list(uniques)


@dataclass(frozen=True, eq=False)
class StreetNetwork:
    """The largest strongly connected part of a street network, for one mode.

    Attributes
    ----------
    mode : {"walk", "drive"}
        The travel mode.
    node_id : numpy.ndarray of str
        The source's id of each node (an OpenStreetMap node id).
    lat, lon : numpy.ndarray of float64
        Each node's point (WGS84).
    length : scipy.sparse.csr_matrix
        ``length[i, j]``: metres of the shortest edge from node ``i`` to node ``j``.
    time : scipy.sparse.csr_matrix
        ``time[i, j]``: seconds of the fastest edge from ``i`` to ``j``.
    max_kmh : float
        The fastest speed of the network or of walking to it, km/h: a trip of ``t``
        hours is never longer than ``t * max_kmh`` km.
    min_kmh : float
        The slowest edge speed, km/h.
    mean_kmh : float
        The length-weighted mean edge speed, km/h.
    source : str
        The file it was read from.
    sha256 : str
        The SHA-256 of that file.
    dropped : int
        Nodes left out because they are not in the largest strongly connected part.
    speeds : dict
        The road-class speeds used (km/h; empty when walking).
    overrides : dict
        The road-class speeds given to replace the defaults (km/h), to read the same
        network again.
    """

    mode: Literal["walk", "drive"]
    node_id: npt.NDArray[np.str_]
    lat: FloatArray
    lon: FloatArray
    length: csr_matrix
    time: csr_matrix
    max_kmh: float
    min_kmh: float
    mean_kmh: float
    source: str
    sha256: str
    dropped: int = 0
    speeds: dict[str, float] = field(default_factory=dict)
    overrides: dict[str, float] = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        """Number of nodes."""
        return int(self.lat.size)

    @property
    def n_edges(self) -> int:
        """Number of directed edges (after merging parallel ones)."""
        return int(self.length.nnz)

    def _tree(self) -> cKDTree:
        tree = self.__dict__.get("_kd")
        if tree is None:
            tree = cKDTree(to_unit_vectors(self.lat, self.lon))
            object.__setattr__(self, "_kd", tree)
        return tree

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_kd", None)  # rebuilt where it is used
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def snap(self, lat: npt.ArrayLike, lon: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
        """Return the nearest node of each point and its great-circle distance in metres.

        Parameters
        ----------
        lat, lon : array_like
            Points (WGS84 degrees).

        Returns
        -------
        (numpy.ndarray of int64, numpy.ndarray of float64)
            Node positions and distances (m).
        """
        lat = np.asarray(lat, dtype=np.float64)
        lon = np.asarray(lon, dtype=np.float64)
        if lat.size == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        _, node = self._tree().query(to_unit_vectors(lat, lon), k=1)
        node = np.asarray(node, dtype=np.int64)
        metres = haversine_km(lat, lon, self.lat[node], self.lon[node]) * 1000.0
        return node, np.asarray(metres, dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """Return a JSON-ready description (for the plan summary)."""
        return {
            "mode": self.mode,
            "file": self.source,
            "sha256": self.sha256,
            "nodes": self.n_nodes,
            "edges": self.n_edges,
            "nodes_left_out": self.dropped,
            "walk_speed_kmh": WALK_SPEED_KMH,
            "speeds_kmh": dict(sorted(self.speeds.items())),
            "speed_overrides_kmh": dict(sorted(self.overrides.items())),
        }


def _problem(source: str, reason: str, field: str | None = None, value: Any = None) -> Problem:
    return Problem(source, None, field, value, reason)


def build_network(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    mode: str,
    *,
    directed: bool = False,
    speeds: Mapping[str, float] | None = None,
    source: str = "network",
    sha256: str = "",
) -> StreetNetwork:
    """Make a :class:`StreetNetwork` from a node table and an edge table.

    Parameters
    ----------
    nodes : pandas.DataFrame
        ``id, lat, lon`` (WGS84).
    edges : pandas.DataFrame
        ``u, v`` (node ids), and optional ``length_m`` (NaN: the great-circle length),
        ``highway``, ``oneway``, ``maxspeed``.
    mode : {"walk", "drive"}
        The travel mode.
    directed : bool
        Whether each edge row is one direction already (an OSMnx graph); otherwise
        ``oneway`` decides the directions.
    speeds : mapping, optional
        Road-class speeds (km/h) that replace the defaults of :data:`DRIVE_SPEEDS_KMH`.
    source, sha256 : str
        What the network was read from, for messages and the plan summary.

    Returns
    -------
    StreetNetwork

    Raises
    ------
    InputValidationError
        When the tables are not a usable network: no edges, points that are not
        WGS84 degrees, edges naming missing nodes, negative lengths, or a largest
        strongly connected part below :data:`MIN_CONNECTED_SHARE` of the nodes.
    """
    if mode not in MODES:
        raise InputValidationError(
            [_problem(source, f"must be one of {', '.join(MODES)}", "travel", mode)]
        )
    table = dict(DRIVE_SPEEDS_KMH)
    problems: list[Problem] = []
    for name, kmh_given in (speeds or {}).items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z_]{1,40}", name):
            problems.append(_problem(source, "a road class is an OpenStreetMap highway value "
                                     "such as residential", "speed", name))  # fmt: skip
        elif not (
            isinstance(kmh_given, int | float)
            and MIN_SPEED_KMH <= kmh_given <= MAX_SPEED_KMH
        ):
            problems.append(
                _problem(source, f"a speed is a number of km/h >= {MIN_SPEED_KMH:g} and <= "
                         f"{MAX_SPEED_KMH:g}, written CLASS=KMH", "speed", f"{name}={kmh_given}")
            )  # fmt: skip
        else:
            table[name] = float(kmh_given)
    if problems:
        raise InputValidationError(problems)
    if len(nodes) > MAX_NETWORK_NODES or len(edges) > MAX_NETWORK_EDGES:
        raise InputValidationError(
            [_problem(source, f"holds {len(nodes):,} nodes and {len(edges):,} edges; at most "
                      f"{MAX_NETWORK_NODES:,} and {MAX_NETWORK_EDGES:,} are read (cut the "
                      "network to the plan's area)", "network")]
        )  # fmt: skip
    if len(edges) == 0 or len(nodes) == 0:
        raise InputValidationError(
            [_problem(source, "holds no street (no edges or no nodes): not a street network")]
        )
    ids = nodes["id"].astype(str).to_numpy()
    lat = pd.to_numeric(nodes["lat"], errors="coerce").to_numpy(dtype=np.float64)
    lon = pd.to_numeric(nodes["lon"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        problems.append(
            _problem(
                source,
                f"{int(bad.sum()):,} node(s) are not WGS84 longitude/latitude degrees (the "
                "first shown); the file's coordinate reference system is wrong or missing",
                "node",
                f"{ids[i]} at ({lon[i]!r}, {lat[i]!r})",
            )
        )
    dup = pd.Index(ids).duplicated()
    if dup.any():
        problems.append(_problem(source, "node ids must be unique", "node", ids[dup][0]))
    if problems:
        raise InputValidationError(problems)
    pos = pd.Index(ids)
    u = pos.get_indexer(edges["u"].astype(str).to_numpy())
    v = pos.get_indexer(edges["v"].astype(str).to_numpy())
    missing = (u < 0) | (v < 0)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise InputValidationError(
            [
                _problem(
                    source,
                    f"{int(missing.sum()):,} edge(s) name a node that is not among the "
                    "nodes (the first shown)",
                    "edge",
                    f"{edges['u'].iloc[i]} -> {edges['v'].iloc[i]}",
                )
            ]
        )
    straight = haversine_km(lat[u], lon[u], lat[v], lon[v]) * 1000.0
    given = (
        pd.to_numeric(edges["length_m"], errors="coerce").to_numpy(dtype=np.float64)
        if "length_m" in edges
        else np.full(len(edges), np.nan)
    )
    if (np.isfinite(given) & (given < 0)).any() or np.isinf(given).any():
        i = int(np.flatnonzero(~np.isnan(given) & ~(given >= 0) | np.isinf(given))[0])
        raise InputValidationError(
            [_problem(source, "edge lengths must be finite and >= 0 (metres)", "length_m",
                      given[i])]  # fmt: skip
        )
    metres = np.fmax(np.where(np.isnan(given), straight, given), straight)
    # the speed of each edge
    if mode == "walk":
        kmh = np.full(len(edges), WALK_SPEED_KMH)
        used: dict[str, float] = {}
    else:
        # each distinct value is read once (a city has a few dozen, not one per edge)
        c_codes, c_values = _distinct(edges["highway"] if "highway" in edges else None, len(edges))
        classes = [_road_class(h) for h in c_values]
        class_kmh = np.array([float(table.get(c, DEFAULT_DRIVE_KMH)) for c in classes])
        kmh = class_kmh[c_codes]
        if "maxspeed" in edges:
            m_codes, m_values = _distinct(edges["maxspeed"], len(edges))
            limit = np.array([speed_kmh(v) or np.nan for v in m_values])[m_codes]
            kmh = np.where(np.isnan(limit), kmh, limit)
        used = {c: float(table.get(c, DEFAULT_DRIVE_KMH)) for c in set(classes)}
    seconds = metres / (kmh / 3.6)
    # directions
    if directed:
        fwd = np.ones(len(edges), dtype=bool)
        bwd = np.full(len(edges), mode == "walk")
    elif mode == "walk":
        fwd = bwd = np.ones(len(edges), dtype=bool)
    else:
        tag = (
            edges["oneway"].astype(str).str.strip().str.lower().to_numpy()
            if "oneway" in edges
            else np.full(len(edges), "")
        )
        only_fwd = np.isin(tag, list(_FORWARD))
        only_bwd = np.isin(tag, list(_BACKWARD))
        fwd, bwd = ~only_bwd, ~only_fwd
    tails = np.concatenate([u[fwd], v[bwd]])
    heads = np.concatenate([v[fwd], u[bwd]])
    lengths = np.concatenate([metres[fwd], metres[bwd]])
    times = np.concatenate([seconds[fwd], seconds[bwd]])
    loop = tails == heads
    tails, heads, lengths, times = tails[~loop], heads[~loop], lengths[~loop], times[~loop]
    if tails.size == 0:
        raise InputValidationError(
            [_problem(source, "holds no street between two distinct nodes: not a street network")]
        )
    n = ids.size
    # the largest strongly connected part
    adj = csr_matrix((np.ones(tails.size), (tails, heads)), shape=(n, n))
    count, label = connected_components(adj, directed=True, connection="strong")
    sizes = np.bincount(label, minlength=count)
    best = int(np.argmax(sizes))
    touched = np.zeros(n, dtype=bool)
    touched[tails] = touched[heads] = True
    share = sizes[best] / max(int(touched.sum()), 1)
    if sizes[best] < 2 or share < MIN_CONNECTED_SHARE:
        raise InputValidationError(
            [
                _problem(
                    source,
                    f"is disconnected: its largest strongly connected part holds "
                    f"{int(sizes[best]):,} of {int(touched.sum()):,} nodes ({share:.0%}); at "
                    f"least {MIN_CONNECTED_SHARE:.0%} must reach each other by {mode}",
                )
            ]
        )
    keep = label == best
    new = np.cumsum(keep) - 1
    inside = keep[tails] & keep[heads]
    t, h = new[tails[inside]], new[heads[inside]]
    m = int(keep.sum())
    length = _min_matrix(t, h, lengths[inside], m)
    time = _min_matrix(t, h, times[inside], m)
    dropped = int(touched.sum()) - m
    if dropped:
        logger.info(
            "%s: %d node(s) outside the largest strongly connected part are left out",
            source,
            dropped,
        )
    return StreetNetwork(
        mode=mode,  # type: ignore[arg-type]
        node_id=ids[keep],
        lat=lat[keep],
        lon=lon[keep],
        length=length,
        time=time,
        max_kmh=float(max(kmh.max(), WALK_SPEED_KMH)),
        min_kmh=float(kmh.min()),
        mean_kmh=float(metres.sum() / (seconds.sum() / 3600.0) / 1000.0) if seconds.sum() > 0
        else float(kmh.mean()),
        source=source,
        sha256=sha256,
        dropped=dropped,
        speeds=used,
        overrides={k: float(v) for k, v in (speeds or {}).items()} if mode == "drive" else {},
    )


def _min_matrix(tails: IntArray, heads: IntArray, weight: FloatArray, n: int) -> csr_matrix:
    """Return a CSR matrix of the smallest weight of each (tail, head)."""
    order = np.lexsort((weight, heads, tails))
    t, h, w = tails[order], heads[order], weight[order]
    first = np.ones(t.size, dtype=bool)
    first[1:] = (t[1:] != t[:-1]) | (h[1:] != h[:-1])
    t, h, w = t[first], h[first], w[first]
    # a zero-length edge becomes the smallest positive double, so that no sparse operation
    # that drops stored zeros (csgraph keeps them) can lose it; no sum changes by that
    w = np.where(w > 0, w, np.finfo(np.float64).tiny)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.add.at(indptr, t + 1, 1)
    return csr_matrix((w, h, np.cumsum(indptr)), shape=(n, n))
