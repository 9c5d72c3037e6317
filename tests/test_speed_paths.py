"""The paths that make large plans fast change no result.

Large plans split oversize groups in helper processes that imported k-means while the
plan read its inputs (matcher.clustering.SplitHelper). These tests run that path for
real (worker processes, and the CLI in a fresh interpreter, where scikit-learn is not
imported yet) and compare it with the same work done in one process; they also check
the threaded shapely calls (matcher.geo.threaded) and that the CLI writes the
clustering model only after the plan's files.
"""

from __future__ import annotations

import filecmp
import logging
import multiprocessing
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from matcher import MatchConfig, Plan, clustering, geo, output, plan
from matcher.clustering import SplitHelper, cluster_needs
from matcher.pipeline import BYTES_PER_NEED_ROW, _rows
from matcher.synthetic import generate_city, write_city


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A seeded city large enough for the helper (and its oversize groups)."""
    out = tmp_path_factory.mktemp("helper_city")
    return write_city(generate_city(30_000, 3_000, seed=3), out)


def _needs(city: dict[str, Path]) -> pd.DataFrame:
    return pd.read_csv(city["needs"], dtype={"need_id": str}).head(10_000)


@pytest.mark.parametrize("by_hood", [False, True])
def test_helper_gives_the_labels_of_one_process(
    city: dict[str, Path], by_hood: bool, caplog: pytest.LogCaptureFixture
) -> None:
    needs = _needs(city)
    needs["neighborhood"] = (needs["lat"] * 50).round().astype(int).astype(str)
    config = MatchConfig(max_cluster_radius_km=0.3)
    here = cluster_needs(needs, config, by_neighborhood=by_hood)
    pending: list[object] = []
    with SplitHelper(2) as helper, caplog.at_level(logging.WARNING, logger="matcher"):
        submit = helper.submit
        helper.submit = lambda fn, *args: pending.append(submit(fn, *args)) or pending[-1]
        there = cluster_needs(needs, config, by_neighborhood=by_hood, helper=helper)
    # every category was split in a helper process, none fell back to this one
    assert pending and all(isinstance(p, clustering._InHelper) for p in pending)
    assert "splitting here" not in caplog.text
    pd.testing.assert_frame_equal(here.clusters, there.clusters, check_exact=True)
    pd.testing.assert_series_equal(here.need_cluster, there.need_cluster, check_exact=True)
    assert here.core.tolist() == there.core.tolist()


def test_fixture_has_oversize_groups(city: dict[str, Path]) -> None:
    """Without k-means splits the clustering would differ: the helper had work to do."""
    needs = _needs(city)
    config = MatchConfig(max_cluster_radius_km=0.3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(clustering, "_split_oversize", lambda xyz, w, groups, r, s: groups.copy())
        unsplit = cluster_needs(needs, config)
    split = cluster_needs(needs, config)
    assert len(split.clusters) > len(unsplit.clusters)


def test_a_killed_helper_is_replaced_by_this_process(
    city: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A helper process killed mid-plan: its splits are done here, with the same labels."""
    needs = _needs(city)
    config = MatchConfig(max_cluster_radius_km=0.3)
    with SplitHelper() as helper:
        processes = list(helper._pool._processes.values())  # type: ignore[union-attr]
        assert processes
        for process in processes:
            process.kill()
            process.join(10)
        with caplog.at_level(logging.WARNING, logger="matcher"):
            got = cluster_needs(needs, config, helper=helper)
    assert "splitting here" in caplog.text
    want = cluster_needs(needs, config)
    pd.testing.assert_frame_equal(got.clusters, want.clusters, check_exact=True)
    pd.testing.assert_series_equal(got.need_cluster, want.need_cluster, check_exact=True)


def test_a_closed_helper_splits_here(city: dict[str, Path]) -> None:
    needs = _needs(city).head(3_000)
    config = MatchConfig(max_cluster_radius_km=0.3)
    helper = SplitHelper()
    helper.close()
    got = cluster_needs(needs, config, helper=helper)
    pd.testing.assert_series_equal(got.need_cluster, cluster_needs(needs, config).need_cluster)


def test_no_helper_when_no_process_can_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(SplitHelper, "processes_for", staticmethod(lambda n: 1))

    def fail(self: ProcessPoolExecutor, *args: object) -> None:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(ProcessPoolExecutor, "submit", fail)
    with caplog.at_level(logging.WARNING, logger="matcher"):
        assert SplitHelper.start(10**6) is None
    assert "no clustering helper process" in caplog.text


