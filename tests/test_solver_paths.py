"""Which solver path runs, and that every path gives the same optimum (issue #19).

``matcher.solver`` hands a problem to LEMON (pylmcf), to OR-Tools when LEMON cannot take
it (negative costs, int64 range), and to networkx when neither can (non-integer data,
numbers beyond int64); plans solve independent components in a process pool when
several are large. Each test here shows the path it claims was taken: spies that wrap
the real functions (they record calls and results and change nothing), or the log.
Results are checked against networkx's own network simplex, an independent solver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest
from click.testing import CliRunner, Result

import matcher.solver as ms
import matcher.transport as mt
from matcher import InfeasibleMatchError, MatcherError
from matcher.cli import main
from matcher.solver import network_simplex, solve_arrays, solve_components, solve_graph

from .conftest import plan_cli


class Spy:
    """Wrap a function of :mod:`matcher.solver`: record each call's arguments and result."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.results: list[Any] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        result = self.func(*args, **kwargs)
        self.results.append(result)
        return result


@pytest.fixture
def spies(monkeypatch: pytest.MonkeyPatch) -> dict[str, Spy]:
    """Spies on LEMON, OR-Tools and the networkx fallback of :mod:`matcher.solver`."""
    out = {}
    for key, name in (
        ("lemon", "_lemon_solve"),
        ("ortools", "_ortools_solve"),
        ("networkx", "_nx_network_simplex"),
    ):
        spy = Spy(getattr(ms, name))
        monkeypatch.setattr(ms, name, spy)
        out[key] = spy
    return out


def ran(spies: dict[str, Spy]) -> dict[str, int]:
    return {name: len(spy.calls) for name, spy in spies.items()}


def assert_same_as_networkx(g: nx.DiGraph, got: tuple[Any, dict[Any, Any]]) -> None:
    """The optimum of networkx's own network simplex, and a feasible flow of that cost."""
    want_cost, _ = nx.network_simplex(g)
    cost, flow = got
    assert cost == want_cost
    total, net = 0, dict.fromkeys(g, 0)
    for u, v, data in g.edges(data=True):
        x = flow[u][v]
        assert 0 <= x <= data.get("capacity", float("inf"))
        total += x * data.get("weight", 0)
        net[u] -= x
        net[v] += x
    assert total == cost
    assert all(net[u] == g.nodes[u].get("demand", 0) for u in g)


def transport_graph(rng: np.random.Generator, weights: tuple[int, int]) -> nx.DiGraph:
    """A random transportation problem with an unmet arc, costs drawn from ``weights``."""
    g = nx.DiGraph()
    demand = rng.integers(1, 30, 6)
    for c, d in enumerate(demand.tolist()):
        g.add_node(("c", c), demand=-d)
        g.add_edge(("c", c), "unmet", weight=1000)
    for p, cap in enumerate(rng.integers(1, 40, 4).tolist()):
        g.add_edge(("p", p), "sink", capacity=cap, weight=0)
    for c in range(6):
        for p in rng.choice(4, size=2, replace=False).tolist():
            g.add_edge(("c", c), ("p", p), weight=int(rng.integers(*weights)))
    g.add_edge("unmet", "sink", weight=0)
    g.nodes["sink"]["demand"] = int(demand.sum())
    return g


# ---------------------------------------------------------------------------------------
# network_simplex: LEMON -> OR-Tools -> networkx
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_non_negative_integer_costs_are_solved_by_lemon(seed: int, spies: dict[str, Spy]) -> None:
    g = transport_graph(np.random.default_rng(seed), (0, 500))
    got = network_simplex(g)
    assert ran(spies) == {"lemon": 1, "ortools": 0, "networkx": 0}
    assert spies["lemon"].results[0] is not None  # LEMON took it
    assert_same_as_networkx(g, got)


@pytest.mark.parametrize("seed", range(5))
def test_negative_costs_go_from_lemon_to_ortools(seed: int, spies: dict[str, Spy]) -> None:
    g = transport_graph(np.random.default_rng(seed), (-300, 300))
    assert min(w for _, _, w in g.edges(data="weight")) < 0
    got = network_simplex(g)
    assert ran(spies) == {"lemon": 1, "ortools": 1, "networkx": 0}
    assert spies["lemon"].results == [None]  # LEMON declined: it needs costs >= 0
    assert spies["ortools"].results[0] is not None
    assert_same_as_networkx(g, got)


