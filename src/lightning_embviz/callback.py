"""``EmbeddingMonitor``: the Lightning callback. The only module that knows Lightning hooks.

The hooks only route data; each job lives in a module of its own:

- :mod:`~lightning_embviz._outputs` checks what ``validation_step`` returns (the contract);
- :mod:`~lightning_embviz._sampler` numbers each row with its global sample index;
- :mod:`~lightning_embviz._buffer` keeps a bounded uniform subsample and gathers ranks;
- :mod:`~lightning_embviz._evaluate` turns one run's rows into metrics (or NaN and a note);
- :mod:`~lightning_embviz._worker` builds and renders the figures off the training thread;
- :mod:`~lightning_embviz.loggers` ships figures to each logger kind;
- :mod:`~lightning_embviz._lightning` holds the Trainer helpers and the one private field.
"""

from __future__ import annotations

import functools
import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch

from lightning_embviz import _arrays
from lightning_embviz._arrays import METRIC_KEYS
from lightning_embviz._buffer import (
    EmbeddingBuffer,
    collective_device,
    gather_embeddings,
)
from lightning_embviz._evaluate import FAILED, OK, Evaluation, evaluate, metric_keys
from lightning_embviz._galleries import details_on_cpu, select_samples
from lightning_embviz._lightning import (
    CallbackBase,
    CheckpointPosition,
    checkpoint_position,
    flatten_dataloaders,
    is_distributed,
    is_fitting,
    is_sanity_checking,
    loop_step,
    set_current_epoch,
    set_loop_step,
    warn,
)
from lightning_embviz._outputs import GalleryImages, OutputKeys, parse_outputs
from lightning_embviz._sampler import RowKeys, SamplerInfo, sampler_info
from lightning_embviz._worker import FigureWorker
from lightning_embviz.views import SampleTables, SampleViews

__all__ = ["METRIC_NAMES", "EmbeddingMonitor"]

METRIC_NAMES = METRIC_KEYS

_STATE_VERSION = 2  # 1: version 0.1 (same fields); 2: adds nothing incompatible


