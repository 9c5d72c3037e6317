"""Run a plan's regions on a Dask cluster (``matcher plan --dask``).

The plan itself is :func:`matcher.plan` with ``client=``: it splits the work into
regions (:mod:`matcher.partition`), and this module only submits the region steps of
:mod:`matcher.region` to the client's workers and gathers their results. Region inputs
are scattered once; a region's clustering stays on the worker that made it and is
matched there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

__all__ = [
    "DaskExecutor",
    "DaskSplitter",
    "LOCAL",
    "dask_client",
    "parse_address",
    "valid_address",
]

logger = logging.getLogger(__name__)

#: ``local`` or ``local:N``: a cluster of N worker processes on this machine.
LOCAL = re.compile(r"local(?::([0-9]{1,3}))?")
#: Most worker processes of a local cluster.
MAX_LOCAL_WORKERS = 256
#: Region tasks per worker thread: enough to even out regions of different sizes.
TASKS_PER_THREAD = 4


class DaskExecutor:
    """Submit region steps to a ``dask.distributed.Client``.

    Parameters
    ----------
    client : dask.distributed.Client
        A connected client.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        threads = sum(client.nthreads().values()) or 1
        self.tasks = TASKS_PER_THREAD * threads

    def __repr__(self) -> str:
        return f"Dask ({len(self.client.nthreads())} workers)"

    def scatter(self, data: list[Any]) -> list[Any]:
        """Send region inputs to the workers once; return their futures."""
        return list(self.client.scatter(data, hash=False))

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` on a worker (never cached: each plan runs its own steps)."""
        return self.client.submit(fn, *args, pure=False, **kwargs)

    def gather(self, futures: list[Any]) -> list[Any]:
        """Wait for futures and return their results, in order."""
        return list(self.client.gather(futures))

    def splitter(self) -> DaskSplitter:
        """Split a one-region plan's oversize clusters on the workers."""
        return DaskSplitter(self)


class DaskSplitter:
    """A :class:`matcher.clustering.Splitter` on a Dask cluster.

    Each category's arrays are scattered first (a task holding them would make a
    graph of tens of MB, which Dask warns about), then the split is submitted.

    Parameters
    ----------
    executor : DaskExecutor
        The plan's executor.
    """

    def __init__(self, executor: DaskExecutor) -> None:
        self.executor = executor

    def submit(self, fn: Any, /, *args: Any) -> Any:
        """Start ``fn(*args)`` on a worker; return its future (``result()`` waits)."""
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        sent = self.executor.scatter([args[i] for i in arrays])
        call = list(args)
        for i, future in zip(arrays, sent, strict=True):
            call[i] = future
        return self.executor.submit(fn, *call)


def parse_address(address: str) -> tuple[str, int | None]:
    """Split a ``--dask`` value into a scheduler address or ``local`` and a worker count.

    Examples
    --------
    >>> parse_address("local:2")
    ('local', 2)
    >>> parse_address("tcp://10.0.0.5:8786")
    ('tcp://10.0.0.5:8786', None)
    """
    m = LOCAL.fullmatch(address)
    if m:
        return "local", int(m[1]) if m[1] else None
    return address, None


#: A scheduler address: an optional ``scheme://``, a host and a port.
_ADDRESS = re.compile(
    r"(?:(?:tcp|tls|inproc|ucx|ws|wss)://)?[A-Za-z0-9_.\-\[\]:]{1,253}:[0-9]{1,5}"
)


def valid_address(address: str) -> str | None:
    """Say what is wrong with a ``--dask`` value, or None when it is usable.

    Examples
    --------
    >>> valid_address("local:0")
    'a local cluster needs 1 to 256 workers, not 0'
    >>> valid_address("tcp://scheduler:8786") is None
    True
    """
    if len(address) > 300:
        return "too long"
    where, workers = parse_address(address)
    if where == "local":
        if workers is not None and not 1 <= workers <= MAX_LOCAL_WORKERS:
            return f"a local cluster needs 1 to {MAX_LOCAL_WORKERS} workers, not {workers}"
        return None
    if not _ADDRESS.fullmatch(address):
        return "not a local cluster nor a scheduler address"
    return None


async def _warm_up() -> None:
    """Import what region steps use, so that a worker is ready when its first region comes.

    A coroutine: ``Client.run(..., wait=False)`` takes only those.
    """
    import matcher.clustering  # noqa: F401
    import matcher.region  # noqa: F401
    from matcher import _dbscan  # noqa: F401

    try:  # the k-means that splits oversize clusters (imported lazily by clustering)
        import sklearn.cluster._kmeans  # noqa: F401
    except ImportError:  # pragma: no cover - another scikit-learn layout
        pass


@contextmanager
def dask_client(address: str) -> Iterator[Any]:
    """Connect to a Dask scheduler, or start a local cluster of worker processes.

    Parameters
    ----------
    address : str
        ``local`` (one worker process per CPU), ``local:N`` (N processes, one thread
        each) or a scheduler address such as ``tcp://host:8786``.

    Yields
    ------
    dask.distributed.Client
    """
    from dask.distributed import Client, LocalCluster

    where, workers = parse_address(address)
    if where == "local":
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # the scheduler still serves /health and /metrics: on a free loopback port,
            # so that two local clusters (two plans at once) neither clash nor warn
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        )
        try:
            with Client(cluster) as client:
                # workers import while this process reads the inputs
                client.run(_warm_up, wait=False, on_error="ignore")
                yield client
        finally:
            cluster.close()
    else:
        with Client(where) as client:
            client.run(_warm_up, wait=False, on_error="ignore")
            yield client
