"""One validation run's evaluation: finalize the gathered rows, drop bad rows, compute.

The policy lives here, not in the callback: the uniform sample cap is applied, rows holding
NaN or Inf are dropped (the only finiteness check of a run), a run with too few usable rows is
skipped, and PRDC and the Fréchet distance are computed. Nothing here raises for bad *data*:
problems come back as :class:`Evaluation` notes that the callback turns into warnings, so a
training run never dies of its validation data. No Lightning here.

The callback's seam is :class:`RunEvaluator`: the gathered sets and the configuration go in,
an :class:`Evaluation` comes out with the scalars to log (:attr:`RunEvaluator.keys`, in order)
and, through :func:`figure_inputs`, what the worker draws. :class:`RunOutcome` is what every
rank logs: the computed flag and the values travel as two tensors in its broadcast.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import traceback
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch

from lightning_embviz._keys import METRIC_KEYS, PRDC_KEYS
from lightning_embviz.callback.buffer import EmbeddingSet, collective_device, finalize_set
from lightning_embviz.callback.extras import ExtraMetrics
from lightning_embviz.callback.memorization import memorization_pass
from lightning_embviz.callback.train_embedding import embedded_train_pass
from lightning_embviz.engine.distributed import (
    RankFailedError,
    fit_reference_distributed,
    sweep_details_distributed,
)
from lightning_embviz.engine.frechet import FrechetReference
from lightning_embviz.engine.reference import RealReference
from lightning_embviz.engine.results import PRDCResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lightning_embviz.callback.config import MonitorConfig

__all__ = [
    "FAILED",
    "OK",
    "SKIPPED",
    "Evaluation",
    "FigureInputs",
    "RunEvaluator",
    "RunOutcome",
    "details_on_cpu",
    "evaluate",
    "figure_inputs",
    "metric_keys",
]


def metric_keys(nearest_ks: tuple[int, ...], intervals: bool = False) -> tuple[str, ...]:
    """Every key one run logs, in order.

    The usual five for the first k, ``<metric>_k<k>`` for the others, and with ``intervals``
    ``<metric>_low`` / ``<metric>_high`` (first k) for the five.
    """
    extra = tuple(f"{name}_k{k}" for k in nearest_ks[1:] for name in PRDC_KEYS)
    bounds = tuple(f"{name}_{side}" for name in METRIC_KEYS for side in ("low", "high"))
    return METRIC_KEYS + extra + (bounds if intervals else ())


OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclasses.dataclass
class Evaluation:
    """The outcome of one validation run for one dataloader.

    Attributes:
        status: ``"ok"``, ``"skipped"`` (too few usable rows) or ``"failed"`` (an error).
        metrics: Every key of :func:`metric_keys`; NaN unless ``status == "ok"``.
        details: Per-sample results for the first k (``status == "ok"`` only).
        sweep: ``{k: metrics}`` for every k (``status == "ok"`` and several k only).
        reference: The fitted real set, to pass to the next run (reused while the real
            rows stay bit-identical).
        frechet: The fitted real side of the Fréchet distance, kept with ``reference`` (the
            same real rows) and reused with it.
        real: The rows the metrics were computed on (after cap and finiteness check).
        fake: Same for the fake set.
        notes: ``(once_id, message)`` pairs to warn about; ``once_id`` None warns every time.
        memorization: With ``train=``: the per-fake ``nearest_train_index`` /
            ``nearest_train_distance`` columns (rank 0).
        figures: More figures to draw in the worker, by key (e.g. ``closest_train``), each a
            function of the title.
        fake_columns: More per-fake columns for the fakes' table, (M,) each (rank 0; e.g.
            ``realism_score`` / ``rarity_score`` with ``extra_metrics=("clipped",)``).
    """

    status: str
    metrics: dict[str, float]
    details: Optional[PRDCResult] = None
    real: Optional[EmbeddingSet] = None
    fake: Optional[EmbeddingSet] = None
    notes: list[tuple[Optional[str], str]] = dataclasses.field(default_factory=list)
    sweep: Optional[dict[int, dict[str, float]]] = None
    reference: Optional[RealReference] = None
    frechet: Optional[FrechetReference] = None
    memorization: Optional[dict[str, torch.Tensor]] = None
    figures: dict[str, Callable[[str], Figure]] = dataclasses.field(default_factory=dict)
    fake_columns: dict[str, Any] = dataclasses.field(default_factory=dict)


def _nan_metrics(nearest_ks: tuple[int, ...], confidence: Optional[float]) -> dict[str, float]:
    return dict.fromkeys(metric_keys(nearest_ks, confidence is not None), math.nan)


def _intervals(
    real: EmbeddingSet,
    fake: EmbeddingSet,
    k: int,
    confidence: float,
    seed: int,
    where: str,
    notes: list[tuple[Optional[str], str]],
) -> dict[str, float]:
    """``<metric>_low`` / ``_high`` for the five metrics; NaN (with a note) when impossible."""
    from lightning_embviz.engine.intervals import prdc_intervals

    keys = [f"{name}_{side}" for name in METRIC_KEYS for side in ("low", "high")]
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = prdc_intervals(real.features, fake.features, k, confidence, seed=seed)
        for warning in caught:
            notes.append(("intervals-warning", f"EmbeddingMonitor{where}: {warning.message}"))
        return {key: float(out[key]) for key in keys}
    except Exception as err:  # too few samples to split, ...: the metrics stand without
        notes.append(
            (
                "intervals",
                f"EmbeddingMonitor: no confidence intervals{where} ({err}); logged NaN bounds.",
            )
        )
        return dict.fromkeys(keys, math.nan)


def _drop_non_finite(rows: EmbeddingSet) -> tuple[EmbeddingSet, int]:
    if len(rows) == 0:
        return rows, 0
    finite = torch.isfinite(rows.features).all(dim=1)
    bad = int((~finite).sum())
    return (rows.select(finite) if bad else rows), bad


def evaluate(
    real: EmbeddingSet,
    fake: EmbeddingSet,
    *,
    nearest_k: int | tuple[int, ...],
    max_samples: Optional[int],
    seed: int = 0,
    where: str = "",
    reference: Optional[RealReference] = None,
    confidence: Optional[float] = None,
    distributed: bool = False,
    intervals: bool = True,
    frechet: Optional[FrechetReference] = None,
) -> Evaluation:
    """Evaluate one validation run (gathered rows of every rank, any order).

    Args:
        real: Real rows (unsorted, possibly with repeated keys).
        fake: Fake rows.
        nearest_k: k of the k-NN balls, or several (the first gives the usual keys).
        max_samples: The uniform cap per set, or None.
        seed: Seed of the cap's hash.
        where: ``" of validation dataloader 1"`` or ``""``, for messages.
        reference: The previous run's fitted real set; reused when the real rows are
            bit-identical (same results, a third less distance work), else refitted.
        confidence: Also compute confidence intervals at this level
            (:func:`lightning_embviz.intervals.prdc_intervals`, seeded by ``seed``).
        distributed: Every rank of the default process group calls this with the same
            gathered rows and computes a share of the distance work
            (:mod:`lightning_embviz.distributed`); every rank gets the same result.
        intervals: Compute the intervals here (only one rank needs to, under DDP).
        frechet: The previous run's fitted real side of the Fréchet distance (fitted on the
            same rows as ``reference``); reused with it, refitted with it.

    Returns:
        An :class:`Evaluation`; never raises for bad data or a failing computation.
    """
    ks = (
        (int(nearest_k),)
        if isinstance(nearest_k, (int, np.integer))
        else tuple(int(k) for k in nearest_k)
    )
    notes: list[tuple[Optional[str], str]] = []
    # Reals sharing a dataset index are one sample (the sampler's padding); fakes are never
    # merged by key (their keys are unique but for fakes paired with a repeated index).
    real = finalize_set(real, dedupe=True, max_samples=max_samples, seed=seed)
    fake = finalize_set(fake, dedupe=False, max_samples=max_samples, seed=seed)
    capped = [
        f"{rows.seen} {name}"
        for name, rows in (("real", real), ("fake", fake))
        if max_samples is not None and rows.seen > len(rows)
    ]
    if capped:
        notes.append(
            (
                "cap",
                f"EmbeddingMonitor: the validation run{where} gave {' and '.join(capped)} rows; "
                f"the metrics use a uniform random subsample of max_samples={max_samples} per "
                "set (the same samples every epoch). Pass `EmbeddingMonitor(max_samples=None)` "
                "to use every row.",
            )
        )
    real, bad_real = _drop_non_finite(real)
    fake, bad_fake = _drop_non_finite(fake)
    dropped = [
        f"{bad} of {len(rows) + bad} {name} rows"
        for name, rows, bad in (("real", real, bad_real), ("fake", fake, bad_fake))
        if bad
    ]
    if dropped:
        notes.append(
            (
                None,
                f"EmbeddingMonitor: dropped {' and '.join(dropped)}{where} because they hold "
                "NaN or Inf values; the metrics use the remaining rows.",
            )
        )
    # Every k that the sample count allows is computed (k < N and k < M); the others are NaN.
    usable = min(len(real), len(fake))
    reachable = tuple(k for k in ks if k < usable)
    if not reachable:
        need = min(ks) + 1
        notes.append(
            (
                None,
                f"EmbeddingMonitor: skipped the metrics{where}: {len(real)} real and {len(fake)} "
                f"fake usable rows, but nearest_k={min(ks)} needs at least {need} of "
                "each; logged NaN. Validate on more samples or lower `nearest_k`.",
            )
        )
        return Evaluation(
            SKIPPED, _nan_metrics(ks, confidence), None, real, fake, notes, None, reference, frechet
        )
    if reachable != ks:
        unreachable = [k for k in ks if k not in reachable]
        notes.append(
            (
                "unreachable-k",
                f"EmbeddingMonitor: {len(real)} real and {len(fake)} fake usable rows{where} are "
                f"too few for nearest_k={', '.join(map(str, unreachable))} (k must be below "
                f"both counts); logged NaN for those k, the metrics of k="
                f"{', '.join(map(str, reachable))} are computed. Validate on more samples or "
                "drop the large k.",
            )
        )
    metrics = _nan_metrics(ks, confidence)
    try:
        if (
            reference is None
            or reference.nearest_ks != reachable
            or not reference.matches(real.features)
        ):
            frechet = None  # fitted on the old rows: refitted with the reference
            reference = (
                fit_reference_distributed(real.features, reachable)
                if distributed
                else RealReference(real.features, reachable)
            )
        results = (
            sweep_details_distributed(reference, fake.features)
            if distributed
            else reference.sweep_details(fake.features)
        )
        if frechet is None:
            frechet = FrechetReference(real.features)
        metrics["fd"] = frechet.distance(fake.features)
        for k in reachable:
            suffix = "" if k == ks[0] else f"_k{k}"
            metrics.update({f"{n}{suffix}": v for n, v in results[k].as_dict().items()})
        sweep = {k: r.as_dict() for k, r in results.items()} if len(reachable) > 1 else None
    except Exception as err:  # a failure must not end a long training run
        head = f"EmbeddingMonitor: computing the metrics{where} failed; logged NaN for this run. "
        if isinstance(err, RankFailedError):
            # The same message on every rank (the callback warns on each); the failing
            # rank adds its own traceback.
            cause = err.__cause__
            detail = str(err) + (
                "\n" + "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
                if cause is not None
                else ""
            )
        else:
            detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
        notes.append((None, head + detail))
        # A reference fitted before the failure is kept: under DDP every rank then makes
        # the same reuse decision next run (a refit on one rank only would wait forever).
        return Evaluation(
            FAILED, _nan_metrics(ks, confidence), None, real, fake, notes, None, reference, frechet
        )
    if ks[0] not in reachable:
        # The first k (the usual keys, the figures and intervals) is out of reach: the other
        # k's values are logged, nothing is drawn.
        return Evaluation(SKIPPED, metrics, None, real, fake, notes, None, reference, frechet)
    details = results[ks[0]]
    if confidence is not None and not intervals:
        metrics.update(dict.fromkeys(metric_keys(ks, True)[len(metric_keys(ks)) :], math.nan))
    elif confidence is not None:
        metrics.update(_intervals(real, fake, ks[0], confidence, seed, where, notes))
    return Evaluation(OK, metrics, details, real, fake, notes, sweep, reference, frechet)


@dataclasses.dataclass
class FigureInputs:
    """What one run's figures are drawn from, every tensor on the CPU.

    Attributes:
        real: Real features (N, D) after the cap and the finiteness check.
        fake: Fake features (M, D).
        details: Per-sample results of the first k (radii, coverage, ... of
            :class:`~lightning_embviz.metrics.PRDCResult`).
        real_labels: Class labels (N,) or None.
        fake_labels: Class labels (M,) or None.
        extra: More figures by key (unprefixed, e.g. ``"k_sweep"``), each a function of
            the figure title; they are drawn in the worker next to the views.
    """

    real: torch.Tensor
    fake: torch.Tensor
    details: PRDCResult
    real_labels: Optional[torch.Tensor] = None
    fake_labels: Optional[torch.Tensor] = None
    extra: dict[str, Callable[[str], Figure]] = dataclasses.field(default_factory=dict)


def figure_inputs(result: Evaluation) -> FigureInputs:
    """The figures' inputs of a computed run (``result.status == "ok"``), on the CPU."""
    if result.real is None or result.fake is None or result.details is None:
        raise ValueError(f"a run with status {result.status!r} has no figures to draw")
    extra: dict[str, Callable[[str], Figure]] = {}
    if result.sweep is not None:
        from lightning_embviz.figures.plots import k_sweep_figure

        extra["k_sweep"] = functools.partial(_titled, k_sweep_figure, result.sweep)
    extra.update(result.figures)
    return FigureInputs(
        real=result.real.features.detach().cpu(),
        fake=result.fake.features.detach().cpu(),
        details=details_on_cpu(result.details),
        real_labels=None if result.real.labels is None else result.real.labels.cpu(),
        fake_labels=None if result.fake.labels is None else result.fake.labels.cpu(),
        extra=extra,
    )


