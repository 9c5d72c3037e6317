"""Shared fixtures: tiny valid inputs, a file-writing helper, logging hygiene, a real server."""

from __future__ import annotations

import contextlib
import csv
import http.client
import io
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from matcher.cli import main

from .pgserver import PgCluster, PgUnavailable, schema_name, start_cluster

#: Three needs in Chicago: two food_access needs 70 m apart and one youth need 8 km north.
TINY_NEEDS = """\
need_id,category,lat,lon,demand,severity
n1,food_access,41.8800,-87.6300,4,3
n2,food_access,41.8805,-87.6305,3,2
n3,youth_engagement,41.9500,-87.6500,2,5
"""

#: Two partners, each within reach of the needs of its category.
TINY_PARTNERS = """\
partner_id,name,kind,lat,lon,categories,capacity,radius_km
p1,Food Bank,organization,41.8810,-87.6300,food_access,10,2.0
p2,Youth Club,organization,41.9510,-87.6500,youth_engagement;education,5,3.0
"""


def pytest_configure(config: pytest.Config) -> None:
    # pytest-cov's marker, known here too: a run without the plugin (-p no:pytest_cov) must
    # not fail on it (warnings are errors)
    config.addinivalue_line("markers", "no_cover: coverage is not measured while it runs")


def write_input(directory: Path, name: str, content: str | bytes) -> Path:
    """Write ``content`` (text as UTF-8, or raw bytes) to ``directory / name``; return the path."""
    path = Path(directory) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_bytes(content.encode("utf-8"))
    return path


def stored_plan(store: Any, **options: Any) -> Any:
    """The plan the library makes of a store's data as a plan job does (volunteers on the grid).

    ``options`` are :class:`matcher.MatchConfig` parameters.
    """
    import matcher

    return matcher.plan(
        store.needs_frame(),
        store.partners_frame(),
        neighborhoods=store.neighborhoods_frame(),
        config=matcher.MatchConfig(volunteer_points="grid", **options),
    )


def plan_cli(needs: Path, partners: Path, out: Path, models: Path, *extra: str) -> Result:
    """Run ``matcher plan`` in process; outputs go to ``out`` and ``models``."""
    args = [
        "plan",
        "--needs",
        str(needs),
        "--partners",
        str(partners),
        "--out",
        str(out),
        "--models-dir",
        str(models),
        *extra,
    ]
    return CliRunner().invoke(main, args)


NEEDS_HEADER = "need_id,category,lat,lon,demand,severity\n"
PARTNERS_HEADER = "partner_id,name,kind,lat,lon,categories,capacity,radius_km\n"


def invoke(*args: str) -> Result:
    """Run the ``matcher`` CLI in process."""
    return CliRunner().invoke(main, list(args))


def assert_clean_exit(result: Result, code: int) -> None:
    """Exit ``code`` through sys.exit (no uncaught exception) and no traceback anywhere."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file as dicts of strings."""
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


@pytest.fixture
def tiny_needs() -> str:
    """A valid needs CSV text (3 rows)."""
    return TINY_NEEDS


@pytest.fixture
def tiny_partners() -> str:
    """A valid partners CSV text (2 rows)."""
    return TINY_PARTNERS


@pytest.fixture
def write() -> Callable[[Path, str, str | bytes], Path]:
    """The helper ``write(tmp_path, name, text_or_bytes) -> Path``."""
    return write_input


# The CLI configures the "matcher" logger for its process (a stderr handler and a
# level). In-process CLI tests would leak that into later tests, so every test starts
# and ends with the logger as it was before any test ran.
_MATCHER_LOGGER = logging.getLogger("matcher")
_PRISTINE = (list(_MATCHER_LOGGER.handlers), _MATCHER_LOGGER.level, _MATCHER_LOGGER.propagate)


def reset_matcher_logging() -> None:
    """Restore the "matcher" logger to its state before any test ran."""
    handlers, level, propagate = _PRISTINE
    _MATCHER_LOGGER.handlers[:] = handlers
    _MATCHER_LOGGER.setLevel(level)
    _MATCHER_LOGGER.propagate = propagate


