"""The plan's flow model as arrays: components, penalties and the exact solve."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .capacity_graph import UNMET, build_graph, cluster_node, partner_node
from .config import MatchConfig
from .costs import priority_multiplier, unmet_penalties
from .solver import SOLVER_NAMES, Backend, solve_components, solve_graph

__all__ = ["TransportModel", "TransportSolution", "components"]

if TYPE_CHECKING:
    import networkx as nx

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]


def _quantize(
    values: npt.NDArray[np.float64], quantum: float, what: str, *, floor: bool, warn: bool = True
) -> IntArray:
    scaled = values / quantum
    q = np.floor(scaled + 1e-9) if floor else np.rint(scaled)
    changed = np.abs(q - scaled) > 1e-6
    if warn and changed.any():
        logger.warning(
            "%d %s value(s) rounded to a multiple of the quantum %g",
            int(changed.sum()),
            what,
            quantum,
        )
    return q.astype(np.int64)


def need_quanta(need_demand: npt.ArrayLike, quantum: float, *, warn: bool = True) -> IntArray:
    """Return quanta per need as the model counts them: the nearest quantum, at least one.

    ``warn`` logs the values that were rounded (the model does; a caller that only needs
    the same figures, e.g. to fit locks, need not say it twice).
    """
    values = np.asarray(need_demand, dtype=float)
    return np.maximum(_quantize(values, quantum, "demand", floor=False, warn=warn), 1)


def capacity_quanta(capacity: npt.ArrayLike, quantum: float, *, warn: bool = True) -> IntArray:
    """Return quanta per partner as the model counts them: capacity rounded down."""
    values = np.asarray(capacity, dtype=float)
    return _quantize(values, quantum, "capacity", floor=True, warn=warn)


def components(
    n_clusters: int,
    n_partners: int,
    pair_cluster: IntArray,
    pair_partner: IntArray,
    links: IntArray | None = None,
) -> tuple[IntArray, IntArray]:
    """Label the connected components of the bipartite candidate graph.

    ``links`` (optional, one group label per cluster, -1 for none) joins the
    clusters of one group into one component: the clusters of a neighborhood with a
    coverage floor share its allowance, so they are not independent.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        The component label of each cluster and of each partner. Labels are
        numbered in order of each component's first cluster (then partner).
    """
    n = n_clusters + n_partners
    rows, cols = pair_cluster, n_clusters + pair_partner
    if links is not None and (links >= 0).any():
        linked = np.flatnonzero(links >= 0)
        n_groups = int(links.max()) + 1
        rows = np.concatenate([rows, linked])
        cols = np.concatenate([cols, n + links[linked]])
        n += n_groups
    adj = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(adj, directed=False)
    labels = labels.astype(np.int64)
    return labels[:n_clusters], labels[n_clusters : n_clusters + n_partners]


@dataclass(frozen=True)
class TransportSolution:
    """An optimal flow of a :class:`TransportModel`.

    Attributes
    ----------
    pair_flow : numpy.ndarray of int64
        Quanta sent over each eligible pair.
    unmet : numpy.ndarray of int64
        Quanta left unmet per cluster.
    objective : int
        The optimal objective: pair costs plus unmet penalties (integer, exact).
    solver : str
        The backend that solved it.
    seconds : float
        Wall time of the solve.
    components : int
        Independent components solved.
    """

    pair_flow: IntArray
    unmet: IntArray
    objective: int
    solver: str
    seconds: float
    components: int


@dataclass(frozen=True)
class TransportModel:
    """Clusters supply their demand to partners within reach, or to "unmet".

    Attributes
    ----------
    cluster_ids, partner_ids : tuple of str
        Ids, for the networkx graph.
    demand, penalty : numpy.ndarray of int64
        Per cluster: quanta demanded and the cost per quantum left unmet.
    capacity : numpy.ndarray of int64
        Per partner: quanta offered.
    pair_cluster, pair_partner, pair_weight : numpy.ndarray of int64
        The eligible arcs and their integer cost per quantum.
    cluster_component, partner_component : numpy.ndarray of int64
        Component labels (see :func:`components`).
    """

    cluster_ids: tuple[str, ...]
    partner_ids: tuple[str, ...]
    demand: IntArray
    penalty: IntArray
    capacity: IntArray
    pair_cluster: IntArray
    pair_partner: IntArray
    pair_weight: IntArray
    cluster_component: IntArray
    partner_component: IntArray

    @classmethod
    def build(
        cls,
        clusters: pd.DataFrame,
        partners: pd.DataFrame,
        pairs: pd.DataFrame,
        need_demand: npt.NDArray[np.float64],
        need_cluster_pos: IntArray,
        config: MatchConfig,
        *,
        vulnerability: npt.NDArray[np.float64] | None = None,
        links: IntArray | None = None,
        extra_weight: int = 0,
        partner_side: bool = True,
    ) -> TransportModel:
        """Build the model of a plan from its clusters, partners and costed pairs.

        Demand is rounded per need to the nearest ``config.quantum`` (at least one)
        and summed per cluster; capacity is rounded down to a quantum; penalties come
        from :func:`matcher.costs.unmet_penalties`, per component (components joined
        by ``links``, see :func:`components`), with priorities from
        :func:`matcher.costs.priority_multiplier` (``vulnerability`` per cluster).
        """
        q = config.quantum
        need_q = need_quanta(need_demand, q)
        demand = np.bincount(need_cluster_pos, weights=need_q, minlength=len(clusters)).astype(
            np.int64
        )
        capacity = capacity_quanta(partners["capacity"].to_numpy(dtype=float), q)
        pc = pairs["cluster"].to_numpy(dtype=np.int64)
        pp = pairs["partner"].to_numpy(dtype=np.int64)
        comp_c, comp_p = components(len(clusters), len(partners), pc, pp, links)
        mult = priority_multiplier(clusters["severity"].to_numpy(), config, vulnerability)
        penalty = unmet_penalties(
            pairs, comp_c, comp_p, mult, extra_weight, partner_side=partner_side
        )
        return cls(
            tuple(clusters["cluster_id"].astype(str)),
            tuple(partners["partner_id"].astype(str)),
            demand,
            penalty,
            capacity,
            pc,
            pp,
            pairs["weight"].to_numpy(dtype=np.int64),
            comp_c,
            comp_p,
        )

    def to_graph(self) -> nx.DiGraph:
        """Build the networkx capacity graph (see :func:`matcher.capacity_graph.build_graph`)."""
        return build_graph(
            self.cluster_ids,
            self.demand,
            self.penalty,
            self.partner_ids,
            self.capacity,
            self.pair_cluster,
            self.pair_partner,
            self.pair_weight,
        )

    def solve(self, backend: Backend = "lemon", *, workers: int | None = None) -> TransportSolution:
        """Solve exactly.

        ``"lemon"`` (LEMON's network simplex) and ``"ortools"`` solve each component
        with pairs from arrays (in parallel when several are large); clusters without
        any eligible partner are unmet without a solve. ``"networkx"`` builds the
        networkx graph and runs its network simplex. All give the same optimal
        objective.
        """
        start = time.perf_counter()
        lonely = np.ones(self.demand.size, dtype=bool)
        lonely[self.pair_cluster] = False
        lonely_cost = int(np.dot(self.demand[lonely], self.penalty[lonely]))
        if backend == "networkx":
            sol = solve_graph(self.to_graph(), backend="networkx")
            flow = sol.flow
            cids, pids = self.cluster_ids, self.partner_ids
            pair_flow = np.fromiter(
                (
                    flow[cluster_node(cids[c])][partner_node(pids[p])]
                    for c, p in zip(
                        self.pair_cluster.tolist(), self.pair_partner.tolist(), strict=True
                    )
                ),
                dtype=np.int64,
                count=self.pair_cluster.size,
            )
            unmet = np.array([flow[cluster_node(c)][UNMET] for c in cids], dtype=np.int64)
            return TransportSolution(
                pair_flow, unmet, sol.cost, sol.solver, time.perf_counter() - start, 1
            )
        labels = np.unique(self.cluster_component[self.pair_cluster])
        cost, pair_flow = solve_components(
            labels,
            self.cluster_component,
            self.partner_component,
            self.demand,
            self.penalty,
            self.capacity,
            self.pair_cluster,
            self.pair_partner,
            self.pair_weight,
            workers=workers,
            engine=backend,
        )
        served = np.bincount(self.pair_cluster, weights=pair_flow, minlength=self.demand.size)
        unmet = self.demand - served.astype(np.int64)
        seconds = time.perf_counter() - start
        logger.info(
            "%s: %d components, %d arcs, %.2f s",
            backend,
            labels.size,
            self.pair_cluster.size,
            seconds,
        )
        return TransportSolution(
            pair_flow,
            unmet,
            cost + lonely_cost,
            SOLVER_NAMES[backend],
            seconds,
            int(labels.size),
        )
