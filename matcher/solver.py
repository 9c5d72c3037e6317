"""Exact min-cost flow: a fast networkx-compatible solver and the array path used by plans."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import chain
from operator import methodcaller
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex

import numpy as np
import numpy.typing as npt

from ._errors import InfeasibleMatchError, MatcherError, UnboundedMatchError

__all__ = [
    "BACKENDS",
    "FlowSolution",
    "network_simplex",
    "solve_graph",
    "solve_arrays",
    "solve_components",
    "transport_arrays",
]

if TYPE_CHECKING:  # networkx is imported where a graph is solved: plans never need it
    import networkx as nx

logger = logging.getLogger(__name__)

#: Solver backends: LEMON's network simplex (C++, through pylmcf; default), OR-Tools' C++
#: cost-scaling min-cost flow, or networkx's network simplex (Python).
BACKENDS = ("lemon", "ortools", "networkx")

Backend = Literal["lemon", "ortools", "networkx"]
#: The backends that solve arrays in C++.
Engine = Literal["lemon", "ortools"]
#: The name a plan records for each backend.
SOLVER_NAMES = {
    "lemon": "lemon.NetworkSimplex",
    "ortools": "ortools.SimpleMinCostFlow",
    "networkx": "networkx.network_simplex",
}
IntArray = npt.NDArray[np.int64]

#: OR-Tools' cost-scaling multiplies costs by (nodes + 1); keep every product in int64.
_INT64_SAFE = 2**62


@dataclass(frozen=True)
class FlowSolution:
    """An optimal flow.

    Attributes
    ----------
    cost : int
        The optimal total of flow x weight (integer, exact).
    flow : dict
        ``flow[u][v]`` is the flow on edge (u, v), as returned by networkx.
    solver : str
        Which solver produced it.
    seconds : float
        Wall time of the solve.
    """

    cost: int
    flow: dict[Any, dict[Any, Any]]
    solver: str
    seconds: float


class _Infeasible(Exception):
    """No flow meets the supplies (an engine said so)."""


def _nx_network_simplex(G: nx.DiGraph, **kwargs: Any) -> tuple[Any, dict[Any, Any]]:
    """Solve with networkx's own network simplex."""
    from networkx.algorithms.flow.networksimplex import network_simplex as nx_simplex

    return nx_simplex(G, **kwargs)


def _lemon_solve(
    n_nodes: int,
    tails: IntArray,
    heads: IntArray,
    caps: IntArray,
    costs: IntArray,
    supplies: IntArray,
) -> tuple[int, IntArray] | None:
    """Solve with LEMON's network simplex (pylmcf); None when it does not apply.

    It needs non-negative costs, supplies summing to zero (LEMON's ``geq`` form is
    then the equality form) and numbers whose products stay in int64; otherwise the
    caller uses OR-Tools. Raises ``_Infeasible`` when no flow exists.
    """
    import pylmcf

    if tails.size and (costs.min() < 0 or caps.min() < 0):
        return None
    if int(supplies.sum()) != 0:
        return None
    total = float(np.abs(supplies).sum())
    if tails.size:
        reach = np.minimum(caps.astype(np.float64), max(total, 1.0))
        if (
            float(np.dot(reach, costs.astype(np.float64))) >= _INT64_SAFE
            or float(costs.max()) * (n_nodes + 1) >= _INT64_SAFE
        ):
            return None
    order = np.lexsort((heads, tails))  # pylmcf wants arcs sorted by (tail, head)
    graph = pylmcf.Graph(n_nodes, tails[order].astype(np.int32), heads[order].astype(np.int32))
    graph.set_node_supply(np.ascontiguousarray(supplies, dtype=np.int64))
    graph.set_edge_capacities(np.ascontiguousarray(caps[order], dtype=np.int64))
    graph.set_edge_costs(np.ascontiguousarray(costs[order], dtype=np.int64))
    try:
        graph.solve()
    except RuntimeError as exc:
        if "INFEASIBLE" in str(exc):
            raise _Infeasible("no flow satisfies all node demands") from None
        logger.debug("pylmcf failed (%s); falling back to OR-Tools", exc)
        return None
    flows = np.empty(tails.size, dtype=np.int64)
    flows[order] = graph.result()
    return int(np.dot(flows, costs)) if tails.size else 0, flows


