"""One validation run's evaluation: finalize the gathered rows, drop bad rows, compute.

The policy lives here, not in the callback: the uniform sample cap is applied, rows holding
NaN or Inf are dropped (the only finiteness check of a run), a run with too few usable rows is
skipped, and PRDC and the Fréchet distance are computed. Nothing here raises for bad *data*:
problems come back as :class:`Evaluation` notes that the callback turns into warnings, so a
training run never dies of its validation data. No Lightning here.
"""

from __future__ import annotations

import dataclasses
import math
import traceback
from typing import Optional

import torch

from lightning_embviz._arrays import METRIC_KEYS
from lightning_embviz._buffer import EmbeddingSet, finalize_set
from lightning_embviz.metrics import PRDCResult, compute_prdc_details, frechet_distance

__all__ = ["Evaluation", "evaluate"]

OK, SKIPPED, FAILED = "ok", "skipped", "failed"


@dataclasses.dataclass
class Evaluation:
    """The outcome of one validation run for one dataloader.

    Attributes:
        status: ``"ok"``, ``"skipped"`` (too few usable rows) or ``"failed"`` (an error).
        metrics: Every key of :data:`METRIC_KEYS`; NaN unless ``status == "ok"``.
        details: Per-sample results (``status == "ok"`` only).
        real: The rows the metrics were computed on (after cap and finiteness check).
        fake: Same for the fake set.
        notes: ``(once_id, message)`` pairs to warn about; ``once_id`` None warns every time.
    """

    status: str
    metrics: dict[str, float]
    details: Optional[PRDCResult] = None
    real: Optional[EmbeddingSet] = None
    fake: Optional[EmbeddingSet] = None
    notes: list[tuple[Optional[str], str]] = dataclasses.field(default_factory=list)


def _nan_metrics() -> dict[str, float]:
    return dict.fromkeys(METRIC_KEYS, math.nan)


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
    nearest_k: int,
    max_samples: Optional[int],
    seed: int = 0,
    where: str = "",
) -> Evaluation:
    """Evaluate one validation run (gathered rows of every rank, any order).

    Args:
        real: Real rows (unsorted, possibly with repeated keys).
        fake: Fake rows.
        nearest_k: k of the k-NN balls.
        max_samples: The uniform cap per set, or None.
        seed: Seed of the cap's hash.
        where: ``" of validation dataloader 1"`` or ``""``, for messages.

    Returns:
        An :class:`Evaluation`; never raises for bad data or a failing computation.
    """
    notes: list[tuple[Optional[str], str]] = []
    real = finalize_set(real, dedupe=True, max_samples=max_samples, seed=seed)
    fake = finalize_set(fake, dedupe=True, max_samples=max_samples, seed=seed)
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
    need = nearest_k + 1
    if len(real) < need or len(fake) < need:
        notes.append(
            (
                None,
                f"EmbeddingMonitor: skipped the metrics{where}: {len(real)} real and {len(fake)} "
                f"fake usable rows, but nearest_k={nearest_k} needs at least {need} of "
                "each; logged NaN. Validate on more samples or lower `nearest_k`.",
            )
        )
        return Evaluation(SKIPPED, _nan_metrics(), None, real, fake, notes)
    try:
        details = compute_prdc_details(real.features, fake.features, nearest_k)
        metrics = details.as_dict()
        metrics["fd"] = frechet_distance(real.features, fake.features)
    except Exception as err:  # a failure must not end a long training run
        notes.append(
            (
                None,
                f"EmbeddingMonitor: computing the metrics{where} failed; logged NaN for this "
                "run. " + "".join(traceback.format_exception(type(err), err, err.__traceback__)),
            )
        )
        return Evaluation(FAILED, _nan_metrics(), None, real, fake, notes)
    return Evaluation(OK, metrics, details, real, fake, notes)
