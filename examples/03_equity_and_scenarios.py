"""Equity floors, where to recruit and a what-if on the bundled Chicago sample.

Run from anywhere: ``python examples/03_equity_and_scenarios.py [OUT_DIR]``.
It plans the sample with a coverage floor of half of each community area's demand,
prints the floors that cannot be met and why, suggests where to recruit new partners,
and re-plans without the five busiest partners to show what the city would lose.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import matcher
from matcher.scenario import ScenarioChange, run_scenario

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


def main(out: Path) -> None:
    config = matcher.MatchConfig(min_coverage=0.5)
    fair = matcher.plan(
        SAMPLE / "needs.csv",
        SAMPLE / "partners.csv",
        neighborhoods=SAMPLE / "neighborhoods.geojson",
        config=config,
    )
    floors = fair.floors
    print(
        f"coverage floors (50% of demand) met in {int(floors['floor_met'].sum())} of "
        f"{len(floors)} community areas; Gini of coverage "
        f"{fair.metrics['equity']['coverage_gini']:.3f}"
    )
    for r in floors[~floors["floor_met"]].itertuples(index=False):
        print(f"  {r.name}: served {r.served:g} of floor {r.floor:g} - {r.reason}")

    fair = fair.with_recruit(3, radius_km=1.5, capacity=25)
    sites = fair.recruit.sites.sort_values("covered_units", ascending=False).head(5)
    print("where one new partner (1.5 km, 25 units/week) would serve the most unmet demand:")
    for r in sites.itertuples(index=False):
        print(
            f"  {r.category:22s} rank {r.rank} at ({r.lat:.4f}, {r.lon:.4f}): "
            f"{r.covered_units:g} units in {r.clusters_covered} cluster(s)"
        )
    fair.to_dir(out / "equity")

    busiest = fair.partners.sort_values("used", ascending=False)["partner_id"].head(5)
    scenario = run_scenario(out / "equity", ScenarioChange(remove_partners=tuple(busiest)))
    scenario.to_dir(out / "without-busiest")
    d = scenario.metrics["delta"]
    print(
        f"without the 5 busiest partners: {d['units_served']:+g} units served, "
        f"{len(scenario.clusters)} clusters lose service; written to {out / 'without-busiest'}"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
