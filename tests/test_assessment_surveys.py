"""Survey responses become needs: an XLSForm and its exports made here, figures by hand.

The form is an XLSForm written with openpyxl and read back by pyxform, as ODK and
KoboToolbox read it. The same twelve respondents come as a KoboToolbox ``.xlsx`` export
(a geopoint column, group paths joined with ``/``, choice names), as an ODK Central CSV
(lat and lon columns) and as a Google Forms CSV (labels joined with commas, no form):
each gives the same needs. Privacy is checked on the files written: no area x category
below k, no respondent's point, id or free text.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

openpyxl = pytest.importorskip("openpyxl")
pytest.importorskip("pyxform")

from matcher import InputValidationError, assess  # noqa: E402
from matcher.assessments.survey import HIDDEN  # noqa: E402
from tests.conftest import assert_clean_exit, invoke  # noqa: E402
from tests.test_assessments import ROOT, _layer, _square  # noqa: E402

FORM_SURVEY = [
    ("type", "name", "label"),
    ("begin_group", "place", "Where"),
    ("select_one areas", "area", "Which area do you live in?"),
    ("geopoint", "gps", "Your location"),
    ("end_group", "", ""),
    ("select_multiple concerns", "concerns", "What concerns you in your neighborhood?"),
    ("select_one concerns", "top", "Your biggest concern"),
    ("text", "other_text", "Anything else?"),
]
FORM_CHOICES = [
    ("list_name", "name", "label"),
    ("areas", "n", "North"),
    ("areas", "s", "South"),
    ("concerns", "unsafe", "Feeling unsafe"),
    ("concerns", "internet", "No reliable internet, at home"),
    ("concerns", "lonely", "Loneliness"),
    ("concerns", "none", "None of these"),
]

# (area choice, (lat, lon) or None, concerns, top, free text)
# Area 1 (North) is the square -87.70..-87.68 x 41.90..41.92, area 2 (South) 41.85..41.87.
RESPONDENTS = [
    ("n", (41.9011, -87.6991), "unsafe internet", "unsafe", "my neighbour at 12 Elm St"),
    ("n", (41.9022, -87.6982), "unsafe", "unsafe", ""),
    ("n", (41.9033, -87.6973), "unsafe lonely", "lonely", ""),
    ("n", (41.9044, -87.6964), "unsafe", "", ""),
    ("n", (41.9055, -87.6955), "unsafe internet", "internet", ""),
    ("n", (41.9066, -87.6946), "unsafe none", "unsafe", ""),
    ("n", (41.9077, -87.6937), "none", "none", ""),
    ("s", None, "internet", "internet", ""),
    ("s", None, "internet lonely", "internet", ""),
    ("s", None, "", "internet", ""),
    ("s", None, "internet", "", ""),
    # says North, but the point lies in South: the point wins
    ("n", (41.8611, -87.6911), "internet", "internet", ""),
]
EXPECTED = {
    # area 1: unsafe by 6 respondents, 0.5 units each = 3 units over the area's units of
    # 100 and 300 people: 30 quanta, 7.5 and 22.5 -> 7 + 22, the one left to the earlier
    # unit (equal remainders): 0.8 and 2.2
    "d2d:crime_prevention:1:1": 0.8,
    "d2d:crime_prevention:1:2": 2.2,
    # area 2: internet by 5 (4 by the area column, 1 by the point) = 2.5 units, all on the
    # unit with people
    "d2d:digital_access:2:1": 2.5,
}

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
name = "d2d"
kind = "survey"
file = "{file}"
form = "form.xlsx"
area = "{area}"
{where}
id = "{id}"
units = 0.5

  [[sources.questions]]
  column = "concerns"
  [sources.questions.choices]
  unsafe = "crime_prevention"
  "No reliable internet, at home" = "digital_access"
  lonely = "elderly_support"

  [[sources.questions]]
  column = "top"
  [sources.questions.choices]
  unsafe = "crime_prevention"
  internet = "digital_access"
  lonely = "elderly_support"
"""


def _sheet(book: object, title: str, rows: list[tuple[object, ...]]) -> None:
    ws = book.create_sheet(title)  # type: ignore[attr-defined]
    for row in rows:
        ws.append(row)


