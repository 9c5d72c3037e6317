"""Bad input gets a clear, complete report: library (InputValidationError) and CLI (exit 2).

Row numbers: for CSV the reported row is the line of the file (the header is row 1, the
first data row is row 2, as in a spreadsheet); for GeoJSON it is the 0-based feature
index. Every bad input below is checked twice: through ``matcher.read_needs`` /
``matcher.read_partners`` (the ``Problem`` fields) and through ``matcher plan`` (exit
code 2, the report on stderr, no traceback, nothing written).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import shapely

import matcher
from matcher import InputValidationError, MatchConfig, Problem

from .conftest import assert_clean_exit, plan_cli

# the real source data lies beside the repository (../shared), in CI too
CHICAGO = Path(__file__).resolve().parents[2] / "shared" / "data" / "chicago"
HARDSHIP = CHICAGO / "chicago_community_areas_hardship_crime.geojson"
NORWOOD_OUTER, NORWOOD_ENCLAVE = 0.0012862068, 0.0000552574  # square degrees

NEEDS_HEADER = "need_id,category,lat,lon,demand,severity\n"
GOOD_NEED = "n1,food_access,41.8800,-87.6300,4,3\n"
PARTNERS_HEADER = "partner_id,name,kind,lat,lon,categories,capacity,radius_km\n"
GOOD_PARTNER = "p1,Food Bank,organization,41.8810,-87.6300,food_access,10,2.0\n"

# EPSG:3435 (NAD83 / Illinois East, US feet) coordinates of (41.88, -87.63).
X_3435, Y_3435 = 1175784.2560284273, 1899646.788255619

MISSING = object()  # marker: the path does not exist
DIRECTORY = object()  # marker: the path is a directory
UNSET = object()  # marker: do not check this attribute


def needs_csv(bad_row: str) -> str:
    """A needs CSV whose data row 2 (line 3 of the file) is ``bad_row``."""
    return NEEDS_HEADER + GOOD_NEED + bad_row + "\n"


def partners_csv(bad_row: str) -> str:
    """A partners CSV whose data row 2 (line 3 of the file) is ``bad_row``."""
    return PARTNERS_HEADER + GOOD_PARTNER + bad_row + "\n"


def feature(geometry: dict[str, Any] | None, **props: Any) -> dict[str, Any]:
    base = {"category": "food_access", "demand": 2, "severity": 3}
    return {"type": "Feature", "geometry": geometry, "properties": {**base, **props}}


def point(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def feature_collection(features: list[dict[str, Any]], crs: str | None = None) -> str:
    doc: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        doc["crs"] = {"type": "name", "properties": {"name": crs}}
    return json.dumps(doc)


SQUARE = {
    "type": "Polygon",
    "coordinates": [
        [[-87.63, 41.88], [-87.62, 41.88], [-87.62, 41.89], [-87.63, 41.89], [-87.63, 41.88]]
    ],
}
LINE = {"type": "LineString", "coordinates": [[-87.63, 41.88], [-87.62, 41.89]]}


@dataclass(frozen=True)
class Case:
    """One bad input and the single problem it must be reported as."""

    id: str
    table: str  # "needs" or "partners": which input is bad
    content: Any  # str, bytes, MISSING or DIRECTORY
    row: Any  # expected Problem.row (UNSET: not checked)
    field: Any  # expected Problem.field
    value: Any  # expected str(Problem.value), or None
    reason: tuple[str, ...]  # substrings (case-insensitive) the reason must contain
    name: str = ""  # file name; default needs.csv / partners.csv

    @property
    def file_name(self) -> str:
        return self.name or f"{self.table}.csv"


def need_row(field: str, value: str) -> str:
    """A need row (line 3) equal to the good one except ``field`` (n2 as its id)."""
    cells = dict(zip(NEEDS_HEADER.strip().split(","), GOOD_NEED.strip().split(","), strict=True))
    cells["need_id"] = "n2"
    cells[field] = value
    return ",".join(cells.values())


def partner_row(field: str, value: str) -> str:
    """A partner row (line 3) equal to the good one except ``field`` (p2 as its id)."""
    cells = dict(
        zip(PARTNERS_HEADER.strip().split(","), GOOD_PARTNER.strip().split(","), strict=True)
    )
    cells["partner_id"] = "p2"
    cells[field] = value
    return ",".join(cells.values())


LAT_RULE = ("-90..90",)
LON_RULE = ("-180..180",)

CASES = [
    # --- missing required columns ------------------------------------------------------
    Case(
        "needs-missing-column",
        "needs",
        "need_id,category,lat,lon,severity\nn1,food_access,41.88,-87.63,3\n",
        1,
        "demand",
        None,
        ("required column", "'demand'"),
    ),
    Case(
        "partners-missing-column",
        "partners",
        "partner_id,name,kind,lat,lon,categories,capacity\np1,X,organization,41.88,-87.63,food_access,3\n",
        1,
        "radius_km",
        None,
        ("required column", "'radius_km'"),
    ),
    # --- identifiers -------------------------------------------------------------------
    Case(
        "duplicate-need_id",
        "needs",
        needs_csv("n1,food_access,41.8900,-87.6300,2,3"),
        3,
        "need_id",
        "n1",
        ("duplicate", "row 2"),
    ),
    Case(
        "empty-need_id",
        "needs",
        needs_csv(",food_access,41.8900,-87.6300,2,3"),
        3,
        "need_id",
        "",
        ("non-empty",),
    ),
    Case(
        "duplicate-partner_id",
        "partners",
        partners_csv("p1,Other,organization,41.89,-87.63,food_access,5,1"),
        3,
        "partner_id",
        "p1",
        ("duplicate", "row 2"),
    ),
    # --- coordinates -------------------------------------------------------------------
    Case("lat-above-90", "needs", needs_csv(need_row("lat", "91")), 3, "lat", "91", LAT_RULE),
    Case(
        "lat-below--90", "needs", needs_csv(need_row("lat", "-90.5")), 3, "lat", "-90.5", LAT_RULE
    ),
    Case("lon-above-180", "needs", needs_csv(need_row("lon", "181")), 3, "lon", "181", LON_RULE),
    Case(
        "lon-below--180",
        "needs",
        needs_csv(need_row("lon", "-180.5")),
        3,
        "lon",
        "-180.5",
        LON_RULE,
    ),
    Case("lat-empty", "needs", needs_csv(need_row("lat", "")), 3, "lat", "", ("empty",)),
    Case("lon-empty", "needs", needs_csv(need_row("lon", "")), 3, "lon", "", ("empty",)),
    Case(
        "lat-nan",
        "needs",
        needs_csv(need_row("lat", "NaN")),
        3,
        "lat",
        "NaN",
        ("finite",) + LAT_RULE,
    ),
    Case(
        "lon-nan",
        "needs",
        needs_csv(need_row("lon", "nan")),
        3,
        "lon",
        "nan",
        ("finite",) + LON_RULE,
    ),
    Case(
        "lat-not-a-number",
        "needs",
        needs_csv(need_row("lat", "41.88N")),
        3,
        "lat",
        "41.88N",
        LAT_RULE,
    ),
    # inf is a single problem (not "not finite" *and* "out of range" for the same cell)
    Case("lat-inf", "needs", needs_csv(need_row("lat", "inf")), 3, "lat", "inf", ("finite",)),
    Case(
        "zero-zero",
        "needs",
        needs_csv("n2,food_access,0,0,2,3"),
        3,
        UNSET,
        "0",
        ("(0, 0)", "missing"),
    ),
    Case(
        "zero-zero-decimal",
        "needs",
        needs_csv("n2,food_access,0.000,-0.0,2,3"),
        3,
        UNSET,
        UNSET,
        ("(0, 0)",),
    ),
    Case(
        "partner-lat-out-of-range",
        "partners",
        partners_csv(partner_row("lat", "100")),
        3,
        "lat",
        "100",
        LAT_RULE,
    ),
    # --- amounts -----------------------------------------------------------------------
    Case(
        "demand-non-numeric",
        "needs",
        needs_csv(need_row("demand", "lots")),
        3,
        "demand",
        "lots",
        ("> 0",),
    ),
    Case(
        "demand-negative", "needs", needs_csv(need_row("demand", "-2")), 3, "demand", "-2", ("> 0",)
    ),
    Case("demand-zero", "needs", needs_csv(need_row("demand", "0")), 3, "demand", "0", ("> 0",)),
    Case("demand-empty", "needs", needs_csv(need_row("demand", "")), 3, "demand", "", ("> 0",)),
    Case(
        "capacity-non-numeric",
        "partners",
        partners_csv(partner_row("capacity", "ten")),
        3,
        "capacity",
        "ten",
        (">= 0",),
    ),
    Case(
        "capacity-negative",
        "partners",
        partners_csv(partner_row("capacity", "-1")),
        3,
        "capacity",
        "-1",
        (">= 0",),
    ),
    Case(
        "radius-zero",
        "partners",
        partners_csv(partner_row("radius_km", "0")),
        3,
        "radius_km",
        "0",
        ("> 0",),
    ),
    Case(
        "radius-negative",
        "partners",
        partners_csv(partner_row("radius_km", "-1.5")),
        3,
        "radius_km",
        "-1.5",
        ("> 0",),
    ),
    Case(
        "radius-non-numeric",
        "partners",
        partners_csv(partner_row("radius_km", "far")),
        3,
        "radius_km",
        "far",
        ("> 0",),
    ),
    # --- severity ----------------------------------------------------------------------
    Case(
        "severity-6", "needs", needs_csv(need_row("severity", "6")), 3, "severity", "6", ("1..5",)
    ),
    Case(
        "severity-0", "needs", needs_csv(need_row("severity", "0")), 3, "severity", "0", ("1..5",)
    ),
    Case(
        "severity-fraction",
        "needs",
        needs_csv(need_row("severity", "2.5")),
        3,
        "severity",
        "2.5",
        ("1..5",),
    ),
    Case(
        "severity-text",
        "needs",
        needs_csv(need_row("severity", "high")),
        3,
        "severity",
        "high",
        ("1..5",),
    ),
    # --- categories --------------------------------------------------------------------
    Case(
        "category-typo",
        "needs",
        needs_csv(need_row("category", "food_acess")),
        3,
        "category",
        "food_acess",
        ("unknown category", "did you mean 'food_access'"),
    ),
    Case(
        "category-empty",
        "needs",
        needs_csv(need_row("category", "")),
        3,
        "category",
        "",
        ("empty",),
    ),
    Case(
        "partner-category-typo",
        "partners",
        partners_csv(partner_row("categories", "food_access;youth_engagment")),
        3,
        "categories",
        "food_access;youth_engagment",
        ("'youth_engagment'", "did you mean 'youth_engagement'"),
    ),
    Case(
        "partner-kind",
        "partners",
        partners_csv(partner_row("kind", "company")),
        3,
        "kind",
        "company",
        ("organization", "volunteer"),
    ),
    # --- whole-file problems -----------------------------------------------------------
    Case("needs-empty-file", "needs", b"", None, None, None, ("empty",)),
    Case("partners-empty-file", "partners", b"", None, None, None, ("empty",)),
    Case("needs-blank-lines-only", "needs", "\n  \n\n", None, None, None, ("empty",)),
    Case("needs-bom-only", "needs", b"\xef\xbb\xbf", None, None, None, ("empty",)),
    Case("needs-header-only", "needs", NEEDS_HEADER, None, None, None, ("no data rows",)),
    Case(
        "needs-semicolon",
        "needs",
        (NEEDS_HEADER + GOOD_NEED).replace(",", ";"),
        1,
        None,
        None,
        ("delimiter", "semicolon", "comma"),
    ),
    Case(
        "partners-semicolon",
        "partners",
        (PARTNERS_HEADER + GOOD_PARTNER).replace(",", ";"),
        1,
        None,
        None,
        ("delimiter", "semicolon", "comma"),
    ),
    Case(
        "needs-tab",
        "needs",
        (NEEDS_HEADER + GOOD_NEED).replace(",", "\t"),
        1,
        None,
        None,
        ("delimiter", "tab"),
    ),
    Case(
        "needs-latin-1",
        "needs",
        (
            "need_id,category,lat,lon,demand,neighborhood\n"
            "n1,food_access,41.88,-87.63,4,Pilsen\n"
            "n2,food_access,41.89,-87.63,4,Caf\xe9 district\n"
        ).encode("latin-1"),
        3,
        UNSET,
        UNSET,
        ("UTF-8", "0xe9"),
    ),
    Case(
        "partners-latin-1",
        "partners",
        (
            PARTNERS_HEADER + "p1,Caf\xe9 Comunitario,organization,41.88,-87.63,food_access,10,2\n"
        ).encode("latin-1"),
        2,
        UNSET,
        UNSET,
        ("UTF-8",),
    ),
    Case("needs-missing-file", "needs", MISSING, None, None, None, ("not found",)),
    Case("partners-missing-file", "partners", MISSING, None, None, None, ("not found",)),
    Case("needs-directory-csv", "needs", DIRECTORY, None, None, None, ("directory",)),
    Case("needs-directory", "needs", DIRECTORY, None, None, None, ("directory",), name="needs_dir"),
    # --- GeoJSON ----------------------------------------------------------------------
    Case(
        "geojson-polygon",
        "needs",
        feature_collection(
            [feature(point(-87.63, 41.88), need_id="n1"), feature(SQUARE, need_id="n2")]
        ),
        1,
        "geometry",
        "Polygon",
        ("Point",),
        name="needs.geojson",
    ),
    Case(
        "geojson-linestring",
        "needs",
        feature_collection([feature(LINE, need_id="n1")]),
        0,
        "geometry",
        "LineString",
        ("Point",),
        name="needs.geojson",
    ),
    Case(
        "geojson-null-geometry",
        "needs",
        feature_collection([feature(None, need_id="n1")]),
        0,
        "geometry",
        None,
        ("Point",),
        name="needs.geojson",
    ),
    Case(
        "geojson-crs-3435",
        "needs",
        feature_collection(
            [feature(point(X_3435, Y_3435), need_id="n1")], crs="urn:ogc:def:crs:EPSG::3435"
        ),
        None,
        "crs",
        "urn:ogc:def:crs:EPSG::3435",
        ("WGS84", "--input-crs"),
        name="needs.geojson",
    ),
    Case(
        "geojson-category-typo",
        "needs",
        feature_collection([feature(point(-87.63, 41.88), need_id="n1", category="food_acess")]),
        0,
        "category",
        "food_acess",
        ("did you mean 'food_access'",),
        name="needs.geojson",
    ),
]


def make_input(case: Case, tmp_path: Path) -> Path:
    path = tmp_path / "in" / case.file_name
    path.parent.mkdir(parents=True, exist_ok=True)
    if case.content is MISSING:
        return path
    if case.content is DIRECTORY:
        path.mkdir()
        return path
    data = case.content if isinstance(case.content, bytes) else case.content.encode("utf-8")
    path.write_bytes(data)
    return path


def valid_other(
    case: Case, tmp_path: Path, write: Callable[..., Path], needs: str, partners: str
) -> Path:
    if case.table == "needs":
        return write(tmp_path / "in", "partners.csv", partners)
    return write(tmp_path / "in", "needs.csv", needs)


def file_name(p: Problem) -> str:
    """The base name of the file a problem names ("" when it names none)."""
    return Path(p.file).name if p.file else ""


def check_problem(p: Problem, case: Case, path: Path) -> None:
    assert p.file is not None and file_name(p) == path.name, p
    if case.row is not UNSET:
        assert p.row == case.row, p
    if case.field is not UNSET:
        assert p.field == case.field, p
    if case.value is not UNSET:
        assert (None if p.value is None else str(p.value)) == case.value, p
    for text in case.reason:
        assert text.lower() in p.reason.lower(), f"{text!r} not in reason of {p}"


def assert_nothing_written(*dirs: Path) -> None:
    for d in dirs:
        assert not d.exists() or not any(d.iterdir()), sorted(p.name for p in d.iterdir())


# ---------------------------------------------------------------------------------------
# one test per bad input: library, then CLI
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_library_reports_problem(case: Case, tmp_path: Path) -> None:
    path = make_input(case, tmp_path)
    reader = matcher.read_needs if case.table == "needs" else matcher.read_partners
    with pytest.raises(InputValidationError) as info:
        reader(path)
    problems = info.value.problems
    assert len(problems) == 1, "\n".join(map(str, problems))
    assert isinstance(problems[0], Problem)
    check_problem(problems[0], case, path)
    # the exception's message is the full report
    assert path.name in str(info.value)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_reports_problem(
    case: Case, tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    bad = make_input(case, tmp_path)
    other = valid_other(case, tmp_path, write, tiny_needs, tiny_partners)
    needs, partners = (bad, other) if case.table == "needs" else (other, bad)
    out, models = tmp_path / "out", tmp_path / "models"
    result = plan_cli(needs, partners, out, models)
    assert_clean_exit(result, 2)
    err = result.stderr
    assert bad.name in err
    if case.row not in (None, UNSET):
        assert f"row {case.row}" in err
    if case.field not in (None, UNSET):
        assert case.field in err
    if case.value not in (None, UNSET, ""):
        assert case.value in err
    for text in case.reason:
        assert text.lower() in err.lower()
    assert result.stdout == ""
    assert_nothing_written(out, models)


def test_library_reports_every_missing_column(tmp_path: Path, write: Callable[..., Path]) -> None:
    path = write(tmp_path, "needs.csv", "need_id,category,demand\nn1,food_access,2\n")
    with pytest.raises(InputValidationError) as info:
        matcher.read_needs(path)
    assert [(p.row, p.field) for p in info.value.problems] == [(1, "lat"), (1, "lon")]
    # what the file has, and what is required
    assert (
        "'category'" in info.value.problems[0].reason and "'lat'" in info.value.problems[0].reason
    )


@pytest.mark.skipif(os.name != "posix", reason="file modes and user ids are POSIX")
def test_unreadable_file(tmp_path: Path, write: Callable[..., Path], tiny_needs: str) -> None:
    """A file that exists but may not be opened: one problem, "cannot read", no crash.

    Root reads any file whatever its mode, so as root (CI) the read runs in a child
    process that drops to the user and group ids of ``nobody`` (65534) with os.setuid
    before reading (after a read of a readable copy, so that every module it needs is
    already imported); otherwise it runs in this process.
    """
    import subprocess
    import sys
    import tempfile

    # a directory anyone may enter (pytest's tmp_path is under a 0700 directory)
    with tempfile.TemporaryDirectory(prefix="matcher-unreadable-") as tmp:
        shared = Path(tmp)
        shared.chmod(0o755)
        path = write(shared, "needs.csv", tiny_needs)
        readable = write(shared, "readable.csv", tiny_needs)
        path.chmod(0)
        try:
            if os.geteuid() != 0:
                with pytest.raises(InputValidationError) as info:
                    matcher.read_needs(path)
                problems = [(p.file, p.row, p.field, p.reason) for p in info.value.problems]
            else:
                code = (
                    "import json, os, sys, matcher\n"
                    "matcher.read_needs(sys.argv[2])\n"
                    "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
                    "assert os.geteuid() == 65534\n"
                    "try:\n"
                    "    matcher.read_needs(sys.argv[1])\n"
                    "except matcher.InputValidationError as e:\n"
                    "    print(json.dumps([(p.file, p.row, p.field, p.reason)"
                    " for p in e.problems]))\n"
                    "else:\n"
                    "    print('read')\n"
                )
                env = {**os.environ}
                env["PYTHONPATH"] = str(Path(matcher.__file__).resolve().parents[1])
                run = subprocess.run(
                    [sys.executable, "-c", code, str(path), str(readable)],
                    capture_output=True, text=True, timeout=120, env=env, cwd=shared,
                )  # fmt: skip
                assert run.returncode == 0, run.stderr[-2000:]
                assert run.stdout.strip() != "read", "the child could read a mode-0 file"
                problems = [tuple(p) for p in json.loads(run.stdout)]
        finally:
            path.chmod(0o644)
    assert len(problems) == 1, problems
    file, row, field, reason = problems[0]
    assert Path(file).name == "needs.csv" and row is None and field is None
    assert "cannot read" in reason and "permission denied" in reason.lower()


# ---------------------------------------------------------------------------------------
# all problems at once
# ---------------------------------------------------------------------------------------

THREE_BAD = (
    NEEDS_HEADER
    + GOOD_NEED  # line 2
    + "n2,food_access,95,-87.6300,4,3\n"  # line 3: lat out of range
    + "\n"  # line 4: blank, ignored but counted
    + "n3,food_access,41.8810,-87.6310,-4,3\n"  # line 5: negative demand
    + "n4,food_acess,41.8820,-87.6320,2,3\n"  # line 6: unknown category
    + "n5,food_access,41.8805,-87.6305,3,2\n"  # line 7: fine
)


def test_all_problems_reported_at_once(tmp_path: Path, write: Callable[..., Path]) -> None:
    path = write(tmp_path, "needs.csv", THREE_BAD)
    with pytest.raises(InputValidationError) as info:
        matcher.read_needs(path)
    got = [(p.row, p.field, p.value) for p in info.value.problems]
    assert got == [(3, "lat", "95"), (5, "demand", "-4"), (6, "category", "food_acess")]
    assert all(file_name(p) == "needs.csv" for p in info.value.problems)
    assert info.value.report().startswith("3 problem(s)")


def test_cli_reports_all_problems_at_once(
    tmp_path: Path, write: Callable[..., Path], tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", THREE_BAD)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    out, models = tmp_path / "out", tmp_path / "models"
    result = plan_cli(needs, partners, out, models)
    assert_clean_exit(result, 2)
    assert "3 problem(s)" in result.stderr
    for row, field, value in ((3, "lat", "95"), (5, "demand", "-4"), (6, "category", "food_acess")):
        line = next(ln for ln in result.stderr.splitlines() if f"row {row}," in ln)
        assert "needs.csv" in line and field in line and value in line
    assert_nothing_written(out, models)


def test_plan_reports_problems_of_both_files_at_once(
    tmp_path: Path, write: Callable[..., Path]
) -> None:
    needs = write(tmp_path, "needs.csv", needs_csv(need_row("severity", "9")))
    partners = write(tmp_path, "partners.csv", partners_csv(partner_row("radius_km", "0")))
    with pytest.raises(InputValidationError) as info:
        matcher.plan(needs, partners)
    got = [(file_name(p), p.row, p.field) for p in info.value.problems]
    assert got == [("needs.csv", 3, "severity"), ("partners.csv", 3, "radius_km")]


def test_each_bad_row_is_reported_once_per_field(
    tmp_path: Path, write: Callable[..., Path]
) -> None:
    """Two bad fields on one row: two problems; each bad cell once."""
    path = write(tmp_path, "needs.csv", needs_csv("n2,food_access,-91,200,0,7"))
    with pytest.raises(InputValidationError) as info:
        matcher.read_needs(path)
    fields = [str(p.field) for p in info.value.problems]
    assert sorted(fields) == ["demand", "lat", "lon", "severity"]
    assert {p.row for p in info.value.problems} == {3}


def test_ragged_row_names_its_line(tmp_path: Path, write: Callable[..., Path]) -> None:
    """A row with more cells than the header is reported with its line number."""
    path = write(
        tmp_path, "needs.csv", NEEDS_HEADER + GOOD_NEED + "n2,food_access,41.89,-87.63,2,3,extra\n"
    )
    with pytest.raises(InputValidationError) as info:
        matcher.read_needs(path)
    (p,) = info.value.problems
    assert file_name(p) == "needs.csv"
    assert p.row == 3, p


@pytest.mark.parametrize(
    "row",
    [
        "n2,food_access,41.89,-87.63,2",  # the last cell missing: never a default severity
        "n2,food_access,41.89,-87.63",
        '"n2",food_access,41.89,-87.63,2',  # quoted
        'n2,"food_access",41.89,-87.63,"2"',
    ],
)
def test_short_row_names_its_line(tmp_path: Path, write: Callable[..., Path], row: str) -> None:
    """A row with fewer cells than the header is refused, not read with blanks."""
    path = write(tmp_path, "needs.csv", NEEDS_HEADER + GOOD_NEED + row + "\n" + GOOD_NEED)
    with pytest.raises(InputValidationError) as info:
        matcher.read_needs(path)
    (p,) = info.value.problems
    assert (file_name(p), p.row) == ("needs.csv", 3), p
    assert "the header has 6" in p.reason, p


def test_quoted_commas_are_cells_not_separators(
    tmp_path: Path, write: Callable[..., Path]
) -> None:
    """A quoted comma is part of a cell: the row is neither wide nor short."""
    header = NEEDS_HEADER.rstrip("\n") + ",neighborhood\n"
    path = write(
        tmp_path,
        "needs.csv",
        header + GOOD_NEED.rstrip("\n") + ',"Hyde Park, South"\n'
        + 'n2,food_access,41.89,-87.63,2,3,"Oakland, ""North"""\n',
    )  # fmt: skip
    frame = matcher.read_needs(path).frame
    assert frame["neighborhood"].tolist() == ["Hyde Park, South", 'Oakland, "North"']


