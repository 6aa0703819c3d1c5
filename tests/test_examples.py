"""The examples run end to end (in their short modes), so they cannot rot.

``examples/gan_digits.py --quick`` and ``examples/compare_checkpoints.py`` run as
subprocesses in a temporary folder, exactly as a user would start them; the tests then
read what they wrote: TensorBoard event files, checkpoints, embeddings, ``embviz`` output.
"""

from __future__ import annotations

import csv
import importlib.util
import os
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

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gan_digits_example", GAN)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``gan_digits.py --quick`` in a fresh folder: (output folder, stdout)."""
    cwd = tmp_path_factory.mktemp("gan_digits")
    proc = _run([str(GAN), "--quick", "--out", "run"], cwd)
    return cwd / "run", proc.stdout


def test_quick_run_logs_metrics_and_figures_to_tensorboard(quick_run: tuple[Path, str]) -> None:
    out, _ = quick_run
    versions = sorted((out / "tensorboard").glob("version_*"))
    assert len(versions) == 1
    acc = _events(versions[0])
    tags = acc.Tags()
    for name in METRICS:
        assert f"embviz/{name}" in tags["scalars"], tags["scalars"]
    coverage = acc.Scalars("embviz/coverage")
    assert len(coverage) == 2  # --quick: two epochs, one point each
    assert all(0.0 <= e.value <= 1.0 for e in coverage)
    assert coverage[0].step < coverage[1].step
    # Even the short run learns: the fakes cover more of the real digits after epoch 1.
    assert coverage[1].value > coverage[0].value
    for tag in ("embviz/pca", "embviz/pca_classes", "embviz/class_metrics"):
        assert tag in tags["images"], tags["images"]
        images = acc.Images(tag)
        assert [e.step for e in images] == [e.step for e in coverage]
        assert all(e.encoded_image_string.startswith(PNG_SIGNATURE) for e in images)


def test_quick_run_prints_table_and_tensorboard_command(quick_run: tuple[Path, str]) -> None:
    out, stdout = quick_run
    assert "metrics per epoch" in stdout
    header = next(line for line in stdout.splitlines() if "coverage" in line and "epoch" in line)
    rows = stdout.splitlines()[stdout.splitlines().index(header) + 1 :][:2]
    assert [int(r.split()[0]) for r in rows] == [0, 1]
    coverage_column = header.split().index("coverage")
    logged = [
        e.value
        for e in _events(next((out / "tensorboard").glob("version_*"))).Scalars("embviz/coverage")
    ]
    printed = [float(r.split()[coverage_column]) for r in rows]
    assert printed == pytest.approx(logged, abs=5e-4)
    assert f"tensorboard --logdir {Path('run') / 'tensorboard'}" in stdout


def test_quick_run_keeps_best_and_periodic_checkpoints(quick_run: tuple[Path, str]) -> None:
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


def test_compare_checkpoints_logs_each_checkpoint_at_its_step(
    quick_run: tuple[Path, str],
) -> None:
    out, _ = quick_run
    proc = _run([str(COMPARE), "--run", str(out), "--views", "pca"], out.parent)
    steps = sorted(
        {
            int(torch.load(p, map_location="cpu", weights_only=True)["global_step"])
            for p in (out / "checkpoints").rglob("*.ckpt")
        }
    )
    assert len(steps) == 2
    acc = _events(out / "compare" / "tensorboard" / "version_0")
    for name in METRICS:
        assert [e.step for e in acc.Scalars(f"embviz/{name}")] == steps
    assert [e.step for e in acc.Images("embviz/pca")] == steps

    embeddings = out / "compare" / "embeddings"
    real = np.load(embeddings / "real.npy")
    assert real.shape == (QUICK_VAL, EMBED_DIM)
    fakes = sorted(embeddings.glob("fake_step*.npy"))
    assert [int(p.stem.removeprefix("fake_step")) for p in fakes] == steps
    assert all(np.load(p).shape == (QUICK_VAL, EMBED_DIM) for p in fakes)

    # `embviz compare` ran on the saved embeddings: one row per checkpoint, and its numbers
    # agree with what the callback logged for the same checkpoint.
    with (out / "compare" / "embviz" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(steps)
    logged = [e.value for e in acc.Scalars("embviz/coverage")]
    assert [float(r["coverage"]) for r in rows] == pytest.approx(logged, abs=1e-6)
    assert (out / "compare" / "embviz" / "compare_pca.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "embviz compare" in proc.stdout


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
