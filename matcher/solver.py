"""The exact min-cost-flow solve of the capacity graph."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ._errors import InfeasibleMatchError, MatcherError, UnboundedMatchError

__all__ = ["FlowSolution", "solve_graph"]

logger = logging.getLogger(__name__)


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
    flow: dict[Any, dict[Any, int]]
    solver: str
    seconds: float


def solve_graph(graph: nx.DiGraph) -> FlowSolution:
    """Solve the min-cost flow of ``graph`` exactly with networkx's network simplex.

    Parameters
    ----------
    graph : networkx.DiGraph
        Node ``demand``, edge ``capacity`` and integer ``weight`` (networkx conventions).

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
        The graph is not a valid flow model (e.g. non-integer data).
    """
    start = time.perf_counter()
    try:
        cost, flow = nx.network_simplex(graph)
    except nx.NetworkXUnfeasible as exc:
        raise InfeasibleMatchError(f"the flow model is infeasible: {exc}") from exc
    except nx.NetworkXUnbounded as exc:
        raise UnboundedMatchError(f"the flow model is unbounded: {exc}") from exc
    except nx.NetworkXError as exc:
        raise MatcherError(f"invalid flow model: {exc}") from exc
    seconds = time.perf_counter() - start
    logger.info(
        "network simplex: cost %d on %d arcs in %.2f s", cost, graph.number_of_edges(), seconds
    )
    return FlowSolution(int(cost), flow, "networkx.network_simplex", seconds)
