"""The PostgreSQL/PostGIS backend: several server processes, or machines, on one database.

psycopg 3 with a connection pool (:mod:`psycopg_pool`). Partners' and needs' points
are also PostGIS ``geometry(Point, 4326)`` columns (generated from ``lat``/``lon``)
and neighborhoods are PostGIS polygons, each with a GiST index, so GIS tools (QGIS,
``psql``) can query the store directly.

Writers are serialized by a transaction-level advisory lock taken when a write
transaction begins, as SQLite's ``BEGIN IMMEDIATE`` does: every write sees the last
committed state, versions and the audit log's ids grow in commit order, and a writer
waits at most ``timeout`` seconds (then :class:`StoreBusyError`, never a deadlock).
Reads never wait for writers. Plan jobs are claimed with ``SELECT ... FOR UPDATE SKIP
LOCKED`` under a lease (see :meth:`matcher.store.Store.claim_plan`).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg.conninfo
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from .records import StoreBusyError, StoreError, StoreUnavailableError
from .sql import SQLStore

if TYPE_CHECKING:
    from ..taxonomy import Taxonomy

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

#: The advisory lock key that serializes writers ("matcher" in ASCII).
WRITE_LOCK_KEY = 0x6D61746368657200


@functools.lru_cache(maxsize=512)
def _placeholders(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class _Connection:
    """A psycopg connection speaking the ``?`` placeholders of :class:`SQLStore`."""

    __slots__ = ("_conn",)

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        if params is None:
            return self._conn.execute(sql.encode())  # no parameters: run the text as is
        return self._conn.execute(_placeholders(sql).encode(), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self._conn.cursor() as cur:
                cur.executemany(_placeholders(sql).encode(), rows)


def _describe(url: str) -> str:
    """``postgresql://host:port/dbname``: the database without user or password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable URL)"
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{host}{port}/{info.get('dbname') or ''}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresStore(SQLStore):
    """The store in a PostgreSQL database with PostGIS.

    Parameters
    ----------
    url : str
        A libpq URI or key/value string (``postgresql://user:password@host:5432/db``,
        any libpq parameter such as ``sslmode`` or ``options``).
    timeout : float
        Seconds to connect, and seconds a writer waits for another writer.
    taxonomy : Taxonomy, optional
        The category taxonomy records are validated against (default taxonomy).
    max_connections : int
        Connections this process may open (a pool; one is opened at once).

    Raises
    ------
    StoreUnavailableError
        The server cannot be reached or refuses the connection (one line, no password).
    StoreError
        PostGIS is not installed in the database and this user may not install it.
    SchemaVersionError
        The database was written by a newer matcher, or a migration failed.
    """

    dialect = "postgresql"
    integrity_errors = (psycopg.errors.IntegrityError,)
    driver_errors = (psycopg.Error,)
    geometry_in = "ST_GeomFromWKB(?, 4326)"
    geometry_out = "ST_AsBinary(geometry)"
    plan_order = "seq"
    claim_lock = " FOR UPDATE SKIP LOCKED"
    not_scenario = "(parameters::jsonb -> 'scenario') IS NULL"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 10.0,
        taxonomy: Taxonomy | None = None,
        max_connections: int = 8,
    ) -> None:
        super().__init__(taxonomy=taxonomy)
        self._url = url
        self._where = _describe(url)
        self.timeout = float(timeout)
        self._max = int(max_connections)
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Any] | None = None
        self._inherited: list[ConnectionPool[Any]] = []
        self._pid = os.getpid()
        self._closed = False
        try:  # one direct connection first: its error says why (a pool's would not)
            psycopg.connect(url, connect_timeout=max(1, round(self.timeout))).close()
        except psycopg.Error as exc:
            raise StoreUnavailableError(
                f"cannot connect to the PostgreSQL server {self._where}: {_first_line(exc)}"
            ) from None
        self._ensure_postgis()
        self._migrate()

    def __repr__(self) -> str:
        return f"PostgresStore({self._where!r})"

    @property
    def where(self) -> str:
        """The database as ``postgresql://host:port/dbname`` (no user, no password)."""
        return self._where

    def _ensure_postgis(self) -> None:
        with self._connection() as conn:
            if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'postgis'").fetchone():
                return
        try:
            with self._transaction() as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
        except psycopg.Error as exc:
            raise StoreError(
                f"{self._where}: PostGIS is not installed in this database and this user "
                f"cannot install it ({_first_line(exc)}); ask a superuser to run "
                "CREATE EXTENSION postgis there (Debian: package postgresql-15-postgis-3)"
            ) from None

    # -- connections and transactions

    def _get_pool(self) -> ConnectionPool[Any]:
        if self._closed:
            raise StoreError("the store is closed")
        with self._lock:
            if self._pool is None or self._pid != os.getpid():
                if self._pool is not None:
                    # inherited across fork: the parent's connections must never be used
                    # (or closed, which would end the parent's sessions) here
                    self._inherited.append(self._pool)
                self._pool = ConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._max,
                    kwargs={"autocommit": True},
                    timeout=self.timeout,
                    name="matcher",
                    open=False,
                )
                self._pid = os.getpid()
                try:
                    self._pool.open(wait=True, timeout=self.timeout)
                except PoolTimeout as exc:
                    raise StoreUnavailableError(
                        f"cannot connect to the PostgreSQL server {self._where}: {_first_line(exc)}"
                    ) from None
            return self._pool

    @contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._get_pool().connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if isinstance(exc, psycopg.errors.LockNotAvailable):
                raise StoreBusyError(
                    f"the database is busy (another writer held it for over {self.timeout:g} s)"
                ) from None
            if isinstance(exc, psycopg.errors.QueryCanceled):
                raise
            raise StoreUnavailableError(
                f"the PostgreSQL server {self._where} failed: {_first_line(exc)}"
            ) from None

    @contextmanager
    def _connection(self) -> Iterator[_Connection]:
        with self._pooled() as conn:
            yield _Connection(conn)

    @contextmanager
    def _transaction(self) -> Iterator[_Connection]:
        with self._pooled() as conn, conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = {max(1, round(self.timeout * 1000))}".encode())
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK_KEY,))
            yield _Connection(conn)

    def close(self) -> None:
        """Close this process's connections; the store cannot be used afterwards."""
        self._closed = True
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None and self._pid == os.getpid():
            pool.close()
