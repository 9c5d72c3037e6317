"""Persistent store of partners, needs, neighborhoods, plans, API keys and an audit log.

:class:`Store` is the interface; :class:`SQLiteStore` is the embedded implementation
(standard library :mod:`sqlite3` only) and :func:`open_store` chooses one from a path
or a database URL. A PostgreSQL/PostGIS backend implements the same interface later.

Guarantees of :class:`SQLiteStore`:

* **Atomic writes.** Every write method runs in one ``BEGIN IMMEDIATE`` transaction
  together with its audit-log entry: a failed call (invalid input, a constraint, an
  exception half-way through a bulk import) rolls back and changes nothing.
* **No lost update.** Partners and needs carry a ``version`` (1, 2, ...). Updates and
  deletes take the ``expected_version`` the client read (HTTP ``If-Match``, see
  :func:`etag`) and run ``UPDATE ... WHERE id = ? AND version = ?``; when another writer
  got there first no row matches and :class:`VersionConflictError` is raised. A deleted
  id remembers its last version, so a re-created entity never reuses an old version
  (and a stale ``ETag`` can never match it).
* **Parameterised SQL only.** Values are always bound (``?``); the only names
  formatted into SQL are the table and column names written in this module.
* **Secrets.** API keys are stored as their SHA-256 only (keys are 256-bit random
  tokens, so a fast hash is enough) and compared with :func:`hmac.compare_digest`.
  Audit entries record *which* fields changed, never their values, so volunteers'
  locations and contacts do not leak into the log.
* **Privacy by default.** :meth:`Store.get_partner` and :meth:`Store.list_partners`
  coarsen volunteers' points to the ~500 m grid of :func:`matcher.output.coarsen` and
  withhold their contact unless called with ``exact=True`` (admin views only). The
  frames for planning (:meth:`Store.partners_frame`) are exact.
* **Concurrency.** One connection per thread (and per process: a connection inherited
  across ``fork`` is never used), WAL journal (readers never block the writer),
  ``foreign_keys=ON`` and a busy timeout, so concurrent writers queue instead of failing.
* **Migrations.** ``schema_version`` records the applied migrations; pending ones are
  applied in one transaction when the store is opened; a database written by a newer
  matcher is refused with :class:`SchemaVersionError`.

Partner usage of a finished plan (units allocated per partner) is parsed from its
``assignments.csv`` once, when the plan is marked done, and stored in the
``plan_usage`` table, so :meth:`Store.partner_usage` is one indexed query.
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import datetime as _dt
import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from ._errors import InputValidationError, MatcherError, Problem
from ._validate import NEED_FIELDS, PARTNER_FIELDS, validate_needs, validate_partners
from .output import coarsen
from .privacy import PRIVATE_FIELDS
from .taxonomy import default_taxonomy

if TYPE_CHECKING:
    from .plan import Plan
    from .taxonomy import Taxonomy

__all__ = [
    "ApiKeyInfo",
    "AlreadyExistsError",
    "AuditEntry",
    "ImportResult",
    "MIGRATIONS",
    "NEED_FRAME_COLUMNS",
    "NotFoundError",
    "PARTNER_FRAME_COLUMNS",
    "PLAN_STATUSES",
    "PlanRecord",
    "PlanStateError",
    "ROLES",
    "SQLiteStore",
    "SchemaVersionError",
    "Store",
    "StoreBusyError",
    "StoreError",
    "StoreUnavailableError",
    "VersionConflictError",
    "etag",
    "open_store",
    "parse_etag",
    "plan_artifacts",
]

logger = logging.getLogger(__name__)

#: The roles an API key can have.
ROLES: tuple[str, ...] = ("planner", "outreach", "admin")
#: The states of a plan, in lifecycle order (``failed`` ends a plan that did not finish).
PLAN_STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed")
#: Columns of :meth:`Store.partners_frame` (those of ``read_partners(...).frame``).
PARTNER_FRAME_COLUMNS: tuple[str, ...] = PARTNER_FIELDS
#: Columns of :meth:`Store.needs_frame` (those of ``read_needs(...).frame``).
NEED_FRAME_COLUMNS: tuple[str, ...] = NEED_FIELDS
#: Fields a client may echo back from a read; they are ignored by writes.
_READ_ONLY = frozenset({"version", "updated_at", "coarsened", "etag"})
_KEY_PREFIX = "mk_"
_PREFIX_LEN = len(_KEY_PREFIX) + 8
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_MAX_ERROR = 10_000


# --------------------------------------------------------------------------- errors


class StoreError(MatcherError):
    """A store operation failed (base class of the store's errors)."""


class StoreUnavailableError(StoreError, NotImplementedError):
    """The requested backend is not available (yet) in this version of matcher."""


class SchemaVersionError(StoreError):
    """The database's schema is newer than this matcher knows, or cannot be migrated."""


class StoreBusyError(StoreError):
    """The database stayed locked by another writer for longer than the busy timeout."""


class NotFoundError(StoreError, LookupError):
    """The entity does not exist.

    Parameters
    ----------
    entity : str
        ``"partner"``, ``"need"``, ``"plan"``, ``"api_key"``, ...
    entity_id : str
        Its id.
    """

    def __init__(self, entity: str, entity_id: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"{entity} {entity_id!r} not found")

    def __str__(self) -> str:  # LookupError would otherwise repr() the message
        return str(self.args[0])


class AlreadyExistsError(StoreError):
    """An entity with this id exists already (use update instead of create)."""

    def __init__(self, entity: str, entity_id: str) -> None:
        self.entity = entity
        self.entity_id = entity_id
        super().__init__(f"{entity} {entity_id!r} exists already")


class VersionConflictError(StoreError):
    """The stored version differs from the version the client read (a concurrent edit).

    HTTP: ``412 Precondition Failed`` when the version came from ``If-Match``, else
    ``409 Conflict``. Re-read the entity (its new version and ETag) and retry.

    Attributes
    ----------
    entity, entity_id : str
        The entity.
    expected : int
        The version the caller expected.
    current : int
        The version now stored.
    """

    def __init__(self, entity: str, entity_id: str, expected: int, current: int) -> None:
        self.entity = entity
        self.entity_id = entity_id
        self.expected = expected
        self.current = current
        super().__init__(
            f"{entity} {entity_id!r} was changed by someone else: expected version "
            f"{expected}, stored version is {current}; re-read it and retry"
        )


class PlanStateError(StoreError):
    """A plan lifecycle step that its current status does not allow (e.g. done -> running)."""


# --------------------------------------------------------------------------- records


class _Record(Mapping[str, Any]):
    """Read access by field name (``rec["plan_id"]``, ``dict(rec)``) for record dataclasses."""

    __slots__ = ()

    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the record."""
        return asdict(self)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ImportResult(_Record):
    """What a bulk import (``replace_*``) did; ``int(result)`` is the number of rows stored.

    Attributes
    ----------
    rows : int
        Rows stored now.
    added, changed, unchanged, removed : int
        Rows new, different, identical (their version is kept), and no longer present.
    """

    rows: int
    added: int
    changed: int
    unchanged: int
    removed: int

    def __int__(self) -> int:
        return self.rows


@dataclass(frozen=True)
class PlanRecord(_Record):
    """A stored plan run (also readable as a mapping: ``rec["status"]``, ``dict(rec)``).

    Attributes
    ----------
    plan_id : str
        32 hex digits (a UUID4).
    status : {"queued", "running", "done", "failed"}
        The lifecycle state.
    created_at, started_at, finished_at : str or None
        UTC timestamps (ISO 8601, ``Z``).
    created_by : str
        The actor (API key id, ``"cli"``, ``"system"``) that queued it.
    parameters : dict
        The run's parameters, as given to :meth:`Store.create_plan`.
    summary : dict or None
        The ``summary.json`` document of a finished plan.
    error : str or None
        Why a failed plan failed.
    files : tuple of str
        Names of the stored output files (``assignments.csv``, ``plan.geojson``, ...).
    """

    plan_id: str
    status: str
    created_at: str
    started_at: str | None
    finished_at: str | None
    created_by: str
    parameters: dict[str, Any]
    summary: dict[str, Any] | None
    error: str | None
    files: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of the record."""
        d = asdict(self)
        d["files"] = list(self.files)
        return d


@dataclass(frozen=True)
class ApiKeyInfo(_Record):
    """An API key's public description (never the key itself, nor its hash)."""

    key_id: str
    prefix: str
    role: str
    label: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class AuditEntry(_Record):
    """One audit-log entry.

    Attributes
    ----------
    id : int
        Increasing with time.
    at : str
        UTC timestamp (ISO 8601, ``Z``).
    actor : str
        Who did it: an API key id, ``"cli"``, ``"system"``, ...
    action : str
        ``create``, ``update``, ``delete``, ``replace``, ``upsert``, ``queue``,
        ``run``, ``done``, ``fail``, ``revoke``, or an application's own action.
    entity : str
        ``partner``, ``need``, ``neighborhood``, ``plan``, ``api_key``, ...
    entity_id : str or None
        The entity's id (None for bulk operations on a whole table).
    detail : dict
        Context (version numbers, changed field names, row counts); never secrets or
        volunteers' data.
    """

    id: int
    at: str
    actor: str
    action: str
    entity: str
    entity_id: str | None
    detail: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- helpers


def etag(entity_id: str, version: int) -> str:
    """Return the HTTP entity tag of version ``version`` of entity ``entity_id``.

    The tag is the version as a *strong* validator, ``"<version>"``: ``If-Match`` uses
    strong comparison (RFC 9110, 13.1.1), the version changes with every write of the
    entity, and a deleted id never reuses a version when it is re-created, so a stale
    tag never matches. An entity tag is scoped to its resource (URL), so the id is not
    part of it; ``entity_id`` is in the signature so that another backend may choose
    another scheme without changing its callers. :func:`parse_etag` turns an
    ``If-Match`` value back into the ``expected_version`` of an update or delete.

    Examples
    --------
    >>> etag("p1", 3)
    '"3"'
    >>> parse_etag('"3"', "p1"), parse_etag('W/"3"', "p1"), parse_etag("*", "p1")
    (3, None, None)
    """
    return f'"{int(version)}"'


def parse_etag(value: str | None, entity_id: str | None = None) -> int | None:
    """Return the version in an entity tag made by :func:`etag`, or None.

    None when ``value`` is missing, weak (``W/``: weak tags never match ``If-Match``),
    ``*``, a list of tags or malformed; the caller then answers ``412`` (or ``428``
    when the header is missing).
    """
    if not value:
        return None
    match = re.fullmatch(r'\s*"(\d{1,18})"\s*', value)
    return None if match is None else int(match.group(1))


def plan_artifacts(plan: Plan) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Return ``(summary, files)`` of a plan, ready for :meth:`Store.plan_done`.

    The files are exactly those :meth:`matcher.Plan.to_dir` writes (the batch output
    contract), read back as bytes; the summary is :func:`matcher.output.summary`.
    """
    from .output import summary

    with tempfile.TemporaryDirectory(prefix="matcher-plan-") as tmp:
        written = plan.to_dir(tmp)
        files = {name: Path(path).read_bytes() for name, path in sorted(written.items())}
    return summary(plan), files


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _jsonable(value: Any) -> Any:
    """Plain JSON values: numpy scalars unboxed, NaN/inf as null, dates as ISO text."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, _dt.datetime | _dt.date | pd.Timestamp):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if value is pd.NaT or value is pd.NA:
        return None
    return value


def _dumps(value: Any, *, sort_keys: bool = True) -> str:
    return json.dumps(_jsonable(value), sort_keys=sort_keys, allow_nan=False, separators=(",", ":"))


def _check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip() or len(actor) > 200:
        raise ValueError("`actor` must be a non-empty string of at most 200 characters")
    return actor


def _check_page(limit: int, offset: int) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"`limit` must be an integer >= 0, not {limit!r}")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise ValueError(f"`offset` must be an integer >= 0, not {offset!r}")


