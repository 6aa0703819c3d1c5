"""Train a small GAN on scikit-learn's 8x8 digits and watch it learn with EmbeddingMonitor.

Everything runs on CPU in a few minutes and downloads no data: the digits ship inside
scikit-learn.

1. A small classifier is trained on the digits first (a few seconds). Like the Inception
   network behind FID, it is then frozen: its penultimate-layer features are the
   embeddings, the true labels of the real digits and its predicted labels of the
   generated ones drive the per-class views.
2. An unconditional GAN (two MLPs, manual optimization) is trained with Lightning.
3. After every epoch, ``EmbeddingMonitor`` embeds a held-out set of real digits and the
   generator's output on a fixed noise set, logs precision, recall, density, coverage
   and the Fréchet distance, and draws where the fakes land among the reals.
4. ``ModelCheckpoint`` keeps the checkpoints with the best ``embviz/coverage``, plus
   periodic ones for ``compare_checkpoints.py``.

Lightning's progress bar shows the training, one line per epoch with the coverage and the
modes hit of that epoch's validation; Lightning's sanity check runs first, so a broken
``validation_step`` fails before the first training step.

Run::

    python examples/gan_digits.py                    # about 3 minutes on 2 CPU cores
    tensorboard --logdir outputs/gan_digits/tensorboard --samples_per_plugin images=1000

TensorBoard keeps only 10 images per tag unless ``--samples_per_plugin`` says otherwise,
so without the flag a 30-epoch run would show the figures of only 10 of its epochs. It
opens on TIME SERIES and smooths curves (weight 0.6); ``?smoothing=0`` in the address
(http://localhost:6006/?smoothing=0#timeseries) shows the logged values.

Flags: ``--epochs``, ``--out``, ``--logger {tensorboard,csv,mlflow,wandb,none}``,
``--quick`` (a few-second smoke run), ``--seed``, ``--overwrite`` (replace an earlier run
in ``--out``), ``--memorize [SHARE]`` (see below).

Memorization (``--memorize``, ``--memorize 0.5``): from the middle epoch on, a share of the
fakes (default 0.25) are copies of training digits plus tiny noise, as a generator that
memorizes its training set would produce. The monitor is also given the training set
(``train=``: the embedding net's features of the training digits, fitted once as a
``TrainReference``; ``train_images=``: the digits themselves), so it logs
``embviz/authenticity``, ``embviz/ct_score`` and ``embviz/copy_fraction`` every epoch and
the ``embviz/closest_train`` gallery (the fakes closest to the training set, each beside
its nearest training digit). The curves jump when the copying starts; the run prints the
numbers of the last honest and the last copying epoch. The copying is not in the
generator's weights: ``compare_checkpoints.py`` replays the honest generator.

    python examples/gan_digits.py --memorize --out outputs/gan_digits_memorize
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional, cast

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.core.optimizer import LightningOptimizer
from sklearn.datasets import load_digits
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from lightning_embviz import EmbeddingMonitor
from lightning_embviz.memorization import TrainReference

IMAGE_SIZE = 8
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE
N_CLASSES = 10
EMBED_DIM = 32

# Logged by the module itself, next to the callback's embviz/* keys.
MODES_KEY = "gan/modes_hit"

# Logged by the callback with `train=` (--memorize).
MEMORIZATION_KEYS = ("embviz/authenticity", "embviz/ct_score", "embviz/copy_fraction")
DEFAULT_COPY_SHARE = 0.25

# ----------------------------------------------------------------------------- data


def load_digit_splits(n_val: int = 500, seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Load scikit-learn's digits and split them into a training and a held-out set.

    Pixels (0..16) are scaled to [-1, 1], the range of the generator's ``tanh``. The split
    is stratified by class and depends only on ``seed``.

    Args:
        n_val: number of held-out real digits used for validation (at most 1000).
        seed: seed of the split.

    Returns:
        ``x_train`` (N, 64), ``y_train`` (N,), ``x_val`` (n_val, 64), ``y_val`` (n_val,).
    """
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32) / 8.0 - 1.0
    y = digits.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=n_val, stratify=y, random_state=seed
    )
    return (
        torch.from_numpy(x_train),
        torch.from_numpy(y_train),
        torch.from_numpy(x_val),
        torch.from_numpy(y_val),
    )


