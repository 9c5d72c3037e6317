"""Run the WSGI app under waitress, with bounds that keep it up under abuse.

waitress parses requests in its event loop and hands only complete requests to its
threads, so idle or slow connections (slowloris) cost a socket, not a thread. The
bounds: at most :data:`MAX_CONNECTIONS` connections, each closed after
:data:`IDLE_TIMEOUT_S` seconds without traffic; request bodies over
:data:`matcher.limits.MAX_BODY_BYTES` are refused from their ``Content-Length``
before a byte of them is read (and cut off at that size when chunked). Bodies under
the bound are buffered by waitress before the app runs, so they are read even when the
app then refuses the request for a missing key.

gunicorn's threaded worker (measured with gunicorn 27) streams bodies to the app, but
100 connections that send half a request header hold all its threads until they
close, so it is not offered without a buffering proxy in front.
"""

from __future__ import annotations

import logging
from typing import Any

from ._logging import SafeFormatter
from .limits import MAX_BODY_BYTES

__all__ = ["IDLE_TIMEOUT_S", "MAX_CONNECTIONS", "serve"]

logger = logging.getLogger("matcher.serve")

#: Seconds a connection may stay idle (between requests, or while sending one).
IDLE_TIMEOUT_S = 30
#: Most simultaneous client connections.
MAX_CONNECTIONS = 1000
#: Largest request line and headers, in bytes.
MAX_HEADER_BYTES = 64 * 1024


def serve(app: Any, *, host: str, port: int, threads: int) -> None:
    """Serve the WSGI ``app`` under waitress until interrupted.

    Parameters
    ----------
    app : WSGI application
        The app (``api.create_app(...)``).
    host, port : str, int
        Where to listen.
    threads : int
        Request threads.
    """
    import waitress

    # waitress calls logging.basicConfig() when the root logger has no handler: give it
    # one that escapes control characters, so no log line can be forged (matcher's own
    # records have their handler already and do not propagate to it)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    logging.getLogger("matcher").propagate = False
    waitress.serve(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="matcher",
        connection_limit=MAX_CONNECTIONS,
        channel_timeout=IDLE_TIMEOUT_S,
        cleanup_interval=IDLE_TIMEOUT_S // 3,
        max_request_body_size=MAX_BODY_BYTES,
        max_request_header_size=MAX_HEADER_BYTES,
    )
