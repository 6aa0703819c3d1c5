"""The examples run end to end (in their short modes), so they cannot rot.

``examples/gan_digits.py --quick`` and ``examples/compare_checkpoints.py`` run as
subprocesses in a temporary folder, exactly as a user would start them; the tests then
read what they wrote: TensorBoard event files, checkpoints, embeddings, ``embviz`` output.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GAN = EXAMPLES / "gan_digits.py"
COMPARE = EXAMPLES / "compare_checkpoints.py"
METRICS = ("precision", "recall", "density", "coverage", "fd")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUICK_VAL = 200  # held-out reals and fixed-noise fakes in --quick mode
EMBED_DIM = 32


def _run(args: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _events(log_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _load_example(path: Path = GAN) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{path.stem}_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _scalars(acc: Any, tag: str) -> dict[int, float]:
    """One scalar tag as {step: value}; a step logged twice would be a bug, so it fails."""
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert len(set(steps)) == len(steps), f"{tag} logged twice at one step: {steps}"
    return {e.step: e.value for e in events}


def _table(stdout: str, title: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the text table printed after the line ``title``."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title)) + 1
    rows = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return lines[start].split(), rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """``gan_digits.py --quick`` in a fresh folder: (output folder, finished process)."""
    cwd = tmp_path_factory.mktemp("gan_digits")
    proc = _run([str(GAN), "--quick", "--out", "run"], cwd)
    return cwd / "run", proc


@pytest.fixture(scope="module")
def compare_run(
    quick_run: tuple[Path, subprocess.CompletedProcess],
) -> tuple[Path, subprocess.CompletedProcess]:
    """``compare_checkpoints.py`` on the quick run: (run folder, finished process)."""
    out, _ = quick_run
    proc = _run([str(COMPARE), "--run", str(out), "--views", "pca"], out.parent)
    return out, proc


def test_quick_run_logs_metrics_and_figures_to_tensorboard(
    quick_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    out, _ = quick_run
    assert [p.name for p in (out / "tensorboard").iterdir()] == ["train"]
    acc = _events(out / "tensorboard" / "train")
    tags = acc.Tags()
    for name in METRICS:
        assert f"embviz/{name}" in tags["scalars"], tags["scalars"]
    coverage = acc.Scalars("embviz/coverage")
    # --quick: two epochs, one point each; Lightning's sanity check ran but logged nothing.
    assert len(coverage) == 2
    assert all(0.0 <= e.value <= 1.0 for e in coverage)
    assert coverage[0].step < coverage[1].step
    # Even the short run learns: the fakes cover more of the real digits after epoch 1.
    assert coverage[1].value > coverage[0].value
    steps = [e.step for e in coverage]
    assert sorted(_scalars(acc, "gan/modes_hit")) == steps
    for tag in ("embviz/pca", "embviz/pca_classes", "embviz/class_metrics"):
        assert tag in tags["images"], tags["images"]
        images = acc.Images(tag)
        assert [e.step for e in images] == steps
        assert all(e.encoded_image_string.startswith(PNG_SIGNATURE) for e in images)


def test_quick_run_prints_progress_table_and_tensorboard_command(
    quick_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    out, proc = quick_run
    stdout = proc.stdout
    header, rows = _table(stdout, "metrics per epoch")
    assert [int(r[0]) for r in rows] == [0, 1]
    logged = _scalars(_events(out / "tensorboard" / "train"), "embviz/coverage")
    printed = [float(r[header.index("coverage")]) for r in rows]
    assert printed == pytest.approx(list(logged.values()), abs=5e-4)
    # Lightning's progress bar ran, after its sanity check; each epoch's line ends with
    # that epoch's coverage once its validation is done.
    assert "Sanity Checking" in stdout
    for epoch, value in enumerate(logged.values()):
        assert re.search(rf"Epoch {epoch}: 100%.*coverage={value:.3f}, modes=\d+", stdout)
    assert "v_num" not in stdout
    assert "Tip:" not in proc.stderr
    command = f"tensorboard --logdir {Path('run') / 'tensorboard'} --samples_per_plugin images=1000"
    assert command in stdout


def test_quick_run_keeps_best_and_periodic_checkpoints(
    quick_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    out, _ = quick_run
    best = sorted((out / "checkpoints" / "best").glob("*.ckpt"))
    periodic = sorted(p.name for p in (out / "checkpoints" / "periodic").glob("*.ckpt"))
    assert len(best) == 2 and all("coverage" in p.name for p in best)
    assert periodic == ["epoch000.ckpt", "epoch001.ckpt", "last.ckpt"]
    ckpt = torch.load(best[0], map_location="cpu", weights_only=True)
    # The frozen embedding network travels with the GAN, so checkpoints are self-contained.
    assert any(k.startswith("classifier.") for k in ckpt["state_dict"])
    scores = [
        state["best_model_score"]
        for key, state in ckpt["callbacks"].items()
        if key.startswith("ModelCheckpoint") and "embviz/coverage" in key
    ]
    assert len(scores) == 1 and 0.0 <= float(scores[0]) <= 1.0


def test_compare_checkpoints_lines_up_with_the_training_run(
    compare_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    out, proc = compare_run
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["compare", "train"]
    train = _events(out / "tensorboard" / "train")
    compare = _events(out / "tensorboard" / "compare")

    # The training run: the step of each epoch's validation. Lightning logs `epoch` with
    # every write (at a validation step: once with the validation, once with the training
    # epoch's metrics), so a step may carry it twice, with one value.
    epoch_at = {e.step: int(e.value) for e in train.Scalars("epoch")}
    assert all(epoch_at[e.step] == int(e.value) for e in train.Scalars("epoch"))
    step_of_epoch = {epoch_at[step]: step for step in _scalars(train, "embviz/coverage")}
    # Five checkpoint files, two epochs: each epoch validated once.
    epochs = sorted(
        {
            int(torch.load(p, map_location="cpu", weights_only=True)["epoch"])
            for p in (out / "checkpoints").rglob("*.ckpt")
        }
    )
    assert epochs == [0, 1] and len(list((out / "checkpoints").rglob("*.ckpt"))) == 5
    steps = [step_of_epoch[e] for e in epochs]

    # Every scalar and figure of the comparison sits where training logged the same epoch,
    # with the same value: the same weights on the same validation data.
    for tag in [*(f"embviz/{name}" for name in METRICS), "gan/modes_hit"]:
        compared, trained = _scalars(compare, tag), _scalars(train, tag)
        assert sorted(compared) == steps, tag
        for step in steps:
            assert compared[step] == pytest.approx(trained[step], rel=1e-6, abs=1e-6), tag
    for tag in ("embviz/pca", "embviz/pca_coverage", "embviz/pca_classes", "embviz/class_metrics"):
        images = compare.Images(tag)
        assert [e.step for e in images] == steps, tag
        assert all(e.encoded_image_string.startswith(PNG_SIGNATURE) for e in images)

    # The printed table shows the values `validate` returned, one row per epoch.
    header, rows = _table(proc.stdout, "checkpoints (")
    assert [int(r[0]) for r in rows] == epochs
    for name in METRICS:
        printed = [float(r[header.index(name)]) for r in rows]
        logged = _scalars(compare, f"embviz/{name}")
        assert printed == pytest.approx([logged[s] for s in steps], abs=5e-4), name
    command = f"tensorboard --logdir {out / 'tensorboard'} --samples_per_plugin images=1000"
    assert command in proc.stdout

    embeddings = out / "compare" / "embeddings"
    real = np.load(embeddings / "real.npy")
    assert real.shape == (QUICK_VAL, EMBED_DIM)
    fakes = sorted(embeddings.glob("fake_*.npy"))
    assert [p.name for p in fakes] == [f"fake_epoch{e:03d}.npy" for e in epochs]
    assert all(np.load(p).shape == (QUICK_VAL, EMBED_DIM) for p in fakes)

    # `embviz compare` ran on the saved embeddings: one row per epoch, and its numbers agree
    # with what the callback logged for the same checkpoint.
    with (out / "compare" / "embviz" / "metrics.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(epochs)
    assert [float(r["coverage"]) for r in table] == pytest.approx(
        [_scalars(compare, "embviz/coverage")[s] for s in steps], abs=1e-6
    )
    assert (out / "compare" / "embviz" / "compare_pca.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "embviz compare" in proc.stdout


def test_examples_log_no_hp_metric_and_point_to_unsmoothed_values(
    compare_run: tuple[Path, subprocess.CompletedProcess],
    quick_run: tuple[Path, subprocess.CompletedProcess],
) -> None:
    out, proc = compare_run
    # Lightning's `hp_metric` placeholder (-1 at step 0) is off in both runs.
    for run in ("train", "compare"):
        acc = _events(out / "tensorboard" / run)
        scalars = acc.Tags()["scalars"]
        assert "embviz/coverage" in scalars
        assert not [tag for tag in scalars if "hp_metric" in tag], (run, scalars)
    # TensorBoard smooths curves by default: both scripts say how to turn it off, and the
    # comparison's exact values are also a text card (TEXT tab), one row per checkpoint.
    for stdout in (quick_run[1].stdout, proc.stdout):
        assert "http://localhost:6006/?smoothing=0#timeseries" in stdout
    compare = _events(out / "tensorboard" / "compare")
    (event,) = compare.Tensors("compare/checkpoints/text_summary")
    text = event.tensor_proto.string_val[0].decode()
    lines = text.splitlines()
    assert lines[0].startswith("| epoch | precision | recall | density | coverage | fd |")
    coverage = _scalars(compare, "embviz/coverage")
    cells = [line.strip("|").split("|") for line in lines[2:]]
    assert [int(c[0]) for c in cells] == [0, 1]
    assert [float(c[4]) for c in cells] == pytest.approx(list(coverage.values()), abs=5e-4)


def test_a_second_run_into_the_same_folder_is_refused_or_replaces(tmp_path: Path) -> None:
    example = _load_example()
    out = tmp_path / "run"
    example.clear_previous_run(out, overwrite=False)  # nothing there yet: no error
    for name in ("checkpoints/best", "tensorboard/train", "tensorboard/compare"):
        (out / name).mkdir(parents=True)
        (out / name / "old").write_text("x")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"already holds a run .*pass --overwrite"):
        example.clear_previous_run(out, overwrite=False)
    assert (out / "checkpoints" / "best" / "old").exists()
    example.clear_previous_run(out, overwrite=True)
    assert sorted(p.name for p in out.rglob("*")) == ["notes.txt", "tensorboard"]


def test_comparison_replaces_only_tensorboard_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # compare_checkpoints imports gan_digits
    compare = _load_example(COMPARE)
    log_dir = tmp_path / "tensorboard" / "compare"
    log_dir.mkdir(parents=True)
    (log_dir / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    (log_dir / "hparams.yaml").write_text("{}")
    compare.clear_previous_comparison(log_dir)
    assert not log_dir.exists()
    log_dir.mkdir()
    (log_dir / "results.txt").write_text("mine")
    with pytest.raises(SystemExit, match=r"not TensorBoard logs .*results\.txt"):
        compare.clear_previous_comparison(log_dir)
    assert (log_dir / "results.txt").exists()


def test_csv_logger_writes_metrics_and_pngs(tmp_path: Path) -> None:
    _run([str(GAN), "--quick", "--epochs", "1", "--logger", "csv", "--out", "run"], tmp_path)
    log_dir = next((tmp_path / "run" / "csv").glob("version_*"))
    with (log_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("embviz/coverage")]
    assert len(rows) == 1
    assert 0.0 <= float(rows[0]["embviz/coverage"]) <= 1.0
    pngs = list(log_dir.rglob("*.png"))
    assert any("pca" in str(p) for p in pngs)
    assert not (tmp_path / "run" / "tensorboard").exists()


def test_bad_flags_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    example = _load_example()
    with pytest.raises(SystemExit):
        example.parse_args(["--epochs", "0"])
    assert "--epochs must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        example.parse_args(["--logger", "tensorbored"])
    assert "invalid choice: 'tensorbored'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="`--logger neptune` is not supported"):
        example.make_logger("neptune", Path("unused"))
    assert example.parse_args(["--quick"]).epochs == 2
    assert example.parse_args([]).epochs == 30
