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
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from matcher import ClusterModel, MatchConfig, plan
from matcher.candidates import candidate_pairs
from matcher.capacity_graph import build_graph
from matcher.geo import EARTH_RADIUS_KM, haversine_km
from matcher.output import coarsen

from .oracle import RADIUS_RTOL, coarsen_grid, gc_km, gc_km_array, in_radius

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"


CANDIDATE_CENTRES = [(41.88, -87.63), (0.0, 179.99), (-33.9, 151.2), (89.95, 0.0), (-89.9, 45.0)]
CATS = ["a", "b", "c"]


def check_candidates(clusters: pd.DataFrame, partners: pd.DataFrame) -> None:
    """candidate_pairs against brute force with the oracle's own haversine and tolerance.

    A pair is eligible when the partner offers the category and the great-circle
    distance is within its radius (oracle.in_radius: d <= r * (1 + 1e-12)). A pair
    within 1e-14 r of that threshold, where two correct haversines may round apart, may
    go either way; a pair exactly at the radius is 1e-12 r inside it and must be in.
    """
    got = candidate_pairs(clusters, partners)
    got_pairs = set(zip(got["cluster"], got["partner"], strict=True))
    want, either = set(), set()
    for i, c in enumerate(clusters.itertuples(index=False)):
        for j, q in enumerate(partners.itertuples(index=False)):
            if c.category not in q.categories.split(";"):
                continue
            d = gc_km(q.lat, q.lon, c.centroid_lat, c.centroid_lon)
            if abs(d - q.radius_km * (1 + RADIUS_RTOL)) <= 1e-14 * q.radius_km:
                either.add((i, j))
            elif in_radius(d, q.radius_km):
                want.add((i, j))
    assert want <= got_pairs <= want | either
    # distances are reported for every pair, and are the great-circle ones
    for i, j, km in zip(got["cluster"], got["partner"], got["distance_km"], strict=True):
        c, q = clusters.iloc[i], partners.iloc[j]
        assert km == pytest.approx(gc_km(q.lat, q.lon, c.centroid_lat, c.centroid_lon), abs=1e-9)


@st.composite
def candidate_instances(draw):
    """Clusters and partners within ~10 km of a centre (poles and antimeridian included).

    A partner's radius is drawn, or put exactly at its distance to a drawn cluster (the
    edge case), and a partner may stand exactly on a cluster's centroid.
    """
    lat0, lon0 = draw(st.sampled_from(CANDIDATE_CENTRES))
    nc, npart = draw(st.integers(1, 40)), draw(st.integers(1, 15))

    def point():
        lat = min(90.0, max(-90.0, lat0 + draw(st.floats(-0.09, 0.09))))
        lon = ((lon0 + draw(st.floats(-0.15, 0.15)) + 180) % 360) - 180
        return lat, lon

    cl = [point() for _ in range(nc)]
    clusters = pd.DataFrame(
        {
            "category": draw(st.lists(st.sampled_from(CATS), min_size=nc, max_size=nc)),
            "centroid_lat": [p[0] for p in cl],
            "centroid_lon": [p[1] for p in cl],
        }
    )
    rows = []
    for _ in range(npart):
        lat, lon = cl[draw(st.integers(0, nc - 1))] if draw(st.integers(0, 5)) == 0 else point()
        cats = draw(st.lists(st.sampled_from(CATS), min_size=1, max_size=2, unique=True))
        if draw(st.booleans()):
            i = draw(st.integers(0, nc - 1))
            radius = gc_km(lat, lon, cl[i][0], cl[i][1])  # exactly at the radius
            assume(radius > 0)
        else:
            radius = draw(st.floats(0.2, 6.0))
        rows.append((";".join(sorted(cats)), lat, lon, radius))
    partners = pd.DataFrame(rows, columns=["categories", "lat", "lon", "radius_km"])
    return clusters, partners


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candidate_instances())
def test_candidates_equal_brute_force(inst):
    check_candidates(*inst)


def _seeded_instance(centre, seed):
    """The instances this test drew from a seed before it drew them with hypothesis."""
    rng = np.random.default_rng(seed)
    nc, npart = int(rng.integers(1, 40)), int(rng.integers(1, 15))
    cats = np.array(CATS)

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
    for j in range(npart):
        if rng.random() < 0.4:
            radius[j] = gc_km(plat[j], plon[j], clat[j % nc], clon[j % nc])
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
    return clusters, partners


def test_candidates_regression_radius_one_ulp_apart_by_code_path():
    # a radius exactly at the distance, which numpy computed one ulp apart by code path
    check_candidates(*_seeded_instance((-89.9, 45.0), 913884))


def test_haversine_matches_independent_formula_and_is_symmetric():
    rng = np.random.default_rng(0)
    a = rng.uniform([-90, -180], [90, 180], (200, 2))
    b = rng.uniform([-90, -180], [90, 180], (200, 2))
    d = haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    for i in range(200):
        assert abs(d[i] - gc_km(a[i, 0], a[i, 1], b[i, 0], b[i, 1])) < 1e-9
    np.testing.assert_allclose(d, haversine_km(b[:, 0], b[:, 1], a[:, 0], a[:, 1]))
    assert d.max() <= np.pi * EARTH_RADIUS_KM + 1e-9


