"""When this process may fork a helper (clustering helpers, the plan.geojson writer)."""

from __future__ import annotations

import threading

__all__ = ["single_threaded"]


def single_threaded() -> bool:
    """Whether this process runs one thread, so that forking it is safe.

    Forking a process of several threads (a web service's plan jobs, a Dask client,
    a notebook kernel) could copy a lock another thread holds, and the forked process
    would wait on it forever: helpers are forked only from a process of one thread.
    """
    return threading.active_count() == 1
