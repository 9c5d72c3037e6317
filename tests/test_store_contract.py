"""The store's contract, on every backend: migrations, round trips, atomicity, concurrency,
crash safety, keys, audit, plan jobs.

Every test taking ``store`` or ``where`` runs once on SQLite and once on PostgreSQL/PostGIS
(a real server started by the tests, see ``tests/pgserver.py``); without a PostgreSQL
server the PostgreSQL runs skip, saying why.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import matcher
from matcher import store as store_mod
from matcher.config import MatchConfig
from matcher.io import LoadedTable
from matcher.jobs import plan_artifacts
from matcher.store import (
    PARTNER_FRAME_COLUMNS,
    AlreadyExistsError,
    NotFoundError,
    PlanStateError,
    SchemaVersionError,
    SQLiteStore,
    StoreError,
    StoreUnavailableError,
    VersionConflictError,
    etag,
    open_store,
    parse_etag,
)
from matcher.store import migrations as migrations_mod

from .conftest import TINY_NEEDS, TINY_PARTNERS
from .oracle import grid_point

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
NEED_COLS = list(store_mod.NEED_FRAME_COLUMNS)
PARTNER_COLS = list(PARTNER_FRAME_COLUMNS)

PARTNER = {
    "partner_id": "p1",
    "name": "Food Bank",
    "kind": "organization",
    "lat": 41.881,
    "lon": -87.63,
    "categories": ["food_access"],
    "capacity": 10,
    "radius_km": 2.0,
}
VOLUNTEER = {
    "partner_id": "v1",
    "name": "Ana",
    "kind": "volunteer",
    "lat": 41.88123,
    "lon": -87.62311,
    "categories": "elderly_support;food",
    "capacity": 4,
    "radius_km": 1.5,
    "languages": "es;en",
    "contact": "ana@example.org",
}
NEED = {
    "need_id": "n1",
    "category": "food_access",
    "lat": 41.88,
    "lon": -87.63,
    "demand": 4,
    "severity": 3,
}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "matcher.db"


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, db: Path) -> str:
    """Where a store lives: a SQLite file, or an empty schema of a PostgreSQL database."""
    if request.param == "sqlite":
        return str(db)
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def store(where: str) -> Any:
    st = open_store(where)
    yield st
    st.close()


def _tables(st: Any) -> set[str]:
    query = (
        "SELECT name FROM sqlite_master WHERE type = 'table'"
        if st.dialect == "sqlite"
        else "SELECT table_name FROM information_schema.tables"
        " WHERE table_schema = current_schema()"
    )
    with st._read() as conn:
        return {r[0] for r in conn.execute(query).fetchall()}


@pytest.fixture(scope="module")
def sample_partners() -> pd.DataFrame:
    return matcher.read_partners(SAMPLE / "partners.csv").frame


@pytest.fixture(scope="module")
def sample_needs() -> pd.DataFrame:
    return matcher.read_needs(SAMPLE / "needs.csv").frame


def _tiny(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    (tmp_path / "n.csv").write_text(TINY_NEEDS, encoding="utf-8")
    (tmp_path / "p.csv").write_text(TINY_PARTNERS, encoding="utf-8")
    return (
        matcher.read_needs(tmp_path / "n.csv").frame,
        matcher.read_partners(tmp_path / "p.csv").frame,
    )


def _sorted(frame: pd.DataFrame, key: str, cols: list[str]) -> pd.DataFrame:
    return pd.DataFrame(frame[cols]).sort_values(key).reset_index(drop=True)


def _dump(where: str) -> list[tuple[Any, ...]]:
    """Every row of the data tables, through a new store (what is committed)."""
    with open_store(where) as st, st._read() as conn:
        return [
            (t, *row)
            for t in ("partners", "needs", "neighborhoods", "retired_versions")
            for row in conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall()
        ]


# ----------------------------------------------------------------- opening, schema


def _versions(where: str) -> list[tuple[Any, ...]]:
    with open_store(where) as st, st._read() as conn:
        rows = conn.execute("SELECT version, applied_at FROM schema_version ORDER BY 1")
        return [tuple(r) for r in rows.fetchall()]


def test_migrations_applied_once_and_idempotent(where: str) -> None:
    st = open_store(where)
    known = len(store_mod.MIGRATIONS)
    assert st.schema_version() == known
    first = _versions(where)
    assert [v for v, _ in first] == list(range(1, known + 1))
    assert {
        "partners",
        "needs",
        "neighborhoods",
        "plans",
        "plan_files",
        "plan_usage",
        "api_keys",
        "audit_log",
        "schema_version",
    } <= _tables(st)
    st.close()
    for _ in range(2):
        open_store(where).close()
    assert _versions(where) == first


def test_newer_schema_is_refused(where: str) -> None:
    with open_store(where) as st, st._write() as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, '2099-01-01')", (999,))
    with pytest.raises(SchemaVersionError, match="newer than this matcher") as info:
        open_store(where)
    assert f"version 999, newer than this matcher knows ({len(store_mod.MIGRATIONS)})" in str(
        info.value
    )


def test_failed_migration_changes_nothing(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    open_store(where).close()
    before = _versions(where)
    stmts = ("CREATE TABLE extra (a TEXT)", "THIS IS NOT SQL")
    bad = migrations_mod.Migration("broken", stmts, stmts)
    monkeypatch.setattr(migrations_mod, "MIGRATIONS", migrations_mod.MIGRATIONS + (bad,))
    with pytest.raises(SchemaVersionError, match="unchanged"):
        open_store(where)
    monkeypatch.undo()
    assert _versions(where) == before
    with open_store(where) as st:
        assert "extra" not in _tables(st)


def test_migration_from_the_previous_schema_version(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store written by the matcher before plan leases (schema 1) is upgraded in place."""
    monkeypatch.setattr(migrations_mod, "MIGRATIONS", migrations_mod.MIGRATIONS[:1])
    with open_store(where) as old, old._write() as conn:
        assert old.schema_version() == 1
        conn.execute(
            "INSERT INTO plans (plan_id, status, created_at, created_by, started_at, parameters) "
            "VALUES ('old', 'running', '2026-01-01T00:00:00Z', 'k', '2026-01-01T00:00:01Z', '{}')"
        )
        conn.execute(
            "INSERT INTO plans (plan_id, status, created_at, created_by, parameters) "
            "VALUES ('waiting', 'queued', '2026-01-01T00:00:02Z', 'k', '{}')"
        )
        old._insert(conn, store_mod.entities.PARTNER, {**PARTNER, "categories": "food_access",
                    "languages": "", "contact": ""}, 1)  # fmt: skip
    monkeypatch.undo()
    with open_store(where) as st:
        assert st.schema_version() == len(store_mod.MIGRATIONS)
        assert st.get_partner("p1")["capacity"] == 10.0  # type: ignore[index]
        # the plan a stopped old server left running is recovered, the queued one runs
        assert st.recover_plans() == ["old"]
        assert st.get_plan("old").status == "queued"  # type: ignore[union-attr]
        claimed = st.claim_plan("w1")
        assert claimed is not None and claimed.plan_id == "old" and claimed.attempts == 1


