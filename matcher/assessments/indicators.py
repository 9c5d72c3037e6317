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

import difflib
import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .._errors import InputValidationError, Problem
from ..limits import MAX_UNITS, id_problem
from .mapping import AreaLayer, Indicator, PopulationLayer, Source

__all__ = ["Areas", "area_key", "area_of", "load_areas", "source_needs", "severity_of"]

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
    by_name: dict[str, str | None]  # casefolded name -> area id (None: two areas share it)
    polygons: np.ndarray  # the area polygons, in table order

    def units_of(self, key: str) -> pd.DataFrame:
        """Return the population units (with people) of one area, in file order."""
        return self._groups.get(key, self.units.iloc[:0])

    def point_of(self, key: str) -> tuple[float, float]:
        """Return (lat, lon) of an area's representative point."""
        return self._points[key]

    @cached_property
    def _groups(self) -> dict[str, pd.DataFrame]:
        return {str(k): g for k, g in self.units.groupby("area", sort=False)}

    @cached_property
    def _points(self) -> dict[str, tuple[float, float]]:
        t = self.table
        points = zip(t["lat"].tolist(), t["lon"].tolist(), strict=True)
        return dict(zip(t["area"].tolist(), points, strict=True))


def _read_layer(path: Path, label: str) -> gpd.GeoDataFrame:
    """Read a GeoJSON or GeoPackage layer in WGS84."""
    try:
        with warnings.catch_warnings():
            # a column of mixed JSON types is read as text, which the checks below name
            warnings.simplefilter("ignore")
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
        A missing field, an empty, repeated or unusable area id, a geometry that is not
        a polygon in longitude/latitude, a population that is not a number from 0 to
        1e9, a unit in no known area or outside its area; every one at once.
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
    names = _texts(frame[layer.name]) if layer.name else list(ids)
    seen: set[str] = set()
    for i, key in enumerate(ids):
        reason = _area_id_problem(key)
        if reason is not None:
            problems.append(Problem(label, i + 1, layer.id, _cell(key), reason))
        elif key in seen:
            problems.append(Problem(label, i + 1, layer.id, key, "another area has this id"))
        seen.add(key)
    kinds = frame.geometry.geom_type.to_numpy()
    for i in np.flatnonzero(~np.isin(kinds, ["Polygon", "MultiPolygon"])).tolist():
        problems.append(Problem(label, i + 1, "geometry", ids[i], "an area needs a polygon"))
    problems += _lonlat_problems(frame, label, ids, _has_geometry(frame))
    if problems:
        raise InputValidationError(problems[:1000])
    lat, lon = _points(frame.geometry)
    table = pd.DataFrame({"area": ids, "name": names, "lat": lat, "lon": lon})
    table["population"] = np.nan
    units = pd.DataFrame({"area": [], "lat": [], "lon": [], "count": []})
    by_name: dict[str, str | None] = {}
    for key, name in zip(ids, names, strict=True):
        if name:
            folded = name.casefold()
            by_name[folded] = None if folded in by_name else key
    if population is not None and population.file.suffix.lower() in (".csv", ".xlsx", ".json"):
        units = _population_table(population, table, by_name)
    elif population is not None:
        units = _units(population, dict(zip(ids, frame.geometry.to_numpy(), strict=True)))
    if population is not None:
        sums = units.groupby("area", sort=False)["count"].sum()
        table["population"] = table["area"].map(sums).fillna(0.0).to_numpy(dtype=float)
    return Areas(table, units, by_name, frame.geometry.to_numpy())


#: Longest area id (an id goes into every need id, which has at most 128 characters).
MAX_AREA_ID_CHARS = 48
#: How far (degrees, about 0.5 km) a population unit's point may lie outside its area.
UNIT_TOLERANCE_DEG = 0.005


def _area_id_problem(key: str) -> str | None:
    if not key or key.lower() in ("nan", "none"):
        return "an area needs an id"
    if len(key) > MAX_AREA_ID_CHARS:
        return f"is {len(key)} characters long; an area id has at most {MAX_AREA_ID_CHARS}"
    return id_problem(key)


def _texts(column: pd.Series) -> list[str]:
    """Return a column as stripped text, a missing value as ''."""
    return ["" if pd.isna(v) else str(v).strip() for v in column.astype(object).tolist()]


def _has_geometry(frame: gpd.GeoDataFrame) -> np.ndarray:
    """Whether each row has a geometry that is not empty."""
    geoms = frame.geometry.to_numpy()
    return ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))  # type: ignore[no-any-return]


