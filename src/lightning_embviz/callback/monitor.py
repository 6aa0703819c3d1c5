"""``EmbeddingMonitor``: the Lightning callback, hooks and state only.

The hooks only route data; each job lives in a module of its own:

- :mod:`~lightning_embviz.callback.config` checks the arguments into a frozen configuration;
- :mod:`~lightning_embviz.callback.outputs` checks what ``validation_step`` returns;
- :mod:`~lightning_embviz.callback.sampler` numbers each row with its global sample index;
- :mod:`~lightning_embviz.callback.buffer` keeps a bounded uniform subsample, gathers ranks;
- :mod:`~lightning_embviz.callback.evaluation` turns one run's rows into the scalars and
  the figures' inputs (the seam for more metrics), or NaN and a note;
- :mod:`~lightning_embviz.callback.galleries` picks the samples that galleries show;
- :mod:`~lightning_embviz.callback.worker` builds and renders the figures off the training
  thread;
- :mod:`~lightning_embviz.loggers` ships figures to each logger kind;
- :mod:`~lightning_embviz.callback.lightning` holds the Trainer helpers and the one private
  field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

import torch

from lightning_embviz._keys import METRIC_KEYS
from lightning_embviz.callback.audio import finish_run as finish_audio
from lightning_embviz.callback.audio import parse_audio
from lightning_embviz.callback.collector import RunCollector
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.embedding import BatchEmbedder
from lightning_embviz.callback.evaluation import OK, RunEvaluator
from lightning_embviz.callback.galleries import select_samples
from lightning_embviz.callback.lightning import (
    CallbackBase,
    CheckpointPosition,
    checkpoint_position,
    flatten_dataloaders,
    is_distributed,
    is_fitting,
    is_sanity_checking,
    loop_step,
    move_to_checkpoint,
    override,
    restore_position,
    warn,
)
from lightning_embviz.callback.memorization import closest_train_gallery
from lightning_embviz.callback.outputs import parse_outputs
from lightning_embviz.callback.worker import MonitorFigures

__all__ = ["METRIC_NAMES", "EmbeddingMonitor"]

METRIC_NAMES = METRIC_KEYS

_STATE_VERSION = 2  # 1: version 0.1 (same fields); 2: adds nothing incompatible


class EmbeddingMonitor(CallbackBase):
    """Log precision, recall, density, coverage, Fréchet distance and 2-D views of embeddings.

    Every measured validation run, the callback collects the real and generated embeddings
    that ``validation_step`` returns (``{"real": (B, D), "fake": (B, D)}``, optionally
    ``"labels"``), that ``embed(pl_module, batch)`` computes, or that ``embedder=`` computes
    from the images (or audio) ``validation_step`` returns, then logs the metrics of
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
        embedder: Optional ``nn.Module`` mapping a batch of samples to (B, D), e.g.
            ``lightning_embviz.embedders.dinov2(path)`` or any module of your own.
            ``validation_step`` (or ``embed``) then returns the samples instead of the
            embeddings: images under ``real_images_key``/``fake_images_key`` (the galleries
            use the same images), or waveforms under ``"real_audio"``/``"fake_audio"`` when
            ``embedder.modality == "audio"`` (no attribute: images). The callback embeds them
            on the LightningModule's device, in eval mode under ``torch.no_grad()``, and puts
            the embedder's train/eval flag back; it holds the embedder itself, so it is never
            part of the LightningModule, its checkpoint or its optimizer, and your model's
            train/eval state is not touched. Returning ``real``/``fake`` as well is an error
            (found by the sanity check). After the contract check, a batch the embedder fails
            on becomes NaN rows (dropped with one warning) instead of ending training.
        embed_batch_size: Most rows per embedder forward pass.
        extra_metrics: More metrics of the same gathered sets, by name, any of ``"vendi"``,
            ``"kd"``, ``"fd_inf"``, ``"clipped"`` (see "Logged metrics"); computed on rank 0
            and logged with the same values on every rank (under DDP the Vendi scores are
            shared: each rank accumulates its share of the second moment, one all-reduce,
            the single-process bits). No confidence intervals cover them (``confidence=``
            adds bounds for the PRDC keys and ``fd`` only). With ``"clipped"`` and
            ``log_samples``, the fakes' per-sample table gains ``realism_score``
            (Kynkäänniemi et al. 2019) and ``rarity_score`` (Han et al. 2022), as in
            ``embviz report --metrics clipped``. Costs: ``vendi`` O(n D^2) (O(n^2 D) when
            n < D), ``kd`` O(n^2 D) (all pairs), ``fd_inf`` a few FDs against the kept real
            side (one symmetric eigenvalue problem per subset size), ``clipped`` one more
            ball pass (two more with the table columns).
        train: The generator's training set, to measure memorization against: an
            (N_train, D) array or tensor of training embeddings (same embedder as the
            validation rows), the path of an embeddings file (.npy, .npz, .pt, .csv), or a
            :class:`~lightning_embviz.memorization.TrainReference` (fitted, or the path of
            one saved with :meth:`~lightning_embviz.memorization.TrainReference.save`).
            Resolved and fitted once, here (a bad path or type fails now), and reused every
            run; the validation reals are the held-out set. Each run costs one exact
            nearest-train search of the fakes and of the reals (O((M + N) N_train D)).
        train_images: With ``train``: one image per training row, for the
            ``closest_train`` gallery: an (N_train, C, H, W) or (N_train, H, W) array or
            tensor, or any indexable dataset of that length (an item is an image or a tuple
            whose first element is one); only the shown rows are read. The fakes' images
            are the thumbnails of ``fake_images_key``. With ``embedder`` and without
            ``train``, the training images are the training set: before the first measured
            run they are all read and embedded once by the embedder (the module's device,
            eval mode, no gradients, ``embed_batch_size`` rows per pass), fitted as a
            ``TrainReference`` (20 cells) and reused; not checkpointed (embedded again after
            a resume). ``train`` always holds embeddings: with ``embedder`` it is used as
            it is, and images given as ``train`` are refused.
        memorization_alpha: Quantile level of ``copy_fraction``'s threshold, in (0, 1).

        sample_rate: The rate in Hz of the waveforms ``validation_step`` returns under
            ``real_audio_key`` / ``fake_audio_key`` ((B, T) or (B, C, T) floats, one per
            embedding row); None uses the embedder's ``sample_rate``. Every measured run then
            logs the missed real clips and the outlier fakes (the galleries' selection, at
            most 8 each) as playable audio at the scalars' step, and their spectrograms.
        real_audio_key: Key of the real waveforms in the validation outputs.
        fake_audio_key: Key of the generated waveforms.
        groups_key: Optional key of group ids (song, prompt, identity), integers or strings
            (a list of ``str`` or a NumPy string array): (B,) for the real rows, or
            ``{"real": (B,), "fake": (B',)}``; each measured run logs a per-group table
            ``embviz/groups`` (worst first) showing the ids as given.
        audio_keep_rate: Rate in Hz of the short mono copies kept per row for listening
            (at most ``sample_rate``).
        audio_keep_seconds: Their longest duration: memory is ``2 * round(audio_keep_rate *
            audio_keep_seconds) + 12`` bytes per kept row (32 kB at the defaults), for at
            most ``2 * max_samples`` rows per set and rank.

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
        # or, with validation_step returning {"real_images": x, "fake_images": fake}:
        # EmbeddingMonitor(embedder=lightning_embviz.embedders.dinov2("facebook/dinov2-base"))
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

        With ``extra_metrics`` (no intervals for these; NaN with one warning when one cannot
        be computed, e.g. Vendi with a row of zero norm):

        - ``"vendi"``: ``embviz/vendi`` and ``embviz/vendi_real``, the Vendi score (cosine
          kernel, an effective number of distinct samples) of the fakes and of the reals;
          mode collapse shows as ``vendi`` falling below ``vendi_real``.
        - ``"kd"``: ``embviz/kd``, the KID statistic on the full sets (unbiased MMD^2,
          cubic polynomial kernel; small negative values are legitimate for equal
          distributions), and ``embviz/kd_se``, its jackknife standard error.
        - ``"fd_inf"``: ``embviz/fd_inf``, the Fréchet distance extrapolated to infinitely
          many fakes (fake subsets of 5 sizes, seeded by ``seed``), comparable across
          validation sizes.
        - ``"clipped"``: ``embviz/clipped_density`` and ``embviz/clipped_coverage``, density
          and coverage calibrated to about 1 for identical distributions (first k).

        With ``train`` (:func:`lightning_embviz.memorization.compute_memorization` on the
        fakes, the validation reals held out; NaN with one warning when a value cannot be
        computed):

        - ``embviz/authenticity``: fraction of fakes farther from their nearest training
          sample than that sample is from its own nearest training neighbour (Alaa et al.
          2022); drops when the generator copies.
        - ``embviz/ct_score``: the C_T data-copying statistic (Meehan et al. 2020) over
          k-means cells of the training set: about 0 for an honest generator, strongly
          negative when it copies, positive when it underfits (NaN when no cell holds 20
          fakes and a held-out real).
        - ``embviz/copy_fraction``: fraction of fakes closer to the training set than the
          ``memorization_alpha`` quantile of the held-out reals' nearest-train distances;
          about ``memorization_alpha`` for an honest generator.
        - With ``train_images`` and images under ``fake_images_key``: the gallery
          ``embviz/closest_train``, the ``gallery_size`` fakes closest to the training set,
          each beside its nearest training image, closest first, with the distance.
        - The per-fake table ``embviz/samples_fake`` gains ``nearest_train_index`` and
          ``nearest_train_distance`` (-1 and NaN for a fake that could not be compared).

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
        embedder: Optional[torch.nn.Module] = None,
        embed_batch_size: int = 64,
        extra_metrics: Sequence[str] = (),
        train: Optional[Any] = None,
        train_images: Optional[Any] = None,
        memorization_alpha: float = 0.05,
        sample_rate: Optional[int] = None,
        real_audio_key: str = "real_audio",
        fake_audio_key: str = "fake_audio",
        groups_key: str = "groups",
        audio_keep_rate: int = 8000,
        audio_keep_seconds: float = 2.0,
    ) -> None:
        # Every argument above, by name (checked, with the same messages, in `config`).
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.config = MonitorConfig.from_arguments(**arguments)
        # The checked arguments, also as attributes (`monitor.nearest_ks`, `monitor.views`).
        for field in dataclasses.fields(self.config):
            setattr(self, field.name, getattr(self.config, field.name))
        self.nearest_k, self.keys = self.config.nearest_k, self.config.keys
        self._evaluator = RunEvaluator(self.config)
        self._embedding: Optional[BatchEmbedder] = None
        embedder = self.config.embedder
        if embedder is not None:
            c = self.config
            keys = (c.real_key, c.fake_key, c.real_images_key, c.fake_images_key)
            self._embedding = BatchEmbedder(embedder, c.embed_batch_size, keys)
        self._figures = MonitorFigures(self.config)
        self._runs = 0  # validation runs with logged metrics
        self._last_step = -1
        self._contract_checked = False
        self._checkpoint: Optional[CheckpointPosition] = None
        self._saved_position: Optional[tuple[Optional[int], Optional[int]]] = None
        self._warned: set[str] = set()
        self._reset_run_state()

    @property
    @override
    def state_key(self) -> str:
        """Key of this callback's state in a checkpoint; differs when the arguments differ."""
        config = self.config
        return self._generate_state_key(
            nearest_k=config.nearest_k if len(config.nearest_ks) == 1 else config.nearest_ks,
            prefix=config.prefix,
            real_key=config.real_key,
            fake_key=config.fake_key,
        )

    def _reset_run_state(self) -> None:
        self._measuring = False
        self._checking = False
        self._collectors: dict[int, RunCollector] = {}

    def _warn_once(self, key: Optional[str], message: str) -> None:
        if key is None:
            warn(message)
        elif key not in self._warned:
            self._warned.add(key)
            warn(message)

    # ------------------------------------------------------------------ collecting

    @override
    def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        """Decide whether this run is measured or only checked, and reset the buffers."""
        self._reset_run_state()
        if is_sanity_checking(trainer):
            self._checking = True  # check the contract on every sanity batch, log nothing
            return
        fitting = is_fitting(trainer)
        if fitting and (trainer.current_epoch + 1) % self.config.every_n_epochs != 0:
            # Not measured; still check the first batch if no sanity check did.
            self._checking = not self._contract_checked
            return
        self._measuring = True
        # embedder= with train_images= alone: embedded once (every rank), then reused.
        problem = self._evaluator.prepare(getattr(pl_module, "device", None))
        if problem is not None:
            self._warn_once("train_images", problem)
        if not fitting and self._checkpoint is not None and self._checkpoint.step is not None:
            # validate(ckpt_path=...): log at the step (and epoch) of the checkpoint's
            # training validation; undone in `on_validation_end`.
            saved = move_to_checkpoint(trainer, self._checkpoint)
            if self._saved_position is None:
                self._saved_position = saved

    @override
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
        config = self.config
        where = f"dataloader {dataloader_idx}, batch {batch_idx}"
        source = "`validation_step`"
        if config.embed is not None:
            with torch.no_grad():
                outputs = config.embed(pl_module, batch)
            source = "`embed(pl_module, batch)`"
        if self._embedding is not None:
            outputs, problem = self._embedding.embed(
                outputs,
                getattr(pl_module, "device", None),
                source=source,
                where=where,
                strict=not (self._measuring and self._contract_checked),
            )
            if problem is not None:
                self._warn_once("embedder", problem)
        parsed = parse_outputs(
            outputs,
            config.keys,
            source=source,
            where=where,
            keep_on_device=config.keep_on_device,
            thumbnail_side=config.thumbnail_size,
            # After the contract check, bad images drop the galleries instead of the run.
            strict_images=not (self._measuring and self._contract_checked),
        )
        strict_audio = not (self._measuring and self._contract_checked)
        self._contract_checked = True
        if not self._measuring:
            parse_audio(outputs, config, len(parsed.real), len(parsed.fake), where)
            self._checking = is_sanity_checking(trainer)
            return
        collector = self._collectors.get(dataloader_idx)
        if collector is None:
            loaders = flatten_dataloaders(getattr(trainer, "val_dataloaders", None))
            collector = RunCollector(
                config,
                getattr(trainer, "global_rank", 0),
                getattr(trainer, "world_size", 1),
                loaders[dataloader_idx] if dataloader_idx < len(loaders) else None,
                dataloader_idx,
            )
            self._collectors[dataloader_idx] = collector
        audio, problem = collector.audio.admit(
            outputs, config, len(parsed.real), len(parsed.fake), where, strict_audio
        )
        if problem is not None:
            self._warn_once("audio", problem)
        for once, message in collector.add(parsed, batch_idx, where, audio):
            self._warn_once(once, message)

    # ------------------------------------------------------------------ computing

    @override
    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Gather, compute and log the metrics; start the figures."""
        self._poll(trainer, wait=False)
        if not self._measuring:
            return
        try:
            counts = list(getattr(trainer, "num_val_batches", []) or [])
            n_loaders = max(len(counts), max(self._collectors, default=-1) + 1, 1)
            step = loop_step(trainer)
            logged = [
                self._finish(trainer, pl_module, idx, n_loaders, step) for idx in range(n_loaders)
            ]
            if any(logged):
                self._runs += 1
                self._last_step = step
        finally:
            self._reset_run_state()

    def _finish(self, trainer: Any, pl_module: Any, idx: int, n_loaders: int, step: int) -> bool:
        """Evaluate and log one dataloader's run; True if its metrics were computed."""
        config = self.config
        collector = self._collectors.pop(idx, None) or RunCollector(config)
        device = torch.device("cpu")
        if config.keep_on_device:
            device = torch.device(getattr(pl_module, "device", "cpu"))
        distributed = is_distributed(trainer)
        real, fake, local_images = collector.sets(device, distributed)
        outcome, result, notes = self._evaluator.run(
            real,
            fake,
            dataloader_idx=idx,
            where=f" of validation dataloader {idx}" if n_loaders > 1 else "",
            rank_zero=trainer.is_global_zero,
            distributed=distributed,
            device=device,
        )
        del real, fake
        for once, message in notes:
            self._warn_once(once, message)
        # A skipped or failed run logs NaN, so that monitors find their key (ModelCheckpoint
        # ranks NaN last; EarlyStopping stops on it unless `check_finite=False`) and the
        # curves show the gap. Through Lightning's loggers (so `validate` returns the values
        # too); without a logger during `fit` there is nothing to write, and Lightning would
        # warn per key.
        suffix = f"/dataloader_idx_{idx}" if n_loaders > 1 else ""
        to_loggers = bool(trainer.loggers) or not is_fitting(trainer)
        for name, value in outcome.metrics.items():
            pl_module.log(
                f"{config.prefix}{name}{suffix}",
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
        if outcome.computed and (config.gallery_size or config.log_samples):
            sample_views, problem = select_samples(
                result,
                local_images,
                gallery_size=config.gallery_size,
                tables=config.log_samples,
                distributed=distributed,
                images_dropped=collector.images.dropped,
            )
            if problem is not None:
                self._warn_once("samples", problem)
            if sample_views is not None and result is not None and result.memorization:
                sample_views.fake_columns.update(result.memorization)  # nearest_train_*
            if sample_views is not None and result is not None:
                sample_views.fake_columns.update(result.fake_columns)  # realism, rarity
        if outcome.computed and config.train_images is not None and config.gallery_size:
            # Every rank: the shown fakes' thumbnails are gathered (a collective).
            draw, problem = closest_train_gallery(
                result,
                local_images,
                count=config.gallery_size,
                train_images=config.train_images,
                distributed=distributed,
            )
            if problem is not None:
                self._warn_once("closest_train", problem)
            if draw is not None and result is not None:
                result.figures["closest_train"] = draw
        if outcome.computed:
            # Every rank: the shown clips are gathered (a collective); rank 0 logs them and
            # the per-group table at the scalars' step.
            problem = finish_audio(
                result if result is not None and result.status == OK else None,
                collector.local_audio,
                config,
                distributed=distributed,
                loggers=trainer.loggers,
                step=step,
                suffix=suffix,
                root=getattr(trainer, "default_root_dir", None),
            )
            if problem is not None:
                self._warn_once("audio-run", problem)
        if result is not None and result.status == OK:
            epoch = trainer.current_epoch  # the checkpoint's under validate(ckpt_path=...)
            head = f"epoch {epoch}, step {step}"
            if not is_fitting(trainer) and self._checkpoint is not None:
                head = f"checkpoint: {head}"
            head += f", dataloader {idx}" if n_loaders > 1 else ""
            queued = self._figures.submit(
                trainer.loggers, idx, result, head, sample_views, step=step, suffix=suffix
            )
            if queued and not config.background:
                self._poll(trainer, wait=True)
        return outcome.computed

    # ------------------------------------------------------------------ figures

    def _poll(self, trainer: Any, wait: bool) -> None:
        """Log the figures of finished jobs, oldest first (all of them when ``wait``)."""
        root = getattr(trainer, "default_root_dir", None)
        self._figures.log_finished(trainer.loggers, root, wait)

    @override
    def on_train_batch_end(self, trainer: Any, *args: Any, **kwargs: Any) -> None:
        """Log the figures that the background worker has finished."""
        if self._figures.worker.has_finished:
            self._poll(trainer, wait=False)

    @override
    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Log the figures that the background worker has finished."""
        self._poll(trainer, wait=False)

    @override
    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Outside ``fit``: wait for this run's figures and undo the step change."""
        if not is_fitting(trainer):
            self._poll(trainer, wait=True)
            self._restore_loop_step(trainer)

    @override
    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        """Wait for the background worker and log every remaining figure."""
        self._poll(trainer, wait=True)

    def _restore_loop_step(self, trainer: Any) -> None:
        if self._saved_position is not None:
            restore_position(trainer, self._saved_position)
            self._saved_position = None

    @override
    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        """Log what is left, stop the worker thread, forget the loaded checkpoint."""
        try:
            self._poll(trainer, wait=True)
        finally:
            self._figures.worker.close()
            self._reset_run_state()
            self._restore_loop_step(trainer)
            self._checkpoint = None

    @override
    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Stop the worker without logging: the run is failing."""
        self._figures.worker.cancel()

    # ------------------------------------------------------------------ state

    @override
    def on_load_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        """Remember where the checkpoint sits, for ``trainer.validate(ckpt_path=...)``."""
        self._checkpoint = checkpoint_position(checkpoint)

    @override
    def state_dict(self) -> dict[str, Any]:
        """Counters and the projection frames; plain tensors and Python scalars only."""
        return {
            "version": _STATE_VERSION,
            "runs": self._runs,
            "last_step": self._last_step,
            "views": self._figures.state_dict(),
        }

    @override
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
        self._figures.load_state_dict(state_dict.get("views", {}))
