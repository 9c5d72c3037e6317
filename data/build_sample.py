"""Build the deterministic Chicago sample data set shipped in ``data/sample/``.

The facts come from public Chicago data (City of Chicago Data Portal and the
GeoDa Center sample-data site, see ``data/README.md``).  Capacities, service
radii, languages of partners and every volunteer are *generated* with a fixed
seed, because no public source has them.

Outputs (all WGS84, coordinates rounded to 6 decimals):

* ``needs.csv``              311 sanitation complaints, carjackings, the needs
                             ``matcher assess`` makes from the Healthy Chicago
                             Survey, and indicator-based needs for the
                             categories the survey does not measure;
* ``partners.csv``           real facilities (organizations) plus generated
                             volunteers;
* ``neighborhoods.geojson``  the 77 community areas (RFC 7946);
* ``assessment/``            the survey subset, the tract populations and the
                             mapping file ``matcher assess`` reads to make the
                             survey needs (``matcher assess
                             data/sample/assessment/mapping.toml`` gives them again).

Run from the repository root::

    python data/build_sample.py [--source DIR] [--out DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

LOG = logging.getLogger("build_sample")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = REPO_ROOT / ".." / "shared" / "data" / "chicago"
DEFAULT_OUT = REPO_ROOT / "data" / "sample"

SEED = 20141
DECIMALS = 6
WGS84 = "EPSG:4326"
METRIC_CRS = "EPSG:26916"  # UTM 16N, used only for nearest-area look-ups
BOUNDARY_TOLERANCE_M = 1.0  # areas this close to the nearest one count as tied

NEED_COLUMNS = [
    "need_id", "category", "lat", "lon", "demand", "severity",
    "neighborhood", "languages", "reported_at", "source",
]
PARTNER_COLUMNS = [
    "partner_id", "name", "kind", "lat", "lon", "categories",
    "capacity", "radius_km", "languages",
]

CATEGORIES: tuple[str, ...] = (
    "youth_engagement", "crime_prevention", "elderly_support", "victim_support",
    "mental_health", "substance_use", "housing_stability", "food_access",
    "environmental_design", "language_access", "digital_access", "education",
    "transportation", "conflict_mediation", "reentry_support",
)

# --------------------------------------------------------------------------- sources
SRC_HARDSHIP = "chicago_community_areas_hardship_crime.geojson"
SRC_HEALTH = "chicago_community_areas_health_acs2014.geojson"
SRC_CMAP = "chicago_community_areas_cmap_acs2020.geojson"
SRC_TRACTS = "chicago_tracts_sdoh2014.geojson"
SRC_LIQUOR = "chicago_liquor_stores_2015.geojson"
SRC_311 = "chicago_311_sanitation_complaints_2014.csv"
SRC_CARJACK = "chicago_carjackings_2020.geojson"
SRC_FACILITIES = "chicago_partner_facilities_combined.geojson"

NAME_OVERRIDES = {"OHARE": "O'Hare"}  # community names the source spells without punctuation

# ISO 639-1 code -> CMAP ACS 2020 "language spoken at home" column.  CMAP's
# "Slavic" group is mapped to Polish, by far the largest Slavic language in Chicago.
LANGUAGE_COLUMNS: dict[str, str] = {
    "es": "SPANISH", "pl": "SLAVIC", "zh": "CHINESE",
    "tl": "TAGALOG", "ar": "ARABIC", "ko": "KOREAN",
}

# --------------------------------------------------------------------------- needs: 311
SANITATION_SUBSAMPLE = 2500
# violation type -> (demand, severity); a missing type counts as "Other".
SANITATION_SCORES: dict[str, tuple[int, int]] = {
    "Garbage in yard": (2, 2),
    "Garbage in alley": (2, 2),
    "Dumpster not being emptied": (2, 2),
    "Overflowing carts": (2, 2),
    "Construction Site Cleanliness/Fence": (2, 2),
    "Standing water": (3, 3),
    "Dog feces in yard": (1, 1),
    "Graffiti Commercial Vehicle": (1, 1),
    "Other": (1, 1),
}

# --------------------------------------------------------------------------- needs: carjackings
CARJACK_CRIME = (4, 4)  # (demand, severity) of the crime_prevention need
CARJACK_VICTIM = (3, 5)  # every 3rd carjacking also gets a victim_support need
CARJACK_VICTIM_EVERY = 3

# --------------------------------------------------------------------------- needs: survey
SRC_HCS = "assessments/healthy_chicago_survey_community_areas_2021_22.csv"
SURVEY_DIR = "assessment"  # beside needs.csv: what `matcher assess` reads
SURVEY_FILE = "healthy_chicago_survey_2021_22.csv"
TRACTS_FILE = "tract_population_2014.geojson"
# The survey indicators and their demand model. The rates and populations are the survey's;
# which direction is worse is the indicator's meaning; units_per_affected and the baselines
# are planning assumptions, sized so that each category's demand is of the order of the
# other categories' (about 300-800 units a week), so the sample keeps real gaps.
SURVEY_INDICATORS: tuple[tuple[str, str, str, float, float, str], ...] = (
    # column, category, worse, units_per_affected, baseline, what the survey asked
    ("HCSNVP_2021-2022", "crime_prevention", "higher", 0.0006, 10,
     "adults who report violence in their neighborhood"),
    ("HCSUMHAP_2021-2022", "mental_health", "higher", 0.0005, 20,
     "unmet mental-health treatment need (among adults in distress)"),
    ("HCSRIP_2021-2022", "digital_access", "lower", 0.005, 5,
     "adults with reliable internet (a low rate is the problem)"),
    ("CHAVQOS_2021-2022", "elderly_support", "higher", 0.0017, 20, "adult loneliness"),
    ("HCSNLP_2021-2022", "environmental_design", "higher", 0.0004, 15,
     "adults who see litter in their neighborhood"),
    ("HCSNSQP_2021-2022", "environmental_design", "lower", 0.00025, 20,
     "adults who rate their sidewalks good (a low rate is the problem)"),
    ("HCSWTSP_2021-2022", "transportation", "lower", 0.0013, 5,
     "adults for whom a transit stop is easy to walk to (a low rate is the problem)"),
    ("HCSTLEP_2021-2022", "conflict_mediation", "lower", 0.0011, 30,
     "trust in law enforcement (a low rate is the problem)"),
    ("HCSCBP_2021-2022", "conflict_mediation", "lower", 0.0004, 30,
     "adults who feel they belong in their community (a low rate is the problem)"),
)  # fmt: skip

# --------------------------------------------------------------------------- needs: indicators
ASSESSMENT_PER_CATEGORY = 210  # 7 categories -> 1,470 indicator-based needs
# category -> column of the area table holding the indicator (a per-person share or rate),
# for the categories the survey does not measure
ASSESSMENT_INDICATORS: dict[str, str] = {
    "youth_engagement": "share_under18",
    "food_access": "share_poverty",
    "education": "share_no_hs",
    "language_access": "share_lep",
    "housing_stability": "share_crowded",
    "substance_use": "liquor_x_hardship",
    "reentry_support": "share_unemployed",
}
LEP_LANGUAGE_THRESHOLD = 0.10  # areas above this LEP share tag some needs with languages
NEED_ADD_ENGLISH = 0.3  # chance a tagged need is bilingual ("es;en")

# --------------------------------------------------------------------------- partners
@dataclass(frozen=True)
class FacilityType:
    """How one kind of facility is turned into a partner."""

    categories: tuple[str, ...]
    capacity: tuple[int, int]  # inclusive range, units of demand per week
    radius_km: float


FACILITY_TYPES: dict[str, FacilityType] = {
    "early_childhood": FacilityType(("youth_engagement", "education"), (1, 4), 1.5),
    "early_learning_immigrant": FacilityType(
        ("youth_engagement", "education", "language_access"), (4, 10), 2.0),
    "domestic_violence": FacilityType(("victim_support", "mental_health"), (8, 20), 6.0),
    "violence_prevention": FacilityType(
        ("victim_support", "conflict_mediation", "mental_health"), (8, 20), 6.0),
    "homeless_youth": FacilityType(("housing_stability", "youth_engagement"), (4, 12), 5.0),
    "homeless_outreach": FacilityType(
        ("housing_stability", "mental_health", "substance_use"), (6, 16), 6.0),
    "homeless_housing": FacilityType(("housing_stability",), (3, 10), 4.0),
    "emergency_food": FacilityType(("food_access",), (4, 12), 2.5),
    "digital_literacy": FacilityType(("digital_access", "education"), (6, 15), 3.0),
    "benefits_tax_legal": FacilityType(("housing_stability", "food_access"), (5, 12), 4.0),
    "senior_meals": FacilityType(("elderly_support", "food_access"), (6, 15), 2.5),
    "senior_home_services": FacilityType(("elderly_support", "transportation"), (6, 15), 4.0),
    "senior_services": FacilityType(("elderly_support", "mental_health"), (6, 15), 4.0),
    "reentry_center": FacilityType(
        ("reentry_support", "mental_health", "substance_use"), (15, 30), 8.0),
    "workforce": FacilityType(("reentry_support", "education"), (8, 20), 8.0),
    "youth_services": FacilityType(("youth_engagement", "conflict_mediation"), (10, 20), 5.0),
    "substance_treatment": FacilityType(("substance_use", "mental_health"), (2, 5), 5.0),
    "wic_clinic": FacilityType(("food_access",), (10, 25), 5.0),
    "sti_clinic": FacilityType(("substance_use", "mental_health"), (8, 15), 8.0),
    "park": FacilityType(("youth_engagement", "environmental_design"), (6, 18), 1.5),
    "police_station": FacilityType(
        ("crime_prevention", "victim_support", "conflict_mediation"), (80, 150), 5.0),
    "library": FacilityType(("digital_access", "education", "language_access"), (6, 15), 3.0),
    "senior_center_regional": FacilityType(
        ("elderly_support", "food_access", "transportation"), (30, 50), 6.0),
    "senior_center_satellite": FacilityType(
        ("elderly_support", "food_access", "transportation"), (12, 25), 3.0),
    "community_service_center": FacilityType(
        ("housing_stability", "food_access", "reentry_support"), (40, 80), 8.0),
    "community_college": FacilityType(
        ("education", "digital_access", "language_access"), (30, 60), 8.0),
}

# (facility `category` prefix, keywords in `subcategory` or None for any, type); first match wins.
FACILITY_RULES: tuple[tuple[str, tuple[str, ...] | None, str], ...] = (
    ("DFSS delegate agency: Children Services", ("Immigrant",), "early_learning_immigrant"),
    ("DFSS delegate agency: Children Services", None, "early_childhood"),
    ("DFSS delegate agency: Domestic Violence", ("Visitation", "Violence Prevention"),
     "violence_prevention"),
    ("DFSS delegate agency: Domestic Violence", None, "domestic_violence"),
    ("DFSS delegate agency: Homeless Services", ("Youth",), "homeless_youth"),
    ("DFSS delegate agency: Homeless Services", ("Outreach", "Clinical", "Specialized"),
     "homeless_outreach"),
    ("DFSS delegate agency: Homeless Services", None, "homeless_housing"),
    ("DFSS delegate agency: Human Services Delivery", ("Emergency Food",), "emergency_food"),
    ("DFSS delegate agency: Human Services Delivery", ("Digital",), "digital_literacy"),
    ("DFSS delegate agency: Human Services Delivery", None, "benefits_tax_legal"),
    ("DFSS delegate agency: Senior Services", ("Satellite Senior",), "senior_center_satellite"),
    ("DFSS delegate agency: Senior Services", ("Dining", "Meals"), "senior_meals"),
    ("DFSS delegate agency: Senior Services", ("Chore", "Caregiver"), "senior_home_services"),
    ("DFSS delegate agency: Senior Services", None, "senior_services"),
    ("DFSS delegate agency: Workforce Services", ("Re-Entry",), "reentry_center"),
    ("DFSS delegate agency: Workforce Services", None, "workforce"),
    ("Workforce center", None, "workforce"),
    ("DFSS delegate agency: Youth Services", None, "youth_services"),
    ("Health service", ("Substance",), "substance_treatment"),
    ("Health service", ("Women-Infant",), "wic_clinic"),
    ("Health service", ("STI",), "sti_clinic"),
    ("Park", None, "park"),
    ("Police Station", None, "police_station"),
    ("Public library", None, "library"),
    ("Senior center", ("Regional",), "senior_center_regional"),
    ("Senior center", ("Satellite",), "senior_center_satellite"),
    ("Community service center", None, "community_service_center"),
    ("Chicago Community College", None, "community_college"),
)

PARTNER_LANGUAGE_FACTOR = 3.0  # P(partner speaks l) = min(cap, factor * area share of l)
PARTNER_LANGUAGE_CAP = 0.8

N_VOLUNTEERS = 400
VOLUNTEER_CAPACITY = (2, 10)
VOLUNTEER_RADIUS_KM = (1.0, 4.0)
VOLUNTEER_NO_ENGLISH = 0.15  # chance a multilingual volunteer does not list English
# Relative weights of what volunteers sign up for (normalised in code).
VOLUNTEER_CATEGORY_WEIGHTS: dict[str, float] = {
    "youth_engagement": 14, "elderly_support": 12, "food_access": 12, "education": 10,
    "digital_access": 8, "transportation": 8, "environmental_design": 8,
    "language_access": 7, "crime_prevention": 6, "conflict_mediation": 5,
    "mental_health": 3, "housing_stability": 3, "reentry_support": 2,
    "victim_support": 1, "substance_use": 1,
}


# =========================================================================== geometry helpers
def polygonal_part(geom: shapely.Geometry) -> shapely.Geometry:
    """Return only the (multi)polygon parts of ``geom``."""
    parts = [p for p in shapely.get_parts(geom) if p.geom_type in ("Polygon", "MultiPolygon")]
    polys = [q for p in parts for q in shapely.get_parts(p)]
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def repair_and_round(geom: shapely.Geometry, label: str) -> shapely.Geometry:
    """Repair an invalid polygon, snap it to the output precision and orient it (RFC 7946)."""
    if not geom.is_valid:
        LOG.warning("%s: invalid polygon in source (%s); repaired with shapely.make_valid",
                    label, shapely.is_valid_reason(geom))
        geom = polygonal_part(shapely.make_valid(geom))
    geom = shapely.set_precision(geom, 10.0**-DECIMALS)
    geom = shapely.transform(geom, lambda xy: np.round(xy, DECIMALS))
    if not geom.is_valid:
        LOG.warning("%s: invalid after rounding; repaired again", label)
        geom = polygonal_part(shapely.make_valid(geom))
    return shapely.orient_polygons(geom)  # exterior rings counter-clockwise


def random_points(geom: shapely.Geometry, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``n`` points uniformly (in lon/lat) inside ``geom`` by rejection sampling.

    Points are rounded to the output precision *before* the containment test, so the
    written coordinates are guaranteed to lie inside the written polygon.
    """
    xmin, ymin, xmax, ymax = geom.bounds
    shapely.prepare(geom)
    out = np.empty((0, 2))
    while len(out) < n:
        batch = max(16, 2 * (n - len(out)))
        xy = np.round(rng.uniform((xmin, ymin), (xmax, ymax), size=(batch, 2)), DECIMALS)
        out = np.vstack([out, xy[shapely.contains_xy(geom, xy[:, 0], xy[:, 1])]])
    return out[:n]