def _engine_solve(
    engine: Engine,
    n_nodes: int,
    tails: IntArray,
    heads: IntArray,
    caps: IntArray,
    costs: IntArray,
    supplies: IntArray,
) -> tuple[int, IntArray] | None:
    """Solve with ``engine``; LEMON hands what it cannot take to OR-Tools."""
    if engine == "lemon":
        solved = _lemon_solve(n_nodes, tails, heads, caps, costs, supplies)
        if solved is not None:
            return solved
    return _ortools_solve(n_nodes, tails, heads, caps, costs, supplies)


def _ortools_solve(
    n_nodes: int,
    tails: IntArray,
    heads: IntArray,
    caps: IntArray,
    costs: IntArray,
    supplies: IntArray,
) -> tuple[int, IntArray] | None:
    """Solve with OR-Tools; None when it cannot (status or int64 range), raise if infeasible."""
    from ortools.graph.python import min_cost_flow

    smcf = min_cost_flow.SimpleMinCostFlow()
    if tails.size:
        smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    # make sure every node exists even without arcs
    smcf.set_nodes_supplies(np.arange(n_nodes, dtype=np.int64), supplies)
    status = smcf.solve()
    if status == smcf.OPTIMAL:
        flows = (
            smcf.flows(np.arange(tails.size, dtype=np.int64))
            if tails.size
            else np.zeros(0, np.int64)
        )
        return int(smcf.optimal_cost()), np.asarray(flows, dtype=np.int64)
    if status in (smcf.INFEASIBLE, smcf.UNBALANCED):
        raise _Infeasible("no flow satisfies all node demands")
    logger.debug("OR-Tools status %s; falling back to networkx", status)
    return None


class _EdgeView:
    """``(u, v, data)`` of edge ``i`` of a DiGraph, built only when asked for (error paths)."""

    def __init__(
        self, nodes: list[Any], tails: IntArray, heads: IntArray, data: list[dict[str, Any]]
    ) -> None:
        self._nodes, self._tails, self._heads, self._data = nodes, tails, heads, data

    def __getitem__(self, i: SupportsIndex) -> tuple[Any, Any, dict[str, Any]]:
        return self._nodes[self._tails[i]], self._nodes[self._heads[i]], self._data[i]


def _negative_cycle(tails: np.ndarray, heads: np.ndarray, costs: np.ndarray) -> bool:
    """Whether the arcs (node indexes, integer costs) hold a cycle of negative cost."""
    import networkx as nx

    g = nx.DiGraph()
    for u, v, c in zip(tails.tolist(), heads.tolist(), costs.tolist(), strict=True):
        if not g.has_edge(u, v) or c < g[u][v]["weight"]:
            g.add_edge(u, v, weight=c)
    return bool(g.number_of_edges()) and nx.negative_edge_cycle(g, weight="weight")


