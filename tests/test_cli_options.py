"""CLI commands and options that no other test passes a valid value to (issue #19).

Every test goes through the ``matcher`` command (click's CliRunner, in process) the way a
user meets it, and checks what was written: ``matcher generate``, the clustering options
(``--cluster-km``, ``--min-samples``, ``--seed``), ``--solver``, the vulnerability and
partner-share options, ``--skip-invalid`` for partners, and the HSDS ``--mapping``,
``--skip-invalid`` and ``export --format json`` options.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from .conftest import (
    NEEDS_HEADER,
    PARTNERS_HEADER,
    assert_clean_exit,
    invoke,
    plan_cli,
    read_csv,
    write_input,
)

ROOT = Path(__file__).resolve().parents[1]
HSDS_CSV = ROOT / "tests" / "fixtures" / "hsds" / "csv"


def partition(out: Path) -> set[frozenset[str]]:
    """The clustering of a plan: the set of need-id sets, one per cluster."""
    groups: dict[str, set[str]] = defaultdict(set)
    for r in read_csv(out / "need_clusters.csv"):
        groups[r["cluster_id"]].add(r["need_id"])
    return {frozenset(g) for g in groups.values()}


def served_by_hood(out: Path) -> dict[tuple[str, str], float]:
    """Units per (partner, neighborhood of the cluster) in the written assignments."""
    hood = {r["cluster_id"]: r["neighborhood"] for r in read_csv(out / "clusters.csv")}
    units: dict[tuple[str, str], float] = defaultdict(float)
    for r in read_csv(out / "assignments.csv"):
        units[(r["partner_id"], hood[r["cluster_id"]])] += float(r["units"])
    return dict(units)


def summary(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    return doc


def square(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    return {"type": "Polygon", "coordinates": [ring]}


def hoods_geojson(*features: tuple[dict[str, Any], dict[str, Any]]) -> str:
    return json.dumps(
        {
            "type": "FeatureCollection",
            "features": [
                {"type": "Feature", "properties": props, "geometry": geom}
                for props, geom in features
            ],
        }
    )


# ---------------------------------------------------------------------------------------
# matcher generate
# ---------------------------------------------------------------------------------------

CITY_FILES = ("needs.csv", "partners.csv", "neighborhoods.geojson")


def generate(out: Path, needs: int, partners: int, seed: int | None) -> Result:
    args = ["generate", "--needs", str(needs), "--partners", str(partners), "--out", str(out)]
    return invoke(*args, *(["--seed", str(seed)] if seed is not None else []))


@pytest.fixture(scope="module")
def cities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four generated cities: seed 7 twice, seed 8, and the default seed."""
    base = tmp_path_factory.mktemp("cities")
    runs = {"a": 7, "b": 7, "c": 8, "default": None}
    for name, seed in runs.items():
        result = generate(base / name, 240, 30, seed)
        assert_clean_exit(result, 0)
    return {name: base / name for name in runs}


def test_generate_writes_the_city_with_the_requested_sizes(cities: dict[str, Path]) -> None:
    out = cities["a"]
    assert sorted(p.name for p in out.iterdir()) == sorted(CITY_FILES)
    needs, partners = read_csv(out / "needs.csv"), read_csv(out / "partners.csv")
    assert len(needs) == 240 and len(partners) == 30
    assert len({r["need_id"] for r in needs}) == 240
    assert len({r["partner_id"] for r in partners}) == 30
    hoods = json.loads((out / "neighborhoods.geojson").read_text(encoding="utf-8"))
    assert hoods["type"] == "FeatureCollection" and hoods["features"]
    hood_ids = {f["properties"]["neighborhood_id"] for f in hoods["features"]}
    assert {r["neighborhood"] for r in needs} <= hood_ids
    assert {f["geometry"]["type"] for f in hoods["features"]} <= {"Polygon", "MultiPolygon"}


def test_generate_prints_what_it_wrote(tmp_path: Path) -> None:
    result = generate(tmp_path / "city", 20, 5, 1)
    assert_clean_exit(result, 0)
    for name in CITY_FILES:
        assert str(tmp_path / "city" / name) in result.stdout
    quiet = invoke(
        "generate", "--needs", "20", "--partners", "5", "--out", str(tmp_path / "q"), "-q"
    )
    assert_clean_exit(quiet, 0)
    assert quiet.stdout == ""
    assert len(read_csv(tmp_path / "q" / "needs.csv")) == 20


