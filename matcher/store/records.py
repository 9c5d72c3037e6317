"""The store's errors, its record types and HTTP entity tags (no database code).

Everything a caller of :class:`matcher.store.Store` handles besides plain dicts of
partners and needs: what a method raises, what it returns for plans, keys, audit
entries and imports, and how a record's version becomes an ``ETag`` and back.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from .._errors import MatcherError
from .._validate import NEED_FIELDS, PARTNER_FIELDS
from ..access import ROLES

__all__ = [
    "AlreadyExistsError",
    "ApiKeyInfo",
    "AuditEntry",
    "HoldStateError",
    "ImportResult",
    "KeyIdentity",
    "LinkedReportsError",
    "NEED_FRAME_COLUMNS",
    "NotEnoughCapacityError",
    "NotFoundError",
    "PARTNER_FRAME_COLUMNS",
    "PENDING_STATUSES",
    "PLAN_KINDS",
    "PLAN_STATUSES",
    "PlanRecord",
    "PlanStateError",
    "ROLES",
    "SchemaVersionError",
    "StoreBusyError",
    "StoreError",
    "StoreUnavailableError",
    "TooManyHoldsError",
    "VersionConflictError",
    "etag",
    "parse_etag",
]

#: The states of a plan, in lifecycle order (``failed`` ends a plan that did not finish).
PLAN_STATUSES: tuple[str, ...] = ("queued", "running", "done", "failed")
#: The states of a plan not finished yet (waiting for a worker, or running).
PENDING_STATUSES: tuple[str, ...] = PLAN_STATUSES[:2]
#: The kinds of plan: a plan, or a what-if scenario of one (its parameters have ``scenario``).
PLAN_KINDS: tuple[str, ...] = ("plan", "scenario")
#: Columns of :meth:`Store.partners_frame` (those of ``read_partners(...).frame``).
PARTNER_FRAME_COLUMNS: tuple[str, ...] = PARTNER_FIELDS
#: Columns of :meth:`Store.needs_frame` (those of ``read_needs(...).frame``).
NEED_FRAME_COLUMNS: tuple[str, ...] = NEED_FIELDS

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


class HoldStateError(StoreError):
    """A hold that is released or expired already cannot be released again."""


class LinkedReportsError(StoreError):
    """A need with linked reports cannot be deleted: they would lose their need."""


class TooManyHoldsError(StoreError):
    """A key has as many active holds as a key may have."""


class NotEnoughCapacityError(StoreError):
    """A hold asks for more units than the partner has free (``free`` says how many)."""

    def __init__(self, partner_id: str, asked: float, free: float) -> None:
        self.partner_id, self.asked, self.free = partner_id, asked, free
        super().__init__(
            f"partner {partner_id!r} has {free:g} unit(s) free, fewer than the {asked:g} asked"
        )


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
    attempts : int
        How many times a worker has claimed it (a plan whose worker died is claimed
        again once, see :meth:`Store.claim_plan`).
    worker : str or None
        The worker that holds it while it runs.
    lease_until : str or None
        When that worker's lease ends unless renewed (UTC, ISO 8601).
    published_at, published_by : str or None
        When and by whom the plan was published (put in force); None for a draft.
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
    attempts: int = 0
    worker: str | None = None
    lease_until: str | None = None
    published_at: str | None = None
    published_by: str | None = None

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
    partner_id: str | None = None


class KeyIdentity(NamedTuple):
    """Who a valid API key is: its id, its role and, for a ``partner`` key, its partner."""

    key_id: str
    role: str
    partner_id: str | None = None


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
