"""Needs from assessments (``matcher assess``): the demand model by hand, every mapping error.

The small cases are built here: two square areas, a population layer of three units and
a table of rates, so that every figure can be computed by hand. The real Chicago case
runs the example mapping on the shared Healthy Chicago Survey data when it is present.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from matcher import InputValidationError, assess, read_needs
from matcher.assessments.indicators import area_key, severity_of
from tests.conftest import assert_clean_exit, invoke

ROOT = Path(__file__).resolve().parents[1]
CHICAGO = ROOT.parent / "shared" / "data" / "chicago"


def _square(x: float, y: float, side: float) -> list[list[list[float]]]:
    return [[[x, y], [x + side, y], [x + side, y + side], [x, y + side], [x, y]]]


def _layer(path: Path, rows: list[tuple[dict[str, object], list[list[list[float]]]]]) -> Path:
    features = [
        {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": c}}
        for props, c in rows
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


MAPPING = """
[areas]
file = "areas.geojson"
id = "num"
name = "label"

[population]
file = "units.geojson"
area = "in_area"
count = "people"

[[sources]]
name = "survey"
kind = "area_indicators"
file = "rates.csv"
area = "area"
population = "pop"
where = { layer = "area" }
weight = 2.0

  [[sources.indicators]]
  column = "violence"
  category = "crime"
  worse = "higher"
  units_per_affected = 0.1
  baseline = 5

  [[sources.indicators]]
  column = "internet"
  category = "digital_access"
  worse = "lower"
  units_per_affected = 0.01
  severity = [10, 20, 30, 40]
"""

RATES = """layer,area,pop,violence,internet,unused
(name),,,Violence rate,Internet rate,
area,1,400,30,90,x
area,2.0,50,10,,y
"""


@pytest.fixture
def case(tmp_path: Path) -> Path:
    _layer(tmp_path / "areas.geojson", [
        ({"num": 1, "label": "North"}, _square(-87.70, 41.90, 0.02)),
        ({"num": 2, "label": "South"}, _square(-87.70, 41.85, 0.02)),
    ])  # fmt: skip
    _layer(tmp_path / "units.geojson", [
        ({"in_area": "1", "people": 100}, _square(-87.700, 41.900, 0.01)),
        ({"in_area": "1", "people": 300}, _square(-87.690, 41.910, 0.01)),
        ({"in_area": "2", "people": 80}, _square(-87.695, 41.855, 0.01)),
        ({"in_area": "2", "people": 0}, _square(-87.685, 41.855, 0.005)),
    ])  # fmt: skip
    (tmp_path / "rates.csv").write_text(RATES)
    (tmp_path / "mapping.toml").write_text(MAPPING)
    return tmp_path / "mapping.toml"


def test_the_demand_model_by_hand(case: Path) -> None:
    result = assess(case)
    n = result.needs.set_index("need_id")
    # area 1, violence: 400 people x (30 - 5)% x 0.1 units x weight 2 = 20 units, over units
    # of 100 and 300 people: 5 and 15
    assert n.loc["survey:1:1:1", "demand"] == 5.0
    assert n.loc["survey:1:1:2", "demand"] == 15.0
    # area 2 ("2.0" in the table is area 2): 50 x (10 - 5)% x 0.1 x 2 = 0.5, all on the
    # unit with people (the empty unit gets no need)
    assert n.loc["survey:1:2:1", "demand"] == 0.5
    assert "survey:1:2:2" not in n.index
    # internet, a low rate is the problem: 400 x (100 - 90)% x 0.01 x 2 = 0.8 -> 0.2 + 0.6
    assert n.loc["survey:2:1:1", "demand"] == 0.2
    assert n.loc["survey:2:1:2", "demand"] == 0.6
    # area 2 has no internet value: no need, a report row saying so
    assert not n.index.str.startswith("survey:2:2:").any()
    assert set(n["category"]) == {"crime_prevention", "digital_access"}  # "crime" is an alias
    assert set(n["neighborhood"]) == {"1", "2"}
    assert set(n["source"]) == {"survey/violence", "survey/internet"}
    # severity: percentile of two areas (worst 5, best 1); thresholds (affected 10%: 2)
    assert n.loc["survey:1:1:1", "severity"] == 5
    assert n.loc["survey:1:2:1", "severity"] == 1
    assert n.loc["survey:2:1:1", "severity"] == 2
    # each need lies in its area, at its unit's representative point
    north = n[n["neighborhood"] == "1"]
    assert ((north["lat"] >= 41.90) & (north["lat"] <= 41.92)).all()
    r = result.report
    row = r[(r["indicator"] == "violence") & (r["area"] == "1")].iloc[0]
    assert row["demand"] == 20.0 and row["placed"] == 20.0 and row["needs"] == 2
    assert row["area_name"] == "North" and row["population"] == 400
    gap = r[(r["indicator"] == "internet") & (r["area"] == "2")].iloc[0]
    assert gap["note"] == "no value" and gap["needs"] == 0
    unused = r[r["note"] == "not in the mapping"]["indicator"].tolist()
    assert unused == ["unused"]
    # the needs are a valid needs file
    assert len(read_needs(result.needs).frame) == len(result.needs)


def test_demand_is_shared_out_in_whole_quanta(tmp_path: Path, case: Path) -> None:
    """Largest remainder: the parts add up to the area's demand exactly, ties to the first."""
    units = json.loads((tmp_path / "units.geojson").read_text())
    for f in units["features"][:2]:
        f["properties"]["people"] = 100
    units["features"].insert(1, {**units["features"][0]})
    (tmp_path / "units.geojson").write_text(json.dumps(units))
    (tmp_path / "rates.csv").write_text(RATES.replace("area,1,400,30", "area,1,400,6.25"))
    n = assess(case).needs.set_index("need_id")
    # 400 x 1.25% x 0.1 x 2 = 1.0 unit = 10 quanta over three equal units: 4, 3, 3
    got = [n.loc[f"survey:1:1:{k}", "demand"] for k in (1, 2, 3)]
    assert got == [0.4, 0.3, 0.3]


