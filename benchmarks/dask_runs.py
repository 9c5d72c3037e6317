"""`matcher plan` in one process and with `--dask local:N`, side by side: wall, stages, memory.

For each input directory (``needs.csv``, ``partners.csv``) this script runs ``matcher plan``
in a fresh process, alternating the single-process run (A) and the Dask run (B,
``--dask local:N``) ``--repeat`` times. It records the wall time of the whole command
(interpreter start, imports and the local cluster's start-up included), the stage times
the CLI logs, and the peak resident memory of every process of the run: the driver and
each Dask process (scheduler, nannies, workers), sampled every 50 ms with psutil. It
checks that both runs wrote byte-identical plan directories. Medians are reported, with
B/A ratios taken pair by pair. ``--dask-only DIR`` runs an input with Dask alone (for an
input one process cannot hold).

Usage::

    python benchmarks/dask_runs.py DIR [DIR ...] [--dask-only DIR ...] [--workers 2]
                                   [--repeat 3] [--out results.md]

Generate inputs with ``matcher generate`` (e.g. ``--needs 1000000 --partners 50000
--seed 1`` for a city, ``--needs 10000000 --partners 500000 --cities 200`` for a
country). Not part of the test suite. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

logger = logging.getLogger("benchmarks.dask_runs")

_STAGE = re.compile(r"stage (\w+)\s+([0-9.]+) s")


def _watch(proc: subprocess.Popen[bytes], peaks: dict[int, tuple[str, float]]) -> None:
    """Sample the RSS of ``proc`` and its descendants until it exits."""
    try:
        root = psutil.Process(proc.pid)
    except psutil.NoSuchProcess:
        return
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                rss = p.memory_info().rss / 2**20
                kind = "driver" if p.pid == proc.pid else _kind(p)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            old = peaks.get(p.pid, (kind, 0.0))
            peaks[p.pid] = (kind if kind != "other" else old[0], max(old[1], rss))
        time.sleep(0.05)


def _kind(p: psutil.Process) -> str:
    """Tell a Dask worker process from the others (nanny, scheduler, resource tracker)."""
    try:
        cmd = " ".join(p.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "other"
    if "multiprocessing.spawn" in cmd or "multiprocessing.forkserver" in cmd:
        return "worker"
    return "other"


def _run(cmd: list[str], cwd: Path) -> tuple[float, dict[str, float], str]:
    """Run ``cmd``; return (wall seconds, peak RSS MB per kind of process, stderr)."""
    peaks: dict[int, tuple[str, float]] = {}
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=err)
        watcher = threading.Thread(target=_watch, args=(proc, peaks), daemon=True)
        watcher.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        watcher.join()
        err.seek(0)
        text = err.read().decode(errors="replace")
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({code}):\n{text[-2000:]}")
    by_kind: dict[str, float] = {}
    for kind, mb in peaks.values():
        by_kind[kind] = max(by_kind.get(kind, 0.0), mb)
    return wall, by_kind, text


def _plan(inputs: Path, out: Path, dask: str | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "matcher.cli",
        "plan",
        "--needs",
        str(inputs / "needs.csv"),
        "--partners",
        str(inputs / "partners.csv"),
        "--out",
        str(out),
        "--models-dir",
        str(out.parent / "models"),
    ]
    return cmd + (["--dask", dask] if dask else [])


def _same(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print (or write) a markdown report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="*", type=Path)
    parser.add_argument("--dask-only", nargs="*", type=Path, default=[])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    dask = f"local:{args.workers}"
    work = Path(tempfile.mkdtemp(prefix="matcher-dask-bench-"))
    rows = [
        "| input | run | wall s (median) | B/A | driver peak MB | largest worker MB "
        "| stages (median s) |",
        "|---|---|---|---|---|---|---|",
    ]
    try:
        jobs = [(d, False) for d in args.inputs] + [(d, True) for d in args.dask_only]
        for inputs, dask_only in jobs:
            needs = sum(1 for _ in open(inputs / "needs.csv", "rb")) - 1
            runs: dict[str, list[tuple[float, dict[str, float], dict[str, float]]]] = {
                "A": [],
                "B": [],
            }
            for i in range(args.repeat):
                for name in ("B",) if dask_only else ("A", "B"):
                    out = work / name
                    shutil.rmtree(out, ignore_errors=True)
                    wall, peaks, err = _run(_plan(inputs, out, dask if name == "B" else None), work)
                    stages = {m[1]: float(m[2]) for m in _STAGE.finditer(err)}
                    runs[name].append((wall, peaks, stages))
                    logger.info("%s %s run %d: %.2f s, peaks %s", inputs.name, name, i, wall, peaks)
                if not dask_only and not _same(work / "A", work / "B"):
                    raise RuntimeError(f"{inputs}: the Dask run wrote other files")
            for name in ("A", "B"):
                if not runs[name]:
                    continue
                walls = [r[0] for r in runs[name]]
                ratio = ""
                if name == "B" and runs["A"]:
                    ratio = f"{statistics.median(b[0] / a[0] for a, b in zip(runs['A'], runs['B'], strict=True)):.2f}x"  # noqa: E501
                driver = max(r[1].get("driver", 0.0) for r in runs[name])
                worker = max(r[1].get("worker", 0.0) for r in runs[name])
                names = list(runs[name][0][2])
                stages = ", ".join(
                    f"{s} {statistics.median(r[2].get(s, 0.0) for r in runs[name]):.2f}"
                    for s in names
                )
                label = "one process" if name == "A" else f"--dask {dask}"
                rows.append(
                    f"| {inputs.name} ({needs:,} needs) | {label} | "
                    f"{statistics.median(walls):.2f} | {ratio} | {driver:,.0f} | "
                    f"{worker:,.0f} | {stages} |"
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = "\n".join(rows) + "\n"
    if args.out:
        args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
