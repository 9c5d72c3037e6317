"""Writers for the batch output contract: CSV tables, plan GeoJSON and summary JSON."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import shapely

from .limits import FORMULA_PREFIXES
from .privacy import COARSEN_KM, coarsen, partners_view

if TYPE_CHECKING:
    from .plan import Plan

__all__ = [
    "PLAN_FILES",
    "csv_bytes",
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
    "summary",
]

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


def _csv_column(col: pd.Series, name: str) -> pd.Series:
    """Format a column: floats to 6 decimals (shortest repr), NaN empty, booleans lower-case.

    Text cells are neutralised (:func:`neutralise_cell`).
    """
    if col.dtype == object or isinstance(col.dtype, pd.StringDtype):
        text = col.astype(str)
        risky = text.str.match(r"'*[=+\-@\t\r]").fillna(False).to_numpy(dtype=bool)
        if risky.any():
            col = col.copy()
            col[risky] = [neutralise_cell(v) for v in col[risky]]
        return col
    if pd.api.types.is_bool_dtype(col):
        return col.map({True: "true", False: "false"})
    if pd.api.types.is_float_dtype(col):
        values = col.to_numpy(dtype=np.float64)
        if name not in _FULL_PRECISION:
            values = np.round(values, 6)
        text = np.array([repr(v) for v in values.tolist()], dtype=object)
        text[np.isnan(values)] = ""
        return pd.Series(text, index=col.index)
    return col


def csv_bytes(frame: pd.DataFrame) -> bytes:
    """Return a table as the UTF-8 CSV text of the output contract (cells neutralised)."""
    text = pd.DataFrame({c: _csv_column(frame[c], c) for c in frame.columns}, index=frame.index)
    return text.to_csv(index=False, lineterminator="\n").encode("utf-8")


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


def _json_columns(frame: pd.DataFrame, columns: tuple[str, ...]) -> list[list[Any]]:
    """Return columns as lists of JSON-ready values (floats to 6 decimals, NaN as null)."""
    out: list[list[Any]] = []
    for c in columns:
        col = frame[c]
        if pd.api.types.is_bool_dtype(col):
            out.append([bool(v) for v in col.tolist()])
        elif pd.api.types.is_float_dtype(col):
            v = np.round(col.to_numpy(dtype=np.float64), 6)
            vals = v.astype(object)
            vals[np.isnan(v)] = None
            out.append(vals.tolist())
        elif pd.api.types.is_integer_dtype(col):
            out.append([int(v) for v in col.tolist()])
        else:
            out.append(col.astype(object).tolist())
    return out


def _feature_strings(
    feature_type: str, frame: pd.DataFrame, columns: tuple[str, ...], geometries: list[str]
) -> list[str]:
    """Compact GeoJSON Feature strings, properties in sorted key order."""
    keys = sorted((*columns, "feature_type"))
    values = dict(zip(columns, _json_columns(frame, columns), strict=True))
    values["feature_type"] = [feature_type] * len(frame)
    ordered = [values[k] for k in keys]
    return [
        f'{{"geometry":{geom},"properties":'
        f'{json.dumps(dict(zip(keys, row, strict=True)), separators=(",", ":"))},"type":"Feature"}}'
        for geom, row in zip(geometries, zip(*ordered, strict=True), strict=True)
    ]


def plan_geojson_text(plan: Plan, *, exact_volunteers: bool = False) -> str:
    """Return the plan as a compact GeoJSON FeatureCollection string (see :func:`plan_geojson`)."""
    hulls = shapely.to_geojson(shapely.set_precision(plan.clusters.geometry.to_numpy(), 1e-7))
    features = _feature_strings("cluster", plan.clusters, _CLUSTER_PROPS, hulls.tolist())
    partners = partners_view(plan.partners, exact_volunteers=exact_volunteers)
    plon, plat = partners["lon"].to_numpy(), partners["lat"].to_numpy()
    points = [
        json.dumps({"type": "Point", "coordinates": [x, y]}, separators=(",", ":"))
        for x, y in zip(plon.tolist(), plat.tolist(), strict=True)
    ]
    features += _feature_strings("partner", partners, _PARTNER_PROPS, points)
    a = plan.assignments
    pi = pd.Index(partners["partner_id"]).get_indexer(a["partner_id"])
    ci = pd.Index(plan.clusters["cluster_id"]).get_indexer(a["cluster_id"])
    ends = np.round(
        np.column_stack(
            [
                plon[pi],
                plat[pi],
                plan.clusters["centroid_lon"].to_numpy()[ci],
                plan.clusters["centroid_lat"].to_numpy()[ci],
            ]
        ),
        7,
    ).tolist()
    lines = [
        json.dumps(
            {"type": "LineString", "coordinates": [[x0, y0], [x1, y1]]}, separators=(",", ":")
        )
        for x0, y0, x1, y1 in ends
    ]
    features += _feature_strings("assignment", a, _ASSIGNMENT_PROPS, lines)
    return '{"features":[' + ",".join(features) + '],"type":"FeatureCollection"}'


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
                "recruit": _records(plan.recruit.solves),
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
    if plan.neighborhoods is None or plan.gaps is None:
        return {"type": "FeatureCollection", "features": []}
    g = plan.gaps
    cols = [c for c in g.columns if c not in ("neighborhood", "category", "coverage")]
    totals = g.groupby("neighborhood")[cols].sum()
    features = []
    hoods = plan.neighborhoods.sort_values("neighborhood_id")
    geoms = shapely.to_geojson(shapely.set_precision(hoods.geometry.to_numpy(), 1e-6))
    for hid, name, geom in zip(hoods["neighborhood_id"], hoods["name"], geoms, strict=True):
        row = totals.loc[hid] if hid in totals.index else pd.Series(0.0, index=cols)
        props: dict[str, Any] = {"feature_type": "gap", "neighborhood_id": str(hid),
                                 "name": str(name)}  # fmt: skip
        props.update({c: round(float(row[c]), 6) for c in cols})
        props["coverage"] = round(props["served"] / props["demand"], 6) if props["demand"] else None
        per = g[g["neighborhood"] == hid]
        props["categories"] = {
            r.category: {c: round(float(getattr(r, c)), 6) for c in [*cols, "coverage"]}
            for r in per.itertuples(index=False)
        }
        features.append({"type": "Feature", "geometry": json.loads(geom), "properties": props})
    return {"type": "FeatureCollection", "features": features}


#: The files of a plan that the service serves, in this order (those a plan has): every
#: plan's, then those of plans with neighborhoods, floors or recruit sites, then a
#: scenario's diffs.
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
    files: dict[str, bytes] = {}
    clusters = pd.DataFrame(plan.clusters.drop(columns="geometry"))
    files["clusters.csv"] = csv_bytes(clusters[list(_CLUSTER_CSV)])
    if plan.gaps is not None:
        files["gaps.csv"] = csv_bytes(plan.gaps)
    if plan.neighborhoods is not None:
        files["gaps.geojson"] = _json_bytes(gaps_geojson(plan))
    if plan.floors is not None:
        files["floors.csv"] = csv_bytes(plan.floors)
    if plan.recruit is not None:
        files["recruit.csv"] = csv_bytes(plan.recruit.to_frame())
        files["recruit.geojson"] = _json_bytes(plan.recruit.to_geojson())
    files["assignments.csv"] = csv_bytes(plan.assignments)
    files["need_clusters.csv"] = csv_bytes(plan.need_clusters)
    files["unmet.csv"] = csv_bytes(plan.unmet)
    for name, frame in plan.rejects.items():
        files[f"rejects_{name}.csv"] = csv_bytes(frame)
    files["plan.geojson"] = (plan_geojson_text(plan) + "\n").encode("utf-8")
    files["summary.json"] = _json_bytes(summary(plan), indent=2)
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


def _json_bytes(doc: Any, indent: int | None = None) -> bytes:
    return (json.dumps(doc, indent=indent, sort_keys=True) + "\n").encode("utf-8")


def write_files(files: Mapping[str, bytes], path: str | Path) -> dict[str, Path]:
    """Write files into directory ``path``, all or nothing (see :func:`publish`).

    Everything is written to a temporary directory first and moved into place, so a
    failure leaves no half-written output; optional files of an earlier plan in the
    directory (:data:`OPTIONAL_FILES`) are removed.

    Returns
    -------
    dict of str to Path
        The written files by name.
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".matcher-", dir=out))
    try:
        for name, content in files.items():
            (tmp / name).write_bytes(content)
        return publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_plan(plan: Plan, path: str | Path) -> dict[str, Path]:
    """Write the output contract of DESIGN.md (:func:`plan_files`) into directory ``path``.

    All or nothing (see :func:`write_files`). Two runs on the same input write
    byte-identical files.

    Returns
    -------
    dict of str to Path
        The written files by name.
    """
    return write_files(plan_files(plan), path)


def publish(stage: Path, out: Path) -> dict[str, Path]:
    """Move every file of ``stage`` into ``out`` and drop an earlier plan's optional files.

    Optional files (:data:`OPTIONAL_FILES`) of an earlier plan in ``out`` that this
    one did not write would mix with it, so they are removed.

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
    for name in OPTIONAL_FILES:
        stale = out / name
        if name not in written and stale.is_file():
            stale.unlink()
    return written
