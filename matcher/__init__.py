"""matcher: cluster assessed community needs and recommend partners, exactly optimally."""

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from ._errors import (
    InfeasibleMatchError,
    InputValidationError,
    MatcherError,
    Problem,
    UnboundedMatchError,
)

if TYPE_CHECKING:
    from .assessments import Assessment, assess
    from .clustering import ClusterModel
    from .config import MatchConfig
    from .io import read_needs, read_neighborhoods, read_partners
    from .pipeline import Plan, plan
    from .taxonomy import Taxonomy, default_taxonomy

#: Public names and the module each comes from, imported on first use (PEP 562), so that
#: ``import matcher`` and the CLI start without loading pandas, scikit-learn or shapely.
_LAZY = {
    "Assessment": "assessments",
    "ClusterModel": "clustering",
    "MatchConfig": "config",
    "Plan": "pipeline",
    "assess": "assessments",
    "Taxonomy": "taxonomy",
    "default_taxonomy": "taxonomy",
    "plan": "pipeline",
    "read_needs": "io",
    "read_neighborhoods": "io",
    "read_partners": "io",
}


def __getattr__(name: str) -> Any:
    """Import a public name of matcher on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'matcher' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


try:
    __version__ = version("matcher")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Assessment",
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
    "assess",
    "default_taxonomy",
    "plan",
    "read_needs",
    "read_neighborhoods",
    "read_partners",
]
