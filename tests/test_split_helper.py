"""The clustering helper process (matcher.clustering.SplitHelper) changes no label.

Large plans split oversize groups in a helper process that imported k-means while the
plan read its inputs. These tests run that path for real (a worker process, and the
CLI in a fresh interpreter, where scikit-learn is not imported yet) and compare it
with the same work done in one process.
"""

from __future__ import annotations

import filecmp
import logging
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from matcher import MatchConfig, clustering, plan
from matcher.clustering import SplitHelper, cluster_needs
from matcher.pipeline import BYTES_PER_NEED_ROW, _rows
from matcher.synthetic import generate_city, write_city


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A seeded city large enough for the helper (and its oversize groups)."""
    out = tmp_path_factory.mktemp("helper_city")
    return write_city(generate_city(30_000, 3_000, seed=3), out)


@pytest.mark.parametrize("by_hood", [False, True])
def test_helper_gives_the_labels_of_one_process(city: dict[str, Path], by_hood: bool) -> None:
    needs = pd.read_csv(city["needs"], dtype={"need_id": str}).head(10_000)
    needs["neighborhood"] = (needs["lat"] * 50).round().astype(int).astype(str)
    config = MatchConfig(max_cluster_radius_km=0.3)
    here = cluster_needs(needs, config, by_neighborhood=by_hood)
    with SplitHelper(2) as helper:
        there = cluster_needs(needs, config, by_neighborhood=by_hood, helper=helper)
    pd.testing.assert_frame_equal(here.clusters, there.clusters, check_exact=True)
    pd.testing.assert_series_equal(here.need_cluster, there.need_cluster, check_exact=True)
    assert here.core.tolist() == there.core.tolist()


def test_fixture_has_oversize_groups(city: dict[str, Path]) -> None:
    """Without k-means splits the clustering would differ: the helper had work to do."""
    needs = pd.read_csv(city["needs"], dtype={"need_id": str}).head(10_000)
    config = MatchConfig(max_cluster_radius_km=0.3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clustering, "_split_oversize", lambda xyz, w, groups, r, s: groups.copy())
        unsplit = cluster_needs(needs, config)
    split = cluster_needs(needs, config)
    assert len(split.clusters) > len(unsplit.clusters)


def test_a_dead_helper_splits_here(city: dict[str, Path]) -> None:
    """If the helper process is gone, the split is done in this process, same labels."""
    needs = pd.read_csv(city["needs"], dtype={"need_id": str}).head(5_000)
    config = MatchConfig(max_cluster_radius_km=0.3)
    helper = SplitHelper()
    helper.close()
    got = cluster_needs(needs, config, helper=helper)
    pd.testing.assert_frame_equal(got.clusters, cluster_needs(needs, config).clusters)


def test_rows_estimate(city: dict[str, Path], tmp_path: Path) -> None:
    size = city["needs"].stat().st_size
    assert _rows(city["needs"]) == size // BYTES_PER_NEED_ROW
    assert _rows(str(city["needs"].parent / "needs.*")) == size // BYTES_PER_NEED_ROW
    assert _rows(pd.DataFrame({"a": range(7)})) == 7
    assert _rows(tmp_path / "missing.csv") == 0
    assert _rows(tmp_path) == 0  # a directory without inputs: reading reports it


def test_helpers_only_when_kmeans_is_not_imported_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, clustering.KMEANS_MODULE, raising=False)
    monkeypatch.setattr(clustering.os, "cpu_count", lambda: 2)
    assert SplitHelper.processes_for(clustering.SPLIT_HELPER_MIN_NEEDS - 1) == 0
    assert SplitHelper.processes_for(clustering.SPLIT_HELPER_MIN_NEEDS) == 1
    assert SplitHelper.processes_for(clustering.SPLIT_HELPER_TWO_MIN_NEEDS) == 2
    monkeypatch.setattr(clustering.os, "cpu_count", lambda: 1)
    assert SplitHelper.processes_for(clustering.SPLIT_HELPER_TWO_MIN_NEEDS) == 1
    monkeypatch.undo()
    __import__(clustering.KMEANS_MODULE)
    assert SplitHelper.processes_for(10**6) == 0


def test_cli_in_a_fresh_process_uses_the_helper_and_writes_the_same_plan(
    city: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`matcher plan` starts the helper (scikit-learn not imported there) and its plan
    directory is byte-identical to a plan made in this process without a helper."""
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable, "-m", "matcher.cli", "plan",
            "--needs", str(city["needs"]), "--partners", str(city["partners"]),
            "--neighborhoods", str(city["neighborhoods"]), "--out", str(out),
            "--models-dir", str(tmp_path / "models"),
        ],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "clustering helper process started" in proc.stderr
    __import__(clustering.KMEANS_MODULE)  # so that plan() here runs without a helper
    with caplog.at_level(logging.INFO, logger="matcher"):
        here = plan(city["needs"], city["partners"], neighborhoods=city["neighborhoods"])
    assert "clustering helper process started" not in caplog.text
    here.to_dir(tmp_path / "here")
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "here").iterdir())
    match, mismatch, errors = filecmp.cmpfiles(out, tmp_path / "here", names, shallow=False)
    assert (mismatch, errors) == ([], [])
