"""What the outreach page asks besides "what is near": places by name, and whom to escalate to.

:class:`Places` is an offline gazetteer of the store: neighborhood names (at a point inside
each polygon) and organizations' names (at their points). Volunteers are never places: a
volunteer's name must not lead to a point computed from where they live.
:class:`NeighborhoodLookup` finds the neighborhood holding a point and its escalation
contact (the neighborhood's ``escalation_contact`` property, else the service's default).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import shapely

from .limits import MAX_TEXT_CHARS

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd

__all__ = [
    "ESCALATION_PROPERTY",
    "MAX_PLACE_QUERY_CHARS",
    "MAX_PLACES",
    "NeighborhoodLookup",
    "Places",
]

#: The neighborhood property naming whom an outreach worker escalates to there.
ESCALATION_PROPERTY = "escalation_contact"
#: Longest place query, in characters, and most places one search returns.
MAX_PLACE_QUERY_CHARS = 100
MAX_PLACES = 20


def fold(text: str) -> str:
    """Return ``text`` for matching: accents removed, case folded, spaces collapsed.

    Examples
    --------
    >>> fold("  Pilsen   Tacos Doña  ")
    'pilsen tacos dona'
    """
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


@dataclass(frozen=True)
class Places:
    """Neighborhoods and organizations found by name (an offline gazetteer).

    Build it with :meth:`from_store_frames` whenever the data change; :meth:`search` is a
    scan of folded names (a city has thousands of places, not millions).

    Attributes
    ----------
    places : list of dict
        ``name, kind ("neighborhood" | "organization"), id, lat, lon``, sorted by kind
        (neighborhoods first), folded name and id.
    """

    places: list[dict[str, Any]]
    _folded: list[str] = field(repr=False)

    @classmethod
    def from_store_frames(
        cls, neighborhoods: gpd.GeoDataFrame | None, partners: pd.DataFrame | None
    ) -> Places:
        """Index the neighborhoods' names and the organizations' names.

        Parameters
        ----------
        neighborhoods : geopandas.GeoDataFrame or None
            ``neighborhood_id, name`` and polygons (EPSG:4326); each is placed at its
            ``representative_point`` (always inside the polygon).
        partners : pandas.DataFrame or None
            ``partner_id, name, kind, lat, lon``; only organizations become places.

        Returns
        -------
        Places
        """
        rows: list[tuple[int, str, str, dict[str, Any]]] = []
        if neighborhoods is not None and len(neighborhoods):
            points = shapely.point_on_surface(neighborhoods.geometry.to_numpy())
            for nid, name, pt in zip(
                neighborhoods["neighborhood_id"].astype(str), neighborhoods["name"].astype(str),
                points, strict=True,
            ):  # fmt: skip
                place = {"name": name, "kind": "neighborhood", "id": nid,
                         "lat": round(float(pt.y), 6), "lon": round(float(pt.x), 6)}  # fmt: skip
                rows.append((0, fold(name), nid, place))
        if partners is not None and len(partners):
            orgs = partners[partners["kind"].astype(str) == "organization"]
            for pid, name, lat, lon in zip(
                orgs["partner_id"].astype(str), orgs["name"].astype(str),
                orgs["lat"].to_numpy(dtype=np.float64), orgs["lon"].to_numpy(dtype=np.float64),
                strict=True,
            ):  # fmt: skip
                place = {"name": name or pid, "kind": "organization", "id": pid,
                         "lat": float(lat), "lon": float(lon)}  # fmt: skip
                rows.append((1, fold(name or pid), pid, place))
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        return cls([r[3] for r in rows], [r[1] for r in rows])

    def search(self, query: str, limit: int = 8) -> list[dict[str, Any]]:
        """Return the places whose name holds every word of ``query``, best first.

        A name equal to the query comes first, then names starting with it, then names
        with a word starting with it, then the rest; within each, neighborhoods before
        organizations, then by name and id. A neighborhood's id matches it too.

        Parameters
        ----------
        query : str
            At most :data:`MAX_PLACE_QUERY_CHARS` characters (longer queries are cut).
        limit : int
            At most this many places (1 to :data:`MAX_PLACES`).

        Returns
        -------
        list of dict

        Examples
        --------
        >>> import geopandas as gpd, pandas as pd
        >>> from shapely.geometry import box
        >>> hoods = gpd.GeoDataFrame({"neighborhood_id": ["31"], "name": ["Lower West Side"]},
        ...                          geometry=[box(-87.68, 41.84, -87.64, 41.86)], crs=4326)
        >>> orgs = pd.DataFrame({"partner_id": ["o1"], "name": ["West Side Pantry"],
        ...     "kind": ["organization"], "lat": [41.85], "lon": [-87.66]})
        >>> [p["name"] for p in Places.from_store_frames(hoods, orgs).search("west side")]
        ['West Side Pantry', 'Lower West Side']
        >>> [p["id"] for p in Places.from_store_frames(hoods, orgs).search("31")]
        ['31']
        """
        q = fold(query[:MAX_PLACE_QUERY_CHARS])
        limit = max(1, min(int(limit), MAX_PLACES))
        if not q:
            return []
        words = q.split()
        found = []
        for pos, (name, place) in enumerate(zip(self._folded, self.places, strict=True)):
            by_id = place["kind"] == "neighborhood" and fold(place["id"]) == q
            if not by_id and not all(w in name for w in words):
                continue
            if name == q or by_id:
                tier = 0
            elif name.startswith(q):
                tier = 1
            elif any(part.startswith(words[0]) for part in name.split()):
                tier = 2
            else:
                tier = 3
            found.append((tier, pos))
        found.sort()
        return [dict(self.places[pos]) for _, pos in found[:limit]]


@dataclass(frozen=True)
class NeighborhoodLookup:
    """The neighborhood holding a point, and whom to escalate to there.

    Attributes
    ----------
    default_contact : str
        The contact when the point is in no neighborhood, or its neighborhood names none.
    """

    neighborhoods: gpd.GeoDataFrame | None
    default_contact: str = ""
    _tree: Any = field(default=None, repr=False)
    _ids: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if len(self.default_contact) > MAX_TEXT_CHARS:
            raise ValueError(f"the default escalation contact is over {MAX_TEXT_CHARS} characters")
        if self.neighborhoods is not None and len(self.neighborhoods):
            object.__setattr__(self, "_tree", shapely.STRtree(self.neighborhoods.geometry))
            object.__setattr__(self, "_ids", self.neighborhoods["neighborhood_id"].astype(str)
                               .tolist())  # fmt: skip

    def locate(self, lat: float, lon: float) -> dict[str, Any] | None:
        """Return ``neighborhood_id, name, escalation_contact`` of the point's neighborhood.

        When polygons overlap, the smallest id (as text) wins, as in a plan. None when the
        point is in no neighborhood.

        Examples
        --------
        >>> import geopandas as gpd
        >>> from shapely.geometry import box
        >>> hoods = gpd.GeoDataFrame({"neighborhood_id": ["8"], "name": ["Near North Side"],
        ...     "escalation_contact": ["CAPS office, 312-555-0108"]},
        ...     geometry=[box(-87.64, 41.88, -87.61, 41.91)], crs=4326)
        >>> NeighborhoodLookup(hoods, "311").locate(41.9, -87.62)["escalation_contact"]
        'CAPS office, 312-555-0108'
        >>> NeighborhoodLookup(hoods, "311").locate(41.7, -87.62) is None
        True
        """
        if self._tree is None or self.neighborhoods is None:
            return None
        hits = self._tree.query(shapely.points(lon, lat), predicate="intersects")
        if not len(hits):
            return None
        ids = self._ids
        row = self.neighborhoods.iloc[min((int(h) for h in hits), key=lambda h: ids[h])]
        return {
            "neighborhood_id": str(row["neighborhood_id"]),
            "name": str(row["name"]),
            "escalation_contact": self.contact_of(row),
        }

    def contact_of(self, row: Any) -> str:
        """Return the escalation contact of a neighborhood row (else the default)."""
        value = row.get(ESCALATION_PROPERTY) if hasattr(row, "get") else None
        if isinstance(value, str) and value.strip():
            return value.strip()
        return self.default_contact

    def contact_at(self, lat: float, lon: float) -> str:
        """Return whom to escalate to at a point: its neighborhood's contact, else the default."""
        found = self.locate(lat, lon)
        return self.default_contact if found is None else str(found["escalation_contact"])

    def neighborhood_id(self, lat: float, lon: float) -> str:
        """Return the id of the neighborhood holding the point ('' for none)."""
        found = self.locate(lat, lon)
        return "" if found is None else str(found["neighborhood_id"])