def test_coarsened_points_are_the_documented_grid_points():
    rng = np.random.default_rng(1)
    lat = np.concatenate([rng.uniform(-80, 80, 500), [41.8812, 0.0001, -0.0001, 89.999]])
    lon = np.concatenate([rng.uniform(-180, 180, 500), [-87.6231, 0.0001, -179.9999, 10.0]])
    clat, clon = coarsen(lat, lon)
    want = np.array([coarsen_grid(a, b) for a, b in zip(lat, lon, strict=True)])
    np.testing.assert_allclose(clat, want[:, 0], atol=1.5e-6, rtol=0)
    np.testing.assert_allclose(clon, want[:, 1], atol=1.5e-6, rtol=0)
    # the grid point is the centre of the ~500 m cell holding the point
    mid = np.abs(lat) < 80
    d = gc_km_array(lat, lon, clat, clon)[mid]
    assert d.max() <= 0.5 * np.hypot(0.5, 0.5) * 1.001 and (d > 0).all()  # half a diagonal
    # every point of one cell has the same grid point; the next cell north has another
    step = 0.5 / (2 * np.pi * EARTH_RADIUS_KM / 360)
    cell_lat = (np.floor(41.8812 / step) + 0.5) * step
    inside = coarsen(np.array([cell_lat - 0.45 * step, cell_lat + 0.45 * step]), np.full(2, -87.6))
    assert inside[0][0] == inside[0][1] == pytest.approx(cell_lat, abs=1e-6)
    north = coarsen(np.array([cell_lat + 0.55 * step]), np.array([-87.6]))
    assert north[0][0] == pytest.approx(cell_lat + step, abs=1e-6)


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
            if pr["kind"] == "organization":
                assert (lat, lon) == pytest.approx(exact, abs=1e-6)
            else:  # the documented grid point, computed independently
                assert (lat, lon) == pytest.approx(coarsen_grid(*exact), abs=1.5e-6)
                assert (lat, lon) != pytest.approx(exact, abs=1e-6)
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


EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    """Every example script, started at once (they are independent: each in a directory of
    its own, output to files); each test waits for its own. Return script name -> run."""
    runs = {}
    for script in EXAMPLES:
        cwd = tmp_path_factory.mktemp(script.stem)
        with open(cwd / "stdout", "wb") as out, open(cwd / "stderr", "wb") as err:
            proc = subprocess.Popen([sys.executable, str(script)], cwd=cwd, stdout=out, stderr=err)
        runs[script.name] = (proc, cwd / "stderr")
    yield runs
    for proc, _ in runs.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_examples_run(script, example_runs):
    proc, stderr_path = example_runs[script.name]
    proc.wait(timeout=600)
    stderr = stderr_path.read_text(errors="replace")
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr


def test_config_rejects_bad_values():
    from matcher import InputValidationError

    with pytest.raises(InputValidationError) as err:
        MatchConfig(objective="fastest", quantum=0, min_samples=0)
    fields = {p.field for p in err.value.problems}
    assert fields == {"objective", "quantum", "min_samples"}


_LANGS = ["", "en", "es", "en;es", "pl", "es;pl", "zh;en"]


@settings(max_examples=60, deadline=None)
@given(
    need_langs=st.lists(st.sampled_from(_LANGS), min_size=1, max_size=30),
    partner_langs=st.lists(st.sampled_from(_LANGS), min_size=1, max_size=12),
    seed=st.integers(0, 2**16),
)
def test_language_mismatch_equals_a_per_pair_count(need_langs, partner_langs, seed):
    """Per-partner language sets give the per-pair sums of a direct count, exactly."""
    from matcher.costs import _language_mismatch

    rng = np.random.default_rng(seed)
    n_clusters = 4
    need_cluster = rng.integers(0, n_clusters, len(need_langs))
    needs = pd.DataFrame(
        {"languages": need_langs, "demand": rng.integers(1, 50, len(need_langs)).astype(float)}
    )
    n_pairs = 20
    pair_cluster = rng.integers(0, n_clusters, n_pairs)
    pair_partner = rng.integers(0, len(partner_langs), n_pairs)
    spoken = np.array(partner_langs, dtype=str)[pair_partner]
    got = _language_mismatch(
        needs, need_cluster, n_clusters, pair_cluster, np.array(partner_langs, dtype=str),
        pair_partner,
    )
    expected = np.zeros(n_pairs)
    for langset in sorted({v for v in need_langs if v}):  # same summation order
        for p in range(n_pairs):
            speaks = set(langset.split(";")) & (set(str(spoken[p]).split(";")) - {""})
            if not speaks:
                expected[p] += sum(
                    d
                    for d, lang, c in zip(needs["demand"], need_langs, need_cluster, strict=True)
                    if lang == langset and c == pair_cluster[p]
                )
    assert got.tolist() == expected.tolist()


def test_plan_needs_get_their_points_on_first_use() -> None:
    """A plan holds its needs without point objects; ``needs`` adds them, as read_needs does."""
    import geopandas as gpd

    from matcher import read_needs
    from matcher._validate import NEED_FIELDS

    needs, partners = _small_inputs()
    p = plan(needs, partners)
    assert "geometry" not in p.need_table.columns
    assert list(p.need_table.columns) == [*NEED_FIELDS, "cluster_id", "served"]
    got = p.needs
    assert isinstance(got, gpd.GeoDataFrame) and got.crs == "EPSG:4326"
    assert list(got.columns) == [*NEED_FIELDS, "geometry", "cluster_id", "served"]
    assert p.needs is got  # made once
    read = read_needs(needs).frame.sort_values("need_id").reset_index(drop=True)
    assert got.geometry.geom_equals_exact(read.geometry, 0).all()
    assert (got["lon"].to_numpy() == got.geometry.x.to_numpy()).all()
    plain = read_needs(needs, points=False).frame
    assert not isinstance(plain, gpd.GeoDataFrame)
    assert list(plain.columns) == list(NEED_FIELDS)
