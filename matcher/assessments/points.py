"""Point reports (311 / Open311 exports, incident feeds) become needs where they were made.

Each row of a point-reports source is one report at (lat, lon) of a type. The type maps
to a category (``[sources.types]``, compared without case); the report's area is the
area polygon it lies in (the first by area order when polygons overlap). A report
becomes a need of ``units`` units at its own point, severity 3, in its area. Reports of a
type the mapping does not name, outside the date window or outside every area are counted
in the report, per type, never dropped silently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

from .._errors import InputValidationError, Problem
from ..limits import id_problem
from .indicators import Areas, _cell, numbers_in, read_source_table, unused_columns
from .mapping import Source

__all__ = ["point_needs", "POINT_SEVERITY"]

#: The severity of a need made from a point report.
POINT_SEVERITY = 3


def point_needs(source: Source, index: int, areas: Areas) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (needs, report rows) of one point-reports source.

    Raises
    ------
    InputValidationError
        A coordinate that is not a number in range, a date that is not ``YYYY-MM-DD``,
        an id that is empty or unusable; every one at once.
    """
    spec = source.points
    assert spec is not None  # a points source always has its spec
    label = str(source.file)
    frame, lines = read_source_table(source, index)
    problems: list[Problem] = []
    lat = _coordinates(frame, spec.lat, 90.0, lines, label, problems)
    lon = _coordinates(frame, spec.lon, 180.0, lines, label, problems)
    day = _dates(frame, spec.date, lines, label, problems) if spec.date else None
    ids = _ids(source, frame, lines, label, problems)
    if problems:
        raise InputValidationError(problems[:1000])
    types = frame[spec.type].astype(str).str.strip()
    category = types.str.casefold().map(dict(spec.types))
    keep = category.notna().to_numpy()
    in_window = np.ones(len(frame), dtype=bool)
    if day is not None:
        if spec.start:
            in_window &= day >= spec.start
        if spec.end:
            in_window &= day <= spec.end
    area = _areas_of(areas, lat, lon)
    inside = area != ""
    repeat = pd.Series(ids).duplicated().to_numpy()
    use = keep & in_window & inside & ~repeat
    needs = pd.DataFrame(
        {
            "need_id": np.asarray(ids, dtype=object)[use],
            "category": category.to_numpy()[use],
            "lat": lat[use],
            "lon": lon[use],
            "demand": spec.units,
            "severity": POINT_SEVERITY,
            "neighborhood": area[use],
            "source": (source.name + "/" + types[use]).str.slice(0, 200).to_numpy(),
        }
    )
    why = np.select(
        [repeat, ~keep, ~in_window, ~inside],
        [
            "repeat an earlier report's id: counted once",
            "type not in the mapping",
            "outside the date window",
            "outside every area",
        ],
        "",
    )
    counts = (
        pd.DataFrame({"indicator": types, "category": category, "area": area, "note": why})
        .assign(needs=use.astype(np.int64))
        .groupby(["indicator", "area", "note"], sort=True, dropna=False)
        .agg(category=("category", "first"), needs=("needs", "sum"), rows=("needs", "size"))
        .reset_index()
    )
    names = dict(zip(areas.table["area"], areas.table["name"], strict=True))
    report: list[dict[str, object]] = [
        {
            "source": source.name,
            "indicator": r.indicator,
            "category": r.category if isinstance(r.category, str) else None,
            "area": r.area or None,
            "area_name": names.get(r.area),
            "demand": round(float(r.needs) * spec.units, 6),
            "placed": round(float(r.needs) * spec.units, 6),
            "severity": POINT_SEVERITY if r.needs else None,
            "needs": int(r.needs),
            "note": f"{r.rows} report(s): {r.note}" if r.note else "",
        }
        for r in counts.itertuples(index=False)
    ]
    report += unused_columns(source, frame)
    return needs.reset_index(drop=True), pd.DataFrame(report)


def _coordinates(
    frame: pd.DataFrame, column: str, bound: float, lines: list[int], label: str,
    problems: list[Problem],
) -> np.ndarray:  # fmt: skip
    why = f"must be a number from -{bound:g} to {bound:g} (WGS84 degrees)"
    values = numbers_in(frame[column], -bound, bound, why, column, lines, label, problems)
    return np.round(values, 6)


def _dates(
    frame: pd.DataFrame, column: str, lines: list[int], label: str, problems: list[Problem]
) -> np.ndarray:
    """Return each row's date as ``YYYY-MM-DD`` text (a time after it is ignored)."""
    raw = frame[column].astype(str).str.strip()
    day = raw.str.slice(0, 10)
    parsed = pd.to_datetime(day, format="%Y-%m-%d", errors="coerce")
    ok = raw.str.fullmatch(r"\d{4}-\d{2}-\d{2}([ T].*)?") & parsed.notna()
    for i in np.flatnonzero(~ok.to_numpy()).tolist():
        problems.append(
            Problem(label, lines[i], column, _cell(raw.iloc[i]), "must be a date, YYYY-MM-DD")
        )
    return day.to_numpy(dtype=object)


def _ids(
    source: Source, frame: pd.DataFrame, lines: list[int], label: str, problems: list[Problem]
) -> list[str]:
    """Return each report's need id: ``<source>:<id column>`` or ``<source>:<line>``.

    An export lists a report again when it is updated (a 311 request's status, say): a
    repeated id is the same report, counted once at its first line (see the caller).
    """
    spec = source.points
    assert spec is not None
    if spec.id is None:
        return [f"{source.name}:{line}" for line in lines]
    raw = frame[spec.id].astype(str).str.strip()
    out = []
    for i, value in enumerate(raw.tolist()):
        need_id = f"{source.name}:{value}"
        reason = "a report needs an id" if not value else id_problem(need_id)
        if reason is not None:
            problems.append(Problem(label, lines[i], spec.id, _cell(value), reason))
        out.append(need_id)
    return out


def _areas_of(areas: Areas, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Return the id of the first area polygon holding each point ('' for none)."""
    out = np.full(len(lat), "", dtype=object)
    if not len(lat):
        return out
    polygons = areas.polygons
    tree = shapely.STRtree(polygons)
    pts = shapely.points(lon, lat)
    hit_point, hit_area = tree.query(pts, predicate="intersects")
    if len(hit_point):
        order = np.lexsort((hit_area, hit_point))
        hit_point, hit_area = hit_point[order], hit_area[order]
        first = np.r_[True, hit_point[1:] != hit_point[:-1]]
        ids = areas.table["area"].to_numpy(dtype=object)
        out[hit_point[first]] = ids[hit_area[first]]
    return out
