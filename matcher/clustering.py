"""Per-category density clustering of needs on great-circle distances, and its saved model."""

from __future__ import annotations

import importlib
import io
import json
import logging
import math
import os
import signal
import sys
import warnings
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
import pandas as pd

from ._errors import InputValidationError, Problem
from ._processes import single_threaded
from .config import MatchConfig
from .geo import chord_for_km, from_unit_vectors, haversine_km, to_unit_vectors

__all__ = [
    "Clustering",
    "ClusterModel",
    "Splitter",
    "SplitHelper",
    "cluster_id_strings",
    "cluster_needs",
]

#: Relative tolerance of "within ``cluster_km``" (DBSCAN's eps and placing a new need):
#: 1e-10 of 0.5 km is 50 nanometres, far below any real distance and far above the
#: rounding of the chord and haversine formulas, so both rules agree.
EPS_RTOL = 1e-10

logger = logging.getLogger(__name__)

MODEL_FORMAT = "matcher.cluster-model/1"


@dataclass(frozen=True)
class Clustering:
    """Need clusters of one planning run.

    Attributes
    ----------
    clusters : pandas.DataFrame
        One row per cluster, sorted by ``cluster_id``: ``cluster_id, category,
        neighborhood`` (the one holding most of its demand), ``n_needs, demand,
        severity, centroid_lat, centroid_lon, radius_km``.
    need_cluster : pandas.Series
        ``cluster_id`` per need, indexed like the needs table.
    core : numpy.ndarray of bool
        Per need, whether it is a density core point (used to place new needs).
    """

    clusters: pd.DataFrame
    need_cluster: pd.Series
    core: npt.NDArray[np.bool_]


def cluster_id_strings(categories: npt.ArrayLike, ranks: npt.ArrayLike) -> npt.NDArray[np.object_]:
    """Cluster ids ``{category}-{rank:06d}`` (the rank within the category, from 0).

    Examples
    --------
    >>> cluster_id_strings(["food_access", "education"], [3, 12]).tolist()
    ['food_access-000003', 'education-000012']
    """
    if isinstance(categories, str):  # one category for all (the hot path of cluster_needs)
        return np.array([f"{categories}-{r:06d}" for r in np.asarray(ranks).tolist()], dtype=object)
    cats = np.asarray(categories, dtype=object).tolist()
    return np.array(
        [f"{c}-{r:06d}" for c, r in zip(cats, np.asarray(ranks).tolist(), strict=True)],
        dtype=object,
    )


def _group_radius_km(
    xyz: npt.NDArray[np.float64], w: npt.NDArray[np.float64], groups: npt.NDArray[np.int64]
) -> npt.NDArray[np.float64]:
    """Largest member distance to the demand-weighted centroid of each group label."""
    n = int(groups.max()) + 1
    acc = np.zeros((n, 3))
    np.add.at(acc, groups, xyz * w[:, None])
    clat, clon = from_unit_vectors(acc)
    vlat, vlon = from_unit_vectors(xyz)
    radius = np.zeros(n)
    np.maximum.at(radius, groups, haversine_km(clat[groups], clon[groups], vlat, vlon))
    return radius


def _distinct_rows(sub: npt.NDArray[np.float64]) -> int:
    """Count distinct rows, as ``len(np.unique(sub, axis=0))`` (float equality)."""
    if sub.shape[0] < 2:
        return int(sub.shape[0])
    order = np.lexsort(sub.T[::-1])
    ordered = sub[order]
    return 1 + int(np.count_nonzero((ordered[1:] != ordered[:-1]).any(axis=1)))


