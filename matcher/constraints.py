"""Side constraints on the plan's flow model: floors, share caps, locked pairs, churn.

Every constraint here keeps the model a pure min-cost flow, so the plan stays
exactly optimal:

- **Neighborhood floors** (``min_coverage``): the unmet arcs of a neighborhood's
  clusters meet in a neighborhood node whose way to ``unmet`` has two tiers: a
  direct arc for the units that may stay unmet above the floor, and an arc into a
  common *shortfall* node for the rest. Two exact solves make the order
  lexicographic: the first prices only the shortfall node's arc (1 per unit) and so
  finds the least total shortfall ``S*``; the second caps that arc at ``S*`` and
  optimises the usual objective (serve most, with priorities, then cost).
- **Partner share caps** (``max_partner_share``): a partner's arcs from the
  clusters of one neighborhood pass through a node ``(partner, neighborhood)``
  whose arc to the partner carries at most the share of its capacity.
- **Locked pairs**: a pair whose flow is fixed (lower bound = upper bound), applied by
  moving the locked units' supply from the cluster to the arc's head (the classic
  lower-bound transformation) and giving the pair's arcs no further capacity.
- **Churn**: a pair of the previous plan gets a parallel arc at its plain weight for
  the units it had; every other unit pays ``churn_weight`` more.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import numpy.typing as npt

from ._errors import InfeasibleMatchError
from .capacity_graph import SINK, UNMET, cluster_node, partner_node
from .equity import floor_links, per_hood
from .solver import SOLVER_NAMES, Backend, solve_arrays, solve_graph
from .transport import TransportModel, TransportSolution

__all__ = ["Constraints", "FlowArrays", "constrained_arrays", "solve_constrained"]

if TYPE_CHECKING:
    import networkx as nx

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
#: A node of the flow arrays: the ``cluster_node``/``partner_node`` names, ``UNMET`` and
#: ``SINK`` (strings), or a side-constraint node: ``("share", partner_id, hood_id)``,
#: ``("floor", hood_id)`` or ``("shortfall",)``.
NodeName: TypeAlias = str | tuple[str, ...]
#: A node of :func:`arrays_graph`: a :data:`NodeName`, or ``("arc", i)``, the middle node
#: of arc ``i`` when it is parallel to an earlier arc.
GraphNode: TypeAlias = NodeName | tuple[str, int]


@dataclass(frozen=True)
class Constraints:
    """Side constraints of a plan's flow model (see the module docstring).

    Attributes
    ----------
    hood_ids : tuple of str
        The neighborhoods the arrays below refer to.
    cluster_hood : numpy.ndarray of int64
        Per cluster: its neighborhood's position in ``hood_ids``, or -1.
    hood_allowance : numpy.ndarray of int64
        Per neighborhood: quanta that may stay unmet without falling below its floor,
        or -1 when it has no floor.
    share_cap : numpy.ndarray of int64 or None
        Per partner: at most this many quanta to the clusters of one neighborhood.
    lock : numpy.ndarray of int64
        Per pair: quanta fixed on the pair (0 = none).
    keep : numpy.ndarray of int64
        Per pair: quanta the previous plan had on it.
    churn_weight : int
        Extra integer cost per quantum not kept on a previous pair.
    quantum : float or None
        Units per quantum, so that messages speak in units (None: in quanta).
    """

    hood_ids: tuple[str, ...]
    cluster_hood: IntArray
    hood_allowance: IntArray
    share_cap: IntArray | None
    lock: IntArray
    keep: IntArray
    churn_weight: int = 0
    quantum: float | None = None

    def units(self, quanta: float) -> str:
        """Say an amount of quanta in units (``"2.5 units"``), or in quanta without a quantum."""
        if self.quantum is None:
            return f"{quanta:.0f} quanta"
        return f"{round(float(quanta) * self.quantum, 6):g} units"

    @property
    def active(self) -> bool:
        """Whether any constraint changes the plain transportation model."""
        return bool(
            (self.hood_allowance >= 0).any()
            or self.share_cap is not None
            or self.lock.any()
            or (self.churn_weight > 0 and self.keep.any())
        )

    def floor_links(self) -> IntArray:
        """Per cluster: its neighborhood when that has a floor, else -1 (see ``components``)."""
        return floor_links(self.cluster_hood, self.hood_allowance >= 0)


@dataclass(frozen=True)
class FlowArrays:
    """A min-cost flow as arrays, with named nodes and the arcs that matter to the plan.

    Attributes
    ----------
    names : tuple of NodeName
        Node names (networkx node labels): strings and side-constraint tuples.
    tails, heads, capacity, cost : numpy.ndarray of int64
        Arcs; parallel arcs are allowed.
    supply : numpy.ndarray of int64
        Per node, OR-Tools convention (positive = supply).
    arc_pair : numpy.ndarray of int64
        Per arc: the pair it carries flow for, or -1.
    cluster_unmet_arc : numpy.ndarray of int64
        Per cluster: its unmet arc.
    shortfall_arc : numpy.ndarray of int64
        Per neighborhood: its arc into the shortfall node, or -1.
    shortfall_out : int
        The shortfall node's arc to ``unmet``, or -1 without floors.
    constant : int
        Cost of the locked units (not part of the arcs).
    """

    names: tuple[NodeName, ...]
    tails: IntArray
    heads: IntArray
    capacity: IntArray
    cost: IntArray
    supply: IntArray
    arc_pair: IntArray
    cluster_unmet_arc: IntArray
    shortfall_arc: IntArray
    shortfall_out: int
    constant: int


def _check_locks(model: TransportModel, cons: Constraints, head: IntArray) -> None:
    """Locked units must fit their cluster's demand, the partner and its share cap."""
    lock = cons.lock
    by_cluster = np.bincount(model.pair_cluster, weights=lock, minlength=model.demand.size)
    by_partner = np.bincount(model.pair_partner, weights=lock, minlength=model.capacity.size)
    over_c = np.flatnonzero(by_cluster > model.demand)
    over_p = np.flatnonzero(by_partner > model.capacity)
    u = cons.units
    msgs = [
        f"locked units of cluster {model.cluster_ids[c]} ({u(by_cluster[c])}) exceed "
        f"its demand ({u(model.demand[c])})"
        for c in over_c[:5]
    ] + [
        f"locked units of partner {model.partner_ids[p]} ({u(by_partner[p])}) exceed "
        f"its capacity ({u(model.capacity[p])})"
        for p in over_p[:5]
    ]
    if cons.share_cap is not None:
        by_head = np.bincount(head, weights=lock)
        n_c, n_p = model.demand.size, model.capacity.size
        for h in np.flatnonzero(by_head[n_c + n_p :] > 0):
            pairs = np.flatnonzero((head == n_c + n_p + h) & (lock > 0))
            p = int(model.pair_partner[pairs[0]])
            if by_head[n_c + n_p + h] > cons.share_cap[p]:
                msgs.append(
                    f"locked units of partner {model.partner_ids[p]} in neighborhood "
                    f"{cons.hood_ids[cons.cluster_hood[model.pair_cluster[pairs[0]]]]} exceed "
                    f"its share cap ({u(cons.share_cap[p])})"
                )
    if msgs:
        raise InfeasibleMatchError("the locked pairs cannot all hold: " + "; ".join(msgs))


