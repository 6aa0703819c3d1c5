"""The new callback features under ``trainer.validate(ckpt_path=...)``, as users run them.

A real ``fit()`` with Lightning's defaults (sanity check, default TensorBoard logger, a
``ModelCheckpoint``) with ``embedder=``, ``train=``/``train_images=``, ``extra_metrics=`` or
audio and groups on; then a new Trainer with a new ``EmbeddingMonitor`` of the same
arguments validates the saved ``.ckpt`` (and the fitting Trainer validates ``"best"`` /
``"last"``). The new keys are read back from the logger files at the checkpoint's training
step and compared with the reference functions on the embeddings of the checkpointed model;
neither the embedder nor the training embeddings end up in the checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from prdc import compute_prdc
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from _models import WIDTH, make_data, make_module_class, trainer_kwargs
from lightning_embviz import EmbeddingMonitor, compute_prdc_details, samples
from lightning_embviz.audio import decode_wav, make_clips
from lightning_embviz.engine.groups import per_group_scores
from lightning_embviz.memorization import TrainReference, compute_memorization
from lightning_embviz.metrics import (
    clipped_density_coverage,
    fd_infinity,
    frechet_distance,
    kernel_distance,
    vendi_score,
)

TinyGAN = make_module_class(pl)
SHIFT, N_TRAIN, N_VAL, DIM = 0.3, 80, 64, 4
PRDC = ("precision", "recall", "density", "coverage")
MEMORIZATION = ("authenticity", "ct_score", "copy_fraction")
EXTRA = ("vendi", "vendi_real", "kd", "kd_se", "fd_inf", "clipped_density", "clipped_coverage")
RATE, AUDIO_SHIFT = 4000, 10.0


# --------------------------------------------------------------------------- helpers


def _tb(log_dir: str | Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(
        str(log_dir), size_guidance={"scalars": 0, "images": 0, "audio": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def _tb_scalars(log_dir: str | Path) -> dict[str, dict[int, float]]:
    acc = _tb(log_dir)
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def _csv_rows(log_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``metrics.csv`` that hold embviz values, in order."""
    with open(Path(log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("embviz/coverage")]
    return [{k: float(v) for k, v in row.items() if v != ""} for row in rows]


def _same(logged: float, expected: float, rel: float = 1e-5) -> bool:
    if math.isnan(expected):
        return math.isnan(logged)
    return logged == pytest.approx(expected, rel=rel, abs=1e-6)


def _checkpointed(path: str | Path, **kwargs: Any) -> Any:
    """A fresh TinyGAN with the weights of the checkpoint at ``path``."""
    model = TinyGAN(**kwargs)
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain tensors only
    model.load_state_dict(state["state_dict"])
    return model.eval()


def _training_step(path: str | Path) -> int:
    """The step at which the training run logged the validation of this checkpoint."""
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"]) - 1


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _assert_not_in_checkpoint(path: str | Path, *forbidden: torch.Tensor) -> dict[str, Any]:
    """No tensor of ``forbidden``, nor one of its rows, anywhere in the checkpoint file.

    Compared in float32 (the embedder's own precision), so a copy kept in another float
    dtype is found too. Returns the checkpoint, loaded with ``weights_only=True``.
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint["state_dict"]) == {"generator.weight", "generator.bias"}
    stored = [t.detach().cpu().float() for t in _tensors(checkpoint) if t.is_floating_point()]
    for tensor in forbidden:
        rows = tensor.detach().cpu().float().reshape(-1, tensor.shape[-1])
        for t in stored:
            if t.dim() == 0 or t.shape[-1] != rows.shape[1]:
                continue
            held = t.reshape(-1, rows.shape[1])
            assert not (held[:, None, :] == rows[None]).all(-1).any(), tuple(t.shape)
    return checkpoint


class ImageEmbedder(torch.nn.Module):
    """A user's image embedder: (B, 1, 2, 3) images -> (B, DIM), seeded like a pretrained one."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(WIDTH, DIM))
        self.rows: list[int] = []  # rows per forward pass

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(images))
        return self.net(images.float())


def _images(rows: torch.Tensor) -> torch.Tensor:
    return rows.reshape(-1, 1, 2, 3)


