"""Synthetic regions: many metros, deterministic, independent, planable (generate --cities)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

import matcher
from matcher import InputValidationError
from matcher.synthetic_region import MIN_CITY_NEEDS, metros, write_region

from .conftest import assert_clean_exit, invoke
from .oracle import gc_km_array


@pytest.fixture(scope="module")
def region(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("region")
    result = invoke(
        "generate", "--needs", "6000", "--partners", "600", "--cities", "7", "--seed", "4",
        "--out", str(out), "-q",
    )  # fmt: skip
    assert_clean_exit(result, 0)
    return out


def _metro(ids: pd.Series) -> pd.Series:
    return ids.astype(str).str.slice(0, 5)


def test_sizes_add_up_and_ids_are_unique(region: Path) -> None:
    needs = pd.read_csv(region / "needs.csv", dtype=str, keep_default_na=False)
    partners = pd.read_csv(region / "partners.csv", dtype=str, keep_default_na=False)
    plan = pd.read_csv(region / "metros.csv")
    assert len(needs) == 6000 and len(partners) == 600 and len(plan) == 7
    assert needs["need_id"].is_unique and partners["partner_id"].is_unique
    got = needs.groupby(_metro(needs["need_id"])).size().tolist()
    assert got == plan["needs"].tolist()
    assert (plan["needs"] >= MIN_CITY_NEEDS).all()
    assert plan["needs"].is_monotonic_decreasing  # Zipf: the largest first
    assert (_metro(needs["neighborhood"]) == _metro(needs["need_id"])).all()


def test_every_need_lies_in_its_own_neighborhood(region: Path) -> None:
    needs = matcher.read_needs(region / "needs.csv").frame
    hoods = gpd.read_file(region / "neighborhoods.geojson").set_index("neighborhood_id")
    polygons = hoods.geometry.reindex(needs["neighborhood"]).to_numpy()
    points = shapely.points(needs["lon"].to_numpy(), needs["lat"].to_numpy())
    assert shapely.contains(polygons, points).all()


def test_no_partner_reaches_another_metro(region: Path) -> None:
    """Metros are independent parts: no partner's radius (plus a cluster's width) reaches
    a need of another metro."""
    needs = matcher.read_needs(region / "needs.csv").frame
    partners = matcher.read_partners(region / "partners.csv").frame
    n_metro = _metro(needs["need_id"]).to_numpy()
    for _, p in partners.iterrows():
        other = n_metro != str(p["partner_id"])[:5]
        d = gc_km_array(p["lat"], p["lon"], needs["lat"].to_numpy()[other],
                        needs["lon"].to_numpy()[other])  # fmt: skip
        assert d.min() > float(p["radius_km"]) + 5.0, p["partner_id"]


def test_a_region_plans_metro_by_metro(region: Path, tmp_path: Path) -> None:
    result = matcher.plan(
        region / "needs.csv",
        region / "partners.csv",
        neighborhoods=str(region / "neighborhoods.geojson"),
    )
    members = result.need_clusters.assign(metro=_metro(result.need_clusters["need_id"]))
    assert (members.groupby("cluster_id")["metro"].nunique() == 1).all()
    a = result.assignments
    cluster_metro = members.drop_duplicates("cluster_id").set_index("cluster_id")["metro"]
    assert (cluster_metro.reindex(a["cluster_id"]).to_numpy() == _metro(a["partner_id"])).all()
    assert result.solver["components"] >= 7


def test_same_seed_same_bytes_other_seed_other_region(region: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    write_region(metros(6000, 600, 7, seed=4), again)
    for name in ("needs.csv", "partners.csv", "neighborhoods.geojson", "metros.csv"):
        assert (again / name).read_bytes() == (region / name).read_bytes(), name
    other = tmp_path / "other"
    write_region(metros(6000, 600, 7, seed=5), other)
    assert (other / "needs.csv").read_bytes() != (region / "needs.csv").read_bytes()


@settings(max_examples=40, deadline=None)
@given(
    n_cities=st.integers(1, 40),
    extra=st.integers(0, 200_000),
    seed=st.integers(0, 2**32),
)
def test_metros_share_out_exactly_and_keep_apart(n_cities: int, extra: int, seed: int) -> None:
    n_needs = n_cities * MIN_CITY_NEEDS + extra
    n_partners = n_cities + extra // 10
    plan = metros(n_needs, n_partners, n_cities, seed=seed)
    assert sum(m.n_needs for m in plan) == n_needs
    assert sum(m.n_partners for m in plan) == n_partners
    assert all(m.n_needs >= MIN_CITY_NEEDS and m.n_partners >= 1 for m in plan)
    lat = np.array([m.lat for m in plan])
    lon = np.array([m.lon for m in plan])
    half_diag = np.array([m.extent_km for m in plan]) * np.sqrt(2) / 2
    for i in range(len(plan)):
        d = gc_km_array(lat[i], lon[i], lat, lon)
        d[i] = np.inf
        # the farthest points of two extents are half diagonals from their middles
        assert (d - half_diag[i] - half_diag > 8.0 + 5.0).all()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--needs", "500", "--partners", "10", "--cities", "3"], "field 'n_needs'"),
        (["--needs", "5000", "--partners", "2", "--cities", "3"], "field 'n_partners'"),
        (["--needs", "5000", "--partners", "20", "--cities", "0"], "'--cities'"),
        (["--needs", "5000000", "--partners", "20000", "--cities", "2001"], "field 'n_cities'"),
    ],
    ids=["needs-per-metro", "partners-per-metro", "cities-0", "too-many"],
)
def test_bad_region_arguments_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "region"
    result = invoke("generate", *args, "--out", str(out))
    assert_clean_exit(result, 2)
    assert message in result.stderr
    assert not out.exists()


def test_a_box_too_small_is_refused_naming_the_metro() -> None:
    with pytest.raises(InputValidationError) as info:
        metros(400_000, 4_000, 2, seed=0, box=(40.0, -90.0, 40.5, -89.5))
    assert "finds no room" in str(info.value)