def constrained_arrays(
    model: TransportModel, cons: Constraints, *, shortfall_cap: int | None = None
) -> FlowArrays:
    """Build the constrained flow model as arrays (see the module docstring).

    Nodes: clusters, partners, ``(partner, neighborhood)`` share nodes, neighborhood
    floor nodes, the shortfall node, ``unmet`` and ``sink``. ``shortfall_cap`` caps
    the total shortfall below the floors (None: uncapped).

    Raises
    ------
    InfeasibleMatchError
        When locked pairs exceed a demand, a capacity or a share cap.
    """
    nc, npart = model.demand.size, model.capacity.size
    pc, pp, w = model.pair_cluster, model.pair_partner, model.pair_weight
    names: list[NodeName] = [cluster_node(c) for c in model.cluster_ids]
    names += [partner_node(p) for p in model.partner_ids]
    head = nc + pp
    share_tail = share_head = share_cap = np.zeros(0, dtype=np.int64)
    if cons.share_cap is not None:
        hood = cons.cluster_hood[pc]
        capped = hood >= 0
        key = pp[capped] * (len(cons.hood_ids) + 1) + hood[capped]
        uniq, inv = np.unique(key, return_inverse=True)
        head = head.copy()
        head[capped] = nc + npart + inv
        share_p = uniq // (len(cons.hood_ids) + 1)
        share_h = uniq % (len(cons.hood_ids) + 1)
        names += [
            ("share", model.partner_ids[p], cons.hood_ids[h])
            for p, h in zip(share_p.tolist(), share_h.tolist(), strict=True)
        ]
        share_tail = nc + npart + np.arange(uniq.size)
        share_head = nc + share_p
        share_cap = cons.share_cap[share_p]
    _check_locks(model, cons, head)
    floor_hoods = np.flatnonzero(cons.hood_allowance >= 0)
    hood_node = np.full(len(cons.hood_ids), -1, dtype=np.int64)
    hood_node[floor_hoods] = len(names) + np.arange(floor_hoods.size)
    names += [("floor", cons.hood_ids[h]) for h in floor_hoods]
    short = len(names) if floor_hoods.size else -1
    if floor_hoods.size:
        names.append(("shortfall",))
    unmet, sink = len(names), len(names) + 1
    names += [UNMET, SINK]

    # pair arcs: previous pairs get a kept tier at the plain weight, the rest pays churn
    # (a locked pair carries exactly its locked units: its arcs get no capacity)
    locked = cons.lock > 0
    keep = np.where(locked, 0, cons.keep) if cons.churn_weight > 0 else cons.keep * 0
    kept = np.flatnonzero(keep > 0)
    demand_left = model.demand - np.bincount(pc, weights=cons.lock, minlength=nc).astype(np.int64)
    pair_tails = np.concatenate([pc, pc[kept]])
    pair_heads = np.concatenate([head, head[kept]])
    pair_caps = np.concatenate([np.where(locked, 0, model.demand[pc]), keep[kept]])
    pair_costs = np.concatenate([w + cons.churn_weight, w[kept]])
    arc_pair = np.concatenate([np.arange(pc.size), kept])

    # unmet arcs, through the neighborhood node when it has a floor
    link = cons.floor_links()
    unmet_heads = np.full(nc, unmet, dtype=np.int64)
    unmet_heads[link >= 0] = hood_node[link[link >= 0]]
    hood_demand = per_hood(cons.cluster_hood, model.demand, len(cons.hood_ids))
    parts = [
        (pair_tails, pair_heads, pair_caps, pair_costs),
        (share_tail, share_head, share_cap, np.zeros(share_tail.size, np.int64)),
        (nc + np.arange(npart), np.full(npart, sink), model.capacity, np.zeros(npart, np.int64)),
        (np.arange(nc), unmet_heads, demand_left, model.penalty),
        (hood_node[floor_hoods], np.full(floor_hoods.size, unmet),
         cons.hood_allowance[floor_hoods], np.zeros(floor_hoods.size, np.int64)),
        (hood_node[floor_hoods], np.full(floor_hoods.size, short),
         hood_demand[floor_hoods], np.zeros(floor_hoods.size, np.int64)),
        (np.array([short] if floor_hoods.size else [], dtype=np.int64),
         np.array([unmet] if floor_hoods.size else [], dtype=np.int64),
         np.array([hood_demand[floor_hoods].sum() if shortfall_cap is None else shortfall_cap]
                  if floor_hoods.size else [], dtype=np.int64),
         np.zeros(1 if floor_hoods.size else 0, np.int64)),
        (np.array([unmet]), np.array([sink]), np.array([model.demand.sum()]), np.array([0])),
    ]  # fmt: skip
    tails, heads, caps, costs = (
        np.concatenate([p[i] for p in parts]).astype(np.int64) for i in range(4)
    )
    n_before_unmet = sum(p[0].size for p in parts[:3])
    n_before_short = n_before_unmet + nc + floor_hoods.size
    shortfall_arc = np.full(len(cons.hood_ids), -1, dtype=np.int64)
    shortfall_arc[floor_hoods] = n_before_short + np.arange(floor_hoods.size)
    shortfall_out = n_before_short + floor_hoods.size if floor_hoods.size else -1
    supply = np.zeros(len(names), dtype=np.int64)
    supply[:nc] = demand_left
    np.add.at(supply, head, cons.lock)
    supply[sink] = -int(model.demand.sum())
    arc_pair_all = np.full(tails.size, -1, dtype=np.int64)
    arc_pair_all[: arc_pair.size] = arc_pair
    return FlowArrays(
        tuple(names),
        tails,
        heads,
        caps,
        costs,
        supply,
        arc_pair_all,
        n_before_unmet + np.arange(nc),
        shortfall_arc,
        shortfall_out,
        int(np.dot(cons.lock, w)),
    )


