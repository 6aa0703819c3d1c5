"""EmbeddingMonitor the way users run it: Trainer defaults, checkpoints, validate(), capped runs."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from _models import WIDTH, make_data, make_manual_gan_class, make_module_class
from lightning_embviz import EmbeddingMonitor, compute_prdc, frechet_distance

TinyGAN = make_module_class(pl)
ManualGAN = make_manual_gan_class(pl)
KEYS = ("precision", "recall", "density", "coverage", "fd")


def tb_scalars(log_dir: str | Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    if tag not in acc.Tags()["scalars"]:
        return {}
    return {e.step: e.value for e in acc.Scalars(tag)}


def tb_image_steps(log_dir: str | Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    acc.Reload()
    return sorted(e.step for e in acc.Images(tag))


# --------------------------------------------------------------------------- 1. sanity check


class CountingGAN(TinyGAN):  # type: ignore[misc, valid-type]
    """Counts training steps, so a test can prove none ran."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.training_steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.training_steps += 1
        return super().training_step(batch, batch_idx)


BROKEN = [
    (lambda m, out, b: None, ValueError, r"returned None \(dataloader 0, batch 0\)"),
    (lambda m, out, b: {"real": out["real"]}, ValueError, r"missing \['fake'\]"),
    (
        lambda m, out, b: {"real": out["real"], "fake": out["fake"][:, :3]},
        ValueError,
        r"same width D",
    ),
]


@pytest.mark.parametrize("every_n_epochs", [1, 3])
@pytest.mark.parametrize(("outputs", "error", "match"), BROKEN)
def test_broken_validation_step_fails_in_the_sanity_check(
    tmp_path, train_loader, val_loader, every_n_epochs, outputs, error, match
):
    """Lightning's defaults (sanity check, progress bar, default logger): no training step runs."""
    model = CountingGAN(outputs=outputs)
    trainer = pl.Trainer(
        max_epochs=3,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        callbacks=[EmbeddingMonitor(views=None, every_n_epochs=every_n_epochs)],
    )
    with pytest.raises(error, match=match):
        trainer.fit(model, train_loader, val_loader)
    assert model.training_steps == 0 and trainer.global_step == 0


def test_without_sanity_check_the_first_validation_batch_fails(tmp_path, train_loader, val_loader):
    model = CountingGAN(outputs=BROKEN[1][0])
    trainer = pl.Trainer(
        max_epochs=3,
        limit_train_batches=2,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[EmbeddingMonitor(views=None, every_n_epochs=3)],  # epoch 0 is not measured
    )
    with pytest.raises(ValueError, match=r"batch 0\); missing \['fake'\]"):
        trainer.fit(model, train_loader, val_loader)
    assert trainer.current_epoch == 0 and model.training_steps == 2


def test_sanity_check_logs_and_draws_nothing(tmp_path, train_loader, val_loader):
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    model = TinyGAN()
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        logger=tb,
        callbacks=[EmbeddingMonitor(views=("pca",), background=False)],
    )
    trainer.fit(model, train_loader, val_loader)
    assert list(tb_scalars(tb.log_dir, "embviz/coverage")) == [1]  # the epoch only, not step 0
    assert tb_image_steps(tb.log_dir, "embviz/pca") == [1]


# --------------------------------------------------------------------------- 2. + 3. checkpoints


def train_and_compare(tmp_path: Path, model_cls: Any, train: Any, val: Any, **trainer_kw: Any):
    """Train with a TensorBoard logger, then validate every checkpoint into the same folder."""
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{epoch}-{step}")
    tb = TensorBoardLogger(tmp_path, name="run", version="train")
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=4,
        default_root_dir=tmp_path,
        logger=tb,
        callbacks=[EmbeddingMonitor(views=("pca",)), ckpt],
        **trainer_kw,
    )
    trainer.fit(model_cls(), train, val)
    training = tb_scalars(tb.log_dir, "embviz/coverage")
    marker = tb_scalars(tb.log_dir, "val_marker")
    assert sorted(training) == sorted(marker)  # figures and scalars at Lightning's step

    compare = TensorBoardLogger(tmp_path, name="run", version="compare")
    validator = pl.Trainer(
        default_root_dir=tmp_path, logger=compare, callbacks=[EmbeddingMonitor(views=("pca",))]
    )
    results = {}
    for path in sorted((tmp_path / "ckpt").glob("*.ckpt")):
        results[path.name] = validator.validate(model_cls(), val, ckpt_path=path)[0]
    return training, tb.log_dir, compare.log_dir, results


