"""Exact DBSCAN with the results of scikit-learn's ``DBSCAN(algorithm="kd_tree")``.

scikit-learn's kd-tree DBSCAN (``sklearn/cluster/_dbscan.py``, ``_dbscan_inner.pyx``,
``sklearn/neighbors/_binary_tree.pxi.tp``) does, for each point ``i`` in index order:

* neighbourhood ``N(i)``: the points ``j`` with ``rdist(i, j) <= eps * eps``, where
  ``rdist`` is ``sum((x_i[k] - x_j[k]) ** 2)`` summed in coordinate order in float64
  (a leaf of the tree tests every point so). ``N(i)`` holds ``i`` itself;
* core: ``len(N(i)) >= min_samples`` (the point counts itself);
* clusters: a depth-first search from every not yet labelled core point in index
  order labels everything it reaches; only core points are expanded. So clusters are
  the connected components of the core points, numbered by their lowest-index core
  point, and a border point (not core, within ``eps`` of a core point) takes the
  lowest cluster number among its core neighbours (that cluster is expanded first).
  Everything else is noise (-1).

One detail is not a function of the two points alone: the tree also adds a whole
node without testing its points when the node's bounding box lies within ``eps``
(``dist_UB <= r``), and prunes one whose box lies beyond (``dist_LB > r``); both
bounds are computed with ``pow`` and a square root. They agree with the leaf test
except for pairs whose squared distance is within a few ulps of ``eps * eps``, where
the answer depends on the shape of the tree. So this module decides every pair
outside a relative band of ``_BAND`` around ``eps * eps`` with the leaf test's exact
arithmetic, and when a pair inside the band could change the result (core status,
the joining of two clusters, the cluster of a border point), it runs scikit-learn's
DBSCAN itself: identical results always, at scikit-learn's cost only in that case,
which real coordinates practically never meet.

How it is fast: a k-d tree (scipy) gives each point's ``min_samples``-th nearest
distance (core or not, with a margin for that tree's own rounding; points within the
margin get the exact test) and a few near neighbours; core points that are such
neighbours, or share a grid cell of diagonal below ``eps``, are joined first. Then a
grid of cells of side just over ``eps`` finds every pair of core points of different
partial components in neighbouring cells, and the exact test joins those within
``eps``. Border points have fewer than ``min_samples`` points within ``eps``, so their
candidate lists are short.
"""

from __future__ import annotations

import itertools
import logging
import math

import numpy as np
import numpy.typing as npt
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

__all__ = ["dbscan"]

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Relative half-width of the band around ``eps * eps`` (on squared distances) where
#: scikit-learn's tree bounds may decide a pair either way (their rounding is a few
#: ulps, ~1e-15); a pair in it that matters sends the whole call to scikit-learn.
_BAND = 1e-12
#: Relative margin on distances computed by scipy's k-d tree (its own rounding, a few
#: ulps): only distances clear of ``eps`` by this much are trusted without the exact test.
_MARGIN = 1e-9
#: Relative slack of the grid cells: cells of side ``eps * (1 + _CELL_SLACK)`` hold
#: every pair within ``eps`` in neighbouring cells, and cells of diagonal
#: ``eps * (1 - _CELL_SLACK)`` only pairs within ``eps``, despite the rounding of
#: ``floor(x / side)`` (bounded by ``_MAX_CELL_INDEX``).
_CELL_SLACK = 1e-3
#: Largest cell index along one axis: up to 2**40 the rounding of ``x / side`` is below
#: 2.5e-4 cells, well within ``_CELL_SLACK``.
_MAX_CELL_INDEX = 2.0**40
#: Nearest neighbours per point used to join core points cheaply before the grid pass.
_JOIN_NEIGHBOURS = 8
#: Point pairs tested per vectorised batch (bounds the memory of the grid pass).
_BATCH_PAIRS = 1 << 22


class _Defer(Exception):
    """Ask scikit-learn instead.

    Raised when a pair within ``_BAND`` of ``eps`` could change the result, or when the
    coordinates span too many grid cells for exact cell indices.
    """


