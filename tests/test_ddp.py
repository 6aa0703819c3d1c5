"""EmbeddingMonitor under DDP: 2 CPU processes (gloo), results equal the single-process ones.

Each spawned rank writes what it logged to a JSON file; the test compares every rank's values
with the metrics computed in this process on the full validation sets.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from _models import DDPGAN, indexed_dataset
from lightning_embviz import EmbeddingMonitor, compute_prdc, frechet_distance

pytestmark = pytest.mark.slow

KEYS = ("precision", "recall", "density", "coverage", "fd")


class Record(pl.Callback):
    """Each rank writes its callback metrics (and best checkpoint score) after validation."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items()}
        name = (
            f"rank{trainer.global_rank}_epoch{trainer.current_epoch}_{trainer.state.fn.value}.json"
        )
        (self.out_dir / name).write_text(json.dumps(values))

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        best = trainer.checkpoint_callback
        score = None if best is None or best.best_model_score is None else best.best_model_score
        (self.out_dir / f"rank{trainer.global_rank}_best.json").write_text(
            json.dumps({"score": None if score is None else float(score)})
        )


def reference(real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
    out = compute_prdc(real, fake, nearest_k=5)
    out["fd"] = frechet_distance(real, fake)
    return out


def ddp_trainer(tmp_path: Path, **kwargs: Any) -> pl.Trainer:
    kwargs.setdefault("logger", False)
    return pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        **kwargs,
    )


def read(tmp_path: Path, pattern: str) -> list[dict[str, float]]:
    files = sorted(tmp_path.glob(pattern))
    assert [f.name.split("_")[0] for f in files] == ["rank0", "rank1"], files
    return [json.loads(f.read_text()) for f in files]


def test_validate_under_ddp_equals_single_process(tmp_path):
    # 0: 64 samples, batches of 16 split evenly; 1: 37 samples, the sampler repeats one and
    # the last batches are short; 2: rank 1 returns only NaN rows; 3: rank 1 returns no rows;
    # 4: like 1 but with dataset indices returned under "index"; 5: a sampler of the user's
    # (reversed order), which Lightning wraps in a DistributedSamplerWrapper.
    sizes = {0: (64, 16), 1: (37, 8), 2: (40, 8), 3: (40, 8), 4: (37, 5), 5: (29, 4)}
    data = {i: indexed_dataset(n, seed=i) for i, (n, _) in sizes.items()}
    loaders = [DataLoader(data[i], batch_size=b) for i, (_, b) in sizes.items() if i != 5]
    loaders.append(DataLoader(data[5], batch_size=4, sampler=list(range(28, -1, -1))))
    modes = {2: "nan", 3: "empty", 4: "index"}
    model = DDPGAN(modes)
    monitor = EmbeddingMonitor(views=None)
    trainer = ddp_trainer(tmp_path, callbacks=[monitor, Record(tmp_path)])
    trainer.validate(model, loaders)

    ranks = read(tmp_path, "rank*_epoch0_validate.json")
    with torch.no_grad():
        for idx, ds in data.items():
            x = ds.tensors[0]
            fake = model.fake(x)
            if modes.get(idx) == "nan":  # rank 1 holds the odd positions
                expected = reference(x[0::2], fake)
            elif modes.get(idx) == "empty":
                expected = reference(x[0::2], fake[0::2])
            else:
                expected = reference(x, fake)
            for rank, logged in enumerate(ranks):
                for key in KEYS:
                    value = logged[f"embviz/{key}/dataloader_idx_{idx}"]
                    assert value == pytest.approx(expected[key], rel=1e-6), (idx, rank, key)


def test_fit_under_ddp_every_rank_logs_the_same_and_rank_zero_draws(tmp_path):
    train = DataLoader(indexed_dataset(32, seed=9), batch_size=8)
    val = DataLoader(indexed_dataset(45, seed=1), batch_size=8)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="embviz/coverage", mode="max")
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = ddp_trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        callbacks=[EmbeddingMonitor(views=("pca",)), best, Record(tmp_path)],
        logger=tb,
    )
    trainer.fit(DDPGAN(), train, val)

    for epoch in (0, 1):
        rank0, rank1 = read(tmp_path, f"rank*_epoch{epoch}_fit.json")
        assert {k: v for k, v in rank0.items() if k.startswith("embviz/")} == {
            k: v for k, v in rank1.items() if k.startswith("embviz/")
        }
        assert set(KEYS) <= {k.split("/")[1] for k in rank0 if k.startswith("embviz/")}
    best0, best1 = read(tmp_path, "rank*_best.json")
    assert best0 == best1 and best0["score"] is not None  # every rank's ModelCheckpoint agrees

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb" / "version_0"), size_guidance={"images": 0})
    acc.Reload()
    scalar_steps = [e.step for e in acc.Scalars("embviz/coverage")]
    assert len(scalar_steps) == 2
    assert [e.step for e in acc.Images("embviz/pca")] == scalar_steps  # drawn once, by rank 0