def test_generate_same_seed_is_byte_identical(cities: dict[str, Path]) -> None:
    for name in CITY_FILES:
        assert (cities["a"] / name).read_bytes() == (cities["b"] / name).read_bytes(), name


def test_generate_other_seed_gives_another_city(cities: dict[str, Path]) -> None:
    for name in ("needs.csv", "partners.csv"):
        assert (cities["a"] / name).read_bytes() != (cities["c"] / name).read_bytes(), name
    # same sizes, other content
    assert len(read_csv(cities["c"] / "needs.csv")) == 240


def test_generate_default_seed_is_zero(cities: dict[str, Path], tmp_path: Path) -> None:
    assert_clean_exit(generate(tmp_path / "zero", 240, 30, 0), 0)
    for name in CITY_FILES:
        assert (cities["default"] / name).read_bytes() == (tmp_path / "zero" / name).read_bytes()


def test_generated_city_plans(cities: dict[str, Path], tmp_path: Path) -> None:
    city = cities["a"]
    out = tmp_path / "plan"
    result = plan_cli(
        city / "needs.csv",
        city / "partners.csv",
        out,
        tmp_path / "models",
        "--neighborhoods",
        str(city / "neighborhoods.geojson"),
        "-q",
    )
    assert_clean_exit(result, 0)
    placed = {r["need_id"] for r in read_csv(out / "need_clusters.csv")}
    assert placed == {r["need_id"] for r in read_csv(city / "needs.csv")}
    units = summary(out)["metrics"]["units"]
    assert 0 < units["served"] < units["demand"]  # the generator leaves gaps by design


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--needs", "0", "--partners", "5"], "'--needs': 0 is not in the range x>=1"),
        (["--needs", "10", "--partners", "0"], "'--partners': 0 is not in the range x>=1"),
        (["--needs", "ten", "--partners", "5"], "'--needs': 'ten' is not a valid integer"),
        (["--needs", "10", "--partners", "5", "--seed", "-1"], "'--seed': -1 is not in the range"),
        (["--needs", "10", "--partners", "5", "--seed", "1.5"], "'--seed': '1.5' is not a valid"),
        (["--partners", "5"], "Missing option '--needs'"),
        # a city too large for any extent on Earth: the generator's own check, exit 2
        (["--needs", "100000000000", "--partners", "5"], "field 'extent_km'"),
    ],
    ids=[
        "needs-0",
        "partners-0",
        "needs-text",
        "seed-negative",
        "seed-float",
        "no-needs",
        "too-large",
    ],
)
def test_generate_bad_values_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "city"
    result = invoke("generate", *args, "--out", str(out))
    assert_clean_exit(result, 2)
    assert message in result.stderr
    assert not out.exists()


def test_generate_out_is_a_file_exits_2(tmp_path: Path) -> None:
    target = write_input(tmp_path, "city", "not a directory")
    result = invoke("generate", "--needs", "5", "--partners", "2", "--out", str(target))
    assert_clean_exit(result, 2)
    assert "'--out'" in result.stderr and "is a file" in result.stderr
    assert target.read_text() == "not a directory"


# ---------------------------------------------------------------------------------------
# --cluster-km, --min-samples, --max-cluster-radius-km, --seed
# ---------------------------------------------------------------------------------------