def test_severity_rules() -> None:
    affected = np.array([10.0, np.nan, 10.0, 30.0, 50.0, 70.0])
    # ties share their average rank; no value is severity 0
    assert severity_of(affected, "percentile").tolist() == [1, 0, 1, 3, 4, 5]
    assert severity_of(affected, (10.0, 30.0, 50.0, 70.0)).tolist() == [2, 0, 2, 3, 4, 5]
    assert severity_of(np.array([42.0]), "percentile").tolist() == [3]


def test_area_keys() -> None:
    assert [area_key(v) for v in (1, "1.0", " 01", "x1", 2.5)] == ["1", "1", "1", "x1", "2.5"]


def test_every_mapping_problem_at_once(case: Path) -> None:
    text = (
        MAPPING.replace('category = "crime"', 'category = "crimes"')
        .replace('worse = "lower"', 'worse = "down"')
        .replace("units_per_affected = 0.1", "units_per_affected = 0")
        .replace("baseline = 5", "baseline = 150")
        .replace("severity = [10, 20, 30, 40]", "severity = [40, 30]")
        .replace('file = "rates.csv"', 'file = "missing.csv"')
        .replace("weight = 2.0", "wieght = 2.0")
        .replace('kind = "area_indicators"', 'kind = "survey_responses"')
    )
    case.write_text(text)
    with pytest.raises(InputValidationError) as info:
        assess(case)
    got = {(p.field, p.value): p.reason for p in info.value.problems}
    assert all(p.file == str(case) for p in info.value.problems)
    expect = {
        ("sources[0].indicators[0].category", "crimes"): "did you mean 'crime_prevention'",
        ("sources[0].indicators[1].worse", "down"): 'must be "higher"',
        ("sources[0].indicators[0].units_per_affected", 0): "must be a number > 0",
        ("sources[0].indicators[0].baseline", 150): "<= 100",
        ("sources[0].indicators[1].severity", "[40, 30]"): "four rising",
        ("sources[0].file", "missing.csv"): "",
        ("sources[0].wieght", None): "did you mean 'weight'",
        ("sources[0].kind", "survey_responses"): "area_indicators",
    }
    for key, words in expect.items():
        assert key in got, (key, got)
        assert words in got[key]
    assert len(got) == len(expect)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("[areas\n", None, "not valid TOML"),
        ("[[sources]]\nname = 'a'\n", "areas", "is required"),
        ("[areas]\nfile = 'areas.geojson'\nid = 'num'\n", "sources", "is required"),
    ],
)
def test_broken_mapping_files(case: Path, text: str, field: str | None, words: str) -> None:
    case.write_text(text)
    with pytest.raises(InputValidationError) as info:
        assess(case)
    assert any(p.field == field and words in p.reason for p in info.value.problems)


def test_every_data_problem_at_once(case: Path) -> None:
    bad = RATES.replace("area,2.0,50,10,,y", "area,Sout,,150,abc,y\narea,1,400,30,90,z")
    (case.parent / "rates.csv").write_text(bad)
    with pytest.raises(InputValidationError) as info:
        assess(case)
    got = {(p.row, p.field): (p.value, p.reason) for p in info.value.problems}
    rates = str(case.parent / "rates.csv")
    assert all(p.file == rates for p in info.value.problems)
    assert got[(4, "area")] == ("Sout", "matches no area of the areas file; the closest: South")
    assert got[(4, "pop")] == ("", "missing population")
    assert got[(4, "violence")][0] == "150" and "from 0 to 100" in got[(4, "violence")][1]
    assert got[(4, "internet")][0] == "abc"
    assert got[(5, "area")] == ("1", "another row gives this area")
    assert len(got) == 5


def test_a_missing_column_is_named_with_the_closest(case: Path) -> None:
    case.write_text(MAPPING.replace('column = "violence"', 'column = "violenc"'))
    with pytest.raises(InputValidationError) as info:
        assess(case)
    (p,) = info.value.problems
    assert p.field == "violenc" and "did you mean 'violence'" in p.reason


