"""The capacity graph: a networkx DiGraph with networkx's min-cost-flow conventions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # imported where a graph is built: plans solve arrays, never graphs
    import networkx as nx

__all__ = ["SINK", "UNMET", "build_graph", "cluster_node", "partner_node"]

#: The node that absorbs every unit (served or not).
SINK = "sink"
#: The node that collects unmet units before the sink.
UNMET = "unmet"


def cluster_node(cluster_id: str) -> str:
    """Node name of a cluster."""
    return f"c:{cluster_id}"


def partner_node(partner_id: str) -> str:
    """Node name of a partner."""
    return f"p:{partner_id}"


def build_graph(
    cluster_ids: Sequence[str],
    demand: npt.NDArray[np.int64],
    penalty: npt.NDArray[np.int64],
    partner_ids: Sequence[str],
    capacity: npt.NDArray[np.int64],
    pair_cluster: npt.NDArray[np.int64],
    pair_partner: npt.NDArray[np.int64],
    pair_weight: npt.NDArray[np.int64],
) -> nx.DiGraph:
    """Build the min-cost-flow model.

    Parameters
    ----------
    cluster_ids, partner_ids : sequence of str
        Cluster and partner ids.
    demand, capacity : numpy.ndarray of int
        Units (in quanta) each cluster needs and each partner offers.
    penalty : numpy.ndarray of int
        Cost per unit left unmet, per cluster.
    pair_cluster, pair_partner, pair_weight : numpy.ndarray of int
        Eligible arcs: positions into the clusters and partners, and integer cost.

    Returns
    -------
    networkx.DiGraph
        Node attribute ``demand`` (networkx convention: negative = supply): each
        cluster supplies its demand, the sink absorbs all of it. Edges carry
        ``capacity`` and integer ``weight``: cluster -> partner (eligible pairs),
        partner -> sink (the partner's capacity, weight 0), cluster -> unmet (the
        cluster's demand at its penalty) and unmet -> sink (uncapacitated).

    Examples
    --------
    >>> g = build_graph(["a"], np.array([5]), np.array([100]), ["x"], np.array([3]),
    ...                 np.array([0]), np.array([0]), np.array([7]))
    >>> import networkx as nx
    >>> nx.network_simplex(g)[0]  # 3 units at cost 7, 2 unmet at 100
    221
    """
    import networkx as nx

    g = nx.DiGraph()
    total = int(np.sum(demand))
    g.add_node(SINK, demand=total)
    g.add_node(UNMET, demand=0)
    g.add_edge(UNMET, SINK, weight=0)
    for cid, d, pen in zip(cluster_ids, demand.tolist(), penalty.tolist(), strict=True):
        node = cluster_node(cid)
        g.add_node(node, demand=-d)
        g.add_edge(node, UNMET, capacity=d, weight=pen)
    for pid, cap in zip(partner_ids, capacity.tolist(), strict=True):
        node = partner_node(pid)
        g.add_node(node, demand=0)
        g.add_edge(node, SINK, capacity=cap, weight=0)
    cids = [cluster_node(c) for c in cluster_ids]
    pids = [partner_node(p) for p in partner_ids]
    g.add_edges_from(
        (cids[c], pids[p], {"capacity": int(demand[c]), "weight": w})
        for c, p, w in zip(
            pair_cluster.tolist(), pair_partner.tolist(), pair_weight.tolist(), strict=True
        )
    )
    return g
