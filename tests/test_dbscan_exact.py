"""matcher._dbscan against scikit-learn's DBSCAN, and the fast k-means against KMeans.

``cluster_needs`` used ``sklearn.cluster.DBSCAN(eps, min_samples, algorithm="kd_tree")``
and ``KMeans(n_clusters=k, n_init=1, random_state=seed)``; it now uses
``matcher._dbscan.dbscan`` and ``matcher.clustering._kmeans_labels``. Their results must
be the same, bit for bit: the same labels (cluster numbers included), the same core
points, the same k-means parts, so plans do not change. Points exactly ``eps`` apart
are included on purpose (integer coordinates, and ``eps`` taken as the computed
distance of a pair).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.cluster import DBSCAN, KMeans

from matcher import _dbscan, clustering
from matcher._dbscan import dbscan
from matcher.clustering import cluster_needs
from matcher.geo import chord_for_km, to_unit_vectors

from .test_clustering_oracle import cluster_inputs

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def reference(points: np.ndarray, eps: float, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's labels and core mask."""
    db = DBSCAN(eps=eps, min_samples=min_samples, algorithm="kd_tree").fit(points)
    core = np.zeros(len(points), dtype=bool)
    core[db.core_sample_indices_] = True
    return db.labels_, core


def assert_same(points: np.ndarray, eps: float, min_samples: int, *, note: bool = False) -> None:
    """Assert dbscan() gives sklearn's labels and core points (``note``: tell hypothesis's
    statistics whether the grid decided or deferred to sklearn)."""
    if note:
        try:
            _dbscan._grid_dbscan(np.asarray(points, dtype=float), eps, min_samples)
            event("grid")
        except _dbscan._Defer:
            event("deferred to sklearn")
    labels, core = dbscan(points, eps, min_samples)
    ref_labels, ref_core = reference(points, eps, min_samples)
    assert labels.tolist() == ref_labels.tolist()
    assert core.tolist() == ref_core.tolist()


def sq_dist(a: np.ndarray, b: np.ndarray) -> float:
    """scikit-learn's leaf arithmetic: squares of differences summed in coordinate order."""
    s = 0.0
    for u, v in zip(a.tolist(), b.tolist(), strict=True):
        s += (u - v) * (u - v)
    return s


@st.composite
def point_sets(draw: st.DrawFn) -> tuple[np.ndarray, float, int]:
    """Points in 1-4 dimensions: on a coarse grid (duplicates, ties at exactly eps) or
    floats, with eps on the grid spacing or anywhere, and any min_samples."""
    n = draw(st.integers(1, 60))
    d = draw(st.sampled_from([1, 2, 3, 4]))
    if draw(st.booleans()):
        points = draw(arrays(np.int64, (n, d), elements=st.integers(0, 6))).astype(float)
        eps = draw(st.sampled_from([1.0, 2.0, math.sqrt(2.0), math.sqrt(5.0), 1.5, 0.5]))
    else:
        points = draw(arrays(np.float64, (n, d), elements=st.floats(-3.0, 3.0, width=64)))
        eps = draw(st.floats(0.05, 3.0))
    return points, eps, draw(st.integers(1, 6))


@SETTINGS
@given(point_sets())
def test_dbscan_is_sklearns(inst: tuple[np.ndarray, float, int]) -> None:
    assert_same(*inst, note=True)


@SETTINGS
@given(point_sets())
def test_grid_path_is_sklearns_without_deferring(inst: tuple[np.ndarray, float, int]) -> None:
    """The grid algorithm itself (no hand-over to scikit-learn) when it decides."""
    points, eps, min_samples = inst
    try:
        labels, core = _dbscan._grid_dbscan(points, eps, min_samples)
    except _dbscan._Defer:
        assume(False)
    ref_labels, ref_core = reference(points, eps, min_samples)
    assert labels.tolist() == ref_labels.tolist()
    assert core.tolist() == ref_core.tolist()