def network_simplex(
    G: nx.DiGraph,
    demand: str = "demand",
    capacity: str = "capacity",
    weight: str = "weight",
    *,
    backend: Backend = "lemon",
) -> tuple[Any, dict[Any, Any]]:
    """Find a minimum-cost flow satisfying all demands in digraph ``G``.

    A drop-in replacement for :func:`networkx.network_simplex`: the same arguments,
    the same ``(flowCost, flowDict)`` result, the same exceptions, a missing
    capacity treated as infinite, self-loops and multigraphs handled as networkx
    handles them. Integer data is solved in C++ (exact): by LEMON's network simplex
    (pylmcf) when every cost is non-negative, else by OR-Tools' min-cost flow;
    non-integer data, or values beyond int64 range, fall back to networkx.

    Parameters
    ----------
    G : networkx.DiGraph or networkx.MultiDiGraph
        Node attribute ``demand`` (negative = supply), edge attributes ``capacity``
        (missing = infinite) and ``weight`` (cost per unit, missing = 0).
    demand, capacity, weight : str
        Attribute names.
    backend : {"lemon", "ortools", "networkx"}
        ``"ortools"`` skips LEMON; ``"networkx"`` calls networkx's own implementation.

    Returns
    -------
    flowCost : int
        The cost of an optimal flow.
    flowDict : dict
        ``flowDict[u][v]`` (``flowDict[u][v][key]`` for multigraphs) is the flow on
        each edge.

    Raises
    ------
    networkx.NetworkXError
        The graph has no nodes, or a node has infinite demand, or an edge infinite weight.
    networkx.NetworkXUnfeasible
        The demands do not sum to zero, an edge has a negative capacity, or no flow
        satisfies all demands.
    networkx.NetworkXUnbounded
        A negative-cost cycle of infinite capacity exists.
    networkx.NetworkXNotImplemented
        ``G`` is undirected.

    Examples
    --------
    >>> import networkx as nx
    >>> G = nx.DiGraph()
    >>> G.add_node("a", demand=-5)
    >>> G.add_node("d", demand=5)
    >>> G.add_edge("a", "b", weight=3, capacity=4)
    >>> G.add_edge("a", "c", weight=6, capacity=10)
    >>> G.add_edge("b", "d", weight=1, capacity=9)
    >>> G.add_edge("c", "d", weight=2, capacity=5)
    >>> network_simplex(G)
    (24, {'a': {'b': 4, 'c': 1}, 'd': {}, 'b': {'d': 4}, 'c': {'d': 1}})
    """
    import networkx as nx

    if not G.is_directed():  # as networkx's @not_implemented_for("undirected")
        raise nx.NetworkXNotImplemented("not implemented for undirected type")
    if backend not in BACKENDS:
        raise ValueError(f"`backend` must be one of {BACKENDS}, not {backend!r}")
    if backend == "networkx":
        return _nx_network_simplex(G, demand=demand, capacity=capacity, weight=weight)
    if len(G) == 0:
        raise nx.NetworkXError("graph has no nodes")
    multigraph = G.is_multigraph()
    inf = float("inf")
    nodes = list(G)
    index = {u: i for i, u in enumerate(nodes)}
    demands = [d for _, d in G.nodes(data=demand, default=0)]
    # (u, v, key, data) of each edge of a multigraph; (u, v, data), built lazily, otherwise
    all_edges: list[tuple[Any, ...]] | _EdgeView
    if multigraph:
        all_edges = list(G.edges(data=True, keys=True))
        data = [e[-1] for e in all_edges]
        tails_all = np.fromiter((index[e[0]] for e in all_edges), np.int64, len(all_edges))
        heads_all = np.fromiter((index[e[1]] for e in all_edges), np.int64, len(all_edges))
    else:  # the same edges in the same order as G.edges(data=True), read in bulk
        succ = G._succ  # the raw dict of dicts, as networkx algorithms read it
        data = [d for nbrs in succ.values() for d in nbrs.values()]
        degree = [len(nbrs) for nbrs in succ.values()]
        tails_all = np.repeat(np.arange(len(nodes)), degree)
        heads_all = np.fromiter(
            map(index.__getitem__, chain.from_iterable(succ.values())), np.int64, len(data)
        )
        all_edges = _EdgeView(nodes, tails_all, heads_all, data)
    try:
        dem_f = np.array(demands, dtype=np.float64)
        cap_f = np.fromiter(map(methodcaller("get", capacity, inf), data), np.float64, len(data))
        w_f = np.fromiter(map(methodcaller("get", weight, 0), data), np.float64, len(data))
    except (TypeError, ValueError):
        logger.debug("non-numeric data: using networkx.network_simplex")
        return _nx_network_simplex(G, demand=demand, capacity=capacity, weight=weight)
    loop = tails_all == heads_all
    kept = ~loop & (cap_f != 0)

    def first(mask: npt.NDArray[np.bool_]) -> tuple[Any, ...] | None:
        hits = np.flatnonzero(mask)
        return all_edges[hits[0]][:-1] if hits.size else None

    # the same checks, in the same order and with the same messages, as networkx
    bad_node = np.flatnonzero(np.isinf(dem_f))
    if bad_node.size:
        raise nx.NetworkXError(f"node {nodes[bad_node[0]]!r} has infinite demand")
    for mask in (kept & np.isinf(w_f), loop & np.isinf(w_f)):
        if (e := first(mask)) is not None:
            raise nx.NetworkXError(f"edge {e!r} has infinite weight")
    if sum(demands) != 0:
        raise nx.NetworkXUnfeasible("total node demand is not zero")
    for mask in (kept & (cap_f < 0), loop & (cap_f < 0)):
        if (e := first(mask)) is not None:
            raise nx.NetworkXUnfeasible(f"edge {e!r} has negative capacity")

    # exact integers only (floats are integral below 2**53): otherwise networkx decides
    finite_cap = kept & np.isfinite(cap_f)
    values = np.concatenate([dem_f, w_f[kept], cap_f[finite_cap]])
    if not (np.all(values == np.floor(values)) and np.all(np.abs(values) < 2.0**53)):
        logger.debug("non-integer or very large data: using networkx.network_simplex")
        return _nx_network_simplex(G, demand=demand, capacity=capacity, weight=weight)
    faux_inf = (
        3 * int(max(cap_f[finite_cap].sum(), np.abs(w_f[kept]).sum(), np.abs(dem_f).sum())) or 1
    )
    if faux_inf >= _INT64_SAFE:
        logger.debug("capacities beyond int64 range: using networkx.network_simplex")
        return _nx_network_simplex(G, demand=demand, capacity=capacity, weight=weight)

    tails, heads = tails_all[kept], heads_all[kept]
    caps = np.where(np.isinf(cap_f[kept]), faux_inf, cap_f[kept]).astype(np.int64)
    costs = w_f[kept].astype(np.int64)
    try:
        solved = _engine_solve(
            backend, len(nodes), tails, heads, caps, costs, -dem_f.astype(np.int64)
        )
    except _Infeasible as exc:
        raise nx.NetworkXUnfeasible(str(exc)) from None
    if solved is None:  # the solver's int64 range was exceeded
        return _nx_network_simplex(G, demand=demand, capacity=capacity, weight=weight)
    _, flows = solved
    if np.any(loop & np.isinf(cap_f) & (w_f < 0)):
        raise nx.NetworkXUnbounded("negative cycle with infinite capacity found")
    if np.any(flows * 2 >= faux_inf):
        # a negative cycle of infinite capacity (the model is unbounded), or an engine's
        # circulation on a cycle of zero cost, which is optimal and which networkx leaves
        # empty: then networkx's own solver gives its flow
        endless = np.isinf(cap_f[kept])
        if _negative_cycle(tails[endless], heads[endless], costs[endless]):
            raise nx.NetworkXUnbounded("negative cycle with infinite capacity found")
        logger.debug("flow around a zero-cost cycle: using networkx.network_simplex")
        return _nx_network_simplex(G, demand=demand, capacity=capacity, weight=weight)

    # exact: int64 when no product can overflow, else Python integers
    if float(np.abs(flows).max(initial=0)) * float(np.abs(costs).sum()) < 2.0**62:
        flow_cost = int(np.dot(flows, costs))
    else:  # pragma: no cover - astronomically large flows
        pairs = zip(flows.tolist(), costs.tolist(), strict=True)
        flow_cost = sum(int(f) * int(w) for f, w in pairs)
    flow_dict: dict[Any, dict[Any, Any]] = {u: {} for u in nodes}
    if multigraph:
        edges = [all_edges[i] for i in np.flatnonzero(kept).tolist()]
        for (u, v, k, _), f in zip(edges, flows.tolist(), strict=True):
            flow_dict[u].setdefault(v, {})[k] = f
    elif kept.all():  # one dict per node, in the graph's edge order (as networkx)
        values, start = flows.tolist(), 0
        for u, nbrs, deg in zip(nodes, succ.values(), degree, strict=True):
            flow_dict[u] = dict(zip(nbrs, values[start : start + deg], strict=True))
            start += deg
    else:  # networkx lists the solved edges first and the dropped ones after them
        for i, f in zip(np.flatnonzero(kept).tolist(), flows.tolist(), strict=True):
            u, v, _ = all_edges[i]
            flow_dict[u][v] = f
    for i in np.flatnonzero(~kept).tolist():
        e = all_edges[i]
        value = 0
        if loop[i] and w_f[i] < 0:
            value = e[-1][capacity]
            flow_cost += e[-1].get(weight, 0) * value
        if multigraph:
            flow_dict[e[0]].setdefault(e[1], {})[e[2]] = value
        else:
            flow_dict[e[0]][e[1]] = value
    return flow_cost, flow_dict


