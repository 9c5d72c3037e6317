"""Seeded synthetic cities of any size for tests and benchmarks."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd
import shapely
import shapely.geometry

from ._errors import InputValidationError, Problem
from ._validate import NEED_FIELDS, PARTNER_FIELDS
from .taxonomy import DEFAULT_CATEGORIES

__all__ = [
    "SyntheticCity",
    "generate_city",
    "write_city",
    "default_extent_km",
    "default_neighborhood_count",
    "SYNTHETIC_NEED_COLUMNS",
    "SYNTHETIC_PARTNER_COLUMNS",
    "SYNTHETIC_NEIGHBORHOOD_COLUMNS",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Columns of :attr:`SyntheticCity.needs`, in order.
SYNTHETIC_NEED_COLUMNS: tuple[str, ...] = NEED_FIELDS
#: Columns of :attr:`SyntheticCity.partners`, in order.
SYNTHETIC_PARTNER_COLUMNS: tuple[str, ...] = tuple(c for c in PARTNER_FIELDS if c != "contact")
#: Columns of :attr:`SyntheticCity.neighborhoods`, in order.
SYNTHETIC_NEIGHBORHOOD_COLUMNS: tuple[str, ...] = (
    "neighborhood_id",
    "name",
    "population",
    "hardship_index",
    "geometry",
)

# Mean Earth radius (IUGG), the same R as ``matcher.geo.EARTH_RADIUS_KM``.
_EARTH_RADIUS_KM = 6371.0088
_KM_PER_DEG_LAT = _EARTH_RADIUS_KM * math.pi / 180.0

# City size: the side of the square extent grows with sqrt(n_needs) from 30 km at 100k.
_REFERENCE_NEEDS = 100_000
_REFERENCE_SIDE_KM = 30.0
_MIN_SIDE_KM = 8.0
_REFERENCE_AREA_KM2 = _REFERENCE_SIDE_KM**2

# Neighborhood grid: about one cell per 1,500 needs.
_NEEDS_PER_NEIGHBORHOOD = 1500
_MIN_NEIGHBORHOODS = 4
_MAX_NEIGHBORHOODS = 2500
_MAX_NEIGHBORHOODS_ARG = 1_000_000

# Needs.
_HOT_FRACTION = 0.8  # the rest is uniform background
_CATEGORY_ZIPF = 0.8  # category shares ~ 1 / rank**0.8
_SIGMA_KM = (0.3, 1.5)
_DEMAND_P = np.array([0.38, 0.24, 0.14, 0.09, 0.06, 0.04, 0.03, 0.02])  # demand 1..8
_SEVERITY_P_HOT = np.array([0.08, 0.20, 0.32, 0.25, 0.15])  # severity 1..5 in hot spots
_SEVERITY_P_BACKGROUND = np.array([0.20, 0.30, 0.30, 0.14, 0.06])
_NEED_LANGUAGES = ("", "es", "es;en", "pl", "zh")
_NEED_LANGUAGES_P = np.array([0.80, 0.10, 0.04, 0.03, 0.03])
_REPORTED_EMPTY_P = 0.15
_REFERENCE_DATE = np.datetime64("2024-06-30", "D")  # fixed: output never depends on today
_REPORT_WINDOW_DAYS = 365
_SOURCE = "synthetic"

# Partners.
_VOLUNTEER_FRACTION = 0.15
_ORG_NEAR_HOT_FRACTION = 0.5
_ORG_N_CATEGORIES_P = np.array([0.45, 0.35, 0.20])  # 1, 2, 3 categories
_VOL_N_CATEGORIES_P = np.array([0.70, 0.30])  # 1, 2 categories
_ORG_CAPACITY = (10, 120)
_VOL_CAPACITY = (2, 12)
_ORG_RADIUS_KM = (2.0, 8.0)
_VOL_RADIUS_KM = (0.5, 3.0)
_PARTNER_LANGUAGES = ("en", "en;es", "es", "en;pl", "en;zh", "en;es;zh")
_PARTNER_LANGUAGES_P = np.array([0.55, 0.25, 0.07, 0.05, 0.05, 0.03])
_COVERAGE_RANGE = (0.62, 0.88)  # target capacity / demand per category (drawn per category)
_IPF_ITERATIONS = 40

# The "partner desert": a disc near one corner that no partner reaches.
_DESERT_CORE_FRACTION = 0.04  # core radius as a fraction of the side (at least 0.5 km)
_DESERT_MIN_CORE_KM = 0.5
_DESERT_OFFSET_FRACTION = 0.12  # desert centre distance from the corner, per axis
_DESERT_MAX_AREA_FRACTION = 0.4
_DESERT_SLACK_KM = 0.15  # partners keep this much room beyond core + minimum radius
_DESERT_MARGIN_KM = 0.02  # radii stop this far (plus 0.2%) short of the desert core
_CORE_NEEDS_FRACTION = 0.0005
_CORE_NEEDS_MIN = 3

# Coordinates are written with 6 decimals; neighborhood edges sit half a step off that grid,
# so no written need can ever lie on a neighborhood boundary.
_COORD_DECIMALS = 6
_HALF_STEP = 5e-7
_MIN_EDGE_GAP_DEG = 1e-4  # about 11 m: smaller cells are rejected


@dataclass(frozen=True)
class SyntheticCity:
    """A generated city: needs, partners and neighborhood polygons.

    Attributes
    ----------
    needs : pandas.DataFrame
        One row per need with columns ``need_id, category, lat, lon, demand, severity,
        neighborhood, languages, reported_at, source``.
    partners : pandas.DataFrame
        One row per partner with columns ``partner_id, name, kind, lat, lon, categories,
        capacity, radius_km, languages``.
    neighborhoods : geopandas.GeoDataFrame
        One rectangle per neighborhood with columns ``neighborhood_id, name, population,
        hardship_index, geometry`` in EPSG:4326; together they tile the city's extent.
    """

    needs: pd.DataFrame
    partners: pd.DataFrame
    neighborhoods: gpd.GeoDataFrame


@dataclass(frozen=True)
class _Frame:
    """Local equirectangular frame: km offsets from the south-west corner <-> degrees."""

    side_km: float
    south: float
    west: float
    km_per_deg_lon: float
    lat_lo: float
    lat_hi: float
    lon_lo: float
    lon_hi: float

    def to_latlon(self, x: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Degrees rounded to the written precision, clipped strictly inside the extent."""
        lat = np.round(self.south + np.asarray(y) / _KM_PER_DEG_LAT, _COORD_DECIMALS)
        lon = np.round(self.west + np.asarray(x) / self.km_per_deg_lon, _COORD_DECIMALS)
        return np.clip(lat, self.lat_lo, self.lat_hi), np.clip(lon, self.lon_lo, self.lon_hi)

    def to_km(self, lat: FloatArray, lon: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Inverse of :meth:`to_latlon` (without rounding)."""
        return (np.asarray(lon) - self.west) * self.km_per_deg_lon, (
            np.asarray(lat) - self.south
        ) * _KM_PER_DEG_LAT


@dataclass(frozen=True)
class _Grid:
    """Rows of rectangular cells, numbered north to south, west to east."""

    lat_edges: FloatArray  # ascending, ny + 1 values
    cols: IntArray  # columns per row, row 0 is the northernmost
    starts: IntArray  # first cell index of each row
    lon_edges: dict[int, FloatArray]  # columns -> ascending edges

    @property
    def n_rows(self) -> int:
        return len(self.cols)

    @property
    def n_cells(self) -> int:
        return int(self.cols.sum())

    def cell_of(self, lat: FloatArray, lon: FloatArray) -> IntArray:
        """Index of the cell strictly containing each (rounded) point, vectorised."""
        row_from_south = np.searchsorted(self.lat_edges, lat, side="right") - 1
        row = self.n_rows - 1 - np.clip(row_from_south, 0, self.n_rows - 1)
        ncols = self.cols[row]
        col = np.zeros(len(lat), dtype=np.int64)
        for k, edges in self.lon_edges.items():
            mask = ncols == k
            if mask.any():
                c = np.searchsorted(edges, lon[mask], side="right") - 1
                col[mask] = np.clip(c, 0, k - 1)
        return (self.starts[row] + col).astype(np.int64)

    def bounds(self) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """``(west, south, east, north)`` of every cell, in cell order."""
        row = np.repeat(np.arange(self.n_rows), self.cols)
        col = np.arange(self.n_cells) - self.starts[row]
        ncols = self.cols[row]
        west = np.empty(self.n_cells)
        east = np.empty(self.n_cells)
        for k, edges in self.lon_edges.items():
            mask = ncols == k
            west[mask] = edges[col[mask]]
            east[mask] = edges[col[mask] + 1]
        row_from_south = self.n_rows - 1 - row
        return west, self.lat_edges[row_from_south], east, self.lat_edges[row_from_south + 1]


@dataclass(frozen=True)
class _Desert:
    """A disc near a corner of the city that no partner's radius reaches."""

    x: float
    y: float
    lat: float
    lon: float
    core_km: float


@dataclass(frozen=True)
class _HotSpots:
    category: IntArray
    x: FloatArray
    y: FloatArray
    sigma: FloatArray
    weight: FloatArray  # normalised within each category


def default_extent_km(n_needs: int) -> float:
    """Return the default side of the square extent, in km, for ``n_needs`` needs.

    The side grows with ``sqrt(n_needs)`` so that density stays realistic: 30 km at
    100,000 needs, never below 8 km.

    Parameters
    ----------
    n_needs : int
        Number of needs.

    Returns
    -------
    float
        Side length in km.

    Examples
    --------
    >>> default_extent_km(100_000), default_extent_km(1_000), round(default_extent_km(10**6), 1)
    (30.0, 8.0, 94.9)
    """
    return max(_MIN_SIDE_KM, _REFERENCE_SIDE_KM * math.sqrt(max(n_needs, 0) / _REFERENCE_NEEDS))


def default_neighborhood_count(n_needs: int) -> int:
    """Return the default number of neighborhoods: about one per 1,500 needs, 4..2,500.

    Parameters
    ----------
    n_needs : int
        Number of needs.

    Returns
    -------
    int

    Examples
    --------
    >>> default_neighborhood_count(2_000), default_neighborhood_count(100_000)
    (4, 67)
    """
    return int(
        np.clip(
            round(max(n_needs, 0) / _NEEDS_PER_NEIGHBORHOOD), _MIN_NEIGHBORHOODS, _MAX_NEIGHBORHOODS
        )
    )


def generate_city(
    n_needs: int,
    n_partners: int,
    *,
    seed: int = 0,
    center: tuple[float, float] = (41.8781, -87.6298),
    extent_km: float | None = None,
    categories: Sequence[str] = DEFAULT_CATEGORIES,
    n_neighborhoods: int | None = None,
) -> SyntheticCity:
    """Generate a reproducible synthetic city of any size.

    Every category gets a few Gaussian hot spots (sigma 0.3-1.5 km, more of them in
    larger cities), many of them around shared "distressed" centres, and 20% of the
    needs are uniform background. Category frequencies are skewed (Zipf-like, in a
    seeded order). Organizations sit partly near hot spots and partly uniformly;
    volunteers follow population. Capacities are scaled (within their ranges) so that
    each category's capacity, splitting a multi-category partner's capacity evenly
    between its categories, is 62-88% of its demand, so plans have both service and
    gaps; the ranges allow this for ``n_partners`` from about ``n_needs / 50`` to
    ``n_needs / 5``. One "partner desert" near a corner (extents of about 7.5 km and
    more, so every default city) holds a few needs that no partner's radius reaches.

    Coordinates have 6 decimals and lie strictly inside the extent; neighborhood edges
    lie half a step off the 6-decimal grid, so every need lies strictly inside the
    polygon named in its ``neighborhood`` column, also after a CSV round trip.

    Parameters
    ----------
    n_needs : int
        Number of needs (>= 0).
    n_partners : int
        Number of partners (>= 0); about ``n_needs / 10`` gives realistic ratios.
    seed : int, default 0
        Seed of :func:`numpy.random.default_rng`; the same arguments give identical
        frames (and, through :func:`write_city`, byte-identical files).
    center : (float, float), default Chicago
        ``(lat, lon)`` of the city centre, in degrees WGS84.
    extent_km : float, optional
        Side of the square extent in km; :func:`default_extent_km` when omitted.
    categories : sequence of str, default DEFAULT_CATEGORIES
        The category codes to use.
    n_neighborhoods : int, optional
        Number of neighborhood cells; :func:`default_neighborhood_count` when omitted.

    Returns
    -------
    SyntheticCity

    Raises
    ------
    InputValidationError
        When an argument is invalid, or the extent leaves the valid lat/lon range,
        crosses the antimeridian or contains (0, 0).

    Examples
    --------
    >>> city = generate_city(200, 20, seed=1)
    >>> len(city.needs), len(city.partners), len(city.neighborhoods)
    (200, 20, 4)
    >>> city.needs["need_id"].iloc[0], city.partners["partner_id"].iloc[0]
    ('N0000001', 'P000001')
    """
    started = time.perf_counter()
    codes = _check_arguments(
        n_needs, n_partners, seed, center, extent_km, categories, n_neighborhoods
    )
    n_needs, n_partners = int(n_needs), int(n_partners)
    side = float(extent_km) if extent_km is not None else default_extent_km(n_needs)
    n_cells = (
        int(n_neighborhoods)
        if n_neighborhoods is not None
        else (default_neighborhood_count(n_needs))
    )
    frame, grid = _build_frame(float(center[0]), float(center[1]), side, n_cells)

    rng = np.random.default_rng(int(seed))
    shares = _category_shares(rng, len(codes))
    desert = _make_desert(rng, frame)
    hot = _make_hot_spots(rng, frame, shares, desert)

    need_cols, need_cell, need_cat, need_demand = _make_needs(
        rng, frame, grid, codes, shares, hot, desert, n_needs
    )
    neighborhoods, population = _make_neighborhoods(rng, grid, frame, need_cell, need_demand)
    partners = _make_partners(
        rng, frame, grid, codes, shares, hot, desert, population, need_cat, need_demand, n_partners
    )

    needs = pd.DataFrame(need_cols, columns=list(SYNTHETIC_NEED_COLUMNS))
    logger.info(
        "synthetic city (seed %d): %d needs, %d partners, %d neighborhoods, %.1f km side, "
        "in %.2f s",
        seed,
        n_needs,
        n_partners,
        len(neighborhoods),
        side,
        time.perf_counter() - started,
    )
    return SyntheticCity(needs=needs, partners=partners, neighborhoods=neighborhoods)


def write_city(city: SyntheticCity, out_dir: str | Path) -> dict[str, Path]:
    """Write a city as ``needs.csv``, ``partners.csv`` and ``neighborhoods.geojson``.

    The output is deterministic: the same city always gives byte-identical files.
    Floats are written in their shortest round-trip form (coordinates have at most 6
    decimals), the GeoJSON is RFC 7946 (WGS84 longitude/latitude, no ``crs`` member).

    Parameters
    ----------
    city : SyntheticCity
        The city to write.
    out_dir : str or Path
        Directory to write to; created when missing. Existing files are overwritten.

    Returns
    -------
    dict of str to Path
        The written files under the keys ``"needs"``, ``"partners"`` and
        ``"neighborhoods"``.
    """
    started = time.perf_counter()
    paths = _city_paths(out_dir)
    out = paths["needs"].parent
    for key in ("needs", "partners"):
        frame: pd.DataFrame = getattr(city, key)
        frame.to_csv(paths[key], index=False, lineterminator="\n", encoding="utf-8")
    paths["neighborhoods"].write_text(_geojson_text(city.neighborhoods), encoding="utf-8")
    logger.info("wrote synthetic city to %s in %.2f s", out, time.perf_counter() - started)
    return paths


# --------------------------------------------------------------------------- validation


def _check_arguments(
    n_needs: object,
    n_partners: object,
    seed: object,
    center: object,
    extent_km: object,
    categories: object,
    n_neighborhoods: object,
) -> tuple[str, ...]:
    """Validate the arguments of :func:`generate_city`; return the category codes."""
    problems: list[Problem] = []

    def bad(field: str, value: object, reason: str) -> None:
        problems.append(Problem(None, None, field, value, reason))

    def is_int(value: object) -> bool:
        return isinstance(value, Integral) and not isinstance(value, bool)

    def is_real(value: object) -> bool:
        return (
            isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(float(value))
        )  # type: ignore[arg-type]

    for field, value in (("n_needs", n_needs), ("n_partners", n_partners)):
        if not is_int(value) or int(value) < 0:  # type: ignore[call-overload]
            bad(field, value, "must be an integer >= 0")
    if not is_int(seed):
        bad("seed", seed, "must be an integer")
    elif int(seed) < 0:  # type: ignore[call-overload]
        bad("seed", seed, "must be >= 0")
    lat0 = lon0 = None
    if (
        isinstance(center, (str, bytes))
        or not isinstance(center, Sequence)
        or len(center) != 2
        or not all(is_real(v) for v in center)
    ):
        bad("center", center, "must be a (lat, lon) pair of finite numbers in degrees")
    else:
        lat0, lon0 = float(center[0]), float(center[1])
        if not -80.0 <= lat0 <= 80.0:
            bad("center", center, "latitude must be in -80..80 for the local projection")
            lat0 = None
        if not -180.0 <= lon0 <= 180.0:
            bad("center", center, "longitude must be in -180..180")
            lon0 = None
    side = None
    if extent_km is not None:
        if not is_real(extent_km) or not 0.5 <= float(extent_km) <= 2000.0:  # type: ignore[arg-type]
            bad("extent_km", extent_km, "must be a number in 0.5..2000 (km) or None")
        else:
            side = float(extent_km)  # type: ignore[arg-type]
    elif is_int(n_needs) and int(n_needs) >= 0:  # type: ignore[call-overload]
        side = default_extent_km(int(n_needs))  # type: ignore[call-overload]
    if n_neighborhoods is not None and (
        not is_int(n_neighborhoods) or not 1 <= int(n_neighborhoods) <= _MAX_NEIGHBORHOODS_ARG  # type: ignore[call-overload]
    ):
        bad(
            "n_neighborhoods",
            n_neighborhoods,
            f"must be an integer in 1..{_MAX_NEIGHBORHOODS_ARG} or None",
        )
    codes: tuple[str, ...] = ()
    if isinstance(categories, (str, bytes)) or not isinstance(categories, Sequence):
        bad("categories", categories, "must be a sequence of category codes, not a string")
    else:
        codes = tuple(categories)
        if not codes:
            bad("categories", categories, "must name at least one category")
        for code in codes:
            if (
                not isinstance(code, str)
                or not code.strip()
                or code != code.strip()
                or any(ch in code for ch in ';,"\n\r')
            ):
                bad(
                    "categories",
                    code,
                    "must be a non-empty code without spaces at the ends, "
                    "';', ',', quotes or line breaks",
                )
        if len(set(codes)) != len(codes):
            bad("categories", categories, "codes must be unique")
    if lat0 is not None and lon0 is not None and side is not None:
        half_lat = side / 2.0 / _KM_PER_DEG_LAT
        half_lon = side / 2.0 / (_KM_PER_DEG_LAT * math.cos(math.radians(lat0)))
        south, north = lat0 - half_lat, lat0 + half_lat
        west, east = lon0 - half_lon, lon0 + half_lon
        if south < -85.0 or north > 85.0:
            bad("extent_km", extent_km, "the extent leaves the latitude range -85..85")
        if west < -180.0 or east > 180.0:
            bad("extent_km", extent_km, "the extent crosses the antimeridian; move the center")
        if south <= 0.0 <= north and west <= 0.0 <= east:
            bad(
                "center",
                center,
                "the extent contains (0, 0), a missing-value sentinel; move the center",
            )
    if problems:
        raise InputValidationError(problems)
    return codes


# --------------------------------------------------------------------------- geometry


def _edges(lo: float, hi: float, n: int) -> FloatArray:
    """``n + 1`` ascending edges, each half a step off the 6-decimal coordinate grid."""
    raw = np.linspace(lo, hi, n + 1)
    return np.round(np.round(raw, _COORD_DECIMALS) + _HALF_STEP, _COORD_DECIMALS + 1)


def _build_frame(lat0: float, lon0: float, side: float, n_cells: int) -> tuple[_Frame, _Grid]:
    """Build the local projection and the neighborhood grid of the city."""
    km_per_deg_lon = _KM_PER_DEG_LAT * math.cos(math.radians(lat0))
    half = side / 2.0
    south, north = lat0 - half / _KM_PER_DEG_LAT, lat0 + half / _KM_PER_DEG_LAT
    west, east = lon0 - half / km_per_deg_lon, lon0 + half / km_per_deg_lon

    n_rows = max(1, round(math.sqrt(n_cells)))
    base, extra = divmod(n_cells, n_rows)
    cols = np.full(n_rows, base, dtype=np.int64)
    cols[:extra] += 1
    starts = np.concatenate([[0], np.cumsum(cols)[:-1]]).astype(np.int64)
    lat_edges = _edges(south, north, n_rows)
    lon_edges = {int(k): _edges(west, east, int(k)) for k in np.unique(cols)}
    gaps = [np.diff(lat_edges).min()] + [np.diff(e).min() for e in lon_edges.values()]
    if min(gaps) < _MIN_EDGE_GAP_DEG:
        raise InputValidationError(
            [
                Problem(
                    None,
                    None,
                    "n_neighborhoods",
                    n_cells,
                    "too many neighborhoods for the extent; use fewer or a larger extent_km",
                )
            ]
        )
    step = 10.0**-_COORD_DECIMALS
    frame = _Frame(
        side_km=side,
        south=south,
        west=west,
        km_per_deg_lon=km_per_deg_lon,
        lat_lo=round(float(lat_edges[0]) + step / 2, _COORD_DECIMALS),
        lat_hi=round(float(lat_edges[-1]) - step / 2, _COORD_DECIMALS),
        lon_lo=round(float(lon_edges[int(cols[0])][0]) + step / 2, _COORD_DECIMALS),
        lon_hi=round(float(lon_edges[int(cols[0])][-1]) - step / 2, _COORD_DECIMALS),
    )
    return frame, _Grid(lat_edges=lat_edges, cols=cols, starts=starts, lon_edges=lon_edges)


def _haversine_km(lat1: FloatArray, lon1: FloatArray, lat2: float, lon2: float) -> FloatArray:
    """Great-circle distance in km (R = 6371.0088 km) from points to one point."""
    p1, p2 = np.radians(lat1), math.radians(lat2)
    h = (
        np.sin((p2 - p1) / 2.0) ** 2
        + np.cos(p1) * math.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2.0) ** 2
    )
    return np.asarray(2.0 * _EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def _uniform_km(rng: np.random.Generator, side: float, n: int) -> tuple[FloatArray, FloatArray]:
    xy = rng.random((n, 2)) * side
    return xy[:, 0], xy[:, 1]


def _labels(prefix: str, n: int, width: int) -> npt.NDArray[np.object_]:
    """``prefix`` + 1-based zero-padded numbers, vectorised, as an object array."""
    numbers = np.arange(1, n + 1).astype(np.dtypes.StringDType())
    return np.strings.add(prefix, np.strings.zfill(numbers, width)).astype(object)


def _width(n: int, minimum: int) -> int:
    return max(minimum, len(str(max(n, 1))))


def _sample(rng: np.random.Generator, p: FloatArray, n: int) -> IntArray:
    """``n`` indices drawn with probabilities ``p`` (vectorised inverse CDF)."""
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    return np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(p) - 1)


