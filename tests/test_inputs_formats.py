"""Input formats and files beside CSV, through ``matcher plan`` / ``validate`` (issue #19).

* custom taxonomies (``--taxonomy FILE``, ``matcher.Taxonomy.from_file``): a valid file in
  a plan, aliases, and bad files;
* GeoPackage needs, partners and neighborhoods, and vector files in another CRS, with and
  without ``--input-crs``: the plan equals the plan of the equivalent CSV;
* bad neighborhood files: duplicate ids, non-polygons, a missing id column.

Vector files are written here with geopandas (no network, no fixtures on disk).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import pytest
import shapely
from click.testing import Result

import matcher
from matcher import InputValidationError, Taxonomy

from .conftest import (
    NEEDS_HEADER,
    PARTNERS_HEADER,
    assert_clean_exit,
    invoke,
    plan_cli,
    read_csv,
    write_input,
)

# EPSG:3435 is NAD83 / Illinois East in US feet: the CRS Chicago's own GIS files use
LOCAL_CRS = "EPSG:3435"


# ---------------------------------------------------------------------------------------
# custom taxonomies
# ---------------------------------------------------------------------------------------

# Needs and partners in categories that are not in the default taxonomy; "Tags" and
# "pot-holes" are aliases.
CIVIC_NEEDS = (
    NEEDS_HEADER
    + "n1,graffiti,41.8800,-87.6300,4,3\n"
    + "n2,Tags,41.8805,-87.6305,3,2\n"
    + "n3,pot-holes,41.9500,-87.6500,2,5\n"
)
CIVIC_PARTNERS = (
    PARTNERS_HEADER
    + "p1,Cleanup Crew,organization,41.8810,-87.6300,graffiti,10,2.0\n"
    + "p2,Road Team,organization,41.9510,-87.6500,Street Repair,5,3.0\n"
)
CIVIC_CSV = "code,aliases\nGraffiti,Tags;tagging\nStreet Repair,pot-holes; potholes\n"
CIVIC_JSON = json.dumps(
    {
        "codes": ["graffiti", "street_repair"],
        "aliases": {"tags": "graffiti", "tagging": "graffiti", "pot holes": "street_repair"},
    }
)


@pytest.fixture
def civic(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_input(tmp_path, "needs.csv", CIVIC_NEEDS),
        write_input(tmp_path, "partners.csv", CIVIC_PARTNERS),
    )


@pytest.mark.parametrize(
    ("name", "text"), [("civic.csv", CIVIC_CSV), ("civic.json", CIVIC_JSON)], ids=["csv", "json"]
)
def test_plan_with_a_custom_taxonomy(
    name: str, text: str, civic: tuple[Path, Path], tmp_path: Path
) -> None:
    needs, partners = civic
    taxonomy = write_input(tmp_path, name, text)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--taxonomy", str(taxonomy))
    assert_clean_exit(result, 0)
    # aliases resolve: "Tags" is graffiti, "pot-holes" street_repair
    clusters = {r["cluster_id"]: r["category"] for r in read_csv(out / "clusters.csv")}
    assert sorted(clusters.values()) == ["graffiti", "graffiti", "street_repair"]
    assignments = sorted(
        (clusters[r["cluster_id"]], r["partner_id"], float(r["units"]))
        for r in read_csv(out / "assignments.csv")
    )
    assert assignments == [
        ("graffiti", "p1", 3.0),
        ("graffiti", "p1", 4.0),
        ("street_repair", "p2", 2.0),
    ]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["parameters"]["taxonomy"] == ["graffiti", "street_repair"]
    assert summary["metrics"]["units"]["unmet"] == 0


def test_csv_and_json_taxonomies_give_the_same_plan(
    civic: tuple[Path, Path], tmp_path: Path
) -> None:
    needs, partners = civic
    outs = []
    for name, text in (("civic.csv", CIVIC_CSV), ("civic.json", CIVIC_JSON)):
        out = tmp_path / f"plan_{name}"
        taxonomy = write_input(tmp_path, name, text)
        result = plan_cli(needs, partners, out, tmp_path / "m", "-q", "--taxonomy", str(taxonomy))
        assert_clean_exit(result, 0)
        outs.append(out)
    for f in ("assignments.csv", "clusters.csv", "need_clusters.csv", "unmet.csv"):
        assert (outs[0] / f).read_bytes() == (outs[1] / f).read_bytes(), f


def test_without_the_taxonomy_the_custom_categories_are_unknown(
    civic: tuple[Path, Path], tmp_path: Path
) -> None:
    needs, partners = civic
    result = plan_cli(needs, partners, tmp_path / "out", tmp_path / "models")
    assert_clean_exit(result, 2)
    assert "needs.csv, row 2, field 'category', value 'graffiti'" in result.stderr
    assert "partners.csv, row 3, field 'categories', value 'Street Repair'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_validate_with_a_custom_taxonomy(civic: tuple[Path, Path], tmp_path: Path) -> None:
    needs, partners = civic
    taxonomy = write_input(tmp_path, "civic.csv", CIVIC_CSV)
    result = invoke(
        "validate", "--needs", str(needs), "--partners", str(partners), "--taxonomy", str(taxonomy)
    )
    assert_clean_exit(result, 0)
    assert "ok: 3 needs, 2 partners" in result.stdout
    # a category of neither the taxonomy nor its aliases gets a suggestion from it
    bad = write_input(tmp_path, "bad.csv", CIVIC_NEEDS.replace("n3,pot-holes", "n3,grafiti"))
    result = invoke(
        "validate", "--needs", str(bad), "--partners", str(partners), "--taxonomy", str(taxonomy)
    )
    assert_clean_exit(result, 2)
    assert "bad.csv, row 4, field 'category', value 'grafiti'" in result.stderr
    assert "did you mean 'graffiti'?" in result.stderr
    assert "Valid codes: graffiti, street_repair" in result.stderr


def test_taxonomy_from_file_normalises_codes_and_aliases(tmp_path: Path) -> None:
    path = write_input(tmp_path, "t.csv", b"\xef\xbb\xbf" + CIVIC_CSV.encode())  # Excel's BOM
    tax = Taxonomy.from_file(path)
    assert tax.codes == ("graffiti", "street_repair")
    assert dict(tax.aliases) == {
        "tags": "graffiti",
        "tagging": "graffiti",
        "pot_holes": "street_repair",
        "potholes": "street_repair",
    }
    assert tax.resolve("TAGS") == "graffiti"
    assert tax.resolve("Pot Holes") == "street_repair"
    assert tax.resolve("street-repair") == "street_repair"
    assert tax.resolve("food_access") is None
    assert tax.suggest("grafitti") == "graffiti"
    from_json = Taxonomy.from_file(write_input(tmp_path, "t.json", CIVIC_JSON))
    assert from_json.codes == tax.codes
    assert from_json.resolve("pot-holes") == "street_repair"
    assert from_json.with_codes(["lighting", "graffiti"]).codes == (
        "graffiti",
        "street_repair",
        "lighting",
    )


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "t.csv",
            "name,aliases\ngraffiti,tags\n",
            "t.csv, field 'code': a taxonomy CSV needs a 'code' column",
        ),
        ("t.csv", "", "t.csv, field 'code': a taxonomy CSV needs a 'code' column"),
        ("t.csv", "code,aliases\n", "t.csv, field 'code': a taxonomy CSV needs a 'code' column"),
        ("t.json", "", "t.json, field 'codes': expected {'codes': [...], 'aliases': {...}}"),
        ("t.json", '{"categories": ["graffiti"]}', "t.json, field 'codes': expected {'codes'"),
        ("t.json", '["graffiti"]', "t.json, field 'codes': expected {'codes'"),
        ("t.json", "{not json", "t.json, field 'codes': expected {'codes'"),
        ("t.json", b"\xff\xfe\x00", "t.json: cannot read taxonomy file"),
    ],
    ids=[
        "csv-no-code-column",
        "csv-empty",
        "csv-header-only",
        "json-empty",
        "json-no-codes",
        "json-list",
        "json-invalid",
        "not-utf8",
    ],
)
def test_bad_taxonomy_file_exits_2_naming_file_and_field(
    name: str, content: str | bytes, expected: str, civic: tuple[Path, Path], tmp_path: Path
) -> None:
    needs, partners = civic
    taxonomy = write_input(tmp_path, name, content)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--taxonomy", str(taxonomy))
    assert_clean_exit(result, 2)
    assert result.stderr.startswith("error: invalid input\n1 problem(s) in the input:\n")
    assert f"  - {tmp_path / expected}" in result.stderr
    assert not out.exists()


def test_missing_taxonomy_file_exits_2(civic: tuple[Path, Path], tmp_path: Path) -> None:
    needs, partners = civic
    missing = tmp_path / "nope.csv"
    result = plan_cli(needs, partners, tmp_path / "out", tmp_path / "m", "--taxonomy", str(missing))
    assert_clean_exit(result, 2)
    assert f"  - {missing}: " in result.stderr
    assert "not found" in result.stderr or "No such file" in result.stderr
    assert not (tmp_path / "out").exists()


def test_taxonomy_problems_name_file_row_and_field(
    civic: tuple[Path, Path], tmp_path: Path
) -> None:
    """Duplicates, bad codes and bad aliases exit 2 naming where they are."""
    needs, partners = civic
    cases = {
        "dup.csv": (
            "code\ngraffiti\nstreet_repair\ngraffiti\n",
            "row 4, field 'code', value 'graffiti': duplicate code; first at row 2",
        ),
        "blank.csv": ('code\ngraffiti\n""\n', "row 3, field 'code', value '': codes are letters"),
        "alias.json": (
            '{"codes": ["graffiti"], "aliases": {"x": "nope"}}',
            "field 'alias', value 'x': maps to unknown code 'nope'",
        ),
    }
    for name, (text, message) in cases.items():
        taxonomy = write_input(tmp_path, name, text)
        result = plan_cli(
            needs, partners, tmp_path / "out", tmp_path / "m", "--taxonomy", str(taxonomy)
        )
        assert_clean_exit(result, 2)
        assert message in result.stderr, name
        assert not (tmp_path / "out").exists()


def test_duplicate_taxonomy_code_names_file_and_row(
    civic: tuple[Path, Path], tmp_path: Path
) -> None:
    needs, partners = civic
    taxonomy = write_input(tmp_path, "dup.csv", "code\ngraffiti\nstreet_repair\ngraffiti\n")
    result = plan_cli(
        needs, partners, tmp_path / "out", tmp_path / "m", "--taxonomy", str(taxonomy)
    )
    assert_clean_exit(result, 2)
    assert f"{taxonomy}, row 4, field 'code', value 'graffiti': duplicate code" in result.stderr


def test_json_taxonomy_codes_must_be_a_list(civic: tuple[Path, Path], tmp_path: Path) -> None:
    needs, partners = civic
    taxonomy = write_input(tmp_path, "t.json", '{"codes": "graffiti"}')
    result = plan_cli(
        needs, partners, tmp_path / "out", tmp_path / "m", "--taxonomy", str(taxonomy)
    )
    assert_clean_exit(result, 2)
    assert f"{taxonomy}, field 'codes'" in result.stderr
    assert "duplicate code" not in result.stderr


def test_taxonomy_code_with_a_separator_is_rejected(
    civic: tuple[Path, Path], tmp_path: Path
) -> None:
    needs, partners = civic
    taxonomy = write_input(
        tmp_path, "t.csv", 'code,aliases\ngraffiti,tags\n"street;repair",pot-holes\n'
    )
    result = invoke(
        "validate", "--needs", str(needs), "--partners", str(partners), "--taxonomy", str(taxonomy)
    )
    assert_clean_exit(result, 2)
    assert "street;repair" in result.stderr and str(taxonomy) in result.stderr


# ---------------------------------------------------------------------------------------
# GeoPackage and reprojected vector inputs: the same plan as from the CSV files
# ---------------------------------------------------------------------------------------


def points(csv_path: Path) -> gpd.GeoDataFrame:
    """A CSV table as a GeoDataFrame of points in WGS84 (every other column as text)."""
    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    geometry = gpd.points_from_xy(df["lon"].astype(float), df["lat"].astype(float))
    return gpd.GeoDataFrame(df.drop(columns=["lat", "lon"]), geometry=geometry, crs="EPSG:4326")


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A generated city as CSV + GeoJSON, its CSV plan, and its vector copies."""
    base = tmp_path_factory.mktemp("formats")
    src = base / "src"
    result = invoke(
        "generate", "--needs", "300", "--partners", "40", "--seed", "5", "--out", str(src), "-q"
    )
    assert_clean_exit(result, 0)
    files: dict[str, Any] = {"base": base, "src": src}
    needs, partners = points(src / "needs.csv"), points(src / "partners.csv")
    hoods = gpd.read_file(src / "neighborhoods.geojson")
    for name, frame in (("needs", needs), ("partners", partners), ("hoods", hoods)):
        frame.to_file(base / f"{name}.gpkg", driver="GPKG")
        local = frame.to_crs(LOCAL_CRS)
        local.to_file(base / f"{name}_local.gpkg", driver="GPKG")
        local.to_file(base / f"{name}_local.geojson", driver="GeoJSON")
    out = base / "csv_plan"
    result = plan_cli(
        src / "needs.csv",
        src / "partners.csv",
        out,
        base / "models",
        "-q",
        "--neighborhoods",
        str(src / "neighborhoods.geojson"),
    )
    assert_clean_exit(result, 0)
    files["csv_plan"] = out
    return files