def test_the_cli_writes_both_files_or_none(case: Path, tmp_path: Path) -> None:
    out, report = tmp_path / "out" / "needs.csv", tmp_path / "out" / "report.csv"
    result = invoke("assess", str(case), "--out", str(out), "--report", str(report))
    assert_clean_exit(result, 0)
    assert "wrote 5 needs" in result.output
    first = out.read_bytes(), report.read_bytes()
    assert_clean_exit(invoke("assess", str(case), "--out", str(out), "--report", str(report)), 0)
    assert (out.read_bytes(), report.read_bytes()) == first  # byte-identical runs
    rows = pd.read_csv(report, dtype=str, keep_default_na=False)
    assert list(rows.columns)[:4] == ["source", "indicator", "category", "area"]
    # a bad mapping: exit 2, the problem named, neither file touched
    case.write_text(MAPPING.replace("baseline = 5", "baseline = -1"))
    result = invoke("assess", str(case), "--out", str(out), "--report", str(report))
    assert_clean_exit(result, 2)
    assert "sources[0].indicators[0].baseline" in result.output
    assert (out.read_bytes(), report.read_bytes()) == first
    assert sorted(p.name for p in out.parent.iterdir()) == ["needs.csv", "report.csv"]


def test_an_area_named_instead_of_numbered(case: Path) -> None:
    (case.parent / "rates.csv").write_text(RATES.replace("area,2.0,50", "area,south,50"))
    n = assess(case).needs
    assert set(n["neighborhood"]) == {"1", "2"}


@pytest.mark.skipif(not (CHICAGO / "assessments").is_dir(), reason="shared Chicago data absent")
def test_the_healthy_chicago_survey_becomes_needs(tmp_path: Path) -> None:
    mapping = ROOT / "examples" / "assessments" / "chicago_hcs_2021_22.toml"
    result = assess(mapping)
    n, r = result.needs, result.report
    assert n["neighborhood"].nunique() == 77
    mapped = r[r["note"] != "not in the mapping"]
    assert len(mapped) == 6 * 77  # six indicators x 77 community areas
    # the placed demand of each area is its model demand in whole quanta
    assert np.allclose(mapped["placed"], np.round(mapped["demand"] / 0.1) * 0.1, atol=1e-9)
    sums = n.groupby(["source", "neighborhood"])["demand"].sum().round(6)
    placed = (
        mapped.assign(source="hcs-2021-22/" + mapped["indicator"])
        .groupby(["source", "area"])["placed"]
        .sum()
    )
    assert (sums.reindex(placed[placed > 0].index) == placed[placed > 0].round(6)).all()
    assert "HCSNSP_2021-2022" in set(r.loc[r["note"] == "not in the mapping", "indicator"])
    # Rogers Park (area 1), perceived violence 38.26%, 55,454 people, baseline 10%,
    # 0.002 units per affected adult: 55,454 x 28.26% x 0.002 = 31.34 units
    row = mapped[(mapped["indicator"] == "HCSNVP_2021-2022") & (mapped["area"] == "1")].iloc[0]
    assert row["area_name"] == "ROGERS PARK"
    assert row["demand"] == pytest.approx(55454 * (38.256937959 - 10) / 100 * 0.002, abs=1e-4)
    out = tmp_path / "plan"
    result.write(tmp_path / "needs.csv")
    done = invoke(
        "plan", "--needs", str(tmp_path / "needs.csv"),
        "--partners", str(ROOT / "data" / "sample" / "partners.csv"),
        "--out", str(out), "--models-dir", str(tmp_path / "models"), "-q",
    )  # fmt: skip
    assert_clean_exit(done, 0)
    assert (out / "assignments.csv").stat().st_size > 1000


def _problems(mapping: Path) -> list[tuple[int | None, str | None, object, str]]:
    with pytest.raises(InputValidationError) as info:
        assess(mapping)
    return [(p.row, p.field, p.value, p.reason) for p in info.value.problems]


def _edit_layer(path: Path, index: int, **changes: object) -> None:
    doc = json.loads(path.read_text())
    feature = doc["features"][index]
    for key, value in changes.items():
        if key == "geometry":
            feature["geometry"] = value
        else:
            feature["properties"][key] = value
    path.write_text(json.dumps(doc))


def test_bad_layers_are_named_by_row(case: Path) -> None:
    d = case.parent
    _edit_layer(d / "areas.geojson", 0, num="x" * 60)
    _edit_layer(d / "areas.geojson", 1, geometry={"type": "Point", "coordinates": [-87.7, 41.8]})
    got = _problems(case)
    assert any(r == 1 and f == "num" and "at most 48" in why for r, f, _, why in got)
    assert any(r == 2 and f == "geometry" and "needs a polygon" in why for r, f, _, why in got)
    # a layer in feet (no CRS member): not longitude/latitude
    _layer(d / "areas.geojson", [
        ({"num": 1, "label": "North"}, _square(1150000.0, 1900000.0, 500.0)),
        ({"num": 2, "label": "South"}, _square(-87.70, 41.85, 0.02)),
    ])  # fmt: skip
    got = _problems(case)
    assert [(r, f) for r, f, _, why in got if "not longitude/latitude" in why] == [(1, "geometry")]


