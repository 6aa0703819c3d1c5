"""Background figure work: build and render each validation run's figures off the training thread.

:class:`FigureWorker` runs figure jobs in one low-priority thread (or inline), renders every
figure exactly once (pixels, and PNG bytes only when a logger stores files), and hands the
finished figures back in submission order with the step they belong to. The callback calls
:meth:`FigureWorker.poll` from training hooks and logs what is done; nothing here logs.
No Lightning here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from matplotlib.figure import Figure

from lightning_embviz.plotting import RenderedFigure

__all__ = ["FigureJob", "FigureWorker", "FinishedJob"]

# A job returns figures by key (unprefixed), e.g. {"pca": Figure}; other values (tables)
# pass through unrendered.
FigureJob = Callable[[], dict[str, Any]]


def _lower_priority() -> None:
    """Run the worker at a lower CPU priority than the training thread (Linux)."""
    # On Linux the nice value belongs to the thread: this lowers the worker only.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19))


@dataclasses.dataclass
class FinishedJob:
    """A finished job: its rendered figures (or the error) and what it was submitted with."""

    step: int
    context: Any
    figures: dict[str, Any]
    error: BaseException | None = None


@dataclasses.dataclass
class _Pending:
    future: Future[dict[str, Any]]
    step: int
    context: Any


def _run(job: FigureJob, png: bool) -> dict[str, Any]:
    rendered: dict[str, Any] = {}
    for key, value in job().items():
        if not isinstance(value, Figure):  # e.g. tables: passed through as they are
            rendered[key] = value
            continue
        out = RenderedFigure.from_figure(value)
        if png:
            out.png  # noqa: B018 - encode here, off the training thread
        rendered[key] = out
    return rendered


class FigureWorker:
    """Runs figure jobs in a background thread (``background=True``) or at once.

    Args:
        background: Run jobs in one worker thread at a lower priority; else run them inline
            in :meth:`submit`.
    """

    def __init__(self, background: bool) -> None:
        self.background = background
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[_Pending] = []

    def submit(self, job: FigureJob, step: int, context: Any = None, *, png: bool) -> None:
        """Queue ``job``; its figures are rendered (and PNG-encoded when ``png``) once."""
        if self.background:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="embviz", initializer=_lower_priority
                )
            future = self._executor.submit(_run, job, png)
        else:
            future = Future()
            try:
                future.set_result(_run(job, png))
            except Exception as err:
                future.set_exception(err)
        self._pending.append(_Pending(future, step, context))

    @property
    def has_finished(self) -> bool:
        """Whether the oldest job is done (cheap; for per-batch hooks)."""
        return bool(self._pending) and self._pending[0].future.done()

    def poll(self, wait: bool) -> Iterator[FinishedJob]:
        """Yield finished jobs, oldest first; all of them (waiting) when ``wait``."""
        while self._pending and (wait or self._pending[0].future.done()):
            pending = self._pending.pop(0)
            try:
                figures = pending.future.result()
            except Exception as err:
                yield FinishedJob(pending.step, pending.context, {}, err)
                continue
            yield FinishedJob(pending.step, pending.context, figures)

    def cancel(self) -> None:
        """Drop queued jobs and stop the thread without waiting (the run is failing)."""
        for pending in self._pending:
            pending.future.cancel()
        self._pending = []
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    def close(self) -> None:
        """Stop the thread after its current job (call after the last :meth:`poll`)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