def assign_areas(lon: Sequence[float], lat: Sequence[float], areas: gpd.GeoDataFrame,
                 hint: Sequence[float] | None = None) -> np.ndarray:
    """Community-area id of each point: the containing polygon, else the nearest one.

    Points on a shared boundary (or just outside the city) are nearest to several areas
    within ``BOUNDARY_TOLERANCE_M``; among those the source's own area id ``hint`` wins,
    then the lowest id.
    """
    pts = gpd.GeoDataFrame(geometry=gpd.points_from_xy(lon, lat), crs=WGS84)
    polys = areas[["geometry"]].reset_index(names="area_id")
    hit = gpd.sjoin(pts, polys, how="left", predicate="within")
    hit = hit[~hit.index.duplicated(keep="first")]["area_id"]
    missing = hit.isna()
    if missing.any():
        ids = polys["area_id"].to_numpy()
        shapes = polys.to_crs(METRIC_CRS).geometry.to_numpy()
        lost = pts.loc[missing].to_crs(METRIC_CRS).geometry
        for point, geom in lost.items():
            dist = shapely.distance(shapes, geom)
            candidates = ids[dist <= dist.min() + BOUNDARY_TOLERANCE_M].tolist()
            preferred = int(hint[point]) if hint is not None and pd.notna(hint[point]) else None
            hit.loc[point] = preferred if preferred in candidates else min(candidates)
        LOG.info("%d of %d points lie on a boundary or outside every community area; "
                 "nearest area used", int(missing.sum()), len(pts))
    return hit.astype(int).to_numpy()