def test_bad_population_units_are_named_by_row(case: Path) -> None:
    d = case.parent
    _edit_layer(d / "units.geojson", 0, people="many")
    _edit_layer(d / "units.geojson", 1, geometry={"type": "Point", "coordinates": [10.0, 10.0]})
    _edit_layer(d / "units.geojson", 2, geometry=None)
    got = _problems(case)
    assert (1, "people", "many", "a population is a number from 0 to 1e+09") in got
    assert any(r == 2 and "km outside this area's polygon" in why for r, _, _, why in got)
    assert any(r == 3 and f == "geometry" and "no geometry" in why for r, f, _, why in got)


def test_bad_rate_tables_are_named_by_line(case: Path) -> None:
    rates = case.parent / "rates.csv"
    rates.write_text("layer,area,pop,violence,violence,internet\narea,1,400,30,30,90\n")
    assert any("repeats the name" in why for *_, why in _problems(case))
    rates.write_text("layer,area,pop,violence,internet\n\n\narea,1,400,30\narea,2,50,10,5\n")
    assert [(r, why) for r, _, _, why in _problems(case)] == [(4, "has 4 fields; the header has 5")]
    rates.write_text("layer,area,pop,violence,internet\n\narea,1,400,30,90\n\narea,9,5,5,5\n")
    assert [(r, f, v) for r, f, v, _ in _problems(case)] == [(5, "area", "9")]
    rates.write_text("layer,area,pop,violence,internet\nAREA,1,400,30,90\n")
    ((row, field, value, why),) = _problems(case)
    assert (field, value) == ("layer", "area") and "no row is kept" in why and "'AREA'" in why


def test_areas_by_name_empty_cells_and_populations(case: Path) -> None:
    d = case.parent
    _edit_layer(d / "areas.geojson", 1, label="NORTH")
    (d / "rates.csv").write_text(
        'layer,area,pop,violence,internet\narea,north,400,30,90\narea,,5,5,5\narea,2,"1,2,3",5,5\n'
    )
    got = {(r, f): why for r, f, _, why in _problems(case)}
    assert got[(2, "area")].startswith("two areas have this name (ids 1, 2)")
    assert got[(3, "area")] == "names no area (the cell is empty)"
    assert got[(4, "pop")].startswith("a population is a number")
    # "1,234" is a number; 0 people is no demand, noted
    (d / "rates.csv").write_text(
        'layer,area,pop,violence,internet\narea,1,"1,234",30,90\narea,2,0,10,50\n'
    )
    result = assess(case)
    r = result.report.set_index(["indicator", "area"])
    assert r.loc[("violence", "1"), "population"] == 1234
    assert r.loc[("violence", "2"), "note"] == "no population"
    assert r.loc[("violence", "2"), "needs"] == 0


def test_ids_never_collide_and_demand_rounds_half_up(case: Path) -> None:
    d = case.parent
    second = MAPPING.split("[[sources]]")[1].replace('name = "survey"', 'name = "survey.1"')
    case.write_text(MAPPING + "[[sources]]" + second)
    # 75 people x (6 - 5)% x 0.1 x 2 = 0.15 units: half up to 0.2 (0.15 / 0.1 is 1.4999...)
    (d / "rates.csv").write_text(
        "layer,area,pop,violence,internet\narea,1,400,30,90\narea,2,75,6,95\n"
    )
    result = assess(case)
    assert result.needs["need_id"].is_unique
    row = result.report[(result.report["indicator"] == "violence") & (result.report["area"] == "2")]
    assert row["placed"].tolist() == [0.2, 0.2]  # both sources read the table


def test_demand_past_the_bound_and_same_output_files(case: Path, tmp_path: Path) -> None:
    case.write_text(MAPPING.replace("units_per_affected = 0.1", "units_per_affected = 1000000"))
    (case.parent / "rates.csv").write_text(
        "layer,area,pop,violence,internet\narea,1,999999999,30,90\n"
    )
    got = _problems(case)
    assert [(r, f) for r, f, _, _ in got] == [(2, "violence"), (2, "internet")]
    assert all("units in area 1; at most 1e+06" in why for *_, why in got)
    case.write_text(MAPPING)
    (case.parent / "rates.csv").write_text(RATES)
    out = tmp_path / "same.csv"
    result = invoke(
        "assess", str(case), "--out", str(out), "--report", str(tmp_path / "." / "same.csv")
    )
    assert_clean_exit(result, 2)
    assert "give the report a file of its own" in result.output and not out.exists()


def test_mapping_text_edge_cases(case: Path) -> None:
    case.write_bytes(b"\xef\xbb\xbf" + MAPPING.encode())  # a BOM is fine
    assert len(assess(case).needs) == 5
    case.write_text(MAPPING.replace('file = "rates.csv"', 'file = "a\\u0000b"'))
    assert any(f == "sources[0].file" and "control" in why for _, f, _, why in _problems(case))


