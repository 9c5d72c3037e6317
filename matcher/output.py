"""Writers for the batch output contract: CSV tables, plan GeoJSON and summary JSON."""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import multiprocessing
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from ._processes import single_threaded
from .geo import threaded
from .limits import FORMULA_PREFIXES
from .privacy import COARSEN_KM, coarsen, partners_view

if TYPE_CHECKING:
    from .pipeline import Plan

__all__ = [
    "PLAN_FILES",
    "csv_bytes",
    "csv_pieces",
    "PIECE_ROWS",
    "csv_rows",
    "plan_files",
    "write_files",
    "write_plan",
    "neutralise_cell",
    "restore_cell",
    "coarsen",
    "COARSEN_KM",
    "gaps_geojson",
    "plan_geojson",
    "plan_geojson_text",
    "plan_geojson_pieces",
    "summary",
]

logger = logging.getLogger(__name__)

#: Columns written at full float precision, so that distances recomputed from the files
#: are bit-for-bit those of the plan.
_FULL_PRECISION = ("centroid_lat", "centroid_lon")


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def neutralise_cell(value: Any) -> Any:
    """Return a text cell that no spreadsheet will run as a formula (OWASP CSV injection).

    A text starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return gets a leading
    ``'``, unless it is a plain number such as ``-87.6``; so does a text of quotes before
    such a start, so that :func:`restore_cell` gives back every text exactly. Other values
    are unchanged.

    Examples
    --------
    >>> neutralise_cell("=HYPERLINK(1)"), neutralise_cell("-87.6"), neutralise_cell("ok")
    ("'=HYPERLINK(1)", '-87.6', 'ok')
    >>> neutralise_cell("'=x")
    "''=x"
    """
    if isinstance(value, str):
        rest = value.lstrip("'")
        if rest.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(rest):
            return "'" + value
    return value


def restore_cell(value: Any) -> Any:
    """Undo :func:`neutralise_cell` when reading back a file matcher wrote.

    Examples
    --------
    >>> restore_cell(neutralise_cell("=SUM(1)")), restore_cell("'quoted"), restore_cell("-1")
    ('=SUM(1)', "'quoted", '-1')
    >>> all(restore_cell(neutralise_cell(v)) == v for v in ("'=x", "''-y", "'", "=", "'-1"))
    True
    """
    if isinstance(value, str) and value.startswith("'") and neutralise_cell(value[1:]) == value:
        return value[1:]
    return value


#: First characters of a text cell that :func:`neutralise_cell` may change.
_RISKY_FIRST = frozenset("'=+-@\t\r")
_RISKY_CELL = re.compile(r"'*[=+\-@\t\r]")
#: A line of newline-joined cells that starts as :data:`_RISKY_CELL` does.
_RISKY_LINE = re.compile(r"\n'*[=+\-@\t\r]")


def _neutralised(values: list[Any]) -> list[Any] | None:
    """Return text cells with :func:`neutralise_cell` applied where it may change them.

    None when a cell that is not text looks like a formula (``-1``): the caller then
    lets ``to_csv`` format the cells that are not text (:func:`_csv_column`).
    """
    try:
        joined = "\n" + "\n".join(values)
    except TypeError:  # not all text
        if any(not isinstance(v, str) and _RISKY_CELL.match(str(v)) for v in values):
            return None
    else:
        if not _RISKY_LINE.search(joined):  # no cell starts like a formula
            return values
    out = values
    for i, v in enumerate(values):
        if isinstance(v, str) and v[:1] in _RISKY_FIRST and _RISKY_CELL.match(v):
            new = neutralise_cell(v)
            if new is not v:
                if out is values:
                    out = list(values)
                out[i] = new
    return out


