"""Reading and validating needs, partners and neighborhoods from CSV, GeoJSON and GeoPackage."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeAlias

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely

from ._errors import InputValidationError, Problem
from ._validate import NEED_COLUMNS, PARTNER_COLUMNS, Validated, validate_needs, validate_partners
from .limits import (
    MAX_CELL_CHARS,
    MAX_INPUT_FILES,
    MAX_INPUT_FILES_BYTES_FACTOR,
    MAX_JSON_DEPTH,
    check_file,
    file_limit,
    id_problem,
    json_nodes,
    read_file,
    text_problem,
)
from .taxonomy import Taxonomy, default_taxonomy

__all__ = [
    "LoadedTable",
    "read_needs",
    "read_partners",
    "read_neighborhoods",
    "Upload",
    "hash_table",
    "load_json_document",
    "WGS84_NAMES",
    "input_files",
    "RowProblems",
    "text_cells",
    "text_table",
    "utc_days",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """A file's content already in memory (e.g. a request body), read like a file.

    Parameters
    ----------
    content : bytes
        The file's bytes (bounded by the same size limit as files).
    name : str
        What to call it in problems, e.g. ``"needs.csv (request body)"``.
    suffix : str
        Its format, as a file suffix: ``.csv`` or ``.geojson``/``.json``.
    """

    content: bytes
    name: str
    suffix: str


Source: TypeAlias = str | Path | pd.DataFrame | Upload
CSV_SUFFIXES = (".csv", ".txt")
GEOJSON_SUFFIXES = (".geojson", ".json")
GPKG_SUFFIXES = (".gpkg",)

#: CRS names that mean WGS84 longitude/latitude in a GeoJSON ``crs`` member.
WGS84_NAMES = frozenset(
    {
        "urn:ogc:def:crs:ogc:1.3:crs84",
        "urn:ogc:def:crs:ogc::crs84",
        "crs84",
        "epsg:4326",
        "urn:ogc:def:crs:epsg::4326",
        "urn:ogc:def:crs:epsg:6.6:4326",
        "http://www.opengis.net/def/crs/ogc/1.3/crs84",
        "http://www.opengis.net/def/crs/epsg/0/4326",
    }
)


@dataclass(frozen=True)
class LoadedTable:
    """A validated table with the rows that were rejected.

    Attributes
    ----------
    frame : geopandas.GeoDataFrame
        The valid rows with point geometries in EPSG:4326 (a plain DataFrame with
        ``lat``/``lon`` when read with ``points=False``).
    rejects : pandas.DataFrame
        The rejected rows as read, with ``row`` and ``problems`` columns (empty unless
        ``on_invalid="skip"``).
    sha256 : str
        The SHA-256 of the file's bytes, or of the canonical CSV of a DataFrame input.
    name : str
        The file name or input name.
    rows : numpy.ndarray, optional
        The row number (as in problems) of each row of ``frame``.
    report : pandas.DataFrame, optional
        What the reader made of the input's terms (HSDS: the mapping report of
        :func:`matcher.hsds.read_hsds`).
    """

    frame: gpd.GeoDataFrame
    rejects: pd.DataFrame
    sha256: str
    name: str
    rows: np.ndarray | None = None
    report: pd.DataFrame | None = None


def _fail(
    file: str, reason: str, *, row: int | None = None, field: str | None = None, value: Any = None
) -> InputValidationError:
    return InputValidationError([Problem(file, row, field, value, reason)])


def _upload_bytes(upload: Upload, label: str) -> bytes:
    """Return the bytes of an upload, bounded as a file is."""
    limit = file_limit()
    if len(upload.content) > limit:
        raise _fail(label, f"is {len(upload.content):,} bytes; the most allowed is {limit:,}")
    data = upload.content
    if not data.strip() or data.strip() == b"\xef\xbb\xbf":
        raise _fail(label, "the file is empty; expected a header row and data rows")
    return data


def _read_bytes(path: Path, label: str | None = None) -> bytes:
    """Read a whole input file, bounded: only a regular file of at most the size limit."""
    data = read_file(path, label)
    if not data.strip() or data.strip() == b"\xef\xbb\xbf":
        raise _fail(label or str(path), "the file is empty; expected a header row and data rows")
    return data


def _check_cells(
    df: pd.DataFrame,
    rows: Sequence[int] | npt.NDArray[np.int64],
    file: str,
    text: str | None = None,
) -> None:
    """Refuse cells longer than :data:`matcher.limits.MAX_CELL_CHARS` (before any other rule).

    Later steps build fixed-width arrays of the text columns; one huge cell would make
    them allocate gigabytes. ``text`` is the CSV text the table was read from: when it
    has no quoted field every cell lies within one line, so short lines clear every cell.
    """
    if text is not None and '"' not in text and _longest_line(text) <= MAX_CELL_CHARS:
        return
    problems = []
    for col in df.columns:
        series = df[col]
        if series.dtype != object and not isinstance(series.dtype, pd.StringDtype):
            continue
        lengths = _str_lengths(series)
        for i in np.flatnonzero(lengths > MAX_CELL_CHARS)[:20]:
            problems.append(
                Problem(
                    file,
                    int(rows[i]) if i < len(rows) else int(i),
                    str(col),
                    str(series.iloc[i])[:40] + "...",
                    f"is {int(lengths[i]):,} characters long; a cell has at most "
                    f"{MAX_CELL_CHARS:,}",
                )
            )
    if problems:
        raise InputValidationError(problems)


def _longest_line(text: str) -> int:
    """Return the length of the longest line of ``text`` (lines end at newlines)."""
    return max(map(len, text.split("\n")), default=0)


def _str_lengths(series: pd.Series) -> np.ndarray:
    """Length of each str value of a column, 0 for any other value."""
    values = series.tolist()
    if isinstance(series.dtype, pd.StringDtype):  # str values, or missing ones
        try:
            return np.fromiter(map(len, values), dtype=np.int64, count=len(values))
        except TypeError:
            pass
    return np.fromiter(
        (len(v) if isinstance(v, str) else 0 for v in values), dtype=np.int64, count=len(values)
    )


_SURROGATE = re.compile("[\ud800-\udfff]")


def text_cells(
    content: bytes, label: str, max_rows: int, *, skip_blank_lines: bool = True
) -> pd.DataFrame:
    """Read a small CSV file of text cells (events, partnerships, outcomes).

    Every cell is text, empty cells are ``""``, a BOM is dropped and column names are
    stripped; at most ``max_rows + 1`` rows are read, so the caller can say a file has
    too many.

    Raises
    ------
    InputValidationError
        Naming the file when it is not a readable CSV file.
    """
    try:
        with warnings.catch_warnings():  # a first row longer than the header: not an index
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                io.BytesIO(content), dtype=str, keep_default_na=False, encoding="utf-8-sig",
                nrows=max_rows + 1, skip_blank_lines=skip_blank_lines, index_col=False,
            )  # fmt: skip
    except pd.errors.ParserWarning:
        lines = csv.reader(io.StringIO(content.decode("utf-8-sig", errors="replace")))
        width = len(next(lines, []))
        row = next((i for i, r in enumerate(lines, start=2) if len(r) > width), None)
        raise InputValidationError([Problem(
            label, row, None, None, f"the row has more fields than the header's {width}",
        )]) from None  # fmt: skip
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputValidationError(
            [Problem(label, None, None, None, f"not a readable CSV file: {exc}")]
        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def text_table(
    content: bytes, label: str, required: Sequence[str], max_rows: int
) -> pd.DataFrame:
    """Read a CSV of text cells (:func:`text_cells`) that must have ``required`` columns.

    Raises
    ------
    InputValidationError
        Naming a missing column, more than ``max_rows`` rows, or the cells of the
        required columns longer than ``limits.MAX_CELL_CHARS`` (the rule of every reader,
        :func:`_check_cells`; by row, the header is row 1).
    """
    frame = text_cells(content, label, max_rows)
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise InputValidationError([
            Problem(label, None, c, None, f"column missing; the file has {list(frame.columns)}")
            for c in missing
        ])  # fmt: skip
    if len(frame) > max_rows:
        raise InputValidationError(
            [Problem(label, None, None, None, f"more than {max_rows:,} rows")]
        )
    _check_cells(frame[list(required)], np.arange(len(frame)) + 2, label)  # the header: row 1
    return frame


#: An ISO 8601 date or date-time, with an optional zone (``Z`` or ``+hh:mm``).
_ISO = r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)?(?:Z|[+-]\d{2}:?\d{2})?"


def utc_days(values: pd.Series) -> pd.Series:
    """UTC days of ISO 8601 texts, NaT where a text is not one (or is empty).

    A date is its own day; a date-time with a zone is converted to UTC first (the store
    writes UTC), one without a zone is taken as UTC.
    """
    text = values.astype(str).str.strip()
    ok = text.str.fullmatch(_ISO)
    stamps = pd.to_datetime(text.where(ok), utc=True, format="ISO8601", errors="coerce")
    return stamps.dt.tz_convert(None).dt.normalize()


class RowProblems:
    """Problems of a file's rows, at most 1,000, each distinct bad value described once."""

    LIMIT = 1000

    def __init__(self, label: str) -> None:
        self.label = label
        self.found: list[Problem] = []

    def flag(self, bad: pd.Series, values: pd.Series, field: str, why: Any) -> None:
        """Add a problem per bad row: ``why`` is a text, or a function of the value."""
        if len(self.found) >= self.LIMIT or not bad.any():
            return
        rows = np.flatnonzero(bad.to_numpy())[: self.LIMIT - len(self.found)]
        said: dict[str, str] = {}
        for r in rows:
            v = str(values.iloc[r])
            if v not in said:
                said[v] = why(v) if callable(why) else why
            self.found.append(Problem(self.label, int(r) + 2, field, v[:40], said[v]))

    def raise_any(self) -> None:
        """Raise them, by row, if there are any."""
        if self.found:
            self.found.sort(key=lambda p: (p.row or 0, p.field or ""))
            raise InputValidationError(self.found)