@pytest.fixture(autouse=True)
def _pristine_matcher_logging() -> Iterator[None]:
    reset_matcher_logging()
    yield
    reset_matcher_logging()


# --------------------------------------------------------------------------- a real server
#
# One ``matcher serve`` process per test session, started exactly as a user would: keys
# made with ``matcher keys create --role ROLE --db PATH``, then ``matcher serve --db PATH
# --host 127.0.0.1 --port PORT`` on a new store (which loads the sample city on its first
# start), ready when ``GET /api/v1/health`` answers. Tests talk to it over real HTTP with
# the standard library only, and never depend on which WSGI server ``matcher serve`` runs.

ROLES = ("planner", "outreach", "admin")


@dataclass
class Reply:
    """One HTTP answer: status, headers (case-insensitive), body bytes."""

    status: int
    headers: Message
    body: bytes

    @property
    def mimetype(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def http_call(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    *,
    key: str | None = None,
    json_body: Any = None,
    body: bytes | str | None = None,
    content_type: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """Send one request on ``conn`` (kept open for the next one) and read the whole answer."""
    sent = dict(headers or {})
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    if json_body is not None:
        body = json.dumps(json_body).encode()
        content_type = content_type or "application/json"
    if isinstance(body, str):
        body = body.encode()
    if content_type is not None:
        sent["Content-Type"] = content_type
    conn.request(method, path, body=body, headers=sent)
    resp = conn.getresponse()
    return Reply(resp.status, resp.headers, resp.read())


@dataclass
class Served:
    """A running ``matcher serve``: its base URL, an API key per role and helpers.

    The server is shared by the whole session. A test that writes should use ids of its
    own and undo its writes (or, like the browser tests, put the data back), and no test
    may assume which plan is in force when it starts.
    """

    url: str  #: e.g. ``http://127.0.0.1:41234`` (no trailing slash)
    keys: dict[str, str]
    db: str  #: the store: a SQLite file or a PostgreSQL URL
    log: Path
    tile_prefix: str  #: the tile server of ``MATCHER_TILE_URL``: nothing listens there
    host: str = "127.0.0.1"
    port: int = 0
    startup_s: float = 0.0  #: seconds from the first key to a healthy server

    def connect(self, timeout: float = 60) -> http.client.HTTPConnection:
        """A new connection of its own (one per thread in the concurrency tests)."""
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def call(self, method: str, path: str, **kwargs: Any) -> Reply:
        """One request on a new connection; see :func:`http_call`."""
        conn = self.connect()
        try:
            return http_call(conn, method, path, **kwargs)
        finally:
            conn.close()

    def wait_plan(self, location: str, key: str, timeout: float = 180) -> dict[str, Any]:
        """Poll a plan until it is done or failed (bounded); return its record."""
        deadline = time.monotonic() + timeout
        conn = self.connect()
        try:
            while time.monotonic() < deadline:
                r = http_call(conn, "GET", location, key=key)
                assert r.status == 200, r.text
                rec = r.json()
                if rec["status"] in ("done", "failed"):
                    return rec
                time.sleep(0.1)
        finally:
            conn.close()
        raise AssertionError(f"plan {location} did not finish within {timeout:g} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _matcher_command() -> str:
    """The installed ``matcher`` console script of this interpreter's environment."""
    exe = shutil.which("matcher", path=str(Path(sys.executable).parent))
    if exe is None:  # pragma: no cover - the package is always installed in .venv
        raise AssertionError(f"no 'matcher' command next to {sys.executable}: pip install -e .")
    return exe


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: the server gets SIGTERM if the test process dies without its teardown."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(proc: subprocess.Popen[bytes], grace: float = 15) -> None:
    """Terminate the server (its process group: workers too), kill it after ``grace`` s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)
    try:  # anything the server started in its own session (e.g. worker processes)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def start_server(
    directory: Path,
    *,
    env: dict[str, str] | None = None,
    timeout: float = 300,
    db: str | None = None,
    args: tuple[str, ...] = (),
) -> tuple[Served, subprocess.Popen[bytes]]:
    """Make one key per role with the CLI, start ``matcher serve`` and wait for health.

    ``db`` is the store (default: ``directory/store.db``); ``args`` more options of
    ``matcher serve`` (e.g. ``--workers 2``).
    """
    exe, db = _matcher_command(), db or str(directory / "store.db")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MATCHER_")}
    environ |= {"PYTHONUNBUFFERED": "1"} | (env or {})

    def create_key(role: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [exe, "keys", "create", "--role", role, "--db", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=directory,
            env=environ,
        )

    def key_of(role: str, proc: subprocess.Popen[str]) -> str:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"matcher keys create --role {role}: {err}"
        return out.strip().splitlines()[-1]

    keys = {"planner": key_of("planner", create_key("planner"))}  # makes the store
    # the other keys are made while the server starts (short writes; the store queues them)
    others = {role: create_key(role) for role in ROLES if role not in keys}
    tile_prefix = f"http://127.0.0.1:{free_port()}/tiles/"
    environ["MATCHER_TILE_URL"] = tile_prefix + "{z}/{x}/{y}.png"
    log = directory / "server.log"
    try:
        for _attempt in range(3):  # a free port may be taken before the server binds it
            port = free_port()
            with open(log, "ab") as out:
                proc = subprocess.Popen(
                    [exe, "serve", "--db", str(db), "--host", "127.0.0.1", "--port", str(port),
                     *args],  # fmt: skip
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=directory,  # plans' models go to ./models here
                    env=environ,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            served = Served(f"http://127.0.0.1:{port}", keys, db, log, tile_prefix, port=port)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    r = served.call("GET", "/api/v1/health")
                    if r.status == 200 and r.json()["status"] == "ok":
                        try:
                            keys |= {role: key_of(role, p) for role, p in others.items()}
                        except BaseException:
                            _stop(proc)
                            raise
                        return served, proc
                except OSError:
                    pass
                time.sleep(0.2)
            _stop(proc)
            if proc.returncode is not None and "address" in log.read_text().lower():
                continue  # the port was taken: try another one
            break
    finally:
        for p in others.values():
            if p.poll() is None:
                p.communicate(timeout=120)
    raise AssertionError(f"matcher serve did not answer /api/v1/health:\n{log.read_text()}")


#: Settings of the session's servers: whom outreach escalates to where no neighborhood says.
SERVED_ESCALATION = "Chicago 311: call 311 (test setting)"
#: The outreach page's geocoder: nothing listens there (the browser tests answer for it).
SERVED_GEOCODER = f"http://127.0.0.1:{free_port()}/search?format=json&q={{q}}"
SERVED_ENV = {"MATCHER_ESCALATION_CONTACT": SERVED_ESCALATION,
              "MATCHER_GEOCODER_URL": SERVED_GEOCODER}  # fmt: skip


@pytest.fixture(scope="session")
def served_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One ``matcher serve`` on a new SQLite store (the sample city) for the whole session."""
    started = time.monotonic()
    srv, proc = start_server(tmp_path_factory.mktemp("served"), env=SERVED_ENV)
    srv.startup_s = time.monotonic() - started
    try:
        yield srv
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def served_postgresql(
    tmp_path_factory: pytest.TempPathFactory, pg_cluster: PgCluster
) -> Iterator[Served]:
    """One ``matcher serve --db postgresql://...`` (the sample city) for the whole session."""
    started = time.monotonic()
    db = pg_cluster.new_schema(schema_name("served"))
    srv, proc = start_server(tmp_path_factory.mktemp("served_pg"), db=db, env=SERVED_ENV)
    srv.startup_s = time.monotonic() - started
    try:
        yield srv
    finally:
        _stop(proc)


def close_app(app: Any) -> None:
    """Stop an app's plan worker (waiting for its plans) and close its store."""
    worker = app.extensions.get("matcher_jobs")
    if worker is not None:
        worker.shutdown(wait=True)
    app.extensions["matcher_store"].close()


#: The store backends every API test runs against.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session", params=BACKENDS)
def served(request: pytest.FixtureRequest) -> Served:
    """The session's ``matcher serve``: once on SQLite, once on PostgreSQL/PostGIS."""
    srv: Served = request.getfixturevalue(f"served_{request.param}")
    return srv


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new store for the app under test: a SQLite file, or an empty PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """As :func:`store_url`, shared by a module's tests."""
    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("store") / "store.db")
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_schema(schema_name(request.node.name))


# ---------------------------------------------------------------- a real PostgreSQL server
#
# One throwaway PostgreSQL + PostGIS server per test session (tests/pgserver.py; or the
# database of MATCHER_TEST_PG_URL), and an empty schema of its own for each test using
# ``pg_url``. Without a server (no packages: tests/system-deps.sh) those tests skip.



@pytest.fixture(scope="session")
def pg_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgCluster]:
    """A running PostgreSQL server with the database ``matcher_test`` (PostGIS in it)."""
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("postgres"))
    except PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc.reason}")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL of ``matcher_test`` whose connections make and find tables in a new schema.

    The schema is ``t_<test name>_<random>`` (first in ``search_path``, then ``public``);
    on a ``MATCHER_TEST_PG_URL`` server it is dropped after the test.
    """
    schema = schema_name(request.node.name)
    yield pg_cluster.new_schema(schema)
    if pg_cluster.external:
        try:
            pg_cluster.drop_schema(schema)
        except Exception as exc:  # a connection the test left open still holds a lock
            logging.getLogger(__name__).warning("schema %s not dropped: %s", schema, exc)


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a new store lives: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return str(tmp_path / "s.db")
    url: str = request.getfixturevalue("pg_url")
    return url


# ------------------------------------------------------------------ loaded stores, copied
#
# A test that needs a loaded store and changes it needs a store of its own, but loading
# one (through the API, or the store's import methods) can cost more than the test. So a
# module loads a template store once per backend and each test gets a copy of it: a SQLite
# backup of the file, or a PostgreSQL database made with ``CREATE DATABASE .. TEMPLATE``
# (a copy of every table, row, key and audit entry, as if the test had loaded it itself).


@dataclass
class StoreTemplate:
    """A loaded store, the API keys made in it, and how to make a copy of it."""

    keys: dict[str, str]
    #: () -> (the URL of a new copy, drop that copy)
    copy: Callable[[], tuple[str, Callable[[], None]]]


def _database_url(url: str, database: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


@contextlib.contextmanager
def store_template(
    request: pytest.FixtureRequest, backend: str, load: Callable[[str], dict[str, str]]
) -> Iterator[StoreTemplate]:
    """A new store of ``backend`` ("sqlite" or "postgresql") loaded by ``load(url) -> keys``.

    On a ``MATCHER_TEST_PG_URL`` server (maybe without the right to create databases) each
    PostgreSQL copy is loaded by ``load`` in a new schema instead.
    """
    if backend == "sqlite":
        directory = request.getfixturevalue("tmp_path_factory").mktemp("template")
        template = directory / "store.db"
        copies = itertools.count()

        def sqlite_copy() -> tuple[str, Callable[[], None]]:
            target = directory / f"copy{next(copies)}.db"
            with closing(sqlite3.connect(template)) as src, closing(sqlite3.connect(target)) as dst:
                src.backup(dst)
            return str(target), lambda: None

        yield StoreTemplate(load(str(template)), sqlite_copy)
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    if cluster.external:
        loaded = StoreTemplate({}, lambda: ("", lambda: None))

        def load_a_schema() -> tuple[str, Callable[[], None]]:
            url = cluster.new_schema(schema_name("loaded"))
            loaded.keys = load(url)
            return url, lambda: None

        loaded.copy = load_a_schema
        yield loaded
        return
    from psycopg import sql

    def create(name: str, template: str | None = None) -> None:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        with cluster.connect() as conn:
            conn.execute(query)

    def drop(name: str) -> None:
        with cluster.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))

    name = schema_name("template")
    create(name)
    try:
        keys = load(_database_url(cluster.url, name))

        def database_copy() -> tuple[str, Callable[[], None]]:
            target = schema_name("copy")
            create(target, name)
            return _database_url(cluster.url, target), lambda: drop(target)

        yield StoreTemplate(keys, database_copy)
    finally:
        drop(name)
