"""Eligible (cluster, partner) pairs from a spatial index, exact on the sphere."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .geo import chord_for_km, haversine_km, to_unit_vectors, within

__all__ = ["candidate_pairs", "partner_categories"]

logger = logging.getLogger(__name__)

#: Relative slack on the index radius; the exact great-circle test decides eligibility.
_INDEX_SLACK = 1e-9


def partner_categories(partners: pd.DataFrame) -> pd.DataFrame:
    """Return one row per (partner position, category) of a partners table.

    Parameters
    ----------
    partners : pandas.DataFrame
        With a ``categories`` column of ``;``-separated codes.

    Returns
    -------
    pandas.DataFrame
        Columns ``partner`` (the 0-based row position) and ``category``.
    """
    cats = partners["categories"].astype(str).str.split(";")
    out = pd.DataFrame({"partner": np.arange(len(partners)), "category": cats.to_numpy()})
    out = out.explode("category")
    return out[out["category"].astype(str) != ""].reset_index(drop=True)


def candidate_pairs(
    clusters: pd.DataFrame, partners: pd.DataFrame, *, radius_km: np.ndarray | None = None
) -> pd.DataFrame:
    """Find every eligible (cluster, partner) pair.

    A partner may serve a cluster when the cluster's category is among its
    categories and the great-circle distance from the partner to the cluster
    centroid is at most its ``radius_km``.

    Parameters
    ----------
    clusters : pandas.DataFrame
        ``category, centroid_lat, centroid_lon`` per cluster.
    partners : pandas.DataFrame
        ``categories, lat, lon, radius_km`` per partner.
    radius_km : numpy.ndarray, optional
        A radius per partner to use instead of its ``radius_km`` column.

    Returns
    -------
    pandas.DataFrame
        ``cluster`` and ``partner`` (0-based row positions) and ``distance_km``,
        sorted by cluster then partner.

    Notes
    -----
    Per category, a k-d tree over the clusters' 3-D unit vectors is queried with
    each partner's radius turned into a chord length (monotonic in great-circle
    distance, so the ball is exact anywhere on Earth, poles and antimeridian
    included), widened by a relative 1e-9; the haversine distance then decides (see
    :func:`matcher.geo.within`),
    so no pair at the radius edge is missed and no ineligible pair is kept.

    Examples
    --------
    >>> cl = pd.DataFrame({"category": ["food_access"], "centroid_lat": [0.0],
    ...                    "centroid_lon": [179.99]})
    >>> pa = pd.DataFrame({"categories": ["food_access", "education"], "lat": [0.0, 0.0],
    ...                    "lon": [-179.99, -179.99], "radius_km": [3.0, 3.0]})
    >>> candidate_pairs(cl, pa)[["cluster", "partner"]].values.tolist()
    [[0, 0]]
    """
    pc = partner_categories(partners)
    c_cat = clusters["category"].to_numpy()
    c_xyz = to_unit_vectors(clusters["centroid_lat"], clusters["centroid_lon"])
    p_xyz = to_unit_vectors(partners["lat"], partners["lon"])
    radius = (
        partners["radius_km"].to_numpy(dtype=np.float64)
        if radius_km is None
        else np.asarray(radius_km, dtype=np.float64)
    )
    found_c, found_p = [], []
    for category, group in pc.groupby("category", sort=True):
        cidx = np.flatnonzero(c_cat == category)
        if cidx.size == 0:
            continue
        pidx = group["partner"].to_numpy()
        tree = cKDTree(c_xyz[cidx])
        r = chord_for_km(radius[pidx]) * (1 + _INDEX_SLACK) + 1e-15
        hits = tree.query_ball_point(p_xyz[pidx], r)
        counts = np.fromiter((len(h) for h in hits), dtype=np.int64, count=len(hits))
        if counts.sum() == 0:
            continue
        found_p.append(np.repeat(pidx, counts))
        found_c.append(cidx[np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])])
    if not found_c:
        return pd.DataFrame(
            {
                "cluster": np.zeros(0, np.int64),
                "partner": np.zeros(0, np.int64),
                "distance_km": np.zeros(0),
            }
        )
    ci = np.concatenate(found_c)
    pi = np.concatenate(found_p)
    d = haversine_km(
        partners["lat"].to_numpy()[pi],
        partners["lon"].to_numpy()[pi],
        clusters["centroid_lat"].to_numpy()[ci],
        clusters["centroid_lon"].to_numpy()[ci],
    )
    keep = within(d, radius[pi])
    order = np.lexsort((pi[keep], ci[keep]))
    out = pd.DataFrame(
        {"cluster": ci[keep][order], "partner": pi[keep][order], "distance_km": d[keep][order]}
    )
    logger.debug("%d candidate pairs", len(out))
    return out
