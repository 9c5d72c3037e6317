"""Nearby search: partners within a great-circle radius of a point, with free capacity."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.spatial import cKDTree

from .candidates import partner_categories
from .geo import chord_for_km, haversine_km, to_unit_vectors
from .output import coarsen

__all__ = ["NearbyIndex"]

_ALL = "*"


@dataclass(frozen=True)
class NearbyIndex:
    """An in-memory index of partners for "what is near this point" questions.

    Build it once per change of the partners (or of the plan whose allocations give
    the free capacity) with :meth:`from_frame`; queries are then exact great-circle
    radius searches through k-d trees over unit vectors, one per category plus one
    over all partners.

    Attributes
    ----------
    partners : pandas.DataFrame
        ``partner_id, name, kind, categories, lat, lon, capacity, radius_km`` and
        ``free_capacity``; volunteers' points already coarsened unless ``exact``.
    """

    partners: pd.DataFrame
    _xyz: npt.NDArray[np.float64] = field(repr=False)
    _trees: dict[str, tuple[cKDTree, npt.NDArray[np.int64]]] = field(repr=False)
    _true_lat: npt.NDArray[np.float64] = field(repr=False)
    _true_lon: npt.NDArray[np.float64] = field(repr=False)

    @classmethod
    def from_frame(
        cls, partners: pd.DataFrame, usage: dict[str, float] | None = None, *, exact: bool = False
    ) -> NearbyIndex:
        """Index a partners table.

        Parameters
        ----------
        partners : pandas.DataFrame
            Validated partners (``matcher.read_partners(...).frame`` or a store's).
        usage : dict, optional
            Units allocated per ``partner_id`` by the latest plan; free capacity is
            capacity minus usage (never below 0).
        exact : bool
            Report volunteers' exact points (admin views only). Distances are always
            computed from the true points; only the reported point is coarsened.

        Returns
        -------
        NearbyIndex
        """
        cols = ["partner_id", "name", "kind", "categories", "lat", "lon", "capacity", "radius_km"]
        df = pd.DataFrame(partners[cols]).reset_index(drop=True).copy()
        used = df["partner_id"].map(usage or {}).fillna(0.0).to_numpy(dtype=np.float64)
        df["free_capacity"] = np.maximum(df["capacity"].to_numpy(dtype=np.float64) - used, 0.0)
        true_lat = df["lat"].to_numpy(dtype=np.float64).copy()
        true_lon = df["lon"].to_numpy(dtype=np.float64).copy()
        vol = (df["kind"] == "volunteer").to_numpy()
        if not exact and vol.any():
            df.loc[vol, "lat"], df.loc[vol, "lon"] = coarsen(true_lat[vol], true_lon[vol])
        xyz = to_unit_vectors(true_lat, true_lon)
        trees = {_ALL: (cKDTree(xyz), np.arange(len(df)))} if len(df) else {}
        for category, group in partner_categories(df).groupby("category", sort=True):
            pos = group["partner"].to_numpy()
            trees[str(category)] = (cKDTree(xyz[pos]), pos)
        return cls(df, xyz, trees, true_lat, true_lon)

    def query(
        self,
        lat: float,
        lon: float,
        radius_km: float,
        *,
        category: str | None = None,
        kind: str | None = None,
        limit: int = 20,
        free_only: bool = False,
    ) -> list[dict[str, Any]]:
        """Partners within ``radius_km`` (great circle) of a point, nearest first.

        Parameters
        ----------
        lat, lon : float
            The point, degrees WGS84.
        radius_km : float
            Search radius in km.
        category : str, optional
            Only partners offering this (canonical) category.
        kind : {"organization", "volunteer"}, optional
            Only partners of this kind.
        limit : int
            At most this many results.
        free_only : bool
            Only partners with free capacity.

        Returns
        -------
        list of dict
            ``partner_id, name, kind, categories, distance_km, capacity,
            free_capacity, lat, lon``; ties in distance are broken by ``partner_id``.

        Examples
        --------
        >>> df = pd.DataFrame({"partner_id": ["a", "b"], "name": ["A", "B"],
        ...     "kind": ["organization"] * 2, "categories": ["food_access", "education"],
        ...     "lat": [41.88, 41.90], "lon": [-87.63, -87.63], "capacity": [10.0, 5.0],
        ...     "radius_km": [3.0, 3.0]})
        >>> idx = NearbyIndex.from_frame(df, {"a": 4.0})
        >>> [(r["partner_id"], r["free_capacity"]) for r in idx.query(41.881, -87.63, 5)]
        [('a', 6.0), ('b', 5.0)]
        >>> [r["partner_id"] for r in idx.query(41.881, -87.63, 5, category="education")]
        ['b']
        """
        entry = self._trees.get(category if category is not None else _ALL)
        if entry is None:
            return []
        tree, pos = entry
        point = to_unit_vectors([lat], [lon])[0]
        hits = tree.query_ball_point(point, float(chord_for_km(radius_km)) * (1 + 1e-9) + 1e-15)
        if not hits:
            return []
        cand = pos[np.asarray(hits, dtype=np.int64)]
        d = haversine_km(lat, lon, self._true_lat[cand], self._true_lon[cand])
        keep = d <= radius_km
        df = self.partners
        if kind is not None:
            keep &= df["kind"].to_numpy()[cand] == kind
        if free_only:
            keep &= df["free_capacity"].to_numpy()[cand] > 0
        cand, d = cand[keep], d[keep]
        order = np.lexsort((df["partner_id"].to_numpy()[cand].astype(str), d))[:limit]
        rows = df.iloc[cand[order]]
        out = []
        for rec, dist in zip(rows.to_dict("records"), d[order].tolist(), strict=True):
            out.append(
                {
                    "partner_id": rec["partner_id"],
                    "name": rec["name"],
                    "kind": rec["kind"],
                    "categories": [c for c in str(rec["categories"]).split(";") if c],
                    "distance_km": round(dist, 4),
                    "capacity": float(rec["capacity"]),
                    "free_capacity": float(rec["free_capacity"]),
                    "lat": float(rec["lat"]),
                    "lon": float(rec["lon"]),
                }
            )
        return out

    def reachable(self, lat: float, lon: float, category: str) -> pd.DataFrame:
        """Partners offering ``category`` whose own radius reaches the point.

        Returns
        -------
        pandas.DataFrame
            Rows of :attr:`partners` plus ``distance_km``, nearest first.
        """
        entry = self._trees.get(category)
        if entry is None:
            return self.partners.iloc[:0].assign(distance_km=[])
        _, pos = entry
        d = haversine_km(lat, lon, self._true_lat[pos], self._true_lon[pos])
        ok = d <= self.partners["radius_km"].to_numpy()[pos]
        out = self.partners.iloc[pos[ok]].assign(distance_km=d[ok])
        return out.sort_values(["distance_km", "partner_id"], kind="stable")
