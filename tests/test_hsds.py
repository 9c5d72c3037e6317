"""Open Referral HSDS 3.1 interchange: fixtures, round trips, schema validity, bad input.

The fixtures in ``tests/fixtures/hsds`` (see the README there) are the same small data set,
hand-made from the HSDS 3.1 specification, as CSV tables (``csv/``) and as a JSON list of
service objects (``services.json``), and Open Referral's own published files
(``official/``): exports are validated against the published HSDS 3.1 JSON schemas there,
the JSON form object by object, the CSV form row by row.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry
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
SAMPLE_PARTNERS = Path(__file__).parents[1] / "data" / "sample" / "partners.csv"
COLUMNS = ["partner_id", "name", "kind", "lat", "lon", "categories", "capacity", "radius_km",
           "languages"]  # fmt: skip
STAMP = "2025-01-02T03:04:05.000Z"


def _sid(prefix: str, n: int) -> str:
    return f"{prefix}-0000-4000-8000-{n:012d}"


# ------------------------------------------------------------------ schema validation helpers
#
# The published HSDS 3.1 schemas (official/hsds-3.1-schema/schema/, see the README there) are
# one file per object with no `$id` and no `$schema`, and refer to each other by file name
# (`"$ref": "attribute.json"`), a URI reference relative to the referring file. Each file is
# registered under its own file URI, so those references resolve to the neighbouring files;
# the dialect is JSON Schema 2020-12, the `jsonSchemaDialect` of the specification's OpenAPI
# document (openapi.json, not an object schema, is left out).

SCHEMA_DIR = FIXTURES / "official" / "hsds-3.1-schema" / "schema"
SCHEMAS: dict[str, dict[str, Any]] = {
    p.name: json.loads(p.read_text()) for p in sorted(SCHEMA_DIR.glob("*.json"))
    if p.name != "openapi.json"
}  # fmt: skip
REGISTRY = Registry().with_resources(
    (SCHEMA_DIR.joinpath(name).as_uri(), DRAFT202012.create_resource(schema))
    for name, schema in SCHEMAS.items()
)
COMPILED_SERVICE = json.loads(
    (SCHEMA_DIR / "compiled" / "service_with_definitions.json").read_text()
)
TABULAR = json.loads((SCHEMA_DIR / "compiled" / "tabular.json").read_text())
#: CSV file of the tabular form -> the object schema of its rows (from each schema's `path`)
TABLE_SCHEMAS = {schema["path"]: name for name, schema in SCHEMAS.items()}

# RFC 3986 URI (a scheme, then only URI characters and %-escapes, one fragment at most): the
# `uri` format, which jsonschema checks only when the optional rfc3987 package is installed.
_URI_CHARS = r"(?:[A-Za-z0-9._~!$&'()*+,;=:@/?\[\]-]|%[0-9A-Fa-f]{2})*"
_URI = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*:{_URI_CHARS}(?:#{_URI_CHARS})?")
CHECKER = FormatChecker(Draft202012Validator.FORMAT_CHECKER.checkers)
if "uri" not in CHECKER.checkers:
    CHECKER.checks("uri")(lambda value: not isinstance(value, str) or bool(_URI.fullmatch(value)))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def exported_json(path: Path) -> Any:
    """The JSON in ``path``, strictly: NaN and Infinity, which Python writes, are refused."""
    return json.loads(path.read_text(encoding="utf-8"), parse_constant=_no_constant)


def _errors(validator: Draft202012Validator, obj: Any, where: str = "") -> list[str]:
    return [
        f"{where}{'.'.join(map(str, e.absolute_path)) or '(object)'}: {e.message}"
        for e in validator.iter_errors(obj)
    ]


@cache
def object_validator(name: str) -> Draft202012Validator:
    """A validator of the HSDS object schema ``name`` (``"service.json"``), `$ref`s resolved."""
    return Draft202012Validator(
        {"$ref": SCHEMA_DIR.joinpath(name).as_uri()}, registry=REGISTRY, format_checker=CHECKER
    )


COMPILED_VALIDATOR = Draft202012Validator(COMPILED_SERVICE, format_checker=CHECKER)


def service_errors(services: list[dict[str, Any]]) -> list[str]:
    """Every error of each HSDS service object (nested objects included, formats checked).

    Each service is checked against ``service.json`` with the `$ref`s between the object
    schemas resolved, and against the compiled ``service_with_definitions.json`` (the same
    schemas in one file); an error found by both is listed once.
    """
    errors: dict[str, None] = {}
    for i, service in enumerate(services):
        for validator in (object_validator("service.json"), COMPILED_VALIDATOR):
            errors.update(dict.fromkeys(_errors(validator, service, f"service {i}: ")))
    return list(errors)


def _is_nested(prop: dict[str, Any]) -> bool:
    return prop.get("type") in ("array", "object") or "$ref" in prop


def row_schema(name: str) -> dict[str, Any]:
    """The schema of one CSV row of the object schema ``name`` in the HSDS tabular form.

    A row is the object without its nested objects and arrays: those are rows of their own
    tables, linked by id columns. So a row's required fields are the object's required
    scalar fields plus its ``tabular_required`` ones (those links), and a required nested
    object (``service_capacity.unit``) is required as its id column (``unit_id``), which
    ``tabular_required`` names. Every rule of the scalar fields (type, format, enum) stays.
    """
    schema = SCHEMAS[name]
    nested = {k for k, v in schema["properties"].items() if _is_nested(v)}
    links = schema.get("tabular_required", [])
    missing = [k for k in schema["required"] if k in nested and f"{k}_id" not in links]
    assert not missing, f"{name}: required nested {missing} have no tabular_required id column"
    return {
        **{k: v for k, v in schema.items() if k not in ("properties", "required")},
        "properties": {k: v for k, v in schema["properties"].items() if k not in nested},
        "required": list(dict.fromkeys([k for k in schema["required"] if k not in nested] + links)),
    }


# The Tabular Data Package form follows the Frictionless Table Schema defaults: an empty cell
# is a missing value (the field is absent), `number` / `integer` / `boolean` fields are parsed
# from their text, other fields are the text. NaN and infinities are not numbers here: the
# canonical JSON form cannot hold them. A cell that does not parse stays text, so the type
# check reports it.
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")
_BOOLEAN = {"true": True, "True": True, "TRUE": True, "1": True,
            "false": False, "False": False, "FALSE": False, "0": False}  # fmt: skip


def cell_value(text: str, prop: dict[str, Any]) -> Any:
    """The JSON value of a non-empty CSV cell of the field ``prop``."""
    kind = prop.get("type")
    if kind == "number" and _NUMBER.fullmatch(text):
        return float(text)
    if kind == "integer" and _INTEGER.fullmatch(text):
        return int(text)
    if kind == "boolean" and text in _BOOLEAN:
        return _BOOLEAN[text]
    return text


def table_errors(directory: Path) -> list[str]:
    """Every error of the HSDS CSV tables in ``directory``, row by row.

    Every ``*.csv`` file must be an HSDS 3.1 table (a schema's ``path``); each row, read as
    an object (:func:`cell_value`; empty cells left out), is validated against
    :func:`row_schema` with formats checked, and the fields whose ``constraints`` say
    ``unique`` must not repeat within the table. Rows are counted as in a spreadsheet (the
    header is row 1).
    """
    errors = []
    for path in sorted(directory.glob("*.csv")):
        if path.name not in TABLE_SCHEMAS:
            errors.append(f"{path.name}: not an HSDS 3.1 table")
            continue
        schema = row_schema(TABLE_SCHEMAS[path.name])
        props = schema["properties"]
        validator = Draft202012Validator(schema, format_checker=CHECKER)
        with path.open(newline="", encoding="utf-8") as f:
            header, *rows = list(csv.reader(f))
        if len(set(header)) < len(header):
            errors.append(f"{path.name}: repeated column names in {header}")
        first: dict[str, dict[Any, int]] = {
            k: {} for k, v in props.items() if v.get("constraints", {}).get("unique")
        }
        for line, cells in enumerate(rows, start=2):
            where = f"{path.name} row {line}: "
            if len(cells) != len(header):
                errors.append(f"{where}{len(cells)} cells under {len(header)} columns")
                continue
            row = {
                k: cell_value(v, props.get(k, {}))
                for k, v in zip(header, cells, strict=True)
                if v != ""
            }
            errors += _errors(validator, row, where)
            for k, seen in first.items():
                if k in row and seen.setdefault(row[k], line) != line:
                    errors.append(f"{where}{k}: {row[k]!r} is not unique (row {seen[row[k]]})")
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


def test_every_format_of_the_schemas_is_checked() -> None:
    formats = {
        prop["format"] for schema in SCHEMAS.values() for prop in schema["properties"].values()
        if "format" in prop
    }  # fmt: skip
    assert formats == {"uuid", "date-time", "email", "uri"}
    assert formats <= set(CHECKER.checkers)
    good = {"uuid": _sid("5e000000", 1), "date-time": STAMP, "email": "a@example.org",
            "uri": "https://example.org/a%20b?q=1#top"}  # fmt: skip
    bad = {"uuid": "5e000000-1", "date-time": "2025-01-02 03:04", "email": "nobody",
           "uri": "example.org/a b"}  # fmt: skip
    assert all(CHECKER.conforms(value, fmt) for fmt, value in good.items())
    assert not any(CHECKER.conforms(value, fmt) for fmt, value in bad.items())


def test_the_compiled_service_schema_is_the_object_schemas() -> None:
    """``service_with_definitions.json`` is ``service.json`` with its `$ref`s inlined."""
    as_files = re.compile(r'"\$ref": "#/definitions/(\w+)"')

    def norm(schema: dict[str, Any]) -> str:
        return as_files.sub(r'"$ref": "\1.json"', json.dumps(schema, sort_keys=True))

    definitions = COMPILED_SERVICE["definitions"]
    assert norm({k: v for k, v in COMPILED_SERVICE.items() if k != "definitions"}) == norm(
        SCHEMAS["service.json"]
    )
    assert {f"{k}.json" for k in definitions} == set(SCHEMAS) - {"service.json"}
    assert all(norm(v) == norm(SCHEMAS[f"{k}.json"]) for k, v in definitions.items())


# compiled/tabular.json (the tables as JSON) predates HSDS 3.1's additions: it has no
# service_capacity, unit or url table, no attribute.label and no service_area.service_at_location_id
ADDED_IN_3_1 = {"attribute": {"label"}, "service_area": {"service_at_location_id"}}


def test_rows_are_the_tables_of_the_compiled_tabular_schema() -> None:
    """:func:`row_schema` gives each table the columns and rules of ``compiled/tabular.json``."""
    assert set(SCHEMAS) - {f"{t}.json" for t in TABULAR["properties"]} == {
        "service_capacity.json", "unit.json", "url.json",
    }  # fmt: skip
    for table, spec in TABULAR["properties"].items():
        item, ours = spec["items"], row_schema(f"{table}.json")
        theirs = {k: v for k, v in item["properties"].items() if not _is_nested(v)}
        assert set(ours["properties"]) == set(theirs) | ADDED_IN_3_1.get(table, set()), table
        rules = ("type", "format", "enum")
        for k, v in theirs.items():
            assert {r: ours["properties"][k].get(r) for r in rules} == {r: v.get(r) for r in rules}
        assert set(ours["required"]) == set(item["required"] + item.get("tabular_required", []))
    capacity = row_schema("service_capacity.json")
    assert "unit" not in capacity["properties"]
    assert set(capacity["required"]) == {"id", "available", "updated", "unit_id", "service_id"}


def test_the_specifications_own_examples_are_valid() -> None:
    """No false alarms: the 3.1 examples pass (their CSV package row by row, too)."""
    examples = FIXTURES / "official" / "hsds-3.1-examples" / "examples"
    assert service_errors([json.loads((examples / "service_full.json").read_text())]) == []
    assert len(list((examples / "csv").glob("*.csv"))) == 24
    assert table_errors(examples / "csv") == []


def test_fixtures_are_valid_hsds() -> None:
    assert service_errors(json.loads(JSON_FILE.read_text())) == []
    assert table_errors(CSV_DIR) == []


def test_a_fixture_that_breaks_the_schema_is_caught() -> None:
    """The schema checks are not vacuous."""
    service = json.loads(JSON_FILE.read_text())[0]
    service["status"] = "open"
    service["capacities"][0]["id"] = "not-a-uuid"
    del service["service_at_locations"][0]["location"]["location_type"]
    service["attributes"][0]["taxonomy_term"]["taxonomy_detail"]["uri"] = "open eligibility"
    errors = service_errors([service])
    assert len(errors) == 4, errors
    assert "service 0: capacities.0.id: 'not-a-uuid' is not a 'uuid'" in errors


def test_tables_that_break_the_schema_are_caught(package: Path) -> None:
    """The table checks are not vacuous: types, formats, required and unique fields."""
    edit(package / "locations.csv", "Lakeview Hub,41.94", "Lakeview Hub,north")
    edit(package / "services.csv", "Weekly groceries,active", "Weekly groceries,")
    edit(package / "service_capacity.csv", ",00170000-0000-4000-8000-000000000001,40,", ",,40,")
    edit(package / "service_capacity.csv", "shifts,2024-09-25T14:23:06.5", "shifts,25/09/2024")
    edit(package / "taxonomies.csv", "human services taxonomy,", "human services taxonomy,oe")
    edit(package / "attributes.csv", "a7700000-0000-4000-8000-000000000002",
         "a7700000-0000-4000-8000-000000000001")  # fmt: skip
    (package / "notes.csv").write_text("id\n1\n")
    assert sorted(table_errors(package)) == [
        "attributes.csv row 3: id: 'a7700000-0000-4000-8000-000000000001' is not unique (row 2)",
        "locations.csv row 3: latitude: 'north' is not of type 'number'",
        "notes.csv: not an HSDS 3.1 table",
        "service_capacity.csv row 2: (object): 'unit_id' is a required property",
        "service_capacity.csv row 2: updated: '25/09/2024+01:00' is not a 'date-time'",
        "services.csv row 2: (object): 'status' is a required property",
        "taxonomies.csv row 2: uri: 'oe' is not a 'uri'",
    ]


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
    services = exported_json(tmp_path / "services.json")
    assert len(services) == 4
    assert service_errors(services) == []
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


@pytest.fixture(scope="module")
def sample_partners() -> pd.DataFrame:
    """The 1,871 partners of the bundled sample city (organizations and volunteers)."""
    frame = partners(read_partners(SAMPLE_PARTNERS))
    assert len(frame) == 1871
    return frame


@pytest.mark.parametrize("volunteers", [False, True], ids=["organizations", "and-volunteers"])
@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_export_of_the_sample_partners_is_valid_hsds(
    tmp_path: Path, sample_partners: pd.DataFrame, fmt: str, volunteers: bool
) -> None:
    write_hsds(sample_partners, tmp_path, format=fmt, include_volunteers=volunteers)
    kinds = sample_partners["kind"].value_counts()
    expected = int(kinds.sum() if volunteers else kinds["organization"])
    if fmt == "json":
        services = exported_json(tmp_path / "services.json")
        assert len(services) == expected
        assert service_errors(services) == []
    else:
        tables = {p.name: pd.read_csv(p, dtype=str) for p in tmp_path.glob("*.csv")}
        assert len(tables["services.csv"]) == len(tables["service_at_location.csv"]) == expected
        assert table_errors(tmp_path) == []


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=partner_tables(), fmt=st.sampled_from(["csv", "json"]))
def test_every_valid_partner_table_exports_valid_hsds(table: pd.DataFrame, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_hsds(table, tmp, format=fmt, include_volunteers=True, updated=STAMP)
        if fmt == "json":
            assert service_errors(exported_json(Path(tmp) / "services.json")) == []
        else:
            assert table_errors(Path(tmp)) == []


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