def solve_graph(graph: nx.DiGraph, *, backend: Backend = "lemon") -> FlowSolution:
    """Solve the min-cost flow of a capacity graph exactly.

    Parameters
    ----------
    graph : networkx.DiGraph
        Node ``demand``, edge ``capacity`` and integer ``weight`` (networkx conventions).
    backend : {"lemon", "ortools", "networkx"}
        The solver (see :func:`network_simplex`).

    Returns
    -------
    FlowSolution

    Raises
    ------
    InfeasibleMatchError
        No flow satisfies the demands.
    UnboundedMatchError
        A negative-cost cycle of infinite capacity exists.
    MatcherError
        The graph is not a valid flow model.
    """
    import networkx as nx

    start = time.perf_counter()
    try:
        cost, flow = network_simplex(graph, backend=backend)
    except nx.NetworkXUnfeasible as exc:
        raise InfeasibleMatchError(f"the flow model is infeasible: {exc}") from exc
    except nx.NetworkXUnbounded as exc:
        raise UnboundedMatchError(f"the flow model is unbounded: {exc}") from exc
    except nx.NetworkXError as exc:
        raise MatcherError(f"invalid flow model: {exc}") from exc
    seconds = time.perf_counter() - start
    name = SOLVER_NAMES[backend]
    logger.info("%s: cost %d on %d arcs in %.2f s", name, cost, graph.number_of_edges(), seconds)
    return FlowSolution(int(cost), flow, name, seconds)