# Four food needs on an east-west line at 41.88 N: n1, n2, n3 300 m apart, n4 1.06 km east
# of n3 (0.0036 degrees of longitude are 0.30 km at this latitude).
LINE_NEEDS = NEEDS_HEADER + "".join(
    f"n{i},food_access,41.8800,{lon:.4f},1,3\n"
    for i, lon in enumerate((-87.6300, -87.6264, -87.6228, -87.6100), start=1)
)
LINE_PARTNER = PARTNERS_HEADER + "p1,Food Bank,organization,41.8810,-87.6200,food_access,10,5\n"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        # defaults (0.5 km, 3): n2 has n1 and n3 within 0.5 km, a core; n4 is alone
        ([], [{"n1", "n2", "n3"}, {"n4"}]),
        # 4 needs within 0.5 km are needed for a core: nobody is dense
        (["--min-samples", "4"], [{"n1"}, {"n2"}, {"n3"}, {"n4"}]),
        # 0.25 km: nobody has a neighbour
        (["--cluster-km", "0.25"], [{"n1"}, {"n2"}, {"n3"}, {"n4"}]),
        # 1.2 km and 2 samples: n3 and n4 are neighbours too, one chain of four
        (["--cluster-km", "1.2", "--min-samples", "2"], [{"n1", "n2", "n3", "n4"}]),
        # ... unless clusters wider than 0.9 km from their centroid are split (n4: 1.02 km)
        (
            ["--cluster-km", "1.2", "--min-samples", "2", "--max-cluster-radius-km", "0.9"],
            [{"n1", "n2", "n3"}, {"n4"}],
        ),
    ],
    ids=["defaults", "min-samples-4", "cluster-km-0.25", "cluster-km-1.2", "max-radius-0.9"],
)
def test_clustering_options_change_the_clusters(
    options: list[str], expected: list[set[str]], tmp_path: Path
) -> None:
    needs = write_input(tmp_path, "needs.csv", LINE_NEEDS)
    partners = write_input(tmp_path, "partners.csv", LINE_PARTNER)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "-q", *options)
    assert_clean_exit(result, 0)
    assert partition(out) == {frozenset(g) for g in expected}
    params = summary(out)["parameters"]
    given = dict(zip(options[::2], options[1::2], strict=True))
    assert params["cluster_km"] == float(given.get("--cluster-km", 0.5))
    assert params["min_samples"] == int(given.get("--min-samples", 3))
    assert params["max_cluster_radius_km"] == float(given.get("--max-cluster-radius-km", 1.5))


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("--cluster-km", "0", "cluster_km"),
        ("--cluster-km", "nan", "cluster_km"),
        ("--cluster-km", "1000", "cluster_km"),
        ("--min-samples", "-3", "min_samples"),
        ("--seed", "-1", "seed"),
        ("--seed", str(2**40), "seed"),
        ("--max-partner-share", "0", "max_partner_share"),
        ("--max-partner-share", "1.5", "max_partner_share"),
        ("--vulnerability-weight", "-1", "vulnerability_weight"),
        ("--min-coverage", "2", "min_coverage"),
    ],
)
def test_out_of_range_option_values_exit_2_naming_the_parameter(
    option: str, value: str, field: str, tmp_path: Path
) -> None:
    needs = write_input(tmp_path, "needs.csv", LINE_NEEDS)
    partners = write_input(tmp_path, "partners.csv", LINE_PARTNER)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", f"{option}={value}")
    assert_clean_exit(result, 2)
    assert f"field '{field}', value '" in result.stderr
    assert not out.exists()


def grid_needs() -> str:
    """169 food needs on a 13 x 13 grid, 300 m apart: one density cluster, ~3.5 km wide."""
    rows = [
        f"g{i:02d}{j:02d},food_access,{41.85 + i * 0.0027:.4f},{-87.65 + j * 0.0036:.4f},1,3\n"
        for i in range(13)
        for j in range(13)
    ]
    return NEEDS_HEADER + "".join(rows)


