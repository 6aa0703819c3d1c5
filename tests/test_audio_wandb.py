"""W&B: the missed/outlier clips as ``wandb.Audio`` at the scalars' step (an offline run)."""

from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from _models import make_data, make_module_class, trainer_kwargs
from _wandb import read_wandb_history
from lightning_embviz import EmbeddingMonitor, compute_prdc_details, samples
from lightning_embviz.audio import decode_wav, make_clips

TinyGAN = make_module_class(pl)
RATE, KEEP_RATE, SECONDS, TILES = 4000, 2000, 0.1, 3


def tones(x: torch.Tensor) -> torch.Tensor:
    """One tone per row, its pitch and loudness set by the row's embedding: (B, T)."""
    t = torch.arange(int(RATE * 0.15)) / RATE
    pitch = 200.0 + 50.0 * x[:, :1].detach().abs()
    return 0.5 * torch.tanh(x[:, 1:2].detach().abs()) * torch.sin(2 * math.pi * pitch * t)


def with_audio(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    out["real_audio"] = tones(out["real"])
    out["fake_audio"] = tones(out["fake"])
    out["groups"] = [["low", "mid", "high"][int(v)] for v in out["labels"]]
    return out


def test_clips_logged_as_wandb_audio_at_the_scalars_step(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed: pip install wandb")
    pytest.importorskip(
        "soundfile",
        reason="W&B logs audio only with soundfile (pip install lightning-embviz[wandb])",
    )
    from pytorch_lightning.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="embviz")
    model = TinyGAN(shifts=(2.5,), outputs=with_audio)
    monitor = EmbeddingMonitor(
        views=None,
        background=False,
        log_samples=False,
        sample_rate=RATE,
        audio_keep_rate=KEEP_RATE,
        audio_keep_seconds=SECONDS,
        gallery_size=TILES,
    )
    try:
        trainer = pl.Trainer(
            callbacks=[monitor], **trainer_kwargs(tmp_path, logger=logger, max_epochs=1)
        )
        trainer.fit(
            model,
            DataLoader(make_data(16, seed=1), batch_size=8),
            DataLoader(make_data(48), batch_size=16),
        )
        run_dir = Path(logger.experiment.dir).parent
    finally:
        wandb.finish()
    (run_file,) = run_dir.glob("run-*.wandb")
    deadline = time.monotonic() + 20.0
    while True:  # W&B's service may still be writing the run file
        rows = read_wandb_history(run_file)
        scalars = [r for r in rows if "embviz/coverage" in r]
        clips = [r for r in rows if "embviz/missed_real_audio/clips/_type" in r]
        if (scalars and clips) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    (scalar,) = scalars
    step = scalar["trainer/global_step"]

    real, fake = model.collected("real", 0), model.collected("fake", 0)
    details = compute_prdc_details(real, fake, nearest_k=5)
    batches = model.seen[(0, 0)]
    names = np.array(["low", "mid", "high"])
    labels = model.collected("labels", 0).reshape(-1).long().numpy()
    for key, rows_shown, audio, score in (
        (
            "missed_real_audio",
            samples.missed_real_order(details)[:TILES],
            torch.cat([b["real_audio"] for b in batches]),
            details.real_nearest_fake_ratio,
        ),
        (
            "outlier_fake_audio",
            samples.outlier_fake_order(details)[:TILES],
            torch.cat([b["fake_audio"] for b in batches]),
            details.fake_nearest_ball_ratio,
        ),
    ):
        (row,) = [r for r in rows if f"embviz/{key}/clips/_type" in r]
        (figure,) = [r for r in rows if f"embviz/{key}/_type" in r]  # the spectrograms
        assert figure[f"embviz/{key}/_type"] == "images/separated"
        assert figure["trainer/global_step"] == step
        assert row["trainer/global_step"] == step  # the clips at the scalars' step
        assert row[f"embviz/{key}/clips/_type"] == "audio"
        assert row[f"embviz/{key}/clips/count"] == len(rows_shown) > 0
        assert row[f"embviz/{key}/clips/sampleRates"] == [KEEP_RATE] * len(rows_shown)
        captions = row[f"embviz/{key}/clips/captions"]
        for caption, i in zip(captions, rows_shown.tolist()):
            group = f" [{names[labels[i]]}]" if key == "missed_real_audio" else ""  # reals only
            assert caption.startswith(f"#{i}{group} ")  # the row's index and its group
            assert f"{float(score[i]):.3g}x" in caption
        kept = make_clips(audio[rows_shown], RATE, keep_rate=KEEP_RATE, max_seconds=SECONDS)
        for i, entry in enumerate(row[f"embviz/{key}/clips/audio"]):
            clip, rate = decode_wav((run_dir / "files" / entry["path"]).read_bytes())
            assert rate == KEEP_RATE and clip.shape == (round(KEEP_RATE * SECONDS),)
            np.testing.assert_allclose(clip, kept.clip(i), atol=1.5 / 32767)


class RecordingWandbLogger(pl.loggers.WandbLogger):
    """A W&B logger for :func:`log_audio` (no run): records what ``log_audio`` received."""

    def __init__(self) -> None:  # no W&B run
        self.calls: list[dict[str, Any]] = []

    def log_audio(self, key: str, audios: list[Any], step: int, **kwargs: Any) -> None:
        files = [Path(a).read_bytes() for a in audios]  # the temporary files exist now
        self.calls.append({"key": key, "files": files, "step": step, **kwargs})


def clip_items() -> dict[str, list[tuple[str, np.ndarray, str]]]:
    t = np.arange(300) / KEEP_RATE
    return {
        "embviz/missed_real_audio": [
            ("00", 0.5 * np.sin(2 * np.pi * 220 * t), "#4 [intro] 2.1x"),
            ("01", 2.0 * np.sin(2 * np.pi * 330 * t), "#9 [b-side] 1.7x"),  # scaled to peak 1
        ]
    }


def test_wandb_gets_the_same_wav_files_as_the_others(tmp_path, monkeypatch):
    pytest.importorskip("soundfile", reason="W&B logs audio only with soundfile")
    from lightning_embviz.loggers import log_audio

    wandb_logger = RecordingWandbLogger()
    written = log_audio([wandb_logger, None], clip_items(), KEEP_RATE, 7, fallback_dir=tmp_path)
    assert written == ["wandb:embviz/missed_real_audio/clips@7"]
    (call,) = wandb_logger.calls
    assert call["key"] == "embviz/missed_real_audio/clips" and call["step"] == 7
    assert call["sample_rate"] == [KEEP_RATE, KEEP_RATE]
    assert call["caption"] == ["#4 [intro] 2.1x", "#9 [b-side] 1.7x"]
    files = log_audio([], clip_items(), KEEP_RATE, 7, fallback_dir=tmp_path)  # no logger: WAVs
    assert call["files"] == [Path(f).read_bytes() for f in files]
    clip, rate = decode_wav(call["files"][1])
    assert rate == KEEP_RATE and np.abs(clip).max() == pytest.approx(1.0, abs=1e-4)


def test_without_soundfile_wandb_gets_no_clips_and_one_warning(tmp_path, monkeypatch):
    from lightning_embviz import loggers

    monkeypatch.setitem(sys.modules, "soundfile", None)  # import fails
    monkeypatch.setattr(loggers, "_WARNED_AUDIO", set())

    wandb_logger = RecordingWandbLogger()
    with pytest.warns(UserWarning, match=r"W&B logs audio only with the `soundfile` package"):
        written = loggers.log_audio(  # the CSV logger beside it still gets its WAV files
            [wandb_logger, CSVLogger(tmp_path)], clip_items(), KEEP_RATE, 2, fallback_dir=None
        )
    assert wandb_logger.calls == []
    assert [Path(p).name for p in written] == ["00.wav", "01.wav"]
    assert all(Path(p).is_file() for p in written)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        loggers.log_audio([wandb_logger], clip_items(), KEEP_RATE, 3, fallback_dir=None)
