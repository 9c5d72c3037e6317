"""How partners, needs and neighborhoods become rows: validation at the store boundary.

A record is validated here once, with the same row rules as the file readers
(:func:`matcher.read_partners`, :func:`matcher.read_needs`), whichever backend stores
it; the backends only bind the values this module returns. Nothing here touches a
database.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from .._errors import InputValidationError, Problem
from .._validate import validate_needs, validate_partners
from ..io import LoadedTable, read_needs, read_partners
from ..privacy import PRIVATE_FIELDS, coarsen
from ..taxonomy import default_taxonomy
from .records import NEED_FRAME_COLUMNS, PARTNER_FRAME_COLUMNS

if TYPE_CHECKING:
    from ..taxonomy import Taxonomy

#: Fields a client may echo back from a read; they are ignored by writes.
READ_ONLY = frozenset({"version", "updated_at", "coarsened", "etag"})
#: A stored plan file's name: a plain file name.
FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
#: Longest stored error text of a failed plan.
MAX_ERROR = 10_000


def now() -> str:
    """Return the current UTC time as stored: ISO 8601 with microseconds and ``Z``."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unboxed, NaN/inf as null, dates as ISO text.

    Examples
    --------
    >>> jsonable({"a": np.int64(2), "b": (float("nan"), _dt.date(2026, 1, 2)),
    ...           "c": Path("x.csv"), "d": pd.NA, "e": np.array([1.5])})
    {'a': 2, 'b': [None, '2026-01-02'], 'c': 'x.csv', 'd': None, 'e': [1.5]}
    """
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset | np.ndarray):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, _dt.datetime | _dt.date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def dumps(value: Any, *, sort_keys: bool = True) -> str:
    """Return compact JSON text of ``value`` (see :func:`jsonable`), keys sorted by default."""
    return json.dumps(jsonable(value), sort_keys=sort_keys, allow_nan=False, separators=(",", ":"))


def check_actor(actor: str) -> str:
    """Return ``actor`` if it is a non-empty string of at most 200 characters."""
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise ValueError("`actor` must be a non-empty string of at most 200 characters")
    return actor


def check_page(limit: int, offset: int) -> None:
    """Raise ValueError unless ``limit`` and ``offset`` are integers >= 0."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"`limit` must be an integer >= 0, not {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"`offset` must be an integer >= 0, not {offset!r}")


def check_version(expected_version: int) -> int:
    """Return ``expected_version`` as an int; raise ValueError if it is not an integer."""
    if isinstance(expected_version, bool) or not isinstance(expected_version, int | np.integer):
        raise ValueError(f"`expected_version` must be an integer, not {expected_version!r}")
    return int(expected_version)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _as_text(value: Any) -> str:
    return "" if _is_missing(value) else str(value).strip()


def _as_float(value: Any) -> float | None:
    if _is_missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _as_int(value: Any, default: int) -> Any:
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value  # rejected by the column's CHECK constraint
    return int(number) if number.is_integer() else number


def _cell(value: Any) -> Any:
    """Return a record value as the validators expect it (lists ``;``-joined)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@dataclass(frozen=True)
class Spec:
    """How one versioned entity (partner, need) maps onto its table."""

    entity: str
    table: str
    key: str
    columns: tuple[str, ...]
    floats: frozenset[str]
    ints: frozenset[str]
    required: tuple[str, ...]
    extra: tuple[str, ...] = ()

    @property
    def stored(self) -> tuple[str, ...]:
        """The stored columns: the record's, then ``version`` and ``updated_at``."""
        return self.columns + self.extra + ("version", "updated_at")


PARTNER = Spec(
    "partner",
    "partners",
    "partner_id",
    PARTNER_FRAME_COLUMNS,
    frozenset({"lat", "lon", "capacity", "radius_km"}),
    frozenset(),
    ("partner_id", "kind", "lat", "lon", "categories", "capacity", "radius_km"),
)
NEED = Spec(
    "need",
    "needs",
    "need_id",
    NEED_FRAME_COLUMNS,
    frozenset({"lat", "lon", "demand"}),
    frozenset({"severity"}),
    ("need_id", "category", "lat", "lon", "demand"),
    ("cluster_id",),
)