def _lonlat_problems(
    frame: gpd.GeoDataFrame, label: str, ids: list[str], present: np.ndarray
) -> list[Problem]:
    """Return a problem per geometry missing or not in longitude/latitude (a layer in feet)."""
    out = []
    bounds = shapely.bounds(frame.geometry.to_numpy())
    bad = ~present
    with np.errstate(invalid="ignore"):
        outside = ~bad & (
            (np.abs(bounds[:, [0, 2]]) > 180).any(axis=1)
            | (np.abs(bounds[:, [1, 3]]) > 90).any(axis=1)
        )
    for i in np.flatnonzero(bad).tolist():
        out.append(Problem(label, i + 1, "geometry", ids[i], "has no geometry"))
    for i in np.flatnonzero(outside).tolist():
        out.append(
            Problem(
                label,
                i + 1,
                "geometry",
                ids[i],
                "coordinates are not longitude/latitude; "
                "give the layer's CRS in the file (it is then converted)",
            )  # fmt: skip
        )
    return out


def _units(layer: PopulationLayer, polygons: dict[str, object]) -> pd.DataFrame:
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
    raw = frame[layer.count].astype(object).tolist()
    counts = np.full(len(raw), np.nan)
    for i, v in enumerate(raw):
        if isinstance(v, bool) or v is None:
            continue  # true is not a population
        try:
            counts[i] = float(v)
        except (TypeError, ValueError):
            pass
    ok = _has_geometry(frame)
    problems += _lonlat_problems(frame, label, areas, ok)
    lat = np.full(len(frame), np.nan)
    lon = np.full(len(frame), np.nan)
    if ok.any():
        lat[ok], lon[ok] = _points(frame.geometry[ok])
    for i, (a, n) in enumerate(zip(areas, counts, strict=True)):
        if not (math.isfinite(n) and 0 <= n <= MAX_POPULATION):
            problems.append(
                Problem(
                    label,
                    i + 1,
                    layer.count,
                    _cell(raw[i]),
                    f"a population is a number from 0 to {MAX_POPULATION:g}",
                )  # fmt: skip
            )
        elif a not in polygons:
            problems.append(
                Problem(label, i + 1, layer.area, a, _closest("area", a, set(polygons)))
            )
        elif ok[i] and n > 0:
            off = shapely.distance(shapely.points(lon[i], lat[i]), polygons[a])
            if off > UNIT_TOLERANCE_DEG:
                problems.append(
                    Problem(
                        label,
                        i + 1,
                        layer.area,
                        a,
                        f"the unit lies about {off * 111.2:.1f} km outside this area's polygon",
                    )  # fmt: skip
                )
    if problems:
        raise InputValidationError(problems[:1000])
    units = pd.DataFrame({"area": areas, "lat": lat, "lon": lon, "count": counts})
    return units[units["count"] > 0].reset_index(drop=True)


def _population_table(
    layer: PopulationLayer, areas: pd.DataFrame, by_name: dict[str, str | None]
) -> pd.DataFrame:
    """Return one unit per area, at its point, from a table of population counts per area.

    An area is named by its id or its name, once (a second row of an area is a problem: a
    ``where`` too loose would otherwise add up years or groups); an area the table does not
    name has no population.
    """
    from .tables import keep_where, read_table

    label = str(layer.file)
    frame, rows = read_table(layer.file, label, layer.sheet)
    problems = [
        Problem(label, 1, col, None, _missing(col, frame.columns))
        for col in (layer.area, layer.count, *(c for c, _ in layer.where))
        if col not in frame.columns
    ]
    if problems:
        raise InputValidationError(problems)
    frame, rows = keep_where(frame, rows, layer.where, label, "population.where")
    known = dict(zip(areas["area"], areas["name"], strict=True))
    why = f"a population is a number from 0 to {MAX_POPULATION:g}"
    counts = numbers_in(frame[layer.count], 0, MAX_POPULATION, why, layer.count, rows, label,
                        problems)  # fmt: skip
    keys: list[str] = []
    seen: set[str] = set()
    for i, raw in enumerate(frame[layer.area].astype(str).tolist()):
        key, reason = area_of(raw, known, by_name)
        if reason is None and key in seen:
            reason = "another row gives this area's population (narrow population.where)"
        if reason is not None:
            problems.append(Problem(label, rows[i], layer.area, _cell(raw), reason))
        keys.append(key)
        seen.add(key)
    if problems:
        raise InputValidationError(problems[:1000])
    sums = pd.Series(counts, index=keys).groupby(level=0, sort=False).sum()
    points = areas.set_index("area").loc[list(sums.index), ["lat", "lon"]]
    units = pd.DataFrame(
        {"area": list(sums.index), "lat": points["lat"].to_numpy(),
         "lon": points["lon"].to_numpy(), "count": sums.to_numpy(dtype=float)}
    )  # fmt: skip
    return units[units["count"] > 0].reset_index(drop=True)


