"""The README's street example runs on a fresh clone and prints what the README shows."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
SECTION = README[README.index("## Travel on streets") : README.index("## Python API")]


def _blocks() -> list[str]:
    return re.findall(r"```(?:sh)?\n(.*?)```", SECTION, flags=re.S)


def test_the_readme_street_plan_prints_what_the_readme_shows(tmp_path):
    block = _blocks()[0]
    command = " ".join(
        line.rstrip("\\").strip() for line in block.splitlines() if not line.startswith("#")
    )
    shown = [line[2:] for line in block.splitlines() if line.startswith("# ")]
    args = shlex.split(command)
    assert args[0] == "matcher"
    args[args.index("--out") + 1] = str(tmp_path / "drive")
    run = subprocess.run(
        [sys.executable, "-m", "matcher.cli", *args[1:]],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[: len(shown)] == shown
    assignments = pd.read_csv(tmp_path / "drive" / "assignments.csv")
    # the reason quoted in the README is one of the plan's
    quoted = re.search(r"\(`(\.\.\. is .*?) \.\.\.`\)", SECTION.replace("\n  ", " ")).group(1)
    assert any(quoted[4:] in r for r in assignments["reason"]), quoted
    # a time limit holds on every assignment, and the street is never shorter than the line
    assert (assignments["travel_min"] <= 10 * (1 + 1e-12)).all()
    assert (assignments["distance_km"] >= assignments["straight_km"] * (1 - 1e-12)).all()


def test_the_readme_shows_what_the_streets_example_prints(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "05_streets.py"), str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    table = [line for line in run.stdout.splitlines() if not line.startswith("plans written")]
    assert "\n".join(table) + "\n" == _blocks()[1]
    # the counts in the prose are those of the table
    prose = " ".join(SECTION.split())
    walking, driving = table[2].split(), table[3].split()
    assert f"On foot, {walking[4]} of the {table[1].split()[3]} straight-line pairs go" in prose
    assert f"{walking[6]} clusters lose every partner; by car within 10 minutes, {driving[8]}." in (
        prose
    )
    needs = pd.read_csv(ROOT / "data" / "southside" / "needs.csv")
    partners = pd.read_csv(ROOT / "data" / "southside" / "partners.csv")
    assert f"{len(needs):,} needs and {len(partners)} partners" in prose
