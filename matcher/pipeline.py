"""The planning pipeline and its frozen result: clusters, assignments, unmet demand, metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ._errors import InputValidationError, Problem
from .clustering import Clustering, ClusterModel, SplitHelper, Splitter, cluster_id_strings
from .config import MatchConfig
from .costs import COST_SCALE
from .equity import floor_report, gaps, hood_floors, neighborhood_table, per_hood
from .io import (
    LoadedTable,
    RowCheck,
    Source,
    hash_table,
    input_files,
    read_needs,
    read_neighborhoods,
    read_partners,
    reject_rows,
    with_points,
    without_geometry,
)
from .metrics import plan_metrics, travel_metrics
from .network import StreetNetwork, read_network, snap_problems
from .privacy import public_partners
from .region import (
    Pairs,
    RegionInput,
    RegionResult,
    cluster_keys,
    cluster_region,
    match_region,
    problems_only,
)
from .replan import PairsSource, churn, pair_units, read_pairs

__all__ = ["Plan", "plan", "plan_clusters"]

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
    assignment_table : pandas.DataFrame
        ``cluster_id, partner_id, units, distance_km, cost`` plus the explanation
        (``language_km, capacity_used, capacity_left, runner_up_id,
        runner_up_distance_km, runner_up_extra_cost, runner_up_full, reason``): the rows
        of ``assignments.csv``. :attr:`assignments` is the same with its lines.
    unmet_table : pandas.DataFrame
        ``cluster_id, category, units, reason, centroid_lat, centroid_lon`` per cluster
        with unmet units (``unmet.csv``). :attr:`unmet` is the same with its points.
    need_table : pandas.DataFrame
        The validated needs in ``need_id`` order, with ``neighborhood``, ``cluster_id``
        and ``served``, without point objects (see :attr:`needs`).
    partners : geopandas.GeoDataFrame
        The validated partners with ``used``.
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
    gap_table : pandas.DataFrame or None
        Demand, served and unmet by reason per neighborhood x category (see
        :func:`matcher.equity.gaps`; ``gaps.csv``). :attr:`gaps` is the same with the
        neighborhoods' polygons.
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
    assignment_table: pd.DataFrame
    unmet_table: pd.DataFrame
    need_table: pd.DataFrame
    partners: gpd.GeoDataFrame
    neighborhoods: gpd.GeoDataFrame | None
    metrics: dict[str, Any]
    parameters: dict[str, Any]
    input_hashes: dict[str, str]
    solver: dict[str, Any]
    rejects: dict[str, pd.DataFrame] = field(default_factory=dict)
    model: ClusterModel | None = None
    timings: dict[str, float] = field(default_factory=dict)
    gap_table: pd.DataFrame | None = None
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

    @cached_property
    def needs(self) -> gpd.GeoDataFrame:
        """The needs (:attr:`need_table`) with their points (EPSG:4326), made on first use.

        The points come before ``cluster_id`` and ``served``, as in the validated input.
        """
        frame = with_points(self.need_table)
        added = [c for c in ("cluster_id", "served") if c in frame.columns]
        return frame[[c for c in frame.columns if c not in added] + added]

    @cached_property
    def assignments(self) -> gpd.GeoDataFrame:
        """The assignments (:attr:`assignment_table`) as lines, partner to cluster centroid.

        EPSG:4326, made on first use. The partner end is the partner's point as given
        (exact for volunteers: the files written by the service coarsen them).
        """
        from .output import assignment_ends

        a = self.assignment_table
        ends = assignment_ends(a, self.partners, self.clusters).reshape(-1, 2, 2)
        lines = shapely.linestrings(ends) if len(a) else np.empty(0, dtype=object)
        return gpd.GeoDataFrame(a.copy(), geometry=lines, crs="EPSG:4326")

    @cached_property
    def unmet(self) -> gpd.GeoDataFrame:
        """The unmet units (:attr:`unmet_table`) at their clusters' centroids (EPSG:4326)."""
        u = self.unmet_table
        lon, lat = u["centroid_lon"].to_numpy(float), u["centroid_lat"].to_numpy(float)
        return gpd.GeoDataFrame(u.copy(), geometry=shapely.points(lon, lat), crs="EPSG:4326")

    @cached_property
    def gaps(self) -> gpd.GeoDataFrame | None:
        """The gaps (:attr:`gap_table`) with their neighborhoods' polygons (EPSG:4326).

        None when the plan has no gap table; a row whose neighborhood has no polygon (no
        neighborhoods given, or a need's own neighborhood outside them) has no geometry.
        """
        if self.gap_table is None:
            return None
        g = self.gap_table
        shapes = None
        if self.neighborhoods is not None and len(self.neighborhoods):
            hoods = self.neighborhoods.to_crs("EPSG:4326")
            by_id = pd.Series(hoods.geometry.to_numpy(), index=hoods["neighborhood_id"].astype(str))
            shapes = g["neighborhood"].astype(str).map(by_id).to_numpy()
        return gpd.GeoDataFrame(
            g.copy(), geometry=shapes if shapes is not None else [None] * len(g), crs="EPSG:4326"
        )

    @cached_property
    def recruit_sites(self) -> gpd.GeoDataFrame | None:
        """The suggested recruiting sites (:attr:`recruit`) as points; None without them."""
        if self.recruit is None:
            return None
        sites = self.recruit.sites
        points = shapely.points(sites["lon"].to_numpy(float), sites["lat"].to_numpy(float))
        return gpd.GeoDataFrame(sites.copy(), geometry=points, crs="EPSG:4326")

    def __repr__(self) -> str:
        """Say what the plan is in one line (its tables are attributes)."""
        units = self.metrics.get("units", {})
        return (
            f"<Plan: {len(self.need_table):,} needs in {len(self.clusters):,} clusters, "
            f"{len(self.partners):,} partners, {len(self.assignment_table):,} assignments; "
            f"{units.get('served', 0):,.1f} of {units.get('demand', 0):,.1f} units served, "
            f"{units.get('unmet', 0):,.1f} unmet; {self.solver.get('status', '?')} "
            f"({self.solver.get('name', '?')})>"
        )

    def explore(self, **kwargs: Any) -> Any:
        """Return an interactive map of the plan (a ``folium.Map``), as GeoDataFrame.explore.

        Layers: clusters (hulls by category), assignment lines, partners, unmet units and,
        when present, neighborhood gaps and recruit sites, with a layer control.
        ``kwargs`` go to the first layer's ``explore`` (e.g. ``tiles=None`` offline).
        Needs folium (``pip install 'matcher[explore]'``).
        """
        try:
            import folium
        except ImportError:
            raise ImportError(
                "Plan.explore needs folium: pip install 'matcher[explore]'"
            ) from None
        m = self.clusters.explore(column="category", name="clusters", **kwargs)
        self.assignments.explore(m=m, color="#555555", name="assignments")
        self.partners.explore(m=m, column="kind", name="partners", legend=False)
        if len(self.unmet):
            self.unmet.explore(m=m, color="#d62728", name="unmet", marker_kwds={"radius": 6})
        if self.gaps is not None and self.gaps.geometry.notna().any():
            self.gaps[self.gaps.geometry.notna()].explore(m=m, column="unmet", name="gaps",
                                                         legend=False)  # fmt: skip
        if self.recruit_sites is not None and len(self.recruit_sites):
            self.recruit_sites.explore(m=m, color="#2ca02c", name="recruit sites")
        folium.LayerControl().add_to(m)
        return m

    @property
    def total_cost(self) -> float:
        """The plan's cost: sum of units x cost per unit over the assignments."""
        return float(self.assignment_table["cost"].sum())

    def to_dir(self, path: str | Path) -> dict[str, Path]:
        """Write the output contract of DESIGN.md to a directory (see :mod:`matcher.output`)."""
        from .output import write_plan

        return write_plan(self, path)

    def save_model(
        self, directory: str | Path = "models", files: dict[str, bytes] | None = None
    ) -> Path:
        """Save the fitted clustering with a JSON manifest; return the manifest path.

        ``files`` are :meth:`model_files`, when already made (e.g. in another thread).
        """
        if self.model is None:
            raise ValueError("this plan has no clustering model")
        return self.model.save(directory, self._model_name, files)

    def model_files(self) -> dict[str, bytes]:
        """Return the saved model's files (manifest, compressed arrays) by name, as bytes."""
        if self.model is None:
            raise ValueError("this plan has no clustering model")
        return self.model.to_files(self._model_name)

    @property
    def _model_name(self) -> str:
        return f"clusters-{self.input_hashes['needs'][:12]}"


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    logger.info("stage %-11s %.2f s", name, timings[name])


