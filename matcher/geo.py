"""Spherical geometry: great-circle distances, unit vectors, centroids and hulls."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

__all__ = [
    "EARTH_RADIUS_KM",
    "RADIUS_RTOL",
    "within",
    "haversine_km",
    "to_unit_vectors",
    "from_unit_vectors",
    "chord_for_km",
    "weighted_centroid",
    "hull_polygons",
    "threaded",
]

#: Mean Earth radius (IUGG), the R of every distance in matcher.
EARTH_RADIUS_KM = 6371.0088

#: Relative tolerance of "within the radius". numpy evaluates sin/cos with different
#: (SIMD or scalar) code for arrays of different sizes, so one haversine distance can
#: come out one ulp apart from one call to another; a pair exactly at the radius must
#: not depend on that. 1e-12 is below a micrometre at 1,000 km.
RADIUS_RTOL = 1e-12


def within(distance_km: npt.ArrayLike, radius_km: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Whether ``distance_km <= radius_km``, up to floating-point rounding (``RADIUS_RTOL``).

    Examples
    --------
    >>> bool(within(5.0, 5.0)), bool(within(5.0 + 1e-13, 5.0)), bool(within(5.001, 5.0))
    (True, True, False)
    """
    return np.asarray(distance_km) <= np.asarray(radius_km) * (1.0 + RADIUS_RTOL)


FloatArray = npt.NDArray[np.float64]

#: Arrays shorter than this are not split over threads by :func:`threaded`.
THREADED_MIN = 4_000

#: At most this many threads per :func:`threaded` call.
THREADED_MAX = 4