def test_a_plan_leaves_no_helper_process_behind(
    city: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(SplitHelper, "processes_for", staticmethod(lambda n: 2))
    with caplog.at_level(logging.INFO, logger="matcher"):
        plan(_needs(city), pd.read_csv(city["partners"], dtype={"partner_id": str}))
    assert "2 clustering helper processes started" in caplog.text
    deadline = time.monotonic() + 10
    while multiprocessing.active_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert multiprocessing.active_children() == []


def test_rows_estimate(city: dict[str, Path], tmp_path: Path) -> None:
    size = city["needs"].stat().st_size
    assert _rows(city["needs"]) == size // BYTES_PER_NEED_ROW
    assert _rows(str(city["needs"].parent / "needs.*")) == size // BYTES_PER_NEED_ROW
    assert _rows(pd.DataFrame({"a": range(7)})) == 7
    assert _rows(tmp_path / "missing.csv") == 0
    assert _rows(tmp_path) == 0  # a directory without inputs: reading reports it


def test_helpers_only_when_they_gain_and_may_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, clustering.KMEANS_MODULE, raising=False)
    monkeypatch.setattr(clustering.os, "cpu_count", lambda: 2)
    with pytest.MonkeyPatch.context() as one_thread:
        one_thread.setattr(clustering, "single_threaded", lambda: True)
        assert SplitHelper.processes_for(clustering.SPLIT_HELPER_MIN_NEEDS - 1) == 0
        assert SplitHelper.processes_for(clustering.SPLIT_HELPER_MIN_NEEDS) == 1
        assert SplitHelper.processes_for(clustering.SPLIT_HELPER_TWO_MIN_NEEDS) == 2
        one_thread.setattr(clustering.os, "cpu_count", lambda: 1)
        assert SplitHelper.processes_for(clustering.SPLIT_HELPER_TWO_MIN_NEEDS) == 1
    # a process running other threads (a service's plan jobs) never forks helpers
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert SplitHelper.processes_for(10**6) == 0
    finally:
        stop.set()
        other.join()
    monkeypatch.undo()
    __import__(clustering.KMEANS_MODULE)
    assert SplitHelper.processes_for(10**6) == 0


@pytest.mark.parametrize("n", [0, 5, geo.THREADED_MIN, geo.THREADED_MIN * 3 + 7])
def test_threaded_shapely_calls_equal_one_call(n: int) -> None:
    rng = np.random.default_rng(n)
    points = shapely.points(rng.uniform(-5, 5, (n, 2)))
    radius = rng.uniform(0.1, 1.0, n)
    one = shapely.buffer(points, radius, quad_segs=3)
    parts = geo.threaded(lambda p, r: shapely.buffer(p, r, quad_segs=3), points, radius)
    assert parts.dtype == one.dtype and len(parts) == n
    assert shapely.to_wkb(parts).tolist() == shapely.to_wkb(one).tolist()