def assign_neighborhoods(needs: pd.DataFrame, hoods: gpd.GeoDataFrame) -> pd.Series:
    """Return the id of the polygon that holds each point (``lat``, ``lon``).

    A point on the edge of several polygons takes the smallest id; a point outside every
    polygon keeps its own ``neighborhood`` value.
    """
    joined = gpd.sjoin(
        with_points(needs[["lat", "lon"]])[["geometry"]],
        hoods[["neighborhood_id", "geometry"]],
        how="left",
        predicate="intersects",
    )
    ids = joined["neighborhood_id"]
    # a need on the edge of two or more polygons takes the smallest id
    shared = ids.index.duplicated(keep=False)
    if shared.any():
        ids = pd.concat([ids[~shared], ids[shared].groupby(level=0).min()])
    first = ids.reindex(needs.index)
    outside = first.isna()
    if outside.any():
        logger.warning("%d point(s) lie outside every neighborhood polygon", int(outside.sum()))
    return first.where(~outside, needs["neighborhood"]).astype(str)


def _checked_table(
    table: LoadedTable, check: RowCheck, on_invalid: str
) -> tuple[LoadedTable, list[Problem]]:
    """Apply a row check to a table read already: its problems, or (skip) without them."""
    rows = np.asarray(table.rows if table.rows is not None else np.arange(len(table.frame)))
    bad, problems = check(table.frame, rows, table.name)
    bad = np.asarray(bad, dtype=bool)
    if not bad.any() or on_invalid == "raise":
        return table, problems
    out = reject_rows(without_geometry(table.frame.loc[bad]), rows[bad], problems)
    rejects = pd.concat([table.rejects, out], ignore_index=True) if len(table.rejects) else out
    logger.warning("%s: skipped %d invalid row(s)", table.name, int(bad.sum()))
    kept = replace(
        table,
        frame=table.frame.loc[~bad].reset_index(drop=True),
        rejects=rejects.sort_values("row", kind="stable").reset_index(drop=True),
        rows=rows[~bad],
    )
    return kept, []