def test_more_mapping_problems_at_once(case: Path) -> None:
    extra = (
        '\n[[sources]]\nname = "survey"\nkind = "area_indicators"\nfile = "rates.csv"\n'
        'area = ""\nwhere = "layer"\n'
        '  [[sources.indicators]]\n  column = "violence"\n  category = "crime"\n'
        '  worse = "higher"\n  units_per_affected = 1\n'
        '  [[sources.indicators]]\n  column = "violence"\n  category = "crime"\n'
        '  worse = "higher"\n  units_per_affected = 1\n'
        '\n[[sources]]\nname = "bad name!"\nkind = "area_indicators"\nfile = "rates.csv"\n'
        'area = "area"\nwhere = { layer = true }\nindicators = "none"\n'
    )
    case.write_text("population = 3\n" + MAPPING.replace("[population]", "[ignored]") + extra)
    got = {(f, why.split(";")[0].split(" (")[0]) for _, f, _, why in _problems(case)}
    assert {
        ("population", "must be a table"),
        ("ignored", "unknown key"),
        ("sources[1].name", "another source has this name"),
        ("sources[1].area", "must be non-empty text of at most 200 characters"),
        ("sources[1].where", 'must be a table of column = "value"'),
        ("sources[1].indicators[1].column", "this source maps the column twice"),
        (
            "sources[2].name",
            "letters, digits, '_', '.' and '-', starting with a letter or digit, at most 64",
        ),
        ("sources[2].where.layer", "must be text or a whole number"),
        ("sources[2].indicators", "must be one or more [[sources.indicators]] tables"),
    } <= got, got


def test_areas_without_a_population_layer_and_repeated_ids(case: Path) -> None:
    d = case.parent
    text = MAPPING.split("[population]")[0] + "[[sources]]" + MAPPING.split("[[sources]]")[1]
    case.write_text(text)
    n = assess(case).needs
    # without a layer, each area's demand is one need at the area's representative point
    assert n.groupby(["source", "neighborhood"]).size().max() == 1
    assert n.set_index("need_id").loc["survey:1:1:1", "demand"] == 20.0
    case.write_text(text.replace('population = "pop"\n', ""))
    got = _problems(case)
    assert [f for _, f, _, _ in got] == ["sources[0].population"]
    _edit_layer(d / "areas.geojson", 1, num=1)
    case.write_text(text)
    assert [(r, f, v) for r, f, v, _ in _problems(case)] == [(2, "num", "1")]


PRIORITIES = """
[[sources]]
name = "meetings"
kind = "priorities"
file = "priorities.csv"
area = "area"
issue = "issue"
rank = "rank"
top = 2
raise_severity = 2
create_units = 1.5

  [sources.issues]
  "Gun violence" = "crime_prevention"
  "Slow internet" = "digital"
  "Youth programs" = "youth_engagement"
"""


def test_ranked_priorities_raise_severity_or_create_needs(case: Path) -> None:
    d = case.parent
    case.write_text(MAPPING + PRIORITIES)
    (d / "priorities.csv").write_text(
        "area,issue,rank\n"
        "2,gun violence,1\n"  # area 2's violence need: severity 1 + 2 = 3
        "2,Potholes,2\n"  # not in the mapping: reported
        "2,Slow internet,3\n"  # rank 3 > top 2: not counted
        "North,Youth programs,2\n"  # no youth need in area 1: one is created
        "1,Gun violence,1\n"  # area 1's violence needs: 5 + 2, at most 5
    )
    result = assess(case)
    n = result.needs.set_index("need_id")
    assert n.loc["survey:1:2:1", "severity"] == 3
    assert n.loc["survey:1:1:1", "severity"] == 5 and n.loc["survey:1:1:2", "severity"] == 5
    assert n.loc["survey:2:1:1", "severity"] == 2  # internet needs of area 1: unchanged
    # created: 1.5 units over area 1's units (100 and 300 people): 0.4 + 1.1, severity 3 + 2
    made = n[n.index.str.startswith("meetings:5:1:")]
    assert made["demand"].tolist() == [0.4, 1.1] and set(made["severity"]) == {5}
    assert set(made["category"]) == {"youth_engagement"}
    assert set(made["source"]) == {"meetings/Youth programs"}
    r = result.report[result.report["source"] == "meetings"].set_index(["area", "indicator"])
    assert r.loc[("2", "gun violence"), "note"] == "severity +2"
    assert r.loc[("2", "Potholes"), "note"] == "issue not in the mapping"
    assert r.loc[("2", "Slow internet"), "note"] == "not among the top 2"
    assert r.loc[("1", "Youth programs"), "note"].startswith("created")
    assert r.loc[("1", "Youth programs"), "rank"] == 2
    assert len(read_needs(result.needs).frame) == len(result.needs)


def test_priorities_by_votes_and_their_problems(case: Path) -> None:
    d = case.parent
    case.write_text(MAPPING + PRIORITIES.replace('rank = "rank"', 'votes = "votes"'))
    (d / "priorities.csv").write_text(
        "area,issue,votes\n1,Slow internet,3\n1,Youth programs,9\n1,Gun violence,9\n"
    )
    r = assess(case).report
    notes = r[r["source"] == "meetings"].set_index("indicator")["note"]
    # the two most voted count (ties to the earlier line): youth, then violence
    assert notes["Slow internet"] == "not among the top 2"
    assert notes["Gun violence"] == "severity +2"
    (d / "priorities.csv").write_text("area,issue,votes\nNowhere,,-1\n")
    got = {(f, v): why for _, f, v, why in _problems(case)}
    assert got[("area", "Nowhere")].startswith("matches no area")
    assert got[("issue", "")] == "an issue is needed"
    assert got[("votes", "-1")] == "votes are a number from 0 to 1e+09"
    bad = PRIORITIES.replace('"Slow internet" = "digital"', '"Slow internet" = "wifi"')
    bad = bad.replace("top = 2", "top = 2.5").replace('rank = "rank"', 'rank = "rank"\nvotes = "v"')
    case.write_text(MAPPING + bad)
    got = {f: why for _, f, _, why in _problems(case)}
    assert "unknown category" in got["sources[1].issues.Slow internet"]
    assert got["sources[1].top"].startswith("must be a whole number")
    assert got["sources[1].rank"].startswith("give exactly one of rank")


