"""The planning pipeline and its frozen result: clusters, assignments, unmet demand, metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd

from ._errors import InfeasibleMatchError, InputValidationError, Problem
from .candidates import candidate_pairs
from .clustering import Clustering, ClusterModel, cluster_needs
from .config import MatchConfig
from .constraints import Constraints, solve_constrained
from .costs import COST_SCALE, pair_costs
from .equity import (
    floor_links,
    floor_report,
    gaps,
    hood_floors,
    max_alone,
    neighborhood_table,
    per_hood,
)
from .explain import explain_assignments, unmet_reasons
from .geo import hull_polygons
from .io import LoadedTable, Source, hash_table, read_needs, read_neighborhoods, read_partners
from .metrics import plan_metrics
from .privacy import public_partners
from .replan import PairsSource, churn, pair_units, read_pairs
from .transport import TransportModel

__all__ = ["Plan", "plan"]

#: The stage records go to "matcher.plan" (the name users filter on), as before the module
#: was named pipeline.
logger = logging.getLogger("matcher.plan")


@dataclass(frozen=True)
class Plan:
    """The result of a planning run. Immutable: build a new plan to change anything.

    Attributes
    ----------
    clusters : geopandas.GeoDataFrame
        One row per cluster (``cluster_id, category, n_needs, demand, severity,
        centroid_lat, centroid_lon, radius_km, served, unmet, unmet_reason``) with
        its hull polygon.
    need_clusters : pandas.DataFrame
        ``need_id, cluster_id``.
    assignments : pandas.DataFrame
        ``cluster_id, partner_id, units, distance_km, cost`` plus the explanation
        (``language_km, capacity_used, capacity_left, runner_up_id,
        runner_up_distance_km, runner_up_extra_cost, runner_up_full, reason``).
    unmet : pandas.DataFrame
        ``cluster_id, category, units, reason, centroid_lat, centroid_lon`` per cluster
        with unmet units.
    needs, partners : geopandas.GeoDataFrame
        The validated inputs (needs with ``neighborhood``, ``cluster_id`` and ``served``;
        partners with ``used``).
    neighborhoods : geopandas.GeoDataFrame or None
        The neighborhood polygons, when given.
    metrics : dict
        See :func:`matcher.metrics.plan_metrics`.
    parameters : dict
        The configuration of the run.
    input_hashes : dict
        SHA-256 of each input.
    solver : dict
        ``name``, ``status``, ``objective_scaled`` (the exact integer optimum) and the
        cost scale.
    rejects : dict
        Rejected rows per input (``on_invalid="skip"``).
    model : ClusterModel
        The fitted clustering, to place a new need in an existing cluster.
    timings : dict
        Seconds per stage (not part of the written outputs, which are deterministic).
    gaps : pandas.DataFrame or None
        Demand, served and unmet by reason per neighborhood x category (see
        :func:`matcher.equity.gaps`).
    floors : pandas.DataFrame or None
        With ``min_coverage``: per neighborhood with a floor, whether it is met and
        why not (see :func:`matcher.equity.floor_report`).
    churn : dict or None
        With a previous plan: pairs and units kept and moved (see
        :func:`matcher.replan.churn`).
    sources : dict
        The absolute paths of the inputs that were files (``needs``, ``partners``,
        ``neighborhoods``, ``lock``, ``previous``), so that a scenario can re-plan.
    recruit : RecruitSuggestions or None
        Where to recruit (see :func:`matcher.recruit.recruit_sites`); attach with
        :meth:`with_recruit`.
    """

    clusters: gpd.GeoDataFrame
    need_clusters: pd.DataFrame
    assignments: pd.DataFrame
    unmet: pd.DataFrame
    needs: gpd.GeoDataFrame
    partners: gpd.GeoDataFrame
    neighborhoods: gpd.GeoDataFrame | None
    metrics: dict[str, Any]
    parameters: dict[str, Any]
    input_hashes: dict[str, str]
    solver: dict[str, Any]
    rejects: dict[str, pd.DataFrame] = field(default_factory=dict)
    model: ClusterModel | None = None
    timings: dict[str, float] = field(default_factory=dict)
    gaps: pd.DataFrame | None = None
    floors: pd.DataFrame | None = None
    churn: dict[str, Any] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    recruit: Any = None

    def with_recruit(
        self, k: int, radius_km: float, capacity: float | None = None, **kwargs: Any
    ) -> Plan:
        """Return this plan with recruit suggestions for its unmet demand.

        See :func:`matcher.recruit.recruit_sites` for the parameters.
        """
        from dataclasses import replace

        from .recruit import recruit_sites

        found = recruit_sites(
            self.clusters, k, radius_km, capacity, quantum=self.parameters["quantum"], **kwargs
        )
        return replace(self, recruit=found)

    @property
    def total_cost(self) -> float:
        """The plan's cost: sum of units x cost per unit over the assignments."""
        return float(self.assignments["cost"].sum())

    def to_dir(self, path: str | Path) -> dict[str, Path]:
        """Write the output contract of DESIGN.md to a directory (see :mod:`matcher.output`)."""
        from .output import write_plan

        return write_plan(self, path)

    def save_model(self, directory: str | Path = "models") -> Path:
        """Save the fitted clustering with a JSON manifest; return the manifest path."""
        if self.model is None:
            raise ValueError("this plan has no clustering model")
        name = f"clusters-{self.input_hashes['needs'][:12]}"
        return self.model.save(directory, name)


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    logger.info("stage %-11s %.2f s", name, timings[name])