# =========================================================================== community areas
def load_areas(source: Path) -> gpd.GeoDataFrame:
    """Load the 77 community areas with the indicators used downstream, indexed by area id."""
    hard = gpd.read_file(source / SRC_HARDSHIP).set_index("AREAID").sort_index()
    health = gpd.read_file(source / SRC_HEALTH, ignore_geometry=True)
    health = health.set_index(health["ComAreaID"].astype(int))
    cmap = gpd.read_file(source / SRC_CMAP, ignore_geometry=True)
    cmap = cmap.set_index(cmap["area_numbe"].astype(int))
    tracts = gpd.read_file(source / SRC_TRACTS, ignore_geometry=True)

    areas = gpd.GeoDataFrame(
        {
            "name": hard["community"].map(title_case),
            "population": hard["population"].astype(int),
            "hardship_index": hard["harship_in"].astype(int),
            "side": cmap["district"].reindex(hard.index),
        },
        geometry=[repair_and_round(g, f"community area {i} ({title_case(n)})")
                  for i, n, g in zip(hard.index, hard["community"], hard.geometry, strict=True)],
        crs=WGS84,
        index=hard.index,
    )
    areas["hardship_quintile"] = (
        pd.qcut(areas["hardship_index"].rank(method="first"), 5, labels=False) + 1
    ).astype(int)

    areas["share_under18"] = health["Under18P"] / 100
    areas["share_over65"] = health["Over65P"] / 100
    areas["violent_crime_rate"] = health["VlntCrRt"]
    areas["share_poverty"] = hard["poverty"] / 100
    areas["share_crowded"] = hard["crowded"] / 100
    areas["share_unemployed"] = hard["unemployed"] / 100
    areas["hardship_share"] = hard["harship_in"] / 100
    areas["share_no_internet"] = cmap["NOINTERNET"] / cmap["TOT_HH"]
    areas["share_no_vehicle"] = cmap["NO_VEH"] / cmap["TOT_HH"]
    areas["share_no_hs"] = cmap["LT_HS"] / cmap["POP_25OV"]
    for code, column in LANGUAGE_COLUMNS.items():
        areas[f"speakers_{code}"] = cmap[column] / cmap["POP_OV5"]

    tracts["area_id"] = tracts["commarea"].astype(int)
    tracts["lep"] = tracts["Pop2014"] * tracts["EP_LIMENG"] / 100
    lep = tracts.groupby("area_id")[["lep", "Pop2014"]].sum()
    areas["share_lep"] = (lep["lep"] / lep["Pop2014"]).reindex(areas.index).fillna(0.0)

    liquor = gpd.read_file(source / SRC_LIQUOR)
    counts = pd.Series(assign_areas(liquor.geometry.x, liquor.geometry.y, areas)).value_counts()
    outlets_per_capita = counts.reindex(areas.index, fill_value=0) / areas["population"]
    areas["liquor_x_hardship"] = outlets_per_capita * areas["hardship_share"]

    if areas.drop(columns="geometry").isna().any().any():
        raise ValueError("community-area join left missing values")
    return areas


