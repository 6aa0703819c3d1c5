"""``embviz compare`` audio and group options, and string group ids in ``embviz report``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lightning_embviz import compute_prdc_details, samples
from lightning_embviz.audio import decode_wav, make_clips
from lightning_embviz.cli import main
from lightning_embviz.engine.groups import GROUP_COLUMNS, per_group_scores

RATE = 8000
SONGS = np.array(["intro, reprise", "b-side", "Ünder"])  # dtype '<U14'
PROMPTS = ["a calm piano", "a loud drum"]


def tone(x: np.ndarray) -> np.ndarray:
    t = np.arange(400) / RATE
    return (0.4 * np.sin(2 * np.pi * (200 + 20 * np.abs(x[:, :1])) * t)).astype(np.float32)


def inputs(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(45, 4))
    early = rng.normal(size=(40, 4)) * 1.5 + 1.5
    late = rng.normal(size=(40, 4)) * 1.1 + 0.2
    files = {
        "real": real,
        "early": early,
        "late": late,
        "real_audio": tone(real),
        "early_audio": tone(early),
        "late_audio": np.stack([tone(late), tone(late)], axis=1),  # (M, C, T)
        "groups": SONGS[np.arange(45) % 3],
    }
    paths = {name: tmp_path / f"{name}.npy" for name in files}
    for name, array in files.items():
        np.save(paths[name], array)
    paths["fake_groups"] = tmp_path / "prompts.csv"  # a text column with a header
    paths["fake_groups"].write_text(
        "prompt\n" + "".join(f"{PROMPTS[i % 2]}\n" for i in range(40)), encoding="utf-8"
    )
    return paths


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_table(path: Path, expected: list) -> None:
    rows = read_rows(path)
    assert list(rows[0]) == list(GROUP_COLUMNS)
    assert [(r["group"], r["side"], int(r["count"])) for r in rows] == [
        (str(e.group), e.side, e.count) for e in expected
    ]
    for got, want in zip(rows, expected):
        for name in ("coverage", "recall", "precision", "density", "fd"):
            value = getattr(want, name)
            assert got[name] == "" if math.isnan(value) else float(got[name]) == value


def assert_clips(folder: Path, rows: np.ndarray, audio: np.ndarray) -> None:
    kept = make_clips(audio[rows], RATE, keep_rate=RATE, max_seconds=10.0)
    files = sorted(folder.glob("*.wav"))
    assert len(files) == len(rows) > 0
    for i, path in enumerate(files):
        clip, rate = decode_wav(path.read_bytes())
        assert rate == RATE and clip.shape == (400,)
        np.testing.assert_allclose(clip, kept.clip(i), atol=1.5 / 32767)


def compare(tmp_path: Path, paths: dict[str, Path], *extra: str) -> int:
    return main(
        [
            "compare",
            str(paths["real"]),
            str(paths["early"]),
            str(paths["late"]),
            "-o",
            str(tmp_path / "out"),
            "-q",
            "--projection",
            "pca",
            *extra,
        ]
    )


def test_compare_writes_each_sets_clips_and_group_table(tmp_path, capsys):
    paths = inputs(tmp_path)
    code = compare(
        tmp_path,
        paths,
        "--names", "epoch 10,epoch/20",
        "--real-audio", str(paths["real_audio"]),
        "--fake-audio", f"{paths['early_audio']},{paths['late_audio']}",
        "--sample-rate", str(RATE),
        "--groups", str(paths["groups"]),
        "--fake-groups", str(paths["fake_groups"]),  # one file for both sets
    )  # fmt: skip
    assert code == 0
    out = tmp_path / "out"
    real = np.load(paths["real"])
    prompts = np.array([PROMPTS[i % 2] for i in range(40)])
    for name, folder in (("early", "epoch_10"), ("late", "epoch_20")):
        fake = np.load(paths[name])
        details = compute_prdc_details(real, fake, nearest_k=5)
        missed = samples.missed_real_order(details)[:8].numpy()
        outliers = samples.outlier_fake_order(details)[:8].numpy()
        assert_clips(out / folder / "missed_real_audio", missed, np.load(paths["real_audio"]))
        assert_clips(out / folder / "outlier_fake_audio", outliers, np.load(paths[f"{name}_audio"]))
        for key in ("missed_real_audio", "outlier_fake_audio"):
            assert (out / folder / f"{key}.png").stat().st_size > 0
        expected = per_group_scores(
            real, fake, real_groups=np.load(paths["groups"]), fake_groups=prompts
        )
        assert {e.group for e in expected} == {*SONGS, *PROMPTS}
        assert_table(out / folder / "groups.csv", expected)
    # the metrics files are those of a plain compare
    assert [s["name"] for s in json.loads((out / "metrics.json").read_text())["sets"]] == [
        "epoch 10",
        "epoch/20",
    ]
    printed = capsys.readouterr().out
    assert "epoch_10/groups.csv" in printed and "epoch_20/missed_real_audio/00.wav" in printed


def test_compare_groups_alone_and_a_skipped_set(tmp_path):
    paths = inputs(tmp_path)
    np.save(tmp_path / "late_groups.npy", np.arange(40) % 4)
    code = compare(tmp_path, paths, "--fake-groups", f",{tmp_path / 'late_groups.npy'}")
    assert code == 0
    out = tmp_path / "out"
    assert not (out / "early").exists()  # an empty item: no files for that set
    real, late = np.load(paths["real"]), np.load(paths["late"])
    expected = per_group_scores(real, late, fake_groups=np.arange(40) % 4)
    assert_table(out / "late" / "groups.csv", expected)
    assert not (out / "late" / "missed_real_audio").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--fake-audio", "{early_audio}", "--sample-rate", "8000"),
            "--fake-audio has 1 file(s) for 2 FAKE files",
        ),
        (("--fake-groups", "a.npy,b.npy,c.npy"), "one per FAKE (or one file for every FAKE)"),
        (("--real-audio", "{real_audio}"), "--real-audio/--fake-audio need --sample-rate"),
        (
            ("--fake-audio", "{late_audio},{early_audio}", "--sample-rate", "8000"),
            "late_audio.npy holds 39 clips but",
        ),
    ],
)
def test_compare_audio_errors(tmp_path, capsys, args, message):
    paths = inputs(tmp_path)
    np.save(paths["late_audio"], tone(np.zeros((39, 1))))  # one clip short
    formatted = [a.format(**{k: str(v) for k, v in paths.items()}) for a in args]
    assert compare(tmp_path, paths, *formatted) != 0
    assert message in capsys.readouterr().err


def test_report_with_string_groups(tmp_path):
    paths = inputs(tmp_path)
    code = main(
        [
            "report",
            str(paths["real"]),
            str(paths["early"]),
            "-o",
            str(tmp_path / "out"),
            "-q",
            "--projection",
            "pca",
            "--groups",
            str(paths["groups"]),
            "--fake-groups",
            str(paths["fake_groups"]),
        ]
    )
    assert code == 0
    real, fake = np.load(paths["real"]), np.load(paths["early"])
    expected = per_group_scores(
        real,
        fake,
        real_groups=SONGS[np.arange(45) % 3],
        fake_groups=np.array([PROMPTS[i % 2] for i in range(40)]),
    )
    assert_table(tmp_path / "out" / "groups.csv", expected)