def load_json_document(data: bytes | str, name: str) -> Any:
    """Parse a JSON document with matcher's bounds (UTF-8, nesting, unique keys).

    Parameters
    ----------
    data : bytes or str
        The document.
    name : str
        What to call it in problems (a file name, ``"request body"``).

    Raises
    ------
    InputValidationError
        Not UTF-8, not JSON, nested deeper than :data:`matcher.limits.MAX_JSON_DEPTH`,
        or an object with a repeated key.
    """
    text = _decode(data, name) if isinstance(data, bytes) else data
    return _load_json(text, name)


def _load_json(text: str, file: str) -> Any:
    """Parse JSON with bounded nesting; duplicate keys in one object are an error."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                raise _fail(file, f"the key {key!r} appears twice in one JSON object", field=key)
            out[key] = value
        return out

    try:
        doc = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise _fail(
            file, f"not valid JSON: {exc.msg} at line {exc.lineno}", row=exc.lineno
        ) from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        reason = str(exc).split(";")[0]
        raise _fail(file, f"not valid JSON: {reason}") from None
    except RecursionError:
        raise _fail(
            file, f"JSON nested too deep; at most {MAX_JSON_DEPTH} levels are allowed"
        ) from None
    depth = 0  # one pass over the document for both checks
    for node, level in json_nodes(doc):
        if isinstance(node, dict | list):
            depth = max(depth, level + 1)
        elif isinstance(node, str) and _SURROGATE.search(node):
            raise _fail(
                file, "a JSON string holds a lone UTF-16 surrogate (\\ud800-\\udfff): not text"
            )
    if depth > MAX_JSON_DEPTH:
        raise _fail(file, f"JSON nested {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    return doc


def _decode(data: bytes, file: str) -> str:
    """Decode UTF-8 (a BOM is accepted) or report where the file is not UTF-8."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        byte = data[exc.start : exc.start + 1].hex()
        raise _fail(
            file,
            f"not UTF-8: byte 0x{byte} at line {line}, offset {exc.start}; "
            "save the file as UTF-8 (a UTF-8 BOM is fine)",
            row=line,
        ) from None


