"""The store's logic, written once in SQL that SQLite and PostgreSQL both run.

:class:`SQLStore` implements every :class:`~matcher.store.Store` method over a small
connection interface (``execute`` and ``executemany`` with ``?`` placeholders, rows
readable by position and by column name). A backend adds only what differs: how it
connects, how a write transaction begins (both serialize writers, so every write
sees the last committed state and the audit log's ids grow in commit order), and a
few dialect fragments (class attributes below).

Guarantees, on every backend:

* **Atomic writes.** Every write method runs in one transaction together with its
  audit-log entry: a failed call changes nothing.
* **No lost update.** Partners and needs carry a ``version``; updates and deletes run
  ``... WHERE id = ? AND version = ?`` and raise :class:`VersionConflictError` when
  another writer got there first. A deleted id remembers its last version, so a
  re-created entity never reuses one (a stale ``ETag`` never matches it).
* **Parameterised SQL only.** Values are always bound; the only names formatted into
  SQL are the table and column names written in this package.
* **Secrets.** API keys are stored as their SHA-256 only (256-bit random tokens, so a
  fast hash is enough), compared with :func:`hmac.compare_digest`.
* **Privacy by default.** Reads of partners show volunteers on the grid of
  :mod:`matcher.privacy`, without contact, unless ``exact=True`` (admin views).
* **Plan jobs under leases.** A worker claims a queued plan (:meth:`claim_plan`) and
  renews its lease while it runs; a plan whose worker died is recovered when its
  lease expires.
"""

from __future__ import annotations

import abc
import datetime as _dt
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import geopandas as gpd
import pandas as pd

from .._errors import InputValidationError, Problem
from . import migrations
from .base import DEFAULT_LEASE_S, IDEMPOTENCY_HOURS, MAX_PLAN_ATTEMPTS, Store
from .entities import (
    FILE_NAME,
    MAX_ERROR,
    NEED,
    PARTNER,
    Spec,
    check_actor,
    check_fixed_id,
    check_page,
    check_version,
    dumps,
    frame_from_rows,
    frame_rows,
    merge_update,
    neighborhood_rows,
    neighborhoods_from_rows,
    now,
    shape_partners,
    usage_from_assignments,
    validate_record,
)
from .partnerships import PartnershipSQL
from .records import (
    PLAN_KINDS,
    PLAN_STATUSES,
    ROLES,
    AlreadyExistsError,
    ApiKeyInfo,
    AuditEntry,
    HoldStateError,
    ImportResult,
    KeyIdentity,
    LinkedReportsError,
    NotFoundError,
    PlanRecord,
    PlanStateError,
    StoreError,
    VersionConflictError,
)

if TYPE_CHECKING:
    from ..io import LoadedTable
    from ..taxonomy import Taxonomy

__all__ = ["Connection", "SQLStore"]

#: A running plan whose lease ended before the time bound to ``?``: its worker stopped.
_EXPIRED = "status = 'running' AND lease_until < ?"

logger = logging.getLogger(__name__)

_KEY_PREFIX = "mk_"
_PREFIX_LEN = len(_KEY_PREFIX) + 8
_PLAN_COLUMNS = (
    "plan_id, status, created_at, started_at, finished_at, created_by, parameters, "
    "summary, error, attempts, worker, lease_until, published_at, published_by"
)
_MAX_LEASE_S = 24 * 3600.0
_RETIRE = (
    "INSERT INTO retired_versions (entity, entity_id, version) VALUES (?, ?, ?) "
    "ON CONFLICT (entity, entity_id) DO UPDATE SET version = excluded.version"
)


#: The columns of a linked report, as the store returns them.
_LINKED = ("report_id", "need_id", "category", "lat", "lon", "demand", "severity", "languages",
           "neighborhood", "reported_at", "source", "actor", "created_at")  # fmt: skip

class Connection(Protocol):
    """What :class:`SQLStore` needs of a connection (``?`` placeholders)."""

    def execute(self, sql: str, params: Sequence[Any] = ...) -> Any:
        """Run one statement; return a cursor (``fetchone``, ``fetchall``, ``rowcount``)."""

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        """Run one statement for each row of parameters."""


def _later(seconds: float) -> str:
    at = _dt.datetime.now(_dt.UTC) + _dt.timedelta(seconds=seconds)
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _hours_ago(hours: float) -> str:
    return _later(-hours * 3600.0)


def _check_lease(lease_s: float) -> float:
    if isinstance(lease_s, bool) or not isinstance(lease_s, int | float):
        raise ValueError(f"`lease_s` must be a number of seconds, not {lease_s!r}")
    if not 0 < lease_s <= _MAX_LEASE_S:
        raise ValueError(f"`lease_s` must be in (0, {_MAX_LEASE_S:g}] seconds, not {lease_s!r}")
    return float(lease_s)


