"""Benchmark matcher's pipeline stages and its min-cost-flow solver on generated cities.

For each size (number of needs; partners = needs / 10 up to 100k, 50k above) this script

1. generates a seeded synthetic city with ``matcher generate`` (reused when present);
2. runs ``matcher.plan`` + ``Plan.to_dir`` end to end in a fresh subprocess and records the
   per-stage timings (``Plan.timings``), the write time, the wall time including
   interpreter start-up and imports, and the peak RSS of that process (``os.wait4``);
3. in another fresh subprocess, rebuilds the plan's ``TransportModel`` with the pipeline
   lines of ``matcher/pipeline.py`` and solves the same model with (a) ``model.solve()`` (the
   default backend, LEMON's network simplex, per component), (b) bare OR-Tools
   ``SimpleMinCostFlow`` on the whole graph as one problem, (b') bare LEMON (pylmcf) on the
   same arrays,
   (c) ``matcher.solver.network_simplex`` on the networkx graph and
   (d) ``networkx.network_simplex`` on the same graph (skipped where it is too slow),
   and checks that every solver reaches the same optimal cost;
4. prints markdown tables (and writes them to ``--out``) and whether the targets hold.

Usage::

    python benchmarks/stages.py [--sizes 1k,10k,100k,1m] [--out results.md] [--workdir DIR]
                                [--repeat 3] [--with-networkx-100k]

Not part of the test suite. Run one benchmark at a time on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SEED = 1
DEFAULT_SIZES = "1k,10k,100k,1m"
#: Marker of the JSON result line a child process prints on stdout.
RESULT_PREFIX = "BENCH_RESULT "
#: networkx.network_simplex runs up to this size; at 100k only with --with-networkx-100k.
NX_ALWAYS_MAX = 10_000
NX_OPTIONAL_MAX = 100_000
NX_SKIP_100K = "skipped (> 5 min projected; measured 258-287 s)"
NX_SKIP_LARGER = "skipped (> 5 min projected)"

#: Average CPU cores used by other processes above which timings are flagged as polluted.
BUSY_CORES = 0.2

STAGES = ("read", "cluster", "candidates", "model", "solve", "explain")


def log(message: str) -> None:
    """Progress on stderr (stdout carries the tables)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- sizes


def parse_size(text: str) -> int:
    """``"1k"`` -> 1000, ``"1m"`` -> 1000000, ``"2500"`` -> 2500."""
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    digits = text[:-1] if factor > 1 else text
    value = int(float(digits) * factor)
    if value < 1:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return value


