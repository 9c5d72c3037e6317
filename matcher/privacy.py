"""Privacy of volunteers: the ~500 m grid, and the public view of a partners table.

A volunteer's exact point and contact are private: only an admin sees them. Everyone
else sees the point snapped to the centre of a ~500 m grid cell and no contact, and
every answer computed from a location (a distance, an order, an "in range" answer, a
plan) is computed from that grid point, so it tells no more than the grid point does.

Threat model and residual uncertainty: an adversary with any non-admin key may ask
any number of questions (nearby searches from chosen points, intake reports, plans
and their files). Because each answer is a function of the grid point only, the
most any number of answers can reveal is the grid cell: a rectangle about 500 m by
500 m (in longitude the step widens by 1/cos(latitude), so the cell stays ~500 m
wide). A volunteer anywhere in the cell gives the same answers. The price is
accuracy: a volunteer's travel radius is measured from the grid point, up to ~354 m
(half the cell's diagonal) from the true point.
"""

from __future__ import annotations

import math

import geopandas as gpd
import numpy as np
import pandas as pd

from .geo import EARTH_RADIUS_KM

__all__ = ["COARSEN_KM", "PRIVATE_FIELDS", "coarsen", "partners_view", "public_partners"]

#: Grid size, in km, to which a volunteer's point is coarsened outside admin views.
COARSEN_KM = 0.5
_DEG_PER_KM = 180.0 / (math.pi * EARTH_RADIUS_KM)  # degrees in one km of arc


def coarsen(
    lat: np.ndarray, lon: np.ndarray, km: float = COARSEN_KM
) -> tuple[np.ndarray, np.ndarray]:
    """Snap points to the centre of a ~``km`` grid cell (privacy of volunteers).

    The latitude step is ``km`` of arc; the longitude step is widened by 1/cos(lat)
    of the cell's latitude band so cells stay about ``km`` wide, capped near poles.

    Examples
    --------
    >>> lat, lon = coarsen(np.array([41.8812]), np.array([-87.6231]))
    >>> round(float(lat[0]), 4), round(float(lon[0]), 4)
    (41.8791, -87.6257)
    """
    step = km * _DEG_PER_KM
    clat = (np.floor(np.asarray(lat) / step) + 0.5) * step
    clat = np.clip(clat, -90.0, 90.0)
    lon_step = step / np.maximum(np.cos(np.radians(clat)), 0.01)
    clon = (np.floor((np.asarray(lon) + 180.0) / lon_step) + 0.5) * lon_step - 180.0
    return np.round(clat, 6), np.round(np.clip(clon, -180.0, 180.0), 6)


#: Fields of a volunteer that only an admin may see or change.
PRIVATE_FIELDS: tuple[str, ...] = ("lat", "lon", "contact")


def public_partners(partners: pd.DataFrame) -> pd.DataFrame:
    """Return the public view of a partners table: volunteers on the grid, no contacts.

    Parameters
    ----------
    partners : pandas.DataFrame
        ``partner_id, kind, lat, lon`` and optionally ``contact`` and a geometry.

    Returns
    -------
    pandas.DataFrame
        A copy; volunteers' ``lat``/``lon`` (and point geometry) are coarsened with
        :func:`coarsen`, their ``contact`` is empty; organizations are unchanged.

    Examples
    --------
    >>> df = pd.DataFrame({"partner_id": ["o", "v"], "kind": ["organization", "volunteer"],
    ...     "lat": [41.8812, 41.8812], "lon": [-87.6231, -87.6231], "contact": ["a", "b"]})
    >>> public_partners(df)[["lat", "lon", "contact"]].values.tolist()
    [[41.8812, -87.6231, 'a'], [41.879101, -87.625676, '']]
    """
    out = partners.copy()
    vol = (out["kind"].astype(str) == "volunteer").to_numpy()
    if not vol.any():
        return out
    lat, lon = coarsen(
        out["lat"].to_numpy(dtype=np.float64)[vol], out["lon"].to_numpy(dtype=np.float64)[vol]
    )
    out.loc[vol, "lat"] = lat
    out.loc[vol, "lon"] = lon
    if "contact" in out:
        out.loc[vol, "contact"] = ""
    if isinstance(out, gpd.GeoDataFrame):
        out = gpd.GeoDataFrame(
            out.drop(columns=out.geometry.name),
            geometry=gpd.points_from_xy(out["lon"], out["lat"]),
            crs=out.crs,
        )
    return out


def partners_view(partners: pd.DataFrame, *, exact_volunteers: bool) -> pd.DataFrame:
    """Return a plan's partners as its outputs show them, sorted by id.

    Parameters
    ----------
    partners : pandas.DataFrame
        A plan's partners table (a geometry column is dropped).
    exact_volunteers : bool
        True for an admin's view: volunteers at their exact points, with contacts.
        False: :func:`public_partners`.

    Returns
    -------
    pandas.DataFrame
        A copy with a ``coarsened`` column (whether ``lat``/``lon`` are a grid point).
    """
    out = pd.DataFrame(partners.drop(columns="geometry", errors="ignore")).copy()
    out["coarsened"] = (out["kind"] == "volunteer").to_numpy() & (not exact_volunteers)
    if not exact_volunteers:
        out = public_partners(out)
    return out.sort_values("partner_id").reset_index(drop=True)