def _assign_neighborhoods(needs: gpd.GeoDataFrame, hoods: gpd.GeoDataFrame) -> pd.Series:
    """Neighborhood id of the polygon containing each need (first id wins; else the given one)."""
    joined = gpd.sjoin(
        needs[["geometry"]],
        hoods[["neighborhood_id", "geometry"]],
        how="left",
        predicate="intersects",
    )
    joined = joined.sort_values("neighborhood_id", kind="stable")
    first = joined[~joined.index.duplicated(keep="first")]["neighborhood_id"].reindex(needs.index)
    outside = first.isna()
    if outside.any():
        logger.warning("%d need(s) lie outside every neighborhood polygon", int(outside.sum()))
    return first.where(~outside, needs["neighborhood"]).astype(str)


def _load_inputs(
    needs: Source | LoadedTable,
    partners: Source | LoadedTable,
    config: MatchConfig,
    input_crs: str | None,
) -> tuple[LoadedTable, LoadedTable]:
    """Validate both inputs, reporting every problem of both at once."""
    loaded: list[LoadedTable] = []
    problems: list[Problem] = []
    for src, reader, name in ((needs, read_needs, "needs"), (partners, read_partners, "partners")):
        if isinstance(src, LoadedTable):
            loaded.append(src)
            continue
        try:
            loaded.append(
                reader(
                    src,
                    taxonomy=config.taxonomy,
                    on_invalid=config.on_invalid,
                    input_crs=input_crs,
                    name=None if not isinstance(src, pd.DataFrame) else name,
                )
            )
        except InputValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputValidationError(problems)
    return loaded[0], loaded[1]


