"""Nearby search: partners within a great-circle radius of a point, with free capacity."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.spatial import cKDTree

from .candidates import partner_categories
from .geo import EARTH_RADIUS_KM, haversine_km, to_unit_vectors, within
from .privacy import public_partners

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
        ``free_capacity``; volunteers' points coarsened unless ``exact``.
    """

    partners: pd.DataFrame
    _xyz: npt.NDArray[np.float64] = field(repr=False)
    _trees: dict[str, tuple[cKDTree, npt.NDArray[np.int64]]] = field(repr=False)
    _true_lat: npt.NDArray[np.float64] = field(repr=False)
    _true_lon: npt.NDArray[np.float64] = field(repr=False)
    _arrays: dict[str, Any] = field(repr=False)

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
            Answer from volunteers' exact points (admin views only). Otherwise each
            volunteer is indexed at its ~500 m grid point (:mod:`matcher.privacy`), so
            every distance, order and "within radius" answer is computed from the grid
            point and reveals no more than it does.

        Returns
        -------
        NearbyIndex
        """
        cols = ["partner_id", "name", "kind", "categories", "lat", "lon", "capacity", "radius_km"]
        df = pd.DataFrame(partners[cols]).reset_index(drop=True).copy()
        used = df["partner_id"].map(usage or {}).fillna(0.0).to_numpy(dtype=np.float64)
        df["free_capacity"] = np.maximum(df["capacity"].to_numpy(dtype=np.float64) - used, 0.0)
        if not exact:
            df = public_partners(df)
        true_lat = df["lat"].to_numpy(dtype=np.float64).copy()
        true_lon = df["lon"].to_numpy(dtype=np.float64).copy()
        xyz = to_unit_vectors(true_lat, true_lon)
        trees = {_ALL: (cKDTree(xyz), np.arange(len(df)))} if len(df) else {}
        for category, group in partner_categories(df).groupby("category", sort=True):
            pos = group["partner"].to_numpy()
            trees[str(category)] = (cKDTree(xyz[pos]), pos)
        arrays: dict[str, Any] = {
            "id_rank": np.argsort(
                np.argsort(df["partner_id"].to_numpy().astype(str), kind="stable")
            ),
            "kind": df["kind"].to_numpy().astype(str),
            # plain Python values, ready for JSON without per-query conversions
            "ids": df["partner_id"].astype(str).tolist(),
            "kinds": df["kind"].astype(str).tolist(),
            "name": df["name"].astype(str).tolist(),
            "categories": [[c for c in str(v).split(";") if c] for v in df["categories"]],
            "capacity": df["capacity"].astype(float).tolist(),
            "free_capacity": np.asarray(df["free_capacity"], dtype=np.float64),
            "free_list": df["free_capacity"].astype(float).tolist(),
            "lat": df["lat"].astype(float).tolist(),
            "lon": df["lon"].astype(float).tolist(),
        }
        return cls(df, xyz, trees, true_lat, true_lon, arrays)

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
        if entry is None or limit < 1:
            return []
        tree, pos = entry
        phi, lmb = math.radians(lat), math.radians(lon)
        point = np.array(
            [math.cos(phi) * math.cos(lmb), math.cos(phi) * math.sin(lmb), math.sin(phi)]
        )
        chord = 2.0 * math.sin(min(radius_km / EARTH_RADIUS_KM, math.pi) / 2.0) * (1 + 1e-9) + 1e-15
        hits = tree.query_ball_point(point, chord)
        if not hits:
            return []
        cand = pos[hits]
        a = self._arrays
        if kind is not None:
            cand = cand[a["kind"][cand] == kind]
        if free_only:
            cand = cand[a["free_capacity"][cand] > 0]
        diff = self._xyz[cand] - point
        # great-circle km from the chord (exact in exact arithmetic); the haversine
        # formula of the contract decides for the few points at the radius edge
        d = (2.0 * EARTH_RADIUS_KM) * np.arcsin(
            np.minimum(np.sqrt(np.einsum("ij,ij->i", diff, diff)) / 2.0, 1.0)
        )
        edge = np.abs(d - radius_km) <= 1e-9 * max(radius_km, 1.0)
        if edge.any():
            d[edge] = haversine_km(lat, lon, self._true_lat[cand[edge]], self._true_lon[cand[edge]])
        keep = within(d, radius_km)
        cand, d = cand[keep], d[keep]
        top = np.lexsort((a["id_rank"][cand], d))[:limit]
        cand, d = cand[top], d[top]
        return [
            {
                "partner_id": a["ids"][i],
                "name": a["name"][i],
                "kind": a["kinds"][i],
                "categories": a["categories"][i],
                "distance_km": dist,
                "capacity": a["capacity"][i],
                "free_capacity": a["free_list"][i],
                "lat": a["lat"][i],
                "lon": a["lon"][i],
            }
            for i, dist in zip(cand.tolist(), np.round(d, 4).tolist(), strict=True)
        ]

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
        ok = within(d, self.partners["radius_km"].to_numpy()[pos])
        out = self.partners.iloc[pos[ok]].assign(distance_km=d[ok])
        return out.sort_values(["distance_km", "partner_id"], kind="stable")
