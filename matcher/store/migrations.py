"""Schema migrations of the SQL backends, in lockstep: version ``i`` means the same tables.

Migration ``i`` (1-based) brings the schema to version ``i`` on every backend; each
backend has its own statements (SQL dialects differ) for the same logical change, and
:func:`apply` runs the pending ones in one transaction, recording each in
``schema_version``. Append only: never edit a released migration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .entities import now
from .records import SchemaVersionError

__all__ = ["MIGRATIONS", "Migration", "apply", "schema_version"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Migration:
    """One schema change, as statements for each SQL dialect."""

    summary: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        """Return the statements of ``dialect`` (``"sqlite"`` or ``"postgresql"``)."""
        return self.sqlite if dialect == "sqlite" else self.postgresql


#: The words in which the dialects differ, for the statements of :func:`_schema_1`.
_DIALECT = {
    "sqlite": {
        "float": "REAL",  # SQLite's REAL is an 8-byte float
        "bytes": "BLOB",
        "severity": "typeof(severity) = 'integer' AND severity BETWEEN 1 AND 5",
        "point": "",
        "polygon": "BLOB NOT NULL",
        "plan_seq": "",
        "audit_id": "INTEGER PRIMARY KEY AUTOINCREMENT",
    },
    "postgresql": {
        "float": "DOUBLE PRECISION",
        "bytes": "BYTEA",
        "severity": "severity BETWEEN 1 AND 5",
        # the point again as PostGIS geometry, for spatial queries and GIS tools
        "point": ",\n        geom geometry(Point, 4326) NOT NULL\n"
        "            GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)) STORED",
        "polygon": "geometry(Geometry, 4326) NOT NULL\n"
        "            CHECK (GeometryType(geometry) IN ('POLYGON', 'MULTIPOLYGON'))",
        "plan_seq": "\n        seq BIGINT GENERATED ALWAYS AS IDENTITY,",
        "audit_id": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    },
}

_TABLES_1 = (
    """CREATE TABLE partners (
        partner_id TEXT PRIMARY KEY NOT NULL CHECK (length(partner_id) > 0),
        name TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('organization', 'volunteer')),
        lat {float} NOT NULL CHECK (lat BETWEEN -90 AND 90),
        lon {float} NOT NULL CHECK (lon BETWEEN -180 AND 180),
        categories TEXT NOT NULL CHECK (length(categories) > 0),
        capacity {float} NOT NULL CHECK (capacity >= 0),
        radius_km {float} NOT NULL CHECK (radius_km > 0),
        languages TEXT NOT NULL DEFAULT '',
        contact TEXT NOT NULL DEFAULT '',
        version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
        updated_at TEXT NOT NULL{point}
    )""",
    "CREATE INDEX partners_kind ON partners (kind, partner_id)",
    """CREATE TABLE needs (
        need_id TEXT PRIMARY KEY NOT NULL CHECK (length(need_id) > 0),
        category TEXT NOT NULL CHECK (length(category) > 0),
        lat {float} NOT NULL CHECK (lat BETWEEN -90 AND 90),
        lon {float} NOT NULL CHECK (lon BETWEEN -180 AND 180),
        demand {float} NOT NULL CHECK (demand > 0),
        severity INTEGER NOT NULL DEFAULT 3 CHECK ({severity}),
        neighborhood TEXT NOT NULL DEFAULT '',
        languages TEXT NOT NULL DEFAULT '',
        reported_at TEXT NOT NULL DEFAULT '',
        source TEXT NOT NULL DEFAULT '',
        cluster_id TEXT,
        version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
        updated_at TEXT NOT NULL{point}
    )""",
    "CREATE INDEX needs_category ON needs (category, need_id)",
    """CREATE TABLE neighborhoods (
        neighborhood_id TEXT PRIMARY KEY NOT NULL CHECK (length(neighborhood_id) > 0),
        name TEXT NOT NULL,
        population {float},
        properties TEXT NOT NULL DEFAULT '{{}}',
        geometry {polygon},
        updated_at TEXT NOT NULL
    )""",
    """CREATE TABLE retired_versions (
        entity TEXT NOT NULL,
        entity_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (entity, entity_id)
    )""",
    """CREATE TABLE plans (
        plan_id TEXT PRIMARY KEY NOT NULL,{plan_seq}
        status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed')),
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        parameters TEXT NOT NULL DEFAULT '{{}}',
        summary TEXT,
        error TEXT
    )""",
    "CREATE INDEX plans_status ON plans (status, finished_at)",
    """CREATE TABLE plan_files (
        plan_id TEXT NOT NULL REFERENCES plans (plan_id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        content {bytes} NOT NULL,
        PRIMARY KEY (plan_id, name)
    )""",
    """CREATE TABLE plan_usage (
        plan_id TEXT NOT NULL REFERENCES plans (plan_id) ON DELETE CASCADE,
        partner_id TEXT NOT NULL,
        units {float} NOT NULL,
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
        id {audit_id},
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        entity TEXT NOT NULL,
        entity_id TEXT,
        detail TEXT NOT NULL DEFAULT '{{}}'
    )""",
    "CREATE INDEX audit_log_entity ON audit_log (entity, entity_id)",
)

#: What only one dialect has: SQLite's append-only triggers; PostGIS's spatial indexes and
#: PostgreSQL's trigger function.
_ONLY_1 = {
    "sqlite": (
        """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
        """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END""",
    ),
    "postgresql": (
        "CREATE INDEX partners_geom ON partners USING GIST (geom)",
        "CREATE INDEX needs_geom ON needs USING GIST (geom)",
        "CREATE INDEX neighborhoods_geometry ON neighborhoods USING GIST (geometry)",
        """CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$""",
        """CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()""",
        """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
    ),
}


def _schema_1(dialect: str) -> tuple[str, ...]:
    words = _DIALECT[dialect]
    return tuple(t.format(**words) for t in _TABLES_1) + _ONLY_1[dialect]


_LEASES: tuple[str, ...] = (
    "ALTER TABLE plans ADD COLUMN worker TEXT",
    "ALTER TABLE plans ADD COLUMN lease_until TEXT",
    "ALTER TABLE plans ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX plans_lease ON plans (status, lease_until)",
    # a plan left running by a matcher without leases: expired now, so it is recovered
    "UPDATE plans SET lease_until = COALESCE(started_at, created_at) WHERE status = 'running'",
)

_INTAKE = (
    # a POST with an Idempotency-Key: its answer, replayed to a retry of the same request
    """CREATE TABLE idempotency_keys (
        actor TEXT NOT NULL,
        idem_key TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        status INTEGER NOT NULL,
        response TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (actor, idem_key)
    )""",
    "CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at)",
    # a report linked to a need it duplicates: kept, its demand not counted twice
    """CREATE TABLE linked_reports (
        report_id TEXT PRIMARY KEY NOT NULL,
        need_id TEXT NOT NULL,
        category TEXT NOT NULL,
        lat {float} NOT NULL,
        lon {float} NOT NULL,
        demand {float} NOT NULL,
        severity INTEGER NOT NULL,
        languages TEXT NOT NULL DEFAULT '',
        neighborhood TEXT NOT NULL DEFAULT '',
        reported_at TEXT NOT NULL,
        source TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX linked_reports_need ON linked_reports (need_id)",
    "CREATE INDEX needs_reported ON needs (category, reported_at)",
)


_HOLDS = (
    # units held at a partner for a referral until expires_at, unless released before
    """CREATE TABLE holds (
        hold_id TEXT PRIMARY KEY NOT NULL,
        partner_id TEXT NOT NULL,
        need_id TEXT NOT NULL DEFAULT '',
        units {float} NOT NULL CHECK (units > 0),
        actor TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        released_at TEXT,
        reason TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX holds_active ON holds (expires_at, partner_id)",
)


_NOTES = (
    # a reporter's short note on a concern (the report's own, or the need's when it is new)
    """CREATE TABLE report_notes (
        report_id TEXT PRIMARY KEY NOT NULL,
        need_id TEXT NOT NULL,
        note TEXT NOT NULL CHECK (length(note) > 0),
        actor TEXT NOT NULL,
        created_at TEXT NOT NULL
    )""",
    "CREATE INDEX report_notes_need ON report_notes (need_id)",
)


#: The states of a partnership (kept in step with ``matcher.partnerships.STATES``).
_STATES = "'offered', 'accepted', 'declined', 'active', 'completed', 'cancelled', 'lapsed'"

_PARTNERSHIPS = (
    # a plan is a draft until a planner publishes it; the last one published is in force
    "ALTER TABLE plans ADD COLUMN published_at TEXT",
    "ALTER TABLE plans ADD COLUMN published_by TEXT",
    "CREATE INDEX plans_published ON plans (published_at)",
    # an assignment of a published plan offered to its partner, and what became of it
    f"""CREATE TABLE partnerships (
        partnership_id TEXT PRIMARY KEY NOT NULL,
        plan_id TEXT NOT NULL,
        origin_plan_id TEXT NOT NULL,
        cluster_id TEXT NOT NULL,
        partner_id TEXT NOT NULL,
        category TEXT NOT NULL,
        neighborhood TEXT NOT NULL DEFAULT '',
        units {{float}} NOT NULL CHECK (units > 0),
        centroid_lat {{float}} NOT NULL CHECK (centroid_lat BETWEEN -90 AND 90),
        centroid_lon {{float}} NOT NULL CHECK (centroid_lon BETWEEN -180 AND 180),
        state TEXT NOT NULL CHECK (state IN ({_STATES})),
        reason TEXT NOT NULL DEFAULT '',
        cleared INTEGER NOT NULL DEFAULT 0 CHECK (cleared IN (0, 1)),
        offered_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        answered_at TEXT,
        updated_at TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)
    )""",
    "CREATE INDEX partnerships_state ON partnerships (state, expires_at)",
    "CREATE INDEX partnerships_partner ON partnerships (partner_id, offered_at)",
)

#: API keys of the partner role, each bound to one partner. SQLite cannot change a CHECK
#: constraint in place, so its table is copied; PostgreSQL changes the constraint.
_PARTNER_KEYS = {
    "sqlite": (
        """CREATE TABLE api_keys_new (
            key_id TEXT PRIMARY KEY NOT NULL,
            prefix TEXT NOT NULL,
            key_hash TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL CHECK (role IN ('planner', 'outreach', 'admin', 'partner')),
            label TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            revoked_at TEXT,
            partner_id TEXT,
            CHECK ((role = 'partner') = (partner_id IS NOT NULL))
        )""",
        "INSERT INTO api_keys_new (key_id, prefix, key_hash, role, label, created_at, "
        "revoked_at) SELECT key_id, prefix, key_hash, role, label, created_at, revoked_at "
        "FROM api_keys",
        "DROP TABLE api_keys",
        "ALTER TABLE api_keys_new RENAME TO api_keys",
        "CREATE INDEX api_keys_prefix ON api_keys (prefix)",
    ),
    "postgresql": (
        "ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check",
        "ALTER TABLE api_keys ADD COLUMN partner_id TEXT",
        "ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check "
        "CHECK (role IN ('planner', 'outreach', 'admin', 'partner'))",
        "ALTER TABLE api_keys ADD CONSTRAINT api_keys_partner "
        "CHECK ((role = 'partner') = (partner_id IS NOT NULL))",
    ),
}


#: The plan in force before publishing existed stays in force: the last done plan (no
#: scenario), if it was made at volunteers' grid points (the rule then), is marked
#: published, with no offers made; unless a plan was published already.
_STILL_IN_FORCE = {
    "sqlite": (
        "UPDATE plans SET published_at = finished_at, published_by = 'migration' "
        "WHERE json_extract(parameters, '$.volunteer_points') = 'grid' "
        "AND NOT EXISTS (SELECT 1 FROM plans WHERE published_at IS NOT NULL) "
        "AND plan_id = (SELECT plan_id FROM plans WHERE status = 'done' "
        "AND json_extract(parameters, '$.scenario') IS NULL "
        "ORDER BY finished_at DESC, rowid DESC LIMIT 1)",
    ),
    "postgresql": (
        "UPDATE plans SET published_at = finished_at, published_by = 'migration' "
        "WHERE (parameters::jsonb ->> 'volunteer_points') = 'grid' "
        "AND NOT EXISTS (SELECT 1 FROM plans WHERE published_at IS NOT NULL) "
        "AND plan_id = (SELECT plan_id FROM plans WHERE status = 'done' "
        "AND (parameters::jsonb -> 'scenario') IS NULL "
        "ORDER BY finished_at DESC, seq DESC LIMIT 1)",
    ),
}


def _partnerships(dialect: str) -> tuple[str, ...]:
    words = _DIALECT[dialect]
    return tuple(t.format(**words) for t in _PARTNERSHIPS) + _PARTNER_KEYS[dialect]


_OUTCOMES = (
    # units a partnership delivered over a period (a partner's own record, or a planner's)
    """CREATE TABLE deliveries (
        delivery_id TEXT PRIMARY KEY NOT NULL,
        partnership_id TEXT NOT NULL,
        partner_id TEXT NOT NULL,
        period_start TEXT NOT NULL,
        period_end TEXT NOT NULL CHECK (period_end >= period_start),
        units {float} NOT NULL CHECK (units >= 0),
        actor TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        UNIQUE (partnership_id, period_start)
    )""",
    "CREATE INDEX deliveries_partner ON deliveries (partner_id, period_start)",
    # what became of a need, with the date; feedback on a resolved one
    """CREATE TABLE need_outcomes (
        need_id TEXT PRIMARY KEY NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('open', 'in_progress', 'resolved', 'not_resolved')),
        status_date TEXT NOT NULL,
        rating INTEGER CHECK (rating BETWEEN 1 AND 5),
        comment TEXT NOT NULL DEFAULT '',
        actor TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1)
    )""",
    "CREATE INDEX need_outcomes_status ON need_outcomes (status, status_date)",
)


def _outcomes(dialect: str) -> tuple[str, ...]:
    return tuple(t.format(**_DIALECT[dialect]) for t in _OUTCOMES)


def _holds(dialect: str) -> tuple[str, ...]:
    return tuple(t.format(**_DIALECT[dialect]) for t in _HOLDS)


def _intake(dialect: str) -> tuple[str, ...]:
    return tuple(t.format(**_DIALECT[dialect]) for t in _INTAKE)


#: Every migration, in order.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "partners, needs, neighborhoods, plans, API keys, audit log",
        _schema_1("sqlite"),
        _schema_1("postgresql"),
    ),
    Migration("plan jobs claimed by workers under a lease", _LEASES, _LEASES),
    Migration(
        "intake: idempotency keys and reports linked to the need they duplicate",
        _intake("sqlite"),
        _intake("postgresql"),
    ),
    Migration("referrals hold units at a partner", _holds("sqlite"), _holds("postgresql")),
    Migration("notes of reported concerns", _NOTES, _NOTES),
    Migration(
        "published plans, partnerships and partner keys",
        _partnerships("sqlite"),
        _partnerships("postgresql"),
    ),
    Migration("deliveries and need outcomes", _outcomes("sqlite"), _outcomes("postgresql")),
    Migration(
        "the plan in force before publishing stays in force",
        _STILL_IN_FORCE["sqlite"],
        _STILL_IN_FORCE["postgresql"],
    ),
)

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    "version INTEGER PRIMARY KEY NOT NULL, applied_at TEXT NOT NULL)"
)


def schema_version(execute: Callable[..., Any]) -> int:
    """Return the schema version recorded in a database (0 when none)."""
    return int(execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def apply(
    execute: Callable[..., Any],
    dialect: str,
    where: str,
    errors: tuple[type[BaseException], ...],
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> int:
    """Apply the pending migrations inside the caller's transaction; return the version.

    Parameters
    ----------
    execute : callable
        ``execute(sql, params=None)`` of a connection in a write transaction
        (``?`` placeholders).
    dialect : {"sqlite", "postgresql"}
        Which statements to run.
    where : str
        The database, for messages (never a URL with a password).
    errors : tuple of exception types
        The driver's errors, reported as a failed migration.
    migrations : tuple of Migration
        The known migrations (all of :data:`MIGRATIONS`).

    Raises
    ------
    SchemaVersionError
        The database is newer than ``migrations`` or a migration failed (the caller's
        transaction then rolls back, leaving the database unchanged).
    """
    known = len(migrations)
    execute(_VERSION_TABLE)
    current = schema_version(execute)
    if current > known:
        raise SchemaVersionError(
            f"{where}: the database schema is version {current}, newer than "
            f"this matcher knows ({known}); upgrade matcher to use it"
        )
    for version in range(current + 1, known + 1):
        try:
            for statement in migrations[version - 1].statements(dialect):
                execute(statement)
        except errors as exc:
            raise SchemaVersionError(
                f"{where}: migration to schema version {version} failed ({exc}); "
                "the database is unchanged"
            ) from exc
        execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, now()))
        logger.info("%s: applied schema migration %d", where, version)
    return known
