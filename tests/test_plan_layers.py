"""A plan's layers as geopandas users expect: GeoDataFrames in EPSG:4326, a short repr, explore.

On a slice of the sample city (3 community areas) with an equity floor and recruit sites,
so every layer is there. Each layer is checked against the plain table written to its CSV
file (the same rows and values) and its geometry against the points it joins.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely

import matcher
from matcher import MatchConfig

from .test_webmap import write_slice


@pytest.fixture(scope="module")
def fair(tmp_path_factory):
    paths = write_slice(tmp_path_factory.mktemp("slice"))
    p = matcher.plan(
        paths["needs"], paths["partners"], neighborhoods=paths["neighborhoods"],
        config=MatchConfig(min_coverage=0.4),
    )  # fmt: skip
    return p.with_recruit(2, radius_km=1.0, capacity=20)


def _same_table(layer: gpd.GeoDataFrame, table: pd.DataFrame) -> None:
    assert isinstance(layer, gpd.GeoDataFrame) and layer.crs.to_epsg() == 4326
    assert list(layer.columns) == [*table.columns, "geometry"]
    pd.testing.assert_frame_equal(pd.DataFrame(layer.drop(columns="geometry")), table)


def test_assignments_are_lines_from_partner_to_cluster(fair) -> None:
    a = fair.assignments
    _same_table(a, fair.assignment_table)
    assert len(a) > 50 and set(a.geom_type) == {"LineString"}
    start = shapely.get_point(a.geometry.to_numpy(), 0)
    end = shapely.get_point(a.geometry.to_numpy(), -1)
    partners = fair.partners.set_index("partner_id").loc[a["partner_id"]]
    clusters = fair.clusters.set_index("cluster_id").loc[a["cluster_id"]]
    np.testing.assert_array_equal(shapely.get_x(start), partners["lon"].to_numpy())
    np.testing.assert_array_equal(shapely.get_y(start), partners["lat"].to_numpy())
    np.testing.assert_array_equal(shapely.get_x(end), clusters["centroid_lon"].to_numpy())
    np.testing.assert_array_equal(shapely.get_y(end), clusters["centroid_lat"].to_numpy())
    assert fair.assignments is a  # made once
    assert fair.total_cost == pytest.approx(float((a["cost"]).sum()))


def test_unmet_gaps_and_recruit_sites_are_points_and_polygons(fair) -> None:
    u = fair.unmet
    _same_table(u, fair.unmet_table)
    assert len(u) > 0 and set(u.geom_type) == {"Point"}
    np.testing.assert_array_equal(u.geometry.x.to_numpy(), u["centroid_lon"].to_numpy())
    g = fair.gaps
    assert g is not None
    _same_table(g, fair.gap_table)
    assert set(g.geom_type) <= {"Polygon", "MultiPolygon"} and g.geometry.notna().all()
    hoods = fair.neighborhoods.set_index("neighborhood_id")
    for row in g.itertuples():
        assert row.geometry.equals(hoods.geometry.loc[str(row.neighborhood)])
    r = fair.recruit_sites
    assert r is not None and len(r) > 0
    _same_table(r, fair.recruit.sites)
    assert set(r.geom_type) == {"Point"}
    np.testing.assert_array_equal(r.geometry.y.to_numpy(), r["lat"].to_numpy())


def test_a_plan_without_polygons_or_recruits(tmp_path) -> None:
    from .test_webmap import write_slice as slice_of

    paths = slice_of(tmp_path)
    p = matcher.plan(paths["needs"], paths["partners"])
    assert p.recruit_sites is None and isinstance(p.unmet, gpd.GeoDataFrame)
    # gaps by the needs' own neighborhood column: no polygon to draw them with
    assert p.gaps is not None and len(p.gaps) and p.gaps.geometry.isna().all()
    _same_table(p.gaps, p.gap_table)


def test_repr_is_one_short_line(fair) -> None:
    text = repr(fair)
    assert "\n" not in text and len(text) < 250, text
    m = fair.metrics["units"]
    assert text == (
        f"<Plan: {len(fair.need_table):,} needs in {len(fair.clusters):,} clusters, "
        f"{len(fair.partners):,} partners, {len(fair.assignment_table):,} assignments; "
        f"{m['served']:,.1f} of {m['demand']:,.1f} units served, {m['unmet']:,.1f} unmet; "
        f"optimal ({fair.solver['name']})>"
    )


def test_explore_draws_every_layer(fair) -> None:
    folium = pytest.importorskip("folium", reason="pip install -e '.[explore]'")
    m = fair.explore(tiles=None)
    assert isinstance(m, folium.Map)
    names = [getattr(c, "layer_name", None) for c in m._children.values()]
    for layer in ("clusters", "assignments", "partners", "unmet", "gaps", "recruit sites"):
        assert layer in names, (layer, names)
    assert any(isinstance(c, folium.LayerControl) for c in m._children.values())
    html = m.get_root().render()
    assert "LineString" in html and fair.assignment_table["partner_id"].iloc[0] in html


def test_names_stand_beside_ids_and_ids_sort_as_numbers(fair) -> None:
    a = fair.assignment_table
    partners = fair.partners.set_index("partner_id")
    clusters = fair.clusters.set_index("cluster_id")
    assert list(a.columns[-4:]) == ["partner_name", "partner_kind", "category", "neighborhood"]
    assert a["partner_name"].tolist() == partners.loc[a["partner_id"], "name"].tolist()
    assert a["partner_kind"].tolist() == partners.loc[a["partner_id"], "kind"].tolist()
    assert a["category"].tolist() == clusters.loc[a["cluster_id"], "category"].tolist()
    assert a["neighborhood"].tolist() == clusters.loc[a["cluster_id"], "neighborhood"].tolist()
    names = dict(zip(fair.neighborhoods["neighborhood_id"], fair.neighborhoods["name"],
                     strict=True))  # fmt: skip
    g = fair.gap_table
    assert list(g.columns[:3]) == ["neighborhood", "neighborhood_name", "category"]
    assert g["neighborhood_name"].tolist() == [names[h] for h in g["neighborhood"]]
    from matcher.equity import natural_order

    for ids in (g["neighborhood"].drop_duplicates().tolist(),
                fair.floors["neighborhood_id"].tolist()):  # fmt: skip
        assert ids == sorted(ids, key=lambda h: (not h.isdigit(), int(h) if h.isdigit() else 0,
                                                 h))  # fmt: skip
    assert [["10", "9", "x", "1"][i] for i in natural_order(["10", "9", "x", "1"])] == [
        "1", "9", "10", "x"
    ]  # fmt: skip


def test_the_cli_names_the_neighborhoods_whose_floor_is_not_met(tmp_path) -> None:
    from click.testing import CliRunner

    from matcher.cli import main

    paths = write_slice(tmp_path / "in")
    res = CliRunner().invoke(main, [
        "plan", "--needs", str(paths["needs"]), "--partners", str(paths["partners"]),
        "--neighborhoods", str(paths["neighborhoods"]), "--min-coverage", "0.95",
        "--out", str(tmp_path / "out"), "--models-dir", str(tmp_path / "models"),
    ])  # fmt: skip
    assert res.exit_code == 0, res.output
    floors = pd.read_csv(tmp_path / "out" / "floors.csv", dtype={"neighborhood_id": str})
    missed = floors[~floors["floor_met"]]
    assert len(missed) > 0
    named = ", ".join(f"{r.name} ({r.neighborhood_id})" for r in missed.itertuples())
    assert (
        f"coverage floors met in {len(floors) - len(missed)} of {len(floors)} neighborhoods; "
        f"not met: {named} (reasons in floors.csv)"
    ) in res.output, res.output


def test_lock_messages_speak_in_units_and_say_why_cluster_ids_differ(tmp_path) -> None:
    from matcher import InputValidationError

    paths = write_slice(tmp_path / "in")
    plain = matcher.plan(paths["needs"], paths["partners"], neighborhoods=paths["neighborhoods"])
    rows = plain.assignment_table[["cluster_id", "partner_id", "units"]]
    rows.to_csv(tmp_path / "lock.csv", index=False)
    # the lock of a plain plan in a plan whose clusters form within neighborhoods
    with pytest.raises(InputValidationError) as err:
        matcher.plan(paths["needs"], paths["partners"], neighborhoods=paths["neighborhoods"],
                     config=MatchConfig(min_coverage=0.4), lock=tmp_path / "lock.csv")  # fmt: skip
    reasons = [p.reason for p in err.value.problems]
    assert reasons and all("clusters within neighborhoods (min_coverage)" in r for r in reasons)
    # more locked than a cluster's demand: said in units, not the solver's quanta
    first = rows.iloc[[0]].copy()
    demand = float(plain.clusters.set_index("cluster_id").at[first["cluster_id"].iloc[0],
                                                              "demand"])  # fmt: skip
    first["units"] = demand + 1
    first.to_csv(tmp_path / "over.csv", index=False)
    with pytest.raises(InputValidationError) as over:
        matcher.plan(paths["needs"], paths["partners"], neighborhoods=paths["neighborhoods"],
                     lock=tmp_path / "over.csv")  # fmt: skip
    text = str(over.value)
    assert "quanta" not in text and f"its demand ({demand:g} units)" in text, text
    assert f"({demand + 1:g} units) exceed" in text, text
