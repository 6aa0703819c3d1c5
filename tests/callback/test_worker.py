"""The figure side without a Trainer: FigureWorker, RunFigures, figure_title, MonitorFigures."""

from __future__ import annotations

import math
import pickle

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from lightning_embviz.callback.buffer import EmbeddingSet
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.evaluation import FigureInputs, RunEvaluator
from lightning_embviz.callback.worker import (
    FigureWorker,
    MonitorFigures,
    RunFigures,
    figure_title,
)
from lightning_embviz.figures.rendering import RenderedFigure


def _figure() -> plt.Figure:
    figure, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1])
    return figure


@pytest.mark.parametrize("background", [False, True])
def test_worker_renders_once_and_keeps_the_order(background):
    worker = FigureWorker(background)
    worker.submit(lambda: {"a": _figure(), "table": "kept"}, 3, "/ctx", png=True)
    worker.submit(lambda: {"b": _figure()}, 4, None, png=False)
    done = list(worker.poll(wait=True))
    worker.close()
    assert [(d.step, d.context, d.error) for d in done] == [(3, "/ctx", None), (4, None, None)]
    first = done[0].figures
    assert isinstance(first["a"], RenderedFigure) and first["table"] == "kept"
    assert first["a"].png[:8] == b"\x89PNG\r\n\x1a\n"
    assert not worker.has_finished and list(worker.poll(wait=True)) == []


def test_worker_hands_back_a_failing_job_as_its_error():
    def broken() -> dict:
        raise RuntimeError("no figure")

    worker = FigureWorker(background=False)
    worker.submit(broken, 7, None, png=False)
    (done,) = worker.poll(wait=False)
    assert done.step == 7 and done.figures == {} and isinstance(done.error, RuntimeError)


def test_figure_title_adds_the_computed_intervals():
    assert figure_title("epoch 1, step 2", {}, None) == "epoch 1, step 2"
    metrics = {"precision_low": 0.5, "precision_high": 0.625, "fd_low": math.nan}
    assert figure_title("head", metrics, 0.95) == "head\n95% intervals: precision [0.5, 0.625]"
    assert figure_title("head", {"fd_low": math.nan}, 0.9) == "head"


class _SpyBuilder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def build(self, real, fake, details, *, real_labels, fake_labels, title):
        self.calls.append((real.shape, fake.shape, details, real_labels, fake_labels, title))
        return {"pca": "pca figure"}

    def state_dict(self) -> dict:
        return {"frames": len(self.calls)}


def test_run_figures_draws_views_then_extras_with_one_title():
    inputs = FigureInputs(
        torch.zeros(3, 2), torch.ones(4, 2), "details", extra={"k_sweep": lambda t: f"sweep {t}"}
    )
    builder, states = _SpyBuilder(), []
    job = RunFigures(inputs, "the title", builder=builder, on_state=states.append)
    assert job() == {"pca": "pca figure", "k_sweep": "sweep the title"}
    assert builder.calls == [((3, 2), (4, 2), "details", None, None, "the title")]
    assert states == [{"frames": 1}]
    assert RunFigures(inputs, "t")() == {"k_sweep": "sweep t"}


def _result(k: int = 3):
    rng = np.random.default_rng(0)
    real = torch.from_numpy(rng.normal(size=(30, 3)))
    fake = torch.from_numpy(rng.normal(size=(30, 3)))
    keys = torch.arange(30)
    evaluator = RunEvaluator(MonitorConfig.from_arguments(k, views=None))
    return evaluator(EmbeddingSet(real, keys), EmbeddingSet(fake, keys))


def test_monitor_figures_without_views_queue_nothing():
    figures = MonitorFigures(MonitorConfig.from_arguments(3, views=None, background=False))
    assert not figures.submit([], 0, _result(), "head", None, step=1, suffix="")
    assert figures.state_dict() == {}


def test_monitor_figures_log_files_and_keep_the_frames(tmp_path):
    config = MonitorConfig.from_arguments(3, views=("pca",), background=False, prefix="e/")
    figures = MonitorFigures(config)
    assert figures.submit([], 0, _result(), "epoch 0, step 5", None, step=5, suffix="")
    figures.log_finished([], str(tmp_path), wait=True)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert written and all(path.startswith("e/") for path in written)
    assert any("pca" in path for path in written)
    state = figures.state_dict()
    assert list(state) == ["0"]
    copy = pickle.loads(pickle.dumps(figures))  # ddp_spawn: the state travels, not the thread
    assert copy.state_dict().keys() == state.keys() and copy.worker is not figures.worker
    fresh = MonitorFigures(config)
    assert fresh.state_dict().keys() == state.keys()  # dataloader 0's builder from the start
    assert fresh.state_dict() != state  # not fitted yet
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
