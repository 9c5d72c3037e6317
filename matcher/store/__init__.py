"""Persistent store of partners, needs, neighborhoods, plans, API keys and an audit log.

:class:`Store` is the interface (:mod:`.base`); :class:`SQLStore` (:mod:`.sql`) writes
its logic once in SQL that both backends run; :class:`SQLiteStore` (:mod:`.sqlite`,
embedded, a file) and :class:`PostgresStore` (:mod:`.postgres`, PostgreSQL with
PostGIS, several processes or machines on one database) add only how they connect
and begin a transaction. :func:`open_store` chooses one from a path or a URL.

Around them: :mod:`.records` (errors, record types, ETags), :mod:`.entities`
(validation of a record at the store boundary, once, with the file readers' rules)
and :mod:`.migrations` (the schema, version by version, for each dialect). The
public view of a partner (volunteers on the privacy grid) is :mod:`matcher.privacy`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import DEFAULT_LEASE_S, MAX_PLAN_ATTEMPTS, Store
from .migrations import MIGRATIONS
from .records import (
    NEED_FRAME_COLUMNS,
    PARTNER_FRAME_COLUMNS,
    PENDING_STATUSES,
    PLAN_KINDS,
    PLAN_STATUSES,
    ROLES,
    AlreadyExistsError,
    ApiKeyInfo,
    AuditEntry,
    HoldStateError,
    ImportResult,
    LinkedReportsError,
    NotEnoughCapacityError,
    NotFoundError,
    PlanRecord,
    PlanStateError,
    SchemaVersionError,
    StoreBusyError,
    StoreError,
    StoreUnavailableError,
    TooManyHoldsError,
    VersionConflictError,
    etag,
    parse_etag,
)
from .sql import SQLStore
from .sqlite import SQLiteStore

__all__ = [
    "AlreadyExistsError",
    "ApiKeyInfo",
    "AuditEntry",
    "DEFAULT_LEASE_S",
    "HoldStateError",
    "ImportResult",
    "LinkedReportsError",
    "MAX_PLAN_ATTEMPTS",
    "MIGRATIONS",
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
    "SQLStore",
    "SQLiteStore",
    "SchemaVersionError",
    "Store",
    "StoreBusyError",
    "StoreError",
    "StoreUnavailableError",
    "TooManyHoldsError",
    "VersionConflictError",
    "etag",
    "open_store",
    "parse_etag",
]

#: URL schemes of the PostgreSQL/PostGIS backend (``+driver`` suffixes are accepted).
POSTGRES_SCHEMES = ("postgresql", "postgres", "postgis")


def open_store(url_or_path: str | Path, **options: Any) -> Store:
    """Open the store at a path or database URL.

    Parameters
    ----------
    url_or_path : str or Path
        A file path or ``sqlite:///relative/path.db`` / ``sqlite:////absolute/path.db``
        (SQLAlchemy's convention): :class:`SQLiteStore`. ``postgresql://user@host/db``
        (libpq's URI, any of its parameters): :class:`PostgresStore`.
    **options
        Passed to the backend (e.g. ``timeout``, ``taxonomy``).

    Returns
    -------
    Store

    Raises
    ------
    StoreUnavailableError
        A PostgreSQL URL without the ``postgres`` extra installed (psycopg), or a
        server that cannot be reached (one line, no password).
    StoreError
        Another URL scheme, or an in-memory SQLite database (the store is shared by
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
    if base in POSTGRES_SCHEMES:
        try:
            from .postgres import PostgresStore
        except ImportError as exc:
            raise StoreUnavailableError(
                f"the PostgreSQL store needs psycopg 3 and psycopg-pool ({exc.name} is "
                "missing): pip install 'matcher[postgres]'"
            ) from None
        return PostgresStore("postgresql://" + rest, **options)
    if base != "sqlite":
        raise StoreError(
            f"unsupported database URL scheme {scheme!r}; use a file path, "
            "sqlite:///path/to/matcher.db or postgresql://user@host/dbname"
        )
    if not rest.startswith("/") or len(rest) == 1:
        raise StoreError(
            "a sqlite URL needs a file: sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db (in-memory databases are not supported)"
        )
    return SQLiteStore(rest[1:], **options)


def __getattr__(name: str) -> Any:
    if name == "PostgresStore":  # imported on use: psycopg is an optional dependency
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
