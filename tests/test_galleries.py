"""Missed-real and outlier-fake galleries and per-sample tables from a real Trainer run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from prdc import compute_prdc as reference_prdc
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from _models import make_module_class
from lightning_embviz import EmbeddingMonitor

TinyGAN = make_module_class(pl)


def with_images(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    """Each embedding row's "image": the row itself as a 2x3 picture."""
    out["real_images"] = out["real"].reshape(-1, 1, 2, 3)
    out["fake_images"] = out["fake"].reshape(-1, 1, 2, 3)
    return out


def reference_indicators(real: np.ndarray, fake: np.ndarray, k: int = 5):
    """Coverage's and precision's per-sample indicators, as the reference decides them."""
    from prdc.prdc import compute_nearest_neighbour_distances, compute_pairwise_distance

    radii = compute_nearest_neighbour_distances(real, k)
    dist = compute_pairwise_distance(real, fake)
    covered = dist.min(axis=1) < radii
    inside = (dist < radii[:, None]).any(axis=0)
    return covered, inside


def test_galleries_and_tables_every_run(tmp_path, train_loader, val_loader):
    model = TinyGAN(shifts=(1.5, 0.5), outputs=with_images)
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        default_root_dir=tmp_path,
        logger=[tb, csv_logger],
        callbacks=[EmbeddingMonitor(views=None, gallery_size=6)],
    )
    trainer.fit(model, train_loader, val_loader)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb.log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    steps = sorted(e.step for e in acc.Scalars("embviz/coverage"))
    for tag in ("embviz/missed_real", "embviz/outlier_fake"):
        assert sorted(e.step for e in acc.Images(tag)) == steps
    assert sorted(e.step for e in acc.Tensors("embviz/samples/text_summary")) == steps

    for epoch, step in enumerate(steps):
        real = model.collected("real", epoch).double().numpy()
        fake = model.collected("fake", epoch).double().numpy()
        covered, inside = reference_indicators(real, fake)
        base = Path(csv_logger.log_dir) / "embviz"
        reals = pd.read_csv(base / "samples_real" / f"step_{step:06d}.csv")
        fakes = pd.read_csv(base / "samples_fake" / f"step_{step:06d}.csv")
        assert reals["index"].tolist() == list(range(len(real)))
        np.testing.assert_array_equal(reals["covered"].to_numpy(), covered)
        np.testing.assert_array_equal(fakes["inside_real_manifold"].to_numpy(), inside)
        assert ((reals["nearest_fake_ratio"] < 1) == reals["covered"]).all()
        expected = reference_prdc(real, fake, nearest_k=5)
        assert reals["covered"].mean() == pytest.approx(expected["coverage"])
        assert (base / "missed_real" / f"step_{step:06d}.png").exists()


def test_no_images_no_galleries_but_tables(tmp_path, val_loader):
    trainer = pl.Trainer(
        default_root_dir=tmp_path, callbacks=[EmbeddingMonitor(views=None)], logger=False
    )
    trainer.validate(TinyGAN(shifts=(0.5,)), val_loader)
    assert not list(Path(tmp_path).rglob("missed_real"))
    tables = sorted(Path(tmp_path).rglob("samples_real/step_*.csv"))
    assert len(tables) == 1 and len(pd.read_csv(tables[0])) == 64


def test_thumbnails_are_small_and_galleries_fetch_by_key():
    from lightning_embviz.callback.buffer import EmbeddingBuffer, gather_selected_images
    from lightning_embviz.callback.outputs import make_thumbnails

    images = torch.rand(20, 3, 100, 80) * 10 - 5
    thumbs = make_thumbnails(images, 32)
    assert thumbs.pixels.dtype == torch.uint8 and thumbs.pixels.shape == (20, 3, 32, 26)
    restored = thumbs.values()
    assert restored.min() >= images.min() - 1e-4 and restored.max() <= images.max() + 1e-4
    buffer = EmbeddingBuffer(max_samples=None)
    keys = torch.arange(100, 120)
    x = torch.randn(20, 4)
    buffer.add(x, x, real_keys=keys, fake_keys=keys, real_images=thumbs, fake_images=thumbs)
    real, _ = buffer.local_sets()
    got = gather_selected_images(real.images, real.keys, torch.tensor([105, 101]))
    assert got is not None and torch.equal(got.pixels, thumbs.pixels[[5, 1]])


