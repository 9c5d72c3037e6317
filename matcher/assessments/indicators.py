"""Area indicators (a rate per area) become located needs, by a documented demand model.

For an indicator of a source and an area with population ``P`` and rate ``r`` (% of
adults, 0 to 100), the affected rate is ``a = r`` when a higher rate is worse and
``a = 100 - r`` when a lower one is. The area's weekly demand is::

    demand = P x max(a - baseline, 0) / 100 x units_per_affected x weight

Severity (1 to 5) is the area's standing: the quintile of ``a`` among the source's
areas with a value (``percentile``: ties share their average rank), or the number of
the four thresholds ``a`` reaches, plus one. The demand is placed where people live: split
over the population layer's units in the area (e.g. tracts) by their share of its
population, one need at each unit's representative point; without units, one need at the
area's representative point.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .._errors import InputValidationError, Problem
from ..limits import file_limit
from .mapping import AreaLayer, Indicator, PopulationLayer, Source

__all__ = ["Areas", "area_key", "load_areas", "source_needs", "severity_of"]

#: Largest population of one area or unit (a sanity bound, not a census figure).
MAX_POPULATION = 1e9
#: The report's demand figures are rounded to this many decimals.
DEMAND_DECIMALS = 4
#: Placed demand comes in whole multiples of this (``MatchConfig``'s default quantum).
DEMAND_QUANTUM = 0.1


def area_key(value: object) -> str:
    """Return an area id as matcher compares it: stripped text, whole numbers without ``.0``.

    Examples
    --------
    >>> area_key(" 7 "), area_key(7.0), area_key("07"), area_key("Loop")
    ('7', '7', '7', 'Loop')
    """
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return text


@dataclass(frozen=True)
class Areas:
    """The areas (id, name, representative point) and the population units placed in them."""

    table: pd.DataFrame  # area, name, lat, lon, population (layer sum, NaN without a layer)
    units: pd.DataFrame  # area, lat, lon, count (units with people), in file order


def _read_layer(path: Path, label: str) -> gpd.GeoDataFrame:
    """Read a GeoJSON or GeoPackage layer in WGS84."""
    try:
        frame = gpd.read_file(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure is the file's problem
        raise InputValidationError(
            [Problem(str(path), None, None, None, f"cannot read {label}: {exc}"[:300])]
        ) from None
    if frame.crs is not None and not frame.crs.equals("EPSG:4326"):
        frame = frame.to_crs("EPSG:4326")
    return frame


def _points(geoms: gpd.GeoSeries) -> tuple[np.ndarray, np.ndarray]:
    """Return (lat, lon) of each geometry's representative point (on the geometry)."""
    pts = shapely.point_on_surface(geoms.to_numpy())
    return shapely.get_y(pts), shapely.get_x(pts)


def load_areas(layer: AreaLayer, population: PopulationLayer | None) -> Areas:
    """Read the area polygons and the population layer; check their fields and values.

    Raises
    ------
    InputValidationError
        A missing field, an empty or repeated area id, a population that is not a
        number from 0 to 1e9, a unit in no known area; every one at once.
    """
    problems: list[Problem] = []
    frame = _read_layer(layer.file, "the areas")
    label = str(layer.file)
    for field in (layer.id, layer.name):
        if field is not None and field not in frame.columns:
            problems.append(Problem(label, None, field, None, _missing(field, frame.columns)))
    if problems:
        raise InputValidationError(problems)
    ids = [area_key(v) for v in frame[layer.id].tolist()]
    names = frame[layer.name].astype(str).str.strip().tolist() if layer.name else ids
    seen: set[str] = set()
    for i, key in enumerate(ids):
        if not key or key.lower() in ("nan", "none"):
            problems.append(Problem(label, i + 1, layer.id, None, "an area needs an id"))
        elif key in seen:
            problems.append(Problem(label, i + 1, layer.id, key, "another area has this id"))
        seen.add(key)
    empty = frame.geometry.isna() | frame.geometry.is_empty
    for i in np.flatnonzero(empty.to_numpy()).tolist():
        problems.append(Problem(label, i + 1, "geometry", ids[i], "an area needs a polygon"))
    if problems:
        raise InputValidationError(problems)
    lat, lon = _points(frame.geometry)
    table = pd.DataFrame({"area": ids, "name": names, "lat": lat, "lon": lon})
    units = pd.DataFrame({"area": [], "lat": [], "lon": [], "count": []})
    table["population"] = np.nan
    if population is not None:
        units = _units(population, set(ids))
        sums = units.groupby("area", sort=False)["count"].sum()
        table["population"] = table["area"].map(sums).fillna(0.0).to_numpy(dtype=float)
    return Areas(table, units)