def assert_same_plan(got: Path, want: Path) -> None:
    """The same clusters, pairs and units; coordinates and km equal up to float round-off."""
    assert (got / "need_clusters.csv").read_bytes() == (want / "need_clusters.csv").read_bytes()
    for name, keys, exact, approx in (
        (
            "clusters.csv",
            ["cluster_id"],
            ["category", "demand", "served", "unmet", "unmet_reason", "n_needs", "neighborhood"],
            ["centroid_lat", "centroid_lon", "radius_km"],
        ),
        (
            "assignments.csv",
            ["cluster_id", "partner_id"],
            ["units", "runner_up_id"],
            ["distance_km", "cost"],
        ),
        ("unmet.csv", ["cluster_id"], ["units", "reason"], []),
        ("gaps.csv", ["neighborhood", "category"], None, []),
    ):
        a = pd.read_csv(got / name, dtype=str, keep_default_na=False).set_index(keys)
        b = pd.read_csv(want / name, dtype=str, keep_default_na=False).set_index(keys)
        assert list(a.index) == list(b.index), name
        assert len(a) > 0 or name == "unmet.csv", name
        columns = list(b.columns) if exact is None else exact
        pd.testing.assert_frame_equal(a[columns], b[columns], obj=name)
        for col in approx:
            diff = (a[col].astype(float) - b[col].astype(float)).abs().max()
            assert diff < 1e-6, (name, col, diff)
    sa = json.loads((got / "summary.json").read_text(encoding="utf-8"))
    sb = json.loads((want / "summary.json").read_text(encoding="utf-8"))
    assert sa["solver"]["objective_scaled"] == sb["solver"]["objective_scaled"]
    assert sa["metrics"]["units"] == sb["metrics"]["units"]


