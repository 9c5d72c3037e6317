"""Spherical geometry: great-circle distances, unit vectors, centroids and hulls."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import Polygon, box
from shapely.geometry.base import BaseGeometry

__all__ = [
    "EARTH_RADIUS_KM",
    "haversine_km",
    "to_unit_vectors",
    "from_unit_vectors",
    "chord_for_km",
    "weighted_centroid",
    "hull_polygon",
]

#: Mean Earth radius (IUGG), the R of every distance in matcher.
EARTH_RADIUS_KM = 6371.0088

FloatArray = npt.NDArray[np.float64]


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


def _gnomonic(v: FloatArray, c: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Project unit vectors ``v`` on the tangent plane at unit vector ``c`` (in km)."""
    # an orthonormal basis (e, n) of the tangent plane at c
    z = np.array([0.0, 0.0, 1.0]) if abs(c[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e = np.cross(z, c)
    e /= np.linalg.norm(e)
    n = np.cross(c, e)
    d = v @ c
    x = (v @ e) / d * EARTH_RADIUS_KM
    y = (v @ n) / d * EARTH_RADIUS_KM
    return x, y, np.stack([e, n])


def hull_polygon(
    lat: npt.ArrayLike, lon: npt.ArrayLike, center: tuple[float, float], *, buffer_km: float = 0.05
) -> BaseGeometry:
    """Return the spherical convex hull of points, buffered by ``buffer_km``, in lon/lat.

    The hull is computed in the gnomonic projection centred on ``center`` (which
    maps great circles to straight lines, so the planar hull is the spherical one)
    and buffered so that a cluster of one or two needs still has an area. A hull
    that crosses the antimeridian is split into a MultiPolygon, as RFC 7946 asks.
    """
    c = to_unit_vectors([center[0]], [center[1]])[0]
    x, y, basis = _gnomonic(to_unit_vectors(lat, lon), c)
    planar = shapely.MultiPoint(np.column_stack([x, y])).convex_hull.buffer(buffer_km, quad_segs=4)
    ring = np.asarray(planar.exterior.coords)
    # inverse gnomonic: point on the tangent plane -> direction
    vec = c[None, :] + (ring[:, :1] * basis[0] + ring[:, 1:2] * basis[1]) / EARTH_RADIUS_KM
    plat, plon = from_unit_vectors(vec)
    # unwrap longitudes around the centre so the ring is continuous
    plon = center[1] + (plon - center[1] + 180.0) % 360.0 - 180.0
    poly = Polygon(np.column_stack([plon, plat]))
    if plon.min() >= -180.0 and plon.max() <= 180.0:
        return poly
    parts = []
    for shift in (-360.0, 0.0, 360.0):
        piece = shapely.affinity.translate(poly, xoff=shift).intersection(box(-180, -90, 180, 90))
        if not piece.is_empty and piece.area > 0:
            parts.append(piece)
    return shapely.union_all(parts)
