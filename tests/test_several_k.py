"""Several k in one run, and the fitted real set reused while the validation set is fixed."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger

from _models import make_module_class
from lightning_embviz import EmbeddingMonitor, compute_prdc
from lightning_embviz.engine.reference import ReferenceCore

TinyGAN = make_module_class(pl)


def test_several_k_keys_and_sweep_figure(tmp_path, train_loader, val_loader):
    model = TinyGAN(shifts=(0.4, 0.2))
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        logger=tb,
        callbacks=[EmbeddingMonitor(nearest_k=(5, 3, 10), views=None, log_samples=False)],
    )
    trainer.fit(model, train_loader, val_loader)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    real, fake = model.collected("real", 1), model.collected("fake", 1)
    for k, suffix in ((5, ""), (3, "_k3"), (10, "_k10")):
        expected = compute_prdc(real, fake, nearest_k=k)
        for name, value in expected.items():
            assert metrics[f"embviz/{name}{suffix}"] == pytest.approx(value, abs=1e-7), (k, name)
    assert "embviz/fd_k10" not in metrics

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb.log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    steps = [e.step for e in acc.Scalars("embviz/coverage_k10")]
    assert [e.step for e in acc.Images("embviz/k_sweep")] == steps and len(steps) == 2


def test_real_reference_is_fitted_once_while_the_real_set_is_fixed(
    tmp_path, train_loader, val_loader, monkeypatch
):
    fits = []
    fit = ReferenceCore.fit  # the engine's seam: every real set's radii are fitted here

    def spy(real, ks, chunk):
        fits.append(ks)
        return fit(real, ks, chunk)

    monkeypatch.setattr(ReferenceCore, "fit", staticmethod(spy))
    model = TinyGAN(shifts=(0.4, 0.2, 0.1))
    trainer = pl.Trainer(
        max_epochs=3,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[EmbeddingMonitor(views=None, log_samples=False)],
    )
    trainer.fit(model, train_loader, val_loader)
    assert fits == [(5,)]  # three measured runs on the same validation reals
    real, fake = model.collected("real", 2), model.collected("fake", 2)
    expected = compute_prdc(real, fake, nearest_k=5)
    assert float(trainer.callback_metrics["embviz/coverage"]) == pytest.approx(
        expected["coverage"], abs=1e-7
    )


def test_bad_nearest_k_sequences_fail_at_construction():
    with pytest.raises(ValueError, match=r"nearest_k=\(5, 5\)"):
        EmbeddingMonitor(nearest_k=(5, 5))
    with pytest.raises(ValueError, match=r"nearest_k=\(\)"):
        EmbeddingMonitor(nearest_k=())
    with pytest.raises(TypeError, match=r"nearest_k=\(5, 2.0\)"):
        EmbeddingMonitor(nearest_k=(5, 2.0))
    with pytest.raises(ValueError, match=r"max_samples=10"):
        EmbeddingMonitor(nearest_k=(5, 10), max_samples=10)
    assert torch.tensor(EmbeddingMonitor(nearest_k=(5, 10)).nearest_ks).tolist() == [5, 10]


def test_confidence_intervals_are_logged_and_returned(tmp_path, val_loader):
    from lightning_embviz.intervals import prdc_intervals

    model = TinyGAN(shifts=(0.3,))
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[EmbeddingMonitor(views=None, log_samples=False, confidence=0.9, seed=3)],
    )
    result = trainer.validate(model, val_loader)[0]
    real = torch.cat([b[0] for b in val_loader])
    with torch.no_grad():
        fake = model.fake(real)
    expected = prdc_intervals(real, fake, 5, 0.9, seed=3)
    for name in ("precision", "recall", "density", "coverage", "fd"):
        low, high = result[f"embviz/{name}_low"], result[f"embviz/{name}_high"]
        assert low <= result[f"embviz/{name}"] <= high
        assert low == pytest.approx(expected[f"{name}_low"], rel=1e-6)
        assert high == pytest.approx(expected[f"{name}_high"], rel=1e-6)
    with pytest.raises(ValueError, match=r"confidence=1.5"):
        EmbeddingMonitor(confidence=1.5)


def test_a_k_too_large_for_the_run_is_nan_and_the_others_are_computed(tmp_path, train_loader):
    # 60 samples: k=3 is computed, k=100 cannot be (k must be below both counts). With the
    # large k first, its usual keys are NaN and k=3's keys are still logged.
    from torch.utils.data import DataLoader

    from _models import make_data

    val = DataLoader(make_data(60), batch_size=16)
    small_first = EmbeddingMonitor(nearest_k=(3, 100), views=None, log_samples=False)
    large_first = EmbeddingMonitor(
        nearest_k=(100, 3), views=None, log_samples=False, prefix="large/"
    )
    model = TinyGAN(shifts=(0.4, 0.2))
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        logger=False,
        callbacks=[small_first, large_first],
    )
    with pytest.warns(UserWarning) as record:
        trainer.fit(model, train_loader, val)
    too_few = [str(w.message) for w in record if "too few for nearest_k=100" in str(w.message)]
    assert len(too_few) == 2, too_few  # one per monitor, not one per run
    assert "the metrics of k=3 are computed" in too_few[0]
    assert not any("skipped the metrics" in str(w.message) for w in record)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    real, fake = model.collected("real", 1), model.collected("fake", 1)
    expected = compute_prdc(real, fake, nearest_k=3)
    for name, value in expected.items():
        assert metrics[f"embviz/{name}"] == pytest.approx(value, abs=1e-7), name
        assert metrics[f"large/{name}_k3"] == pytest.approx(value, abs=1e-7), name
        assert math.isnan(metrics[f"embviz/{name}_k100"]) and math.isnan(metrics[f"large/{name}"])
    assert math.isfinite(metrics["embviz/fd"]) and metrics["large/fd"] == metrics["embviz/fd"]
