"""``EmbeddingMonitor``: the Lightning callback. The only module that knows Lightning hooks.

Data flow: validation hooks -> :mod:`lightning_embviz._buffer` (per-rank, bounded) -> gather
across ranks -> :func:`~lightning_embviz.metrics.compute_prdc_details` and
:func:`~lightning_embviz.metrics.frechet_distance` on rank 0 -> broadcast -> ``pl_module.log``
on every rank; figures from :class:`~lightning_embviz.views.ViewBuilder` (optionally in a
background thread) -> :func:`~lightning_embviz.loggers.log_figures` on rank 0.

The class derives from both ``pytorch_lightning.Callback`` and, when the ``lightning``
package is installed, ``lightning.pytorch.Callback``: both Trainers check
``isinstance(callback, Callback)`` against their own class, and one object passes both checks,
so the same ``EmbeddingMonitor`` works with ``import pytorch_lightning as pl`` and with
``import lightning.pytorch as pl``. All hooks only use what the two namespaces share.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional

import numpy as np
import pytorch_lightning as _pl
import torch
from torch import Tensor

from lightning_embviz._buffer import (
    EmbeddingBuffer,
    EmbeddingSet,
    collective_device,
    finalize_set,
    gather_embeddings,
)
from lightning_embviz.metrics import PRDCResult, compute_prdc_details, frechet_distance

try:  # the unified `lightning` package is optional
    from lightning.pytorch import Callback as _LightningCallback
except ImportError:  # pragma: no cover - exercised only without `lightning`

    class _LightningCallback:  # type: ignore[no-redef]
        """Stand-in base when the ``lightning`` package is not installed."""


__all__ = ["EmbeddingMonitor"]

METRIC_NAMES = ("precision", "recall", "density", "coverage", "fd")

_STATE_VERSION = 1
_OK, _SKIP, _ERROR = 1.0, 0.0, -1.0


def _warn(message: str, category: type[Warning] = UserWarning) -> None:
    # Callers only warn on global rank 0 (or about their own rank's data), so a plain
    # warnings.warn is what rank_zero_warn would do, without tying us to one namespace.
    warnings.warn(message, category, stacklevel=3)


def _lower_priority() -> None:
    """Run the figure worker at a lower CPU priority than the training thread (Linux)."""
    # On Linux the nice value belongs to the thread: this lowers the worker only.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19))


def _is_fitting(trainer: Any) -> bool:
    fn = getattr(getattr(trainer, "state", None), "fn", None)
    return str(getattr(fn, "value", fn)) == "fit"


def _loop_step(trainer: Any) -> int:
    """The step Lightning logs epoch-end metrics at (so figures line up with the scalars).

    Lightning's logger connector uses the fit loop's count of batches that stepped the
    optimizers; it equals ``trainer.global_step`` with one optimizer and automatic
    optimization. Private attribute: wrapped here with ``global_step`` as fallback.
    """
    try:
        return int(trainer.fit_loop.epoch_loop._batches_that_stepped)
    except AttributeError:  # pragma: no cover - a future Lightning release
        return int(trainer.global_step)


def _checkpoint_step(checkpoint: Mapping[str, Any]) -> Optional[int]:
    """The checkpoint's ``global_step`` (the ``{step}`` of its file name), if it has one."""
    step = checkpoint.get("global_step")
    return int(step) if isinstance(step, (int, np.integer)) else None