def _titled(draw: Callable[..., Figure], data: Any, title: str) -> Figure:
    return draw(data, title=title)


def details_on_cpu(details: Any) -> Any:
    """A copy of a dataclass of per-sample tensors with every tensor on the CPU."""
    moved = {
        f.name: getattr(details, f.name).cpu()
        for f in dataclasses.fields(details)
        if isinstance(getattr(details, f.name), torch.Tensor)
    }
    return dataclasses.replace(details, **moved)


class RunEvaluator:
    """The evaluation seam of the callback: gathered sets and configuration in, scalars out.

    One object per callback. :attr:`keys` are every scalar key it logs, in order (the
    callback logs them on every rank, NaN where a run is not computed); calling it
    evaluates one dataloader's run with :func:`evaluate` and keeps each dataloader's fitted
    real set for the next run. The :class:`Evaluation` it returns carries the scalars
    (``metrics``, exactly :attr:`keys`) and, through :func:`figure_inputs`, what to draw.

    Args:
        config: The callback's checked arguments (``nearest_ks``, ``max_samples``, ``seed``,
            ``confidence`` are read).
    """

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        extras = getattr(config, "extra_metrics", ())
        self._extras = (
            ExtraMetrics(extras, config.nearest_k, config.seed, tables=config.log_samples)
            if extras
            else None
        )
        self.keys = metric_keys(config.nearest_ks, config.confidence is not None)
        self.keys += self._extras.keys if self._extras is not None else ()
        # With embedder= and train_images= alone, the training side is fitted in `prepare`.
        self._memorization = memorization_pass(config) or embedded_train_pass(config)
        self.keys += self._memorization.keys if self._memorization is not None else ()
        # Rank 0's fitted real set per dataloader, reused while the real rows do not change.
        # Not checkpointed: refitting after a resume costs a third of one run's distance
        # work, while saving it would put the whole real set into every checkpoint.
        self._references: dict[int, RealReference] = {}
        # The Fréchet real side fitted on the same rows, kept and refitted with it.
        self._frechets: dict[int, FrechetReference] = {}

    def prepare(self, device: Any) -> Optional[str]:
        """Before a measured run, on every rank: fit what is fitted once, late.

        With ``embedder=`` and ``train_images=`` (no ``train=``) the training images are
        embedded on ``device`` and fitted the first time (see
        :mod:`~lightning_embviz.callback.train_embedding`). Returns a failure's message (to
        warn once) or None; never raises.
        """
        prepare = getattr(self._memorization, "prepare", None)
        return None if prepare is None else prepare(device)

    def __call__(
        self,
        real: EmbeddingSet,
        fake: EmbeddingSet,
        *,
        dataloader_idx: int = 0,
        where: str = "",
        distributed: bool = False,
        intervals: bool = True,
    ) -> Evaluation:
        """Evaluate one run (see :func:`evaluate` for the arguments); never raises for data."""
        result = evaluate(
            real,
            fake,
            nearest_k=self.config.nearest_ks,
            max_samples=self.config.max_samples,
            seed=self.config.seed,
            where=where,
            reference=self._references.get(dataloader_idx),
            confidence=self.config.confidence,
            distributed=distributed,
            intervals=intervals,
            frechet=self._frechets.get(dataloader_idx),
        )
        if result.reference is not None:
            self._references[dataloader_idx] = result.reference
        if result.frechet is not None:
            self._frechets[dataloader_idx] = result.frechet
        else:
            self._frechets.pop(dataloader_idx, None)
        if self._extras is not None:
            # Rank 0 computes them (``intervals``), its values are broadcast with the others;
            # under DDP every rank takes part in the shared Vendi score (one all-reduce).
            values, notes = self._extras(
                result, dataloader_idx, where, lead=intervals, distributed=distributed
            )
            result.metrics.update(values)
            result.notes.extend(notes)
        if self._memorization is not None:
            # Under DDP every rank searches its share of the training set (collectives) and
            # gets the same values; rank 0's are broadcast with the others.
            result.metrics.update(dict.fromkeys(self._memorization.keys, math.nan))
            if intervals or distributed:
                self._memorization.add(result, where, distributed=distributed)
        return result

    def run(
        self,
        real: EmbeddingSet,
        fake: EmbeddingSet,
        *,
        dataloader_idx: int,
        where: str,
        rank_zero: bool,
        distributed: bool,
        device: torch.device,
    ) -> tuple[RunOutcome, Optional[Evaluation], list[tuple[Optional[str], str]]]:
        """One run on this rank: what every rank logs, rank 0's evaluation, notes to warn.

        Under DDP every rank holds the gathered rows and computes a share of the distance
        work (identical results on every rank); rank 0 alone warns, draws and adds the
        confidence intervals, and its outcome is broadcast (a collective: every rank calls
        this). Without DDP, only rank 0 computes.

        Returns:
            ``(outcome, evaluation, notes)``: the evaluation on rank 0 only (None
            elsewhere); the notes' once-ids end in ``-<dataloader_idx>``.
        """
        result: Optional[Evaluation] = None
        notes: list[tuple[Optional[str], str]] = []
        if rank_zero or distributed:
            result = self(
                real,
                fake,
                dataloader_idx=dataloader_idx,
                where=where,
                distributed=distributed,
                intervals=rank_zero,
            )
        if result is not None and rank_zero:
            notes = [
                (None if once is None else f"{once}-{dataloader_idx}", message)
                for once, message in result.notes
            ]
        elif result is not None:
            if result.status == FAILED and result.notes:
                # A failed shared computation ends the same way on every rank: each says so.
                notes = [(None, result.notes[-1][1])]
            result = None  # only rank 0 draws
        outcome = RunOutcome.of(result, self.keys)
        if distributed:
            outcome = outcome.broadcast(device)
        return outcome, result, notes


