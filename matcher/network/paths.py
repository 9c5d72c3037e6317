"""Many-to-many shortest paths with a cutoff, and the street cost of candidate pairs."""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from .._errors import Problem
from .._processes import single_threaded
from ..candidates import candidate_pairs
from ..geo import within
from .model import WALK_SPEED_KMH, StreetNetwork

__all__ = ["PARALLEL_MIN_SOURCES", "shortest", "snap_problems", "street_pairs", "trip_minutes"]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


#: Bytes of distances held at once by one batch of searches. Below glibc's largest
#: mmap threshold (32 MiB), so the batches reuse freed heap memory instead of faulting in
#: fresh zeroed pages each time (measured: 1.3x to 1.7x faster searches than 256 MiB).
_BATCH_BYTES = 24 << 20
#: Searches from at least this many distinct sources run in several processes (when this
#: process may fork: see :func:`matcher._processes.single_threaded`).
PARALLEL_MIN_SOURCES = 2_000

#: The graph searched by forked batch processes: set only by a process of one thread,
#: just before its pool forks (the children inherit it), and cleared after.
_FORKED_GRAPH: csr_matrix | None = None


def _search(
    graph: csr_matrix, sources: IntArray, limit: float, rows: IntArray, targets: IntArray
) -> FloatArray:
    """Run one batch of bounded searches on ``graph``; return the values picked."""
    dist = dijkstra(graph, directed=True, indices=sources, limit=limit)
    return np.asarray(dist[rows, targets], dtype=np.float64)


def _search_forked(
    sources: IntArray, limit: float, rows: IntArray, targets: IntArray
) -> FloatArray:
    """Run :func:`_search` in a forked batch process, on the graph it inherited."""
    assert _FORKED_GRAPH is not None
    return _search(_FORKED_GRAPH, sources, limit, rows, targets)


