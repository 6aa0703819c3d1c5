"""Audio clips and per-group tables from the callback, read back from real logger files."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch.utils.data import DataLoader

from _models import DDPGAN, indexed_dataset, make_data, make_module_class, trainer_kwargs
from lightning_embviz import EmbeddingMonitor, compute_prdc_details, samples
from lightning_embviz.audio import decode_wav, make_clips
from lightning_embviz.callback.audio import gather_selected_clips
from lightning_embviz.engine.groups import GROUP_COLUMNS, per_group_scores

TinyGAN = make_module_class(pl)
RATE, KEEP_RATE, SECONDS, TILES = 4000, 2000, 0.1, 4


def waveforms(x: torch.Tensor, stereo: bool = False) -> torch.Tensor:
    """One tone per row, its pitch and loudness set by the row's embedding: (B, T) floats."""
    t = torch.arange(int(RATE * 0.15)) / RATE  # longer than the kept 0.1 s
    pitch = 200.0 + 50.0 * x[:, :1].detach().abs()
    wave = 0.5 * torch.tanh(x[:, 1:2].detach().abs()) * torch.sin(2 * math.pi * pitch * t)
    return torch.stack([wave, 0.5 * wave], dim=1) if stereo else wave


def with_audio(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    out["real_audio"] = waveforms(out["real"], stereo=True)  # (B, C, T) is averaged to mono
    out["fake_audio"] = waveforms(out["fake"])
    out["groups"] = {"real": out["labels"], "fake": out["labels"]}
    return out


def with_groups(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    out["groups"] = {"real": out["labels"], "fake": out["labels"]}
    return out


def monitor(**kw: Any) -> EmbeddingMonitor:
    options: dict[str, Any] = {
        "views": None,
        "background": False,
        "log_samples": False,
        "sample_rate": RATE,
        "audio_keep_rate": KEEP_RATE,
        "audio_keep_seconds": SECONDS,
        "gallery_size": TILES,
    }
    options.update(kw)
    return EmbeddingMonitor(**options)


def run(tmp_path: Path, outputs: Any = with_audio, **kw: Any) -> tuple[Any, Any, Any]:
    model = TinyGAN(shifts=(2.5,), outputs=outputs)
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    trainer = pl.Trainer(
        callbacks=[monitor(**kw)],
        **trainer_kwargs(tmp_path, logger=[tb, csv_logger], max_epochs=2),
    )
    train = DataLoader(make_data(16, seed=1), batch_size=8)
    trainer.fit(model, train, DataLoader(make_data(48), batch_size=16))
    return model, tb, csv_logger


def scalar_steps(csv_logger: CSVLogger) -> dict[int, int]:
    """step -> epoch of every measured run, from metrics.csv."""
    with open(Path(csv_logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("embviz/coverage")]
    return {int(r["step"]): int(r["epoch"]) for r in rows}


def test_missed_and_outlier_clips_logged_at_the_scalars_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, tb, csv_logger = run(tmp_path)
    steps = scalar_steps(csv_logger)
    assert len(steps) == 2

    events = EventAccumulator(tb.log_dir, size_guidance={"audio": 0, "images": 0})
    events.Reload()
    audio_tags = events.Tags()["audio"]
    missed_tags = [t for t in audio_tags if "missed_real" in t]
    outlier_tags = [t for t in audio_tags if "outlier_fake" in t]
    assert missed_tags and outlier_tags
    for tag in missed_tags + outlier_tags:
        for event in events.Audio(tag):
            assert event.step in steps
            assert event.sample_rate == KEEP_RATE  # the kept copies' true rate
    assert {"embviz/missed_real_audio", "embviz/outlier_fake_audio"} <= set(events.Tags()["images"])
    assert sorted(e.step for e in events.Images("embviz/missed_real_audio")) == sorted(steps)

    for step, epoch in steps.items():
        real, fake = model.collected("real", epoch), model.collected("fake", epoch)
        details = compute_prdc_details(real, fake, nearest_k=5)
        shown = {
            "missed_real_audio": (
                samples.missed_real_order(details)[:TILES],
                torch.cat([b["real_audio"] for b in model.seen[(epoch, 0)]]),
            ),
            "outlier_fake_audio": (
                samples.outlier_fake_order(details)[:TILES],
                torch.cat([b["fake_audio"] for b in model.seen[(epoch, 0)]]),
            ),
        }
        for key, (rows, audio) in shown.items():
            assert len(rows) > 0
            kept = make_clips(audio[rows], RATE, keep_rate=KEEP_RATE, max_seconds=SECONDS)
            folder = Path(csv_logger.log_dir) / "embviz" / key / f"step_{step:06d}"
            files = sorted(folder.glob("*.wav"))
            assert len(files) == len(rows)
            for i, path in enumerate(files):
                clip, rate = decode_wav(path.read_bytes())
                assert rate == KEEP_RATE
                assert clip.shape == (round(KEEP_RATE * SECONDS),)
                np.testing.assert_allclose(clip, kept.clip(i), atol=1.5 / 32767)
            # the TensorBoard clip of the first tile holds the same samples
            event = next(e for e in events.Audio(f"embviz/{key}/00") if e.step == step)
            clip, rate = decode_wav(event.encoded_audio_string)
            np.testing.assert_allclose(clip, kept.clip(0), atol=1.5 / 32767)


def read_group_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_group_table_equals_per_group_scores(tmp_path):
    model, tb, csv_logger = run(tmp_path, with_groups, sample_rate=None)  # groups alone
    steps = scalar_steps(csv_logger)
    assert not (Path(csv_logger.log_dir) / "embviz" / "missed_real_audio").exists()
    for step, epoch in steps.items():
        real, fake = model.collected("real", epoch), model.collected("fake", epoch)
        labels = model.collected("labels", epoch).reshape(-1).long()
        expected = per_group_scores(real, fake, real_groups=labels, fake_groups=labels)
        path = Path(csv_logger.log_dir) / "embviz" / "groups" / f"step_{step:06d}.csv"
        rows = read_group_csv(path)
        assert list(rows[0]) == list(GROUP_COLUMNS)
        assert len(rows) == len(expected) == 6  # 3 real and 3 fake groups, worst first
        for got, want in zip(rows, expected):
            assert int(got["group"]) == want.group and got["side"] == want.side
            assert int(got["count"]) == want.count
            for name in ("coverage", "recall", "precision", "density", "fd"):
                value = float(got[name])
                expected_value = getattr(want, name)
                if math.isnan(expected_value):
                    assert math.isnan(value)
                else:
                    assert value == pytest.approx(expected_value, rel=1e-9, abs=1e-12)
    events_dir = Path(tb.log_dir)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(events_dir), size_guidance={"tensors": 0})
    events.Reload()
    assert any("embviz/groups" in tag for tag in events.Tags()["tensors"])


def test_audio_contract_is_checked_in_the_sanity_check(tmp_path):
    def bad(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
        out["real_audio"] = waveforms(out["real"])[:-1]  # one clip short
        return out

    model = TinyGAN(outputs=bad)
    trainer = pl.Trainer(callbacks=[monitor()], **trainer_kwargs(tmp_path, logger=False))
    with pytest.raises(ValueError, match="'real_audio' has 15 clips but there are 16"):
        trainer.fit(
            model,
            DataLoader(make_data(16, seed=1), batch_size=8),
            DataLoader(make_data(48), batch_size=16),
        )


def test_audio_without_a_sample_rate_is_refused(tmp_path):
    model = TinyGAN(outputs=with_audio)
    trainer = pl.Trainer(
        callbacks=[monitor(sample_rate=None)], **trainer_kwargs(tmp_path, logger=False)
    )
    with pytest.raises(ValueError, match=r"no sample rate is known.*sample_rate=\.\.\."):
        trainer.fit(
            model,
            DataLoader(make_data(16, seed=1), batch_size=8),
            DataLoader(make_data(48), batch_size=16),
        )


@pytest.mark.parametrize(
    ("kw", "error", "match"),
    [
        ({"sample_rate": 0}, ValueError, r"sample_rate=0"),
        ({"sample_rate": 16000.0}, TypeError, r"sample_rate=16000.0"),
        ({"audio_keep_seconds": -1}, ValueError, r"audio_keep_seconds=-1"),
        ({"groups_key": "labels"}, ValueError, r"groups_key='labels'.*no other"),
        ({"real_audio_key": 3}, TypeError, r"real_audio_key=3"),
    ],
)
def test_bad_audio_arguments(kw, error, match):
    with pytest.raises(error, match=match):
        EmbeddingMonitor(**kw)


def test_only_the_shown_clips_travel():
    """Two simulated ranks: only the wanted clips move, in the order of the wanted keys."""
    clips = make_clips(torch.randn(6, 400) * 0.3, RATE, keep_rate=KEEP_RATE, max_seconds=SECONDS)
    keys = torch.arange(6)
    first, second = torch.arange(0, 3), torch.arange(3, 6)
    wanted = torch.tensor([4, 1])
    sent_by_second: list[torch.Tensor] = []

    def second_rank(tensor: torch.Tensor) -> list[torch.Tensor]:
        sent_by_second.append(tensor.clone())
        return [tensor, tensor]

    gather_selected_clips(clips.select(second), keys[second], wanted, all_gather=second_rank)
    sizes: list[int] = []

    def first_rank(tensor: torch.Tensor) -> list[torch.Tensor]:
        sizes.append(tensor.numel())
        return [tensor, sent_by_second[len(sizes) - 1]]

    out = gather_selected_clips(clips.select(first), keys[first], wanted, all_gather=first_rank)
    assert out is not None and out.sample_rate == KEEP_RATE
    np.testing.assert_array_equal(out.codes.numpy(), clips.codes[wanted].numpy())
    np.testing.assert_array_equal(out.peaks.numpy(), clips.peaks[wanted].numpy())
    np.testing.assert_array_equal(out.lengths.numpy(), clips.lengths[wanted].numpy())
    # the meta (length, rate), then flags, codes, peaks and lengths of the 2 shown clips only
    assert sizes == [2, 2, 2 * int(clips.codes.shape[1]), 2, 2]


class AudioDDPGAN(DDPGAN):
    """The DDP tests' model with a tone per row and group ids (for the DDP test)."""

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        out = super().validation_step(batch, batch_idx, dataloader_idx)
        out["real_audio"] = waveforms(out["real"])
        # from the data, not the generator: the fakes' features may differ by an ulp between
        # DDP's batches and one process's, which would move an int16 code of the clip
        out["fake_audio"] = waveforms(batch[0] + 0.5, stereo=True)
        out["groups"] = {"real": out["labels"], "fake": batch[2] % 2}
        return out


@pytest.mark.slow
def test_clips_and_groups_under_ddp_equal_single_process(tmp_path):
    # 37 samples: the DistributedSampler repeats one to even out the ranks
    val = DataLoader(indexed_dataset(37, seed=3), batch_size=8)
    model = AudioDDPGAN()
    folders = {}
    for name in ("ddp", "single"):
        kwargs: dict[str, Any] = {
            "logger": CSVLogger(tmp_path, name=name, version=0),
            "callbacks": [monitor(log_samples=True)],
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
        }
        if name == "ddp":
            kwargs.update(devices=2, strategy="ddp_spawn")
        trainer = pl.Trainer(**kwargs)
        trainer.validate(model, val)
        folders[name] = tmp_path / name / "version_0" / "embviz"
    for key in ("missed_real_audio", "outlier_fake_audio"):
        single = sorted((folders["single"] / key / "step_000000").glob("*.wav"))
        ddp = sorted((folders["ddp"] / key / "step_000000").glob("*.wav"))
        assert single and [p.name for p in ddp] == [p.name for p in single]
        for a, b in zip(ddp, single):
            assert a.read_bytes() == b.read_bytes(), (key, a.name)
    table = Path("groups") / "step_000000.csv"
    ddp_rows = read_group_csv(folders["ddp"] / table)
    single_rows = read_group_csv(folders["single"] / table)
    assert [r["count"] for r in ddp_rows] == [r["count"] for r in single_rows]
    assert sum(int(r["count"]) for r in ddp_rows if r["side"] == "real") == 37  # repeat dropped
    for a, b in zip(ddp_rows, single_rows):
        for column in GROUP_COLUMNS:
            if column in ("group", "side", "count") or a[column] in ("", "nan"):
                assert a[column] == b[column], column
            else:  # distances: the engine's float32 GEMM values
                assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-6), column


# --------------------------------------------------------------------------- log_audio


def clip_items() -> dict[str, list[tuple[str, np.ndarray, str]]]:
    t = np.arange(800, dtype=np.float32) / KEEP_RATE
    loud = (1.6 * np.sin(2 * np.pi * 300 * t)).astype(np.float32)  # beyond full scale
    quiet = (0.2 * np.sin(2 * np.pi * 500 * t)).astype(np.float32)
    return {"embviz/missed_real_audio": [("00", loud, "#3 [1] 2.1x"), ("01", quiet, "#7")]}


def test_log_audio_without_a_logger_writes_wavs(tmp_path):
    from lightning_embviz.loggers import log_audio

    written = log_audio([], clip_items(), KEEP_RATE, 3, fallback_dir=tmp_path)
    folder = tmp_path / "embviz" / "missed_real_audio" / "step_000003"
    assert written == [str(folder / "00.wav"), str(folder / "01.wav")]
    loud, rate = decode_wav((folder / "00.wav").read_bytes())
    assert rate == KEEP_RATE and np.abs(loud).max() == pytest.approx(1.0)  # scaled, not clipped
    quiet, _ = decode_wav((folder / "01.wav").read_bytes())
    np.testing.assert_allclose(quiet, clip_items()["embviz/missed_real_audio"][1][1], atol=1e-4)
    with pytest.raises(ValueError, match="`step` must be >= 0"):
        log_audio([], clip_items(), KEEP_RATE, -1, fallback_dir=tmp_path)


def test_log_audio_to_mlflow_artifacts(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed")
    from mlflow.tracking import MlflowClient
    from pytorch_lightning.loggers import MLFlowLogger

    from lightning_embviz.loggers import log_audio

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    logger = MLFlowLogger(experiment_name="embviz", tracking_uri=uri)
    written = log_audio([logger], clip_items(), KEEP_RATE, 3, fallback_dir=tmp_path / "unused")
    run_id = logger.run_id
    path = "embviz/missed_real_audio/step_000003"
    assert written == [f"mlflow:{run_id}/{path}/00.wav", f"mlflow:{run_id}/{path}/01.wav"]
    local = MlflowClient(tracking_uri=uri).download_artifacts(
        run_id, f"{path}/01.wav", str(tmp_path)
    )
    clip, rate = decode_wav(Path(local).read_bytes())
    assert rate == KEEP_RATE and clip.shape == (800,)
    assert not (tmp_path / "unused").exists()