def _write_form(path: Path) -> None:
    book = openpyxl.Workbook()
    book.remove(book.active)
    _sheet(book, "survey", FORM_SURVEY)
    _sheet(book, "choices", FORM_CHOICES)
    _sheet(book, "settings", [("form_title", "form_id"), ("Door to door", "d2d")])
    book.save(path)


def _kobo_rows() -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = [
        ("start", "place/area", "place/gps", "concerns", "top", "other_text", "_uuid")
    ]
    for i, (area, point, concerns, top, text) in enumerate(RESPONDENTS):
        gps = f"{point[0]} {point[1]} 180.5 4.2" if point else None
        rows.append((f"2026-05-{i + 1:02d}T10:00:00", area, gps, concerns, top, text, f"u{i}"))
    return rows


@pytest.fixture
def survey(tmp_path: Path) -> Path:
    _layer(tmp_path / "areas.geojson", [
        ({"num": 1, "label": "North"}, _square(-87.70, 41.90, 0.02)),
        ({"num": 2, "label": "South"}, _square(-87.70, 41.85, 0.02)),
    ])  # fmt: skip
    _layer(tmp_path / "units.geojson", [
        ({"in_area": "1", "people": 100}, _square(-87.700, 41.900, 0.01)),
        ({"in_area": "1", "people": 300}, _square(-87.690, 41.910, 0.01)),
        ({"in_area": "2", "people": 80}, _square(-87.695, 41.855, 0.01)),
    ])  # fmt: skip
    _write_form(tmp_path / "form.xlsx")
    book = openpyxl.Workbook()
    book.remove(book.active)
    _sheet(book, "responses", _kobo_rows())
    book.save(tmp_path / "kobo.xlsx")
    text = MAPPING.format(file="kobo.xlsx", area="place/area", where='point = "place/gps"',
                          id="_uuid")  # fmt: skip
    (tmp_path / "mapping.toml").write_text(text)
    return tmp_path / "mapping.toml"


def _demands(needs: pd.DataFrame) -> dict[str, float]:
    return dict(zip(needs["need_id"], needs["demand"], strict=True))


def test_an_xlsform_survey_becomes_the_expected_needs(survey: Path) -> None:
    result = assess(survey)
    assert _demands(result.needs) == EXPECTED
    n = result.needs.set_index("need_id")
    assert set(n["severity"]) == {3}  # one shown area per category: the middle
    assert n.loc["d2d:digital_access:2:1", "neighborhood"] == "2"
    assert n.loc["d2d:crime_prevention:1:1", "source"] == "d2d/concerns+top"
    r = result.report
    cell = r[(r["category"] == "crime_prevention") & (r["area"] == "1")].iloc[0]
    assert cell["respondents"] == 6 and cell["demand"] == 3.0 and cell["placed"] == 3.0
    assert cell["units_per_affected"] == 0.5 and cell["area_name"] == "North"
    # internet in area 1 (2 respondents), loneliness (1 in each area) and crime prevention
    # in area 2 (none) are below k = 5: every such cell reads the same, zero or not
    hidden = r[r["note"].fillna("").str.startswith("suppressed")]
    assert sorted(zip(hidden["category"], hidden["area"], strict=True)) == [
        ("crime_prevention", "2"), ("digital_access", "1"), ("elderly_support", "1"),
        ("elderly_support", "2"),
    ]  # fmt: skip
    assert hidden["respondents"].isna().all() and (hidden["needs"] == 0).all()
    assert hidden["demand"].isna().all() and hidden["severity"].isna().all()
    notes = r["note"].fillna("").tolist()
    # the form's choice mapped to nothing is named, without a count; free text never
    assert notes.count("choice 'none' maps to no category: its answers are not counted") == 2
    assert not any("answer(s)" in n for n in notes)
    assert "Elm" not in r.to_csv()