def dbscan(points: npt.ArrayLike, eps: float, min_samples: int) -> tuple[IntArray, BoolArray]:
    """DBSCAN labels and core mask equal to scikit-learn's kd-tree DBSCAN.

    Parameters
    ----------
    points : array_like of shape (n, d)
        Finite coordinates (Euclidean distance).
    eps : float
        Neighbourhood radius (> 0): ``j`` is a neighbour of ``i`` when their distance
        is at most ``eps`` (tested as ``sum of squared differences <= eps * eps``).
    min_samples : int
        Neighbours (counting the point itself) that make a point a core point (>= 1).

    Returns
    -------
    labels : numpy.ndarray of int64
        Cluster per point, ``-1`` for noise; clusters are numbered by their
        lowest-index core point, as ``sklearn.cluster.DBSCAN(eps, min_samples,
        algorithm="kd_tree").fit(points).labels_``.
    core : numpy.ndarray of bool
        Whether each point is a core point (``core_sample_indices_`` as a mask).

    Examples
    --------
    >>> labels, core = dbscan([[0.0], [1.0], [2.0], [10.0]], eps=1.0, min_samples=3)
    >>> labels.tolist(), core.tolist()
    ([0, 0, 0, -1], [False, True, False, False])
    """
    x = np.ascontiguousarray(points, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"points must be a 2-D array, got shape {x.shape}")
    if not (math.isfinite(eps) and eps > 0.0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be >= 1, got {min_samples!r}")
    if not np.isfinite(x).all():
        raise ValueError("points must be finite")
    if x.shape[0] == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=bool)
    try:
        return _grid_dbscan(x, float(eps), int(min_samples))
    except _Defer as why:
        logger.debug("exact DBSCAN defers to scikit-learn: %s", why)
        return _sklearn_dbscan(x, float(eps), int(min_samples))


def _sklearn_dbscan(x: FloatArray, eps: float, min_samples: int) -> tuple[IntArray, BoolArray]:
    """Run the reference, scikit-learn's kd-tree DBSCAN (imported only when needed)."""
    from sklearn.cluster import DBSCAN

    db = DBSCAN(eps=eps, min_samples=min_samples, algorithm="kd_tree", n_jobs=-1).fit(x)
    core = np.zeros(x.shape[0], dtype=bool)
    core[db.core_sample_indices_] = True
    return np.asarray(db.labels_, dtype=np.int64), core


def _sq_dist(xt: FloatArray, i: IntArray, j: IntArray) -> FloatArray:
    """Squared distances of pairs ``(i, j)`` with scikit-learn's leaf arithmetic.

    ``d = 0; d += (a[k] - b[k]) * (a[k] - b[k])`` for k in coordinate order, each
    operation rounded to float64 (the first ``0 + t`` is exact). ``xt`` is the
    transposed (d, n) coordinate array.
    """
    diff = xt[0][i] - xt[0][j]
    s = diff * diff
    for row in xt[1:]:
        diff = row[i] - row[j]
        s += diff * diff
    return s


def _cells(x: FloatArray, side: float) -> IntArray:
    """Integer grid cell of every point for cells of ``side`` (may raise _Defer)."""
    q = np.floor((x - x.min(axis=0)) / side)
    if q.size and float(q.max()) > _MAX_CELL_INDEX:
        raise _Defer("coordinates span too many cells for exact float cell indices")
    return q.astype(np.int64)


def _compress(cells: IntArray) -> tuple[IntArray, IntArray]:
    """One int64 key per cell, with neighbouring cells ±1 apart per axis.

    Each axis keeps only its occupied cell indices, gaps of 2 or more shrunk to 2, so
    that adjacency is kept and the keys fit in int64 (raises _Defer otherwise).

    Returns
    -------
    keys : per point; strides : per axis.
    """
    n, d = cells.shape
    cols = []
    extents = []
    for axis in range(d):
        uniq, inv = np.unique(cells[:, axis], return_inverse=True)
        pos = np.concatenate([[0], np.cumsum(np.minimum(np.diff(uniq), 2))])
        cols.append(pos[inv.reshape(-1)] + 1)  # +1: a -1 offset stays >= 0
        extents.append(int(pos[-1]) + 3)
    if math.prod(extents) >= 2**62:
        raise _Defer("too many grid cells for int64 keys")
    strides = np.ones(d, dtype=np.int64)
    for axis in range(d - 2, -1, -1):
        strides[axis] = strides[axis + 1] * extents[axis + 1]
    keys = np.zeros(n, dtype=np.int64)
    for axis in range(d):
        keys += cols[axis] * strides[axis]
    return keys, strides