def _kmeans_labels(
    sub: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], k: int, seed: int
) -> npt.NDArray[np.int32]:
    """Labels of ``KMeans(n_clusters=k, n_init=1, random_state=seed).fit(sub, weights)``.

    Runs the steps of scikit-learn's ``KMeans.fit`` (lloyd, k-means++ init, one
    init) by calling the same internal routines with the same arguments, without
    its per-call parameter validation, input checks and thread-pool handling: the
    data copied, tolerance ``mean(var(X)) * 1e-4``, the mean subtracted, the
    squared row norms, k-means++ from ``RandomState(seed)``, then lloyd with one
    OpenMP thread (what ``fit`` used under ``threadpool_limits(1, "openmp")``).
    Falls back to ``KMeans`` itself when those routines are not there.
    ``tests/test_dbscan_exact.py`` checks that both give the same labels.
    """
    try:
        from sklearn.cluster._kmeans import (
            _kmeans_plusplus,
            _kmeans_single_lloyd,
            _tolerance,
        )
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.utils.extmath import row_norms
    except ImportError:  # pragma: no cover - another scikit-learn layout
        return _kmeans_labels_public(sub, weights, k, seed)
    x = np.array(sub, dtype=np.float64, order="C", copy=True)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    tol = _tolerance(x, 1e-4)
    random_state = np.random.RandomState(seed)
    x -= x.mean(axis=0)
    x_squared_norms = row_norms(x, squared=True)
    centers, _ = _kmeans_plusplus(
        x, k, random_state=random_state, x_squared_norms=x_squared_norms, sample_weight=w
    )
    labels, _, _, _ = _kmeans_single_lloyd(
        x, w, centers, max_iter=300, verbose=False, tol=tol, n_threads=1
    )
    distinct = len(set(labels))
    if distinct < k:  # pragma: no cover - as KMeans.fit warns
        warnings.warn(
            f"Number of distinct clusters ({distinct}) found smaller than n_clusters ({k}). "
            "Possibly due to duplicate points in X.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return np.asarray(labels)


def _kmeans_labels_public(
    sub: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], k: int, seed: int
) -> npt.NDArray[np.int32]:
    """Run the reference of :func:`_kmeans_labels`, scikit-learn's ``KMeans`` itself.

    Single-threaded OpenMP: many small fits, where threads cost more than they give.
    """
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="openmp"):
        km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(sub, sample_weight=weights)
    return np.asarray(km.labels_)


#: The niceness a helper process adds to its own (while both want a core, the planning
#: process goes first: a helper never slows the reading it runs beside).
SPLIT_HELPER_NICE = 10


#: The module whose import :class:`SplitHelper` takes off the planning process.
KMEANS_MODULE = "sklearn.cluster._kmeans"