def title_case(name: str) -> str:
    """Title-case an upper-case community name ("MCKINLEY PARK" -> "McKinley Park")."""
    name = NAME_OVERRIDES.get(name.strip(), name.strip().title())
    return re.sub(r"\bMc(\w)", lambda m: "Mc" + m.group(1).upper(), name)


# =========================================================================== needs
def located(df: pd.DataFrame, areas: gpd.GeoDataFrame, hint_column: str) -> dict[str, object]:
    """Round a source table's ``lat``/``lon`` and look up their community area.

    Rounding comes first: many points are geocoded onto boundary streets, and rounding
    after the look-up could move them into the neighbouring area.
    """
    lat, lon = df["Latitude"].round(DECIMALS), df["Longitude"].round(DECIMALS)
    area = assign_areas(lon, lat, areas, hint=df[hint_column].to_numpy())
    return {"lat": lat, "lon": lon, "neighborhood": area}


def needs_from_311(source: Path, areas: gpd.GeoDataFrame) -> pd.DataFrame:
    """Environmental-design needs: an every-k-th subsample of 2014 sanitation complaints."""
    raw = pd.read_csv(source / SRC_311, dtype={"Service_Request_Number": str})
    df = raw.dropna(subset=["Latitude", "Longitude"])
    df = df[(df["Latitude"] != 0) & (df["Longitude"] != 0)]
    df = df[~df["Status"].str.endswith("- Dup")]  # flagged by the city as duplicate requests
    df = df.sort_values(["Service_Request_Number", "Completion_Date"], kind="stable")
    df = df.drop_duplicates("Service_Request_Number", keep="first")
    step = max(1, len(df) // SANITATION_SUBSAMPLE)
    LOG.info("311: %d rows, %d usable after dropping duplicates, keeping every %d-th",
             len(raw), len(df), step)
    df = df.iloc[::step].reset_index(drop=True)

    kind = df["What_is_the_Nature_of_this_Code_Violation"].fillna("Other")
    unknown = sorted(set(kind) - set(SANITATION_SCORES))
    if unknown:
        raise ValueError(f"unmapped 311 violation types: {unknown}")
    scores = kind.map(SANITATION_SCORES)
    return pd.DataFrame({
        "need_id": "311-" + df["Service_Request_Number"],
        "category": "environmental_design",
        **located(df, areas, "Community_Area"),
        "demand": scores.str[0], "severity": scores.str[1],
        "reported_at": df["Creation_Date"],
        "source": "chicago_311_2014",
    })


def needs_from_carjackings(source: Path, areas: gpd.GeoDataFrame) -> pd.DataFrame:
    """Crime-prevention needs from 2020 carjackings; every third also a victim-support need."""
    df = gpd.read_file(source / SRC_CARJACK, ignore_geometry=True)
    df = df.sort_values("ID", ignore_index=True)
    base = pd.DataFrame({
        "need_id": "CJ-" + df["ID"].astype(str),
        "category": "crime_prevention",
        **located(df, areas, "community_area"),
        "demand": CARJACK_CRIME[0], "severity": CARJACK_CRIME[1],
        "reported_at": pd.to_datetime(df["Date"], format="%m/%d/%Y %I:%M:%S %p")
        .dt.strftime("%Y-%m-%d"),
        "source": "chicago_carjackings_2020",
    })
    victims = base.iloc[::CARJACK_VICTIM_EVERY].assign(
        need_id=lambda d: d["need_id"] + "-V", category="victim_support",
        demand=CARJACK_VICTIM[0], severity=CARJACK_VICTIM[1],
    )
    return pd.concat([base, victims], ignore_index=True)


def allocate(weights: pd.Series, total: int) -> pd.Series:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder)."""
    exact = weights / weights.sum() * total
    counts = np.floor(exact).astype(int)
    order = (exact - counts).sort_values(ascending=False, kind="stable").index
    counts[order[: total - counts.sum()]] += 1
    return counts


def needs_from_indicators(areas: gpd.GeoDataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Assessment needs: per category, counts per area proportional to population x indicator."""
    rows: list[dict[str, object]] = []
    for category, column in ASSESSMENT_INDICATORS.items():
        counts = allocate(areas["population"] * areas[column], ASSESSMENT_PER_CATEGORY)
        for area_id, n in counts.items():
            if n == 0:
                continue
            severity = int(areas.at[area_id, "hardship_quintile"])
            xy = random_points(areas.at[area_id, "geometry"], int(n), rng)
            demand = np.clip(severity + rng.integers(-1, 2, size=n), 1, 6)
            rows.extend(
                {
                    "need_id": f"CA-{area_id:02d}-{category}-{i + 1:04d}",
                    "category": category, "lat": lat, "lon": lon,
                    "demand": int(d), "severity": severity, "neighborhood": area_id,
                    "reported_at": "", "source": "community_area_indicators",
                }
                for i, ((lon, lat), d) in enumerate(zip(xy, demand, strict=True))
            )
    return pd.DataFrame(rows)


