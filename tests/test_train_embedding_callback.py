"""``EmbeddingMonitor(embedder=..., train_images=...)`` without ``train=``: the training
images are embedded once, by the same embedder, and are the training set.

Real ``fit()`` runs with Lightning's defaults (sanity check, TensorBoard logger); the logged
memorization scalars equal :func:`~lightning_embviz.memorization.compute_memorization` on
the embedder's own outputs for the training, validation-real and fake images; the training
images go through the embedder once (eval mode, no gradients, ``embed_batch_size`` rows);
a failure to embed them warns and logs NaN, training goes on.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_embviz import EmbeddingMonitor
from lightning_embviz.memorization import compute_memorization

SIDE = 4
N_TRAIN, N_VAL = 12, 24
KEYS = ("authenticity", "ct_score", "copy_fraction")


class Net(torch.nn.Module):
    """A user's image embedder (dropout: it must run in eval mode); records its calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * SIDE * SIDE, 4), torch.nn.Dropout(0.5)
        )
        self.calls: list[tuple[bool, bool, int]] = []  # (training, grad enabled, rows)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls.append((self.training, torch.is_grad_enabled(), len(images)))
        return self.net(images.float())


class CopyingGAN(pl.LightningModule):
    """Returns images only; half of its fakes are training images plus tiny noise."""

    def __init__(self, train_images: torch.Tensor) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = torch.nn.Linear(4, 3 * SIDE * SIDE)
        self.copies = train_images[: N_VAL // 4]
        self.seen: list[dict[str, torch.Tensor]] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.generator(torch.randn(2, 4)).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        (real,) = batch
        z = torch.randn(len(real), 4)
        fake = torch.sigmoid(self.generator(z)).view(len(real), 3, SIDE, SIDE)
        half = len(real) // 2
        fake = torch.cat([self.copies[:half] + 1e-3, fake[half:]])
        out = {"real_images": real, "fake_images": fake}
        if not self.trainer.sanity_checking:
            self.seen.append({k: v.detach().clone() for k, v in out.items()})
        return out

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _fit(tmp_path: Path, model: CopyingGAN, monitor: EmbeddingMonitor, epochs: int) -> Any:
    g = torch.Generator().manual_seed(2)
    val = TensorDataset(torch.rand(N_VAL, 3, SIDE, SIDE, generator=g))
    trainer = pl.Trainer(
        callbacks=[monitor],
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        limit_train_batches=1,
        default_root_dir=str(tmp_path),
        enable_progress_bar=False,
    )
    train = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=4)
    trainer.fit(model, train, DataLoader(val, batch_size=8))
    return trainer


