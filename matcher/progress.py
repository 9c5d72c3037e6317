"""Progress display for command-line runs, driven by the library's logging.

The library never prints: each pipeline stage of :func:`matcher.pipeline.plan` ends with an
INFO record ``"stage <name> <seconds> s"`` on the ``matcher.plan`` logger.
:class:`StageProgress` is a :class:`logging.Handler` that turns those records into a
tqdm bar over the known stages, so the library needs no callback and stays silent
when nobody listens. The CLI enables the bar only when standard error is a terminal
and ``--quiet`` is not given (:func:`progress_enabled`); a disabled
:class:`StageProgress` writes nothing at all.

Examples
--------
>>> with StageProgress(["read", "write"], enabled=False) as progress:
...     with progress.stage("write"):
...         pass
>>> progress.done_stages
['write']
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

__all__ = [
    "DASK_PLAN_STAGES",
    "PLAN_STAGES",
    "StageProgress",
    "progress_enabled",
    "console_write_mode",
]

logger = logging.getLogger(__name__)

#: The stages of :func:`matcher.pipeline.plan`, in order (each logs ``"stage %-11s %.2f s"``).
PLAN_STAGES: tuple[str, ...] = (
    "read",
    "cluster",
    "candidates",
    "model",
    "solve",
    "explain",
    "merge",
)
#: The stages of a plan run in regions on Dask (``matcher plan --dask``).
DASK_PLAN_STAGES: tuple[str, ...] = ("read", "partition", "scatter", "cluster", "match", "merge")

#: The format of the stage records (of :mod:`matcher.pipeline` and of :meth:`StageProgress.stage`).
STAGE_FORMAT = "stage %-11s %.2f s"

_active: list[StageProgress] = []


def progress_enabled(quiet: bool = False, stream: IO[Any] | None = None) -> bool:
    """Whether to show a progress bar: not ``quiet`` and ``stream`` (stderr) is a terminal."""
    if quiet:
        return False
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def console_write_mode() -> contextlib.AbstractContextManager[Any]:
    """Context for writing a line to the console while a bar may be shown.

    Clears the active bars, lets the caller write, then redraws them, so log lines and
    the bar do not overwrite each other. A no-op when no bar is shown.
    """
    if not any(p.bar is not None for p in _active):
        return contextlib.nullcontext()
    from tqdm import tqdm

    return tqdm.external_write_mode(file=sys.stderr)


class StageProgress(logging.Handler):
    """A tqdm bar over named stages, advanced by the library's stage log records.

    Parameters
    ----------
    stages : sequence of str
        The expected stages in order. A stage record with another name adds a step.
    enabled : bool
        Show the bar. When false, the handler still tracks :attr:`done_stages` but
        writes nothing.
    desc : str
        The bar's label.
    file : file object, optional
        Where the bar is drawn; ``sys.stderr`` when omitted.
    logger_name : str
        The logger to listen on while in use as a context manager.

    Notes
    -----
    The records must reach the handler: the listened logger must let INFO through
    (the CLI sets ``matcher`` to INFO unless ``--quiet``, which disables the bar).
    """

    def __init__(
        self,
        stages: Sequence[str],
        *,
        enabled: bool,
        desc: str = "matcher",
        file: IO[str] | None = None,
        logger_name: str = "matcher",
    ) -> None:
        super().__init__(level=logging.INFO)
        self.stages = list(stages)
        self.enabled = enabled
        self.desc = desc
        self.file = file
        self.logger_name = logger_name
        self.done_stages: list[str] = []
        self.bar: Any = None
        self._pos = 0

    # -- context management -------------------------------------------------------------

    def __enter__(self) -> StageProgress:
        if self.enabled:
            from tqdm import tqdm

            class _Bar(tqdm):  # type: ignore[type-arg]
                # no monitor thread: a planning process of one thread may fork helpers
                # (see matcher.clustering.SplitHelper)
                monitor_interval = 0

            self.bar = _Bar(
                total=len(self.stages),
                desc=self._label(),
                unit="stage",
                file=self.file if self.file is not None else sys.stderr,
                leave=False,
                dynamic_ncols=True,
                mininterval=0,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}]",
            )
        logging.getLogger(self.logger_name).addHandler(self)
        _active.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logging.getLogger(self.logger_name).removeHandler(self)
        if self in _active:
            _active.remove(self)
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- stages -------------------------------------------------------------------------

    def _label(self) -> str:
        current = self.stages[self._pos] if self._pos < len(self.stages) else "done"
        return f"{self.desc}: {current:<11}"

    def done(self, name: str) -> None:
        """Mark stage ``name`` finished and show the next one as running."""
        self.done_stages.append(name)
        if name in self.stages[self._pos :]:
            step = self.stages.index(name, self._pos) + 1 - self._pos
            self._pos += step
        else:  # a stage not announced: one more step
            self.stages.insert(self._pos, name)
            self._pos += 1
            step = 1
            if self.bar is not None:
                self.bar.total = len(self.stages)
        if self.bar is not None:
            self.bar.set_description_str(self._label(), refresh=False)
            self.bar.update(step)

    @contextlib.contextmanager
    def stage(self, name: str, log: logging.Logger | None = None) -> Iterator[None]:
        """Time a stage of the caller (e.g. writing files); log it and advance the bar."""
        start = time.perf_counter()
        yield
        seconds = time.perf_counter() - start
        (log or logger).info(STAGE_FORMAT, name, seconds, extra={"matcher_stage": name})
        if name not in self.done_stages[-1:]:  # not already counted through emit()
            self.done(name)

    # -- logging.Handler ----------------------------------------------------------------

    def emit(self, record: logging.LogRecord) -> None:
        """Advance on a stage record (``"stage <name> ..."``); ignore everything else."""
        try:
            name = getattr(record, "matcher_stage", None)
            msg = record.msg
            if name is None and isinstance(msg, str) and msg.startswith("stage ") and record.args:
                args = record.args if isinstance(record.args, tuple) else (record.args,)
                name = str(args[0])
            if name is not None:
                self.done(str(name))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)
