"""A throwaway PostgreSQL + PostGIS server for the tests.

:func:`start_cluster` makes a new cluster with the Debian packages' binaries (installed by
``tests/system-deps.sh``), starts it on 127.0.0.1 on a free port and on a unix socket, and
creates the database ``matcher_test`` with the ``postgis`` extension in it.
:meth:`PgCluster.new_schema` then gives each test an empty schema of its own. When the
environment variable ``MATCHER_TEST_PG_URL`` is set, that database (PostGIS available) is
used instead and no server is started.

The server keeps ``fsync = on`` (the store's crash-safety tests rely on it); only initdb's
own files are written without a flush (``initdb --no-sync``).

``initdb`` and ``pg_ctl`` refuse to run as root. As root they run as the ``postgres``
system user (``runuser -u postgres --``), and the cluster lives in a private directory of
that user in the system temporary directory, because pytest's base temporary directory
(``/tmp/pytest-of-root``, mode 0700) cannot be entered by any other user. ``base/cluster``
then links to that directory, and :meth:`PgCluster.stop` removes it after copying the
server log to ``base/postgresql.log``. Otherwise everything lives in ``base``.

Every way of not getting a server raises :class:`PgUnavailable` with a one-line reason,
for ``pytest.skip(reason)``.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

__all__ = ["DATABASE", "ENV_URL", "PgCluster", "PgUnavailable", "schema_name", "start_cluster"]

log = logging.getLogger(__name__)

#: The database created in a new cluster.
DATABASE = "matcher_test"
#: Environment variable naming an existing database to use instead of a new cluster.
ENV_URL = "MATCHER_TEST_PG_URL"
#: The system user that runs the server when the tests run as root.
SYSTEM_USER = "postgres"
#: Server settings for tests; ``fsync`` stays on (the default).
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "fsync": "on",
}
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SOCKET_PATH_MAX = 107  # sun_path of a unix socket, without its terminating NUL


class PgUnavailable(Exception):
    """No PostgreSQL + PostGIS server could be had.

    Parameters
    ----------
    reason
        Why, in one line (the text for ``pytest.skip``).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class PgCluster:
    """A running PostgreSQL server and its database ``url``.

    Attributes
    ----------
    url
        ``postgresql://USER@127.0.0.1:PORT/matcher_test`` (or ``MATCHER_TEST_PG_URL``).
    home
        The directory holding ``data`` (the cluster), ``socket`` and ``server.log``;
        ``None`` for an external server.
    bindir
        The directory of ``pg_ctl``, ``initdb`` and ``postgres``; ``None`` if external.
    run_as
        The system user running the server commands (``postgres`` as root), or ``None``
        for the current user.
    base
        The directory given to :func:`start_cluster`.
    startup_s
        Seconds :func:`start_cluster` took.
    """

    url: str
    home: Path | None = None
    bindir: Path | None = None
    run_as: str | None = None
    base: Path | None = None
    startup_s: float = 0.0

    @property
    def external(self) -> bool:
        """Whether this is the ``MATCHER_TEST_PG_URL`` server (not started here)."""
        return self.home is None

    @property
    def socket_dir(self) -> Path | None:
        """The directory of the server's unix socket (``None`` if external)."""
        return None if self.home is None else self.home / "socket"

    def connect(self, url: str | None = None) -> psycopg.Connection[TupleRow]:
        """A new autocommit connection to ``url`` (default: :attr:`url`)."""
        return _psycopg().connect(url or self.url, autocommit=True, connect_timeout=10)

    def new_schema(self, name: str) -> str:
        """Create the empty schema ``name`` and return a URL whose connections use it.

        Parameters
        ----------
        name
            A lower-case SQL identifier (``[a-z_][a-z0-9_]*``, at most 63 characters).

        Returns
        -------
        str
            :attr:`url` with ``options=-csearch_path%3D<name>,public``: tables are made
            in ``name`` and PostGIS (in ``public``) is found.
        """
        if not _IDENTIFIER.fullmatch(name):
            raise ValueError(f"not a plain lower-case SQL identifier: {name!r}")
        from psycopg import sql

        started = time.monotonic()
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
        log.debug("schema %s created in %.3f s", name, time.monotonic() - started)
        return _with_search_path(self.url, name)

    def drop_schema(self, name: str, lock_timeout_s: float = 5) -> None:
        """Drop the schema ``name`` and everything in it, waiting at most for its locks.

        Parameters
        ----------
        name
            A schema made by :meth:`new_schema`.
        lock_timeout_s
            Give up (``psycopg.errors.LockNotAvailable``) after this many seconds if a
            connection still holds a lock on something in the schema.
        """
        from psycopg import sql

        with self.connect() as conn:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(int(lock_timeout_s * 1000)))
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``); nothing for an external server.

        As root, the server log is then copied to ``base/postgresql.log`` and the private
        cluster directory is removed (kept if the server may still be running).
        """
        if self.home is None or self.bindir is None or not self.home.exists():
            return
        data = self.home / "data"
        if (data / "postmaster.pid").exists():
            cmd = [str(self.bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"]
            try:
                done = _run(cmd, self.run_as, cwd=self.home)
                failure = _last_line(done.stderr) if done.returncode else ""
            except PgUnavailable as exc:
                failure = exc.reason
            if failure:
                log.warning("pg_ctl stop failed (%s): %s", self.home, failure)
                return
        if self.run_as is not None and self.base is not None:
            _keep_log(self.home, self.base)
            shutil.rmtree(self.home, ignore_errors=True)
            (self.base / "cluster").unlink(missing_ok=True)


def start_cluster(base: Path) -> PgCluster:
    """Start a new PostgreSQL server with the database ``matcher_test`` and PostGIS.

    If ``MATCHER_TEST_PG_URL`` is set, that database is checked (PostGIS is created in
    it if missing) and used instead; :meth:`PgCluster.stop` then does nothing.

    Parameters
    ----------
    base
        An existing directory for the cluster (see the module's notes about root).

    Returns
    -------
    PgCluster
        The running server; call :meth:`PgCluster.stop` when done.

    Raises
    ------
    PgUnavailable
        No binaries, no ``postgres`` user as root, initdb or the server failed, no
        psycopg, or no PostGIS.
    """
    started = time.monotonic()
    external = os.environ.get(ENV_URL)
    if external:
        cluster = PgCluster(url=external, base=base)
        _ensure_postgis(cluster, f"{ENV_URL} server")
        cluster.startup_s = time.monotonic() - started
        return cluster
    _psycopg()  # fail before any work if the client is missing
    bindir = _find_bindir()
    try:
        run_as, home = _prepare_home(base)
    except OSError as exc:
        raise PgUnavailable(f"cannot make the cluster's directories: {exc}") from exc
    cluster = PgCluster(url="", home=home, bindir=bindir, run_as=run_as, base=base)
    try:
        user = _initdb(cluster)
        port = _start_server(cluster)
        cluster.url = f"postgresql://{user}@127.0.0.1:{port}/{DATABASE}"
        _create_database(cluster, f"postgresql://{user}@127.0.0.1:{port}/postgres")
        _ensure_postgis(cluster, f"server of {bindir}")
    except BaseException:
        cluster.stop()
        raise
    cluster.startup_s = time.monotonic() - started
    log.info("PostgreSQL (%s) at %s in %.2f s", bindir, cluster.url, cluster.startup_s)
    return cluster


def schema_name(hint: str) -> str:
    """A new schema name for :meth:`PgCluster.new_schema`: ``t_<hint>_<8 random hex>``.

    Parameters
    ----------
    hint
        Any text, e.g. a test's name; lower-cased, other characters than letters, digits
        and ``_`` become ``_``, cut to 40 characters.

    Examples
    --------
    >>> schema_name("test_x[a-1]")[:-8]
    't_test_x_a_1__'
    """
    hint = re.sub(r"[^a-z0-9_]", "_", hint.lower())[:40]
    return f"t_{hint}_{uuid.uuid4().hex[:8]}"


# ------------------------------------------------------------------------------ helpers


def _psycopg() -> ModuleType:
    """The ``psycopg`` module, or :class:`PgUnavailable` if it is not installed."""
    try:
        import psycopg
    except ImportError as exc:
        raise PgUnavailable(
            f"psycopg is not installed (pip install -e '.[postgres]'): {exc}"
        ) from None
    return psycopg


def _find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin``, else ``pg_config --bindir``."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: [int(x) for x in re.findall(r"\d+", p.parent.parent.name)],
    )
    if found:
        return found[-1].parent
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        bindir = Path(out.stdout.strip())
        if out.returncode == 0 and (bindir / "initdb").is_file():
            return bindir
    raise PgUnavailable(
        "no PostgreSQL server binaries (no /usr/lib/postgresql/*/bin/initdb, no pg_config "
        "--bindir with initdb): run tests/system-deps.sh as root"
    )


def _prepare_home(base: Path) -> tuple[str | None, Path]:
    """The user to run the server commands as (``None``: this user) and the cluster home."""
    if os.geteuid() != 0:
        _make_socket_dir(base)
        return None, base
    try:
        pw = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        raise PgUnavailable(
            f"running as root and there is no {SYSTEM_USER!r} user to run PostgreSQL"
        ) from None
    if shutil.which("runuser") is None:
        raise PgUnavailable("running as root and there is no runuser to run PostgreSQL")
    home = Path(tempfile.mkdtemp(prefix="matcher-pg-"))  # mode 0700
    os.chown(home, pw.pw_uid, pw.pw_gid)
    (base / "cluster").symlink_to(home)
    os.chown(_make_socket_dir(home), pw.pw_uid, pw.pw_gid)
    return SYSTEM_USER, home


def _make_socket_dir(home: Path) -> Path:
    """Make ``home/socket``, the server's unix socket directory, and return it."""
    socket_dir = home / "socket"
    if len(str(socket_dir / ".s.PGSQL.65535")) > _SOCKET_PATH_MAX:
        raise PgUnavailable(f"the unix socket path under {socket_dir} would be too long")
    socket_dir.mkdir()
    return socket_dir


def _run(
    cmd: list[str], run_as: str | None, cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd`` (as ``run_as`` if given), capturing its output.

    ``cwd`` is a directory the server user can enter: no "could not change directory"
    warnings from the PostgreSQL tools.
    """
    program = Path(cmd[0]).name
    if run_as is not None:
        cmd = ["runuser", "-u", run_as, "--", *cmd]
    try:
        return subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PgUnavailable(f"{program}: {exc}") from exc


def _initdb(cluster: PgCluster) -> str:
    """Make the cluster in ``home/data``; return its superuser's name."""
    assert cluster.home is not None and cluster.bindir is not None
    user = cluster.run_as or pwd.getpwuid(os.geteuid()).pw_name
    data = cluster.home / "data"
    cmd = [
        str(cluster.bindir / "initdb"),
        "-D",
        str(data),
        "--username",
        user,
        "--auth=trust",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",  # initdb's files only; the server runs with fsync = on
    ]
    done = _run(cmd, cluster.run_as, cwd=cluster.home)
    if done.returncode != 0:
        reason = _last_line(done.stderr or done.stdout, prefer=("error",))
        raise PgUnavailable(f"initdb failed: {reason}")
    settings = SETTINGS | {"unix_socket_directories": f"'{cluster.home / 'socket'}'"}
    with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write("\n# tests/pgserver.py\n")
        conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
    return user


def _start_server(cluster: PgCluster, attempts: int = 3) -> int:
    """Start the server on a free port (another one if it was taken meanwhile)."""
    assert cluster.home is not None and cluster.bindir is not None
    logfile = cluster.home / "server.log"
    reason = "no attempt"
    for _attempt in range(attempts):
        port = _free_port()
        cmd = [str(cluster.bindir / "pg_ctl"), "start", "-w", "-t", "60"]
        cmd += ["-D", str(cluster.home / "data"), "-l", str(logfile), "-o", f"-p {port}"]
        done = _run(cmd, cluster.run_as, cwd=cluster.home)
        if done.returncode == 0:
            return port
        text = logfile.read_text(errors="replace") if logfile.exists() else done.stderr
        reason = _last_line(text, prefer=("FATAL", "ERROR")) or _last_line(done.stderr)
        if "could not bind" not in text and "in use" not in text:
            break
    raise PgUnavailable(f"the PostgreSQL server did not start: {reason}")


def _create_database(cluster: PgCluster, maintenance_url: str) -> None:
    """``CREATE DATABASE matcher_test`` through the ``postgres`` database."""
    psycopg = _psycopg()
    try:
        with cluster.connect(maintenance_url) as conn:
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(DATABASE))
            )
    except psycopg.Error as exc:
        raise PgUnavailable(f"could not create {DATABASE}: {_first_line(exc)}") from exc