def plan_files(city: dict[str, Any], name: str, *extra: str, **paths: Path) -> Result:
    base = city["base"]
    return plan_cli(
        paths["needs"],
        paths["partners"],
        base / name,
        base / "models",
        "-q",
        "--neighborhoods",
        str(paths["hoods"]),
        *extra,
    )


def test_geopackage_inputs_give_the_csv_plan(city: dict[str, Any]) -> None:
    base = city["base"]
    result = plan_files(
        city,
        "gpkg_plan",
        needs=base / "needs.gpkg",
        partners=base / "partners.gpkg",
        hoods=base / "hoods.gpkg",
    )
    assert_clean_exit(result, 0)
    assert_same_plan(base / "gpkg_plan", city["csv_plan"])
    # in WGS84 nothing is transformed, so even the bytes are those of the CSV plan
    for name in ("assignments.csv", "clusters.csv", "unmet.csv", "gaps.csv"):
        assert (base / "gpkg_plan" / name).read_bytes() == (city["csv_plan"] / name).read_bytes()


def test_geopackage_needs_and_partners_validate(city: dict[str, Any]) -> None:
    base = city["base"]
    result = invoke(
        "validate", "--needs", str(base / "needs.gpkg"), "--partners", str(base / "partners.gpkg")
    )
    assert_clean_exit(result, 0)
    assert "ok: 300 needs, 40 partners" in result.stdout