def solve_arrays(
    n_nodes: int,
    tails: IntArray,
    heads: IntArray,
    capacity: IntArray,
    cost: IntArray,
    supply: IntArray,
    engine: Engine = "lemon",
) -> tuple[int, IntArray]:
    """Solve a min-cost flow given as arrays in C++ (no per-arc Python objects).

    Parameters
    ----------
    n_nodes : int
        Nodes are ``0 .. n_nodes - 1``.
    tails, heads, capacity, cost : numpy.ndarray of int64
        One entry per arc.
    supply : numpy.ndarray of int64
        Per node: positive = supply (OR-Tools convention, the negative of networkx's demand).
    engine : {"lemon", "ortools"}
        LEMON's network simplex (when the costs are non-negative) or OR-Tools.

    Returns
    -------
    (int, numpy.ndarray)
        The optimal cost and the flow on every arc.

    Raises
    ------
    InfeasibleMatchError
        No flow meets the supplies.
    MatcherError
        The numbers are out of the solver's int64 range.
    """
    try:
        solved = _engine_solve(engine, n_nodes, tails, heads, capacity, cost, supply)
    except _Infeasible as exc:
        raise InfeasibleMatchError(f"the flow model is infeasible: {exc}") from exc
    if solved is None:
        raise MatcherError("the flow model's numbers exceed the solver's int64 range")
    total, flows = solved
    # an engine may saturate a cost that overflows int64: check the cost of the flows
    if abs(float(np.dot(flows.astype(np.float64), cost.astype(np.float64)))) >= 2.0**62:
        nz = np.flatnonzero(flows)
        exact = sum(
            int(f) * int(c) for f, c in zip(flows[nz].tolist(), cost[nz].tolist(), strict=True)
        )
        if exact != total:
            raise MatcherError("the flow model's numbers exceed the solver's int64 range")
    return solved


@dataclass(frozen=True)
class _Component:
    """One independent subproblem of a transportation model with unmet arcs."""

    demand: IntArray  # per cluster of the component
    penalty: IntArray
    capacity: IntArray  # per partner of the component
    pair_cluster: IntArray  # local positions
    pair_partner: IntArray
    pair_weight: IntArray


def transport_arrays(
    demand: IntArray,
    penalty: IntArray,
    capacity: IntArray,
    pair_cluster: IntArray,
    pair_partner: IntArray,
    pair_weight: IntArray,
) -> tuple[int, IntArray, IntArray, IntArray, IntArray, IntArray]:
    """Arcs and supplies of a transportation model with unmet arcs, for :func:`solve_arrays`.

    Nodes: clusters ``0 .. C-1``, partners ``C .. C+P-1``, then ``unmet`` and ``sink``.
    Arcs, in this order: the pairs (cluster -> partner), partner -> sink (capacity),
    cluster -> unmet (penalty), unmet -> sink. The first ``len(pair_cluster)`` flows
    are those of the pairs.

    Returns
    -------
    (n_nodes, tails, heads, capacity, cost, supply)
    """
    nc, npart = demand.size, capacity.size
    unmet, sink = nc + npart, nc + npart + 1
    total = int(demand.sum())
    tails = np.concatenate([pair_cluster, nc + np.arange(npart), np.arange(nc), [unmet]])
    heads = np.concatenate([nc + pair_partner, np.full(npart, sink), np.full(nc, unmet), [sink]])
    caps = np.concatenate([demand[pair_cluster], capacity, demand, [total]])
    costs = np.concatenate([pair_weight, np.zeros(npart, np.int64), penalty, [0]])
    supply = np.concatenate([demand, np.zeros(npart, np.int64), [0, -total]])
    return (nc + npart + 2, *(a.astype(np.int64) for a in (tails, heads, caps, costs, supply)))  # type: ignore[return-value]