def test_no_published_cell_below_k_and_no_respondent_point_in_any_file(
    survey: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    out = tmp_path / "out"
    result = invoke("assess", str(survey), "--out", str(out / "needs.csv"),
                    "--report", str(out / "report.csv"))  # fmt: skip
    assert_clean_exit(result, 0)
    texts = {p.name: p.read_text() for p in out.iterdir()}
    assert set(texts) == {"needs.csv", "report.csv"}
    for point in (p for _, p, *_ in RESPONDENTS if p):
        for value in point:
            for name, text in texts.items():
                assert str(value) not in text, (name, value)
            assert str(value) not in caplog.text + result.output
    for name, text in texts.items():
        for secret in ("u0", "u11", "Elm", "2026-05-01", "180.5"):
            assert secret not in text, (name, secret)
    report = pd.read_csv(out / "report.csv", dtype={"area": str})
    shown = report["respondents"].dropna()
    assert len(shown) == 2 and (shown >= 5).all()
    needs = pd.read_csv(out / "needs.csv")
    respondent_points = {p for _, p, *_ in RESPONDENTS if p}
    assert not respondent_points & set(zip(needs["lat"], needs["lon"], strict=True))


def test_odk_central_csv_and_google_forms_give_the_same_needs(survey: Path) -> None:
    base = survey.parent
    # ODK Central: group paths joined with "-", a geopoint split into columns
    with open(base / "odk.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["SubmissionDate", "place-area", "place-gps-Latitude", "place-gps-Longitude",
                    "concerns", "top", "other_text", "meta-instanceID"])  # fmt: skip
        for i, (area, point, concerns, top, text) in enumerate(RESPONDENTS):
            lat, lon = point if point else ("", "")
            w.writerow([f"2026-05-{i + 1:02d}", area, lat, lon, concerns, top, text, f"uuid:{i}"])
    where = 'lat = "place-gps-Latitude"\nlon = "place-gps-Longitude"'
    text = MAPPING.format(file="odk.csv", area="place-area", id="meta-instanceID", where=where)
    (base / "odk.toml").write_text(text)
    assert _demands(assess(base / "odk.toml").needs) == EXPECTED
    # Google Forms: the question's text as the column, labels joined with ", ", no form
    label = dict((c[1], c[2]) for c in FORM_CHOICES[1:])
    with open(base / "google.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Timestamp", "Which area do you live in?", "What concerns you?"])
        for i, (area, point, concerns, top, _) in enumerate(RESPONDENTS):
            if point and area == "n" and point[0] < 41.9:
                area = "s"  # Google Forms has no point: the respondent picks the area
            chosen = list(dict.fromkeys(concerns.split() + ([top] if top else [])))
            w.writerow([f"2026/05/{i + 1:02d}", label[area], ", ".join(label[c] for c in chosen)])
    (base / "google.toml").write_text(
        (base / "mapping.toml").read_text().split("[[sources]]")[0]
        + """
[[sources]]
name = "d2d"
kind = "survey"
file = "google.csv"
area = "Which area do you live in?"
units = 0.5

  [[sources.questions]]
  column = "What concerns you?"
  separator = ","
  [sources.questions.choices]
  "Feeling unsafe" = "crime_prevention"
  "No reliable internet, at home" = "digital_access"
  "loneliness" = "elderly_support"
"""
    )
    google = assess(base / "google.toml")
    assert _demands(google.needs) == EXPECTED
    notes = google.report["note"].fillna("").tolist()
    assert "answers that are no choice of the mapping or the form are not counted" in notes