def arrays_graph(arrays: FlowArrays, costs: IntArray | None = None) -> nx.DiGraph:
    """Build the networkx graph of flow arrays; a parallel arc gets a node of its own.

    The second and later arcs between two nodes ``u -> v`` become
    ``u -> ("arc", i) -> v`` (``i`` the arc's index), carrying its capacity and weight
    on the first leg. ``costs`` replaces the arcs' costs.
    """
    import networkx as nx

    g = nx.DiGraph()
    names = arrays.names
    for name, s in zip(names, arrays.supply.tolist(), strict=True):
        g.add_node(name, demand=-s)
    for i, (t, h, cap, cost) in enumerate(
        zip(
            arrays.tails.tolist(),
            arrays.heads.tolist(),
            arrays.capacity.tolist(),
            (arrays.cost if costs is None else costs).tolist(),
            strict=True,
        )
    ):
        u, v = names[t], names[h]
        if g.has_edge(u, v):
            mid = ("arc", i)
            g.add_node(mid, demand=0)
            g.add_edge(u, mid, capacity=cap, weight=cost)
            g.add_edge(mid, v, weight=0)
        else:
            g.add_edge(u, v, capacity=cap, weight=cost)
    return g


def _graph_flows(arrays: FlowArrays, flow: dict[GraphNode, dict[GraphNode, int]]) -> IntArray:
    names = arrays.names
    seen: set[tuple[int, int]] = set()
    out = np.zeros(arrays.tails.size, dtype=np.int64)
    for i, (t, h) in enumerate(zip(arrays.tails.tolist(), arrays.heads.tolist(), strict=True)):
        u = names[t]
        if (t, h) in seen:
            out[i] = flow[u][("arc", i)]
        else:
            seen.add((t, h))
            out[i] = flow[u][names[h]]
    return out


