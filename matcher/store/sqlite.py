"""The embedded backend: one SQLite file (WAL), standard library :mod:`sqlite3` only.

Connections: one per thread (and per process: a connection inherited across ``fork``
is never used), WAL journal (readers never block the writer), ``foreign_keys=ON`` and
a busy timeout. A write transaction is ``BEGIN IMMEDIATE``: writers queue for the
database's one write lock instead of failing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .records import StoreBusyError, StoreError
from .sql import SQLStore

if TYPE_CHECKING:
    from ..taxonomy import Taxonomy

__all__ = ["SQLiteStore"]

logger = logging.getLogger(__name__)


class _ThreadConnection:
    """One thread's connection (weakly tracked by the store, closed with the thread)."""

    __slots__ = ("conn", "pid", "finalizer", "__weakref__")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.pid = os.getpid()
        self.finalizer = weakref.finalize(self, conn.close)


class SQLiteStore(SQLStore):
    """The embedded store: one SQLite file.

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
    ...     st.authenticate(key) == (key_id, "planner", None), st.authenticate(key + "x")
    (True, None)
    """

    dialect = "sqlite"
    integrity_errors = (sqlite3.IntegrityError,)
    driver_errors = (sqlite3.Error,)

    def __init__(
        self, path: str | Path, *, timeout: float = 10.0, taxonomy: Taxonomy | None = None
    ) -> None:
        super().__init__(taxonomy=taxonomy)
        text = str(path)
        if not text or text == ":memory:" or text.startswith("file:"):
            raise StoreError(
                "SQLiteStore needs a database file path (in-memory and URI databases "
                "are not supported: the store is shared by threads and processes)"
            )
        self.path = Path(text)
        self.timeout = float(timeout)
        self._conns = threading.local()
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

    @property
    def where(self) -> str:
        """The database file."""
        return str(self.path)

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
        handle: _ThreadConnection | None = getattr(self._conns, "handle", None)
        if handle is not None and handle.pid == os.getpid():
            return handle
        if handle is not None:
            # inherited across fork: the parent's connection must never be used (or
            # closed) here; keep it alive without its finalizer
            handle.finalizer.detach()
            self._inherited.append(handle)
        handle = _ThreadConnection(self._connect())
        self._conns.handle = handle
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
    def _connection(self) -> Iterator[sqlite3.Connection]:
        yield self._handle().conn

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        conn = self._handle().conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreBusyError(
                f"the database is busy (another writer held it for over {self.timeout:g} s): {exc}"
            ) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
