"""What the callback needs to know about Lightning, in one place.

- :class:`CallbackBase`: one base class that passes the ``isinstance(callback, Callback)``
  checks of both the ``pytorch_lightning`` and the ``lightning.pytorch`` Trainers.
- Small readers of Trainer state (fitting? sanity check? distributed?), each tolerant of the
  attributes that differ between releases.
- The step and epoch helpers, and the **only** code in the package that reads or writes a
  private Trainer field (``fit_loop.epoch_loop._batches_that_stepped``), each access with a
  fallback so that a future Lightning release degrades instead of failing.

Why the private field: Lightning logs every epoch-level validation metric at the fit loop's
count of batches that stepped the optimizers. That count differs from ``global_step`` with
several optimizers (manual optimization: two optimizer steps per batch) and lags it by one at
the end of an epoch (validation runs before the count is increased). To put figures at the
step of the scalars, and ``trainer.validate(ckpt_path=...)`` at the step where the training run
logged that checkpoint's validation, we need that count; it is saved in every checkpoint under
``loops.fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import pytorch_lightning as _pl
import torch
from typing_extensions import override

try:  # the unified `lightning` package is optional
    from lightning.pytorch import Callback as _LightningCallback
except ImportError:  # pragma: no cover - exercised only without `lightning`

    class _LightningCallback:  # type: ignore[no-redef]
        """Stand-in base when the ``lightning`` package is not installed."""


__all__ = [
    "CallbackBase",
    "CheckpointPosition",
    "checkpoint_position",
    "flatten_dataloaders",
    "is_distributed",
    "is_fitting",
    "is_sanity_checking",
    "loop_step",
    "move_to_checkpoint",
    "override",
    "restore_position",
    "set_current_epoch",
    "set_loop_step",
    "warn",
]


class CallbackBase(_pl.Callback, _LightningCallback):  # type: ignore[misc]
    """A Callback for both namespaces (``pytorch_lightning`` and ``lightning.pytorch``).

    Both Trainers check ``isinstance(callback, Callback)`` against their own class; one object
    derived from both passes both checks. Subclasses only use hooks the two share.
    """


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Warn from the callback (callers warn on global rank 0, or about their own rank's data)."""
    warnings.warn(message, category, stacklevel=3)


def is_fitting(trainer: Any) -> bool:
    """Whether the Trainer runs ``fit`` (not ``validate``/``test``/``predict``)."""
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return str(getattr(fn, "value", fn)) == "fit"


def is_sanity_checking(trainer: Any) -> bool:
    """Whether this validation run is Lightning's sanity check."""
    return bool(getattr(trainer, "sanity_checking", False))


def is_distributed(trainer: Any) -> bool:
    """Whether the Trainer runs several processes with an initialised process group."""
    if int(getattr(trainer, "world_size", 1)) <= 1:
        return False
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def flatten_dataloaders(loaders: Any) -> list[Any]:
    """``trainer.val_dataloaders`` (one loader, a list, or a dict) as a list."""
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


def loop_step(trainer: Any) -> int:
    """The step at which Lightning logs epoch-level validation metrics right now.

    The fit loop's count of batches that stepped the optimizers (private); it equals
    ``trainer.global_step`` with one optimizer and automatic optimization, apart from the
    end of an epoch. Fallback: ``trainer.global_step``.
    """
    try:
        return int(trainer.fit_loop.epoch_loop._batches_that_stepped)
    except (AttributeError, TypeError, ValueError):  # pragma: no cover - a future release
        return int(getattr(trainer, "global_step", 0))


def set_loop_step(trainer: Any, step: int) -> Optional[int]:
    """Make Lightning log the next epoch-level metrics at ``step``; return the old value.

    Used under ``trainer.validate(ckpt_path=...)`` only (the fit loop does not run there), and
    undone at the end of the run. Returns ``None`` (and changes nothing) when the private
    field does not exist in this Lightning release.
    """
    epoch_loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    old = getattr(epoch_loop, "_batches_that_stepped", None)
    if epoch_loop is None or not isinstance(old, (int, np.integer)):
        return None
    epoch_loop._batches_that_stepped = int(step)
    return int(old)