class EmbeddingMonitor(CallbackBase):
    """Log precision, recall, density, coverage, Fréchet distance and 2-D views of embeddings.

    Every measured validation run, the callback collects the real and generated embeddings
    that ``validation_step`` returns (``{"real": (B, D), "fake": (B, D)}``, optionally
    ``"labels"``) or that ``embed(pl_module, batch)`` computes, then logs the metrics of
    Naeem et al. (2020) and the Fréchet distance with ``pl_module.log`` (so
    ``ModelCheckpoint`` and ``EarlyStopping`` can monitor them, and ``trainer.validate``
    returns them) and draws figures of both sets in fixed 2-D frames, logged to every logger
    of the Trainer at the same step.

    The output contract is checked during Lightning's sanity check (and on the first
    validation batch when there is none), so a broken ``validation_step`` fails before the
    first training step; the sanity check itself logs and draws nothing.

    Works with ``import pytorch_lightning as pl`` and ``import lightning.pytorch as pl``.
    Under DDP every rank collects its share; the shares are gathered, the duplicates that
    ``DistributedSampler`` pads in are dropped, rank 0 computes, and every rank logs the
    same values (identical to a single-process run on the same validation set).

    Args:
        nearest_k: k of the k-nearest-neighbour balls, >= 1; or several, e.g. ``(5, 10, 20)``:
            the first gives the usual keys, the others ``<metric>_k<k>`` and a ``k_sweep``
            figure (one pass over the distances for all of them).
        real_key: Key of the real embeddings (B, D) or (B, ...) in the validation outputs.
        fake_key: Key of the generated embeddings (B', D) or (B', ...).
        labels_key: Optional key of class labels: a (B,) tensor for the real rows, or a dict
            ``{"real": (B,), "fake": (B',)}``; used by the class-aware views.
        index_key: Optional key of each real row's dataset index (B,). Real rows with the
            same index are counted once (under DDP this removes the sampler's padding even
            with a custom sampler). Fakes are never merged with one another, whatever their
            count per batch: a batch with as many fakes as reals pairs them (each fake shows
            its real's index in the tables; the fakes of the rows ``DistributedSampler``
            pads in are dropped), other fakes show index -1.
        embed: Optional ``embed(pl_module, batch) -> dict`` with the keys above, called
            under ``torch.no_grad()`` after each validation batch, for models whose
            ``validation_step`` should not change.
        prefix: Prefix of every logged key.
        every_n_epochs: Measure every n-th training epoch (epochs where
            ``(epoch + 1) % every_n_epochs == 0``); ``trainer.validate`` always measures.
        max_samples: Cap per set (real, fake), or None for no cap. Above the cap the metrics
            use a uniform random subsample of the whole validation run: the ``max_samples``
            samples whose hashed sample index (seeded by ``seed``) is smallest, the same
            samples every epoch and on any number of ranks, whatever the loader order. A
            one-time warning says how many rows were seen and kept.
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
        seed: Seed of the projections (t-SNE, UMAP, subsampling), the sample cap and the
            confidence intervals' splits.
        real_images_key: Optional key of the real samples' images (B, C, H, W) or (B, H, W),
            one per embedding row, for the galleries (any value range).
        fake_images_key: The same for the generated samples.
        gallery_size: Tiles per gallery (``missed_real``, ``outlier_fake``); 0 for none.
        thumbnail_size: Largest side, in pixels, of the uint8 thumbnails kept per row for
            the galleries (the only image data held until the end of the run).
        log_samples: Log the per-sample tables every measured run.
        confidence: A level such as 0.95 to also log ``<metric>_low`` / ``<metric>_high``
            for each metric (:func:`lightning_embviz.intervals.prdc_intervals`; costs about
            4 (large sets) to 9 (1 000 samples) full metric computations per run) and
            show the intervals in the titles.

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
        trainer.validate(GAN(), datamodule=dm, ckpt_path=best.best_model_path)[0]
        # -> {"embviz/coverage": ..., "embviz/precision": ..., ...}

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
        views when labels are given). With images: ``embviz/missed_real`` (reals whose k-NN
        ball holds no fake, most missed first) and ``embviz/outlier_fake`` (fakes outside
        every real ball, farthest first). With several k: ``embviz/k_sweep``. With
        ``log_projector=True``, the embeddings under ``embviz/embeddings`` in TensorBoard's
        projector.

        With ``nearest_k=(5, 10)``: also ``embviz/precision_k10``, ``embviz/recall_k10``,
        ``embviz/density_k10``, ``embviz/coverage_k10``. With ``confidence=0.95``:
        ``embviz/<metric>_low`` and ``embviz/<metric>_high`` for the five metrics.

        Tables (``log_samples=True``): ``embviz/samples_real`` and ``embviz/samples_fake``
        (CSV files next to the figures, MLflow artifacts, a ``wandb.Table``; in TensorBoard a
        text summary ``embviz/samples`` and the CSV files).

    Note:
        Bad data never ends training: NaN/Inf rows are dropped with a warning; a k that
        the run's usable samples cannot reach (k must be below both counts) logs NaN for
        its keys with one warning while every other k is computed; a run whose computation
        fails logs NaN with a warning, which ``ModelCheckpoint`` ranks last
        (``EarlyStopping`` stops on NaN unless ``check_finite=False``). Under DDP, a rank
        that fails in its share of the distance work (out of memory, a kernel error) makes
        every rank stop that computation at once (no rank waits for the process group's
        timeout): every rank logs NaN and warns with the same message, and training goes
        on.

        The metrics exist only on measured validation runs. With ``every_n_epochs > 1`` a
        ``ModelCheckpoint``/``EarlyStopping`` monitoring ``embviz/...`` finds no value on
        the other epochs: prefer ``Trainer(check_val_every_n_epoch=n)``, or give the
        monitor the same period (``ModelCheckpoint(every_n_epochs=n)``,
        ``EarlyStopping(check_on_train_epoch_end=False, strict=False)``).

        Steps: during ``fit``, scalars and figures go to the step at which Lightning logs
        every epoch-level validation metric (its count of batches that stepped the
        optimizers, which differs from ``global_step`` with several optimizers). Under
        ``trainer.validate(ckpt_path=...)`` everything the run logs (these scalars, the
        figures, and your own validation metrics) goes to the step at which the training
        run logged that checkpoint's validation, read from the checkpoint's loop state
        (its ``global_step`` when it has none), so comparisons and training curves share
        one step axis; figure titles name the checkpoint's epoch and step.

        Under DDP (``strategy="ddp"``, ``"ddp_spawn"``, multi-node DDP) the duplicates that
        ``DistributedSampler`` pads in are found from the sampler itself; with a sampler of
        your own and ``use_distributed_sampler=False``, return each sample's dataset index
        under ``index_key`` (otherwise a warning says duplicates cannot be ruled out).
    """

    def __init__(
        self,
        nearest_k: int | Sequence[int] = 5,
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
        real_images_key: str = "real_images",
        fake_images_key: str = "fake_images",
        gallery_size: int = 32,
        thumbnail_size: int = 32,
        log_samples: bool = True,
        confidence: Optional[float] = None,
    ) -> None:
        def bad(arg: str, value: Any, expected: str, error: type[Exception] = ValueError) -> None:
            raise error(f"`EmbeddingMonitor({arg}={value!r})` is not valid. Expected {expected}.")

        def check_int(arg: str, value: Any, minimum: int, expected: str) -> int:
            try:
                return _arrays.check_int(value, arg, minimum)
            except (TypeError, ValueError) as err:  # the same rule, the call quoted
                bad(arg, value, expected, type(err))
                raise

        if isinstance(nearest_k, np.ndarray) and nearest_k.ndim == 1:
            nearest_k = nearest_k.tolist()  # np.array([5, 10]) is a sequence of ints too
        if isinstance(nearest_k, Sequence) and not isinstance(nearest_k, str):
            expected = "an int >= 1 or a sequence of different ints >= 1, e.g. (5, 10)"
            if not nearest_k:
                bad("nearest_k", nearest_k, expected)
            try:
                ks = tuple(_arrays.check_int(k, "nearest_k", 1) for k in nearest_k)
            except (TypeError, ValueError) as err:
                bad("nearest_k", nearest_k, expected, type(err))
                raise
            if len(set(ks)) != len(ks):
                bad("nearest_k", nearest_k, expected)
        else:
            ks = (check_int("nearest_k", nearest_k, 1, "an int >= 1 or a sequence of ints"),)
        keys = {
            "real_key": real_key,
            "fake_key": fake_key,
            "labels_key": labels_key,
            "index_key": index_key,
            "real_images_key": real_images_key,
            "fake_images_key": fake_images_key,
        }
        for arg, value in keys.items():
            if not isinstance(value, str):
                bad(arg, value, "a string naming a key of the validation outputs", TypeError)
            if not value:
                bad(arg, value, "a non-empty string")
        if len(set(keys.values())) != len(keys):
            raise ValueError(
                "`EmbeddingMonitor(real_key=..., fake_key=..., labels_key=..., index_key=..., "
                f"real_images_key=..., fake_images_key=...)` must name different keys, got {keys}."
            )
        if embed is not None and not callable(embed):
            bad("embed", embed, "None or a callable `embed(pl_module, batch) -> dict`", TypeError)
        if not isinstance(prefix, str):
            bad("prefix", prefix, 'a string such as "embviz/"', TypeError)
        check_int("every_n_epochs", every_n_epochs, 1, "an int >= 1")
        if max_samples is not None:
            check_int(
                "max_samples", max_samples, max(ks) + 1, f"None or an int > nearest_k={max(ks)}"
            )
        if view_max_samples is not None:
            check_int("view_max_samples", view_max_samples, 10, "None or an int >= 10")
        check_int("gallery_size", gallery_size, 0, "an int >= 0 (0: no galleries)")
        if confidence is not None:
            try:
                level = _arrays.check_float(confidence, "confidence")
            except TypeError:
                bad("confidence", confidence, "None or a level in (0, 1) such as 0.95", TypeError)
                raise
            if not 0.0 < level < 1.0:
                bad("confidence", confidence, "None or a level in (0, 1) such as 0.95")
            confidence = level
        check_int("thumbnail_size", thumbnail_size, 4, "an int >= 4 (pixels)")
        for arg, flag in (
            ("log_samples", log_samples),
            ("background", background),
            ("log_projector", log_projector),
            ("keep_on_device", keep_on_device),
        ):
            if not isinstance(flag, bool):
                bad(arg, flag, "True or False", TypeError)
        check_int("seed", seed, 0, "an int >= 0")
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

        self.nearest_ks = ks
        self.nearest_k = ks[0]
        self.confidence = None if confidence is None else float(confidence)
        self._metric_keys = metric_keys(ks, self.confidence is not None)
        self.keys = OutputKeys(
            real_key, fake_key, labels_key, index_key, real_images_key, fake_images_key
        )
        self.real_key, self.fake_key = real_key, fake_key
        self.labels_key, self.index_key = labels_key, index_key
        self.embed = embed
        self.prefix = prefix
        self.every_n_epochs = int(every_n_epochs)
        self.max_samples = None if max_samples is None else int(max_samples)
        self.views = tuple(views)
        self.view_max_samples = None if view_max_samples is None else int(view_max_samples)
        self.background = background
        self.log_projector = log_projector
        self.keep_on_device = keep_on_device
        self.seed = int(seed)
        self.gallery_size = int(gallery_size)
        self.thumbnail_size = int(thumbnail_size)
        self.log_samples = log_samples

        # One ViewBuilder per dataloader. Build the first now, so that a bad view name or a
        # missing optional dependency fails at construction, not after the first epoch.
        self._view_builders: dict[int, Any] = {}
        # Last known state of each builder, refreshed by the worker after each build, so that
        # `state_dict()` never waits for a builder's lock while a projection is being fitted.
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
        self._contract_checked = False
        self._checkpoint: Optional[CheckpointPosition] = None
        self._saved_position: Optional[tuple[Optional[int], Optional[int]]] = None
        self._worker = FigureWorker(background)
        self._warned: set[str] = set()
        # Rank 0's fitted real set per dataloader, reused while the real rows do not change.
        # Not checkpointed: refitting after a resume costs a third of one run's distance
        # work, while saving it would put the whole real set into every checkpoint.
        self._references: dict[int, Any] = {}
        self._reset_run_state()

    # ------------------------------------------------------------------ configuration

    def _view_builder(self, dataloader_idx: int) -> Any:
        if dataloader_idx not in self._view_builders:
            from lightning_embviz.views import ViewBuilder

            kwargs: dict[str, Any] = {"methods": self.views, "seed": self.seed}
            if self.view_max_samples is not None:
                kwargs["max_samples"] = self.view_max_samples
            builder = ViewBuilder(**kwargs)
            self._view_builders[dataloader_idx] = builder
            self._view_states[dataloader_idx] = builder.state_dict()
        return self._view_builders[dataloader_idx]

    @property
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint; differs when the arguments differ."""
        return self._generate_state_key(
            nearest_k=self.nearest_k if len(self.nearest_ks) == 1 else self.nearest_ks,
            prefix=self.prefix,
            real_key=self.real_key,
            fake_key=self.fake_key,
        )

    def _reset_run_state(self) -> None:
        self._measuring = False
        self._checking = False
        self._buffers: dict[int, EmbeddingBuffer] = {}
        self._row_keys: dict[int, RowKeys] = {}
        self._sampler_info: dict[int, Optional[SamplerInfo]] = {}
        self._gallery_images: dict[int, GalleryImages] = {}

    def __getstate__(self) -> dict[str, Any]:
        # `ddp_spawn` pickles the Trainer with its callbacks: leave out the worker thread, and
        # carry the view builders (which hold a lock) as their plain state.
        state = self.__dict__.copy()
        state["_worker"] = None
        state["_view_builders"] = dict(self._view_states)
        del state["_view_states"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        views = state.pop("_view_builders", {})
        self.__dict__.update(state)
        self._worker = FigureWorker(self.background)
        self._view_builders = {}
        self._view_states = {}
        for idx, view_state in views.items():
            self._view_builder(idx).load_state_dict(view_state)
            self._view_states[idx] = view_state

    def _warn_once(self, key: Optional[str], message: str) -> None:
        if key is None:
            warn(message)
        elif key not in self._warned:
            self._warned.add(key)
            warn(message)

    # ------------------------------------------------------------------ collecting

    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Decide whether this run is measured or only checked, and reset the buffers."""
        self._reset_run_state()
        if is_sanity_checking(trainer):
            self._checking = True  # check the contract on every sanity batch, log nothing
            return
        fitting = is_fitting(trainer)
        if fitting and (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            # Not measured; still check the first batch if no sanity check did.
            self._checking = not self._contract_checked
            return
        self._measuring = True
        if not fitting and self._checkpoint is not None and self._checkpoint.step is not None:
            # validate(ckpt_path=...): log at the step (and epoch) of the checkpoint's
            # training validation; undone in `on_validation_end`.
            old_step = set_loop_step(trainer, self._checkpoint.step)
            old_epoch = None
            if self._checkpoint.epoch is not None:
                old_epoch = set_current_epoch(trainer, self._checkpoint.epoch)
            if self._saved_position is None:
                self._saved_position = (old_step, old_epoch)

    def on_validation_batch_end(
        self,
        trainer: Any,
        pl_module: Any,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Check the batch's outputs; when measuring, collect its real and fake embeddings."""
        if not (self._measuring or self._checking):
            return
        where = f"dataloader {dataloader_idx}, batch {batch_idx}"
        source = "`validation_step`"
        if self.embed is not None:
            with torch.no_grad():
                outputs = self.embed(pl_module, batch)
            source = "`embed(pl_module, batch)`"
        parsed = parse_outputs(
            outputs,
            self.keys,
            source=source,
            where=where,
            keep_on_device=self.keep_on_device,
            thumbnail_side=self.thumbnail_size,
            # After the contract check, bad images drop the galleries instead of the run.
            strict_images=not (self._measuring and self._contract_checked),
        )
        self._contract_checked = True
        if not self._measuring:
            self._checking = is_sanity_checking(trainer)
            return
        row_keys = self._row_keys.get(dataloader_idx)
        if row_keys is None:
            row_keys = RowKeys(
                getattr(trainer, "global_rank", 0), getattr(trainer, "world_size", 1)
            )
            self._row_keys[dataloader_idx] = row_keys
        info = None
        if row_keys.world > 1:  # with an index too: the fakes of padded rows are dropped
            info = self._sampler(trainer, dataloader_idx)
        keys = row_keys.next_batch(
            len(parsed.real),
            len(parsed.fake),
            batch_idx,
            index=parsed.index,
            info=info,
            names=(self.real_key, self.fake_key, self.index_key),
            dataloader_idx=dataloader_idx,
        )
        if keys.problem is not None:
            self._warn_once(keys.problem_id, keys.problem)
        gate = self._gallery_images.setdefault(dataloader_idx, GalleryImages())
        image_problem = gate.admit(parsed, self.keys, where)
        if image_problem is not None:
            self._warn_once("images", image_problem)
        real, real_labels, real_keys = parsed.real, parsed.real_labels, keys.real
        fake, fake_labels, fake_keys = parsed.fake, parsed.fake_labels, keys.fake
        real_images, fake_images = parsed.real_images, parsed.fake_images
        # keys and masks live with the features (the accelerator with keep_on_device)
        real_keys, fake_keys = real_keys.to(real.device), fake_keys.to(fake.device)
        if keys.real_keep is not None:
            keep = keys.real_keep.to(real.device)
            real, real_keys = real[keep], real_keys[keep]
            real_labels = None if real_labels is None else real_labels[keep]
            real_images = None if real_images is None else real_images.select(keep.cpu())
        if keys.fake_keep is not None:
            keep = keys.fake_keep.to(fake.device)
            fake, fake_keys = fake[keep], fake_keys[keep]
            fake_labels = None if fake_labels is None else fake_labels[keep]
            fake_images = None if fake_images is None else fake_images.select(keep.cpu())
        buffer = self._buffers.get(dataloader_idx)
        if buffer is None:
            buffer = self._buffers[dataloader_idx] = EmbeddingBuffer(self.max_samples, self.seed)
        buffer.add(
            real,
            fake,
            real_keys=real_keys,
            fake_keys=fake_keys,
            real_labels=real_labels,
            fake_labels=fake_labels,
            real_images=real_images,
            fake_images=fake_images,
        )

    def _sampler(self, trainer: Any, dataloader_idx: int) -> Optional[SamplerInfo]:
        if dataloader_idx not in self._sampler_info:
            loaders = flatten_dataloaders(getattr(trainer, "val_dataloaders", None))
            loader = loaders[dataloader_idx] if dataloader_idx < len(loaders) else None
            self._sampler_info[dataloader_idx] = sampler_info(loader)
        return self._sampler_info[dataloader_idx]

    # ------------------------------------------------------------------ computing

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Gather, compute and log the metrics; start the figures."""
        self._poll(trainer, wait=False)
        if not self._measuring:
            return
        try:
            counts = list(getattr(trainer, "num_val_batches", []) or [])
            n_loaders = max(len(counts), max(self._buffers, default=-1) + 1, 1)
            step = loop_step(trainer)
            logged = [
                self._finish(trainer, pl_module, idx, n_loaders, step) for idx in range(n_loaders)
            ]
            if any(logged):
                self._runs += 1
                self._last_step = step
        finally:
            self._reset_run_state()

    def _title(
        self,
        trainer: Any,
        step: int,
        idx: int,
        n_loaders: int,
        metrics: Optional[Mapping[str, float]] = None,
    ) -> str:
        epoch = trainer.current_epoch  # the checkpoint's under validate(ckpt_path=...)
        if not is_fitting(trainer) and self._checkpoint is not None:
            title = f"checkpoint: epoch {epoch}, step {step}"
        else:
            title = f"epoch {epoch}, step {step}"
        title += f", dataloader {idx}" if n_loaders > 1 else ""
        if self.confidence is not None and metrics is not None:
            bounds = [
                f"{name} [{metrics[f'{name}_low']:.3g}, {metrics[f'{name}_high']:.3g}]"
                for name in ("precision", "recall", "density", "coverage", "fd")
                if math.isfinite(metrics.get(f"{name}_low", math.nan))
            ]
            if bounds:
                title += f"\n{self.confidence:.0%} intervals: " + " · ".join(bounds)
        return title

    def _finish(self, trainer: Any, pl_module: Any, idx: int, n_loaders: int, step: int) -> bool:
        """Evaluate and log one dataloader's run; True if its metrics were computed."""
        buffer = self._buffers.pop(idx, None) or EmbeddingBuffer(self.max_samples, self.seed)
        gate = self._gallery_images.pop(idx, None)
        device = torch.device("cpu")
        if self.keep_on_device:
            device = torch.device(getattr(pl_module, "device", "cpu"))
        real, fake = buffer.local_sets(device)
        del buffer
        # Thumbnails never travel with the rows: the galleries fetch the few they show.
        local_images = (real.keys.cpu(), real.images, fake.keys.cpu(), fake.images)
        distributed = is_distributed(trainer)
        if distributed:
            real, fake = gather_embeddings(real, fake, out_device=device)

        where = f" of validation dataloader {idx}" if n_loaders > 1 else ""
        result: Optional[Evaluation] = None
        keys = self._metric_keys
        values = [math.nan] * (len(keys) + 1)
        # Under DDP every rank holds the gathered rows and computes a share of the distance
        # work (identical results on every rank); rank 0 alone warns, draws and adds the
        # confidence intervals, and its values are broadcast.
        if trainer.is_global_zero or distributed:
            result = evaluate(
                real,
                fake,
                nearest_k=self.nearest_ks,
                max_samples=self.max_samples,
                seed=self.seed,
                where=where,
                reference=self._references.get(idx),
                confidence=self.confidence,
                distributed=distributed,
                intervals=trainer.is_global_zero,
            )
            if result.reference is not None:
                self._references[idx] = result.reference
        if result is not None and trainer.is_global_zero:
            for once, message in result.notes:
                self._warn_once(None if once is None else f"{once}-{idx}", message)
            values = [float(result.status == OK)] + [result.metrics[k] for k in keys]
        elif result is not None:
            if result.status == FAILED and result.notes:
                # A failed shared computation ends the same way on every rank: each says so.
                warn(result.notes[-1][1])
            result = None  # only rank 0 draws
        del real, fake
        if distributed:
            values = self._broadcast(values, device)
        # A skipped or failed run logs NaN, so that monitors find their key (ModelCheckpoint
        # ranks NaN last; EarlyStopping stops on it unless `check_finite=False`) and the
        # curves show the gap.
        suffix = f"/dataloader_idx_{idx}" if n_loaders > 1 else ""
        # Through Lightning's loggers (so `validate` returns the values too); without a
        # logger during `fit` there is nothing to write, and Lightning would warn per key.
        to_loggers = bool(trainer.loggers) or not is_fitting(trainer)
        for name, value in zip(keys, values[1:]):
            pl_module.log(
                f"{self.prefix}{name}{suffix}",
                value,
                on_step=False,
                on_epoch=True,
                prog_bar=False,
                logger=to_loggers,
                # Every rank holds the same value: a "max" sync keeps it exact and tells
                # Lightning the value is synchronised.
                sync_dist=distributed,
                reduce_fx="max",
                add_dataloader_idx=False,
                batch_size=1,
            )
        sample_views = None
        if values[0] == 1.0 and (self.gallery_size or self.log_samples):
            sample_views, problem = select_samples(
                result,
                local_images,
                gallery_size=self.gallery_size,
                tables=self.log_samples,
                distributed=distributed,
                images_dropped=gate is not None and gate.dropped,
            )
            if problem is not None:
                self._warn_once("samples", problem)
        if result is not None and result.status == OK:
            self._emit_views(trainer, idx, n_loaders, step, result, suffix, sample_views)
        return values[0] == 1.0

    @staticmethod
    def _broadcast(values: list[float], device: torch.device) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=collective_device(device))
        torch.distributed.broadcast(t, src=0)
        return [float(v) for v in t.cpu()]

    # ------------------------------------------------------------------ figures

    def _emit_views(
        self,
        trainer: Any,
        idx: int,
        n_loaders: int,
        step: int,
        result: Evaluation,
        suffix: str,
        sample_views: Optional[SampleViews],
    ) -> None:
        assert result.real is not None and result.fake is not None and result.details is not None
        real, fake = result.real, result.fake
        real_x, fake_x = real.features.detach().cpu(), fake.features.detach().cpu()
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
        if not self.views and sample_views is None and result.sweep is None:
            return
        from lightning_embviz.loggers import needs_png

        job = functools.partial(
            _build_views,
            self._view_builder(idx) if self.views else None,
            real_x,
            fake_x,
            details_on_cpu(result.details),
            real_y,
            fake_y,
            self._title(trainer, step, idx, n_loaders, result.metrics),
            functools.partial(self._view_states.__setitem__, idx),
            sample_views,
            result.sweep,
        )
        self._worker.submit(job, step, suffix, png=needs_png(trainer.loggers))
        if not self.background:
            self._poll(trainer, wait=True)

    def _poll(self, trainer: Any, wait: bool) -> None:
        """Log the figures of finished jobs, oldest first (all of them when ``wait``)."""
        from lightning_embviz.loggers import log_figures, log_tables

        for done in self._worker.poll(wait):
            if done.error is not None:
                err = done.error
                detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
                warn(
                    f"EmbeddingMonitor: building the figures for step {done.step} failed; "
                    f"the metrics were logged, the figures of that run are missing.\n{detail}",
                    RuntimeWarning,
                )
                continue
            root = getattr(trainer, "default_root_dir", None)
            tables = done.figures.pop("samples", None)
            named = {f"{self.prefix}{key}{done.context}": fig for key, fig in done.figures.items()}
            log_figures(trainer.loggers, named, done.step, fallback_dir=root)
            if isinstance(tables, SampleTables):
                log_tables(
                    trainer.loggers,
                    {f"{self.prefix}{k}{done.context}": t for k, t in tables.tables.items()},
                    done.step,
                    markdown=tables.markdown,
                    markdown_tag=f"{self.prefix}samples{done.context}",
                    fallback_dir=root,
                )

    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        """Log the figures that the background worker has finished."""
        if self._worker.has_finished:
            self._poll(trainer, wait=False)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Log the figures that the background worker has finished."""
        self._poll(trainer, wait=False)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Outside ``fit``: wait for this run's figures and undo the step change."""
        if not is_fitting(trainer):
            self._poll(trainer, wait=True)
            self._restore_loop_step(trainer)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Wait for the background worker and log every remaining figure."""
        self._poll(trainer, wait=True)

    def _restore_loop_step(self, trainer: Any) -> None:
        if self._saved_position is not None:
            step, epoch = self._saved_position
            if step is not None:
                set_loop_step(trainer, step)
            if epoch is not None:
                set_current_epoch(trainer, epoch)
            self._saved_position = None

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Log what is left, stop the worker thread, forget the loaded checkpoint."""
        try:
            self._poll(trainer, wait=True)
        finally:
            self._worker.close()
            self._reset_run_state()
            self._restore_loop_step(trainer)
            self._checkpoint = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Stop the worker without logging: the run is failing."""
        self._worker.cancel()

    # ------------------------------------------------------------------ state

    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Remember where the checkpoint sits, for ``trainer.validate(ckpt_path=...)``."""
        self._checkpoint = checkpoint_position(checkpoint)

    def state_dict(self) -> dict[str, Any]:
        """Counters and the projection frames; plain tensors and Python scalars only."""
        return {
            "version": _STATE_VERSION,
            "runs": self._runs,
            "last_step": self._last_step,
            "views": {str(idx): state for idx, state in self._view_states.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (a newer format: warn and start fresh)."""
        version = int(state_dict.get("version", 1))
        if version > _STATE_VERSION:
            warn(
                f"EmbeddingMonitor: the checkpoint holds callback state of format {version}, "
                f"newer than this version's {_STATE_VERSION}; it was ignored (projection "
                "frames are refitted). Upgrade lightning-embviz to restore it."
            )
            return
        self._runs = int(state_dict.get("runs", 0))
        self._last_step = int(state_dict.get("last_step", -1))
        if self.views:
            for idx, state in dict(state_dict.get("views", {})).items():
                self._view_builder(int(idx)).load_state_dict(state)
                self._view_states[int(idx)] = state


def _build_views(
    builder: Any,
    real: torch.Tensor,
    fake: torch.Tensor,
    details: Any,
    real_labels: Optional[torch.Tensor],
    fake_labels: Optional[torch.Tensor],
    title: str,
    on_state: Callable[[dict[str, Any]], None],
    sample_views: Optional[SampleViews] = None,
    sweep: Optional[dict[int, dict[str, float]]] = None,
) -> dict[str, Any]:
    """One run's figures and tables (runs in the worker); reports the builder's new state."""
    out: dict[str, Any] = {}
    if builder is not None:
        out.update(
            builder.build(
                real, fake, details, real_labels=real_labels, fake_labels=fake_labels, title=title
            )
        )
        on_state(builder.state_dict())
    if sample_views is not None:
        out.update(sample_views.build(title))
    if sweep is not None:
        from lightning_embviz.plotting import k_sweep_figure

        out["k_sweep"] = k_sweep_figure(sweep, title=title)
    return out