def _import_kmeans() -> None:
    """Set up a helper process.

    A lower priority; Ctrl-C left to the planning process (which stops its helpers);
    what :func:`_kmeans_labels` uses imported.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(SPLIT_HELPER_NICE)
    except OSError:  # pragma: no cover - a platform without nice
        pass
    try:
        importlib.import_module(KMEANS_MODULE)
    except ImportError:  # pragma: no cover - _kmeans_labels falls back to KMeans
        pass


class Pending(Protocol):
    """Labels being computed: ``result()`` waits for them."""

    def result(self) -> npt.NDArray[np.int64]:
        """Wait for the labels and return them."""
        ...  # pragma: no cover - a protocol


class Splitter(Protocol):
    """Where :func:`cluster_needs` may split oversize groups.

    A :class:`SplitHelper` or a plan's Dask executor: ``submit(fn, *args)`` runs
    ``fn(*args)`` elsewhere.
    """

    def submit(self, fn: Callable[..., npt.NDArray[np.int64]], /, *args: Any) -> Pending:
        """Start ``fn(*args)``; return its pending result."""
        ...  # pragma: no cover - a protocol


@dataclass(frozen=True)
class _Done:
    labels: npt.NDArray[np.int64]

    def result(self) -> npt.NDArray[np.int64]:
        return self.labels


@dataclass(frozen=True)
class _InHelper:
    future: Future[npt.NDArray[np.int64]]
    fn: Callable[..., npt.NDArray[np.int64]]
    args: tuple[Any, ...]

    def result(self) -> npt.NDArray[np.int64]:
        try:
            return self.future.result()
        except BrokenProcessPool:  # pragma: no cover - the helper process died
            logger.warning("the clustering helper process stopped: splitting here")
            return self.fn(*self.args)


class SplitHelper:
    """Worker processes that split oversize groups while this process goes on.

    Importing scikit-learn's k-means takes about 1.3 s, a fifth of a 100k-need plan.
    Started before the inputs are read, the helper pays it on another core; then
    :func:`cluster_needs` hands it each category's splitting and runs DBSCAN on the
    next category meanwhile. The helper runs :func:`_split_oversize` itself on the same
    arrays, so the labels are those of the same call in this process; if the helper
    process dies, the split is done here.

    Use it as a context manager, or call :meth:`close`.

    Parameters
    ----------
    processes : int
        Helper processes (see :meth:`processes_for`).
    """

    def __init__(self, processes: int = 1) -> None:
        self._pool = ProcessPoolExecutor(max_workers=processes, initializer=_import_kmeans)
        try:
            self._pool.submit(int)  # start the processes (and their import) now
        except OSError:  # a process could not start (memory, process limits)
            # those that did start wait for work no manager thread will send: stop them
            for process in list((getattr(self._pool, "_processes", None) or {}).values()):
                process.terminate()
            self._pool.shutdown(wait=False, cancel_futures=True)
            raise
        logger.info(
            "clustering helper process started (k-means is imported there)"
            if processes == 1
            else f"{processes} clustering helper processes started (k-means is imported there)"
        )

    @classmethod
    def start(cls, n_needs: int) -> SplitHelper | None:
        """Helpers for a plan of about ``n_needs`` needs, or None (see :meth:`processes_for`).

        None too when no process can start: the plan then splits in its own process.
        """
        processes = cls.processes_for(n_needs)
        if not processes:
            return None
        try:
            return cls(processes)
        except OSError as exc:
            logger.warning("no clustering helper process (%s): splitting here", exc)
            return None

    def submit(self, fn: Callable[..., npt.NDArray[np.int64]], /, *args: Any) -> Pending:
        """Start ``fn(*args)`` in a helper process; return its pending result."""
        try:
            return _InHelper(self._pool.submit(fn, *args), fn, args)
        except RuntimeError as exc:  # the helper is gone or shut down (BrokenProcessPool)
            logger.warning("the clustering helper process stopped (%s): splitting here", exc)
            return _Done(fn(*args))

    def close(self) -> None:
        """Stop the helper process (without waiting for it)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> SplitHelper:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def processes_for(n_needs: int) -> int:
        """How many helper processes a plan of about ``n_needs`` needs gains from.

        0 below :data:`SPLIT_HELPER_MIN_NEEDS` (a plan finishes before a helper's
        import), when k-means is imported here already (nothing to take off this
        process), and when this process runs other threads (see
        :func:`matcher._processes.single_threaded`). 2 from
        :data:`SPLIT_HELPER_TWO_MIN_NEEDS` on a machine of several cores, where
        splitting takes longer than this process's DBSCAN (a second helper's import
        slows the reading of smaller plans more than it gains); else 1.
        """
        if (
            n_needs < SPLIT_HELPER_MIN_NEEDS
            or KMEANS_MODULE in sys.modules
            or not single_threaded()
        ):
            return 0
        return 2 if n_needs >= SPLIT_HELPER_TWO_MIN_NEEDS and (os.cpu_count() or 1) > 1 else 1


#: Plans of at least this many needs split oversize groups in a :class:`SplitHelper`
#: (measured: 30% faster clustering from 25k needs on two cores).
SPLIT_HELPER_MIN_NEEDS = 25_000

#: Plans of at least this many needs use two helper processes.
SPLIT_HELPER_TWO_MIN_NEEDS = 250_000