def plan(
    needs: Source | LoadedTable,
    partners: Source | LoadedTable,
    *,
    neighborhoods: str | Path | gpd.GeoDataFrame | None = None,
    config: MatchConfig | None = None,
    input_crs: str | None = None,
    lock: PairsSource | None = None,
    previous: PairsSource | None = None,
) -> Plan:
    """Cluster needs and recommend partners for every cluster, exactly optimally.

    Parameters
    ----------
    needs, partners : str, Path, DataFrame or LoadedTable
        Files (CSV, GeoJSON, GeoPackage) or tables with the columns of DESIGN.md.
    neighborhoods : str, Path or GeoDataFrame, optional
        Neighborhood polygons; each need's ``neighborhood`` is then the polygon that
        contains it.
    config : MatchConfig, optional
        Parameters; ``MatchConfig()`` when omitted.
    input_crs : str, optional
        Declares the transform of input files that are not in WGS84.
    lock : str, Path or DataFrame, optional
        Accepted partnerships to keep fixed: ``cluster_id, partner_id, units`` rows
        (e.g. an edited ``assignments.csv``). The plan carries exactly those units on
        those pairs and optimises the rest around them.
    previous : str, Path or DataFrame, optional
        The last plan (its directory or ``assignments.csv``); with
        ``config.churn_penalty_km`` the new plan prefers its pairs, and the plan
        reports churn.

    Returns
    -------
    Plan

    Raises
    ------
    InputValidationError
        With every problem found in the inputs (nothing is planned).
    InfeasibleMatchError
        When the locked pairs exceed a demand, a capacity or a share cap.

    Examples
    --------
    >>> import pandas as pd
    >>> needs = pd.DataFrame({"need_id": ["n1", "n2"], "category": ["food_access"] * 2,
    ...                       "lat": [41.88, 41.95], "lon": [-87.63, -87.63], "demand": [4, 3]})
    >>> partners = pd.DataFrame({"partner_id": ["p1"], "kind": ["organization"],
    ...     "lat": [41.881], "lon": [-87.63], "categories": ["food_access"],
    ...     "capacity": [10], "radius_km": [2.0]})
    >>> p = plan(needs, partners, config=MatchConfig(objective="distance"))
    >>> p.assignments[["cluster_id", "partner_id", "units"]].values.tolist()
    [['food_access-000000', 'p1', 4.0]]
    >>> p.unmet[["cluster_id", "units", "reason"]].values.tolist()
    [['food_access-000001', 3.0, 'no_partner_in_range']]
    """
    config = config or MatchConfig()
    timings: dict[str, float] = {}
    with _stage(timings, "read"):
        need_t, partner_t = _load_inputs(needs, partners, config, input_crs)
        hoods, hood_hash = (None, None)
        if neighborhoods is not None:
            hoods, hood_hash = read_neighborhoods(neighborhoods, input_crs=input_crs)
    # a canonical row order, so that results do not depend on the order of input rows
    need_df = need_t.frame.sort_values("need_id", kind="stable").reset_index(drop=True)
    partner_df = partner_t.frame.sort_values("partner_id", kind="stable").reset_index(drop=True)
    if config.volunteer_points == "grid":
        partner_df = public_partners(partner_df)
    if hoods is not None:
        need_df["neighborhood"] = _assign_neighborhoods(need_df, hoods)
    hood_label = str(neighborhoods) if isinstance(neighborhoods, str | Path) else "neighborhoods"
    table = None
    if hoods is not None or config.by_neighborhood:
        table = neighborhood_table(need_df["neighborhood"], hoods, config, hood_label)
    # any floor (the run's or a neighborhood's own) or other neighborhood option: cluster
    # within neighborhoods, so that each cluster belongs to exactly one
    by_hood = config.by_neighborhood or bool(
        table is not None and (table["min_coverage"].to_numpy() > 0).any()
    )
    if by_hood and not (need_df["neighborhood"].astype(str) != "").any():
        raise InputValidationError(
            [
                Problem(
                    hood_label if hoods is not None else None,
                    None,
                    "neighborhoods",
                    None,
                    "min_coverage, vulnerability_column and max_partner_share need needs in "
                    "neighborhoods: no need lies in a neighborhood polygon"
                    if hoods is not None
                    else "min_coverage, vulnerability_column and max_partner_share need "
                    "neighborhoods: give a neighborhoods file or a neighborhood column",
                )
            ]
        )
    lock_rows = read_pairs(lock, "lock") if lock is not None else None
    prev_rows = read_pairs(previous, "previous") if previous is not None else None

    with _stage(timings, "cluster"):
        clustering = cluster_needs(need_df, config, by_neighborhood=by_hood)
    cl = clustering.clusters
    cpos = pd.Series(np.arange(len(cl)), index=cl["cluster_id"])
    need_cpos = cpos.reindex(clustering.need_cluster.to_numpy()).to_numpy()

    with _stage(timings, "candidates"):
        pairs = candidate_pairs(cl, partner_df)
        pairs = pair_costs(pairs, cl, partner_df, need_df, need_cpos, config)

    with _stage(timings, "model"):
        hood_ids = tuple(table.index) if table is not None else ()
        cluster_hood = (
            pd.Index(hood_ids, dtype=object)
            .get_indexer(cl["neighborhood"].astype(str))
            .astype(np.int64)
        )
        has_floor = table["min_coverage"].to_numpy() > 0 if table is not None else np.zeros(0, bool)
        links = floor_links(cluster_hood, has_floor)
        vulnerability = None
        if config.vulnerability_column is not None and table is not None:
            v = table["vulnerability"].to_numpy(dtype=np.float64)
            vulnerability = np.where(cluster_hood >= 0, v[np.maximum(cluster_hood, 0)], 0.0)
        churn_weight = (
            int(round(config.churn_penalty_km * COST_SCALE)) if prev_rows is not None else 0
        )
        model = TransportModel.build(
            cl,
            partner_df,
            pairs,
            need_df["demand"].to_numpy(),
            need_cpos,
            config,
            vulnerability=vulnerability,
            links=links,
            extra_weight=churn_weight,
            partner_side=config.max_partner_share >= 1,
        )
        q, demand_q, cap_q = config.quantum, model.demand, model.capacity
        pp = model.pair_partner
        floor_q, allowance = (
            hood_floors(cluster_hood, demand_q, table["min_coverage"].to_numpy())
            if table is not None
            else (np.zeros(0, np.int64), np.zeros(0, np.int64))
        )
        cids = cl["cluster_id"].to_numpy().astype(str)
        pids = partner_df["partner_id"].to_numpy().astype(str)
        zero = np.zeros(len(pairs), dtype=np.int64)
        cons = Constraints(
            hood_ids,
            cluster_hood,
            allowance,
            np.floor(cap_q * config.max_partner_share + 1e-9).astype(np.int64)
            if config.max_partner_share < 1
            else None,
            pair_units(*lock_rows, pairs, cids, pids, q, strict=True)
            if lock_rows is not None
            else zero,
            pair_units(*prev_rows, pairs, cids, pids, q, strict=False)
            if prev_rows is not None
            else zero,
            churn_weight,
        )

    with _stage(timings, "solve"):
        if cons.active:
            try:
                solution, _ = solve_constrained(model, cons, config.solver)
            except InfeasibleMatchError as exc:
                if lock_rows is None:
                    raise
                raise InputValidationError(
                    [Problem(lock_rows[1], None, "units", None, str(exc))]
                ) from None
        else:
            solution = model.solve(config.solver)

    with _stage(timings, "explain"):
        pair_flow, unmet_q = solution.pair_flow, solution.unmet
        served_q = demand_q - unmet_q
        used_q = np.bincount(pp, weights=pair_flow, minlength=len(partner_df)).astype(np.int64)
        assigned = pairs[pair_flow > 0].assign(units=pair_flow[pair_flow > 0] * q)
        assigned = explain_assignments(assigned, pairs, partner_df, cl, used_q * q, cap_q * q)
        result = _assemble(
            need_df,
            partner_df,
            cl,
            clustering,
            assigned,
            demand_q,
            served_q,
            unmet_q,
            used_q,
            pairs,
            q,
        )
        clusters_out, need_out, assignments_out, unmet_out = result
        objective = int(np.dot(pair_flow, pairs["weight"].to_numpy()))
        metrics = plan_metrics(clusters_out, need_out, assignments_out)
        metrics["cost"] = {
            "total": round(objective * q / COST_SCALE, 6),
            "unit": "units x km" if config.objective == "distance" else "units x cost-km",
        }
        plan_gaps = gaps(need_out, clusters_out)
        floors = None
        if table is not None and has_floor.any():
            served_h = per_hood(cluster_hood, served_q, len(hood_ids))
            short = np.flatnonzero(has_floor & (served_h < floor_q))
            alone = np.full(len(hood_ids), -1, dtype=np.int64)
            cap_h = cons.share_cap if cons.share_cap is not None else cap_q
            alone[short] = max_alone(short, cluster_hood, demand_q, model.pair_cluster, pp, cap_h)
            floors = floor_report(
                table, clusters_out, floor_q, q, config.max_partner_share < 1, alone
            )
            metrics["floors"] = {
                "neighborhoods": int(len(floors)),
                "met": int(floors["floor_met"].sum()),
                "shortfall_units": round(float(floors["shortfall"].sum()), 6),
                "not_met": floors.loc[~floors["floor_met"], "neighborhood_id"].tolist(),
            }
        plan_churn = None
        if prev_rows is not None:
            plan_churn = churn(prev_rows[0], assignments_out)
            metrics["churn"] = plan_churn
        if lock_rows is not None:
            metrics["locked_units"] = round(float(cons.lock.sum() * q), 6)
    hashes = {"needs": need_t.sha256, "partners": partner_t.sha256}
    if config.volunteer_points == "grid":
        # the hash of a table with volunteers' exact points would confirm guesses of them:
        # a grid plan records the hash of the public view it was made from
        public = pd.DataFrame(partner_df.drop(columns=partner_df.geometry.name))
        hashes["partners"] = hash_table(public)
    if hood_hash:
        hashes["neighborhoods"] = hood_hash
    for name, rows in (("lock", lock_rows), ("previous", prev_rows)):
        if rows is not None:
            hashes[name] = hash_table(rows[0][["cluster_id", "partner_id", "units"]])
    solver_info = {
        "name": solution.solver,
        "status": "optimal",
        "objective_scaled": solution.objective,
        "components": solution.components,
        "assignment_cost_scaled": objective,
        "cost_scale": COST_SCALE,
        "quantum": q,
        "pairs": int(len(pairs)),
    }
    cluster_model = ClusterModel.from_clustering(
        need_df, clustering, config, need_t.sha256, by_neighborhood=by_hood
    )
    rejects = {
        k: t.rejects for k, t in (("needs", need_t), ("partners", partner_t)) if len(t.rejects)
    }
    logger.info(
        "plan: served %.1f of %.1f units (%d clusters, %d assignments)",
        metrics["units"]["served"],
        metrics["units"]["demand"],
        len(cl),
        len(assignments_out),
    )
    return Plan(
        clusters_out,
        need_out[["need_id", "cluster_id"]].sort_values("need_id").reset_index(drop=True),
        assignments_out,
        unmet_out,
        need_out,
        partner_df.assign(used=used_q * q),
        hoods,
        metrics,
        config.parameters(),
        hashes,
        solver_info,
        rejects,
        cluster_model,
        timings,
        plan_gaps,
        floors,
        plan_churn,
        {
            name: str(Path(src).resolve())
            for name, src in (
                ("needs", needs),
                ("partners", partners),
                ("neighborhoods", neighborhoods),
                ("lock", lock),
                ("previous", previous),
            )
            if isinstance(src, str | Path)
        },
    )