def partners_for(n_needs: int) -> int:
    """Needs / 10 up to 100k needs, 50k partners above."""
    return max(1, n_needs // 10) if n_needs <= 100_000 else 50_000


def label(n: int) -> str:
    """1000 -> "1k", 1000000 -> "1M"."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# --------------------------------------------------------------------------- children


def _emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _peak_rss_mb() -> tuple[float, float]:
    """Peak RSS of this process and of its largest reaped child (e.g. a pool worker), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return own, kids


def child_plan(city: Path, out_dir: Path) -> None:
    """Run ``matcher.plan`` + ``to_dir`` once and print the timings as one JSON line."""
    start = time.perf_counter()
    import matcher

    imported = time.perf_counter()
    result = matcher.plan(
        city / "needs.csv",
        city / "partners.csv",
        neighborhoods=city / "neighborhoods.geojson",
    )
    planned = time.perf_counter()
    result.to_dir(out_dir)
    written = time.perf_counter()
    own, kids = _peak_rss_mb()
    _emit(
        {
            "timings": result.timings,
            "import": imported - start,
            "plan": planned - imported,
            "write": written - planned,
            "rss_mb": own,
            "workers_rss_mb": kids,
            "needs": len(result.need_table),
            "partners": len(result.partners),
            "clusters": len(result.clusters),
            "pairs": result.solver["pairs"],
            "components": result.solver["components"],
            "objective": result.solver["objective_scaled"],
        }
    )


def build_model(city: Path) -> Any:
    """Rebuild the plan's ``TransportModel`` for a city, with the lines of ``matcher.plan``.

    Neighborhoods are not read: they only label needs for the metrics and do not
    change the model. The parent checks that this model's optimum equals the plan's.
    """
    import numpy as np
    import pandas as pd

    from matcher import MatchConfig, read_needs, read_partners
    from matcher.candidates import candidate_pairs
    from matcher.clustering import cluster_needs
    from matcher.costs import pair_costs
    from matcher.transport import TransportModel

    # --- as in matcher/pipeline.py: plan() ---
    config = MatchConfig()
    need_t = read_needs(city / "needs.csv", taxonomy=config.taxonomy)
    partner_t = read_partners(city / "partners.csv", taxonomy=config.taxonomy)
    need_df = need_t.frame.sort_values("need_id", kind="stable").reset_index(drop=True)
    partner_df = partner_t.frame.sort_values("partner_id", kind="stable").reset_index(drop=True)
    clustering = cluster_needs(need_df, config)
    cl = clustering.clusters
    cpos = pd.Series(np.arange(len(cl)), index=cl["cluster_id"])
    need_cpos = cpos.reindex(clustering.need_cluster.to_numpy()).to_numpy()
    pairs = candidate_pairs(cl, partner_df)
    pairs = pair_costs(pairs, cl, partner_df, need_df, need_cpos, config)
    model = TransportModel.build(
        cl, partner_df, pairs, need_df["demand"].to_numpy(), need_cpos, config
    )
    # --- end of the lines of plan() ---
    return model


def bare_lemon(model: Any) -> int:
    """Solve the whole model as ONE LEMON (pylmcf) problem on the same arrays as (b).

    Through ``matcher.solver._lemon_solve``: pylmcf plus its int64 guards and the sort
    of the arcs that pylmcf needs, with no decomposition.
    """
    from matcher.solver import _lemon_solve, transport_arrays

    arrays = transport_arrays(
        model.demand,
        model.penalty,
        model.capacity,
        model.pair_cluster,
        model.pair_partner,
        model.pair_weight,
    )
    solved = _lemon_solve(*arrays)
    if solved is None:
        raise RuntimeError("LEMON could not take this model (int64 range)")
    return solved[0]


def bare_ortools(model: Any) -> int:
    """Solve the whole model as ONE OR-Tools problem; return the optimal cost.

    The arcs are those of ``matcher.solver.transport_arrays`` (clusters, partners,
    "unmet", sink: what each component gets in ``model.solve``) for the whole model,
    without decomposition; clusters without pairs just go to "unmet". The flows are
    read back like matcher does, so both sides do the same work.
    """
    import numpy as np
    from ortools.graph.python import min_cost_flow

    from matcher.solver import transport_arrays

    n_nodes, tails, heads, caps, costs, supply = transport_arrays(
        model.demand,
        model.penalty,
        model.capacity,
        model.pair_cluster,
        model.pair_partner,
        model.pair_weight,
    )
    smcf = min_cost_flow.SimpleMinCostFlow()
    smcf.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    smcf.set_nodes_supplies(np.arange(n_nodes, dtype=np.int64), supply)
    status = smcf.solve()
    if status != smcf.OPTIMAL:
        raise RuntimeError(f"bare OR-Tools status {status}")
    smcf.flows(np.arange(model.pair_cluster.size, dtype=np.int64))
    return int(smcf.optimal_cost())


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


class SolverFellBack(Exception):
    """``matcher.solver.network_simplex`` handed the graph to ``networkx.network_simplex``."""


class FallbackWatch(logging.Filter):
    """Notice, and optionally stop, a fallback of the nx-compatible function to networkx.

    ``matcher.solver.network_simplex`` hands non-integer data, or numbers beyond int64
    range, to networkx's own solver (``matcher.solver._nx_network_simplex``); most of
    those paths say why in a debug log of ``matcher.solver``. The watch wraps that
    private name (the only sure way to see every fallback) and reads the log for the
    reason. Where networkx itself is too slow to run, the fallback is stopped by raising
    :class:`SolverFellBack` instead of running for hours.
    """

    def __init__(self, stop: bool) -> None:
        super().__init__()
        self.stop = stop
        self.reason: str | None = None
        self.fell_back = False

    def filter(self, record: logging.LogRecord) -> bool:
        if "networkx" in record.getMessage():
            self.reason = record.getMessage()
        return False  # keep the solver's logs quiet

    def wrap(self, nx_solver: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap networkx's solver: record the fallback, then stop it or run it."""

        def fallback(*args: Any, **kwargs: Any) -> Any:
            self.fell_back = True
            if self.stop:
                raise SolverFellBack(self.reason or "fallback")
            return nx_solver(*args, **kwargs)

        return fallback

    @property
    def message(self) -> str | None:
        """Why it fell back (None when it did not)."""
        if not self.fell_back:
            return None
        return self.reason or "fell back to networkx.network_simplex (no reason logged)"


def nx_compatible(graph: Any, run_networkx: bool) -> tuple[int | None, float | None, str | None]:
    """Time ``matcher.solver.network_simplex(graph)``; cost, seconds and any fallback message.

    Cost and seconds are None when it fell back to networkx and networkx is not run at
    this size.
    """
    import matcher.solver as ms

    solver_log = logging.getLogger("matcher.solver")
    watch = FallbackWatch(stop=not run_networkx)
    level, nx_solver = solver_log.level, ms._nx_network_simplex
    solver_log.setLevel(logging.DEBUG)
    solver_log.addFilter(watch)
    ms._nx_network_simplex = watch.wrap(nx_solver)
    try:
        (cost, _), seconds = _timed(lambda: ms.network_simplex(graph))
    except SolverFellBack:
        return None, None, watch.message
    finally:
        ms._nx_network_simplex = nx_solver
        solver_log.removeFilter(watch)
        solver_log.setLevel(level)
    return int(cost), seconds, watch.message


def child_compare(city: Path, repeat: int, run_networkx: bool) -> None:
    """Solve the same model with every solver; print timings and costs as one JSON line."""
    import gc

    import networkx as nx
    from ortools.graph.python import min_cost_flow  # noqa: F401 - loaded before any timing

    model, t_build = _timed(lambda: build_model(city))
    log(f"  model rebuilt in {t_build:.1f} s: {model.pair_cluster.size} arcs")
    # (a) and (b) interleaved, best of `repeat`, so that neither profits from a warm-up
    a_times: list[float] = []
    b_times: list[float] = []
    a_cost = b_cost = -1
    n_comp = 0
    l_times: list[float] = []
    l_cost = -1
    for _ in range(repeat):
        sol, t = _timed(lambda: model.solve())
        a_times.append(t)
        a_cost, n_comp = sol.objective, sol.components
        b_cost, t = _timed(lambda: bare_ortools(model))
        b_times.append(t)
        l_cost, t = _timed(lambda: bare_lemon(model))
        l_times.append(t)
        gc.collect()
    runs = " ".join(f"{a:.3f}/{b:.3f}" for a, b in zip(a_times, b_times, strict=True))
    log(f"  (a) {min(a_times):.3f} s  (b) {min(b_times):.3f} s  (each run a/b: {runs})")
    log(f"  (b') bare LEMON {min(l_times):.3f} s")
    graph, t_graph = _timed(model.to_graph)
    # (c) best of `repeat` like (a) and (b); (d) too where one run takes under 10 s
    c_runs = [nx_compatible(graph, run_networkx) for _ in range(repeat)]
    c_cost, _, c_fallback = c_runs[0]
    c_times = [t for _, t, _ in c_runs if t is not None]
    t_c = min(c_times) if c_times else None
    log(
        f"  (c) graph {t_graph:.2f} s, solve {_f(t_c)} s (runs: "
        + " ".join(f"{t:.3f}" for t in c_times)
        + ")"
        + (f" [{c_fallback}]" if c_fallback else "")
    )
    d_cost: int | None = None
    t_d: float | None = None
    d_times: list[float] = []
    if run_networkx:
        log("  (d) networkx.network_simplex ...")
        for _ in range(repeat):
            (d_cost, _), t = _timed(lambda: nx.network_simplex(graph))
            d_times.append(t)
            if t > 10:
                break
        t_d = min(d_times)
        log(f"  (d) {t_d:.1f} s (runs: {' '.join(f'{t:.2f}' for t in d_times)})")
    own, kids = _peak_rss_mb()
    _emit(
        {
            "model_build": t_build,
            "arcs": int(model.pair_cluster.size),
            "components": n_comp,
            "a": min(a_times),
            "a_all": a_times,
            "b": min(b_times),
            "b_all": b_times,
            "l": min(l_times),
            "l_all": l_times,
            "cost_l": int(l_cost),
            "graph_build": t_graph,
            "c": t_c,
            "c_all": c_times,
            "c_fallback": c_fallback,
            "d": t_d,
            "d_all": d_times,
            "cost_a": int(a_cost),
            "cost_b": int(b_cost),
            "cost_c": c_cost,
            "cost_d": None if d_cost is None else int(d_cost),
            "rss_mb": own,
            "workers_rss_mb": kids,
        }
    )


# --------------------------------------------------------------------------- parent


@dataclass
class SizeResult:
    """Everything measured for one size."""

    n_needs: int
    n_partners: int
    plan: dict[str, Any] | None = None
    compare: dict[str, Any] | None = None
    nx_note: str = ""
    costs_agree: bool | None = None
    errors: list[str] = field(default_factory=list)


def cpu_busy_seconds() -> float | None:
    """CPU seconds spent by the whole machine so far (all cores; None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_child(script: Path, args: list[str]) -> dict[str, Any]:
    """Run ``script`` (a copy of this one) as a child; its JSON result plus what was measured.

    Adds ``wall`` (seconds, start-up included), ``rss_wait4_mb`` (peak RSS from
    ``os.wait4`` on that very child, so earlier children such as the generator do
    not count) and ``background`` (CPU cores that other processes kept busy on
    average meanwhile: machine CPU time minus the child's, over the wall time).
    """
    cmd = [sys.executable, str(script), *args]
    busy = cpu_busy_seconds()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    busy_after = cpu_busy_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed with exit code {proc.returncode}")
    lines = [ln for ln in out.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError(f"child {' '.join(args)} printed no result")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["wall"] = wall
    result["rss_wait4_mb"] = usage.ru_maxrss / 1024
    result["background"] = None
    if busy is not None and busy_after is not None:
        own = usage.ru_utime + usage.ru_stime
        result["background"] = max(0.0, busy_after - busy - own) / wall
    return result


def matcher_command() -> list[str]:
    """The ``matcher`` CLI of this interpreter's environment."""
    exe = Path(sys.executable).with_name("matcher")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from matcher.cli import main; main()"]


def ensure_city(workdir: Path, n_needs: int, n_partners: int) -> Path:
    """Generate the city with the CLI unless its three files already exist."""
    city = workdir / str(n_needs)
    files = ("needs.csv", "partners.csv", "neighborhoods.geojson")
    if all((city / f).exists() for f in files):
        log(f"{label(n_needs)}: reusing {city}")
        return city
    log(f"{label(n_needs)}: generating {n_needs} needs, {n_partners} partners in {city}")
    start = time.perf_counter()
    subprocess.run(
        [
            *matcher_command(),
            "generate",
            "--needs",
            str(n_needs),
            "--partners",
            str(n_partners),
            "--seed",
            str(SEED),
            "--out",
            str(city),
            "--quiet",
        ],
        check=True,
    )
    log(f"{label(n_needs)}: generated in {time.perf_counter() - start:.1f} s")
    return city


def networkx_policy(n_needs: int, with_100k: bool) -> tuple[bool, str]:
    """Whether to run networkx.network_simplex at this size, and the note when skipped."""
    if n_needs <= NX_ALWAYS_MAX:
        return True, ""
    if n_needs <= NX_OPTIONAL_MAX:
        return (True, "") if with_100k else (False, NX_SKIP_100K)
    return False, NX_SKIP_LARGER


def bench_size(
    n_needs: int, workdir: Path, script: Path, repeat: int, with_nx_100k: bool
) -> SizeResult:
    """Generate, plan end to end, then compare the solvers, for one size."""
    res = SizeResult(n_needs, partners_for(n_needs))
    try:
        city = ensure_city(workdir, n_needs, res.n_partners)
    except (OSError, subprocess.CalledProcessError) as exc:
        res.errors.append(f"{label(n_needs)}: generate failed: {exc}")
        return res
    log(f"{label(n_needs)}: plan end to end (subprocess)")
    plan_args = ["--child", "plan", "--city", str(city)]
    try:
        plan = run_child(script, [*plan_args, "--plan-out", str(workdir / f"{n_needs}-plan")])
        res.plan = plan
        log(
            f"{label(n_needs)}: plan {plan['wall']:.1f} s wall, peak RSS "
            f"{plan['rss_wait4_mb']:.0f} MB, background load {_f(plan['background'])} cores"
        )
    except RuntimeError as exc:
        res.errors.append(f"{label(n_needs)}: {exc}")
    run_nx, res.nx_note = networkx_policy(n_needs, with_nx_100k)
    log(f"{label(n_needs)}: solver comparison (subprocess)")
    child_args = ["--child", "compare", "--city", str(city), "--repeat", str(repeat)]
    if run_nx:
        child_args.append("--run-networkx")
    try:
        compare = run_child(script, child_args)
    except RuntimeError as exc:
        res.errors.append(f"{label(n_needs)}: {exc}")
        return res
    res.compare = compare
    costs = {k: compare[f"cost_{k}"] for k in "abcdl" if compare.get(f"cost_{k}") is not None}
    if res.plan is not None:
        costs["plan"] = res.plan["objective"]
    res.costs_agree = len(set(costs.values())) == 1
    if not res.costs_agree:
        res.errors.append(f"{label(n_needs)}: optimal costs disagree: {costs}")
    return res


# --------------------------------------------------------------------------- report


def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _ratio(num: float | None, den: float | None, digits: int = 2) -> str:
    if num is None or den is None or den <= 0:
        return "—"
    return f"{num / den:.{digits}f}x"


def machine_info() -> list[str]:
    """Header lines: machine, versions, load."""

    def ver(pkg: str) -> str:
        try:
            return version(pkg)
        except PackageNotFoundError:
            return "?"

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).resolve().parent,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    load = os.getloadavg()
    return [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; matcher {ver('matcher')}"
        + (f" (git {commit})" if commit else ""),
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {mem:.1f} GB RAM, {platform.system()} "
        f"{platform.release()}",
        f"- python {platform.python_version()}, ortools {ver('ortools')}, "
        f"pylmcf {ver('pylmcf')}, networkx {ver('networkx')}, numpy {ver('numpy')}, "
        f"pandas {ver('pandas')}, scikit-learn {ver('scikit-learn')}",
        f"- load average at start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)",
        f"- instances: `matcher generate --seed {SEED}`; partners = needs / 10 up to 100k, "
        "50k above",
    ]


def stage_table(results: list[SizeResult]) -> list[str]:
    """Pipeline stages per size (seconds) with sizes and peak RSS."""
    head = (
        ["size", "needs", "partners", "clusters", "pairs", "components"]
        + list(STAGES)
        + ["other", "write", "import", "total wall", "peak RSS MB", "background load"]
    )
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        p = r.plan
        if p is None:
            continue
        t = p["timings"]
        other = p["plan"] - sum(t.get(s, 0.0) for s in STAGES)
        rss = f"{p['rss_wait4_mb']:.0f}"
        cells = [
            label(r.n_needs),
            f"{p['needs']:,}",
            f"{p['partners']:,}",
            f"{p['clusters']:,}",
            f"{p['pairs']:,}",
            f"{p['components']:,}",
            *(_f(t.get(s)) for s in STAGES),
            _f(other),
            _f(p["write"]),
            _f(p["import"]),
            _f(p["wall"]),
            rss,
            _f(p["background"]),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def nx_compat_cell(c: dict[str, Any]) -> str:
    """Time of the nx-compatible function, saying when it fell back to networkx."""
    fallback = c.get("c_fallback")
    if not fallback:
        return _f(c["c"])
    why = fallback.split(":")[0]
    if c["c"] is None:
        return f"falls back to networkx ({why}); not run"
    return f"{c['c']:.1f} (fell back to networkx: {why})"


def solver_table(results: list[SizeResult]) -> list[str]:
    """Solver comparison per size (seconds and ratios) on the same model."""
    head = [
        "size",
        "arcs",
        "components",
        "(a) matcher array",
        "(b) bare OR-Tools",
        "(a)/(b)",
        "(b') bare LEMON",
        "(a)/(b')",
        "(c) graph build",
        "(c) nx-compat solve",
        "(d) networkx",
        "(d)/(a)",
        "(d)/(c)",
        "optimal cost",
        "agree",
        "peak RSS MB",
        "background load",
    ]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        c = r.compare
        if c is None:
            continue
        agree = "yes" if r.costs_agree else "**NO**"
        cells = [
            label(r.n_needs),
            f"{c['arcs']:,}",
            f"{c['components']:,}",
            _f(c["a"], 3),
            _f(c["b"], 3),
            _ratio(c["a"], c["b"]),
            _f(c.get("l"), 3),
            _ratio(c["a"], c.get("l")),
            _f(c["graph_build"]),
            nx_compat_cell(c),
            _f(c["d"], 1) if c["d"] is not None else r.nx_note,
            _ratio(c["d"], c["a"], 0),
            _ratio(c["d"], c["c"], 0),
            f"{c['cost_a']:,}",
            agree,
            f"{c['rss_wait4_mb']:.0f}",
            _f(c["background"]),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def target_lines(results: list[SizeResult]) -> list[str]:
    """Whether each target holds (or was not measured)."""
    by_size = {r.n_needs: r for r in results}

    def verdict(ok: bool) -> str:
        return "**holds**" if ok else "**FAILS**"

    out: list[str] = []
    r = by_size.get(100_000)
    if r and r.compare:
        ratio = r.compare["a"] / r.compare["b"]
        aim = "also within the 1.0x aim" if ratio <= 1.0 else "above the 1.0x aim"
        out.append(
            f"- solver <= 1.3x bare OR-Tools at 100k: {ratio:.2f}x — {verdict(ratio <= 1.3)} "
            f"({aim})"
        )
    else:
        out.append("- solver <= 1.3x bare OR-Tools at 100k: not measured")
    r = by_size.get(10_000)
    if r and r.compare and r.compare["d"] is not None:
        sa = r.compare["d"] / r.compare["a"]
        sc = r.compare["d"] / r.compare["c"]
        out.append(
            f"- >= 50x faster than networkx at 10k: array path {sa:.0f}x — {verdict(sa >= 50)}; "
            f"nx-compatible function {sc:.0f}x — {verdict(sc >= 50)}"
        )
    else:
        out.append("- >= 50x faster than networkx at 10k: not measured")
    fell_back = [label(r.n_needs) for r in results if r.compare and r.compare.get("c_fallback")]
    if fell_back:
        out.append(
            "- note: `matcher.solver.network_simplex` fell back to `networkx.network_simplex` at "
            + ", ".join(fell_back)
        )
    for n, secs, gb in ((100_000, 20, 2), (1_000_000, 180, 8)):
        r = by_size.get(n)
        name = f"plan end to end {label(n)} x {label(partners_for(n))}"
        if r and r.plan:
            wall, rss_gb = r.plan["wall"], r.plan["rss_wait4_mb"] / 1024
            out.append(
                f"- {name} <= {secs} s: {wall:.1f} s — {verdict(wall <= secs)}; "
                f"<= {gb} GB: {rss_gb:.2f} GB — {verdict(rss_gb <= gb)}"
            )
        else:
            out.append(f"- {name} <= {secs} s and <= {gb} GB: not measured")
    return out


def report(results: list[SizeResult], header: list[str]) -> str:
    """The whole markdown report (``header``: :func:`machine_info` taken at the start)."""
    lines = ["# matcher benchmark: pipeline stages and solvers", "", *header, ""]
    lines += ["## Pipeline stages (seconds; `matcher.plan` + `to_dir` in a fresh process)", ""]
    lines += stage_table(results)
    lines += ["", "## Solvers on the same model (seconds; ratios are time / time)", ""]
    lines += solver_table(results)
    lines += ["", "## Targets", "", *target_lines(results)]
    load = os.getloadavg()
    lines += ["", f"Load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}."]
    busy = [
        f"{label(r.n_needs)} {step} ({run['background']:.2f} cores)"
        for r in results
        for step, run in (("plan", r.plan), ("solvers", r.compare))
        if run and run["background"] is not None and run["background"] > BUSY_CORES
    ]
    if busy:
        lines += ["", "**Other processes used the CPU during:** " + ", ".join(busy) + "."]
        lines += ["Those timings are inflated; rerun on an idle machine."]
    errors = [e for r in results for e in r.errors]
    if errors:
        lines += ["", "## Problems", "", *(f"- {e}" for e in errors)]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (``--child`` and friends are internal)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"comma-separated numbers of needs, e.g. 1k,10k,100k,1m (default {DEFAULT_SIZES})",
    )
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "matcher-bench",
        help="where generated cities and plan outputs go (reused across runs)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of solvers (a) and (b); the best is reported (default 3)",
    )
    ap.add_argument(
        "--with-networkx-100k",
        action="store_true",
        help="also run networkx.network_simplex at 100k (about 4 minutes)",
    )
    # internal: the child processes
    ap.add_argument("--child", choices=("plan", "compare"), help=argparse.SUPPRESS)
    ap.add_argument("--city", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--plan-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--run-networkx", action="store_true", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one child step); return the exit code."""
    args = parse_args(argv)
    if args.child == "plan":
        child_plan(args.city, args.plan_out)
        return 0
    if args.child == "compare":
        child_compare(args.city, max(1, args.repeat), args.run_networkx)
        return 0
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    header = machine_info()
    # children run a copy taken now, so that editing this file during a run is harmless
    with tempfile.TemporaryDirectory(prefix="stages-", dir=args.workdir) as tmp:
        script = Path(tmp) / "stages.py"
        shutil.copyfile(Path(__file__).resolve(), script)
        results = [
            bench_size(n, args.workdir, script, max(1, args.repeat), args.with_networkx_100k)
            for n in sizes
        ]
    text = report(results, header)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"wrote {args.out}")
    return 1 if any(r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