class DigitsData(pl.LightningDataModule):
    """Training digits for the GAN; held-out digits paired with a fixed noise set.

    An epoch is ``steps_per_epoch`` batches drawn with replacement. Every validation
    batch is ``(real_images, real_labels, noise)``, so that the same
    noise vectors are turned into fakes at every epoch and the views are comparable.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        n_val: int = 500,
        batch_size: int = 64,
        steps_per_epoch: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.n_val = n_val
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.seed = seed
        self.x_train, self.y_train, self.x_val, self.y_val = load_digit_splits(n_val, seed)
        gen = torch.Generator().manual_seed(seed + 12345)
        self.val_noise = torch.randn(n_val, latent_dim, generator=gen)

    def train_dataloader(self) -> DataLoader:
        # Sampling with replacement decouples the epoch length (one validation run,
        # one point on each curve) from the small size of the data set.
        sampler = RandomSampler(
            self.x_train,
            replacement=True,
            num_samples=self.steps_per_epoch * self.batch_size,
            generator=torch.Generator().manual_seed(self.seed),
        )
        return DataLoader(TensorDataset(self.x_train), batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            TensorDataset(self.x_val, self.y_val, self.val_noise),
            batch_size=250,
            shuffle=False,
        )


# ----------------------------------------------------------------- embedding network


class DigitClassifier(nn.Module):
    """A small MLP classifier whose penultimate layer is the embedding (the "FID net")."""

    def __init__(self, hidden: int = 128, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(N_PIXELS, hidden),
            nn.ReLU(),
            nn.Linear(hidden, embed_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(embed_dim, N_CLASSES)

    def features(self, x: Tensor) -> Tensor:
        """Embed images (B, 64) into features (B, embed_dim)."""
        return self.body(x.reshape(len(x), -1))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (B, 10)."""
        return self.head(self.features(x))


def train_classifier(
    x: Tensor, y: Tensor, *, steps: int = 300, seed: int = 0
) -> tuple[DigitClassifier, float]:
    """Train the embedding network on the training digits (full batch, a few seconds).

    Light pixel noise during training makes its features less brittle on generated
    images, much as the data augmentation of a real FID network does.

    Returns:
        The trained classifier in eval mode and its training accuracy.
    """
    torch.manual_seed(seed)
    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(steps):
        opt.zero_grad()
        noisy = x + 0.1 * torch.randn_like(x)
        loss = F.cross_entropy(net(noisy), y)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        accuracy = float((net(x).argmax(1) == y).float().mean())
    return net, accuracy


# ------------------------------------------------------------------------------ GAN


def _mlp(
    sizes: list[int], out_act: Optional[nn.Module], *, batch_norm: bool = False
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(sizes[i + 1]))
            layers.append(nn.LeakyReLU(0.2))
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


