"""Plans split into regions on Dask: the same files, byte for byte, as one process.

The Dask tests run a real ``LocalCluster`` of two worker processes (one thread each);
the partition is checked against brute force on random inputs.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matcher import MatchConfig, plan
from matcher._errors import InputValidationError
from matcher.candidates import candidate_pairs
from matcher.geo import haversine_km
from matcher.partition import partition, region_labels
from matcher.runners.on_dask import dask_client
from matcher.synthetic_region import metros, write_region

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = {
    "needs": ROOT / "data/sample/needs.csv",
    "partners": ROOT / "data/sample/partners.csv",
    "neighborhoods": ROOT / "data/sample/neighborhoods.geojson",
}


@pytest.fixture(scope="module")
def client():
    with dask_client("local:2") as c:
        yield c


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> dict[str, Path]:
    """Six metros far apart: a plan with independent parts."""
    out = tmp_path_factory.mktemp("region")
    write_region(metros(6_000, 700, 6, seed=5), out)
    return {
        "needs": out / "needs.csv",
        "partners": out / "partners.csv",
        "neighborhoods": out / "neighborhoods.geojson",
    }


def _files(p, out: Path) -> dict[str, bytes]:
    p.to_dir(out)
    return {f.name: f.read_bytes() for f in sorted(out.iterdir())}


def _same(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], f"{name} differs"


def _both(client, tmp_path: Path, inputs: dict[str, Path], **kwargs):
    one = plan(**inputs, **kwargs)
    many = plan(**inputs, **kwargs, client=client)
    _same(_files(one, tmp_path / "one"), _files(many, tmp_path / "dask"))
    assert one.solver == many.solver
    return one, many


def test_the_sample_city_on_dask_is_byte_identical(client, tmp_path):
    one, _ = _both(client, tmp_path, SAMPLE)
    assert len(one.assignments) > 1000


def test_equity_options_on_a_one_region_city_with_dask_are_byte_identical(client, tmp_path):
    # the sample city is one region: --dask plans it in the driver
    config = MatchConfig(
        min_coverage=0.4, max_partner_share=0.5, vulnerability_column="hardship_index"
    )
    one, _ = _both(client, tmp_path, SAMPLE, config=config)
    assert one.floors is not None and len(one.floors) > 50


def test_a_region_of_metros_splits_and_stays_byte_identical(client, tmp_path, region):
    config = MatchConfig(
        min_coverage=0.9, max_partner_share=0.6, vulnerability_column="hardship_index"
    )
    one, many = _both(client, tmp_path, region, config=config)
    assert one.floors is not None and not one.floors["floor_met"].all()
    needs, partners = one.needs, one.partners
    groups = partition(needs, partners, config, None, tasks=100)
    assert len(groups) >= 6  # at least one region per metro
    assert one.solver["components"] == many.solver["components"] >= 6


def test_locks_and_the_previous_plan_on_dask_are_byte_identical(client, tmp_path, region):
    first = plan(**region)
    lock = first.assignments.iloc[:: max(1, len(first.assignments) // 40)][
        ["cluster_id", "partner_id", "units"]
    ]
    prev = tmp_path / "prev"
    first.to_dir(prev)
    config = MatchConfig(churn_penalty_km=2.0)
    one, _ = _both(client, tmp_path, region, config=config, lock=lock, previous=prev)
    assert one.metrics["locked_units"] == pytest.approx(lock["units"].sum())
    assert one.churn is not None


def test_bad_lock_rows_get_the_same_problems_on_dask(client, region):
    first = plan(**region)
    a = first.assignments
    other = a[a["cluster_id"].str.split("-").str[0] != a["cluster_id"].iloc[0].split("-")[0]]
    lock = pd.DataFrame(
        {
            "cluster_id": [a["cluster_id"].iloc[0], "nope-000001", other["cluster_id"].iloc[0]],
            "partner_id": ["P-none", a["partner_id"].iloc[0], a["partner_id"].iloc[-1]],
            "units": [1.0, 1.0, 1.0],
        }
    )
    with pytest.raises(InputValidationError) as single:
        plan(**region, lock=lock)
    with pytest.raises(InputValidationError) as many:
        plan(**region, lock=lock, client=client)
    assert many.value.report() == single.value.report()
    assert len(single.value.problems) >= 2


def test_matcher_plan_dask_local_writes_the_same_files(tmp_path, region):
    base = [
        sys.executable,
        "-m",
        "matcher.cli",
        "plan",
        "--needs",
        str(region["needs"]),
        "--partners",
        str(region["partners"]),
        "--out",
    ]
    for out, extra in (("one", []), ("dask", ["--dask", "local:2"])):
        done = subprocess.run(
            [*base, str(tmp_path / out), "--models-dir", str(tmp_path / "m"), "-q", *extra],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
    one = {f.name: f.read_bytes() for f in (tmp_path / "one").iterdir()}
    dask = {f.name: f.read_bytes() for f in (tmp_path / "dask").iterdir()}
    _same(one, dask)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("local:0", "1 to 256 workers, not 0"),
        ("local:999", "not 999"),
        ("no such scheduler", "not a local cluster nor a scheduler address"),
    ],
)
def test_a_bad_dask_address_exits_2_naming_it(tmp_path, value, says):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "matcher.cli",
            "plan",
            "--needs",
            str(SAMPLE["needs"]),
            "--partners",
            str(SAMPLE["partners"]),
            "--out",
            str(tmp_path / "out"),
            "--dask",
            value,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "'--dask'" in done.stderr and says in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()


# -- the partition against brute force ---------------------------------------------------

CATEGORIES = ["food_access", "education", "mental_health"]


@st.composite
def instances(draw):
    n = draw(st.integers(1, 40))
    m = draw(st.integers(0, 12))
    # a few spots a few km apart, so that some instances split and some do not
    spots = draw(st.lists(st.tuples(st.floats(-0.3, 0.3), st.floats(-0.3, 0.3)), min_size=1,
                          max_size=4))  # fmt: skip
    lat0, lon0 = draw(st.sampled_from([(41.8, -87.6), (0.0, 179.95), (89.5, 10.0)]))

    def point():
        s = draw(st.sampled_from(spots))
        return (
            lat0 + s[0] + draw(st.floats(-0.01, 0.01)),
            ((lon0 + s[1] + draw(st.floats(-0.01, 0.01)) + 180) % 360) - 180,
        )

    needs = [
        (f"n{i:03d}", draw(st.sampled_from(CATEGORIES)), *point(), draw(st.sampled_from("ab")))
        for i in range(n)
    ]
    partners = [
        (
            f"p{i:03d}",
            ";".join(
                draw(st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2, unique=True))
            ),  # fmt: skip
            *point(),
            draw(st.sampled_from([0.3, 1.0, 3.0, 8.0])),
        )
        for i in range(m)
    ]
    config = MatchConfig(
        cluster_km=draw(st.sampled_from([0.2, 0.5, 1.5])),
        min_samples=draw(st.integers(1, 3)),
        max_cluster_radius_km=draw(st.sampled_from([0.5, 1.5, 4.0])),
        min_coverage=draw(st.sampled_from([0.0, 0.5])),
        objective="distance",
    )
    return needs, partners, config


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(instances())
def test_the_partition_never_separates_what_can_meet(case):
    needs_rows, partner_rows, config = case
    needs = pd.DataFrame(needs_rows, columns=["need_id", "category", "lat", "lon", "neighborhood"])
    needs["demand"] = 1.0
    partners = pd.DataFrame(
        partner_rows, columns=["partner_id", "categories", "lat", "lon", "radius_km"]
    )
    partners["kind"] = "organization"
    partners["capacity"] = 5.0
    if partners.empty:
        partners = partners.astype({"lat": float, "lon": float, "radius_km": float})
        partners.loc[0] = ["p999", "food_access", 10.0, 10.0, 0.3, "organization", 5.0]
    result = plan(needs, partners, config=config)
    need_df, partner_df = result.needs, result.partners
    floored = None
    if config.min_coverage > 0:
        floored = pd.factorize(need_df["neighborhood"])[0].astype(np.int64)
    need_region, partner_region = region_labels(need_df, partner_df, config, floored)

    # needs of one category within cluster_km of each other (brute force)
    lat, lon = need_df["lat"].to_numpy(), need_df["lon"].to_numpy()
    cat = need_df["category"].to_numpy()
    d = haversine_km(lat[:, None], lon[:, None], lat[None, :], lon[None, :])
    near = (d <= config.cluster_km * (1 + 1e-9)) & (cat[:, None] == cat[None, :])
    i, j = np.nonzero(near)
    assert (need_region[i] == need_region[j]).all()
    # the members of a cluster, and a floored neighborhood
    for _, members in need_df.groupby("cluster_id"):
        assert len(set(need_region[members.index])) == 1
    if floored is not None:
        for _, members in need_df.groupby("neighborhood"):
            assert len(set(need_region[members.index])) == 1
    # every eligible pair, checked again with haversine on the plan's own clusters
    pairs = candidate_pairs(result.clusters, partner_df)
    cluster_region = (
        need_df.assign(r=need_region).groupby("cluster_id")["r"].first()
        .reindex(result.clusters["cluster_id"]).to_numpy()
    )  # fmt: skip
    for c, p in zip(pairs["cluster"], pairs["partner"], strict=True):
        assert partner_region[p] == cluster_region[c]
    # a partner with no region serves nothing
    idle = set(partner_df["partner_id"][partner_region < 0])
    assert idle.isdisjoint(set(result.assignments["partner_id"]))
    # the widest cluster fits the bound the partition assumes
    assert result.clusters["radius_km"].max() <= config.max_cluster_radius_km * (1 + 1e-6)
    assert math.isfinite(float(need_region.max()))


# -- partitioned inputs ------------------------------------------------------------------


def _split_csv(src: Path, out: Path, parts: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    header, *lines = src.read_text().splitlines(keepends=True)
    size = -(-len(lines) // parts)
    for k in range(parts):
        (out / f"part-{k:03d}.csv").write_text(header + "".join(lines[k * size : (k + 1) * size]))


def test_a_directory_or_a_glob_of_partitions_plans_like_one_file(client, tmp_path, region):
    _split_csv(region["needs"], tmp_path / "needs", 3)
    _split_csv(region["partners"], tmp_path / "partners", 2)
    whole = _files(plan(region["needs"], region["partners"]), tmp_path / "whole")
    by_dir = plan(tmp_path / "needs", str(tmp_path / "partners" / "part-*.csv"), client=client)
    parts = _files(by_dir, tmp_path / "parts")
    for name in whole:
        if name != "summary.json":  # it names the inputs and their hashes
            assert parts[name] == whole[name], name
    assert by_dir.input_hashes["needs"] != plan(region["needs"], region["partners"]).input_hashes[
        "needs"
    ]


def test_an_id_in_two_partitions_is_named_with_both_files(tmp_path, region):
    _split_csv(region["needs"], tmp_path / "needs", 2)
    first = (tmp_path / "needs" / "part-000.csv").read_text().splitlines()
    with open(tmp_path / "needs" / "part-001.csv", "a") as f:
        f.write(first[1] + "\n")
    with pytest.raises(InputValidationError) as err:
        plan(tmp_path / "needs", region["partners"])
    (p,) = err.value.problems
    assert p.file.endswith("part-001.csv") and p.field == "need_id"
    assert "first used in" in p.reason and "part-000.csv row 2" in p.reason


def test_a_pattern_that_matches_nothing_is_named(tmp_path, region):
    with pytest.raises(InputValidationError) as err:
        plan(str(tmp_path / "nothing-*.csv"), region["partners"])
    assert "no .csv" in str(err.value)
