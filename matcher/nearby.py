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
from .geo import EARTH_RADIUS_KM, RADIUS_RTOL, haversine_km, to_unit_vectors, within
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
        ``partner_id, name, kind, categories, lat, lon, capacity, radius_km``,
        ``languages`` and ``free_capacity``; volunteers' points coarsened unless ``exact``.
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
        df["languages"] = (
            partners["languages"].fillna("").astype(str).to_numpy()
            if "languages" in partners else ""
        )  # fmt: skip
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
        id_rank = np.argsort(np.argsort(df["partner_id"].to_numpy().astype(str), kind="stable"))
        kinds = df["kind"].astype(str).tolist()
        free = df["free_capacity"].astype(float).tolist()
        # each partner's answer but its distance, as plain Python values ready for JSON
        rows = [
            {
                "partner_id": pid,
                "name": name,
                "kind": kind,
                "categories": [c for c in str(cats).split(";") if c],
                "capacity": capacity,
                "free_capacity": free_capacity,
                "lat": plat,
                "lon": plon,
                "languages": [x for x in str(langs).split(";") if x],
            }
            for pid, name, kind, cats, capacity, free_capacity, plat, plon, langs in zip(
                df["partner_id"].astype(str).tolist(),
                df["name"].astype(str).tolist(),
                kinds,
                df["categories"].tolist(),
                df["capacity"].astype(float).tolist(),
                free,
                df["lat"].astype(float).tolist(),
                df["lon"].astype(float).tolist(),
                df["languages"].tolist(),
                strict=True,
            )
        ]
        arrays: dict[str, Any] = {
            "rank": id_rank.tolist(), "kinds": kinds, "free": free, "rows": rows
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
            free_capacity, lat, lon, languages``; ties in distance are broken by ``partner_id``.

        Notes
        -----
        The k-d tree is asked for the nearest few partners first (``limit`` of them, more
        when filters drop some), then for every partner as near as the farthest of those
        when the tree cannot tell that none ties with it; the exact distances, the
        radius and the (distance, id) order are then decided on that set. The answer
        is the same as sorting every partner within the radius.

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
        cos_phi = math.cos(phi)
        point = np.array([cos_phi * math.cos(lmb), cos_phi * math.sin(lmb), math.sin(phi)])
        chord = 2.0 * math.sin(min(radius_km / EARTH_RADIUS_KM, math.pi) / 2.0) * (1 + 1e-9) + 1e-15
        a = self._arrays
        kinds, free = a["kinds"], a["free"]
        n = len(pos)
        want = limit
        while True:
            cand, chords, complete = self._nearest(tree, pos, point, chord, min(want, n))
            rows = [
                (c, i)
                for c, i in zip(chords, cand, strict=True)
                if (kind is None or kinds[i] == kind) and (not free_only or free[i] > 0)
            ]
            if complete or len(rows) >= limit or want >= n:
                break
            want *= 4  # the filters dropped too many: look further
        # great-circle km from the chord (exact in exact arithmetic); the haversine
        # formula of the contract decides for the few points at the radius edge
        scale, edge_tol = 2.0 * EARTH_RADIUS_KM, 1e-9 * max(radius_km, 1.0)
        most = radius_km * (1.0 + RADIUS_RTOL)  # geo.within
        rank, asin = a["rank"], math.asin
        found = []
        for c, i in rows:
            d = scale * asin(c / 2.0 if c < 2.0 else 1.0)
            if abs(d - radius_km) <= edge_tol:
                d = float(haversine_km(lat, lon, self._true_lat[i], self._true_lon[i]))
            if d <= most:
                found.append((d, rank[i], i))
        found.sort()
        answer = a["rows"]
        return [{**answer[i], "distance_km": round(d, 4)} for d, _, i in found[:limit]]

    def search(
        self,
        lat: float,
        lon: float,
        radius_km: float,
        *,
        category: str | None = None,
        kind: str | None = None,
        limit: int = 20,
        free_only: bool = False,
        fallback: int = 3,
        fallback_km: float = 500.0,
    ) -> dict[str, Any]:
        """Answer "what is near, with capacity": :meth:`query`, and where to go when nothing is.

        Returns
        -------
        dict
            ``results`` (:meth:`query`); ``nearest_free``: when no partner within the
            radius has free capacity, up to ``fallback`` nearest that have some, within
            ``fallback_km``, else ``[]``; ``in_radius``: then, how many partners (of the
            category and kind, full or not) are within the radius, counted up to 10,000,
            else None; ``statement``: what the answer means.
        """
        results = self.query(lat, lon, radius_km, category=category, kind=kind, limit=limit,
                             free_only=free_only)  # fmt: skip
        what = f"{category} " if category else ""
        if any(r["free_capacity"] > 0 for r in results):
            free = sum(r["free_capacity"] > 0 for r in results)
            return {"results": results, "nearest_free": [], "in_radius": None,
                    "statement": f"{free} {what}partner(s) with free capacity within "
                    f"{radius_km:g} km"}  # fmt: skip
        nearest = self.query(lat, lon, fallback_km, category=category, kind=kind,
                             limit=fallback, free_only=True)  # fmt: skip
        inside = len(results)  # every partner within the radius, unless filtered or cut
        if free_only or inside >= limit:
            inside = len(self.query(lat, lon, radius_km, category=category, kind=kind,
                                    limit=10_000))  # fmt: skip
        head = (
            f"none of the {inside} {what}partner(s) within {radius_km:g} km has free capacity"
            if inside
            else f"no {what}partner within {radius_km:g} km"
        )
        if nearest:
            first = nearest[0]
            tail = (
                f"; the nearest with capacity is {first['name']}, "
                f"{first['distance_km']:g} km away"
            )
        else:
            tail = f"; none with capacity within {fallback_km:g} km"
        return {"results": results, "nearest_free": nearest, "in_radius": inside,
                "statement": head + tail}  # fmt: skip

    def _nearest(
        self, tree: cKDTree, pos: npt.NDArray[np.int64], point: np.ndarray, chord: float, k: int
    ) -> tuple[list[int], list[float], bool]:
        """Return the ``k`` nearest within ``chord`` and every partner tied with them.

        Returns their positions and chord distances (unordered), and whether they are
        every partner within ``chord`` (else: a superset of the ``k`` nearest, ties
        included).
        """
        dist, idx = tree.query(point, k=k + 1 if k < len(pos) else k, distance_upper_bound=chord)
        dist, idx = np.atleast_1d(dist), np.atleast_1d(idx)
        found = int(np.isfinite(dist).sum())
        if found <= k:  # fewer than asked for within the chord: that is all of them
            return pos[idx[:found]].tolist(), dist[:found].tolist(), True
        # k found and one more: it is farther than the k-th beyond any rounding, or ties
        # with it (then every partner as near as the k-th, rounding included)
        kth = float(dist[k - 1]) * (1 + 1e-9) + 1e-15
        if dist[k] > kth:
            return pos[idx[:k]].tolist(), dist[:k].tolist(), False
        near = np.asarray(tree.query_ball_point(point, min(kth, chord)), dtype=np.int64)
        diff = self._xyz[pos[near]] - point
        return pos[near].tolist(), np.sqrt(np.einsum("ij,ij->i", diff, diff)).tolist(), False

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