def _scalars(trainer: Any, key: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    if key == "closest_train":
        return {e.step: 1.0 for e in acc.Images("embviz/closest_train")}
    return {e.step: e.value for e in acc.Scalars(f"embviz/{key}")}


def _embed(net: Net, images: torch.Tensor) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        out = net.net(images.float())
    return out.double().numpy()


class Items(torch.utils.data.Dataset):
    """Training images as a dataset of (image, label) items, as users hold them."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], i % 3


def test_training_images_are_embedded_once_and_measured(tmp_path: Path) -> None:
    images = torch.rand(N_TRAIN, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(5))
    net = Net().train()
    model = CopyingGAN(images)
    monitor = EmbeddingMonitor(
        nearest_k=3,
        views=None,
        embedder=net,
        embed_batch_size=5,
        train_images=Items(images),
        gallery_size=4,
        background=False,
    )
    assert monitor.train is None  # fitted at the first measured run, not here
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _fit(tmp_path, model, monitor, epochs=2)
    assert not [w for w in caught if "training images" in str(w.message)]

    # The training images went through the embedder once (12 rows in chunks of 5), in
    # eval mode without gradients; the embedder's own flag is back.
    assert net.training
    assert all(not training and not grad for training, grad, _ in net.calls)
    sanity_rows = 2 * 2 * 8  # two sanity batches, real and fake
    val_rows = 2 * 2 * N_VAL  # two epochs, real and fake
    rows = [r for _, _, r in net.calls]
    assert sum(rows) == sanity_rows + N_TRAIN + val_rows
    # The sanity check's 4 sets of 8 rows in chunks of 5 (5 + 3), then the training set.
    assert rows[:8] == [5, 3] * 4 and rows[8:11] == [5, 5, 2]

    train = _embed(net, images)
    logged = {key: _scalars(trainer, key) for key in KEYS}
    steps = sorted(logged["authenticity"])
    assert len(steps) == 2
    for epoch, step in enumerate(steps):
        seen = model.seen[3 * epoch : 3 * epoch + 3]
        real = _embed(net, torch.cat([b["real_images"] for b in seen]))
        fake = _embed(net, torch.cat([b["fake_images"] for b in seen]))
        expected = compute_memorization(train, fake, heldout=real)
        for key in KEYS:
            value, want = logged[key][step], expected[key]
            assert (math.isnan(value) and math.isnan(want)) or value == pytest.approx(
                want, rel=1e-5, abs=1e-6
            ), (key, epoch)
        assert expected["copy_fraction"] >= 0.5  # the copies are seen as copies
    assert sorted(_scalars(trainer, "closest_train")) == steps


def test_failing_embedding_warns_once_and_logs_nan(tmp_path: Path) -> None:
    """Training images the embedder cannot take (1 channel): NaN, one warning, no crash."""
    images = torch.rand(N_TRAIN, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(5))
    net = Net()
    monitor = EmbeddingMonitor(
        nearest_k=3, views=None, embedder=net, train_images=images[:, :1].numpy()
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = _fit(tmp_path, CopyingGAN(images), monitor, epochs=2)
    problems = [w for w in caught if "embedding the 12 training images" in str(w.message)]
    assert len(problems) == 1, [str(w.message) for w in caught]
    for key in KEYS:
        values = _scalars(trainer, key)
        assert len(values) == 2 and all(math.isnan(v) for v in values.values()), key
    assert len(_scalars(trainer, "coverage")) == 2  # the other metrics are logged


class AudioNet(Net):
    modality = "audio"


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        (
            {"train": np.zeros((5, 3, 4, 4)), "embedder": Net()},
            ValueError,
            r"`train=` takes training embeddings \(N, D\).*pass them as `train_images=`",
        ),
        ({"train_images": np.zeros((5, 4)), "embedder": Net()}, ValueError, r"shape \(5, 4\)"),
        ({"train_images": 7, "embedder": Net()}, TypeError, r"train_images=int"),
        ({"train_images": np.zeros((1, 3, 4, 4)), "embedder": Net()}, ValueError, r"at least 2"),
        (
            {"train_images": np.zeros((5, 3, 4, 4)), "embedder": AudioNet()},
            ValueError,
            r"modality 'audio'",
        ),
        ({"train_images": np.zeros((5, 3, 4, 4))}, ValueError, r"needs `train=`"),
    ],
)
def test_configuration_errors(arguments: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        EmbeddingMonitor(views=None, **arguments)


class ImageDDPGAN(pl.LightningModule):
    """Images only, a deterministic "generator" (ddp_spawn pickles a module-level class)."""

    def __init__(self, train_images: torch.Tensor) -> None:
        super().__init__()
        self.copies = train_images

    def fake(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        # Every third fake copies a training image; the others are the negated reals.
        copied = self.copies[index % len(self.copies)] + 1e-3
        return torch.where((index % 3 == 0)[:, None, None, None], copied, 1.0 - x)

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        x, index = batch
        return {"real_images": x, "fake_images": self.fake(x, index), "index": index}


class Record(pl.Callback):
    """Each spawned rank writes what it logged."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items()}
        path = self.out_dir / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(values))


@pytest.mark.slow
def test_ddp_every_rank_embeds_and_logs_the_single_process_values(tmp_path: Path) -> None:
    """2 CPU ranks (ddp_spawn, gloo), 37 samples (the sampler pads one in)."""
    g = torch.Generator().manual_seed(7)
    images = torch.rand(N_TRAIN, 3, SIDE, SIDE, generator=g)
    x = torch.rand(37, 3, SIDE, SIDE, generator=g)
    data = TensorDataset(x, torch.arange(37))
    net = Net()
    model = ImageDDPGAN(images)
    monitor = EmbeddingMonitor(views=None, embedder=net, train_images=images, gallery_size=4)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[monitor, Record(tmp_path)],
    )
    trainer.validate(model, DataLoader(data, batch_size=8))
    expected = compute_memorization(
        _embed(net, images), _embed(net, model.fake(x, torch.arange(37))), heldout=_embed(net, x)
    )
    assert expected["copy_fraction"] >= 0.3
    for rank in (0, 1):
        logged = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for key in KEYS:
            value, want = logged[f"embviz/{key}"], expected[key]
            assert (math.isnan(value) and math.isnan(want)) or value == pytest.approx(
                want, rel=1e-5, abs=1e-6
            ), (rank, key)