def _load_inputs(
    needs: Source | LoadedTable,
    partners: Source | LoadedTable,
    config: MatchConfig,
    input_crs: str | None,
    net: StreetNetwork | None = None,
) -> tuple[LoadedTable, LoadedTable]:
    """Validate both inputs, reporting every problem of both at once.

    With a street network, a row farther than ``config.max_snap_m`` from it is invalid.
    """
    loaded: list[LoadedTable] = []
    problems: list[Problem] = []
    for src, reader, name in ((needs, read_needs, "needs"), (partners, read_partners, "partners")):
        check = (
            _on_streets(net, config, name == "partners" and config.volunteer_points == "grid")
            if net is not None
            else None
        )
        if isinstance(src, LoadedTable):
            if check is not None:  # read already: check its rows now
                src, found = _checked_table(src, check, config.on_invalid)
                problems.extend(found)
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
                    check=check,
                    # a plan never uses the needs' point objects: none are made
                    **({"points": False} if reader is read_needs else {}),
                )
            )
        except InputValidationError as exc:
            problems.extend(exc.problems)
    if problems:
        raise InputValidationError(problems)
    return loaded[0], loaded[1]


@dataclass(frozen=True)
class _Prepared:
    """The validated inputs of a plan, in canonical order, and what follows from them."""

    need_t: LoadedTable
    partner_t: LoadedTable
    needs: pd.DataFrame
    partners: gpd.GeoDataFrame
    hoods: gpd.GeoDataFrame | None
    hood_hash: str | None
    table: pd.DataFrame | None
    by_hood: bool
    lock: Pairs | None
    previous: Pairs | None
    exclude: Pairs | None = None
    network: StreetNetwork | None = None


def _on_streets(net: StreetNetwork, config: MatchConfig, grid: bool) -> RowCheck:
    """Return the row check of a street plan: each point within ``max_snap_m`` of a node.

    Volunteers of a grid plan are checked at their grid point (what the plan uses).
    """

    def check(
        table: pd.DataFrame, rows: np.ndarray, label: str
    ) -> tuple[np.ndarray, list[Problem]]:
        frame = public_partners(table) if grid else table
        return snap_problems(
            net,
            frame["lat"].to_numpy(dtype=np.float64),
            frame["lon"].to_numpy(dtype=np.float64),
            rows,
            label,
            config.max_snap_m,
        )

    return check


