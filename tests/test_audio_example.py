"""examples/audio_tones.py: the data, the synthesizer, and a --quick run with the monitor."""

from __future__ import annotations

import importlib.util
import io
import wave
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "audio_tones.py"


def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audio_tones_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def peak_hz(clip: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(clip * np.hanning(len(clip))))
    return float(np.fft.rfftfreq(len(clip), 1.0 / rate)[spectrum.argmax()])


def test_data_synthesizer_and_validation_outputs() -> None:
    ex = example()
    waves, labels, groups = ex.make_tones(12, seed=3)
    assert waves.shape == (12, ex.CLIP_SAMPLES) and waves.dtype == np.float32
    assert np.abs(waves).max() <= 0.8 + 1e-6
    assert labels.tolist() == [i % 6 for i in range(12)]
    assert all(g.split("-")[0] == ex.CLASSES[c] for g, c in zip(groups, labels))
    # a flute clip's strongest partial is on the semitone grid
    assert min(abs(peak_hz(waves[1], ex.SAMPLE_RATE) - ex.GRID)) < 3
    torch.manual_seed(0)
    synth = ex.ToneSynth()
    fake = synth(torch.randn(5, ex.LATENT_DIM))
    assert fake.shape == (5, ex.CLIP_SAMPLES)
    assert fake.detach().abs().amax(1).numpy() == pytest.approx(np.full(5, 0.8), abs=1e-5)
    fake.sum().backward()  # differentiable down to the MLP
    assert synth.net[0].weight.grad is not None and synth.net[0].weight.grad.abs().sum() > 0
    # MMD: zero for equal batches, positive for different ones
    a, b = torch.randn(16, 4), torch.randn(16, 4) + 3
    assert float(ex.mmd(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(ex.mmd(a, b)) > 0.1
    # validation_step's outputs: what EmbeddingMonitor reads
    data = ex.ToneData(n_train=12, n_val=12, batch_size=4, steps_per_epoch=1)
    model = ex.ToneGMMN(data.group_names)
    out = model.validation_step(next(iter(data.val_dataloader())), 0)
    assert out["real"].shape == out["fake"].shape == (12, ex.EMBED_DIM)
    assert out["real_audio"].shape == out["fake_audio"].shape == (12, ex.CLIP_SAMPLES)
    assert out["groups"]["real"] == [data.group_names[int(i)] for i in data.g_val]
    assert set(out["groups"]["fake"]) <= set(ex.CLASSES)


def test_quick_run_logs_audio_groups_and_figures(tmp_path: Path, capsys) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ex = example()
    result = ex.main(["--quick", "--out", str(tmp_path / "run"), "--figures", str(tmp_path)])
    printed = capsys.readouterr().out
    assert len(result["rows"]) == 2
    assert "tensorboard --logdir" in printed and "worst real groups" in printed
    assert "missed classes" in printed
    # the table read back from the monitor's CSV: 24 real groups at most, the 6 class names
    real = [row for row in result["groups"] if row["side"] == "real"]
    assert real and all(row["group"].split("-")[0] in ex.CLASSES for row in real)
    events = EventAccumulator(
        str(result["log_dir"]), size_guidance={"audio": 0, "images": 0, "scalars": 0}
    )
    events.Reload()
    steps = sorted(e.step for e in events.Scalars("embviz/coverage"))
    assert len(steps) == 2
    assert sorted(e.step for e in events.Images("embviz/groups_worst")) == steps
    missed = [tag for tag in events.Tags()["audio"] if "missed_real_audio" in tag]
    assert missed
    clip = events.Audio(missed[0])[-1]
    assert clip.step == steps[-1] and clip.sample_rate == ex.SAMPLE_RATE
    with wave.open(io.BytesIO(clip.encoded_audio_string)) as handle:
        assert handle.getframerate() == ex.SAMPLE_RATE
    for name in ("audio_missed_real.png", "audio_groups_worst.png"):
        assert np.asarray(Image.open(tmp_path / name)).std() > 0
    # a second run into the same folder is refused unless --overwrite
    with pytest.raises(SystemExit, match="--overwrite"):
        ex.main(["--quick", "--epochs", "1", "--out", str(tmp_path / "run")])


def test_bad_flags_are_rejected(capsys) -> None:
    ex = example()
    with pytest.raises(SystemExit):
        ex.parse_args(["--epochs", "0"])
    assert "--epochs must be at least 1" in capsys.readouterr().err