# --------------------------------------------------------------------------- interface


def validate_record(
    spec: Spec, record: Mapping[str, Any], taxonomy: Taxonomy | None = None
) -> dict[str, Any]:
    """Validate one record with the file readers' rules; return its stored columns.

    Parameters
    ----------
    spec : Spec
        :data:`PARTNER` or :data:`NEED`.
    record : mapping
        The fields; lists are accepted for ``;``-separated columns and read-only
        fields echoed from a read (:data:`READ_ONLY`) are ignored.
    taxonomy : Taxonomy, optional
        Categories are checked against it (default taxonomy).

    Returns
    -------
    dict
        ``spec.columns`` (and ``spec.extra``) with their validated values.

    Raises
    ------
    InputValidationError
        Every problem of the record (unknown and missing fields, bad values).
    """
    if not isinstance(record, Mapping):
        raise InputValidationError(
            [Problem(spec.entity, None, None, type(record).__name__, "must be an object")]
        )
    allowed = set(spec.columns) | set(spec.extra)
    unknown = sorted(str(k) for k in record if k not in allowed and k not in READ_ONLY)
    if unknown:
        raise InputValidationError(
            Problem(
                spec.entity,
                None,
                name,
                None,
                f"unknown field; the fields are {', '.join(sorted(allowed))}",
            )
            for name in unknown
        )
    missing = [c for c in spec.required if c not in record]
    if missing:
        raise InputValidationError(
            Problem(spec.entity, None, c, None, "required field missing") for c in missing
        )
    row = {k: _cell(record[k]) for k in spec.columns if k in record}
    # the row-level rules of read_partners / read_needs, without their file handling
    validator = validate_partners if spec is PARTNER else validate_needs
    checked = validator(pd.DataFrame([row]), [0], spec.entity, taxonomy or default_taxonomy())
    if checked.problems:  # one record: no row numbers
        raise InputValidationError(dataclasses.replace(p, row=None) for p in checked.problems)
    values = checked.table.iloc[0]
    out = {c: _plain(values[c]) for c in spec.columns}
    if "cluster_id" in spec.extra:
        cid = record.get("cluster_id")
        if cid is not None and (not isinstance(cid, str) or not cid.strip()):
            raise InputValidationError(
                [Problem(spec.entity, None, "cluster_id", cid, "must be a non-empty string")]
            )
        out["cluster_id"] = cid.strip() if isinstance(cid, str) else None
    return out


def check_fixed_id(spec: Spec, entity_id: str, record: Mapping[str, Any]) -> None:
    """Raise InputValidationError unless ``record`` is a mapping with no other id."""
    if not isinstance(record, Mapping):
        raise InputValidationError(
            [Problem(spec.entity, None, None, type(record).__name__, "must be an object")]
        )
    given = record.get(spec.key)
    if given is not None and str(given).strip() != entity_id:
        raise InputValidationError(
            [Problem(spec.entity, None, spec.key, given, f"must be {entity_id!r} (ids are fixed)")]
        )


def merge_update(
    spec: Spec, current: Mapping[str, Any], record: Mapping[str, Any], taxonomy: Taxonomy | None
) -> tuple[dict[str, Any], list[str], dict[str, Any]]:
    """Validate ``record`` laid over the ``current`` stored record.

    Returns
    -------
    rec : dict
        The new stored columns.
    changed : list of str
        The columns whose value changes (moving a need, by ``lat``, ``lon`` or
        ``category``, clears its ``cluster_id`` unless the record gives one).
    detail : dict
        The audit entry's detail: version, changed names, and the before and after
        values, so an update can be undone. A volunteer's private fields are named
        but never copied into the append-only log (only an admin can change them,
        and a deleted volunteer must not live on in the log).
    """
    merged = {c: current[c] for c in spec.columns + spec.extra}
    merged.update({k: v for k, v in record.items() if k not in READ_ONLY})
    rec = validate_record(spec, merged, taxonomy)
    changed = sorted(c for c in spec.columns + spec.extra if rec.get(c) != current.get(c))
    if (
        "cluster_id" in spec.extra
        and "cluster_id" not in record
        and {"lat", "lon", "category"} & set(changed)
    ):
        rec["cluster_id"] = None
        changed = sorted(set(changed) | {"cluster_id"})
    hidden = (
        set(PRIVATE_FIELDS)
        if spec is PARTNER and "volunteer" in (current.get("kind"), rec.get("kind"))
        else set()
    )
    detail = {
        "version": int(current["version"]) + 1,
        "changed": changed,
        "before": {c: current.get(c) for c in changed if c not in hidden},
        "after": {c: rec.get(c) for c in changed if c not in hidden},
    }
    return rec, changed, detail