@st.composite
def needs_vectors(draw: st.DrawFn) -> tuple[np.ndarray, float, int]:
    """Unit vectors of points a few km apart (3-D, or 4-D with a neighbourhood code),
    eps the chord of cluster_km (as cluster_needs), some pairs exactly at a chord."""
    n = draw(st.integers(2, 80))
    lat0 = draw(st.sampled_from([41.88, -17.8, 89.99, 0.001]))
    lon0 = draw(st.sampled_from([-87.63, 179.995, 30.0, 0.002]))
    offsets = draw(arrays(np.float64, (n, 2), elements=st.floats(-0.02, 0.02)))
    xyz = to_unit_vectors(lat0 + offsets[:, 0], lon0 + offsets[:, 1])
    how = draw(st.sampled_from(["config", "pair", "pair-sqrt"]))
    if how == "config":
        eps = float(chord_for_km(draw(st.sampled_from([0.3, 0.5, 1.0])))) * (1.0 + 1e-10)
    else:
        # eps exactly the computed distance of a pair: the pair sits on the boundary
        i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        eps = math.sqrt(sq_dist(xyz[i], xyz[j]))
        if how == "pair-sqrt":
            eps = float(np.linalg.norm(xyz[i] - xyz[j]))
        assume(eps > 0)
    points = xyz
    if draw(st.booleans()):
        codes = draw(arrays(np.int64, n, elements=st.integers(0, 2)))
        points = np.column_stack([xyz, 10.0 * codes])
    return points, eps, draw(st.integers(1, 5))


@SETTINGS
@given(needs_vectors())
def test_dbscan_on_unit_vectors_is_sklearns(inst: tuple[np.ndarray, float, int]) -> None:
    assert_same(*inst, note=True)


def test_pairs_exactly_eps_apart() -> None:
    # 3-4-5 triangles: squared distance 25.0 == eps * eps exactly
    points = np.array([[0.0, 0, 0], [3, 4, 0], [6, 8, 0], [3, 4, 12], [0, 0, 5]])
    for min_samples in (1, 2, 3, 4):
        assert_same(points, 5.0, min_samples)
        assert_same(points, 5.0 * (1 - 1e-9), min_samples)
        assert_same(points, 5.0 * (1 + 1e-9), min_samples)


def test_eps_the_computed_distance_of_a_pair() -> None:
    rng = np.random.default_rng(7)
    for _ in range(50):
        xyz = to_unit_vectors(
            41.88 + rng.uniform(-0.01, 0.01, 6), -87.63 + rng.uniform(-0.01, 0.01, 6)
        )
        eps = math.sqrt(sq_dist(xyz[0], xyz[1]))
        for min_samples in (2, 3):
            assert_same(xyz, eps, min_samples)


def test_sklearn_at_exactly_eps_is_not_a_pairwise_rule() -> None:
    """Two points with eps their computed distance: the leaf test ``s <= eps * eps``
    often says no (``eps * eps`` rounds below ``s``), yet scikit-learn's tree adds the
    whole node (its bound ``sqrt(s) <= eps`` holds). dbscan() must agree anyway."""
    rng = np.random.default_rng(3)
    leaf_says_no = 0
    for _ in range(60):
        x = rng.normal(size=(2, 3))
        eps = math.sqrt(sq_dist(x[0], x[1]))
        leaf_says_no += sq_dist(x[0], x[1]) > eps * eps
        assert_same(x, eps, 2)
    assert leaf_says_no > 0


@pytest.mark.parametrize("order", ["a-first", "b-first", "border-first"])
@pytest.mark.parametrize("gap", [2.0, 2.0 * (1 + 1e-9), 1.9])
def test_border_point_equidistant_to_two_clusters(order: str, gap: float) -> None:
    """A border point at eps (or just inside) from two clusters joins the one with the
    lowest-index core point, as scikit-learn expands that cluster first."""
    a = np.array([[-2.0, 0, 0], [-2.25, 0, 0], [-2.5, 0, 0], [-2.75, 0, 0], [-3.0, 0, 0]])
    b = -a
    border = np.array([[0.0, 0, 0]])
    parts = {"a-first": [a, border, b], "b-first": [b, a, border], "border-first": [border, b, a]}
    points = np.vstack(parts[order])
    assert_same(points, gap, 4)
    labels, core = dbscan(points, 2.0, 4)
    if order != "border-first":
        assert labels[np.flatnonzero((points == 0).all(axis=1))[0]] == 0


def test_all_noise_one_point_and_empty() -> None:
    points = np.array([[0.0, 0, 0], [5, 0, 0], [0, 5, 0]])
    assert_same(points, 1.0, 2)  # all noise
    assert dbscan(points, 1.0, 2)[0].tolist() == [-1, -1, -1]
    assert_same(points[:1], 1.0, 1)  # a single core point
    assert_same(points[:1], 1.0, 2)  # a single noise point
    labels, core = dbscan(np.empty((0, 3)), 1.0, 3)
    assert labels.shape == (0,) and core.shape == (0,)
    assert_same(np.zeros((7, 3)), 1.0, 7)  # duplicates only: all core
    assert_same(np.zeros((7, 3)), 1.0, 8)