def _float_texts(values: np.ndarray) -> list[str]:
    """Return ``repr`` of every value of a float64 array (shortest round-trip text).

    A column of few distinct values (by bit pattern, so ``-0.0`` is not ``0.0``) is
    formatted once per value.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    if len(values) > 64:
        bits, where = np.unique(values.view(np.int64), return_inverse=True)
        if len(bits) * 4 < len(values):
            texts = np.array(list(map(float.__repr__, bits.view(np.float64).tolist())), object)
            return texts[where].tolist()  # type: ignore[no-any-return]
    return list(map(float.__repr__, values.tolist()))


def _csv_cells(col: pd.Series, name: str) -> list[Any] | None:
    """Return a column's cells as ``pandas.DataFrame.to_csv`` hands them to ``csv.writer``.

    Floats are rounded to 6 decimals (shortest repr; :data:`_FULL_PRECISION` columns
    unrounded), NaN empty, booleans lower-case, text cells neutralised
    (:func:`neutralise_cell`), missing values empty. None for a dtype whose cells
    pandas formats itself (dates, categories, ...) and for a column of mixed cells
    :func:`_neutralised` declines: the caller then lets pandas write the table.
    """
    dtype = col.dtype
    if col.dtype == object or isinstance(dtype, pd.StringDtype):
        cells = col.to_numpy(dtype=object, copy=True)
        missing = pd.isna(cells)
        if missing.any():
            cells[missing] = ""
        return _neutralised(cells.tolist())
    if pd.api.types.is_bool_dtype(dtype):
        if dtype == np.bool_:
            return np.where(col.to_numpy(), "true", "false").tolist()
        cells = col.map({True: "true", False: "false"}).to_numpy(dtype=object, copy=True)
        cells[pd.isna(cells)] = ""
        return cells.tolist()  # type: ignore[no-any-return]
    if pd.api.types.is_float_dtype(dtype):
        values = col.to_numpy(dtype=np.float64)
        if name not in _FULL_PRECISION:
            values = np.round(values, 6)
        text = _float_texts(values)
        nan = np.isnan(values)
        if nan.any():
            for i in np.flatnonzero(nan).tolist():
                text[i] = ""
        return text
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return list(map(str, col.tolist()))
    return None


def _csv_column(col: pd.Series, name: str) -> pd.Series:
    """Format a column for ``to_csv`` (the writer of tables :func:`_csv_cells` does not take).

    Text cells are neutralised in place, so that ``to_csv`` formats any other cell of a
    mixed column as it would; bool and float columns get the cells of :func:`_csv_cells`.
    """
    if col.dtype == object or isinstance(col.dtype, pd.StringDtype):
        text = col.astype(str)
        risky = text.str.match(_RISKY_CELL.pattern).fillna(False).to_numpy(dtype=bool)
        if risky.any():
            # Set cells in an object array: a Series' setitem may turn a column of
            # numbers into floats, and -1 would then be written -1.0.
            cells = col.to_numpy(dtype=object, copy=True)
            for i in np.flatnonzero(risky).tolist():
                cells[i] = neutralise_cell(cells[i])
            col = pd.Series(cells, index=col.index, dtype=object)
        return col
    if pd.api.types.is_bool_dtype(col) or pd.api.types.is_float_dtype(col):
        return pd.Series(_csv_cells(col, name), index=col.index, dtype=object)
    return col


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """Return a table as the UTF-8 CSV text of the output contract (cells neutralised).

    The cells are those ``to_csv`` would write (:func:`_csv_cells`), written with the
    same ``csv.writer`` settings; tables with columns of other dtypes go through
    ``to_csv`` itself.
    """
    return _csv_text(frame, header=True).encode("utf-8")


#: Rows per piece when a large table or layer is written piece by piece.
PIECE_ROWS = 50_000


def csv_pieces(frame: pd.DataFrame, rows: int | None = None) -> Iterator[str]:
    """Yield the CSV text of :func:`csv_bytes` in pieces of at most ``rows`` rows.

    ``rows`` defaults to :data:`PIECE_ROWS`.
    The pieces joined are exactly that text. A table whose columns are all text,
    numbers or booleans is cut into pieces (every cell of those is formatted on its
    own, whatever the other rows hold); any other table comes whole, since pandas
    formats some dtypes (dates) by looking at the whole column.
    """
    rows = PIECE_ROWS if rows is None else rows
    if len(frame) <= rows or not all(_per_cell(frame[c].dtype) for c in frame.columns):
        yield _csv_text(frame, header=True)
        return
    for start in range(0, len(frame), rows):
        yield _csv_text(frame.iloc[start : start + rows], header=start == 0)


def _per_cell(dtype: Any) -> bool:
    """Whether every cell of a column of this dtype is written without regard to the others."""
    if isinstance(dtype, pd.StringDtype):
        return True
    return isinstance(dtype, np.dtype) and dtype.kind in "Obiuf"


def _csv_text(frame: pd.DataFrame, header: bool) -> str:
    """Return the CSV text of a table (:func:`csv_bytes`), with or without its header line."""
    labels = list(frame.columns)
    cells: list[list[Any]] = []
    if labels and frame.columns.is_unique and all(type(c) is str for c in labels):
        for c in labels:
            column = _csv_cells(frame[c], c)
            if column is None:
                break
            cells.append(column)
    if len(cells) != len(labels) or not labels:
        text = pd.DataFrame({c: _csv_column(frame[c], c) for c in labels}, index=frame.index)
        return text.to_csv(index=False, header=header, lineterminator="\n")  # type: ignore[no-any-return]
    quoted = [_quoted_cells(column) for column in (labels, *cells)] if len(labels) > 1 else []
    if quoted and all(column is not None for column in quoted):
        # What csv.writer writes (a one-column table may differ: a lone "" is quoted).
        head, *body = quoted
        lines = [",".join(head)] if header else []  # type: ignore[arg-type]
        lines.extend(map(",".join, zip(*body, strict=True)))  # type: ignore[arg-type]
        return "\n".join(lines) + "\n" if lines else ""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(labels)
    writer.writerows(zip(*cells, strict=True))
    return buffer.getvalue()


def _quoted_cells(cells: list[Any]) -> list[str] | None:
    """Return text cells as ``csv.writer`` writes them in a row of several (None: not text).

    A cell with a comma, a quote or a line feed is quoted, its quotes doubled; None too
    for a cell with a carriage return (whether one is quoted depends on the Python).
    """
    try:
        text = "".join(cells)
    except TypeError:  # not all text
        return None
    if "\r" in text:
        return None
    if not any(c in text for c in _QUOTED_CHARS):
        return cells
    return [
        '"' + c.replace('"', '""') + '"' if ("," in c or '"' in c or "\n" in c) else c
        for c in cells
    ]


_QUOTED_CHARS = (",", '"', "\n")


def csv_rows(content: bytes) -> list[dict[str, str]]:
    """Return the rows of an output CSV (:func:`csv_bytes`) with every cell as written."""
    frame = pd.read_csv(io.BytesIO(content), keep_default_na=False, dtype=str)
    return frame.to_dict("records")  # type: ignore[return-value]


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    path.write_bytes(csv_bytes(frame))


_CLUSTER_PROPS = (
    "cluster_id",
    "category",
    "n_needs",
    "demand",
    "severity",
    "served",
    "unmet",
    "unmet_reason",
    "centroid_lat",
    "centroid_lon",
)
_PARTNER_PROPS = (
    "partner_id",
    "name",
    "kind",
    "categories",
    "capacity",
    "used",
    "radius_km",
    "coarsened",
)
_ASSIGNMENT_PROPS = (
    "cluster_id",
    "partner_id",
    "units",
    "distance_km",
    "cost",
    "runner_up_id",
    "reason",
)


_json_text = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _json_value(value: Any) -> str:
    """Return the compact JSON text of one value, as ``json.dumps`` writes it in a document."""
    if type(value) is str:
        return _json_text(value)  # type: ignore[no-any-return]
    return json.dumps(value, separators=(",", ":"))


def _json_floats(values: np.ndarray) -> list[str]:
    """Return the JSON texts of a float64 array as ``json.dumps`` writes floats.

    ``repr`` (shortest round-trip) of finite values; ``NaN``, ``Infinity`` and
    ``-Infinity`` otherwise.

    Examples
    --------
    >>> _json_floats(np.array([0.1, -0.0, 1e16, 2.0, np.inf, np.nan]))
    ['0.1', '-0.0', '1e+16', '2.0', 'Infinity', 'NaN']
    """
    text = _float_texts(values)
    bad = ~np.isfinite(values)
    if bad.any():
        for i in np.flatnonzero(bad).tolist():
            text[i] = json.dumps(float(values[i]))
    return text


def _json_numbers(values: np.ndarray) -> list[str]:
    """Return the JSON texts of a numeric array's values (``json.dumps`` of ``tolist()``)."""
    if values.dtype == np.float64:
        return _json_floats(values)
    return [_json_value(v) for v in values.tolist()]