def _solve(arrays: FlowArrays, cost: IntArray, backend: Backend) -> tuple[int, IntArray, str]:
    """One exact solve of flow arrays with the given arc costs."""
    if backend == "networkx":
        sol = solve_graph(arrays_graph(arrays, cost), backend="networkx")
        return sol.cost, _graph_flows(arrays, sol.flow), sol.solver
    cost_opt, flows = solve_arrays(
        len(arrays.names),
        arrays.tails,
        arrays.heads,
        arrays.capacity,
        cost,
        arrays.supply,
        engine=backend,
    )
    return cost_opt, flows, SOLVER_NAMES[backend]


def _component_groups(model: TransportModel) -> list[IntArray]:
    """Cluster positions of each part solved on its own.

    Every component of the candidate graph with at least one pair (joined by floor
    links, see :func:`matcher.transport.components`) is a part; the clusters of all
    components without a pair form one more part (their flow is forced: all unmet).
    """
    comp = model.cluster_component
    has_pair = np.zeros(int(comp.max(initial=-1)) + 1, dtype=bool)
    has_pair[comp[model.pair_cluster]] = True
    order = np.argsort(comp, kind="stable")
    labels, starts = np.unique(comp[order], return_index=True)
    parts = np.split(order, starts[1:]) if order.size else []
    groups = [part for label, part in zip(labels, parts, strict=True) if has_pair[label]]
    alone = np.flatnonzero(~has_pair[comp])
    if alone.size:
        groups.append(alone)
    return groups


def _sub_problem(
    model: TransportModel, cons: Constraints, clusters: IntArray
) -> tuple[TransportModel, Constraints, IntArray, IntArray, IntArray]:
    """Cut out the model and constraints of some clusters, their partners and pairs.

    Positions keep their relative order, so the part of a component is built the same
    way whatever else the whole model holds. Returns the sub-model, its constraints and
    the global positions of its pairs, partners and neighborhoods.
    """
    pair_sel = np.isin(model.pair_cluster, clusters)
    pairs = np.flatnonzero(pair_sel)
    partners = np.unique(model.pair_partner[pairs])
    c_map = np.full(model.demand.size, -1, dtype=np.int64)
    c_map[clusters] = np.arange(clusters.size)
    p_map = np.full(model.capacity.size, -1, dtype=np.int64)
    p_map[partners] = np.arange(partners.size)
    hood = cons.cluster_hood[clusters]
    hoods = np.unique(hood[hood >= 0])
    h_map = np.full(len(cons.hood_ids) + 1, -1, dtype=np.int64)
    h_map[hoods] = np.arange(hoods.size)
    zeros_c, zeros_p = np.zeros(clusters.size, np.int64), np.zeros(partners.size, np.int64)
    sub = TransportModel(
        tuple(model.cluster_ids[i] for i in clusters.tolist()),
        tuple(model.partner_ids[i] for i in partners.tolist()),
        model.demand[clusters],
        model.penalty[clusters],
        model.capacity[partners],
        c_map[model.pair_cluster[pairs]],
        p_map[model.pair_partner[pairs]],
        model.pair_weight[pairs],
        zeros_c,
        zeros_p,
    )
    sub_cons = Constraints(
        tuple(cons.hood_ids[h] for h in hoods.tolist()),
        np.where(hood >= 0, h_map[hood], -1),
        cons.hood_allowance[hoods],
        cons.share_cap[partners] if cons.share_cap is not None else None,
        cons.lock[pairs],
        cons.keep[pairs],
        cons.churn_weight,
        cons.quantum,
    )
    return sub, sub_cons, pairs, partners, hoods