def set_current_epoch(trainer: Any, epoch: int) -> Optional[int]:
    """Make ``trainer.current_epoch`` read ``epoch``; return the old value (None: unchanged).

    ``current_epoch`` is the fit loop's count of completed epochs; Lightning adds it as the
    ``epoch`` scalar of every epoch-level log. Used under ``trainer.validate(ckpt_path=...)``
    so that this scalar (and titles) name the checkpoint's epoch, and undone afterwards.
    """
    current = getattr(
        getattr(getattr(trainer, "fit_loop", None), "epoch_progress", None), "current", None
    )
    old = getattr(current, "completed", None)
    if current is None or not isinstance(old, (int, np.integer)):
        return None
    current.completed = int(epoch)
    return int(old)


def move_to_checkpoint(
    trainer: Any, position: CheckpointPosition
) -> tuple[Optional[int], Optional[int]]:
    """Make this run log at ``position``'s step (and epoch); return the old ``(step, epoch)``.

    For ``trainer.validate(ckpt_path=...)``; :func:`restore_position` undoes it. A value
    that could not be changed (or that ``position`` lacks) comes back as None.
    """
    old_step = None if position.step is None else set_loop_step(trainer, position.step)
    old_epoch = None if position.epoch is None else set_current_epoch(trainer, position.epoch)
    return old_step, old_epoch


def restore_position(trainer: Any, saved: tuple[Optional[int], Optional[int]]) -> None:
    """Undo :func:`move_to_checkpoint` with the ``(step, epoch)`` it returned."""
    step, epoch = saved
    if step is not None:
        set_loop_step(trainer, step)
    if epoch is not None:
        set_current_epoch(trainer, epoch)


class CheckpointPosition:
    """Where a checkpoint sits in its training run: its epoch and the step of its validation.

    Attributes:
        epoch: The epoch the checkpoint was saved in (``checkpoint["epoch"]``), or None.
        step: The step at which the training run logged the validation that this checkpoint
            belongs to (the saved loop count); the checkpoint's ``global_step`` when it has
            no loop state; None if it has neither.
        from_loop: Whether ``step`` came from the saved loop state (not the fallback).
    """

    def __init__(self, epoch: Optional[int], step: Optional[int], from_loop: bool) -> None:
        self.epoch = epoch
        self.step = step
        self.from_loop = from_loop

    def __repr__(self) -> str:
        return (
            f"CheckpointPosition(epoch={self.epoch}, step={self.step}, from_loop={self.from_loop})"
        )


def _as_int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        return int(value.item())
    return None


def checkpoint_position(checkpoint: Mapping[str, Any]) -> CheckpointPosition:
    """Read a checkpoint's epoch and validation step (see :class:`CheckpointPosition`).

    The loop state is read from ``checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]``
    (``_batches_that_stepped``), where Lightning saves it, corrected by one when the checkpoint
    was saved at the end of a training epoch (``epoch_progress`` says so). A checkpoint without
    loop state (saved with ``weights_only=True``, or by a release that stores it elsewhere)
    falls back to its ``global_step``.
    """
    epoch = _as_int(checkpoint.get("epoch"))
    loops = checkpoint.get("loops")
    fit_loop = loops.get("fit_loop") if isinstance(loops, Mapping) else None
    step: Optional[int] = None
    if isinstance(fit_loop, Mapping):
        epoch_loop = fit_loop.get("epoch_loop.state_dict")
        if isinstance(epoch_loop, Mapping):
            step = _as_int(epoch_loop.get("_batches_that_stepped"))
    if step is not None:
        # Saved at the end of a training epoch (ModelCheckpoint's default when validation runs
        # once per epoch): the count was already increased after the last batch, whose
        # validation Lightning logged one step earlier. Saved in `on_validation_end`, the
        # epoch is not yet processed and the count is the validation's step.
        progress = fit_loop.get("epoch_progress") if isinstance(fit_loop, Mapping) else None
        current = progress.get("current") if isinstance(progress, Mapping) else None
        if isinstance(current, Mapping):
            ready, processed = _as_int(current.get("ready")), _as_int(current.get("processed"))
            if ready is not None and ready == processed and step > 0:
                step -= 1
        return CheckpointPosition(epoch, step, from_loop=True)
    return CheckpointPosition(epoch, _as_int(checkpoint.get("global_step")), from_loop=False)
