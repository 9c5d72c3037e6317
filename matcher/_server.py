"""Run the WSGI app under waitress, in one process or several, with bounds against abuse.

waitress parses requests in its event loop and hands only complete requests to its
threads, so idle or slow connections (slowloris) cost a socket, not a thread. The
bounds: at most :data:`MAX_CONNECTIONS` connections per process, each closed after
:data:`IDLE_TIMEOUT_S` seconds without traffic; request bodies over
:data:`matcher.limits.MAX_BODY_BYTES` are refused from their ``Content-Length``
before a byte of them is read (and cut off at that size when chunked). Bodies under
the bound are buffered by waitress before the app runs, so they are read even when the
app then refuses the request for a missing key.

Several processes (``workers``): the listening socket is made once, then each worker
process is forked and builds its own app (its own store connections and plan worker
threads) and serves the shared socket with waitress; the kernel hands each new
connection to one of them. A worker that dies is started again. SIGTERM or SIGINT stops
them all. This is the pre-fork model of gunicorn, with waitress's event loop in each
worker: gunicorn's threaded worker (measured with gunicorn 27) streams bodies to the
app, but 100 connections that send half a request header hold all its threads until
they close, so it is not used without a buffering proxy in front.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from ._logging import SafeFormatter
from .limits import MAX_BODY_BYTES

__all__ = ["IDLE_TIMEOUT_S", "MAX_CONNECTIONS", "serve"]

logger = logging.getLogger("matcher.serve")

#: Seconds a connection may stay idle (between requests, or while sending one).
IDLE_TIMEOUT_S = 30
#: Most simultaneous client connections, per process.
MAX_CONNECTIONS = 1000
#: Largest request line and headers, in bytes.
MAX_HEADER_BYTES = 64 * 1024
#: Seconds before a worker that died is started again (it keeps dying: no busy loop).
RESTART_DELAY_S = 1.0


def _root_handler() -> None:
    # waitress calls logging.basicConfig() when the root logger has no handler: give it
    # one that escapes control characters, so no log line can be forged (matcher's own
    # records have their handler already and do not propagate to it)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    logging.getLogger("matcher").propagate = False


def _waitress(app: Any, threads: int, **where: Any) -> None:
    import waitress

    waitress.serve(
        app,
        threads=threads,
        ident="matcher",
        connection_limit=MAX_CONNECTIONS,
        channel_timeout=IDLE_TIMEOUT_S,
        cleanup_interval=IDLE_TIMEOUT_S // 3,
        max_request_body_size=MAX_BODY_BYTES,
        max_request_header_size=MAX_HEADER_BYTES,
        **where,
    )


def serve(
    make_app: Callable[[], Any], *, host: str, port: int, threads: int, workers: int = 1
) -> None:
    """Serve the WSGI app of ``make_app()`` under waitress until interrupted.

    Parameters
    ----------
    make_app : callable
        Builds the app (``lambda: api.create_app(...)``); called once per process.
    host, port : str, int
        Where to listen.
    threads : int
        Request threads per process.
    workers : int
        Server processes (POSIX only above 1).
    """
    _root_handler()
    if workers <= 1:
        _waitress(make_app(), threads, host=host, port=port)
        return
    if not hasattr(os, "fork"):
        raise RuntimeError("several workers need fork(); use --workers 1 on this system")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    children: dict[int, int] = {}
    stopping = False

    def spawn(slot: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: its own app, the shared socket
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            code = 0
            try:
                _waitress(make_app(), threads, sockets=[sock])
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        children[pid] = slot

    def stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    before = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for slot in range(workers):
            spawn(slot)
        logger.info("%d worker processes share %s:%d", workers, host, port)
        _supervise(children, spawn, lambda: stopping)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        sock.close()


def _supervise(
    children: dict[int, int], spawn: Callable[[int], None], stopping: Callable[[], bool]
) -> None:
    """Wait for the workers; start another for each that stops, until told to stop.

    Only the workers are waited for (never another child of this process).
    """
    while children:
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if not done:
                continue
            slot = children.pop(pid)
            if stopping():
                continue
            logger.warning("worker %d stopped (%s); starting another", pid, _describe(status))
            time.sleep(RESTART_DELAY_S)
            if not stopping():
                spawn(slot)
        time.sleep(0.1)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"