def _solve_part(
    model: TransportModel, cons: Constraints, backend: Backend
) -> tuple[int, IntArray, IntArray, IntArray]:
    """Solve one part exactly: objective, pair flow (locked units included), unmet, shortfall."""
    arrays = constrained_arrays(model, cons)
    if arrays.shortfall_out >= 0:
        phase1 = np.zeros(arrays.tails.size, dtype=np.int64)
        phase1[arrays.shortfall_out] = 1
        least, _, _ = _solve(arrays, phase1, backend)
        arrays = constrained_arrays(model, cons, shortfall_cap=least)
    cost, flows, _ = _solve(arrays, arrays.cost, backend)
    is_pair = arrays.arc_pair >= 0
    pair_flow = (
        np.bincount(
            arrays.arc_pair[is_pair], weights=flows[is_pair], minlength=model.pair_cluster.size
        ).astype(np.int64)
        + cons.lock
    )
    unmet = flows[arrays.cluster_unmet_arc]
    shortfall = np.where(arrays.shortfall_arc >= 0, flows[np.maximum(arrays.shortfall_arc, 0)], 0)
    return int(cost) + arrays.constant, pair_flow, unmet, shortfall.astype(np.int64)


def solve_constrained(
    model: TransportModel, cons: Constraints, backend: Backend = "lemon"
) -> tuple[TransportSolution, IntArray]:
    """Solve the constrained model exactly, component by component, in two phases with floors.

    Components of the candidate graph (the clusters of a neighborhood with a floor
    joined into one, see :func:`matcher.transport.components`) share no cluster,
    partner, neighborhood floor or share cap, so each is solved on its own and the
    optima add up; a component is solved the same way whatever else the model holds
    (which is what makes a plan split into regions identical to one solved whole).
    With floors, a first solve finds the component's least total shortfall ``S*``
    (only the shortfall node's arc has a cost), and a second one, with that arc capped
    at ``S*``, the optimum of the usual objective among the plans with that shortfall.

    Returns
    -------
    (TransportSolution, numpy.ndarray)
        The solution (``pair_flow`` includes locked units; ``objective`` is the sum of
        the second solves', with the locked units' cost; ``components`` counts the
        components with a pair) and, per neighborhood, the quanta below its floor (0
        where met or without a floor).

    Raises
    ------
    InfeasibleMatchError
        When locked pairs exceed a demand, a capacity or a share cap (checked over the
        whole model first, so the message names every excess).
    """
    start = time.perf_counter()
    if cons.lock.any():
        constrained_arrays(model, cons)  # raises with every excess
    pair_flow = np.zeros(model.pair_cluster.size, dtype=np.int64)
    unmet = np.zeros(model.demand.size, dtype=np.int64)
    shortfall = np.zeros(len(cons.hood_ids), dtype=np.int64)
    objective = 0
    groups = _component_groups(model)
    for clusters in groups:
        sub, sub_cons, pairs, _, hoods = _sub_problem(model, cons, clusters)
        cost, flow, left, short = _solve_part(sub, sub_cons, backend)
        objective += cost
        pair_flow[pairs] = flow
        unmet[clusters] = left
        shortfall[hoods] += short
    n_parts = sum(1 for g in groups if np.isin(g, model.pair_cluster).any())
    name = SOLVER_NAMES[backend]
    seconds = time.perf_counter() - start
    logger.info(
        "%s (constrained): %d components, %d pairs, %s below floors, %.2f s",
        name,
        n_parts,
        model.pair_cluster.size,
        cons.units(int(shortfall.sum())),
        seconds,
    )
    return (
        TransportSolution(pair_flow, unmet, objective, name, seconds, n_parts),
        shortfall,
    )