def survey_mapping() -> str:
    """Return the mapping file that turns the survey subset into needs (``matcher assess``)."""
    lines = [
        "# The sample city's survey needs: `matcher assess data/sample/assessment/mapping.toml`",
        "# gives the needs of needs.csv whose source starts with hcs-2021-22 (their languages",
        "# are generated by data/build_sample.py). Written by data/build_sample.py.",
        "#",
        "# Healthy Chicago Survey 2021-2022 (Chicago Department of Public Health, Chicago Health",
        "# Atlas): rates per community area. Units are hours of outreach per week; the",
        "# units_per_affected and baselines are planning assumptions, not survey figures.",
        "",
        "[areas]",
        'file = "../neighborhoods.geojson"',
        'id = "neighborhood_id"',
        'name = "name"',
        "",
        "[population]   # where people live: 2014 tract populations, at each tract's point",
        f'file = "{TRACTS_FILE}"',
        'area = "commarea"',
        'count = "Pop2014"',
        "",
        "[[sources]]",
        'name = "hcs-2021-22"',
        'kind = "area_indicators"',
        f'file = "{SURVEY_FILE}"',
        'area = "GEOID"',
        'population = "Population"',
    ]
    for column, category, worse, upa, baseline, what in SURVEY_INDICATORS:
        lines += [
            "",
            f"  [[sources.indicators]]   # {what}",
            f'  column = "{column}"',
            f'  category = "{category}"',
            f'  worse = "{worse}"',
            f"  units_per_affected = {upa}",
            f"  baseline = {baseline}",
        ]
    return "\n".join(lines) + "\n"