#: A CSV text longer than this (characters) is parsed :data:`CSV_PIECE_ROWS` rows at a time.
CSV_PIECE_CHARS = 64 * 2**20
CSV_PIECE_ROWS = 500_000


def _read_csv_text(
    text: str, file: str, required: tuple[str, ...]
) -> tuple[pd.DataFrame, Sequence[int] | npt.NDArray[np.int64]]:
    newline = text.find("\n")
    header = (text if newline < 0 else text[:newline]).rstrip("\r")
    try:
        columns = next(csv.reader([header])) if header else []
    except csv.Error as exc:
        raise _fail(file, f"cannot parse the header as CSV: {_csv_reason(exc)}", row=1) from None
    seen: dict[str, int] = {}
    dups = []
    for pos, col in enumerate(c.strip() for c in columns):
        if col in seen:
            dups.append(
                Problem(
                    file,
                    1,
                    col,
                    None,
                    f"column {pos + 1} repeats the name of column {seen[col] + 1}; "
                    "every column needs its own name",
                )
            )
        seen.setdefault(col, pos)
    if dups:
        raise InputValidationError(dups)
    if len(columns) <= 1:
        for delim, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if delim in header:
                raise _fail(
                    file,
                    f"wrong delimiter: the header is {name}-separated ({header[:60]!r}); "
                    "matcher reads comma-separated CSV",
                    row=1,
                )
    try:
        options: dict[str, Any] = dict(
            dtype=str,
            keep_default_na=False,
            na_values=[],
            na_filter=False,  # no value is missing: a quarter faster than an empty NA set
            skipinitialspace=True,
            skip_blank_lines=True,
        )
        # the parser reads UTF-8 bytes in blocks; given a text buffer it takes the whole
        # text at once first (3.5 GB more at 10M rows, and half as fast)
        raw = io.BytesIO(text.encode("utf-8"))
        if len(text) <= CSV_PIECE_CHARS:
            df = pd.read_csv(raw, encoding="utf-8", **options)
        else:
            # in pieces of rows: the parser makes a Python string of every cell of a piece
            # before its columns become compact text
            with pd.read_csv(raw, encoding="utf-8", chunksize=CSV_PIECE_ROWS, **options) as pieces:
                df = pd.concat(list(pieces), ignore_index=True)
        del raw
        # a row with fewer fields than the header is read with '' in the missing cells:
        # with every row at most as wide as the header (pandas refuses a wider one), the
        # separators add up to (columns - 1) per line only when no row is short; a quoted
        # comma also breaks the sum, and the exact path below then decides
        short = np.array([text.count(",") != (len(columns) - 1) * (len(df) + 1)])
    except pd.errors.ParserError as exc:
        df, short = pd.DataFrame(), None  # a row with too many fields: find every ragged row below
        parser_error = str(exc)
    except ValueError as exc:
        raise _fail(file, f"cannot parse as CSV: {exc}") from None
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if short is None or short.any() or lines != len(df) + 1:
        # the slow, exact path: line numbers of every record, and every ragged row
        records = [(line, cells) for line, cells in _records(text, file) if cells]
        ragged = [
            Problem(
                file,
                line,
                None,
                ",".join(cells),
                f"has {len(cells)} fields; the header has {len(columns)}",
            )
            for line, cells in records
            if len(cells) != len(columns)
        ]
        if ragged:
            raise InputValidationError(ragged)
        if short is None:  # pandas failed, yet every record has the header's width
            raise _fail(file, f"cannot parse as CSV: {parser_error}")
        rows: Sequence[int] | npt.NDArray[np.int64] = [line for line, _ in records]
    else:
        rows = np.arange(2, len(df) + 2, dtype=np.int64)  # not 10M Python ints at 10M rows
    df.columns = [str(c).strip() for c in df.columns]
    _check_columns(df, file, required)
    if df.empty:
        raise _fail(file, "the file has a header but no data rows")
    if len(rows) != len(df):  # pragma: no cover - the two CSV readers disagree
        rows = np.arange(2, len(df) + 2, dtype=np.int64)
    return df, rows


def _records(text: str, file: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) of each data record after the header."""
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    try:
        next(reader, None)
        return [(reader.line_num, cells) for cells in reader]
    except csv.Error as exc:
        raise _fail(
            file,
            f"cannot parse as CSV at line {reader.line_num}: {_csv_reason(exc)}",
            row=reader.line_num,
        ) from None


def _csv_reason(exc: csv.Error) -> str:
    """Say what is wrong with a CSV line in a user's terms."""
    if "new-line character" in str(exc):
        return "a lone carriage return (CR) inside a field; save the file with LF or CRLF line ends"
    return str(exc)