def test_survey_mapping_problems_at_once(survey: Path) -> None:
    base = survey.parent
    (base / "answers.csv").write_text("concerns,where\nunsafe,North\n")
    (base / "bad.toml").write_text(
        (base / "mapping.toml").read_text().split("[[sources]]")[0]
        + """
[[sources]]
name = "a"
kind = "survey"
file = "answers.csv"
sheet = "responses"
lat = "y"
k = 2
units = 0
severity = [1, 2]
  [[sources.questions]]
  column = "concerns"
  separator = "|"
  choices = { unsafe = "not-a-category" }

[[sources]]
name = "b"
kind = "survey"
file = "answers.csv"
form = "answers.csv"
questions = []
"""
    )
    with pytest.raises(InputValidationError) as err:
        assess(base / "bad.toml")
    got = [(p.field, p.reason) for p in err.value.problems]
    expected = {
        ("sources[0].sheet", "a sheet is chosen only in an .xlsx file"),
        ("sources[0].lat", "give both lat and lon, or neither"),
        ("sources[0].k", "must be a number >= 3 and <= 1000"),
        ("sources[0].units", "must be a number > 0 and <= 1e+06"),
        ("sources[0].questions[0].separator", 'must be " " (ODK, KoboToolbox), "," or ";"'),
        ("sources[1].form", "an XLSForm is an .xlsx file"),
        ("sources[1].area", "say where respondents are: an area column, a geopoint column "
                            "(point) or lat and lon"),
        ("sources[1].questions", "must be 1 to 64 [[sources.questions]] tables"),
    }  # fmt: skip
    for field, reason in expected:
        assert any(f == field and r.startswith(reason) for f, r in got), (field, got)
    fields = {p.field for p in err.value.problems}
    assert "sources[0].severity" in fields
    assert "sources[0].questions[0].choices.unsafe" in fields


def test_form_and_data_problems_name_the_row_or_the_choice(survey: Path) -> None:
    base = survey.parent
    text = survey.read_text()
    (base / "m1.toml").write_text(
        text.replace('column = "top"', 'column = "top"\n  question = "topp"')
        .replace("lonely = ", "lonley = ", 1)
    )
    with pytest.raises(InputValidationError) as err:
        assess(base / "m1.toml")
    reasons = {p.field: p.reason for p in err.value.problems}
    assert reasons["sources[0].questions[1].question"] == (
        "matches no select question of the form; the closest: top"
    )
    assert "is no choice (name or label) of question 'concerns'" in reasons[
        "sources[0].questions[0].choices.lonley"
    ]
    book = openpyxl.load_workbook(base / "kobo.xlsx")
    ws = book["responses"]
    ws["C3"] = "41.9 north"  # a geopoint that is not numbers
    ws["B4"] = "Nort"  # an area that is no area (a cell read when the point is empty)
    ws["C4"] = None
    book.save(base / "kobo.xlsx")
    with pytest.raises(InputValidationError) as err:
        assess(survey)
    got = {(p.row, p.field): p.reason for p in err.value.problems}
    assert "geopoint" in got[(3, "place/gps")]
    assert "North" in got[(4, "place/area")]  # the closest name
    (base / "m2.toml").write_text(text.replace('file = "kobo.xlsx"', 'file = "kobo.xlsx"\n'
                                               'sheet = "Sheet9"'))  # fmt: skip
    with pytest.raises(InputValidationError) as err:
        assess(base / "m2.toml")
    assert "the sheets are 'responses'" in err.value.problems[0].reason
    (base / "form.xlsx").write_bytes(b"not a zip")
    with pytest.raises(InputValidationError) as err:
        assess(survey)
    assert "not an .xlsx workbook" in err.value.problems[0].reason


def test_date_window_and_repeated_ids(survey: Path) -> None:
    base = survey.parent
    text = survey.read_text().replace('units = 0.5', 'units = 0.5\ndate = "start"\n'
                                      'start = 2026-05-02\nend = "2026-05-12"')  # fmt: skip
    (base / "window.toml").write_text(text)
    needs = assess(base / "window.toml").needs
    # the first respondent (May 1) is out: unsafe by 5 in area 1, still shown
    assert _demands(needs)["d2d:crime_prevention:1:1"] + _demands(needs)[
        "d2d:crime_prevention:1:2"
    ] == pytest.approx(2.5)
    book = openpyxl.load_workbook(base / "kobo.xlsx")
    ws = book["responses"]
    for row in range(3, 8):
        ws.cell(row=row, column=7, value="u0")  # five answers from one respondent
    book.save(base / "kobo.xlsx")
    result = assess(survey)
    assert "d2d:crime_prevention:1:1" not in set(result.needs["need_id"])  # 2 left: below k
    notes = " ".join(result.report["note"].fillna(""))
    assert "5 respondent(s) not counted" in notes