def _missing(field: str, columns: pd.Index) -> str:
    hint = difflib.get_close_matches(field, [str(c) for c in columns], n=1)
    return "no such field" + (f"; did you mean {hint[0]!r}?" if hint else "")


def _closest(
    what: str, key: str, known: set[str] | dict[str, str], where: str = "the areas file"
) -> str:
    hint = difflib.get_close_matches(key, sorted(str(k) for k in known), n=3, cutoff=0.5)
    text = f"matches no {what} of {where}"
    return text + (f"; the closest: {', '.join(hint)}" if hint else "")


def _cell(value: object) -> object:
    return value[:80] if isinstance(value, str) else value


def read_source_table(
    source: Source, index: int, *, show_values: bool = True
) -> tuple[pd.DataFrame, list[int]]:
    """Read a source's table as text cells, keep the rows ``where`` selects; with row numbers.

    A CSV, an ``.xlsx`` sheet (``sheet``, else the first) or a JSON table
    (:func:`~matcher.assessments.tables.read_table`); a column the mapping names and the
    table lacks is a problem naming the closest.
    """
    from .tables import keep_where, read_table

    label = str(source.file)
    frame, rows = read_table(source.file, label, source.sheet)
    problems = [
        Problem(label, 1, col, None, _missing(col, frame.columns))
        for col in source.columns()
        if col not in frame.columns
    ]
    if problems:
        raise InputValidationError(problems)
    key = f"sources[{index}].where"
    return keep_where(frame, rows, source.where, label, key, show_values=show_values)


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


def source_needs(source: Source, index: int, areas: Areas) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (needs, report rows) of one area-indicator source (``index`` in the mapping).

    Need ids are ``<source>:<indicator number>:<area>:<part>``: the source name holds no
    ``:`` and the numbers are digits, so two needs never share an id.

    Raises
    ------
    InputValidationError
        An area matching no polygon (with the closest ids and names), a name two areas
        share, a rate outside 0 to 100, a missing or bad population, a demand past the
        bound of one need; every one at once.
    """
    label = str(source.file)
    frame, lines = read_source_table(source, index)
    table = areas.table.set_index("area", drop=False)
    problems: list[Problem] = []
    keys, known = row_areas(frame, source, areas, lines, problems)
    dup = pd.Series(keys).duplicated().to_numpy() & np.array([k in known for k in keys])
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
    for number, ind in enumerate(source.indicators, start=1):
        r = rates[ind.column]
        affected = r if ind.worse == "higher" else 100.0 - r
        severity = severity_of(affected, ind.severity)
        excess = np.maximum(affected - ind.baseline, 0.0)
        demand = population * excess / 100.0 * ind.units_per_affected * source.weight
        for i in np.flatnonzero(demand > MAX_UNITS).tolist():
            problems.append(
                Problem(
                    label,
                    lines[i],
                    ind.column,
                    _cell(frame[ind.column].iloc[i]),
                    f"the model gives {demand[i]:.6g} units in area {keys[i]}; at most "
                    f"{MAX_UNITS:g} (lower units_per_affected or the weight)",
                )  # fmt: skip
            )
        if problems:
            continue
        for i, key in enumerate(keys):
            placed = _place(key, demand[i], areas) if np.isfinite(demand[i]) else []
            total = round(sum(p[2] for p in placed), 6)
            note = "" if np.isfinite(r[i]) else "no value"
            note = note or ("" if population[i] > 0 else "no population")
            figures = (population[i], r[i], affected[i], demand[i], severity[i], len(placed), total)
            report.append(_report_row(source, ind, key, known[key], *figures, note))
            if not placed or severity[i] == 0:
                continue
            needs.append(
                placed_needs(f"{source.name}:{number}:{key}", placed, ind.category,
                             int(severity[i]), key, f"{source.name}/{ind.column}")  # fmt: skip
            )
    if problems:
        raise InputValidationError(problems[:1000])
    report += unused_columns(source, frame)
    out = pd.concat(needs, ignore_index=True) if needs else pd.DataFrame(columns=NEED_OUT)
    return out, pd.DataFrame(report)


def placed_needs(
    prefix: str,
    placed: list[tuple[float, float, float]],
    category: str,
    severity: int,
    area: str,
    source: str,
) -> pd.DataFrame:
    """Return the needs of one area's placed demand (:func:`_place`): ids ``<prefix>:<part>``."""
    lat, lon, part = zip(*placed, strict=True)
    return pd.DataFrame(
        {
            "need_id": [f"{prefix}:{k}" for k in range(1, len(part) + 1)],
            "category": category,
            "lat": np.round(lat, 6),
            "lon": np.round(lon, 6),
            "demand": part,
            "severity": severity,
            "neighborhood": area,
            "source": source[:200],
        }
    )