def test_ortools_backend_skips_lemon(spies: dict[str, Spy]) -> None:
    g = transport_graph(np.random.default_rng(7), (0, 500))
    got = network_simplex(g, backend="ortools")
    assert ran(spies) == {"lemon": 0, "ortools": 1, "networkx": 0}
    assert_same_as_networkx(g, got)
    assert network_simplex(g, backend="networkx")[0] == got[0]
    assert ran(spies) == {"lemon": 0, "ortools": 1, "networkx": 1}


def test_negative_cycle_of_infinite_capacity_is_unbounded_through_ortools(
    spies: dict[str, Spy],
) -> None:
    g = nx.DiGraph()
    g.add_node("s", demand=-1)
    g.add_node("t", demand=1)
    g.add_edge("s", "t", weight=1, capacity=1)
    g.add_edge("a", "b", weight=-1)  # no capacity: infinite
    g.add_edge("b", "a", weight=0)
    with pytest.raises(nx.NetworkXUnbounded):
        nx.network_simplex(g)
    with pytest.raises(nx.NetworkXUnbounded):
        network_simplex(g)
    assert ran(spies) == {"lemon": 1, "ortools": 1, "networkx": 0}
    assert spies["lemon"].results == [None]


def test_non_integer_data_goes_to_networkx(
    spies: dict[str, Spy], caplog: pytest.LogCaptureFixture
) -> None:
    g = transport_graph(np.random.default_rng(3), (0, 500))
    g.edges["unmet", "sink"]["weight"] = 0.5
    with caplog.at_level(logging.DEBUG, logger="matcher.solver"):
        got = network_simplex(g)
    assert ran(spies) == {"lemon": 0, "ortools": 0, "networkx": 1}
    assert "non-integer or very large data: using networkx.network_simplex" in caplog.text
    assert got == nx.network_simplex(g)


def test_capacities_beyond_int64_go_to_networkx(
    spies: dict[str, Spy], caplog: pytest.LogCaptureFixture
) -> None:
    """Each number fits in a double exactly, but their sum (the 'infinite' capacity) not."""
    g = nx.DiGraph()
    g.add_node("s", demand=-5)
    g.add_node("t", demand=5)
    for i in range(400):  # 400 x 2**52 = 1.8e18 of capacity; x3 = 5.4e18 > 2**62 = 4.6e18
        g.add_edge("s", ("m", i), capacity=2**52, weight=i % 7)
        g.add_edge(("m", i), "t", weight=1)
    with caplog.at_level(logging.DEBUG, logger="matcher.solver"):
        got = network_simplex(g)
    assert ran(spies) == {"lemon": 0, "ortools": 0, "networkx": 1}
    assert "capacities beyond int64 range: using networkx.network_simplex" in caplog.text
    assert_same_as_networkx(g, got)
    assert got[0] == 5  # five units through the weight-0 middle node, then weight 1


def test_costs_beyond_both_engines_go_to_networkx(
    spies: dict[str, Spy], caplog: pytest.LogCaptureFixture
) -> None:
    """A cost of 2**52 on 1,500 nodes: LEMON's and OR-Tools' cost x (nodes + 1) overflow."""
    g = nx.DiGraph()
    g.add_nodes_from(range(1500))
    g.nodes[0]["demand"], g.nodes[1]["demand"] = -4, 4
    g.add_edge(0, 1, weight=2**52, capacity=10)
    g.add_edge(0, 2, weight=2**51, capacity=3)
    g.add_edge(2, 1, weight=1)
    with caplog.at_level(logging.DEBUG, logger="matcher.solver"):
        got = network_simplex(g)
    assert ran(spies) == {"lemon": 1, "ortools": 1, "networkx": 1}
    assert spies["lemon"].results == [None] and spies["ortools"].results == [None]
    assert "OR-Tools status" in caplog.text and "falling back to networkx" in caplog.text
    assert_same_as_networkx(g, got)
    assert got[0] == 3 * (2**51 + 1) + 2**52


def test_large_costs_lemon_declines_but_ortools_solves(spies: dict[str, Spy]) -> None:
    """A total cost near 2**62: too large for LEMON's bound, still exact in OR-Tools."""
    g = nx.DiGraph()
    g.add_node("s", demand=-1024)
    g.add_node("t", demand=1024)
    g.add_edge("s", "t", weight=2**52, capacity=1024)
    g.add_edge("s", "m", weight=2**52 - 3, capacity=1000)
    g.add_edge("m", "t", weight=1)
    got = network_simplex(g)
    assert ran(spies) == {"lemon": 1, "ortools": 1, "networkx": 0}
    assert spies["lemon"].results == [None]
    assert_same_as_networkx(g, got)