def test_workbooks_are_read_as_a_csv_export_would_be_and_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime as dt

    from matcher.assessments import workbook

    book = openpyxl.Workbook()
    ws = book.active
    ws.append(["a", "b", "c", "d", None])
    ws.append([12.0, 41.88, dt.datetime(2026, 5, 1), True, None])
    ws.append([None, None, None, None, None])  # an empty row is skipped
    ws.append([1, "x", dt.datetime(2026, 5, 1, 9, 30), False, None])
    book.save(tmp_path / "t.xlsx")
    frame, rows = workbook.read_sheet(tmp_path / "t.xlsx", "t.xlsx", None)
    assert list(frame.columns) == ["a", "b", "c", "d"] and rows == [2, 4]
    assert frame.to_numpy().tolist() == [
        ["12", "41.88", "2026-05-01", "true"],
        ["1", "x", "2026-05-01 09:30:00", "false"],
    ]
    ws.cell(row=1, column=2, value="a")
    ws["C1"] = None
    book.save(tmp_path / "t.xlsx")
    with pytest.raises(InputValidationError) as err:
        workbook.read_sheet(tmp_path / "t.xlsx", "t.xlsx", None)
    assert {(p.field, p.reason) for p in err.value.problems} == {
        ("a", "another column has this name"), ("column 3", "a column needs a name"),
    }  # fmt: skip
    monkeypatch.setattr(workbook, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(InputValidationError) as err:
        workbook.read_sheet(tmp_path / "t.xlsx", "t.xlsx", None)
    assert "unpacks to" in err.value.problems[0].reason


def test_the_plan_report_shows_the_assessment(survey: Path, tmp_path: Path) -> None:
    base = survey.parent
    # a point source that overlaps the survey on digital access, kept where it has more
    (base / "calls.csv").write_text(
        "id,lat,lon,type\n"
        + "".join(f"c{i},41.86{i},-87.69,No wifi\n" for i in range(8))
        + "c9,41.91,-87.69,<b>Other</b>\n"
    )
    (base / "mapping.toml").write_text(
        survey.read_text()
        + """
[[sources]]
name = "calls"
kind = "points"
file = "calls.csv"
lat = "lat"
lon = "lon"
type = "type"
id = "id"
units = 0.5
types = { "no wifi" = "digital_access" }

[[overlaps]]
category = "digital_access"
sources = ["d2d", "calls"]
rule = "max"
"""
    )
    out = tmp_path / "out"
    done = invoke("assess", str(survey), "--out", str(out / "needs.csv"),
                  "--report", str(out / "assessment.csv"))  # fmt: skip
    assert_clean_exit(done, 0)
    plan_args = ["plan", "--needs", str(out / "needs.csv"),
                 "--partners", str(ROOT / "data" / "sample" / "partners.csv"),
                 "--models-dir", str(tmp_path / "models"), "-q"]  # fmt: skip
    done = invoke(*plan_args, "--out", str(tmp_path / "p1"), "--assessment",
                  str(out / "assessment.csv"))  # fmt: skip
    assert_clean_exit(done, 2)
    assert "add --report" in done.output and not (tmp_path / "p1").exists()
    (out / "bad.csv").write_text("source,indicator\nx,y\n")
    done = invoke(*plan_args, "--out", str(tmp_path / "p2"), "--report",
                  "--assessment", str(out / "bad.csv"))  # fmt: skip
    assert_clean_exit(done, 2)
    assert "not an assessment report" in done.output and not (tmp_path / "p2").exists()
    done = invoke(*plan_args, "--out", str(tmp_path / "p3"), "--report",
                  "--assessment", str(out / "assessment.csv"))  # fmt: skip
    assert_clean_exit(done, 0)
    page = (tmp_path / "p3" / "report.html").read_text()
    section = page[page.index('<section id="assessment">') :]
    section = section[: section.index("</section>")]
    # demand by source: the survey's 3 units of crime prevention by its model
    assert "0.5 units per respondent who reported it" in section
    # the overlap: calls have 4 units in area 2 against the survey's 2.5, so calls are kept
    overlaps = section[section.index('id="table-assessment-overlaps"') :]
    overlaps = overlaps[: overlaps.index("</table>")]
    assert "<td>calls</td><td>digital_access</td><td class=\"num\">1</td>" in overlaps
    assert "<td>d2d</td><td>digital_access</td><td class=\"num\">0</td>" in overlaps
    # left out: the unmapped type, escaped; the suppressed cells; nothing of respondents
    assert "&lt;b&gt;Other&lt;/b&gt;" in section and "<b>Other</b>" not in section
    assert "suppressed: fewer than 5 respondents" in section
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)
    for secret in ("Elm", "41.9011", ">u0<", "uuid"):
        assert secret not in text
    # the same plan and assessment render the same bytes
    done = invoke(*plan_args, "--out", str(tmp_path / "p4"), "--report",
                  "--assessment", str(out / "assessment.csv"))  # fmt: skip
    assert (tmp_path / "p4" / "report.html").read_bytes() == page.encode()
    # a report edited by hand still renders: a source named like a column, an overlap note
    # without its rule, an overlap row twice, an area without a name
    edited = pd.read_csv(out / "assessment.csv", dtype=str, keep_default_na=False)
    edited["source"] = edited["source"].replace({"calls": "area"})
    edited["note"] = edited["note"].str.replace(" (rule max)", "", regex=False)
    edited.loc[edited["area"] == "1", "area_name"] = ""
    overlap_rows = edited[edited["indicator"] == "(overlap)"]
    pd.concat([edited, overlap_rows]).to_csv(out / "edited.csv", index=False)
    done = invoke(*plan_args, "--out", str(tmp_path / "p5"), "--report",
                  "--assessment", str(out / "edited.csv"))  # fmt: skip
    assert_clean_exit(done, 0)
    edited_page = (tmp_path / "p5" / "report.html").read_text()
    assert '<th scope="col" class="num">area</th>' in edited_page