def test_priorities_count_a_category_once_and_need_whole_ranks(case: Path) -> None:
    d = case.parent
    spec = PRIORITIES.replace("create_units = 1.5\n", "").replace(
        '"Gun violence" = "crime_prevention"',
        '"Gun violence" = "crime_prevention"\n  "Shootings" = "crime"',
    )
    case.write_text(MAPPING + spec)
    (d / "priorities.csv").write_text(
        "area,issue,rank\n1,Shootings,1\n1,Gun violence,2\n2,Youth programs,1\n"
    )
    result = assess(case)
    assert result.needs.set_index("need_id").loc["survey:1:2:1", "severity"] == 1
    notes = result.report[result.report["source"] == "meetings"].set_index("indicator")["note"]
    assert notes["Gun violence"] == "already raised by 'Shootings'"
    assert notes["Youth programs"] == "no need of this category in the area"
    (d / "priorities.csv").write_text("area,issue,rank\n1,Shootings,0\n1,Shootings,1.5\n")
    got = [(r, v, why) for r, _, v, why in _problems(case)]
    assert [(r, v) for r, v, _ in got] == [(2, "0"), (3, "1.5")]
    assert all(why.startswith("a rank is a whole number from 1") for *_, why in got)


POINTS = """
[[sources]]
name = "calls"
kind = "points"
file = "calls.csv"
lat = "y"
lon = "x"
type = "kind"
date = "opened"
start = 2014-06-01
end = 2014-06-30
units = 0.5
id = "request"

  [sources.types]
  "Garbage in alley" = "environmental_design"
  "Graffiti" = "sanitation"
"""


def test_point_reports_become_needs_where_they_were_made(case: Path) -> None:
    d = case.parent
    case.write_text(MAPPING + POINTS)
    (d / "calls.csv").write_text(
        "request,opened,kind,y,x\n"
        "A1,2014-06-02,Garbage in alley,41.905,-87.695\n"  # area 1
        "A2,2014-06-30T23:59,graffiti,41.855,-87.69\n"  # area 2; time ignored, type case too
        "A1,2014-06-09,Garbage in alley,41.905,-87.695\n"  # the same request updated
        "A3,2014-07-01,Graffiti,41.905,-87.695\n"  # after the window
        "A4,2014-06-03,Potholes,41.905,-87.695\n"  # not in the mapping
        "A5,2014-06-03,Graffiti,41.0,-87.0\n"  # outside every area
    )
    result = assess(case)
    n = result.needs[result.needs["need_id"].str.startswith("calls:")].set_index("need_id")
    assert n.index.tolist() == ["calls:A1", "calls:A2"]
    assert n["neighborhood"].tolist() == ["1", "2"]
    assert n["category"].tolist() == ["environmental_design", "environmental_design"]
    assert n["demand"].tolist() == [0.5, 0.5] and set(n["severity"]) == {3}
    assert n.loc["calls:A1", "source"] == "calls/Garbage in alley"
    r = result.report[result.report["source"] == "calls"]
    notes = sorted(r["note"].dropna().tolist())
    assert notes == [
        "",
        "",
        "1 report(s): outside every area",
        "1 report(s): outside the date window",
        "1 report(s): repeat an earlier report's id: counted once",
        "1 report(s): type not in the mapping",
    ]
    (d / "calls.csv").write_text(
        "request,opened,kind,y,x\n,2014-13-01,Graffiti,95,east\nB1,06/02/2014,Graffiti,41.9,-87.7\n"
    )
    got = {(r, f): why for r, f, _, why in _problems(case)}
    assert got[(2, "request")] == "a report needs an id"
    assert got[(2, "opened")] == got[(3, "opened")] == "must be a date, YYYY-MM-DD"
    assert got[(2, "y")].startswith("must be a number from -90 to 90")
    assert got[(2, "x")].startswith("must be a number from -180 to 180")
    case.write_text(MAPPING + POINTS.replace("end = 2014-06-30", "end = 2014-05-01\narea = 'x'"))
    got = {f: why for _, f, _, why in _problems(case)}
    assert got["sources[1].end"] == "is before start 2014-06-01"
    assert got["sources[1].area"].startswith("a point report's area is the polygon")


