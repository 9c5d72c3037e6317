"""Benchmark plans on real streets (``--travel walk|drive``) against straight-line plans.

Two instances, the targets of the streets issue (#17):

1. **The South Side sample** (``data/southside``: needs, partners and the walk and drive
   GeoPackages). In a fresh subprocess per mode: the network load
   (:func:`matcher.network.read_network`), the sample's clusters
   (:func:`matcher.pipeline.plan_clusters`) and the street costs of their candidate pairs
   (:func:`matcher.network.street_pairs`, ``--repeat`` times, in one process so that its
   parts can be measured: the great-circle k-d search, snapping, the Dijkstra batches of
   the distance search and, with a time limit, of the time search; a plan runs the
   searches of large instances in several processes, and searches the driving times of
   its assignments after the solve, in the "explain" stage). Target: the network costs
   in <= 2 s.
2. **A generated city** per ``--sizes`` entry (``matcher generate --seed 1``, reused when
   present, as ``stages.py`` does) with a generated street grid GeoPackage covering its
   extent (reused when present). The same cost measurement, then whole ``matcher plan``
   runs. Target: at 100k needs the street plan <= 2x the straight-line plan.

For both, ``matcher plan`` runs straight, ``--travel walk`` and ``--travel drive``
``--repeat`` times, interleaved (the order rotates each round), each in a fresh process:
wall time, the stage times the CLI logs, peak RSS (``os.wait4``) and background load.

Usage::

    python benchmarks/streets.py [--sizes 100k] [--repeat 3] [--out results.md]
                                 [--workdir DIR] [--spacing-m 125] [--no-sample]

Not part of the test suite. Run one benchmark at a time on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import statistics
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
DEFAULT_SIZES = "100k"
REPO = Path(__file__).resolve().parent.parent
SAMPLE_DIR = REPO / "data" / "southside"
#: Marker of the JSON result line a child process prints on stdout.
RESULT_PREFIX = "BENCH_RESULT "
#: Average CPU cores used by other processes above which timings are flagged as polluted.
BUSY_CORES = 0.2

TRAVELS = ("straight", "walk", "drive")
MODES = ("walk", "drive")
#: Stages the CLI logs (``stage NAME  X s``), in their order.
STAGES = ("read", "cluster", "candidates", "model", "solve", "explain", "merge", "write")
_STAGE = re.compile(r"^stage (\w+)\s+([0-9.]+) s$", re.MULTILINE)
_SERVED = re.compile(r"served ([0-9.]+) of ([0-9.]+) units.*?(\d+) assignments")

#: Targets of the issue.
SAMPLE_TARGET_S = 2.0
RATIO_TARGET = 2.0
RATIO_TARGET_NEEDS = 100_000

# --- the generated street grid
#: Default block length, m.
SPACING_M = 125.0
#: Margin of the grid around the extent of the needs and partners, m.
MARGIN_M = 500.0
#: Every this many lines is a 'secondary' street, every twice as many a 'primary' one.
ARTERIAL_EVERY = 8
#: Every this many residential lines (offset 1) is one-way, directions alternating.
ONEWAY_EVERY = 3
#: Share of residential segments left out, so that the grid is not a perfect lattice.
REMOVED_SHARE = 0.03
#: Node positions are jittered by up to this share of the spacing, each way.
JITTER = 0.1
#: Node ids start here (OpenStreetMap-like ids).
OSMID_BASE = 1_000_000_000


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
    """Needs / 10 up to 100k needs, 50k partners above (as ``stages.py``)."""
    return max(1, n_needs // 10) if n_needs <= 100_000 else 50_000


def label(n: int) -> str:
    """1000 -> "1k", 1000000 -> "1M"."""
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# --------------------------------------------------------------------------- instances


@dataclass
class Instance:
    """Inputs of the plans compared: needs, partners, optional neighborhoods, networks."""

    name: str
    needs: Path
    partners: Path
    networks: dict[str, Path]
    neighborhoods: Path | None = None
    n_needs: int | None = None
    grid: dict[str, Any] | None = None
    costs: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def sample_instance() -> Instance:
    """The committed South Side sample."""
    return Instance(
        "South Side sample",
        SAMPLE_DIR / "needs.csv",
        SAMPLE_DIR / "partners.csv",
        {mode: SAMPLE_DIR / f"southside_{mode}.gpkg" for mode in MODES},
    )


def matcher_command() -> list[str]:
    """The ``matcher`` CLI of this interpreter's environment."""
    exe = Path(sys.executable).with_name("matcher")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "from matcher.cli import main; main()"]