def _split_oversize(
    xyz: npt.NDArray[np.float64],
    w: npt.NDArray[np.float64],
    groups: npt.NDArray[np.int64],
    max_radius_km: float,
    seed: int,
) -> npt.NDArray[np.int64]:
    """Split every group whose members lie farther than ``max_radius_km`` from its centroid.

    Oversize groups are split by k-means (k from the area ratio, at most 8) until
    every part fits.
    """
    groups = groups.copy()
    if groups.size == 0:
        return groups
    radius = _group_radius_km(xyz, w, groups)
    order = np.argsort(groups, kind="stable")
    bounds = np.searchsorted(groups[order], np.arange(radius.size + 1))
    pending = [order[bounds[g] : bounds[g + 1]] for g in np.flatnonzero(radius > max_radius_km)]
    next_label = radius.size
    while pending:
        idx = pending.pop()
        sub = xyz[idx]
        vlat, vlon = from_unit_vectors(sub)
        clat, clon = from_unit_vectors((sub * w[idx, None]).sum(axis=0))
        far = float(haversine_km(clat[0], clon[0], vlat, vlon).max())
        if far <= max_radius_km or idx.size < 2:
            continue
        # at most 8 parts per split: parts that are still too wide are split again, so
        # a very large group costs O(n log k) rather than k-means with a huge k
        k = min(_distinct_rows(sub), 8, max(2, math.ceil((far / max_radius_km) ** 2)))
        parts = _kmeans_labels(sub, w[idx], k, seed)
        if (parts == parts[0]).all():  # pragma: no cover - k-means found one part only
            continue
        for part in range(1, k):
            members = idx[parts == part]
            if members.size:
                groups[members] = next_label
                next_label += 1
                pending.append(members)
        pending.append(idx[parts == 0])
    return groups


