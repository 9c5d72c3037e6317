"""The two stores a benchmark compares: a SQLite file and a PostgreSQL/PostGIS database."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def store_urls(tmp: Path, pg_url: str | None = None) -> Iterator[dict[str, str]]:
    """Yield ``{"SQLite": path, "PostgreSQL": url}`` for a benchmark's stores.

    PostgreSQL is ``pg_url`` when given, else a throwaway server started as the tests
    start theirs (``tests/pgserver.py``) and stopped afterwards; without one, only
    SQLite (the reason goes to stderr).
    """
    urls = {"SQLite": str(tmp / "bench.db")}
    cluster = None
    if pg_url:
        urls["PostgreSQL"] = pg_url
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from pgserver import PgUnavailable, start_cluster

        try:
            (tmp / "pg").mkdir()
            cluster = start_cluster(tmp / "pg")
            urls["PostgreSQL"] = cluster.new_schema("bench")
        except PgUnavailable as exc:
            print(f"no PostgreSQL: {exc.reason}", file=sys.stderr)
    try:
        yield urls
    finally:
        if cluster is not None:
            cluster.stop()