def _units(layer: PopulationLayer, known: set[str]) -> pd.DataFrame:
    frame = _read_layer(layer.file, "the population layer")
    label = str(layer.file)
    problems = [
        Problem(label, None, f, None, _missing(f, frame.columns))
        for f in (layer.area, layer.count)
        if f not in frame.columns
    ]
    if problems:
        raise InputValidationError(problems)
    areas = [area_key(v) for v in frame[layer.area].tolist()]
    counts = pd.to_numeric(frame[layer.count], errors="coerce").to_numpy(dtype=float)
    for i, (a, n) in enumerate(zip(areas, counts, strict=True)):
        if not (math.isfinite(n) and 0 <= n <= MAX_POPULATION):
            value = frame[layer.count].iloc[i]
            problems.append(
                Problem(
                    label,
                    i + 1,
                    layer.count,
                    _cell(value),
                    f"a population is a number from 0 to {MAX_POPULATION:g}",
                )  # fmt: skip
            )
        elif a not in known:
            problems.append(Problem(label, i + 1, layer.area, a, _closest("area", a, known)))
    if problems:
        raise InputValidationError(problems[:1000])
    lat, lon = _points(frame.geometry)
    units = pd.DataFrame({"area": areas, "lat": lat, "lon": lon, "count": counts})
    return units[units["count"] > 0].reset_index(drop=True)


def _missing(field: str, columns: pd.Index) -> str:
    hint = __import__("difflib").get_close_matches(field, [str(c) for c in columns], n=1)
    return "no such field" + (f"; did you mean {hint[0]!r}?" if hint else "")


def _closest(what: str, key: str, known: set[str] | dict[str, str]) -> str:
    import difflib

    hint = difflib.get_close_matches(key, sorted(known), n=3, cutoff=0.5)
    text = f"matches no {what} of the areas file"
    return text + (f"; the closest: {', '.join(hint)}" if hint else "")


def _cell(value: object) -> object:
    return value[:80] if isinstance(value, str) else value