@dataclasses.dataclass(frozen=True)
class RunOutcome:
    """What every rank logs for one run: whether it was computed, and the scalars.

    Attributes:
        computed: Whether the metrics were computed (``status == "ok"`` on rank 0).
        metrics: Every key of :attr:`RunEvaluator.keys`, NaN where not computed.
    """

    computed: bool
    metrics: dict[str, float]

    @classmethod
    def of(cls, result: Optional[Evaluation], keys: Sequence[str]) -> RunOutcome:
        """Rank 0's outcome from its evaluation; NaN and not computed for ``None``."""
        if result is None:
            return cls(False, dict.fromkeys(keys, math.nan))
        return cls(result.status == OK, {key: result.metrics[key] for key in keys})

    def broadcast(self, device: torch.device) -> RunOutcome:
        """Rank 0's outcome on every rank (a collective: every rank must call it)."""
        where = collective_device(device)
        status = torch.tensor([int(self.computed)], dtype=torch.int64, device=where)
        values = torch.tensor(list(self.metrics.values()), dtype=torch.float64, device=where)
        torch.distributed.broadcast(status, src=0)
        torch.distributed.broadcast(values, src=0)
        shared = [float(v) for v in values.cpu()]
        return RunOutcome(bool(status.item()), dict(zip(self.metrics, shared)))
