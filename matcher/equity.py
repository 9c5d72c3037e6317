"""Neighborhood equity: coverage floors, vulnerability priorities, floor reports and gaps.

With any neighborhood equity option (``min_coverage``, ``vulnerability_column``,
``max_partner_share``), clusters are formed within neighborhoods, so every cluster
belongs to exactly one and coverage is accounted exactly. The floors and caps are
built into the flow model by :mod:`matcher.constraints`.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import geopandas as gpd
import numpy as np
import numpy.typing as npt
import pandas as pd

from ._errors import InputValidationError, Problem
from .config import MatchConfig
from .explain import UNMET_REASONS

__all__ = [
    "floor_links",
    "floor_report",
    "gaps",
    "hood_floors",
    "max_alone",
    "neighborhood_table",
    "per_hood",
]

logger = logging.getLogger(__name__)


def neighborhood_table(
    need_hoods: pd.Series,
    hoods: gpd.GeoDataFrame | None,
    config: MatchConfig,
    label: str = "neighborhoods",
) -> pd.DataFrame:
    """Floors and vulnerabilities of every neighborhood named by the needs or the polygons.

    Parameters
    ----------
    need_hoods : pandas.Series
        Each need's neighborhood id ('' for none).
    hoods : GeoDataFrame or None
        The neighborhood polygons with their attribute columns.
    config : MatchConfig
        ``min_coverage``, ``vulnerability_column``.
    label : str
        The neighborhoods input's name, for error messages.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``neighborhood_id`` (sorted): ``name``, ``min_coverage`` (0..1) and
        ``vulnerability`` (the column min-max normalised to 0..1; 0 without one).

    Raises
    ------
    InputValidationError
        When the vulnerability column is missing or not numeric, or a per-neighborhood
        ``min_coverage`` is outside 0..1.
    """
    ids = sorted(set(need_hoods.astype(str).unique().tolist()) - {""})
    if hoods is not None:
        ids = sorted(set(ids) | set(hoods["neighborhood_id"].astype(str)))
    table = pd.DataFrame(index=pd.Index(ids, name="neighborhood_id"))
    table["name"] = table.index.to_numpy()
    table["min_coverage"] = float(config.min_coverage)
    table["vulnerability"] = 0.0
    problems: list[Problem] = []
    col = config.vulnerability_column
    if col is not None and hoods is None:
        raise InputValidationError(
            [
                Problem(
                    None,
                    None,
                    "vulnerability_column",
                    col,
                    "needs a neighborhoods file with that column (--neighborhoods)",
                )
            ]
        )
    if hoods is None:
        return table
    frame = hoods.set_index(hoods["neighborhood_id"].astype(str))
    source = hoods.attrs.get("source_rows") or list(range(len(hoods)))

    def row(pos: int) -> int:
        return int(source[pos])

    table.loc[frame.index, "name"] = frame["name"].astype(str)
    if "min_coverage" in frame.columns:
        values = pd.to_numeric(frame["min_coverage"], errors="coerce")
        given = frame["min_coverage"].notna()
        bad = given & ~values.between(0, 1)
        for pos in np.flatnonzero(bad.to_numpy()).tolist():
            problems.append(
                Problem(
                    label,
                    row(pos),
                    "min_coverage",
                    frame["min_coverage"].iloc[pos],
                    "must be a number from 0 to 1 (or empty for the run's --min-coverage)",
                )
            )
        ok = given & ~bad
        table.loc[frame.index[ok.to_numpy()], "min_coverage"] = values[ok].to_numpy()
    if col is not None:
        if col not in frame.columns:
            numeric = [
                c
                for c in frame.columns
                if c != "geometry" and pd.api.types.is_numeric_dtype(frame[c])
            ]
            problems.append(
                Problem(label, None, col, None, f"column missing; numeric columns are {numeric}")
            )
        else:
            values = pd.to_numeric(frame[col], errors="coerce")
            bad = frame[col].notna() & ~np.isfinite(values)
            for pos in np.flatnonzero(bad.to_numpy()).tolist():
                problems.append(
                    Problem(label, row(pos), col, frame[col].iloc[pos], "must be a finite number")
                )
            if values.isna().any() and not bad.any():
                logger.warning(
                    "%s: %d neighborhood(s) without a %s value get vulnerability 0",
                    label,
                    int(values.isna().sum()),
                    col,
                )
            low, high = values.min(), values.max()
            span = high - low if math.isfinite(high - low) else 0.0
            norm = ((values - low) / span).fillna(0.0) if span > 0 else values * 0.0
            table.loc[frame.index, "vulnerability"] = norm.fillna(0.0).to_numpy()
    if problems:
        raise InputValidationError(problems)
    return table


def per_hood(
    cluster_hood: npt.NDArray[np.int64], values: npt.ArrayLike, n_hoods: int
) -> npt.NDArray[np.int64]:
    """Sum integer ``values`` per cluster into their neighborhoods (clusters at -1 skipped).

    Examples
    --------
    >>> per_hood(np.array([1, -1, 1, 0]), np.array([2, 5, 3, 4]), 3).tolist()
    [4, 5, 0]
    """
    sel = cluster_hood >= 0
    values = np.asarray(values)
    return np.bincount(cluster_hood[sel], weights=values[sel], minlength=n_hoods).astype(np.int64)


def floor_links(
    cluster_hood: npt.NDArray[np.int64], has_floor: npt.NDArray[np.bool_]
) -> npt.NDArray[np.int64]:
    """Per cluster: its neighborhood when that has a floor, else -1.

    Examples
    --------
    >>> floor_links(np.array([0, 1, -1]), np.array([False, True])).tolist()
    [-1, 1, -1]
    """
    if has_floor.size == 0:
        return np.full(cluster_hood.size, -1, dtype=np.int64)
    linked = (cluster_hood >= 0) & has_floor[np.maximum(cluster_hood, 0)]
    return np.where(linked, cluster_hood, -1).astype(np.int64)


def hood_floors(
    cluster_hood: npt.NDArray[np.int64], demand_q: npt.NDArray[np.int64], min_coverage: np.ndarray
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Floor and allowance (quanta that may stay unmet) per neighborhood.

    The floor is ``ceil(min_coverage * demand)`` in quanta; neighborhoods with
    ``min_coverage == 0`` have no floor (allowance -1).

    Examples
    --------
    >>> hood_floors(np.array([0, 0, 1]), np.array([5, 4, 10]), np.array([0.5, 0.0]))
    (array([5, 0]), array([ 4, -1]))
    """
    demand = per_hood(cluster_hood, demand_q, min_coverage.size)
    floor = np.ceil(min_coverage * demand - 1e-9).astype(np.int64)
    allowance = np.where(min_coverage > 0, demand - floor, -1).astype(np.int64)
    return np.where(min_coverage > 0, floor, 0).astype(np.int64), allowance