def _image_outputs(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    """Images only (the embedder computes the embeddings), with labels."""
    return {
        "real_images": _images(out["real"]),
        "fake_images": _images(out["fake"]),
        "labels": out["labels"],
    }


def _embed(embedder: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return embedder.eval()(images).double()


# --------------------------------------------------------------------------- memorization + extras


def _image_monitor(train_ref: Path, train_images: torch.Tensor) -> EmbeddingMonitor:
    return EmbeddingMonitor(
        views=None,
        embedder=ImageEmbedder(),
        train=train_ref,
        train_images=train_images,
        extra_metrics=("vendi", "kd", "fd_inf", "clipped"),
        gallery_size=4,
    )


def _expected_image_run(
    model: Any, embedder: torch.nn.Module, train: torch.Tensor, n_val: int = N_VAL, seed: int = 0
) -> dict:
    """Every logged value, from the reference functions on the model's embeddings."""
    x = make_data(n_val, seed=seed).tensors[0]
    with torch.no_grad():
        fake_rows = model.fake(x)
    real, fake = _embed(embedder, _images(x)), _embed(embedder, _images(fake_rows))
    out: dict[str, float] = dict(compute_prdc(real.numpy(), fake.numpy(), nearest_k=5))
    out["fd"] = frechet_distance(real, fake)
    out.update(compute_memorization(train, fake, heldout=real, n_cells=2))
    out["vendi"], out["vendi_real"] = vendi_score(fake), vendi_score(real)
    out.update(kernel_distance(real, fake))
    out["fd_inf"] = fd_infinity(real, fake, seed=0).fd_inf
    out.update(clipped_density_coverage(real, fake, 5))
    return out


@dataclasses.dataclass
class ImageRun:
    """One fit() with every image feature on, shared by the tests below (module scope)."""

    tmp: Path
    trainer: pl.Trainer
    model: Any
    monitor: EmbeddingMonitor
    train: torch.Tensor
    train_images: torch.Tensor
    training: dict[str, dict[int, float]]
    steps: list[int]
    warned: list[str]
    # Kept right after fit(): validate() restores every ModelCheckpoint's state from the
    # file it loads, so these attributes change afterwards.
    best: str
    best_score: float
    last: str
    least_copying: Path
    least_copying_score: float
    coverage_paths: list[Path]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> ImageRun:
    """fit() with Lightning's defaults (TensorBoard logger, sanity check) and three
    ModelCheckpoints: authenticity (max), copy_fraction (min), coverage (every epoch, last)."""
    tmp = tmp_path_factory.mktemp("image_run")
    train_images = _images(make_data(N_TRAIN, seed=1).tensors[0])
    train = _embed(ImageEmbedder(), train_images)
    TrainReference(train, n_cells=2).save(tmp / "train_ref.pt")
    by_authenticity = ModelCheckpoint(
        dirpath=tmp / "ckpt",
        monitor="embviz/authenticity",
        mode="max",
        filename="auth-{epoch}-{step}",
    )
    by_copying = ModelCheckpoint(
        dirpath=tmp / "ckpt", monitor="embviz/copy_fraction", filename="copy-{epoch}-{step}"
    )
    by_coverage = ModelCheckpoint(
        dirpath=tmp / "ckpt",
        monitor="embviz/coverage",
        mode="max",
        save_top_k=-1,
        filename="cov-{epoch}-{step}",
        save_last=True,  # (Lightning 2.6 updates last.ckpt only when this callback saves)
    )
    monitor = _image_monitor(tmp / "train_ref.pt", train_images)
    model = TinyGAN(shifts=(SHIFT,), outputs=_image_outputs)
    trainer = pl.Trainer(
        callbacks=[by_authenticity, monitor, by_copying, by_coverage],
        **trainer_kwargs(tmp, enable_progress_bar=False),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(
            model,
            DataLoader(make_data(32, seed=2), batch_size=16),
            DataLoader(make_data(N_VAL), 16),
        )
    training = _tb_scalars(trainer.logger.log_dir)
    return ImageRun(
        tmp=tmp,
        trainer=trainer,
        model=model,
        monitor=monitor,
        train=train,
        train_images=train_images,
        training=training,
        steps=sorted(training.get("embviz/authenticity", {})),
        warned=[str(w.message) for w in caught],
        best=by_authenticity.best_model_path,
        best_score=float(by_authenticity.best_model_score),
        last=by_coverage.last_model_path,
        least_copying=Path(by_copying.best_model_path),
        least_copying_score=float(by_copying.best_model_score),
        coverage_paths=sorted((tmp / "ckpt").glob("cov-*.ckpt")),
    )


def test_fit_logs_the_new_keys_in_time_for_model_checkpoint(image_run: ImageRun) -> None:
    """One point per epoch (none for the sanity check); the monitors pick their checkpoint."""
    run = image_run
    assert not [w for w in run.warned if "could not find the monitored key" in w]
    assert len(run.steps) == 2
    for key in (*PRDC, "fd", *MEMORIZATION, *EXTRA):
        assert sorted(run.training[f"embviz/{key}"]) == run.steps, key
    closest = _tb(run.trainer.logger.log_dir).Images("embviz/closest_train")
    assert sorted(e.step for e in closest) == run.steps
    # ModelCheckpoint(monitor="embviz/authenticity", mode="max") picked the best epoch, and
    # monitor="embviz/copy_fraction" (mode "min") the least copying one.
    authenticity = run.training["embviz/authenticity"]
    assert run.best_score == pytest.approx(max(authenticity.values()))
    assert authenticity[_training_step(run.best)] == max(authenticity.values())
    copying = run.training["embviz/copy_fraction"]
    assert run.least_copying_score == pytest.approx(min(copying.values()))
    assert copying[_training_step(run.least_copying)] == min(copying.values())
    assert [_training_step(p) for p in run.coverage_paths] == run.steps
    assert _training_step(run.last) == run.steps[-1]


def test_checkpoints_hold_no_embedder_weights_nor_training_embeddings(image_run: ImageRun) -> None:
    """Every file loads with weights_only=True; its callback state counts the measured runs."""
    run = image_run
    for path in [*run.coverage_paths, Path(run.last)]:
        saved = _assert_not_in_checkpoint(path, *run.monitor.embedder.parameters(), run.train)
        state = saved["callbacks"][run.monitor.state_key]
        assert state["runs"] == run.steps.index(_training_step(path)) + 1
        assert state["last_step"] == _training_step(path)


def test_validate_best_and_last_on_the_fitting_trainer(image_run: ImageRun) -> None:
    """trainer.validate(ckpt_path="best") (the authenticity checkpoint) and "last"."""
    run = image_run
    embedder = run.monitor.embedder
    for which, path in (("best", run.best), ("last", run.last)):
        loader = DataLoader(make_data(N_VAL), 16)
        result = run.trainer.validate(run.model, loader, ckpt_path=which)[0]
        step = _training_step(path)
        expected = _expected_image_run(_checkpointed(path, shifts=(SHIFT,)), embedder, run.train)
        for key in (*PRDC, "fd", *MEMORIZATION, *EXTRA):
            assert _same(result[f"embviz/{key}"], expected[key]), (which, key)
            assert _same(result[f"embviz/{key}"], run.training[f"embviz/{key}"][step]), which
        if which == "best":
            assert result["embviz/authenticity"] == pytest.approx(run.best_score)


def test_new_trainer_validates_each_checkpoint_at_its_training_step(image_run: ImageRun) -> None:
    """A new Trainer and a new monitor of the same arguments, as a user comparing
    checkpoints does: every checkpoint is logged at its training step into metrics.csv."""
    run = image_run
    validator_monitor = _image_monitor(run.tmp / "train_ref.pt", run.train_images)
    logger = CSVLogger(run.tmp, name="compare", version=0)
    validator = pl.Trainer(
        callbacks=[validator_monitor],
        logger=logger,
        default_root_dir=run.tmp,
        enable_progress_bar=False,
    )
    paths = [*run.coverage_paths, run.least_copying]
    evaluator = validator_monitor._evaluator
    reference = evaluator._memorization.reference
    results = []
    for path in paths:
        fresh = TinyGAN(shifts=(SHIFT,), outputs=_image_outputs)
        loader = DataLoader(make_data(N_VAL), 16)
        results.append(validator.validate(fresh, loader, ckpt_path=path)[0])
        if path == paths[0]:
            fitted_real = evaluator._references[0]
    # The training side was fitted once, at construction, and reused by every run; the real
    # side (the same real rows: the embedder does not change) was fitted once and reused.
    assert evaluator._memorization.reference is reference
    assert evaluator._references[0] is fitted_real
    rows = _csv_rows(logger.log_dir)
    assert len(rows) == len(paths)  # one row per validate(), at the checkpoint's step
    embedder = validator_monitor.embedder
    for path, result, row in zip(paths, results, rows):
        step = _training_step(path)
        expected = _expected_image_run(_checkpointed(path, shifts=(SHIFT,)), embedder, run.train)
        assert row["step"] == step and step in run.steps
        assert row["epoch"] == torch.load(path, weights_only=True)["epoch"]
        for key in (*PRDC, "fd", *MEMORIZATION, *EXTRA):
            assert _same(row[f"embviz/{key}"], expected[key]), (path.name, key)
            assert _same(result[f"embviz/{key}"], expected[key]), (path.name, key)
            assert _same(row[f"embviz/{key}"], run.training[f"embviz/{key}"][step]), path.name
        assert math.isfinite(row["embviz/ct_score"])
    # The closest_train gallery and the image galleries at the same steps.
    for name in ("closest_train", "missed_real"):
        shown = sorted((Path(logger.log_dir) / "embviz" / name).glob("step_*.png"))
        assert [p.name for p in shown] == [f"step_{s:06d}.png" for s in run.steps], name

    # Other validation data: the real side is refitted, the training side still reused.
    fresh = TinyGAN(shifts=(SHIFT,), outputs=_image_outputs)
    result = validator.validate(fresh, DataLoader(make_data(48, seed=3), 16), ckpt_path=paths[-1])
    assert evaluator._references[0] is not fitted_real
    assert evaluator._memorization.reference is reference
    model = _checkpointed(paths[-1], shifts=(SHIFT,))
    expected = _expected_image_run(model, embedder, run.train, n_val=48, seed=3)
    for key in (*PRDC, "fd", *MEMORIZATION, *EXTRA):
        assert _same(result[0][f"embviz/{key}"], expected[key]), key


def test_train_images_embedded_by_the_embedder_under_validate_ckpt_path(
    image_run: ImageRun,
) -> None:
    """``embedder=`` with ``train_images=`` and no ``train=``: a new monitor embeds the
    training images once (they are in no checkpoint) and reuses them for every checkpoint."""
    run = image_run
    embedder = ImageEmbedder()
    monitor = EmbeddingMonitor(
        views=None,
        embedder=embedder,
        train_images=run.train_images,
        embed_batch_size=N_TRAIN,  # the training images in one pass, told apart by its size
        gallery_size=4,
        log_samples=False,
    )
    logger = CSVLogger(run.tmp, name="embedded_train", version=0)
    validator = pl.Trainer(
        callbacks=[monitor], logger=logger, default_root_dir=run.tmp, enable_progress_bar=False
    )
    paths = [Path(run.best), Path(run.last)]
    results = []
    for path in paths:
        fresh = TinyGAN(shifts=(SHIFT,), outputs=_image_outputs)
        loader = DataLoader(make_data(N_VAL), 16)
        results.append(validator.validate(fresh, loader, ckpt_path=path)[0])
    assert embedder.rows.count(N_TRAIN) == 1  # embedded once, reused by the second run
    rows = _csv_rows(logger.log_dir)
    assert [row["step"] for row in rows] == [_training_step(p) for p in paths]
    for path, result, row in zip(paths, results, rows):
        model = _checkpointed(path, shifts=(SHIFT,))
        x = make_data(N_VAL).tensors[0]
        with torch.no_grad():
            fake_rows = model.fake(x)
        real, fake = _embed(embedder, _images(x)), _embed(embedder, _images(fake_rows))
        expected = compute_memorization(run.train, fake, heldout=real)  # 20 cells by default
        for key in MEMORIZATION:
            assert _same(row[f"embviz/{key}"], expected[key]), (path.name, key)
            assert _same(result[f"embviz/{key}"], expected[key]), (path.name, key)
        # authenticity and copy_fraction do not depend on the cells: equal to the training run
        step = _training_step(path)
        for key in ("authenticity", "copy_fraction"):
            assert _same(row[f"embviz/{key}"], run.training[f"embviz/{key}"][step]), key
    shown = sorted((Path(logger.log_dir) / "embviz" / "closest_train").glob("step_*.png"))
    assert [p.name for p in shown] == sorted(f"step_{_training_step(p):06d}.png" for p in paths)


# --------------------------------------------------------------------------- audio + groups


class AudioEmbedder(torch.nn.Module):
    """A user's audio embedder: (B, T) waveforms at RATE -> (B, DIM) (a seeded projection)."""

    modality = "audio"
    sample_rate = RATE

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.proj = torch.nn.Linear(600, DIM)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.proj(waveforms.float())


def _tones(rows: torch.Tensor) -> torch.Tensor:
    """One tone per row, its pitch and loudness set by the row: (B, 600) at RATE."""
    t = torch.arange(600) / RATE
    pitch = 200.0 + 50.0 * rows[:, :1].detach().abs()
    return 0.5 * torch.tanh(rows[:, 1:2].detach().abs()) * torch.sin(2 * math.pi * pitch * t)


def _audio_outputs(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    labels = out["labels"]
    return {
        "real_audio": _tones(out["real"]),
        "fake_audio": _tones(out["fake"]),
        "labels": labels,
        "groups": {"real": labels, "fake": labels},
    }


def _audio_monitor() -> EmbeddingMonitor:
    return EmbeddingMonitor(
        views=None,
        embedder=AudioEmbedder(),
        audio_keep_rate=2000,
        audio_keep_seconds=0.1,
        gallery_size=4,
        log_samples=False,
    )


@dataclasses.dataclass
class AudioRun:
    """One fit() with an audio embedder and groups, Lightning's defaults throughout."""

    tmp: Path
    monitor: EmbeddingMonitor
    path: Path
    training: dict[str, dict[int, float]]


@pytest.fixture(scope="module")
def audio_run(tmp_path_factory: pytest.TempPathFactory) -> AudioRun:
    tmp = tmp_path_factory.mktemp("audio_run")
    monitor = _audio_monitor()
    model = TinyGAN(shifts=(AUDIO_SHIFT,), outputs=_audio_outputs)
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp, enable_progress_bar=False))
    trainer.fit(
        model, DataLoader(make_data(16, seed=1), batch_size=8), DataLoader(make_data(48), 16)
    )
    path = Path(trainer.checkpoint_callback.best_model_path)  # Lightning's default checkpoint
    return AudioRun(tmp, monitor, path, _tb_scalars(trainer.logger.log_dir))


def test_audio_and_groups_of_the_default_checkpoint_in_a_new_trainer(audio_run: AudioRun) -> None:
    """A new Trainer (CSV and TensorBoard loggers), a new embedder built the same way and a
    new monitor of the same arguments validate Lightning's default checkpoint."""
    run, path = audio_run, audio_run.path
    assert path.parent.name == "checkpoints" and path.name == "epoch=1-step=4.ckpt"
    saved = _assert_not_in_checkpoint(path, *run.monitor.embedder.parameters())
    assert saved["callbacks"][run.monitor.state_key]["runs"] == 2
    step = _training_step(path)
    assert max(run.training["embviz/coverage"]) == step

    validator_monitor = _audio_monitor()
    logger = CSVLogger(run.tmp, name="compare", version=0)
    tb = TensorBoardLogger(run.tmp, name="compare_tb", version=0)
    validator = pl.Trainer(
        callbacks=[validator_monitor],
        logger=[logger, tb],
        default_root_dir=run.tmp / "v",
        enable_progress_bar=False,
    )
    fresh = TinyGAN(shifts=(AUDIO_SHIFT,), outputs=_audio_outputs)
    result = validator.validate(fresh, DataLoader(make_data(48), 16), ckpt_path=path)[0]
    assert all(p.grad is None for p in validator_monitor.embedder.parameters())

    x, labels = make_data(48).tensors
    with torch.no_grad():
        fake_rows = _checkpointed(path, shifts=(AUDIO_SHIFT,)).fake(x)
    real = _embed(validator_monitor.embedder, _tones(x))
    fake = _embed(validator_monitor.embedder, _tones(fake_rows))
    expected = dict(compute_prdc(real.numpy(), fake.numpy(), nearest_k=5))
    expected["fd"] = frechet_distance(real, fake)
    (row,) = _csv_rows(logger.log_dir)
    assert row["step"] == step
    for key in (*PRDC, "fd"):
        assert _same(row[f"embviz/{key}"], expected[key]), key
        assert _same(result[f"embviz/{key}"], expected[key]), key
        assert _same(row[f"embviz/{key}"], run.training[f"embviz/{key}"][step]), key

    # The per-group table and the clips of the checkpoint's run, at its training step.
    table = Path(logger.log_dir) / "embviz" / "groups" / f"step_{step:06d}.csv"
    with open(table) as f:
        rows = list(csv.DictReader(f))
    want = per_group_scores(real, fake, real_groups=labels, fake_groups=labels)
    assert len(rows) == len(want) == 6
    for got, score in zip(rows, want):
        assert (int(got["group"]), got["side"]) == (score.group, score.side)
        assert int(got["count"]) == score.count
        for name in (*PRDC, "fd"):
            assert _same(float(got[name]), getattr(score, name), rel=1e-9), name
    # The shown clips are the checkpointed model's missed reals and outlier fakes.
    details = compute_prdc_details(real, fake, nearest_k=5)
    shown = {
        "missed_real_audio": (samples.missed_real_order(details)[:4], _tones(x)),
        "outlier_fake_audio": (samples.outlier_fake_order(details)[:4], _tones(fake_rows)),
    }
    for kind, (order, audio) in shown.items():
        folders = [p for p in (Path(logger.log_dir) / "embviz" / kind).iterdir() if p.is_dir()]
        assert [f.name for f in folders] == [f"step_{step:06d}"], kind
        wavs = sorted(folders[0].glob("*.wav"))
        assert len(wavs) == len(order) > 0, kind
        kept = make_clips(audio[order], RATE, keep_rate=2000, max_seconds=0.1)
        for i, wav in enumerate(wavs):
            clip, rate = decode_wav(wav.read_bytes())
            assert rate == 2000
            np.testing.assert_allclose(clip, kept.clip(i), atol=1.5 / 32767)

    # TensorBoard too: scalars, clips, spectrograms and the group table at that step.
    events = _tb(tb.log_dir)
    assert {t: sorted(v) for t, v in _tb_scalars(tb.log_dir).items() if "embviz" in t} == {
        f"embviz/{key}": [step] for key in (*PRDC, "fd")
    }
    clips = [t for t in events.Tags()["audio"] if "_audio/" in t]
    assert len(clips) == sum(len(order) for order, _ in shown.values())
    assert {e.step for t in clips for e in events.Audio(t)} == {step}
    assert [e.step for e in events.Images("embviz/missed_real_audio")] == [step]
    groups = [t for t in events.Tags()["tensors"] if "embviz/groups" in t]
    assert groups and {e.step for t in groups for e in events.Tensors(t)} == {step}


def test_resuming_fit_restores_the_state_and_keeps_measuring(
    audio_run: AudioRun, image_run: ImageRun, tmp_path: Path
) -> None:
    """fit(ckpt_path=...) with new monitors of the same arguments: the callback state of the
    checkpoint loads, and the next epoch's values equal the reference functions."""
    # audio and groups, from Lightning's default checkpoint
    again = _audio_monitor()
    resumed = pl.Trainer(
        callbacks=[again],
        **trainer_kwargs(tmp_path / "audio", max_epochs=3, enable_progress_bar=False),
    )
    model = TinyGAN(shifts=(AUDIO_SHIFT,), outputs=_audio_outputs)
    train_loader = DataLoader(make_data(16, seed=1), batch_size=8)
    resumed.fit(model, train_loader, DataLoader(make_data(48), 16), ckpt_path=audio_run.path)
    assert again.state_dict()["runs"] == 3
    scalars = _tb_scalars(resumed.logger.log_dir)
    assert sorted(scalars["embviz/coverage"]) == [5]
    real = _embed(again.embedder, model.collected("real_audio", 2))
    fake = _embed(again.embedder, model.collected("fake_audio", 2))
    expected = compute_prdc(real.numpy(), fake.numpy(), nearest_k=5)
    assert _same(scalars["embviz/coverage"][5], expected["coverage"])

    # embedder, memorization and extra metrics, from last.ckpt
    run = image_run
    again = _image_monitor(run.tmp / "train_ref.pt", run.train_images)
    resumed = pl.Trainer(
        callbacks=[again],
        **trainer_kwargs(tmp_path / "image", max_epochs=3, enable_progress_bar=False),
    )
    model = TinyGAN(shifts=(SHIFT,), outputs=_image_outputs)
    train_loader = DataLoader(make_data(32, seed=2), batch_size=16)
    resumed.fit(model, train_loader, DataLoader(make_data(N_VAL), 16), ckpt_path=run.last)
    assert again.state_dict()["runs"] == 3
    scalars = _tb_scalars(resumed.logger.log_dir)
    real = _embed(again.embedder, model.collected("real_images", 2))
    fake = _embed(again.embedder, model.collected("fake_images", 2))
    expected = compute_memorization(run.train, fake, heldout=real, n_cells=2)
    expected["vendi"] = vendi_score(fake)
    expected.update(kernel_distance(real, fake))
    for key in (*MEMORIZATION, "vendi", "kd"):
        assert sorted(scalars[f"embviz/{key}"]) == [5], key
        assert _same(scalars[f"embviz/{key}"][5], expected[key]), key