def cluster_needs(
    needs: pd.DataFrame,
    config: MatchConfig,
    *,
    by_neighborhood: bool | None = None,
    helper: Splitter | None = None,
) -> Clustering:
    """Cluster needs per category by density on the sphere.

    Parameters
    ----------
    needs : pandas.DataFrame
        Validated needs with ``need_id, category, lat, lon, demand, severity`` (and
        ``neighborhood``).
    config : MatchConfig
        ``cluster_km`` (DBSCAN ``eps``), ``min_samples``, ``max_cluster_radius_km``
        and ``seed`` are used.
    by_neighborhood : bool, optional
        Cluster per category *and* neighborhood, so that no cluster crosses a
        neighborhood boundary; default ``config.by_neighborhood`` (on with any
        neighborhood equity option).
    helper : Splitter, optional
        Split oversize groups there (a :class:`SplitHelper`, a Dask executor), one
        category while the next is clustered here (the same labels as without).

    Returns
    -------
    Clustering

    Notes
    -----
    DBSCAN (``matcher._dbscan``: the labels and core points of scikit-learn's kd-tree
    DBSCAN, found on a grid) runs on 3-D unit vectors with the chord length equivalent to
    ``cluster_km``: the chord is monotonic in the great-circle distance, so the
    neighbourhoods are exactly the great-circle ones, anywhere on Earth. Needs that
    DBSCAN calls noise become clusters of one. Clusters wider than
    ``max_cluster_radius_km`` are split by k-means seeded with ``seed``. Needs are
    processed in ``need_id`` order and clusters are numbered by their smallest
    ``need_id``, so ids do not depend on row order.
    """
    from ._dbscan import dbscan  # scipy's k-d tree and graphs, only when clustering

    if by_neighborhood is None:
        by_neighborhood = config.by_neighborhood
    order = np.argsort(needs["need_id"].to_numpy().astype(str), kind="stable")
    sorted_needs = needs.iloc[order]
    xyz_all = to_unit_vectors(sorted_needs["lat"], sorted_needs["lon"])
    ids = np.empty(len(needs), dtype=object)
    core = np.zeros(len(needs), dtype=bool)
    # distance <= cluster_km up to rounding: the chord of a pair exactly cluster_km apart
    # can come out a few ulps above the chord of cluster_km (see EPS_RTOL)
    eps = float(chord_for_km(config.cluster_km)) * (1.0 + EPS_RTOL)
    cats = sorted_needs["category"].to_numpy()
    hoods = (
        sorted_needs["neighborhood"].to_numpy().astype(str)
        if by_neighborhood
        else np.zeros(len(sorted_needs), dtype=str)
    )
    # per category: its positions, core points and (pending) split labels
    per_category: list[tuple[Any, npt.NDArray[np.int64], npt.NDArray[np.bool_], Pending]] = []
    for category in sorted(set(cats)):
        pos = np.flatnonzero(cats == category)
        xyz = xyz_all[pos]
        points = xyz
        if by_neighborhood:
            # a 4th coordinate 10 apart per neighborhood (unit vectors are at most 2
            # apart): no two needs of different neighborhoods are ever neighbours, and
            # distances within one are exactly the 3-D ones (the added term is 0)
            codes = np.unique(hoods[pos], return_inverse=True)[1]
            points = np.column_stack([xyz, 10.0 * codes])
        # labels and core points of sklearn's DBSCAN(eps, min_samples, algorithm="kd_tree")
        labels, core_mask = dbscan(points, eps, config.min_samples)
        noise = labels < 0
        labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
        weights = sorted_needs["demand"].to_numpy(dtype=np.float64)[pos]
        # many small k-means fits, each single-threaded (see _kmeans_labels)
        split = (xyz, weights, labels, config.max_cluster_radius_km, config.seed)
        split_labels = (
            _Done(_split_oversize(*split))
            if helper is None
            else helper.submit(_split_oversize, *split)
        )
        per_category.append((category, pos, core_mask, split_labels))
    for category, pos, core_mask, pending in per_category:
        labels = pending.result()
        # renumber groups by first appearance (= smallest need_id) for stable ids
        _, first = np.unique(labels, return_index=True)
        rank = np.empty(labels.max() + 1, dtype=np.int64)
        rank[labels[np.sort(first)]] = np.arange(first.size)
        # each id made once per cluster, not once per need
        ids[pos] = cluster_id_strings(str(category), np.arange(first.size))[rank[labels]]
        core[pos] = core_mask
        logger.debug("category %s: %d needs in %d clusters", category, pos.size, first.size)
    need_cluster = pd.Series(ids, index=sorted_needs.index, name="cluster_id").reindex(needs.index)
    core_series = pd.Series(core, index=sorted_needs.index).reindex(needs.index).to_numpy()
    clusters = _summarise(needs, need_cluster)
    return Clustering(clusters, need_cluster, core_series)


def _summarise(needs: pd.DataFrame, need_cluster: pd.Series) -> pd.DataFrame:
    """Per-cluster totals, demand-weighted severity and spherical centroid."""
    codes, uniques = pd.factorize(need_cluster, sort=True)
    n = len(uniques)
    w = needs["demand"].to_numpy(dtype=np.float64)
    xyz = to_unit_vectors(needs["lat"], needs["lon"]) * w[:, None]
    acc = np.zeros((n, 3))
    np.add.at(acc, codes, xyz)
    demand = np.bincount(codes, weights=w, minlength=n)
    sev = np.bincount(codes, weights=w * needs["severity"].to_numpy(dtype=np.float64), minlength=n)
    count = np.bincount(codes, minlength=n)
    # a cluster whose weighted vectors cancel (antipodal members) falls back to its first member
    zero = ~np.any(acc, axis=1)
    if zero.any():
        first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
        acc[zero] = to_unit_vectors(
            needs["lat"].to_numpy()[first[zero]], needs["lon"].to_numpy()[first[zero]]
        )
    clat, clon = from_unit_vectors(acc)
    member_d = haversine_km(
        clat[codes], clon[codes], needs["lat"].to_numpy(), needs["lon"].to_numpy()
    )
    radius = np.zeros(n)
    np.maximum.at(radius, codes, member_d)
    category = pd.Series(needs["category"].to_numpy()).groupby(codes).first().to_numpy()
    if "neighborhood" in needs:
        by_hood = (
            pd.DataFrame({"c": codes, "h": needs["neighborhood"].astype(str).to_numpy(), "w": w})
            .groupby(["c", "h"], sort=True)["w"]
            .sum()
            .reset_index()
            .sort_values(["c", "w"], ascending=[True, False], kind="stable")
        )
        hood = by_hood.drop_duplicates("c")["h"].to_numpy().astype(object)
    else:
        hood = np.full(n, "", dtype=object)
    return pd.DataFrame(
        {
            "cluster_id": np.asarray(uniques, dtype=object),
            "category": category,
            "neighborhood": hood,
            "n_needs": count,
            "demand": demand,
            "severity": sev / demand,
            "centroid_lat": clat,
            "centroid_lon": clon,
            "radius_km": radius,
        }
    )


