"""The throwaway PostgreSQL + PostGIS server of the ``pg_cluster`` and ``pg_url`` fixtures."""

from __future__ import annotations

import pytest

from .pgserver import PgCluster

psycopg = pytest.importorskip("psycopg")

#: The schema of each ``pg_url`` seen by test_each_pg_url_is_a_new_empty_schema.
SEEN: list[str] = []


def _schema_of(url: str) -> str:
    return url.split("search_path%3D", 1)[1].split(",", 1)[0]


def test_pg_url_is_a_fresh_schema_with_postgis(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        postgis = conn.execute("SELECT postgis_version()").fetchone()[0]
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        path = conn.execute("SHOW search_path").fetchone()[0]
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, geom geometry(Point, 4326))")
        conn.execute("INSERT INTO t VALUES (1, ST_SetSRID(ST_MakePoint(-87.63, 41.88), 4326))")
        where = conn.execute("SELECT schemaname FROM pg_tables WHERE tablename = 't'").fetchall()
    assert postgis.startswith("3")
    assert schema == _schema_of(pg_url)
    assert [part.strip() for part in path.split(",")] == [schema, "public"]
    assert where == [(schema,)]


@pytest.mark.parametrize("run", [1, 2])
def test_each_pg_url_is_a_new_empty_schema(pg_url: str, run: int) -> None:
    with psycopg.connect(pg_url) as conn:
        schema = conn.execute("SELECT current_schema()").fetchone()[0]
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", [schema])
        assert tables.fetchone() == (0,)
        conn.execute("CREATE TABLE left_behind (id int)")  # not seen by the other run
    assert schema == _schema_of(pg_url)
    assert schema not in SEEN
    SEEN.append(schema)


def test_new_schema_urls_differ(pg_cluster: PgCluster, pg_url: str) -> None:
    name = f"{_schema_of(pg_url)}_b"
    other = pg_cluster.new_schema(name)
    try:
        with psycopg.connect(pg_url, autocommit=True) as a, psycopg.connect(other) as b:
            a.execute("CREATE TABLE only_in_a (id int)")
            assert b.execute("SELECT current_schema()").fetchone() == (name,)
            assert b.execute("SELECT to_regclass('only_in_a')").fetchone() == (None,)
    finally:
        pg_cluster.drop_schema(name)


def test_the_server_keeps_fsync_on_and_takes_many_connections(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SHOW fsync").fetchone() == ("on",)
        assert int(conn.execute("SHOW max_connections").fetchone()[0]) >= 100
