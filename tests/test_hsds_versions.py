"""Real HSDS data of every version matcher reads: the Open Referral 1.1 sample data and the
HSDS 3.1 specification's own examples (tests/fixtures/hsds/official, with their licence).

Each imports, or is refused with the problems named (the 3.1 examples carry placeholder
values: a latitude of 100, an extent that is the word "extent", a capacity in kilograms,
a taxonomy term that maps to nothing), never with a false duplicate and never silently.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from matcher._errors import InputValidationError
from matcher.cli import main
from matcher.hsds import detect_version, read_hsds, unit_factor

HERE = Path(__file__).resolve().parent / "fixtures" / "hsds"
OFFICIAL = HERE / "official"
V11 = OFFICIAL / "openreferral-sample-data-1.1"
V31 = OFFICIAL / "hsds-3.1-examples" / "examples"


def _problems(exc: pytest.ExceptionInfo[InputValidationError]) -> list[tuple[str, str, str]]:
    return [(Path(p.file).name, str(p.field), str(p.reason)) for p in exc.value.problems]


@pytest.mark.parametrize("folder", ["simple", "all_resources"])
def test_the_hsds_1_1_sample_data_imports_with_its_report(folder, tmp_path):
    assert detect_version(V11 / folder)[0] == "1.1"
    out = tmp_path / "partners.csv"
    r = CliRunner().invoke(main, [
        "hsds", "import", "--source", str(V11 / folder), "--out", str(out),
        "--default-capacity", "10", "--unmapped", "default:food_access", "--skip-invalid",
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    partners = pd.read_csv(out, dtype=str)
    # 13 services at locations; 12 locations have no coordinates (the sample is fictional)
    assert len(partners) == 1 and partners["lat"].tolist() == ["39.428192"]
    assert partners["categories"].tolist() == ["food_access"]
    assert "skipped 12 invalid partner(s) of 13; 1 remain" in r.stderr
    rejects = pd.read_csv(tmp_path / "partners_rejects.csv", dtype=str)
    assert len(rejects) == 12 and rejects["problems"].str.contains("locations.csv").all()
    report = pd.read_csv(tmp_path / "partners_mapping.csv", dtype=str, keep_default_na=False)
    assert report.to_dict("records") == [{
        "kind": "term", "taxonomy": "", "code": "", "name": "(no taxonomy term)",
        "category": "food_access", "how": "default", "services": "13",
    }]  # fmt: skip
    # without a policy for the unmapped, nothing is imported quietly: every service is named
    strict = CliRunner().invoke(main, ["hsds", "import", "--source", str(V11 / folder),
                                       "--out", str(tmp_path / "s.csv"),
                                       "--default-capacity", "10"])  # fmt: skip
    assert strict.exit_code == 2 and "--unmapped default:CATEGORY" in strict.output


def test_a_1_1_package_with_taxonomy_links_maps_its_terms(tmp_path):
    package = Path(shutil.copytree(V11 / "all_resources", tmp_path / "pkg"))
    services = pd.read_csv(package / "services.csv", dtype=str)
    terms = pd.read_csv(package / "taxonomy.csv", dtype=str)
    links = pd.DataFrame({"id": ["st-1", "st-2"], "service_id": services["id"][:2],
                          "taxonomy_id": [terms["id"][0], terms["id"][0]],
                          "taxonomy_detail": ["", ""]})  # fmt: skip
    links.to_csv(package / "services_taxonomy.csv", index=False)
    terms.loc[0, "name"], terms.loc[0, "vocabulary"] = "Food Pantry", "Open Eligibility"
    terms.to_csv(package / "taxonomy.csv", index=False)
    table = read_hsds(package, default_capacity=5, on_invalid="skip", unmapped="skip")
    report = table.report
    assert report is not None
    row = report[report["name"] == "Food Pantry"].iloc[0]
    assert (row["category"], row["how"], row["services"]) == ("food_access", "mapping", 2)
    # services whose terms map to nothing are left out by the policy, each said why
    assert table.rejects["problems"].str.contains("no taxonomy term of its service").any()


@pytest.mark.parametrize("name", ["service_full.json", "organization_full.json",
                                  "service_at_location_full.json",
                                  "service_at_location_list.json"])  # fmt: skip
def test_the_3_1_examples_are_read_and_their_placeholders_named(name):
    with pytest.raises(InputValidationError) as exc:
        read_hsds(V31 / name, unmapped="default:food_access", default_capacity=5)
    found = _problems(exc)
    assert not any("duplicate" in why for _, _, why in found), found  # nested copies are one
    assert any(f.endswith("latitude") and "-90..90" in why for _, f, why in found), found
    with pytest.raises(InputValidationError) as exc:
        read_hsds(V31 / name, unmapped="default:food_access", default_capacity=5,
                  on_invalid="skip")  # fmt: skip
    assert "no partner is left" in str(exc.value)


def test_the_3_1_kilogram_capacity_is_named_or_replaced_by_the_default(tmp_path):
    with pytest.raises(InputValidationError) as exc:
        read_hsds(V31 / "service_full.json", unmapped="default:food_access")
    assert any("capacity unit 'Kilogram' is not people" in why for _, _, why in _problems(exc))
    # fixed coordinates and extent: the import goes through, the default capacity used and
    # the unit named in the report
    doc = json.loads((V31 / "service_full.json").read_text(encoding="utf-8"))
    doc["service_at_locations"][0]["location"]["latitude"] = 41.88
    doc["service_at_locations"][0]["location"]["longitude"] = -87.63
    for area in doc["service_areas"] + doc["service_at_locations"][0]["service_areas"]:
        area["extent_type"] = "other"
    fixed = tmp_path / "service.json"
    fixed.write_text(json.dumps(doc), encoding="utf-8")
    table = read_hsds(fixed, unmapped="default:food_access", default_capacity=7)
    assert table.frame["capacity"].tolist() == [7.0]
    assert table.report is not None
    unit = table.report[table.report["kind"] == "capacity_unit"].iloc[0]
    assert unit["name"] == "Kilogram" and "default capacity used" in unit["how"]
    term = table.report[table.report["kind"] == "term"].iloc[0]
    assert (term["category"], term["how"]) == ("food_access", "default")


def test_rows_linked_to_nothing_are_reported_not_dropped_in_silence(tmp_path):
    package = Path(shutil.copytree(V31 / "csv", tmp_path / "pkg"))
    locations = package / "locations.csv"
    locations.write_text(locations.read_text().replace(",100,101,", ",41.88,-87.63,"))
    table = read_hsds(package, unmapped="default:food_access", default_capacity=5,
                      on_invalid="skip")  # fmt: skip
    assert table.report is not None
    unlinked = table.report[table.report["kind"] == "unlinked service_capacity"]
    assert sorted(unlinked["how"].str.split(" ").str[0]) == ["service_id", "unit_id"]
    assert (unlinked["how"].str.endswith("not read")).all()


def test_the_3_1_csv_example_says_no_partner_is_left():
    assert detect_version(V31 / "csv")[0] == "3"
    r = CliRunner().invoke(main, ["hsds", "import", "--source", str(V31 / "csv"), "--out",
                                  "/dev/null/x.csv", "--skip-invalid"])  # fmt: skip
    assert r.exit_code == 2
    assert "latitude" in r.output and "no partner is left: all 1" in r.output


@pytest.mark.parametrize("name", ["service_list", "organization_list", "location", "taxonomy",
                                  "taxonomy_term_list", "base"])  # fmt: skip
def test_documents_that_hold_no_partner_are_named(name):
    with pytest.raises(InputValidationError, match="a list view of services carries no"):
        read_hsds(V31 / f"{name}.json")


def test_one_id_with_two_contents_is_a_conflict_named_with_both_paths(tmp_path):
    doc = json.loads((V31 / "service_full.json").read_text(encoding="utf-8"))
    nested = doc["service_at_locations"][0]["location"]["languages"][0]
    doc["languages"] = [dict(nested, name="Another name")]
    path = tmp_path / "conflict.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(InputValidationError) as exc:
        read_hsds(path, unmapped="default:food_access", default_capacity=5)
    conflict = [p for p in exc.value.problems if "other content" in p.reason]
    assert len(conflict) == 1
    assert conflict[0].field.startswith("service_at_locations[0].location.languages[0]")
    assert "languages[0].id" in conflict[0].reason


def test_capacity_units_in_people_visits_or_hours_per_period_become_weeks(tmp_path):
    assert unit_factor("people per day") == 7.0
    assert unit_factor("Hours per week") == 1.0
    assert unit_factor("visits per year") == pytest.approx(7 / 365.2425)
    for odd in ("Kilogram", "beds", "people", "people per day or week"):
        assert unit_factor(odd) is None, odd
    package = Path(shutil.copytree(HERE / "csv", tmp_path / "pkg"))
    units = package / "units.csv"
    before = read_hsds(package).frame.set_index("partner_id")["capacity"]
    units.write_text(units.read_text().replace("volunteer-hours per week", "people per day"))
    after = read_hsds(package).frame.set_index("partner_id")["capacity"]
    assert (after == before * 7).all()


def test_unsupported_versions_and_other_folders_are_named(tmp_path):
    old = Path(shutil.copytree(V11 / "simple", tmp_path / "old"))
    package = json.loads((old / "datapackage.json").read_text())
    package["title"] = "HSDS 0.9 sample"
    (old / "datapackage.json").write_text(json.dumps(package))
    with pytest.raises(InputValidationError, match="version matcher does not read"):
        detect_version(old)
    other = tmp_path / "other"
    other.mkdir()
    (other / "people.csv").write_text("id,name\n1,x\n")
    with pytest.raises(InputValidationError, match="not an HSDS data package"):
        read_hsds(other)
    r = CliRunner().invoke(main, ["hsds", "import", "--source", str(V11 / "simple"), "--out",
                                  str(tmp_path / "p.csv"), "--unmapped", "default:nonsense"])
    assert r.exit_code == 2 and "unmapped" in r.output


def test_the_211_top_levels_map_their_whole_branch_and_longer_prefixes_win():
    from matcher.hsds import read_taxonomy_mapping

    m = read_taxonomy_mapping()
    assert m.resolve("211 HSIS Taxonomy", "HL-8000", None) == "education"
    assert m.resolve("AIRS Taxonomy", "JD-1500.1500", None) == "environmental_design"
    assert m.resolve("211 LA County Taxonomy", "RP-1400", None) == "mental_health"
    assert m.resolve("211 LA County Taxonomy", "RX-8450", None) == "substance_use"
    assert m.resolve("Open Eligibility", "H", None) is None  # another taxonomy's code


def test_the_readme_shows_this_mapping_report(tmp_path):
    r = CliRunner().invoke(main, [
        "hsds", "import", "--source", str(V11 / "simple"), "--out", str(tmp_path / "partners.csv"),
        "--default-capacity", "10", "--unmapped", "default:food_access", "--skip-invalid",
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    report = (tmp_path / "partners_mapping.csv").read_text()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert f"$ cat partners_mapping.csv\n{report}```" in readme
    assert "taxonomy terms: 1 default (13 service links)" in r.stderr