def _assemble(
    need_df: gpd.GeoDataFrame,
    partner_df: gpd.GeoDataFrame,
    cl: pd.DataFrame,
    clustering: Clustering,
    assigned: pd.DataFrame,
    demand_q: np.ndarray,
    served_q: np.ndarray,
    unmet_q: np.ndarray,
    used_q: np.ndarray,
    pairs: pd.DataFrame,
    q: float,
) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame, pd.DataFrame, pd.DataFrame]:
    """Turn the optimal flow into the plan's tables."""
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
    share = pd.Series(served_q / np.maximum(demand_q, 1), index=cl["cluster_id"])
    need_out = need_df.assign(
        cluster_id=need_cluster,
        served=need_df["demand"].to_numpy() * share.reindex(need_cluster).to_numpy(),
    )
    pid = partner_df["partner_id"].to_numpy().astype(str)
    cid = cl["cluster_id"].to_numpy().astype(str)
    assignments = assigned.assign(
        cluster_id=cid[assigned["cluster"].to_numpy()],
        partner_id=pid[assigned["partner"].to_numpy()],
        cost=assigned["units"] * assigned["weight"] / COST_SCALE,
    )
    front = ["cluster_id", "partner_id", "units", "distance_km", "cost"]
    rest = [
        "language_km",
        "capacity_used",
        "capacity_left",
        "runner_up_id",
        "runner_up_distance_km",
        "runner_up_extra_cost",
        "runner_up_full",
        "reason",
    ]
    assignments = (
        assignments[front + rest].sort_values(["cluster_id", "partner_id"]).reset_index(drop=True)
    )
    unmet = clusters.loc[
        clusters["unmet"] > 0,
        ["cluster_id", "category", "unmet", "unmet_reason", "centroid_lat", "centroid_lon"],
    ]
    unmet = (
        pd.DataFrame(unmet)
        .rename(columns={"unmet": "units", "unmet_reason": "reason"})
        .reset_index(drop=True)
    )
    return clusters, need_out, assignments, unmet