@pytest.fixture(scope="module")
def seeded_plans(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("seeds")
    needs = write_input(base, "needs.csv", grid_needs())
    partners = write_input(
        base,
        "partners.csv",
        PARTNERS_HEADER + "p1,F,organization,41.866,-87.628,food_access,50,4\n",
    )
    runs = {"seed0": "0", "seed0-again": "0", "seed1": "1"}
    for name, seed in runs.items():
        result = plan_cli(needs, partners, base / name, base / "models", "-q", "--seed", seed)
        assert_clean_exit(result, 0)
    return {name: base / name for name in runs}


def test_seed_splits_oversize_clusters_reproducibly(seeded_plans: dict[str, Path]) -> None:
    first, again, other = (seeded_plans[n] for n in ("seed0", "seed0-again", "seed1"))
    for name in ("need_clusters.csv", "clusters.csv", "assignments.csv"):
        assert (first / name).read_bytes() == (again / name).read_bytes(), name
    # the grid is one density cluster far wider than 1.5 km: k-means splits it, and the
    # seed of k-means decides where
    assert len(partition(first)) > 1 and len(partition(other)) > 1
    assert partition(first) != partition(other)
    for out in (first, other):
        clusters = read_csv(out / "clusters.csv")
        assert max(float(r["radius_km"]) for r in clusters) <= 1.5
        assert sum(int(r["n_needs"]) for r in clusters) == 169
    assert summary(first)["parameters"]["seed"] == 0
    assert summary(other)["parameters"]["seed"] == 1


# ---------------------------------------------------------------------------------------
# --solver lemon | ortools | networkx
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_city(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("city") / "city"
    assert_clean_exit(generate(out, 500, 50, 11), 0)
    return out


@pytest.mark.parametrize("extra", [[], ["--min-coverage", "0.8"]], ids=["plain", "floors"])
def test_every_solver_reaches_the_same_optimum(
    small_city: Path, extra: list[str], tmp_path: Path
) -> None:
    runs = {}
    for solver in ("lemon", "ortools", "networkx"):
        out = tmp_path / solver
        result = plan_cli(
            small_city / "needs.csv",
            small_city / "partners.csv",
            out,
            tmp_path / "models",
            "--neighborhoods",
            str(small_city / "neighborhoods.geojson"),
            "--solver",
            solver,
            "-q",
            *extra,
        )
        assert_clean_exit(result, 0)
        runs[solver] = summary(out)
    names = {s: runs[s]["solver"]["name"] for s in runs}
    assert names == {
        "lemon": "lemon.NetworkSimplex",
        "ortools": "ortools.SimpleMinCostFlow",
        "networkx": "networkx.network_simplex",
    }
    for solver, doc in runs.items():
        assert doc["parameters"]["solver"] == solver
        assert doc["solver"]["status"] == "optimal"
    objectives = {s: runs[s]["solver"]["objective_scaled"] for s in runs}
    assert len(set(objectives.values())) == 1, objectives
    served = {s: runs[s]["metrics"]["units"]["served"] for s in runs}
    assert len(set(served.values())) == 1, served
    assert 0 < served["lemon"] < runs["lemon"]["metrics"]["units"]["demand"]


def test_unknown_solver_exits_2(tmp_path: Path) -> None:
    needs = write_input(tmp_path, "needs.csv", LINE_NEEDS)
    partners = write_input(tmp_path, "partners.csv", LINE_PARTNER)
    result = plan_cli(needs, partners, tmp_path / "out", tmp_path / "m", "--solver", "gurobi")
    assert_clean_exit(result, 2)
    assert "'gurobi' is not one of 'lemon', 'ortools', 'networkx'" in result.stderr


# ---------------------------------------------------------------------------------------
# --vulnerability-column / --vulnerability-weight and --max-partner-share
# ---------------------------------------------------------------------------------------

# Two neighborhoods side by side: A (west, hardship 10) and B (east, hardship 90).
TWO_HOODS = hoods_geojson(
    ({"neighborhood_id": "A", "hardship_index": 10}, square(-87.66, 41.87, -87.64, 41.89)),
    ({"neighborhood_id": "B", "hardship_index": 90}, square(-87.64, 41.87, -87.62, 41.89)),
)
# One need in each, same demand and severity; the only partner, in A, is nearer to A's need
# (0.41 km against 0.58 km) and can serve only one of them.
VULN_NEEDS = (
    NEEDS_HEADER + "a1,food_access,41.8800,-87.6500,4,3\n" + "b1,food_access,41.8800,-87.6380,4,3\n"
)
VULN_PARTNER = PARTNERS_HEADER + "p1,Pantry,organization,41.8800,-87.6450,food_access,4,3\n"


def vulnerability_plan(tmp_path: Path, *options: str) -> Result:
    needs = write_input(tmp_path, "needs.csv", VULN_NEEDS)
    partners = write_input(tmp_path, "partners.csv", VULN_PARTNER)
    hoods = write_input(tmp_path, "hoods.geojson", TWO_HOODS)
    return plan_cli(
        needs,
        partners,
        tmp_path / "out",
        tmp_path / "models",
        "--neighborhoods",
        str(hoods),
        "-q",
        *options,
    )


@pytest.mark.parametrize(
    ("options", "served_hood"),
    [
        ([], "A"),  # the nearer need wins without priorities
        (["--vulnerability-column", "hardship_index"], "B"),
        (["--vulnerability-column", "hardship_index", "--vulnerability-weight", "0"], "A"),
        (["--vulnerability-column", "hardship_index", "--vulnerability-weight", "0.5"], "B"),
    ],
    ids=["none", "column", "weight-0", "weight-0.5"],
)
def test_vulnerability_serves_the_harder_hit_neighborhood_first(
    options: list[str], served_hood: str, tmp_path: Path
) -> None:
    result = vulnerability_plan(tmp_path, *options)
    assert_clean_exit(result, 0)
    out = tmp_path / "out"
    assert served_by_hood(out) == {("p1", served_hood): 4.0}
    unmet = read_csv(out / "unmet.csv")
    assert [(float(r["units"]), r["reason"]) for r in unmet] == [(4.0, "partners_in_range_full")]
    params = summary(out)["parameters"]
    assert params["vulnerability_column"] == (
        "hardship_index" if "--vulnerability-column" in options else None
    )


def test_vulnerability_column_missing_exits_2(tmp_path: Path) -> None:
    result = vulnerability_plan(tmp_path, "--vulnerability-column", "poverty_rate")
    assert_clean_exit(result, 2)
    assert "hoods.geojson, field 'poverty_rate'" in result.stderr
    assert "column missing; numeric columns are ['hardship_index']" in result.stderr
    assert not (tmp_path / "out").exists()


def test_vulnerability_column_needs_a_neighborhoods_file(tmp_path: Path) -> None:
    needs = write_input(tmp_path, "needs.csv", VULN_NEEDS)
    partners = write_input(tmp_path, "partners.csv", VULN_PARTNER)
    result = plan_cli(
        needs,
        partners,
        tmp_path / "out",
        tmp_path / "models",
        "--vulnerability-column",
        "hardship_index",
    )
    assert_clean_exit(result, 2)
    assert "field 'vulnerability_column', value 'hardship_index'" in result.stderr
    assert "--neighborhoods" in result.stderr


# One partner of capacity 10 in A; 10 units of need next to it in A, 10 more in B within
# its radius. Uncapped, A's nearer need takes everything.
SHARE_NEEDS = (
    NEEDS_HEADER
    + "a1,food_access,41.8800,-87.6460,10,3\n"
    + "b1,food_access,41.8800,-87.6350,10,3\n"
)
SHARE_PARTNER = PARTNERS_HEADER + "p1,Pantry,organization,41.8800,-87.6450,food_access,10,3\n"


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (None, {("p1", "A"): 10.0}),
        ("0.5", {("p1", "A"): 5.0, ("p1", "B"): 5.0}),
        ("0.3", {("p1", "A"): 3.0, ("p1", "B"): 3.0}),
    ],
    ids=["uncapped", "half", "0.3"],
)
def test_max_partner_share_caps_each_neighborhood(
    share: str | None, expected: dict[tuple[str, str], float], tmp_path: Path
) -> None:
    needs = write_input(tmp_path, "needs.csv", SHARE_NEEDS)
    partners = write_input(tmp_path, "partners.csv", SHARE_PARTNER)
    hoods = write_input(tmp_path, "hoods.geojson", TWO_HOODS)
    out = tmp_path / "out"
    result = plan_cli(
        needs,
        partners,
        out,
        tmp_path / "models",
        "--neighborhoods",
        str(hoods),
        "-q",
        *(["--max-partner-share", share] if share else []),
    )
    assert_clean_exit(result, 0)
    assert served_by_hood(out) == expected
    assert summary(out)["parameters"]["max_partner_share"] == float(share or 1.0)