# ---------------------------------------------------------------------------------------
# inputs that look odd but are valid
# ---------------------------------------------------------------------------------------


def test_utf8_bom_and_crlf_accepted(
    tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    """Excel's "CSV UTF-8" export: a BOM and CRLF line ends."""
    needs = write(
        tmp_path, "needs.csv", b"\xef\xbb\xbf" + tiny_needs.replace("\n", "\r\n").encode()
    )
    partners = write(tmp_path, "partners.csv", b"\xef\xbb\xbf" + tiny_partners.encode())
    table = matcher.read_needs(needs)
    assert table.frame["need_id"].tolist() == ["n1", "n2", "n3"]
    assert table.frame["severity"].tolist() == [3, 2, 5]
    assert matcher.read_partners(partners).frame["partner_id"].tolist() == ["p1", "p2"]
    out, models = tmp_path / "out", tmp_path / "models"
    result = plan_cli(needs, partners, out, models, "-q")
    assert_clean_exit(result, 0)
    assert (out / "assignments.csv").is_file()


def test_zero_capacity_and_default_severity_are_valid(
    tmp_path: Path, write: Callable[..., Path]
) -> None:
    needs = write(tmp_path, "needs.csv", needs_csv(need_row("severity", "")))
    partners = write(tmp_path, "partners.csv", partners_csv(partner_row("capacity", "0")))
    assert matcher.read_needs(needs).frame["severity"].tolist() == [3, 3]
    assert matcher.read_partners(partners).frame["capacity"].tolist() == [10.0, 0.0]


def test_geojson_in_crs84_is_accepted(tmp_path: Path, write: Callable[..., Path]) -> None:
    path = write(
        tmp_path,
        "needs.geojson",
        feature_collection(
            [feature(point(-87.63, 41.88), need_id="n1")], crs="urn:ogc:def:crs:OGC:1.3:CRS84"
        ),
    )
    frame = matcher.read_needs(path).frame
    assert frame[["lat", "lon"]].values.tolist() == [[41.88, -87.63]]


def test_geojson_in_epsg3435_accepted_with_input_crs(
    tmp_path: Path, write: Callable[..., Path], tiny_partners: str
) -> None:
    text = feature_collection(
        [feature(point(X_3435, Y_3435), need_id="n1")], crs="urn:ogc:def:crs:EPSG::3435"
    )
    path = write(tmp_path, "needs.geojson", text)
    frame = matcher.read_needs(path, input_crs="EPSG:3435").frame
    assert frame["lat"].iloc[0] == pytest.approx(41.88, abs=1e-6)
    assert frame["lon"].iloc[0] == pytest.approx(-87.63, abs=1e-6)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    out, models = tmp_path / "out", tmp_path / "models"
    result = plan_cli(path, partners, out, models, "--input-crs", "EPSG:3435")
    assert_clean_exit(result, 0)
    assert "EPSG:3435" in result.stderr  # the transform is logged
    clusters = (out / "clusters.csv").read_text().splitlines()
    assert len(clusters) == 2 and ",41.88," in clusters[1] and ",-87.63," in clusters[1]


def test_unknown_input_crs_is_a_clear_error(tmp_path: Path, write: Callable[..., Path]) -> None:
    text = feature_collection(
        [feature(point(X_3435, Y_3435), need_id="n1")], crs="urn:ogc:def:crs:EPSG::3435"
    )
    path = write(tmp_path, "needs.geojson", text)
    with pytest.raises(InputValidationError) as info:
        matcher.read_needs(path, input_crs="EPSG:999999")
    (p,) = info.value.problems
    assert (p.field, p.value) == ("input_crs", "EPSG:999999")
    assert file_name(p) == "needs.geojson"


# ---------------------------------------------------------------------------------------
# not an error: unreachable demand is unmet, with its reason
# ---------------------------------------------------------------------------------------


def test_cluster_no_partner_can_reach_is_unmet(tmp_path: Path, write: Callable[..., Path]) -> None:
    needs = write(
        tmp_path,
        "needs.csv",
        (
            NEEDS_HEADER
            + "n1,food_access,41.8800,-87.6300,4,3\n"  # 110 m from p1
            + "n2,food_access,42.0500,-87.6800,3,3\n"  # Evanston: 19 km away, p1's radius is 2 km
            + "n3,mental_health,41.8800,-87.6300,2,3\n"  # in range of p1, but p1 does not offer it
        ),
    )
    partners = write(tmp_path, "partners.csv", PARTNERS_HEADER + GOOD_PARTNER)
    result = matcher.plan(needs, partners, config=MatchConfig(objective="distance"))
    clusters = result.clusters.set_index("category")
    served = result.assignments.groupby("partner_id")["units"].sum().to_dict()
    assert served == {"p1": 4.0}
    unmet = {(r.category, r.units, r.reason) for r in result.unmet.itertuples()}
    assert unmet == {
        ("food_access", 3.0, "no_partner_in_range"),
        ("mental_health", 2.0, "no_partner_in_range"),
    }
    assert clusters.loc["mental_health", "unmet_reason"] == "no_partner_in_range"
    assert result.metrics["units"]["unmet"] == pytest.approx(5.0)


# ---------------------------------------------------------------------------------------
# neighborhoods: an invalid polygon is repaired with a warning, never dropped
# ---------------------------------------------------------------------------------------


def _check_norwood(hoods: Any, caplog: pytest.LogCaptureFixture) -> None:
    assert len(hoods) == 77
    assert hoods.geometry.is_valid.all()
    assert set(hoods.geom_type) <= {"Polygon", "MultiPolygon"}
    assert not hoods.geometry.is_empty.any()
    assert sorted(hoods["neighborhood_id"].astype(int)) == list(range(1, 78))
    norwood = hoods.loc[hoods["neighborhood_id"] == "10"].geometry.iloc[0]
    # The source has a small shell nested in the big one ("nested shells"). No census
    # tract and no other community area covers the small one, so it is an enclave: the
    # repair must keep the big shell and make the small one a hole, not drop anything.
    assert shapely.area(norwood) == pytest.approx(NORWOOD_OUTER - NORWOOD_ENCLAVE, rel=1e-3)
    assert not norwood.contains(shapely.Point(-87.8263125, 41.9798865))  # inside the enclave
    warnings = [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and "invalid polygon" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert "NORWOOD PARK" in warnings[0].getMessage().upper()
    assert "make_valid" in warnings[0].getMessage()


@pytest.mark.skipif(not HARDSHIP.exists(), reason="real Chicago data not available")
def test_norwood_park_repaired_not_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """The real file's id column is AREAID: rename it the way a data engineer would."""
    import geopandas as gpd

    raw = gpd.read_file(HARDSHIP).rename(columns={"AREAID": "neighborhood_id", "community": "name"})
    assert (~raw.geometry.is_valid).sum() == 1
    with caplog.at_level(logging.WARNING, logger="matcher"):
        hoods, digest = matcher.read_neighborhoods(raw)
    assert len(digest) == 64
    _check_norwood(hoods, caplog)


@pytest.mark.skipif(not HARDSHIP.exists(), reason="real Chicago data not available")
def test_real_chicago_file_read_directly(caplog: pytest.LogCaptureFixture) -> None:
    """The file as published (id column ``AREAID``, name ``community``) is readable as is."""
    with caplog.at_level(logging.WARNING, logger="matcher"):
        hoods, _ = matcher.read_neighborhoods(HARDSHIP, id_column="AREAID", name_column="community")
    _check_norwood(hoods, caplog)