@pytest.mark.parametrize(
    ("model_cls", "trainer_kw", "points"),
    [
        (TinyGAN, {}, 2),  # automatic optimization: global_step is one ahead at epoch end
        (ManualGAN, {}, 2),  # two optimizers: global_step counts 2 per batch
        (ManualGAN, {"val_check_interval": 2}, 4),  # mid-epoch checkpoints
    ],
)
def test_validate_ckpt_lands_on_the_training_step(
    tmp_path, train_loader, val_loader, model_cls, trainer_kw, points
):
    train = DataLoader(make_data(64, seed=1), batch_size=16)
    training, train_dir, compare_dir, results = train_and_compare(
        tmp_path, model_cls, train, val_loader, **trainer_kw
    )
    assert len(training) == points
    compared = tb_scalars(compare_dir, "embviz/coverage")
    assert compared == pytest.approx(training)  # same steps, same values
    assert tb_image_steps(compare_dir, "embviz/pca") == sorted(training)
    # the user's own validation metrics land on the same steps too, and Lightning's `epoch`
    # scalar names the checkpoint's epoch (not the validating Trainer's 0)
    assert sorted(tb_scalars(compare_dir, "val_marker")) == sorted(training)
    for step in training:
        assert tb_scalars(compare_dir, "epoch")[step] == tb_scalars(train_dir, "epoch")[step]
    # 3. validate() returns every embviz value, once per checkpoint
    for result in results.values():
        assert {f"embviz/{k}" for k in KEYS} <= set(result)
    by_value = sorted(r["embviz/coverage"] for r in results.values())
    assert by_value == pytest.approx(sorted(training.values()))


def test_comparison_titles_name_the_checkpoint(tmp_path, val_loader, monkeypatch):
    train = DataLoader(make_data(64, seed=1), batch_size=16)
    titles: list[str] = []
    from lightning_embviz.views import ViewBuilder

    build = ViewBuilder.build

    def spy(self, *args, **kwargs):
        titles.append(kwargs.get("title"))
        return build(self, *args, **kwargs)

    monkeypatch.setattr(ViewBuilder, "build", spy)
    train_and_compare(tmp_path, ManualGAN, train, val_loader)
    assert titles[:2] == ["epoch 0, step 3", "epoch 1, step 7"]  # training
    assert titles[2:] == ["checkpoint: epoch 0, step 3", "checkpoint: epoch 1, step 7"]


def test_checkpoint_without_loop_state_falls_back_to_global_step(tmp_path, val_loader):
    model = TinyGAN()
    trainer = pl.Trainer(max_epochs=1, limit_train_batches=3, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(make_data(48, seed=1), batch_size=16), val_loader)
    full = tmp_path / "full.ckpt"
    trainer.save_checkpoint(full)
    bare = torch.load(full, weights_only=True)
    bare.pop("loops")
    torch.save(bare, tmp_path / "bare.ckpt")
    tb = TensorBoardLogger(tmp_path, name="cmp", version=0)
    validator = pl.Trainer(
        default_root_dir=tmp_path, logger=tb, callbacks=[EmbeddingMonitor(views=None)]
    )
    result = validator.validate(TinyGAN(), val_loader, ckpt_path=tmp_path / "bare.ckpt")[0]
    assert list(tb_scalars(tb.log_dir, "embviz/coverage")) == [bare["global_step"]] == [3]
    assert result["embviz/coverage"] == tb_scalars(tb.log_dir, "embviz/coverage")[3]
    # the Trainer's own step is restored afterwards: a plain validate() logs at its step again
    validator.validate(TinyGAN(), val_loader)
    assert sorted(tb_scalars(tb.log_dir, "embviz/coverage")) == [0, 3]


