"""Read a street network file: the GeoPackage form, an OSMnx GraphML, or an OSM PBF.

=================  =====================================================================
``.gpkg``          Layers ``nodes`` (``osmid`` or ``id``; points) and ``edges`` (``u``,
                   ``v``; optional ``length_m`` or ``length`` in metres, ``highway``,
                   ``oneway``, ``maxspeed``), one row per street segment, one-way tags
                   deciding directions: the form of ``data/southside/``. Any CRS the
                   file declares is transformed to WGS84; a file without one is refused.
``.graphml``       A graph saved by OSMnx (``osmnx.save_graphml``): nodes with ``x``,
                   ``y``, edges with ``length``, ``highway``, ``maxspeed``; a directed
                   graph is driven as it is. The graph's ``crs`` is honoured.
``.pbf``           OpenStreetMap PBF (``.osm.pbf``), read with pyrosm (the ``streets``
                   extra): its ``walking`` or ``driving`` network.
=================  =====================================================================
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputValidationError, Problem
from ..limits import check_file, file_limit
from .model import MODES, StreetNetwork, build_network

__all__ = ["FORMATS", "read_network"]

logger = logging.getLogger(__name__)

#: File name endings read, and their format.
FORMATS: dict[str, str] = {".gpkg": "GeoPackage", ".graphml": "GraphML", ".pbf": "OSM PBF"}


def _fail(source: str, reason: str, field: str | None = None, value: Any = None) -> Exception:
    return InputValidationError([Problem(source, None, field, value, reason)])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_network(
    path: str | Path,
    mode: str,
    *,
    speeds: Mapping[str, float] | None = None,
) -> StreetNetwork:
    """Read a street network file for one travel mode.

    Parameters
    ----------
    path : str or Path
        A ``.gpkg``, ``.graphml`` or ``.osm.pbf`` file (see the module's table).
    mode : {"walk", "drive"}
        The travel mode: decides directions and speeds (and, for PBF, which ways).
    speeds : mapping, optional
        Road-class speeds in km/h replacing the defaults
        (:data:`matcher.network.DRIVE_SPEEDS_KMH`).

    Returns
    -------
    StreetNetwork
        Its largest strongly connected part.

    Raises
    ------
    InputValidationError
        Naming the file and what is wrong: missing or too large, an unknown format,
        not a street network (no nodes/edges layers, no edges), coordinates that are not
        WGS84 degrees (a wrong or missing CRS), or a network in pieces.
    """
    source = str(path)
    if mode not in MODES:
        raise _fail(source, f"must be one of {', '.join(MODES)}", "travel", mode)
    reason = check_file(path, file_limit())
    if reason is not None:
        raise _fail(source, reason)
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise _fail(
            source,
            "is not a street network format matcher reads: give a GeoPackage (.gpkg), "
            "an OSMnx GraphML (.graphml) or an OpenStreetMap PBF (.osm.pbf)",
            "network",
            Path(path).name,
        )
    reader = {".gpkg": _read_gpkg, ".graphml": _read_graphml, ".pbf": _read_pbf}[suffix]
    nodes, edges, directed = reader(Path(path), source, mode)
    net = build_network(
        nodes, edges, mode, directed=directed, speeds=speeds, source=source,
        sha256=_sha256(Path(path)),
    )  # fmt: skip
    logger.info(
        "network %s (%s): %d nodes, %d directed edges", source, mode, net.n_nodes, net.n_edges
    )
    return net


def _to_wgs84(crs: Any, source: str, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
    """Transform coordinates in a declared CRS to WGS84 (lon, lat), or refuse the CRS.

    Points already in EPSG:4326 are returned as they are. Only geographic and projected
    CRSs are read: a vertical, geocentric or engineering one does not place points on
    the map.
    """
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError, ProjError

    try:
        declared = CRS.from_user_input(crs)
        if declared.to_epsg() == 4326:
            return x, y
        if not (declared.is_geographic or declared.is_projected):
            raise CRSError("not geographic or projected")
        return Transformer.from_crs(declared, "EPSG:4326", always_xy=True).transform(x, y)
    except (CRSError, ProjError, TypeError, ValueError):
        raise _fail(
            source,
            "declares a coordinate reference system that cannot be transformed to WGS84 "
            "longitude/latitude (give a geographic or projected CRS, e.g. EPSG:4326)",
            "crs",
            str(crs)[:200],
        ) from None


def _lonlat(frame: Any, source: str, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the longitude and latitude of a point layer, transformed to WGS84."""
    if getattr(frame, "crs", None) is None:
        raise _fail(
            source,
            f"layer '{layer}' declares no coordinate reference system, or holds no points; "
            "write its points with a CRS (EPSG:4326 or any projected CRS)",
            "crs",
        )
    geom = frame.geometry
    if not (geom.geom_type == "Point").all():
        raise _fail(source, f"layer '{layer}' must hold points", "geometry")
    x, y = geom.x.to_numpy(dtype=np.float64), geom.y.to_numpy(dtype=np.float64)
    x, y = _to_wgs84(frame.crs, source, x, y)
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def _read_gpkg(path: Path, source: str, mode: str) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    import geopandas as gpd
    import pyogrio

    try:
        layers = {str(name) for name, _ in pyogrio.list_layers(path)}
    except Exception as exc:  # pyogrio raises its own DataSourceError subclasses
        raise _fail(source, f"is not a readable GeoPackage: {exc}") from None
    if not {"nodes", "edges"} <= layers:
        raise _fail(
            source,
            "is not a street network: a network GeoPackage has the layers 'nodes' and "
            "'edges' (its layers are the value shown)",
            "layers",
            ", ".join(sorted(layers))[:200] or "none",
        )
    try:
        nodes = gpd.read_file(path, layer="nodes")
        edges = pyogrio.read_dataframe(path, layer="edges", read_geometry=False)
    except Exception as exc:
        raise _fail(source, f"cannot be read: {exc}") from None
    idcol = "osmid" if "osmid" in nodes else "id" if "id" in nodes else None
    if idcol is None:
        raise _fail(source, "layer 'nodes' needs an 'osmid' (or 'id') column", "nodes")
    missing = [c for c in ("u", "v") if c not in edges]
    if missing:
        raise _fail(source, f"layer 'edges' needs the columns u and v (missing: {missing})")
    lon, lat = _lonlat(nodes, source, "nodes") if len(nodes) else (np.zeros(0), np.zeros(0))
    out = pd.DataFrame({"id": nodes[idcol].astype(str).to_numpy(), "lat": lat, "lon": lon})
    if "length_m" not in edges and "length" in edges:
        edges = edges.rename(columns={"length": "length_m"})
    return out, edges, False


def _read_graphml(
    path: Path, source: str, mode: str
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    import networkx as nx

    try:
        graph = nx.read_graphml(path)
    except Exception as exc:  # ParseError, NetworkXError, ...: all mean "not GraphML"
        raise _fail(source, f"is not a readable GraphML file: {exc}") from None
    ids, xs, ys = [], [], []
    for node, data in graph.nodes(data=True):
        ids.append(str(node))
        xs.append(data.get("x", data.get("lon")))
        ys.append(data.get("y", data.get("lat")))
    if any(x is None for x in xs) or any(y is None for y in ys):
        raise _fail(source, "its nodes need x and y (longitude and latitude) attributes", "node")
    x = pd.to_numeric(pd.Series(xs, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    y = pd.to_numeric(pd.Series(ys, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    crs = graph.graph.get("crs")
    if crs:
        x, y = _to_wgs84(crs, source, x, y)
    rows = []
    for u, v, data in graph.edges(data=True):
        rows.append(
            (str(u), str(v), data.get("length"), data.get("highway"), data.get("maxspeed"))
        )
    edges = pd.DataFrame(rows, columns=["u", "v", "length_m", "highway", "maxspeed"])
    nodes = pd.DataFrame({"id": ids, "lat": np.asarray(y), "lon": np.asarray(x)})
    if not graph.is_directed():
        logger.info("%s: an undirected graph; every edge is travelled both ways", source)
    return nodes, edges, graph.is_directed()


def _read_pbf(path: Path, source: str, mode: str) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    try:
        from pyrosm import OSM
    except ImportError:  # pragma: no cover - the streets extra is part of the test extra
        raise _fail(
            source, "reading OSM PBF needs pyrosm: pip install 'matcher[streets]'"
        ) from None
    try:
        found = OSM(str(path)).get_network(
            network_type="walking" if mode == "walk" else "driving", nodes=True
        )
    except Exception as exc:  # pyrosm raises plain exceptions on a broken file
        raise _fail(source, f"is not a readable OpenStreetMap PBF file: {exc}") from None
    if found is None or found[0] is None or found[1] is None:
        raise _fail(source, f"holds no street that can be travelled by {mode}")
    nodes, edges = found
    out = pd.DataFrame(
        {
            "id": nodes["id"].astype(str).to_numpy(),
            "lat": nodes["lat"].to_numpy(dtype=np.float64),
            "lon": nodes["lon"].to_numpy(dtype=np.float64),
        }
    )
    cols = {c: edges[c] for c in ("highway", "oneway", "maxspeed") if c in edges}
    table = pd.DataFrame(
        {"u": edges["u"].astype(str), "v": edges["v"].astype(str),
         "length_m": edges["length"], **cols}
    )  # fmt: skip
    return out, table, False