@pytest.mark.skipif(not (CHICAGO / "assessments").is_dir(), reason="shared Chicago data absent")
def test_chicago_311_complaints_become_needs() -> None:
    result = assess(ROOT / "examples" / "assessments" / "chicago_311_sanitation_2014.toml")
    n = result.needs
    assert n["need_id"].is_unique and len(n) > 1000
    assert set(n["category"]) == {"environmental_design"}
    r = result.report
    repeats = r["note"].str.contains("counted once", na=False)
    assert repeats.any()  # the export lists updated requests again
    counted = r.loc[r["needs"].fillna(0) > 0, "needs"].sum()
    assert counted == len(n)


def test_overlapping_sources_count_once_per_area(case: Path) -> None:
    d = case.parent
    calls = POINTS.replace('"Graffiti" = "sanitation"', '"Shots fired" = "crime_prevention"')
    (d / "calls.csv").write_text(
        "request,opened,kind,y,x\n"
        "C1,2014-06-02,Shots fired,41.905,-87.695\n"  # area 1: 0.5 units (survey: 20)
        "C2,2014-06-02,Shots fired,41.855,-87.69\n"  # area 2: 3 x 0.5 = 1.5 (survey: 0.5)
        "C3,2014-06-03,Shots fired,41.856,-87.69\n"
        "C4,2014-06-04,Shots fired,41.857,-87.69\n"
    )

    def run(rule: str, order: str = '"survey", "calls"') -> pd.DataFrame:
        overlap = f'\n[[overlaps]]\ncategory = "crime"\nsources = [{order}]\nrule = "{rule}"\n'
        case.write_text(overlap + MAPPING + calls)
        result = assess(case)
        crime = result.needs[result.needs["category"] == "crime_prevention"]
        notes = result.report[result.report["indicator"] == "(overlap)"]
        return crime.groupby("neighborhood")["source"].agg(lambda s: sorted(set(s))), notes

    kept, notes = run("max")
    assert kept["1"] == ["survey/violence"] and kept["2"] == ["calls/Shots fired"]
    dropped = notes[notes["note"].str.startswith("dropped")].set_index("area")
    assert dropped.loc["1", "source"] == "calls" and dropped.loc["2", "source"] == "survey"
    assert dropped.loc["2", "note"] == "dropped: overlaps with calls (rule max)"
    kept, _ = run("first", '"calls", "survey"')
    assert kept["1"] == kept["2"] == ["calls/Shots fired"]
    kept, notes = run("sum")
    assert kept["2"] == ["calls/Shots fired", "survey/violence"]
    assert set(notes["note"].str.split(":").str[0]) == {"kept"}
    bad = '\n[[overlaps]]\ncategory = "crimes"\nsources = ["survey", "call"]\nrule = "min"\n'
    case.write_text(bad + MAPPING + calls)
    got = {(f, v): why for _, f, v, why in _problems(case)}
    assert "did you mean 'crime_prevention'" in got[("overlaps[0].category", "crimes")]
    assert got[("overlaps[0].sources", "call")].endswith("did you mean 'calls'?")
    assert got[("overlaps[0].rule", "min")] == "must be one of: sum, max, first"


@pytest.mark.skipif(not (CHICAGO / "assessments").is_dir(), reason="shared Chicago data absent")
def test_chicago_survey_and_311_overlap_once_per_area() -> None:
    result = assess(ROOT / "examples" / "assessments" / "chicago_assessments.toml")
    n = result.needs
    litter = n[n["category"] == "environmental_design"]
    origin = litter["source"].str.split("/").str[0]
    per_area = origin.groupby(litter["neighborhood"]).nunique()
    assert (per_area == 1).all() and len(per_area) == 77
    notes = result.report.loc[result.report["indicator"] == "(overlap)", "note"]
    assert notes.str.startswith("dropped").sum() == notes.str.startswith("kept").sum() > 0


def test_the_sample_city_survey_needs_are_what_matcher_assess_makes(tmp_path: Path) -> None:
    """The sample's survey needs come from the real survey subset shipped beside it."""
    sample = ROOT / "data" / "sample"
    mapping = sample / "assessment" / "mapping.toml"
    out = tmp_path / "needs.csv"
    assert_clean_exit(invoke("assess", str(mapping), "--out", str(out), "-q"), 0)
    made = pd.read_csv(out, dtype={"neighborhood": str}).sort_values("need_id", ignore_index=True)
    shipped = pd.read_csv(sample / "needs.csv", dtype={"neighborhood": str})
    survey = shipped[shipped["source"].str.startswith("hcs-2021-22/")]
    assert made.equals(survey[made.columns].reset_index(drop=True))
    # the nine survey indicators of the issue, each with needs
    assert set(survey["source"].str.split("/").str[1].str[:-10]) == {
        "HCSNVP", "HCSUMHAP", "HCSRIP", "CHAVQOS", "HCSNLP", "HCSNSQP", "HCSWTSP", "HCSTLEP",
        "HCSCBP",
    }  # fmt: skip
    # Rogers Park (area 1), perceived violence 38.26% of 55,454: 0.0006 units per affected
    # adult above a 10% baseline is 9.4 units, spread over the area's tracts
    violence = survey[survey["need_id"].str.startswith("hcs-2021-22:1:1:")]
    assert violence["demand"].sum() == pytest.approx(9.4)
    assert violence["neighborhood"].eq("1").all() and len(violence) > 5