def test_validate_returns_values_per_dataloader(tmp_path):
    loaders = [DataLoader(make_data(32, seed=s), batch_size=16) for s in (0, 5)]
    trainer = pl.Trainer(default_root_dir=tmp_path, callbacks=[EmbeddingMonitor(views=None)])
    model = TinyGAN()
    results = trainer.validate(model, loaders)
    assert len(results) == 2
    for idx, (result, loader) in enumerate(zip(results, loaders)):
        real = torch.cat([b[0] for b in loader])
        with torch.no_grad():
            fake = model.fake(real)
        expected = compute_prdc(real, fake, nearest_k=5)
        expected["fd"] = frechet_distance(real, fake)
        for k in KEYS:
            key = f"embviz/{k}/dataloader_idx_{idx}"
            assert result[key] == pytest.approx(expected[k], rel=1e-6, abs=1e-9), key


# --------------------------------------------------------------------------- 4. uniform cap


class MissFirstClass(TinyGAN):  # type: ignore[misc, valid-type]
    """A "generator" that reproduces every class but the first (it lands far away)."""

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        x, y = batch
        fake = x + 0.05 * torch.randn_like(x)
        fake[y == 0] += 50.0
        return {"real": x, "fake": fake, "labels": y}


def sorted_by_class(n: int = 240, classes: int = 4) -> TensorDataset:
    x, y = make_data(n, classes=classes).tensors
    order = torch.argsort(y, stable=True)
    return TensorDataset(x[order], y[order])


def test_cap_is_a_uniform_subsample_of_a_class_sorted_set(tmp_path):
    data = sorted_by_class()
    loader = DataLoader(data, batch_size=20)
    monitor = EmbeddingMonitor(views=None, max_samples=80)
    trainer = pl.Trainer(default_root_dir=tmp_path, callbacks=[monitor])
    with pytest.warns(UserWarning, match=r"gave 240 real and 240 fake rows.*max_samples=80"):
        capped = trainer.validate(MissFirstClass(), loader)[0]["embviz/coverage"]
    full = pl.Trainer(
        default_root_dir=tmp_path, callbacks=[EmbeddingMonitor(views=None, max_samples=None)]
    )
    uncapped = full.validate(MissFirstClass(), loader)[0]["embviz/coverage"]
    # The first 80 rows in loader order are mostly class 0, which this generator misses: a
    # first-rows cap gave coverage 0.26 (all rows: 0.76). A uniform subsample sees every class.
    assert uncapped == pytest.approx(0.75, abs=0.05)
    assert abs(capped - uncapped) < 0.15
    # The same rows every run and in any loader order; one warning per monitor.
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        again = trainer.validate(MissFirstClass(), DataLoader(data, batch_size=7))
    assert again[0]["embviz/coverage"] == capped


def test_cap_subsample_equals_the_uncapped_metrics_on_the_kept_rows():
    from lightning_embviz.callback.buffer import EmbeddingBuffer, finalize_set, key_hash

    x = torch.randn(500, WIDTH, dtype=torch.float64)
    buffer = EmbeddingBuffer(max_samples=50, seed=3)
    for start in range(0, 500, 37):
        keys = torch.arange(start, min(start + 37, 500))
        buffer.add(x[keys], -x[keys], real_keys=keys, fake_keys=keys)
        assert len(buffer) <= 4 * 50  # bounded by the cap, not by the run
    real, fake = buffer.local_sets()
    real = finalize_set(real, dedupe=True, max_samples=50, seed=3)
    expected = torch.sort(torch.argsort(key_hash(torch.arange(500), 3))[:50]).values
    assert real.keys.tolist() == expected.tolist() and real.seen == 500
    assert torch.equal(real.features, x[expected])
    assert torch.equal(finalize_set(fake, dedupe=True, max_samples=50, seed=3).keys, real.keys)
