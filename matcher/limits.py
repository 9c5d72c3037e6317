"""Bounds on every input: the one source used by the readers, the CLI, the store and the API.

Every value that enters matcher has a bound, and the same bound wherever it enters: a
CSV row read by ``matcher plan``, a JSON body posted to the service, a plan parameter
given to :class:`matcher.MatchConfig` or to ``POST /api/v1/plans``. The OpenAPI
document of the service is generated from these constants, so it states the real
bounds.

Why these numbers
-----------------
* Amounts (``demand``, ``capacity``) are solved exactly as integers in quanta of 0.1
  units. :data:`MAX_UNITS` keeps every quantity, and every sum over a country-scale
  run (10^7 rows), inside the exact integer range of the solvers (int64), with the
  costs in metres: 10^6 units x 10 quanta x 10^7 rows = 10^14 < 2^63 / (2 x 10^4 km).
* Ids are at most :data:`MAX_ID_CHARS` printable characters that cannot start a
  spreadsheet formula, so they can be written to every CSV unchanged.
* Texts (names, neighborhoods, sources, contacts) are at most :data:`MAX_TEXT_CHARS`.
* A file given to the CLI must be a regular file of at most :data:`MAX_FILE_BYTES`; a
  JSON document at most :data:`MAX_JSON_DEPTH` deep.

Examples
--------
>>> id_problem("ORG-0001") is None
True
>>> id_problem("=HYPERLINK(1)")
"must not start with '=', '+', '-' or '@' (a spreadsheet would run it as a formula)"
>>> json_depth({"a": [1, [2, {"b": 3}]]})
4
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "FORMULA_PREFIXES",
    "MAX_BODY_BYTES",
    "MAX_CELL_CHARS",
    "MAX_CLUSTER_KM",
    "MAX_FILE_BYTES",
    "MAX_INPUT_FILES",
    "MAX_INPUT_FILES_BYTES_FACTOR",
    "MAX_ID_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_LIST_ITEMS",
    "MAX_MIN_SAMPLES",
    "MAX_OFFSET",
    "MAX_PAGE",
    "MAX_PLAN_OFFSET",
    "MAX_PLAN_PAGE",
    "MAX_NEARBY_RESULTS",
    "MAX_RADIUS_KM",
    "MAX_NETWORK_EDGES",
    "MAX_NETWORK_NODES",
    "MAX_RADIUS_MIN",
    "MAX_SNAP_M",
    "MAX_SCALE",
    "MAX_SEARCH_RADIUS_KM",
    "MIN_CLUSTER_KM",
    "MAX_RECRUIT_K",
    "MAX_SEED",
    "MAX_TEXT_CHARS",
    "MAX_UNITS",
    "MAX_WEIGHT",
    "check_file",
    "file_limit",
    "id_problem",
    "json_depth",
    "json_nodes",
    "read_file",
    "text_problem",
]

#: Largest demand of one need and capacity of one partner, in units per week.
MAX_UNITS = 1_000_000.0
#: Largest travel radius of a partner, in km.
MAX_RADIUS_KM = 1_000.0
#: Largest travel time limit of a partner, in minutes (a day).
MAX_RADIUS_MIN = 1_440.0
#: Farthest a need or partner may lie from its nearest street network node, in metres.
MAX_SNAP_M = 5_000.0
#: Most nodes and edges (rows) of a street network file: a file within the size bound can
#: still expand (compressed PBF, XML) to more than a plan should hold in memory.
MAX_NETWORK_NODES = 10_000_000
MAX_NETWORK_EDGES = 30_000_000
#: Largest radius of a nearby search, in km, and most results of one.
MAX_SEARCH_RADIUS_KM = 500.0
MAX_NEARBY_RESULTS = 200
#: Largest factor of a what-if's ``scale_capacity``.
MAX_SCALE = 1_000.0
#: Smallest clustering distance, in km (1 m); smaller ones underflow the solver's numbers.
MIN_CLUSTER_KM = 0.001
#: Most recruit sites suggested per category.
MAX_RECRUIT_K = 100
#: Largest clustering distance (``cluster_km``, ``max_cluster_radius_km``), in km.
MAX_CLUSTER_KM = 100.0
#: Largest ``min_samples`` of the clustering.
MAX_MIN_SAMPLES = 10_000
#: Largest random seed (numpy's and scikit-learn's seeds are 32-bit).
MAX_SEED = 2**32 - 1
#: Largest weight or penalty parameter (``vulnerability_weight``, ``language_penalty_km``).
MAX_WEIGHT = 1_000_000.0
#: Longest id (``need_id``, ``partner_id``, ``neighborhood_id``), in characters.
MAX_ID_CHARS = 128
#: Longest free text (``name``, ``neighborhood``, ``source``, ``contact``, ...), in characters.
MAX_TEXT_CHARS = 500
#: Longest cell of an input table, in characters (checked before any other rule).
MAX_CELL_CHARS = 2_000
#: Largest input file the CLI reads, in bytes (1 GiB; a 1M-need CSV is about 80 MB).
MAX_FILE_BYTES = 1 << 30
#: Most files of one partitioned input (a directory or a glob pattern).
MAX_INPUT_FILES = 4096
#: A partitioned input holds at most this many times the file-size bound in all.
MAX_INPUT_FILES_BYTES_FACTOR = 32
#: Largest HTTP request body, in bytes.
MAX_BODY_BYTES = 32 * 1024 * 1024
#: Deepest nesting of a JSON or GeoJSON document (a GeoJSON multipolygon needs 6).
MAX_JSON_DEPTH = 32
#: Largest page of a list (``limit``) and largest ``offset``.
MAX_PAGE = 1000
MAX_OFFSET = 10**9
#: Largest page and offset of the list of plans (a plan's record holds its summary).
MAX_PLAN_PAGE = 200
MAX_PLAN_OFFSET = 100_000
#: Most items in a list inside a request (ids to remove, partners to add, ...).
MAX_LIST_ITEMS = 10_000
#: Characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def id_problem(value: str) -> str | None:
    """Return why ``value`` is not a valid id, or None when it is.

    Parameters
    ----------
    value : str
        A stripped, non-empty id.

    Returns
    -------
    str or None
    """
    if len(value) > MAX_ID_CHARS:
        return f"is {len(value):,} characters long; an id has at most {MAX_ID_CHARS}"
    if _CONTROL.search(value):
        return "contains a control character (newline, tab, ...); ids are printable text"
    if value.startswith(FORMULA_PREFIXES[:4]):
        return "must not start with '=', '+', '-' or '@' (a spreadsheet would run it as a formula)"
    return None


def text_problem(value: str, limit: int = MAX_TEXT_CHARS) -> str | None:
    """Return why a free-text value is too long, or None.

    Examples
    --------
    >>> text_problem("x" * 501)
    'is 501 characters long; at most 500 are allowed'
    """
    if len(value) > limit:
        return f"is {len(value):,} characters long; at most {limit:,} are allowed"
    return None


def json_nodes(value: Any) -> Iterator[tuple[Any, int]]:
    """Yield every node of a parsed JSON value with its depth (the value itself at 0).

    The nodes are objects' keys and values and arrays' items. Iterative, so it never
    exhausts the interpreter's stack.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        yield item, depth
        if isinstance(item, dict):
            stack.extend((k, depth + 1) for k in item)
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)