def _json_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[list[str]]:
    """Return columns as lists of JSON texts (floats to 6 decimals, NaN as null)."""
    out: list[list[str]] = []
    for c in columns:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col):
            out.append(["true" if v else "false" for v in col.tolist()])
        elif pd.api.types.is_float_dtype(col):
            v = np.round(col.to_numpy(dtype=np.float64), 6)
            text = _json_floats(v)
            nan = np.isnan(v)
            if nan.any():
                for i in np.flatnonzero(nan).tolist():
                    text[i] = "null"
            out.append(text)
        elif pd.api.types.is_integer_dtype(col):
            out.append([int.__repr__(int(v)) for v in col.tolist()])
        else:
            cells = col.astype(object).tolist()
            if all(type(v) is str for v in cells):
                out.append(list(map(_json_text, cells)))
            else:
                out.append([_json_value(v) for v in cells])
    return out


def _feature_strings(
    feature_type: str, frame: pd.DataFrame, columns: tuple[str, ...], geometries: list[str]
) -> list[str]:
    """Compact GeoJSON Feature strings, properties in sorted key order."""
    keys = sorted((*columns, "feature_type"))
    values = dict(zip(columns, _json_columns(frame, columns), strict=True))
    parts = []
    ordered = []
    for k in keys:
        key = _json_text(k).replace("%", "%%")
        if k == "feature_type":
            parts.append(f"{key}:{_json_text(feature_type).replace('%', '%%')}")
        else:
            parts.append(f"{key}:%s")
            ordered.append(values[k])
    template = '{"geometry":%s,"properties":{' + ",".join(parts) + '},"type":"Feature"}'
    return [template % row for row in zip(geometries, *ordered, strict=True)]