def test_an_assessment_from_another_city_imports_with_only_a_mapping_file(tmp_path: Path) -> None:
    """New York City's Community Health Survey, from the files its health department publishes."""
    mapping = ROOT / "examples" / "assessments" / "nyc" / "nyc_community_health_survey.toml"
    result = assess(mapping)
    r = result.report.set_index(["source", "area"])
    # Fordham - Bronx Park (UHF 103): 271,446 people; 71.5% feel safe, so 28.5% do not,
    # 18.5 points over the 10% baseline, at 0.001 units per affected adult: 50.2175 units
    row = r.loc[("chs-safety-2016", "103")]
    assert (row["area_name"], row["population"], row["rate"]) == ("Fordham - Bronx Park",
                                                                   271446, 71.5)  # fmt: skip
    assert row["demand"] == pytest.approx(271446 * (28.5 - 10) / 100 * 0.001, abs=1e-4)
    assert row["placed"] == 50.2 and row["needs"] == 1
    binge = r.loc[("chs-binge-2022", "103")]
    assert binge["demand"] == pytest.approx(271446 * (19.9 - 10) / 100 * 0.001, abs=1e-4)
    # one need per area with demand, at the area's point (the population is a table)
    n = result.needs
    assert len(n) == 64 and n.groupby(["source", "neighborhood"]).size().max() == 1
    assert set(n["category"]) == {"crime_prevention", "substance_use"}
    mapped = result.report[result.report["note"] != "not in the mapping"]
    assert len(mapped) == 2 * 42  # every UHF42 neighborhood of both sources, not feature 0
    out = tmp_path / "needs.csv"
    assert_clean_exit(invoke("assess", str(mapping), "--out", str(out), "-q"), 0)
    assert len(read_needs(out).frame) == 64


def test_json_tables_and_population_tables(case: Path) -> None:
    base = case.parent
    records = [
        {"area": "1", "pop": 400, "violence": 30.0, "internet": 90, "layer": "area"},
        {"area": 2, "pop": 50.0, "violence": 10, "internet": None, "layer": "area"},
    ]
    (base / "rates.json").write_text(json.dumps(records))
    text = case.read_text().replace('file = "rates.csv"', 'file = "rates.json"')
    (base / "j.toml").write_text(text)
    from_json = assess(base / "j.toml").needs
    assert from_json.equals(assess(case).needs)
    for bad, row, reason in [
        ({"a": [1, 2], "b": [1]}, None, "its column arrays have different lengths"),
        ([{"area": {"x": 1}}], 1, "a cell is a number, text, true/false or null"),
        ([1, 2], None, "a JSON table is an array of flat objects"),
        ("[" * 100_000, None, "nested too deep"),
    ]:
        (base / "rates.json").write_text(bad if isinstance(bad, str) else json.dumps(bad))
        with pytest.raises(InputValidationError) as err:
            assess(base / "j.toml")
        got = err.value.problems[0]
        assert got.row == row and got.reason.startswith(reason), got
    # a population table: a count per area (by id or name), placed at the area's point
    (base / "pop.csv").write_text("area,people,year\n1,400,2020\n1,100,2019\nSouth,80,2020\n")
    text = case.read_text().split("[population]")[0] + (
        '[population]\nfile = "pop.csv"\narea = "area"\ncount = "people"\n'
        'where = { year = "2020" }\n'
    ) + "[[sources]]" + case.read_text().split("[[sources]]", 1)[1].replace(
        'population = "pop"\n', ""
    )  # fmt: skip
    (base / "p.toml").write_text(text)
    needs = assess(base / "p.toml").needs.set_index("need_id")
    # area 1: 400 people x 25% x 0.1 x weight 2 = 20 units, in one need
    assert needs.loc["survey:1:1:1", "demand"] == 20.0 and "survey:1:1:2" not in needs.index
    (base / "pop.csv").write_text("area,people,year\n1,300,2020\nNorht,x,2020\nNorth,1,2020\n")
    with pytest.raises(InputValidationError) as err:
        assess(base / "p.toml")
    got = {(p.row, p.field): p.reason for p in err.value.problems}
    assert got[(3, "people")].startswith("a population is a number from 0 to")
    assert got[(3, "area")] == "matches no area of the areas file; the closest: North"
    assert got[(4, "area")] == "another row gives this area's population (narrow population.where)"
    # JSON records: the same keys in every record, no repeated key, Unicode text
    for bad, row, field, reason in [
        ('[{"area": 1, "Value": 2}, {"area": 2, "value": 3}]', 2, "Value",
         "every record has the same keys as the first; did you mean 'value'?"),
        ('{"a": [1], "a": [2]}', None, None, "an object repeats the key 'a'"),
        ('[{"area": "\\ud800"}]', 1, "area", "a cell is a number, text, true/false or null"),
    ]:  # fmt: skip
        (base / "rates.json").write_text(bad)
        with pytest.raises(InputValidationError) as err:
            assess(base / "j.toml")
        got_one = err.value.problems[0]
        assert (got_one.row, got_one.field) == (row, field) and got_one.reason.startswith(reason)
