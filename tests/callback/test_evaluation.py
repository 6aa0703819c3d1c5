"""The evaluation seam without a Trainer: RunEvaluator, RunOutcome, figure_inputs."""

from __future__ import annotations

import math

import numpy as np
import prdc
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text

from lightning_embviz import frechet_distance
from lightning_embviz.callback.buffer import EmbeddingSet
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.evaluation import (
    RunEvaluator,
    RunOutcome,
    figure_inputs,
    metric_keys,
)


def _set(x: np.ndarray, labels: bool = False) -> EmbeddingSet:
    n = len(x)
    return EmbeddingSet(
        torch.from_numpy(x),
        torch.arange(n, dtype=torch.int64),
        torch.arange(n) % 3 if labels else None,
    )


def _data(n: int = 40, m: int = 36, d: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(0.5, 1.2, size=(m, d))


def test_metric_keys_order():
    assert metric_keys((5,)) == ("precision", "recall", "density", "coverage", "fd")
    keys = metric_keys((5, 10), intervals=True)
    assert keys[5:9] == ("precision_k10", "recall_k10", "density_k10", "coverage_k10")
    assert keys[9:11] == ("precision_low", "precision_high") and keys[-1] == "fd_high"


def test_evaluator_matches_the_reference_package_and_reuses_its_reference():
    real, fake = _data()
    evaluator = RunEvaluator(MonitorConfig.from_arguments((3, 5), views=None, max_samples=None))
    result = evaluator(_set(real), _set(fake))
    assert result.status == "ok" and tuple(result.metrics) == evaluator.keys
    for k, suffix in ((3, ""), (5, "_k5")):
        expected = prdc.compute_prdc(real, fake, nearest_k=k)
        for name, value in expected.items():
            assert result.metrics[name + suffix] == pytest.approx(value, abs=1e-12)
    assert result.metrics["fd"] == pytest.approx(frechet_distance(real, fake))
    again = evaluator(_set(real), _set(fake))
    assert again.reference is result.reference  # the same real rows: not refitted
    other = evaluator(_set(real), _set(fake), dataloader_idx=1)
    assert other.reference is not result.reference  # one reference per dataloader


def test_run_outcome_and_notes_on_rank_zero():
    real, fake = _data(n=30)
    real[0, 1] = np.nan
    evaluator = RunEvaluator(MonitorConfig.from_arguments(4, views=None))
    outcome, result, notes = evaluator.run(
        _set(real),
        _set(fake),
        dataloader_idx=2,
        where=" of validation dataloader 2",
        rank_zero=True,
        distributed=False,
        device=torch.device("cpu"),
    )
    assert outcome.computed and result is not None and len(result.real) == 29
    assert outcome.metrics == {key: result.metrics[key] for key in evaluator.keys}
    assert notes == [
        (
            None,
            "EmbeddingMonitor: dropped 1 of 30 real rows of validation dataloader 2 because they "
            "hold NaN or Inf values; the metrics use the remaining rows.",
        )
    ]
    expected = prdc.compute_prdc(real[1:], fake, nearest_k=4)
    assert outcome.metrics["coverage"] == pytest.approx(expected["coverage"], abs=1e-12)


def test_other_ranks_without_a_process_group_log_nan():
    real, fake = _data()
    evaluator = RunEvaluator(MonitorConfig.from_arguments(views=None))
    outcome, result, notes = evaluator.run(
        _set(real), _set(fake), dataloader_idx=0, where="", rank_zero=False,
        distributed=False, device=torch.device("cpu"),
    )  # fmt: skip
    assert not outcome.computed and result is None and notes == []
    assert list(outcome.metrics) == list(evaluator.keys)
    assert all(math.isnan(v) for v in outcome.metrics.values())


def test_a_skipped_run_logs_nan_with_a_note_and_has_no_figures():
    real, fake = _data(n=4, m=4)
    evaluator = RunEvaluator(MonitorConfig.from_arguments(5, views=None))
    result = evaluator(_set(real), _set(fake))
    assert result.status == "skipped"
    assert all(math.isnan(v) for v in result.metrics.values())
    assert "nearest_k=5 needs at least 6 of each" in result.notes[-1][1]
    outcome = RunOutcome.of(result, evaluator.keys)
    assert not outcome.computed and all(math.isnan(v) for v in outcome.metrics.values())
    with pytest.raises(ValueError, match="a run with status 'skipped' has no figures to draw"):
        figure_inputs(result)


def test_figure_inputs_are_on_the_cpu_with_the_sweep_as_an_extra_figure():
    real, fake = _data()
    evaluator = RunEvaluator(MonitorConfig.from_arguments((3, 5), views=None))
    result = evaluator(_set(real, labels=True), _set(fake))
    inputs = figure_inputs(result)
    assert inputs.real.shape == (40, 4) and inputs.fake.shape == (36, 4)
    assert inputs.real_labels is not None and inputs.fake_labels is None
    assert inputs.details.real_radii.device.type == "cpu"
    assert list(inputs.extra) == ["k_sweep"]
    figure = inputs.extra["k_sweep"]("epoch 1, step 5")
    texts = [t.get_text() for t in figure.findobj(Text)]
    assert isinstance(figure, Figure) and any("epoch 1, step 5" in t for t in texts)
    single = figure_inputs(RunEvaluator(MonitorConfig.from_arguments(3, views=None))(
        _set(real), _set(fake)
    ))  # fmt: skip
    assert single.extra == {}


def test_broadcast_keeps_the_status_apart_from_the_values(tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        sent = RunOutcome(True, {"precision": 0.25, "fd": math.nan})
        got = sent.broadcast(torch.device("cpu"))
        assert got.computed is True and got.metrics["precision"] == 0.25
        assert list(got.metrics) == ["precision", "fd"] and math.isnan(got.metrics["fd"])
        failed = RunOutcome(False, {"precision": 1.0}).broadcast(torch.device("cpu"))
        assert failed == RunOutcome(False, {"precision": 1.0})
    finally:
        torch.distributed.destroy_process_group()