def test_max_partner_share_holds_for_every_partner_of_a_city(
    small_city: Path, tmp_path: Path
) -> None:
    capacity = {
        r["partner_id"]: float(r["capacity"]) for r in read_csv(small_city / "partners.csv")
    }
    runs = {}
    for name, extra in (("free", []), ("capped", ["--max-partner-share", "0.4"])):
        out = tmp_path / name
        result = plan_cli(
            small_city / "needs.csv",
            small_city / "partners.csv",
            out,
            tmp_path / "models",
            "--neighborhoods",
            str(small_city / "neighborhoods.geojson"),
            "-q",
            *extra,
        )
        assert_clean_exit(result, 0)
        runs[name] = served_by_hood(out)
    over = [k for k, units in runs["free"].items() if units > 0.4 * capacity[k[0]] + 1e-9]
    assert over, "the uncapped plan must exceed the cap somewhere, or the test proves nothing"
    for (pid, hood), units in runs["capped"].items():
        assert units <= 0.4 * capacity[pid] + 1e-9, (pid, hood, units, capacity[pid])


# ---------------------------------------------------------------------------------------
# plan --skip-invalid with a bad partner row
# ---------------------------------------------------------------------------------------

PARTNERS_ONE_BAD = (
    PARTNERS_HEADER
    + "p1,Food Bank,organization,41.8810,-87.6300,food_access,10,2.0\n"  # line 2
    + "p2,Broken,organization,41.8810,-87.6300,food_access,ten,2.0\n"  # line 3: capacity
    + "p3,Youth Club,organization,41.9510,-87.6500,youth_engagement,5,3.0\n"  # line 4
)
TINY_NEEDS = (
    NEEDS_HEADER
    + "n1,food_access,41.8800,-87.6300,4,3\n"
    + "n2,youth_engagement,41.9500,-87.6500,2,5\n"
)


