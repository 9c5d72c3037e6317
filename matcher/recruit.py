"""Where to recruit: sites where a new partner would serve the most unmet demand.

For each category, :func:`recruit_sites` picks up to ``k`` locations for new partners
of a given travel radius and capacity so that together they would serve the most
units of the demand a plan left unmet: a (capacitated) maximal covering location
problem, solved exactly as a mixed-integer program with HiGHS
(:func:`scipy.optimize.milp`).

Formulation
-----------
Per category, the demand points are the clusters with ``unmet > 0`` (weight: their
unmet units, counted in integer quanta of ``quantum`` units) and the candidate sites
are the centroids of those same clusters (the standard discretisation of the maximal
covering problem: the optimum is over these candidates, not over every point of the
map). Site ``j`` covers cluster ``i`` when the great-circle distance between their
centroids is at most ``radius_km`` (:func:`matcher.geo.within`).

With a capacity ``C`` (in quanta), binary ``x_j`` (open site ``j``) and continuous
``y_ij >= 0`` (quanta of cluster ``i`` served from site ``j``, only for covered pairs)::

    maximise   sum_ij y_ij
    subject to sum_j y_ij <= u_i                 (a cluster's unmet demand)
               sum_i y_ij <= C x_j               (a site's capacity)
               y_ij       <= min(u_i, C) x_j     (linking; tightens the LP relaxation)
               sum_j x_j  <= k

Without a capacity (or with one no site could ever fill) this is the classic maximal
covering problem, with ``z_i`` in [0, 1] the covered share of cluster ``i``::

    maximise   sum_i u_i z_i
    subject to z_i <= sum_{j covers i} x_j,      sum_j x_j <= k

For fixed sites the remaining problem is a transportation problem with integer data,
so its optimum is integral: the reported covered units are recomputed exactly by an
integer maximum flow over the chosen sites, and the optimality bound is HiGHS's dual
bound rounded down to a whole quantum.

Solving
-------
Per category: (1) a lazy greedy with exact max-flow marginal gains (the covered demand
is a monotone submodular function of the open sites, so the greedy is within
``1 - 1/e`` of the optimum); if it reaches the bound ``min(unmet demand, sum of the k
largest min(capacity, units in range))`` it is optimal. (2) Otherwise the model above
is built on fewer sites (a site with ``k`` sites covering a superset of its clusters
can be swapped for one of them and is dropped; so is a never-full site with a
never-full dominator), clusters with the same sites in range merged, sites that can
never fill up given coverage rows instead of flows, and a row asking for more than
the greedy, so that "infeasible" proves the greedy optimal. With a binding capacity
the uncapacitated problem is solved first, as a bound. HiGHS runs with a relative gap
of 0 within ``time_limit``; past it, the best sites found are returned with the
proven bound and gap (``status="time_limit"``). Measured on 2,000 unmet clusters
(``benchmarks/recruit.py``): uncapacitated and clearly binding capacities solve to
optimality in 0.1-2 s; a capacity close to what the best sites have in range is the
hard case, where the flow model's LP alone can outlast the time limit (gaps of 2-7 %
after 30 s).
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any

import networkx as nx
import numpy as np
import numpy.typing as npt
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse.csgraph import maximum_flow
from scipy.spatial import cKDTree

from .geo import chord_for_km, haversine_km, to_unit_vectors, within
from .limits import MAX_RADIUS_KM, MAX_RECRUIT_K, MAX_UNITS

__all__ = ["RecruitSuggestions", "recruit_sites", "SITE_COLUMNS", "SOLVE_COLUMNS"]

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]

#: Columns of :attr:`RecruitSuggestions.sites`, in order.
SITE_COLUMNS: tuple[str, ...] = (
    "category",
    "rank",
    "lat",
    "lon",
    "site_cluster_id",
    "covered_units",
    "clusters_covered",
    "cluster_ids",
    "units_in_range",
    "radius_km",
    "capacity",
)

#: Columns of :attr:`RecruitSuggestions.solves`, in order.
SOLVE_COLUMNS: tuple[str, ...] = (
    "category",
    "status",
    "objective",
    "bound",
    "gap",
    "candidates",
    "pairs",
    "model_sites",
    "unmet_units",
    "sites",
    "formulation",
    "seconds",
)

_REQUIRED = ("cluster_id", "category", "centroid_lat", "centroid_lon", "unmet")
#: Relative slack on the k-d tree radius; the exact great-circle test decides coverage.
_INDEX_SLACK = 1e-9
#: How far from a whole number of quanta an ``unmet`` value may be (rounding noise).
_QUANTUM_RTOL = 1e-6
#: scipy's maximum_flow works on int32 capacities.
_INT32_MAX = np.iinfo(np.int32).max
#: Least time given to HiGHS (seconds), even when the greedy used up the time limit.
_MIN_SECONDS = 1e-3


@dataclass(frozen=True)
class RecruitSuggestions:
    """Suggested recruiting sites per category, with the optimality of each solve.

    Attributes
    ----------
    sites : pandas.DataFrame
        One row per suggested site, sorted by category then rank (columns
        :data:`SITE_COLUMNS`): ``lat``, ``lon`` (the site, a cluster centroid),
        ``site_cluster_id`` (that cluster), ``covered_units`` (unmet units the site
        would serve), ``clusters_covered`` and ``cluster_ids`` (``;``-joined, sorted)
        of the clusters it would serve, ``units_in_range`` (all unmet units of the
        category within its radius, shared with other sites), and the ``radius_km``
        and ``capacity`` (NaN: unlimited) asked for. Rank 1 is the site that serves
        the most alone; rank ``r`` adds the most to ranks ``1..r-1``; its
        ``covered_units`` is that marginal gain, so a category's ``covered_units``
        sum to its objective. A site that would add nothing is not suggested, so a
        category can have fewer than ``k`` sites.
    solves : pandas.DataFrame
        One row per category considered (columns :data:`SOLVE_COLUMNS`): ``status``
        (``"optimal"`` or ``"time_limit"``), ``objective`` (units covered by the
        suggested sites), ``bound`` (a proven upper bound on what any ``k`` candidate
        sites could cover), ``gap`` (``(bound - objective) / bound``, 0 when proven
        optimal), ``candidates``, ``pairs`` (covered (cluster, site) pairs),
        ``model_sites`` (candidates left in the MILP after the dominance reduction;
        0 when no MILP was needed), ``unmet_units`` (the category's unmet demand),
        ``sites``, ``formulation`` and ``seconds``. ``formulation`` says how
        optimality was established: ``"trivial"`` (no demand, no capacity, or
        ``k`` at least the number of candidates), ``"greedy_bound"`` (the greedy
        sites reach the upper bound ``min(unmet, sum of the k largest
        min(capacity, units in range))``), ``"mclp_bound"`` (they reach the
        optimum without the capacity), ``"mclp"`` or ``"capacitated_mclp"`` (the
        MILP).
    parameters : dict
        ``k``, ``radius_km``, ``capacity``, ``quantum``, ``time_limit``, ``categories``.
    """

    sites: pd.DataFrame
    solves: pd.DataFrame
    parameters: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """Return a copy of the suggested sites table (see :attr:`sites`)."""
        return self.sites.copy()

    def to_geojson(self) -> dict[str, Any]:
        """Return the sites as a GeoJSON FeatureCollection (RFC 7946).

        Each site is a Point feature with ``feature_type`` ``"recruit_site"`` and the
        columns of :attr:`sites` as properties (``capacity`` is null when unlimited).
        """
        features = []
        for row in self.sites.itertuples(index=False):
            props: dict[str, Any] = {"feature_type": "recruit_site"}
            for name in SITE_COLUMNS:
                value = getattr(row, name)
                if isinstance(value, float | np.floating):
                    value = None if math.isnan(value) else round(float(value), 6)
                elif isinstance(value, np.integer):
                    value = int(value)
                props[name] = value
            features.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "Point",
                        "coordinates": [round(float(row.lon), 7), round(float(row.lat), 7)],
                    },
                    "properties": props,
                }
            )
        return {"type": "FeatureCollection", "features": features}


# ----------------------------------------------------------------------------- checks


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _check_parameters(k: Any, radius_km: Any, capacity: Any, time_limit: Any, quantum: Any) -> None:
    if not isinstance(k, Integral) or isinstance(k, bool) or not 1 <= int(k) <= MAX_RECRUIT_K:
        raise ValueError(f"k must be an integer 1..{MAX_RECRUIT_K} (sites per category), got {k!r}")
    if (
        not _is_real(radius_km)
        or not math.isfinite(float(radius_km))
        or not 0 < float(radius_km) <= MAX_RADIUS_KM
    ):
        raise ValueError(
            f"radius_km must be a number > 0 and <= {MAX_RADIUS_KM:g} (km), got {radius_km!r}"
        )
    if capacity is not None and (
        not _is_real(capacity)
        or not math.isfinite(float(capacity))
        or not 0 <= float(capacity) <= MAX_UNITS
    ):
        raise ValueError(
            "capacity must be None (unlimited) or a number >= 0 and <= "
            f"{MAX_UNITS:,.0f} (units), got {capacity!r}"
        )
    if not _is_real(time_limit) or not float(time_limit) > 0 or math.isnan(float(time_limit)):
        raise ValueError(f"time_limit must be a number > 0 (seconds), got {time_limit!r}")
    if not _is_real(quantum) or not math.isfinite(float(quantum)) or float(quantum) <= 0:
        raise ValueError(f"quantum must be a finite number > 0 (units), got {quantum!r}")


def _check_clusters(clusters: pd.DataFrame, quantum: float) -> tuple[pd.DataFrame, IntArray]:
    """Validate the clusters table; return it sorted by cluster_id and unmet in quanta."""
    if not isinstance(clusters, pd.DataFrame):
        raise TypeError(f"clusters must be a pandas DataFrame, got {type(clusters).__name__}")
    missing = [c for c in _REQUIRED if c not in clusters.columns]
    if missing:
        raise ValueError(f"clusters is missing column(s) {missing}; required: {list(_REQUIRED)}")
    cl = pd.DataFrame(
        {
            "cluster_id": clusters["cluster_id"].astype(str).to_numpy(),
            "category": clusters["category"].astype(str).to_numpy(),
            "lat": pd.to_numeric(clusters["centroid_lat"], errors="coerce").to_numpy(float),
            "lon": pd.to_numeric(clusters["centroid_lon"], errors="coerce").to_numpy(float),
            "unmet": pd.to_numeric(clusters["unmet"], errors="coerce").to_numpy(float),
        }
    )
    dup = cl["cluster_id"].duplicated()
    if dup.any():
        raise ValueError(
            f"cluster_id must be unique; repeated: {cl.loc[dup, 'cluster_id'].iloc[0]}"
        )

    def fail(mask: npt.NDArray[np.bool_], column: str, rule: str) -> None:
        if mask.any():
            first = int(np.flatnonzero(mask)[0])
            raise ValueError(
                f"{column} must be {rule}; {int(mask.sum())} cluster(s) are not, e.g. "
                f"cluster {cl['cluster_id'].iloc[first]!r}: {clusters[column].iloc[first]!r}"
            )

    lat, lon, unmet = cl["lat"].to_numpy(), cl["lon"].to_numpy(), cl["unmet"].to_numpy()
    fail(~np.isfinite(lat) | (np.abs(lat) > 90), "centroid_lat", "a finite latitude in -90..90")
    fail(~np.isfinite(lon) | (np.abs(lon) > 180), "centroid_lon", "a finite longitude in -180..180")
    fail(~np.isfinite(unmet) | (unmet < 0), "unmet", "a finite number >= 0")
    scaled = unmet / quantum
    quanta = np.rint(scaled)
    off = np.abs(scaled - quanta) > _QUANTUM_RTOL * np.maximum(1.0, np.abs(scaled))
    fail(off, "unmet", f"a whole multiple of the quantum {quantum}")
    order = np.argsort(cl["cluster_id"].to_numpy(), kind="stable")
    return cl.iloc[order].reset_index(drop=True), quanta[order].astype(np.int64)


# ----------------------------------------------------------------------------- geometry


def _covered_pairs(lat: npt.ArrayLike, lon: npt.ArrayLike, radius_km: float) -> IntArray:
    """Every (cluster, site) pair within ``radius_km`` of each other, both ways, with (i, i).

    Returns
    -------
    numpy.ndarray
        ``(n_pairs, 2)`` int64 positions ``(i, j)``, sorted by ``j`` then ``i``.
    """
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    n = lat.size
    tree = cKDTree(to_unit_vectors(lat, lon))
    r = float(chord_for_km(radius_km)) * (1 + _INDEX_SLACK) + 1e-15
    cand = np.asarray(tree.query_pairs(r, output_type="ndarray"), dtype=np.int64).reshape(-1, 2)
    d = haversine_km(lat[cand[:, 0]], lon[cand[:, 0]], lat[cand[:, 1]], lon[cand[:, 1]])
    cand = cand[within(d, radius_km)]
    diag = np.arange(n, dtype=np.int64)
    i = np.concatenate([diag, cand[:, 0], cand[:, 1]])
    j = np.concatenate([diag, cand[:, 1], cand[:, 0]])
    order = np.lexsort((i, j))
    return np.column_stack([i[order], j[order]])


# ----------------------------------------------------------------------------- flows


@dataclass(frozen=True)
class _Problem:
    """One category's covering problem, in integer quanta.

    ``pairs`` are ``(cluster, site)`` positions sorted by site then cluster; the pairs
    of site ``j`` are ``pairs[ptr[j]:ptr[j + 1]]``. ``cap`` is the capacity of a new
    partner, at most the category's total unmet demand (so "unlimited" is ``total``).
    """

    u: IntArray
    pairs: IntArray
    ptr: IntArray
    cap: int
    reach: IntArray

    @classmethod
    def build(cls, u: IntArray, pairs: IntArray, cap: int | None) -> _Problem:
        n, total = u.size, int(u.sum())
        ptr = np.searchsorted(pairs[:, 1], np.arange(n + 1)).astype(np.int64)
        reach = np.bincount(pairs[:, 1], weights=u[pairs[:, 0]], minlength=n)
        cap_eff = total if cap is None else min(int(cap), total)
        return cls(u, pairs, ptr, cap_eff, np.rint(reach).astype(np.int64))

    @property
    def n(self) -> int:
        return int(self.u.size)

    def site_pairs(self, sites: Sequence[int]) -> tuple[IntArray, IntArray]:
        """Cluster and site positions of the pairs of ``sites``."""
        if not len(sites):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        block = np.concatenate([self.pairs[self.ptr[s] : self.ptr[s + 1]] for s in sites])
        return block[:, 0], block[:, 1]

    def small(self) -> npt.NDArray[np.bool_]:
        """Sites whose capacity covers all the demand in their range (never binding)."""
        return np.asarray(self.reach <= self.cap)


def _max_flow(prob: _Problem, sites: Sequence[int]) -> int:
    """Most quanta the ``sites`` can serve together (an integer maximum flow)."""
    pi, pj = prob.site_pairs(sites)
    if pi.size == 0 or prob.cap == 0:
        return 0
    clusters, ci = np.unique(pi, return_inverse=True)
    demand = prob.u[clusters]
    if bool(np.all(prob.reach[np.asarray(sites)] <= prob.cap)):
        return int(demand.sum())  # no open site can fill up: every cluster in range is served
    m, s = clusters.size, len(sites)
    if int(prob.u.sum()) > _INT32_MAX:  # beyond scipy's int32 capacities: networkx
        g = nx.DiGraph()
        for c, q in zip(clusters.tolist(), demand.tolist(), strict=True):
            g.add_edge("src", ("c", c), capacity=q)
        for a, b in zip(pi.tolist(), pj.tolist(), strict=True):
            g.add_edge(("c", a), ("s", b))
        for b in sites:
            g.add_edge(("s", int(b)), "snk", capacity=prob.cap)
        return int(nx.maximum_flow_value(g, "src", "snk"))
    site_col = np.repeat(np.arange(s), [prob.ptr[b + 1] - prob.ptr[b] for b in sites])
    snk = m + s + 1
    rows = np.concatenate([np.zeros(m, np.int64), 1 + ci, 1 + m + np.arange(s)])
    cols = np.concatenate([1 + np.arange(m), 1 + m + site_col, np.full(s, snk)])
    caps = np.concatenate([demand, np.full(pi.size, prob.cap), np.full(s, prob.cap)])
    graph = sp.csr_array((caps.astype(np.int32), (rows, cols)), shape=(snk + 1, snk + 1))
    return int(maximum_flow(graph, 0, snk).flow_value)


def _rank_sites(prob: _Problem, chosen: Sequence[int]) -> tuple[list[int], list[int]]:
    """Order sites greedily by marginal gain; drop those that add nothing.

    The max flow as a function of the open sites is submodular, so once no site adds
    anything, no set of the remaining sites does either.
    """
    order: list[int] = []
    gains: list[int] = []
    remaining = sorted(int(s) for s in chosen)
    current = 0
    while remaining:
        best, best_value = -1, current
        for s in remaining:
            value = _max_flow(prob, [*order, s])
            if value > best_value:
                best, best_value = s, value
        if best < 0:
            break
        order.append(best)
        gains.append(best_value - current)
        remaining.remove(best)
        current = best_value
    return order, gains


def _allocate(prob: _Problem, order: Sequence[int]) -> tuple[list[int], list[list[int]]]:
    """Per ranked site: quanta served and clusters served, earlier ranks first.

    A maximum flow of least cost with cost ``r`` per unit through the site of rank
    ``r`` fills the ranks lexicographically, so the site of rank ``r`` serves exactly
    its greedy marginal gain.
    """
    if not order:
        return [], []
    rank = {s: r for r, s in enumerate(order, start=1)}
    pi, pj = prob.site_pairs(order)
    g = nx.DiGraph()
    for c in np.unique(pi).tolist():
        g.add_edge("src", ("c", c), capacity=int(prob.u[c]), weight=0)
    for a, b in zip(pi.tolist(), pj.tolist(), strict=True):
        g.add_edge(("c", a), ("s", b), weight=0)
    for s in order:
        g.add_edge(("s", s), "snk", capacity=prob.cap, weight=rank[s])
    flow = nx.max_flow_min_cost(g, "src", "snk")
    served = [int(flow[("s", s)]["snk"]) for s in order]
    members: list[list[int]] = [[] for _ in order]
    for a, b in zip(pi.tolist(), pj.tolist(), strict=True):
        if flow[("c", a)][("s", b)] > 0:
            members[rank[b] - 1].append(a)
    return served, [sorted(m) for m in members]


def _greedy(prob: _Problem, k: int) -> tuple[list[int], int]:
    """Lazy greedy by exact marginal gain: a (1 - 1/e)-approximation (submodularity).

    Returns the sites and the quanta they serve together.
    """
    gain = np.minimum(prob.reach, prob.cap)
    heap = [(-int(g), j, 0) for j, g in enumerate(gain.tolist()) if g > 0]
    heapq.heapify(heap)
    chosen: list[int] = []
    value = 0
    while heap and len(chosen) < k:
        neg, j, stamp = heapq.heappop(heap)
        if stamp == len(chosen):  # fresh gain: the best
            chosen.append(j)
            value -= neg
            continue
        g = _max_flow(prob, [*chosen, j]) - value
        if g > 0:
            heapq.heappush(heap, (-g, j, len(chosen)))
    return chosen, value


# ----------------------------------------------------------------------------- MILP


@dataclass(frozen=True)
class _Solve:
    chosen: list[int]
    status: str
    bound: float  # upper bound on the optimum, in quanta (may be fractional)
    formulation: str
    model_sites: int = 0


def _reduce(prob: _Problem, k: int) -> IntArray:
    """Candidate sites that some optimal solution may need (dominance).

    Site ``d`` dominates site ``j`` when it covers every cluster ``j`` covers (ties:
    the lower position). ``j`` is dropped when it has ``k`` dominators (a solution
    with ``j`` misses one of them, and swapping ``j`` for it loses nothing), or when
    ``j`` and one dominator are both never full (``small``): then ``j`` adds nothing
    next to it, and can be swapped for it otherwise.
    """
    n = prob.n
    cover = sp.csr_array(
        (np.ones(len(prob.pairs), np.int32), (prob.pairs[:, 1], prob.pairs[:, 0])), shape=(n, n)
    )
    common = (cover @ cover.T).tocoo()
    deg = np.diff(prob.ptr)
    r, c, v = common.row, common.col, common.data
    dom = (v == deg[r]) & ((deg[c] > deg[r]) | ((deg[c] == deg[r]) & (c < r)))
    r, c = r[dom], c[dom]
    small = prob.small()
    by_any = np.bincount(r, minlength=n)
    by_small = np.bincount(r[small[r] & small[c]], minlength=n)
    return np.flatnonzero((by_any < k) & (by_small == 0)).astype(np.int64)


def _milp(prob: _Problem, k: int, lower: int, time_limit: float) -> _Solve:
    """Solve the reduced model exactly, asking for more than ``lower`` quanta.

    Sites that can never fill up (``reach <= cap``) serve every cluster in range, so
    they need only coverage variables (``v_g``, the classic MCLP); sites that can fill
    up get flow variables (``y_gt``) and a capacity row. Clusters with the same set of
    kept sites in range are merged into one demand group ``g`` of weight ``w_g``.
    """
    keep = _reduce(prob, k)
    m = keep.size
    cover = sp.csr_array(
        (np.ones(len(prob.pairs), np.int8), (prob.pairs[:, 0], prob.pairs[:, 1])),
        shape=(prob.n, prob.n),
    )[:, keep].tocsr()
    cover.sort_indices()
    key_of: dict[bytes, int] = {}
    group = np.empty(prob.n, np.int64)
    for i in range(prob.n):
        key = cover.indices[cover.indptr[i] : cover.indptr[i + 1]].tobytes()
        group[i] = key_of.setdefault(key, len(key_of))
    n_g = len(key_of)
    w = np.bincount(group, weights=prob.u, minlength=n_g).astype(np.int64)
    first = np.unique(group, return_index=True)[1]
    gp = cover[first, :].tocoo()
    g_of, t_of = gp.row.astype(np.int64), gp.col.astype(np.int64)
    small = prob.small()[keep]
    # pairs to sites that never fill up -> coverage rows; to sites that can -> flows
    s_pair = small[t_of]
    gs = np.unique(g_of[s_pair])  # groups with a v variable
    v_pos = np.full(n_g, -1, np.int64)
    v_pos[gs] = np.arange(gs.size)
    bg, bt = g_of[~s_pair], t_of[~s_pair]
    n_v, n_y = gs.size, bg.size
    big = np.flatnonzero(~small)
    big_pos = np.full(m, -1, np.int64)
    big_pos[big] = np.arange(big.size)
    x0, v0, y0 = 0, m, m + n_v
    n_var = m + n_v + n_y
    weight = w[gs].astype(np.float64)
    ycap = np.minimum(w[bg], prob.cap).astype(np.float64)
    obj = np.concatenate([np.zeros(m), weight, np.ones(n_y)])
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    vals: list[npt.NDArray[np.float64]] = []
    lo: list[npt.NDArray[np.float64]] = []
    hi: list[npt.NDArray[np.float64]] = []
    nrow = 0

    def add(r: IntArray, c: IntArray, a: npt.ArrayLike, n_rows: int, lb: float, ub: Any) -> None:
        nonlocal nrow
        rows.append(nrow + np.asarray(r, np.int64))
        cols.append(np.asarray(c, np.int64))
        vals.append(np.broadcast_to(np.asarray(a, np.float64), np.shape(r)).copy())
        lo.append(np.full(n_rows, lb))
        hi.append(np.broadcast_to(np.asarray(ub, np.float64), (n_rows,)).copy())
        nrow += n_rows

    if n_y:  # a group's demand: w_g v_g + sum_t y_gt <= w_g
        yg = np.unique(bg)
        row_of = np.full(n_g, -1, np.int64)
        row_of[yg] = np.arange(yg.size)
        has_v = yg[v_pos[yg] >= 0]
        add(
            np.concatenate([row_of[bg], row_of[has_v]]),
            np.concatenate([y0 + np.arange(n_y), v0 + v_pos[has_v]]),
            np.concatenate([np.ones(n_y), w[has_v].astype(np.float64)]),
            yg.size,
            -np.inf,
            w[yg].astype(np.float64),
        )
        # a site's capacity: sum_g y_gt - cap x_t <= 0
        add(
            np.concatenate([big_pos[bt], np.arange(big.size)]),
            np.concatenate([y0 + np.arange(n_y), x0 + big]),
            np.concatenate([np.ones(n_y), np.full(big.size, -float(prob.cap))]),
            big.size,
            -np.inf,
            0.0,
        )
        # linking: y_gt <= min(w_g, cap) x_t (tightens the LP relaxation)
        add(
            np.concatenate([np.arange(n_y), np.arange(n_y)]),
            np.concatenate([y0 + np.arange(n_y), x0 + bt]),
            np.concatenate([np.ones(n_y), -ycap]),
            n_y,
            -np.inf,
            0.0,
        )
    if n_v:  # coverage: v_g <= sum of x_t over never-full sites t in range
        sg, st = g_of[s_pair], t_of[s_pair]
        add(
            np.concatenate([np.arange(n_v), v_pos[sg]]),
            np.concatenate([v0 + np.arange(n_v), x0 + st]),
            np.concatenate([np.ones(n_v), -np.ones(sg.size)]),
            n_v,
            -np.inf,
            0.0,
        )
    add(np.zeros(m, np.int64), x0 + np.arange(m), 1.0, 1, -np.inf, float(k))
    # improve on the greedy sites or prove there is nothing better
    add(np.zeros(n_var - m, np.int64), np.arange(m, n_var), obj[m:], 1, lower + 0.5, np.inf)
    a = sp.csr_array(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nrow, n_var)
    )
    bounds = Bounds(np.zeros(n_var), np.concatenate([np.ones(m + n_v), ycap]))
    integrality = np.concatenate([np.ones(m), np.zeros(n_v + n_y)])
    formulation = "capacitated_mclp" if n_y else "mclp"
    logger.debug(
        "recruit MILP (%s): %d of %d sites, %d demand groups, %d flow pairs",
        formulation,
        m,
        prob.n,
        n_g,
        n_y,
    )
    res = milp(
        -obj,
        integrality=integrality,
        bounds=bounds,
        constraints=LinearConstraint(a, np.concatenate(lo), np.concatenate(hi)),
        options={"time_limit": float(time_limit), "mip_rel_gap": 0.0, "presolve": False},
    )
    dual = getattr(res, "mip_dual_bound", None)
    if res.status == 2:  # nothing beats ``lower``: the greedy sites are optimal
        return _Solve([], "optimal", float(lower), formulation, m)
    if res.status not in (0, 1):
        raise RuntimeError(f"HiGHS failed on the recruiting model: {res.message}")
    bound = -float(dual) if dual is not None and np.isfinite(dual) else math.inf
    chosen = [] if res.x is None else keep[res.x[:m] > 0.5].tolist()
    status = "optimal" if res.status == 0 else "time_limit"
    return _Solve(chosen, status, max(bound, float(lower)), formulation, m)


def _solve_category(prob: _Problem, k: int, time_limit: float) -> _Solve:
    """Best sites of one category: greedy, then HiGHS to improve on them or prove them optimal.

    With a binding capacity, the uncapacitated problem is solved first: cheap, and an
    upper bound (its sites, evaluated with the capacity, may also beat the greedy).
    """
    n, total = prob.n, int(prob.u.sum())
    if n == 0 or prob.cap == 0:
        return _Solve([], "optimal", 0.0, "trivial")
    if k >= n:  # opening every candidate is optimal
        return _Solve(list(range(n)), "optimal", float(total), "trivial")
    deadline = time.perf_counter() + time_limit
    best, value = _greedy(prob, k)
    gains = np.sort(np.minimum(prob.reach, prob.cap))[::-1]
    upper = float(min(total, int(gains[:k].sum())))
    if value >= upper:  # the greedy sites reach an upper bound: optimal
        return _Solve(best, "optimal", float(value), "greedy_bound")
    if bool(prob.small().all()):  # no site can fill up: the classic MCLP is exact
        solve = _milp(prob, k, value, max(deadline - time.perf_counter(), _MIN_SECONDS))
        return _Solve(
            solve.chosen or best,
            solve.status,
            min(solve.bound, upper),
            solve.formulation,
            solve.model_sites,
        )
    loose = _Problem(prob.u, prob.pairs, prob.ptr, total, prob.reach)
    relaxed = _milp(loose, k, value, max(deadline - time.perf_counter(), _MIN_SECONDS))
    upper = min(upper, relaxed.bound)  # a bound without the capacity is one with it
    if relaxed.chosen:
        v = _max_flow(prob, relaxed.chosen)
        if v > value:
            best, value = relaxed.chosen, v
    if value >= math.floor(upper + 1e-6 * max(1.0, upper)):
        return _Solve(best, "optimal", float(value), "mclp_bound", relaxed.model_sites)
    remaining = deadline - time.perf_counter()
    if remaining <= 0:
        return _Solve(best, "time_limit", upper, "mclp_bound", relaxed.model_sites)
    solve = _milp(prob, k, value, remaining)
    bound = min(solve.bound, upper)
    return _Solve(solve.chosen or best, solve.status, bound, solve.formulation, solve.model_sites)


# ----------------------------------------------------------------------------- public


def recruit_sites(
    clusters: pd.DataFrame,
    k: int,
    radius_km: float,
    capacity: float | None = None,
    *,
    categories: str | Iterable[str] | None = None,
    time_limit: float = 30.0,
    quantum: float = 0.1,
) -> RecruitSuggestions:
    """Suggest, per category, up to ``k`` sites where a new partner would serve most.

    Parameters
    ----------
    clusters : pandas.DataFrame
        A plan's clusters table (``Plan.clusters`` or ``clusters.csv``) with columns
        ``cluster_id, category, centroid_lat, centroid_lon, unmet``; other columns
        (``unmet_reason`` ...) are ignored. A :class:`matcher.pipeline.Plan` is accepted
        too (its ``clusters`` are used).
    k : int
        Sites per category, >= 1.
    radius_km : float
        Travel radius of a new partner in km, > 0: a site covers the clusters whose
        centroid is within this great-circle distance.
    capacity : float or None
        Units a new partner can serve, >= 0 (rounded down to a whole quantum);
        ``None``: unlimited (the classic maximal covering problem).
    categories : str or iterable of str, optional
        Only these categories (default: every category in ``clusters``).
    time_limit : float
        Seconds HiGHS may spend per category, > 0. When it runs out the best sites
        found are returned with ``status="time_limit"`` and a proven bound and gap.
    quantum : float
        The unit of demand, > 0; ``unmet`` must be whole multiples of it (the plan's
        quantum, 0.1 by default). Optimality is exact in these quanta.

    Returns
    -------
    RecruitSuggestions
        ``sites`` (one row per suggested site) and ``solves`` (status, objective,
        bound and gap per category).

    Raises
    ------
    ValueError
        On an invalid parameter or clusters table (the message names the parameter
        or column and the valid range).

    Notes
    -----
    Candidate sites are the centroids of the category's clusters with unmet demand, so
    the optimum is over those candidates. Coverage pairs come from a k-d tree over 3-D
    unit vectors (exact on the sphere, poles and antimeridian included), checked with
    the haversine distance. The model is a mixed-integer program solved by HiGHS with
    a relative gap of 0; see the module docstring for the formulation. HiGHS is
    deterministic and the model is built from the clusters sorted by ``cluster_id``,
    so the same table (in any row order) and parameters give the same sites, unless a
    solve stops at the time limit, which depends on the machine.

    Examples
    --------
    >>> clusters = pd.DataFrame({
    ...     "cluster_id": ["a", "b", "c", "d"],
    ...     "category": ["food_access"] * 3 + ["education"],
    ...     "centroid_lat": [41.88, 41.89, 41.98, 41.88],
    ...     "centroid_lon": [-87.63, -87.63, -87.63, -87.63],
    ...     "unmet": [4.0, 2.5, 3.0, 0.0]})
    >>> s = recruit_sites(clusters, k=1, radius_km=2.0)
    >>> s.sites[["category", "rank", "site_cluster_id", "covered_units", "cluster_ids"]]
          category  rank site_cluster_id  covered_units cluster_ids
    0  food_access     1               a            6.5         a;b
    >>> s.solves[["category", "status", "objective", "bound", "gap", "candidates"]]
          category   status  objective  bound  gap  candidates
    0    education  optimal        0.0    0.0  0.0           0
    1  food_access  optimal        6.5    6.5  0.0           3
    """
    if hasattr(clusters, "clusters") and not isinstance(clusters, pd.DataFrame):
        clusters = clusters.clusters
    _check_parameters(k, radius_km, capacity, time_limit, quantum)
    k, radius_km, time_limit, quantum = int(k), float(radius_km), float(time_limit), float(quantum)
    cap_q = None if capacity is None else int(math.floor(float(capacity) / quantum + 1e-9))
    cl, unmet_q = _check_clusters(clusters, quantum)
    if categories is None:
        wanted = sorted(set(cl["category"]))
    else:
        wanted = sorted({categories} if isinstance(categories, str) else set(categories))

    site_rows: list[dict[str, Any]] = []
    solve_rows: list[dict[str, Any]] = []
    cap_out = math.nan if capacity is None else float(capacity)
    for category in wanted:
        start = time.perf_counter()
        idx = np.flatnonzero((cl["category"].to_numpy() == category) & (unmet_q > 0))
        u = unmet_q[idx]
        lat, lon = cl["lat"].to_numpy()[idx], cl["lon"].to_numpy()[idx]
        ids = cl["cluster_id"].to_numpy()[idx]
        pairs = _covered_pairs(lat, lon, radius_km) if idx.size else np.zeros((0, 2), np.int64)
        prob = _Problem.build(u, pairs, cap_q)
        solve = _solve_category(prob, k, time_limit)
        order, gains = _rank_sites(prob, solve.chosen)
        served, members = _allocate(prob, order)
        if served != gains:  # pragma: no cover - the lexicographic flow equals the gains
            logger.warning(
                "recruit %s: allocation %s differs from gains %s", category, served, gains
            )
        objective = int(sum(served))
        if solve.status == "optimal":
            bound = objective
        else:
            bound = max(objective, math.floor(solve.bound + 1e-6 * max(1.0, abs(solve.bound))))
        for r, (s, q_served, mem) in enumerate(zip(order, served, members, strict=True), 1):
            site_rows.append(
                {
                    "category": category,
                    "rank": r,
                    "lat": float(lat[s]),
                    "lon": float(lon[s]),
                    "site_cluster_id": str(ids[s]),
                    "covered_units": _units(q_served, quantum),
                    "clusters_covered": len(mem),
                    "cluster_ids": ";".join(str(ids[i]) for i in mem),
                    "units_in_range": _units(int(prob.reach[s]), quantum),
                    "radius_km": radius_km,
                    "capacity": cap_out,
                }
            )
        seconds = time.perf_counter() - start
        solve_rows.append(
            {
                "category": category,
                "status": solve.status,
                "objective": _units(objective, quantum),
                "bound": _units(bound, quantum),
                "gap": 0.0 if bound == 0 else (bound - objective) / bound,
                "candidates": int(idx.size),
                "pairs": int(len(pairs)),
                "model_sites": solve.model_sites,
                "unmet_units": _units(int(u.sum()), quantum),
                "sites": len(order),
                "formulation": solve.formulation,
                "seconds": seconds,
            }
        )
        logger.info(
            "recruit %s: %d candidates, %d pairs, %s (%s), %d site(s) cover %s of %s units "
            "(bound %s) in %.2f s",
            category,
            idx.size,
            len(pairs),
            solve.status,
            solve.formulation,
            len(order),
            _units(objective, quantum),
            _units(int(u.sum()), quantum),
            _units(bound, quantum),
            seconds,
        )
    sites = pd.DataFrame(site_rows, columns=list(SITE_COLUMNS)).astype(
        {
            "rank": np.int64,
            "clusters_covered": np.int64,
            "lat": float,
            "lon": float,
            "covered_units": float,
            "units_in_range": float,
            "radius_km": float,
            "capacity": float,
        }
    )
    solves = pd.DataFrame(solve_rows, columns=list(SOLVE_COLUMNS)).astype(
        {
            "objective": float,
            "bound": float,
            "gap": float,
            "candidates": np.int64,
            "pairs": np.int64,
            "model_sites": np.int64,
            "unmet_units": float,
            "sites": np.int64,
            "seconds": float,
        }
    )
    parameters = {
        "k": k,
        "radius_km": radius_km,
        "capacity": None if capacity is None else float(capacity),
        "quantum": quantum,
        "time_limit": time_limit,
        "categories": list(wanted),
    }
    return RecruitSuggestions(sites=sites, solves=solves, parameters=parameters)


def _units(quanta: int, quantum: float) -> float:
    """Quanta to units, without float noise (e.g. 65 x 0.1 -> 6.5)."""
    return float(round(quanta * quantum, 10))