def frame_rows(
    spec: Spec, df: pd.DataFrame | LoadedTable, taxonomy: Taxonomy | None = None
) -> list[tuple[Any, ...]]:
    """Typed row tuples of ``spec.columns`` of a bulk import, validated.

    A :class:`~matcher.io.LoadedTable` (what ``read_needs``/``read_partners`` return) was
    validated by its reader and is taken as it is; any other table is validated here with
    the same rules (every problem reported at once).

    Raises
    ------
    TypeError
        ``df`` is not a table.
    InputValidationError
        A row breaks a rule, a required column is missing or an id is duplicated.
    """
    if isinstance(df, LoadedTable):
        df = df.frame
    elif isinstance(df, pd.DataFrame):
        reader = read_partners if spec is PARTNER else read_needs
        df = reader(df, taxonomy=taxonomy or default_taxonomy(), name=spec.table).frame
    else:
        raise TypeError(f"expected a DataFrame, not {type(df).__name__}")
    frame = pd.DataFrame(df)
    if isinstance(df, gpd.GeoDataFrame) and ("lat" not in frame or "lon" not in frame):
        geom = df.geometry
        if len(geom) and (geom.geom_type == "Point").all():
            frame["lon"], frame["lat"] = geom.x.to_numpy(), geom.y.to_numpy()
    missing = [c for c in spec.required if c not in frame.columns]
    if missing:
        raise InputValidationError(
            Problem(
                spec.table,
                None,
                c,
                None,
                f"required column missing; the table has columns {list(frame.columns)}",
            )
            for c in missing
        )
    n = len(frame)
    cols: dict[str, list[Any]] = {}
    for c in spec.columns:
        raw = frame[c].tolist() if c in frame else [None] * n
        if c in spec.floats:
            cols[c] = [_as_float(v) for v in raw]
        elif c in spec.ints:
            cols[c] = [_as_int(v, 3) for v in raw]
        else:
            cols[c] = [_as_text(v) for v in raw]
    ids = cols[spec.key]
    if "name" in cols:
        cols["name"] = [name or pid for name, pid in zip(cols["name"], ids, strict=True)]
    problems = _duplicates(spec.table, spec.key, ids)
    if problems:
        raise InputValidationError(problems)
    return list(zip(*(cols[c] for c in spec.columns), strict=True)) if n else []


def _duplicates(label: str, key: str, ids: list[str]) -> list[Problem]:
    """Problems of empty (neighborhoods) and repeated ids, in row order."""
    problems = []
    first: dict[str, int] = {}
    for i, v in enumerate(ids):
        if not v and key == "neighborhood_id":
            problems.append(Problem(label, i, key, v, "must not be empty"))
        elif v in first:
            problems.append(Problem(label, i, key, v, f"duplicate {key}; first at row {first[v]}"))
        else:
            first[v] = i
    return problems