def test_skip_invalid_partners_writes_rejects_and_plans_the_valid_ones(tmp_path: Path) -> None:
    needs = write_input(tmp_path, "needs.csv", TINY_NEEDS)
    partners = write_input(tmp_path, "partners.csv", PARTNERS_ONE_BAD)
    strict = plan_cli(needs, partners, tmp_path / "strict", tmp_path / "models")
    assert_clean_exit(strict, 2)
    assert "partners.csv, row 3, field 'capacity', value 'ten'" in strict.stderr
    assert not (tmp_path / "strict").exists()

    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--skip-invalid")
    assert_clean_exit(result, 0)
    assert "skipped 1 invalid row(s)" in result.stderr
    rejects = read_csv(out / "rejects_partners.csv")
    assert [(r["row"], r["partner_id"], r["capacity"]) for r in rejects] == [("3", "p2", "ten")]
    assert rejects[0]["problems"].startswith("capacity: ")
    assert not (out / "rejects_needs.csv").exists()
    assignments = {(r["partner_id"], float(r["units"])) for r in read_csv(out / "assignments.csv")}
    assert assignments == {("p1", 4.0), ("p3", 2.0)}
    assert summary(out)["rejected_rows"] == {"partners": 1}


# ---------------------------------------------------------------------------------------
# HSDS: import --mapping / --skip-invalid, export --format json / --mapping
# ---------------------------------------------------------------------------------------

CUSTOM_MAPPING = (
    "taxonomy,code,name,category,match\n"
    "Open Eligibility,,Food Pantry,food_access,exact\n"
    "Open Eligibility,,Tutoring,education,exact\n"
    "Open Eligibility,,Mental Health Care,victim_support,exact\n"
    "211 LA County Taxonomy,PH-1400,,youth_engagement,prefix\n"
)


def categories_of(path: Path) -> dict[str, str]:
    return {r["name"]: r["categories"] for r in read_csv(path)}


def test_hsds_import_with_a_custom_mapping(tmp_path: Path) -> None:
    default = tmp_path / "default.csv"
    assert_clean_exit(invoke("hsds", "import", "--source", str(HSDS_CSV), "--out", str(default)), 0)
    mapping = write_input(tmp_path, "map.csv", CUSTOM_MAPPING)
    custom = tmp_path / "custom.csv"
    result = invoke(
        "hsds", "import", "--source", str(HSDS_CSV), "--out", str(custom), "--mapping", str(mapping)
    )
    assert_clean_exit(result, 0)
    assert f"wrote 4 partners to {custom}" in result.stdout
    before, after = categories_of(default), categories_of(custom)
    counselling = [n for n in before if n.startswith("Northside Counseling")]
    assert len(counselling) == 2
    for name in counselling:  # the mapping decides the category
        assert (before[name], after[name]) == ("mental_health", "victim_support")
    for name in set(before) - set(counselling):
        assert after[name] == before[name]