def _check_columns(df: pd.DataFrame, file: str, required: tuple[str, ...]) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise InputValidationError(
            Problem(
                file,
                1,
                c,
                None,
                f"required column missing; the file has columns {list(df.columns)}; "
                f"required: {list(required)}",
            )
            for c in missing
        )


def _is_wgs84(crs: Any) -> bool:
    from pyproj import CRS

    if crs is None or (isinstance(crs, str) and crs.lower() in WGS84_NAMES):
        return True
    crs = CRS.from_user_input(crs)
    return bool(crs.equals("EPSG:4326") or crs.equals("OGC:CRS84"))


def _source_crs(file: str, declared: Any, input_crs: str | None) -> str | None:
    """Return the CRS to transform the file's coordinates from, or None if WGS84.

    ``declared`` is the file's own CRS (None for CSV or a GeoJSON without a ``crs``
    member); ``input_crs`` is the caller's declaration of the transform.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    if input_crs is not None:
        try:
            CRS.from_user_input(input_crs)
        except CRSError as exc:
            raise _fail(file, f"unknown CRS: {exc}", field="input_crs", value=input_crs) from None
    try:
        if input_crs is None:
            if _is_wgs84(declared):
                return None
            raise _fail(
                file,
                f"the data is in CRS {str(declared)!r}, not WGS84 (EPSG:4326); reproject it "
                "(e.g. `ogr2ogr -t_srs EPSG:4326`) or declare the transform with "
                f"input_crs={str(declared)!r} (CLI: --input-crs)",
                field="crs",
                value=str(declared),
            )
        if (
            declared is not None
            and not CRS.from_user_input(declared).equals(CRS.from_user_input(input_crs))
            and not (_is_wgs84(declared) and _is_wgs84(input_crs))
        ):
            raise _fail(
                file,
                f"the file declares CRS {str(declared)!r} but input_crs is {input_crs!r}",
                field="crs",
                value=str(declared),
            )
        return None if _is_wgs84(input_crs) else input_crs
    except CRSError as exc:
        raise _fail(file, f"unknown CRS: {exc}", field="crs", value=str(declared)) from None


def _geojson_points(
    text: str, file: str, required: tuple[str, ...], input_crs: str | None
) -> tuple[pd.DataFrame, list[int]]:
    doc = _load_json(text, file)
    features, problems = _features(doc, file)
    crs_name = None
    if isinstance(doc.get("crs"), dict):
        crs_name = str((doc["crs"].get("properties") or {}).get("name"))
    source_crs = _source_crs(file, crs_name, input_crs)
    records = []
    for i, feat in enumerate(features):
        if feat is None:  # reported by _features
            continue
        props = dict(feat.get("properties") or {})
        nested = sorted(k for k, v in props.items() if isinstance(v, (dict, list)))
        for key in nested:
            problems.append(
                Problem(file, i, key, _kind(props[key]), "must be a string, number or null")
            )
        geom = feat.get("geometry")
        gtype = geom.get("type") if isinstance(geom, dict) else None
        coords = geom.get("coordinates") if isinstance(geom, dict) else None
        if gtype != "Point" or not isinstance(coords, list) or len(coords) < 2:
            problems.append(
                Problem(file, i, "geometry", gtype, "must be a Point (longitude, latitude)")
            )
            props["lon"], props["lat"] = None, None
        elif not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in coords[:2]):
            problems.append(
                Problem(
                    file,
                    i,
                    "geometry.coordinates",
                    str(coords[:2])[:80],
                    "must be numbers [longitude, latitude] (RFC 7946)",
                )
            )
        else:
            props["lon"], props["lat"] = coords[0], coords[1]
        records.append(props)
    if problems:
        raise InputValidationError(sorted(problems, key=lambda p: p.row or 0))
    df = pd.DataFrame.from_records(records)
    _check_columns(df, file, required)
    if source_crs is not None:
        df = _transform(df, source_crs, file)
    return df, list(range(len(df)))


def _kind(value: Any) -> str:
    """Name the JSON type of a value, for messages."""
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "number" if isinstance(value, (int, float)) else "null"
    )


def _transform(df: pd.DataFrame, input_crs: str, file: str) -> pd.DataFrame:
    from pyproj import Transformer

    tr = Transformer.from_crs(input_crs, "EPSG:4326", always_xy=True)
    x = pd.to_numeric(df["lon"], errors="coerce").to_numpy(dtype=float)
    y = pd.to_numeric(df["lat"], errors="coerce").to_numpy(dtype=float)
    lon, lat = tr.transform(x, y)
    logger.warning("%s: transformed coordinates from %s to EPSG:4326", file, input_crs)
    out = df.copy()
    out["lon"], out["lat"] = lon, lat
    return out


def _gpkg_points(
    path: Path, required: tuple[str, ...], input_crs: str | None, label: str
) -> tuple[pd.DataFrame, list[int]]:
    gdf = _read_vector(path, label)
    gdf = _to_wgs84(gdf, label, input_crs)
    types = gdf.geometry.geom_type.to_numpy()
    bad = np.flatnonzero(types != "Point")
    if bad.size:
        raise InputValidationError(
            Problem(label, int(i), "geometry", types[i], "must be a Point (longitude, latitude)")
            for i in bad
        )
    df = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    df["lon"], df["lat"] = gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()
    _check_columns(df, label, required)
    return df, list(range(len(df)))


def _to_wgs84(gdf: gpd.GeoDataFrame, file: str, input_crs: str | None) -> gpd.GeoDataFrame:
    """Return ``gdf`` in EPSG:4326, transformed only when the caller declared it."""
    source = _source_crs(file, gdf.crs, input_crs)
    if source is None:
        return gdf.set_crs("EPSG:4326", allow_override=True)
    logger.warning("%s: transformed coordinates from %s to EPSG:4326", file, source)
    return gdf.set_crs(source, allow_override=True).to_crs("EPSG:4326")


def _read_vector(path: Path | io.BytesIO, label: str | None = None) -> gpd.GeoDataFrame:
    import pyogrio

    try:
        return gpd.read_file(path, engine="pyogrio")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as exc:
        text = str(exc).replace(str(path), label or str(path))  # never a server's temp path
        raise _fail(label or str(path), f"cannot read as a vector data set: {text}") from None


def _raw_table(
    source: Source, required: tuple[str, ...], input_crs: str | None, name: str | None
) -> tuple[pd.DataFrame, Sequence[int] | npt.NDArray[np.int64], str, str]:
    """Return (raw table, row numbers, sha256, display name) for any supported source."""
    if isinstance(source, pd.DataFrame):
        label = name or "<dataframe>"
        df = pd.DataFrame(source).copy()
        if isinstance(source, gpd.GeoDataFrame) and source.geometry.name in df:
            geom = source.geometry
            if source.crs is not None and not source.crs.equals("EPSG:4326"):
                raise _fail(
                    label,
                    f"GeoDataFrame CRS is {source.crs.to_string()}, not EPSG:4326; "
                    "call .to_crs('EPSG:4326') first",
                    field="crs",
                )
            if not (geom.geom_type == "Point").all():
                raise _fail(label, "every geometry must be a Point", field="geometry")
            df = df.drop(columns=source.geometry.name)
            df["lon"], df["lat"] = geom.x.to_numpy(), geom.y.to_numpy()
        _check_columns(df, label, required)
        if df.empty:
            raise _fail(label, "the table has no rows")
        df = df.reset_index(drop=True)
        _check_cells(df, list(range(len(df))), label)
        return df, list(range(len(df))), hash_table(df), label
    if isinstance(source, Upload):
        path, label, suffix = Path(source.name), name or source.name, source.suffix.lower()
        data = _upload_bytes(source, label)
    else:
        path = Path(source)
        label = name or str(path)
        reason = check_file(path, file_limit())
        if reason is not None:
            raise _fail(label, reason)
        suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES + GEOJSON_SUFFIXES + GPKG_SUFFIXES or (
        isinstance(source, Upload) and suffix in GPKG_SUFFIXES
    ):
        raise _fail(label, f"unsupported file type {suffix!r}; use .csv, .geojson/.json or .gpkg")
    if not isinstance(source, Upload):
        data = _read_bytes(path, label)
    digest = hashlib.sha256(data).hexdigest()
    rows: Sequence[int] | npt.NDArray[np.int64]
    if suffix in GPKG_SUFFIXES:
        df, rows = _gpkg_points(path, required, input_crs, label)
        _check_cells(df, rows, label)
        return df, rows, digest, label
    text = _decode(data, label)
    del data  # the text holds the content now: at 10M needs each is about 1 GB
    if suffix in CSV_SUFFIXES:
        df, rows = _read_csv_text(text, label, required)
        _check_cells(df, rows, label, text)
        source_crs = _source_crs(label, None, input_crs)
        if source_crs is not None:
            df = _transform(df, source_crs, label)
    else:
        df, rows = _geojson_points(text, label, required, input_crs)
        _check_cells(df, rows, label)
    return df, rows, digest, label


def hash_table(df: pd.DataFrame) -> str:
    """SHA-256 of the canonical CSV form of a table (sorted columns, index dropped)."""
    canon = df.reindex(sorted(df.columns, key=str), axis=1).to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(canon.encode("utf-8")).hexdigest()


def _load(
    source: Source,
    columns: Mapping[str, tuple[str, ...]],
    validator: Any,
    *,
    taxonomy: Taxonomy | None,
    on_invalid: Literal["raise", "skip"],
    input_crs: str | None,
    name: str | None,
    points: bool = True,
    check: RowCheck | None = None,
) -> LoadedTable:
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"`on_invalid` must be 'raise' or 'skip', not {on_invalid!r}")
    files = input_files(source)
    if files is not None:
        return _load_files(
            files,
            name or str(source),
            columns["required"][0],
            lambda f: _load(
                f,
                columns,
                validator,
                taxonomy=taxonomy,
                on_invalid=on_invalid,
                input_crs=input_crs,
                name=None,
                points=points,
                check=check,
            ),
            on_invalid,
        )
    df, rows, digest, label = _raw_table(source, columns["required"], input_crs, name)
    checked: Validated = validator(df, rows, label, taxonomy or default_taxonomy())
    if check is not None:
        checked = _checked_further(checked, check, np.asarray(rows), label)
    if checked.problems and on_invalid == "raise":
        raise InputValidationError(checked.problems)
    rejects = reject_rows(
        df.loc[checked.bad_rows], np.asarray(rows)[checked.bad_rows], checked.problems
    )
    if len(rejects):
        logger.warning("%s: skipped %d invalid row(s)", label, len(rejects))
    table = checked.table
    frame = with_points(table) if points else table
    kept = np.asarray(rows)[~np.asarray(checked.bad_rows, dtype=bool)]
    return LoadedTable(
        frame,
        rejects.reset_index(drop=True),
        digest,
        label,
        kept if kept.size == len(frame) else None,
    )


def reject_rows(
    frame: pd.DataFrame, rows: np.ndarray, problems: Sequence[Problem]
) -> pd.DataFrame:
    """Return rejected rows as a table's ``rejects`` holds them.

    ``row`` first, then the rows' columns, then ``problems``: each row's problems as
    ``field: reason``, joined by `` | ``.
    """
    out = pd.DataFrame(frame).copy()
    out.insert(0, "row", np.asarray(rows))
    by_row: dict[int, list[str]] = {}
    for p in problems:
        by_row.setdefault(int(p.row or 0), []).append(f"{p.field}: {p.reason}")
    out["problems"] = [" | ".join(by_row.get(int(r), [])) for r in out["row"]]
    return out


#: A further check of valid rows: ``check(table, rows, label)`` returns a mask of the rows
#: of ``table`` (the valid rows, in input order) that are invalid, and their problems.
RowCheck = Callable[[pd.DataFrame, np.ndarray, str], tuple[np.ndarray, list[Problem]]]


def _checked_further(
    checked: Validated, check: RowCheck, rows: np.ndarray, label: str
) -> Validated:
    """Apply ``check`` to the valid rows: the rows it flags become invalid rows too."""
    good = np.flatnonzero(~np.asarray(checked.bad_rows, dtype=bool))
    bad, more = check(checked.table, rows[good], label)
    bad = np.asarray(bad, dtype=bool)
    if not bad.any():
        return checked
    bad_rows = np.asarray(checked.bad_rows, dtype=bool).copy()
    bad_rows[good[bad]] = True
    problems = sorted([*checked.problems, *more], key=lambda p: p.row or 0)
    return Validated(checked.table.loc[~bad].reset_index(drop=True), tuple(problems), bad_rows)


#: Characters that make an input path a glob pattern.
GLOB_CHARS = "*?["


def input_files(source: Source) -> list[Path] | None:
    """Return the files of a partitioned input, or None for a single file or a table.

    A directory stands for its ``.csv``, ``.geojson``/``.json`` and ``.gpkg`` files; a
    path with ``*``, ``?`` or ``[`` that names no file is a glob pattern (not
    recursive). Files are taken in name order.

    Raises
    ------
    InputValidationError
        When nothing matches, or there are more than :data:`MAX_INPUT_FILES` files or
        more than :data:`MAX_INPUT_FILES_BYTES_FACTOR` times the file-size bound in all.
    """
    if not isinstance(source, str | Path):
        return None
    text = str(source)
    path = Path(text)
    suffixes = CSV_SUFFIXES + GEOJSON_SUFFIXES + GPKG_SUFFIXES
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in suffixes)
    elif any(c in text for c in GLOB_CHARS) and not path.exists():
        import glob

        files = sorted(Path(p) for p in glob.glob(text))
    else:
        return None
    files = [f for f in files if f.is_file()]
    if not files:
        raise _fail(text, "no .csv, .geojson/.json or .gpkg file in this directory or pattern")
    if len(files) > MAX_INPUT_FILES:
        raise _fail(text, f"{len(files)} files; at most {MAX_INPUT_FILES} make one input")
    total = sum(f.stat().st_size for f in files)
    if total > file_limit() * MAX_INPUT_FILES_BYTES_FACTOR:
        raise _fail(
            text,
            f"{total} bytes in {len(files)} files; at most "
            f"{file_limit() * MAX_INPUT_FILES_BYTES_FACTOR} (raise MATCHER_MAX_FILE_BYTES)",
        )
    return files


def _load_files(
    files: list[Path],
    label: str,
    key: str,
    reader: Callable[[Path], LoadedTable],
    on_invalid: Literal["raise", "skip"],
) -> LoadedTable:
    """Read every file of a partitioned input; report the problems of all of them at once.

    An id used in two files is a problem of the later one (with ``on_invalid="skip"``
    that row is rejected). The hash is that of the files' names and hashes.
    """
    loaded: list[LoadedTable] = []
    problems: list[Problem] = []
    for f in files:
        try:
            loaded.append(reader(f))
        except InputValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputValidationError(problems)
    frame = pd.concat([t.frame for t in loaded], ignore_index=True)
    where = np.repeat(np.arange(len(loaded)), [len(t.frame) for t in loaded])
    rows = np.concatenate(
        [t.rows if t.rows is not None else np.full(len(t.frame), -1) for t in loaded]
    )
    ids = frame[key].astype(str)
    dup = ids.duplicated(keep="first").to_numpy()
    rejects = [t.rejects.assign(file=t.name) for t in loaded if len(t.rejects)]
    if dup.any():
        first = pd.Series(np.arange(len(ids)), index=ids).groupby(level=0).first()
        found = []
        for i in np.flatnonzero(dup)[:1000].tolist():
            j = int(first[ids.iloc[i]])
            found.append(
                Problem(
                    loaded[where[i]].name,
                    int(rows[i]) if rows[i] >= 0 else None,
                    key,
                    ids.iloc[i],
                    f"duplicate {key}; first used in {loaded[where[j]].name}"
                    + (f" row {int(rows[j])}" if rows[j] >= 0 else ""),
                )
            )
        if on_invalid == "raise":
            raise InputValidationError(found)
        logger.warning("%s: skipped %d row(s) whose %s another file uses", label, dup.sum(), key)
        rejects.append(
            without_geometry(frame.loc[dup]).assign(
                row=rows[dup],
                problems=f"{key}: duplicate of an earlier file",
                file=[loaded[w].name for w in where[dup]],
            )
        )
        frame, rows = frame.loc[~dup].reset_index(drop=True), rows[~dup]
    digest = hashlib.sha256(
        "".join(f"{f.name}\t{t.sha256}\n" for f, t in zip(files, loaded, strict=True)).encode()
    ).hexdigest()
    return LoadedTable(
        # the files were read with or without points: the whole input is the same
        gpd.GeoDataFrame(frame, geometry=frame.geometry.name, crs="EPSG:4326")
        if isinstance(loaded[0].frame, gpd.GeoDataFrame)
        else frame,
        pd.concat(rejects, ignore_index=True) if rejects else loaded[0].rejects,
        digest,
        label,
        None,
    )


def with_points(table: pd.DataFrame) -> gpd.GeoDataFrame:
    """Return the table with a point geometry (EPSG:4326) from ``lon`` and ``lat``, last."""
    return gpd.GeoDataFrame(
        table, geometry=gpd.points_from_xy(table["lon"], table["lat"]), crs="EPSG:4326"
    )


def without_geometry(frame: pd.DataFrame) -> pd.DataFrame:
    """Return the frame without its geometry column, as a plain DataFrame."""
    if isinstance(frame, gpd.GeoDataFrame):
        return pd.DataFrame(frame.drop(columns=frame.geometry.name))
    return frame


def read_needs(
    source: Source,
    *,
    taxonomy: Taxonomy | None = None,
    on_invalid: Literal["raise", "skip"] = "raise",
    input_crs: str | None = None,
    name: str | None = None,
    points: bool = True,
    check: RowCheck | None = None,
) -> LoadedTable:
    """Read and validate needs from a CSV, GeoJSON or GeoPackage file or a DataFrame.

    Parameters
    ----------
    source : str, Path or DataFrame
        The needs (columns in DESIGN.md: ``need_id, category, lat, lon, demand`` and
        optional ``severity, neighborhood, languages, reported_at, source``). A
        GeoJSON or GeoPackage gives ``lat``/``lon`` through Point geometries.
    taxonomy : Taxonomy, optional
        Categories and aliases; the default taxonomy when omitted.
    on_invalid : {"raise", "skip"}
        ``"raise"`` rejects the whole input when any row is invalid; ``"skip"`` loads
        the valid rows and returns the others in ``rejects``.
    input_crs : str, optional
        Declares the transform of a file whose CRS is not WGS84 (e.g. ``"EPSG:3435"``);
        without it such a file is rejected.
    name : str, optional
        The name to report in problems (defaults to the path).
    points : bool
        Whether ``frame`` gets point geometries (a GeoDataFrame). With False it is a
        plain DataFrame with ``lat`` and ``lon``: what :func:`matcher.plan` reads, since
        a point object costs about 200 bytes per need.
    check : callable, optional
        A further check of the valid rows (e.g. "on the street network"): given the valid
        rows, their row numbers and the input's name, it returns a mask of invalid rows
        and their problems, which are then handled as any other invalid row.

    Returns
    -------
    LoadedTable

    Raises
    ------
    InputValidationError
        With every problem found (file, row, field, value, reason).
    """
    return _load(
        source,
        NEED_COLUMNS,
        validate_needs,
        taxonomy=taxonomy,
        on_invalid=on_invalid,
        input_crs=input_crs,
        name=name,
        points=points,
        check=check,
    )


def read_partners(
    source: Source,
    *,
    taxonomy: Taxonomy | None = None,
    on_invalid: Literal["raise", "skip"] = "raise",
    input_crs: str | None = None,
    name: str | None = None,
    check: RowCheck | None = None,
) -> LoadedTable:
    """Read and validate partners (organizations and volunteers).

    Parameters are those of :func:`read_needs`; the columns are ``partner_id, kind,
    lat, lon, categories, capacity, radius_km`` and optional ``name, languages,
    contact, radius_min``.

    Returns
    -------
    LoadedTable

    Raises
    ------
    InputValidationError
        With every problem found (file, row, field, value, reason).
    """
    return _load(
        source,
        PARTNER_COLUMNS,
        validate_partners,
        taxonomy=taxonomy,
        on_invalid=on_invalid,
        input_crs=input_crs,
        name=name,
        check=check,
    )


def _features(doc: Any, file: str) -> tuple[list[dict[str, Any] | None], list[Problem]]:
    """Check a GeoJSON FeatureCollection's structure.

    Returns its features, with None where a feature is not a Feature object or its
    properties are neither an object nor null, and a problem for each of those.
    """
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise _fail(
            file,
            "expected a GeoJSON FeatureCollection",
            field="type",
            value=doc.get("type") if isinstance(doc, dict) else type(doc).__name__,
        )
    raw = doc.get("features")
    if not isinstance(raw, list) or not raw:
        raise _fail(file, "the FeatureCollection has no features", field="features")
    features: list[dict[str, Any] | None] = []
    problems = []
    for i, feat in enumerate(raw):
        props = feat.get("properties") if isinstance(feat, dict) else None
        if not isinstance(feat, dict) or feat.get("type") != "Feature":
            problems.append(
                Problem(file, i, "feature", _kind(feat), "must be a GeoJSON Feature object")
            )
        elif props is not None and not isinstance(props, dict):
            problems.append(
                Problem(file, i, "properties", _kind(props), "must be an object or null")
            )
        else:
            features.append(feat)
            continue
        features.append(None)
    return features, problems


def _check_polygon_collection(doc: Any, file: str) -> None:
    """Check the GeoJSON structure of a neighborhoods file before GDAL reads it."""
    features, problems = _features(doc, file)
    for i, feat in enumerate(features):
        if feat is not None and not isinstance(feat.get("geometry"), dict):
            problems.append(
                Problem(file, i, "geometry", _kind(feat.get("geometry")), "must be a polygon")
            )
    if problems:
        raise InputValidationError(sorted(problems, key=lambda p: p.row or 0))


def _control_problem(value: str) -> str | None:
    """Return why a one-line text holds a control character, or None."""
    if re.search(r"[\x00-\x1f\x7f]", value):
        return "contains a control character (newline, tab, ...); write it on one line"
    return None


def read_neighborhoods(
    source: str | Path | gpd.GeoDataFrame | Upload,
    *,
    id_column: str | None = None,
    name_column: str | None = None,
    input_crs: str | None = None,
    name: str | None = None,
) -> tuple[gpd.GeoDataFrame, str]:
    """Read neighborhood polygons; repair invalid ones with a warning, never drop them.

    Parameters
    ----------
    source : str, Path or GeoDataFrame
        Polygons with ``neighborhood_id`` (or ``id``), optional ``name`` and ``population``.
    id_column, name_column : str, optional
        The columns holding the id and the name, when they are not called
        ``neighborhood_id`` (or ``id``) and ``name``; e.g. ``"AREAID"``, ``"community"``.
    input_crs : str, optional
        Declares the transform of a file whose CRS is not WGS84.
    name : str, optional
        What to call the input in problems (default: its path).

    Returns
    -------
    (GeoDataFrame, str)
        Neighborhoods in EPSG:4326 sorted by ``neighborhood_id``, and the input's SHA-256.

    Raises
    ------
    InputValidationError
        When the file cannot be read, has no id column, duplicate ids, or non-polygons.
    """
    if isinstance(source, gpd.GeoDataFrame):
        gdf, label, digest = (
            source.copy(),
            "<neighborhoods>",
            hash_table(pd.DataFrame(source.to_wkt())),
        )
    else:
        upload = source if isinstance(source, Upload) else None
        path = Path(upload.name) if upload is not None else Path(source)  # type: ignore[arg-type]
        label = name or str(path)
        suffix = upload.suffix.lower() if upload else path.suffix.lower()
        if suffix not in GEOJSON_SUFFIXES + (() if upload else GPKG_SUFFIXES):
            raise _fail(
                label,
                f"unsupported file type {suffix!r} for neighborhoods; they are polygons: "
                "use .geojson/.json or .gpkg",
            )
        data = _upload_bytes(upload, label) if upload else _read_bytes(path, label)
        digest = hashlib.sha256(data).hexdigest()
        if suffix in GEOJSON_SUFFIXES:
            _check_polygon_collection(_load_json(_decode(data, label), label), label)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            gdf = _read_vector(io.BytesIO(data) if upload else path, label)
        if not isinstance(gdf, gpd.GeoDataFrame) or gdf.geometry.name not in gdf:
            raise _fail(label, "has no geometry; neighborhoods are polygons")
    gdf = _to_wgs84(gdf, label, input_crs)
    id_col = id_column or (
        "id" if "neighborhood_id" not in gdf and "id" in gdf else "neighborhood_id"
    )
    for col in (id_col, name_column):
        if col is not None and col not in gdf.columns:
            raise _fail(
                label,
                f"column missing; the file has columns {list(gdf.columns)} "
                "(choose the id and name columns with id_column= and name_column=)",
                field=col,
            )
    gdf = gdf.rename(columns={id_col: "neighborhood_id"})
    if name_column is not None:
        gdf = gdf.rename(columns={name_column: "name"})
    gdf["neighborhood_id"] = gdf["neighborhood_id"].astype(str).str.strip()
    problems = []
    dup = gdf["neighborhood_id"].duplicated()
    for i in np.flatnonzero(dup.to_numpy()):
        problems.append(
            Problem(
                label, int(i), "neighborhood_id", gdf["neighborhood_id"].iloc[i], "duplicate id"
            )
        )
    for pos, value in enumerate(gdf["neighborhood_id"].tolist()):
        reason = "must be a non-empty id" if not value else id_problem(value)
        if reason is not None:
            problems.append(Problem(label, pos, "neighborhood_id", value[:40], reason))
    if "name" in gdf.columns:
        for pos, value in enumerate(gdf["name"].tolist()):
            reason = text_problem(value) if isinstance(value, str) else None
            if reason is not None:
                problems.append(Problem(label, pos, "name", value[:40], reason))
    if "escalation_contact" in gdf.columns:  # whom outreach escalates to (matcher.outreach)
        for pos, value in enumerate(gdf["escalation_contact"].tolist()):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            reason = (
                "must be text (whom an outreach worker escalates to here)"
                if not isinstance(value, str)
                else text_problem(value) or _control_problem(value)
            )
            if reason is not None:
                problems.append(
                    Problem(label, pos, "escalation_contact", str(value)[:40], reason)
                )
    types = gdf.geometry.geom_type.to_numpy()
    for i in np.flatnonzero(~np.isin(types, ["Polygon", "MultiPolygon"])):
        problems.append(
            Problem(label, int(i), "geometry", types[i], "must be a Polygon or MultiPolygon")
        )
    if problems:
        raise InputValidationError(problems)
    if "name" not in gdf.columns:
        gdf["name"] = gdf["neighborhood_id"]
    invalid = ~gdf.geometry.is_valid.to_numpy()
    for i in np.flatnonzero(invalid):
        reason = shapely.is_valid_reason(gdf.geometry.iloc[i])
        logger.warning(
            "%s: neighborhood %r (%s) has an invalid polygon (%s); repaired with make_valid",
            label,
            gdf["neighborhood_id"].iloc[i],
            gdf["name"].iloc[i],
            reason,
        )
        fixed = shapely.make_valid(gdf.geometry.iloc[i])
        polys = [
            g
            for g in getattr(fixed, "geoms", [fixed])
            if g.geom_type in ("Polygon", "MultiPolygon")
        ]
        gdf.loc[gdf.index[i], gdf.geometry.name] = shapely.union_all(polys)
    gdf["__row"] = np.arange(len(gdf))
    out = gdf.sort_values("neighborhood_id", kind="stable").reset_index(drop=True)
    # the input position of each row, for messages about attribute values found later
    out.attrs["source_rows"] = out.pop("__row").tolist()
    return out, digest
