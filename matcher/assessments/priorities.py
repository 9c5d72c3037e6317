"""Ranked priorities (area, issue, rank or votes) raise the severity of matching needs.

A community meeting's or a board's top issues of an area say what residents put first.
For each area, the issues that count are ranks 1 to ``top`` (or the ``top`` most voted,
ties to the earlier line). Each counted issue maps to a category; the area's needs of that
category (from the indicator sources of the same mapping) get ``raise_severity`` more
severity, at most 5. When the area has none and the mapping gives ``create_units``, a need
of that many units is created, placed like an indicator's demand, at severity 3 plus the
raise. An issue the mapping does not name is reported, never dropped silently.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .._errors import InputValidationError, Problem
from .indicators import Areas, _cell, _place, read_source_table, row_areas, unused_columns
from .mapping import Source

__all__ = ["apply_priorities", "MAX_RANK"]

#: Largest rank a priorities table may give; votes are bounded like units.
MAX_RANK = 1000
MAX_VOTES = 1e9


def apply_priorities(
    source: Source, index: int, areas: Areas, needs: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (needs with severities raised and any created needs, report rows).

    Raises
    ------
    InputValidationError
        An area matching no polygon, an empty issue, a rank that is not a whole number
        from 1 to 1000 or votes that are not a number from 0 to 1e9; every one at once.
    """
    spec = source.priorities
    assert spec is not None  # a priorities source always has its spec
    label = str(source.file)
    frame, lines = read_source_table(source, index)
    problems: list[Problem] = []
    keys, known = row_areas(frame, source, areas, lines, problems)
    issues = frame[spec.issue].astype(str).str.strip()
    for i in np.flatnonzero((issues == "").to_numpy()).tolist():
        problems.append(Problem(label, lines[i], spec.issue, "", "an issue is needed"))
    order = _order(frame, spec.rank, spec.votes, lines, label, problems)
    if problems:
        raise InputValidationError(problems[:1000])
    lookup = dict(spec.issues)
    table = pd.DataFrame(
        {"area": keys, "issue": issues.tolist(), "order": order, "line": lines}
    ).sort_values(["area", "order", "line"], kind="stable")
    place = table.groupby("area", sort=False).cumcount() + 1
    counted = place <= spec.top
    # the report's rank: the rank given, or the place by votes (1: the most voted)
    table["rank"] = table["order"] if spec.rank is not None else place
    if spec.rank is not None:
        counted &= table["order"] <= spec.top
    out = needs.copy()
    severity = out["severity"].to_numpy(dtype=np.int64, copy=True)
    hood = out["neighborhood"].astype(str).to_numpy()
    cats = out["category"].astype(str).to_numpy()
    created: list[pd.DataFrame] = []
    report: list[dict[str, object]] = []
    done: dict[tuple[str, str], str] = {}
    for row, counts in zip(table.itertuples(index=False), counted.tolist(), strict=True):
        category = lookup.get(row.issue.casefold())
        base = {"source": source.name, "indicator": row.issue, "area": row.area,
                "area_name": known[row.area], "rank": row.rank}  # fmt: skip
        if category is None:
            report.append({**base, "note": "issue not in the mapping"})
            continue
        base["category"] = category
        if not counts:
            report.append({**base, "note": f"not among the top {spec.top}"})
            continue
        if (row.area, category) in done:
            report.append({**base, "note": f"already raised by {done[row.area, category]!r}"})
            continue
        done[row.area, category] = row.issue
        mask = (hood == row.area) & (cats == category)
        if mask.any():
            severity[mask] = np.minimum(5, severity[mask] + spec.raise_severity)
            report.append({**base, "needs": int(mask.sum()),
                           "note": f"severity +{spec.raise_severity}"})  # fmt: skip
        elif spec.create_units is not None:
            placed = _place(row.area, spec.create_units, areas)
            level = min(5, 3 + spec.raise_severity)
            created.append(_created(source, row.line, row.area, category, level, placed, row.issue))
            report.append({**base, "needs": len(placed), "severity": level,
                           "placed": round(sum(p[2] for p in placed), 6),
                           "note": "created: no need of this category in the area"})  # fmt: skip
        else:
            report.append({**base, "needs": 0, "note": "no need of this category in the area"})
    out["severity"] = severity
    if created:
        out = pd.concat([out, *created], ignore_index=True)
    report += unused_columns(source, frame)
    return out, pd.DataFrame(report)


def _order(
    frame: pd.DataFrame,
    rank: str | None,
    votes: str | None,
    lines: list[int],
    label: str,
    problems: list[Problem],
) -> list[float]:
    """Return each row's place in its area: the rank, or minus the votes (lower is first)."""
    column = rank if rank is not None else votes
    assert column is not None  # the mapping gives exactly one
    raw = frame[column].astype(str).str.strip()
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float, copy=True)
    out: list[float] = []
    for i, v in enumerate(values.tolist()):
        if rank is not None:
            ok = math.isfinite(v) and v == int(v) and 1 <= v <= MAX_RANK
            why = f"a rank is a whole number from 1 (the top) to {MAX_RANK}"
        else:
            ok = math.isfinite(v) and 0 <= v <= MAX_VOTES
            why = f"votes are a number from 0 to {MAX_VOTES:g}"
        if not ok:
            problems.append(Problem(label, lines[i], column, _cell(raw.iloc[i]), why))
        out.append(v if rank is not None else -v)
    return out


def _created(
    source: Source,
    line: int,
    area: str,
    category: str,
    severity: int,
    placed: list[tuple[float, float, float]],
    issue: str,
) -> pd.DataFrame:
    """Return the needs a priority creates: ids ``<source>:<line>:<area>:<part>``."""
    lat = [p[0] for p in placed]
    lon = [p[1] for p in placed]
    return pd.DataFrame(
        {
            "need_id": [f"{source.name}:{line}:{area}:{k}" for k in range(1, len(placed) + 1)],
            "category": category,
            "lat": np.round(lat, 6),
            "lon": np.round(lon, 6),
            "demand": [p[2] for p in placed],
            "severity": severity,
            "neighborhood": area,
            "source": f"{source.name}/{issue}"[:200],
        }
    )