def _check_version(expected_version: int) -> int:
    if isinstance(expected_version, bool) or not isinstance(expected_version, int | np.integer):
        raise ValueError(f"`expected_version` must be an integer, not {expected_version!r}")
    return int(expected_version)


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float | np.floating) and math.isnan(value)


def _as_text(value: Any) -> str:
    return "" if _is_missing(value) else str(value).strip()


def _as_float(value: Any) -> float | None:
    if _is_missing(value):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _as_int(value: Any, default: int) -> Any:
    if _is_missing(value) or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value  # rejected by the column's CHECK constraint
    return int(number) if number.is_integer() else number


def _cell(value: Any) -> Any:
    """Return a record value as the validators expect it (lists ``;``-joined)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    return value


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


# --------------------------------------------------------------------------- schema


#: Ordered schema migrations; migration ``i`` (1-based) brings the schema to version
#: ``i``. Each is a tuple of SQL statements, applied in one transaction. Append only:
#: never edit a released migration.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE partners (
            partner_id TEXT PRIMARY KEY NOT NULL CHECK (length(partner_id) > 0),
            name TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('organization', 'volunteer')),
            lat REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
            lon REAL NOT NULL CHECK (lon BETWEEN -180 AND 180),
            categories TEXT NOT NULL CHECK (length(categories) > 0),
            capacity REAL NOT NULL CHECK (capacity >= 0),
            radius_km REAL NOT NULL CHECK (radius_km > 0),
            languages TEXT NOT NULL DEFAULT '',
            contact TEXT NOT NULL DEFAULT '',
            version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX partners_kind ON partners (kind, partner_id)",
        """CREATE TABLE needs (
            need_id TEXT PRIMARY KEY NOT NULL CHECK (length(need_id) > 0),
            category TEXT NOT NULL CHECK (length(category) > 0),
            lat REAL NOT NULL CHECK (lat BETWEEN -90 AND 90),
            lon REAL NOT NULL CHECK (lon BETWEEN -180 AND 180),
            demand REAL NOT NULL CHECK (demand > 0),
            severity INTEGER NOT NULL DEFAULT 3
                CHECK (typeof(severity) = 'integer' AND severity BETWEEN 1 AND 5),
            neighborhood TEXT NOT NULL DEFAULT '',
            languages TEXT NOT NULL DEFAULT '',
            reported_at TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            cluster_id TEXT,
            version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
            updated_at TEXT NOT NULL
        )""",
        "CREATE INDEX needs_category ON needs (category, need_id)",
        """CREATE TABLE neighborhoods (
            neighborhood_id TEXT PRIMARY KEY NOT NULL CHECK (length(neighborhood_id) > 0),
            name TEXT NOT NULL,
            population REAL,
            properties TEXT NOT NULL DEFAULT '{}',
            geometry BLOB NOT NULL,
            updated_at TEXT NOT NULL
        )""",
        """CREATE TABLE retired_versions (
            entity TEXT NOT NULL,
            entity_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (entity, entity_id)
        )""",
        """CREATE TABLE plans (
            plan_id TEXT PRIMARY KEY NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
            created_at TEXT NOT NULL,
            created_by TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            parameters TEXT NOT NULL DEFAULT '{}',
            summary TEXT,
            error TEXT
        )""",
        "CREATE INDEX plans_status ON plans (status, finished_at)",
        """CREATE TABLE plan_files (
            plan_id TEXT NOT NULL REFERENCES plans (plan_id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            content BLOB NOT NULL,
            PRIMARY KEY (plan_id, name)
        )""",
        """CREATE TABLE plan_usage (
            plan_id TEXT NOT NULL REFERENCES plans (plan_id) ON DELETE CASCADE,
            partner_id TEXT NOT NULL,
            units REAL NOT NULL,
            PRIMARY KEY (plan_id, partner_id)
        )""",
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('planner', 'outreach', 'admin')),
            label TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            revoked_at TEXT
        )""",
        "CREATE INDEX api_keys_prefix ON api_keys (prefix)",
        """CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            entity TEXT NOT NULL,
            entity_id TEXT,
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX audit_log_entity ON audit_log (entity, entity_id)",
        """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
        """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    ),
)


@dataclass(frozen=True)
class _Spec:
    """How one versioned entity (partner, need) maps onto its table."""

    entity: str
    table: str
    key: str
    columns: tuple[str, ...]
    floats: frozenset[str]
    ints: frozenset[str]
    required: tuple[str, ...]
    extra: tuple[str, ...] = ()

    @property
    def stored(self) -> tuple[str, ...]:
        return self.columns + self.extra + ("version", "updated_at")


_PARTNER = _Spec(
    "partner",
    "partners",
    "partner_id",
    PARTNER_FRAME_COLUMNS,
    frozenset({"lat", "lon", "capacity", "radius_km"}),
    frozenset(),
    ("partner_id", "kind", "lat", "lon", "categories", "capacity", "radius_km"),
)
_NEED = _Spec(
    "need",
    "needs",
    "need_id",
    NEED_FRAME_COLUMNS,
    frozenset({"lat", "lon", "demand"}),
    frozenset({"severity"}),
    ("need_id", "category", "lat", "lon", "demand"),
    ("cluster_id",),
)


# --------------------------------------------------------------------------- interface


class Store(abc.ABC):
    """The persistent store behind the service: one interface, several backends.

    Every write takes an ``actor`` (the API key id, ``"cli"``, ``"system"``) and is
    recorded in the audit log in the same transaction. Records of partners and needs
    are dicts of their contract columns (``categories`` and ``languages`` as
    ``;``-separated text, as in ``read_partners(...).frame``) plus ``version`` and
    ``updated_at``.
    """

    # -- lifecycle

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @abc.abstractmethod
    def revision(self) -> int:
        """Return a number that increases with every committed write (0 for a new store).

        Cheap; for caches of derived data (e.g. the nearby index) to notice changes
        made by any thread or process.
        """

    # -- bulk import

    @abc.abstractmethod
    def replace_partners(self, df: pd.DataFrame, actor: str) -> ImportResult:
        """Replace all partners with the rows of ``df``, all or nothing.

        Parameters
        ----------
        df : pandas.DataFrame
            Validated partners: ``matcher.read_partners(...).frame`` (a GeoDataFrame
            without ``lat``/``lon`` gives them through its Point geometries).
        actor : str
            Who imports.

        Returns
        -------
        ImportResult
            ``rows``, ``added``, ``changed``, ``unchanged``, ``removed`` (``int(result)``
            is ``rows``). An unchanged row keeps its version (so clients' ETags stay
            valid); a changed one gets version + 1.

        Raises
        ------
        InputValidationError
            A required column is missing, an id is duplicated or a row breaks a
            constraint; nothing is changed.
        """

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Return a context in which every write is one transaction: all or nothing."""

    def load_if_empty(
        self,
        partners: pd.DataFrame,
        needs: pd.DataFrame,
        neighborhoods: gpd.GeoDataFrame | None,
        actor: str,
    ) -> bool:
        """Load a city into an empty store in one transaction; return whether it loaded.

        A process killed while loading leaves the store empty (and the next start loads
        it again), never half-loaded.
        """
        with self.transaction():
            if self.count_partners() or self.count_needs():
                return False
            self.replace_partners(partners, actor=actor)
            self.replace_needs(needs, actor=actor)
            if neighborhoods is not None:
                self.replace_neighborhoods(neighborhoods, actor=actor)
        return True

    @abc.abstractmethod
    def replace_needs(self, df: pd.DataFrame, actor: str) -> ImportResult:
        """Replace all needs with the rows of ``df``, all or nothing.

        As :meth:`replace_partners`, from ``matcher.read_needs(...).frame``. A changed
        need loses its ``cluster_id``; an unchanged one keeps it.
        """

    @abc.abstractmethod
    def replace_neighborhoods(self, gdf: gpd.GeoDataFrame, actor: str) -> ImportResult:
        """Replace all neighborhoods with the polygons of ``gdf``, all or nothing.

        Parameters
        ----------
        gdf : geopandas.GeoDataFrame
            The first element of ``matcher.read_neighborhoods(...)``: EPSG:4326
            (Multi)Polygons with ``neighborhood_id`` and optional ``name``,
            ``population`` and any other attribute columns.
        actor : str
            Who imports.

        Returns
        -------
        ImportResult
            As :meth:`replace_partners` (a neighborhood is unchanged when its
            attributes and its geometry's WKB are).

        Raises
        ------
        InputValidationError
            Missing id column, duplicate or empty ids, non-polygons, another CRS.
        """

    # -- partners

    @abc.abstractmethod
    def list_partners(
        self, limit: int = 100, offset: int = 0, kind: str | None = None, *, exact: bool = False
    ) -> list[dict[str, Any]]:
        """Return partners ordered by ``partner_id``, a page at a time.

        Parameters
        ----------
        limit, offset : int
            The page.
        kind : {"organization", "volunteer"}, optional
            Only partners of this kind.
        exact : bool
            Return volunteers' exact point and contact (admin views only). Otherwise a
            volunteer's ``lat``/``lon`` are coarsened to the ~500 m grid and its
            ``contact`` is ``""``; every record has ``coarsened`` (bool).

        Returns
        -------
        list of dict
        """

    @abc.abstractmethod
    def count_partners(self, kind: str | None = None) -> int:
        """Return the number of partners (of ``kind``, when given)."""

    @abc.abstractmethod
    def get_partner(self, partner_id: str, *, exact: bool = False) -> dict[str, Any] | None:
        """Return one partner (see :meth:`list_partners` for ``exact``), or None."""

    @abc.abstractmethod
    def create_partner(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Validate and store a new partner; return the stored record (version >= 1).

        Parameters
        ----------
        record : mapping
            The partner's fields (``partner_id, kind, lat, lon, categories, capacity,
            radius_km`` and optional ``name, languages, contact``). ``categories`` and
            ``languages`` may be lists. Category aliases are resolved as by
            :func:`matcher.read_partners`.
        actor : str
            Who creates it.

        Raises
        ------
        InputValidationError
            The field-level report (unknown fields are reported too).
        AlreadyExistsError
            A partner with this id exists.
        """

    @abc.abstractmethod
    def update_partner(
        self, partner_id: str, record: Mapping[str, Any], expected_version: int, actor: str
    ) -> dict[str, Any]:
        """Change a partner, if it is still at ``expected_version``; return the new record.

        Parameters
        ----------
        partner_id : str
            The partner.
        record : mapping
            The fields to change (a full record replaces every field; a partial one
            changes only those given). ``partner_id``, when given, must be the same.
        expected_version : int
            The version the client read (from the record or ``If-Match``).
        actor : str
            Who changes it.

        Returns
        -------
        dict
            The stored record, with ``version = expected_version + 1``.

        Raises
        ------
        NotFoundError
            No such partner.
        VersionConflictError
            The partner was changed since the client read it; nothing is changed.
        InputValidationError
            The merged record is invalid.
        """

    @abc.abstractmethod
    def delete_partner(self, partner_id: str, expected_version: int, actor: str) -> None:
        """Delete a partner, if it is still at ``expected_version``.

        Raises
        ------
        NotFoundError
            No such partner.
        VersionConflictError
            The partner was changed since the client read it; nothing is deleted.
        """

    # -- needs

    @abc.abstractmethod
    def list_needs(
        self, limit: int = 100, offset: int = 0, category: str | None = None
    ) -> list[dict[str, Any]]:
        """Return needs ordered by ``need_id``, a page at a time (of ``category``)."""

    @abc.abstractmethod
    def count_needs(self, category: str | None = None) -> int:
        """Return the number of needs (of ``category``, when given)."""

    @abc.abstractmethod
    def get_need(self, need_id: str) -> dict[str, Any] | None:
        """Return one need (with ``cluster_id``, ``version``), or None."""

    @abc.abstractmethod
    def create_need(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Validate and store a new need; it never replaces one.

        This is the intake path (``POST /api/v1/needs``).

        Raises
        ------
        AlreadyExistsError
            A need with this id exists (the API answers 409).
        InputValidationError
            The field-level report.
        """

    @abc.abstractmethod
    def upsert_need(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Validate and store a need, new or replacing the one with its id.

        No version check: an existing need is replaced whole and gets version + 1
        (for loading data you own; the service's intake uses :meth:`create_need`).

        Parameters
        ----------
        record : mapping
            ``need_id, category, lat, lon, demand`` and optional ``severity,
            neighborhood, languages, reported_at, source`` and ``cluster_id`` (the
            existing cluster the need was placed in, if any).
        actor : str
            Who reports it.

        Returns
        -------
        dict
            The stored record.

        Raises
        ------
        InputValidationError
            The field-level report.
        """

    @abc.abstractmethod
    def update_need(
        self, need_id: str, record: Mapping[str, Any], expected_version: int, actor: str
    ) -> dict[str, Any]:
        """Change a need, if it is still at ``expected_version`` (see :meth:`update_partner`).

        Moving a need (``lat``, ``lon`` or ``category``) clears its ``cluster_id``
        unless the record gives one.
        """

    @abc.abstractmethod
    def delete_need(self, need_id: str, expected_version: int, actor: str) -> None:
        """Delete a need, if it is still at ``expected_version`` (see :meth:`delete_partner`)."""

    # -- frames for planning

    @abc.abstractmethod
    def partners_frame(self) -> gpd.GeoDataFrame:
        """All partners, exact, as ``read_partners(...).frame`` gives them.

        Returns
        -------
        geopandas.GeoDataFrame
            Columns :data:`PARTNER_FRAME_COLUMNS` and Point ``geometry`` (EPSG:4326),
            sorted by ``partner_id``; accepted by :func:`matcher.plan`.
        """

    @abc.abstractmethod
    def needs_frame(self) -> gpd.GeoDataFrame:
        """All needs as ``read_needs(...).frame`` gives them (see :meth:`partners_frame`)."""

    @abc.abstractmethod
    def neighborhoods_frame(self) -> gpd.GeoDataFrame | None:
        """All neighborhoods (EPSG:4326, sorted by id), or None when none are stored.

        The columns are ``neighborhood_id``, the attribute columns as imported, and
        ``geometry``; the result can be passed to :func:`matcher.plan` as
        ``neighborhoods=`` whether or not it is None.
        """

    # -- plans

    @abc.abstractmethod
    def create_plan(self, parameters: Mapping[str, Any], *, actor: str = "system") -> str:
        """Queue a plan run; return its ``plan_id`` (32 hex digits).

        Parameters
        ----------
        parameters : mapping
            The run's parameters (JSON-serialisable).
        actor : str
            Who asked for it.
        """

    @abc.abstractmethod
    def set_plan_running(self, plan_id: str, *, actor: str = "system") -> None:
        """Mark a queued plan running.

        Only one caller can do so (a conditional update), so two workers never run
        the same plan.

        Raises
        ------
        NotFoundError
            No such plan.
        PlanStateError
            The plan is not queued.
        """

    @abc.abstractmethod
    def plan_done(
        self,
        plan_id: str,
        summary: Mapping[str, Any],
        files: Mapping[str, bytes | str],
        *,
        usage: Mapping[str, float] | None = None,
        actor: str = "system",
    ) -> None:
        """Mark a queued or running plan done and store its summary and output files.

        Parameters
        ----------
        plan_id : str
            The plan.
        summary : mapping
            Its ``summary.json`` document.
        files : mapping of str to bytes
            Output files by name (e.g. from :func:`plan_artifacts`); text is stored
            UTF-8 encoded. Names are plain file names (letters, digits, ``._-``).
        usage : mapping of str to float, optional
            Units allocated per partner. By default they are summed from the
            ``units`` column of ``files["assignments.csv"]`` (none when absent).
        actor : str
            Who finished it.

        Raises
        ------
        NotFoundError, PlanStateError
            No such plan, or it is done or failed already.
        """

    @abc.abstractmethod
    def plan_failed(self, plan_id: str, error: str, *, actor: str = "system") -> None:
        """Mark a queued or running plan failed with the reason ``error``.

        Raises
        ------
        NotFoundError, PlanStateError
            No such plan, or it is done or failed already.
        """

    @abc.abstractmethod
    def fail_unfinished_plans(self, error: str, *, actor: str = "system") -> list[str]:
        """Mark every queued or running plan failed with ``error``; return their ids.

        For a server starting up: plans such a store holds as queued or running were
        left by a process that stopped, and no worker will finish them.
        """

    @abc.abstractmethod
    def get_plan(self, plan_id: str) -> PlanRecord | None:
        """Return a plan, or None."""

    @abc.abstractmethod
    def list_plans(self, limit: int = 50, offset: int = 0) -> list[PlanRecord]:
        """Return plans, newest first."""

    @abc.abstractmethod
    def latest_done_plan(self, *, exclude_scenarios: bool = False) -> PlanRecord | None:
        """Return the plan that finished last with status ``done``, or None.

        With ``exclude_scenarios``, plans whose parameters have a ``scenario`` key
        (what-if runs of the service, see ``POST /api/v1/plans/{id}/scenarios``) are
        skipped: they are not the plan in force.
        """

    @abc.abstractmethod
    def plan_file(self, plan_id: str, name: str) -> bytes | None:
        """Return the content of a plan's output file, or None when there is none."""

    @abc.abstractmethod
    def partner_usage(self, plan_id: str) -> dict[str, float]:
        """Units allocated per ``partner_id`` by a done plan (partners with none omitted).

        Raises
        ------
        NotFoundError
            No such plan.
        PlanStateError
            The plan is not done.
        """

    # -- API keys

    @abc.abstractmethod
    def create_api_key(
        self, role: str, *, label: str = "", actor: str = "system"
    ) -> tuple[str, str]:
        """Create an API key; return ``(key_id, key)``.

        The key (``"mk_"`` + 43 URL-safe characters, 256 random bits) is returned
        only here: the store keeps its SHA-256 and an 11-character prefix to find it.

        Parameters
        ----------
        role : {"planner", "outreach", "admin"}
            What the key may do.
        label : str
            A note for admins (whose key it is).
        actor : str
            Who creates it.
        """

    @abc.abstractmethod
    def authenticate(self, key: str) -> tuple[str, str] | None:
        """Return ``(key_id, role)`` of a valid, unrevoked key, else None."""

    @abc.abstractmethod
    def revoke_api_key(self, key_id: str, *, actor: str = "system") -> None:
        """Revoke a key (idempotent: the first revocation time is kept).

        Raises
        ------
        NotFoundError
            No such key.
        """

    @abc.abstractmethod
    def list_api_keys(self) -> list[ApiKeyInfo]:
        """Return every key's public description, oldest first."""

    # -- audit

    @abc.abstractmethod
    def audit(
        self,
        action: str,
        entity: str,
        entity_id: str | None,
        *,
        actor: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an entry to the audit log (for events outside the store's own writes).

        Inside another write of this store (same thread) the entry joins its
        transaction.
        """

    @abc.abstractmethod
    def audit_entries(
        self,
        limit: int = 100,
        *,
        entity: str | None = None,
        entity_id: str | None = None,
    ) -> list[AuditEntry]:
        """Return audit entries, newest first (of one entity or entity type, when given)."""


# --------------------------------------------------------------------------- factory


def open_store(url_or_path: str | Path, **options: Any) -> Store:
    """Open the store at a path or database URL.

    Parameters
    ----------
    url_or_path : str or Path
        A file path or ``sqlite:///relative/path.db`` / ``sqlite:////absolute/path.db``
        (SQLAlchemy's convention): :class:`SQLiteStore`. ``postgresql://...``:
        not available yet (:class:`StoreUnavailableError`).
    **options
        Passed to the backend (e.g. ``timeout``, ``taxonomy``).

    Returns
    -------
    Store

    Raises
    ------
    StoreUnavailableError
        For PostgreSQL/PostGIS URLs.
    StoreError
        For other URL schemes or an in-memory database (the store is shared by
        threads and processes, so it needs a file).
    """
    if isinstance(url_or_path, Path):
        return SQLiteStore(url_or_path, **options)
    text = str(url_or_path).strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        return SQLiteStore(text, **options)
    # never echo the URL: it may hold a password
    base = scheme.lower().split("+", 1)[0]
    if base in ("postgresql", "postgres", "postgis"):
        raise StoreUnavailableError(
            f"the PostgreSQL/PostGIS store ({scheme}://...) is not available yet in this "
            "version of matcher; use a SQLite file path or sqlite:///path/to/matcher.db"
        )
    if base != "sqlite":
        raise StoreError(
            f"unsupported database URL scheme {scheme!r}; use a file path, "
            "sqlite:///path/to/matcher.db or (later) postgresql://..."
        )
    if not rest.startswith("/") or len(rest) == 1:
        raise StoreError(
            "a sqlite URL needs a file: sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (in-memory databases are not supported)"
        )
    return SQLiteStore(rest[1:], **options)


# --------------------------------------------------------------------------- SQLite


class _ThreadConnection:
    """One thread's connection and its transaction depth (weakly tracked by the store)."""

    __slots__ = ("conn", "pid", "depth", "finalizer", "__weakref__")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.depth = 0
        self.finalizer = weakref.finalize(self, conn.close)


class SQLiteStore(Store):
    """The embedded store: one SQLite file (WAL), standard library :mod:`sqlite3` only.

    Parameters
    ----------
    path : str or Path
        The database file; created (with its directory) when missing.
    timeout : float
        Seconds a writer waits for another writer's transaction (busy timeout).
    taxonomy : Taxonomy, optional
        The category taxonomy records are validated against (default taxonomy).

    Raises
    ------
    SchemaVersionError
        The database was written by a newer matcher, or a migration failed (the
        database is then unchanged).
    StoreError
        The file cannot be opened.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as tmp, SQLiteStore(pathlib.Path(tmp, "m.db")) as st:
    ...     key_id, key = st.create_api_key("planner")
    ...     st.authenticate(key) == (key_id, "planner"), st.authenticate(key + "x")
    (True, None)
    """

    def __init__(
        self, path: str | Path, *, timeout: float = 10.0, taxonomy: Taxonomy | None = None
    ) -> None:
        text = str(path)
        if not text or text == ":memory:" or text.startswith("file:"):
            raise StoreError(
                "SQLiteStore needs a database file path (in-memory and URI databases "
                "are not supported: the store is shared by threads and processes)"
            )
        self.path = Path(text)
        self.timeout = float(timeout)
        self._taxonomy = taxonomy
        self._tls = threading.local()
        self._holders: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._inherited: list[_ThreadConnection] = []
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of {self.path}: {exc}") from None
        conn = self._handle().conn
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":  # pragma: no cover - e.g. some network filesystems
            logger.warning("%s: WAL journal not available (journal_mode=%s)", self.path, mode)
        self._migrate()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    # -- connections and transactions

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the database {self.path}: {exc}") from None
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA foreign_keys = ON")  # per connection; busy_timeout is set by timeout=
        return conn

    def _handle(self) -> _ThreadConnection:
        if self._closed:
            raise StoreError("the store is closed")
        handle: _ThreadConnection | None = getattr(self._tls, "handle", None)
        if handle is not None and handle.pid == os.getpid():
            return handle
        if handle is not None:
            # inherited across fork: the parent's connection must never be used (or
            # closed) here; keep it alive without its finalizer
            handle.finalizer.detach()
            self._inherited.append(handle)
        handle = _ThreadConnection(self._connect())
        self._tls.handle = handle
        with self._lock:
            self._holders.add(handle)
        return handle

    def close(self) -> None:
        """Close every connection; the store cannot be used afterwards."""
        self._closed = True
        with self._lock:
            holders = list(self._holders)
        for handle in holders:
            if handle.pid == os.getpid():
                handle.finalizer()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        yield self._handle().conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction; nested uses join the outer one."""
        handle = self._handle()
        conn = handle.conn
        if handle.depth:
            handle.depth += 1
            try:
                yield conn
            finally:
                handle.depth -= 1
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreBusyError(
                f"the database is busy (another writer held it for over {self.timeout:g} s): {exc}"
            ) from None
        handle.depth = 1
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        finally:
            handle.depth = 0

    def _migrate(self) -> None:
        known = len(MIGRATIONS)
        with self._write() as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > known:
                raise SchemaVersionError(
                    f"{self.path}: the database schema is version {current}, newer than "
                    f"this matcher knows ({known}); upgrade matcher to use it"
                )
            for version in range(current + 1, known + 1):
                try:
                    for statement in MIGRATIONS[version - 1]:
                        conn.execute(statement)
                except sqlite3.Error as exc:
                    raise SchemaVersionError(
                        f"{self.path}: migration to schema version {version} failed ({exc}); "
                        "the database is unchanged"
                    ) from exc
                conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _now()),
                )
                logger.info("%s: applied schema migration %d", self.path, version)

    def schema_version(self) -> int:
        """Return the schema version of the database."""
        with self._read() as conn:
            return int(conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    def revision(self) -> int:
        """Return the id of the newest audit entry (see :meth:`Store.revision`).

        Every write appends an audit entry in its own transaction, so this increases
        with every committed write.
        """
        with self._read() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_log").fetchone()[0])

    def _audit(
        self,
        conn: sqlite3.Connection,
        actor: str,
        action: str,
        entity: str,
        entity_id: str | None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, entity, entity_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (_now(), actor, action, entity, entity_id, _dumps(detail or {})),
        )

    # -- validation of single records

    def _validate(self, spec: _Spec, record: Mapping[str, Any]) -> dict[str, Any]:
        """Validate one record with the file readers' rules; return its contract columns."""
        if not isinstance(record, Mapping):
            raise InputValidationError(
                [Problem(spec.entity, None, None, type(record).__name__, "must be an object")]
            )
        allowed = set(spec.columns) | set(spec.extra)
        unknown = sorted(str(k) for k in record if k not in allowed and k not in _READ_ONLY)
        if unknown:
            raise InputValidationError(
                Problem(
                    spec.entity,
                    None,
                    name,
                    None,
                    f"unknown field; the fields are {', '.join(sorted(allowed))}",
                )
                for name in unknown
            )
        missing = [c for c in spec.required if c not in record]
        if missing:
            raise InputValidationError(
                Problem(spec.entity, None, c, None, "required field missing") for c in missing
            )
        row = {k: _cell(record[k]) for k in spec.columns if k in record}
        # the row-level rules of read_partners / read_needs, without their file handling
        validator = validate_partners if spec is _PARTNER else validate_needs
        checked = validator(
            pd.DataFrame([row]), [0], spec.entity, self._taxonomy or default_taxonomy()
        )
        if checked.problems:  # one record: no row numbers
            raise InputValidationError(dataclasses.replace(p, row=None) for p in checked.problems)
        values = checked.table.iloc[0]
        out = {c: _plain(values[c]) for c in spec.columns}
        if "cluster_id" in spec.extra:
            cid = record.get("cluster_id")
            if cid is not None and (not isinstance(cid, str) or not cid.strip()):
                raise InputValidationError(
                    [Problem(spec.entity, None, "cluster_id", cid, "must be a non-empty string")]
                )
            out["cluster_id"] = cid.strip() if isinstance(cid, str) else None
        return out

    # -- generic versioned entities

    @staticmethod
    def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
        return None if row is None else dict(row)

    def _fetch(
        self, conn: sqlite3.Connection, spec: _Spec, entity_id: str
    ) -> dict[str, Any] | None:
        cols = ", ".join(spec.stored)
        row = conn.execute(
            f"SELECT {cols} FROM {spec.table} WHERE {spec.key} = ?", (str(entity_id),)
        ).fetchone()
        return self._row(row)

    def _retired(self, conn: sqlite3.Connection, spec: _Spec, entity_id: str) -> int:
        row = conn.execute(
            "SELECT version FROM retired_versions WHERE entity = ? AND entity_id = ?",
            (spec.entity, entity_id),
        ).fetchone()
        return int(row[0]) if row else 0

    def _insert(
        self, conn: sqlite3.Connection, spec: _Spec, rec: Mapping[str, Any], version: int
    ) -> None:
        cols = spec.stored
        values = [rec.get(c) for c in spec.columns + spec.extra] + [version, _now()]
        conn.execute(
            f"INSERT OR REPLACE INTO {spec.table} ({', '.join(cols)}) "
            f"VALUES ({', '.join('?' * len(cols))})",
            values,
        )
        conn.execute(
            "DELETE FROM retired_versions WHERE entity = ? AND entity_id = ?",
            (spec.entity, rec[spec.key]),
        )

    def _create(self, spec: _Spec, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        _check_actor(actor)
        rec = self._validate(spec, record)
        entity_id = rec[spec.key]
        with self._write() as conn:
            if self._fetch(conn, spec, entity_id) is not None:
                raise AlreadyExistsError(spec.entity, entity_id)
            version = self._retired(conn, spec, entity_id) + 1
            self._insert(conn, spec, rec, version)
            self._audit(conn, actor, "create", spec.entity, entity_id, {"version": version})
            stored = self._fetch(conn, spec, entity_id)
        assert stored is not None
        return stored

    def _conflict_or_missing(
        self, conn: sqlite3.Connection, spec: _Spec, entity_id: str, expected: int
    ) -> StoreError:
        row = conn.execute(
            f"SELECT version FROM {spec.table} WHERE {spec.key} = ?", (entity_id,)
        ).fetchone()
        if row is None:
            return NotFoundError(spec.entity, entity_id)
        return VersionConflictError(spec.entity, entity_id, expected, int(row[0]))

    def _update(
        self,
        spec: _Spec,
        entity_id: str,
        record: Mapping[str, Any],
        expected_version: int,
        actor: str,
    ) -> dict[str, Any]:
        _check_actor(actor)
        expected = _check_version(expected_version)
        entity_id = str(entity_id)
        if not isinstance(record, Mapping):
            raise InputValidationError(
                [Problem(spec.entity, None, None, type(record).__name__, "must be an object")]
            )
        given = record.get(spec.key)
        if given is not None and str(given).strip() != entity_id:
            raise InputValidationError(
                [
                    Problem(
                        spec.entity, None, spec.key, given, f"must be {entity_id!r} (ids are fixed)"
                    )
                ]
            )
        # optimistic concurrency: validate against the version read here, then write
        # only if the row is still at that version (the UPDATE's WHERE decides)
        with self._read() as conn:
            current = self._fetch(conn, spec, entity_id)
        if current is None:
            raise NotFoundError(spec.entity, entity_id)
        if current["version"] != expected:
            raise VersionConflictError(spec.entity, entity_id, expected, current["version"])
        merged = {c: current[c] for c in spec.columns + spec.extra}
        merged.update({k: v for k, v in record.items() if k not in _READ_ONLY})
        rec = self._validate(spec, merged)
        changed = sorted(c for c in spec.columns + spec.extra if rec.get(c) != current.get(c))
        if (
            "cluster_id" in spec.extra
            and "cluster_id" not in record
            and {"lat", "lon", "category"} & set(changed)
        ):
            rec["cluster_id"] = None
            changed = sorted(set(changed) | {"cluster_id"})
        assignments = ", ".join(f"{c} = ?" for c in spec.columns + spec.extra)
        values = [rec.get(c) for c in spec.columns + spec.extra]
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE {spec.table} SET {assignments}, version = version + 1, "
                f"updated_at = ? WHERE {spec.key} = ? AND version = ?",
                [*values, _now(), entity_id, expected],
            )
            if cur.rowcount != 1:
                raise self._conflict_or_missing(conn, spec, entity_id, expected)
            # before/after values, so an update can be undone; a volunteer's private
            # fields are named but never copied into the append-only log (only an admin
            # can change them, and a deleted volunteer must not live on in the log)
            hidden = (
                set(PRIVATE_FIELDS)
                if spec is _PARTNER and "volunteer" in (current.get("kind"), rec.get("kind"))
                else set()
            )
            self._audit(
                conn,
                actor,
                "update",
                spec.entity,
                entity_id,
                {
                    "version": expected + 1,
                    "changed": changed,
                    "before": {c: current.get(c) for c in changed if c not in hidden},
                    "after": {c: rec.get(c) for c in changed if c not in hidden},
                },
            )
            stored = self._fetch(conn, spec, entity_id)
        assert stored is not None
        return stored

    def _delete(self, spec: _Spec, entity_id: str, expected_version: int, actor: str) -> None:
        _check_actor(actor)
        expected = _check_version(expected_version)
        entity_id = str(entity_id)
        with self._write() as conn:
            cur = conn.execute(
                f"DELETE FROM {spec.table} WHERE {spec.key} = ? AND version = ?",
                (entity_id, expected),
            )
            if cur.rowcount != 1:
                raise self._conflict_or_missing(conn, spec, entity_id, expected)
            conn.execute(
                "INSERT OR REPLACE INTO retired_versions (entity, entity_id, version) "
                "VALUES (?, ?, ?)",
                (spec.entity, entity_id, expected),
            )
            self._audit(conn, actor, "delete", spec.entity, entity_id, {"version": expected})

    def _list(
        self, spec: _Spec, limit: int, offset: int, column: str, value: str | None
    ) -> list[dict[str, Any]]:
        _check_page(limit, offset)
        cols = ", ".join(spec.stored)
        where, args = ("", []) if value is None else (f"WHERE {column} = ?", [value])
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {cols} FROM {spec.table} {where} ORDER BY {spec.key} LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [dict(r) for r in rows]

    def _count(self, spec: _Spec, column: str, value: str | None) -> int:
        where, args = ("", []) if value is None else (f"WHERE {column} = ?", [value])
        with self._read() as conn:
            return int(
                conn.execute(f"SELECT COUNT(*) FROM {spec.table} {where}", args).fetchone()[0]
            )

    # -- bulk import

    def _frame_rows(self, spec: _Spec, df: pd.DataFrame) -> list[tuple[Any, ...]]:
        """Typed row tuples of ``spec.columns`` from a validated frame."""
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"expected a DataFrame, not {type(df).__name__}")
        frame = pd.DataFrame(df)
        if isinstance(df, gpd.GeoDataFrame) and ("lat" not in frame or "lon" not in frame):
            geom = df.geometry
            if len(geom) and (geom.geom_type == "Point").all():
                frame["lon"], frame["lat"] = geom.x.to_numpy(), geom.y.to_numpy()
        missing = [c for c in spec.required if c not in frame.columns]
        if missing:
            raise InputValidationError(
                Problem(
                    spec.table,
                    None,
                    c,
                    None,
                    f"required column missing; the table has columns {list(frame.columns)}",
                )
                for c in missing
            )
        n = len(frame)
        cols: dict[str, list[Any]] = {}
        for c in spec.columns:
            raw = frame[c].tolist() if c in frame else [None] * n
            if c in spec.floats:
                cols[c] = [_as_float(v) for v in raw]
            elif c in spec.ints:
                cols[c] = [_as_int(v, 3) for v in raw]
            else:
                cols[c] = [_as_text(v) for v in raw]
        ids = cols[spec.key]
        if "name" in cols:
            cols["name"] = [name or pid for name, pid in zip(cols["name"], ids, strict=True)]
        first: dict[str, int] = {}
        problems = []
        for i, v in enumerate(ids):
            if v in first:
                problems.append(
                    Problem(
                        spec.table, i, spec.key, v, f"duplicate {spec.key}; first at row {first[v]}"
                    )
                )
            else:
                first[v] = i
        if problems:
            raise InputValidationError(problems)
        return list(zip(*(cols[c] for c in spec.columns), strict=True)) if n else []

    def _replace(self, spec: _Spec, df: pd.DataFrame, actor: str) -> ImportResult:
        _check_actor(actor)
        rows = self._frame_rows(spec, df)
        ncols = len(spec.columns)
        key_pos = spec.columns.index(spec.key)
        cols = ", ".join(spec.columns)
        insert = (
            f"INSERT OR REPLACE INTO {spec.table} ({cols}, version, updated_at) "
            f"VALUES ({', '.join('?' * (ncols + 2))})"
        )
        with self._write() as conn:
            old = {
                r[key_pos]: (tuple(r[:ncols]), int(r[ncols]))
                for r in conn.execute(f"SELECT {cols}, version FROM {spec.table}")
            }
            retired = dict(
                conn.execute(
                    "SELECT entity_id, version FROM retired_versions WHERE entity = ?",
                    (spec.entity,),
                ).fetchall()
            )
            now = _now()
            new_ids = {r[key_pos] for r in rows}
            removed = [(k, v) for k, (_, v) in old.items() if k not in new_ids]
            writes, added, unchanged = [], 0, 0
            for r in rows:
                before = old.get(r[key_pos])
                if before is None:
                    added += 1
                    writes.append((*r, retired.get(r[key_pos], 0) + 1, now))
                elif before[0] == tuple(r):
                    unchanged += 1
                else:
                    writes.append((*r, before[1] + 1, now))
            try:
                conn.executemany(
                    f"DELETE FROM {spec.table} WHERE {spec.key} = ?", [(k,) for k, _ in removed]
                )
                conn.executemany(
                    "INSERT OR REPLACE INTO retired_versions (entity, entity_id, version) "
                    "VALUES (?, ?, ?)",
                    [(spec.entity, k, v) for k, v in removed],
                )
                conn.executemany(insert, writes)
                conn.executemany(
                    "DELETE FROM retired_versions WHERE entity = ? AND entity_id = ?",
                    [(spec.entity, w[key_pos]) for w in writes if w[key_pos] in retired],
                )
            except sqlite3.IntegrityError as exc:
                raise InputValidationError(
                    [Problem(spec.table, None, None, None, f"rejected by the database: {exc}")]
                ) from None
            result = ImportResult(len(rows), added, len(writes) - added, unchanged, len(removed))
            self._audit(conn, actor, "replace", spec.entity, None, result.to_dict())
        return result

    def replace_partners(self, df: pd.DataFrame, actor: str) -> ImportResult:
        """Replace all partners, all or nothing (see :meth:`Store.replace_partners`)."""
        return self._replace(_PARTNER, df, actor)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction around several writes (see :meth:`Store.transaction`)."""
        with self._write():
            yield

    def replace_needs(self, df: pd.DataFrame, actor: str) -> ImportResult:
        """Replace all needs, all or nothing (see :meth:`Store.replace_needs`)."""
        return self._replace(_NEED, df, actor)

    def replace_neighborhoods(self, gdf: gpd.GeoDataFrame, actor: str) -> ImportResult:
        """Replace all neighborhoods, all or nothing (see :meth:`Store.replace_neighborhoods`)."""
        _check_actor(actor)
        label = "neighborhoods"
        if not isinstance(gdf, gpd.GeoDataFrame):
            raise TypeError(f"expected a GeoDataFrame, not {type(gdf).__name__}")
        if "neighborhood_id" not in gdf.columns:
            raise InputValidationError(
                [Problem(label, None, "neighborhood_id", None, "required column missing")]
            )
        if gdf.crs is not None and not gdf.crs.equals("EPSG:4326"):
            raise InputValidationError(
                [Problem(label, None, "crs", gdf.crs.to_string(), "must be EPSG:4326")]
            )
        geom_name = gdf.geometry.name
        ids = [_as_text(v) for v in gdf["neighborhood_id"].tolist()]
        types = gdf.geometry.geom_type.tolist()
        problems: list[Problem] = []
        first: dict[str, int] = {}
        for i, (nid, gtype) in enumerate(zip(ids, types, strict=True)):
            if not nid:
                problems.append(Problem(label, i, "neighborhood_id", nid, "must not be empty"))
            elif nid in first:
                problems.append(
                    Problem(
                        label, i, "neighborhood_id", nid, f"duplicate id; first at row {first[nid]}"
                    )
                )
            else:
                first[nid] = i
            if gtype not in ("Polygon", "MultiPolygon"):
                problems.append(
                    Problem(label, i, "geometry", gtype, "must be a Polygon or MultiPolygon")
                )
        if problems:
            raise InputValidationError(problems)
        attrs = pd.DataFrame(gdf.drop(columns=[geom_name, "neighborhood_id"]))
        records = attrs.to_dict("records")
        wkb = shapely.to_wkb(gdf.geometry.to_numpy())
        now = _now()
        rows = []
        for nid, props, geom in zip(ids, records, wkb, strict=True):
            props = _jsonable(props)
            name = _as_text(props.get("name")) or nid
            population = _as_float(props.get("population"))
            rows.append((nid, name, population, _dumps(props, sort_keys=False), geom, now))
        with self._write() as conn:
            old = {
                r[0]: (r[1], bytes(r[2]))
                for r in conn.execute(
                    "SELECT neighborhood_id, properties, geometry FROM neighborhoods"
                )
            }
            writes = [r for r in rows if old.get(r[0]) != (r[3], r[4])]
            removed = [(k,) for k in old if k not in first]
            conn.executemany("DELETE FROM neighborhoods WHERE neighborhood_id = ?", removed)
            conn.executemany(
                "INSERT OR REPLACE INTO neighborhoods "
                "(neighborhood_id, name, population, properties, geometry, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                writes,
            )
            added = sum(1 for r in writes if r[0] not in old)
            result = ImportResult(
                len(rows), added, len(writes) - added, len(rows) - len(writes), len(removed)
            )
            self._audit(conn, actor, "replace", "neighborhood", None, result.to_dict())
        return result

    # -- partners

    @staticmethod
    def _shape_partners(records: list[dict[str, Any]], exact: bool) -> list[dict[str, Any]]:
        vol = [i for i, r in enumerate(records) if r["kind"] == "volunteer"]
        for r in records:
            r["coarsened"] = False
        if exact or not vol:
            return records
        lat, lon = coarsen(
            np.array([records[i]["lat"] for i in vol], dtype=float),
            np.array([records[i]["lon"] for i in vol], dtype=float),
        )
        for j, i in enumerate(vol):
            records[i].update(lat=float(lat[j]), lon=float(lon[j]), contact="", coarsened=True)
        return records

    def list_partners(
        self, limit: int = 100, offset: int = 0, kind: str | None = None, *, exact: bool = False
    ) -> list[dict[str, Any]]:
        """Return a page of partners (see :meth:`Store.list_partners`)."""
        if kind is not None and kind not in ("organization", "volunteer"):
            raise ValueError(f"`kind` must be 'organization' or 'volunteer', not {kind!r}")
        return self._shape_partners(self._list(_PARTNER, limit, offset, "kind", kind), exact)

    def count_partners(self, kind: str | None = None) -> int:
        """Return the number of partners (see :meth:`Store.count_partners`)."""
        return self._count(_PARTNER, "kind", kind)

    def get_partner(self, partner_id: str, *, exact: bool = False) -> dict[str, Any] | None:
        """Return one partner or None (see :meth:`Store.get_partner`)."""
        with self._read() as conn:
            rec = self._fetch(conn, _PARTNER, partner_id)
        return None if rec is None else self._shape_partners([rec], exact)[0]

    def create_partner(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a new partner (see :meth:`Store.create_partner`)."""
        return self._create(_PARTNER, record, actor)

    def update_partner(
        self, partner_id: str, record: Mapping[str, Any], expected_version: int, actor: str
    ) -> dict[str, Any]:
        """Change a partner at ``expected_version`` (see :meth:`Store.update_partner`)."""
        return self._update(_PARTNER, partner_id, record, expected_version, actor)

    def delete_partner(self, partner_id: str, expected_version: int, actor: str) -> None:
        """Delete a partner at ``expected_version`` (see :meth:`Store.delete_partner`)."""
        self._delete(_PARTNER, partner_id, expected_version, actor)

    # -- needs

    def list_needs(
        self, limit: int = 100, offset: int = 0, category: str | None = None
    ) -> list[dict[str, Any]]:
        """Return a page of needs (see :meth:`Store.list_needs`)."""
        return self._list(_NEED, limit, offset, "category", category)

    def count_needs(self, category: str | None = None) -> int:
        """Return the number of needs (see :meth:`Store.count_needs`)."""
        return self._count(_NEED, "category", category)

    def get_need(self, need_id: str) -> dict[str, Any] | None:
        """Return one need or None (see :meth:`Store.get_need`)."""
        with self._read() as conn:
            return self._fetch(conn, _NEED, need_id)

    def create_need(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a new need (see :meth:`Store.create_need`)."""
        return self._create(_NEED, record, actor)

    def upsert_need(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a need, new or replacing (see :meth:`Store.upsert_need`)."""
        _check_actor(actor)
        rec = self._validate(_NEED, record)
        need_id = rec["need_id"]
        with self._write() as conn:
            current = self._fetch(conn, _NEED, need_id)
            if current is None:
                version = self._retired(conn, _NEED, need_id) + 1
            else:
                version = int(current["version"]) + 1
            self._insert(conn, _NEED, rec, version)
            self._audit(
                conn,
                actor,
                "upsert",
                "need",
                need_id,
                {"version": version, "created": current is None},
            )
            stored = self._fetch(conn, _NEED, need_id)
        assert stored is not None
        return stored

    def update_need(
        self, need_id: str, record: Mapping[str, Any], expected_version: int, actor: str
    ) -> dict[str, Any]:
        """Change a need at ``expected_version`` (see :meth:`Store.update_need`)."""
        return self._update(_NEED, need_id, record, expected_version, actor)

    def delete_need(self, need_id: str, expected_version: int, actor: str) -> None:
        """Delete a need at ``expected_version`` (see :meth:`Store.delete_need`)."""
        self._delete(_NEED, need_id, expected_version, actor)

    # -- frames

    def _frame(self, spec: _Spec) -> gpd.GeoDataFrame:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(spec.columns)} FROM {spec.table} ORDER BY {spec.key}"
            ).fetchall()
        data: dict[str, Any] = {}
        for j, c in enumerate(spec.columns):
            values = [r[j] for r in rows]
            if c in spec.floats:
                data[c] = np.asarray(values, dtype=np.float64)
            elif c in spec.ints:
                data[c] = np.asarray(values, dtype=np.int64)
            else:
                data[c] = pd.Series(values, dtype=object).astype(str)
        frame = pd.DataFrame(data, columns=list(spec.columns))
        return gpd.GeoDataFrame(
            frame, geometry=gpd.points_from_xy(frame["lon"], frame["lat"]), crs="EPSG:4326"
        )

    def partners_frame(self) -> gpd.GeoDataFrame:
        """All partners, exact (see :meth:`Store.partners_frame`)."""
        return self._frame(_PARTNER)

    def needs_frame(self) -> gpd.GeoDataFrame:
        """All needs (see :meth:`Store.needs_frame`)."""
        return self._frame(_NEED)

    def neighborhoods_frame(self) -> gpd.GeoDataFrame | None:
        """All neighborhoods, or None (see :meth:`Store.neighborhoods_frame`)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT neighborhood_id, properties, geometry FROM neighborhoods "
                "ORDER BY neighborhood_id"
            ).fetchall()
        if not rows:
            return None
        records = [{"neighborhood_id": r[0], **json.loads(r[1])} for r in rows]
        geometry = shapely.from_wkb([bytes(r[2]) for r in rows])
        return gpd.GeoDataFrame(
            pd.DataFrame.from_records(records), geometry=geometry, crs="EPSG:4326"
        )

    # -- plans

    def _plan_record(self, conn: sqlite3.Connection, row: sqlite3.Row) -> PlanRecord:
        files = tuple(
            r[0]
            for r in conn.execute(
                "SELECT name FROM plan_files WHERE plan_id = ? ORDER BY name", (row["plan_id"],)
            )
        )
        return PlanRecord(
            plan_id=row["plan_id"],
            status=row["status"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            created_by=row["created_by"],
            parameters=json.loads(row["parameters"]),
            summary=None if row["summary"] is None else json.loads(row["summary"]),
            error=row["error"],
            files=files,
        )

    def _transition(
        self,
        conn: sqlite3.Connection,
        plan_id: str,
        allowed: tuple[str, ...],
        to: str,
        sets: str,
        args: Sequence[Any],
    ) -> None:
        marks = ", ".join("?" * len(allowed))
        cur = conn.execute(
            f"UPDATE plans SET status = ?, {sets} WHERE plan_id = ? AND status IN ({marks})",
            [to, *args, plan_id, *allowed],
        )
        if cur.rowcount == 1:
            return
        row = conn.execute("SELECT status FROM plans WHERE plan_id = ?", (plan_id,)).fetchone()
        if row is None:
            raise NotFoundError("plan", plan_id)
        raise PlanStateError(
            f"plan {plan_id!r} is {row[0]}; it can become {to} only when {' or '.join(allowed)}"
        )

    def create_plan(self, parameters: Mapping[str, Any], *, actor: str = "system") -> str:
        """Queue a plan run; return its id (see :meth:`Store.create_plan`)."""
        _check_actor(actor)
        params = _dumps(dict(parameters))
        plan_id = uuid.uuid4().hex
        with self._write() as conn:
            conn.execute(
                "INSERT INTO plans (plan_id, status, created_at, created_by, parameters) "
                "VALUES (?, 'queued', ?, ?, ?)",
                (plan_id, _now(), actor, params),
            )
            self._audit(conn, actor, "queue", "plan", plan_id)
        return plan_id

    def set_plan_running(self, plan_id: str, *, actor: str = "system") -> None:
        """Mark a queued plan running (see :meth:`Store.set_plan_running`)."""
        _check_actor(actor)
        with self._write() as conn:
            self._transition(conn, str(plan_id), ("queued",), "running", "started_at = ?", [_now()])
            self._audit(conn, actor, "run", "plan", str(plan_id))

    def plan_done(
        self,
        plan_id: str,
        summary: Mapping[str, Any],
        files: Mapping[str, bytes | str],
        *,
        usage: Mapping[str, float] | None = None,
        actor: str = "system",
    ) -> None:
        """Mark a plan done with its outputs (see :meth:`Store.plan_done`)."""
        _check_actor(actor)
        plan_id = str(plan_id)
        summary_json = _dumps(dict(summary))
        blobs: list[tuple[str, str, bytes]] = []
        for name, content in sorted(files.items()):
            if not isinstance(name, str) or not _FILE_NAME.match(name):
                raise ValueError(f"plan file name {name!r} must be a plain file name")
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            blobs.append((plan_id, name, data))
        if usage is None:
            usage = _usage_from_assignments(
                dict((n, d) for _, n, d in blobs).get("assignments.csv")
            )
        usage_rows = [(plan_id, str(k), float(v)) for k, v in sorted(usage.items())]
        with self._write() as conn:
            self._transition(
                conn,
                plan_id,
                ("queued", "running"),
                "done",
                "finished_at = ?, summary = ?, error = NULL",
                [_now(), summary_json],
            )
            conn.executemany(
                "INSERT INTO plan_files (plan_id, name, content) VALUES (?, ?, ?)", blobs
            )
            conn.executemany(
                "INSERT INTO plan_usage (plan_id, partner_id, units) VALUES (?, ?, ?)", usage_rows
            )
            self._audit(
                conn,
                actor,
                "done",
                "plan",
                plan_id,
                {"files": [b[1] for b in blobs], "partners_used": len(usage_rows)},
            )

    def plan_failed(self, plan_id: str, error: str, *, actor: str = "system") -> None:
        """Mark a plan failed (see :meth:`Store.plan_failed`)."""
        _check_actor(actor)
        text = str(error)[:_MAX_ERROR]
        with self._write() as conn:
            self._transition(
                conn,
                str(plan_id),
                ("queued", "running"),
                "failed",
                "finished_at = ?, error = ?",
                [_now(), text],
            )
            self._audit(conn, actor, "fail", "plan", str(plan_id))

    def fail_unfinished_plans(self, error: str, *, actor: str = "system") -> list[str]:
        """Fail queued and running plans (see :meth:`Store.fail_unfinished_plans`)."""
        _check_actor(actor)
        text = str(error)[:_MAX_ERROR]
        with self._write() as conn:
            ids = [
                r[0]
                for r in conn.execute(
                    "SELECT plan_id FROM plans WHERE status IN ('queued', 'running') "
                    "ORDER BY plan_id"
                ).fetchall()
            ]
            for plan_id in ids:
                self._transition(
                    conn,
                    plan_id,
                    ("queued", "running"),
                    "failed",
                    "finished_at = ?, error = ?",
                    [_now(), text],
                )
                self._audit(conn, actor, "fail", "plan", plan_id)
            return ids

    def get_plan(self, plan_id: str) -> PlanRecord | None:
        """Return a plan or None (see :meth:`Store.get_plan`)."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM plans WHERE plan_id = ?", (str(plan_id),)).fetchone()
            return None if row is None else self._plan_record(conn, row)

    def list_plans(self, limit: int = 50, offset: int = 0) -> list[PlanRecord]:
        """Return plans, newest first (see :meth:`Store.list_plans`)."""
        _check_page(limit, offset)
        with self._read() as conn:
            rows = conn.execute(
                "SELECT * FROM plans ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (limit, offset),
            ).fetchall()
            return [self._plan_record(conn, r) for r in rows]

    def latest_done_plan(self, *, exclude_scenarios: bool = False) -> PlanRecord | None:
        """Return the last finished done plan or None (see :meth:`Store.latest_done_plan`)."""
        skip = " AND json_extract(parameters, '$.scenario') IS NULL" if exclude_scenarios else ""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT * FROM plans WHERE status = 'done'{skip} "
                "ORDER BY finished_at DESC, rowid DESC LIMIT 1"
            ).fetchone()
            return None if row is None else self._plan_record(conn, row)

    def plan_file(self, plan_id: str, name: str) -> bytes | None:
        """Return a plan's output file or None (see :meth:`Store.plan_file`)."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT content FROM plan_files WHERE plan_id = ? AND name = ?",
                (str(plan_id), str(name)),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def partner_usage(self, plan_id: str) -> dict[str, float]:
        """Units allocated per partner by a done plan (see :meth:`Store.partner_usage`)."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT status FROM plans WHERE plan_id = ?", (str(plan_id),)
            ).fetchone()
            if row is None:
                raise NotFoundError("plan", str(plan_id))
            if row[0] != "done":
                raise PlanStateError(f"plan {plan_id!r} is {row[0]}, not done: it has no usage")
            rows = conn.execute(
                "SELECT partner_id, units FROM plan_usage WHERE plan_id = ? ORDER BY partner_id",
                (str(plan_id),),
            ).fetchall()
        return {r[0]: float(r[1]) for r in rows}

    # -- API keys

    @staticmethod
    def _hash_key(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    def create_api_key(
        self, role: str, *, label: str = "", actor: str = "system"
    ) -> tuple[str, str]:
        """Create an API key; return ``(key_id, key)`` (see :meth:`Store.create_api_key`)."""
        _check_actor(actor)
        if role not in ROLES:
            raise ValueError(f"`role` must be one of {', '.join(ROLES)}, not {role!r}")
        key = _KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(8)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO api_keys (key_id, prefix, key_hash, role, label, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key_id, key[:_PREFIX_LEN], self._hash_key(key), role, str(label), _now()),
            )
            self._audit(conn, actor, "create", "api_key", key_id, {"role": role})
        return key_id, key

    def authenticate(self, key: str) -> tuple[str, str] | None:
        """Return ``(key_id, role)`` of a valid key, else None (see :meth:`Store.authenticate`)."""
        if not isinstance(key, str) or not key.startswith(_KEY_PREFIX) or len(key) > 256:
            return None
        try:
            digest = self._hash_key(key)
        except UnicodeEncodeError:
            return None
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key_id, key_hash, role, revoked_at FROM api_keys WHERE prefix = ?",
                (key[:_PREFIX_LEN],),
            ).fetchall()
        found = None
        for row in rows:  # compare every candidate, in constant time
            if hmac.compare_digest(row["key_hash"], digest) and row["revoked_at"] is None:
                found = (row["key_id"], row["role"])
        return found

    def revoke_api_key(self, key_id: str, *, actor: str = "system") -> None:
        """Revoke a key (see :meth:`Store.revoke_api_key`)."""
        _check_actor(actor)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
                (_now(), str(key_id)),
            )
            if cur.rowcount != 1:
                raise NotFoundError("api_key", str(key_id))
            self._audit(conn, actor, "revoke", "api_key", str(key_id))

    def list_api_keys(self) -> list[ApiKeyInfo]:
        """Return every key's public description (see :meth:`Store.list_api_keys`)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key_id, prefix, role, label, created_at, revoked_at FROM api_keys "
                "ORDER BY created_at, key_id"
            ).fetchall()
        return [ApiKeyInfo(**dict(r)) for r in rows]

    # -- audit

    def audit(
        self,
        action: str,
        entity: str,
        entity_id: str | None,
        *,
        actor: str,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append an audit entry (see :meth:`Store.audit`)."""
        _check_actor(actor)
        with self._write() as conn:
            self._audit(conn, actor, str(action), str(entity), entity_id, detail)

    def audit_entries(
        self,
        limit: int = 100,
        *,
        entity: str | None = None,
        entity_id: str | None = None,
    ) -> list[AuditEntry]:
        """Return audit entries, newest first (see :meth:`Store.audit_entries`)."""
        _check_page(limit, 0)
        where, args = [], []
        if entity is not None:
            where.append("entity = ?")
            args.append(entity)
        if entity_id is not None:
            where.append("entity_id = ?")
            args.append(entity_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT id, at, actor, action, entity, entity_id, detail FROM audit_log "
                f"{clause} ORDER BY id DESC LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [
            AuditEntry(
                r["id"],
                r["at"],
                r["actor"],
                r["action"],
                r["entity"],
                r["entity_id"],
                json.loads(r["detail"]),
            )
            for r in rows
        ]


def _usage_from_assignments(content: bytes | None) -> dict[str, float]:
    """Sum ``units`` per ``partner_id`` over the rows of an ``assignments.csv``."""
    if not content:
        return {}
    reader = csv.DictReader(io.StringIO(content.decode("utf-8-sig")))
    if reader.fieldnames is None or not {"partner_id", "units"} <= set(reader.fieldnames):
        raise ValueError("assignments.csv needs the columns partner_id and units")
    usage: dict[str, float] = {}
    for row in reader:
        units = float(row["units"] or 0.0)
        usage[row["partner_id"]] = usage.get(row["partner_id"], 0.0) + units
    return usage