def test_hsds_import_with_a_bad_mapping_exits_2(tmp_path: Path) -> None:
    mapping = write_input(tmp_path, "map.csv", "taxonomy,code,name,category\noe,,Food,food_acess\n")
    out = tmp_path / "partners.csv"
    result = invoke(
        "hsds", "import", "--source", str(HSDS_CSV), "--out", str(out), "--mapping", str(mapping)
    )
    assert_clean_exit(result, 2)
    assert f"{mapping}, row 2, field 'category', value 'food_acess'" in result.stderr
    assert "did you mean 'food_access'" in result.stderr
    assert not out.exists()


@pytest.fixture
def hsds_one_bad(tmp_path: Path) -> Path:
    package = Path(shutil.copytree(HSDS_CSV, tmp_path / "hsds"))
    locations = package / "locations.csv"
    text = locations.read_text(encoding="utf-8")
    assert "Uptown Clinic,41.965" in text
    locations.write_text(text.replace("Uptown Clinic,41.965", "Uptown Clinic,95"), "utf-8")
    return package


def test_hsds_import_skip_invalid_writes_the_valid_partners(
    hsds_one_bad: Path, tmp_path: Path
) -> None:
    strict = tmp_path / "strict.csv"
    result = invoke("hsds", "import", "--source", str(hsds_one_bad), "--out", str(strict))
    assert_clean_exit(result, 2)
    assert "locations.csv, row 4, field 'latitude', value '95.0'" in result.stderr
    assert not strict.exists()
    out = tmp_path / "partners.csv"
    result = invoke(
        "hsds", "import", "--source", str(hsds_one_bad), "--out", str(out), "--skip-invalid"
    )
    assert_clean_exit(result, 0)
    assert "skipped 1 invalid HSDS partner(s)" in result.stderr
    names = [r["name"] for r in read_csv(out)]
    assert len(names) == 3 and not any("Uptown" in n for n in names)


def test_hsds_import_skip_invalid_names_the_skipped_row(hsds_one_bad: Path, tmp_path: Path) -> None:
    out = tmp_path / "partners.csv"
    result = invoke(
        "hsds", "import", "--source", str(hsds_one_bad), "--out", str(out), "--skip-invalid"
    )
    assert_clean_exit(result, 0)
    reported = result.stderr + "".join(p.read_text() for p in tmp_path.glob("*rejects*"))
    assert "locations.csv" in reported and "latitude" in reported
    assert "remain" in result.stderr and (tmp_path / "partners_rejects.csv").is_file()


def test_hsds_import_skip_invalid_with_nothing_left_says_so(tmp_path: Path) -> None:
    package = Path(shutil.copytree(HSDS_CSV, tmp_path / "hsds"))
    locations = package / "locations.csv"
    rows = list(csv.DictReader(io.StringIO(locations.read_text(encoding="utf-8"))))
    for row in rows:
        row["latitude"] = "95"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    locations.write_text(text.getvalue(), encoding="utf-8")
    out = tmp_path / "partners.csv"
    result = invoke("hsds", "import", "--source", str(package), "--out", str(out),
                    "--skip-invalid")  # fmt: skip
    assert_clean_exit(result, 2)
    assert "no partner is left: all" in result.stderr and not out.exists()


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    out = tmp_path / "imported.csv"
    assert_clean_exit(invoke("hsds", "import", "--source", str(HSDS_CSV), "--out", str(out)), 0)
    return out


def test_hsds_export_json_round_trips(imported: Path, tmp_path: Path) -> None:
    dest = tmp_path / "export"
    result = invoke(
        "hsds", "export", "--partners", str(imported), "--out", str(dest), "--format", "json"
    )
    assert_clean_exit(result, 0)
    assert f"wrote 1 file(s) to {dest}" in result.stdout
    assert sorted(p.name for p in dest.iterdir()) == ["services.json"]
    services = json.loads((dest / "services.json").read_text(encoding="utf-8"))
    assert isinstance(services, list) and len(services) == 4
    for service in services:
        (sal,) = service["service_at_locations"]
        assert {"latitude", "longitude"} <= set(sal["location"])
        assert service["capacities"] and service["attributes"]
    # JSON back in: the same partners table as the first import
    again = tmp_path / "again.csv"
    result = invoke("hsds", "import", "--source", str(dest / "services.json"), "--out", str(again))
    assert_clean_exit(result, 0)
    assert again.read_bytes() == imported.read_bytes()