def _network(
    network: str | Path | StreetNetwork | None, config: MatchConfig
) -> StreetNetwork | None:
    """Load the plan's street network, checking that it matches ``config.travel``."""
    if network is None:
        if config.travel != "straight":
            raise InputValidationError(
                [Problem(None, None, "network", None,
                         f"travel '{config.travel}' needs a street network file (--network)")]
            )  # fmt: skip
        return None
    if config.travel == "straight":
        raise InputValidationError(
            [Problem(None, None, "travel", "straight",
                     "a street network was given: choose travel 'walk' or 'drive'")]
        )  # fmt: skip
    net = network if isinstance(network, StreetNetwork) else read_network(network, config.travel)
    if net.mode != config.travel:
        raise InputValidationError(
            [Problem(net.source, None, "travel", config.travel,
                     f"the network was built for travel '{net.mode}'")]
        )  # fmt: skip
    return net


def _prepare(
    needs: Source | LoadedTable,
    partners: Source | LoadedTable,
    neighborhoods: str | Path | gpd.GeoDataFrame | None,
    config: MatchConfig,
    input_crs: str | None,
    lock: PairsSource | None,
    previous: PairsSource | None,
    exclude: PairsSource | None = None,
    network: str | Path | StreetNetwork | None = None,
) -> _Prepared:
    """Read and validate the inputs; sort them; place needs in neighborhoods."""
    net = _network(network, config)
    need_t, partner_t = _load_inputs(needs, partners, config, input_crs, net)
    if net is None and "radius_min" in partner_t.frame:
        limited = int(partner_t.frame["radius_min"].notna().sum())
        if limited:
            logger.warning(
                "%d partner(s) have a radius_min (minutes of travel): a straight-line plan "
                "has no travel times, so it does not apply; plan with --travel walk|drive "
                "--network FILE to use it",
                limited,
            )
    hoods, hood_hash = (None, None)
    if neighborhoods is not None:
        hoods, hood_hash = read_neighborhoods(neighborhoods, input_crs=input_crs)
    # a canonical row order, so that results do not depend on the order of input rows
    need_df = without_geometry(need_t.frame).sort_values("need_id", kind="stable")
    need_df = need_df.reset_index(drop=True)
    partner_df = partner_t.frame.sort_values("partner_id", kind="stable").reset_index(drop=True)
    # the plan keeps the sorted tables; the loaded ones (in input order) are let go
    need_t = replace(need_t, frame=need_t.frame.iloc[:0], rows=None)
    partner_t = replace(partner_t, frame=partner_t.frame.iloc[:0], rows=None)
    if config.volunteer_points == "grid":
        partner_df = public_partners(partner_df)
    if hoods is not None:
        need_df["neighborhood"] = assign_neighborhoods(need_df, hoods)
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
    return _Prepared(
        need_t,
        partner_t,
        need_df,
        partner_df,
        hoods,
        hood_hash,
        table,
        by_hood,
        read_pairs(lock, "lock") if lock is not None else None,
        read_pairs(previous, "previous") if previous is not None else None,
        read_pairs(exclude, "exclude") if exclude is not None else None,
        net,
    )