def _points(lon: np.ndarray, lat: np.ndarray) -> list[str]:
    """Return GeoJSON Point texts (``json.dumps`` of ``{"type", "coordinates"}``)."""
    x, y = _json_numbers(lon), _json_numbers(lat)
    return [
        '{"type":"Point","coordinates":[' + a + "," + b + "]}" for a, b in zip(x, y, strict=True)
    ]


def _snappable(cand: np.ndarray, grid_size: float) -> np.ndarray:
    """Whether each plain polygon may be snapped by rounding its ring (see below)."""
    ok = shapely.get_precision(cand) == 0  # one already on a grid is kept as it is
    ok &= shapely.is_valid(cand) & _clockwise(cand)
    ok &= shapely.minimum_clearance(cand) > 10 * grid_size
    return np.asarray(ok)


def _clockwise(polygons: np.ndarray) -> np.ndarray:
    """Whether each valid polygon without holes has a clockwise ring, clearly (area sign).

    A ring of nearly no area (within rounding of the area sum) counts as not clockwise.
    """
    coords, owner = shapely.get_coordinates(polygons, return_index=True)
    counts = np.bincount(owner, minlength=len(polygons))
    out = np.zeros(len(polygons), dtype=bool)
    if not len(coords):
        return out
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    xy = coords - coords[starts][owner]  # relative to the ring's first point
    cross = xy[:-1, 0] * xy[1:, 1] - xy[1:, 0] * xy[:-1, 1]
    cross = np.append(cross, 0.0)
    cross[starts[1:] - 1] = 0.0  # no term across two rings
    twice_area = np.add.reduceat(cross, starts) if len(starts) else cross[:0]
    scale = np.add.reduceat(np.abs(cross), starts)
    ok = counts > 0
    out[ok] = (twice_area < -1e-9 * scale)[ok]
    return out


def _snapped_geojson(geoms: np.ndarray, grid_size: float) -> np.ndarray:
    """Return ``shapely.to_geojson(shapely.set_precision(geoms, grid_size))``, faster.

    GEOS reduces a polygon's precision by a snap-rounding union (OverlayNG). For a
    valid clockwise polygon of floating precision without holes, whose vertices are
    all more than ten grid cells from any segment they are not on
    (``shapely.minimum_clearance``) and whose rounded vertices stay distinct, that
    union has one edge, the ring itself, and gives the ring's coordinates rounded to
    the grid starting from its second vertex. Those polygons are built so; every other
    geometry goes through ``shapely.set_precision``. The texts are the same
    (tests/test_output_writers.py compares them).
    """
    geoms = np.asarray(geoms, dtype=object)
    out = np.empty(len(geoms), dtype=object)
    plain = (shapely.get_type_id(geoms) == 3) & (shapely.get_num_interior_rings(geoms) == 0)
    plain &= ~shapely.is_empty(geoms) & ~shapely.has_z(geoms)
    if hasattr(shapely, "has_m"):  # shapely >= 2.1: the built polygons would lose M
        plain &= ~shapely.has_m(geoms)
    idx = np.flatnonzero(plain)
    plain[:] = False
    if len(idx):
        cand = geoms[idx]
        ok = threaded(partial(_snappable, grid_size=grid_size), cand)
        idx, cand = idx[ok], cand[ok]
        # no holes: a polygon's coordinates are its exterior ring's
        pointwise = partial(shapely.set_precision, grid_size=grid_size, mode="pointwise")
        snapped = threaded(pointwise, cand)
        coords, owner = shapely.get_coordinates(snapped, return_index=True)
        counts = np.bincount(owner, minlength=len(idx))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        repeated = np.all(coords[1:] == coords[:-1], axis=1) & (owner[1:] == owner[:-1])
        ok = (counts >= 4) & (np.bincount(owner[1:][repeated], minlength=len(idx)) == 0)
        # The ring without its first point, closed on its second: [p1, ..., pn-1, p0, p1].
        keep = np.ones(len(coords), dtype=bool)
        keep[starts] = False
        keep &= ok[owner]
        rotated = np.concatenate([coords[keep], coords[starts[ok] + 1]])
        # rings numbered 0.. without gaps: shapely builds one ring per index up to the last
        dense = np.cumsum(ok) - 1
        ring_of = dense[np.concatenate([owner[keep], np.flatnonzero(ok)])]
        order = np.argsort(ring_of, kind="stable")
        built = shapely.polygons(shapely.linearrings(rotated[order], indices=ring_of[order]))
        out[idx[ok]] = threaded(shapely.to_geojson, built)
        plain[idx[ok]] = True
    rest = np.flatnonzero(~plain)
    if len(rest):
        out[rest] = shapely.to_geojson(shapely.set_precision(geoms[rest], grid_size))
    return out


