"""``EmbeddingMonitor(train=...)``: real Trainer runs with Lightning's defaults.

The memorization scalars are read back from the logger files (TensorBoard event files,
``metrics.csv``) and compared with :func:`lightning_embviz.memorization.compute_memorization`
on the rows ``validation_step`` returned (the validation reals are the held-out set); the
``closest_train`` gallery is logged at the scalars' step. Configuration errors fail at
construction.
"""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from _models import make_data, make_module_class, trainer_kwargs
from lightning_embviz import EmbeddingMonitor
from lightning_embviz.memorization import (
    TrainReference,
    compute_memorization,
    compute_memorization_details,
)

TinyGAN = make_module_class(pl)
KEYS = ("authenticity", "ct_score", "copy_fraction")
N_TRAIN, N_VAL = 80, 64


def _train() -> np.ndarray:
    return make_data(N_TRAIN, seed=1).tensors[0].numpy().astype(np.float64)


def _with_images(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    # Each row as a 2 x 3 picture: the galleries' thumbnails.
    out["real_images"] = out["real"].reshape(-1, 1, 2, 3)
    out["fake_images"] = out["fake"].reshape(-1, 1, 2, 3)
    return out


def _same(logged: float, expected: float) -> bool:
    if math.isnan(expected):
        return math.isnan(logged)
    return logged == pytest.approx(expected, rel=1e-5, abs=1e-6)


def _tb(log_dir: str) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


class CountingImages(torch.utils.data.Dataset):
    """A training image dataset of (image, label) items that counts the items read."""

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.read: list[int] = []

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        self.read.append(i)
        return torch.as_tensor(self.images[i]), 0


def test_defaults_log_the_reference_values_and_the_gallery_at_their_step(
    tmp_path: Path,
) -> None:
    """Lightning's default logger (TensorBoard), a saved TrainReference file as ``train=``,
    the training images as a dataset of which only the shown rows are read."""
    train = _train()
    TrainReference(train, n_cells=2).save(tmp_path / "train_ref.pt")
    images = CountingImages(train.reshape(-1, 1, 2, 3))
    model = TinyGAN(shifts=(0.0, 0.3), outputs=_with_images)
    monitor = EmbeddingMonitor(
        train=tmp_path / "train_ref.pt",
        train_images=images,
        views=None,
        gallery_size=4,
        background=False,
    )
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, enable_progress_bar=False))
    trainer.fit(
        model, DataLoader(make_data(32), batch_size=8), DataLoader(make_data(N_VAL), batch_size=16)
    )

    acc = _tb(trainer.logger.log_dir)
    logged = {key: {e.step: e.value for e in acc.Scalars(f"embviz/{key}")} for key in KEYS}
    steps = sorted(logged["authenticity"])
    assert len(steps) == 2  # one point per validation run, none for the sanity check
    for epoch, step in enumerate(steps):
        expected = compute_memorization(
            train,
            model.collected("fake", epoch).double().numpy(),
            heldout=model.collected("real", epoch).double().numpy(),
            n_cells=2,
        )
        assert math.isfinite(expected["ct_score"])
        for key in KEYS:
            assert _same(logged[key][step], expected[key]), (key, epoch)
    shown = sorted(e.step for e in acc.Images("embviz/closest_train"))
    assert shown == steps
    assert len(images.read) == 2 * 4  # gallery_size rows per run, nothing else


def test_csv_values_of_an_array_train_set_and_bad_rows(tmp_path: Path) -> None:
    """An array ``train=``; a NaN fake row is dropped with a warning, training goes on."""
    train = _train()

    def nan_row(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
        if not module.trainer.sanity_checking:
            out["fake"] = out["fake"].clone()
            out["fake"][0, 0] = float("nan")
        return out

    model = TinyGAN(outputs=nan_row)
    monitor = EmbeddingMonitor(train=torch.as_tensor(train), views=None, memorization_alpha=0.1)
    logger = CSVLogger(tmp_path, name="csv", version=0)
    kwargs = trainer_kwargs(tmp_path, max_epochs=1, logger=logger, enable_progress_bar=False)
    trainer = pl.Trainer(callbacks=[monitor], **kwargs)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(
            model,
            DataLoader(make_data(32), batch_size=8),
            DataLoader(make_data(N_VAL), batch_size=16),
        )
    assert any("NaN or Inf" in str(w.message) for w in caught)
    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("embviz/authenticity")]
    assert len(rows) == 1
    fake = model.collected("fake", 0).double().numpy()
    real = model.collected("real", 0).double().numpy()
    keep = np.isfinite(fake).all(axis=1)
    assert (~keep).sum() == 4  # the first row of each of the four batches
    expected = compute_memorization(train, fake[keep], heldout=real, alpha=0.1)
    for key in KEYS:
        assert _same(float(rows[0][f"embviz/{key}"]), expected[key]), key
    # The per-fake table gains the nearest training row and distance of every kept fake.
    details = compute_memorization_details(train, fake[keep], heldout=real, alpha=0.1)
    with open(next(Path(tmp_path).rglob("samples_fake/*.csv"))) as f:
        table = list(csv.DictReader(f))
    assert [int(r["nearest_train_index"]) for r in table] == details.nearest_train_index.tolist()
    np.testing.assert_allclose(
        [float(r["nearest_train_distance"]) for r in table],
        details.nearest_train_distance.numpy(),
        rtol=1e-5,
    )