def _distributed(trainer: Any) -> bool:
    if getattr(trainer, "world_size", 1) <= 1:
        return False
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _flatten_dataloaders(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


@dataclasses.dataclass
class _SamplerInfo:
    """How a rank's rows map to positions in the global sampler stream."""

    num_replicas: int
    rank: int
    dataset_len: int
    num_samples: int
    batch_size: Optional[int]
    pads: bool


@dataclasses.dataclass
class _Pending:
    future: Future
    step: int
    rename: dict[str, str]


class _EmbeddingMonitorImpl:
    """The implementation; :class:`EmbeddingMonitor` adds the Lightning base classes."""

    def __init__(
        self,
        nearest_k: int = 5,
        *,
        real_key: str = "real",
        fake_key: str = "fake",
        labels_key: str = "labels",
        index_key: str = "index",
        embed: Optional[Callable[[Any, Any], Mapping[str, Any]]] = None,
        prefix: str = "embviz/",
        every_n_epochs: int = 1,
        max_samples: Optional[int] = 10000,
        views: Optional[Sequence[str]] = ("pca", "tsne"),
        view_max_samples: Optional[int] = None,
        background: bool = True,
        log_projector: bool = False,
        keep_on_device: bool = False,
        seed: int = 0,
    ) -> None:
        def bad(arg: str, value: Any, expected: str, error: type[Exception] = ValueError) -> None:
            raise error(f"`EmbeddingMonitor({arg}={value!r})` is not valid. Expected {expected}.")

        def is_int(value: Any) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        if not is_int(nearest_k):
            bad("nearest_k", nearest_k, "an int >= 1", TypeError)
        if nearest_k < 1:
            bad("nearest_k", nearest_k, "an int >= 1")
        keys = {
            "real_key": real_key,
            "fake_key": fake_key,
            "labels_key": labels_key,
            "index_key": index_key,
        }
        for arg, value in keys.items():
            if not isinstance(value, str):
                bad(arg, value, "a string naming a key of the validation outputs", TypeError)
            if not value:
                bad(arg, value, "a non-empty string")
        if len(set(keys.values())) != len(keys):
            raise ValueError(
                "`EmbeddingMonitor(real_key=..., fake_key=..., labels_key=..., index_key=...)` "
                f"must name four different keys, got {keys}."
            )
        if embed is not None and not callable(embed):
            bad("embed", embed, "None or a callable `embed(pl_module, batch) -> dict`", TypeError)
        if not isinstance(prefix, str):
            bad("prefix", prefix, 'a string such as "embviz/"', TypeError)
        if not is_int(every_n_epochs):
            bad("every_n_epochs", every_n_epochs, "an int >= 1", TypeError)
        if every_n_epochs < 1:
            bad("every_n_epochs", every_n_epochs, "an int >= 1")
        if max_samples is not None:
            if not is_int(max_samples):
                bad(
                    "max_samples", max_samples, f"None or an int > nearest_k={nearest_k}", TypeError
                )
            if max_samples <= nearest_k:
                bad("max_samples", max_samples, f"None or an int > nearest_k={nearest_k}")
        if view_max_samples is not None and (not is_int(view_max_samples) or view_max_samples < 10):
            bad("view_max_samples", view_max_samples, "None or an int >= 10")
        for arg, flag in (
            ("background", background),
            ("log_projector", log_projector),
            ("keep_on_device", keep_on_device),
        ):
            if not isinstance(flag, bool):
                bad(arg, flag, "True or False", TypeError)
        if not is_int(seed):
            bad("seed", seed, "an int >= 0", TypeError)
        if seed < 0:
            bad("seed", seed, "an int >= 0")
        if views is None:
            views = ()
        if isinstance(views, str):
            bad("views", views, f"a sequence of view names, e.g. ({views!r},)", TypeError)
        if not isinstance(views, Sequence) or not all(isinstance(v, str) for v in views):
            bad(
                "views",
                views,
                'None or a sequence of view names such as ("pca", "tsne")',
                TypeError,
            )

        self.nearest_k = int(nearest_k)
        self.real_key = real_key
        self.fake_key = fake_key
        self.labels_key = labels_key
        self.index_key = index_key
        self.embed = embed
        self.prefix = prefix
        self.every_n_epochs = int(every_n_epochs)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.views = tuple(views)
        self.view_max_samples = view_max_samples
        self.background = background
        self.log_projector = log_projector
        self.keep_on_device = keep_on_device
        self.seed = int(seed)

        # Build one ViewBuilder now, so that a bad view name or a missing optional
        # dependency fails at construction, not after the first epoch.
        self._view_builders: dict[int, Any] = {}
        # Last known state of each builder. The worker refreshes it after each build, so
        # that `state_dict()` (a checkpoint save right after validation) never waits for
        # the builder's lock while a projection is being fitted.
        self._view_states: dict[int, dict[str, Any]] = {}
        if self.views:
            try:
                self._view_builder(0)
            except ValueError as err:
                raise ValueError(
                    f"`EmbeddingMonitor(views={views!r})` is not valid: {err}"
                ) from err

        self._runs = 0  # validation runs with logged metrics
        self._last_step = -1
        self._reset_run_state()
        self._ckpt_step: Optional[int] = None
        self._executor: Optional[ThreadPoolExecutor] = None
        self._pending: list[_Pending] = []
        self._warned: set[str] = set()

    # ------------------------------------------------------------------ configuration

    def _new_view_builder(self) -> Any:
        from lightning_embviz.views import ViewBuilder

        kwargs: dict[str, Any] = {"methods": self.views, "seed": self.seed}
        if self.view_max_samples is not None:
            kwargs["max_samples"] = self.view_max_samples
        return ViewBuilder(**kwargs)

    def _view_builder(self, dataloader_idx: int) -> Any:
        if dataloader_idx not in self._view_builders:
            builder = self._new_view_builder()
            self._view_builders[dataloader_idx] = builder
            self._view_states[dataloader_idx] = builder.state_dict()
        return self._view_builders[dataloader_idx]

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint; differs when the arguments differ."""
        return self._generate_state_key(  # type: ignore[attr-defined]
            nearest_k=self.nearest_k,
            prefix=self.prefix,
            real_key=self.real_key,
            fake_key=self.fake_key,
        )

    def _reset_run_state(self) -> None:
        self._collecting = False
        self._buffers: dict[int, EmbeddingBuffer] = {}
        self._seen: dict[tuple[int, str], int] = {}
        self._sampler_info: dict[int, Optional[_SamplerInfo]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # `ddp_spawn` pickles the Trainer with its callbacks: leave out threads and futures,
        # and carry the view builders (which hold a lock) as their plain state.
        state = self.__dict__.copy()
        state["_executor"] = None
        state["_pending"] = []
        state["_view_builders"] = dict(self._view_states)
        del state["_view_states"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        views = state.pop("_view_builders", {})
        self.__dict__.update(state)
        self._view_builders = {}
        self._view_states = {}
        for idx, view_state in views.items():
            self._view_builder(idx).load_state_dict(view_state)
            self._view_states[idx] = view_state

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            _warn(message)

    # ------------------------------------------------------------------ collecting

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Decide whether this validation run is measured and reset the buffers."""
        self._reset_run_state()
        if getattr(trainer, "sanity_checking", False):
            return
        if _is_fitting(trainer) and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        self._collecting = True

    def on_validation_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Collect the batch's real and fake embeddings (detached, flattened, capped)."""
        if not self._collecting:
            return
        buffer = self._buffers.get(dataloader_idx)
        if buffer is None:
            buffer = self._buffers[dataloader_idx] = EmbeddingBuffer(self.max_samples)
        if buffer.full:
            return
        where = f"dataloader {dataloader_idx}, batch {batch_idx}"
        if self.embed is not None:
            with torch.no_grad():
                outputs = self.embed(pl_module, batch)
            source = "`embed(pl_module, batch)`"
        else:
            source = "`validation_step`"
        if outputs is None:
            raise ValueError(
                f"EmbeddingMonitor: {source} returned None ({where}). Expected a dict with keys "
                f"{self.real_key!r} and {self.fake_key!r} holding (B, D) tensors (optionally "
                f"{self.labels_key!r}), or pass `EmbeddingMonitor(embed=...)`."
            )
        if not isinstance(outputs, Mapping):
            raise TypeError(
                f"EmbeddingMonitor: {source} returned a {type(outputs).__name__} ({where}). "
                f"Expected a dict with keys {self.real_key!r} and {self.fake_key!r}."
            )
        missing = [k for k in (self.real_key, self.fake_key) if k not in outputs]
        if missing:
            raise ValueError(
                f"EmbeddingMonitor: {source} returned a dict with keys {sorted(map(str, outputs))} "
                f"({where}); missing {missing}. Expected keys {self.real_key!r} and "
                f"{self.fake_key!r} (set `EmbeddingMonitor(real_key=..., fake_key=...)` to use "
                "other names)."
            )
        real = self._features(outputs[self.real_key], self.real_key, where)
        fake = self._features(outputs[self.fake_key], self.fake_key, where)
        if real.shape[1] != fake.shape[1]:
            raise ValueError(
                f"EmbeddingMonitor: {self.real_key!r} and {self.fake_key!r} must have the same "
                f"width D after flattening, got shapes {tuple(real.shape)} and "
                f"{tuple(fake.shape)} ({where})."
            )
        real_labels, fake_labels = self._labels(outputs.get(self.labels_key), real, fake, where)
        real_keys, real_keep, fake_keys, fake_keep = self._row_keys(
            trainer, outputs.get(self.index_key), len(real), len(fake), batch_idx, dataloader_idx
        )
        # keys and masks live with the features (the accelerator with keep_on_device)
        real_keys, fake_keys = real_keys.to(real.device), fake_keys.to(fake.device)
        if real_keep is not None:
            real_keep = real_keep.to(real.device)
            real, real_keys = real[real_keep], real_keys[real_keep]
            real_labels = None if real_labels is None else real_labels[real_keep]
        if fake_keep is not None:
            fake_keep = fake_keep.to(fake.device)
            fake, fake_keys = fake[fake_keep], fake_keys[fake_keep]
            fake_labels = None if fake_labels is None else fake_labels[fake_keep]
        buffer.add(
            real,
            fake,
            real_keys=real_keys,
            fake_keys=fake_keys,
            real_labels=real_labels,
            fake_labels=fake_labels,
        )

    def _features(self, value: Any, key: str, where: str) -> Tensor:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(value)
        if not isinstance(value, Tensor):
            raise TypeError(
                f"EmbeddingMonitor: {key!r} must be a tensor of shape (B, D) or (B, ...), got "
                f"{type(value).__name__} ({where})."
            )
        if value.ndim < 2:
            raise ValueError(
                f"EmbeddingMonitor: {key!r} must have shape (B, D) or (B, ...), got shape "
                f"{tuple(value.shape)} ({where})."
            )
        x = value.detach().reshape(value.shape[0], math.prod(value.shape[1:]))
        if x.dtype != torch.float64:
            x = x.to(torch.float32)
        if not self.keep_on_device:
            x = x.cpu()
        return x

    def _labels(
        self, value: Any, real: Tensor, fake: Tensor, where: str
    ) -> tuple[Optional[Tensor], Optional[Tensor]]:
        if value is None:
            return None, None
        if isinstance(value, Mapping):
            parts = {"real": value.get("real"), "fake": value.get("fake")}
        else:
            parts = {"real": value, "fake": None}
        out: dict[str, Optional[Tensor]] = {}
        for name, rows in (("real", real), ("fake", fake)):
            labels = parts[name]
            if labels is None:
                out[name] = None
                continue
            t = torch.as_tensor(labels).detach().reshape(-1).to(device=rows.device)
            if t.shape[0] != rows.shape[0]:
                raise ValueError(
                    f"EmbeddingMonitor: {self.labels_key!r} for the {name} rows has "
                    f"{t.shape[0]} entries but there are {rows.shape[0]} {name} rows ({where})."
                )
            out[name] = t.to(torch.int64)
        return out["real"], out["fake"]

    def _sampler(self, trainer: Any, dataloader_idx: int) -> Optional[_SamplerInfo]:
        if dataloader_idx in self._sampler_info:
            return self._sampler_info[dataloader_idx]
        info = None
        loaders = _flatten_dataloaders(getattr(trainer, "val_dataloaders", None))
        loader = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
            dataset_len = len(sampler.dataset)  # type: ignore[arg-type]
            info = _SamplerInfo(
                num_replicas=int(sampler.num_replicas),
                rank=int(sampler.rank),
                dataset_len=dataset_len,
                num_samples=int(sampler.num_samples),
                batch_size=getattr(loader, "batch_size", None),
                pads=not sampler.drop_last and sampler.total_size > dataset_len,
            )
        self._sampler_info[dataloader_idx] = info
        return info

    def _row_keys(
        self,
        trainer: Any,
        index: Any,
        n_real: int,
        n_fake: int,
        batch_idx: int,
        dataloader_idx: int,
    ) -> tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
        """Keys (global sample positions or user indices) and keep-masks for one batch."""
        start_real = self._seen.get((dataloader_idx, "real"), 0)
        start_fake = self._seen.get((dataloader_idx, "fake"), 0)
        self._seen[(dataloader_idx, "real")] = start_real + n_real
        self._seen[(dataloader_idx, "fake")] = start_fake + n_fake
        world = int(getattr(trainer, "world_size", 1))
        rank = int(getattr(trainer, "global_rank", 0))

        if index is not None:
            keys = torch.as_tensor(index).detach().reshape(-1).to(torch.int64).cpu()
            if keys.shape[0] != n_real:
                raise ValueError(
                    f"EmbeddingMonitor: {self.index_key!r} has {keys.shape[0]} entries but there "
                    f"are {n_real} real rows (dataloader {dataloader_idx}, batch {batch_idx})."
                )
            if n_fake == n_real:
                return keys, None, keys.clone(), None
            fake_keys = rank + (start_fake + torch.arange(n_fake)) * world
            return keys, None, fake_keys, None

        if world <= 1:
            return (
                start_real + torch.arange(n_real),
                None,
                start_fake + torch.arange(n_fake),
                None,
            )

        info = self._sampler(trainer, dataloader_idx)
        fallback_real = rank + (start_real + torch.arange(n_real)) * world
        fallback_fake = rank + (start_fake + torch.arange(n_fake)) * world
        if info is None:
            self._warn_once(
                f"no-sampler-{dataloader_idx}",
                f"EmbeddingMonitor: validation dataloader {dataloader_idx} has no "
                "DistributedSampler, so the callback cannot tell whether some samples were "
                "repeated to even out the ranks; repeated samples would change the k-NN radii "
                f"and every metric. Return the dataset index of each sample under "
                f"{self.index_key!r} to have duplicates removed.",
            )
            return fallback_real, None, fallback_fake, None

        first = batch_idx * info.batch_size if info.batch_size else start_real
        expected = n_real
        if info.batch_size:
            expected = max(0, min(info.batch_size, info.num_samples - first))
        if n_real != expected:
            if info.pads:
                self._warn_once(
                    f"rows-{dataloader_idx}",
                    f"EmbeddingMonitor: batch {batch_idx} of validation dataloader "
                    f"{dataloader_idx} gave {n_real} real rows, the sampler {expected}; the "
                    "callback cannot tell which rows the DistributedSampler repeated to even "
                    "out the ranks, so duplicates may be counted. Return the dataset index of "
                    f"each sample under {self.index_key!r} to have them removed.",
                )
            return fallback_real, None, fallback_fake, None
        positions = info.rank + (first + torch.arange(n_real)) * info.num_replicas
        keep = positions < info.dataset_len if info.pads else None
        if n_fake == n_real:
            return positions, keep, positions.clone(), keep
        if info.pads:
            self._warn_once(
                f"fake-rows-{dataloader_idx}",
                f"EmbeddingMonitor: {self.fake_key!r} has a different number of rows than "
                f"{self.real_key!r} in dataloader {dataloader_idx}, so generated rows of the "
                "samples the DistributedSampler repeated cannot be dropped.",
            )
        return positions, keep, fallback_fake, None

    # ------------------------------------------------------------------ computing

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Gather, compute and log the metrics; start the figures."""
        self._poll(trainer, wait=False)
        if not self._collecting:
            return
        self._collecting = False
        try:
            counts = list(getattr(trainer, "num_val_batches", []) or [])
            n_loaders = max(len(counts), max(self._buffers, default=-1) + 1, 1)
            # Outside `fit`, Lightning logs epoch metrics at the fit loop's step (0 on a fresh
            # Trainer). Under `trainer.validate` the callback writes its scalars to the loggers
            # itself, at the checkpoint's step when one was loaded, so that several
            # checkpoints line up in TensorBoard.
            fitting = _is_fitting(trainer)
            step = _loop_step(trainer)
            if not fitting and self._ckpt_step is not None:
                step = self._ckpt_step
            logged = [
                self._finish_dataloader(trainer, pl_module, idx, n_loaders, step, fitting)
                for idx in range(n_loaders)
            ]
            if any(logged):
                self._runs += 1
                self._last_step = step
        finally:
            self._reset_run_state()

    def _finish_dataloader(
        self,
        trainer: Any,
        pl_module: Any,
        idx: int,
        n_loaders: int,
        step: int,
        fitting: bool,
    ) -> bool:
        buffer = self._buffers.get(idx) or EmbeddingBuffer(self.max_samples)
        device = getattr(pl_module, "device", None) if self.keep_on_device else None
        device = torch.device(device) if device is not None else torch.device("cpu")
        real_local, fake_local = buffer.local_sets(device)
        distributed = _distributed(trainer)
        if distributed:
            real_all, fake_all = gather_embeddings(real_local, fake_local, out_device=device)
        else:
            real_all, fake_all = real_local, fake_local
        del buffer, real_local, fake_local
        self._buffers.pop(idx, None)

        suffix = f"/dataloader_idx_{idx}" if n_loaders > 1 else ""
        result: Optional[tuple[dict[str, float], PRDCResult, EmbeddingSet, EmbeddingSet]] = None
        error: Optional[BaseException] = None
        status = [_SKIP] + [math.nan] * len(METRIC_NAMES)
        if trainer.is_global_zero:
            try:
                result = self._compute(real_all, fake_all, idx, n_loaders)
            except Exception as err:  # reported on every rank below
                error = err
            if error is not None:
                status[0] = _ERROR
            elif result is not None:
                status = [_OK] + [result[0][name] for name in METRIC_NAMES]
        if distributed:
            status = self._broadcast(status, device)
        if error is not None:
            # A failure here must not end a long training run: report it with its traceback
            # and log NaN like a skipped run (rank 0 only holds the error; the others see
            # the status and log the same NaN values).
            _warn(
                "EmbeddingMonitor: computing the metrics failed; logged NaN for this run. "
                + "".join(traceback.format_exception(type(error), error, error.__traceback__))
            )
        # A skipped or failed run logs NaN, so that monitors find their key (ModelCheckpoint
        # ranks NaN last; EarlyStopping stops on it unless `check_finite=False`) and the
        # curves show the gap.
        metrics = dict(zip(METRIC_NAMES, status[1:]))
        keyed = {f"{self.prefix}{name}{suffix}": value for name, value in metrics.items()}
        for key, value in keyed.items():
            pl_module.log(
                key,
                value,
                on_step=False,
                on_epoch=True,
                prog_bar=False,
                logger=fitting and bool(trainer.loggers),
                # Every rank holds the same value: a "max" sync keeps it exact and tells
                # Lightning the value is synchronised.
                sync_dist=distributed,
                reduce_fx="max",
                add_dataloader_idx=False,
                batch_size=1,
            )
        if trainer.is_global_zero and not fitting:
            for logger in trainer.loggers:
                logger.log_metrics(keyed, step=step)
                logger.save()
        if trainer.is_global_zero and result is not None:
            _, details, real, fake = result
            self._emit_views(trainer, idx, n_loaders, step, details, real, fake, suffix)
        return status[0] == _OK

    def _compute(
        self, real: EmbeddingSet, fake: EmbeddingSet, idx: int, n_loaders: int
    ) -> Optional[tuple[dict[str, float], PRDCResult, EmbeddingSet, EmbeddingSet]]:
        where = f" of validation dataloader {idx}" if n_loaders > 1 else ""
        real = finalize_set(real, dedupe=True, max_samples=self.max_samples)
        fake = finalize_set(fake, dedupe=True, max_samples=self.max_samples)
        dropped = []
        for name, rows in (("real", real), ("fake", fake)):
            if len(rows) == 0:
                continue
            finite = torch.isfinite(rows.features).all(dim=1)
            bad = int((~finite).sum())
            if bad:
                dropped.append(f"{bad} of {len(rows)} {name} rows")
                if name == "real":
                    real = rows.select(finite)
                else:
                    fake = rows.select(finite)
        if dropped:
            _warn(
                f"EmbeddingMonitor: dropped {' and '.join(dropped)}{where} because they hold "
                "NaN or Inf values; the metrics use the remaining rows."
            )
        need = self.nearest_k + 1
        if len(real) < need or len(fake) < need:
            _warn(
                f"EmbeddingMonitor: skipped the metrics{where}: {len(real)} real and {len(fake)} "
                f"fake usable rows, but nearest_k={self.nearest_k} needs at least {need} of "
                "each. Validate on more samples or lower `nearest_k`."
            )
            return None
        details = compute_prdc_details(real.features, fake.features, self.nearest_k)
        metrics = details.as_dict()
        metrics["fd"] = frechet_distance(real.features, fake.features)
        return metrics, details, real, fake

    @staticmethod
    def _broadcast(values: list[float], device: torch.device) -> list[float]:
        comm = collective_device(device)
        t = torch.tensor(values, dtype=torch.float64, device=comm)
        torch.distributed.broadcast(t, src=0)
        return [float(v) for v in t.cpu()]

    # ------------------------------------------------------------------ figures

    def _emit_views(
        self,
        trainer: Any,
        idx: int,
        n_loaders: int,
        step: int,
        details: PRDCResult,
        real: EmbeddingSet,
        fake: EmbeddingSet,
        suffix: str,
    ) -> None:
        real_x = real.features.detach().cpu()
        fake_x = fake.features.detach().cpu()
        real_y = None if real.labels is None else real.labels.cpu()
        fake_y = None if fake.labels is None else fake.labels.cpu()
        if self.log_projector:
            from lightning_embviz.loggers import log_embedding_projector

            log_embedding_projector(
                trainer.loggers,
                real_x,
                fake_x,
                step,
                tag=f"{self.prefix}embeddings{suffix}",
                real_labels=real_y,
                fake_labels=fake_y,
            )
        if not self.views:
            return
        details_cpu = dataclasses.replace(
            details,
            real_radii=details.real_radii.cpu(),
            fake_radii=details.fake_radii.cpu(),
            real_covered=details.real_covered.cpu(),
            real_recalled=details.real_recalled.cpu(),
            fake_ball_count=details.fake_ball_count.cpu(),
        )
        title = f"epoch {trainer.current_epoch}, step {step}"
        if n_loaders > 1:
            title += f", dataloader {idx}"
        builder = self._view_builder(idx)
        job = _FigureJob(
            builder,
            real_x,
            fake_x,
            details_cpu,
            real_y,
            fake_y,
            title,
            render=self.background,
            on_state=functools.partial(self._view_states.__setitem__, idx),
        )
        rename = {"__suffix__": suffix}
        if self.background:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="embviz", initializer=_lower_priority
                )
            self._pending.append(_Pending(self._executor.submit(job), step, rename))
        else:
            done: Future = Future()
            try:
                done.set_result(job())
            except Exception as err:
                done.set_exception(err)
            self._pending.append(_Pending(done, step, rename))
            self._poll(trainer, wait=True)

    def _poll(self, trainer: Any, wait: bool) -> None:
        """Log the figures of finished jobs, oldest first (all of them when ``wait``)."""
        while self._pending and (wait or self._pending[0].future.done()):
            pending = self._pending.pop(0)
            try:
                figures = pending.future.result()
            except Exception as err:
                detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
                _warn(
                    f"EmbeddingMonitor: building the figures for step {pending.step} failed; "
                    f"the metrics were logged, the figures of that run are missing.\n{detail}",
                    RuntimeWarning,
                )
                continue
            from lightning_embviz.loggers import log_figures

            suffix = pending.rename["__suffix__"]
            named = {f"{self.prefix}{key}{suffix}": fig for key, fig in figures.items()}
            log_figures(
                trainer.loggers,
                named,
                pending.step,
                fallback_dir=getattr(trainer, "default_root_dir", None),
            )

    def _flush(self, trainer: Any) -> None:
        self._poll(trainer, wait=True)

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        """Log the figures that the background worker has finished."""
        if self._pending and self._pending[0].future.done():
            self._poll(trainer, wait=False)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Log the figures that the background worker has finished."""
        self._poll(trainer, wait=False)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Outside ``fit`` (``trainer.validate``), wait for this run's figures."""
        if not _is_fitting(trainer):
            self._flush(trainer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Wait for the background worker and log every remaining figure."""
        self._flush(trainer)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Log what is left and stop the worker thread."""
        try:
            self._flush(trainer)
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            self._reset_run_state()
            self._ckpt_step = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Stop the worker without logging: the run is failing."""
        for pending in self._pending:
            pending.future.cancel()
        self._pending = []
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # ------------------------------------------------------------------ state

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Remember the checkpoint's step, used to log ``trainer.validate(ckpt_path=...)``."""
        self._ckpt_step = _checkpoint_step(checkpoint)

    def state_dict(self) -> dict[str, Any]:
        """Counters and the projection frames; plain tensors and Python scalars only."""
        return {
            "version": _STATE_VERSION,
            "runs": self._runs,
            "last_step": self._last_step,
            "views": {str(idx): state for idx, state in self._view_states.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self._runs = int(state_dict.get("runs", 0))
        self._last_step = int(state_dict.get("last_step", -1))
        if self.views:
            for idx, state in dict(state_dict.get("views", {})).items():
                self._view_builder(int(idx)).load_state_dict(state)
                self._view_states[int(idx)] = state


class _FigureJob:
    """One self-contained call of ``ViewBuilder.build`` (runs in the worker thread).

    With ``render``, the figures are also drawn to (H, W, 3) uint8 arrays here, so that the
    training thread only writes pixels when it logs them.
    """

    def __init__(
        self,
        builder: Any,
        real: Tensor,
        fake: Tensor,
        details: PRDCResult,
        real_labels: Optional[Tensor],
        fake_labels: Optional[Tensor],
        title: str,
        *,
        render: bool,
        on_state: Callable[[dict[str, Any]], None],
    ) -> None:
        self.args = (builder, real, fake, details, real_labels, fake_labels, title)
        self.render = render
        self.on_state = on_state

    def __call__(self) -> dict[str, Any]:
        builder, real, fake, details, real_labels, fake_labels, title = self.args
        figures = builder.build(
            real, fake, details, real_labels=real_labels, fake_labels=fake_labels, title=title
        )
        self.on_state(builder.state_dict())
        if not self.render:
            return dict(figures)
        from lightning_embviz.plotting import figure_to_array

        return {key: figure_to_array(fig) for key, fig in figures.items()}


class EmbeddingMonitor(_EmbeddingMonitorImpl, _pl.Callback, _LightningCallback):  # type: ignore[misc]
    """Log precision, recall, density, coverage, Fréchet distance and 2-D views of embeddings.

    Every measured validation run, the callback collects the real and generated embeddings
    that ``validation_step`` returns (``{"real": (B, D), "fake": (B, D)}``, optionally
    ``"labels"``) or that ``embed(pl_module, batch)`` computes, then logs the metrics of
    Naeem et al. (2020) and the Fréchet distance with ``pl_module.log`` (so
    ``ModelCheckpoint`` and ``EarlyStopping`` can monitor them) and draws figures of both
    sets in fixed 2-D frames, logged to every logger of the Trainer at the same step.

    Works with ``import pytorch_lightning as pl`` and ``import lightning.pytorch as pl``.
    Under DDP every rank collects its share; the shares are gathered, the duplicates that
    ``DistributedSampler`` pads in are dropped, rank 0 computes, and every rank logs the
    same values (identical to a single-process run on the same validation set).

    Args:
        nearest_k: k of the k-nearest-neighbour balls, >= 1.
        real_key: Key of the real embeddings (B, D) or (B, ...) in the validation outputs.
        fake_key: Key of the generated embeddings (B', D) or (B', ...).
        labels_key: Optional key of class labels: a (B,) tensor for the real rows, or a dict
            ``{"real": (B,), "fake": (B',)}``; used by the class-aware views.
        index_key: Optional key of each real row's dataset index (B,). Rows with the same
            index are counted once (under DDP this removes the sampler's padding even with
            a custom sampler).
        embed: Optional ``embed(pl_module, batch) -> dict`` with the keys above, called
            under ``torch.no_grad()`` after each validation batch, for models whose
            ``validation_step`` should not change.
        prefix: Prefix of every logged key.
        every_n_epochs: Measure every n-th training epoch (epochs where
            ``(epoch + 1) % every_n_epochs == 0``); ``trainer.validate`` always measures.
        max_samples: Cap per set (real, fake), or None for no cap. The first
            ``max_samples`` samples in dataloader order are kept (deterministic; under DDP
            the same samples as in a single process).
        views: Figures to draw, e.g. ``("pca", "tsne")``, ``("pca", "umap")``; None or
            ``()`` for none.
        view_max_samples: Points per set drawn in the figures (None: the
            :class:`~lightning_embviz.views.ViewBuilder` default).
        background: Build the figures in a worker thread so training goes on; they are
            logged from the training thread at the step they belong to, at the latest at
            the end of ``fit``/``validate``.
        log_projector: Also write the embeddings to TensorBoard's Embedding Projector.
        keep_on_device: Keep the embeddings on the accelerator and compute there
            (default: move them to CPU as they arrive).
        seed: Seed of the projections (t-SNE, UMAP, subsampling).

    Raises:
        TypeError: If an argument has the wrong type.
        ValueError: If an argument has a bad value (e.g. ``nearest_k=0``, an unknown view).
        ModuleNotFoundError: If a view needs a package that is not installed (t-SNE needs
            ``pip install lightning-embviz[tsne]``).

    Example::

        import pytorch_lightning as pl  # or: import lightning.pytorch as pl
        from lightning_embviz import EmbeddingMonitor

        class GAN(pl.LightningModule):
            ...
            def validation_step(self, batch, batch_idx):
                x, y = batch
                fake = self.generator(torch.randn(len(x), self.latent_dim, device=self.device))
                return {"real": self.embedder(x), "fake": self.embedder(fake), "labels": y}

        monitor = EmbeddingMonitor(nearest_k=5, views=("pca", "tsne"))
        best = pl.callbacks.ModelCheckpoint(monitor="embviz/coverage", mode="max")
        trainer = pl.Trainer(max_epochs=20, callbacks=[monitor, best])
        trainer.fit(GAN(), datamodule=dm)

    Logged metrics:
        Scalars (``pl_module.log``, one point per measured validation run; with several
        validation dataloaders each key ends in ``/dataloader_idx_N``):

        - ``embviz/precision``: fraction of fakes inside some real k-NN ball.
        - ``embviz/recall``: fraction of reals inside some fake k-NN ball.
        - ``embviz/density``: mean count of real balls holding a fake, divided by k.
        - ``embviz/coverage``: fraction of reals whose ball holds a fake.
        - ``embviz/fd``: Fréchet distance between Gaussians fitted to the two sets.

        Figures (to every logger, at the step of the scalars): ``embviz/<view>`` for each
        view (``embviz/pca``, ``embviz/tsne``, ...) plus the extra views the
        :class:`~lightning_embviz.views.ViewBuilder` draws (``embviz/pca_coverage``, class
        views when labels are given). With ``log_projector=True``, the embeddings under
        ``embviz/embeddings`` in TensorBoard's projector.

    Note:
        Bad data never ends training: NaN/Inf rows are dropped with a warning; a run with
        too few usable samples for ``nearest_k`` (or whose computation fails) logs NaN with
        a warning, which ``ModelCheckpoint`` ranks last (``EarlyStopping`` stops on NaN
        unless ``check_finite=False``).

        The metrics exist only on measured validation runs. With ``every_n_epochs > 1`` a
        ``ModelCheckpoint``/``EarlyStopping`` monitoring ``embviz/...`` finds no value on
        the other epochs: prefer ``Trainer(check_val_every_n_epoch=n)``, or give the
        monitor the same period (``ModelCheckpoint(every_n_epochs=n)``,
        ``EarlyStopping(check_on_train_epoch_end=False, strict=False)``).
        During ``fit``, scalars and figures go to the step at which Lightning logs every
        epoch-level validation metric (its count of batches that stepped the optimizers).
        Under ``trainer.validate`` the callback writes the scalars to the loggers itself, at
        the loaded checkpoint's ``global_step`` (``validate(ckpt_path=...)``, so several
        checkpoints line up in TensorBoard) or at the Trainer's current step; they are then
        in ``trainer.callback_metrics`` but not in the dicts ``validate`` returns.

        Under DDP (``strategy="ddp"``, ``"ddp_spawn"``, multi-node DDP) the duplicates that
        ``DistributedSampler`` pads in are found from the sampler itself; with a sampler of
        your own and ``use_distributed_sampler=False``, return each sample's dataset index
        under ``index_key`` (otherwise a warning says duplicates cannot be ruled out).
    """