@pytest.mark.parametrize("suffix", ["gpkg", "geojson"])
def test_files_in_another_crs_are_rejected_without_input_crs(
    city: dict[str, Any], suffix: str
) -> None:
    base = city["base"]
    out = base / f"rejected_{suffix}"
    result = plan_files(
        city,
        out.name,
        needs=base / f"needs_local.{suffix}",
        partners=base / f"partners_local.{suffix}",
        hoods=base / f"hoods_local.{suffix}",
    )
    assert_clean_exit(result, 2)
    for name in ("needs", "partners"):
        line = next(line for line in result.stderr.splitlines() if f"{name}_local.{suffix}" in line)
        assert "field 'crs', value '" in line and "3435" in line
        assert "not WGS84" in line and "--input-crs" in line
    assert not out.exists()


@pytest.mark.parametrize("suffix", ["gpkg", "geojson"])
def test_files_in_another_crs_give_the_csv_plan_with_input_crs(
    city: dict[str, Any], suffix: str
) -> None:
    base = city["base"]
    name = f"local_{suffix}_plan"
    result = plan_files(
        city,
        name,
        "--input-crs",
        LOCAL_CRS,
        needs=base / f"needs_local.{suffix}",
        partners=base / f"partners_local.{suffix}",
        hoods=base / f"hoods_local.{suffix}",
    )
    assert_clean_exit(result, 0)
    for what in ("needs", "partners", "hoods"):
        assert f"{what}_local.{suffix}: transformed coordinates from {LOCAL_CRS} to EPSG:4326" in (
            result.stderr
        )
    assert_same_plan(base / name, city["csv_plan"])


