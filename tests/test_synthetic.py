"""Tests of matcher.synthetic: seeded synthetic cities."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

from matcher._errors import InputValidationError
from matcher.synthetic import (
    SYNTHETIC_NEED_COLUMNS,
    SYNTHETIC_NEIGHBORHOOD_COLUMNS,
    SYNTHETIC_PARTNER_COLUMNS,
    SyntheticCity,
    default_extent_km,
    default_neighborhood_count,
    generate_city,
    write_city,
)
from matcher.taxonomy import DEFAULT_CATEGORIES

NEED_COLUMNS = [
    "need_id",
    "category",
    "lat",
    "lon",
    "demand",
    "severity",
    "neighborhood",
    "languages",
    "reported_at",
    "source",
]
PARTNER_COLUMNS = [
    "partner_id",
    "name",
    "kind",
    "lat",
    "lon",
    "categories",
    "capacity",
    "radius_km",
    "languages",
]
NEIGHBORHOOD_COLUMNS = ["neighborhood_id", "name", "population", "hardship_index", "geometry"]
EARTH_RADIUS_KM = 6371.0088


@pytest.fixture(scope="module")
def city() -> SyntheticCity:
    return generate_city(2_000, 200, seed=7)


def haversine(lat1, lon1, lat2, lon2):
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(h, 0, 1)))


def test_columns_exact(city):
    assert list(city.needs.columns) == NEED_COLUMNS == list(SYNTHETIC_NEED_COLUMNS)
    assert list(city.partners.columns) == PARTNER_COLUMNS == list(SYNTHETIC_PARTNER_COLUMNS)
    assert list(city.neighborhoods.columns) == NEIGHBORHOOD_COLUMNS
    assert NEIGHBORHOOD_COLUMNS == list(SYNTHETIC_NEIGHBORHOOD_COLUMNS)
    assert isinstance(city.neighborhoods, gpd.GeoDataFrame)
    assert city.neighborhoods.crs.equals("EPSG:4326")
    assert len(city.needs) == 2_000 and len(city.partners) == 200


def test_ids_unique_and_formatted(city):
    needs, partners, hoods = city.needs, city.partners, city.neighborhoods
    assert needs["need_id"].is_unique and partners["partner_id"].is_unique
    assert hoods["neighborhood_id"].is_unique and hoods["name"].is_unique
    assert needs["need_id"].iloc[0] == "N0000001"
    assert needs["need_id"].str.fullmatch(r"N\d{7}").all()
    assert partners["partner_id"].iloc[0] == "P000001"
    assert partners["partner_id"].str.fullmatch(r"P\d{6}").all()
    assert hoods["neighborhood_id"].str.fullmatch(r"H\d{4}").all()
    assert hoods["name"].iloc[0] == "Neighborhood 1"
    orgs = partners[partners["kind"] == "organization"]
    vols = partners[partners["kind"] == "volunteer"]
    assert orgs["name"].iloc[0] == "Org 00001" and orgs["name"].str.fullmatch(r"Org \d{5}").all()
    assert vols["name"].iloc[0] == "Volunteer 00001"
    assert vols["name"].str.fullmatch(r"Volunteer \d{5}").all()
    assert partners["name"].is_unique


def test_id_width_grows_with_size():
    city = generate_city(12, 3, seed=1, n_neighborhoods=12_345, extent_km=200)
    assert city.neighborhoods["neighborhood_id"].iloc[0] == "H00001"
    assert city.neighborhoods["neighborhood_id"].is_unique


def test_need_values_in_range(city):
    needs = city.needs
    assert set(needs["category"]) <= set(DEFAULT_CATEGORIES)
    assert needs["demand"].between(1, 8).all() and needs["demand"].dtype.kind == "i"
    assert needs["severity"].between(1, 5).all() and needs["severity"].dtype.kind == "i"
    assert (needs["demand"] <= 2).mean() > 0.5  # skewed toward small
    assert set(needs["languages"]) <= {"", "es", "es;en", "pl", "zh"}
    assert 0.7 < (needs["languages"] == "").mean() < 0.9
    assert (needs["source"] == "synthetic").all()
    dated = needs["reported_at"][needs["reported_at"] != ""]
    assert 0 < len(dated) < len(needs)
    assert dated.str.fullmatch(r"\d{4}-\d{2}-\d{2}").all()
    pd.to_datetime(dated, format="%Y-%m-%d")  # all valid dates
    assert set(needs["neighborhood"]) <= set(city.neighborhoods["neighborhood_id"])


def test_category_mix_is_skewed(city):
    share = city.needs["category"].value_counts(normalize=True)
    assert share.iloc[0] > 3 * share.iloc[-1]


def test_partner_values_in_range(city):
    partners = city.partners
    assert set(partners["kind"]) == {"organization", "volunteer"}
    assert 0.05 < (partners["kind"] == "volunteer").mean() < 0.3
    codes = partners["categories"].str.split(";")
    assert all(set(c) <= set(DEFAULT_CATEGORIES) and len(set(c)) == len(c) for c in codes)
    assert all(c == sorted(c) for c in codes)
    org = (partners["kind"] == "organization").to_numpy()
    n_codes = codes.str.len().to_numpy()
    assert n_codes[org].min() >= 1 and n_codes[org].max() <= 3
    assert n_codes[~org].min() >= 1 and n_codes[~org].max() <= 2
    cap, rad = partners["capacity"].to_numpy(), partners["radius_km"].to_numpy()
    assert partners["capacity"].dtype.kind == "i"
    assert ((cap[org] >= 10) & (cap[org] <= 120)).all()
    assert ((cap[~org] >= 2) & (cap[~org] <= 12)).all()
    assert ((rad[org] >= 2.0) & (rad[org] <= 8.0)).all()
    assert ((rad[~org] >= 0.5) & (rad[~org] <= 3.0)).all()
    assert np.allclose(rad, np.round(rad, 1))
    langs = partners["languages"].str.split(";")
    assert all(x and all(len(code) == 2 for code in x) for x in langs)


def test_coordinates_valid_and_inside_extent(city):
    west, south, east, north = city.neighborhoods.total_bounds
    for frame in (city.needs, city.partners):
        lat, lon = frame["lat"].to_numpy(), frame["lon"].to_numpy()
        assert np.isfinite(lat).all() and np.isfinite(lon).all()
        assert (np.abs(lat) <= 90).all() and (np.abs(lon) <= 180).all()
        assert not ((lat == 0) & (lon == 0)).any()
        assert ((lat > south) & (lat < north) & (lon > west) & (lon < east)).all()
        assert np.array_equal(lat, np.round(lat, 6)) and np.array_equal(lon, np.round(lon, 6))
    # around the default centre (Chicago)
    assert abs(city.needs["lat"].mean() - 41.8781) < 0.1
    assert abs(city.needs["lon"].mean() + 87.6298) < 0.1


def test_every_need_inside_its_neighborhood(city):
    hoods = city.neighborhoods.set_index("neighborhood_id")
    polygons = hoods.geometry.loc[city.needs["neighborhood"]].to_numpy()
    points = shapely.points(city.needs["lon"].to_numpy(), city.needs["lat"].to_numpy())
    assert shapely.contains(polygons, points).all()
    joined = gpd.sjoin(
        gpd.GeoDataFrame(city.needs, geometry=points, crs="EPSG:4326"),
        city.neighborhoods,
        how="left",
        predicate="within",
    )
    assert len(joined) == len(city.needs)  # exactly one polygon each
    assert (joined["neighborhood"] == joined["neighborhood_id"]).all()


def test_neighborhoods_tile_the_extent(city):
    hoods = city.neighborhoods
    assert len(hoods) == default_neighborhood_count(2_000) == 4
    assert hoods.geometry.is_valid.all()
    union = shapely.union_all(hoods.geometry.to_numpy())
    assert math.isclose(union.area, shapely.box(*hoods.total_bounds).area, rel_tol=1e-9)
    assert math.isclose(shapely.area(hoods.geometry.to_numpy()).sum(), union.area, rel_tol=1e-9)
    assert hoods["population"].dtype.kind == "i" and (hoods["population"] > 0).all()
    assert hoods["hardship_index"].between(1, 98).all()
    assert hoods["hardship_index"].dtype.kind == "i"


@pytest.mark.parametrize("n_hoods", [1, 5, 7, 30])
def test_neighborhood_count_is_exact(n_hoods):
    city = generate_city(500, 50, seed=3, n_neighborhoods=n_hoods)
    assert len(city.neighborhoods) == n_hoods
    hoods = city.neighborhoods.set_index("neighborhood_id")
    polygons = hoods.geometry.loc[city.needs["neighborhood"]].to_numpy()
    points = shapely.points(city.needs["lon"].to_numpy(), city.needs["lat"].to_numpy())
    assert shapely.contains(polygons, points).all()


def test_default_extent_and_counts():
    assert default_extent_km(100_000) == 30.0
    assert default_extent_km(10) == 8.0
    assert math.isclose(default_extent_km(400_000), 60.0)
    assert default_neighborhood_count(0) == 4
    assert default_neighborhood_count(150_000) == 100
    assert default_neighborhood_count(10**8) == 2500


def test_extent_matches_extent_km():
    city = generate_city(300, 30, seed=2, extent_km=12.0)
    west, south, east, north = city.neighborhoods.total_bounds
    height = (north - south) * math.pi / 180 * EARTH_RADIUS_KM
    width = (east - west) * math.pi / 180 * EARTH_RADIUS_KM * math.cos(math.radians(41.8781))
    assert abs(height - 12.0) < 0.01 and abs(width - 12.0) < 0.01


def test_capacity_is_short_of_demand_per_category():
    city = generate_city(20_000, 2_000, seed=5)
    demand = city.needs.groupby("category")["demand"].sum()
    codes = city.partners["categories"].str.split(";")
    split = (
        pd.DataFrame({"category": codes, "capacity": city.partners["capacity"] / codes.str.len()})
        .explode("category")
        .groupby("category")["capacity"]
        .sum()
    )
    ratio = split.reindex(demand.index) / demand
    assert ratio.between(0.5, 0.95).all(), ratio


def test_some_needs_are_beyond_every_partner():
    city = generate_city(2_000, 200, seed=11)
    needs, partners = city.needs, city.partners
    d = haversine(
        needs["lat"].to_numpy()[:, None],
        needs["lon"].to_numpy()[:, None],
        partners["lat"].to_numpy()[None, :],
        partners["lon"].to_numpy()[None, :],
    )
    reachable = (d <= partners["radius_km"].to_numpy()[None, :]).any(axis=1)
    assert 1 <= (~reachable).sum() <= 0.05 * len(needs)


def test_same_seed_identical_frames(city):
    again = generate_city(2_000, 200, seed=7)
    pd.testing.assert_frame_equal(city.needs, again.needs)
    pd.testing.assert_frame_equal(city.partners, again.partners)
    pd.testing.assert_frame_equal(
        pd.DataFrame(city.neighborhoods.drop(columns="geometry")),
        pd.DataFrame(again.neighborhoods.drop(columns="geometry")),
    )
    assert city.neighborhoods.geometry.geom_equals_exact(again.neighborhoods.geometry, 0).all()


def test_different_seed_differs(city):
    other = generate_city(2_000, 200, seed=8)
    assert not city.needs.equals(other.needs)
    assert not city.partners.equals(other.partners)
    assert not np.array_equal(city.needs["lat"], other.needs["lat"])


def test_written_files_identical_for_same_seed(tmp_path, city):
    first = write_city(city, tmp_path / "a")
    second = write_city(generate_city(2_000, 200, seed=7), tmp_path / "b")
    other = write_city(generate_city(2_000, 200, seed=8), tmp_path / "c")
    assert set(first) == {"needs", "partners", "neighborhoods"}
    assert [p.name for p in first.values()] == [
        "needs.csv",
        "partners.csv",
        "neighborhoods.geojson",
    ]
    for key in first:
        assert first[key].is_file()
        assert first[key].read_bytes() == second[key].read_bytes()
        assert first[key].read_bytes() != other[key].read_bytes()


def test_written_files_round_trip(tmp_path, city):
    paths = write_city(city, tmp_path / "nested" / "out")
    needs = pd.read_csv(paths["needs"], dtype=str, keep_default_na=False)
    assert list(needs.columns) == NEED_COLUMNS
    assert needs["need_id"].tolist() == city.needs["need_id"].tolist()
    assert np.array_equal(needs["lat"].astype(float), city.needs["lat"])
    assert np.array_equal(needs["lon"].astype(float), city.needs["lon"])
    assert needs["reported_at"].tolist() == city.needs["reported_at"].tolist()
    partners = pd.read_csv(paths["partners"], dtype=str, keep_default_na=False)
    assert list(partners.columns) == PARTNER_COLUMNS
    assert np.array_equal(partners["radius_km"].astype(float), city.partners["radius_km"])
    assert partners["categories"].tolist() == city.partners["categories"].tolist()
    doc = json.loads(paths["neighborhoods"].read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(city.neighborhoods)
    hoods = gpd.read_file(paths["neighborhoods"])
    assert hoods.crs.equals("EPSG:4326")
    assert hoods["neighborhood_id"].tolist() == city.neighborhoods["neighborhood_id"].tolist()
    assert hoods.geometry.geom_equals_exact(city.neighborhoods.geometry, 0).all()
    # needs read back from the files still fall inside their neighborhood polygons
    polygons = hoods.set_index("neighborhood_id").geometry.loc[needs["neighborhood"]]
    points = shapely.points(needs["lon"].astype(float), needs["lat"].astype(float))
    assert shapely.contains(polygons.to_numpy(), points).all()


def test_custom_categories_and_center():
    cats = ("alpha", "beta", "gamma")
    city = generate_city(400, 40, seed=4, categories=cats, center=(-33.87, 151.21))
    assert set(city.needs["category"]) == set(cats)
    assert all(set(c.split(";")) <= set(cats) for c in city.partners["categories"])
    assert abs(city.needs["lat"].mean() + 33.87) < 0.1
    single = generate_city(100, 10, seed=4, categories=["only"])
    assert (single.needs["category"] == "only").all()
    assert (single.partners["categories"] == "only").all()


def test_empty_and_tiny_cities():
    empty = generate_city(0, 0)
    assert list(empty.needs.columns) == NEED_COLUMNS and len(empty.needs) == 0
    assert list(empty.partners.columns) == PARTNER_COLUMNS and len(empty.partners) == 0
    assert len(empty.neighborhoods) == 4
    tiny = generate_city(1, 1, seed=9, extent_km=1.0)  # too small for a partner desert
    assert len(tiny.needs) == 1 and len(tiny.partners) == 1


def test_write_empty_city(tmp_path):
    paths = write_city(generate_city(0, 0), tmp_path)
    assert paths["needs"].read_text(encoding="utf-8") == ",".join(NEED_COLUMNS) + "\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_needs": -1},
        {"n_partners": 2.5},
        {"n_needs": True},
        {"seed": -3},
        {"center": (95.0, 0.0)},
        {"center": "chicago"},
        {"center": (0.01, 0.01)},
        {"center": (10.0, 179.99)},
        {"extent_km": 0.0},
        {"extent_km": float("nan")},
        {"categories": "food_access"},
        {"categories": []},
        {"categories": ["a", "a"]},
        {"categories": ["a;b"]},
        {"n_neighborhoods": 0},
        {"n_neighborhoods": 500_000, "extent_km": 1.0},
    ],
)
def test_invalid_arguments(kwargs):
    args = {"n_needs": 10, "n_partners": 2} | kwargs
    n_needs, n_partners = args.pop("n_needs"), args.pop("n_partners")
    with pytest.raises(InputValidationError):
        generate_city(n_needs, n_partners, **args)