#: A model's text columns: an array of str, or the same as a pandas Categorical (a fitted
#: model keeps its labels so: at 10M needs the arrays of str would take about 1.6 GB).
Labels: TypeAlias = "npt.NDArray[np.str_] | pd.Categorical"


def _labels(values: pd.Series, keep: npt.NDArray[np.bool_]) -> pd.Categorical:
    """Return the kept values of a text column as a Categorical (codes and each label once)."""
    return pd.Categorical(values)[keep]


def _texts(labels: Labels) -> npt.NDArray[np.str_]:
    """Return labels as the array of str a saved model holds (no pickle)."""
    return np.asarray(labels).astype(str)


@dataclass(frozen=True)
class ClusterModel:
    """A fitted clustering that places a new need in an existing cluster.

    A new need joins the cluster of the nearest core need of its category within
    ``cluster_km`` (DBSCAN's rule for a new point); otherwise it would form a new
    cluster of its own, and :meth:`assign` returns None.
    """

    cluster_km: float
    lat: npt.NDArray[np.float64]
    lon: npt.NDArray[np.float64]
    category: Labels
    cluster_id: Labels
    manifest: dict[str, Any]
    neighborhood: Labels | None = None

    @classmethod
    def from_clustering(
        cls,
        needs: pd.DataFrame,
        clustering: Clustering,
        config: MatchConfig,
        input_hash: str,
        *,
        by_neighborhood: bool | None = None,
    ) -> ClusterModel:
        """Keep the core needs of a clustering with a manifest describing it.

        ``by_neighborhood`` says whether it clustered within neighborhoods (default
        ``config.by_neighborhood``).
        """
        if by_neighborhood is None:
            by_neighborhood = config.by_neighborhood
        core = clustering.core
        manifest = {
            "format": MODEL_FORMAT,
            "parameters": {
                "cluster_km": config.cluster_km,
                "min_samples": config.min_samples,
                "max_cluster_radius_km": config.max_cluster_radius_km,
                "seed": config.seed,
                "by_neighborhood": by_neighborhood,
            },
            "input_sha256": input_hash,
            "n_needs": int(len(needs)),
            "n_clusters": int(len(clustering.clusters)),
        }
        return cls(
            config.cluster_km,
            needs["lat"].to_numpy(dtype=np.float64)[core],
            needs["lon"].to_numpy(dtype=np.float64)[core],
            _labels(needs["category"], core),
            _labels(clustering.need_cluster, core),
            manifest,
            _labels(needs["neighborhood"], core) if by_neighborhood else None,
        )

    def assign(
        self, lat: float, lon: float, category: str, neighborhood: str | None = None
    ) -> str | None:
        """Return the cluster id a new need at (lat, lon) of ``category`` joins, or None.

        A model fitted within neighborhoods only joins a cluster of the need's
        ``neighborhood`` when it is given.

        Examples
        --------
        >>> m = ClusterModel(0.5, np.array([41.0]), np.array([-87.0]), np.array(["food_access"]),
        ...                  np.array(["food_access-000000"]), {})
        >>> m.assign(41.001, -87.0, "food_access")
        'food_access-000000'
        >>> m.assign(41.1, -87.0, "food_access") is None
        True
        """
        mask = self.category == category
        if self.neighborhood is not None and neighborhood is not None:
            mask &= self.neighborhood == str(neighborhood)
        sel = np.flatnonzero(mask)
        if sel.size == 0:
            return None
        d = haversine_km(lat, lon, self.lat[sel], self.lon[sel])
        best = int(np.argmin(d))
        within_eps = d[best] <= self.cluster_km * (1.0 + EPS_RTOL)
        return str(self.cluster_id[sel][best]) if within_eps else None

    def to_files(self, name: str) -> dict[str, bytes]:
        """Return ``{name.json: manifest, name.npz: arrays}`` (no pickle) as bytes."""
        # typed Any: unpacked into **kwds, whose keys numpy cannot tell from allow_pickle
        extra: dict[str, Any] = (
            {} if self.neighborhood is None else {"neighborhood": self.neighborhood}
        )
        if extra:
            extra["neighborhood"] = _texts(extra["neighborhood"])
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            lat=self.lat,
            lon=self.lon,
            category=_texts(self.category),
            cluster_id=_texts(self.cluster_id),
            **extra,
        )
        manifest = dict(
            self.manifest,
            arrays=f"{name}.npz",
            created=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
        return {f"{name}.json": text.encode("utf-8"), f"{name}.npz": buffer.getvalue()}

    def save(
        self, directory: str | Path, name: str, files: dict[str, bytes] | None = None
    ) -> Path:
        """Write ``name.npz`` (arrays, no pickle) and ``name.json`` (manifest) to ``directory``.

        Each file is written under a temporary name and then renamed, the manifest last.

        Parameters
        ----------
        directory : str or Path
            Where to write (created if missing).
        name : str
            The files' stem.
        files : dict of str to bytes, optional
            ``self.to_files(name)``, when already made (e.g. in another thread).

        Returns
        -------
        Path
            The manifest path.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self.to_files(name) if files is None else files
        for suffix in (".npz", ".json"):
            path = directory / f"{name}{suffix}"
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(files[path.name])
            tmp.replace(path)
        return directory / f"{name}.json"

    @classmethod
    def load(cls, manifest_path: str | Path) -> ClusterModel:
        """Load a model saved by :meth:`save` from its JSON manifest.

        Raises
        ------
        InputValidationError
            When the manifest or its arrays are missing or not a matcher model.
        """
        path = Path(manifest_path)
        try:
            manifest = path.read_bytes()
            arrays = (path.parent / json.loads(manifest)["arrays"]).read_bytes()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise _unreadable(str(path), exc) from None
        return cls.from_files(manifest, arrays, str(path))

    @classmethod
    def from_files(cls, manifest: bytes, arrays: bytes, label: str = "model") -> ClusterModel:
        """Load a model from the contents of the two files of :meth:`to_files`.

        Raises
        ------
        InputValidationError
            When they are not a matcher model (``label`` names it in the message).
        """
        try:
            doc = json.loads(manifest.decode("utf-8"))
            if doc.get("format") != MODEL_FORMAT:
                raise ValueError(f"format is {doc.get('format')!r}, expected {MODEL_FORMAT!r}")
            with np.load(io.BytesIO(arrays), allow_pickle=False) as z:
                loaded = {k: z[k] for k in ("lat", "lon", "category", "cluster_id")}
                hood = z["neighborhood"] if "neighborhood" in z.files else None
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise _unreadable(label, exc) from None
        return cls(
            float(doc["parameters"]["cluster_km"]),
            loaded["lat"],
            loaded["lon"],
            loaded["category"],
            loaded["cluster_id"],
            doc,
            hood,
        )

    def __post_init__(self) -> None:
        if not (len(self.lat) == len(self.lon) == len(self.category) == len(self.cluster_id)):
            raise ValueError("model arrays must have equal lengths")


def _unreadable(label: str, exc: BaseException) -> InputValidationError:
    return InputValidationError(
        [Problem(label, None, None, None, f"not a readable matcher cluster model: {exc}")]
    )
