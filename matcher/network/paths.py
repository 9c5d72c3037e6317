"""Many-to-many shortest paths with a cutoff, and the street cost of candidate pairs."""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse.csgraph import dijkstra

from .._errors import Problem
from ..candidates import candidate_pairs
from ..geo import within
from .model import WALK_SPEED_KMH, StreetNetwork

__all__ = ["shortest", "snap_problems", "street_pairs"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


#: Bytes of distances held at once by one batch of searches.
_BATCH_BYTES = 256 << 20


def shortest(
    net: StreetNetwork,
    weight: str,
    sources: IntArray,
    targets: IntArray,
    limits: FloatArray,
) -> FloatArray:
    """Shortest network distance (m) or time (s) from each source node to its target.

    Parameters
    ----------
    net : StreetNetwork
        The network.
    weight : {"length", "time"}
        Metres or seconds.
    sources, targets : numpy.ndarray of int64
        Node positions, one pair per element.
    limits : numpy.ndarray of float64
        Per pair, the largest value of interest: beyond it the answer may be ``inf``.

    Returns
    -------
    numpy.ndarray of float64
        The exact shortest value of each pair (the sum along its path), or ``inf``
        when it exceeds the pair's limit.

    Notes
    -----
    One Dijkstra search per distinct source (:func:`scipy.sparse.csgraph.dijkstra`),
    bounded by the largest limit of the source's pairs; sources are grouped by limit so
    that a batch's searches stop at about the same radius. A value does not depend on
    the batch it was computed in.
    """
    graph = net.length if weight == "length" else net.time
    out = np.full(sources.size, np.inf)
    if sources.size == 0:
        return out
    uniq, inv = np.unique(sources, return_inverse=True)
    reach = np.zeros(uniq.size)
    np.maximum.at(reach, inv, limits)
    order = np.lexsort((uniq, reach))
    batch = max(1, min(512, _BATCH_BYTES // (8 * max(net.n_nodes, 1))))
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    pair_rank = rank[inv]
    by_rank = np.argsort(pair_rank, kind="stable")
    bounds = np.searchsorted(pair_rank[by_rank], np.arange(0, uniq.size + batch, batch))
    for b, start in enumerate(range(0, uniq.size, batch)):
        chunk = order[start : start + batch]
        limit = float(reach[chunk].max())
        dist = dijkstra(graph, directed=True, indices=uniq[chunk], limit=limit)
        pick = by_rank[bounds[b] : bounds[b + 1]]
        out[pick] = dist[pair_rank[pick] - start, targets[pick]]
    return out


def snap_problems(
    net: StreetNetwork,
    lat: FloatArray,
    lon: FloatArray,
    rows: IntArray,
    file: str,
    max_snap_m: float,
) -> tuple[npt.NDArray[np.bool_], list[Problem]]:
    """Flag the points farther than ``max_snap_m`` from the network, with one problem each."""
    _, metres = net.snap(lat, lon)
    far = ~(metres <= max_snap_m)
    problems = [
        Problem(
            file,
            int(rows[i]),
            "lat/lon",
            f"{lat[i]:.6f}, {lon[i]:.6f}",
            f"is {metres[i]:,.0f} m from the nearest node of the {net.mode} network (at most "
            f"{max_snap_m:,.0f} m; the point is outside the network's area, or raise "
            "max_snap_m)",
        )
        for i in np.flatnonzero(far)
    ]
    return far, problems


def _widened(limit: FloatArray) -> FloatArray:
    """Return a search limit a little past ``limit``: rounding never cuts a pair at its edge.

    The limits are radii minus the snap legs, rounded; a path exactly at the radius can sum
    a few ulps past them. The searches go a millionth further and :func:`matcher.geo.within`
    decides, as for straight lines.
    """
    return np.maximum(np.asarray(limit) * (1 + 1e-9) + 1e-6, 0.0)


def street_pairs(
    clusters: pd.DataFrame,
    partners: pd.DataFrame,
    net: StreetNetwork,
    radius_min: float | None,
) -> pd.DataFrame:
    """Every eligible (cluster, partner) pair on the street network, with its costs.

    A partner may serve a cluster when the cluster's category is among its categories,
    its street distance is at most its ``radius_km`` and, when it has one (its own
    ``radius_min`` column, else the run's ``radius_min``), its travel time is at most
    that many minutes.

    Parameters
    ----------
    clusters, partners : pandas.DataFrame
        As for :func:`matcher.candidates.candidate_pairs`.
    net : StreetNetwork
        The network of the travel mode.
    radius_min : float or None
        The run-wide travel time limit, minutes (a partner's own value wins).

    Returns
    -------
    pandas.DataFrame
        ``cluster, partner, distance_km`` (the street distance), ``straight_km`` and
        ``travel_min``, sorted by cluster then partner.

    Notes
    -----
    The street distance runs from the partner's point to its nearest node, along the
    shortest path to the node nearest the cluster centre, and on to the centre; the
    two ends are great-circle lengths, travelled at walking speed. The travel time is
    the fastest such trip (its path may differ from the shortest one). Candidates come
    from the great-circle index with each partner's radius, and with a time limit also
    the time limit times the network's top speed: no street trip is shorter than the
    straight line, nor faster than the top speed, so no eligible pair is missed.
    """
    radius_km = partners["radius_km"].to_numpy(dtype=np.float64)
    minutes = np.full(len(partners), np.inf)
    if radius_min is not None:
        minutes[:] = radius_min
    if "radius_min" in partners:
        own = pd.to_numeric(partners["radius_min"], errors="coerce").to_numpy(dtype=np.float64)
        minutes = np.where(np.isnan(own), minutes, own)
    reach_km = np.minimum(radius_km, minutes / 60.0 * net.max_kmh)
    pairs = candidate_pairs(clusters, partners, radius_km=reach_km)
    pairs = pairs.rename(columns={"distance_km": "straight_km"})
    c = pairs["cluster"].to_numpy()
    p = pairs["partner"].to_numpy()
    p_node, p_snap = net.snap(partners["lat"], partners["lon"])
    c_node, c_snap = net.snap(clusters["centroid_lat"], clusters["centroid_lon"])
    ends = p_snap[p] + c_snap[c]
    walk_mps = WALK_SPEED_KMH / 3.6
    limit_m = radius_km[p] * 1000.0 - ends
    metres = shortest(net, "length", p_node[p], c_node[c], _widened(limit_m)) + ends
    dist_km = metres / 1000.0
    keep = within(dist_km, radius_km[p])
    if net.mode == "walk":
        seconds = metres / walk_mps
    else:
        # the fastest trip is at most the shortest path's time, at most its length at the
        # slowest speed: that bounds the search when there is no time limit
        slow = (np.where(np.isfinite(metres), metres, 0.0) - ends) / (net.min_kmh / 3.6)
        cap = np.where(np.isfinite(minutes[p]), minutes[p] * 60.0 - ends / walk_mps, slow)
        sel = keep & (_widened(cap) > 0)
        seconds = np.full(c.size, np.inf)
        seconds[sel] = (
            shortest(net, "time", p_node[p][sel], c_node[c][sel], _widened(cap[sel]))
            + ends[sel] / walk_mps
        )
    travel_min = seconds / 60.0
    keep &= ~np.isfinite(minutes[p]) | within(travel_min, minutes[p])
    keep &= np.isfinite(travel_min)
    out = pd.DataFrame(
        {
            "cluster": c[keep],
            "partner": p[keep],
            "distance_km": dist_km[keep],
            "straight_km": pairs["straight_km"].to_numpy()[keep],
            "travel_min": travel_min[keep],
        }
    )
    logger.debug(
        "%d of %d great-circle candidate pairs are within reach by %s",
        len(out),
        len(pairs),
        net.mode,
    )
    return out