def shortest(
    net: StreetNetwork,
    weight: str,
    sources: IntArray,
    targets: IntArray,
    limits: FloatArray,
    *,
    workers: int | None = None,
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
    workers : int, optional
        Processes for large searches (default: the number of CPUs; 1: this process).

    Returns
    -------
    numpy.ndarray of float64
        The exact shortest value of each pair (the sum along its path), or ``inf``
        when it exceeds the pair's limit: the same values however the searches are
        batched or spread over processes.

    Notes
    -----
    One Dijkstra search per distinct source (:func:`scipy.sparse.csgraph.dijkstra`),
    bounded by the largest limit of the source's pairs; sources are grouped by limit so
    that a batch's searches stop at about the same radius, and only the pairs' targets
    are kept. A value does not depend on the batch, nor the process, it was computed in:
    with nonnegative weights a node's distance is the minimum over its settled
    predecessors, whatever else the search settles.
    """
    global _FORKED_GRAPH
    graph = net.length if weight == "length" else net.time
    out = np.full(sources.size, np.inf)
    if sources.size == 0:
        return out
    uniq, inv = np.unique(sources, return_inverse=True)
    reach = np.zeros(uniq.size)
    np.maximum.at(reach, inv, limits)
    order = np.lexsort((uniq, reach))
    n_workers = max(1, workers or os.cpu_count() or 1)
    parallel = (
        n_workers > 1
        and uniq.size >= PARALLEL_MIN_SOURCES
        and hasattr(os, "fork")
        and single_threaded()
        and not multiprocessing.current_process().daemon  # a pool's worker has no children
    )
    batch = max(1, min(512, _BATCH_BYTES // (8 * max(net.n_nodes, 1))))
    if parallel:  # several batches per process, so that they share the work evenly
        batch = max(1, min(batch, -(-uniq.size // (4 * n_workers))))
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    pair_rank = rank[inv]
    by_rank = np.argsort(pair_rank, kind="stable")
    bounds = np.searchsorted(pair_rank[by_rank], np.arange(0, uniq.size + batch, batch))
    jobs = []
    for b, start in enumerate(range(0, uniq.size, batch)):
        chunk = order[start : start + batch]
        pick = by_rank[bounds[b] : bounds[b + 1]]
        jobs.append(
            (pick, (uniq[chunk], float(reach[chunk].max()), pair_rank[pick] - start, targets[pick]))
        )
    logger.debug(
        "%s searches from %d sources in %d batch(es)%s", weight, uniq.size, len(jobs),
        f" on {min(n_workers, len(jobs))} processes" if parallel and len(jobs) > 1 else "",
    )  # fmt: skip
    found: list[FloatArray] | None = None
    if parallel and len(jobs) > 1:
        _FORKED_GRAPH = graph
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(min(n_workers, len(jobs)), mp_context=context) as pool:
                found = list(pool.map(_search_forked, *zip(*(job for _, job in jobs), strict=True)))
        except BrokenProcessPool:  # a batch process died (e.g. out of memory): go on here
            logger.warning("a search process died: searching in this process instead")
        finally:
            _FORKED_GRAPH = None
    if found is None:
        found = [_search(graph, *job) for _, job in jobs]
    for (pick, _), values in zip(jobs, found, strict=True):
        out[pick] = values
    # beyond its own limit a pair is inf, whichever batch (and its limit) found it
    out[out > limits] = np.inf
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
    *,
    workers: int | None = None,
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
    workers : int, optional
        Processes for the searches (see :func:`shortest`).

    Returns
    -------
    pandas.DataFrame
        ``cluster, partner, distance_km`` (the street distance), ``straight_km`` and
        ``travel_min``, sorted by cluster then partner. Driving pairs without a time
        limit have no ``travel_min`` (NaN) yet: eligibility does not need it, and
        :func:`trip_minutes` gives it for the pairs a plan uses.

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
    c = pairs["cluster"].to_numpy()
    p = pairs["partner"].to_numpy()
    p_node, p_snap = net.snap(partners["lat"], partners["lon"])
    c_node, c_snap = net.snap(clusters["centroid_lat"], clusters["centroid_lon"])
    ends = p_snap[p] + c_snap[c]
    limit_m = radius_km[p] * 1000.0 - ends
    metres = (
        shortest(net, "length", p_node[p], c_node[c], _widened(limit_m), workers=workers) + ends
    )
    dist_km = metres / 1000.0
    keep = within(dist_km, radius_km[p])
    limit = minutes[p]
    timed = np.isfinite(limit)
    if net.mode == "walk":
        travel_min = metres / (WALK_SPEED_KMH / 3.6) / 60.0
    else:
        travel_min = np.full(c.size, np.nan)
        sel = keep & timed
        cap = limit[sel] * 60.0 - ends[sel] / _WALK_MPS
        travel_min[sel] = _drive_minutes(net, p_node[p][sel], c_node[c][sel], ends[sel], cap,
                                         workers)  # fmt: skip
    keep &= ~timed | within(np.nan_to_num(travel_min, nan=np.inf), limit)
    out = pd.DataFrame(
        {
            "cluster": c[keep],
            "partner": p[keep],
            "distance_km": dist_km[keep],
            "straight_km": pairs["distance_km"].to_numpy()[keep],
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


#: Walking speed in metres per second: the legs to and from the network.
_WALK_MPS = WALK_SPEED_KMH / 3.6


def _drive_minutes(
    net: StreetNetwork,
    sources: IntArray,
    targets: IntArray,
    ends: FloatArray,
    cap: FloatArray,
    workers: int | None,
) -> FloatArray:
    """Minutes of the fastest trips (snap legs walked) whose network part is within ``cap`` s."""
    seconds = shortest(net, "time", sources, targets, _widened(cap), workers=workers)
    return (seconds + ends / _WALK_MPS) / 60.0


#: :func:`trip_minutes` first searches at the mean speed only when the slowest speed is
#: below this share of it (else the safe bound is hardly farther).
FIRST_SEARCH_SHARE = 0.75


def trip_minutes(
    net: StreetNetwork,
    clusters: pd.DataFrame,
    partners: pd.DataFrame,
    pairs: pd.DataFrame,
    *,
    workers: int | None = None,
) -> FloatArray:
    """Travel minutes of eligible pairs, filling those :func:`street_pairs` left out.

    Parameters
    ----------
    net : StreetNetwork
        The network.
    clusters, partners : pandas.DataFrame
        The tables of :func:`street_pairs`.
    pairs : pandas.DataFrame
        Rows of :func:`street_pairs` (``cluster, partner, distance_km, travel_min``).
    workers : int, optional
        Processes for the searches.

    Returns
    -------
    numpy.ndarray of float64
        The fastest trip of each pair, minutes.

    Notes
    -----
    The fastest trip takes at most the shortest path's time, so at most its length at
    the network's slowest speed: the safe bound of the search. When the slowest streets
    are much slower than the length-weighted mean speed (below
    :data:`FIRST_SEARCH_SHARE` of it), a first search stops at the length at the mean
    speed, and only the trips not found by then are searched again up to the safe
    bound. Both give exact values.
    """
    minutes = pairs["travel_min"].to_numpy(dtype=np.float64).copy()
    todo = np.flatnonzero(np.isnan(minutes))
    if todo.size == 0:
        return minutes
    c = pairs["cluster"].to_numpy()[todo]
    p = pairs["partner"].to_numpy()[todo]
    p_node, p_snap = net.snap(partners["lat"].to_numpy()[p], partners["lon"].to_numpy()[p])
    c_node, c_snap = net.snap(
        clusters["centroid_lat"].to_numpy()[c], clusters["centroid_lon"].to_numpy()[c]
    )
    ends = p_snap + c_snap
    street_m = np.maximum(pairs["distance_km"].to_numpy()[todo] * 1000.0 - ends, 0.0)
    # a first, shorter search pays when the slowest streets are much slower than most
    first = net.mean_kmh if net.min_kmh < FIRST_SEARCH_SHARE * net.mean_kmh else net.min_kmh
    found = _drive_minutes(net, p_node, c_node, ends, street_m / (first / 3.6), workers)
    again = ~np.isfinite(found)
    if again.any():
        found[again] = _drive_minutes(
            net, p_node[again], c_node[again], ends[again],
            street_m[again] / (net.min_kmh / 3.6), workers,
        )  # fmt: skip
    minutes[todo] = found
    return minutes
