"""EmbeddingMonitor(extra_metrics=...): Vendi, KD, FD-infinity, clipped PRDC in real Trainer runs.

Values are read back from the TensorBoard event file that Lightning's default logger writes
and compared with the public metric functions on the rows the model returned.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from _models import make_data, make_module_class, trainer_kwargs
from lightning_embviz import EmbeddingMonitor
from lightning_embviz.callback.buffer import EmbeddingSet
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.evaluation import RunEvaluator
from lightning_embviz.engine import frechet as frechet_module
from lightning_embviz.metrics import (
    clipped_density_coverage,
    fd_infinity,
    frechet_distance,
    kernel_distance,
    vendi_score,
)

TinyGAN = make_module_class(pl)
ALL = ("vendi", "kd", "fd_inf", "clipped")
EXTRA = (
    "vendi",
    "vendi_real",
    "kd",
    "kd_se",
    "fd_inf",
    "clipped_density",
    "clipped_coverage",
)


def expected_extras(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    out = {"vendi": vendi_score(fake), "vendi_real": vendi_score(real)}
    out.update(kernel_distance(real, fake))
    out["fd_inf"] = fd_infinity(real, fake, seed=0).fd_inf
    out.update(clipped_density_coverage(real, fake, k))
    out["fd"] = frechet_distance(real, fake)
    return out


def tb_scalars(log_dir: str | Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_fit_logs_extra_metrics_equal_to_the_functions(tmp_path: Path) -> None:
    model = TinyGAN(shifts=(0.5, 2.0))
    trainer = pl.Trainer(
        callbacks=[EmbeddingMonitor(views=None, log_samples=False, extra_metrics=ALL)],
        **trainer_kwargs(tmp_path),  # Lightning's default logger and sanity check
    )
    trainer.fit(
        model, DataLoader(make_data(32, seed=1), batch_size=16), DataLoader(make_data(64), 16)
    )
    scalars = tb_scalars(trainer.logger.log_dir)
    epochs = scalars["epoch"]
    steps = sorted(scalars["embviz/fd"])
    assert len(steps) == 2  # one point per validation run (not the sanity check)
    for step in steps:
        at = int(epochs[step])
        expected = expected_extras(model.collected("real", at), model.collected("fake", at))
        for key in (*EXTRA, "fd"):
            logged = scalars[f"embviz/{key}"][step]  # float32 in the event file
            assert logged == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    # epoch 1's fakes are shifted further: worse on every distance
    first, second = steps
    assert scalars["embviz/kd"][second] > scalars["embviz/kd"][first]
    assert scalars["embviz/fd_inf"][second] > scalars["embviz/fd_inf"][first]
    assert scalars["embviz/vendi_real"][first] == scalars["embviz/vendi_real"][second]


def zero_first_fake(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    fake = out["fake"].clone()
    fake[0] = 0.0  # a row of zero norm: the cosine kernel (Vendi) is undefined
    return {**out, "fake": fake}


def test_validate_logs_nan_with_one_warning_for_a_failing_metric(tmp_path: Path) -> None:
    monitor = EmbeddingMonitor(views=None, log_samples=False, extra_metrics=("vendi", "clipped"))
    trainer = pl.Trainer(**trainer_kwargs(tmp_path, callbacks=[monitor]))
    model = TinyGAN(shifts=(0.5,), outputs=zero_first_fake)
    loader = DataLoader(make_data(16), batch_size=16)
    with pytest.warns(UserWarning, match="could not compute the extra metric 'vendi'") as rec:
        out = trainer.validate(model, loader)[0]
        out2 = trainer.validate(model, loader)[0]
    assert sum("'vendi'" in str(w.message) for w in rec) == 1  # once, not per run
    for result in (out, out2):
        assert math.isnan(result["embviz/vendi"]) and math.isnan(result["embviz/vendi_real"])
    # both runs recorded their rows under epoch 0: the first run's 16
    real, fake = model.collected("real", 0)[:16], model.collected("fake", 0)[:16]
    expected = clipped_density_coverage(real, fake, 5)
    for key in ("clipped_density", "clipped_coverage"):
        assert out[f"embviz/{key}"] == pytest.approx(expected[key], rel=1e-6)
    assert "embviz/kd" not in out  # only the metrics asked for


def test_frechet_real_side_fitted_once_while_the_reals_do_not_change(monkeypatch: Any) -> None:
    fits: list[int] = []
    original = frechet_module.FrechetReference._fit

    def counting(self: Any, r: torch.Tensor, chunk: int) -> None:
        fits.append(len(r))
        original(self, r, chunk)

    monkeypatch.setattr(frechet_module.FrechetReference, "_fit", counting)
    evaluator = RunEvaluator(MonitorConfig.from_arguments(views=None, extra_metrics=ALL))
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 4, generator=g)
    fakes = [torch.randn(30, 4, generator=g) + s for s in (0.0, 0.5, 1.0)]

    def rows(x: torch.Tensor) -> EmbeddingSet:
        return EmbeddingSet(x, torch.arange(len(x)))

    results = [evaluator(rows(real), rows(f)) for f in fakes]
    assert fits == [40]  # FD and FD-infinity of three runs: one fit of the real side
    for fake, result in zip(fakes, results):
        assert result.metrics["fd"] == pytest.approx(frechet_distance(real, fake), rel=1e-9)
        assert result.metrics["fd_inf"] == pytest.approx(fd_infinity(real, fake).fd_inf, rel=1e-9)
        assert result.metrics["vendi_real"] == pytest.approx(vendi_score(real), rel=1e-12)
    fits.clear()  # (the reference functions above fitted their own)
    evaluator(rows(real[:-1]), rows(fakes[0]))  # other reals: refitted once
    assert fits == [39]


def test_config_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'fid'; the extra metrics are vendi, kd"):
        EmbeddingMonitor(extra_metrics=("vendi", "fid"))
    with pytest.raises(ValueError, match=r"extra_metrics=\('kd', 'kd'\)\)` is not valid: a metric"):
        EmbeddingMonitor(extra_metrics=("kd", "kd"))
    with pytest.raises(TypeError, match=r"extra_metrics='vendi'\)` is not valid. Expected None"):
        EmbeddingMonitor(extra_metrics="vendi")
    monitor = EmbeddingMonitor(extra_metrics=["clipped", "vendi"], views=None)
    assert monitor.config.extra_metrics == ("vendi", "clipped")  # canonical order
    assert EmbeddingMonitor(views=None).config.extra_metrics == ()


@pytest.mark.slow
def test_ddp_every_rank_logs_the_function_values(tmp_path: Path) -> None:
    from _models import DDPGAN, indexed_dataset
    from test_ddp import Record, ddp_trainer, read

    data = indexed_dataset(37, seed=1)  # odd: the sampler pads one repeated sample
    monitor = EmbeddingMonitor(views=None, log_samples=False, extra_metrics=ALL)
    model = DDPGAN()
    ddp_trainer(tmp_path, callbacks=[monitor, Record(tmp_path)]).validate(
        model, DataLoader(data, batch_size=8)
    )
    with torch.no_grad():
        x = data.tensors[0]
        expected = expected_extras(x, model.fake(x))
    for logged in read(tmp_path, "rank*_epoch0_validate.json"):
        for key in (*EXTRA, "fd"):
            assert logged[f"embviz/{key}"] == pytest.approx(expected[key], rel=1e-5), key
