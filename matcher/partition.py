"""Split a plan into independent regions, exactly: no region shares a cluster or a pair.

A plan can be solved region by region (see :mod:`matcher.region`) when no two regions
could ever share

- a cluster: DBSCAN chains needs of one category that lie within ``cluster_km`` of
  each other (the chord ``eps``);
- an eligible pair: a partner may serve a cluster whose centroid lies within its
  ``radius_km``; every member of a cluster lies within ``max_cluster_radius_km`` of
  its centroid (oversize clusters are split until they fit), so such a partner lies
  within ``radius_km + max_cluster_radius_km`` of every member;
- a neighborhood floor: the clusters of a neighborhood with ``min_coverage`` share
  one allowance.

Needs go to cells of a grid over 3-D unit vectors, per category; the cell side is at
least ``eps``, so two needs within ``eps`` lie in the same or in adjacent cells. The
graph whose nodes are occupied cells, partners and floored neighborhoods, with edges
between adjacent occupied cells of one category, from each need's cell to its floored
neighborhood, and from each partner to every cell of its categories that its reach
(plus the cell's half diagonal) touches, over-approximates all three relations; its
connected components are the regions. Chords are Euclidean distances, so the triangle
inequality holds, and the chord of a sum of great-circle distances is at most the sum
of their chords, so no distance test here is tighter than the exact one.

Regions are then packed into a number of tasks of similar size (largest first, into
the lightest task). A region's result does not depend on which others share its
task.
"""

from __future__ import annotations

import heapq
import logging
import math

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .candidates import partner_categories
from .config import MatchConfig
from .geo import chord_for_km, to_unit_vectors

__all__ = ["partition", "region_labels"]

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]

#: Relative slack on every distance bound (the exact tests use far smaller tolerances).
_SLACK = 1e-6
#: The smallest cell side, as a chord (about 25 m): 20 bits per axis in a cell key.
_MIN_CELL = 2.0**-18
#: The 13 cell offsets that, with their opposites, make the 26 neighbours of a cell.
_OFFSETS = [
    (dx, dy, dz)
    for dx in (-1, 0, 1)
    for dy in (-1, 0, 1)
    for dz in (-1, 0, 1)
    if (dx, dy, dz) > (0, 0, 0)
]
#: Partners queried against the cell index at a time (bounds the memory of the hits).
_CHUNK = 20_000


def _cell_keys(idx: IntArray) -> IntArray:
    return (idx[:, 0] << 42) | (idx[:, 1] << 21) | idx[:, 2]


def _components(n: int, rows: IntArray, cols: IntArray) -> IntArray:
    adj = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    return connected_components(adj, directed=False)[1].astype(np.int64)