def _solve_component(comp: _Component, engine: Engine = "lemon") -> tuple[int, IntArray]:
    """Solve one component: clusters -> partners -> sink, clusters -> unmet -> sink."""
    arrays = transport_arrays(
        comp.demand,
        comp.penalty,
        comp.capacity,
        comp.pair_cluster,
        comp.pair_partner,
        comp.pair_weight,
    )
    cost, flows = solve_arrays(*arrays, engine=engine)
    return cost, flows[: comp.pair_cluster.size]


def solve_components(
    labels: Sequence[int] | IntArray,
    cluster_component: IntArray,
    partner_component: IntArray,
    demand: IntArray,
    penalty: IntArray,
    capacity: IntArray,
    pair_cluster: IntArray,
    pair_partner: IntArray,
    pair_weight: IntArray,
    *,
    workers: int | None = None,
    parallel_min_arcs: int = 200_000,
    engine: Engine = "lemon",
) -> tuple[int, IntArray]:
    """Solve the plan's transportation model component by component.

    Components of the candidate graph share no cluster and no partner, so their
    optima add up to the optimum of the whole model. Components are solved in a
    process pool when there is more than one with at least ``parallel_min_arcs``
    arcs (below that a pool costs more than it saves).

    Parameters
    ----------
    labels : sequence of int
        The component labels to solve (each with at least one pair).
    cluster_component, partner_component : numpy.ndarray of int
        Component label of each cluster and partner.
    demand, penalty : numpy.ndarray of int
        Per cluster, in quanta and integer cost per quantum.
    capacity : numpy.ndarray of int
        Per partner, in quanta.
    pair_cluster, pair_partner, pair_weight : numpy.ndarray of int
        The eligible arcs (global positions) and their integer costs.
    workers : int, optional
        Size of the process pool (default: the number of CPUs).
    parallel_min_arcs : int
        Size from which a component is worth a separate process.
    engine : {"lemon", "ortools"}
        The C++ solver (see :func:`solve_arrays`).

    Returns
    -------
    (int, numpy.ndarray)
        The total optimal cost (penalties included) and the flow on every pair.
    """
    pair_comp = cluster_component[pair_cluster]
    order = np.argsort(pair_comp, kind="stable")
    starts = np.searchsorted(pair_comp[order], labels, side="left")
    ends = np.searchsorted(pair_comp[order], labels, side="right")
    c_order = np.argsort(cluster_component, kind="stable")
    p_order = np.argsort(partner_component, kind="stable")
    c_sorted, p_sorted = cluster_component[c_order], partner_component[p_order]
    c_local = np.empty(cluster_component.size, dtype=np.int64)
    p_local = np.empty(partner_component.size, dtype=np.int64)
    jobs: list[tuple[_Component, IntArray]] = []
    for label, s, e in zip(labels, starts.tolist(), ends.tolist(), strict=True):
        cs = c_order[np.searchsorted(c_sorted, label) : np.searchsorted(c_sorted, label, "right")]
        ps = p_order[np.searchsorted(p_sorted, label) : np.searchsorted(p_sorted, label, "right")]
        c_local[cs] = np.arange(cs.size)
        p_local[ps] = np.arange(ps.size)
        arcs = order[s:e]
        comp = _Component(
            demand[cs],
            penalty[cs],
            capacity[ps],
            c_local[pair_cluster[arcs]],
            p_local[pair_partner[arcs]],
            pair_weight[arcs],
        )
        jobs.append((comp, arcs))
    flows = np.zeros(pair_cluster.size, dtype=np.int64)
    total = 0
    big = [i for i, (comp, _) in enumerate(jobs) if comp.pair_cluster.size >= parallel_min_arcs]
    n_workers = workers or os.cpu_count() or 1
    results: dict[int, tuple[int, IntArray]] = {}
    if len(big) > 1 and n_workers > 1:
        with ProcessPoolExecutor(max_workers=min(n_workers, len(big))) as pool:
            futures = {i: pool.submit(_solve_component, jobs[i][0], engine) for i in big}
            for i, (comp, _) in enumerate(jobs):
                if i not in futures:
                    results[i] = _solve_component(comp, engine)
            for i, fut in futures.items():
                results[i] = fut.result()
        logger.info(
            "solved %d large components in %d processes", len(big), min(n_workers, len(big))
        )
    else:
        for i, (comp, _) in enumerate(jobs):
            results[i] = _solve_component(comp, engine)
    for i, (_, arcs) in enumerate(jobs):
        cost, f = results[i]
        total += cost
        flows[arcs] = f
    return total, flows