def test_hsds_export_csv_and_json_describe_the_same_services(
    imported: Path, tmp_path: Path
) -> None:
    for fmt in ("csv", "json"):
        result = invoke(
            "hsds",
            "export",
            "--partners",
            str(imported),
            "--out",
            str(tmp_path / fmt),
            "--format",
            fmt,
        )
        assert_clean_exit(result, 0)
    assert {p.name for p in (tmp_path / "csv").iterdir()} >= {
        "services.csv",
        "locations.csv",
        "datapackage.json",
    }
    from_csv = tmp_path / "from_csv.csv"
    from_json = tmp_path / "from_json.csv"
    for src, dst in (
        (tmp_path / "csv", from_csv),
        (tmp_path / "json" / "services.json", from_json),
    ):
        assert_clean_exit(invoke("hsds", "import", "--source", str(src), "--out", str(dst)), 0)
    assert from_csv.read_bytes() == from_json.read_bytes() == imported.read_bytes()


def test_hsds_export_mapping_names_the_exported_terms(imported: Path, tmp_path: Path) -> None:
    """Beside matcher's own term, each category gets the first named term of the mapping."""
    mapping = write_input(tmp_path, "map.csv", CUSTOM_MAPPING.replace("Tutoring", "Homework Club"))

    def terms(*extra: str) -> tuple[set[tuple[str, str]], set[str]]:
        dest = tmp_path / ("custom" if extra else "default")
        result = invoke(
            "hsds",
            "export",
            "--partners",
            str(imported),
            "--out",
            str(dest),
            "--format",
            "json",
            *extra,
        )
        assert_clean_exit(result, 0)
        services = json.loads((dest / "services.json").read_text(encoding="utf-8"))
        found = {
            (a["taxonomy_term"]["taxonomy_detail"]["name"], a["taxonomy_term"]["name"])
            for s in services
            for a in s["attributes"]
        }
        own = {name for taxonomy, name in found if taxonomy == "matcher"}
        return {f for f in found if f[0] != "matcher"}, own

    (default, own_default), (custom, own_custom) = terms(), terms("--mapping", str(mapping))
    assert (
        own_default
        == own_custom
        == {"Food access", "Education", "Youth engagement", "Mental health"}
    )
    assert default == {
        ("open_eligibility", "Food"),
        ("open_eligibility", "Education"),
        ("open_eligibility", "Mentoring"),
        ("open_eligibility", "Mental Health Care"),
    }
    # the custom mapping names food and education only (its youth rule is a code prefix,
    # and it maps no term to mental_health)
    assert custom == {("Open Eligibility", "Food Pantry"), ("Open Eligibility", "Homework Club")}


def test_hsds_export_json_to_a_json_file(imported: Path, tmp_path: Path) -> None:
    dest = tmp_path / "partners.json"
    result = invoke(
        "hsds", "export", "--partners", str(imported), "--out", str(dest), "--format", "json"
    )
    assert_clean_exit(result, 0)
    assert dest.is_file()
    assert len(json.loads(dest.read_text(encoding="utf-8"))) == 4
    inferred = tmp_path / "inferred.json"  # the format follows the name
    assert_clean_exit(invoke("hsds", "export", "--partners", str(imported), "--out",
                             str(inferred)), 0)  # fmt: skip
    ids = [s["id"] for s in json.loads(dest.read_text(encoding="utf-8"))]
    assert [s["id"] for s in json.loads(inferred.read_text(encoding="utf-8"))] == ids
    refused = invoke("hsds", "export", "--partners", str(imported), "--out",
                     str(tmp_path / "x.json"), "--format", "csv")  # fmt: skip
    assert refused.exit_code == 2 and "directory" in refused.output
    assert not (tmp_path / "x.json").exists()