def test_galleries_and_tables_under_ddp_equal_single_process(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    # 37 samples: the DistributedSampler repeats one to even out the ranks
    val = DataLoader(indexed_dataset(37, seed=3), batch_size=8)
    model = DDPGAN({0: "images"})
    outputs = {}
    for name in ("ddp", "single"):
        kwargs: dict[str, Any] = {
            "logger": CSVLogger(tmp_path, name=name, version=0),
            "callbacks": [EmbeddingMonitor(views=None, gallery_size=5)],
        }
        if name == "ddp":
            trainer = ddp_trainer(tmp_path, **kwargs)
        else:
            trainer = pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path, **kwargs)
        trainer.validate(model, val)
        outputs[name] = tmp_path / name / "version_0" / "embviz"
    for tag in ("missed_real", "outlier_fake"):
        ddp_png = (outputs["ddp"] / tag / "step_000000.png").read_bytes()
        assert ddp_png == (outputs["single"] / tag / "step_000000.png").read_bytes(), tag
    import pandas as pd

    for table in ("samples_real", "samples_fake"):
        ddp = pd.read_csv(outputs["ddp"] / table / "step_000000.csv")
        single = pd.read_csv(outputs["single"] / table / "step_000000.csv")
        assert len(ddp) == 37  # the sampler's repeat dropped
        assert list(ddp.columns) == list(single.columns)
        for column in ddp.columns:
            if ddp[column].dtype.kind == "f":  # distances: the engine's float32 GEMM values
                np.testing.assert_allclose(ddp[column], single[column], rtol=1e-6)
            else:  # indices, labels, counts and every indicator: identical
                assert ddp[column].tolist() == single[column].tolist(), (table, column)


class FailOnRankOne(DDPGAN):
    """Rank 1 fails in its share of the real-fake tests in epoch 0; warnings are recorded."""

    def __init__(self, out_dir: str) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.caught: list[str] = []
        self._original: Any = None

    def setup(self, stage: str) -> None:
        import warnings

        warnings.simplefilter("always", UserWarning)
        warnings.showwarning = lambda message, *args, **kwargs: self.caught.append(str(message))

    def on_validation_epoch_start(self) -> None:
        import lightning_embviz.engine.distributed as shared

        if self.global_rank == 1 and self.current_epoch == 0 and not self.trainer.sanity_checking:
            self._original = shared.cross_ball_tests

            def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("CUDA out of memory (forced)")

            shared.cross_ball_tests = broken

    def on_validation_epoch_end(self) -> None:  # after the callbacks' hook
        import lightning_embviz.engine.distributed as shared

        if self._original is not None:
            shared.cross_ball_tests = self._original
            self._original = None

    def on_fit_end(self) -> None:
        path = Path(self.out_dir) / f"warnings_rank{self.global_rank}.json"
        path.write_text(json.dumps(self.caught))


def test_a_rank_failing_in_the_shared_work_logs_nan_on_every_rank_and_training_goes_on(
    tmp_path,
):
    train = DataLoader(indexed_dataset(32, seed=9), batch_size=8)
    val = DataLoader(indexed_dataset(45, seed=1), batch_size=8)
    trainer = ddp_trainer(
        tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        callbacks=[EmbeddingMonitor(views=None, log_samples=False), Record(tmp_path)],
    )
    model = FailOnRankOne(str(tmp_path))
    trainer.fit(model, train, val)

    failed = read(tmp_path, "rank*_epoch0_fit.json")
    for logged in failed:
        assert all(math.isnan(logged[f"embviz/{key}"]) for key in KEYS), logged
    for rank in (0, 1):
        caught = json.loads((tmp_path / f"warnings_rank{rank}.json").read_text())
        said = [m for m in caught if "computing the metrics failed" in m]
        assert len(said) == 1, (rank, caught)
        assert "rank 1 of 2 failed while testing its real rows against the fakes" in said[0]
        assert "RuntimeError: CUDA out of memory (forced)" in said[0]
    rank0, rank1 = read(tmp_path, "rank*_epoch1_fit.json")  # the next epoch ran and measured
    values = {k: v for k, v in rank0.items() if k.startswith("embviz/")}
    assert values == {k: v for k, v in rank1.items() if k.startswith("embviz/")}
    x = val.dataset.tensors[0]
    with torch.no_grad():
        expected = reference(x, model.fake(x))  # the weights ddp_spawn copied back
    for key in KEYS:
        assert values[f"embviz/{key}"] == pytest.approx(expected[key], rel=1e-6), key
