"""Seeded synthetic regions and countries: many metro areas, each a synthetic city.

A region is ``n_cities`` metro areas (:func:`matcher.synthetic.generate_city`, each with
its own hot spots, partners and neighborhoods) of Zipf-distributed sizes, placed in a
latitude/longitude box far enough apart that no partner of one metro can reach a need of
another (a country's metros are independent parts of its plan). Metros are generated and
written one at a time, so a 10M-need country never has to fit in memory at once; the
files are those of a city (``needs.csv``, ``partners.csv``, ``neighborhoods.geojson``),
ids prefixed with the metro (``M0001-N0000001``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path

import numpy as np

from ._errors import InputValidationError, Problem
from .geo import haversine_km
from .synthetic import SyntheticCity, default_extent_km, generate_city

__all__ = ["Metro", "metros", "generate_metro", "write_region", "REGION_BOX", "MIN_CITY_NEEDS"]

logger = logging.getLogger(__name__)

#: Default box of metro centres: (south, west, north, east), degrees (the contiguous US).
REGION_BOX: tuple[float, float, float, float] = (25.0, -124.0, 49.0, -67.0)
#: The fewest needs a metro gets.
MIN_CITY_NEEDS = 200
#: Most metros in one region.
MAX_CITIES = 2_000
#: Room kept between two metros' extents, km: more than any generated partner's radius
#: (8 km) plus the widest default clustering scale, so metros never share a pair.
_GAP_KM = 20.0
_ZIPF = 1.0  # metro sizes ~ 1 / rank
_KM_PER_DEG = 6371.0088 * math.pi / 180.0
_PLACEMENT_TRIES = 200


@dataclass(frozen=True)
class Metro:
    """One metro of a region: its place, size and seed.

    Attributes
    ----------
    index : int
        1-based position; ids of its rows start with ``M{index:04d}-``.
    lat, lon : float
        The middle of its square extent (``center`` of :func:`generate_city`).
    extent_km : float
        Side of its square extent.
    n_needs, n_partners : int
        Its share of the region's needs and partners.
    seed : int
        The seed of its city, derived from the region's seed and ``index``.
    """

    index: int
    lat: float
    lon: float
    extent_km: float
    n_needs: int
    n_partners: int
    seed: int

    @property
    def prefix(self) -> str:
        """The prefix of this metro's ids."""
        return f"M{self.index:04d}-"


def _split(total: int, weights: np.ndarray, floor: int) -> np.ndarray:
    """Integers >= ``floor`` summing to ``total``, proportional to ``weights`` (largest rest)."""
    spare = total - floor * weights.size
    raw = spare * weights / weights.sum()
    out = np.floor(raw).astype(np.int64)
    rest = spare - int(out.sum())
    out[np.argsort(-(raw - out), kind="stable")[:rest]] += 1
    return out + floor


def metros(
    n_needs: int,
    n_partners: int,
    n_cities: int,
    *,
    seed: int = 0,
    box: tuple[float, float, float, float] = REGION_BOX,
) -> list[Metro]:
    """Plan a region: the metros' sizes, places and seeds (deterministic for ``seed``).

    Parameters
    ----------
    n_needs, n_partners : int
        Totals over the region; every metro gets at least :data:`MIN_CITY_NEEDS` needs
        and one partner.
    n_cities : int
        Number of metros, 1..:data:`MAX_CITIES`.
    seed : int, default 0
        The region's seed (>= 0).
    box : (south, west, north, east)
        Degrees; metro extents lie inside it.

    Returns
    -------
    list of Metro
        Largest first. Any two metros' extents are at least ``_GAP_KM`` apart.

    Raises
    ------
    InputValidationError
        Bad arguments, or the metros do not fit in the box (every problem at once).

    Examples
    --------
    >>> [(m.n_needs, m.n_partners) for m in metros(3000, 300, 3, seed=1)]
    [(1509, 150), (855, 86), (636, 64)]
    """
    problems = []

    def bad(field: str, value: object, reason: str) -> None:
        problems.append(Problem(None, None, field, value, reason))

    def whole(value: object) -> bool:
        return isinstance(value, Integral) and not isinstance(value, bool)

    if not whole(n_cities) or not 1 <= int(n_cities) <= MAX_CITIES:
        bad("n_cities", n_cities, f"must be an integer in 1..{MAX_CITIES}")
    elif not whole(n_needs) or int(n_needs) < MIN_CITY_NEEDS * int(n_cities):
        bad("n_needs", n_needs, f"must be an integer >= {MIN_CITY_NEEDS} per metro "
            f"({MIN_CITY_NEEDS * int(n_cities)} for {n_cities})")  # fmt: skip
    elif not whole(n_partners) or int(n_partners) < int(n_cities):
        bad("n_partners", n_partners, f"must be an integer >= 1 per metro ({n_cities})")
    if not whole(seed) or int(seed) < 0:
        bad("seed", seed, "must be an integer >= 0")
    south, west, north, east = (float(v) for v in box)
    if not (-80 <= south < north <= 80 and -180 <= west < east <= 180):
        bad("box", box, "must be (south, west, north, east) with -80 <= south < north <= 80 "
            "and -180 <= west < east <= 180")  # fmt: skip
    if problems:
        raise InputValidationError(problems)
    weights = 1.0 / np.arange(1, n_cities + 1, dtype=np.float64) ** _ZIPF
    needs = _split(n_needs, weights, MIN_CITY_NEEDS)
    partners = _split(n_partners, needs / needs.sum(), 1)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E610]))
    placed: list[Metro] = []
    mid_lat, mid_lon, reach_km = (np.zeros(n_cities) for _ in range(3))
    for i in range(n_cities):
        side = default_extent_km(int(needs[i]))
        reach = side * math.sqrt(2) / 2  # half the diagonal: the farthest point from the middle
        for _ in range(_PLACEMENT_TRIES):
            # (lat, lon) is the middle of the metro's square extent
            lat = float(rng.uniform(south, north))
            lon = float(rng.uniform(west, east))
            half_lat = side / 2 / _KM_PER_DEG
            half_lon = side / 2 / (_KM_PER_DEG * math.cos(math.radians(abs(lat) + half_lat)))
            if not (south <= lat - half_lat and lat + half_lat <= north
                    and west <= lon - half_lon and lon + half_lon <= east):  # fmt: skip
                continue
            apart = haversine_km(lat, lon, mid_lat[:i], mid_lon[:i]) - reach_km[:i] - reach
            if bool((apart >= _GAP_KM).all()):
                break
        else:
            raise InputValidationError(
                [Problem(None, None, "n_cities", n_cities,
                         f"metro {i + 1} of {n_cities} ({int(needs[i]):,} needs, {side:.0f} km "
                         f"wide) finds no room {_GAP_KM:g} km from the others in the box "
                         f"{box}: use fewer metros or a larger box")]
            )  # fmt: skip
        lat, lon = round(lat, 6), round(lon, 6)
        mid_lat[i], mid_lon[i], reach_km[i] = lat, lon, reach
        city_seed = int(np.random.SeedSequence([int(seed), i + 1]).generate_state(1)[0])
        placed.append(Metro(i + 1, lat, lon, side, int(needs[i]), int(partners[i]), city_seed))
    return placed


