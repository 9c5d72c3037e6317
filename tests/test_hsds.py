"""Open Referral HSDS 3.1 interchange: fixtures, round trips, schema validity, bad input.

The fixtures in ``tests/fixtures/hsds`` are hand-made from the HSDS 3.1 specification
(see the README there): the same small data set as CSV tables (``csv/``) and as a JSON
list of service objects (``services.json``), plus a structural subset of the HSDS JSON
schemas (``schema/``) that exports are validated against.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from matcher import InputValidationError, Problem, read_partners
from matcher.geo import haversine_km
from matcher.hsds import (
    DEFAULT_MAPPING_PATH,
    EXT_RADIUS,
    TABLES,
    read_hsds,
    read_taxonomy_mapping,
    write_hsds,
)
from matcher.limits import MAX_RADIUS_KM
from matcher.taxonomy import DEFAULT_CATEGORIES

from .oracle import grid_point

FIXTURES = Path(__file__).parent / "fixtures" / "hsds"
CSV_DIR = FIXTURES / "csv"
JSON_FILE = FIXTURES / "services.json"
COLUMNS = ["partner_id", "name", "kind", "lat", "lon", "categories", "capacity", "radius_km",
           "languages"]  # fmt: skip
STAMP = "2025-01-02T03:04:05.000Z"


def _sid(prefix: str, n: int) -> str:
    return f"{prefix}-0000-4000-8000-{n:012d}"


# ------------------------------------------------------------------ schema validation helpers

SCHEMAS = {p.stem: json.loads(p.read_text()) for p in sorted((FIXTURES / "schema").glob("*.json"))}
REGISTRY = Registry().with_resources(
    (s["$id"], Resource.from_contents(s, default_specification=DRAFT202012))
    for s in SCHEMAS.values()
)
CHECKER = Draft202012Validator.FORMAT_CHECKER


def schema_errors(obj: Any, name: str) -> list[str]:
    """Every error of ``obj`` against the HSDS schema ``name`` (formats checked)."""
    validator = Draft202012Validator(SCHEMAS[name], registry=REGISTRY, format_checker=CHECKER)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]


def table_errors(directory: Path) -> list[str]:
    """Every error of the HSDS CSV tables in ``directory``, row by row.

    A CSV row becomes an object of its table's scalar properties (``number`` columns
    parsed, empty cells left out); required are the schema's scalar ``required`` fields
    plus its ``tabular_required`` (the foreign keys of the tabular form).
    """
    errors = []
    for schema in SCHEMAS.values():
        path = directory / schema["path"]
        if not path.exists():
            continue
        props = {
            k: v for k, v in schema["properties"].items() if v.get("type") in ("string", "number")
        }
        flat = {
            "type": "object",
            "properties": props,
            "required": [r for r in schema["required"] if r in props]
            + schema.get("tabular_required", []),
        }
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        for i, rec in enumerate(frame.to_dict("records")):
            obj = {
                k: (float(v) if props.get(k, {}).get("type") == "number" else v)
                for k, v in rec.items()
                if v != ""
            }
            validator = Draft202012Validator(flat, format_checker=CHECKER)
            errors += [f"{path.name} row {i + 2}: {e.message}" for e in validator.iter_errors(obj)]
    return errors


# ------------------------------------------------------------------------------- fixtures


def expected_fixture_partners() -> pd.DataFrame:
    corners = np.array([[41.93, -87.67], [41.93, -87.63], [41.97, -87.63], [41.97, -87.67]])
    pantry_radius = float(np.max(haversine_km(41.95, -87.65, corners[:, 0], corners[:, 1])))
    rows = [
        (1, "Northside Food Pantry", 41.95, -87.65, "food_access", 40.0, pantry_radius, "en;es"),
        (2, "Lakeview Youth Mentoring", 41.94, -87.654, "education;youth_engagement", 12.0, 2.0,
         "en"),
        (3, "Northside Counseling (Northside Center)", 41.95, -87.65, "mental_health", 5.0, 5.0,
         ""),
        (4, "Northside Counseling (Uptown Clinic)", 41.965, -87.658, "mental_health", 5.0, 5.0,
         "pl"),
    ]  # fmt: skip
    return pd.DataFrame(
        [
            (_sid("5a100000", n), name, "organization", lat, lon, cats, cap, rad, langs)
            for n, name, lat, lon, cats, cap, rad, langs in rows
        ],
        columns=COLUMNS,
    )


def partners(loaded: Any) -> pd.DataFrame:
    return pd.DataFrame(loaded.frame)[COLUMNS]


def test_csv_fixture_imports_the_expected_partners() -> None:
    loaded = read_hsds(CSV_DIR)
    pd.testing.assert_frame_equal(partners(loaded), expected_fixture_partners())
    assert loaded.rejects.empty
    assert loaded.frame.crs.to_epsg() == 4326
    assert len(loaded.sha256) == 64


def test_json_fixture_imports_the_same_partners_as_the_csv_fixture() -> None:
    pd.testing.assert_frame_equal(partners(read_hsds(JSON_FILE)), expected_fixture_partners())


def test_fixtures_are_valid_hsds() -> None:
    services = json.loads(JSON_FILE.read_text())
    assert [e for s in services for e in schema_errors(s, "service")] == []
    assert table_errors(CSV_DIR) == []


def test_a_fixture_that_breaks_the_schema_is_caught() -> None:
    """The schema checks are not vacuous."""
    service = json.loads(JSON_FILE.read_text())[0]
    service["status"] = "open"
    service["capacities"][0]["id"] = "not-a-uuid"
    del service["service_at_locations"][0]["location"]["location_type"]
    errors = schema_errors(service, "service")
    assert len(errors) == 3, errors


def test_the_default_mapping_is_valid_and_documented() -> None:
    mapping = read_taxonomy_mapping()
    assert {r.category for r in mapping.rules} <= set(DEFAULT_CATEGORIES)
    assert DEFAULT_MAPPING_PATH.name in (Path(__file__).parents[1] / "docs" / "hsds.md").read_text()
    assert mapping.resolve("211 LA County", "BD-1800.2000", None) == "food_access"
    assert mapping.resolve("211 LA County", "BDX-1", None) is None  # a prefix ends at . or -
    assert mapping.resolve("https://openeligibility.org", None, "FOOD PANTRY") == "food_access"


# ------------------------------------------------------------------------------ round trips


def _round_trip(frame: pd.DataFrame, fmt: str, **kwargs: Any) -> tuple[pd.DataFrame, list[Path]]:
    with tempfile.TemporaryDirectory() as tmp:
        files = write_hsds(frame, Path(tmp) / "out", format=fmt, updated=STAMP, **kwargs)
        source = Path(tmp) / "out" / ("services.json" if fmt == "json" else "")
        back = partners(read_hsds(source))
        return back, [f.relative_to(tmp) for f in files]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_hsds_import_export_import_is_lossless(fmt: str) -> None:
    first = partners(read_hsds(CSV_DIR))
    again, _ = _round_trip(first, fmt)
    pd.testing.assert_frame_equal(again, first)


_CHARS = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"))


@st.composite
def partner_tables(draw: st.DrawFn) -> pd.DataFrame:
    n = draw(st.integers(1, 6))
    ids = draw(
        st.lists(
            st.one_of(st.uuids().map(str),
                      st.from_regex(r"[A-Za-z0-9_.][A-Za-z0-9_.\-]{0,11}", fullmatch=True)),
            min_size=n, max_size=n, unique=True,
        )
    )  # fmt: skip
    rows = []
    for pid in ids:
        lat = draw(st.floats(-89.9, 89.9, allow_nan=False))
        lon = draw(st.floats(-179.9, 179.9, allow_nan=False).filter(lambda x, lat=lat: lat or x))
        cats = draw(st.sets(st.sampled_from(DEFAULT_CATEGORIES), min_size=1, max_size=4))
        rows.append(
            {
                "partner_id": pid,
                "name": draw(st.text(_CHARS, max_size=20)),
                "kind": draw(st.sampled_from(["organization", "volunteer"])),
                "lat": lat,
                "lon": lon,
                "categories": ";".join(sorted(cats)),
                "capacity": draw(st.one_of(st.integers(0, 500), st.floats(0, 1e4))),
                "radius_km": draw(st.floats(0.01, MAX_RADIUS_KM)),
                "languages": ";".join(draw(st.sets(st.sampled_from(["en", "es", "pl", "zh"])))),
            }
        )
    return pd.DataFrame(rows)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=partner_tables(), fmt=st.sampled_from(["csv", "json"]))
def test_round_trip_is_lossless_for_every_partner_field(table: pd.DataFrame, fmt: str) -> None:
    expected = partners(read_partners(table))
    back, _ = _round_trip(table, fmt, include_volunteers=True, exact_volunteer_locations=True)
    pd.testing.assert_frame_equal(back, expected)


def test_non_uuid_partner_ids_survive_through_the_extension_property() -> None:
    table = pd.DataFrame([["ORG-1", "A", "organization", 41.9, -87.6, "food", 3, 1.5, "en"]],
                         columns=COLUMNS)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        write_hsds(table, tmp, format="json", updated=STAMP)
        sal = json.loads((Path(tmp) / "services.json").read_text())[0]["service_at_locations"][0]
        assert sal["matcher_partner_id"] == "ORG-1" and sal["id"] != "ORG-1"
        assert partners(read_hsds(Path(tmp) / "services.json"))["partner_id"].tolist() == ["ORG-1"]


# --------------------------------------------------------------------------- export validity


@pytest.mark.parametrize("mapping", [None, DEFAULT_MAPPING_PATH])
def test_json_export_validates_against_the_hsds_schemas(tmp_path: Path, mapping: Any) -> None:
    write_hsds(partners(read_hsds(CSV_DIR)), tmp_path, format="json", mapping=mapping)
    services = json.loads((tmp_path / "services.json").read_text())
    assert len(services) == 4
    assert [e for s in services for e in schema_errors(s, "service")] == []
    terms = {a["taxonomy_term"]["name"] for a in services[0]["attributes"]}
    assert terms == {"Food access", "Food"}  # matcher's own term and Open Eligibility's


def test_csv_export_validates_against_the_hsds_table_schemas(tmp_path: Path) -> None:
    files = write_hsds(partners(read_hsds(CSV_DIR)), tmp_path, format="csv", updated=STAMP)
    names = {f.name for f in files}
    assert {fname for fname, _, _ in TABLES.values()} | {"datapackage.json"} == names
    assert table_errors(tmp_path) == []
    package = json.loads((tmp_path / "datapackage.json").read_text())
    assert {r["path"] for r in package["resources"]} == names - {"datapackage.json"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_export_of_invalid_partners_writes_nothing(tmp_path: Path) -> None:
    table = pd.DataFrame([["p1", "A", "organization", 95.0, -87.6, "food", 3, 1.5, ""]],
                         columns=COLUMNS)  # fmt: skip
    with pytest.raises(InputValidationError):
        write_hsds(table, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extent_is_a_circle_of_the_radius(tmp_path: Path) -> None:
    table = pd.DataFrame([["p1", "A", "organization", 60.0, 179.99, "food", 3, 25.0, ""]],
                         columns=COLUMNS)  # fmt: skip
    write_hsds(table, tmp_path, format="json", updated=STAMP)
    area = json.loads((tmp_path / "services.json").read_text())[0]["service_at_locations"][0][
        "service_areas"
    ][0]
    ring = np.array(json.loads(area["extent"])["coordinates"][0])
    assert area[EXT_RADIUS] == 25.0
    assert np.allclose(haversine_km(60.0, 179.99, ring[:, 1], ring[:, 0]), 25.0, atol=0.01)
    # without the extension property the radius comes from the extent
    del area[EXT_RADIUS]
    svc = json.loads((tmp_path / "services.json").read_text())
    svc[0]["service_at_locations"][0]["service_areas"][0] = area
    (tmp_path / "services.json").write_text(json.dumps(svc))
    assert read_hsds(tmp_path / "services.json").frame["radius_km"].iloc[0] == pytest.approx(
        25.0, abs=0.01
    )


# ------------------------------------------------------------------------------ volunteers

VOLUNTEERS = pd.DataFrame(
    [
        ["o1", "Org", "organization", 41.9, -87.6, "food", 3, 1.5, ""],
        ["v1", "Vol", "volunteer", 41.8812, -87.6231, "youth", 2, 2.0, "es"],
    ],
    columns=COLUMNS,
)


def test_volunteers_are_left_out_unless_asked_for(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="matcher.hsds"):
        back, _ = _round_trip(VOLUNTEERS, "csv")
    assert back["partner_id"].tolist() == ["o1"]
    assert "left out 1 volunteer" in caplog.text


def test_included_volunteers_are_coarsened_unless_exact() -> None:
    back, _ = _round_trip(VOLUNTEERS, "json", include_volunteers=True)
    lat, lon = grid_point(41.8812, -87.6231)
    vol = back.set_index("partner_id").loc["v1"]
    assert (vol["lat"], vol["lon"], vol["kind"]) == (lat, lon, "volunteer")
    exact, _ = _round_trip(VOLUNTEERS, "json", include_volunteers=True,
                           exact_volunteer_locations=True)  # fmt: skip
    assert exact.set_index("partner_id").loc["v1", "lat"] == 41.8812


# ------------------------------------------------------------------------------- bad input


@pytest.fixture
def package(tmp_path: Path) -> Path:
    """A writable copy of the CSV fixture package."""
    return Path(shutil.copytree(CSV_DIR, tmp_path / "hsds"))


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def problems_of(source: Path, **kwargs: Any) -> list[Problem]:
    with pytest.raises(InputValidationError) as info:
        read_hsds(source, **kwargs)
    return list(info.value.problems)


def test_missing_table(package: Path) -> None:
    (package / "attributes.csv").unlink()
    (problem,) = problems_of(package)
    assert problem.file == str(package / "attributes.csv")
    assert "required HSDS table missing" in problem.reason
    assert "taxonomy_terms.csv" in problem.reason


def test_bad_latitude_names_the_locations_row(package: Path) -> None:
    edit(package / "locations.csv", "Lakeview Hub,41.94", "Lakeview Hub,north")
    edit(package / "locations.csv", "Uptown Clinic,41.965", "Uptown Clinic,95")
    problems = problems_of(package)
    found = {(Path(str(p.file)).name, p.row, p.field, p.value) for p in problems}
    assert found == {
        ("locations.csv", 3, "latitude", "north"),
        ("locations.csv", 4, "latitude", 95.0),
    }
    assert "out of range" in str(problems[-1])


def test_unknown_taxonomy_term_lists_the_valid_categories(package: Path) -> None:
    edit(package / "taxonomy_terms.csv", ",Tutoring,", ",Gardening,")
    (problem,) = problems_of(package)
    assert (Path(str(problem.file)).name, problem.row, problem.field, problem.value) == (
        "taxonomy_terms.csv", 4, "name", "Gardening",
    )  # fmt: skip
    assert "not in the mapping" in problem.reason and DEFAULT_MAPPING_PATH.name in problem.reason
    assert all(code in problem.reason for code in DEFAULT_CATEGORIES)


def test_unmapped_terms_can_be_ignored(package: Path, caplog: pytest.LogCaptureFixture) -> None:
    edit(package / "taxonomy_terms.csv", ",Tutoring,", ",Gardening,")
    with caplog.at_level(logging.WARNING, logger="matcher.hsds"):
        loaded = read_hsds(package, unmapped="ignore")
    assert loaded.frame["categories"].iloc[1] == "youth_engagement"
    assert "ignored 1 unmapped taxonomy term" in caplog.text
    # a service left with no category at all is still a problem
    edit(package / "taxonomy_terms.csv", ",Food Pantry,", ",Gardening,")
    (problem,) = problems_of(package, unmapped="ignore")
    assert (Path(str(problem.file)).name, problem.row, problem.field) == (
        "services.csv", 2, "attributes",
    )  # fmt: skip


def test_duplicate_ids(package: Path) -> None:
    edit(package / "services.csv", _sid("5e000000", 3) + ",", _sid("5e000000", 2) + ",")
    (problem,) = problems_of(package)
    assert (Path(str(problem.file)).name, problem.row, problem.field, problem.value) == (
        "services.csv", 4, "id", _sid("5e000000", 2),
    )  # fmt: skip
    assert "first used on row 3" in problem.reason


def test_duplicate_service_at_location_ids_name_both_rows(package: Path) -> None:
    edit(package / "service_at_location.csv", _sid("5a100000", 4), _sid("5a100000", 3))
    (problem,) = problems_of(package)
    assert (Path(str(problem.file)).name, problem.row, problem.field) == (
        "service_at_location.csv", 5, "id",
    )  # fmt: skip
    assert "first used on row 4" in problem.reason


def test_dangling_references_and_bad_languages(package: Path) -> None:
    edit(package / "service_at_location.csv", "000000000002,10c00000", "000000000002,10c0ffff")
    edit(package / "languages.csv", "Polish,pl", "Polish,pol")
    found = {(Path(str(p.file)).name, p.row, p.field, p.value) for p in problems_of(package)}
    assert found == {
        ("service_at_location.csv", 3, "location_id", "10c0ffff-0000-4000-8000-000000000002"),
        ("languages.csv", 5, "code", "pol"),
    }


def test_missing_capacity_and_its_default(package: Path) -> None:
    (package / "service_capacity.csv").unlink()
    problems = problems_of(package)
    assert {(p.row, p.field) for p in problems} == {(2, "capacities"), (3, "capacities"),
                                                    (4, "capacities")}  # fmt: skip
    assert read_hsds(package, default_capacity=7).frame["capacity"].tolist() == [7.0] * 4


def test_skip_loads_the_valid_partners_and_reports_the_rest(package: Path) -> None:
    edit(package / "locations.csv", "Uptown Clinic,41.965", "Uptown Clinic,95")
    loaded = read_hsds(package, on_invalid="skip")
    assert loaded.frame["partner_id"].tolist() == [_sid("5a100000", n) for n in (1, 2, 3)]
    assert loaded.rejects["row"].tolist() == [5]
    assert "locations.csv, row 4, field 'latitude'" in loaded.rejects["problems"].iloc[0]


def test_json_problems_name_the_service_and_the_path(tmp_path: Path) -> None:
    services = json.loads(JSON_FILE.read_text())
    services[1]["service_at_locations"][0]["location"]["latitude"] = "north"
    services[1]["attributes"][1]["taxonomy_term"]["name"] = "Gardening"
    (tmp_path / "s.json").write_text(json.dumps(services))
    found = {(p.row, p.field, p.value) for p in problems_of(tmp_path / "s.json")}
    assert found == {
        (1, "service_at_locations[0].location.latitude", "north"),
        (1, "attributes[1].taxonomy_term.name", "Gardening"),
    }
    (tmp_path / "bad.json").write_text("[{")
    assert problems_of(tmp_path / "bad.json")[0].reason.startswith("not valid JSON")


def test_bad_mapping_file_names_its_line(tmp_path: Path) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text("taxonomy,code,name,category\noe,,Food,food_acess\noe,,,food_access\n")
    problems = problems_of(CSV_DIR, mapping=mapping)
    assert [(p.row, p.field) for p in problems] == [(2, "category"), (3, "code")]
    assert "did you mean 'food_access'" in problems[0].reason


def test_unsupported_source(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("hello")
    assert "expected a directory" in problems_of(tmp_path / "x.txt")[0].reason