def write_survey_inputs(source: Path, areas: gpd.GeoDataFrame, out: Path) -> Path:
    """Write the survey subset, the tract populations and the mapping; return the mapping.

    The subset keeps the 77 community-area rows and the columns the mapping reads, with the
    publisher's text unchanged. A tract is kept as its representative point (on the tract)
    with its community area and 2014 population.
    """
    folder = out / SURVEY_DIR
    folder.mkdir(parents=True, exist_ok=True)
    hcs = pd.read_csv(source / SRC_HCS, dtype=str, keep_default_na=False)
    hcs = hcs[hcs["Layer"] == "Community area"]
    columns = ["GEOID", "Name", "Population"] + [c[0] for c in SURVEY_INDICATORS]
    hcs = hcs[columns].assign(order=hcs["GEOID"].astype(int)).sort_values("order")
    if sorted(hcs["GEOID"].astype(int)) != sorted(areas.index):
        raise ValueError("the survey's community areas are not the sample's")
    write_csv(hcs.drop(columns="order"), folder / SURVEY_FILE)
    tracts = gpd.read_file(source / SRC_TRACTS).to_crs(WGS84)
    points = shapely.point_on_surface(tracts.geometry.to_numpy())
    features = [
        json.dumps({
            "type": "Feature",
            "properties": {"tract": str(int(float(t))), "commarea": int(a), "Pop2014": int(p)},
            "geometry": {"type": "Point",
                         "coordinates": [round(shapely.get_x(g), DECIMALS),
                                         round(shapely.get_y(g), DECIMALS)]},
        }, separators=(",", ":"))
        for t, a, p, g in sorted(zip(tracts["geoid10"], tracts["commarea"], tracts["Pop2014"],
                                     points, strict=True), key=lambda r: str(r[0]))
    ]
    (folder / TRACTS_FILE).write_text('{"type":"FeatureCollection","features":[\n'
                                      + ",\n".join(features) + "\n]}\n", encoding="utf-8")
    mapping = folder / "mapping.toml"
    mapping.write_text(survey_mapping(), encoding="utf-8")
    return mapping


def needs_from_survey(mapping: Path) -> pd.DataFrame:
    """The survey needs, as ``matcher assess`` makes them from the written mapping."""
    import matcher

    needs = matcher.assess(mapping).needs.copy()
    needs["neighborhood"] = needs["neighborhood"].astype(int)
    needs["reported_at"] = ""
    return needs


def language_tags(areas: gpd.GeoDataFrame, area_ids: np.ndarray, tagged: np.ndarray,
                  rng: np.random.Generator) -> list[str]:
    """Primary non-English language (drawn from the area's mix) for the tagged needs."""
    codes = list(LANGUAGE_COLUMNS)
    mix = areas[[f"speakers_{c}" for c in codes]].to_numpy()
    out: list[str] = []
    for area_id, flag in zip(area_ids, tagged, strict=True):
        if not flag:
            out.append("")
            continue
        p = mix[areas.index.get_loc(area_id)]
        code = str(rng.choice(codes, p=p / p.sum())) if p.sum() > 0 else "es"
        out.append(f"{code};en" if rng.random() < NEED_ADD_ENGLISH else code)
    return out