# --------------------------------------------------------------------------- city parts


def _category_shares(rng: np.random.Generator, n_cat: int) -> FloatArray:
    """Skewed category frequencies: ~1/rank**0.8 with ranks in a seeded order."""
    rank = rng.permutation(n_cat)
    w = 1.0 / (rank + 1.0) ** _CATEGORY_ZIPF
    return w / w.sum()


def _make_desert(rng: np.random.Generator, frame: _Frame) -> _Desert | None:
    """Place a desert near a random corner; None when the city is too small for one."""
    side = frame.side_km
    core = max(_DESERT_MIN_CORE_KM, _DESERT_CORE_FRACTION * side)
    corner = rng.integers(0, 4)
    reach = core + _ORG_RADIUS_KM[0] + _DESERT_SLACK_KM
    if math.pi * reach**2 > _DESERT_MAX_AREA_FRACTION * side**2:
        return None
    off = _DESERT_OFFSET_FRACTION * side
    x = off if corner % 2 == 0 else side - off
    y = off if corner < 2 else side - off
    lat, lon = frame.to_latlon(np.array([x]), np.array([y]))
    return _Desert(x=x, y=y, lat=float(lat[0]), lon=float(lon[0]), core_km=core)


def _make_hot_spots(
    rng: np.random.Generator, frame: _Frame, shares: FloatArray, desert: _Desert | None
) -> _HotSpots:
    """Draw a few Gaussian hot spots per category, many around shared distressed centres."""
    side = frame.side_km
    n_cat = len(shares)
    area_factor = max(1.0, side**2 / _REFERENCE_AREA_KM2)
    n_hot = np.maximum(2, np.rint(rng.integers(2, 6, n_cat) * area_factor)).astype(np.int64)
    category = np.repeat(np.arange(n_cat), n_hot)
    total = int(n_hot.sum())

    n_centres = max(3, round(8 * area_factor))
    centres = rng.uniform(0.1 * side, 0.9 * side, (n_centres, 2))
    centre_w = rng.gamma(2.0, size=n_centres)
    near = rng.random(total) < 0.6
    pick = _sample(rng, centre_w, total)
    jitter = rng.normal(0.0, 1.0, (total, 2))
    anywhere = rng.uniform(0.05 * side, 0.95 * side, (total, 2))
    xy = np.where(near[:, None], centres[pick] + jitter, anywhere)
    xy = np.clip(xy, 0.02 * side, 0.98 * side)
    if desert is not None:  # keep hot spots out of the desert core: its gaps stay "a few"
        keep_out = desert.core_km + 1.0
        for _ in range(100):
            inside = np.hypot(xy[:, 0] - desert.x, xy[:, 1] - desert.y) < keep_out
            if not inside.any():
                break
            xy[inside] = rng.uniform(0.05 * side, 0.95 * side, (int(inside.sum()), 2))
    sigma = rng.uniform(*_SIGMA_KM, total)
    w = rng.gamma(1.0, size=total) + 0.05
    w = w / np.bincount(category, weights=w, minlength=n_cat)[category]
    return _HotSpots(category=category, x=xy[:, 0].copy(), y=xy[:, 1].copy(), sigma=sigma, weight=w)