def neighborhood_rows(gdf: gpd.GeoDataFrame) -> list[tuple[str, str, float | None, str, bytes]]:
    """Return validated ``(id, name, population, properties JSON, WKB)`` rows of neighborhoods.

    Raises
    ------
    TypeError
        ``gdf`` is not a GeoDataFrame.
    InputValidationError
        Missing id column, duplicate or empty ids, non-polygons, another CRS.
    """
    label = "neighborhoods"
    if not isinstance(gdf, gpd.GeoDataFrame):
        raise TypeError(f"expected a GeoDataFrame, not {type(gdf).__name__}")
    if "neighborhood_id" not in gdf.columns:
        raise InputValidationError(
            [Problem(label, None, "neighborhood_id", None, "required column missing")]
        )
    if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
        raise InputValidationError(
            [Problem(label, None, "crs", gdf.crs.to_string(), "must be EPSG:4326")]
        )
    ids = [_as_text(v) for v in gdf["neighborhood_id"].tolist()]
    problems = _duplicates(label, "neighborhood_id", ids) + [
        Problem(label, i, "geometry", gtype, "must be a Polygon or MultiPolygon")
        for i, gtype in enumerate(gdf.geometry.geom_type.tolist())
        if gtype not in ("Polygon", "MultiPolygon")
    ]
    if problems:  # in row order, a row's id before its geometry
        raise InputValidationError(sorted(problems, key=lambda p: p.row or 0))
    attrs = pd.DataFrame(gdf.drop(columns=[gdf.geometry.name, "neighborhood_id"]))
    wkb = shapely.to_wkb(gdf.geometry.to_numpy())
    rows = []
    for nid, props, geom in zip(ids, attrs.to_dict("records"), wkb, strict=True):
        props = jsonable(props)
        name = _as_text(props.get("name")) or nid
        rows.append(
            (nid, name, _as_float(props.get("population")), dumps(props, sort_keys=False), geom)
        )
    return rows


def neighborhoods_from_rows(rows: list[Any]) -> gpd.GeoDataFrame | None:
    """Return the neighborhoods frame from stored ``(id, properties JSON, WKB)`` rows, or None."""
    if not rows:
        return None
    records = [{"neighborhood_id": r[0], **json.loads(r[1])} for r in rows]
    geometry = shapely.from_wkb([bytes(r[2]) for r in rows])
    return gpd.GeoDataFrame(pd.DataFrame.from_records(records), geometry=geometry, crs="EPSG:4326")


def frame_from_rows(spec: Spec, rows: list[Any]) -> gpd.GeoDataFrame:
    """Return the planning frame (exact points) of partners or needs from stored rows."""
    data: dict[str, Any] = {}
    for j, c in enumerate(spec.columns):
        values = [r[j] for r in rows]
        if c in spec.floats:
            data[c] = np.asarray(values, dtype=np.float64)
        elif c in spec.ints:
            data[c] = np.asarray(values, dtype=np.int64)
        else:
            data[c] = pd.Series(values, dtype=object).astype(str)
    frame = pd.DataFrame(data, columns=list(spec.columns))
    return gpd.GeoDataFrame(
        frame, geometry=gpd.points_from_xy(frame["lon"], frame["lat"]), crs="EPSG:4326"
    )


def shape_partners(records: list[dict[str, Any]], exact: bool) -> list[dict[str, Any]]:
    """Partners as shown: volunteers on the privacy grid without contact unless ``exact``.

    Every record gets ``coarsened`` (bool). See :mod:`matcher.privacy`.
    """
    vol = [i for i, r in enumerate(records) if r["kind"] == "volunteer"]
    for r in records:
        r["coarsened"] = False
    if exact or not vol:
        return records
    lat, lon = coarsen(
        np.array([records[i]["lat"] for i in vol], dtype=float),
        np.array([records[i]["lon"] for i in vol], dtype=float),
    )
    for j, i in enumerate(vol):
        records[i].update(lat=float(lat[j]), lon=float(lon[j]), contact="", coarsened=True)
    return records


def usage_from_assignments(content: bytes | None) -> dict[str, float]:
    """Sum ``units`` per ``partner_id`` over the rows of an ``assignments.csv``."""
    import csv
    import io

    if not content:
        return {}
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    if reader.fieldnames is None or not {"partner_id", "units"} <= set(reader.fieldnames):
        raise ValueError("assignments.csv needs the columns partner_id and units")
    usage: dict[str, float] = {}
    for row in reader:
        units = float(row["units"] or 0.0)
        usage[row["partner_id"]] = usage.get(row["partner_id"], 0.0) + units
    return usage
