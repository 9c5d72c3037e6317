"""Straight lines or streets: the South Side sample planned three ways, side by side.

Run from anywhere: ``python examples/05_streets.py [OUT_DIR]``.
It plans the South Side sample (``data/southside``: the sample city's needs and
partners on a real OpenStreetMap street network) with great-circle distances, on foot
and by car with a 10-minute limit, and prints what the streets change: the pairs kept,
dropped and added, the clusters that no partner can reach any more (and the units the
straight-line plan served there), and how much longer the trips are.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

import matcher

ROOT = Path(__file__).resolve().parents[1]
SOUTH = ROOT / "data" / "southside"


def pairs(p: matcher.Plan) -> pd.Series:
    """Units per (cluster_id, partner_id) of a plan."""
    return p.assignment_table.set_index(["cluster_id", "partner_id"])["units"]


def unreachable(p: matcher.Plan) -> set[str]:
    """Clusters of a plan that no partner may serve (none in range)."""
    c = p.clusters
    return set(c.loc[c["unmet_reason"] == "no_partner_in_range", "cluster_id"])


def main(out: Path) -> None:
    needs, partners = SOUTH / "needs.csv", SOUTH / "partners.csv"
    plans = {
        "straight line": matcher.plan(needs, partners),
        "walking": matcher.plan(
            needs, partners, config=matcher.MatchConfig(travel="walk"),
            network=SOUTH / "southside_walk.gpkg",
        ),
        "driving, 10 min": matcher.plan(
            needs, partners, config=matcher.MatchConfig(travel="drive", radius_min=10),
            network=SOUTH / "southside_drive.gpkg",
        ),
    }  # fmt: skip
    base = plans["straight line"]
    served = base.clusters.set_index("cluster_id")["served"]
    print(f"{'plan':16s} {'served':>7s} {'pairs':>6s} {'kept':>5s} {'dropped':>7s} "
          f"{'new':>4s} {'unreachable':>11s} {'lost units':>10s} {'detour':>6s} {'min/unit':>8s}")
    for name, p in plans.items():
        a, b = pairs(base), pairs(p)
        kept = len(a.index.intersection(b.index))
        lost = sorted(unreachable(p) - unreachable(base))
        travel = p.metrics.get("travel", {})
        detour = travel.get("detour_factor")
        minutes = travel.get("minutes_per_unit")
        line = (
            f"{name:16s} {p.metrics['units']['served']:7.1f} {len(b):6d} {kept:5d} "
            f"{len(a) - kept:7d} {len(b) - kept:4d} {len(lost):11d} "
            f"{float(served.reindex(lost).sum()):10.1f} "
            f"{'' if detour is None else f'{detour:.2f}':>6s} "
            f"{'' if minutes is None else f'{minutes:.1f}':>8s}"
        )
        print(line.rstrip())
        p.to_dir(out / name.split(",")[0].replace(" ", "_"))
    print(f"plans written to {out}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(Path(tmp))
