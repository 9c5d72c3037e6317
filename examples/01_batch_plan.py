"""Batch planning over the bundled Chicago sample with the Python API.

Run from the repository root: ``python examples/01_batch_plan.py [OUT_DIR]``.
It plans the sample city with both objectives, writes each plan, and prints the
largest gaps and a few explained recommendations.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matcher

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def main(out: Path) -> None:
    for objective in ("default", "distance"):
        config = matcher.MatchConfig(objective=objective)
        result = matcher.plan(
            SAMPLE / "needs.csv",
            SAMPLE / "partners.csv",
            neighborhoods=SAMPLE / "neighborhoods.geojson",
            config=config,
        )
        result.to_dir(out / objective)
        units = result.metrics["units"]
        print(
            f"[{objective}] served {units['served']:.0f} of {units['demand']:.0f} units "
            f"({units['coverage']:.1%}); cost {result.metrics['cost']['total']:.1f} "
            f"{result.metrics['cost']['unit']}; plan written to {out / objective}"
        )

    # the largest gaps, by category and reason (from the last plan)
    gaps = result.unmet.groupby(["category", "reason"])["units"].sum().sort_values(ascending=False)
    print("largest unmet demand by category and reason:")
    print(gaps.head(5).to_string())
    hoods = result.metrics["coverage_by_neighborhood"]
    worst = sorted(hoods.items(), key=lambda kv: kv[1]["coverage"])[:3]
    names = result.neighborhoods.set_index("neighborhood_id")["name"]
    for hood, m in worst:
        print(
            f"lowest coverage: {names.get(hood, hood)}: "
            f"{m['coverage']:.0%} of {m['demand']:.0f} units"
        )
    print("two explained recommendations:")
    for reason in result.assignments["reason"].head(2):
        print(" -", reason)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
