"""The ``matcher`` command line: plan, validate, --skip-invalid, help, exit codes, determinism."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import matcher
from matcher.cli import main

from .conftest import NEEDS_HEADER, assert_clean_exit, invoke, plan_cli, read_csv

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"
CONTRACT_FILES = (
    "assignments.csv",
    "clusters.csv",
    "need_clusters.csv",
    "plan.geojson",
    "summary.json",
)

WITH_THREE_BAD_ROWS = (
    NEEDS_HEADER
    + "n1,food_access,41.8800,-87.6300,4,3\n"  # line 2
    + "n2,food_access,95,-87.6300,4,3\n"  # line 3: lat out of range
    + "n3,food_access,41.8810,-87.6310,-4,3\n"  # line 4: negative demand
    + "n4,food_acess,41.8820,-87.6320,2,9\n"  # line 5: unknown category and severity 9
    + "n5,food_access,41.8805,-87.6305,3,2\n"  # line 6
    + "n6,youth_engagement,41.9500,-87.6500,2,5\n"  # line 7
)


def header(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[0].split(",")


# ---------------------------------------------------------------------------------------
# the sample city, planned twice (~10 s each): once per module
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("sample")
    runs: dict[str, Any] = {}
    for name in ("first", "second"):
        out = base / name
        result = plan_cli(
            SAMPLE / "needs.csv",
            SAMPLE / "partners.csv",
            out,
            base / "models",
            "--neighborhoods",
            str(SAMPLE / "neighborhoods.geojson"),
        )
        runs[name] = (result, out)
    runs["models"] = base / "models"
    return runs


def test_plan_sample_succeeds(sample_runs: dict[str, Any]) -> None:
    for name in ("first", "second"):
        result, out = sample_runs[name]
        assert_clean_exit(result, 0)
        assert "served" in result.stdout
        for f in CONTRACT_FILES:
            assert (out / f).is_file() and (out / f).stat().st_size > 0, f
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temporary files left"
        assert not [p.name for p in out.iterdir() if p.name.startswith("rejects_")]
    assert list(sample_runs["models"].glob("*.json")), "the clustering model was not saved"


def test_plan_sample_outputs_follow_the_contract(sample_runs: dict[str, Any]) -> None:
    _, out = sample_runs["first"]
    assert header(out / "assignments.csv")[:5] == [
        "cluster_id",
        "partner_id",
        "units",
        "distance_km",
        "cost",
    ]
    assert header(out / "clusters.csv")[:9] == [
        "cluster_id",
        "category",
        "demand",
        "severity",
        "centroid_lat",
        "centroid_lon",
        "served",
        "unmet",
        "unmet_reason",
    ]
    assert header(out / "need_clusters.csv") == ["need_id", "cluster_id"]
    # every need in exactly one cluster
    need_ids = [r["need_id"] for r in read_csv(SAMPLE / "needs.csv")]
    placed = [r["need_id"] for r in read_csv(out / "need_clusters.csv")]
    assert sorted(placed) == sorted(need_ids)
    clusters = read_csv(out / "clusters.csv")
    assert {r["cluster_id"] for r in read_csv(out / "need_clusters.csv")} == {
        r["cluster_id"] for r in clusters
    }
    for r in clusters:
        assert float(r["served"]) + float(r["unmet"]) == pytest.approx(float(r["demand"]))
        assert r["unmet_reason"] in (
            {"no_partner_in_range", "partners_in_range_full"} if float(r["unmet"]) > 0 else {""}
        )
    doc = json.loads((out / "plan.geojson").read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection"
    assert {f["properties"]["feature_type"] for f in doc["features"]} == {
        "cluster",
        "partner",
        "assignment",
    }
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    for key in ("parameters", "input_hashes", "status", "objective", "metrics"):
        assert key in summary, key
    assert summary["status"] == "optimal"
    assert set(summary["input_hashes"]) == {"needs", "partners", "neighborhoods"}


def test_plan_sample_twice_is_byte_identical(sample_runs: dict[str, Any]) -> None:
    (_, first), (_, second) = sample_runs["first"], sample_runs["second"]
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert set(CONTRACT_FILES) <= set(names)
    different = [n for n in names if (first / n).read_bytes() != (second / n).read_bytes()]
    assert different == []


# ---------------------------------------------------------------------------------------
# help and version
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [[]] + [[name] for name in sorted(main.commands)],
    ids=["main"] + sorted(main.commands),
)
def test_help_of_every_command(command: list[str]) -> None:
    for flag in ("--help", "-h"):
        result = invoke(*command, flag)
        assert_clean_exit(result, 0)
        assert "Usage:" in result.stdout
    assert {"plan", "validate"} <= set(main.commands)


def test_version() -> None:
    result = invoke("--version")
    assert_clean_exit(result, 0)
    assert matcher.__version__ in result.stdout


# ---------------------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------------------


def test_validate_success(
    tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", tiny_needs)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    result = invoke("validate", "--needs", str(needs), "--partners", str(partners))
    assert_clean_exit(result, 0)
    assert "ok: 3 needs, 2 partners" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["needs.csv", "partners.csv"]


def test_validate_failure_reports_both_files(tmp_path: Path, write: Callable[..., Path]) -> None:
    needs = write(tmp_path, "needs.csv", WITH_THREE_BAD_ROWS)
    partners = write(
        tmp_path,
        "partners.csv",
        "partner_id,name,kind,lat,lon,categories,capacity,radius_km\n"
        "p1,Food Bank,organization,41.8810,-87.6300,food_access,10,0\n",
    )
    result = invoke("validate", "--needs", str(needs), "--partners", str(partners))
    assert_clean_exit(result, 2)
    assert result.stdout == ""
    err = result.stderr
    assert "5 problem(s)" in err
    assert "needs.csv, row 3, field 'lat', value '95'" in err
    assert "needs.csv, row 4, field 'demand', value '-4'" in err
    assert (
        "needs.csv, row 5, field 'category', value 'food_acess'" in err and "'food_access'" in err
    )
    assert "needs.csv, row 5, field 'severity', value '9'" in err
    assert "partners.csv, row 2, field 'radius_km', value '0'" in err


def test_validate_missing_file(
    tmp_path: Path, write: Callable[..., Path], tiny_partners: str
) -> None:
    partners = write(tmp_path, "partners.csv", tiny_partners)
    result = invoke("validate", "--needs", str(tmp_path / "nope.csv"), "--partners", str(partners))
    assert_clean_exit(result, 2)
    assert "nope.csv" in result.stderr and "not found" in result.stderr


# ---------------------------------------------------------------------------------------
# plan: --skip-invalid, parameters, optional inputs
# ---------------------------------------------------------------------------------------


def test_skip_invalid_writes_plan_and_rejects(
    tmp_path: Path, write: Callable[..., Path], tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", WITH_THREE_BAD_ROWS)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--skip-invalid")
    assert_clean_exit(result, 0)
    assert "skipped 3 invalid row(s)" in result.stderr
    for f in CONTRACT_FILES + ("rejects_needs.csv",):
        assert (out / f).is_file(), f
    assert not (out / "rejects_partners.csv").exists()
    rejects = read_csv(out / "rejects_needs.csv")
    assert [(r["row"], r["need_id"]) for r in rejects] == [("3", "n2"), ("4", "n3"), ("5", "n4")]
    assert "lat" in rejects[0]["problems"] and "-90..90" in rejects[0]["problems"]
    assert "demand" in rejects[1]["problems"]
    assert "category" in rejects[2]["problems"] and "food_access" in rejects[2]["problems"]
    assert "severity" in rejects[2]["problems"]
    assert rejects[2]["category"] == "food_acess"  # the row as read
    placed = sorted(r["need_id"] for r in read_csv(out / "need_clusters.csv"))
    assert placed == ["n1", "n5", "n6"]
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["rejected_rows"] == {"needs": 3}


def test_skip_invalid_library(tmp_path: Path, write: Callable[..., Path]) -> None:
    path = write(tmp_path, "needs.csv", WITH_THREE_BAD_ROWS)
    table = matcher.read_needs(path, on_invalid="skip")
    assert table.frame["need_id"].tolist() == ["n1", "n5", "n6"]
    assert table.rejects["row"].tolist() == [3, 4, 5]
    assert table.rejects["need_id"].tolist() == ["n2", "n3", "n4"]


def test_skip_invalid_when_every_row_is_bad(
    tmp_path: Path, write: Callable[..., Path], tiny_partners: str
) -> None:
    """Nothing left to plan: `--skip-invalid` plans the valid rows (none), so the result is
    an empty plan with exit 0 and the rejected row in rejects_needs.csv (README, CLI)."""
    needs = write(tmp_path, "needs.csv", NEEDS_HEADER + "n1,food_acess,41.88,-87.63,1,3\n")
    partners = write(tmp_path, "partners.csv", tiny_partners)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--skip-invalid")
    assert_clean_exit(result, 0)
    assert "skipped 1 invalid row(s)" in result.stderr
    rejects = read_csv(out / "rejects_needs.csv")
    assert [(r["row"], r["need_id"]) for r in rejects] == [("2", "n1")]
    assert "category" in rejects[0]["problems"] and "food_access" in rejects[0]["problems"]
    assert not (out / "rejects_partners.csv").exists()
    for f in CONTRACT_FILES:
        assert (out / f).is_file(), f
    assert read_csv(out / "need_clusters.csv") == []
    assert read_csv(out / "assignments.csv") == []
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["rejected_rows"] == {"needs": 1}
    assert summary["metrics"]["units"]["demand"] == 0
    assert summary["metrics"]["counts"]["needs"] == 0


@pytest.mark.parametrize(
    "option",
    [["--cluster-km", "-1"], ["--max-cluster-radius-km", "0"], ["--min-samples", "0"]],
    ids=lambda o: o[0],
)
def test_invalid_parameter_exits_2(
    option: list[str],
    tmp_path: Path,
    write: Callable[..., Path],
    tiny_needs: str,
    tiny_partners: str,
) -> None:
    needs = write(tmp_path, "needs.csv", tiny_needs)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", *option)
    assert_clean_exit(result, 2)
    assert option[0].lstrip("-").replace("-", "_") in result.stderr
    assert not out.exists()


def test_missing_neighborhoods_file_exits_2(
    tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", tiny_needs)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    out = tmp_path / "out"
    result = plan_cli(
        needs,
        partners,
        out,
        tmp_path / "models",
        "--neighborhoods",
        str(tmp_path / "hoods.geojson"),
    )
    assert_clean_exit(result, 2)
    assert "hoods.geojson" in result.stderr and "not found" in result.stderr
    assert not out.exists()


def test_tiny_plan_quiet(
    tmp_path: Path, write: Callable[..., Path], tiny_needs: str, tiny_partners: str
) -> None:
    needs = write(tmp_path, "needs.csv", tiny_needs)
    partners = write(tmp_path, "partners.csv", tiny_partners)
    out = tmp_path / "out"
    result = plan_cli(needs, partners, out, tmp_path / "models", "--objective", "distance", "-q")
    assert_clean_exit(result, 0)
    assert result.stdout == ""
    assignments = read_csv(out / "assignments.csv")
    assert sorted((r["partner_id"], float(r["units"])) for r in assignments) == [
        ("p1", 3.0),
        ("p1", 4.0),
        ("p2", 2.0),
    ]