def plan_geojson_text(plan: Plan, *, exact_volunteers: bool = False) -> str:
    """Return the plan as a compact GeoJSON FeatureCollection string (see :func:`plan_geojson`)."""
    return "".join(plan_geojson_pieces(plan, exact_volunteers=exact_volunteers))


def assignment_ends(
    assignments: pd.DataFrame, partners: pd.DataFrame, clusters: pd.DataFrame
) -> np.ndarray:
    """Return each assignment line's ends: partner lon, lat, cluster centroid lon, lat.

    An ``(n, 4)`` float array, from ``partners`` (``partner_id, lat, lon``: exact or the
    public view) and ``clusters`` (``cluster_id, centroid_lat, centroid_lon``).
    """
    pi = pd.Index(partners["partner_id"]).get_indexer(assignments["partner_id"])
    ci = pd.Index(clusters["cluster_id"]).get_indexer(assignments["cluster_id"])
    return np.column_stack(
        [
            partners["lon"].to_numpy(dtype=np.float64)[pi],
            partners["lat"].to_numpy(dtype=np.float64)[pi],
            clusters["centroid_lon"].to_numpy(dtype=np.float64)[ci],
            clusters["centroid_lat"].to_numpy(dtype=np.float64)[ci],
        ]
    )


def plan_geojson_pieces(
    plan: Plan, *, exact_volunteers: bool = False, rows: int | None = None
) -> Iterator[str]:
    """Yield :func:`plan_geojson_text` in pieces of at most ``rows`` features.

    ``rows`` defaults to :data:`PIECE_ROWS`.
    Every feature's text depends on its own row only, so a large plan is written
    without its whole layer in memory.
    """
    rows = PIECE_ROWS if rows is None else rows
    partners = partners_view(plan.partners, exact_volunteers=exact_volunteers)
    plon, plat = partners["lon"].to_numpy(), partners["lat"].to_numpy()
    a = plan.assignment_table
    clusters = plan.clusters
    ends = np.round(assignment_ends(a, partners, clusters), 7)

    def hulls(part: pd.DataFrame, at: slice) -> list[str]:
        return _snapped_geojson(part.geometry.to_numpy(), 1e-7).tolist()  # type: ignore[no-any-return]

    def points(part: pd.DataFrame, at: slice) -> list[str]:
        return _points(plon[at], plat[at])

    def lines(part: pd.DataFrame, at: slice) -> list[str]:
        x0, y0, x1, y1 = (_json_numbers(np.ascontiguousarray(ends[at, i])) for i in range(4))
        return [
            '{"type":"LineString","coordinates":[[' + a0 + "," + b0 + "],[" + a1 + "," + b1 + "]]}"
            for a0, b0, a1, b1 in zip(x0, y0, x1, y1, strict=True)
        ]

    layers: tuple[tuple[str, pd.DataFrame, tuple[str, ...], Callable[..., list[str]]], ...] = (
        ("cluster", clusters, _CLUSTER_PROPS, hulls),
        ("partner", partners, _PARTNER_PROPS, points),
        ("assignment", a, _ASSIGNMENT_PROPS, lines),
    )
    yield '{"features":['
    first = True
    for kind, frame, props, geometry in layers:
        for start in range(0, len(frame), rows):
            at = slice(start, start + rows)
            part = frame.iloc[at]
            text = ",".join(_feature_strings(kind, part, props, geometry(part, at)))
            yield text if first else "," + text
            first = False
    yield '],"type":"FeatureCollection"}'