def test_no_train_logs_no_memorization_keys(tmp_path: Path) -> None:
    monitor = EmbeddingMonitor(views=None)
    assert "authenticity" not in monitor._evaluator.keys
    assert EmbeddingMonitor(train=_train(), views=None)._evaluator.keys[-3:] == KEYS


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"train": [[0.0, 1.0], [1.0, 0.0]]}, TypeError, r"EmbeddingMonitor\(train='list'\)"),
        (
            {"train": "no/such/file.npy"},
            ValueError,
            r"EmbeddingMonitor\(train=\.\.\.\).*no such file",
        ),
        ({"train": np.zeros((1, 3))}, ValueError, r"EmbeddingMonitor\(train=\.\.\.\)"),
        ({"train_images": np.zeros((4, 1, 2, 2))}, ValueError, r"train_images=.*needs `train="),
        (
            {
                "train": np.random.default_rng(0).normal(size=(10, 3)),
                "train_images": np.zeros((9, 2, 2)),
            },
            ValueError,
            r"has 9 images but `train` has 10 rows",
        ),
        (
            {
                "train": np.random.default_rng(0).normal(size=(10, 3)),
                "train_images": np.zeros((10, 2, 2, 2)),
            },
            ValueError,
            r"EmbeddingMonitor\(train_images='ndarray'\)",
        ),
        (
            {"train": np.random.default_rng(0).normal(size=(10, 3)), "train_images": 5},
            TypeError,
            r"indexable dataset",
        ),
        ({"memorization_alpha": 1.5}, ValueError, r"EmbeddingMonitor\(memorization_alpha=1\.5\)"),
        ({"memorization_alpha": "x"}, TypeError, r"EmbeddingMonitor\(memorization_alpha='x'\)"),
    ],
)
def test_configuration_errors(arguments: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        EmbeddingMonitor(**arguments)


def test_a_saved_real_reference_is_refused(tmp_path: Path) -> None:
    from lightning_embviz import RealReference

    RealReference(np.random.default_rng(0).normal(size=(20, 3)), 3).save(tmp_path / "real.pt")
    with pytest.raises(ValueError, match=r"saved RealReference"):
        EmbeddingMonitor(train=tmp_path / "real.pt")


class Record(pl.Callback):
    """Each spawned rank writes what it logged (ddp_spawn pickles a module-level class)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        values = {k: float(v) for k, v in trainer.callback_metrics.items()}
        for callback in trainer.callbacks:
            if isinstance(callback, EmbeddingMonitor):
                # What this rank's training side computed: the leave-one-out distances of
                # the fakes' nearest rows and the cells (every rank takes part in the search).
                reference = callback._evaluator._memorization.reference
                values["known rows"] = int((~reference._self_distance.isnan()).sum())
                values["cells"] = float(reference._centroids.sum())
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(values))


@pytest.mark.slow
def test_ddp_every_rank_logs_the_single_process_values(tmp_path: Path) -> None:
    """2 CPU ranks (ddp_spawn, gloo): 37 samples (the sampler pads one in), images on."""
    from _models import DDPGAN, indexed_dataset

    train = _train()
    data = indexed_dataset(37, seed=4)
    model = DDPGAN({0: "images"})
    monitor = EmbeddingMonitor(
        train=TrainReference(train, n_cells=2),  # a fitted reference (pickled to the ranks)
        train_images=train.reshape(-1, 1, 2, 3),
        views=None,
        gallery_size=4,
    )
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
    x = data.tensors[0]
    with torch.no_grad():
        fake = model.fake(x)
    expected = compute_memorization(
        train, fake.double().numpy(), heldout=x.double().numpy(), n_cells=2
    )
    assert math.isfinite(expected["ct_score"])
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for logged in ranks:
        for key in KEYS:
            assert _same(logged[f"embviz/{key}"], expected[key]), key
    # Both ranks searched (each its share of the training set) and keep the same fitted parts.
    assert ranks[1]["known rows"] == ranks[0]["known rows"] > 0
    assert ranks[1]["cells"] == ranks[0]["cells"]
