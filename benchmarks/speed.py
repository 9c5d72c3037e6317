"""Whole `matcher plan` runs of this tree side by side with another revision: stages, wall, RSS.

For each size (needs; partners = needs / 10 up to 100k, 50k above, as in ``stages.py``) this
script generates a seeded city once (``matcher generate --seed 1``), then runs
``matcher plan`` on it in a fresh process, alternating this tree (A) and the baseline
revision (B, checked out in a temporary git worktree) ``--repeat`` times. It reads the
stage times the CLI logs (``stage <name> <seconds> s``), the wall time of the whole
process (interpreter start-up and imports included) and its peak RSS (``os.wait4``), and
checks that A and B wrote byte-identical plan directories. It also times
``matcher --help`` in both trees. Medians are reported, with A/B ratios taken pair by pair.

Usage::

    python benchmarks/speed.py --baseline REV [--sizes 100k,1m] [--repeat 3]
                               [--workdir DIR] [--out results.md]

Not part of the test suite. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import filecmp
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("benchmarks.speed")

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("read", "cluster", "candidates", "model", "solve", "explain", "write")
_STAGE = re.compile(r"stage (\w+)\s+([0-9.]+) s")


def _size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def _partners(n: int) -> int:
    return max(1, n // 10) if n <= 100_000 else 50_000


def _python(tree: Path, *args: str) -> list[str]:
    """A command running the CLI of ``tree`` (its sources first on the path)."""
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from matcher.cli import main; main()"
    return [sys.executable, "-c", code, *args]


def _run(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run ``cmd``; return (wall seconds, peak RSS MB, stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024, err


def _same_dirs(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    """Run the comparison and print a markdown report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--baseline", required=True, help="git revision to compare against")
    ap.add_argument("--sizes", default="100k", help="comma-separated needs, e.g. 100k,1m")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "matcher-speed")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.workdir.mkdir(parents=True, exist_ok=True)
    base = args.workdir / "baseline"
    if base.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)])
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.baseline],
        check=True,
        capture_output=True,
    )
    trees = {"A": ROOT, "B": base}
    lines = [
        f"A = this tree, B = {args.baseline}; medians of {args.repeat} alternating runs; "
        "A/B is the median of the per-pair ratios.",
        "",
        "| run | A wall s | B wall s | A/B | A peak MB | B peak MB | identical files |",
        "|---|---|---|---|---|---|---|",
    ]
    stage_lines = [
        "| needs | tree | " + " | ".join(STAGES) + " |",
        "|---|---|" + "---|" * len(STAGES),
    ]
    try:
        walls: dict[str, list[float]] = {"A": [], "B": []}
        for _ in range(args.repeat):
            for name, tree in trees.items():
                walls[name].append(_run(_python(tree, "--help"), tree)[0])
        ratio = _median([a / b for a, b in zip(walls["A"], walls["B"], strict=True)])
        lines.append(
            f"| `matcher --help` | {_median(walls['A']):.3f} | {_median(walls['B']):.3f} "
            f"| {ratio:.2f}x | | | |"
        )
        for size in (_size(s) for s in args.sizes.split(",")):
            city = args.workdir / f"city-{size}"
            if not (city / "needs.csv").exists():
                logger.info("generating %s needs", size)
                _run(
                    _python(ROOT, "generate", "--needs", str(size), "--partners",
                            str(_partners(size)), "--seed", "1", "--out", str(city), "-q"),
                    ROOT,
                )  # fmt: skip
            runs: dict[str, list[tuple[float, float, dict[str, float]]]] = {"A": [], "B": []}
            identical = True
            for r in range(args.repeat):
                for name, tree in trees.items():
                    out = args.workdir / f"out-{name}"
                    shutil.rmtree(out, ignore_errors=True)
                    wall, rss, err = _run(
                        _python(tree, "plan", "--needs", str(city / "needs.csv"),
                                "--partners", str(city / "partners.csv"), "--neighborhoods",
                                str(city / "neighborhoods.geojson"), "--out", str(out)),
                        args.workdir,
                    )  # fmt: skip
                    stages = {m[1]: float(m[2]) for m in _STAGE.finditer(err)}
                    runs[name].append((wall, rss, stages))
                    logger.info("%s needs, run %d, %s: %.2f s, %.0f MB", size, r, name, wall, rss)
                identical &= _same_dirs(args.workdir / "out-A", args.workdir / "out-B")
            a_wall = [w for w, _, _ in runs["A"]]
            b_wall = [w for w, _, _ in runs["B"]]
            ratio = _median([a / b for a, b in zip(a_wall, b_wall, strict=True)])
            lines.append(
                f"| plan {size:,} × {_partners(size):,} | {_median(a_wall):.2f} "
                f"| {_median(b_wall):.2f} | {ratio:.2f}x "
                f"| {_median([m for _, m, _ in runs['A']]):,.0f} "
                f"| {_median([m for _, m, _ in runs['B']]):,.0f} | {'yes' if identical else 'NO'} |"
            )
            for name in ("A", "B"):
                cells = [
                    f"{_median([s.get(st, float('nan')) for _, _, s in runs[name]]):.2f}"
                    for st in STAGES
                ]
                stage_lines.append(f"| {size:,} | {name} | " + " | ".join(cells) + " |")
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)])
    report = "\n".join([*lines, "", "Stages (seconds, medians):", "", *stage_lines]) + "\n"
    print(report)
    if args.out:
        args.out.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