def threaded(fn: Callable[..., Any], *arrays: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``fn(*arrays)`` computed on consecutive parts of the arrays at once, concatenated.

    shapely's vectorised functions let go of the GIL, so the parts run on several cores.
    ``fn`` must be elementwise (row ``i`` of its result depends on row ``i`` of the
    arrays only): the result is then the same as one call. Arrays shorter than
    :data:`THREADED_MIN`, or a single core, get one call.

    Examples
    --------
    >>> threaded(lambda a, b: a + b, np.arange(3), np.arange(3)).tolist()
    [0, 2, 4]
    """
    n = len(arrays[0])
    workers = min(os.cpu_count() or 1, THREADED_MAX)
    if n < THREADED_MIN or workers < 2:
        return np.asarray(fn(*arrays))
    cuts = np.linspace(0, n, workers + 1).astype(np.int64)

    def part(i: int) -> npt.NDArray[Any]:
        return np.asarray(fn(*(a[cuts[i] : cuts[i + 1]] for a in arrays)))

    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(part, range(workers))))


def haversine_km(
    lat1: npt.ArrayLike, lon1: npt.ArrayLike, lat2: npt.ArrayLike, lon2: npt.ArrayLike
) -> FloatArray:
    """Great-circle distance in km between points given in degrees (broadcasting).

    Parameters
    ----------
    lat1, lon1, lat2, lon2 : array_like
        Latitudes and longitudes in degrees, WGS84.

    Returns
    -------
    ndarray of float
        Distances in km with R = 6371.0088 km.

    Examples
    --------
    >>> round(float(haversine_km(0, 179.5, 0, -179.5)), 3)  # across the antimeridian
    111.195
    >>> round(float(haversine_km(89.9, 0, 89.9, 180)), 3)  # across the pole
    22.239
    """
    p1 = np.radians(np.asarray(lat1, dtype=np.float64))
    p2 = np.radians(np.asarray(lat2, dtype=np.float64))
    dphi = p2 - p1
    dlmb = np.radians(np.asarray(lon2, dtype=np.float64) - np.asarray(lon1, dtype=np.float64))
    h = np.sin(dphi / 2.0) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2.0) ** 2
    return np.asarray(2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def to_unit_vectors(lat: npt.ArrayLike, lon: npt.ArrayLike) -> FloatArray:
    """Return an (n, 3) array of unit vectors on the sphere for degrees ``lat``, ``lon``."""
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    lmb = np.radians(np.asarray(lon, dtype=np.float64))
    cphi = np.cos(phi)
    return np.column_stack([cphi * np.cos(lmb), cphi * np.sin(lmb), np.sin(phi)])


def from_unit_vectors(xyz: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Return (lat, lon) in degrees of the directions of (n, 3) vectors (any length > 0)."""
    v = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
    lat = np.degrees(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    lon = np.degrees(np.arctan2(v[:, 1], v[:, 0]))
    return lat, lon


def chord_for_km(km: npt.ArrayLike) -> FloatArray:
    """Chord length on the unit sphere for a great-circle distance in km.

    The chord grows monotonically with the great-circle distance (up to half the
    circumference), so a Euclidean ball of this radius around a unit vector holds
    exactly the points within ``km`` on the sphere.
    """
    theta = np.minimum(np.asarray(km, dtype=np.float64) / EARTH_RADIUS_KM, np.pi)
    return np.asarray(2.0 * np.sin(theta / 2.0))


def weighted_centroid(
    lat: npt.ArrayLike, lon: npt.ArrayLike, weights: npt.ArrayLike
) -> tuple[float, float]:
    """Weighted spherical centroid: the normalised weighted mean of unit vectors.

    Examples
    --------
    >>> lat, lon = weighted_centroid([0, 0], [179.0, -179.0], [1, 1])
    >>> round(lat, 6), round(abs(lon), 6)
    (0.0, 180.0)
    """
    v = to_unit_vectors(lat, lon)
    w = np.asarray(weights, dtype=np.float64)
    m = (v * w[:, None]).sum(axis=0)
    if not np.any(m):  # antipodal members: fall back to the first point
        m = v[0]
    clat, clon = from_unit_vectors(m)
    return float(clat[0]), float(clon[0])


def _tangent_bases(c: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Orthonormal bases (east-like, north-like) of the tangent planes at unit vectors ``c``."""
    z = np.where(np.abs(c[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e = np.cross(z, c)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    return e, np.cross(c, e)


def hull_polygons(
    lat: npt.ArrayLike,
    lon: npt.ArrayLike,
    group: npt.ArrayLike,
    center_lat: npt.ArrayLike,
    center_lon: npt.ArrayLike,
    *,
    buffer_km: float = 0.05,
) -> npt.NDArray[np.object_]:
    """Spherical convex hulls of groups of points, buffered by ``buffer_km``, in lon/lat.

    Parameters
    ----------
    lat, lon : array_like
        The points, in degrees.
    group : array_like of int
        The group (0 .. n_groups - 1) of each point; every group has a point.
    center_lat, center_lon : array_like
        One centre per group (a point inside the group, e.g. its centroid).
    buffer_km : float
        Buffer, so that a group of one or two points still has an area.

    Returns
    -------
    numpy.ndarray of shapely geometries
        One Polygon per group (a MultiPolygon when it crosses the antimeridian, split
        there as RFC 7946 asks).

    Notes
    -----
    Each hull is computed in the gnomonic projection centred on its group's centre,
    which maps great circles to straight lines, so the planar hull is the spherical
    one. All groups are processed at once with shapely's vectorised functions.

    Examples
    --------
    >>> h = hull_polygons([0.0, 0.0], [179.99, -179.99], [0, 0], [0.0], [180.0])
    >>> h[0].geom_type, round(h[0].bounds[0], 2), round(h[0].bounds[2], 2)
    ('MultiPolygon', -180.0, 180.0)
    """
    g = np.asarray(group, dtype=np.int64)
    c = to_unit_vectors(center_lat, center_lon)
    east, north = _tangent_bases(c)
    v = to_unit_vectors(lat, lon)
    d = np.einsum("ij,ij->i", v, c[g])
    x = np.einsum("ij,ij->i", v, east[g]) / d * EARTH_RADIUS_KM
    y = np.einsum("ij,ij->i", v, north[g]) / d * EARTH_RADIUS_KM
    order = np.argsort(g, kind="stable")
    points = shapely.multipoints(np.column_stack([x, y])[order], indices=g[order])
    planar = threaded(
        lambda part: shapely.buffer(shapely.convex_hull(part), buffer_km, quad_segs=4), points
    )
    ring, ring_group = shapely.get_coordinates(shapely.get_exterior_ring(planar), return_index=True)
    vec = (
        c[ring_group]
        + (ring[:, :1] * east[ring_group] + ring[:, 1:2] * north[ring_group]) / EARTH_RADIUS_KM
    )
    plat, plon = from_unit_vectors(vec)
    clon = np.asarray(center_lon, dtype=np.float64)[ring_group]
    plon = clon + (plon - clon + 180.0) % 360.0 - 180.0  # continuous around the centre
    polys = shapely.polygons(shapely.linearrings(np.column_stack([plon, plat]), indices=ring_group))
    minx, _, maxx, _ = shapely.bounds(polys).T
    # a hull around a pole: its ring winds once around the pole, no lon/lat ring of it
    # is a polygon; it becomes a cap bounded by the pole's line (RFC 7946, 3.1.9)
    caps: dict[int, float] = {}
    for pole in (90.0, -90.0):
        pv = to_unit_vectors([pole], [0.0])[0]
        dp = c @ pv
        near = np.flatnonzero(dp > 0.5)
        if near.size:
            px = (east[near] @ pv) / dp[near] * EARTH_RADIUS_KM
            py = (north[near] @ pv) / dp[near] * EARTH_RADIUS_KM
            inside = shapely.contains_xy(planar[near], px, py)
            caps.update({int(i): pole for i in near[inside]})
    for i, pole in caps.items():
        sel = ring_group == i
        polys[i] = _pole_cap(plat[sel], plon[sel], pole)
    for j in np.flatnonzero((minx < -180.0) | (maxx > 180.0)).tolist():
        if j not in caps:
            polys[j] = _split_antimeridian(polys[j])
    # a ring passing close to a pole sweeps through many longitudes and may cross itself
    for j in np.flatnonzero(~threaded(shapely.is_valid, polys)).tolist():
        polys[j] = _polygonal(shapely.make_valid(polys[j]))
    return polys


def _pole_cap(
    lat: npt.NDArray[np.float64], lon: npt.NDArray[np.float64], pole: float
) -> BaseGeometry:
    """Return the lon/lat polygon of a ring that winds once around a pole.

    Every meridian crosses such a ring once (the hull is convex around the pole in the
    gnomonic plane, where meridians are lines through the pole), so its points in
    longitude order, closed along the antimeridian and the pole's line, bound the cap.
    """
    wrapped = (np.asarray(lon) + 180.0) % 360.0 - 180.0
    order = np.argsort(wrapped, kind="stable")
    x, y = wrapped[order], np.asarray(lat)[order]
    span = x[0] + 360.0 - x[-1]
    t = (180.0 - x[-1]) / span if span > 0 else 0.5
    edge = float(y[-1] + t * (y[0] - y[-1]))  # latitude where the ring meets +-180
    coords = [(-180.0, pole), (-180.0, edge), *zip(x.tolist(), y.tolist(), strict=True),
              (180.0, edge), (180.0, pole)]  # fmt: skip
    cap = Polygon(coords)
    return cap if cap.is_valid else shapely.make_valid(cap)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Return the polygons of a geometry (``make_valid`` may add lines or points)."""
    parts = [g for g in getattr(geom, "geoms", [geom]) if g.geom_type in ("Polygon",
                                                                         "MultiPolygon")]
    return shapely.union_all(parts) if parts else geom


def _split_antimeridian(poly: BaseGeometry) -> BaseGeometry:
    """Cut a polygon whose longitudes leave -180..180 at the antimeridian and wrap it.

    A hull passing close to a pole (without holding it) sweeps through many longitudes and
    its lon/lat ring may cross itself: it is made valid first (GEOS cuts only valid ones).
    """
    if not poly.is_valid:
        poly = _polygonal(shapely.make_valid(poly))
    parts = []
    for shift in (-360.0, 0.0, 360.0):
        piece = shapely.affinity.translate(poly, xoff=shift).intersection(box(-180, -90, 180, 90))
        if not piece.is_empty and piece.area > 0:
            parts.append(piece)
    return shapely.union_all(parts)
