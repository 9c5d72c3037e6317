"""The pre-fork supervisor of ``matcher serve --workers`` run in this process (so it is
measured by coverage): workers share the port, a dead one is replaced, SIGTERM stops all."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from matcher import _server

from .conftest import free_port

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork") or not Path("/proc").is_dir(), reason="needs fork and /proc"
)


def _app(environ, start_response):  # a tiny WSGI app that says which process answered
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


def _get(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_workers_share_a_port_are_replaced_and_stop_on_sigterm(monkeypatch) -> None:
    monkeypatch.setattr(_server, "RESTART_DELAY_S", 0.05)
    port, seen, errors = free_port(), [], []
    before = signal.getsignal(signal.SIGTERM)

    def drive() -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    seen.append(_get(port))
                    if len(set(seen)) >= 2:
                        break
                except OSError:
                    time.sleep(0.05)
            first = set(seen)
            os.kill(int(seen[0]), signal.SIGKILL)  # a worker dies: another one answers
            while time.monotonic() < deadline and not set(seen) - first:
                try:
                    seen.append(_get(port))
                except OSError:
                    time.sleep(0.05)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # stops the supervisor and its workers

    threading.Thread(target=drive, daemon=True).start()
    _server.serve(lambda: _app, host="127.0.0.1", port=port, threads=1, workers=2)
    assert errors == []
    assert len(set(seen)) >= 3, seen  # two workers, then the one started in place of the dead
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are given back
    with pytest.raises(OSError):
        _get(port)  # nothing listens any more