def plan(
    needs: Source | LoadedTable,
    partners: Source | LoadedTable,
    *,
    neighborhoods: str | Path | gpd.GeoDataFrame | None = None,
    config: MatchConfig | None = None,
    input_crs: str | None = None,
    lock: PairsSource | None = None,
    previous: PairsSource | None = None,
    exclude: PairsSource | None = None,
    network: str | Path | StreetNetwork | None = None,
    client: Any = None,
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
    exclude : str, Path or DataFrame, optional
        Pairs never to propose: ``cluster_id, partner_id`` rows (e.g. partnerships a
        partner declined). They are left out of the candidates, so the plan is exactly
        optimal over the other pairs; a row naming no candidate pair excludes nothing.
    network : str, Path or StreetNetwork, optional
        The street network of ``config.travel`` (``"walk"`` or ``"drive"``): a file
        (:func:`matcher.network.read_network`) or a network already read. Eligibility
        and cost then use street distances (and times); see :mod:`matcher.network`.
    client : dask.distributed.Client, optional
        Split the plan into independent regions (:mod:`matcher.partition`) and cluster,
        solve and explain them on the client's workers; the plan is the same, byte for
        byte, as without (see :mod:`matcher.region`).

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
    # started before reading, so that it imports k-means while this process reads
    helper = SplitHelper.start(_rows(needs)) if client is None else None
    try:
        with _stage(timings, "read"):
            prep = _prepare(
                needs, partners, neighborhoods, config, input_crs, lock, previous, exclude,
                network,
            )
        if client is None:
            results = _run_whole(prep, config, timings, helper)
        else:
            from .runners.on_dask import DaskExecutor

            results = _run_regions(DaskExecutor(client), prep, config, timings)
    finally:
        if helper is not None:
            helper.close()
    with _stage(timings, "merge"):
        result = _finish(prep, results, config, timings)
    if isinstance(network, StreetNetwork):  # recorded when it was read from a file
        network = network.source if Path(network.source).is_file() else None
    return replace(
        result,
        sources={
            name: str(Path(src).resolve())
            for name, src in (
                ("needs", needs),
                ("partners", partners),
                ("neighborhoods", neighborhoods),
                ("lock", lock),
                ("previous", previous),
                ("exclude", exclude),
                ("network", network),
            )
            if isinstance(src, str | Path)
        },
    )


#: Bytes per row of a needs file, to estimate its rows before reading it (about 78 in
#: generated CSV cities). GeoJSON rows are longer, so their count is overestimated: a
#: smaller plan may then start a helper, which changes no result.
BYTES_PER_NEED_ROW = 80


def _rows(needs: Source | LoadedTable) -> int:
    """About how many needs ``needs`` holds, before reading it (0 when unknown)."""
    if isinstance(needs, LoadedTable):
        return len(needs.frame)
    if isinstance(needs, pd.DataFrame):
        return len(needs)
    if not isinstance(needs, str | Path):
        return 0
    try:
        files = input_files(needs) or [Path(needs)]
        return sum(f.stat().st_size for f in files) // BYTES_PER_NEED_ROW
    except (OSError, InputValidationError):  # reading reports it
        return 0


def plan_clusters(
    needs: Source | LoadedTable,
    partners: Source | LoadedTable,
    *,
    neighborhoods: str | Path | gpd.GeoDataFrame | None = None,
    config: MatchConfig | None = None,
    network: str | Path | StreetNetwork | None = None,
) -> tuple[pd.Series, pd.DataFrame]:
    """Return the clusters :func:`plan` would make of these inputs, without matching.

    The same reading and clustering as :func:`plan` (one code path), so a caller can
    name the plan's clusters before planning, e.g. to carry agreements to them
    (:func:`matcher.partnerships.agreements`).

    Returns
    -------
    (pandas.Series, pandas.DataFrame)
        The cluster id per ``need_id`` (index), and the clusters (``cluster_id``,
        ``category``, ``demand``, ...).
    """
    config = config or MatchConfig()
    prep = _prepare(needs, partners, neighborhoods, config, None, None, None, None, network)
    clustering = cluster_region(_whole_input(prep), config, prep.by_hood)
    need_cluster = pd.Series(
        clustering.need_cluster.to_numpy(),
        index=prep.needs["need_id"].astype(str).to_numpy(),
        name="cluster_id",
    )
    return need_cluster, clustering.clusters


def _whole_input(prep: _Prepared) -> RegionInput:
    return RegionInput(
        prep.needs,
        prep.partners,
        np.arange(len(prep.needs), dtype=np.int64),
        np.arange(len(prep.partners), dtype=np.int64),
    )


def _run_whole(
    prep: _Prepared,
    config: MatchConfig,
    timings: dict[str, float],
    helper: Splitter | None = None,
) -> list[RegionResult]:
    """Plan as one region, in this process, with the usual stage records."""
    region = _whole_input(prep)
    with _stage(timings, "cluster"):
        clustering = cluster_region(region, config, prep.by_hood, helper)
    if isinstance(helper, SplitHelper):
        helper.close()  # not left idle beside the solve's own processes
    result = match_region(
        region,
        clustering,
        None,
        prep.table,
        config,
        lock=prep.lock,
        previous=prep.previous,
        exclude=prep.exclude,
        network=prep.network,
    )
    for name, seconds in result.timings.items():
        timings[name] = seconds
        logger.info("stage %-11s %.2f s", name, seconds)
    return [result]


def _run_regions(
    executor: Any, prep: _Prepared, config: MatchConfig, timings: dict[str, float]
) -> list[RegionResult]:
    """Plan in independent regions, each step run by ``executor``."""
    from .partition import partition

    with _stage(timings, "partition"):
        groups = partition(prep.needs, prep.partners, config, prep.table, executor.tasks)
    if len(groups) <= 1:
        # one region: shipping it to a worker and back would only add time; the
        # workers split its oversize clusters meanwhile (they imported k-means)
        logger.info("one region: planned in this process")
        return _run_whole(prep, config, timings, executor.splitter())
    with _stage(timings, "scatter"):
        # one region's copy at a time: the driver never holds a second copy of the whole
        inputs = [
            executor.scatter(
                [
                    RegionInput(
                        prep.needs.iloc[n].reset_index(drop=True),
                        prep.partners.iloc[p].reset_index(drop=True),
                        n,
                        p,
                    )
                ]
            )[0]
            for n, p in groups
        ]
    logger.info("%d region task(s) on %s", len(groups), executor)
    with _stage(timings, "cluster"):
        clusterings = [executor.submit(cluster_region, r, config, prep.by_hood) for r in inputs]
        keys = executor.gather(
            [executor.submit(cluster_keys, r, c) for r, c in zip(inputs, clusterings, strict=True)]
        )
    widest = max((k[2] for k in keys), default=0.0)
    if widest > config.max_cluster_radius_km * (1 + 1e-6):  # pragma: no cover - see partition
        logger.warning(
            "a cluster is wider (%.3f km) than max_cluster_radius_km: planning as one region",
            widest,
        )
        inputs, clusterings = executor.scatter([_whole_input(prep)]), []
        clusterings = [executor.submit(cluster_region, inputs[0], config, prep.by_hood)]
        keys = executor.gather([executor.submit(cluster_keys, inputs[0], clusterings[0])])
    ranks = _global_ranks([k[0] for k in keys], [k[1] for k in keys])
    named = prep.lock or prep.previous or prep.exclude
    ids = _global_ids([k[1] for k in keys], ranks) if named else None
    net = executor.scatter([prep.network])[0] if prep.network is not None else None
    with _stage(timings, "match"):
        futures = []
        for i, (r, c) in enumerate(zip(inputs, clusterings, strict=True)):
            lock = _rows_of(prep.lock, ids[i]) if ids is not None else None
            futures.append(
                executor.submit(
                    match_region,
                    r,
                    c,
                    ranks[i] if len(inputs) > 1 else None,
                    prep.table,
                    config,
                    lock=lock,
                    previous=_rows_of(prep.previous, ids[i]) if ids is not None else None,
                    exclude=_rows_of(prep.exclude, ids[i]) if ids is not None else None,
                    known_partners=_known(lock, prep.partners),
                    solve_workers=1,
                    network=net,
                )
            )
        results: list[RegionResult] = executor.gather(futures)
    if prep.lock is not None and ids is not None:
        results.append(_unknown_lock_rows(prep, ids, config))
    return results


def _global_ranks(firsts: list[np.ndarray], cats: list[np.ndarray]) -> list[np.ndarray]:
    """Each region cluster's rank in its category over the whole plan (by smallest need)."""
    sizes = [f.size for f in firsts]
    if sum(sizes) == 0:
        return [np.zeros(0, dtype=np.int64) for _ in firsts]
    first = np.concatenate(firsts)
    codes = pd.factorize(np.concatenate(cats), sort=True)[0]
    order = np.lexsort((first, codes))
    start = np.searchsorted(codes[order], codes[order], side="left")
    rank = np.empty(first.size, dtype=np.int64)
    rank[order] = np.arange(first.size) - start
    return np.split(rank, np.cumsum(sizes)[:-1])


def _global_ids(cats: list[np.ndarray], ranks: list[np.ndarray]) -> list[np.ndarray]:
    return [
        cluster_id_strings(cat, rank).astype(str) for cat, rank in zip(cats, ranks, strict=True)
    ]


def _rows_of(rows: Pairs | None, ids: np.ndarray) -> Pairs | None:
    """Return the pair rows that name one of ``ids`` (None when there are none)."""
    if rows is None:
        return None
    mine = rows[0][rows[0]["cluster_id"].isin(ids)]
    return (mine, rows[1]) if len(mine) else None


def _known(lock: Pairs | None, partners: pd.DataFrame) -> frozenset[str] | None:
    if lock is None:
        return None
    named = set(lock[0]["partner_id"].astype(str))
    return frozenset(named.intersection(partners["partner_id"].astype(str)))


def _unknown_lock_rows(prep: _Prepared, ids: list[np.ndarray], config: MatchConfig) -> RegionResult:
    """Report the lock rows that name a cluster of no region."""
    assert prep.lock is not None
    rows, label = prep.lock
    known = np.concatenate(ids).astype(str) if ids else np.zeros(0, dtype=str)
    stray = rows[~rows["cluster_id"].isin(known)]
    if len(stray):
        try:
            pair_units(
                stray,
                label,
                pd.DataFrame({"cluster": np.zeros(0, np.int64), "partner": np.zeros(0, np.int64)}),
                known,
                prep.partners["partner_id"].to_numpy().astype(str),
                config.quantum,
                strict=True,
            )
        except InputValidationError as exc:
            return problems_only((1, tuple(exc.problems)))
    return problems_only((0, ()))


def _problems(results: list[RegionResult]) -> list[Problem]:
    """Return the lock problems of the earliest stage over all regions, by row."""
    staged = [r.problems for r in results if r.problems[1]]
    if not staged:
        return []
    stage = min(s for s, _ in staged)
    found = [p for s, ps in staged if s == stage for p in ps]
    return sorted(found, key=lambda p: (p.row is None, p.row or 0))


def _with_cluster_hint(problems: list[Problem], by_hood: bool) -> list[Problem]:
    """Say why a lock's pair may be "not eligible" when this plan clusters per neighborhood.

    Cluster ids depend on the needs and the clustering options: with ``min_coverage``
    clusters form within neighborhoods, so a lock taken from a plan made without it names
    other clusters under the same ids.
    """
    if not by_hood:
        return problems
    hint = (
        "; this plan forms clusters within neighborhoods (min_coverage), so cluster ids "
        "name other clusters than in a plan made without it: take the lock from a plan "
        "made with the same needs and options"
    )
    return [
        replace(p, reason=p.reason + hint) if p.reason.startswith("not eligible for cluster")
        or p.reason.startswith("no such cluster") else p
        for p in problems
    ]  # fmt: skip


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate region tables, leaving out empty ones (whose dtypes may be looser)."""
    full = [f for f in frames if len(f)]
    if not full:
        return frames[0]
    return full[0] if len(full) == 1 else pd.concat(full, ignore_index=True)


def _finish(
    prep: _Prepared, results: list[RegionResult], config: MatchConfig, timings: dict[str, float]
) -> Plan:
    """Merge region results into the plan: tables in canonical order, metrics, floors."""
    problems = _problems(results)
    if problems:
        raise InputValidationError(_with_cluster_hint(problems, prep.by_hood))
    regions = [r for r in results if r.solver]
    q = config.quantum
    need_df, partner_df, table = prep.needs, prep.partners, prep.table
    n_needs = len(need_df)
    one = len(regions) == 1
    clusters = _concat([r.clusters for r in regions])
    cl = _concat([r.cluster_table for r in regions])
    demand_q = np.concatenate([r.demand_q for r in regions])
    served_q = np.concatenate([r.served_q for r in regions])
    if not one:
        order = np.argsort(clusters["cluster_id"].to_numpy().astype(str), kind="stable")
        clusters = clusters.iloc[order].reset_index(drop=True)
        cl = cl.iloc[order].reset_index(drop=True)
        demand_q, served_q = demand_q[order], served_q[order]
    need_cluster = np.empty(n_needs, dtype=object)
    need_served = np.zeros(n_needs, dtype=np.float64)
    core = np.zeros(n_needs, dtype=bool)
    used_q = np.zeros(len(partner_df), dtype=np.int64)
    for r in regions:
        need_cluster[r.need_pos] = r.need_cluster
        need_served[r.need_pos] = r.need_served
        core[r.need_pos] = r.core
        used_q[r.partner_pos] = r.used_q
    assignments_out = _concat([r.assignments for r in regions])
    if not one:
        assignments_out = assignments_out.sort_values(["cluster_id", "partner_id"]).reset_index(
            drop=True
        )
    # need_df is this plan's own sorted copy of the input: the columns go on in place
    # (a copy of every column would be a second need table in memory)
    need_df["cluster_id"] = need_cluster
    need_df["served"] = need_served
    need_out = need_df
    unmet_out = _unmet_table(clusters)
    objective = int(sum(r.assignment_cost for r in regions))
    metrics = plan_metrics(clusters, need_out, assignments_out)
    metrics["cost"] = {
        "total": round(objective * q / COST_SCALE, 6),
        "unit": "units x km" if config.objective == "distance" else "units x cost-km",
    }
    plan_gaps = gaps(need_out, clusters)
    names: dict[str, str] = (
        dict(zip(prep.hoods["neighborhood_id"].astype(str), prep.hoods["name"].astype(str),
                 strict=True))
        if prep.hoods is not None and "name" in prep.hoods
        else {}
    )  # fmt: skip
    plan_gaps.insert(1, "neighborhood_name",
                     [names.get(str(h), "") for h in plan_gaps["neighborhood"]])  # fmt: skip
    floors = None
    has_floor = table["min_coverage"].to_numpy() > 0 if table is not None else np.zeros(0, bool)
    if table is not None and has_floor.any():
        hood_ids = tuple(table.index)
        cluster_hood = (
            pd.Index(hood_ids, dtype=object)
            .get_indexer(clusters["neighborhood"].astype(str))
            .astype(np.int64)
        )
        floor_q, _ = hood_floors(cluster_hood, demand_q, table["min_coverage"].to_numpy())
        alone = np.full(len(hood_ids), -1, dtype=np.int64)
        for r in regions:
            if r.alone is not None:
                alone = np.maximum(alone, r.alone)
        served_h = per_hood(cluster_hood, served_q, len(hood_ids))
        alone[~(has_floor & (served_h < floor_q))] = -1
        floors = floor_report(table, clusters, floor_q, q, config.max_partner_share < 1, alone)
        metrics["floors"] = {
            "neighborhoods": int(len(floors)),
            "met": int(floors["floor_met"].sum()),
            "shortfall_units": round(float(floors["shortfall"].sum()), 6),
            "not_met": floors.loc[~floors["floor_met"], "neighborhood_id"].tolist(),
        }
    plan_churn = None
    if prep.previous is not None:
        plan_churn = churn(prep.previous[0], assignments_out)
        metrics["churn"] = plan_churn
    if prep.lock is not None:
        metrics["locked_units"] = round(float(sum(r.locked_q for r in regions) * q), 6)
    if prep.exclude is not None:
        metrics["excluded_pairs"] = int(len(prep.exclude[0]))
    hashes = {"needs": prep.need_t.sha256, "partners": prep.partner_t.sha256}
    if config.volunteer_points == "grid":
        # the hash of a table with volunteers' exact points would confirm guesses of them:
        # a grid plan records the hash of the public view it was made from
        public = pd.DataFrame(partner_df.drop(columns=partner_df.geometry.name))
        hashes["partners"] = hash_table(public)
    if prep.hood_hash:
        hashes["neighborhoods"] = prep.hood_hash
    if prep.network is not None:
        hashes["network"] = prep.network.sha256
        metrics["travel"] = travel_metrics(prep.network, assignments_out)
    for name, rows in (("lock", prep.lock), ("previous", prep.previous)):
        if rows is not None:
            hashes[name] = hash_table(rows[0][["cluster_id", "partner_id", "units"]])
    if prep.exclude is not None:
        hashes["exclude"] = hash_table(prep.exclude[0][["cluster_id", "partner_id"]])
    solver_info = {
        "name": regions[0].solver,
        "status": "optimal",
        "objective_scaled": int(sum(r.objective for r in regions)),
        "components": int(sum(r.components for r in regions)),
        "assignment_cost_scaled": objective,
        "cost_scale": COST_SCALE,
        "quantum": q,
        "pairs": int(sum(r.pairs for r in regions)),
    }
    clustering = Clustering(cl, pd.Series(need_cluster, name="cluster_id"), core)
    cluster_model = ClusterModel.from_clustering(
        need_df, clustering, config, prep.need_t.sha256, by_neighborhood=prep.by_hood
    )
    rejects = {
        k: t.rejects
        for k, t in (("needs", prep.need_t), ("partners", prep.partner_t))
        if len(t.rejects)
    }
    logger.info(
        "plan: served %.1f of %.1f units (%d clusters, %d assignments)",
        metrics["units"]["served"],
        metrics["units"]["demand"],
        len(clusters),
        len(assignments_out),
    )
    return Plan(
        clusters,
        # needs are in need_id order already (_prepare sorts them; ids are unique)
        need_out[["need_id", "cluster_id"]],
        assignments_out,
        unmet_out,
        need_out,
        partner_df.assign(used=used_q * q),
        prep.hoods,
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
    )


def _unmet_table(clusters: pd.DataFrame) -> pd.DataFrame:
    """Clusters with unmet units: ``cluster_id, category, units, reason`` and the centroid."""
    unmet = clusters.loc[
        clusters["unmet"] > 0,
        ["cluster_id", "category", "unmet", "unmet_reason", "centroid_lat", "centroid_lon"],
    ]
    return (
        pd.DataFrame(unmet)
        .rename(columns={"unmet": "units", "unmet_reason": "reason"})
        .reset_index(drop=True)
    )
