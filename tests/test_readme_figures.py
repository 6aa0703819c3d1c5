"""``examples/readme_figures.py`` reads a run's TensorBoard events back into the README's
table and figures.

A small run folder is written here with TensorBoard's own writer, the way Lightning's
logger writes one: scalars with the ``epoch`` scalar at the same step, training-only steps
in between, and one solid-colour image per figure tag and epoch, so that the tests can tell
which epoch's image landed in which file.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorboard")

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "readme_figures.py"
# epoch -> (precision, recall, density, coverage, fd, modes hit); values exact in float32.
VALUES = {
    0: (0.5, 0.0, 0.125, 0.0625, 200.0, 3.0),
    1: (0.75, 0.25, 0.375, 0.25, 50.5, 7.0),
    2: (0.875, 0.5, 1.25, 0.75, 12.25, 10.0),
}
COLOURS = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}
FIGURE_TAGS = ("embviz/pca", "embviz/tsne_classes", "embviz/class_metrics", "embviz/pca_coverage")


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_figures_example", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _solid(colour: tuple[int, int, int], height: int = 12, width: int = 20) -> np.ndarray:
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (height, width, 3)).copy()


def _pixels(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _write_run(run: Path, tags: tuple[str, ...] = FIGURE_TAGS, compare: bool = True) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run / "tensorboard" / "train"))
    for epoch, values in VALUES.items():
        train_step, val_step = 100 * epoch + 49, 100 * epoch + 99
        # A training-only point: has an epoch, but no embviz/coverage.
        writer.add_scalar("loss/d", 1.0, train_step)
        writer.add_scalar("epoch", float(epoch), train_step)
        names = ("precision", "recall", "density", "coverage", "fd")
        for name, value in zip(names, values[:5]):
            writer.add_scalar(f"embviz/{name}", value, val_step)
        writer.add_scalar("gan/modes_hit", values[5], val_step)
        writer.add_scalar("epoch", float(epoch), val_step)
        for tag in tags:
            writer.add_image(tag, _solid(COLOURS[epoch]), val_step, dataformats="HWC")
    writer.close()
    if compare:
        from PIL import Image

        target = run / "compare" / "embviz" / "compare_tsne.png"
        target.parent.mkdir(parents=True)
        Image.fromarray(_solid((10, 20, 30), 8, 16)).save(target)


def test_table_and_figures_come_from_the_events(tmp_path: Path, capsys: Any) -> None:
    script = _load()
    run, docs = tmp_path / "run", tmp_path / "docs"
    _write_run(run)
    written = script.main(
        ["--run", str(run), "--docs", str(docs), "--no-examples", "--rows", "0,last"]
    )
    out = capsys.readouterr().out
    assert "| 0 | 0.500 | 0.000 | 0.125 | 0.062 | 200.0 | 3 |" in out
    assert "| 2 | 0.875 | 0.500 | 1.250 | 0.750 | 12.2 | 10 |" in out
    assert "| 1 |" not in out  # not among the selected rows
    assert "coverage goes from 0.06 (epoch 0) to 0.75 (epoch 2); classes hit: 3 -> 10" in out
    assert "wall time of the run" in out

    names = sorted(p.name for p in written)
    assert names == sorted(
        [
            "metrics_per_epoch.png",
            "pca_epoch_first.png",
            "pca_epoch_last.png",
            "tsne_classes_epoch_first.png",
            "tsne_classes_epoch_last.png",
            "class_metrics_epoch_first.png",
            "class_metrics_epoch_last.png",
            "pca_coverage_epoch_last.png",
            "compare_checkpoints_tsne.png",
        ]
    )
    assert all(p.parent == docs and p.is_file() for p in written)
    # First and last epoch, decoded from the events (the palette keeps solid colours exact).
    for name in ("pca", "tsne_classes", "class_metrics"):
        assert (_pixels(docs / f"{name}_epoch_first.png") == COLOURS[0]).all()
        assert (_pixels(docs / f"{name}_epoch_last.png") == COLOURS[2]).all()
    assert (_pixels(docs / "pca_coverage_epoch_last.png") == COLOURS[2]).all()
    assert (_pixels(docs / "compare_checkpoints_tsne.png") == (10, 20, 30)).all()
    assert _pixels(docs / "metrics_per_epoch.png").shape == (480, 640, 3)
    assert not list(docs.glob("missed_real*"))  # absent from the run: skipped silently


def test_gallery_figures_are_written_when_logged(tmp_path: Path) -> None:
    script = _load()
    run, docs = tmp_path / "run", tmp_path / "docs"
    _write_run(run, (*FIGURE_TAGS, "embviz/missed_real"))
    script.main(["--run", str(run), "--docs", str(docs), "--no-examples", "--full-color"])
    assert (_pixels(docs / "missed_real_epoch_first.png") == COLOURS[0]).all()
    assert (_pixels(docs / "missed_real_epoch_last.png") == COLOURS[2]).all()


def test_every_row_with_all(tmp_path: Path, capsys: Any) -> None:
    script = _load()
    run = tmp_path / "run"
    _write_run(run)
    script.main(
        ["--run", str(run), "--docs", str(tmp_path / "d"), "--no-examples", "--rows", "all"]
    )
    out = capsys.readouterr().out
    assert "| 1 | 0.750 | 0.250 | 0.375 | 0.250 | 50.5 | 7 |" in out
    assert sum(line.startswith("|") for line in out.splitlines()) == 2 + len(VALUES)


def test_missing_figures_are_reported_after_writing_the_rest(tmp_path: Path) -> None:
    script = _load()
    run, docs = tmp_path / "run", tmp_path / "docs"
    _write_run(run, ("embviz/pca", "embviz/class_metrics"), compare=False)
    with pytest.raises(SystemExit, match=r"embviz/tsne_classes[\s\S]*compare_checkpoints\.py"):
        script.main(["--run", str(run), "--docs", str(docs), "--no-examples"])
    assert (docs / "pca_epoch_last.png").is_file()
    assert (docs / "metrics_per_epoch.png").is_file()


def test_a_folder_without_events_is_refused(tmp_path: Path) -> None:
    script = _load()
    with pytest.raises(SystemExit, match=r"no TensorBoard event files.*gan_digits\.py"):
        script.main(["--run", str(tmp_path), "--docs", str(tmp_path / "d"), "--no-examples"])


def test_rows_flag_is_checked() -> None:
    script = _load()
    assert script.parse_rows("0, 5,last") == ["0", "5", "last"]
    assert script.parse_rows("all") is None
    with pytest.raises(argparse.ArgumentTypeError, match="non-negative integers"):
        script.parse_rows("0,x")


def test_png_is_decoded_not_copied_blindly(tmp_path: Path) -> None:
    script = _load()
    with pytest.raises(Exception, match="cannot identify image"):
        script.save_png(b"not an image", tmp_path / "x.png", palette=True)
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(_solid((1, 2, 3))).save(buffer, format="JPEG")
    path = script.save_png(buffer.getvalue(), tmp_path / "y.png", palette=False)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (20, 12)


def test_synthetic_clusters_tell_the_story_of_the_example_figures() -> None:
    from lightning_embviz import compute_prdc

    script = _load()
    data = script.synthetic_clusters(0)
    again = script.synthetic_clusters(0)
    assert all(np.array_equal(data[k], again[k]) for k in data)
    assert data["real"].shape == data["fake"].shape == (1500, 32)
    # The fake set misses the last cluster: coverage is at most 5/6.
    report = compute_prdc(data["real"], data["fake"], nearest_k=5)
    assert report["coverage"] <= 5 / 6 + 1e-9
    assert report["density"] > 1.0 > report["recall"]
    coverage = [
        compute_prdc(data["real"], data[f"epoch{e}"], nearest_k=5)["coverage"] for e in (10, 20, 30)
    ]
    assert coverage == sorted(coverage) and coverage[0] < 0.5 < coverage[2]
