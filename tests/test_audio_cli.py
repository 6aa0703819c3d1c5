"""``embviz report --real-audio/--fake-audio/--sample-rate/--groups/--fake-groups``."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from lightning_embviz import compute_prdc_details, samples
from lightning_embviz.audio import decode_wav, make_clips
from lightning_embviz.cli import main
from lightning_embviz.engine.groups import GROUP_COLUMNS, per_group_scores

RATE = 8000


def inputs(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 4))
    fake = rng.normal(size=(50, 4)) * 1.5 + 1.5
    t = np.arange(800) / RATE
    real_audio = 0.4 * np.sin(2 * np.pi * (200 + 20 * np.abs(real[:, :1])) * t)
    fake_audio = 0.4 * np.sin(2 * np.pi * (200 + 20 * np.abs(fake[:, :1])) * t)
    files = {
        "real": real,
        "fake": fake,
        "real_audio": real_audio.astype(np.float32),
        "fake_audio": np.stack([fake_audio, fake_audio], axis=1).astype(np.float32),
        "groups": np.arange(60) % 4,
        "fake_groups": np.arange(50) % 3,
    }
    paths = {}
    for name, array in files.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], array)
    return paths


def report(tmp_path: Path, paths: dict[str, Path], *extra: str) -> int:
    return main(
        [
            "report",
            str(paths["real"]),
            str(paths["fake"]),
            "-o",
            str(tmp_path / "out"),
            "-q",
            "--projection",
            "pca",
            *extra,
        ]
    )


def test_wavs_spectrograms_and_groups(tmp_path):
    paths = inputs(tmp_path)
    code = report(
        tmp_path,
        paths,
        "--real-audio", str(paths["real_audio"]),
        "--fake-audio", str(paths["fake_audio"]),
        "--sample-rate", str(RATE),
        "--groups", str(paths["groups"]),
        "--fake-groups", str(paths["fake_groups"]),
        "--gallery-size", "5",
    )  # fmt: skip
    assert code == 0
    out = tmp_path / "out"
    real, fake = np.load(paths["real"]), np.load(paths["fake"])
    details = compute_prdc_details(real, fake, nearest_k=5)
    for key, order, audio in (
        ("missed_real_audio", samples.missed_real_order(details), paths["real_audio"]),
        ("outlier_fake_audio", samples.outlier_fake_order(details), paths["fake_audio"]),
    ):
        rows = order[:5]
        assert len(rows) > 0
        kept = make_clips(np.load(audio)[rows.numpy()], RATE, keep_rate=RATE, max_seconds=10.0)
        files = sorted((out / key).glob("*.wav"))
        assert len(files) == len(rows)
        for i, path in enumerate(files):
            clip, rate = decode_wav(path.read_bytes())
            assert rate == RATE and clip.shape == (800,)
            np.testing.assert_allclose(clip, kept.clip(i), atol=1.5 / 32767)
        assert (out / f"{key}.png").stat().st_size > 0
    expected = per_group_scores(
        real, fake, real_groups=np.load(paths["groups"]), fake_groups=np.load(paths["fake_groups"])
    )
    with open(out / "groups.csv") as f:
        rows_read = list(csv.DictReader(f))
    assert list(rows_read[0]) == list(GROUP_COLUMNS) and len(rows_read) == len(expected) == 7
    for got, want in zip(rows_read, expected):
        assert int(got["group"]) == want.group and got["side"] == want.side
        for name in ("coverage", "recall", "precision", "density", "fd"):
            value = getattr(want, name)
            if math.isnan(value):
                assert got[name] == ""
            else:
                assert float(got[name]) == value


def test_audio_needs_a_sample_rate(tmp_path, capsys):
    paths = inputs(tmp_path)
    assert report(tmp_path, paths, "--real-audio", str(paths["real_audio"])) != 0
    assert "--real-audio/--fake-audio need --sample-rate" in capsys.readouterr().err


def test_audio_of_another_count(tmp_path, capsys):
    paths = inputs(tmp_path)
    args = ("--fake-audio", str(paths["real_audio"]), "--sample-rate", str(RATE))
    assert report(tmp_path, paths, *args) != 0
    assert "holds 60 clips but" in capsys.readouterr().err


def test_bad_sample_rate_is_refused(tmp_path, capsys):
    paths = inputs(tmp_path)
    assert report(tmp_path, paths, "--sample-rate", "0") == 2  # argparse's usage error
    assert "positive int number of Hz" in capsys.readouterr().err