def build_needs(source: Path, areas: gpd.GeoDataFrame, rng: np.random.Generator,
                survey: Path) -> pd.DataFrame:
    """All needs, with language tags, sorted by ``need_id``."""
    needs = pd.concat([
        needs_from_311(source, areas),
        needs_from_carjackings(source, areas),
        needs_from_indicators(areas, rng),
        needs_from_survey(survey),
    ], ignore_index=True).sort_values("need_id", ignore_index=True)
    if not needs["need_id"].is_unique:
        raise ValueError("duplicate need_id")

    lep = areas["share_lep"].reindex(needs["neighborhood"]).to_numpy()
    draws = rng.random(len(needs))
    tagged = (needs["category"] == "language_access").to_numpy() | (
        (lep >= LEP_LANGUAGE_THRESHOLD) & (draws < lep)
    )
    needs["languages"] = language_tags(areas, needs["neighborhood"].to_numpy(), tagged, rng)
    needs["neighborhood"] = needs["neighborhood"].astype(str)
    # whole demands stay whole in the file (4, not 4.0); the survey's come in tenths
    needs["demand"] = pd.Series([int(d) if float(d).is_integer() else float(d)
                                 for d in needs["demand"]], index=needs.index, dtype=object)
    needs["lat"] = needs["lat"].astype(float).round(DECIMALS)
    needs["lon"] = needs["lon"].astype(float).round(DECIMALS)
    return needs[NEED_COLUMNS]


# =========================================================================== partners
def facility_type(category: str, subcategory: str | None) -> str:
    """Map a facility's (category, subcategory) to a key of ``FACILITY_TYPES``."""
    for prefix, keywords, key in FACILITY_RULES:
        if category.startswith(prefix) and (
            keywords is None or any(k in (subcategory or "") for k in keywords)
        ):
            return key
    raise ValueError(f"no facility type for {category!r} / {subcategory!r}")


def partner_languages(areas: gpd.GeoDataFrame, area_ids: np.ndarray,
                      rng: np.random.Generator) -> list[list[str]]:
    """Non-English languages of each partner, more likely where the area speaks them."""
    codes = list(LANGUAGE_COLUMNS)
    share = areas[[f"speakers_{c}" for c in codes]].reindex(area_ids).to_numpy()
    p = np.minimum(PARTNER_LANGUAGE_CAP, PARTNER_LANGUAGE_FACTOR * share)
    speaks = rng.random(p.shape) < p
    return [[c for c, s in zip(codes, row, strict=True) if s] for row in speaks]


def clean_name(name: str | None, organization: str | None) -> str:
    """Facility name, followed by its organization in parentheses when that adds anything."""
    name = " ".join(str(name).split())
    org = " ".join(str(organization).split()) if isinstance(organization, str) else ""
    key_name, key_org = (re.sub(r"[^a-z0-9]", "", s.lower()) for s in (name, org))
    return f"{name} ({org})" if key_org and key_org not in key_name else name


def build_organizations(source: Path, areas: gpd.GeoDataFrame,
                        rng: np.random.Generator) -> pd.DataFrame:
    """Partners of kind ``organization`` from the combined facility file."""
    fac = gpd.read_file(source / SRC_FACILITIES).sort_values("fid", ignore_index=True)
    types = [facility_type(c, s) for c, s in zip(fac["category"], fac["subcategory"], strict=True)]
    spec = [FACILITY_TYPES[t] for t in types]
    lon, lat = fac.geometry.x.round(DECIMALS), fac.geometry.y.round(DECIMALS)
    langs = partner_languages(areas, assign_areas(lon, lat, areas), rng)
    LOG.info("facility types: %s", pd.Series(types).value_counts().to_dict())
    return pd.DataFrame({
        "partner_id": [f"ORG-{fid:04d}" for fid in fac["fid"]],
        "name": [clean_name(n, o) for n, o in zip(fac["name"], fac["organization"], strict=True)],
        "kind": "organization",
        "lat": lat, "lon": lon,
        "categories": [";".join(s.categories) for s in spec],
        "capacity": [int(rng.integers(s.capacity[0], s.capacity[1] + 1)) for s in spec],
        "radius_km": [s.radius_km for s in spec],
        "languages": [";".join(["en", *extra]) for extra in langs],
    })