def max_alone(
    hoods: npt.NDArray[np.int64],
    cluster_hood: npt.NDArray[np.int64],
    demand_q: npt.NDArray[np.int64],
    pair_cluster: npt.NDArray[np.int64],
    pair_partner: npt.NDArray[np.int64],
    capacity_q: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """Most quanta each neighborhood could be served if every partner served it alone.

    A maximum flow (OR-Tools) per neighborhood over its clusters and every partner in
    range, with the partners' whole capacity (or share cap) available to it. A floor
    above this number cannot be met by any plan.

    Examples
    --------
    >>> max_alone(np.array([0]), np.array([0, 0]), np.array([5, 5]), np.array([0, 1]),
    ...           np.array([0, 0]), np.array([7])).tolist()
    [7]
    """
    from ortools.graph.python import max_flow

    out = np.zeros(hoods.size, dtype=np.int64)
    for i, h in enumerate(hoods.tolist()):
        sel = cluster_hood[pair_cluster] == h
        pc, pp = pair_cluster[sel], pair_partner[sel]
        if pc.size == 0:
            continue
        uc, ci = np.unique(pc, return_inverse=True)
        up, pi = np.unique(pp, return_inverse=True)
        src, sink = uc.size + up.size, uc.size + up.size + 1
        tails = np.concatenate([np.full(uc.size, src), ci, uc.size + np.arange(up.size)])
        heads = np.concatenate([np.arange(uc.size), uc.size + pi, np.full(up.size, sink)])
        caps = np.concatenate([demand_q[uc], demand_q[pc], capacity_q[up]])
        smf = max_flow.SimpleMaxFlow()
        smf.add_arcs_with_capacity(tails, heads, caps)
        smf.solve(src, sink)
        out[i] = smf.optimal_flow()
    return out


def floor_report(
    table: pd.DataFrame,
    clusters: pd.DataFrame,
    floor_q: npt.NDArray[np.int64],
    quantum: float,
    share_capped: bool,
    alone_q: npt.NDArray[np.int64] | None = None,
) -> pd.DataFrame:
    """Per neighborhood with a floor: demand, floor, served, shortfall and why.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`neighborhood_table`.
    clusters : pandas.DataFrame
        The plan's clusters with ``neighborhood, demand, served, unmet, unmet_reason``.
    floor_q : numpy.ndarray of int64
        Floor per neighborhood of ``table``, in quanta.
    quantum : float
        Units per quantum.
    share_capped : bool
        Whether partners' share caps were in force (named in the reason).
    alone_q : numpy.ndarray of int64, optional
        Per neighborhood of ``table``: :func:`max_alone` (quanta); -1 where unknown.

    Returns
    -------
    pandas.DataFrame
        ``neighborhood_id, name, min_coverage, demand, floor, served, coverage,
        shortfall, floor_met, reason`` in :func:`natural_order` of ``neighborhood_id``
        (``"2"`` before ``"10"``). ``reason`` is
        empty when the floor is met; otherwise it says how many of the neighborhood's
        unmet units have no partner in range and how many have partners in range that
        are full, which is why no plan can reach the floor.
    """
    agg = clusters.groupby("neighborhood")[["demand", "served"]].sum()
    by_reason = (
        clusters[clusters["unmet"] > 0]
        .pivot_table(index="neighborhood", columns="unmet_reason", values="unmet", aggfunc="sum")
        .reindex(columns=list(UNMET_REASONS), fill_value=0.0)
        .fillna(0.0)
    )
    out = table[["name", "min_coverage"]].copy()
    out["demand"] = agg["demand"].reindex(out.index, fill_value=0.0)
    out["floor"] = floor_q * quantum
    out["served"] = agg["served"].reindex(out.index, fill_value=0.0)
    out["coverage"] = np.where(
        out["demand"] > 0, out["served"] / out["demand"].clip(lower=1e-12), 1.0
    )
    out["shortfall"] = np.maximum(out["floor"] - out["served"], 0.0).round(6)
    out["floor_met"] = out["shortfall"] <= 1e-9
    out["max_alone"] = (
        np.where(alone_q >= 0, alone_q * quantum, np.nan) if alone_q is not None else np.nan
    )
    out = out[out["min_coverage"] > 0]
    reasons = []
    full = "partners_in_range_full" + (" (or at their share cap)" if share_capped else "")
    for hood, row in out.iterrows():
        if row["floor_met"]:
            reasons.append("")
            continue
        r = by_reason.loc[hood] if hood in by_reason.index else pd.Series(0.0, UNMET_REASONS)
        why = (
            f"{r[UNMET_REASONS[0]]:g} unmet unit(s) with no_partner_in_range; "
            f"{r[UNMET_REASONS[1]]:g} with {full}"
        )
        if np.isfinite(row["max_alone"]):
            if row["max_alone"] < row["floor"] - 1e-9:
                why += (
                    f"; out of reach: even with every partner in range serving it alone, "
                    f"at most {row['max_alone']:g} units"
                )
            else:
                why += (
                    "; reaching it would take capacity that other neighborhoods need "
                    "for their own floors"
                )
        reasons.append(why)
    out["reason"] = reasons
    for col in ("demand", "floor", "served", "shortfall", "max_alone"):
        out[col] = out[col].round(6)
    out["coverage"] = out["coverage"].round(6)
    out = out.reset_index()
    return out.iloc[natural_order(out["neighborhood_id"])].reset_index(drop=True)


def natural_order(ids: Any) -> npt.NDArray[np.intp]:
    """Return the positions that sort ids as people do: whole numbers by value, then text.

    Examples
    --------
    >>> ids = ["10", "2", "b", "1", "a"]
    >>> [ids[i] for i in natural_order(ids)]
    ['1', '2', '10', 'a', 'b']
    """
    s = pd.Series(list(ids), dtype=object).astype(str)
    whole = s.str.fullmatch(r"[0-9]{1,18}")
    number = pd.to_numeric(s.where(whole), errors="coerce").fillna(0).to_numpy()
    return np.lexsort((s.to_numpy(), number, ~whole.to_numpy()))


def gaps(needs: pd.DataFrame, clusters: pd.DataFrame) -> pd.DataFrame:
    """Demand, served and unmet by reason per neighborhood x category.

    Parameters
    ----------
    needs : pandas.DataFrame
        The plan's needs with ``neighborhood, category, cluster_id, demand, served``.
    clusters : pandas.DataFrame
        The plan's clusters with ``cluster_id, unmet_reason``.

    Returns
    -------
    pandas.DataFrame
        ``neighborhood, category, demand, served, unmet, unmet_no_partner_in_range,
        unmet_partners_in_range_full, coverage``, one row per neighborhood and category
        with demand ('' is the neighborhood of needs outside every one), neighborhoods in
        :func:`natural_order`, categories sorted within each.
    """
    reason = clusters.set_index("cluster_id")["unmet_reason"].reindex(needs["cluster_id"])
    frame = pd.DataFrame(
        {
            "neighborhood": needs["neighborhood"].astype(str).to_numpy(),
            "category": needs["category"].astype(str).to_numpy(),
            "demand": needs["demand"].to_numpy(dtype=np.float64),
            "served": needs["served"].to_numpy(dtype=np.float64),
            "reason": reason.fillna("").to_numpy(),
        }
    )
    frame["unmet"] = frame["demand"] - frame["served"]
    for r in UNMET_REASONS:
        frame[f"unmet_{r}"] = np.where(frame["reason"] == r, frame["unmet"], 0.0)
    cols = ["demand", "served", "unmet"] + [f"unmet_{r}" for r in UNMET_REASONS]
    out = frame.groupby(["neighborhood", "category"], sort=True)[cols].sum().reset_index()
    out[cols] = out[cols].round(6)
    out["coverage"] = (out["served"] / out["demand"]).round(6)
    # neighborhoods as people sort them ("2" before "10"), categories within each
    return out.iloc[natural_order(out["neighborhood"])].reset_index(drop=True)