def _form(path: Path, survey: list[tuple[str, ...]], choices: list[tuple[str, ...]]) -> None:
    book = openpyxl.Workbook()
    book.remove(book.active)
    _sheet(book, "survey", survey)
    _sheet(book, "choices", choices)
    book.save(path)


def test_names_win_over_labels_and_areas_are_read_through_their_choices(survey: Path) -> None:
    base = survey.parent
    # a Likert scale: names 0-4, labels 1-5 (a label is another choice's name)
    _form(base / "likert.xlsx", [
        ("type", "name", "label::English (en)", "label::Français (fr)"),
        ("select_one areas", "area", "Area", "Zone"),
        ("select_one scale", "worry", "How worried are you?", "Inquiétude"),
    ], [
        ("list_name", "name", "label::English (en)", "label::Français (fr)"),
        ("areas", "1", "North side (Rogers Park)", "Nord"),
        ("areas", "2", "South", "Sud"),
        *[("scale", str(i), str(i + 1), str(i + 1)) for i in range(5)],
    ])  # fmt: skip
    rows = ["area,worry"] + ["1,3"] * 5 + ["Nord,4"] * 5 + ["Sud,3"] * 2 + [",3"]
    (base / "likert.csv").write_text("\n".join(rows) + "\n")
    (base / "likert.toml").write_text(
        survey.read_text().split("[[sources]]")[0]
        + """
[[sources]]
name = "w"
kind = "survey"
file = "likert.csv"
form = "likert.xlsx"
area = "area"
  [[sources.questions]]
  column = "worry"
  choices = { "3" = "crime_prevention", "4" = "mental_health" }
"""
    )
    result = assess(base / "likert.toml")
    # "3" is the choice named 3 (label "4"), in the mapping and in the answers alike; the
    # area "1" is area 1 itself, "Nord" the French label of the choice for area 1
    # (5 respondents x 1 unit over units of 100 and 300 people: 12.5 and 37.5 tenths, the
    # tenth left over to the earlier unit)
    assert _demands(result.needs) == {
        "w:crime_prevention:1:1": 1.3, "w:crime_prevention:1:2": 3.7,
        "w:mental_health:1:1": 1.3, "w:mental_health:1:2": 3.7,
    }  # fmt: skip
    notes = result.report["note"].fillna("").tolist()
    assert any(n.startswith("labels that are also choice names (1, 2, 3, 4)") for n in notes)
    assert "1 respondent(s) not counted" in " ".join(notes)  # no area


