"""The map page's view of a finished plan: one GeoJSON payload, built once.

The payload is built when a plan job finishes (:func:`matcher.jobs.plan_artifacts`) and
stored gzip-compressed with the plan's files (:data:`MAP_FILE`), so serving the map is
sending stored bytes. It holds ``plan.geojson``'s features (assignments carry their
row of ``assignments.csv``: explanation and runner-up; clusters their ``neighborhood``
from ``clusters.csv``; partners never a contact), one
``neighborhood`` polygon per neighborhood with the plan's coverage there, the ``gap``
polygons and ``recruit_site`` points when the plan has them, and ``floors.csv`` as rows.
Everything comes from the plan's own files, so the map says what the files say.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Mapping
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely

from .output import csv_rows

__all__ = ["MAP_FILE", "MAP_PARTS", "map_bytes", "map_files", "map_payload", "map_part"]

#: The stored file name of a plan's map payload (gzip-compressed JSON).
MAP_FILE = "map.json.gz"
#: The stored file of each part of the payload: ``all``; ``base``, every feature but the
#: assignment lines (what the map page draws first); ``lines``, the assignment lines alone.
MAP_PARTS = {"all": MAP_FILE, "base": "map_base.json.gz", "lines": "map_lines.json.gz"}

_ASSIGNMENT_FLOATS = (
    "units",
    "distance_km",
    "cost",
    "language_km",
    "capacity_used",
    "capacity_left",
    "runner_up_distance_km",
    "runner_up_extra_cost",
)
_FLOOR_TEXT = ("neighborhood_id", "name", "reason")


def _assignment_details(content: bytes | None) -> dict[tuple[str, str], dict[str, Any]]:
    """Rows of an ``assignments.csv`` by ``(cluster_id, partner_id)``, typed for JSON."""
    if not content:
        return {}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in csv_rows(content):
        rec: dict[str, Any] = {}
        for key, value in row.items():
            if value == "":
                rec[key] = None
            elif key in _ASSIGNMENT_FLOATS:
                rec[key] = float(value)
            elif key == "runner_up_full":
                rec[key] = value.lower() == "true"
            else:
                rec[key] = value
        out[(row["cluster_id"], row["partner_id"])] = rec
    return out


def _cluster_neighborhoods(content: bytes | None) -> dict[str, str | None]:
    """Return the neighborhood of each cluster of a ``clusters.csv`` (None: outside all)."""
    if not content:
        return {}
    return {row["cluster_id"]: row.get("neighborhood") or None for row in csv_rows(content)}


def _floors(content: bytes | None) -> list[dict[str, Any]] | None:
    """Rows of a ``floors.csv``, typed for JSON (None when the plan has no floors).

    ``neighborhood_id``, ``name`` and ``reason`` stay text, ``floor_met`` is a boolean,
    every other column a number (None when empty).
    """
    if content is None:
        return None
    rows = []
    for row in csv_rows(content):
        rec: dict[str, Any] = {}
        for key, value in row.items():
            if key in _FLOOR_TEXT:
                rec[key] = value
            elif key == "floor_met":
                rec[key] = value.lower() == "true"
            else:
                try:
                    rec[key] = float(value) if value != "" else None
                except ValueError:
                    rec[key] = value
        rows.append(rec)
    return rows


def _plain(value: Any) -> Any:
    """Return a JSON value of a pandas/numpy cell (NaN and missing values as None)."""
    if hasattr(value, "item"):
        value = value.item()
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value if isinstance(value, str | int | float | bool) else str(value)


def _neighborhood_features(
    hoods: gpd.GeoDataFrame | None, coverage: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Return neighborhoods as GeoJSON features, with a plan's coverage in each."""
    if hoods is None or not len(hoods):
        return []
    geoms = shapely.to_geojson(shapely.set_precision(hoods.geometry.to_numpy(), 1e-6))
    features = []
    for geom, (_, row) in zip(geoms.tolist(), hoods.iterrows(), strict=True):
        hood_id = str(row["neighborhood_id"])
        cov = coverage.get(hood_id) or {}
        props = {
            "feature_type": "neighborhood",
            "neighborhood_id": hood_id,
            "name": _plain(row.get("name")) or hood_id,
            "population": _plain(row.get("population")),
        } | {k: _plain(cov.get(k)) for k in ("demand", "served", "unmet", "coverage")}
        features.append({"type": "Feature", "geometry": json.loads(geom), "properties": props})
    return features