def test_coordinates_too_far_apart_for_the_grid_defer_to_sklearn() -> None:
    points = np.array([[0.0, 0.0], [1e-3, 0.0], [2e-3, 0.0], [1e12, 0.0], [1e12, 1e-3]])
    with pytest.raises(_dbscan._Defer):
        _dbscan._grid_dbscan(points, 1.5e-3, 2)
    assert_same(points, 1.5e-3, 2)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="eps"):
        dbscan(np.zeros((2, 3)), 0.0, 2)
    with pytest.raises(ValueError, match="min_samples"):
        dbscan(np.zeros((2, 3)), 1.0, 0)
    with pytest.raises(ValueError, match="finite"):
        dbscan(np.array([[np.nan, 0.0]]), 1.0, 1)
    with pytest.raises(ValueError, match="2-D"):
        dbscan(np.zeros(3), 1.0, 1)


# ---------------------------------------------------------------------- k-means


@st.composite
def kmeans_inputs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int]:
    # offsets on a 1e-5 degree grid: distinct points at least ~1 m apart, as needs are
    # (points 1e-300 degrees apart are distinct rows that k-means cannot tell apart
    # once centred, and both KMeans and the fast path warn then)
    n = draw(st.integers(2, 120))
    step = draw(st.sampled_from([1e-5, 1e-3]))  # 1e-3: many duplicates
    offsets = draw(arrays(np.int64, (n, 2), elements=st.integers(-50, 50))) * step
    sub = to_unit_vectors(41.88 + offsets[:, 0], -87.63 + offsets[:, 1])
    weights = np.array(draw(st.lists(st.integers(1, 90), min_size=n, max_size=n))) / 10
    distinct = clustering._distinct_rows(sub)
    assume(distinct >= 2)
    k = draw(st.integers(2, min(8, distinct)))
    return sub, weights, k, draw(st.integers(0, 5))


@SETTINGS
@given(kmeans_inputs())
def test_fast_kmeans_is_kmeans(inst: tuple[np.ndarray, np.ndarray, int, int]) -> None:
    sub, weights, k, seed = inst
    fast = clustering._kmeans_labels(sub, weights, k, seed)
    public = clustering._kmeans_labels_public(sub, weights, k, seed)
    plain = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(sub, sample_weight=weights)
    assert fast.tolist() == public.tolist() == plain.labels_.tolist()


@given(
    arrays(
        np.float64,
        st.tuples(st.integers(0, 40), st.just(3)),
        elements=st.sampled_from([-0.0, 0.0, 0.5, 1.0]),
    )
)
def test_distinct_rows_is_unique_rows(sub: np.ndarray) -> None:
    assert clustering._distinct_rows(sub) == len(np.unique(sub, axis=0))


# --------------------------------------------------------------- cluster_needs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_inputs())
@example(
    (
        pd.DataFrame(
            {
                "need_id": [f"n{i}" for i in range(6)],
                "category": "food_access",
                "lat": [41.88, 41.881, 41.882, 41.883, 41.9, 41.95],
                "lon": -87.63,
                "demand": 1.0,
                "severity": 3,
                "neighborhood": ["A", "A", "B", "B", "A", "B"],
            }
        ),
        clustering.MatchConfig(cluster_km=0.2, min_samples=2, max_cluster_radius_km=0.1),
        True,
    )
)
def test_cluster_needs_unchanged(inst: tuple[pd.DataFrame, clustering.MatchConfig, bool]) -> None:
    """cluster_needs equals the same function run on sklearn's DBSCAN and KMeans."""
    needs, config, by_hood = inst
    new = cluster_needs(needs, config, by_neighborhood=by_hood)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_dbscan, "dbscan", _dbscan._sklearn_dbscan)
        mp.setattr(clustering, "_kmeans_labels", clustering._kmeans_labels_public)
        old = cluster_needs(needs, config, by_neighborhood=by_hood)
    pd.testing.assert_frame_equal(new.clusters, old.clusters, check_exact=True)
    pd.testing.assert_series_equal(new.need_cluster, old.need_cluster, check_exact=True)
    assert new.core.tolist() == old.core.tolist()