# ---------------------------------------------------------------------------------------
# solve_graph and solve_arrays: the errors a plan meets
# ---------------------------------------------------------------------------------------


def test_solve_graph_names_the_backend_and_maps_the_errors() -> None:
    g = transport_graph(np.random.default_rng(1), (0, 100))
    names = {b: solve_graph(g, backend=b) for b in ("lemon", "ortools", "networkx")}
    assert {b: s.solver for b, s in names.items()} == ms.SOLVER_NAMES
    assert len({s.cost for s in names.values()}) == 1
    infeasible = nx.DiGraph()
    infeasible.add_node("s", demand=-2)
    infeasible.add_node("t", demand=2)
    infeasible.add_edge("s", "t", capacity=1, weight=1)
    with pytest.raises(InfeasibleMatchError, match="infeasible"):
        solve_graph(infeasible)
    with pytest.raises(MatcherError, match="invalid flow model: graph has no nodes"):
        solve_graph(nx.DiGraph())


def arrays(weight: int, n_nodes: int = 3, units: int = 4) -> tuple[Any, ...]:
    """0 -> 1 -> 2 carrying ``units``; the first arc costs ``weight``."""
    return (
        n_nodes,
        np.array([0, 1], dtype=np.int64),
        np.array([1, 2], dtype=np.int64),
        np.array([units, units], dtype=np.int64),
        np.array([weight, 0], dtype=np.int64),
        np.array([units, 0, -units] + [0] * (n_nodes - 3), dtype=np.int64),
    )


def test_solve_arrays_lemon_then_ortools(spies: dict[str, Spy]) -> None:
    cost, flows = solve_arrays(*arrays(7))
    assert (cost, flows.tolist()) == (28, [4, 4])
    assert ran(spies) == {"lemon": 1, "ortools": 0, "networkx": 0}
    cost, flows = solve_arrays(*arrays(-7))  # negative: LEMON declines
    assert (cost, flows.tolist()) == (-28, [4, 4])
    assert ran(spies) == {"lemon": 2, "ortools": 1, "networkx": 0}
    cost, _ = solve_arrays(*arrays(7), engine="ortools")
    assert cost == 28
    assert ran(spies) == {"lemon": 2, "ortools": 2, "networkx": 0}