def ensure_city(workdir: Path, n_needs: int, n_partners: int) -> Path:
    """Generate the city with the CLI unless its three files exist (the layout of stages.py)."""
    city = workdir / str(n_needs)
    files = ("needs.csv", "partners.csv", "neighborhoods.geojson")
    if all((city / f).exists() for f in files):
        log(f"{label(n_needs)}: reusing {city}")
        return city
    log(f"{label(n_needs)}: generating {n_needs} needs, {n_partners} partners in {city}")
    start = time.perf_counter()
    subprocess.run(
        [*matcher_command(), "generate", "--needs", str(n_needs), "--partners",
         str(n_partners), "--seed", str(SEED), "--out", str(city), "--quiet"],
        check=True,
    )  # fmt: skip
    log(f"{label(n_needs)}: generated in {time.perf_counter() - start:.1f} s")
    return city


def grid_tables(
    lat_min: float,
    lat_max: float,
    lon_min: float,
    lon_max: float,
    spacing_m: float,
    seed: int,
) -> tuple[Any, Any]:
    """Make a street grid over an extent: the ``nodes`` and ``edges`` GeoDataFrames.

    Parameters
    ----------
    lat_min, lat_max, lon_min, lon_max : float
        The extent to cover (WGS84 degrees); the grid reaches :data:`MARGIN_M` beyond it.
    spacing_m : float
        Block length, metres.
    seed : int
        Seed of the jitter and of the segments left out.

    Returns
    -------
    (geopandas.GeoDataFrame, geopandas.GeoDataFrame)
        ``nodes`` (``osmid``, points) and ``edges`` (``u``, ``v``, ``length_m``,
        ``highway``, ``oneway``, line strings), both EPSG:4326.

    Notes
    -----
    Rows run east-west, columns north-south. Line ``k`` (a row or a column) is
    ``primary`` when ``k`` is a multiple of ``2 * ARTERIAL_EVERY``, ``secondary`` when a
    multiple of :data:`ARTERIAL_EVERY`, ``residential`` otherwise. Residential lines with
    ``k % ONEWAY_EVERY == 1`` are one-way, alternately ``yes`` (east or north) and ``-1``
    (west or south). :data:`REMOVED_SHARE` of the residential segments are left out and
    every node is moved by up to :data:`JITTER` of the spacing, so the grid is not a
    perfect lattice. ``length_m`` is the great-circle length of the segment.
    """
    import geopandas as gpd
    import numpy as np
    import shapely

    from matcher.geo import EARTH_RADIUS_KM, haversine_km

    rng = np.random.default_rng(seed)
    dlat = math.degrees(spacing_m / (EARTH_RADIUS_KM * 1000.0))
    dlon = dlat / math.cos(math.radians((lat_min + lat_max) / 2))
    blocks = MARGIN_M / spacing_m
    rows = math.ceil((lat_max - lat_min) / dlat + 2 * blocks) + 1
    cols = math.ceil((lon_max - lon_min) / dlon + 2 * blocks) + 1
    ii, jj = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    shift = rng.uniform(-JITTER, JITTER, size=(2, rows, cols))
    lat = (lat_min + (ii - blocks + shift[0]) * dlat).ravel()
    lon = (lon_min + (jj - blocks + shift[1]) * dlon).ravel()
    node = (ii * cols + jj).ravel()

    def line_tags(k: Any) -> tuple[Any, Any]:
        highway = np.where(
            k % (2 * ARTERIAL_EVERY) == 0,
            "primary",
            np.where(k % ARTERIAL_EVERY == 0, "secondary", "residential"),
        )
        one = (highway == "residential") & (k % ONEWAY_EVERY == 1)
        oneway = np.where(one, np.where((k // ONEWAY_EVERY) % 2 == 0, "yes", "-1"), "no")
        return highway, oneway

    # east-west segments (i, j) -> (i, j + 1) on row i; north-south (i, j) -> (i + 1, j)
    ew_u = (ii[:, :-1] * cols + jj[:, :-1]).ravel()
    ns_u = (ii[:-1, :] * cols + jj[:-1, :]).ravel()
    ew_hw, ew_ow = line_tags(ii[:, :-1].ravel())
    ns_hw, ns_ow = line_tags(jj[:-1, :].ravel())
    u = np.concatenate([ew_u, ns_u])
    v = np.concatenate([ew_u + 1, ns_u + cols])
    highway = np.concatenate([ew_hw, ns_hw])
    oneway = np.concatenate([ew_ow, ns_ow])
    keep = ~((highway == "residential") & (rng.random(u.size) < REMOVED_SHARE))
    u, v, highway, oneway = u[keep], v[keep], highway[keep], oneway[keep]
    length_m = haversine_km(lat[u], lon[u], lat[v], lon[v]) * 1000.0
    lines = shapely.linestrings(
        np.stack([np.stack([lon[u], lat[u]], axis=1), np.stack([lon[v], lat[v]], axis=1)], 1)
    )
    nodes = gpd.GeoDataFrame(
        {"osmid": node + OSMID_BASE},
        geometry=gpd.points_from_xy(lon, lat),
        crs="EPSG:4326",
    )
    edges = gpd.GeoDataFrame(
        {
            "u": u + OSMID_BASE,
            "v": v + OSMID_BASE,
            "length_m": np.round(length_m, 2) + 0.01,  # never below the great circle
            "highway": highway,
            "oneway": oneway,
        },
        geometry=lines,
        crs="EPSG:4326",
    )
    return nodes, edges


def ensure_grid(city: Path, workdir: Path, n_needs: int, spacing_m: float, seed: int) -> Path:
    """Write the city's street grid GeoPackage unless it exists; return its path."""
    path = workdir / f"{n_needs}-streets" / f"grid-{spacing_m:g}m-seed{seed}.gpkg"
    if path.exists():
        log(f"{label(n_needs)}: reusing {path}")
        return path
    import pandas as pd

    start = time.perf_counter()
    points = pd.concat(
        [pd.read_csv(city / f, usecols=["lat", "lon"]) for f in ("needs.csv", "partners.csv")]
    )
    nodes, edges = grid_tables(
        float(points["lat"].min()), float(points["lat"].max()),
        float(points["lon"].min()), float(points["lon"].max()), spacing_m, seed,
    )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.gpkg")
    partial.unlink(missing_ok=True)
    nodes.to_file(partial, layer="nodes", driver="GPKG", engine="pyogrio")
    edges.to_file(partial, layer="edges", driver="GPKG", engine="pyogrio")
    partial.rename(path)
    log(
        f"{label(n_needs)}: wrote a {spacing_m:g} m street grid, {len(nodes):,} nodes and "
        f"{len(edges):,} segments, in {time.perf_counter() - start:.1f} s: {path}"
    )
    return path


def city_instance(workdir: Path, n_needs: int, spacing_m: float, seed: int) -> Instance:
    """A generated city and its generated street grid."""
    city = ensure_city(workdir, n_needs, partners_for(n_needs))
    grid = ensure_grid(city, workdir, n_needs, spacing_m, seed)
    return Instance(
        f"{label(n_needs)} generated city",
        city / "needs.csv",
        city / "partners.csv",
        {mode: grid for mode in MODES},
        neighborhoods=city / "neighborhoods.geojson",
        n_needs=n_needs,
        grid={"spacing_m": spacing_m, "seed": seed, "file": str(grid)},
    )


# --------------------------------------------------------------------------- children


def _emit(result: dict[str, Any]) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


class Probe:
    """Time the parts of :func:`matcher.network.street_pairs` from the outside.

    Wraps, for the duration of a ``with`` block, the names ``street_pairs`` looks up at
    call time: ``candidate_pairs`` and ``shortest`` (module globals of
    :mod:`matcher.network.paths`), scipy's ``dijkstra`` as that module calls it, and
    :meth:`StreetNetwork.snap`. Nothing of matcher is changed on disk; the wrappers add a
    few microseconds per call.
    """

    def __init__(self) -> None:
        self.parts: dict[str, float] = {
            "candidates": 0.0,
            "snap": 0.0,
            "length": 0.0,
            "time": 0.0,
            "dijkstra_length": 0.0,
            "dijkstra_time": 0.0,
            "batches_length": 0,
            "batches_time": 0,
            "sources_length": 0,
            "sources_time": 0,
            "pairs_length": 0,
            "pairs_time": 0,
            "batch_max": 0,
        }
        self._weight = "length"
        self._saved: tuple[Any, ...] = ()

    def _add(self, key: str, start: float) -> None:
        self.parts[key] += time.perf_counter() - start

    def __enter__(self) -> Probe:
        import matcher.network.paths as paths
        from matcher.network.model import StreetNetwork

        cand, short, dij, snap = self._saved = (
            paths.candidate_pairs, paths.shortest, paths.dijkstra, StreetNetwork.snap,
        )  # fmt: skip
        parts = self.parts

        def timed_candidates(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return cand(*args, **kwargs)
            finally:
                self._add("candidates", start)

        def timed_shortest(net: Any, weight: str, sources: Any, *args: Any, **kw: Any) -> Any:
            self._weight = weight
            parts[f"pairs_{weight}"] += len(sources)
            start = time.perf_counter()
            try:
                return short(net, weight, sources, *args, **kw)
            finally:
                self._add(weight, start)

        def timed_dijkstra(graph: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return dij(graph, *args, **kwargs)
            finally:
                self._add(f"dijkstra_{self._weight}", start)
                n = len(kwargs.get("indices", ()))
                parts[f"batches_{self._weight}"] += 1
                parts[f"sources_{self._weight}"] += n
                parts["batch_max"] = max(parts["batch_max"], n)

        def timed_snap(net: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return snap(net, *args, **kwargs)
            finally:
                self._add("snap", start)

        paths.candidate_pairs = timed_candidates
        paths.shortest = timed_shortest
        paths.dijkstra = timed_dijkstra
        StreetNetwork.snap = timed_snap  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        import matcher.network.paths as paths
        from matcher.network.model import StreetNetwork

        paths.candidate_pairs, paths.shortest, paths.dijkstra, snap = self._saved
        StreetNetwork.snap = snap  # type: ignore[method-assign]


def child_costs(needs: Path, partners: Path, network: Path, mode: str, repeat: int) -> None:
    """Load the network, cluster, and time ``street_pairs`` ``repeat`` times; one JSON line."""
    import gc

    import numpy as np
    import pandas as pd

    from matcher import MatchConfig
    from matcher.candidates import candidate_pairs
    from matcher.io import read_partners
    from matcher.network import read_network, street_pairs
    from matcher.pipeline import plan_clusters
    from matcher.privacy import public_partners

    config = MatchConfig(travel=mode)  # type: ignore[arg-type]
    net, t_load = _timed(lambda: read_network(network, mode))
    (_, clusters), t_cluster = _timed(
        lambda: plan_clusters(needs, partners, config=config, network=net)
    )
    # the partners as the pipeline orders them (matcher/pipeline.py: _prepare)
    partner_df = read_partners(partners, taxonomy=config.taxonomy).frame
    partner_df = partner_df.sort_values("partner_id", kind="stable").reset_index(drop=True)
    if config.volunteer_points == "grid":
        partner_df = public_partners(partner_df)
    points = pd.read_csv(needs, usecols=["lat", "lon"])
    _, need_snap = net.snap(points["lat"].to_numpy(), points["lon"].to_numpy())
    _, partner_snap = net.snap(partner_df["lat"].to_numpy(), partner_df["lon"].to_numpy())
    great_circle = candidate_pairs(clusters, partner_df)
    runs: list[dict[str, float]] = []
    n_pairs = 0
    for _ in range(repeat):
        gc.collect()
        with Probe() as probe:
            pairs, seconds = _timed(
                lambda: street_pairs(clusters, partner_df, net, config.radius_min, workers=1)
            )
        n_pairs = len(pairs)
        runs.append({"total": seconds, **probe.parts})
    ratio = (pairs["distance_km"] / pairs["straight_km"].clip(lower=1e-9)).to_numpy()
    _emit(
        {
            "mode": mode,
            "nodes": net.n_nodes,
            "edges": net.n_edges,
            "dropped": net.dropped,
            "load": t_load,
            "cluster": t_cluster,
            "clusters": len(clusters),
            "partners": len(partner_df),
            "great_circle_pairs": len(great_circle),
            "street_pairs": n_pairs,
            "detour_median": float(np.median(ratio)) if ratio.size else None,
            "max_snap_m": float(max(need_snap.max(), partner_snap.max())),
            "runs": runs,
        }
    )


# --------------------------------------------------------------------------- measuring


def cpu_busy_seconds() -> float | None:
    """CPU seconds spent by the whole machine so far (all cores; None off Linux)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; its stdout, stderr, wall time, peak RSS and the background load.

    ``rss_mb`` is ``ru_maxrss`` from ``os.wait4`` on that very child (the largest of the
    process and anything it spawned and reaped); ``background`` is the CPU cores that
    other processes kept busy on average meanwhile (machine CPU time minus the child's,
    over the wall time; hypervisor steal counts too).
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        busy = cpu_busy_seconds()
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        busy_after = cpu_busy_seconds()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd)} failed with exit code {proc.returncode}:\n{stderr[-2000:]}"
        )
    background = None
    if busy is not None and busy_after is not None:
        own = usage.ru_utime + usage.ru_stime
        background = max(0.0, busy_after - busy - own) / wall
    return {
        "stdout": stdout,
        "stderr": stderr,
        "wall": wall,
        "rss_mb": usage.ru_maxrss / 1024,
        "background": background,
    }


def measure_costs(script: Path, inst: Instance, mode: str, repeat: int) -> dict[str, Any]:
    """Run the cost child for one mode; its JSON result plus wall, RSS and background."""
    cmd = [
        sys.executable, str(script), "--child", "costs", "--needs", str(inst.needs),
        "--partners", str(inst.partners), "--network", str(inst.networks[mode]),
        "--mode", mode, "--repeat", str(repeat),
    ]  # fmt: skip
    run = run_measured(cmd)
    lines = [ln for ln in run["stdout"].splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        raise RuntimeError(f"the cost child for {mode} printed no result:\n{run['stderr']}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result.update(wall=run["wall"], rss_mb=run["rss_mb"], background=run["background"])
    return result


def plan_command(inst: Instance, travel: str, out: Path) -> list[str]:
    """``matcher plan`` on the instance with one kind of travel."""
    cmd = [
        *matcher_command(), "plan", "--needs", str(inst.needs), "--partners",
        str(inst.partners), "--out", str(out), "--models-dir", str(out.parent / "models"),
    ]  # fmt: skip
    if inst.neighborhoods is not None:
        cmd += ["--neighborhoods", str(inst.neighborhoods)]
    if travel != "straight":
        cmd += ["--travel", travel, "--network", str(inst.networks[travel])]
    return cmd


def measure_plan(inst: Instance, travel: str, out: Path) -> dict[str, Any]:
    """One whole ``matcher plan`` run: wall, logged stages, served units, RSS, load."""
    shutil.rmtree(out, ignore_errors=True)
    run = run_measured(plan_command(inst, travel, out))
    stages = {m[1]: float(m[2]) for m in _STAGE.finditer(run["stderr"])}
    served = _SERVED.search(run["stdout"])
    return {
        "wall": run["wall"],
        "rss_mb": run["rss_mb"],
        "background": run["background"],
        "stages": stages,
        "served": float(served[1]) if served else None,
        "demand": float(served[2]) if served else None,
        "assignments": int(served[3]) if served else None,
    }


def bench_instance(script: Path, inst: Instance, workdir: Path, repeat: int) -> None:
    """Street costs per mode, then the interleaved whole plans; results go into ``inst``."""
    for mode in MODES:
        log(f"{inst.name}: street costs by {mode} (subprocess, {repeat} runs)")
        try:
            c = inst.costs[mode] = measure_costs(script, inst, mode, repeat)
        except RuntimeError as exc:
            inst.errors.append(f"{inst.name}, costs by {mode}: {exc}")
            continue
        totals = " ".join(f"{r['total']:.2f}" for r in c["runs"])
        log(
            f"  {c['nodes']:,} nodes, load {c['load']:.2f} s; {c['great_circle_pairs']:,} "
            f"great-circle -> {c['street_pairs']:,} street pairs; street_pairs {totals} s"
        )
    runs_dir = workdir / "streets-runs" / re.sub(r"\W+", "-", inst.name.lower()).strip("-")
    inst.runs = {t: [] for t in TRAVELS}
    for r in range(repeat):
        order = TRAVELS[r % len(TRAVELS) :] + TRAVELS[: r % len(TRAVELS)]
        for travel in order:
            try:
                run = measure_plan(inst, travel, runs_dir / travel)
            except RuntimeError as exc:
                inst.errors.append(f"{inst.name}, plan {travel}: {exc}")
                continue
            inst.runs[travel].append({**run, "round": r})
            log(
                f"{inst.name}: round {r + 1}, plan {travel}: {run['wall']:.2f} s wall, "
                f"candidates {_f(run['stages'].get('candidates'))} s, "
                f"{run['rss_mb']:.0f} MB, background {_f(run['background'])} cores"
            )
    shutil.rmtree(runs_dir, ignore_errors=True)


# --------------------------------------------------------------------------- report


def _f(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def round_ratios(inst: Instance, travel: str) -> list[float]:
    """Street wall / straight wall, round by round (the runs of a round are adjacent)."""
    straight = {r["round"]: r["wall"] for r in inst.runs.get("straight", [])}
    return [
        r["wall"] / straight[r["round"]]
        for r in inst.runs.get(travel, [])
        if r["round"] in straight
    ]


def machine_info() -> list[str]:
    """Header lines: machine, versions, load, what else was running at the start."""

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
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
        cwd=REPO, check=False,
    ).stdout.strip()  # fmt: skip
    load = os.getloadavg()
    return [
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M UTC}; matcher {ver('matcher')}"
        + (f" (git {commit})" if commit else ""),
        f"- machine: {os.cpu_count()} CPUs ({cpu}), {mem:.1f} GB RAM, {platform.system()} "
        f"{platform.release()}",
        f"- python {platform.python_version()}, scipy {ver('scipy')}, numpy {ver('numpy')}, "
        f"pandas {ver('pandas')}, geopandas {ver('geopandas')}, pyogrio {ver('pyogrio')}",
        f"- load average at start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)",
        "- " + busy_at_start(),
    ]


def busy_at_start(seconds: float = 2.0) -> str:
    """Other processes that used more than a tenth of a core over ``seconds`` at the start."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the dask extra
        return "processes at start: not checked (no psutil)"
    procs = []
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            p.cpu_percent(None)
            procs.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    busy = cpu_busy_seconds()
    time.sleep(seconds)
    after = cpu_busy_seconds()
    found = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if pct > 10 and p.pid != os.getpid():
            cmd = " ".join(p.info["cmdline"] or [p.info["name"] or "?"])[:60]
            found.append(f"`{cmd}` ({pct / 100:.2f} cores)")
    cores = "—" if busy is None or after is None else f"{(after - busy) / seconds:.2f}"
    listed = ", ".join(found) if found else "none above 0.1 core"
    return f"CPU busy at start (over {seconds:g} s): {cores} cores; other processes: {listed}"


def cost_table(instances: list[Instance]) -> list[str]:
    """Network load and street costs per instance and mode (seconds)."""
    head = [
        "instance", "mode", "nodes", "directed edges", "load", "clusters", "partners",
        "great-circle pairs", "street pairs", "kept", "median detour", "max snap m",
        "street_pairs (median)", "runs", "k-d candidates", "snap",
        "distance search: batches / sources", "its Dijkstra", "time search: batches / sources",
        "its Dijkstra", "other", "load + street_pairs", "peak RSS MB", "background load",
    ]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for inst in instances:
        for mode in MODES:
            c = inst.costs.get(mode)
            if c is None:
                continue
            runs = c["runs"]
            totals = [r["total"] for r in runs]
            mid = sorted(runs, key=lambda r: r["total"])[(len(runs) - 1) // 2]
            other = mid["total"] - mid["candidates"] - mid["snap"] - mid["length"] - mid["time"]
            time_search = (
                f"{mid['batches_time']:,} / {mid['sources_time']:,}" if mode == "drive" else "—"
            )
            kept = c["street_pairs"] / c["great_circle_pairs"] if c["great_circle_pairs"] else 0
            cells = [
                inst.name, mode, f"{c['nodes']:,}", f"{c['edges']:,}", _f(c["load"]),
                f"{c['clusters']:,}", f"{c['partners']:,}", f"{c['great_circle_pairs']:,}",
                f"{c['street_pairs']:,}", f"{kept:.0%}", _f(c["detour_median"]),
                f"{c['max_snap_m']:.0f}", _f(_median(totals)),
                " ".join(f"{t:.2f}" for t in totals), _f(mid["candidates"]), _f(mid["snap"]),
                f"{mid['batches_length']:,} / {mid['sources_length']:,}",
                _f(mid["dijkstra_length"]), time_search,
                _f(mid["dijkstra_time"]) if mode == "drive" else "—", _f(other),
                _f(c["load"] + (_median(totals) or 0.0)), f"{c['rss_mb']:.0f}",
                _f(c["background"]),
            ]  # fmt: skip
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def plan_table(instances: list[Instance]) -> list[str]:
    """Whole ``matcher plan`` runs per instance and travel (seconds)."""
    head = [
        "instance", "travel", "runs", "wall (median)", "fastest", "each run",
        "/ straight (median of rounds)", "read", "cluster", "candidates",
        "candidates share", "model", "solve", "explain", "merge", "write",
        "outside stages", "served units", "assignments", "peak RSS MB",
        "background load (max)",
    ]  # fmt: skip
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for inst in instances:
        for travel in TRAVELS:
            runs = inst.runs.get(travel) or []
            if not runs:
                continue
            walls = [r["wall"] for r in runs]
            wall = statistics.median(walls)
            stage = {s: _median([r["stages"][s] for r in runs if s in r["stages"]]) for s in STAGES}
            outside = _median([r["wall"] - sum(r["stages"].values()) for r in runs])
            ratios = round_ratios(inst, travel) if travel != "straight" else []
            cand = stage["candidates"]
            bg = [r["background"] for r in runs if r["background"] is not None]
            cells = [
                inst.name, travel, str(len(runs)), _f(wall), _f(min(walls)),
                " ".join(f"{w:.2f}" for w in walls),
                _f(_median(ratios)) + "x" if ratios else ("1.00x" if travel == "straight" else "—"),
                *(_f(stage[s]) for s in ("read", "cluster", "candidates")),
                f"{cand / wall:.0%}" if cand is not None else "—",
                *(_f(stage[s]) for s in ("model", "solve", "explain", "merge", "write")),
                _f(outside), _f(runs[0]["served"], 1), f"{runs[0]['assignments'] or 0:,}",
                f"{max(r['rss_mb'] for r in runs):.0f}", _f(max(bg) if bg else None),
            ]  # fmt: skip
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def target_lines(instances: list[Instance]) -> list[str]:
    """Whether each target holds (or was not measured)."""

    def verdict(ok: bool) -> str:
        return "**holds**" if ok else "**FAILS**"

    out: list[str] = []
    sample = next((i for i in instances if i.n_needs is None), None)
    for mode in MODES:
        c = sample.costs.get(mode) if sample else None
        name = f"South Side sample, network costs of the eligible pairs by {mode} <= 2 s"
        if c is None:
            out.append(f"- {name}: not measured")
            continue
        t = _median([r["total"] for r in c["runs"]]) or 0.0
        out.append(
            f"- {name}: {t:.2f} s (`street_pairs`, median) — {verdict(t <= SAMPLE_TARGET_S)}; "
            f"with the network load {c['load'] + t:.2f} s — "
            f"{verdict(c['load'] + t <= SAMPLE_TARGET_S)}"
        )
    city = next((i for i in instances if i.n_needs == RATIO_TARGET_NEEDS), None)
    for mode in MODES:
        name = f"{label(RATIO_TARGET_NEEDS)} generated city, {mode} plan <= 2x the straight plan"
        ratios = round_ratios(city, mode) if city else []
        if not ratios or city is None:
            out.append(f"- {name}: not measured")
            continue
        ratio = statistics.median(ratios)
        medians = [statistics.median(r["wall"] for r in city.runs[t]) for t in ("straight", mode)]
        rss = max(r["rss_mb"] for r in city.runs[mode]) / 1024
        out.append(
            f"- {name}: {ratio:.2f}x (median of {len(ratios)} rounds; medians "
            f"{medians[1]:.2f} s / {medians[0]:.2f} s) — {verdict(ratio <= RATIO_TARGET)}; "
            f"peak RSS {rss:.2f} GB"
        )
    return out


def report(instances: list[Instance], header: list[str], repeat: int) -> str:
    """The whole markdown report (``header``: :func:`machine_info` taken at the start)."""
    lines = ["# matcher benchmark: plans on streets (walk, drive) against straight lines", ""]
    lines += header
    for inst in instances:
        if inst.grid is not None:
            lines.append(
                f"- {inst.name}: `matcher generate --needs {inst.n_needs} --partners "
                f"{partners_for(inst.n_needs or 0)} --seed {SEED}` (with its neighborhoods); "
                f"street grid {inst.grid['spacing_m']:g} m, seed {inst.grid['seed']}, "
                f"`{inst.grid['file']}`"
            )
    lines += [
        "",
        f"## Street costs (seconds; `street_pairs` in a fresh process, {repeat} runs)",
        "",
        "Parts are those of the median run; 'other' is the rest of `street_pairs` (pandas "
        "and numpy glue). Great-circle pairs are the straight plan's candidates (same radii).",
        "",
    ]
    lines += cost_table(instances)
    lines += [
        "",
        f"## Whole `matcher plan` runs (seconds; {repeat} rounds, travels interleaved, "
        "order rotating)",
        "",
        "'/ straight' is the median over rounds of (this run / that round's straight run). "
        "'outside stages' is the wall time the CLI logs no stage for: interpreter start-up, "
        "imports and, with streets, reading the network file. Stage columns are medians.",
        "",
    ]
    lines += plan_table(instances)
    lines += ["", "## Targets", "", *target_lines(instances)]
    load = os.getloadavg()
    lines += ["", f"Load average at the end: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}."]
    busy = [
        f"{inst.name} costs by {mode} ({c['background']:.2f} cores)"
        for inst in instances
        for mode, c in inst.costs.items()
        if c["background"] is not None and c["background"] > BUSY_CORES
    ] + [
        f"{inst.name} plan {travel} run {i + 1} ({r['background']:.2f} cores)"
        for inst in instances
        for travel, runs in inst.runs.items()
        for i, r in enumerate(runs)
        if r["background"] is not None and r["background"] > BUSY_CORES
    ]
    if busy:
        lines += ["", "**Other processes used the CPU during:** " + ", ".join(busy) + "."]
        lines += ["Those timings are inflated; rerun on an idle machine."]
    else:
        lines += ["", f"No measurement had more than {BUSY_CORES} cores of background load."]
    errors = [e for inst in instances for e in inst.errors]
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
        help="comma-separated numbers of needs of generated cities, e.g. 10k,100k "
        f"(default {DEFAULT_SIZES}; empty: the sample only)",
    )
    ap.add_argument("--out", type=Path, help="also write the markdown report to this file")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "matcher-bench",
        help="where generated cities (as stages.py), street grids and plan outputs go",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="street_pairs runs per mode and plan rounds (straight, walk, drive; default 3)",
    )
    ap.add_argument(
        "--spacing-m", type=float, default=SPACING_M, help="block length of the street grid"
    )
    ap.add_argument("--grid-seed", type=int, default=SEED, help="seed of the street grid")
    ap.add_argument("--no-sample", action="store_true", help="skip the South Side sample")
    # internal: the child processes
    ap.add_argument("--child", choices=("costs",), help=argparse.SUPPRESS)
    ap.add_argument("--needs", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--partners", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--network", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or one child step); return the exit code."""
    args = parse_args(argv)
    repeat = max(1, args.repeat)
    if args.child == "costs":
        child_costs(args.needs, args.partners, args.network, args.mode, repeat)
        return 0
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.workdir.mkdir(parents=True, exist_ok=True)
    header = machine_info()
    instances: list[Instance] = [] if args.no_sample else [sample_instance()]
    problems: list[str] = []
    for n in sizes:
        try:
            instances.append(city_instance(args.workdir, n, args.spacing_m, args.grid_seed))
        except (OSError, subprocess.CalledProcessError) as exc:
            problems.append(f"{label(n)}: generating the city or its grid failed: {exc}")
    # children run a copy taken now, so that editing this file during a run is harmless
    with tempfile.TemporaryDirectory(prefix="streets-", dir=args.workdir) as tmp:
        script = Path(tmp) / "streets.py"
        shutil.copyfile(Path(__file__).resolve(), script)
        for inst in instances:
            bench_instance(script, inst, args.workdir, repeat)
    if problems:
        instances[:0] = [Instance("setup", Path(), Path(), {}, errors=problems)]
    text = report(instances, header, repeat)
    print(text)
    if args.out:
        args.out.write_text(text)
        log(f"wrote {args.out}")
    return 1 if any(inst.errors for inst in instances) else 0


if __name__ == "__main__":
    sys.exit(main())