def test_the_model_is_written_only_after_the_plan_files(
    city: dict[str, Path], tmp_path: Path
) -> None:
    """A plan whose files cannot be written leaves no new clustering model either."""
    blocked = tmp_path / "out"
    blocked.write_text("a file where the plan directory would go")
    models = tmp_path / "models"
    proc = subprocess.run(
        [
            sys.executable, "-m", "matcher.cli", "plan", "-q",
            "--needs", str(city["needs"]), "--partners", str(city["partners"]),
            "--out", str(blocked), "--models-dir", str(models),
        ],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert not models.exists() or not any(models.iterdir())


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


def _first_polygon_by_sorting(needs: pd.DataFrame, hoods: gpd.GeoDataFrame) -> pd.Series:
    """The earlier rule, as it was written: sort the join by id, keep each need's first."""
    joined = gpd.sjoin(
        gpd.GeoDataFrame(geometry=gpd.points_from_xy(needs["lon"], needs["lat"]), crs=4326),
        hoods[["neighborhood_id", "geometry"]],
        how="left",
        predicate="intersects",
    ).sort_values("neighborhood_id", kind="stable")
    first = joined[~joined.index.duplicated(keep="first")]["neighborhood_id"].reindex(needs.index)
    return first.where(first.notna(), needs["neighborhood"]).astype(str)


@settings(max_examples=40, deadline=None)
@given(
    cells=st.integers(1, 4),
    ids=st.permutations([f"h{i}" for i in range(16)]),
    points=st.lists(st.tuples(st.integers(-2, 10), st.integers(-2, 10)), min_size=1, max_size=60),
)
def test_needs_on_shared_edges_take_the_smallest_id(
    cells: int, ids: list[str], points: list[tuple[int, int]]
) -> None:
    """Polygons of a grid share edges and corners; needs on them (and outside) are placed
    as by the earlier sort-based rule."""
    from matcher.pipeline import assign_neighborhoods

    squares = [
        shapely.box(x * 2, y * 2, x * 2 + 2, y * 2 + 2) for x in range(cells) for y in range(cells)
    ]
    hoods = gpd.GeoDataFrame(
        {"neighborhood_id": ids[: len(squares)]}, geometry=squares, crs=4326
    )
    needs = pd.DataFrame(
        {
            "lon": [p[0] / 2 for p in points],
            "lat": [p[1] / 2 for p in points],
            "neighborhood": [f"given{i}" for i in range(len(points))],
        }
    )
    got = assign_neighborhoods(needs, hoods)
    want = _first_polygon_by_sorting(needs, hoods)
    assert got.tolist() == want.tolist()


def test_a_need_on_an_edge_takes_the_smaller_id_inside_and_outside_keep_theirs() -> None:
    from matcher.pipeline import assign_neighborhoods

    hoods = gpd.GeoDataFrame(
        {"neighborhood_id": ["b", "a"]},
        geometry=[shapely.box(0, 0, 2, 2), shapely.box(2, 0, 4, 2)],
        crs=4326,
    )
    needs = pd.DataFrame(
        {"lon": [2.0, 1.0, 3.0, 9.0], "lat": [1.0] * 3 + [9.0], "neighborhood": ["", "", "", "x"]}
    )
    assert assign_neighborhoods(needs, hoods).tolist() == ["a", "b", "a", "x"]


@pytest.fixture(scope="module")
def small_plan(city: dict[str, Path]) -> Plan:
    return plan(_needs(city), pd.read_csv(city["partners"], dtype={"partner_id": str}))


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_plan_geojson_written_by_a_forked_process_is_the_same(
    small_plan: Plan,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    here = output.write_plan(small_plan, tmp_path / "here")
    assert "plan.geojson" in here
    monkeypatch.setattr(output, "FORKED_GEOJSON_MIN_CLUSTERS", 0)
    monkeypatch.setattr(output, "single_threaded", lambda: True)  # whatever pytest runs
    with caplog.at_level(logging.DEBUG, logger="matcher.output"):
        with output.writing_plan(small_plan, tmp_path / "forked") as written:
            assert written == {}  # nothing published while the body runs
            assert not (tmp_path / "forked" / "plan.geojson").exists()
    assert "plan.geojson written by process" in caplog.text
    assert sorted(written) == sorted(here)
    assert _files(tmp_path / "forked") == _files(tmp_path / "here")


def test_a_failed_forked_writer_publishes_nothing(
    small_plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "plan.geojson").write_text("the earlier plan's layer")
    monkeypatch.setattr(output, "FORKED_GEOJSON_MIN_CLUSTERS", 0)
    monkeypatch.setattr(output, "single_threaded", lambda: True)

    def full(*args: object, **kwargs: object) -> Iterator[str]:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(output, "plan_geojson_pieces", full)
    with pytest.raises(OSError, match="could not write plan.geojson: OSError: .*No space left"):
        output.write_plan(small_plan, out)
    assert [p.name for p in out.iterdir()] == ["plan.geojson"]  # no file, no staging left
    assert (out / "plan.geojson").read_text() == "the earlier plan's layer"


def test_a_failed_body_stops_the_writer_and_publishes_nothing(
    small_plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "FORKED_GEOJSON_MIN_CLUSTERS", 0)
    monkeypatch.setattr(output, "single_threaded", lambda: True)
    with pytest.raises(RuntimeError, match="the model"):
        with output.writing_plan(small_plan, tmp_path / "out"):
            raise RuntimeError("the model could not be compressed")
    assert list((tmp_path / "out").iterdir()) == []
    assert multiprocessing.active_children() == []


def test_no_forked_writer_beside_other_threads(
    small_plan: Plan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "FORKED_GEOJSON_MIN_CLUSTERS", 0)
    monkeypatch.setattr(output, "single_threaded", lambda: False)
    started: list[object] = []
    monkeypatch.setattr(
        multiprocessing.context.ForkProcess, "start", lambda self: started.append(self)
    )
    output.write_plan(small_plan, tmp_path / "out")
    assert started == []
    assert (tmp_path / "out" / "plan.geojson").is_file()
