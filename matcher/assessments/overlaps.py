"""Sources that measure the same thing: count a category's demand once per area, as asked.

A survey's litter rate and 311 sanitation complaints both say "the streets are dirty"; a
mapping's ``[[overlaps]]`` names such sources for a category and a rule. In each area
where two or more of them have needs of the category, ``max`` keeps the needs of the source
with the most demand there (ties to the first listed), ``first`` those of the first listed
source with demand there, and ``sum`` keeps all. Every area where sources overlap gets a
report row per source: what was kept or dropped, and why.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .indicators import Areas
from .mapping import Overlap

__all__ = ["resolve_overlaps"]


def resolve_overlaps(
    needs: pd.DataFrame, overlaps: tuple[Overlap, ...], areas: Areas
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (needs without the dropped ones, report rows) for the mapping's overlaps."""
    if not overlaps or needs.empty:
        return needs, pd.DataFrame()
    names = dict(zip(areas.table["area"], areas.table["name"], strict=True))
    origin = needs["source"].astype(str).str.split("/", n=1).str[0].to_numpy()
    hood = needs["neighborhood"].astype(str).to_numpy()
    cats = needs["category"].astype(str).to_numpy()
    demand = needs["demand"].to_numpy(dtype=float)
    drop = np.zeros(len(needs), dtype=bool)
    report: list[dict[str, object]] = []
    for rule in overlaps:
        mine = (cats == rule.category) & np.isin(origin, rule.sources)
        if not mine.any():
            continue
        frame = pd.DataFrame({"area": hood[mine], "source": origin[mine], "demand": demand[mine]})
        totals = frame.groupby(["area", "source"], sort=True)["demand"].agg(["sum", "size"])
        for area, group in totals.groupby(level="area", sort=True):
            present = {
                src: (float(row["sum"]), int(row["size"])) for (_, src), row in group.iterrows()
            }
            if len(present) < 2:
                continue
            listed = [s for s in rule.sources if s in present]
            if rule.rule == "max":
                kept = max(listed, key=lambda s: (present[s][0], -listed.index(s)))
            elif rule.rule == "first":
                kept = listed[0]
            else:
                kept = ""
            for src in listed:
                total, count = present[src]
                dropped = bool(kept) and src != kept
                if dropped:
                    drop |= mine & (hood == area) & (origin == src)
                report.append(
                    {
                        "source": src,
                        "indicator": "(overlap)",
                        "category": rule.category,
                        "area": area,
                        "area_name": names.get(area),
                        "demand": round(total, 6),
                        "placed": 0.0 if dropped else round(total, 6),
                        "needs": 0 if dropped else count,
                        "note": (
                            f"dropped: overlaps with {kept} (rule {rule.rule})"
                            if dropped
                            else f"kept: overlaps with {', '.join(s for s in listed if s != src)}"
                            f" (rule {rule.rule})"
                        ),
                    }
                )
    return needs.loc[~drop].reset_index(drop=True), pd.DataFrame(report)
