"""networkx's own network_simplex tests, run against matcher.solver.network_simplex.

The test functions and fixtures of networkx's test module are imported here, so
pytest collects them in this module, where an autouse fixture replaces
``networkx.network_simplex`` (also used by ``nx.min_cost_flow`` and friends) by ours.
"""

import networkx as nx
import pytest
from networkx.algorithms.flow.tests.test_mincost import TestMinCostFlow  # noqa: F401
from networkx.algorithms.flow.tests.test_networksimplex import *  # noqa: F403

from matcher.solver import network_simplex as ours


@pytest.fixture(autouse=True)
def _use_matcher_solver(monkeypatch):
    monkeypatch.setattr(nx, "network_simplex", ours)
