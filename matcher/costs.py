"""Per-unit cost terms of each eligible pair and their integer scaling."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from .config import MatchConfig

__all__ = ["COST_SCALE", "pair_costs", "priority_multiplier", "unmet_penalties"]

#: Integer cost units per km (metres): the solver's weights are round(cost_km * COST_SCALE).
COST_SCALE = 1000


def _language_mismatch(
    needs: pd.DataFrame,
    need_cluster: npt.NDArray[np.int64],
    n_clusters: int,
    pair_cluster: npt.NDArray[np.int64],
    partner_languages: npt.NDArray[np.str_],
    pair_partner: npt.NDArray[np.int64],
) -> npt.NDArray[np.float64]:
    """Demand per pair from needs whose requested languages the partner does not list."""
    mismatch = np.zeros(pair_cluster.size)
    langs = needs["languages"].to_numpy().astype(str)
    asked = langs != ""
    if not asked.any() or pair_cluster.size == 0:
        return mismatch
    demand = needs["demand"].to_numpy(dtype=np.float64)
    # each distinct language list of the partners is decided once, not per pair
    codes, spoken = pd.factorize(partner_languages)
    pair_spoken = codes[pair_partner]
    spoken_sets = [set(str(v).split(";")) - {""} for v in spoken]
    for langset in sorted(set(langs[asked])):
        wanted = set(langset.split(";"))
        per_cluster = np.zeros(n_clusters)
        sel = langs == langset
        np.add.at(per_cluster, need_cluster[sel], demand[sel])
        speaks = np.array([bool(s & wanted) for s in spoken_sets], dtype=bool)[pair_spoken]
        mismatch += np.where(speaks, 0.0, per_cluster[pair_cluster])
    return mismatch


def pair_costs(
    pairs: pd.DataFrame,
    clusters: pd.DataFrame,
    partners: pd.DataFrame,
    needs: pd.DataFrame,
    need_cluster_pos: npt.NDArray[np.int64],
    config: MatchConfig,
) -> pd.DataFrame:
    """Add the cost terms and the integer solver weight to candidate pairs.

    Parameters
    ----------
    pairs : pandas.DataFrame
        ``cluster, partner, distance_km`` from :func:`matcher.candidates.candidate_pairs`.
    clusters, partners, needs : pandas.DataFrame
        The tables the positions in ``pairs`` refer to.
    need_cluster_pos : numpy.ndarray of int
        The cluster position of each need.
    config : MatchConfig
        ``objective`` and ``language_penalty_km``.

    Returns
    -------
    pandas.DataFrame
        ``pairs`` plus ``language_km`` (the language term, km per unit), ``cost_per_unit``
        (km per unit) and ``weight`` (``round(cost_per_unit * 1000)``, an int64).

    Notes
    -----
    ``objective="distance"``: the cost of a unit is its distance in km.
    ``objective="default"``: the distance plus ``language_penalty_km`` times the
    share of the cluster's demand whose needs ask for languages none of which the
    partner lists. Weights are integers (metres), so the flow is exactly optimal
    for the scaled costs; the rounding is at most 0.5 m per unit.
    """
    out = pairs.copy()
    if config.objective == "default" and config.language_penalty_km > 0 and len(out):
        mismatch = _language_mismatch(
            needs,
            need_cluster_pos,
            len(clusters),
            out["cluster"].to_numpy(),
            partners["languages"].to_numpy().astype(str),
            out["partner"].to_numpy(),
        )
        share = mismatch / clusters["demand"].to_numpy(dtype=np.float64)[out["cluster"].to_numpy()]
        out["language_km"] = config.language_penalty_km * share
    else:
        out["language_km"] = 0.0
    out["cost_per_unit"] = out["distance_km"] + out["language_km"]
    out["weight"] = np.rint(out["cost_per_unit"].to_numpy() * COST_SCALE).astype(np.int64)
    return out


def priority_multiplier(
    severity: npt.NDArray[np.float64],
    config: MatchConfig,
    vulnerability: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.int64]:
    """Integer priority of a unit left unmet, per cluster (see :func:`unmet_penalties`).

    ``objective="default"``: ``40 + round(10 * severity)``; ``"distance"``: 1. With a
    vulnerability ``v`` in 0..1 per cluster (from its neighborhood), the priority is
    multiplied by ``100 + round(100 * vulnerability_weight * v)``.

    Examples
    --------
    >>> priority_multiplier(np.array([1.0, 5.0]), MatchConfig()).tolist()
    [50, 90]
    >>> priority_multiplier(np.array([3.0, 3.0]), MatchConfig(objective="distance"),
    ...                     np.array([0.0, 0.5])).tolist()
    [100, 150]
    """
    sev = np.asarray(severity, dtype=np.float64)
    if config.objective == "distance":
        mult = np.ones(sev.size, dtype=np.int64)
    else:
        mult = 40 + np.rint(10 * sev).astype(np.int64)
    if vulnerability is not None:
        v = np.asarray(vulnerability, dtype=np.float64)
        mult = mult * (100 + np.rint(100 * config.vulnerability_weight * v).astype(np.int64))
    return mult


def unmet_penalties(
    pairs: pd.DataFrame,
    cluster_component: npt.NDArray[np.int64],
    partner_component: npt.NDArray[np.int64],
    multiplier: npt.NDArray[np.int64],
    extra_weight: int = 0,
    *,
    partner_side: bool = True,
) -> npt.NDArray[np.int64]:
    """Integer penalty per unit left unmet, per cluster: ``B * multiplier``.

    Within each connected component of the candidate graph, the penalty base ``B``
    exceeds the cost of any simple path of cluster-partner arcs in the residual
    graph (at most one forward arc per cluster, and per partner), so an optimal flow
    first serves as many units as possible. The ``multiplier`` (see
    :func:`priority_multiplier`) then sets who is served first when capacity is
    short (between two clusters the one with the higher multiplier), and only then is
    cost minimised. ``B`` is computed per component, which keeps the numbers small
    and makes a decomposed solve identical to a single one. ``extra_weight`` is
    added to every pair's weight in the bound (a churn penalty can raise arc costs).

    A simple cycle visits a cluster at most once, so its forward pair arcs cost at
    most the sum over clusters of their largest weight; likewise over partners when
    every arc into a partner enters it directly. With partner share caps the arcs of
    one partner enter several ``(partner, neighborhood)`` nodes, so
    ``partner_side=False`` keeps only the cluster-side sum.

    Returns
    -------
    numpy.ndarray of int64
        One penalty per cluster.
    """
    n_comp = int(max(cluster_component.max(initial=-1), partner_component.max(initial=-1))) + 1
    w = pairs["weight"].to_numpy(dtype=np.int64) + int(extra_weight)
    max_c = np.zeros(cluster_component.size, dtype=np.int64)
    max_p = np.zeros(partner_component.size, dtype=np.int64)
    np.maximum.at(max_c, pairs["cluster"].to_numpy(), w)
    np.maximum.at(max_p, pairs["partner"].to_numpy(), w)
    sum_c = np.bincount(cluster_component, weights=max_c, minlength=n_comp)
    sum_p = np.bincount(partner_component, weights=max_p, minlength=n_comp)
    bound = np.minimum(sum_c, sum_p) if partner_side else sum_c
    base = (1 + bound.astype(np.int64))[cluster_component]
    return base * np.asarray(multiplier, dtype=np.int64)
