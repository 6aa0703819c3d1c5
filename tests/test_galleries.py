"""Missed-real and outlier-fake galleries and per-sample tables from a real Trainer run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from prdc import compute_prdc as reference_prdc
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from _models import make_module_class
from lightning_embviz import EmbeddingMonitor

TinyGAN = make_module_class(pl)


def with_images(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    """Each embedding row's "image": the row itself as a 2x3 picture."""
    out["real_images"] = out["real"].reshape(-1, 1, 2, 3)
    out["fake_images"] = out["fake"].reshape(-1, 1, 2, 3)
    return out


def reference_indicators(real: np.ndarray, fake: np.ndarray, k: int = 5):
    """Coverage's and precision's per-sample indicators, as the reference decides them."""
    from prdc.prdc import compute_nearest_neighbour_distances, compute_pairwise_distance

    radii = compute_nearest_neighbour_distances(real, k)
    dist = compute_pairwise_distance(real, fake)
    covered = dist.min(axis=1) < radii
    inside = (dist < radii[:, None]).any(axis=0)
    return covered, inside


def test_galleries_and_tables_every_run(tmp_path, train_loader, val_loader):
    model = TinyGAN(shifts=(1.5, 0.5), outputs=with_images)
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        logger=[tb, csv_logger],
        callbacks=[EmbeddingMonitor(views=None, gallery_size=6)],
    )
    trainer.fit(model, train_loader, val_loader)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb.log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    steps = sorted(e.step for e in acc.Scalars("embviz/coverage"))
    for tag in ("embviz/missed_real", "embviz/outlier_fake"):
        assert sorted(e.step for e in acc.Images(tag)) == steps
    assert sorted(e.step for e in acc.Tensors("embviz/samples/text_summary")) == steps

    for epoch, step in enumerate(steps):
        real = model.collected("real", epoch).double().numpy()
        fake = model.collected("fake", epoch).double().numpy()
        covered, inside = reference_indicators(real, fake)
        base = Path(csv_logger.log_dir) / "embviz"
        reals = pd.read_csv(base / "samples_real" / f"step_{step:06d}.csv")
        fakes = pd.read_csv(base / "samples_fake" / f"step_{step:06d}.csv")
        assert reals["index"].tolist() == list(range(len(real)))
        np.testing.assert_array_equal(reals["covered"].to_numpy(), covered)
        np.testing.assert_array_equal(fakes["inside_real_manifold"].to_numpy(), inside)
        assert ((reals["nearest_fake_ratio"] < 1) == reals["covered"]).all()
        expected = reference_prdc(real, fake, nearest_k=5)
        assert reals["covered"].mean() == pytest.approx(expected["coverage"])
        assert (base / "missed_real" / f"step_{step:06d}.png").exists()


def test_no_images_no_galleries_but_tables(tmp_path, val_loader):
    trainer = pl.Trainer(
        default_root_dir=tmp_path, callbacks=[EmbeddingMonitor(views=None)], logger=False
    )
    trainer.validate(TinyGAN(shifts=(0.5,)), val_loader)
    assert not list(Path(tmp_path).rglob("missed_real"))
    tables = sorted(Path(tmp_path).rglob("samples_real/step_*.csv"))
    assert len(tables) == 1 and len(pd.read_csv(tables[0])) == 64


def test_thumbnails_are_small_and_galleries_fetch_by_key():
    from lightning_embviz._buffer import EmbeddingBuffer, gather_selected_images
    from lightning_embviz._outputs import make_thumbnails

    images = torch.rand(20, 3, 100, 80) * 10 - 5
    thumbs = make_thumbnails(images, 32)
    assert thumbs.pixels.dtype == torch.uint8 and thumbs.pixels.shape == (20, 3, 32, 26)
    restored = thumbs.values()
    assert restored.min() >= images.min() - 1e-4 and restored.max() <= images.max() + 1e-4
    buffer = EmbeddingBuffer(max_samples=None)
    keys = torch.arange(100, 120)
    x = torch.randn(20, 4)
    buffer.add(x, x, real_keys=keys, fake_keys=keys, real_images=thumbs, fake_images=thumbs)
    real, _ = buffer.local_sets()
    got = gather_selected_images(real.images, real.keys, torch.tensor([105, 101]))
    assert got is not None and torch.equal(got.pixels, thumbs.pixels[[5, 1]])