def row_areas(
    frame: pd.DataFrame, source: Source, areas: Areas, lines: list[int], problems: list[Problem]
) -> tuple[list[str], dict[str, str]]:
    """Return each row's area id (a problem added for a cell that names none) and the names."""
    known = dict(zip(areas.table["area"], areas.table["name"], strict=True))
    keys: list[str] = []
    for i, raw in enumerate(frame[source.area].tolist()):
        key, reason = area_of(str(raw), known, areas.by_name)
        if reason is not None:
            problems.append(Problem(str(source.file), lines[i], source.area, _cell(raw), reason))
        keys.append(key)
    return keys, known


def unused_columns(source: Source, frame: pd.DataFrame) -> list[dict[str, object]]:
    """Return a report row for every column of a source's table the mapping does not use."""
    used = set(source.columns())
    return [
        {"source": source.name, "indicator": col, "note": "not in the mapping"}
        for col in frame.columns
        if col not in used
    ]


def area_of(
    raw: str, known: dict[str, str], by_name: dict[str, str | None]
) -> tuple[str, str | None]:
    """Return (area id, None) for a source's area cell (an id or a name), or (cell, why not)."""
    key = area_key(raw)
    if not key:
        return key, "names no area (the cell is empty)"
    if key in known:
        return key, None
    folded = raw.strip().casefold()
    if folded in by_name:
        found = by_name[folded]
        if found is None:
            ids = sorted(a for a, n in known.items() if n.casefold() == folded)
            return key, f"two areas have this name (ids {', '.join(ids[:5])}); give the id"
        return found, None
    return key, _closest("area", raw.strip(), set(known) | {n for n in known.values() if n})


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
        return np.nan_to_num(layer, nan=0.0)  # no units in the layer: nobody, noted
    raw = frame[source.population].astype(str).str.strip()
    # "12,345" is read as 12345; any other comma is not a number
    text = raw.where(~raw.str.fullmatch(r"\d{1,3}(,\d{3})+(\.\d*)?"), raw.str.replace(",", ""))
    values = pd.to_numeric(text, errors="coerce")
    out = values.to_numpy(dtype=float, copy=True)
    for i in np.flatnonzero(~(np.isfinite(out) & (out >= 0) & (out <= MAX_POPULATION))).tolist():
        cell = raw.iloc[i]
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
    why = "a rate is a percentage of adults from 0 to 100 (empty: no value)"
    return numbers_in(raw, 0.0, 100.0, why, column, lines, label, problems, empty_ok=True)


def numbers_in(
    raw: pd.Series,
    low: float,
    high: float,
    why: str,
    column: str,
    lines: list[int],
    label: str,
    problems: list[Problem],
    *,
    empty_ok: bool = False,
) -> np.ndarray:
    """Return a text column as numbers from ``low`` to ``high``; a problem per other cell.

    With ``empty_ok`` an empty cell is NaN (no value), not a problem.
    """
    text = raw.astype(str).str.strip()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=float, copy=True)
    empty = (text == "").to_numpy() if empty_ok else np.zeros(len(text), dtype=bool)
    bad = ~empty & ~(np.isfinite(values) & (values >= low) & (values <= high))
    for i in np.flatnonzero(bad).tolist():
        problems.append(Problem(label, lines[i], column, _cell(raw.iloc[i]), why))
    values[empty] = np.nan
    return values


def _place(key: str, demand: float, areas: Areas) -> list[tuple[float, float, float]]:
    """Split an area's demand over its population units; (lat, lon, demand) per part.

    The demand, rounded to :data:`DEMAND_QUANTUM`, is shared out in whole quanta by
    largest remainder (ties to the earlier unit), so the parts add up to it exactly and a
    plan at the default quantum takes them as they are. A unit whose share rounds to no
    quantum gets no need.
    """
    # half up, after the float error of the division (0.15 / 0.1 is 1.4999999999999998)
    total = math.floor(round(demand / DEMAND_QUANTUM, 9) + 0.5) if demand > 0 else 0
    if total == 0:
        return []
    units = areas.units_of(key)
    if not len(units):
        lat, lon = areas.point_of(key)
        return [(lat, lon, round(total * DEMAND_QUANTUM, 6))]
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
    note: str,
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
        "note": note,
    }