class DigitsGAN(pl.LightningModule):
    """An unconditional MLP GAN on 8x8 digits, with a frozen classifier as embedding net.

    ``validation_step`` returns ``{"real": ..., "fake": ..., "labels": ...}`` for
    ``EmbeddingMonitor``: embeddings of held-out real digits and of fakes generated from
    a fixed noise set, the true labels of the reals and the classifier's predicted labels
    of the fakes.
    """

    def __init__(
        self,
        latent_dim: int = 32,
        hidden: int = 256,
        lr: float = 2e-4,
        seed: int = 0,
        n_val: int = 500,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimizers: Lightning 2.x manual mode
        self.generator = _mlp(
            [latent_dim, hidden // 2, hidden, N_PIXELS], nn.Tanh(), batch_norm=True
        )
        self.discriminator = _mlp([N_PIXELS, hidden, hidden // 2, 1], None)
        self.classifier = DigitClassifier()
        self.classifier.requires_grad_(False)
        self._fake_classes: list[Tensor] = []

    def set_classifier(self, classifier: DigitClassifier) -> None:
        """Copy trained embedding-network weights in (they travel with the checkpoints)."""
        self.classifier.load_state_dict(classifier.state_dict())
        self.classifier.requires_grad_(False)

    def forward(self, z: Tensor) -> Tensor:
        """Generate images (B, 64) in [-1, 1] from noise (B, latent_dim)."""
        return self.generator(z)

    def embed(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Embeddings (B, 32) and predicted classes (B,) from the frozen classifier."""
        self.classifier.eval()
        with torch.no_grad():
            feats = self.classifier.features(images)
            classes = self.classifier.head(feats).argmax(1)
        return feats, classes

    def training_step(self, batch: list[Tensor], batch_idx: int) -> None:
        (real,) = batch
        opt_g, opt_d = cast("list[LightningOptimizer]", self.optimizers())
        z = torch.randn(len(real), self.hparams["latent_dim"], device=self.device)
        ones = torch.ones(len(real), 1, device=self.device)
        zeros = torch.zeros_like(ones)

        # Discriminator: real -> 1, fake -> 0.
        fake = self.generator(z)
        d_loss = F.binary_cross_entropy_with_logits(
            self.discriminator(real), ones
        ) + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros)
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()

        # Generator: non-saturating loss.
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()

        self.log_dict({"loss/d": d_loss, "loss/g": g_loss}, on_step=False, on_epoch=True)

    def validation_fakes(self, z: Tensor) -> Tensor:
        """The fakes (B, 64) that validation measures: the generator's output for ``z``."""
        return self.generator(z)

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> dict[str, Any]:
        real, labels, z = batch
        fake = self.validation_fakes(z)
        emb_real, _ = self.embed(real)
        emb_fake, fake_classes = self.embed(fake)
        self._fake_classes.append(fake_classes)
        # True labels of the reals, the embedding net's predicted labels of the fakes; the
        # 8x8 images themselves for the missed-real and outlier-fake galleries.
        return {
            "real": emb_real,
            "fake": emb_fake,
            "labels": {"real": labels, "fake": fake_classes},
            "real_images": real.reshape(-1, 1, 8, 8),
            "fake_images": fake.reshape(-1, 1, 8, 8),
        }

    def on_validation_epoch_end(self) -> None:
        # Modes hit: classes that get at least half of their fair share of the fakes.
        if not self._fake_classes:
            return
        classes = torch.cat(self._fake_classes)
        self._fake_classes.clear()
        counts = torch.bincount(classes, minlength=N_CLASSES).float()
        hit = (counts >= 0.5 * len(classes) / N_CLASSES).sum()
        # Under `trainer.validate(ckpt_path=...)` with EmbeddingMonitor, Lightning logs this
        # at the step where the training run logged the checkpoint's validation.
        self.log(MODES_KEY, hit.float())

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        betas = (0.5, 0.999)
        lr = self.hparams["lr"]
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=betas)
        return [opt_g, opt_d]


class CopyingDigitsGAN(DigitsGAN):
    """:class:`DigitsGAN` whose validation fakes turn into near-copies of training digits.

    From epoch ``start_epoch`` on (:meth:`set_copying`), the fake of noise vector ``z``
    is, for a share of the noise vectors, a training digit plus tiny noise, instead of the
    generator's output: what a generator that memorized its training set outputs. Which
    noise vectors copy, which digit each copies and the noise are fixed functions of ``z``
    (``z[:, 0]`` decides, ``z[:, 1]`` picks the digit), so with the fixed validation noise
    the same fakes copy the same digits every epoch. Training is the plain GAN's; the
    copying is not in the weights or the hyperparameters (a checkpoint loads as a
    :class:`DigitsGAN`).
    """

    def set_copying(self, train_images: Tensor, share: float, start_epoch: int) -> None:
        """Copy ``train_images`` (N, 64) for a ``share`` of the fakes from ``start_epoch`` on."""
        self._copy_bank = train_images.detach().reshape(len(train_images), -1).clone()
        self._copy_share = float(share)
        self._copy_start = int(start_epoch)
        gen = torch.Generator().manual_seed(int(self.hparams["seed"]) + 777)
        self._copy_mix = torch.randn(self.hparams["latent_dim"], N_PIXELS, generator=gen)

    def copying(self) -> bool:
        """Whether this epoch's validation fakes include copies."""
        bank = getattr(self, "_copy_bank", None)
        return bank is not None and self.current_epoch >= self._copy_start

    def validation_fakes(self, z: Tensor) -> Tensor:
        fake = self.generator(z)
        if not self.copying():
            return fake
        bank = self._copy_bank.to(fake.device)
        normal_cdf = 0.5 * (1.0 + torch.erf(z[:, :2] / math.sqrt(2.0)))  # uniform in (0, 1)
        copies = normal_cdf[:, 0] < self._copy_share
        digit = (normal_cdf[:, 1] * len(bank)).long().clamp(max=len(bank) - 1)
        # Tiny noise, a fixed function of z: about 1 % of the pixel range.
        noise = 0.02 * torch.sin(97.0 * (z @ self._copy_mix.to(z.device)))
        copied = (bank[digit] + noise).clamp(-1.0, 1.0)
        return torch.where(copies[:, None], copied, fake)


# ----------------------------------------------------------------------- reporting

TABLE_KEYS = (
    "embviz/precision",
    "embviz/recall",
    "embviz/density",
    "embviz/coverage",
    "embviz/fd",
    MODES_KEY,
)


class MetricsHistory(Callback):
    """Remember the logged metrics of every validation run (for the table at the end)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch)}
        for key in TABLE_KEYS + MEMORIZATION_KEYS:
            value = trainer.callback_metrics.get(key)
            row[key] = float(value) if value is not None else math.nan
        self.rows.append(row)


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar, kept as one line per epoch, showing that epoch's validation.

    The line ends with the ``embviz/coverage`` and the modes hit of the epoch's validation
    (shown from the end of the epoch on) instead of Lightning's default ``v_num``.
    """

    def __init__(self) -> None:
        super().__init__(leave=True)

    def on_train_start(self, *_: Any) -> None:
        # With `leave=True` every epoch opens its own bar; the one Lightning opens here
        # would stay behind as an empty "Training: 0/?" line.
        pass

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = trainer.callback_metrics
        items: dict[str, Any] = {}
        if "embviz/coverage" in metrics:
            items["coverage"] = f"{float(metrics['embviz/coverage']):.3f}"
        if MODES_KEY in metrics:
            items["modes"] = int(metrics[MODES_KEY])
        return items


class HideLightningTips(logging.Filter):
    """Drop the advertising tips from Lightning's console messages (the others stay)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().lstrip("\N{ELECTRIC LIGHT BULB} ").startswith("Tip:")


def quiet_lightning() -> None:
    """Silence the warnings that do not apply to this tiny CPU example, and Lightning's tips."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # torch vs Lightning
    # Lightning logs through one of these, depending on which of its packages came last.
    for package in (
        "pytorch_lightning",
        "lightning_fabric",
        "lightning.pytorch",
        "lightning.fabric",
    ):
        logging.getLogger(f"{package}.utilities.rank_zero").addFilter(HideLightningTips())


def format_table(rows: list[dict[str, float]]) -> str:
    """Format the per-epoch metrics as a fixed-width text table."""
    names = ["epoch", "precision", "recall", "density", "coverage", "fd", "modes"]
    lines = ["  ".join(f"{n:>9}" for n in names)]
    for row in rows:
        cells = [f"{int(row['epoch']):>9d}"]
        cells += [f"{row[k]:>9.3f}" for k in TABLE_KEYS[:5]]
        modes = row[MODES_KEY]
        cells.append(f"{int(modes):>9d}" if not math.isnan(modes) else f"{'-':>9}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def format_memorization_table(rows: list[dict[str, float]], start_epoch: int) -> str:
    """The memorization numbers per epoch as a text table; copying epochs are marked."""
    names = ["epoch", "authenticity", "ct_score", "copy_fraction", "fakes"]
    lines = ["  ".join(f"{n:>13}" for n in names)]
    for row in rows:
        cells = [f"{int(row['epoch']):>13d}"]
        cells += [f"{row[k]:>13.3f}" for k in MEMORIZATION_KEYS]
        cells.append(f"{'copying' if row['epoch'] >= start_epoch else 'honest':>13}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def memorization_summary(rows: list[dict[str, float]], start_epoch: int) -> str:
    """One line each for the last honest and the last copying epoch's numbers."""
    lines = []
    for label, picked in (
        ("honest", [r for r in rows if r["epoch"] < start_epoch]),
        ("copying", [r for r in rows if r["epoch"] >= start_epoch]),
    ):
        if not picked:
            continue
        row = picked[-1]
        values = ", ".join(f"{k.split('/')[1]} {row[k]:.3f}" for k in MEMORIZATION_KEYS)
        lines.append(f"{label:>8} (epoch {int(row['epoch'])}): {values}")
    return "\n".join(lines)


def train_reference(classifier: DigitClassifier, x_train: Tensor, n_val: int) -> TrainReference:
    """The training digits' embeddings, fitted once for ``EmbeddingMonitor(train=...)``.

    Fewer k-means cells than the default 20, so that the C_T test (``ct_score``) finds
    20 fakes in most cells of the ``n_val`` fakes (10 cells at 500, 4 at 200).
    """
    with torch.no_grad():
        features = classifier.features(x_train)
    return TrainReference(features, n_cells=max(2, n_val // 50))


# ---------------------------------------------------------------------------- main


def make_logger(kind: str, out: Path) -> Any:
    """Build the requested Lightning logger writing under ``out`` (``False`` for none)."""
    if kind == "tensorboard":
        from pytorch_lightning.loggers import TensorBoardLogger

        # A named version: `compare_checkpoints.py` writes its run next to it ("compare"),
        # so one TensorBoard shows both on one step axis. No `hp_metric`: Lightning's
        # placeholder (one point, -1 at step 0) would add a meaningless card to TIME SERIES.
        return TensorBoardLogger(
            save_dir=str(out), name="tensorboard", version="train", default_hp_metric=False
        )
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=str(out), name="csv")
    if kind == "mlflow":
        from pytorch_lightning.loggers import MLFlowLogger

        # A local SQLite store (MLflow's file store is deprecated); artifacts next to it.
        return MLFlowLogger(
            experiment_name="gan_digits",
            tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}",
            artifact_location=(out / "mlartifacts").resolve().as_uri(),
        )
    if kind == "wandb":
        from pytorch_lightning.loggers import WandbLogger

        os.environ.setdefault("WANDB_MODE", "offline")
        return WandbLogger(project="gan_digits", save_dir=str(out))
    if kind == "none":
        return False
    raise ValueError(
        f"`--logger {kind}` is not supported; choose one of tensorboard, csv, mlflow, wandb, none."
    )


def tensorboard_command(log_dir: Path) -> str:
    """The TensorBoard command for ``log_dir``, keeping up to 1000 figures per tag.

    TensorBoard keeps only 10 images per tag by default, so a 30-epoch run would show the
    figures of only 10 of its epochs.
    """
    return f"tensorboard --logdir {log_dir} --samples_per_plugin images=1000"


# TensorBoard opens on TIME SERIES and smooths every curve (weight 0.6) by default: a
# comparison run with a few points would then be drawn below the training run's curve,
# although both hold the same values at those steps. `?smoothing=0` turns it off.
TENSORBOARD_URL = "http://localhost:6006/?smoothing=0#timeseries"
TENSORBOARD_HINT = (
    f"then browse to {TENSORBOARD_URL} (TIME SERIES, smoothing off; "
    "use the port tensorboard prints if it is not 6006)"
)


# What a run writes into `--out` (the logs of other loggers get a new version each run).
RUN_OUTPUTS = ("checkpoints", "compare", "tensorboard/train", "tensorboard/compare")


def clear_previous_run(out: Path, overwrite: bool) -> None:
    """Refuse to mix two runs in ``out``, or (``overwrite``) remove the earlier run's outputs.

    The TensorBoard run has a fixed name and the checkpoints fixed folders: a second run
    into the same folder would interleave its curves with the first run's and leave its
    checkpoints next to the old ones.

    Raises:
        SystemExit: ``out`` holds an earlier run and ``overwrite`` is false.
    """
    found = [out / name for name in RUN_OUTPUTS if (out / name).exists()]
    if not found:
        return
    if not overwrite:
        raise SystemExit(
            f"{out} already holds a run ({', '.join(map(str, found))}); pass --overwrite "
            "to replace it, or choose another folder with --out."
        )
    for path in found:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    print(f"removed the earlier run in {out}: {', '.join(map(str, found))}")


def open_command(kind: str, out: Path) -> Optional[str]:
    """The one command that opens the logged run, or None."""
    if kind == "tensorboard":
        return tensorboard_command(out / "tensorboard")
    if kind == "mlflow":
        return f"mlflow ui --backend-store-uri sqlite:///{(out / 'mlflow.db').resolve()}"
    if kind == "csv":
        return f"ls {out / 'csv'}  # metrics.csv and the PNG figures"
    if kind == "wandb":
        return f"wandb sync {out / 'wandb'}/offline-run-*  # offline run: uploads it"
    return None


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line flags of the example."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of 100 steps (default 30; --quick: 2 of 50 steps)",
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/gan_digits"))
    parser.add_argument(
        "--logger",
        choices=["tensorboard", "csv", "mlflow", "wandb", "none"],
        default="tensorboard",
    )
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accelerator", default="cpu", help="Lightning accelerator")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the checkpoints and TensorBoard logs of an earlier run in --out",
    )
    parser.add_argument(
        "--memorize",
        type=float,
        nargs="?",
        const=DEFAULT_COPY_SHARE,
        default=None,
        metavar="SHARE",
        help="from the middle epoch on, a SHARE of the fakes (default "
        f"{DEFAULT_COPY_SHARE}) copy training digits; log the memorization numbers and "
        "the closest_train gallery",
    )
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.quick else 30
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.memorize is not None and not 0.0 < args.memorize <= 1.0:
        parser.error(f"--memorize SHARE must be in (0, 1], got {args.memorize}")
    return args


def main(argv: Optional[list[str]] = None) -> list[dict[str, float]]:
    """Train the embedding net, then the GAN; print the metrics table and how to look.

    Returns:
        One dict of logged metrics per validation run.
    """
    args = parse_args(argv)
    out: Path = args.out
    clear_previous_run(out, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    quiet_lightning()
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")

    # The networks are tiny: one thread is fastest, and it leaves the other cores to the
    # callback's background projections.
    torch.set_num_threads(1)
    n_val = 200 if args.quick else 500
    data = DigitsData(n_val=n_val, steps_per_epoch=50 if args.quick else 100, seed=args.seed)

    t0 = time.perf_counter()
    classifier, accuracy = train_classifier(
        data.x_train, data.y_train, steps=60 if args.quick else 300, seed=args.seed
    )
    with torch.no_grad():
        val_acc = float((classifier(data.x_val).argmax(1) == data.y_val).float().mean())
    print(
        f"embedding net: train accuracy {accuracy:.3f}, held-out accuracy {val_acc:.3f} "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    # The same weights and training either way: the copying only changes validation's fakes.
    model = (DigitsGAN if args.memorize is None else CopyingDigitsGAN)(seed=args.seed, n_val=n_val)
    options: dict[str, Any] = {}
    copy_start = args.epochs // 2
    if isinstance(model, CopyingDigitsGAN):
        model.set_copying(data.x_train, args.memorize, copy_start)
        options.update(
            train=train_reference(classifier, data.x_train, n_val),
            train_images=data.x_train.reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE),
        )
        print(
            f"memorizing: from epoch {copy_start} on, {args.memorize:.0%} of the fakes copy "
            f"one of the {len(data.x_train)} training digits"
        )
    model.set_classifier(classifier)

    views = ("pca",) if args.quick else ("pca", "tsne")
    try:
        monitor = EmbeddingMonitor(nearest_k=5, views=views, background=not args.quick, **options)
    except ModuleNotFoundError as err:  # t-SNE needs the [tsne] extra
        print(f"note: {err} Drawing PCA views only.")
        monitor = EmbeddingMonitor(
            nearest_k=5, views=("pca",), background=not args.quick, **options
        )
    history = MetricsHistory()
    ckpt_dir = out / "checkpoints"
    best = ModelCheckpoint(
        dirpath=ckpt_dir / "best",
        filename="epoch{epoch:03d}-coverage{embviz/coverage:.3f}",
        auto_insert_metric_name=False,
        monitor="embviz/coverage",
        mode="max",
        save_top_k=3,
    )
    periodic = ModelCheckpoint(
        dirpath=ckpt_dir / "periodic",
        filename="epoch{epoch:03d}",
        auto_insert_metric_name=False,
        every_n_epochs=1 if args.quick else max(1, args.epochs // 5),
        save_top_k=-1,
        save_last=True,
    )
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=1,
        max_epochs=args.epochs,
        logger=make_logger(args.logger, out),
        callbacks=[monitor, history, best, periodic, EpochProgressBar()],
        default_root_dir=str(out),
        log_every_n_steps=10,
        enable_model_summary=False,
        deterministic=True,
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=data)
    print(f"\nGAN trained for {args.epochs} epochs in {time.perf_counter() - t0:.1f} s")

    print("\nmetrics per epoch (held-out real digits vs fakes from a fixed noise set):")
    print(format_table(history.rows))
    if args.memorize is not None:
        print("\nmemorization per epoch (fakes vs the training digits, held-out digits as H):")
        print(format_memorization_table(history.rows, copy_start))
        print("\n" + memorization_summary(history.rows, copy_start))
    if best.best_model_path:
        print(f"\nbest checkpoint by embviz/coverage: {best.best_model_path}")
    print(f"all checkpoints: {ckpt_dir}")
    command = open_command(args.logger, out)
    if command:
        print(f"\nopen the run with:\n    {command}")
        if args.logger == "tensorboard":
            print(TENSORBOARD_HINT)
    compare = os.path.relpath(Path(__file__).resolve().with_name("compare_checkpoints.py"))
    print(f"compare the checkpoints with:\n    python {compare} --run {out}")
    return history.rows


if __name__ == "__main__":
    main()
