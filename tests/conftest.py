"""Shared fixtures: tiny valid inputs, a file-writing helper, and logging hygiene."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from matcher.cli import main

#: Three needs in Chicago: two food_access needs 70 m apart and one youth need 8 km north.
TINY_NEEDS = """\
need_id,category,lat,lon,demand,severity
n1,food_access,41.8800,-87.6300,4,3
n2,food_access,41.8805,-87.6305,3,2
n3,youth_engagement,41.9500,-87.6500,2,5
"""

#: Two partners, each within reach of the needs of its category.
TINY_PARTNERS = """\
partner_id,name,kind,lat,lon,categories,capacity,radius_km
p1,Food Bank,organization,41.8810,-87.6300,food_access,10,2.0
p2,Youth Club,organization,41.9510,-87.6500,youth_engagement;education,5,3.0
"""


def write_input(directory: Path, name: str, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or raw bytes) to ``directory / name``; return the path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def plan_cli(needs: Path, partners: Path, out: Path, models: Path, *extra: str) -> Result:
    """Run ``matcher plan`` in process; outputs go to ``out`` and ``models``."""
    args = [
        "plan",
        "--needs",
        str(needs),
        "--partners",
        str(partners),
        "--out",
        str(out),
        "--models-dir",
        str(models),
        *extra,
    ]
    return CliRunner().invoke(main, args)


@pytest.fixture
def tiny_needs() -> str:
    """A valid needs CSV text (3 rows)."""
    return TINY_NEEDS


@pytest.fixture
def tiny_partners() -> str:
    """A valid partners CSV text (2 rows)."""
    return TINY_PARTNERS


@pytest.fixture
def write() -> Callable[[Path, str, str | bytes], Path]:
    """The helper ``write(tmp_path, name, text_or_bytes) -> Path``."""
    return write_input


# The CLI configures the "matcher" logger for its process (a stderr handler and a
# level). In-process CLI tests would leak that into later tests, so every test starts
# and ends with the logger as it was before any test ran.
_MATCHER_LOGGER = logging.getLogger("matcher")
_PRISTINE = (list(_MATCHER_LOGGER.handlers), _MATCHER_LOGGER.level, _MATCHER_LOGGER.propagate)


def reset_matcher_logging() -> None:
    """Restore the "matcher" logger to its state before any test ran."""
    handlers, level, propagate = _PRISTINE
    _MATCHER_LOGGER.handlers[:] = handlers
    _MATCHER_LOGGER.setLevel(level)
    _MATCHER_LOGGER.propagate = propagate


@pytest.fixture(autouse=True)
def _pristine_matcher_logging() -> Iterator[None]:
    reset_matcher_logging()
    yield
    reset_matcher_logging()