def _product_ranges(
    start_a: IntArray, count_a: IntArray, start_b: IntArray, count_b: IntArray
) -> tuple[IntArray, IntArray]:
    """All pairs ``(a, b)``, a in ``range(start_a[k], +count_a[k])``, b likewise, per k."""
    sizes = count_a * count_b
    total = int(sizes.sum())
    k = np.repeat(np.arange(sizes.size), sizes)
    t = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    nb = count_b[k]
    return start_a[k] + t // nb, start_b[k] + t % nb


def _components(n: int, i: IntArray, j: IntArray) -> IntArray:
    """Return the connected component of each of ``n`` nodes for undirected edges ``i - j``."""
    graph = coo_matrix((np.ones(i.size, dtype=np.int8), (i, j)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _grid_dbscan(x: FloatArray, eps: float, min_samples: int) -> tuple[IntArray, BoolArray]:
    n, d = x.shape
    xt = np.ascontiguousarray(x.T)
    thr = eps * eps  # the tree's reduced radius, float64 like its `r * r`
    lo_s, hi_s = thr * (1.0 - _BAND), thr * (1.0 + _BAND)
    lo_d, hi_d = eps * (1.0 - _MARGIN), eps * (1.0 + _MARGIN)
    tree = cKDTree(x)

    # --- core points: the min_samples-th nearest distance (the point itself first)
    k = min(n, max(min_samples, _JOIN_NEIGHBOURS))
    near_d, near_i = tree.query(x, k=np.arange(1, k + 1))
    near_d = near_d.reshape(n, k)
    near_i = near_i.reshape(n, k).astype(np.int64)
    kth = near_d[:, min_samples - 1] if min_samples <= n else np.full(n, np.inf)
    core = kth < lo_d
    unsure = np.flatnonzero(~core & (kth <= hi_d))
    if unsure.size:
        pairs = cKDTree(x[unsure]).sparse_distance_matrix(tree, hi_d, output_type="ndarray")
        qi, qj = unsure[pairs["i"]], pairs["j"].astype(np.int64)
        s = _sq_dist(xt, qi, qj)
        sure_in = np.bincount(pairs["i"], weights=s < lo_s, minlength=unsure.size)
        maybe = np.bincount(pairs["i"], weights=s <= hi_s, minlength=unsure.size)
        if ((sure_in < min_samples) & (maybe >= min_samples)).any():
            raise _Defer("a point's core status depends on a pair at eps")
        core[unsure[sure_in >= min_samples]] = True
    labels = np.full(n, -1, dtype=np.int64)
    core_idx = np.flatnonzero(core)
    if core_idx.size == 0:
        return labels, core
    n_core = core_idx.size
    rank = np.full(n, -1, dtype=np.int64)
    rank[core_idx] = np.arange(n_core)

    # --- join core points cheaply: near neighbours clearly within eps, and cells of
    # diagonal below eps (all their points are within eps of each other)
    near_ok = (near_d < lo_d) & core[:, None] & core[near_i]
    rows, cols = np.nonzero(near_ok)
    small_keys, _ = _compress(_cells(x[core_idx], eps * (1.0 - _CELL_SLACK) / math.sqrt(d)))
    _, lead, cell_of = np.unique(small_keys, return_index=True, return_inverse=True)
    comp = _components(
        n_core,
        np.concatenate([rank[rows], np.arange(n_core)]),
        np.concatenate([rank[near_i[rows, cols]], lead[cell_of.reshape(-1)]]),
    )

    # --- grid pass: every pair of core points of different components in neighbouring
    # cells (side just over eps) gets the exact test
    keys, strides = _compress(_cells(x[core_idx], eps * (1.0 + _CELL_SLACK)))
    order = np.lexsort((comp, keys))
    skeys, scomp = keys[order], comp[order]
    new_bucket = np.ones(n_core, dtype=bool)
    new_bucket[1:] = (skeys[1:] != skeys[:-1]) | (scomp[1:] != scomp[:-1])
    b_start = np.flatnonzero(new_bucket)
    b_count = np.diff(np.append(b_start, n_core))
    b_key, b_comp = skeys[b_start], scomp[b_start]
    new_cell = np.ones(b_start.size, dtype=bool)
    new_cell[1:] = b_key[1:] != b_key[:-1]
    c_first = np.flatnonzero(new_cell)
    c_count = np.diff(np.append(c_first, b_start.size))
    c_key = b_key[c_first]
    # bounding box per bucket, to skip bucket pairs clearly farther apart than eps
    sx = x[core_idx[order]]
    box_lo = np.minimum.reduceat(sx, b_start, axis=0)
    box_hi = np.maximum.reduceat(sx, b_start, axis=0)

    cand_a: list[IntArray] = []
    cand_b: list[IntArray] = []
    for offset in itertools.product((-1, 0, 1), repeat=d):
        nonzero = [o for o in offset if o]
        if nonzero and nonzero[0] < 0:
            continue  # each unordered pair of cells once
        target = c_key + int(np.dot(offset, strides))
        pos = np.minimum(np.searchsorted(c_key, target), c_key.size - 1)
        hit = np.flatnonzero(c_key[pos] == target)
        if not nonzero:  # same cell: bucket pairs (b1 < b2) of one cell
            multi = hit[c_count[hit] > 1]
            ba, bb = _product_ranges(c_first[multi], c_count[multi], c_first[multi], c_count[multi])
            keep = ba < bb
            ba, bb = ba[keep], bb[keep]
        else:
            # buckets of cell c (all) against buckets of cell c + offset (all)
            cell_a, cell_b = hit, pos[hit]
            ba, bb = _product_ranges(
                c_first[cell_a], c_count[cell_a], c_first[cell_b], c_count[cell_b]
            )
            keep = b_comp[ba] != b_comp[bb]
            ba, bb = ba[keep], bb[keep]
        if ba.size:
            cand_a.append(ba)
            cand_b.append(bb)
    join_i: list[IntArray] = []
    join_j: list[IntArray] = []
    unsure_i: list[IntArray] = []
    unsure_j: list[IntArray] = []
    if cand_a:
        ba, bb = np.concatenate(cand_a), np.concatenate(cand_b)
        gap = np.maximum(box_lo[ba] - box_hi[bb], box_lo[bb] - box_hi[ba])
        gap = np.maximum(gap, 0.0)
        near = np.sqrt((gap * gap).sum(axis=1)) <= eps * (1.0 + _CELL_SLACK)
        ba, bb = ba[near], bb[near]
        sizes = b_count[ba] * b_count[bb]
        bounds = np.searchsorted(np.cumsum(sizes), np.arange(0, int(sizes.sum()), _BATCH_PAIRS))
        for lo, hi in itertools.pairwise([*bounds.tolist(), ba.size]):
            if lo >= hi:
                continue
            pa, pb = _product_ranges(
                b_start[ba[lo:hi]], b_count[ba[lo:hi]], b_start[bb[lo:hi]], b_count[bb[lo:hi]]
            )
            pi, pj = core_idx[order[pa]], core_idx[order[pb]]
            s = _sq_dist(xt, pi, pj)
            sure = s < lo_s
            join_i.append(rank[pi[sure]])
            join_j.append(rank[pj[sure]])
            band = (s >= lo_s) & (s <= hi_s)
            unsure_i.append(rank[pi[band]])
            unsure_j.append(rank[pj[band]])
    if join_i:
        # join the components, not the points: few nodes, few edges
        ji, jj = np.concatenate(join_i), np.concatenate(join_j)
        comp = _components(int(comp.max()) + 1, comp[ji], comp[jj])[comp]
    if unsure_i:
        ui, uj = np.concatenate(unsure_i), np.concatenate(unsure_j)
        if (comp[ui] != comp[uj]).any():
            raise _Defer("two clusters are joined only by a pair at eps")

    # --- clusters numbered by their lowest-index core point
    n_comp = int(comp.max()) + 1
    lowest = np.full(n_comp, n, dtype=np.int64)
    np.minimum.at(lowest, comp, core_idx)
    cluster_of_comp = np.empty(n_comp, dtype=np.int64)
    cluster_of_comp[np.argsort(lowest, kind="stable")] = np.arange(n_comp)
    labels[core_idx] = cluster_of_comp[comp]

    # --- border points: the lowest cluster among core points within eps
    others = np.flatnonzero(~core)
    if others.size:
        pairs = cKDTree(x[others]).sparse_distance_matrix(tree, hi_d, output_type="ndarray")
        qi, qj = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
        to_core = core[qj]
        qi, qj = qi[to_core], qj[to_core]
        s = _sq_dist(xt, others[qi], qj)
        best = np.full(others.size, np.iinfo(np.int64).max)
        sure = s < lo_s
        np.minimum.at(best, qi[sure], labels[qj[sure]])
        band = (s >= lo_s) & (s <= hi_s)
        if (labels[qj[band]] < best[qi[band]]).any():
            raise _Defer("a border point's cluster depends on a pair at eps")
        found = best < np.iinfo(np.int64).max
        labels[others[found]] = best[found]
    return labels, core
