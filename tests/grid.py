"""The volunteers' privacy grid, written out from its documented definition.

Independent of matcher's code (imports nothing from matcher), so that tests can check
that answers to non-admins are computed from the grid point.
"""

from __future__ import annotations

import numpy as np


def grid_point(lat, lon, km=0.5):
    """The privacy grid written out from its definition (not matcher's code): cells of
    km of arc in latitude (R = 6371.0088 km), widened by 1/cos(latitude of the cell's
    centre) in longitude, and the point moved to its cell's centre."""
    step = km / (6371.0088 * np.pi / 180.0)
    clat = min(max((np.floor(lat / step) + 0.5) * step, -90.0), 90.0)
    lon_step = step / max(np.cos(np.radians(clat)), 0.01)
    clon = (np.floor((lon + 180.0) / lon_step) + 0.5) * lon_step - 180.0
    return round(clat, 6), round(min(max(clon, -180.0), 180.0), 6)