def test_solve_arrays_infeasible_and_out_of_range() -> None:
    n, tails, heads, caps, costs, supply = arrays(7)
    with pytest.raises(InfeasibleMatchError):
        solve_arrays(n, tails, heads, caps // 2, costs, supply)
    with pytest.raises(MatcherError, match="exceed the solver's int64 range"):
        solve_arrays(*arrays(2**52, n_nodes=1500))


def test_solve_arrays_never_returns_an_overflowed_cost() -> None:
    # LEMON declines (its bound is 2**62), OR-Tools "solves": the true cost is 2**50 x 2**13
    try:
        cost, flows = solve_arrays(*arrays(2**50, units=2**13))
    except MatcherError:
        return
    assert cost == int(flows[0]) * 2**50


# ---------------------------------------------------------------------------------------
# solve_components: the process pool
# ---------------------------------------------------------------------------------------


class CountingPool(ProcessPoolExecutor):
    """The real process pool, counting the components submitted to it."""

    submitted: list[int] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        CountingPool.submitted.append(int(args[0].pair_cluster.size))
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> type[CountingPool]:
    CountingPool.submitted = []
    monkeypatch.setattr(ms, "ProcessPoolExecutor", CountingPool)
    return CountingPool


def block_model(sizes: list[int], seed: int) -> dict[str, Any]:
    """Independent blocks of ``sizes[k]`` clusters x partners (all pairs eligible)."""
    rng = np.random.default_rng(seed)
    cc, pc_, pcl, ppt = [], [], [], []
    c0 = p0 = 0
    for k, n in enumerate(sizes):
        cc += [k] * n
        pc_ += [k] * n
        cl, pt = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        pcl.append(c0 + cl.ravel())
        ppt.append(p0 + pt.ravel())
        c0, p0 = c0 + n, p0 + n
    n_c = c0
    return {
        "cluster_component": np.array(cc, dtype=np.int64),
        "partner_component": np.array(pc_, dtype=np.int64),
        "demand": rng.integers(1, 50, n_c),
        "penalty": np.full(n_c, 10**7, dtype=np.int64),
        "capacity": rng.integers(0, 60, p0),
        "pair_cluster": np.concatenate(pcl).astype(np.int64),
        "pair_partner": np.concatenate(ppt).astype(np.int64),
        "pair_weight": rng.integers(0, 10_000, int(sum(n * n for n in sizes))),
    }


def solve_blocks(model: dict[str, Any], **kwargs: Any) -> tuple[int, np.ndarray]:
    labels = np.unique(model["cluster_component"])
    return solve_components(
        labels,
        model["cluster_component"],
        model["partner_component"],
        model["demand"],
        model["penalty"],
        model["capacity"],
        model["pair_cluster"],
        model["pair_partner"],
        model["pair_weight"],
        **kwargs,
    )


@pytest.mark.parametrize("engine", ["lemon", "ortools"])
def test_large_components_are_solved_in_a_process_pool(
    engine: str, pool: type[CountingPool], caplog: pytest.LogCaptureFixture
) -> None:
    # three components of 40 x 40 = 1,600 arcs and one of 9: three "large" at 1,000 arcs
    model = block_model([40, 3, 40, 40], seed=1)
    with caplog.at_level(logging.INFO, logger="matcher.solver"):
        parallel = solve_blocks(model, workers=2, parallel_min_arcs=1000, engine=engine)
    assert sorted(pool.submitted) == [1600, 1600, 1600]  # the small one stays in process
    assert "solved 3 large components in 2 processes" in caplog.text
    serial = solve_blocks(model, workers=1, parallel_min_arcs=1000, engine=engine)
    assert len(pool.submitted) == 3  # one worker: no pool
    assert parallel[0] == serial[0]
    assert np.array_equal(parallel[1], serial[1])
    # and the optimum of the whole model in one solve, by networkx's network simplex
    g = nx.DiGraph()
    nc = model["demand"].size
    for c, d in enumerate(model["demand"].tolist()):
        g.add_node(("c", c), demand=-d)
        g.add_edge(("c", c), "unmet", weight=int(model["penalty"][c]))
    for p, cap in enumerate(model["capacity"].tolist()):
        g.add_edge(("p", p), "sink", capacity=cap, weight=0)
    for c, p, w in zip(
        model["pair_cluster"].tolist(),
        model["pair_partner"].tolist(),
        model["pair_weight"].tolist(),
        strict=True,
    ):
        g.add_edge(("c", c), ("p", p), weight=w)
    g.add_edge("unmet", "sink", weight=0)
    g.nodes["sink"]["demand"] = int(model["demand"].sum())
    assert nc == 123
    assert parallel[0] == nx.network_simplex(g)[0]


def test_one_large_component_is_solved_in_process(
    pool: type[CountingPool], caplog: pytest.LogCaptureFixture
) -> None:
    model = block_model([40, 3, 3], seed=2)
    with caplog.at_level(logging.INFO, logger="matcher.solver"):
        one = solve_blocks(model, workers=2, parallel_min_arcs=1000)
    assert pool.submitted == []
    assert "large components" not in caplog.text
    assert one[0] == solve_blocks(model, workers=1)[0]


# ---------------------------------------------------------------------------------------
# the pool inside a real plan
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pool") / "city"
    result: Result = CliRunner().invoke(
        main, ["generate", "--needs", "1500", "--partners", "150", "--seed", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


def test_a_plan_solves_its_components_in_a_pool(
    city: Path,
    tmp_path: Path,
    pool: type[CountingPool],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Lower the size at which a component gets a process; the plan's files are unchanged."""
    serial_out = tmp_path / "serial"
    result = plan_cli(city / "needs.csv", city / "partners.csv", serial_out, tmp_path / "m", "-q")
    assert result.exit_code == 0, result.output
    assert pool.submitted == []  # at the default size (200,000 arcs) nothing is worth a process

    real = mt.solve_components

    def every_component_large(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{**kwargs, "workers": 2, "parallel_min_arcs": 1})

    monkeypatch.setattr(mt, "solve_components", every_component_large)
    pooled_out = tmp_path / "pooled"
    with caplog.at_level(logging.INFO, logger="matcher.solver"):
        result = plan_cli(city / "needs.csv", city / "partners.csv", pooled_out, tmp_path / "m")
    assert result.exit_code == 0, result.output
    n = len(pool.submitted)
    assert n >= 2, "the city must have several components for this test to mean anything"
    assert f"solved {n} large components in 2 processes" in caplog.text
    for name in ("assignments.csv", "clusters.csv", "unmet.csv", "summary.json"):
        assert (pooled_out / name).read_bytes() == (serial_out / name).read_bytes(), name
