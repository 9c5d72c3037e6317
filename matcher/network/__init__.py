"""Travel on real streets: network distance and time between partners and clusters.

With a street network (``matcher plan --travel walk|drive --network FILE``), a partner
may serve a cluster when the street distance is within its ``radius_km`` (and the
travel time within its ``radius_min``, when it has one), and the cost of a unit is the
street distance. Candidates still come from the great-circle index, since a street
trip is never shorter than the straight line; then one bounded Dijkstra search per
partner gives the exact street cost of each candidate. The solve is unchanged and exact.

* :mod:`matcher.network.readers`: the file formats (GeoPackage, OSMnx GraphML, OSM PBF).
* :mod:`matcher.network.model`: the directed network, its directions and speeds.
* :mod:`matcher.network.paths`: snapping and the many-to-many shortest paths.
"""

from .model import (
    DEFAULT_DRIVE_KMH,
    DRIVE_SPEEDS_KMH,
    MODES,
    WALK_SPEED_KMH,
    StreetNetwork,
    build_network,
)
from .paths import shortest, snap_problems, street_pairs, trip_minutes
from .readers import FORMATS, read_network

__all__ = [
    "DEFAULT_DRIVE_KMH",
    "DRIVE_SPEEDS_KMH",
    "FORMATS",
    "MODES",
    "StreetNetwork",
    "WALK_SPEED_KMH",
    "build_network",
    "read_network",
    "shortest",
    "snap_problems",
    "street_pairs",
    "trip_minutes",
]