def test_migration_to_published_plans_keeps_the_plan_in_force_and_the_keys(
    where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store of schema 5 (before publishing): its plan in force stays so, its keys work."""
    monkeypatch.setattr(migrations_mod, "MIGRATIONS", migrations_mod.MIGRATIONS[:5])
    grid = '{"volunteer_points": "grid"}'
    key_id, key = "key_old", "mk_" + "A" * 43
    with open_store(where) as old:
        with old._write() as conn:
            conn.execute(  # as schema 5's create_api_key stored a key
                "INSERT INTO api_keys (key_id, prefix, key_hash, role, label, created_at) "
                "VALUES (?, ?, ?, 'planner', 'district 7', '2026-01-01T00:00:00Z')",
                (key_id, key[:11], old._hash_key(key)),
            )
            for plan_id, finished, params in (
                ("older", "2026-01-01T00:00:00Z", grid),
                ("newer", "2026-01-02T00:00:00Z", grid),
                ("exact", "2026-01-01T12:00:00Z", "{}"),  # older than the last
                ("what-if", "2026-01-04T00:00:00Z",
                 '{"volunteer_points": "grid", "scenario": {"base_plan": "newer"}}'),
            ):  # fmt: skip
                conn.execute(
                    "INSERT INTO plans (plan_id, status, created_at, created_by, finished_at, "
                    "parameters) VALUES (?, 'done', ?, 'k', ?, ?)",
                    (plan_id, finished, finished, params),
                )
    monkeypatch.undo()
    with open_store(where) as st:
        assert st.schema_version() == len(store_mod.MIGRATIONS)
        in_force = st.published_plan()
        assert in_force is not None and in_force.plan_id == "newer"
        assert in_force.published_by == "migration" and st.count_partnerships() == 0
        assert st.authenticate(key) == (key_id, "planner", None)
        info = {k.key_id: k for k in st.list_api_keys()}
        assert info[key_id].label == "district 7" and info[key_id].partner_id is None
        with st._write() as conn, pytest.raises(st.integrity_errors):  # the new constraint
            conn.execute(
                "INSERT INTO api_keys (key_id, prefix, key_hash, role, created_at) "
                "VALUES ('k2', 'mk_x', 'h2', 'partner', '2026-01-01T00:00:00Z')"
            )


def test_sqlite_pragmas(db: Path) -> None:
    store = SQLiteStore(db)
    conn = store._handle().conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 10_000
    store.close()


def test_open_store_urls(tmp_path: Path) -> None:
    with open_store(tmp_path / "a.db") as a:
        assert isinstance(a, SQLiteStore)
    with open_store(f"sqlite:///{tmp_path / 'sub' / 'b.db'}") as b:
        assert b.path == tmp_path / "sub" / "b.db"
    # a server that cannot be reached: one line, never the password
    with pytest.raises(StoreUnavailableError, match="cannot connect") as info:
        open_store("postgresql://user:s3cret@127.0.0.1:9/matcher", timeout=2)
    assert "s3cret" not in str(info.value) and "\n" not in str(info.value)
    assert "postgresql://127.0.0.1:9/matcher" in str(info.value)
    with pytest.raises(StoreUnavailableError):
        open_store("postgresql+psycopg://user@127.0.0.1:9/db", timeout=2)
    with pytest.raises(StoreError, match="unsupported"):
        open_store("mysql://h/db")
    for memory in ("sqlite://", ":memory:"):
        with pytest.raises(StoreError, match="(?i)in-memory"):
            open_store(memory)


def test_closed_store_refuses(where: str) -> None:
    st = open_store(where)
    st.close()
    with pytest.raises(StoreError, match="closed"):
        st.count_partners()


# ----------------------------------------------------------------- round trips


def test_partners_round_trip_sample(store: Any, sample_partners: pd.DataFrame) -> None:
    result = store.replace_partners(sample_partners, actor="cli")
    assert int(result) == len(sample_partners)
    assert dict(result) == {
        "rows": len(sample_partners),
        "added": len(sample_partners),
        "changed": 0,
        "unchanged": 0,
        "removed": 0,
    }
    got = store.partners_frame()
    assert list(got.columns) == PARTNER_COLS + ["geometry"]
    assert got.crs.to_epsg() == 4326
    pd.testing.assert_frame_equal(
        _sorted(got, "partner_id", PARTNER_COLS),
        _sorted(sample_partners, "partner_id", PARTNER_COLS),
    )
    assert store.count_partners() == len(sample_partners)
    assert store.count_partners("volunteer") == int((sample_partners["kind"] == "volunteer").sum())
    # re-importing the same data changes nothing, and keeps versions (ETags stay valid)
    again = store.replace_partners(sample_partners, actor="cli")
    assert again["unchanged"] == len(sample_partners) and again["changed"] == 0
    assert {r["version"] for r in store.list_partners(limit=50)} == {1}


def test_needs_round_trip_sample(store: Any, sample_needs: pd.DataFrame) -> None:
    store.replace_needs(sample_needs, actor="cli")
    got = store.needs_frame()
    assert list(got.columns) == NEED_COLS + ["geometry"]
    pd.testing.assert_frame_equal(
        _sorted(got, "need_id", NEED_COLS), _sorted(sample_needs, "need_id", NEED_COLS)
    )
    # the stored frame is accepted by the reader unchanged
    again = matcher.read_needs(got).frame
    pd.testing.assert_frame_equal(_sorted(again, "need_id", NEED_COLS), got[NEED_COLS])


def test_neighborhoods_round_trip(store: Any) -> None:
    assert store.neighborhoods_frame() is None
    hoods, _ = matcher.read_neighborhoods(SAMPLE / "neighborhoods.geojson")
    result = store.replace_neighborhoods(hoods, actor="cli")
    assert (result.rows, result.added) == (len(hoods), len(hoods))
    got = store.neighborhoods_frame()
    assert got is not None and got.crs.to_epsg() == 4326
    assert list(got.columns) == list(hoods.columns)
    pd.testing.assert_frame_equal(
        pd.DataFrame(got.drop(columns="geometry")),
        pd.DataFrame(hoods.drop(columns="geometry")),
        check_dtype=False,
    )
    assert all(got.geometry.geom_equals_exact(hoods.geometry, tolerance=0))
    smaller = hoods.iloc[1:].copy()
    smaller.loc[smaller.index[0], "population"] = 1
    again = store.replace_neighborhoods(smaller, actor="cli")
    assert dict(again) == {
        "rows": len(hoods) - 1,
        "added": 0,
        "changed": 1,
        "unchanged": len(hoods) - 2,
        "removed": 1,
    }


def test_replace_reports_changes_and_versions(store: Any, tmp_path: Path) -> None:
    _, partners = _tiny(tmp_path)
    store.replace_partners(partners, actor="cli")
    changed = partners.copy()
    changed.loc[changed["partner_id"] == "p1", "capacity"] = 99.0
    changed = changed[changed["partner_id"] != "p2"]
    assert dict(store.replace_partners(changed, actor="cli")) == {
        "rows": 1,
        "added": 0,
        "changed": 1,
        "unchanged": 0,
        "removed": 1,
    }
    p1 = store.get_partner("p1")
    assert p1 is not None and p1["version"] == 2 and p1["capacity"] == 99.0
    # p2 comes back: it never reuses the version it had before it was removed
    store.replace_partners(partners, actor="cli")
    p2 = store.get_partner("p2")
    assert p2 is not None and p2["version"] == 2


def test_plan_runs_over_stored_data(store: Any, tmp_path: Path) -> None:
    needs, partners = _tiny(tmp_path)
    store.replace_needs(needs, actor="cli")
    store.replace_partners(partners, actor="cli")
    config = MatchConfig(objective="distance")
    direct = matcher.plan(needs, partners, config=config)
    stored = matcher.plan(
        store.needs_frame(),
        store.partners_frame(),
        neighborhoods=store.neighborhoods_frame(),
        config=config,
    )
    pd.testing.assert_frame_equal(stored.assignments, direct.assignments)
    pd.testing.assert_frame_equal(stored.unmet, direct.unmet)

    artifacts = plan_artifacts(stored, report=True)
    plan_id = store.create_plan(stored.parameters | {"report": True}, actor="cli")
    assert store.claim_plan("w1", plan_id=plan_id) is not None
    store.plan_done(plan_id, artifacts.summary, artifacts.files, worker="w1")
    expected = direct.assignments.groupby("partner_id")["units"].sum().to_dict()
    assert store.partner_usage(plan_id) == pytest.approx(expected)
    assert store.plan_file(plan_id, "assignments.csv") == artifacts.files["assignments.csv"]
    # the report (UTF-8 HTML) is stored with the other files, byte for byte
    report = store.plan_file(plan_id, "report.html")
    assert report == artifacts.files["report.html"]
    assert report.decode("utf-8").startswith("<!DOCTYPE html>")
    assert "report.html" in store.get_plan(plan_id).files


# ----------------------------------------------------------------- atomicity


def test_failed_bulk_import_duplicate_id_changes_nothing(
    store: Any, where: str, tmp_path: Path
) -> None:
    needs, partners = _tiny(tmp_path)
    store.replace_partners(partners, actor="cli")
    store.replace_needs(needs, actor="cli")
    before, audit_before = _dump(where), len(store.audit_entries(1000))
    bad = pd.concat([partners, partners.iloc[[0]]], ignore_index=True)
    bad.loc[len(bad) - 1, "name"] = "Impostor"
    with pytest.raises(matcher.InputValidationError, match="duplicate partner_id"):
        store.replace_partners(bad, actor="cli")
    assert _dump(where) == before
    assert len(store.audit_entries(1000)) == audit_before


def test_failed_bulk_import_mid_transaction_changes_nothing(
    store: Any, where: str, tmp_path: Path
) -> None:
    needs, partners = _tiny(tmp_path)
    store.replace_partners(partners, actor="cli")
    store.replace_needs(needs, actor="cli")
    before = _dump(where)
    # a new table whose first rows are fine and whose last row breaks a CHECK constraint:
    # the earlier deletes and inserts of this import happened, and are rolled back
    others = needs.assign(need_id=["x1", "x2", "x3"])
    others.loc[2, "severity"] = 9
    # a table is validated at the store boundary: the row and field are named
    with pytest.raises(matcher.InputValidationError) as info:
        store.replace_needs(others, actor="cli")
    assert [(p.row, p.field) for p in info.value.problems] == [(2, "severity")]
    assert _dump(where) == before
    # a table its reader validated is trusted; the database still refuses a bad row
    trusted = LoadedTable(others, pd.DataFrame(), "0" * 64, "needs")
    with pytest.raises(matcher.InputValidationError, match="rejected by the database"):
        store.replace_needs(trusted, actor="cli")
    assert _dump(where) == before


def test_exception_after_the_writes_rolls_back(
    store: Any, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs, partners = _tiny(tmp_path)
    store.replace_partners(partners, actor="cli")
    before = _dump(where)

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "_audit", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.replace_partners(partners.iloc[:1], actor="cli")
    with pytest.raises(RuntimeError):
        store.create_partner({**PARTNER, "partner_id": "p9"}, actor="k")
    with pytest.raises(RuntimeError):
        store.upsert_need(NEED, actor="k")
    p1 = store.get_partner("p1")
    assert p1 is not None
    with pytest.raises(RuntimeError):
        store.update_partner("p1", {"capacity": 1}, p1["version"], actor="k")
    with pytest.raises(RuntimeError):
        store.delete_partner("p1", p1["version"], actor="k")
    assert _dump(where) == before
    monkeypatch.undo()
    assert store.create_partner({**PARTNER, "partner_id": "p9"}, actor="k")["version"] == 1


def test_invalid_record_is_reported_and_not_stored(store: Any) -> None:
    bad = {**PARTNER, "kind": "robot", "capacity": -1, "lat": 0, "lon": 0}
    with pytest.raises(matcher.InputValidationError) as info:
        store.create_partner(bad, actor="k")
    assert {p.field for p in info.value.problems} >= {"kind", "capacity", "lat"}
    with pytest.raises(matcher.InputValidationError, match="unknown field"):
        store.create_partner({**PARTNER, "password": "x"}, actor="k")
    assert store.count_partners() == 0
    assert store.audit_entries() == []


# ----------------------------------------------------------------- single records


def test_partner_crud_versions_and_conflicts(store: Any, where: str) -> None:
    created = store.create_partner(PARTNER, actor="k1")
    assert created["version"] == 1 and created["categories"] == "food_access"
    with pytest.raises(AlreadyExistsError):
        store.create_partner(PARTNER, actor="k1")
    updated = store.update_partner("p1", {"capacity": 12}, expected_version=1, actor="k1")
    assert updated["version"] == 2 and updated["capacity"] == 12.0
    assert updated["name"] == "Food Bank"  # a partial update keeps the other fields

    before = _dump(where)
    with pytest.raises(VersionConflictError) as info:
        store.update_partner("p1", {"capacity": 1}, expected_version=1, actor="k2")
    assert (info.value.expected, info.value.current) == (1, 2)
    with pytest.raises(VersionConflictError):
        store.delete_partner("p1", expected_version=1, actor="k2")
    assert _dump(where) == before

    with pytest.raises(NotFoundError):
        store.update_partner("nope", {"capacity": 1}, expected_version=1, actor="k1")
    with pytest.raises(matcher.InputValidationError, match="ids are fixed"):
        store.update_partner("p1", {"partner_id": "p2"}, expected_version=2, actor="k1")
    with pytest.raises(matcher.InputValidationError):
        store.update_partner("p1", {"radius_km": 0}, expected_version=2, actor="k1")

    store.delete_partner("p1", expected_version=2, actor="k1")
    assert store.get_partner("p1") is None
    with pytest.raises(NotFoundError):
        store.delete_partner("p1", expected_version=2, actor="k1")
    # re-created, it continues after its last version: an old ETag cannot match it
    assert store.create_partner(PARTNER, actor="k1")["version"] == 3


def test_need_upsert_update_delete(store: Any) -> None:
    first = store.upsert_need({**NEED, "cluster_id": "food_access-000000"}, actor="outreach1")
    assert first["version"] == 1 and first["cluster_id"] == "food_access-000000"
    second = store.upsert_need({**NEED, "demand": 6}, actor="outreach1")
    assert second["version"] == 2 and second["demand"] == 6.0 and second["cluster_id"] is None
    same = store.update_need("n1", {"severity": 5}, expected_version=2, actor="planner1")
    assert same["version"] == 3 and same["severity"] == 5
    store.update_need("n1", {"cluster_id": "c7"}, expected_version=3, actor="planner1")
    moved = store.update_need("n1", {"lat": 41.9}, expected_version=4, actor="planner1")
    assert moved["cluster_id"] is None  # moving a need takes it out of its cluster
    with pytest.raises(VersionConflictError):
        store.update_need("n1", {"severity": 1}, expected_version=4, actor="planner1")
    assert [n["need_id"] for n in store.list_needs(category="food_access")] == ["n1"]
    assert store.list_needs(category="education") == []
    store.delete_need("n1", expected_version=5, actor="planner1")
    assert store.get_need("n1") is None and store.count_needs() == 0
    with pytest.raises(matcher.InputValidationError):
        store.upsert_need({**NEED, "category": "astrology"}, actor="outreach1")


def test_list_paging_and_privacy(store: Any) -> None:
    store.create_partner(PARTNER, actor="k")
    store.create_partner(VOLUNTEER, actor="k")
    page = store.list_partners(limit=1, offset=1)
    assert [p["partner_id"] for p in page] == ["v1"]
    vol = page[0]
    assert vol["coarsened"] and vol["contact"] == ""
    assert (vol["lat"], vol["lon"]) == grid_point(VOLUNTEER["lat"], VOLUNTEER["lon"])
    assert (vol["lat"], vol["lon"]) != (VOLUNTEER["lat"], VOLUNTEER["lon"])
    exact = store.get_partner("v1", exact=True)
    assert exact is not None and exact["contact"] == "ana@example.org"
    assert (exact["lat"], exact["lon"]) == (VOLUNTEER["lat"], VOLUNTEER["lon"])
    assert exact["categories"] == "elderly_support;food_access"  # alias resolved
    org = store.get_partner("p1")
    assert org is not None and not org["coarsened"] and org["lat"] == PARTNER["lat"]
    assert [p["partner_id"] for p in store.list_partners(kind="volunteer")] == ["v1"]
    assert store.partners_frame().set_index("partner_id").loc["v1", "lat"] == VOLUNTEER["lat"]
    with pytest.raises(ValueError):
        store.list_partners(limit=-1)
    with pytest.raises(ValueError):
        store.list_partners(kind="robot")


def test_sql_injection_is_stored_as_a_literal(store: Any) -> None:
    evil = "x'; DROP TABLE partners; --"
    rec = store.create_partner(
        {**PARTNER, "partner_id": evil, "name": "'); DELETE FROM needs;--"}, actor="k"
    )
    assert rec["partner_id"] == evil
    store.upsert_need(NEED, actor="k")
    got = store.get_partner(evil)
    assert got is not None and got["name"] == "'); DELETE FROM needs;--"
    assert store.get_partner("x' OR '1'='1") is None
    assert store.list_needs(category="' OR 1=1 --") == []
    assert store.get_plan("' OR 1=1 --") is None
    assert store.count_partners() == 1 and store.count_needs() == 1
    store.update_partner(evil, {"capacity": 3}, expected_version=1, actor=evil)
    assert store.audit_entries(entity_id=evil)[0].actor == evil
    store.delete_partner(evil, expected_version=2, actor="k")
    assert store.count_partners() == 0 and store.count_needs() == 1


def test_etag() -> None:
    tag = etag("p1", 7)
    assert tag == '"7"'
    assert parse_etag(tag) == 7 and parse_etag(f" {tag} ", "p1") == 7
    assert parse_etag("W/" + tag) is None  # weak tags never match If-Match
    assert parse_etag("*") is None and parse_etag(None) is None
    assert parse_etag('"7", "8"') is None and parse_etag('"x"') is None
    assert etag("p1", 8) != tag


def test_revision_increases_with_every_write(store: Any) -> None:
    seen = [store.revision()]
    store.create_partner(PARTNER, actor="k")
    seen.append(store.revision())
    store.get_partner("p1")
    seen.append(store.revision())
    store.create_api_key("planner")
    seen.append(store.revision())
    assert seen[0] == 0 and seen[1] > seen[0] and seen[2] == seen[1] and seen[3] > seen[2]


# ----------------------------------------------------------------- concurrency


def _race_in_threads(store: Any, version: int, caps: tuple[int, int]) -> dict[int, str]:
    """Two threads read ``version`` of p1, meet at a barrier, then both update it."""
    barrier = threading.Barrier(2)
    outcome: dict[int, str] = {}

    def writer(capacity: int) -> None:
        seen = store.get_partner("p1")
        assert seen is not None and seen["version"] == version
        barrier.wait()
        try:
            store.update_partner("p1", {"capacity": capacity}, version, actor=f"w{capacity}")
            outcome[capacity] = "ok"
        except VersionConflictError:
            outcome[capacity] = "conflict"

    threads = [threading.Thread(target=writer, args=(c,)) for c in caps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def test_two_concurrent_writers_in_threads(store: Any) -> None:
    store.create_partner(PARTNER, actor="setup")
    for round_ in range(10):
        version = 1 + round_
        outcome = _race_in_threads(store, version, (100 + 2 * round_, 101 + 2 * round_))
        assert sorted(outcome.values()) == ["conflict", "ok"], outcome
        winner = next(c for c, o in outcome.items() if o == "ok")
        final = store.get_partner("p1")
        assert final is not None
        assert final["version"] == version + 1 and final["capacity"] == winner
    updates = store.audit_entries(100, entity="partner", entity_id="p1")
    assert len([e for e in updates if e.action == "update"]) == 10


def test_update_racing_an_open_write_conflicts(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lost-update window: B read version 1 while A's write is still open."""
    store.create_partner(PARTNER, actor="setup")
    read_done = threading.Event()
    validate = store_mod.sql.merge_update

    def spy(*args: Any) -> Any:
        out = validate(*args)
        read_done.set()  # B has read version 1 and validated; next it writes
        return out

    monkeypatch.setattr(store_mod.sql, "merge_update", spy)
    outcome: list[Any] = []

    def writer_b() -> None:
        try:
            store.update_partner("p1", {"capacity": 5}, 1, actor="B")
            outcome.append("ok")
        except VersionConflictError as exc:
            outcome.append(exc)

    with store._write() as conn:  # writer A, in this thread
        conn.execute(
            "UPDATE partners SET capacity = 77, version = version + 1 WHERE partner_id = ?",
            ("p1",),
        )
        b = threading.Thread(target=writer_b)
        b.start()
        assert read_done.wait(timeout=10)
        b.join(timeout=0.2)
        assert b.is_alive()  # B waits for A's lock
    b.join(timeout=10)
    assert len(outcome) == 1 and isinstance(outcome[0], VersionConflictError)
    assert (outcome[0].expected, outcome[0].current) == (1, 2)
    final = store.get_partner("p1")
    assert final is not None and (final["capacity"], final["version"]) == (77.0, 2)


def _race_worker(
    st: Any, path: str | None, capacity: int, version: int, barrier: Any, results: Any
) -> None:
    """One writer process: the parent's store inherited across fork, or a fresh one."""
    st = open_store(path) if path is not None else st
    seen = st.get_partner("p1")
    assert seen is not None and seen["version"] == version
    barrier.wait(timeout=60)
    try:
        st.update_partner("p1", {"capacity": capacity}, version, actor=f"proc{capacity}")
        results.put((capacity, "ok"))
    except VersionConflictError:
        results.put((capacity, "conflict"))


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_two_concurrent_writers_in_processes(store: Any, where: str) -> None:
    store.create_partner(PARTNER, actor="setup")
    store.update_partner("p1", {"capacity": 11}, 1, actor="setup")  # the parent has a connection
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    # one child uses the store object it inherited (it must open its own connection,
    # never the parent's), the other opens the database itself
    procs = [
        ctx.Process(target=_race_worker, args=(store, path, cap, 2, barrier, results))
        for path, cap in ((None, 31), (where, 32))
    ]
    with warnings.catch_warnings():
        # Python >= 3.12 warns about fork() in a process with (idle BLAS) threads
        warnings.simplefilter("ignore", DeprecationWarning)
        for p in procs:
            p.start()
    got = dict(results.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(got.values()) == ["conflict", "ok"], got
    winner = next(c for c, o in got.items() if o == "ok")
    final = store.get_partner("p1")
    assert final is not None and final["version"] == 3 and final["capacity"] == winner
    # the parent's own connection still works after the children used theirs
    assert store.update_partner("p1", {"capacity": 1}, 3, actor="parent")["version"] == 4


def test_reader_is_not_blocked_by_an_open_write(store: Any) -> None:
    store.create_partner(PARTNER, actor="k")
    seen: list[Any] = []
    with store._write() as conn:
        conn.execute("UPDATE partners SET capacity = 0 WHERE partner_id = ?", ("p1",))
        reader = threading.Thread(target=lambda: seen.append(store.get_partner("p1")))
        reader.start()
        reader.join(timeout=5)
    assert seen and seen[0]["capacity"] == 10.0  # the committed state


# ----------------------------------------------------------------- API keys, audit


def test_api_keys(store: Any, db: Path) -> None:
    key_id, key = store.create_api_key("planner", label="district 7", actor="admin0")
    other_id, other = store.create_api_key("admin")
    assert key.startswith("mk_") and len(key) == 3 + 43
    assert store.authenticate(key) == (key_id, "planner", None)
    assert store.authenticate(other) == (other_id, "admin", None)
    assert store.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert store.authenticate("") is None and store.authenticate("mk_") is None
    assert store.authenticate("not-a-key") is None
    assert store.authenticate(key + "\ud800") is None
    store.revoke_api_key(key_id, actor="admin0")
    assert store.authenticate(key) is None
    assert store.authenticate(other) == (other_id, "admin", None)
    store.revoke_api_key(key_id)  # idempotent
    with pytest.raises(NotFoundError):
        store.revoke_api_key("key_missing")
    with pytest.raises(ValueError):
        store.create_api_key("root")
    # a partner key is bound to one stored partner; no other role names one
    with pytest.raises(ValueError):
        store.create_api_key("partner")
    with pytest.raises(ValueError):
        store.create_api_key("planner", partner_id="P1")
    with pytest.raises(NotFoundError):
        store.create_api_key("partner", partner_id="no-such-partner")
    info = {k.key_id: k for k in store.list_api_keys()}
    assert info[key_id].revoked_at is not None and info[other_id].revoked_at is None
    assert info[key_id].label == "district 7" and key.startswith(info[key_id].prefix)
    # the key is never stored in clear: in no table (SQLite: in no file, WAL or shm)
    with store._read() as conn:
        for table in sorted(_tables(store)):
            text = repr(conn.execute(f"SELECT * FROM {table}").fetchall())
            assert key[11:] not in text and other[11:] not in text, table
    if store.dialect == "sqlite":
        store._handle().conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        for path in db.parent.glob(db.name + "*"):
            data = path.read_bytes()
            for secret in (key, other):
                assert secret.encode() not in data
                assert secret[11:].encode() not in data


def test_every_write_is_audited_with_its_actor(store: Any, tmp_path: Path) -> None:
    needs, partners = _tiny(tmp_path)
    hoods, _ = matcher.read_neighborhoods(SAMPLE / "neighborhoods.geojson")
    store.replace_partners(partners, actor="a-import")
    store.replace_needs(needs, actor="a-import")
    store.replace_neighborhoods(hoods.iloc[:3], actor="a-import")
    store.create_partner(VOLUNTEER, actor="a-admin")
    store.update_partner("v1", {"contact": "new@example.org"}, 1, actor="a-admin")
    store.delete_partner("v1", 2, actor="a-admin")
    store.upsert_need({**NEED, "need_id": "n9"}, actor="a-outreach")
    store.update_need("n9", {"demand": 2}, 1, actor="a-planner")
    store.delete_need("n9", 2, actor="a-planner")
    plan_id = store.create_plan({"objective": "distance"}, actor="a-planner")
    store.claim_plan("worker", plan_id=plan_id)
    store.plan_failed(plan_id, "out of memory", actor="worker", worker="worker")
    key_id, _ = store.create_api_key("outreach", actor="a-admin")
    store.revoke_api_key(key_id, actor="a-admin")
    store.audit("export", "plan", plan_id, actor="a-planner", detail={"format": "geojson"})
    entries = list(reversed(store.audit_entries()))
    assert [(e.actor, e.action, e.entity, e.entity_id) for e in entries] == [
        ("a-import", "replace", "partner", None),
        ("a-import", "replace", "need", None),
        ("a-import", "replace", "neighborhood", None),
        ("a-admin", "create", "partner", "v1"),
        ("a-admin", "update", "partner", "v1"),
        ("a-admin", "delete", "partner", "v1"),
        ("a-outreach", "upsert", "need", "n9"),
        ("a-planner", "update", "need", "n9"),
        ("a-planner", "delete", "need", "n9"),
        ("a-planner", "queue", "plan", plan_id),
        ("worker", "run", "plan", plan_id),
        ("worker", "fail", "plan", plan_id),
        ("a-admin", "create", "api_key", key_id),
        ("a-admin", "revoke", "api_key", key_id),
        ("a-planner", "export", "plan", plan_id),
    ]
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert entries[4].detail == {"version": 2, "changed": ["contact"], "before": {}, "after": {}}
    # no volunteer data in the log, and the log is append-only
    assert "new@example.org" not in repr(entries) and "ana@example.org" not in repr(entries)
    for statement in ("DELETE FROM audit_log", "UPDATE audit_log SET actor = 'x'"):
        with pytest.raises(store.driver_errors, match="append-only"), store._write() as conn:
            conn.execute(statement)
    assert len(store.audit_entries()) == len(entries)
    with pytest.raises(ValueError):
        store.create_partner(PARTNER, actor="")


# ----------------------------------------------------------------- plans


def test_plan_lifecycle_survives_reopen(where: str) -> None:
    st = open_store(where)
    assert st.latest_done_plan() is None
    plan_id = st.create_plan({"objective": "distance", "cluster_km": 0.5}, actor="k1")
    rec = st.get_plan(plan_id)
    assert rec is not None and rec.status == "queued" and rec.created_by == "k1"
    assert len(plan_id) == 32 and rec.parameters == {"objective": "distance", "cluster_km": 0.5}
    with pytest.raises(PlanStateError):
        st.partner_usage(plan_id)
    claimed = st.claim_plan("w1", plan_id=plan_id)
    assert claimed is not None and claimed.status == "running" and claimed.worker == "w1"
    assert claimed.attempts == 1 and claimed.lease_until and claimed.started_at
    assert st.claim_plan("w2", plan_id=plan_id) is None  # a second worker cannot claim it
    assert st.claim_plan("w2") is None
    assignments = (
        b"cluster_id,partner_id,units,distance_km,cost\n"
        b"c1,p1,4.0,0.1,0.4\nc2,p1,1.5,0.2,0.3\nc3,p2,2.0,1.0,2.0\n"
    )
    files = {"assignments.csv": assignments, "summary.json": '{"status": "optimal"}\n'}
    with pytest.raises(PlanStateError, match="held by another worker"):
        st.plan_done(plan_id, {}, files, worker="w2")
    st.plan_done(
        plan_id, {"status": "optimal", "metrics": {"x": np.float64(1.5)}}, files, worker="w1"
    )
    with pytest.raises(PlanStateError):
        st.plan_failed(plan_id, "too late")
    other = st.create_plan({}, actor="k1")
    st.plan_failed(other, "boom")
    st.close()

    st = open_store(where)
    rec = st.get_plan(plan_id)
    assert rec is not None and rec.status == "done"
    assert rec.started_at and rec.finished_at and rec.finished_at >= rec.started_at
    assert rec.summary == {"status": "optimal", "metrics": {"x": 1.5}}
    assert rec.files == ("assignments.csv", "summary.json")
    assert rec.lease_until is None and rec.worker == "w1"
    assert st.plan_file(plan_id, "assignments.csv") == assignments
    assert st.plan_file(plan_id, "summary.json") == b'{"status": "optimal"}\n'
    assert st.plan_file(plan_id, "nope.csv") is None
    assert st.partner_usage(plan_id) == {"p1": 5.5, "p2": 2.0}
    latest = st.latest_done_plan()
    assert latest is not None and latest.plan_id == plan_id
    failed = st.get_plan(other)
    assert failed is not None and failed.status == "failed" and failed.error == "boom"
    assert [p.plan_id for p in st.list_plans()] == [other, plan_id]
    assert rec.to_dict()["files"] == ["assignments.csv", "summary.json"]
    assert rec["status"] == "done" and dict(rec)["plan_id"] == plan_id and len(rec) == 15
    with pytest.raises(KeyError):
        rec["nope"]
    with pytest.raises(NotFoundError):
        st.claim_plan("w1", plan_id="0" * 32)
    with pytest.raises(NotFoundError):
        st.partner_usage("0" * 32)
    with pytest.raises(ValueError, match="plain file name"):
        st.plan_done(st.create_plan({}), {}, {"../etc/passwd": b""})
    with pytest.raises(ValueError, match="lease_s"):
        st.claim_plan("w1", lease_s=0)
    st.close()


def test_plan_done_with_explicit_usage(store: Any) -> None:
    plan_id = store.create_plan({})
    store.plan_done(plan_id, {}, {}, usage={"p1": np.float64(2.5)})
    assert store.partner_usage(plan_id) == {"p1": 2.5}
    assert store.get_plan(plan_id).files == ()  # type: ignore[union-attr]


def test_latest_done_plan_skips_scenarios(store: Any) -> None:
    plain = store.create_plan({"objective": "distance"})
    store.plan_done(plain, {}, {})
    what_if = store.create_plan({"scenario": {"base_plan": plain}})
    store.plan_done(what_if, {}, {})
    assert store.latest_done_plan().plan_id == what_if
    assert store.latest_done_plan(exclude_scenarios=True).plan_id == plain


def test_plans_are_claimed_oldest_first_by_one_worker_each(store: Any) -> None:
    ids = [store.create_plan({"n": i}) for i in range(6)]
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (rec := store.claim_plan(name)) is not None:
            with lock:
                claimed.append(rec.plan_id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids) and len(set(claimed)) == len(ids)
    assert store.claim_plan("late") is None


def test_a_plan_whose_worker_died_is_recovered_after_its_lease(store: Any) -> None:
    queued = store.create_plan({}, actor="k1")
    running = store.create_plan({}, actor="k1")
    first = store.claim_plan("dead-1", lease_s=0.05, plan_id=running)
    assert first is not None and first.attempts == 1
    assert store.recover_plans() == []  # the lease still holds
    time.sleep(0.1)
    # the next claim recovers it first: queued again (claimed once), then claimed oldest first
    again = store.claim_plan("dead-2", lease_s=0.05)
    assert again is not None and (again.plan_id, again.attempts) == (queued, 1)
    again = store.claim_plan("dead-2", lease_s=0.05)
    assert again is not None and (again.plan_id, again.attempts) == (running, 2)
    # the first worker wakes up late: it cannot finish a plan another worker holds
    with pytest.raises(PlanStateError, match="held by another worker"):
        store.plan_done(running, {}, {}, worker="dead-1")
    assert not store.renew_plan_lease(running, "dead-1")
    assert store.renew_plan_lease(running, "dead-2", lease_s=0.05)
    time.sleep(0.1)
    # claimed twice and its worker died twice: failed with the reason, not tried again
    assert sorted(store.recover_plans()) == sorted([queued, running])
    rec = store.get_plan(running)
    assert rec.status == "failed" and rec.finished_at and rec.lease_until is None
    assert "dead-2" in rec.error and "stopped while running it" in rec.error
    assert "not tried again" in rec.error
    assert store.get_plan(queued).status == "queued"  # its first expiry: queued again
    actions = [(e.action, e.entity_id) for e in reversed(store.audit_entries())]
    assert ("requeue", running) in actions and ("fail", running) in actions


# ----------------------------------------------------------------- concurrency at scale


def test_eight_writers_fifty_updates_each_lose_nothing(store: Any) -> None:
    """8 writers x 50 read-modify-write increments, retried on 412: every one counts."""
    store.create_partner({**PARTNER, "capacity": 0}, actor="setup")
    errors: list[BaseException] = []
    conflicts = [0]

    def writer(name: str) -> None:
        try:
            for _ in range(50):
                while True:
                    current = store.get_partner("p1")
                    try:
                        store.update_partner(
                            "p1", {"capacity": current["capacity"] + 1}, current["version"], name
                        )
                        break
                    except VersionConflictError:
                        conflicts[0] += 1
        except BaseException as exc:  # noqa: BLE001 - any other error fails the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = store.get_partner("p1")
    assert final["capacity"] == 400.0 and final["version"] == 401
    updates = store.audit_entries(1000, entity="partner", entity_id="p1")
    assert len([e for e in updates if e.action == "update"]) == 400


# ----------------------------------------------------------------- crash safety

_CRASH_CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    import pandas as pd
    from matcher.store import open_store

    where, mode = sys.argv[1], sys.argv[2]
    st = open_store(where)
    if mode == "import":
        n = 40_000
        frame = pd.DataFrame({
            "need_id": [f"x{i:06d}" for i in range(n)], "category": "food_access",
            "lat": 41.8 + np.arange(n) * 1e-6, "lon": -87.6, "demand": 1.0, "severity": 3,
        })
        print("ready", flush=True)
        while True:
            st.replace_needs(frame, actor="crash")
            print("imported", flush=True)
    else:
        print("ready", flush=True)
        i = 0
        while True:
            st.create_partner({"partner_id": f"c{i}", "kind": "organization", "lat": 41.8,
                               "lon": -87.6, "categories": "food_access", "capacity": 1,
                               "radius_km": 1}, actor="crash")
            print(f"acked c{i}", flush=True)
            i += 1
    """
)


def _run_and_kill(where: str, mode: str, after_s: float) -> list[str]:
    """Run a writer in a new process, SIGKILL it after ``after_s``; return what it printed."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CRASH_CHILD, where, mode],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(after_s)
    proc.send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)
    return out.split("\n")


def test_a_process_killed_mid_import_leaves_old_or_new_never_half(
    where: str, tmp_path: Path
) -> None:
    needs, _ = _tiny(tmp_path)
    with open_store(where) as st:
        st.replace_needs(needs, actor="setup")
    for after_s in (0.3, 0.9):
        lines = _run_and_kill(where, "import", after_s)
        with open_store(where) as st:
            ids = set(st.needs_frame()["need_id"])
            imported = "imported" in lines
            assert ids == set(needs["need_id"]) or len(ids) == 40_000, len(ids)
            if imported:
                assert len(ids) == 40_000  # an acknowledged import is there
            if len(ids) == 40_000:  # back to the small table for the next round
                st.replace_needs(needs, actor="setup")
            assert st.audit_entries(1)[0].action in ("replace",)


def test_every_write_acknowledged_before_a_kill_is_there(where: str) -> None:
    open_store(where).close()
    lines = _run_and_kill(where, "create", 1.0)
    acked = [line.split()[1] for line in lines if line.startswith("acked ")]
    assert acked, lines
    with open_store(where) as st:
        stored = {p["partner_id"] for p in st.list_partners(limit=1000)}
        assert set(acked) <= stored
        assert len(stored) - len(acked) <= 1  # at most the one in flight when killed
        for pid in stored:  # each whole: its record and its audit entry
            assert st.audit_entries(1, entity="partner", entity_id=pid)[0].action == "create"