def read_source_table(source: Source) -> tuple[pd.DataFrame, list[int]]:
    """Read a source's CSV as text cells, keep the rows ``where`` selects; with line numbers."""
    from ..io import _decode, _read_bytes
    from ..limits import check_file

    label = str(source.file)
    reason = check_file(source.file, file_limit())
    if reason is not None:
        raise InputValidationError([Problem(label, None, None, None, reason)])
    text = _decode(_read_bytes(source.file, label), label)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputValidationError(
            [Problem(label, None, None, None, f"cannot parse as CSV: {exc}"[:300])]
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    needed = [source.area, *(c for c, _ in source.where)]
    needed += [source.population] if source.population else []
    needed += [i.column for i in source.indicators]
    problems = [
        Problem(label, 1, col, None, _missing(col, frame.columns))
        for col in dict.fromkeys(needed)
        if col not in frame.columns
    ]
    if problems:
        raise InputValidationError(problems)
    keep = np.ones(len(frame), dtype=bool)
    for col, value in source.where:
        keep &= (frame[col].str.strip() == value).to_numpy()
    lines = (np.flatnonzero(keep) + 2).tolist()  # header is line 1
    return frame.loc[keep].reset_index(drop=True), lines


def severity_of(affected: np.ndarray, rule: str | tuple[float, ...]) -> np.ndarray:
    """Return severity 1..5 per area from its affected rate (NaN: no value, severity 0).

    Examples
    --------
    >>> severity_of(np.array([10.0, 20.0, 30.0, 40.0, 50.0]), "percentile").tolist()
    [1, 2, 3, 4, 5]
    >>> severity_of(np.array([5.0, 25.0, 80.0]), (10.0, 20.0, 50.0, 75.0)).tolist()
    [1, 3, 5]
    """
    out = np.zeros(len(affected), dtype=np.int64)
    ok = ~np.isnan(affected)
    if not ok.any():
        return out
    values = affected[ok]
    if rule == "percentile":
        n = len(values)
        if n == 1:
            out[ok] = 3
            return out
        rank = pd.Series(values).rank(method="average").to_numpy()  # 1..n
        share = (rank - 1) / (n - 1)  # 0 (best) .. 1 (worst)
        out[ok] = 1 + np.minimum(4, np.floor(share * 5)).astype(np.int64)
        return out
    cuts = np.asarray(rule, dtype=float)
    out[ok] = 1 + (values[:, None] >= cuts[None, :]).sum(axis=1)
    return out


def source_needs(source: Source, areas: Areas) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (needs, report rows) of one area-indicator source.

    Raises
    ------
    InputValidationError
        An area matching no polygon (with the closest ids), a rate outside 0 to 100,
        a missing or bad population; every one at once.
    """
    label = str(source.file)
    frame, lines = read_source_table(source)
    table = areas.table.set_index("area", drop=False)
    known = dict(zip(table["area"], table["name"], strict=True))
    by_name = {str(n).casefold(): a for a, n in known.items()}
    problems: list[Problem] = []
    keys: list[str] = []
    for i, raw in enumerate(frame[source.area].tolist()):
        key = area_key(raw)
        if key not in known:
            key = by_name.get(str(raw).strip().casefold(), key)
        if key not in known:
            names = set(known) | set(known.values())
            problems.append(
                Problem(label, lines[i], source.area, _cell(raw), _closest("area", str(raw), names))
            )
        keys.append(key)
    dup = pd.Series(keys).duplicated().to_numpy()
    for i in np.flatnonzero(dup).tolist():
        problems.append(
            Problem(label, lines[i], source.area, keys[i], "another row gives this area")
        )
    population = _population(source, frame, keys, table, lines, problems)
    rates = {}
    for ind in source.indicators:
        rates[ind.column] = _rates(frame[ind.column], ind.column, lines, label, problems)
    if problems:
        raise InputValidationError(problems[:1000])
    needs: list[pd.DataFrame] = []
    report: list[dict[str, object]] = []
    for ind in source.indicators:
        r = rates[ind.column]
        affected = r if ind.worse == "higher" else 100.0 - r
        severity = severity_of(affected, ind.severity)
        excess = np.maximum(affected - ind.baseline, 0.0)
        demand = population * excess / 100.0 * ind.units_per_affected * source.weight
        for i, key in enumerate(keys):
            placed = _place(key, demand[i], areas) if np.isfinite(demand[i]) else []
            total = round(sum(p[2] for p in placed), 6)
            figures = (population[i], r[i], affected[i], demand[i], severity[i], len(placed), total)
            report.append(_report_row(source, ind, key, known[key], *figures))
            if not placed or severity[i] == 0:
                continue
            lat, lon, part = zip(*placed, strict=True)
            ids = [f"{source.name}.{ind.column}.{key}.{k + 1}" for k in range(len(part))]
            needs.append(
                pd.DataFrame(
                    {
                        "need_id": ids,
                        "category": ind.category,
                        "lat": np.round(lat, 6),
                        "lon": np.round(lon, 6),
                        "demand": part,
                        "severity": int(severity[i]),
                        "neighborhood": key,
                        "source": f"{source.name}/{ind.column}",
                    }
                )
            )
    used = {source.area, *(c for c, _ in source.where), *(i.column for i in source.indicators)}
    used |= {source.population} if source.population else set()
    for col in frame.columns:
        if col not in used:
            report.append({"source": source.name, "indicator": col, "note": "not in the mapping"})
    out = pd.concat(needs, ignore_index=True) if needs else pd.DataFrame(columns=NEED_OUT)
    return out, pd.DataFrame(report)


#: The columns of an assessment's needs file (a needs file matcher plans from).
NEED_OUT = ["need_id", "category", "lat", "lon", "demand", "severity", "neighborhood", "source"]


def _population(
    source: Source,
    frame: pd.DataFrame,
    keys: list[str],
    table: pd.DataFrame,
    lines: list[int],
    problems: list[Problem],
) -> np.ndarray:
    label = str(source.file)
    layer = table["population"].reindex(keys).to_numpy(dtype=float)
    if source.population is None:
        for i, value in enumerate(layer.tolist()):
            if not value > 0:
                problems.append(Problem(label, lines[i], None, keys[i], "no population: the "
                                        "population layer has nobody in this area"))  # fmt: skip
        return layer
    raw = frame[source.population]
    values = pd.to_numeric(raw.str.replace(",", "", regex=False), errors="coerce")
    out = values.to_numpy(dtype=float, copy=True)
    for i in np.flatnonzero(~(np.isfinite(out) & (out >= 0) & (out <= MAX_POPULATION))).tolist():
        cell = str(raw.iloc[i]).strip()
        problems.append(
            Problem(
                label,
                lines[i],
                source.population,
                _cell(cell),
                "missing population"
                if not cell
                else f"a population is a number from 0 to {MAX_POPULATION:g}",
            )  # fmt: skip
        )
    return out


def _rates(
    raw: pd.Series, column: str, lines: list[int], label: str, problems: list[Problem]
) -> np.ndarray:
    """Return the rates of a column (NaN for an empty cell), adding a problem for a bad one."""
    text = raw.str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, copy=True)
    empty = (text == "").to_numpy()
    bad = ~empty & ~(np.isfinite(values) & (values >= 0) & (values <= 100))
    for i in np.flatnonzero(bad).tolist():
        problems.append(
            Problem(
                label,
                lines[i],
                column,
                _cell(raw.iloc[i]),
                "a rate is a percentage of adults from 0 to 100 (empty: no value)",
            )  # fmt: skip
        )
    values[empty] = np.nan
    return values


def _place(key: str, demand: float, areas: Areas) -> list[tuple[float, float, float]]:
    """Split an area's demand over its population units; (lat, lon, demand) per part.

    The demand, rounded to :data:`DEMAND_QUANTUM`, is shared out in whole quanta by
    largest remainder (ties to the earlier unit), so the parts add up to it exactly and a
    plan at the default quantum takes them as they are. A unit whose share rounds to no
    quantum gets no need.
    """
    total = int(round(demand / DEMAND_QUANTUM)) if demand > 0 else 0
    if total == 0:
        return []
    units = areas.units[areas.units["area"] == key]
    if not len(units):
        row = areas.table.set_index("area").loc[key]
        return [(float(row["lat"]), float(row["lon"]), round(total * DEMAND_QUANTUM, 6))]
    counts = units["count"].to_numpy(dtype=float)
    raw = total * counts / counts.sum()
    quanta = np.floor(raw).astype(np.int64)
    left = total - int(quanta.sum())
    if left > 0:
        order = np.argsort(-(raw - quanta), kind="stable")
        quanta[order[:left]] += 1
    rows = zip(units["lat"].tolist(), units["lon"].tolist(), quanta.tolist(), strict=True)
    return [(a, b, round(k * DEMAND_QUANTUM, 6)) for a, b, k in rows if k > 0]


def _report_row(
    source: Source,
    ind: Indicator,
    key: str,
    name: str,
    population: float,
    rate: float,
    affected: float,
    demand: float,
    severity: int,
    needs: int,
    placed: float,
) -> dict[str, object]:
    has = not math.isnan(rate)
    return {
        "source": source.name,
        "indicator": ind.column,
        "category": ind.category,
        "area": key,
        "area_name": name,
        "population": population,
        "rate": rate if has else None,
        "affected_rate": affected if has else None,
        "baseline": ind.baseline,
        "units_per_affected": ind.units_per_affected,
        "weight": source.weight,
        "demand": round(float(demand), DEMAND_DECIMALS) if has else 0.0,
        "placed": placed,
        "severity": int(severity),
        "needs": needs,
        "note": "" if has else "no value",
    }