def _bad_later_batch(kind: str):
    """Images for every batch, except that the third batch of epoch 0 breaks them."""
    calls = {"n": 0}

    def outputs(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
        with_images(module, out, batch)
        if module.trainer.sanity_checking or module.current_epoch != 0:
            return out
        calls["n"] += 1
        if calls["n"] == 3:
            if kind == "missing":
                del out["real_images"], out["fake_images"]
            elif kind == "resized":
                out["fake_images"] = out["fake"].reshape(-1, 1, 3, 2)
            else:  # four channels: not an image layout at all
                out["real_images"] = torch.zeros(len(out["real"]), 4, 2, 3)
        return out

    return outputs


@pytest.mark.parametrize("kind", ["missing", "resized", "channels"])
def test_bad_images_in_a_later_batch_drop_that_runs_galleries_not_the_run(tmp_path, kind):
    """Lightning's defaults (sanity check, TensorBoard logger): the fit ends normally."""
    from torch.utils.data import DataLoader

    from _models import make_data

    model = TinyGAN(shifts=(1.5, 0.5), outputs=_bad_later_batch(kind))
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        callbacks=[EmbeddingMonitor(views=None, gallery_size=4)],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    train = DataLoader(make_data(32, seed=1), batch_size=16)
    val = DataLoader(make_data(64), batch_size=16)
    with pytest.warns(UserWarning, match="inconsistent images") as record:
        trainer.fit(model, train, val)
    assert sum("inconsistent images" in str(w.message) for w in record) == 1
    assert trainer.state.finished and trainer.current_epoch == 2

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(trainer.logger.log_dir, size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    steps = sorted(e.step for e in acc.Scalars("embviz/coverage"))
    assert len(steps) == 2
    # The metrics of the broken run equal the reference on every returned row.
    real = model.collected("real", 0).double().numpy()
    fake = model.collected("fake", 0).double().numpy()
    logged = {e.step: e.value for e in acc.Scalars("embviz/coverage")}
    expected = reference_prdc(real, fake, nearest_k=5)["coverage"]
    assert logged[steps[0]] == pytest.approx(expected, abs=1e-6)
    # Epoch 0's galleries are dropped, epoch 1's are there.
    for tag in ("embviz/missed_real", "embviz/outlier_fake"):
        assert [e.step for e in acc.Images(tag)] == [steps[1]]


def test_select_samples_drops_galleries_when_images_were_dropped():
    from lightning_embviz.callback.galleries import select_samples
    from lightning_embviz.callback.outputs import GalleryImages, OutputKeys, parse_outputs

    keys = OutputKeys()
    gate = GalleryImages()
    x = torch.randn(4, 6)
    first = parse_outputs(
        {"real": x, "fake": x, "real_images": torch.rand(4, 1, 2, 3)}, keys, source="s", where="w"
    )
    assert gate.admit(first, keys, "batch 0") is None
    later = parse_outputs(
        {"real": x, "fake": x, "real_images": torch.rand(4, 5, 2, 3)},
        keys,
        source="s",
        where="w",
        strict_images=False,
    )
    assert later.real_images is None and "C in (1, 3)" in str(later.image_problem)
    message = gate.admit(later, keys, "batch 1")
    assert message is not None and "galleries of this run are dropped" in message
    assert later.real_images is not None and later.real_images.pixels.shape == (4, 1, 2, 3)
    assert gate.dropped and gate.admit(later, keys, "batch 2") is None  # warned once
    with pytest.raises(ValueError, match=r"C in \(1, 3\)"):
        parse_outputs(
            {"real": x, "fake": x, "real_images": torch.rand(4, 5, 2, 3)},
            keys,
            source="s",
            where="w",
        )
    views, problem = select_samples(
        None, (torch.arange(4), None, torch.arange(4), None), gallery_size=4, tables=False,
        distributed=False, images_dropped=True,
    )  # fmt: skip
    assert views is None and problem is None


# ---------------------------------------------------------------- display rule on both paths
# (README: uint8 images divided by 255; NaN black, +inf white, whatever the value range)

OUTLIER_FRAME = (213, 94, 0)  # plotting.FAKE_OUTSIDE_COLOR, frames the outlier tiles


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def _tile_bands(pixels: np.ndarray, frame: tuple[int, int, int], bands: int) -> np.ndarray:
    """(tiles, bands) grey level at the centre of each horizontal band of each framed tile."""
    from scipy import ndimage

    labels, count = ndimage.label(np.all(pixels == frame, axis=-1))
    out = []
    for rows, cols in ndimage.find_objects(labels):
        top, height = rows.start + 3, rows.stop - rows.start - 6  # inside the frame line
        centre = (cols.start + cols.stop) // 2
        out.append(
            [pixels[top + int((b + 0.5) * height / bands), centre].mean() for b in range(bands)]
        )
    assert count >= 1
    return np.asarray(out)


def _special_images(rows: int) -> np.ndarray:
    """(rows, 1, 4, 4): a NaN row, a +inf row, a -inf row, then finite values in [-1, 1]."""
    img = np.zeros((rows, 1, 4, 4), dtype=np.float32)
    img[:, 0, 0], img[:, 0, 1], img[:, 0, 2] = np.nan, np.inf, -np.inf
    img[:, 0, 3] = [-1.0, -0.5, 0.5, 1.0]
    return img


def _check_special_tiles(png: Path) -> None:
    bands = _tile_bands(_png(png), OUTLIER_FRAME, 4)
    # NaN black, +inf white, -inf black (the finite row in [-1, 1] would put 0 at mid-grey)
    assert (bands[:, 0] == 0).all(), bands
    assert (bands[:, 1] == 255).all(), bands
    assert (bands[:, 2] == 0).all(), bands


def test_nan_black_inf_white_in_the_callbacks_gallery(tmp_path, val_loader):
    def special(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
        out["fake_images"] = torch.from_numpy(_special_images(len(out["fake"])))
        return out

    csv_logger = CSVLogger(tmp_path, name="csv", version=0)
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        logger=csv_logger,
        callbacks=[EmbeddingMonitor(views=None, gallery_size=4)],
        enable_progress_bar=False,
    )
    trainer.validate(TinyGAN(shifts=(1.5,), outputs=special), val_loader)
    (png,) = (Path(csv_logger.log_dir) / "embviz" / "outlier_fake").glob("*.png")
    _check_special_tiles(png)


def test_nan_black_inf_white_in_the_reports_gallery(tmp_path):
    from lightning_embviz.cli import main

    g = np.random.default_rng(0)
    real = g.normal(size=(60, 4))
    fake = g.normal(size=(60, 4)) + 1.5
    np.save(tmp_path / "r.npy", real)
    np.save(tmp_path / "f.npy", fake)
    np.save(tmp_path / "fi.npy", _special_images(60))
    argv = ["report", str(tmp_path / "r.npy"), str(tmp_path / "f.npy"), "-o", str(tmp_path)]
    code = main([*argv, "--fake-images", str(tmp_path / "fi.npy"), "--gallery-size", "4"])
    assert code == 0
    _check_special_tiles(tmp_path / "outlier_fake.png")


def test_uint8_and_float_images_give_the_same_gallery(tmp_path, val_loader):
    """uint8 pixels are divided by 255 (not min-max stretched): same tiles as the floats."""

    def images(as_uint8: bool):
        def outputs(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
            for key in ("real", "fake"):
                u8 = (out[key].detach().reshape(-1, 1, 2, 3) * 20 + 128).clamp(60, 190)
                u8 = u8.to(torch.uint8)
                out[f"{key}_images"] = u8 if as_uint8 else u8.float() / 255
            return out

        return outputs

    rendered = {}
    for as_uint8 in (True, False):
        csv_logger = CSVLogger(tmp_path, name=f"u8_{as_uint8}", version=0)
        trainer = pl.Trainer(
            default_root_dir=tmp_path,
            logger=csv_logger,
            callbacks=[EmbeddingMonitor(views=None, gallery_size=8)],
            enable_progress_bar=False,
        )
        trainer.validate(TinyGAN(shifts=(1.0,), outputs=images(as_uint8)), val_loader)
        base = Path(csv_logger.log_dir) / "embviz"
        rendered[as_uint8] = [
            _png(next((base / tag).glob("*.png"))) for tag in ("missed_real", "outlier_fake")
        ]
    for with_u8, with_float in zip(rendered[True], rendered[False]):
        np.testing.assert_array_equal(with_u8, with_float)


def test_thumbnails_divide_uint8_by_255_and_keep_nan_and_inf():
    from lightning_embviz.callback.outputs import make_thumbnails

    u8 = torch.randint(60, 190, (3, 3, 5, 7), dtype=torch.uint8)
    a, b = make_thumbnails(u8, 32), make_thumbnails(u8.float() / 255, 32)
    assert torch.equal(a.pixels, u8) and torch.equal(a.pixels, b.pixels)
    assert torch.equal(a.values(), b.values())
    np.testing.assert_allclose(a.values().numpy(), u8.numpy() / 255.0, atol=1e-6)

    x = torch.from_numpy(_special_images(2))
    got = make_thumbnails(x, 32).values()[:, 0]
    assert torch.isnan(got[:, 0]).all() and (got[:, 1] == math.inf).all()
    assert (got[:, 2] == -math.inf).all()
    np.testing.assert_allclose(got[:, 3].numpy(), x[:, 0, 3].numpy(), atol=2 / 252)
    # downscaled: a pixel whose area is mostly NaN stays NaN, the finite part is averaged
    big = torch.rand(1, 1, 64, 64) * 4 - 2
    big[0, 0, :32] = math.nan
    small = make_thumbnails(big, 16).values()[0, 0]
    assert torch.isnan(small[:8]).all() and torch.isfinite(small[8:]).all()
    expected = torch.nn.functional.avg_pool2d(big[:, :, 32:], 4)[0, 0]
    np.testing.assert_allclose(small[8:].numpy(), expected.numpy(), atol=4 / 255 + 1e-6)
