"""One region of a plan: cluster its needs, then match its clusters to its partners.

A region is a set of needs and partners that shares no possible cluster and no eligible
pair with the rest (see :mod:`matcher.partition`). A whole plan is one region; a plan
split into regions (``matcher plan --dask``) runs the same two steps per region and
merges them (:func:`matcher.pipeline.plan`), with the same result byte for byte:

1. :func:`cluster_region` clusters the region's needs. Its clusters are numbered within
   the region; :func:`cluster_keys` gives the driver what it needs to number them as the
   whole plan would (clusters are numbered per category by their smallest ``need_id``).
2. :func:`match_region` renames the clusters to those global ids and finds candidates,
   costs, the exact solve, the explanations and the region's part of the plan tables.

Every step depends only on the region's rows, taken in the whole plan's order, so each
cluster, component and pair comes out as in the whole plan.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd

from ._errors import InfeasibleMatchError, InputValidationError, Problem
from .candidates import candidate_pairs
from .clustering import Clustering, Splitter, cluster_id_strings, cluster_needs
from .config import MatchConfig
from .constraints import Constraints, solve_constrained
from .costs import COST_SCALE, pair_costs
from .equity import floor_links, hood_floors, max_alone, per_hood
from .explain import explain_assignments, unmet_reasons
from .geo import hull_polygons
from .network import StreetNetwork, street_pairs, trip_minutes
from .replan import exclude_mask, pair_units
from .transport import TransportModel

__all__ = [
    "RegionInput",
    "RegionResult",
    "cluster_keys",
    "cluster_region",
    "match_region",
    "problems_only",
]

logger = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]

#: Pair rows handed to a region: (rows with ``cluster_id, partner_id, units, row``, label).
Pairs = tuple[pd.DataFrame, str]


@dataclass(frozen=True)
class RegionInput:
    """The rows of one region, in the whole plan's order.

    Attributes
    ----------
    needs : pandas.DataFrame
        Validated needs (with ``neighborhood``, no point objects), sorted by ``need_id``.
    partners : geopandas.GeoDataFrame
        Validated partners, sorted by ``partner_id``.
    need_pos, partner_pos : numpy.ndarray of int64
        Their positions in the whole plan's sorted tables.
    """

    needs: pd.DataFrame
    partners: gpd.GeoDataFrame
    need_pos: IntArray
    partner_pos: IntArray


@dataclass(frozen=True)
class RegionResult:
    """One region's part of a plan (see :func:`match_region`).

    Attributes
    ----------
    clusters : geopandas.GeoDataFrame
        The plan's cluster rows of the region (global ids, hulls), sorted by id.
    cluster_table : pandas.DataFrame
        The clustering's table of those clusters (before demand is rounded to quanta).
    need_cluster : numpy.ndarray of object
        Cluster id per region need.
    need_served : numpy.ndarray of float64
        Units served per region need.
    core : numpy.ndarray of bool
        Per region need: a density core point.
    assignments : pandas.DataFrame
        The explained assignments, sorted by ``cluster_id, partner_id``.
    used_q : numpy.ndarray of int64
        Quanta used per region partner.
    demand_q, served_q : numpy.ndarray of int64
        Per cluster (in ``clusters`` order).
    objective, assignment_cost, components, pairs, locked_q : int
        Solver facts; they add up over regions.
    solver : str
        The backend's name.
    alone : numpy.ndarray of int64 or None
        Per neighborhood of the plan's table: :func:`matcher.equity.max_alone` where the
        region holds a neighborhood below its floor, else -1.
    need_pos, partner_pos : numpy.ndarray of int64
        The region's rows in the whole plan (see :class:`RegionInput`).
    problems : tuple
        ``(stage, problems)``: lock rows that cannot hold (the plan raises those of
        the earliest stage over all regions); ``(0, ())`` when none.
    timings : dict
        Seconds per stage.
    """

    clusters: gpd.GeoDataFrame
    cluster_table: pd.DataFrame
    need_cluster: npt.NDArray[np.object_]
    need_served: npt.NDArray[np.float64]
    core: npt.NDArray[np.bool_]
    assignments: pd.DataFrame
    used_q: IntArray
    demand_q: IntArray
    served_q: IntArray
    objective: int
    assignment_cost: int
    components: int
    pairs: int
    locked_q: int
    solver: str
    alone: IntArray | None
    need_pos: IntArray
    partner_pos: IntArray
    problems: tuple[int, tuple[Problem, ...]] = (0, ())
    timings: dict[str, float] = field(default_factory=dict)


def cluster_region(
    region: RegionInput, config: MatchConfig, by_hood: bool, helper: Splitter | None = None
) -> Clustering:
    """Cluster a region's needs (ids numbered within the region).

    Parameters
    ----------
    region : RegionInput
        The region.
    config : MatchConfig
        The plan's parameters.
    by_hood : bool
        Cluster within neighborhoods.
    helper : Splitter, optional
        Where oversize groups are split meanwhile (see :func:`cluster_needs`).

    Returns
    -------
    Clustering
    """
    return cluster_needs(region.needs, config, by_neighborhood=by_hood, helper=helper)


def cluster_keys(
    region: RegionInput, clustering: Clustering
) -> tuple[IntArray, npt.NDArray[np.object_], float]:
    """Per cluster of a region: its smallest need's position in the whole plan.

    Parameters
    ----------
    region : RegionInput
        The region.
    clustering : Clustering
        From :func:`cluster_region`.

    Returns
    -------
    (numpy.ndarray of int64, numpy.ndarray of object, float)
        The position and the category per cluster (in the clustering's table order),
        and the widest cluster's ``radius_km`` (the partition assumes it is at most
        ``max_cluster_radius_km``).
    """
    ids = clustering.clusters["cluster_id"].to_numpy()
    codes = pd.Index(ids).get_indexer(clustering.need_cluster.to_numpy())
    first = np.full(len(ids), np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, codes, region.need_pos)
    radius = clustering.clusters["radius_km"].to_numpy(dtype=np.float64)
    return first, clustering.clusters["category"].to_numpy(), float(radius.max(initial=0.0))


def _renamed(clustering: Clustering, ranks: IntArray) -> Clustering:
    """Rename clusters ``{category}-{rank:06d}`` (global ranks), sorted by id."""
    cl = clustering.clusters
    new = cluster_id_strings(cl["category"].to_numpy(), ranks)
    mapping = pd.Series(new, index=cl["cluster_id"].to_numpy())
    order = np.argsort(new.astype(str), kind="stable")
    table = cl.assign(cluster_id=new).iloc[order].reset_index(drop=True)
    need_cluster = pd.Series(
        mapping.reindex(clustering.need_cluster.to_numpy()).to_numpy(),
        index=clustering.need_cluster.index,
        name="cluster_id",
    )
    return Clustering(table, need_cluster, clustering.core)


def _pair_rows(
    rows: Pairs | None,
    pairs: pd.DataFrame,
    cids: npt.NDArray[np.str_],
    pids: npt.NDArray[np.str_],
    q: float,
    strict: bool,
    known_partners: frozenset[str] | None,
) -> tuple[IntArray, tuple[int, tuple[Problem, ...]]]:
    """Quanta per pair named by lock or previous rows, or the problems found (stage 1 or 2)."""
    zero = np.zeros(len(pairs), dtype=np.int64)
    if rows is None:
        return zero, (0, ())
    try:
        return (
            pair_units(*rows, pairs, cids, pids, q, strict=strict, known_partners=known_partners),
            (0, ()),
        )
    except InputValidationError as exc:
        # pair_units checks the names first, then the units
        stage = 2 if all(p.field == "units" for p in exc.problems) else 1
        return zero, (stage, tuple(exc.problems))


def match_region(
    region: RegionInput,
    clustering: Clustering,
    ranks: IntArray | None,
    table: pd.DataFrame | None,
    config: MatchConfig,
    *,
    lock: Pairs | None = None,
    previous: Pairs | None = None,
    exclude: Pairs | None = None,
    known_partners: frozenset[str] | None = None,
    solve_workers: int | None = None,
    network: StreetNetwork | None = None,
) -> RegionResult:
    """Match a region's clusters to its partners, exactly, and explain.

    Parameters
    ----------
    region : RegionInput
        The region.
    clustering : Clustering
        From :func:`cluster_region`.
    ranks : numpy.ndarray of int64 or None
        Per cluster, its rank within its category over the whole plan (None: the
        region is the whole plan and its ids are already global).
    table : pandas.DataFrame or None
        The plan's neighborhood table (:func:`matcher.equity.neighborhood_table`).
    config : MatchConfig
        The plan's parameters.
    lock, previous : (pandas.DataFrame, str), optional
        The lock and previous-plan rows that name the region's clusters.
    exclude : (pandas.DataFrame, str), optional
        Pairs never proposed (e.g. a partner declined the cluster): they are not
        candidates, so the plan is exactly optimal over the others.
    known_partners : frozenset of str, optional
        Partner ids of the lock rows that exist in the whole plan.
    solve_workers : int, optional
        Processes for large components (1 where the caller is itself a worker).
    network : StreetNetwork, optional
        Eligibility and cost on this street network (:func:`matcher.network.street_pairs`)
        instead of the great circle.

    Returns
    -------
    RegionResult
    """
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if ranks is not None:
        clustering = _renamed(clustering, ranks)
    need_df, partner_df = region.needs, region.partners
    cl = clustering.clusters
    cpos = pd.Series(np.arange(len(cl)), index=cl["cluster_id"])
    need_cpos = cpos.reindex(clustering.need_cluster.to_numpy()).to_numpy()
    pairs = (
        candidate_pairs(cl, partner_df)
        if network is None
        else street_pairs(cl, partner_df, network, config.radius_min, workers=solve_workers)
    )
    if exclude is not None:
        out = exclude_mask(
            exclude[0], pairs, cl["cluster_id"].to_numpy().astype(str),
            partner_df["partner_id"].to_numpy().astype(str),
        )  # fmt: skip
        pairs = pairs[~out].reset_index(drop=True)
    pairs = pair_costs(pairs, cl, partner_df, need_df, need_cpos, config)
    timings["candidates"] = time.perf_counter() - start

    start = time.perf_counter()
    hood_ids = tuple(table.index) if table is not None else ()
    cluster_hood = (
        pd.Index(hood_ids, dtype=object)
        .get_indexer(cl["neighborhood"].astype(str))
        .astype(np.int64)
    )
    has_floor = table["min_coverage"].to_numpy() > 0 if table is not None else np.zeros(0, bool)
    vulnerability = None
    if config.vulnerability_column is not None and table is not None:
        v = table["vulnerability"].to_numpy(dtype=np.float64)
        vulnerability = np.where(cluster_hood >= 0, v[np.maximum(cluster_hood, 0)], 0.0)
    churn_weight = int(round(config.churn_penalty_km * COST_SCALE)) if previous is not None else 0
    model = TransportModel.build(
        cl,
        partner_df,
        pairs,
        need_df["demand"].to_numpy(),
        need_cpos,
        config,
        vulnerability=vulnerability,
        links=floor_links(cluster_hood, has_floor),
        extra_weight=churn_weight,
        partner_side=config.max_partner_share >= 1,
    )
    q, demand_q, cap_q = config.quantum, model.demand, model.capacity
    floor_q, allowance = (
        hood_floors(cluster_hood, demand_q, table["min_coverage"].to_numpy())
        if table is not None
        else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    )
    cids = cl["cluster_id"].to_numpy().astype(str)
    pids = partner_df["partner_id"].to_numpy().astype(str)
    locked, problems = _pair_rows(lock, pairs, cids, pids, q, True, known_partners)
    kept, _ = _pair_rows(previous, pairs, cids, pids, q, False, None)
    cons = Constraints(
        hood_ids,
        cluster_hood,
        allowance,
        np.floor(cap_q * config.max_partner_share + 1e-9).astype(np.int64)
        if config.max_partner_share < 1
        else None,
        locked,
        kept,
        churn_weight,
        q,
    )
    timings["model"] = time.perf_counter() - start
    if problems[1]:
        return problems_only(problems, timings)

    start = time.perf_counter()
    if cons.active:
        try:
            solution, _ = solve_constrained(model, cons, config.solver)
        except InfeasibleMatchError as exc:
            if lock is None:
                raise
            return problems_only((3, (Problem(lock[1], None, "units", None, str(exc)),)), timings)
    else:
        solution = model.solve(config.solver, workers=solve_workers)
    timings["solve"] = time.perf_counter() - start

    start = time.perf_counter()
    pair_flow, unmet_q = solution.pair_flow, solution.unmet
    served_q = demand_q - unmet_q
    pp = model.pair_partner
    used_q = np.bincount(pp, weights=pair_flow, minlength=len(partner_df)).astype(np.int64)
    assigned = pairs[pair_flow > 0].assign(units=pair_flow[pair_flow > 0] * q)
    if network is not None:  # the minutes of the trips the plan makes (see street_pairs)
        assigned["travel_min"] = trip_minutes(
            network, cl, partner_df, assigned, workers=solve_workers
        )
    assigned = explain_assignments(
        assigned, pairs, partner_df, cl, used_q * q, cap_q * q,
        {"walk": "walking", "drive": "driving"}.get(config.travel, ""),
    )  # fmt: skip
    clusters_out, need_cluster, need_served, assignments_out = _assemble(
        need_df, partner_df, cl, clustering, assigned, demand_q, served_q, unmet_q, pairs, q
    )
    alone = None
    if table is not None and has_floor.any():
        n_hoods = len(hood_ids)
        served_h = per_hood(cluster_hood, served_q, n_hoods)
        present = np.zeros(n_hoods, dtype=bool)
        present[cluster_hood[cluster_hood >= 0]] = True
        # a neighborhood with a floor is whole in one region, so its floor is known here
        short = np.flatnonzero(present & has_floor & (served_h < floor_q))
        alone = np.full(n_hoods, -1, dtype=np.int64)
        cap_h = cons.share_cap if cons.share_cap is not None else cap_q
        alone[short] = max_alone(short, cluster_hood, demand_q, model.pair_cluster, pp, cap_h)
    timings["explain"] = time.perf_counter() - start
    return RegionResult(
        clusters_out,
        cl,
        need_cluster,
        need_served,
        np.asarray(clustering.core, dtype=bool),
        assignments_out,
        used_q,
        demand_q,
        served_q,
        solution.objective,
        int(np.dot(pair_flow, pairs["weight"].to_numpy())),
        solution.components,
        int(len(pairs)),
        int(cons.lock.sum()),
        solution.solver,
        alone,
        region.need_pos,
        region.partner_pos,
        (0, ()),
        timings,
    )


def problems_only(
    problems: tuple[int, tuple[Problem, ...]], timings: dict[str, float] | None = None
) -> RegionResult:
    """Return a region result that carries only problems of lock rows (no ``solver``)."""
    empty = np.zeros(0, dtype=np.int64)
    return RegionResult(
        gpd.GeoDataFrame(),
        pd.DataFrame(),
        np.zeros(0, dtype=object),
        np.zeros(0),
        np.zeros(0, dtype=bool),
        pd.DataFrame(),
        empty,
        empty,
        empty,
        0,
        0,
        0,
        0,
        0,
        "",
        None,
        empty,
        empty,
        problems,
        timings or {},
    )


def _assemble(
    need_df: pd.DataFrame,
    partner_df: gpd.GeoDataFrame,
    cl: pd.DataFrame,
    clustering: Clustering,
    assigned: pd.DataFrame,
    demand_q: IntArray,
    served_q: IntArray,
    unmet_q: IntArray,
    pairs: pd.DataFrame,
    q: float,
) -> tuple[gpd.GeoDataFrame, npt.NDArray[np.object_], npt.NDArray[np.float64], pd.DataFrame]:
    """Turn the region's optimal flow into its part of the plan's tables."""
    reason = unmet_reasons(len(cl), pairs, unmet_q)
    clusters = cl.assign(
        demand=demand_q * q, served=served_q * q, unmet=unmet_q * q, unmet_reason=reason
    )
    need_cluster = clustering.need_cluster.to_numpy()
    cluster_pos = pd.Index(cl["cluster_id"]).get_indexer(need_cluster)
    hulls = hull_polygons(
        need_df["lat"], need_df["lon"], cluster_pos, cl["centroid_lat"], cl["centroid_lon"]
    )
    clusters = gpd.GeoDataFrame(clusters, geometry=hulls, crs="EPSG:4326")
    share = served_q / np.maximum(demand_q, 1)
    served = need_df["demand"].to_numpy() * share[cluster_pos]
    pid = partner_df["partner_id"].to_numpy().astype(str)
    cid = cl["cluster_id"].to_numpy().astype(str)
    at_p, at_c = assigned["partner"].to_numpy(), assigned["cluster"].to_numpy()
    # names beside ids, for people reading the table
    names = (partner_df["name"] if "name" in partner_df else partner_df["partner_id"]).astype(str)
    hoods = cl["neighborhood"] if "neighborhood" in cl else pd.Series([""] * len(cl))
    assignments = assigned.assign(
        cluster_id=cid[at_c],
        partner_id=pid[at_p],
        cost=assigned["units"] * assigned["weight"] / COST_SCALE,
        partner_name=names.to_numpy(dtype=object)[at_p],
        partner_kind=partner_df["kind"].astype(str).to_numpy(dtype=object)[at_p],
        category=cl["category"].astype(str).to_numpy(dtype=object)[at_c],
        neighborhood=hoods.fillna("").astype(str).to_numpy(dtype=object)[at_c],
    )
    columns = list(ASSIGNMENT_COLUMNS)
    if "travel_min" in assignments:  # a street plan: the straight line and the time too
        columns[4:4] = ["straight_km", "travel_min"]
    assignments = (
        assignments[columns]
        .sort_values(["cluster_id", "partner_id"])
        .reset_index(drop=True)
    )
    return clusters, need_cluster, served, assignments


#: The columns of ``assignments``, in order.
ASSIGNMENT_COLUMNS: tuple[str, ...] = (
    "cluster_id",
    "partner_id",
    "units",
    "distance_km",
    "cost",
    "language_km",
    "capacity_used",
    "capacity_left",
    "runner_up_id",
    "runner_up_distance_km",
    "runner_up_extra_cost",
    "runner_up_full",
    "reason",
    "partner_name",
    "partner_kind",
    "category",
    "neighborhood",
)