def json_depth(value: Any) -> int:
    """Return the nesting depth of a parsed JSON value (a scalar has depth 0)."""
    return max((d + 1 for node, d in json_nodes(value) if isinstance(node, dict | list)), default=0)


def check_file(path: str | os.PathLike[str], limit: int = MAX_FILE_BYTES) -> str | None:
    """Return why ``path`` may not be read as an input file, or None.

    Only regular files of at most ``limit`` bytes are read: never a directory, a
    device (``/dev/zero``), a FIFO (it would block) or a socket. The check does not
    open the file, so it cannot block.
    """
    try:
        st = os.stat(Path(path))
    except FileNotFoundError:
        return "file not found; check the path"
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(st.st_mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(st.st_mode)
            else "a device"
            if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
            else "a socket"
            if stat.S_ISSOCK(st.st_mode)
            else "not a regular file"
        )
        return f"is {kind}, not a regular file; give the path of a data file"
    if st.st_size > limit:
        return (
            f"is {st.st_size:,} bytes; input files may be at most {limit:,} bytes "
            "(split the data or raise MATCHER_MAX_FILE_BYTES)"
        )
    return None


def read_file(path: str | os.PathLike[str], name: str | None = None) -> bytes:
    """Read a whole input file, bounded: a regular file of at most :func:`file_limit` bytes.

    Raises
    ------
    InputValidationError
        Naming the file and why it cannot be read (missing, a directory, a device or
        FIFO, too large, unreadable).
    """
    from ._errors import InputValidationError, Problem

    label = name or str(path)
    limit = file_limit()
    reason = check_file(path, limit)
    if reason is None:
        try:
            with open(path, "rb") as fh:  # a bounded read, even if the file grows
                data = fh.read(limit + 1)
        except OSError as exc:
            reason = f"cannot read the file: {exc.strerror or exc}"
        else:
            if len(data) <= limit:
                return data
            reason = f"grew past {limit:,} bytes while being read"
    raise InputValidationError([Problem(label, None, None, None, reason)])


def file_limit() -> int:
    """Return the file-size bound: ``MATCHER_MAX_FILE_BYTES`` or :data:`MAX_FILE_BYTES`."""
    raw = os.environ.get("MATCHER_MAX_FILE_BYTES", "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_FILE_BYTES
