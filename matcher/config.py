"""The validated, immutable configuration of a planning run."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ._errors import InputValidationError, Problem
from .limits import (
    MAX_CLUSTER_KM,
    MAX_MIN_SAMPLES,
    MAX_RADIUS_MIN,
    MAX_SEED,
    MAX_SNAP_M,
    MAX_WEIGHT,
    MIN_CLUSTER_KM,
)
from .taxonomy import Taxonomy, default_taxonomy

__all__ = [
    "DEFAULT_RECRUIT_RADIUS_KM",
    "MatchConfig",
    "OBJECTIVES",
    "PARAMETER_BOUNDS",
    "SOLVERS",
    "TRAVEL",
    "VOLUNTEER_POINTS",
]

#: Where volunteers are placed in a plan: their exact point, or their ~500 m grid point
#: (:mod:`matcher.privacy`), so that the plan and every file of it can be shown to anyone.
VOLUNTEER_POINTS: tuple[str, ...] = ("exact", "grid")
#: The solver backends.
SOLVERS: tuple[str, ...] = ("lemon", "ortools", "networkx")

#: How travel is measured: the great-circle line, or a street network for one mode.
TRAVEL: tuple[str, ...] = ("straight", "walk", "drive")

#: The objectives a plan can optimise.
OBJECTIVES: tuple[str, ...] = ("default", "distance")


@dataclass(frozen=True)
class MatchConfig:
    """Every parameter of a planning run, validated at construction.

    Parameters
    ----------
    objective : {"default", "distance"}
        ``"distance"``: serve as many units as possible, then minimise units x km.
        ``"default"``: serve as many units as possible, serving higher severity first
        when capacity is short, then minimise units x (km + language penalty).
    cluster_km : float
        The density scale of the clustering, in km: needs of one category closer than
        this are neighbours (DBSCAN ``eps`` on great-circle distance).
    min_samples : int
        DBSCAN ``min_samples``: neighbours (including itself) a need needs to be a
        cluster core. Needs that are not dense enough become clusters of one.
    max_cluster_radius_km : float
        No member of a cluster lies farther than this from its centroid; larger
        density clusters are split by seeded k-means.
    language_penalty_km : float
        ``"default"`` objective only: the cost, in km per unit, of serving demand whose
        needs ask for languages the partner does not list.
    quantum : float
        Resolution of demand and capacity, in units. The solver works on integer
        multiples of it; inputs are rounded to it.
    seed : int
        Seed for the k-means splitting of oversize clusters.
    solver : {"lemon", "ortools", "networkx"}
        The exact min-cost-flow backend: LEMON's network simplex in C++ (pylmcf; the
        default, the fastest measured) or OR-Tools' C++ cost-scaling solver, both on
        arrays component by component, or networkx's network simplex on the networkx
        graph.
    on_invalid : {"raise", "skip"}
        What to do with invalid input rows: reject the input, or skip them and report.
    taxonomy : Taxonomy
        The category taxonomy.
    min_coverage : float
        Equity floor, 0..1: the share of each neighborhood's demand the plan serves
        before it improves cost anywhere (see :mod:`matcher.equity`). A neighborhoods
        file may override it per neighborhood with a ``min_coverage`` column.
    vulnerability_column : str or None
        A numeric column of the neighborhoods file (e.g. ``hardship_index``) whose
        min-max normalised value ``v`` (0..1) raises the priority of needs there: their
        unmet penalty is multiplied by ``1 + vulnerability_weight * v``.
    vulnerability_weight : float
        See ``vulnerability_column``; >= 0.
    max_partner_share : float
        0 < share <= 1: at most this share of one partner's capacity goes to one
        neighborhood (1 = no cap).
    churn_penalty_km : float
        With a previous plan: the cost, in km per unit, of every unit not kept on one of
        the previous plan's pairs (0 = no preference).
    volunteer_points : {"exact", "grid"}
        ``"grid"`` plans every volunteer at its ~500 m grid point
        (:func:`matcher.privacy.coarsen`), so that nothing in the plan (distances,
        eligibility, assignments) is computed from a volunteer's exact home and the
        plan may be shown to anyone; radii are then measured from the grid point (up to
        ~354 m off). The service always plans this way.
    travel : {"straight", "walk", "drive"}
        ``"straight"``: great-circle distances. ``"walk"`` or ``"drive"``: distances and
        times on a street network of that mode (given to :func:`matcher.plan` as
        ``network=``); ``radius_km`` is then a street distance.
    radius_min : float or None
        With a street network: the travel time limit, minutes, of partners that have no
        ``radius_min`` of their own (None: no time limit).
    max_snap_m : float
        With a street network: the farthest a need or partner may lie from the nearest
        network node, metres; a point farther is an invalid row.

    Examples
    --------
    >>> MatchConfig(objective="distance").objective
    'distance'
    >>> MatchConfig(cluster_km=-1)
    Traceback (most recent call last):
    ...
    matcher._errors.InputValidationError: 1 problem(s) in the input:
      - field 'cluster_km', value '-1': must be a finite number >= 0.001 and <= 100
    """

    objective: Literal["default", "distance"] = "default"
    cluster_km: float = 0.5
    min_samples: int = 3
    max_cluster_radius_km: float = 1.5
    language_penalty_km: float = 2.0
    quantum: float = 0.1
    seed: int = 0
    solver: Literal["lemon", "ortools", "networkx"] = "lemon"
    on_invalid: Literal["raise", "skip"] = "raise"
    taxonomy: Taxonomy = field(default_factory=default_taxonomy)
    min_coverage: float = 0.0
    vulnerability_column: str | None = None
    vulnerability_weight: float = 1.0
    max_partner_share: float = 1.0
    churn_penalty_km: float = 0.0
    volunteer_points: Literal["exact", "grid"] = "exact"
    travel: Literal["straight", "walk", "drive"] = "straight"
    radius_min: float | None = None
    max_snap_m: float = 500.0

    @property
    def by_neighborhood(self) -> bool:
        """Whether clusters are formed within neighborhoods (any neighborhood equity option)."""
        return (
            self.min_coverage > 0
            or self.vulnerability_column is not None
            or self.max_partner_share < 1
        )

    def __post_init__(self) -> None:
        problems: list[Problem] = []

        def bad(name: str, reason: str) -> None:
            problems.append(Problem(None, None, name, getattr(self, name), reason))

        if self.objective not in OBJECTIVES:
            bad("objective", f"must be one of {', '.join(OBJECTIVES)}")
        for name, (low, high, low_open) in PARAMETER_BOUNDS.items():
            value = getattr(self, name)
            integer = name in _INTEGERS
            ok = _is_number(value) and (isinstance(value, int) or not integer)
            ok = ok and math.isfinite(value) and value <= high
            ok = ok and (value > low if low_open else value >= low)
            if not ok:
                what = "an integer" if integer else "a finite number"
                bad(name, f"must be {what} {'>' if low_open else '>='} {low:g} and <= {high:,.12g}")
        if self.solver not in SOLVERS:
            bad("solver", "must be 'lemon', 'ortools' or 'networkx'")
        if self.on_invalid not in ("raise", "skip"):
            bad("on_invalid", "must be 'raise' or 'skip'")
        if self.volunteer_points not in VOLUNTEER_POINTS:
            bad("volunteer_points", f"must be one of {', '.join(VOLUNTEER_POINTS)}")
        if self.vulnerability_column is not None and (
            not isinstance(self.vulnerability_column, str) or not self.vulnerability_column
        ):
            bad("vulnerability_column", "must be a column name of the neighborhoods file")
        if self.travel not in TRAVEL:
            bad("travel", f"must be one of {', '.join(TRAVEL)}")
        if self.radius_min is not None:
            value = self.radius_min
            if not (_is_number(value) and math.isfinite(value) and 0 < value <= MAX_RADIUS_MIN):
                bad("radius_min", f"must be a number of minutes > 0 and <= {MAX_RADIUS_MIN:g}")
            elif self.travel == "straight":
                bad("radius_min", "needs a street network: travel 'walk' or 'drive'")
        if not isinstance(self.taxonomy, Taxonomy):
            bad("taxonomy", "must be a matcher.Taxonomy")
        if problems:
            raise InputValidationError(problems)

    def parameters(self) -> dict[str, Any]:
        """Return the parameters as a JSON-serialisable dict (for the plan summary)."""
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "on_invalid"}
        if self.travel == "straight":  # the parameters of straight-line plans are as before
            for name in ("travel", "radius_min", "max_snap_m"):
                del d[name]
        d["taxonomy"] = list(self.taxonomy.codes)
        return d


#: Travel radius (km) of a suggested new partner (recruit sites) unless one is given.
DEFAULT_RECRUIT_RADIUS_KM = 2.0

#: The range of every numeric parameter: ``name: (low, high, low is open)``. The CLI's
#: options and the service's plan request take their bounds from here.
PARAMETER_BOUNDS: dict[str, tuple[float, float, bool]] = {
    "cluster_km": (MIN_CLUSTER_KM, MAX_CLUSTER_KM, False),
    "min_samples": (1, MAX_MIN_SAMPLES, False),
    "max_cluster_radius_km": (MIN_CLUSTER_KM, MAX_CLUSTER_KM, False),
    "language_penalty_km": (0.0, MAX_WEIGHT, False),
    "quantum": (0.001, 1000.0, False),
    "seed": (0, MAX_SEED, False),
    "min_coverage": (0.0, 1.0, False),
    "vulnerability_weight": (0.0, MAX_WEIGHT, False),
    "max_partner_share": (0.0, 1.0, True),
    "churn_penalty_km": (0.0, MAX_WEIGHT, False),
    "max_snap_m": (1.0, MAX_SNAP_M, False),
}
_INTEGERS = frozenset({"min_samples", "seed"})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