class SQLStore(PartnershipSQL, Store):
    """Every :class:`Store` method, over a backend's connections (see the module docs).

    Parameters
    ----------
    taxonomy : Taxonomy, optional
        The category taxonomy records are validated against (default taxonomy).
    """

    #: ``"sqlite"`` or ``"postgresql"``: which statements of a migration to run.
    dialect: ClassVar[str]
    #: The driver's errors for a constraint a row breaks.
    integrity_errors: ClassVar[tuple[type[BaseException], ...]]
    #: The driver's base error class (a failed migration).
    driver_errors: ClassVar[tuple[type[BaseException], ...]]
    #: SQL that turns a bound WKB parameter into a stored geometry, and back.
    geometry_in: ClassVar[str] = "?"
    geometry_out: ClassVar[str] = "geometry"
    #: The column that orders plans by insertion.
    plan_order: ClassVar[str] = "rowid"
    #: Appended to the query that picks a queued plan to claim.
    claim_lock: ClassVar[str] = ""
    #: A condition true for plans without a ``scenario`` parameter.
    not_scenario: ClassVar[str] = "json_extract(parameters, '$.scenario') IS NULL"

    def __init__(self, *, taxonomy: Taxonomy | None = None) -> None:
        self._taxonomy = taxonomy
        self._tls = threading.local()

    # -- what a backend provides

    @abc.abstractmethod
    def _connection(self) -> AbstractContextManager[Connection]:
        """Return a connection for reads (each statement sees the last committed state)."""

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[Connection]:
        """Return a connection in a write transaction that no other writer runs beside.

        It commits when the block ends and rolls back when it raises.
        """

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """The database, for messages (never a password)."""

    # -- reads and writes; a write inside another (same thread) joins its transaction

    def _current(self) -> Connection | None:
        conn: Connection | None = getattr(self._tls, "conn", None)
        if conn is not None and getattr(self._tls, "pid", None) == os.getpid():
            return conn
        return None

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        conn = self._current()
        if conn is not None:
            yield conn
            return
        with self._connection() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        conn = self._current()
        if conn is not None:
            yield conn
            return
        with self._transaction() as conn:
            self._tls.conn, self._tls.pid = conn, os.getpid()
            try:
                yield conn
            finally:
                self._tls.conn = None

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction around several writes (see :meth:`Store.transaction`)."""
        with self._write():
            yield

    def _migrate(self) -> None:
        with self._write() as conn:
            migrations.apply(
                conn.execute, self.dialect, self.where, self.driver_errors, migrations.MIGRATIONS
            )

    def schema_version(self) -> int:
        """Return the schema version of the database."""
        with self._read() as conn:
            return migrations.schema_version(conn.execute)

    def revision(self) -> int:
        """Return the id of the newest audit entry (see :meth:`Store.revision`).

        Every write appends an audit entry in its transaction, and writers are
        serialized, so this increases with every committed write.
        """
        with self._read() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit_log").fetchone()[0])

    def _audit(
        self,
        conn: Connection,
        actor: str,
        action: str,
        entity: str,
        entity_id: str | None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        conn.execute(
            "INSERT INTO audit_log (at, actor, action, entity, entity_id, detail) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (now(), actor, action, entity, entity_id, dumps(detail or {})),
        )

    # -- generic versioned entities

    def _fetch(self, conn: Connection, spec: Spec, entity_id: str) -> dict[str, Any] | None:
        cols = ", ".join(spec.stored)
        row = conn.execute(
            f"SELECT {cols} FROM {spec.table} WHERE {spec.key} = ?", (str(entity_id),)
        ).fetchone()
        return None if row is None else dict(zip(spec.stored, row, strict=True))

    def _retired(self, conn: Connection, spec: Spec, entity_id: str) -> int:
        row = conn.execute(
            "SELECT version FROM retired_versions WHERE entity = ? AND entity_id = ?",
            (spec.entity, entity_id),
        ).fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _upsert(
        table: str, cols: Sequence[str], keys: Sequence[str], marks: Sequence[str] = ()
    ) -> str:
        """``INSERT ... ON CONFLICT (keys) DO UPDATE`` of ``cols`` (``marks``: their SQL)."""
        updates = ", ".join(f"{c} = excluded.{c}" for c in cols if c not in keys)
        values = ", ".join(marks or ("?",) * len(cols))
        return (
            f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({values}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}"
        )

    def _insert(self, conn: Connection, spec: Spec, rec: Mapping[str, Any], version: int) -> None:
        values = [rec.get(c) for c in spec.columns + spec.extra] + [version, now()]
        conn.execute(self._upsert(spec.table, spec.stored, (spec.key,)), values)
        conn.execute(
            "DELETE FROM retired_versions WHERE entity = ? AND entity_id = ?",
            (spec.entity, rec[spec.key]),
        )

    def _create(self, spec: Spec, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        check_actor(actor)
        rec = validate_record(spec, record, self._taxonomy)
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
        self, conn: Connection, spec: Spec, entity_id: str, expected: int
    ) -> StoreError:
        row = conn.execute(
            f"SELECT version FROM {spec.table} WHERE {spec.key} = ?", (entity_id,)
        ).fetchone()
        if row is None:
            return NotFoundError(spec.entity, entity_id)
        return VersionConflictError(spec.entity, entity_id, expected, int(row[0]))

    def _update(
        self,
        spec: Spec,
        entity_id: str,
        record: Mapping[str, Any],
        expected_version: int,
        actor: str,
    ) -> dict[str, Any]:
        check_actor(actor)
        expected = check_version(expected_version)
        entity_id = str(entity_id)
        check_fixed_id(spec, entity_id, record)
        # optimistic concurrency: validate against the version read here, then write
        # only if the row is still at that version (the UPDATE's WHERE decides)
        with self._read() as conn:
            current = self._fetch(conn, spec, entity_id)
        if current is None:
            raise NotFoundError(spec.entity, entity_id)
        if current["version"] != expected:
            raise VersionConflictError(spec.entity, entity_id, expected, current["version"])
        rec, _, detail = merge_update(spec, current, record, self._taxonomy)
        assignments = ", ".join(f"{c} = ?" for c in spec.columns + spec.extra)
        values = [rec.get(c) for c in spec.columns + spec.extra]
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE {spec.table} SET {assignments}, version = version + 1, "
                f"updated_at = ? WHERE {spec.key} = ? AND version = ?",
                [*values, now(), entity_id, expected],
            )
            if cur.rowcount != 1:
                raise self._conflict_or_missing(conn, spec, entity_id, expected)
            self._audit(conn, actor, "update", spec.entity, entity_id, detail)
            stored = self._fetch(conn, spec, entity_id)
        assert stored is not None
        return stored

    def _delete(self, spec: Spec, entity_id: str, expected_version: int, actor: str) -> None:
        check_actor(actor)
        expected = check_version(expected_version)
        entity_id = str(entity_id)
        with self._write() as conn:
            cur = conn.execute(
                f"DELETE FROM {spec.table} WHERE {spec.key} = ? AND version = ?",
                (entity_id, expected),
            )
            if cur.rowcount != 1:
                raise self._conflict_or_missing(conn, spec, entity_id, expected)
            conn.execute(
                _RETIRE,
                (spec.entity, entity_id, expected),
            )
            self._audit(conn, actor, "delete", spec.entity, entity_id, {"version": expected})

    def _list(
        self, spec: Spec, limit: int, offset: int, column: str, value: str | None
    ) -> list[dict[str, Any]]:
        check_page(limit, offset)
        cols = ", ".join(spec.stored)
        where, args = ("", []) if value is None else (f"WHERE {column} = ?", [value])
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {cols} FROM {spec.table} {where} ORDER BY {spec.key} LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return [dict(zip(spec.stored, r, strict=True)) for r in rows]

    def _count(self, spec: Spec, column: str, value: str | None) -> int:
        where, args = ("", []) if value is None else (f"WHERE {column} = ?", [value])
        with self._read() as conn:
            return int(
                conn.execute(f"SELECT COUNT(*) FROM {spec.table} {where}", args).fetchone()[0]
            )

    # -- bulk import

    def _rejected(self, label: str, exc: BaseException) -> InputValidationError:
        return InputValidationError(
            [Problem(label, None, None, None, f"rejected by the database: {exc}")]
        )

    def _replace(self, spec: Spec, df: pd.DataFrame, actor: str) -> ImportResult:
        check_actor(actor)
        rows = frame_rows(spec, df, self._taxonomy)
        ncols = len(spec.columns)
        key_pos = spec.columns.index(spec.key)
        cols = ", ".join(spec.columns)
        insert = self._upsert(spec.table, (*spec.columns, "version", "updated_at"), (spec.key,))
        with self._write() as conn:
            old = {
                r[key_pos]: (tuple(r[:ncols]), int(r[ncols]))
                for r in conn.execute(f"SELECT {cols}, version FROM {spec.table}").fetchall()
            }
            retired = {
                r[0]: int(r[1])
                for r in conn.execute(
                    "SELECT entity_id, version FROM retired_versions WHERE entity = ?",
                    (spec.entity,),
                ).fetchall()
            }
            stamp = now()
            new_ids = {r[key_pos] for r in rows}
            removed = [(k, v) for k, (_, v) in old.items() if k not in new_ids]
            writes, added, unchanged = [], 0, 0
            for r in rows:
                before = old.get(r[key_pos])
                if before is None:
                    added += 1
                    writes.append((*r, retired.get(r[key_pos], 0) + 1, stamp))
                elif before[0] == tuple(r):
                    unchanged += 1
                else:
                    writes.append((*r, before[1] + 1, stamp))
            try:
                conn.executemany(
                    f"DELETE FROM {spec.table} WHERE {spec.key} = ?", [(k,) for k, _ in removed]
                )
                conn.executemany(
                    _RETIRE,
                    [(spec.entity, k, v) for k, v in removed],
                )
                conn.executemany(insert, writes)
                conn.executemany(
                    "DELETE FROM retired_versions WHERE entity = ? AND entity_id = ?",
                    [(spec.entity, w[key_pos]) for w in writes if w[key_pos] in retired],
                )
            except self.integrity_errors as exc:
                raise self._rejected(spec.table, exc) from None
            result = ImportResult(len(rows), added, len(writes) - added, unchanged, len(removed))
            self._audit(conn, actor, "replace", spec.entity, None, result.to_dict())
        return result

    def replace_partners(self, df: pd.DataFrame | LoadedTable, actor: str) -> ImportResult:
        """Replace all partners, all or nothing (see :meth:`Store.replace_partners`).

        The keys of partners left out are revoked in the same transaction (a partner
        created again later with the same id must not inherit them).
        """
        with self._write() as conn:
            result = self._replace(PARTNER, df, actor)
            kept = {str(r[0]) for r in conn.execute("SELECT partner_id FROM partners")}
            self._revoke_partner_keys(conn, None, kept, actor)
        return result

    def _revoke_partner_keys(
        self, conn: Connection, gone: str | None, kept: set[str] | None, actor: str
    ) -> None:
        """Revoke the keys bound to partner ``gone``, or to any partner not in ``kept``."""
        rows = conn.execute(
            "SELECT key_id, partner_id FROM api_keys WHERE role = 'partner' "
            "AND revoked_at IS NULL ORDER BY key_id"
        ).fetchall()
        stamp = now()
        for key_id, partner_id in rows:
            if (gone is not None and partner_id == gone) or (kept is not None
                                                             and partner_id not in kept):
                conn.execute("UPDATE api_keys SET revoked_at = ? WHERE key_id = ?",
                             (stamp, key_id))  # fmt: skip
                self._audit(conn, actor, "revoke", "api_key", str(key_id),
                            {"reason": "its partner was deleted"})  # fmt: skip

    def replace_needs(self, df: pd.DataFrame | LoadedTable, actor: str) -> ImportResult:
        """Replace all needs, all or nothing (see :meth:`Store.replace_needs`).

        A row may not take a linked report's id, and a need with linked reports may not be
        left out (its reports would lose their need): both are problems naming the id.
        """
        frame: pd.DataFrame = getattr(df, "frame", df)
        ids = set(map(str, frame["need_id"])) if "need_id" in frame.columns else set()
        with self._write() as conn:
            links = conn.execute("SELECT report_id, need_id FROM linked_reports").fetchall()
            problems = [
                Problem("needs", None, "need_id", rid, "is the id of a linked report")
                for rid in sorted({str(r[0]) for r in links} & ids)
            ]
            problems += [
                Problem("needs", None, "need_id", nid, "has linked reports: keep it in the "
                        "import (they would lose their need)")  # fmt: skip
                for nid in sorted({str(r[1]) for r in links} - ids)
            ]
            if problems:
                raise InputValidationError(problems[:1000])
            result = self._replace(NEED, df, actor)
            # notes go with their need (whoever may import may read them)
            conn.execute(
                "DELETE FROM report_notes WHERE need_id NOT IN (SELECT need_id FROM needs)"
            )
            conn.execute(  # and their outcomes (residents' feedback goes with its need)
                "DELETE FROM need_outcomes WHERE need_id NOT IN (SELECT need_id FROM needs)"
            )
            return result

    def replace_neighborhoods(self, gdf: gpd.GeoDataFrame, actor: str) -> ImportResult:
        """Replace all neighborhoods, all or nothing (see :meth:`Store.replace_neighborhoods`)."""
        check_actor(actor)
        rows = neighborhood_rows(gdf)
        stamp = now()
        cols = ("neighborhood_id", "name", "population", "properties", "geometry", "updated_at")
        marks = ["?", "?", "?", "?", self.geometry_in, "?"]
        insert = self._upsert("neighborhoods", cols, ("neighborhood_id",), marks)
        with self._write() as conn:
            old = {
                r[0]: (r[1], bytes(r[2]))
                for r in conn.execute(
                    f"SELECT neighborhood_id, properties, {self.geometry_out} FROM neighborhoods"
                ).fetchall()
            }
            writes = [(*r, stamp) for r in rows if old.get(r[0]) != (r[3], r[4])]
            ids = {r[0] for r in rows}
            removed = [(k,) for k in old if k not in ids]
            try:
                conn.executemany("DELETE FROM neighborhoods WHERE neighborhood_id = ?", removed)
                conn.executemany(insert, writes)
            except self.integrity_errors as exc:
                raise self._rejected("neighborhoods", exc) from None
            added = sum(1 for r in writes if r[0] not in old)
            result = ImportResult(
                len(rows), added, len(writes) - added, len(rows) - len(writes), len(removed)
            )
            self._audit(conn, actor, "replace", "neighborhood", None, result.to_dict())
        return result

    # -- partners

    def list_partners(
        self, limit: int = 100, offset: int = 0, kind: str | None = None, *, exact: bool = False
    ) -> list[dict[str, Any]]:
        """Return a page of partners (see :meth:`Store.list_partners`)."""
        if kind is not None and kind not in ("organization", "volunteer"):
            raise ValueError(f"`kind` must be 'organization' or 'volunteer', not {kind!r}")
        return shape_partners(self._list(PARTNER, limit, offset, "kind", kind), exact)

    def count_partners(self, kind: str | None = None) -> int:
        """Return the number of partners (see :meth:`Store.count_partners`)."""
        return self._count(PARTNER, "kind", kind)

    def get_partner(self, partner_id: str, *, exact: bool = False) -> dict[str, Any] | None:
        """Return one partner or None (see :meth:`Store.get_partner`)."""
        with self._read() as conn:
            rec = self._fetch(conn, PARTNER, partner_id)
        return None if rec is None else shape_partners([rec], exact)[0]

    def create_partner(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a new partner (see :meth:`Store.create_partner`)."""
        return self._create(PARTNER, record, actor)

    def update_partner(
        self, partner_id: str, record: Mapping[str, Any], expected_version: int, actor: str
    ) -> dict[str, Any]:
        """Change a partner at ``expected_version`` (see :meth:`Store.update_partner`)."""
        return self._update(PARTNER, partner_id, record, expected_version, actor)

    def delete_partner(self, partner_id: str, expected_version: int, actor: str) -> None:
        """Delete a partner at ``expected_version`` (see :meth:`Store.delete_partner`).

        Its keys (``partner`` role) are revoked in the same transaction.
        """
        with self._write() as conn:
            self._delete(PARTNER, partner_id, expected_version, actor)
            self._revoke_partner_keys(conn, str(partner_id), None, actor)

    # -- needs

    def list_needs(
        self, limit: int = 100, offset: int = 0, category: str | None = None
    ) -> list[dict[str, Any]]:
        """Return a page of needs (see :meth:`Store.list_needs`)."""
        return self._list(NEED, limit, offset, "category", category)

    def count_needs(self, category: str | None = None) -> int:
        """Return the number of needs (see :meth:`Store.count_needs`)."""
        return self._count(NEED, "category", category)

    def get_need(self, need_id: str) -> dict[str, Any] | None:
        """Return one need or None (see :meth:`Store.get_need`)."""
        with self._read() as conn:
            return self._fetch(conn, NEED, need_id)

    def create_need(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a new need (see :meth:`Store.create_need`); a linked report's id is taken."""
        need_id = str(record.get("need_id", ""))
        with self._write() as conn:
            taken = conn.execute(
                "SELECT 1 FROM linked_reports WHERE report_id = ?", (need_id,)
            ).fetchone()
            if taken is not None:
                raise AlreadyExistsError("need", need_id)
            return self._create(NEED, record, actor)

    def upsert_need(self, record: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a need, new or replacing (see :meth:`Store.upsert_need`)."""
        check_actor(actor)
        rec = validate_record(NEED, record, self._taxonomy)
        need_id = rec["need_id"]
        with self._write() as conn:
            current = self._fetch(conn, NEED, need_id)
            if current is None:
                version = self._retired(conn, NEED, need_id) + 1
            else:
                version = int(current["version"]) + 1
            self._insert(conn, NEED, rec, version)
            self._audit(
                conn,
                actor,
                "upsert",
                "need",
                need_id,
                {"version": version, "created": current is None},
            )
            stored = self._fetch(conn, NEED, need_id)
        assert stored is not None
        return stored

    def needs_near(
        self, category: str, lat: float, lon: float, km: float
    ) -> list[dict[str, Any]]:
        """Return the needs of a category near a point (see :meth:`Store.needs_near`)."""
        from ..geo import haversine_km

        dlat = km / 111.0
        dlon = km / max(111.0 * math.cos(math.radians(min(abs(lat), 89.0))), 1e-6)
        cols = ", ".join(NEED.stored)
        with self._read() as conn:
            # a need that is resolved or closed takes no new report: a new concern there
            # is a new need (matcher.outcomes)
            rows = conn.execute(
                f"SELECT {cols} FROM needs WHERE category = ? AND lat BETWEEN ? AND ? "
                "AND lon BETWEEN ? AND ? AND need_id NOT IN (SELECT need_id FROM "
                "need_outcomes WHERE status IN ('resolved', 'not_resolved'))",
                (category, lat - dlat, lat + dlat, lon - dlon, lon + dlon),
            ).fetchall()
        out = []
        for row in rows:
            rec = dict(zip(NEED.stored, row, strict=True))
            d = float(haversine_km(lat, lon, float(rec["lat"]), float(rec["lon"])))
            if d <= km:
                out.append(rec | {"distance_m": round(d * 1000.0, 1)})
        return sorted(out, key=lambda r: (r["distance_m"], r["need_id"]))

    def link_report(
        self, report: Mapping[str, Any], need_id: str, actor: str
    ) -> dict[str, Any]:
        """Keep a report linked to a need (see :meth:`Store.link_report`)."""
        check_actor(actor)
        rec = validate_record(NEED, report, self._taxonomy)
        row = {
            "report_id": rec["need_id"], "need_id": need_id, "category": rec["category"],
            "lat": rec["lat"], "lon": rec["lon"], "demand": rec["demand"],
            "severity": rec["severity"], "languages": rec["languages"],
            "neighborhood": rec["neighborhood"],
            "reported_at": rec["reported_at"], "source": rec["source"], "actor": actor,
            "created_at": now(),
        }  # fmt: skip
        with self._write() as conn:
            if self._fetch(conn, NEED, need_id) is None:
                raise NotFoundError("need", need_id)
            taken = conn.execute(
                "SELECT 1 FROM linked_reports WHERE report_id = ? UNION ALL "
                "SELECT 1 FROM needs WHERE need_id = ?",
                (row["report_id"], row["report_id"]),
            ).fetchone()
            if taken is not None:
                raise AlreadyExistsError("need", row["report_id"])
            names = ", ".join(row)
            marks = ", ".join("?" for _ in row)
            conn.execute(
                f"INSERT INTO linked_reports ({names}) VALUES ({marks})", tuple(row.values())
            )
            self._audit(conn, actor, "link", "need", need_id, {"report_id": row["report_id"]})
        return row

    def linked_reports(self, need_id: str) -> list[dict[str, Any]]:
        """Return the reports linked to a need (see :meth:`Store.linked_reports`)."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_LINKED)} FROM linked_reports WHERE need_id = ? "
                "ORDER BY created_at, report_id",
                (need_id,),
            ).fetchall()
        return [dict(zip(_LINKED, r, strict=True)) for r in rows]

    def get_linked_report(self, report_id: str) -> dict[str, Any] | None:
        """Return one linked report or None (see :meth:`Store.get_linked_report`)."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {', '.join(_LINKED)} FROM linked_reports WHERE report_id = ?",
                (report_id,),
            ).fetchone()
        return None if row is None else dict(zip(_LINKED, row, strict=True))

    def needs_reported(
        self, since: str, until: str, categories: Sequence[str] | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Return needs reported in a span, newest first (see :meth:`Store.needs_reported`)."""
        check_page(limit, 0)
        cols = ", ".join(NEED.stored)
        where, args = "reported_at >= ? AND reported_at < ?", [since, until]
        if categories is not None:
            if not categories:
                return []
            where += f" AND category IN ({', '.join('?' for _ in categories)})"
            args += list(categories)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {cols} FROM needs WHERE {where} "
                "ORDER BY reported_at DESC, need_id LIMIT ?",
                [*args, limit],
            ).fetchall()
        return [dict(zip(NEED.stored, r, strict=True)) for r in rows]

    def add_report_note(self, report_id: str, need_id: str, note: str, actor: str) -> None:
        """Keep a note on a report (see :meth:`Store.add_report_note`)."""
        check_actor(actor)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO report_notes (report_id, need_id, note, actor, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (report_id, need_id, note, actor, now()),
            )
            self._audit(conn, actor, "note", "need", need_id, {"report_id": report_id})

    _NOTE = ("report_id", "need_id", "note", "actor", "created_at")

    def report_notes(self, need_id: str) -> list[dict[str, Any]]:
        """Return the notes on a need's reports (see :meth:`Store.report_notes`)."""
        return self.report_notes_of([need_id])

    def report_notes_of(self, need_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Return the notes of several needs (see :meth:`Store.report_notes_of`)."""
        ids = list(dict.fromkeys(map(str, need_ids)))
        out: list[dict[str, Any]] = []
        with self._read() as conn:
            for start in range(0, len(ids), 500):  # within every driver's parameter limit
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    f"SELECT {', '.join(self._NOTE)} FROM report_notes WHERE need_id IN "
                    f"({', '.join('?' for _ in chunk)}) ORDER BY created_at, report_id",
                    chunk,
                ).fetchall()
                out += [dict(zip(self._NOTE, r, strict=True)) for r in rows]
        return out

    def idempotent_response(self, actor: str, key: str) -> tuple[str, int, str] | None:
        """Return the kept response of a key (see :meth:`Store.idempotent_response`)."""
        since = _hours_ago(IDEMPOTENCY_HOURS)
        with self._read() as conn:
            row = conn.execute(
                "SELECT request_hash, status, response FROM idempotency_keys "
                "WHERE actor = ? AND idem_key = ? AND created_at >= ?",
                (actor, key, since),
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), str(row[2]))

    def remember_response(
        self, actor: str, key: str, request_hash: str, status: int, response: str
    ) -> None:
        """Keep a key's response (see :meth:`Store.remember_response`)."""
        with self._write() as conn:
            since = _hours_ago(IDEMPOTENCY_HOURS)
            conn.execute("DELETE FROM idempotency_keys WHERE created_at < ?", (since,))
            conn.execute(
                "DELETE FROM idempotency_keys WHERE actor = ? AND idem_key = ?", (actor, key)
            )
            conn.execute(
                "INSERT INTO idempotency_keys (actor, idem_key, request_hash, status, response, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (actor, key, request_hash, status, response, now()),
            )

    _HOLD = ("hold_id", "partner_id", "need_id", "units", "actor", "created_at", "expires_at",
             "released_at", "reason")  # fmt: skip

    def _hold(self, row: Sequence[Any]) -> dict[str, Any]:
        rec = dict(zip(self._HOLD, row, strict=True))
        rec["units"] = float(rec["units"])
        rec["active"] = rec["released_at"] is None and str(rec["expires_at"]) > now()
        return rec

    def create_hold(self, hold: Mapping[str, Any], actor: str) -> dict[str, Any]:
        """Store a hold (see :meth:`Store.create_hold`)."""
        check_actor(actor)
        row = (
            str(hold["hold_id"]), str(hold["partner_id"]), str(hold.get("need_id") or ""),
            float(hold["units"]), actor, now(), str(hold["expires_at"]), None, "",
        )  # fmt: skip
        with self._write() as conn:
            marks = ", ".join("?" for _ in self._HOLD)
            conn.execute(f"INSERT INTO holds ({', '.join(self._HOLD)}) VALUES ({marks})", row)
            self._audit(conn, actor, "create", "hold", row[0],
                        {"partner_id": row[1], "units": row[3], "expires_at": row[6]})  # fmt: skip
        return self._hold(row)

    def get_hold(self, hold_id: str) -> dict[str, Any] | None:
        """Return one hold (see :meth:`Store.get_hold`)."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {', '.join(self._HOLD)} FROM holds WHERE hold_id = ?", (hold_id,)
            ).fetchone()
        return None if row is None else self._hold(row)

    def list_holds(
        self,
        *,
        partner_id: str | None = None,
        actor: str | None = None,
        active_only: bool = True,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Return holds (see :meth:`Store.list_holds`)."""
        check_page(limit, 0)
        where, args = [], []
        for column, value in (("partner_id", partner_id), ("actor", actor)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if active_only:
            where.append("released_at IS NULL AND expires_at > ?")
            args.append(now())
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(self._HOLD)} FROM holds {clause}"
                "ORDER BY created_at DESC, hold_id LIMIT ?",
                (*args, limit),
            ).fetchall()
        return [self._hold(r) for r in rows]

    def release_hold(self, hold_id: str, reason: str, actor: str) -> dict[str, Any]:
        """Release an active hold (see :meth:`Store.release_hold`)."""
        check_actor(actor)
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {', '.join(self._HOLD)} FROM holds WHERE hold_id = ?", (hold_id,)
            ).fetchone()
            if row is None:
                raise NotFoundError("hold", hold_id)
            current = self._hold(row)
            if not current["active"]:
                state = "released" if current["released_at"] else "expired"
                raise HoldStateError(f"hold {hold_id!r} is {state} already")
            at = now()
            conn.execute(
                "UPDATE holds SET released_at = ?, reason = ? WHERE hold_id = ?",
                (at, reason, hold_id),
            )
            self._audit(conn, actor, "release", "hold", hold_id, {"reason": reason})
        return current | {"released_at": at, "reason": reason, "active": False}

    def held_units(self) -> tuple[dict[str, float], str | None]:
        """Return units held now per partner (see :meth:`Store.held_units`)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT partner_id, SUM(units), MIN(expires_at) FROM holds "
                "WHERE released_at IS NULL AND expires_at > ? GROUP BY partner_id",
                (now(),),
            ).fetchall()
        held = {str(r[0]): float(r[1]) for r in rows}
        first = min((str(r[2]) for r in rows), default=None)
        return held, first

    def update_need(
        self, need_id: str, record: Mapping[str, Any], expected_version: int, actor: str
    ) -> dict[str, Any]:
        """Change a need at ``expected_version`` (see :meth:`Store.update_need`)."""
        return self._update(NEED, need_id, record, expected_version, actor)

    def delete_need(self, need_id: str, expected_version: int, actor: str) -> None:
        """Delete a need at ``expected_version`` (see :meth:`Store.delete_need`).

        A need with linked reports is kept (409): its reports would lose their need. Its
        reporters' notes are deleted with it.
        """
        with self._write() as conn:
            n = conn.execute(
                "SELECT COUNT(*) FROM linked_reports WHERE need_id = ?", (need_id,)
            ).fetchone()[0]
            if n:
                raise LinkedReportsError(
                    f"need {need_id!r} has {n} linked report(s); deleting it would leave them "
                    "without their need"
                )
            self._delete(NEED, need_id, expected_version, actor)
            # its notes go with it (whoever may delete a need may read them), so a later
            # need of the same id never shows them
            conn.execute("DELETE FROM report_notes WHERE need_id = ?", (need_id,))
            conn.execute("DELETE FROM need_outcomes WHERE need_id = ?", (need_id,))

    # -- frames

    def _frame(self, spec: Spec) -> gpd.GeoDataFrame:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(spec.columns)} FROM {spec.table} ORDER BY {spec.key}"
            ).fetchall()
        return frame_from_rows(spec, rows)

    def partners_frame(self) -> gpd.GeoDataFrame:
        """All partners, exact (see :meth:`Store.partners_frame`)."""
        return self._frame(PARTNER)

    def needs_frame(self) -> gpd.GeoDataFrame:
        """All needs (see :meth:`Store.needs_frame`)."""
        return self._frame(NEED)

    def neighborhoods_frame(self) -> gpd.GeoDataFrame | None:
        """All neighborhoods, or None (see :meth:`Store.neighborhoods_frame`)."""
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT neighborhood_id, properties, {self.geometry_out} FROM neighborhoods "
                "ORDER BY neighborhood_id"
            ).fetchall()
        return neighborhoods_from_rows(rows)

    # -- plans

    def _plan_record(self, conn: Connection, row: Sequence[Any]) -> PlanRecord:
        files = tuple(
            r[0]
            for r in conn.execute(
                "SELECT name FROM plan_files WHERE plan_id = ? ORDER BY name", (row[0],)
            ).fetchall()
        )
        return PlanRecord(
            plan_id=row[0],
            status=row[1],
            created_at=row[2],
            started_at=row[3],
            finished_at=row[4],
            created_by=row[5],
            parameters=json.loads(row[6]),
            summary=None if row[7] is None else json.loads(row[7]),
            error=row[8],
            files=files,
            attempts=int(row[9]),
            worker=row[10],
            lease_until=row[11],
            published_at=row[12],
            published_by=row[13],
        )

    def _transition(
        self,
        conn: Connection,
        plan_id: str,
        allowed: tuple[str, ...],
        to: str,
        sets: str,
        args: Sequence[Any],
        worker: str | None = None,
    ) -> None:
        marks = ", ".join("?" * len(allowed))
        held, held_args = ("", []) if worker is None else (" AND worker = ?", [worker])
        cur = conn.execute(
            f"UPDATE plans SET status = ?, {sets} WHERE plan_id = ? AND status IN ({marks}){held}",
            [to, *args, plan_id, *allowed, *held_args],
        )
        if cur.rowcount == 1:
            return
        row = conn.execute(
            "SELECT status, worker FROM plans WHERE plan_id = ?", (plan_id,)
        ).fetchone()
        if row is None:
            raise NotFoundError("plan", plan_id)
        if worker is not None and row[0] in allowed:
            raise PlanStateError(
                f"plan {plan_id!r} is held by another worker ({row[1]}), not {worker}: "
                "its lease expired and it was claimed again"
            )
        raise PlanStateError(
            f"plan {plan_id!r} is {row[0]}; it can become {to} only when {' or '.join(allowed)}"
        )

    def create_plan(self, parameters: Mapping[str, Any], *, actor: str = "system") -> str:
        """Queue a plan run; return its id (see :meth:`Store.create_plan`)."""
        check_actor(actor)
        params = dumps(dict(parameters))
        plan_id = uuid.uuid4().hex
        with self._write() as conn:
            conn.execute(
                "INSERT INTO plans (plan_id, status, created_at, created_by, parameters) "
                "VALUES (?, 'queued', ?, ?, ?)",
                (plan_id, now(), actor, params),
            )
            self._audit(conn, actor, "queue", "plan", plan_id)
        return plan_id

    def _recover(self, conn: Connection, actor: str) -> list[str]:
        stamp = now()
        expired = conn.execute(
            f"SELECT plan_id, attempts, worker, lease_until FROM plans WHERE {_EXPIRED} "
            "ORDER BY plan_id",
            (stamp,),
        ).fetchall()
        for plan_id, attempts, worker, until in expired:
            why = (
                f"its worker ({worker or 'unknown'}) stopped while running it "
                f"(lease expired {until})"
            )
            if int(attempts) < MAX_PLAN_ATTEMPTS:
                conn.execute(
                    "UPDATE plans SET status = 'queued', started_at = NULL, worker = NULL, "
                    "lease_until = NULL WHERE plan_id = ?",
                    (plan_id,),
                )
                self._audit(conn, actor, "requeue", "plan", plan_id, {"reason": why})
                logger.warning("plan %s queued again: %s", plan_id, why)
            else:
                error = f"{why}; claimed {attempts} times, so it is not tried again"
                self._transition(
                    conn,
                    plan_id,
                    ("running",),
                    "failed",
                    "finished_at = ?, error = ?, lease_until = NULL",
                    [stamp, error],
                )
                self._audit(conn, actor, "fail", "plan", plan_id, {"reason": why})
                logger.warning("plan %s failed: %s", plan_id, error)
        return [r[0] for r in expired]

    def recover_plans(self, *, actor: str = "system") -> list[str]:
        """Re-queue or fail plans whose lease expired (see :meth:`Store.recover_plans`)."""
        check_actor(actor)
        with self._write() as conn:
            return self._recover(conn, actor)

    def claim_plan(
        self,
        worker: str,
        *,
        lease_s: float = DEFAULT_LEASE_S,
        plan_id: str | None = None,
    ) -> PlanRecord | None:
        """Claim a queued plan under a lease (see :meth:`Store.claim_plan`)."""
        check_actor(worker)
        lease = _check_lease(lease_s)
        where, args = "status = 'queued'", []
        if plan_id is not None:
            where, args = where + " AND plan_id = ?", [str(plan_id)]
        elif not self._claimable():
            return None  # an idle poll never takes the write lock
        with self._write() as conn:
            self._recover(conn, "system")
            row = conn.execute(
                f"SELECT plan_id FROM plans WHERE {where} "
                f"ORDER BY {self.plan_order} LIMIT 1{self.claim_lock}",
                args,
            ).fetchone()
            if row is None:
                if (
                    plan_id is not None
                    and not conn.execute("SELECT 1 FROM plans WHERE plan_id = ?", args).fetchone()
                ):
                    raise NotFoundError("plan", str(plan_id))
                return None
            claimed = row[0]
            conn.execute(
                "UPDATE plans SET status = 'running', started_at = ?, worker = ?, "
                "lease_until = ?, attempts = attempts + 1 WHERE plan_id = ?",
                (now(), worker, _later(lease), claimed),
            )
            self._audit(conn, worker, "run", "plan", claimed)
            record = conn.execute(
                f"SELECT {_PLAN_COLUMNS} FROM plans WHERE plan_id = ?", (claimed,)
            ).fetchone()
            return self._plan_record(conn, record)

    def _claimable(self) -> bool:
        """Whether a plan is queued or its lease expired (a read: no lock taken)."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT 1 FROM plans WHERE status = 'queued' OR ({_EXPIRED}) LIMIT 1",
                (now(),),
            ).fetchone()
        return row is not None

    def renew_plan_lease(
        self, plan_id: str, worker: str, *, lease_s: float = DEFAULT_LEASE_S
    ) -> bool:
        """Extend a worker's lease on a running plan (see :meth:`Store.renew_plan_lease`)."""
        lease = _check_lease(lease_s)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE plans SET lease_until = ? "
                "WHERE plan_id = ? AND worker = ? AND status = 'running'",
                (_later(lease), str(plan_id), str(worker)),
            )
            return bool(cur.rowcount == 1)

    def plan_done(
        self,
        plan_id: str,
        summary: Mapping[str, Any],
        files: Mapping[str, bytes | str],
        *,
        usage: Mapping[str, float] | None = None,
        actor: str = "system",
        worker: str | None = None,
    ) -> None:
        """Mark a plan done with its outputs (see :meth:`Store.plan_done`)."""
        check_actor(actor)
        plan_id = str(plan_id)
        summary_json = dumps(dict(summary))
        blobs: list[tuple[str, str, bytes]] = []
        for name, content in sorted(files.items()):
            if not isinstance(name, str) or not FILE_NAME.match(name):
                raise ValueError(f"plan file name {name!r} must be a plain file name")
            data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
            blobs.append((plan_id, name, data))
        if usage is None:
            usage = usage_from_assignments(dict((n, d) for _, n, d in blobs).get("assignments.csv"))
        usage_rows = [(plan_id, str(k), float(v)) for k, v in sorted(usage.items())]
        allowed = ("queued", "running") if worker is None else ("running",)
        with self._write() as conn:
            self._transition(
                conn,
                plan_id,
                allowed,
                "done",
                "finished_at = ?, summary = ?, error = NULL, lease_until = NULL",
                [now(), summary_json],
                worker,
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

    def plan_failed(
        self, plan_id: str, error: str, *, actor: str = "system", worker: str | None = None
    ) -> None:
        """Mark a plan failed (see :meth:`Store.plan_failed`)."""
        check_actor(actor)
        allowed = ("queued", "running") if worker is None else ("running",)
        with self._write() as conn:
            self._transition(
                conn,
                str(plan_id),
                allowed,
                "failed",
                "finished_at = ?, error = ?, lease_until = NULL",
                [now(), str(error)[:MAX_ERROR]],
                worker,
            )
            self._audit(conn, actor, "fail", "plan", str(plan_id))

    def get_plan(self, plan_id: str) -> PlanRecord | None:
        """Return a plan or None (see :meth:`Store.get_plan`)."""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_PLAN_COLUMNS} FROM plans WHERE plan_id = ?", (str(plan_id),)
            ).fetchone()
            return None if row is None else self._plan_record(conn, row)

    def list_plans(
        self,
        limit: int = 50,
        offset: int = 0,
        *,
        status: str | None = None,
        kind: str | None = None,
    ) -> list[PlanRecord]:
        """Return plans, newest first (see :meth:`Store.list_plans`)."""
        check_page(limit, offset)
        where, args = self._plan_filter(status, kind)
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {_PLAN_COLUMNS} FROM plans{where} "
                f"ORDER BY created_at DESC, {self.plan_order} DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()
            return [self._plan_record(conn, r) for r in rows]

    def count_plans(self, *, status: str | None = None, kind: str | None = None) -> int:
        """Return the number of plans (see :meth:`Store.count_plans`)."""
        where, args = self._plan_filter(status, kind)
        with self._read() as conn:
            row = conn.execute(f"SELECT COUNT(*) FROM plans{where}", args).fetchone()
        return int(row[0])

    def _plan_filter(self, status: str | None, kind: str | None) -> tuple[str, tuple[str, ...]]:
        """Return the WHERE clause (or '') and its arguments of a status and kind filter."""
        if status is not None and status not in PLAN_STATUSES:
            raise ValueError(f"`status` must be one of {', '.join(PLAN_STATUSES)}, not {status!r}")
        if kind is not None and kind not in PLAN_KINDS:
            raise ValueError(f"`kind` must be one of {', '.join(PLAN_KINDS)}, not {kind!r}")
        terms, args = [], []
        if status is not None:
            terms.append("status = ?")
            args.append(status)
        if kind is not None:
            terms.append(self.not_scenario if kind == "plan" else f"NOT ({self.not_scenario})")
        return (f" WHERE {' AND '.join(terms)}" if terms else ""), tuple(args)

    def latest_done_plan(self, *, exclude_scenarios: bool = False) -> PlanRecord | None:
        """Return the last finished done plan or None (see :meth:`Store.latest_done_plan`)."""
        skip = f" AND {self.not_scenario}" if exclude_scenarios else ""
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {_PLAN_COLUMNS} FROM plans WHERE status = 'done'{skip} "
                f"ORDER BY finished_at DESC, {self.plan_order} DESC LIMIT 1"
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
        self,
        role: str,
        *,
        label: str = "",
        actor: str = "system",
        partner_id: str | None = None,
    ) -> tuple[str, str]:
        """Create an API key; return ``(key_id, key)`` (see :meth:`Store.create_api_key`)."""
        check_actor(actor)
        if role not in ROLES:
            raise ValueError(f"`role` must be one of {', '.join(ROLES)}, not {role!r}")
        if (role == "partner") != (partner_id is not None):
            raise ValueError("a partner key, and only a partner key, names its `partner_id`")
        key = _KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(8)
        with self._write() as conn:
            if partner_id is not None and self.get_partner(partner_id) is None:
                raise NotFoundError("partner", partner_id)
            conn.execute(
                "INSERT INTO api_keys (key_id, prefix, key_hash, role, label, created_at, "
                "partner_id) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key_id, key[:_PREFIX_LEN], self._hash_key(key), role, str(label), now(),
                 partner_id),
            )  # fmt: skip
            detail = {"role": role} | ({"partner_id": partner_id} if partner_id else {})
            self._audit(conn, actor, "create", "api_key", key_id, detail)
        return key_id, key

    def authenticate(self, key: str) -> KeyIdentity | None:
        """Return who a valid key is, else None (see :meth:`Store.authenticate`)."""
        if not isinstance(key, str) or not key.startswith(_KEY_PREFIX) or len(key) > 256:
            return None
        try:
            digest = self._hash_key(key)
        except UnicodeEncodeError:
            return None
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key_id, key_hash, role, revoked_at, partner_id FROM api_keys "
                "WHERE prefix = ?",
                (key[:_PREFIX_LEN],),
            ).fetchall()
        found = None
        for key_id, key_hash, role, revoked_at, partner_id in rows:  # all, in constant time
            if hmac.compare_digest(key_hash, digest) and revoked_at is None:
                found = KeyIdentity(key_id, role, partner_id)
        return found

    def revoke_api_key(self, key_id: str, *, actor: str = "system") -> None:
        """Revoke a key (see :meth:`Store.revoke_api_key`)."""
        check_actor(actor)
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE key_id = ?",
                (now(), str(key_id)),
            )
            if cur.rowcount != 1:
                raise NotFoundError("api_key", str(key_id))
            self._audit(conn, actor, "revoke", "api_key", str(key_id))

    def list_api_keys(self) -> list[ApiKeyInfo]:
        """Return every key's public description (see :meth:`Store.list_api_keys`)."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT key_id, prefix, role, label, created_at, revoked_at, partner_id "
                "FROM api_keys ORDER BY created_at, key_id"
            ).fetchall()
        return [ApiKeyInfo(*r) for r in rows]

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
        check_actor(actor)
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
        check_page(limit, 0)
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
        return [AuditEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]
