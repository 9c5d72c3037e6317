"""matcher: cluster assessed community needs and recommend partners, exactly optimally."""

from importlib.metadata import PackageNotFoundError, version

from ._errors import (
    InfeasibleMatchError,
    InputValidationError,
    MatcherError,
    Problem,
    UnboundedMatchError,
)
from .clustering import ClusterModel
from .config import MatchConfig
from .io import read_needs, read_neighborhoods, read_partners
from .plan import Plan, plan
from .taxonomy import Taxonomy, default_taxonomy

try:
    __version__ = version("matcher")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "ClusterModel",
    "InfeasibleMatchError",
    "InputValidationError",
    "MatchConfig",
    "MatcherError",
    "Plan",
    "Problem",
    "Taxonomy",
    "UnboundedMatchError",
    "__version__",
    "default_taxonomy",
    "plan",
    "read_needs",
    "read_neighborhoods",
    "read_partners",
]
