"""Unit tests of the core modules: geometry, candidates, clustering model, outputs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from matcher import ClusterModel, MatchConfig, plan
from matcher.candidates import candidate_pairs
from matcher.capacity_graph import build_graph
from matcher.geo import EARTH_RADIUS_KM, haversine_km
from matcher.output import coarsen

from .oracle import gc_km

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from([(41.88, -87.63), (0.0, 179.99), (-33.9, 151.2), (89.95, 0.0), (-89.9, 45.0)]),
    st.integers(0, 2**32 - 1),
)
@example((-89.9, 45.0), 913884)  # a radius exactly at the distance, one ulp apart by code path
def test_candidates_equal_brute_force(centre, seed):
    rng = np.random.default_rng(seed)
    nc, npart = int(rng.integers(1, 40)), int(rng.integers(1, 15))
    cats = np.array(["a", "b", "c"])

    def pts(n):
        lat = np.clip(centre[0] + rng.normal(0, 0.03, n), -90, 90)
        lon = ((centre[1] + rng.normal(0, 0.05, n) + 180) % 360) - 180
        return lat, lon

    clat, clon = pts(nc)
    plat, plon = pts(npart)
    clusters = pd.DataFrame(
        {"category": rng.choice(cats, nc), "centroid_lat": clat, "centroid_lon": clon}
    )
    radius = rng.uniform(0.2, 6.0, npart)
    # put some partners' radius exactly on a cluster's distance (the edge case)
    for j in range(npart):
        if rng.random() < 0.4:
            radius[j] = float(haversine_km(plat[j], plon[j], clat[j % nc], clon[j % nc]))
    partners = pd.DataFrame(
        {
            "categories": [
                ";".join(sorted(set(rng.choice(cats, rng.integers(1, 3))))) for _ in range(npart)
            ],
            "lat": plat,
            "lon": plon,
            "radius_km": radius,
        }
    )
    got = candidate_pairs(clusters, partners)
    want = set()
    for i in range(nc):
        for j in range(npart):
            if clusters["category"][i] in partners["categories"][j].split(";"):
                if float(haversine_km(plat[j], plon[j], clat[i], clon[i])) <= radius[j]:
                    want.add((i, j))
    assert set(zip(got["cluster"], got["partner"], strict=True)) == want


def test_haversine_matches_independent_formula_and_is_symmetric():
    rng = np.random.default_rng(0)
    a = rng.uniform([-90, -180], [90, 180], (200, 2))
    b = rng.uniform([-90, -180], [90, 180], (200, 2))
    d = haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    for i in range(200):
        assert abs(d[i] - gc_km(a[i, 0], a[i, 1], b[i, 0], b[i, 1])) < 1e-9
    np.testing.assert_allclose(d, haversine_km(b[:, 0], b[:, 1], a[:, 0], a[:, 1]))
    assert d.max() <= np.pi * EARTH_RADIUS_KM + 1e-9


def test_coarsened_points_stay_within_a_cell():
    rng = np.random.default_rng(1)
    lat = rng.uniform(-80, 80, 500)
    lon = rng.uniform(-180, 180, 500)
    clat, clon = coarsen(lat, lon)
    d = haversine_km(lat, lon, clat, clon)
    assert d.max() < 0.5  # at most half the diagonal of a ~500 m cell
    assert (d > 0).all()


def test_capacity_graph_uses_networkx_conventions():
    g = build_graph(
        ["a", "b"],
        np.array([3, 2]),
        np.array([50, 50]),
        ["x"],
        np.array([4]),
        np.array([0, 1]),
        np.array([0, 0]),
        np.array([5, 7]),
    )
    assert g.nodes["c:a"]["demand"] == -3 and g.nodes["sink"]["demand"] == 5
    assert g.edges["p:x", "sink"]["capacity"] == 4
    assert all(isinstance(d["weight"], int) for _, _, d in g.edges(data=True))


def _small_inputs():
    needs = pd.read_csv(SAMPLE / "needs.csv", dtype=str, keep_default_na=False).iloc[:600]
    partners = pd.read_csv(SAMPLE / "partners.csv", dtype=str, keep_default_na=False)
    return needs, partners


def test_two_runs_write_byte_identical_files(tmp_path):
    needs, partners = _small_inputs()
    digests = []
    for run, order in (("a", 1), ("b", 1), ("c", 7)):
        rows = needs.sample(frac=1.0, random_state=order)
        plan(rows, partners, neighborhoods=SAMPLE / "neighborhoods.geojson").to_dir(tmp_path / run)
        files = sorted((tmp_path / run).iterdir())
        digests.append({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files})
    assert digests[0] == digests[1]
    assert set(digests[0]) == {
        "assignments.csv",
        "clusters.csv",
        "gaps.csv",
        "gaps.geojson",
        "need_clusters.csv",
        "plan.geojson",
        "summary.json",
        "unmet.csv",
    }
    # another row order of the same needs changes only the input hash
    summaries = [json.loads((tmp_path / r / "summary.json").read_text()) for r in ("a", "c")]
    assert summaries[0]["input_hashes"]["needs"] != summaries[1]["input_hashes"]["needs"]
    for s in summaries:
        s.pop("input_hashes")
    assert summaries[0] == summaries[1]
    assert {k: v for k, v in digests[0].items() if k != "summary.json"} == {
        k: v for k, v in digests[2].items() if k != "summary.json"
    }


def test_outputs_follow_the_contract(tmp_path):
    needs, partners = _small_inputs()
    p = plan(needs, partners, neighborhoods=SAMPLE / "neighborhoods.geojson")
    p.to_dir(tmp_path)
    a = pd.read_csv(tmp_path / "assignments.csv", keep_default_na=False)
    assert list(a.columns[:5]) == ["cluster_id", "partner_id", "units", "distance_km", "cost"]
    assert (a["units"] > 0).all()
    c = pd.read_csv(tmp_path / "clusters.csv", keep_default_na=False)
    assert list(c.columns[:9]) == [
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
    assert set(c["unmet_reason"]) <= {"", "no_partner_in_range", "partners_in_range_full"}
    gj = json.loads((tmp_path / "plan.geojson").read_text())
    kinds = {f["properties"]["feature_type"] for f in gj["features"]}
    assert kinds == {"cluster", "partner", "assignment"}
    # volunteers are coarsened in the file; organizations are exact
    src = partners.set_index("partner_id")
    for f in gj["features"]:
        pr = f["properties"]
        if pr["feature_type"] == "partner":
            lon, lat = f["geometry"]["coordinates"]
            exact = (
                float(src.loc[pr["partner_id"], "lat"]),
                float(src.loc[pr["partner_id"], "lon"]),
            )
            assert pr["coarsened"] == (pr["kind"] == "volunteer")
            assert ((lat, lon) == pytest.approx(exact)) == (pr["kind"] == "organization")
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["status"] == "optimal" and s["input_hashes"]["needs"]
    m = s["metrics"]
    assert m["units"]["served"] + m["units"]["unmet"] == pytest.approx(m["units"]["demand"])
    assert m["equity"]["neighborhoods"] == len(m["coverage_by_neighborhood"]) > 0


def test_model_places_a_new_need_in_an_existing_cluster(tmp_path):
    needs, partners = _small_inputs()
    p = plan(needs, partners)
    manifest = p.save_model(tmp_path)
    info = json.loads(manifest.read_text())
    assert info["input_sha256"] == p.input_hashes["needs"] and "created" in info
    model = ClusterModel.load(manifest)
    # a need placed exactly at a dense member joins that member's cluster
    dense = p.clusters[p.clusters["n_needs"] >= 3].iloc[0]
    member = p.need_clusters[p.need_clusters["cluster_id"] == dense["cluster_id"]]["need_id"]
    row = p.needs.set_index("need_id").loc[member].iloc[0]
    got = model.assign(float(row["lat"]), float(row["lon"]), dense["category"])
    assert got == dense["cluster_id"]
    assert model.assign(0.5, 0.5, dense["category"]) is None


@pytest.mark.parametrize("script", sorted((ROOT / "examples").glob("*.py")), ids=lambda p: p.name)
def test_examples_run(script, tmp_path):
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def test_config_rejects_bad_values():
    from matcher import InputValidationError

    with pytest.raises(InputValidationError) as err:
        MatchConfig(objective="fastest", quantum=0, min_samples=0)
    fields = {p.field for p in err.value.problems}
    assert fields == {"objective", "quantum", "min_samples"}
