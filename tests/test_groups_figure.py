"""The worst-groups figure: drawn from the per-group table, logged by the callback, written by
``embviz report``."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
from PIL import Image
from torch.utils.data import DataLoader

from _models import make_data, make_module_class, trainer_kwargs
from lightning_embviz import EmbeddingMonitor
from lightning_embviz.cli import main
from lightning_embviz.engine.groups import GROUP_COLUMNS, GroupScore, per_group_scores
from lightning_embviz.figures.groups import worst_groups_figure

TinyGAN = make_module_class(pl)


def table_rows() -> list[GroupScore]:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(120, 4))
    fake = rng.normal(size=(90, 4)) + np.array([2.0, 0, 0, 0])
    return per_group_scores(
        real, fake, real_groups=np.arange(120) % 6, fake_groups=np.arange(90) % 3
    )


def bar_widths(ax: Any) -> list[float]:
    return [patch.get_width() for patch in ax.patches]


def test_bars_are_the_table_values_worst_first() -> None:
    rows = table_rows()
    fig = worst_groups_figure(rows, title="run")
    real_ax, fake_ax = fig.axes[:2]
    real_rows = [r for r in rows if r.side == "real"]
    fake_rows = [r for r in rows if r.side == "fake"]
    # coverage bars then recall bars, in the table's (worst first) order
    assert bar_widths(real_ax) == pytest.approx(
        [r.coverage for r in real_rows] + [r.recall for r in real_rows]
    )
    assert bar_widths(fake_ax) == pytest.approx(
        [r.precision for r in fake_rows] + [r.density for r in fake_rows]
    )
    labels = [t.get_text() for t in real_ax.get_yticklabels()]
    assert labels == [f"{r.group} (n={r.count})" for r in real_rows]
    # the worst group is drawn at the top (y axis inverted)
    bottom, top = real_ax.get_ylim()
    assert bottom > top
    assert "run" in fig.get_suptitle()


def test_limit_splits_between_sides_and_reads_the_column_table() -> None:
    rows = table_rows()
    columns = {
        name: np.asarray([r.as_dict()[name] for r in rows], dtype=object) for name in GROUP_COLUMNS
    }
    fig = worst_groups_figure(columns, limit=5)
    real_ax, fake_ax = fig.axes[:2]
    # 5 groups in all: 2 per side, the odd one to the real side
    assert len(real_ax.get_yticklabels()) == 3 and len(fake_ax.get_yticklabels()) == 2
    assert "the 3 worst of 6" in real_ax.get_title()
    assert "the 2 worst of 3" in fake_ax.get_title()
    fig = worst_groups_figure(columns, limit=8)  # the fake side's unused share goes to real
    assert [len(ax.get_yticklabels()) for ax in fig.axes[:2]] == [5, 3]
    only_real = [r for r in rows if r.side == "real"]
    fig = worst_groups_figure(only_real, limit=4)
    assert len(fig.axes) == 1 and len(fig.axes[0].get_yticklabels()) == 4


def test_nan_values_and_empty_tables_draw() -> None:
    rows = [GroupScore("a", "fake", 1, precision=1.0, density=0.4), GroupScore("b", "real", 3)]
    fig = worst_groups_figure(rows)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "n/a" in texts  # real group b has NaN coverage
    fig.canvas.draw()
    empty = worst_groups_figure([])
    assert any(t.get_text() == "no groups" for t in empty.axes[0].texts)


def test_bad_tables_are_refused() -> None:
    with pytest.raises(TypeError, match="list of GroupScore rows or a mapping"):
        worst_groups_figure("groups")
    with pytest.raises(ValueError, match=r"\['side'\] are missing"):
        worst_groups_figure({"group": [1], "count": [1]})
    with pytest.raises(ValueError, match="unequal length"):
        worst_groups_figure({"group": [1, 2], "side": ["real"], "count": [1, 1]})
    with pytest.raises(ValueError, match="side must be 'real' or 'fake'"):
        worst_groups_figure([{"group": 1, "side": "both", "count": 1}])
    with pytest.raises(TypeError, match="must be a GroupScore or a mapping"):
        worst_groups_figure([3])
    with pytest.raises(ValueError, match="`limit` must be a positive int"):
        worst_groups_figure([], limit=0)
    with pytest.raises(TypeError, match="`limit` must be a positive int"):
        worst_groups_figure([], limit=2.0)


def with_groups(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    out["groups"] = out["labels"].reshape(-1).long() % 3
    return out


def test_callback_logs_the_figure_next_to_the_table(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = TinyGAN(shifts=(2.5,), outputs=with_groups)
    monitor = EmbeddingMonitor(views=None, background=False, log_samples=False)
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_epochs=2))
    trainer.fit(
        model,
        DataLoader(make_data(16, seed=1), batch_size=8),
        DataLoader(make_data(48), batch_size=16),
    )
    log_dir = Path(trainer.logger.log_dir)  # Lightning's default logger: TensorBoard
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    steps = sorted(e.step for e in events.Scalars("embviz/coverage"))
    images = events.Images("embviz/groups_worst")
    assert sorted(e.step for e in images) == steps and len(steps) == 2
    picture = np.asarray(Image.open(io.BytesIO(images[-1].encoded_image_string)))
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.std() > 0
    # the table of the same run was written next to it, one CSV per measured run
    assert len(list((log_dir / "embviz" / "groups").glob("step_*.csv"))) == 2


def test_report_writes_groups_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    paths = {}
    for name, array in {
        "real": rng.normal(size=(60, 4)),
        "fake": rng.normal(size=(50, 4)) + 1.0,
        "groups": np.arange(60) % 4,
    }.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    out = tmp_path / "out"
    code = main(
        ["report", str(paths["real"]), str(paths["fake"]), "-o", str(out), "-q",
         "--projection", "pca", "--groups", str(paths["groups"])]
    )  # fmt: skip
    assert code == 0
    picture = np.asarray(Image.open(out / "groups.png"))
    assert picture.ndim == 3 and picture.std() > 0
    assert (out / "groups.csv").exists()
    without = tmp_path / "plain"
    assert main(["report", str(paths["real"]), str(paths["fake"]), "-o", str(without), "-q",
                 "--projection", "pca"]) == 0  # fmt: skip
    assert not (without / "groups.png").exists()