def build_volunteers(areas: gpd.GeoDataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Generate volunteers at random points in community areas, weighted by population."""
    pop = areas["population"].to_numpy(dtype=float)
    area_ids = rng.choice(areas.index.to_numpy(), size=N_VOLUNTEERS, p=pop / pop.sum())
    xy = np.vstack([random_points(areas.at[a, "geometry"], 1, rng) for a in area_ids])
    cats = list(VOLUNTEER_CATEGORY_WEIGHTS)
    w = np.array(list(VOLUNTEER_CATEGORY_WEIGHTS.values()), dtype=float)
    chosen = [rng.choice(cats, size=rng.integers(1, 3), replace=False, p=w / w.sum())
              for _ in area_ids]
    langs = partner_languages(areas, area_ids, rng)
    drop_en = rng.random(N_VOLUNTEERS) < VOLUNTEER_NO_ENGLISH
    return pd.DataFrame({
        "partner_id": [f"V-{i + 1:04d}" for i in range(N_VOLUNTEERS)],
        "name": [f"Volunteer {i + 1:04d}" for i in range(N_VOLUNTEERS)],
        "kind": "volunteer",
        "lat": xy[:, 1], "lon": xy[:, 0],
        "categories": [";".join(c for c in CATEGORIES if c in set(ch)) for ch in chosen],
        "capacity": rng.integers(VOLUNTEER_CAPACITY[0], VOLUNTEER_CAPACITY[1] + 1,
                                 size=N_VOLUNTEERS),
        "radius_km": rng.uniform(*VOLUNTEER_RADIUS_KM, size=N_VOLUNTEERS).round(1),
        "languages": [";".join(extra if (drop and extra) else ["en", *extra])
                      for extra, drop in zip(langs, drop_en, strict=True)],
    })


def build_partners(source: Path, areas: gpd.GeoDataFrame,
                   rng: np.random.Generator) -> pd.DataFrame:
    """Organizations plus volunteers, sorted by ``partner_id``."""
    partners = pd.concat(
        [build_organizations(source, areas, rng), build_volunteers(areas, rng)],
        ignore_index=True,
    ).sort_values("partner_id", ignore_index=True)
    if not partners["partner_id"].is_unique:
        raise ValueError("duplicate partner_id")
    return partners[PARTNER_COLUMNS]


# =========================================================================== output
def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a CSV with Unix line endings and no index."""
    df.to_csv(path, index=False, lineterminator="\n")


def write_neighborhoods(areas: gpd.GeoDataFrame, path: Path) -> None:
    """Write the community areas as RFC 7946 GeoJSON, one feature per line."""
    features = [
        json.dumps({
            "type": "Feature",
            "properties": {
                "neighborhood_id": str(area_id),
                "name": row["name"],
                "population": int(row["population"]),
                "hardship_index": int(row["hardship_index"]),
                "side": row["side"],
            },
            "geometry": shapely.geometry.mapping(row["geometry"]),
        }, separators=(",", ":"), ensure_ascii=False)
        for area_id, row in areas.iterrows()
    ]
    path.write_text('{"type":"FeatureCollection","features":[\n'
                    + ",\n".join(features) + "\n]}\n", encoding="utf-8")


def summarize(needs: pd.DataFrame, partners: pd.DataFrame, out: Path) -> str:
    """Human-readable summary: counts per category, demand vs capacity, file sizes."""
    per_partner = partners.assign(category=partners["categories"].str.split(";")).explode(
        "category")
    table = pd.DataFrame({
        "needs": needs["category"].value_counts(),
        "demand": needs.groupby("category")["demand"].sum(),
        "partners": per_partner["category"].value_counts(),
        "capacity_offered": per_partner.groupby("category")["capacity"].sum(),
    }).reindex(list(CATEGORIES)).fillna(0).astype(int)
    demand, capacity = int(needs["demand"].sum()), int(partners["capacity"].sum())
    lines = [
        f"needs: {len(needs)}  partners: {len(partners)} "
        f"({(partners['kind'] == 'organization').sum()} organizations, "
        f"{(partners['kind'] == 'volunteer').sum()} volunteers)",
        "(capacity_offered counts a multi-category partner's full capacity in each category)",
        table.to_string(),
        f"total demand {demand}, total capacity {capacity} ({capacity / demand:.0%})",
    ]
    for f in sorted(p for p in out.rglob("*") if p.is_file()):
        digest = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
        name = f.relative_to(out).as_posix()
        lines.append(f"{name:45s} {f.stat().st_size:>9,d} bytes  sha256 {digest}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Build all three sample files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="directory with the Chicago source files")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    source = args.source.resolve()
    # Independent child streams, so changing the needs does not reshuffle the partners.
    needs_rng, partners_rng = np.random.default_rng(SEED).spawn(2)
    areas = load_areas(source)
    args.out.mkdir(parents=True, exist_ok=True)
    write_neighborhoods(areas, args.out / "neighborhoods.geojson")  # the survey's areas
    survey = write_survey_inputs(source, areas, args.out)
    needs = build_needs(source, areas, needs_rng, survey)
    partners = build_partners(source, areas, partners_rng)

    write_csv(needs, args.out / "needs.csv")
    write_csv(partners, args.out / "partners.csv")
    coverage = partners["capacity"].sum() / needs["demand"].sum()
    if not 0.6 <= coverage <= 0.8:
        LOG.warning("capacity covers %.0f%% of demand, outside the intended 60-80%%",
                    100 * coverage)
    print(summarize(needs, partners, args.out))


if __name__ == "__main__":
    main()