def map_payload(
    plan_id: str,
    files: Mapping[str, bytes],
    summary: Mapping[str, Any],
    neighborhoods: gpd.GeoDataFrame | None,
) -> dict[str, Any]:
    """Return the map's GeoJSON FeatureCollection of a finished plan (see the module docs).

    Parameters
    ----------
    plan_id : str
        The plan.
    files : mapping of str to bytes
        Its output files (``plan.geojson`` at least).
    summary : mapping
        Its summary (``metrics.coverage_by_neighborhood`` colours the neighborhoods).
    neighborhoods : GeoDataFrame, optional
        The neighborhoods it was planned with.
    """
    collection = json.loads(files["plan.geojson"])
    details = _assignment_details(files.get("assignments.csv"))
    hood_of = _cluster_neighborhoods(files.get("clusters.csv"))
    for feature in collection["features"]:
        props = feature["properties"]
        if props.get("feature_type") == "cluster":
            props.setdefault("neighborhood", hood_of.get(props["cluster_id"]))
        elif props.get("feature_type") == "assignment":
            extra = details.get((props["cluster_id"], props["partner_id"]), {})
            props.update({k: v for k, v in extra.items() if k not in props})
        elif props.get("feature_type") == "partner":
            props.pop("contact", None)  # never in plan.geojson; withheld here too
    coverage = (summary.get("metrics") or {}).get("coverage_by_neighborhood", {})
    features = collection["features"] + _neighborhood_features(neighborhoods, coverage)
    for name in ("gaps.geojson", "recruit.geojson"):
        layer = files.get(name)
        if layer:
            features += json.loads(layer)["features"]
    return {
        "type": "FeatureCollection",
        "plan_id": plan_id,
        "features": features,
        "floors": _floors(files.get("floors.csv")),
    }


def map_part(payload: Mapping[str, Any], part: str) -> dict[str, Any]:
    """Return one part of a map payload (see :data:`MAP_PARTS`).

    ``base`` keeps every feature but the assignments and says how many lines there are
    (``assignment_count``); ``lines`` is a FeatureCollection of the assignments alone.

    Examples
    --------
    >>> full = {"type": "FeatureCollection", "plan_id": "p", "floors": None, "features": [
    ...     {"properties": {"feature_type": "cluster"}},
    ...     {"properties": {"feature_type": "assignment"}}]}
    >>> [len(map_part(full, p)["features"]) for p in ("all", "base", "lines")]
    [2, 1, 1]
    """
    if part not in MAP_PARTS:
        raise ValueError(f"no map part {part!r}; parts: {', '.join(MAP_PARTS)}")
    if part == "all":
        return dict(payload)
    features = payload["features"]
    lines = [f for f in features if f["properties"].get("feature_type") == "assignment"]
    if part == "lines":
        return {"type": "FeatureCollection", "plan_id": payload["plan_id"], "features": lines}
    base = [f for f in features if f["properties"].get("feature_type") != "assignment"]
    return dict(payload) | {"features": base, "assignment_count": len(lines)}


def map_files(
    plan_id: str,
    files: Mapping[str, bytes],
    summary: Mapping[str, Any],
    neighborhoods: gpd.GeoDataFrame | None,
) -> dict[str, bytes]:
    """Return every stored part of a plan's map payload (:data:`MAP_PARTS`), compressed."""
    payload = map_payload(plan_id, files, summary, neighborhoods)
    return {name: map_bytes(map_part(payload, part)) for part, name in MAP_PARTS.items()}


def map_bytes(payload: Mapping[str, Any]) -> bytes:
    """Return the payload as gzip-compressed compact JSON (the same bytes for the same plan)."""
    text = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    return gzip.compress(text, compresslevel=6, mtime=0)