def _ensure_postgis(cluster: PgCluster, where: str) -> None:
    """``CREATE EXTENSION IF NOT EXISTS postgis`` in the database and check it answers."""
    psycopg = _psycopg()
    try:
        conn = cluster.connect()
    except psycopg.Error as exc:
        raise PgUnavailable(f"cannot connect to the {where}: {_first_line(exc)}") from exc
    with conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            row = conn.execute("SELECT postgis_lib_version()").fetchone()
        except psycopg.Error as exc:
            raise PgUnavailable(f"no PostGIS in the {where}: {_first_line(exc)}") from exc
    log.info("PostGIS %s in the %s", row[0] if row else "?", where)


def _with_search_path(url: str, schema: str) -> str:
    """``url`` whose connections set ``search_path`` to ``schema, public``."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    option = f"-csearch_path={schema},public"
    query["options"] = f"{query['options']} {option}" if query.get("options") else option
    return urlunsplit(parts._replace(query=urlencode(query, safe=",", quote_via=quote)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _last_line(text: str, prefer: tuple[str, ...] = ()) -> str:
    """The last non-empty line of ``text`` (the last one containing a ``prefer`` word)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    preferred = [line for line in lines if any(word in line for word in prefer)]
    return (preferred or lines or [""])[-1]


def _first_line(exc: BaseException) -> str:
    """The first line of an error's message (psycopg's DETAIL and HINT lines follow it)."""
    return _last_line(str(exc).strip().split("\n", 1)[0]) or type(exc).__name__


def _keep_log(home: Path, base: Path) -> None:
    """Copy the server log out of a private cluster directory before it is removed."""
    try:
        shutil.copyfile(home / "server.log", base / "postgresql.log")
    except OSError as exc:
        log.warning("could not keep the server log: %s", exc)
