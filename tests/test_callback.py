"""EmbeddingMonitor in real (tiny) Trainer runs on CPU; values read back from the log files."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from _models import WIDTH, indexed_dataset, make_data, make_module_class, trainer_kwargs
from lightning_embviz import EmbeddingMonitor, compute_prdc, frechet_distance
from lightning_embviz.callback import METRIC_NAMES
from lightning_embviz.callback.buffer import key_hash

TinyGAN = make_module_class(pl)
KEYS = ("precision", "recall", "density", "coverage", "fd")


def reference(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict[str, float]:
    out = compute_prdc(real, fake, nearest_k=k)
    out["fd"] = frechet_distance(real, fake)
    return out


def tb_events(log_dir: str | Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def tb_scalars(log_dir: str | Path, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in tb_events(log_dir).Scalars(tag)}


def assert_metrics(logged: dict[str, float], expected: dict[str, float], prefix: str = "embviz/"):
    for name in KEYS:
        assert logged[f"{prefix}{name}"] == pytest.approx(expected[name], rel=1e-6, abs=1e-6), name


def fit(tmp_path: Path, model: Any, monitor: Any, val: Any, train: Any, **kw: Any) -> pl.Trainer:
    callbacks = kw.pop("callbacks", [])
    trainer = pl.Trainer(callbacks=[monitor, *callbacks], **trainer_kwargs(tmp_path, **kw))
    trainer.fit(model, train, val)
    return trainer


# --------------------------------------------------------------------------- happy path


def test_scalars_and_figures_in_tensorboard_and_csv(tmp_path, train_loader, val_loader):
    model = TinyGAN(shifts=(0.5, 2.0))
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    fit(
        tmp_path,
        model,
        EmbeddingMonitor(views=("pca",)),
        val_loader,
        train_loader,
        logger=[tb, csv_logger],
        num_sanity_val_steps=2,
    )
    assert sorted(model.seen) == [(0, 0), (1, 0)]  # the sanity check recorded nothing

    scalars = {f"embviz/{name}": tb_scalars(tb.log_dir, f"embviz/{name}") for name in KEYS}
    steps = sorted(tb_scalars(tb.log_dir, "val_marker"))  # where Lightning logs epoch metrics
    assert len(steps) == 2
    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("embviz/coverage")]
    assert [int(r["step"]) for r in rows] == steps  # one point per validation run
    epochs = tb_scalars(tb.log_dir, "epoch")
    for step, row in zip(steps, rows):
        at = int(epochs[step])
        assert sorted(scalars["embviz/coverage"]) == steps
        expected = reference(model.collected("real", at), model.collected("fake", at))
        assert_metrics({k: v[step] for k, v in scalars.items()}, expected)
        assert_metrics({k: float(row[k]) for k in scalars}, expected)

    events = tb_events(tb.log_dir)
    # the views for ("pca",), with the coverage view and, as labels were returned, the classes
    tags = {"embviz/pca", "embviz/pca_coverage", "embviz/pca_classes", "embviz/class_metrics"}
    assert tags <= set(events.Tags()["images"])
    for tag in tags:
        assert sorted(e.step for e in events.Images(tag)) == steps  # at the scalars' steps
    png_dir = Path(csv_logger.log_dir) / "embviz" / "pca"
    assert len(list(png_dir.glob("*.png"))) == 2


def test_lightning_pytorch_namespace(tmp_path, train_loader, val_loader):
    lp = pytest.importorskip("lightning.pytorch")
    from lightning.pytorch.loggers import TensorBoardLogger as LTensorBoardLogger

    monitor = EmbeddingMonitor(views=("pca",))
    assert isinstance(monitor, lp.Callback) and isinstance(monitor, pl.Callback)
    model = make_module_class(lp)(shifts=(1.0,))
    tb = LTensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = lp.Trainer(callbacks=[monitor], logger=tb, **trainer_kwargs(tmp_path, max_epochs=1))
    trainer.fit(model, train_loader, val_loader)
    expected = reference(model.collected("real", 0), model.collected("fake", 0))
    (step,) = tb_scalars(tb.log_dir, "val_marker")
    assert_metrics(
        {f"embviz/{k}": tb_scalars(tb.log_dir, f"embviz/{k}")[step] for k in KEYS}, expected
    )
    assert [e.step for e in tb_events(tb.log_dir).Images("embviz/pca")] == [step]


def test_model_checkpoint_picks_best_coverage(tmp_path, train_loader, val_loader):
    def outputs(module, out, batch):
        shift = (3.0, 0.0, 1.5)[module.current_epoch]
        return {
            "real": out["real"],
            "fake": out["real"] + shift + 0.01 * module.generator(out["real"]),
        }

    model = TinyGAN(outputs=outputs)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="embviz/coverage", mode="max")
    fit(
        tmp_path,
        model,
        EmbeddingMonitor(views=None),
        val_loader,
        train_loader,
        max_epochs=3,
        callbacks=[best],
        logger=False,
    )
    coverages = {
        epoch: reference(model.collected("real", epoch), model.collected("fake", epoch))["coverage"]
        for epoch, _ in model.seen
    }
    best_epoch = max(coverages, key=coverages.__getitem__)
    assert best_epoch == 1 and len(set(coverages.values())) == 3
    assert float(best.best_model_score) == pytest.approx(coverages[best_epoch])
    assert "epoch=1" in Path(best.best_model_path).name


# --------------------------------------------------------------------------- checkpoints


def test_resume_continues_series_and_restores_state(tmp_path, train_loader, val_loader):
    tb_kwargs = {"save_dir": tmp_path, "name": "tb", "version": 0}
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    first = EmbeddingMonitor(views=("pca",))
    fit(
        tmp_path,
        TinyGAN(shifts=(1.0,)),
        first,
        val_loader,
        train_loader,
        callbacks=[ckpt],
        logger=TensorBoardLogger(**tb_kwargs),
    )
    saved = torch.load(ckpt.last_model_path, weights_only=True)  # plain tensors/scalars only
    state = saved["callbacks"][first.state_key]
    assert state["runs"] == 2 and state["last_step"] >= 2 and "0" in state["views"]

    restored: dict[str, Any] = {}

    class Spy(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            restored.update(second.state_dict())

    second = EmbeddingMonitor(views=("pca",))
    model = TinyGAN(shifts=(1.0,))
    trainer = pl.Trainer(
        callbacks=[second, Spy()],
        logger=TensorBoardLogger(**tb_kwargs),
        **trainer_kwargs(tmp_path, max_epochs=3),
    )
    trainer.fit(model, train_loader, val_loader, ckpt_path=ckpt.last_model_path)
    assert restored["runs"] == 2 and restored["last_step"] == state["last_step"]
    assert_nested_equal(restored["views"], state["views"])
    log_dir = Path(tmp_path) / "tb" / "version_0"
    series = tb_scalars(log_dir, "embviz/coverage")
    assert sorted(series) == sorted(tb_scalars(log_dir, "val_marker")) and len(series) == 3
    expected = reference(model.collected("real", 2), model.collected("fake", 2))
    assert series[max(series)] == pytest.approx(expected["coverage"])
    assert second.state_dict()["runs"] == 3


def assert_nested_equal(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_nested_equal(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_nested_equal(x, y)
    else:
        assert a == b


def test_validate_logs_each_checkpoint_at_its_step(tmp_path, train_loader, val_loader):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, filename="{step}")
    fit(
        tmp_path,
        TinyGAN(shifts=(0.3,), lr=0.5),
        EmbeddingMonitor(views=None),
        val_loader,
        train_loader,
        callbacks=[ckpt],
        logger=False,
    )
    paths = sorted((tmp_path / "ckpt").glob("step=*.ckpt"))
    assert [p.stem for p in paths] == ["step=2", "step=4"]

    tb = TensorBoardLogger(tmp_path, name="compare", version=0)
    trainer = pl.Trainer(
        callbacks=[EmbeddingMonitor(views=("pca",))], logger=tb, **trainer_kwargs(tmp_path)
    )
    real = torch.cat([b[0] for b in val_loader])
    for path in paths:
        results = trainer.validate(TinyGAN(shifts=(0.3,)), val_loader, ckpt_path=path)
        # the training run logged this checkpoint's validation one step before its global_step
        step = int(path.stem.split("=")[1]) - 1
        weights = TinyGAN(shifts=(0.3,))
        weights.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
        with torch.no_grad():
            expected = reference(real, weights.fake(real))
        assert_metrics({k: float(v) for k, v in trainer.callback_metrics.items()}, expected)
        # validate() returns the values, and the loggers hold one point at the training step
        assert_metrics(results[0], expected)
        assert "val_marker" in results[0]
        logged = {f"embviz/{k}": tb_scalars(tb.log_dir, f"embviz/{k}")[step] for k in KEYS}
        assert_metrics(logged, expected)
    assert sorted(e.step for e in tb_events(tb.log_dir).Images("embviz/pca")) == [1, 3]
    assert sorted(tb_scalars(tb.log_dir, "embviz/fd")) == [1, 3]

    # The same Trainer without a checkpoint: logged at the Trainer's own step (0 here).
    trainer.validate(TinyGAN(shifts=(0.3,)), val_loader)
    with torch.no_grad():
        expected = reference(real, TinyGAN(shifts=(0.3,)).fake(real))
    assert tb_scalars(tb.log_dir, "embviz/coverage")[0] == pytest.approx(expected["coverage"])


def test_two_instances_share_a_trainer_and_a_checkpoint(tmp_path, train_loader, val_loader):
    a = EmbeddingMonitor(nearest_k=3, views=None, keep_on_device=True)
    b = EmbeddingMonitor(nearest_k=5, prefix="k5/", views=None)
    assert a.state_key != b.state_key
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    model = TinyGAN(shifts=(0.5,))
    trainer = fit(
        tmp_path,
        model,
        a,
        val_loader,
        train_loader,
        callbacks=[b, ckpt],
        max_epochs=1,
        logger=False,
    )
    real, fake = model.collected("real", 0), model.collected("fake", 0)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert_metrics(logged, reference(real, fake, k=3))
    assert_metrics(logged, reference(real, fake, k=5), prefix="k5/")
    saved = torch.load(ckpt.last_model_path, weights_only=True)["callbacks"]
    assert a.state_key in saved and b.state_key in saved


# --------------------------------------------------------------------------- collection


def test_several_dataloaders_use_lightning_suffix(tmp_path, train_loader):
    loaders = [
        DataLoader(make_data(40, seed=2), batch_size=16),
        DataLoader(make_data(24, seed=3), batch_size=8),
    ]
    model = TinyGAN(shifts=(0.5,))
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    trainer = fit(
        tmp_path,
        model,
        EmbeddingMonitor(views=("pca",)),
        loaders,
        train_loader,
        max_epochs=1,
        logger=tb,
    )
    for idx in (0, 1):
        expected = reference(model.collected("real", 0, idx), model.collected("fake", 0, idx))
        logged = {
            f"embviz/{k}": float(trainer.callback_metrics[f"embviz/{k}/dataloader_idx_{idx}"])
            for k in KEYS
        }
        assert_metrics(logged, expected)
        tag = f"embviz/pca/dataloader_idx_{idx}"
        steps = list(tb_scalars(tb.log_dir, f"val_marker/dataloader_idx_{idx}"))
        assert [e.step for e in tb_events(tb.log_dir).Images(tag)] == steps
    assert "embviz/coverage" not in trainer.callback_metrics


def test_embed_callable_runs_without_grad(tmp_path, train_loader, val_loader):
    grad_enabled = []

    def embed(module, batch):
        grad_enabled.append(torch.is_grad_enabled())
        x = batch[0]
        return {"real": x.reshape(len(x), 2, WIDTH // 2), "fake": module.fake(x)}

    model = TinyGAN(shifts=(0.7,), outputs=lambda m, out, batch: None)
    trainer = fit(
        tmp_path,
        model,
        EmbeddingMonitor(embed=embed, views=None),
        val_loader,
        train_loader,
        max_epochs=1,
        logger=False,
    )
    assert grad_enabled and not any(grad_enabled)
    real = torch.cat([b[0] for b in val_loader])
    with torch.no_grad():
        expected = reference(real, model.fake(real))
    assert_metrics({k: float(v) for k, v in trainer.callback_metrics.items()}, expected)


def test_half_precision_cap_and_every_n_epochs(tmp_path, train_loader, val_loader):
    def outputs(module, out, batch):
        return {"real": out["real"].half(), "fake": out["fake"].half()}

    model = TinyGAN(shifts=(0.2, 0.4, 0.6), outputs=outputs)
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    # A monitor of the metric must share the period (the key exists on measured epochs only).
    best = ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="embviz/fd", mode="min", every_n_epochs=2
    )
    fit(
        tmp_path,
        model,
        EmbeddingMonitor(views=None, max_samples=40, every_n_epochs=2),
        val_loader,
        train_loader,
        max_epochs=4,
        logger=csv_logger,
        callbacks=[best],
    )
    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("embviz/fd")]
    assert [int(r["epoch"]) for r in rows] == [1, 3]
    # the cap keeps the 40 samples with the smallest hashed index (a uniform subsample)
    kept = torch.sort(torch.argsort(key_hash(torch.arange(64)))[:40]).values
    for row in rows:
        epoch = int(row["epoch"])
        real = model.collected("real", epoch).double()[kept]
        fake = model.collected("fake", epoch).double()[kept]
        assert_metrics(
            {k: float(row[k]) for k in row if k.startswith("embviz/")}, reference(real, fake)
        )
    best_fd = min(float(row["embviz/fd"]) for row in rows)
    assert float(best.best_model_score) == pytest.approx(best_fd)


def test_no_logger_saves_figures_under_default_root_dir(tmp_path, train_loader, val_loader):
    fit(
        tmp_path,
        TinyGAN(),
        EmbeddingMonitor(views=("pca",), background=False),
        val_loader,
        train_loader,
        max_epochs=1,
        logger=False,
    )
    assert [p.name for p in (tmp_path / "embviz" / "pca").glob("*.png")] == ["step_000001.png"]


def test_mlflow_end_to_end(tmp_path, train_loader, val_loader, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    logger = MLFlowLogger(experiment_name="embviz", tracking_uri=uri)
    model = TinyGAN(shifts=(0.5, 1.0))
    fit(tmp_path, model, EmbeddingMonitor(views=("pca",)), val_loader, train_loader, logger=logger)
    client = MlflowClient(tracking_uri=uri)
    marker = [m.step for m in client.get_metric_history(logger.run_id, "val_marker")]
    history = client.get_metric_history(logger.run_id, "embviz/coverage")
    assert [m.step for m in history] == marker and len(marker) == 2
    for epoch, metric in enumerate(history):
        expected = reference(model.collected("real", epoch), model.collected("fake", epoch))
        assert metric.value == pytest.approx(expected["coverage"], rel=1e-6)
    pngs = [a.path for a in client.list_artifacts(logger.run_id, "embviz/pca")]
    assert pngs == [f"embviz/pca/step_{step:06d}.png" for step in marker]


def test_wandb_offline_end_to_end(tmp_path, train_loader, val_loader, monkeypatch):
    wandb = pytest.importorskip("wandb")
    from pytorch_lightning.loggers import WandbLogger

    from _wandb import read_wandb_history

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="embviz")
    model = TinyGAN(shifts=(0.5,))
    try:
        fit(
            tmp_path,
            model,
            EmbeddingMonitor(views=("pca",)),
            val_loader,
            train_loader,
            max_epochs=1,
            logger=logger,
        )
        run_dir = Path(logger.experiment.dir).parent
    finally:
        wandb.finish()
    (run_file,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + 20.0
    while True:  # W&B's service may still be writing the run file
        history = read_wandb_history(str(run_file))
        scalars = [row for row in history if "embviz/coverage" in row]
        images = [row for row in history if "embviz/pca/filenames" in row]
        if (scalars and images) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    expected = reference(model.collected("real", 0), model.collected("fake", 0))
    (row,) = scalars
    assert row["embviz/coverage"] == pytest.approx(expected["coverage"], rel=1e-6)
    assert [r["trainer/global_step"] for r in images] == [row["trainer/global_step"]]


def test_embedding_projector(tmp_path, train_loader, val_loader):
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    fit(
        tmp_path,
        TinyGAN(),
        EmbeddingMonitor(views=None, log_projector=True),
        val_loader,
        train_loader,
        max_epochs=1,
        logger=tb,
    )
    config = (Path(tb.log_dir) / "projector_config.pbtxt").read_text()
    assert "embviz/embeddings" in config
    (step,) = tb_scalars(tb.log_dir, "val_marker")
    (tsv,) = Path(tb.log_dir).glob(f"{step:05d}/*/metadata.tsv")
    lines = tsv.read_text().splitlines()
    assert lines[0].split("\t") == ["source", "label"] and len(lines) == 1 + 64 + 64


# --------------------------------------------------------------------------- bad input


def test_nan_rows_are_dropped_with_one_warning(tmp_path, train_loader, val_loader):
    def outputs(module, out, batch):
        real = out["real"].clone()
        if batch[1].sum() >= 0 and module.trainer.current_epoch == 0:
            real[:1] = float("nan")  # first row of each of the 4 batches
        return {"real": real, "fake": out["fake"]}

    model = TinyGAN(shifts=(0.5,), outputs=outputs)
    with pytest.warns(UserWarning, match=r"dropped 4 of 64 real rows") as record:
        trainer = fit(
            tmp_path,
            model,
            EmbeddingMonitor(views=None),
            val_loader,
            train_loader,
            max_epochs=1,
            logger=False,
        )
    assert sum("dropped" in str(w.message) for w in record) == 1
    real = model.collected("real", 0)
    finite = torch.isfinite(real).all(dim=1)
    expected = reference(real[finite], model.collected("fake", 0))
    assert_metrics({k: float(v) for k, v in trainer.callback_metrics.items()}, expected)


def fixed_generator_batch(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    """Always 8 distinct fakes, whatever the real batch size; the dataset index of each real."""
    fake = module.fake(out["real"]).repeat(8, 1)[:8] + torch.linspace(0, 1, 8).unsqueeze(1)
    return {"real": out["real"], "fake": fake, "index": batch[2]}


def test_returned_index_with_uneven_fake_counts_keeps_every_fake(tmp_path, train_loader):
    # A shuffled loader of 19 samples in batches of 8, 8, 3 with dataset indices, and a
    # generator batch of 8: the fakes of the short batch used to collide with the indices of
    # the paired batches and were dropped as duplicates.
    data = indexed_dataset(19, seed=4)
    val = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    model = TinyGAN(outputs=fixed_generator_batch)
    monitor = EmbeddingMonitor(views=None)
    trainer = pl.Trainer(default_root_dir=tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.callbacks.append(monitor)
    trainer.fit(model, train_loader, val)
    real, fake = model.collected("real", 0), model.collected("fake", 0)
    assert real.shape[0] == 19 and fake.shape[0] == 24
    expected = reference(real, fake)
    assert_metrics({k: float(v) for k, v in trainer.callback_metrics.items()}, expected)
    # every returned fake is in the fake table; the short batch's fakes have no index (-1)
    table = next(Path(tmp_path).rglob("samples_fake/*.csv"))
    with table.open() as f:
        shown = sorted(int(row["index"]) for row in csv.DictReader(f))
    assert len(shown) == 24 and shown[:8] == [-1] * 8
    assert sorted(model.collected("index", 0)[:16, 0].long().tolist()) == shown[8:]


def test_too_few_samples_warns_and_training_goes_on(tmp_path, train_loader):
    # A checkpoint monitor on the metric must not crash either: the skipped runs log NaN,
    # which ModelCheckpoint ranks last.
    tiny = DataLoader(make_data(4), batch_size=2)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="embviz/coverage", mode="max")
    with pytest.warns(UserWarning, match=r"skipped the metrics: 4 real and 4 fake usable rows"):
        trainer = fit(
            tmp_path,
            TinyGAN(),
            EmbeddingMonitor(views=("pca",)),
            tiny,
            train_loader,
            logger=False,
            callbacks=[best],
        )
    assert trainer.current_epoch == 2  # both epochs ran
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("embviz/")}
    assert sorted(logged) == [f"embviz/{n}" for n in sorted(METRIC_NAMES)]
    assert all(math.isnan(v) for v in logged.values())


def test_a_failure_in_the_metrics_warns_and_training_goes_on(
    tmp_path, train_loader, val_loader, monkeypatch
):
    from lightning_embviz.reference import RealReference

    def broken(*args, **kwargs):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(RealReference, "sweep_details", broken)
    with pytest.warns(UserWarning, match=r"computing the metrics failed(.|\n)*engine exploded"):
        trainer = fit(
            tmp_path,
            TinyGAN(),
            EmbeddingMonitor(views=("pca",)),
            val_loader,
            train_loader,
            logger=False,
        )
    assert trainer.current_epoch == 2
    assert math.isnan(float(trainer.callback_metrics["embviz/coverage"]))


@pytest.mark.parametrize(
    ("outputs", "error", "match"),
    [
        (lambda m, out, b: None, ValueError, r"`validation_step` returned None"),
        (lambda m, out, b: out["real"].sum(), TypeError, r"returned a Tensor"),
        (
            lambda m, out, b: {"real": out["real"], "gen": out["fake"]},
            ValueError,
            r"keys \['gen', 'real'\].*missing \['fake'\]",
        ),
        (
            lambda m, out, b: {"real": out["real"], "fake": out["fake"][:, :3]},
            ValueError,
            r"same width D.*\(16, 6\) and \(16, 3\)",
        ),
        (
            lambda m, out, b: {"real": out["real"][0], "fake": out["fake"]},
            ValueError,
            r"'real' must have shape \(B, D\)",
        ),
    ],
)
def test_bad_validation_outputs_raise_clear_errors(tmp_path, val_loader, outputs, error, match):
    trainer = pl.Trainer(
        callbacks=[EmbeddingMonitor(views=None)],
        logger=False,
        num_sanity_val_steps=0,
        **trainer_kwargs(tmp_path),
    )
    with pytest.raises(error, match=match):
        trainer.validate(TinyGAN(outputs=outputs), val_loader)


def test_figure_errors_are_reported_not_swallowed(tmp_path, train_loader, val_loader, monkeypatch):
    from lightning_embviz import views

    def broken(self, *args, **kwargs):
        raise RuntimeError("projection exploded")

    monkeypatch.setattr(views.ViewBuilder, "build", broken)
    with pytest.warns(RuntimeWarning, match="projection exploded"):
        trainer = fit(
            tmp_path,
            TinyGAN(),
            EmbeddingMonitor(views=("pca",)),
            val_loader,
            train_loader,
            max_epochs=1,
            logger=False,
        )
    assert "embviz/coverage" in trainer.callback_metrics


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"nearest_k": 0}, ValueError, r"`EmbeddingMonitor\(nearest_k=0\)` is not valid"),
        ({"nearest_k": 2.5}, TypeError, r"nearest_k=2.5"),
        ({"nearest_k": True}, TypeError, r"nearest_k=True"),
        ({"every_n_epochs": 0}, ValueError, r"every_n_epochs=0"),
        ({"max_samples": 5}, ValueError, r"max_samples=5.*> nearest_k=5"),
        ({"max_samples": "all"}, TypeError, r"max_samples='all'"),
        ({"views": "pca"}, TypeError, r"views='pca'.*\('pca',\)"),
        ({"views": ("pca", "spiral")}, ValueError, r"views=\('pca', 'spiral'\).*spiral"),
        ({"view_max_samples": 9}, ValueError, r"view_max_samples=9.*>= 10"),
        ({"seed": -1}, ValueError, r"seed=-1"),
        ({"real_key": ""}, ValueError, r"real_key=''"),
        ({"fake_key": 3}, TypeError, r"fake_key=3"),
        ({"fake_key": "real"}, ValueError, r"must name different keys"),
        ({"embed": "features"}, TypeError, r"embed='features'"),
        ({"prefix": None}, TypeError, r"prefix=None"),
        ({"background": 1}, TypeError, r"background=1"),
        ({"seed": 1.5}, TypeError, r"seed=1.5"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        EmbeddingMonitor(**kwargs)


def test_default_arguments_and_docstring_keys():
    monitor = EmbeddingMonitor()
    assert monitor.views == ("pca", "tsne") and monitor.max_samples == 10000
    doc = EmbeddingMonitor.__doc__ or ""
    for key in KEYS:
        assert f"embviz/{key}" in doc
    state = monitor.state_dict()
    assert state["runs"] == 0 and state["views"]  # never empty, even before any run
    assert EmbeddingMonitor(nearest_k=np.int64(3)).nearest_k == 3
