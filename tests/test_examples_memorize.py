"""``examples/gan_digits.py --quick --memorize`` runs end to end, as a user starts it.

From the middle epoch on a share of the fakes are training digits plus tiny noise; the
run logs the memorization numbers (the copying epoch's ``copy_fraction`` near the copied
share) and the ``embviz/closest_train`` gallery, prints them, and
``readme_figures.py --memorization`` turns the run into the README's table and figures.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KEYS = ("authenticity", "ct_score", "copy_fraction")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _events(log_dir: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def _load(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{path.stem}_memorize_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_memorizing_run_shows_the_copies(tmp_path: Path) -> None:
    proc = _run(
        [str(EXAMPLES / "gan_digits.py"), "--quick", "--memorize", "--out", "run"], tmp_path
    )
    acc = _events(tmp_path / "run" / "tensorboard" / "train")
    logged = {key: [e.value for e in acc.Scalars(f"embviz/{key}")] for key in KEYS}
    assert all(len(values) == 2 for values in logged.values())
    honest, copying = (dict(zip(KEYS, values)) for values in zip(*logged.values()))
    # Epoch 0 honest, epoch 1 (the middle of 2) copies 25 % of the fakes.
    assert honest["copy_fraction"] <= 0.05
    assert 0.2 <= copying["copy_fraction"] <= 0.35
    assert copying["authenticity"] < honest["authenticity"] - 0.15
    assert copying["ct_score"] < honest["ct_score"]
    shown = acc.Images("embviz/closest_train")
    assert len(shown) == 2 and shown[1].encoded_image_string.startswith(PNG_SIGNATURE)
    # The printed table holds the logged values; the summary names both phases.
    assert "memorization per epoch" in proc.stdout
    assert f"{copying['copy_fraction']:.3f}" in proc.stdout
    assert " honest (epoch 0): authenticity" in proc.stdout
    assert "copying (epoch 1): authenticity" in proc.stdout

    docs = tmp_path / "docs"
    figures = _run(
        [str(EXAMPLES / "readme_figures.py"), "--memorization", "run", "--docs", str(docs)],
        tmp_path,
    )
    assert "| epoch | authenticity | ct_score | copy_fraction |" in figures.stdout
    assert f"| 1 | {copying['authenticity']:.3f} |" in figures.stdout
    for name in ("closest_train.png", "memorization_per_epoch.png"):
        assert (docs / "images" / name).read_bytes().startswith(PNG_SIGNATURE), name


def test_memorize_flag_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    example = _load(EXAMPLES / "gan_digits.py")
    assert example.parse_args([]).memorize is None  # the default run is unchanged
    assert example.parse_args(["--memorize"]).memorize == 0.25
    assert example.parse_args(["--memorize", "0.5"]).memorize == 0.5
    with pytest.raises(SystemExit):
        example.parse_args(["--memorize", "1.5"])
    assert "--memorize SHARE must be in (0, 1], got 1.5" in capsys.readouterr().err


def test_copying_fakes_are_fixed_functions_of_the_noise() -> None:
    import torch

    example = _load(EXAMPLES / "gan_digits.py")
    model = example.CopyingDigitsGAN(seed=0, n_val=8)
    bank = torch.rand(50, 64) * 2 - 1
    model.set_copying(bank, 0.5, start_epoch=0)
    z = torch.randn(400, 32, generator=torch.Generator().manual_seed(0))
    model.eval()
    with torch.no_grad():
        fakes = model.validation_fakes(z)
        again = model.validation_fakes(z)
    assert torch.equal(fakes, again)
    distance = torch.cdist(fakes, bank).min(dim=1).values
    copies = distance < 0.2  # tiny noise: 0.02 per pixel at most, 0.16 over 64 pixels
    assert 0.4 <= float(copies.float().mean()) <= 0.6