def test_a_respondents_answers_are_never_shown_in_a_problem(survey: Path) -> None:
    base = survey.parent
    rows = ["gps,area,concerns,wave", "41.9011 -87.6991,,unsafe,1", "41.9022,,unsafe,1",
            "41.9 -87.6 x,,unsafe,1", ",Nowhere St 12,unsafe,1", "1e999 2,,unsafe,1"]  # fmt: skip
    (base / "answers.csv").write_text("\n".join(rows) + "\n")
    head = survey.read_text().split("[[sources]]")[0]
    source = """
[[sources]]
name = "p"
kind = "survey"
file = "answers.csv"
point = "gps"
area = "area"
{where}
  [[sources.questions]]
  column = "concerns"
  choices = {{ unsafe = "crime_prevention" }}
"""
    (base / "p.toml").write_text(head + source.format(where=""))
    with pytest.raises(InputValidationError) as err:
        assess(base / "p.toml")
    got = [(p.row, p.field, p.value) for p in err.value.problems]
    assert got == [(3, "gps", HIDDEN), (4, "gps", HIDDEN), (5, "area", HIDDEN), (6, "gps", HIDDEN)]
    assert "Nowhere" not in str(err.value.report()) and "41.9022" not in err.value.report()
    (base / "p.toml").write_text(head + source.format(where='where = { wave = "2" }'))
    with pytest.raises(InputValidationError) as err:
        assess(base / "p.toml")
    assert err.value.problems[0].reason.endswith("this column holds 1 other value(s), not shown")


def test_empty_ids_are_no_ids(survey: Path) -> None:
    book = openpyxl.load_workbook(survey.parent / "kobo.xlsx")
    for row in range(2, 14):
        book["responses"].cell(row=row, column=7, value=None)
    book.save(survey.parent / "kobo.xlsx")
    assert _demands(assess(survey).needs) == EXPECTED


def test_a_workbook_is_read_whole_and_a_broken_one_is_named(survey: Path) -> None:
    import zipfile

    base = survey.parent
    data = (base / "kobo.xlsx").read_bytes()

    def rewrite(name: str, change: Callable[[str], str]) -> None:
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(base / name, "w") as dst:
            for item in src.infolist():
                body = src.read(item)
                if item.filename == "xl/worksheets/sheet1.xml":
                    body = change(body.decode()).encode()
                dst.writestr(item, body)

    def run(name: str) -> InputValidationError | pd.DataFrame:
        (base / "m.toml").write_text(survey.read_text().replace("kobo.xlsx", name))
        try:
            return assess(base / "m.toml").needs
        except InputValidationError as exc:
            return exc

    # a declared size smaller than the sheet: every row is read all the same
    rewrite("dim.xlsx", lambda x: re.sub(r'<dimension ref="[^"]+"', '<dimension ref="A1:G3"', x))
    needs = run("dim.xlsx")
    assert isinstance(needs, pd.DataFrame) and _demands(needs) == EXPECTED
    rewrite("xml.xlsx", lambda x: x.replace("</sheetData>", "<row>"))
    broken = run("xml.xlsx")
    assert isinstance(broken, InputValidationError)
    assert broken.problems[0].reason.startswith("cannot read the sheet")
    book = openpyxl.load_workbook(base / "kobo.xlsx")
    book["responses"]["J5"] = "stray"  # beyond the header's seven columns
    book.save(base / "wide.xlsx")
    wide = run("wide.xlsx")
    assert isinstance(wide, InputValidationError)
    assert (wide.problems[0].row, wide.problems[0].reason) == (
        5, "a cell beyond the header's 7 columns (column 10)"
    )


def test_forms_nest_groups_to_a_bound(survey: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from matcher.assessments import survey as module

    monkeypatch.setattr(module, "MAX_FORM_DEPTH", 0)
    with pytest.raises(InputValidationError) as err:
        assess(survey)
    assert err.value.problems[0].reason == "groups nest deeper than 0 levels"