def test_input_crs_that_contradicts_the_file_exits_2(city: dict[str, Any]) -> None:
    base = city["base"]
    result = invoke(
        "validate",
        "--needs",
        str(base / "needs_local.gpkg"),
        "--partners",
        str(base / "partners_local.gpkg"),
        "--input-crs",
        "EPSG:26916",
    )
    assert_clean_exit(result, 2)
    assert "needs_local.gpkg, field 'crs'" in result.stderr
    assert "declares CRS" in result.stderr and "but input_crs is 'EPSG:26916'" in result.stderr


def test_geopackage_needs_must_be_points(city: dict[str, Any], tmp_path: Path) -> None:
    needs = points(city["src"] / "needs.csv").head(3)
    needs.loc[1, "geometry"] = shapely.LineString([(-87.63, 41.88), (-87.62, 41.89)])
    needs.to_file(tmp_path / "needs.gpkg", driver="GPKG")
    result = invoke(
        "validate",
        "--needs",
        str(tmp_path / "needs.gpkg"),
        "--partners",
        str(city["base"] / "partners.gpkg"),
    )
    assert_clean_exit(result, 2)
    assert (
        f"{tmp_path / 'needs.gpkg'}, row 1, field 'geometry', value 'LineString': must be a Point"
        in result.stderr
    )