def generate_metro(metro: Metro) -> SyntheticCity:
    """Generate one metro's city, its ids and neighborhood names prefixed.

    Parameters
    ----------
    metro : Metro
        From :func:`metros`.

    Returns
    -------
    SyntheticCity
    """
    city = generate_city(
        metro.n_needs,
        metro.n_partners,
        seed=metro.seed,
        center=(metro.lat, metro.lon),
        extent_km=metro.extent_km,
    )
    pre = metro.prefix
    needs = city.needs.assign(
        need_id=pre + city.needs["need_id"], neighborhood=pre + city.needs["neighborhood"]
    )
    partners = city.partners.assign(
        partner_id=pre + city.partners["partner_id"],
        name=f"Metro {metro.index} " + city.partners["name"],
    )
    hoods = city.neighborhoods.assign(
        neighborhood_id=pre + city.neighborhoods["neighborhood_id"],
        name=f"Metro {metro.index} " + city.neighborhoods["name"],
    )
    return SyntheticCity(needs, partners, hoods)


def write_region(plan: list[Metro], out_dir: str | Path) -> dict[str, Path]:
    """Generate and write a region metro by metro (the files of :func:`write_city`).

    Only one metro is in memory at a time. The output is deterministic: the same plan
    gives byte-identical files.

    Parameters
    ----------
    plan : list of Metro
        From :func:`metros`.
    out_dir : str or Path
        Directory, created when missing; existing files are overwritten.

    Returns
    -------
    dict of str to Path
        ``"needs"``, ``"partners"``, ``"neighborhoods"`` and ``"metros"`` (a CSV of the
        metros: index, corner, extent, sizes, seed).
    """
    from .synthetic import _city_paths, _geojson_text

    started = time.perf_counter()
    paths = _city_paths(out_dir)
    out = paths["needs"].parent
    paths["metros"] = out / "metros.csv"
    first = True
    with (
        paths["needs"].open("w", encoding="utf-8", newline="") as needs_f,
        paths["partners"].open("w", encoding="utf-8", newline="") as partners_f,
        paths["neighborhoods"].open("w", encoding="utf-8", newline="") as hoods_f,
    ):
        hoods_f.write('{"type": "FeatureCollection", "features": [\n')
        for metro in plan:
            city = generate_metro(metro)
            city.needs.to_csv(needs_f, index=False, header=first, lineterminator="\n")
            city.partners.to_csv(partners_f, index=False, header=first, lineterminator="\n")
            text = _geojson_text(city.neighborhoods)
            features = text[text.index("[\n") + 2 : text.rindex("\n]}")]
            hoods_f.write(("" if first else ",\n") + features)
            first = False
            logger.debug("metro %d: %d needs, %d partners", metro.index, metro.n_needs,
                        metro.n_partners)  # fmt: skip
        hoods_f.write("\n]}\n")
    rows = ["index,lat,lon,extent_km,needs,partners,seed"] + [
        f"{m.index},{m.lat!r},{m.lon!r},{m.extent_km!r},{m.n_needs},{m.n_partners},{m.seed}"
        for m in plan
    ]
    paths["metros"].write_text("\n".join(rows) + "\n", encoding="utf-8")
    logger.info(
        "wrote a region of %d metros to %s in %.2f s", len(plan), out, time.perf_counter() - started
    )
    return paths