def region_labels(
    needs: pd.DataFrame,
    partners: pd.DataFrame,
    config: MatchConfig,
    floored: IntArray | None = None,
) -> tuple[IntArray, IntArray]:
    """Label each need and partner with its region.

    Parameters
    ----------
    needs : pandas.DataFrame
        ``category, lat, lon``.
    partners : pandas.DataFrame
        ``categories, lat, lon, radius_km``.
    config : MatchConfig
        ``cluster_km`` and ``max_cluster_radius_km``.
    floored : numpy.ndarray of int64, optional
        Per need: a label shared by the needs of one neighborhood with a floor, or -1.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The region of each need, and of each partner (-1 for a partner that no need
        could reach: it serves nothing).

    Examples
    --------
    >>> needs = pd.DataFrame({"category": ["food_access"] * 3,
    ...                       "lat": [41.88, 41.884, 42.5], "lon": [-87.63] * 3})
    >>> partners = pd.DataFrame({"categories": ["food_access", "education"],
    ...     "lat": [41.9, 41.9], "lon": [-87.6, -87.6], "radius_km": [5.0, 5.0]})
    >>> region_labels(needs, partners, MatchConfig())
    (array([0, 0, 1]), array([ 0, -1]))
    """
    n_needs = len(needs)
    xyz = to_unit_vectors(needs["lat"], needs["lon"])
    eps = float(chord_for_km(config.cluster_km)) * (1 + _SLACK)
    widest = config.max_cluster_radius_km * (1 + _SLACK)
    radius = partners["radius_km"].to_numpy(dtype=np.float64)
    reach = chord_for_km(radius + widest) * (1 + _SLACK) + 1e-12
    side = max(eps, _MIN_CELL)
    if reach.size:
        # cells about a third of the typical reach: a partner touches some tens of cells,
        # and regions are over-joined by at most a cell's diagonal
        side *= max(1, math.floor(float(np.median(reach)) / (3 * side)))
    idx = np.floor((xyz + 1.0) / side).astype(np.int64) + 1
    keys = _cell_keys(idx)
    codes, uniques = pd.factorize(needs["category"].astype(str), sort=True)
    cats = np.asarray(uniques, dtype=object)
    by_cat = np.argsort(codes, kind="stable")
    cat_bounds = np.searchsorted(codes[by_cat], np.arange(cats.size + 1))

    # nodes: occupied (category, cell) pairs, numbered category by category
    node_of_need = np.empty(n_needs, dtype=np.int64)
    cat_keys: list[IntArray] = []
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    offset = 0
    for c in range(cats.size):
        sel = by_cat[cat_bounds[c] : cat_bounds[c + 1]]
        uniq, inv = np.unique(keys[sel], return_inverse=True)
        node_of_need[sel] = offset + inv
        for dx, dy, dz in _OFFSETS:
            near = uniq + ((dx << 42) + (dy << 21) + dz)
            pos = np.minimum(np.searchsorted(uniq, near), uniq.size - 1)
            hit = np.flatnonzero(uniq[pos] == near)
            rows.append(offset + hit)
            cols.append(offset + pos[hit])
        cat_keys.append(uniq)
        offset += uniq.size
    n_cells = offset
    n_nodes = n_cells
    if floored is not None and (floored >= 0).any():
        sel = np.flatnonzero(floored >= 0)
        hood_codes = np.unique(floored[sel], return_inverse=True)[1]
        rows.append(node_of_need[sel])
        cols.append(n_cells + hood_codes)
        n_nodes += int(hood_codes.max()) + 1
    first = _components(
        n_nodes,
        np.concatenate(rows) if rows else np.zeros(0, np.int64),
        np.concatenate(cols) if cols else np.zeros(0, np.int64),
    )
    n_first = int(first.max(initial=-1)) + 1

    # partners join the first-stage regions of every cell their reach touches
    p_xyz = to_unit_vectors(partners["lat"], partners["lon"])
    pc = partner_categories(partners)
    half_diagonal = side * math.sqrt(3) / 2 * (1 + _SLACK)
    edges: list[IntArray] = []
    cat_index = {str(cat): i for i, cat in enumerate(cats.tolist())}
    start = np.concatenate([[0], np.cumsum([k.size for k in cat_keys])])
    for category, group in pc.groupby("category", sort=True):
        if str(category) not in cat_index:
            continue
        c = cat_index[str(category)]
        cells = cat_keys[c]
        centres = (
            np.column_stack([(cells >> 42) & 0x1FFFFF, (cells >> 21) & 0x1FFFFF, cells & 0x1FFFFF])
            - 0.5
        ) * side - 1.0
        tree = cKDTree(centres)
        members = group["partner"].to_numpy()
        for lo in range(0, members.size, _CHUNK):
            chunk = members[lo : lo + _CHUNK]
            hits = tree.query_ball_point(p_xyz[chunk], reach[chunk] + half_diagonal)
            counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
            if counts.sum() == 0:
                continue
            cell = np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])
            label = first[start[c] + cell]
            pair = np.unique(np.repeat(chunk, counts) * n_first + label)
            edges.append(pair)
    pairs = np.unique(np.concatenate(edges)) if edges else np.zeros(0, np.int64)
    p_of_edge, label_of_edge = pairs // max(n_first, 1), pairs % max(n_first, 1)
    final = _components(n_first + len(partners), label_of_edge, n_first + p_of_edge)
    need_region = final[first[node_of_need]]
    partner_region = final[n_first:]
    idle = np.ones(len(partners), dtype=bool)
    idle[p_of_edge] = False
    partner_region = np.where(idle, -1, partner_region)
    # number regions by their first need
    _, firsts = np.unique(need_region, return_index=True)
    renumber = np.full(n_first + len(partners), -1, dtype=np.int64)
    renumber[need_region[np.sort(firsts)]] = np.arange(firsts.size)
    need_region = renumber[need_region]
    partner_region = np.where(idle, -1, renumber[np.maximum(partner_region, 0)])
    return need_region, partner_region


def partition(
    needs: pd.DataFrame,
    partners: pd.DataFrame,
    config: MatchConfig,
    table: pd.DataFrame | None,
    tasks: int,
) -> list[tuple[IntArray, IntArray]]:
    """Split a plan into at most ``tasks`` groups of whole regions.

    Parameters
    ----------
    needs, partners : pandas.DataFrame
        The plan's validated tables (needs with ``neighborhood``).
    config : MatchConfig
        The plan's parameters.
    table : pandas.DataFrame or None
        The neighborhood table (its ``min_coverage`` names the floored neighborhoods).
    tasks : int
        The most groups to make.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        Per group: the positions of its needs and of its partners, ascending. Partners
        that no need could reach are in no group. Largest group first.
    """
    floored = None
    if table is not None and (table["min_coverage"].to_numpy() > 0).any():
        with_floor = table.index[table["min_coverage"].to_numpy() > 0]
        floored = (
            pd.Index(with_floor, dtype=object)
            .get_indexer(needs["neighborhood"].astype(str))
            .astype(np.int64)
        )
    need_region, partner_region = region_labels(needs, partners, config, floored)
    n_regions = int(need_region.max(initial=-1)) + 1
    weight = np.bincount(need_region, minlength=n_regions) + np.bincount(
        partner_region[partner_region >= 0], minlength=n_regions
    )
    n_tasks = max(1, min(tasks, n_regions))
    heap = [(0, t) for t in range(n_tasks)]
    task_of = np.empty(n_regions, dtype=np.int64)
    for r in np.lexsort((np.arange(n_regions), -weight)).tolist():
        load, t = heapq.heappop(heap)
        task_of[r] = t
        heapq.heappush(heap, (load + int(weight[r]), t))
    need_task = task_of[need_region]
    partner_task = np.where(partner_region >= 0, task_of[np.maximum(partner_region, 0)], -1)
    groups = [
        (np.flatnonzero(need_task == t), np.flatnonzero(partner_task == t)) for t in range(n_tasks)
    ]
    groups = [g for g in groups if g[0].size]
    groups.sort(key=lambda g: -(g[0].size + g[1].size))
    logger.info(
        "%d independent region(s) in %d task(s); largest task %d needs, %d partners",
        n_regions,
        len(groups),
        groups[0][0].size if groups else 0,
        groups[0][1].size if groups else 0,
    )
    return groups