def test_geopackage_with_a_missing_column(city: dict[str, Any], tmp_path: Path) -> None:
    needs = points(city["src"] / "needs.csv").drop(columns="demand")
    needs.to_file(tmp_path / "needs.gpkg", driver="GPKG")
    result = invoke(
        "validate",
        "--needs",
        str(tmp_path / "needs.gpkg"),
        "--partners",
        str(city["base"] / "partners.gpkg"),
    )
    assert_clean_exit(result, 2)
    assert f"{tmp_path / 'needs.gpkg'}, row 1, field 'demand': required column missing" in (
        result.stderr
    )


def test_not_a_geopackage_exits_2(city: dict[str, Any], tmp_path: Path) -> None:
    fake = write_input(tmp_path, "needs.gpkg", "need_id,category\n")
    result = invoke(
        "validate", "--needs", str(fake), "--partners", str(city["base"] / "partners.gpkg")
    )
    assert_clean_exit(result, 2)
    assert f"{fake}: cannot read as a vector data set" in result.stderr


# ---------------------------------------------------------------------------------------
# bad neighborhood files
# ---------------------------------------------------------------------------------------

ONE_NEED = NEEDS_HEADER + "n1,food_access,41.8800,-87.6300,4,3\n"
ONE_PARTNER = PARTNERS_HEADER + "p1,Food Bank,organization,41.8810,-87.6300,food_access,10,2.0\n"


def square(lon: float, lat: float, side: float = 0.01) -> dict[str, Any]:
    ring = [[lon, lat], [lon + side, lat], [lon + side, lat + side], [lon, lat + side], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


def collection(*features: tuple[dict[str, Any], dict[str, Any] | None]) -> str:
    return json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": props, "geometry": geom}
                for props, geom in features
            ],
        }
    )


POINT = {"type": "Point", "coordinates": [-87.63, 41.88]}
LINE = {"type": "LineString", "coordinates": [[-87.63, 41.88], [-87.62, 41.89]]}

BAD_HOODS = {
    "duplicate-ids": (
        collection(
            ({"neighborhood_id": "A"}, square(-87.64, 41.87)),
            ({"neighborhood_id": "B"}, square(-87.63, 41.87)),
            ({"neighborhood_id": "A"}, square(-87.62, 41.87)),
        ),
        ["row 2, field 'neighborhood_id', value 'A': duplicate id"],
    ),
    "point-and-line": (
        collection(
            ({"neighborhood_id": "A"}, square(-87.64, 41.87)),
            ({"neighborhood_id": "B"}, POINT),
            ({"neighborhood_id": "C"}, LINE),
        ),
        [
            "row 1, field 'geometry', value 'Point': must be a Polygon or MultiPolygon",
            "row 2, field 'geometry', value 'LineString': must be a Polygon or MultiPolygon",
        ],
    ),
    "no-id-column": (
        collection(({"name": "A"}, square(-87.64, 41.87)), ({"name": "B"}, square(-87.63, 41.87))),
        ["field 'neighborhood_id': column missing; the file has columns ['name', 'geometry']"],
    ),
    "null-geometry": (
        collection(
            ({"neighborhood_id": "A"}, square(-87.64, 41.87)), ({"neighborhood_id": "B"}, None)
        ),
        ["row 1, field 'geometry', value 'null': must be a polygon"],
    ),
    "empty-id": (
        collection(
            ({"neighborhood_id": "A"}, square(-87.64, 41.87)),
            ({"neighborhood_id": " "}, square(-87.63, 41.87)),
        ),
        ["row 1, field 'neighborhood_id', value '': must be a non-empty id"],
    ),
    "duplicate-and-point": (
        collection(
            ({"neighborhood_id": "A"}, square(-87.64, 41.87)), ({"neighborhood_id": "A"}, POINT)
        ),
        [
            "row 1, field 'neighborhood_id', value 'A': duplicate id",
            "row 1, field 'geometry', value 'Point': must be a Polygon or MultiPolygon",
        ],
    ),
    "no-features": (collection(), ["field 'features': the FeatureCollection has no features"]),
}


