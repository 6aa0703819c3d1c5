"""Background figure work: build and render each validation run's figures off the training thread.

:class:`FigureWorker` runs figure jobs in one low-priority thread (or inline), renders every
figure exactly once (pixels, and PNG bytes only when a logger stores files), and hands the
finished figures back in submission order with the step they belong to.
:class:`RunFigures` is the job of one run (views, galleries, tables and the evaluation's
extra figures), :func:`figure_title` its title. :class:`MonitorFigures` is the callback's
figure side: a view builder per dataloader (their frames are checkpointed), the worker, and
the logging of finished figures, which the callback calls from training hooks.
No Lightning here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Optional

from matplotlib.figure import Figure

from lightning_embviz._keys import METRIC_KEYS
from lightning_embviz.callback.evaluation import Evaluation, FigureInputs, figure_inputs
from lightning_embviz.figures.rendering import RenderedFigure
from lightning_embviz.figures.views import SampleTables, SampleViews

if TYPE_CHECKING:
    from lightning_embviz.callback.config import MonitorConfig

__all__ = [
    "FigureJob",
    "FigureWorker",
    "FinishedJob",
    "MonitorFigures",
    "RunFigures",
    "figure_title",
]

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


def figure_title(head: str, metrics: Mapping[str, float], confidence: Optional[float]) -> str:
    """A run's figure title.

    ``head`` (epoch, step, ...) and, with ``confidence``, a line of the intervals that were
    computed (``precision [0.61, 0.68] · ...``).
    """
    if confidence is None:
        return head
    bounds = [
        f"{name} [{metrics[f'{name}_low']:.3g}, {metrics[f'{name}_high']:.3g}]"
        for name in METRIC_KEYS
        if math.isfinite(metrics.get(f"{name}_low", math.nan))
    ]
    if bounds:
        head += f"\n{confidence:.0%} intervals: " + " · ".join(bounds)
    return head


@dataclasses.dataclass
class RunFigures:
    """One run's figure job (a :data:`FigureJob`): views, galleries, tables, extra figures.

    Attributes:
        inputs: The run's features, details and labels (:func:`figure_inputs`).
        title: The title of every figure.
        builder: The dataloader's :class:`~lightning_embviz.figures.views.ViewBuilder`, or
            None for no views.
        samples: The run's galleries and tables, or None.
        on_state: Called with the builder's new state after it drew (the callback keeps it
            for ``state_dict``, which then never waits for the builder).
    """

    inputs: FigureInputs
    title: str
    builder: Optional[Any] = None
    samples: Optional[SampleViews] = None
    on_state: Optional[Callable[[dict[str, Any]], None]] = None

    def __call__(self) -> dict[str, Any]:
        """Figures and tables by key (unprefixed); runs in the worker."""
        out: dict[str, Any] = {}
        data = self.inputs
        if self.builder is not None:
            out.update(
                self.builder.build(
                    data.real,
                    data.fake,
                    data.details,
                    real_labels=data.real_labels,
                    fake_labels=data.fake_labels,
                    title=self.title,
                )
            )
            if self.on_state is not None:
                self.on_state(self.builder.state_dict())
        if self.samples is not None:
            out.update(self.samples.build(self.title))
        for key, draw in data.extra.items():
            out[key] = draw(self.title)
        return out


class MonitorFigures:
    """The callback's figure side: a view builder per dataloader, the worker, the logging.

    :meth:`submit` queues a run's :class:`RunFigures`; :meth:`log_finished` logs the figures
    and tables of finished jobs to the Trainer's loggers (called from training hooks, on the
    training thread). The builders' frames are the callback's checkpointed state
    (:meth:`state_dict`); pickling (``ddp_spawn``) carries them as plain state, without the
    thread.

    Args:
        config: The callback's checked arguments (``views``, ``view_max_samples``, ``seed``,
            ``background``, ``prefix`` are read).
    """

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.worker = FigureWorker(config.background)
        self._builders: dict[int, Any] = {}
        # Last known state of each builder, refreshed by the worker after each build, so
        # that `state_dict()` never waits for a builder's lock while a frame is being fitted.
        self._states: dict[int, dict[str, Any]] = {}
        if config.views:
            self.builder(0)  # the state is never empty, even before the first run

    def builder(self, dataloader_idx: int) -> Any:
        """The :class:`~lightning_embviz.figures.views.ViewBuilder` of a dataloader."""
        if dataloader_idx not in self._builders:
            builder = self.config.view_builder()
            self._builders[dataloader_idx] = builder
            self._states[dataloader_idx] = builder.state_dict()
        return self._builders[dataloader_idx]

    def submit(
        self,
        loggers: Any,
        idx: int,
        result: Evaluation,
        head: str,
        samples: Optional[SampleViews],
        *,
        step: int,
        suffix: str,
    ) -> bool:
        """Start a computed run's figures (and log its projector embeddings at once).

        Args:
            loggers: The Trainer's loggers.
            idx: The dataloader's index.
            result: Its evaluation (``status == "ok"``).
            head: The first line of the figure titles (epoch, step, ...).
            samples: The run's galleries and tables, or None.
            step: The step the figures belong to.
            suffix: What ends each key (``"/dataloader_idx_1"`` or ``""``).

        Returns:
            Whether a job was queued (False when there is nothing to draw).
        """
        config = self.config
        inputs = figure_inputs(result)
        if config.log_projector:
            from lightning_embviz.loggers import log_embedding_projector

            log_embedding_projector(
                loggers,
                inputs.real,
                inputs.fake,
                step,
                tag=f"{config.prefix}embeddings{suffix}",
                real_labels=inputs.real_labels,
                fake_labels=inputs.fake_labels,
            )
        if not config.views and samples is None and not inputs.extra:
            return False
        from lightning_embviz.loggers import needs_png

        job = RunFigures(
            inputs,
            figure_title(head, result.metrics, config.confidence),
            builder=self.builder(idx) if config.views else None,
            samples=samples,
            on_state=functools.partial(self._states.__setitem__, idx),
        )
        self.worker.submit(job, step, suffix, png=needs_png(loggers))
        return True

    def log_finished(self, loggers: Any, root: Optional[str], wait: bool) -> None:
        """Log the figures of finished jobs, oldest first (all of them when ``wait``)."""
        from lightning_embviz.loggers import log_figures, log_tables

        prefix = self.config.prefix
        for done in self.worker.poll(wait):
            if done.error is not None:
                err = done.error
                detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
                warnings.warn(
                    f"EmbeddingMonitor: building the figures for step {done.step} failed; "
                    f"the metrics were logged, the figures of that run are missing.\n{detail}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            tables = done.figures.pop("samples", None)
            named = {f"{prefix}{key}{done.context}": fig for key, fig in done.figures.items()}
            log_figures(loggers, named, done.step, fallback_dir=root)
            if isinstance(tables, SampleTables):
                log_tables(
                    loggers,
                    {f"{prefix}{k}{done.context}": t for k, t in tables.tables.items()},
                    done.step,
                    markdown=tables.markdown,
                    markdown_tag=f"{prefix}samples{done.context}",
                    fallback_dir=root,
                )

    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Each builder's last known state by dataloader index (as a string)."""
        return {str(idx): state for idx, state in self._states.items()}

    def load_state_dict(self, views: Mapping[str, Any]) -> None:
        """Restore the builders that :meth:`state_dict` saved (nothing without views)."""
        if self.config.views:
            for idx, state in dict(views).items():
                self.builder(int(idx)).load_state_dict(state)
                self._states[int(idx)] = state

    def __getstate__(self) -> dict[str, Any]:
        # The worker thread stays behind; builders (which hold a lock) travel as state.
        return {"config": self.config, "states": dict(self._states)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self.worker = FigureWorker(self.config.background)
        self._builders = {}
        self._states = {}
        for idx, view_state in state["states"].items():
            self.builder(idx).load_state_dict(view_state)
            self._states[idx] = view_state