def _make_needs(
    rng: np.random.Generator,
    frame: _Frame,
    grid: _Grid,
    codes: tuple[str, ...],
    shares: FloatArray,
    hot: _HotSpots,
    desert: _Desert | None,
    n: int,
) -> tuple[dict[str, object], IntArray, IntArray, IntArray]:
    """Return the needs columns, and each need's cell, category index and demand."""
    side = frame.side_km
    n_cat = len(codes)
    cat = _sample(rng, shares, n)
    is_hot = rng.random(n) < _HOT_FRACTION

    # Hot spot of each need within its category: inverse CDF over per-category cumulative
    # weights laid end to end (category c spans (c, c + 1]).
    cum = np.cumsum(hot.weight)
    ends = np.cumsum(np.bincount(hot.category, minlength=n_cat)) - 1
    cum[ends] = np.arange(1, n_cat + 1)
    spot = np.searchsorted(cum, cat + rng.random(n), side="right")
    spot = np.clip(spot, ends[cat] - np.bincount(hot.category, minlength=n_cat)[cat] + 1, ends[cat])
    gauss = rng.normal(0.0, 1.0, (n, 2))
    x = hot.x[spot] + hot.sigma[spot] * gauss[:, 0]
    y = hot.y[spot] + hot.sigma[spot] * gauss[:, 1]
    ux, uy = _uniform_km(rng, side, n)
    outside = (x < 0) | (x > side) | (y < 0) | (y > side)
    background = ~is_hot | outside
    x = np.where(background, ux, x)
    y = np.where(background, uy, y)

    # A few needs in the desert core, beyond every partner's reach.
    if desert is not None and n > 0:
        n_core = min(max(_CORE_NEEDS_MIN, round(_CORE_NEEDS_FRACTION * n)), max(1, n // 20))
        idx = rng.choice(n, size=n_core, replace=False)
        r = 0.8 * desert.core_km * np.sqrt(rng.random(n_core))
        theta = rng.uniform(0.0, 2.0 * math.pi, n_core)
        x[idx] = desert.x + r * np.cos(theta)
        y[idx] = desert.y + r * np.sin(theta)
        is_hot[idx] = False

    lat, lon = frame.to_latlon(x, y)
    cell = grid.cell_of(lat, lon)
    demand = (_sample(rng, _DEMAND_P, n) + 1).astype(np.int64)
    u = rng.random(n)
    severity = (
        np.where(
            is_hot & ~outside,
            np.searchsorted(np.cumsum(_SEVERITY_P_HOT)[:-1], u, side="right"),
            np.searchsorted(np.cumsum(_SEVERITY_P_BACKGROUND)[:-1], u, side="right"),
        ).astype(np.int64)
        + 1
    )
    languages = np.array(_NEED_LANGUAGES, dtype=object)[_sample(rng, _NEED_LANGUAGES_P, n)]
    days = rng.integers(0, _REPORT_WINDOW_DAYS, n)
    dated = rng.random(n) >= _REPORTED_EMPTY_P
    dates = np.datetime_as_string(_REFERENCE_DATE - np.arange(_REPORT_WINDOW_DAYS), unit="D")
    date_labels = np.concatenate([np.array([""], dtype=object), dates.astype(object)])
    reported = date_labels[np.where(dated, days + 1, 0)]
    cell_ids = _labels("H", grid.n_cells, _width(grid.n_cells, 4))
    columns: dict[str, object] = {
        "need_id": _labels("N", n, _width(n, 7)),
        "category": np.array(codes, dtype=object)[cat],
        "lat": lat,
        "lon": lon,
        "demand": demand,
        "severity": severity,
        "neighborhood": cell_ids[cell],
        "languages": languages,
        "reported_at": reported,
        "source": np.full(n, _SOURCE, dtype=object),
    }
    return columns, cell, cat, demand


def _make_neighborhoods(
    rng: np.random.Generator,
    grid: _Grid,
    frame: _Frame,
    need_cell: IntArray,
    need_demand: IntArray,
) -> tuple[gpd.GeoDataFrame, FloatArray]:
    """Build the neighborhood polygons; hardship and population follow need density."""
    n_cells = grid.n_cells
    west, south, east, north = grid.bounds()
    lat_mid = np.radians((south + north) / 2.0)
    area = ((north - south) * _KM_PER_DEG_LAT) * ((east - west) * _KM_PER_DEG_LAT * np.cos(lat_mid))
    density = np.bincount(need_cell, weights=need_demand, minlength=n_cells) / area
    rel = density / density.max() if density.max() > 0 else np.zeros(n_cells)

    score = np.log1p(density) + rng.normal(0.0, 0.25, n_cells)
    rank = np.argsort(np.argsort(score, kind="stable"), kind="stable")
    if n_cells > 1:
        hardship = 1 + np.rint(97.0 * rank / (n_cells - 1))
    else:
        hardship = np.full(n_cells, 50.0)
    people_per_km2 = 2500.0 * np.exp(rng.normal(0.0, 0.35, n_cells)) * (1.0 + 1.5 * rel)
    population = np.maximum(1, np.rint(area * people_per_km2)).astype(np.int64)

    ids = _labels("H", n_cells, _width(n_cells, 4))
    names = _labels("Neighborhood ", n_cells, 1)
    gdf = gpd.GeoDataFrame(
        {
            "neighborhood_id": ids,
            "name": names,
            "population": population,
            "hardship_index": np.clip(hardship, 1, 98).astype(np.int64),
        },
        geometry=shapely.box(west, south, east, north),
        crs="EPSG:4326",
    )
    return gdf, population.astype(np.float64)


def _place(
    rng: np.random.Generator,
    frame: _Frame,
    sampler: Callable[[int], tuple[FloatArray, FloatArray]],
    n: int,
    desert: _Desert | None,
    min_km: float,
) -> tuple[FloatArray, FloatArray]:
    """Draw ``n`` points with ``sampler`` (km), away from the desert; return lat, lon.

    Points closer than ``min_km`` to the desert centre are redrawn (after 20 rounds,
    uniformly); the returned degrees are rounded and clipped like every coordinate.
    """
    lat, lon = frame.to_latlon(*sampler(n))
    if desert is None or n == 0:
        return lat, lon
    for attempt in range(60):
        close = _haversine_km(lat, lon, desert.lat, desert.lon) < min_km
        if not close.any():
            return lat, lon
        draw = sampler if attempt < 20 else (lambda k: _uniform_km(rng, frame.side_km, k))
        lat[close], lon[close] = frame.to_latlon(*draw(int(close.sum())))
    raise RuntimeError("could not place partners outside the partner desert")  # pragma: no cover


def _make_partners(
    rng: np.random.Generator,
    frame: _Frame,
    grid: _Grid,
    codes: tuple[str, ...],
    shares: FloatArray,
    hot: _HotSpots,
    desert: _Desert | None,
    population: FloatArray,
    need_cat: IntArray,
    need_demand: IntArray,
    n: int,
) -> pd.DataFrame:
    """Organizations and volunteers with categories, capacity, radius and languages."""
    side = frame.side_km
    n_cat = len(codes)
    is_vol = rng.random(n) < _VOLUNTEER_FRACTION
    org_idx, vol_idx = np.flatnonzero(~is_vol), np.flatnonzero(is_vol)
    lat = np.empty(n)
    lon = np.empty(n)
    primary = _sample(rng, shares, n)

    # Organizations: half near hot spots (offering the hot spot's category), half uniform.
    n_org = len(org_idx)
    near = rng.random(n_org) < _ORG_NEAR_HOT_FRACTION
    spot = _sample(rng, shares[hot.category] * hot.weight, n_org)
    primary[org_idx[near]] = hot.category[spot[near]]

    def org_sampler(k: int) -> tuple[FloatArray, FloatArray]:
        pick = _sample(rng, shares[hot.category] * hot.weight, k)
        spread = hot.sigma[pick] * 1.5 + 0.5
        x = hot.x[pick] + spread * rng.normal(0.0, 1.0, k)
        y = hot.y[pick] + spread * rng.normal(0.0, 1.0, k)
        ux, uy = _uniform_km(rng, side, k)
        off = (x < 0) | (x > side) | (y < 0) | (y > side)
        return np.where(off, ux, x), np.where(off, uy, y)

    def uniform_sampler(k: int) -> tuple[FloatArray, FloatArray]:
        return _uniform_km(rng, side, k)

    west, south, east, north = grid.bounds()
    cw, cs = frame.to_km(south, west)
    ce, cn = frame.to_km(north, east)

    def population_sampler(k: int) -> tuple[FloatArray, FloatArray]:
        cell = _sample(rng, population, k)
        u = rng.random((k, 2))
        x = cw[cell] + u[:, 0] * (ce[cell] - cw[cell])
        return x, cs[cell] + u[:, 1] * (cn[cell] - cs[cell])

    core = desert.core_km if desert is not None else 0.0
    org_min = (core + _ORG_RADIUS_KM[0] + _DESERT_SLACK_KM) / 0.998
    vol_min = (core + _VOL_RADIUS_KM[0] + _DESERT_SLACK_KM) / 0.998
    # Near-hot-spot organizations first (their own sampler), then uniform ones.
    near_idx, far_idx = org_idx[near], org_idx[~near]
    for idx, sampler, min_km in (
        (near_idx, org_sampler, org_min),
        (far_idx, uniform_sampler, org_min),
        (vol_idx, population_sampler, vol_min),
    ):
        lat[idx], lon[idx] = _place(rng, frame, sampler, len(idx), desert, min_km)

    # Categories: the primary one plus Gumbel-top-k draws weighted toward common ones.
    k_cat = (
        np.where(is_vol, _sample(rng, _VOL_N_CATEGORIES_P, n), _sample(rng, _ORG_N_CATEGORIES_P, n))
        + 1
    )
    k_cat = np.minimum(k_cat, n_cat)
    keys = np.log(shares)[None, :] - np.log(-np.log(rng.random((n, n_cat)) * (1 - 1e-12) + 1e-12))
    keys[np.arange(n), primary] = np.inf
    order = np.argsort(-keys, axis=1, kind="stable")
    member = np.zeros((n, n_cat), dtype=bool)
    rows = np.repeat(np.arange(n), k_cat)
    member[rows, order[rows, _ranks_within(k_cat)]] = True
    categories = _join_categories(member, codes)

    capacity = _capacities(rng, member, k_cat, is_vol, need_cat, need_demand, n_cat)

    radius = np.where(
        is_vol,
        rng.uniform(*_VOL_RADIUS_KM, n),
        _ORG_RADIUS_KM[0] + (_ORG_RADIUS_KM[1] - _ORG_RADIUS_KM[0]) * rng.beta(2.0, 3.0, n),
    )
    radius = np.round(radius, 1)
    if desert is not None and n:
        d = _haversine_km(lat, lon, desert.lat, desert.lon)
        # Any need in the core is more than d - core away, so radius < d - core keeps it
        # out of reach; partners were placed so that this never drops below the minimum.
        reach = np.floor((0.998 * d - core - _DESERT_MARGIN_KM) * 10.0) / 10.0
        radius = np.round(np.minimum(radius, reach), 1)
    languages = np.array(_PARTNER_LANGUAGES, dtype=object)[_sample(rng, _PARTNER_LANGUAGES_P, n)]

    name_width = _width(n, 5)
    names = np.empty(n, dtype=object)
    names[org_idx] = _labels("Org ", len(org_idx), name_width)
    names[vol_idx] = _labels("Volunteer ", len(vol_idx), name_width)
    kind = np.where(is_vol, "volunteer", "organization").astype(object)
    return pd.DataFrame(
        {
            "partner_id": _labels("P", n, _width(n, 6)),
            "name": names,
            "kind": kind,
            "lat": lat,
            "lon": lon,
            "categories": categories,
            "capacity": capacity,
            "radius_km": radius,
            "languages": languages,
        },
        columns=list(SYNTHETIC_PARTNER_COLUMNS),
    )


def _ranks_within(counts: IntArray) -> IntArray:
    """``0..c-1`` for every count ``c``, concatenated (vectorised)."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total) - np.repeat(starts, counts)


def _join_categories(
    member: npt.NDArray[np.bool_], codes: tuple[str, ...]
) -> npt.NDArray[np.object_]:
    """Each row's member codes, sorted alphabetically, joined by ';' (vectorised)."""
    n = member.shape[0]
    alpha = np.argsort(np.array(codes, dtype=object), kind="stable")
    names = np.array(codes, dtype=np.dtypes.StringDType())[alpha]
    m = member[:, alpha]
    k = m.sum(axis=1)
    first = np.argsort(~m, axis=1, kind="stable")  # member columns first, in order
    out = names[first[:, 0]]
    for j in range(1, int(k.max()) if n else 1):
        more = k > j
        out = np.where(more, np.strings.add(np.strings.add(out, ";"), names[first[:, j]]), out)
    return out.astype(object)


def _capacities(
    rng: np.random.Generator,
    member: npt.NDArray[np.bool_],
    k_cat: IntArray,
    is_vol: npt.NDArray[np.bool_],
    need_cat: IntArray,
    need_demand: IntArray,
    n_cat: int,
) -> IntArray:
    """Draw integer capacities fitted to 62-88% of each category's demand.

    A multi-category partner's capacity counts evenly split between its categories;
    iterative proportional fitting scales capacities within each kind's range.
    """
    n = len(k_cat)
    demand = np.bincount(need_cat, weights=need_demand, minlength=n_cat)
    target = rng.uniform(*_COVERAGE_RANGE, n_cat) * demand
    lo = np.where(is_vol, _VOL_CAPACITY[0], _ORG_CAPACITY[0]).astype(np.float64)
    hi = np.where(is_vol, _VOL_CAPACITY[1], _ORG_CAPACITY[1]).astype(np.float64)
    raw = np.where(
        is_vol, rng.lognormal(math.log(5.0), 0.45, n), rng.lognormal(math.log(25.0), 0.55, n)
    )
    cap = np.clip(raw, lo, hi)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    split = member / k_cat[:, None]
    for _ in range(_IPF_ITERATIONS):
        alloc = split.T @ cap
        log_f = np.zeros(n_cat)
        ok = (target > 0) & (alloc > 0)
        log_f[ok] = np.log(target[ok] / alloc[ok])
        cap = np.clip(cap * np.exp(split @ log_f), lo, hi)
    capacity = np.rint(cap).astype(np.int64)
    if logger.isEnabledFor(logging.DEBUG):
        alloc = split.T @ capacity
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(demand > 0, alloc / np.where(demand > 0, demand, 1), np.nan)
        logger.debug("capacity / demand per category: %s", np.round(ratio, 2).tolist())
    return capacity


def _city_paths(out_dir: str | Path) -> dict[str, Path]:
    """Return the files of a city (or region) in ``out_dir``, created when missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {
        "needs": out / "needs.csv",
        "partners": out / "partners.csv",
        "neighborhoods": out / "neighborhoods.geojson",
    }


def _geojson_text(gdf: gpd.GeoDataFrame) -> str:
    """Deterministic RFC 7946 text of a GeoDataFrame (floats in shortest round-trip form)."""
    frame = (
        gdf.to_crs("EPSG:4326") if gdf.crs is not None and not gdf.crs.equals("EPSG:4326") else gdf
    )
    props = [c for c in frame.columns if c != frame.geometry.name]
    values = {c: frame[c].tolist() for c in props}
    features = []
    for i, geom in enumerate(frame.geometry):
        feature = {
            "type": "Feature",
            "properties": {c: _plain(values[c][i]) for c in props},
            "geometry": None if geom is None else shapely.geometry.mapping(geom),
        }
        features.append(json.dumps(feature, ensure_ascii=False, allow_nan=False))
    return '{"type": "FeatureCollection", "features": [\n' + ",\n".join(features) + "\n]}\n"


def _plain(value: object) -> object:
    """JSON-serialisable form of a property value (missing values become null)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    return value