@pytest.mark.parametrize("case", sorted(BAD_HOODS))
def test_bad_neighborhoods_file_exits_2_with_every_problem(case: str, tmp_path: Path) -> None:
    text, problems = BAD_HOODS[case]
    hoods = write_input(tmp_path, "hoods.geojson", text)
    needs = write_input(tmp_path, "needs.csv", ONE_NEED)
    partners = write_input(tmp_path, "partners.csv", ONE_PARTNER)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--neighborhoods", str(hoods))
    assert_clean_exit(result, 2)
    assert result.stdout == ""
    assert f"{len(problems)} problem(s) in the input:" in result.stderr
    for problem in problems:
        assert f"  - {hoods}, {problem}" in result.stderr
    assert not out.exists()


def test_neighborhood_problems_through_the_library(tmp_path: Path) -> None:
    text, _ = BAD_HOODS["point-and-line"]
    path = write_input(tmp_path, "hoods.geojson", text)
    with pytest.raises(InputValidationError) as info:
        matcher.read_neighborhoods(path)
    found = [(p.file, p.row, p.field, p.value) for p in info.value.problems]
    assert found == [
        (str(path), 1, "geometry", "Point"),
        (str(path), 2, "geometry", "LineString"),
    ]


def test_neighborhood_id_column_by_another_name(tmp_path: Path) -> None:
    """``id`` is accepted in place of ``neighborhood_id`` (the documented fallback)."""
    hoods = write_input(
        tmp_path,
        "hoods.geojson",
        collection(({"id": "A", "name": "Loop"}, square(-87.64, 41.87, 0.02))),
    )
    needs = write_input(tmp_path, "needs.csv", ONE_NEED)
    partners = write_input(tmp_path, "partners.csv", ONE_PARTNER)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "m", "-q", "--neighborhoods", str(hoods))
    assert_clean_exit(result, 0)
    assert [r["neighborhood"] for r in read_csv(out / "clusters.csv")] == ["A"]


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("duplicate-ids", "row 2, field 'neighborhood_id', value 'A': duplicate id"),
        ("point-and-line", "row 2, field 'geometry', value 'LineString': must be a Polygon"),
        ("no-id-column", "field 'neighborhood_id': column missing"),
    ],
)
def test_bad_neighborhoods_geopackage_exits_2(case: str, problem: str, tmp_path: Path) -> None:
    text, _ = BAD_HOODS[case]
    frame = gpd.read_file(io.StringIO(text))
    path = tmp_path / "hoods.gpkg"
    frame.to_file(path, driver="GPKG")
    needs = write_input(tmp_path, "needs.csv", ONE_NEED)
    partners = write_input(tmp_path, "partners.csv", ONE_PARTNER)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--neighborhoods", str(path))
    assert_clean_exit(result, 2)
    assert f"  - {path}, {problem}" in result.stderr
    assert not out.exists()


def test_neighborhoods_as_csv_exits_2(tmp_path: Path) -> None:
    hoods = write_input(tmp_path, "hoods.csv", "neighborhood_id,wkt\nA,POINT (0 0)\n")
    needs = write_input(tmp_path, "needs.csv", ONE_NEED)
    partners = write_input(tmp_path, "partners.csv", ONE_PARTNER)
    result = plan_cli(
        needs, partners, tmp_path / "out", tmp_path / "m", "--neighborhoods", str(hoods)
    )
    assert_clean_exit(result, 2)
    assert f"{hoods}: unsupported file type '.csv' for neighborhoods" in result.stderr
