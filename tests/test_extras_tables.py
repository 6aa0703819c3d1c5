"""Realism and rarity in the callback's per-sample tables.

``EmbeddingMonitor(extra_metrics=("clipped",))`` with the per-sample tables on (the default)
adds ``realism_score`` and ``rarity_score`` to the fakes' table, as ``embviz report
--metrics clipped`` does; read back from the table files that Lightning's default logger run
writes, equal to the engine's functions on the rows the model returned.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from _models import make_data, make_module_class, trainer_kwargs
from lightning_embviz import EmbeddingMonitor
from lightning_embviz.callback.buffer import EmbeddingSet
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.evaluation import RunEvaluator
from lightning_embviz.metrics import rarity_score, realism_score, vendi_score

TinyGAN = make_module_class(pl)


def _fake_table(root: Path) -> pd.DataFrame:
    files = sorted(root.rglob("samples_fake/*.csv"))
    assert len(files) == 1, files  # one validation run (the sanity check logs nothing)
    return pd.read_csv(files[0])


def test_fit_tables_carry_realism_and_rarity(tmp_path: Path) -> None:
    model = TinyGAN(shifts=(0.4,))
    monitor = EmbeddingMonitor(views=None, extra_metrics=("clipped",))
    trainer = pl.Trainer(
        callbacks=[monitor], **trainer_kwargs(tmp_path, max_epochs=1, enable_progress_bar=False)
    )
    trainer.fit(
        model, DataLoader(make_data(32), batch_size=8), DataLoader(make_data(48), batch_size=16)
    )
    table = _fake_table(tmp_path)
    real, fake = model.collected("real", 0), model.collected("fake", 0)
    assert table["index"].tolist() == list(range(len(fake)))  # the fakes in dataset order
    want_realism = realism_score(real, fake, 5).numpy()
    want_rarity = rarity_score(real, fake, 5).numpy()
    np.testing.assert_array_equal(table["realism_score"].to_numpy(), want_realism)
    np.testing.assert_array_equal(table["rarity_score"].to_numpy(), want_rarity)
    # Both kinds of fakes occur: inside some real ball (a rarity) and outside all (NaN).
    assert table["rarity_score"].isna().any() and table["rarity_score"].notna().any()
    assert ((table["realism_score"] > 1) == table["rarity_score"].notna()).any()


def test_no_columns_without_clipped_or_without_tables(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(30, 4, generator=g), torch.randn(25, 4, generator=g)
    rows = [EmbeddingSet(x, torch.arange(len(x))) for x in (real, fake)]
    for extra, tables, columns in [
        (("vendi",), True, []),
        (("clipped",), False, []),
        (("clipped",), True, ["realism_score", "rarity_score"]),
    ]:
        config = MonitorConfig.from_arguments(views=None, extra_metrics=extra, log_samples=tables)
        result = RunEvaluator(config)(*rows)
        assert list(result.fake_columns) == columns, (extra, tables)
    np.testing.assert_array_equal(
        result.fake_columns["realism_score"], realism_score(real, fake, 5).numpy()
    )


def test_a_failing_column_warns_and_keeps_the_metrics(monkeypatch: Any) -> None:
    from lightning_embviz.callback import extras

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("out of memory (forced)")

    monkeypatch.setattr(extras, "fake_scores", broken)
    g = torch.Generator().manual_seed(2)
    rows = [EmbeddingSet(x, torch.arange(len(x))) for x in (torch.randn(30, 4, generator=g),) * 2]
    config = MonitorConfig.from_arguments(views=None, extra_metrics=("clipped", "vendi"))
    result = RunEvaluator(config)(*rows)
    assert result.fake_columns == {}
    assert not math.isnan(result.metrics["clipped_density"])
    assert result.metrics["vendi"] == vendi_score(rows[1].features)
    (message,) = [m for once, m in result.notes if once == "extra-clipped-table"]
    assert message == (
        "EmbeddingMonitor: the fakes' table lacks its realism_score and rarity_score columns "
        "(RuntimeError: out of memory (forced)); the metrics were logged."
    )