def plan_geojson(plan: Plan, *, exact_volunteers: bool = False) -> dict[str, Any]:
    """Return the plan as a GeoJSON FeatureCollection (clusters, partners, assignment lines).

    Volunteers' points are coarsened to a ~500 m grid and their contact withheld
    unless ``exact_volunteers`` is true (admin views only). Each feature has a
    ``feature_type`` property: ``cluster`` (hull polygon), ``partner`` (point) or
    ``assignment`` (line from the partner to the cluster centroid).
    """
    result: dict[str, Any] = json.loads(plan_geojson_text(plan, exact_volunteers=exact_volunteers))
    return result


def summary(plan: Plan) -> dict[str, Any]:
    """Return the ``summary.json`` document of a plan (deterministic: no timestamps)."""
    return {
        "format": "matcher.plan-summary/1",
        "status": plan.solver["status"],
        "objective": plan.parameters["objective"],
        "parameters": plan.parameters,
        "input_hashes": plan.input_hashes,
        "solver": plan.solver,
        "metrics": plan.metrics,
        "rejected_rows": {k: int(len(v)) for k, v in plan.rejects.items()},
        "inputs": dict(sorted(plan.sources.items())),
        **(
            {
                # without the solve times: the same inputs give the same bytes
                "recruit": _records(plan.recruit.solves.drop(columns="seconds")),
                "recruit_parameters": plan.recruit.parameters,
            }
            if plan.recruit is not None
            else {}
        ),
    }


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records of a small table (NaN as null)."""
    return json.loads(frame.to_json(orient="records", double_precision=10))


def gaps_geojson(plan: Plan) -> dict[str, Any]:
    """Build the gap layer: one feature per neighborhood polygon, its gaps by category.

    Properties: ``feature_type`` ``"gap"``, ``neighborhood_id``, ``name``, the totals
    ``demand, served, unmet, unmet_no_partner_in_range, unmet_partners_in_range_full,
    coverage`` and ``categories`` (the same per category with demand).
    """
    if plan.neighborhoods is None or plan.gap_table is None:
        return {"type": "FeatureCollection", "features": []}
    g = plan.gap_table
    cols = [c for c in g.columns
            if c not in ("neighborhood", "neighborhood_name", "category", "coverage")]  # fmt: skip
    totals = g.groupby("neighborhood")[cols].sum()
    by_hood: dict[Any, list[Any]] = {}
    for r in g.itertuples(index=False):
        by_hood.setdefault(r.neighborhood, []).append(r)
    features = []
    hoods = plan.neighborhoods.sort_values("neighborhood_id")
    geoms = shapely.to_geojson(shapely.set_precision(hoods.geometry.to_numpy(), 1e-6))
    total_rows = dict(zip(totals.index, totals.itertuples(index=False), strict=True))
    for hid, name, geom in zip(hoods["neighborhood_id"], hoods["name"], geoms, strict=True):
        row = total_rows.get(hid)
        props: dict[str, Any] = {"feature_type": "gap", "neighborhood_id": str(hid),
                                 "name": str(name)}  # fmt: skip
        props.update(
            {c: round(float(row[i]) if row is not None else 0.0, 6) for i, c in enumerate(cols)}
        )
        props["coverage"] = round(props["served"] / props["demand"], 6) if props["demand"] else None
        props["categories"] = {
            r.category: {c: round(float(getattr(r, c)), 6) for c in [*cols, "coverage"]}
            for r in by_hood.get(hid, ())
        }
        features.append({"type": "Feature", "geometry": json.loads(geom), "properties": props})
    return {"type": "FeatureCollection", "features": features}


#: The files of a plan that the service serves, in this order (those a plan has): every
#: plan's, then those of plans with neighborhoods, floors or recruit sites, the report
#: (plans asked for one, :data:`matcher.report.REPORT_NAME`), then a scenario's diffs.
PLAN_FILES = (
    "assignments.csv",
    "clusters.csv",
    "need_clusters.csv",
    "unmet.csv",
    "plan.geojson",
    "summary.json",
    "gaps.csv",
    "gaps.geojson",
    "floors.csv",
    "recruit.csv",
    "recruit.geojson",
    "report.html",
    "scenario.json",
    "scenario_clusters.csv",
    "scenario_partners.csv",
)

#: Files a plan directory holds only sometimes; write_plan removes them when this plan has none.
OPTIONAL_FILES = (
    "gaps.geojson",
    "floors.csv",
    "recruit.csv",
    "recruit.geojson",
    "rejects_needs.csv",
    "rejects_partners.csv",
    "report.html",
    "scenario.json",
    "scenario_clusters.csv",
    "scenario_partners.csv",
)


def plan_files(plan: Plan) -> dict[str, bytes]:
    """Return the output contract of DESIGN.md as file contents, by file name (sorted).

    Files: ``assignments.csv``, ``clusters.csv``, ``need_clusters.csv``, ``unmet.csv``,
    ``gaps.csv`` (neighborhood x category), ``plan.geojson``, ``summary.json``; with
    neighborhood polygons ``gaps.geojson``; with floors ``floors.csv``; with recruit
    suggestions ``recruit.csv`` and ``recruit.geojson``; when rows were skipped,
    ``rejects_needs.csv`` / ``rejects_partners.csv``. The same plan always gives
    byte-identical files.
    """
    return {
        name: b"".join(piece.encode("utf-8") for piece in pieces())
        for name, pieces in _plan_pieces(plan).items()
    }


def _plan_pieces(plan: Plan) -> dict[str, Callable[[], Iterator[str]]]:
    """Return the files of :func:`plan_files` as makers of their text in pieces (sorted)."""
    files: dict[str, Callable[[], Iterator[str]]] = {}

    def whole(text: Callable[[], str]) -> Callable[[], Iterator[str]]:
        return lambda: iter((text(),))

    def table(frame: Callable[[], pd.DataFrame]) -> Callable[[], Iterator[str]]:
        return lambda: csv_pieces(frame())

    files["clusters.csv"] = table(
        lambda: pd.DataFrame(plan.clusters.drop(columns="geometry"))[list(_CLUSTER_CSV)]
    )
    gap_table, floor_table, recruit = plan.gap_table, plan.floors, plan.recruit
    if gap_table is not None:
        files["gaps.csv"] = table(lambda: gap_table)
    if plan.neighborhoods is not None:
        files["gaps.geojson"] = whole(lambda: _json_text_of(gaps_geojson(plan)))
    if floor_table is not None:
        files["floors.csv"] = table(lambda: floor_table)
    if recruit is not None:
        files["recruit.csv"] = table(recruit.to_frame)
        files["recruit.geojson"] = whole(lambda: _json_text_of(recruit.to_geojson()))
    files["assignments.csv"] = table(lambda: plan.assignment_table)
    files["need_clusters.csv"] = table(lambda: plan.need_clusters)
    files["unmet.csv"] = table(lambda: plan.unmet_table)
    for name, frame in plan.rejects.items():
        files[f"rejects_{name}.csv"] = table(lambda frame=frame: frame)  # type: ignore[misc]
    files["plan.geojson"] = lambda: itertools.chain(plan_geojson_pieces(plan), ("\n",))
    files["summary.json"] = whole(lambda: _json_text_of(summary(plan), indent=2))
    return dict(sorted(files.items()))


_CLUSTER_CSV = (
    "cluster_id",
    "category",
    "demand",
    "severity",
    "centroid_lat",
    "centroid_lon",
    "served",
    "unmet",
    "unmet_reason",
    "n_needs",
    "radius_km",
    "neighborhood",
)


def _json_text_of(doc: Any, indent: int | None = None) -> str:
    return json.dumps(doc, indent=indent, sort_keys=True) + "\n"


def write_files(
    files: Mapping[str, bytes], path: str | Path, *, drop_stale: bool = True
) -> dict[str, Path]:
    """Write files into directory ``path``, all or nothing (see :func:`publish`).

    Everything is written to a temporary directory first and moved into place, so a
    failure leaves no half-written output. Each file gets the usual permissions (those
    of a new file under the umask).

    Parameters
    ----------
    files : mapping of str to bytes
        The files' contents by name.
    path : str or Path
        The directory (created if missing).
    drop_stale : bool
        Remove optional files of an earlier plan in the directory
        (:data:`OPTIONAL_FILES`) that ``files`` does not have; False touches no other
        file of the directory (files written beside a plan's own, e.g. a comparison).

    Returns
    -------
    dict of str to Path
        The written files by name.
    """
    return _write_staged(
        ((name, (content,)) for name, content in files.items()), path, drop_stale=drop_stale
    )


def _write_staged(
    files: Iterable[tuple[str, Iterable[bytes]]], path: str | Path, *, drop_stale: bool = True
) -> dict[str, Path]:
    """Write each file's chunks into a temporary directory in ``path``, then publish them."""
    with _staged(path, drop_stale=drop_stale) as (tmp, written):
        for name, chunks in files:
            _write_chunks(tmp / name, chunks)
    return written


@contextmanager
def _staged(
    path: str | Path, *, drop_stale: bool = True
) -> Iterator[tuple[Path, dict[str, Path]]]:
    """Yield a temporary directory in ``path`` to write into, and the files published.

    When the block ends without an error, the directory's files are published into
    ``path`` (:func:`publish`) and the dict holds them; the directory is removed either
    way.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".matcher-", dir=out))
    written: dict[str, Path] = {}
    try:
        yield tmp, written
        written.update(publish(tmp, out, drop_stale=drop_stale))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_plan(plan: Plan, path: str | Path) -> dict[str, Path]:
    """Write the output contract of DESIGN.md (:func:`plan_files`) into directory ``path``.

    All or nothing (see :func:`write_files`). Two runs on the same input write
    byte-identical files. Large tables and layers are written piece by piece
    (:data:`PIECE_ROWS` rows at a time), so a plan's files never sit whole in memory.

    Returns
    -------
    dict of str to Path
        The written files by name.
    """
    with writing_plan(plan, path) as written:
        pass
    return written


#: Plans of at least this many clusters write ``plan.geojson`` in a process of its own.
FORKED_GEOJSON_MIN_CLUSTERS = 8_000


@contextmanager
def writing_plan(plan: Plan, path: str | Path) -> Iterator[dict[str, Path]]:
    """Write a plan's files as :func:`write_plan` does, running the ``with`` body meanwhile.

    The files are staged, then the body runs, then they are published: the yielded dict
    is filled with them after the body. When the body or a file fails, nothing is
    published. A plan of at least :data:`FORKED_GEOJSON_MIN_CLUSTERS` clusters, in a
    process of one thread on Linux, has its largest file, ``plan.geojson``,
    written by a forked process while this one writes the others and runs the body
    (forking a process of several threads could copy a lock another thread holds).
    The bytes are the same either way.

    Yields
    ------
    dict of str to Path
        Empty in the body; the published files by name after it.

    Raises
    ------
    OSError
        When a file cannot be written (also from the forked process).
    """
    writer = None
    with _staged(path) as (tmp, written):
        try:
            makers = _plan_pieces(plan)
            if (
                len(plan.clusters) >= FORKED_GEOJSON_MIN_CLUSTERS
                and single_threaded()
                # fork as Linux does it (macOS advises against fork without exec)
                and sys.platform.startswith("linux")
            ):
                writer = multiprocessing.get_context("fork").Process(
                    target=_write_in_child,
                    args=(tmp / "plan.geojson", makers.pop("plan.geojson")),
                    name="matcher-plan.geojson",
                    daemon=True,
                )
                writer.start()
            for name, pieces in makers.items():
                _write_chunks(tmp / name, (piece.encode("utf-8") for piece in pieces()))
            yield written
            if writer is not None:
                writer.join()
                if writer.exitcode != 0:
                    error = tmp / _CHILD_ERROR
                    why = (
                        error.read_text("utf-8") if error.is_file() else f"exit {writer.exitcode}"
                    )
                    raise OSError(f"could not write plan.geojson: {why}")
                logger.debug("plan.geojson written by process %s", writer.pid)
        finally:
            if writer is not None and writer.is_alive():
                writer.kill()
                writer.join()


#: Where a forked writer leaves its error (in the staging directory, never published).
_CHILD_ERROR = ".error"


def _write_chunks(path: Path, chunks: Iterable[bytes]) -> None:
    with open(path, "wb") as f:  # mode 0666 under the umask, as any new file
        for chunk in chunks:
            f.write(chunk)


def _write_in_child(path: Path, pieces: Callable[[], Iterator[str]]) -> None:
    """Write one file's pieces (a forked process: Ctrl-C is left to its parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _write_chunks(path, (piece.encode("utf-8") for piece in pieces()))
    except BaseException as exc:  # reported by the parent, never as a traceback here
        (path.parent / _CHILD_ERROR).write_text(f"{type(exc).__name__}: {exc}", "utf-8")
        os._exit(1)


def publish(stage: Path, out: Path, *, drop_stale: bool = True) -> dict[str, Path]:
    """Move every file of ``stage`` into ``out`` and drop an earlier plan's optional files.

    Optional files (:data:`OPTIONAL_FILES`) of an earlier plan in ``out`` that this
    one did not write would mix with it, so they are removed (unless ``drop_stale`` is
    False: then no other file of ``out`` is touched).

    Returns
    -------
    dict of str to Path
        The moved files by name.
    """
    written = {}
    for f in sorted(stage.iterdir()):
        if f.is_file():
            os.replace(f, out / f.name)
            written[f.name] = out / f.name
    for name in OPTIONAL_FILES if drop_stale else ():
        stale = out / name
        if name not in written and stale.is_file():
            stale.unlink()
    return written
