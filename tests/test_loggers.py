"""Logger dispatch: every logger kind, both Lightning namespaces, read back from disk."""

from __future__ import annotations

import glob
import importlib
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from _wandb import read_wandb_history
from lightning_embviz import loggers as embviz_loggers
from lightning_embviz.loggers import log_embedding_projector, log_figures, log_tables, logger_kind

NAMESPACES = ["pytorch_lightning.loggers", "lightning.pytorch.loggers"]
WIDTH, HEIGHT = 80, 60  # pixels of the test figures (2 x 1.5 inches at 40 dpi)
RED = (1.0, 0.0, 0.0)
BLUE = (0.0, 0.0, 1.0)


def loggers_module(namespace: str):
    return importlib.import_module(namespace)


def solid_figure(color: tuple[float, float, float]) -> Figure:
    """A figure whose pixels are (almost) all ``color``, so content can be checked."""
    fig = Figure(figsize=(WIDTH / 40, HEIGHT / 40), dpi=40)
    fig.patch.set_facecolor(color)
    return fig


def figures() -> dict[str, Figure]:
    return {"embviz/pca": solid_figure(RED), "embviz/tsne": solid_figure(BLUE)}


def decode_png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def assert_solid(pixels: np.ndarray, color: tuple[float, float, float]) -> None:
    assert pixels.shape == (HEIGHT, WIDTH, 3)
    expected = np.array(color) * 255
    assert np.abs(pixels.reshape(-1, 3).mean(axis=0) - expected).max() < 1.0


def assert_png_file(path: Path, color: tuple[float, float, float]) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert_solid(decode_png(data), color)


# --------------------------------------------------------------------------- logger kinds


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_logger_kind_recognises_both_namespaces_and_subclasses(namespace):
    module = loggers_module(namespace)
    expected = {
        "TensorBoardLogger": "tensorboard",
        "CSVLogger": "csv",
        "MLFlowLogger": "mlflow",
        "WandbLogger": "wandb",
    }
    for name, kind in expected.items():
        cls = getattr(module, name)
        assert logger_kind(object.__new__(cls)) == kind
        subclass = type(f"My{name}", (cls,), {})
        assert logger_kind(object.__new__(subclass)) == kind


def test_logger_kind_ignores_lookalikes_and_other_loggers():
    lookalike = type("TensorBoardLogger", (), {})  # defined here, not in Lightning
    assert logger_kind(lookalike()) is None
    assert logger_kind(object()) is None
    from pytorch_lightning.loggers import CometLogger

    assert logger_kind(object.__new__(CometLogger)) is None


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_dummy_logger_of_fast_dev_run_gets_nothing(namespace, tmp_path, fresh_warnings):
    dummy = importlib.import_module(namespace + ".logger").DummyLogger()
    assert logger_kind(dummy) == "dummy"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert log_figures([dummy], figures(), 1, fallback_dir=tmp_path) == []
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- TensorBoard


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_tensorboard_images_at_their_steps(namespace, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = loggers_module(namespace).TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    first = log_figures([logger], figures(), 3, fallback_dir=tmp_path / "unused")
    second = log_figures([logger], {"embviz/pca": solid_figure(BLUE)}, 7, fallback_dir=None)
    assert first == ["tensorboard:embviz/pca@3", "tensorboard:embviz/tsne@3"]
    assert second == ["tensorboard:embviz/pca@7"]
    assert not (tmp_path / "unused").exists()

    events = EventAccumulator(logger.log_dir, size_guidance={"images": 0})
    events.Reload()
    assert set(events.Tags()["images"]) == {"embviz/pca", "embviz/tsne"}
    pca = events.Images("embviz/pca")
    assert [image.step for image in pca] == [3, 7]
    assert [(image.width, image.height) for image in pca] == [(WIDTH, HEIGHT)] * 2
    assert_solid(decode_png(pca[0].encoded_image_string), RED)
    assert_solid(decode_png(pca[1].encoded_image_string), BLUE)
    (tsne,) = events.Images("embviz/tsne")
    assert tsne.step == 3
    assert_solid(decode_png(tsne.encoded_image_string), BLUE)


# --------------------------------------------------------------------------- CSV


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_csv_pngs_next_to_metrics(namespace, tmp_path):
    logger = loggers_module(namespace).CSVLogger(save_dir=str(tmp_path), name="csv")
    logger.log_metrics({"embviz/coverage": 0.25}, step=3)
    logger.save()
    destinations = log_figures([logger], figures(), 3, fallback_dir=tmp_path / "unused")
    log_figures([logger], {"embviz/pca": solid_figure(BLUE)}, 12, fallback_dir=None)

    log_dir = Path(logger.log_dir)
    assert (log_dir / "metrics.csv").is_file()
    assert destinations == [
        str(log_dir / "embviz" / "pca" / "step_000003.png"),
        str(log_dir / "embviz" / "tsne" / "step_000003.png"),
    ]
    assert_png_file(log_dir / "embviz" / "pca" / "step_000003.png", RED)
    assert_png_file(log_dir / "embviz" / "tsne" / "step_000003.png", BLUE)
    assert_png_file(log_dir / "embviz" / "pca" / "step_000012.png", BLUE)
    assert sorted(p.name for p in (log_dir / "embviz" / "pca").iterdir()) == [
        "step_000003.png",
        "step_000012.png",
    ]
    assert not (tmp_path / "unused").exists()


# --------------------------------------------------------------------------- MLflow


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_mlflow_artifacts(namespace, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed")
    from mlflow.tracking import MlflowClient

    # MLflow >= 3.x refuses the file store unless asked; the file store keeps this test fast.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    logger = loggers_module(namespace).MLFlowLogger(experiment_name="embviz", tracking_uri=uri)
    destinations = log_figures([logger], figures(), 3, fallback_dir=tmp_path / "unused")
    run_id = logger.run_id
    assert destinations == [
        f"mlflow:{run_id}/embviz/pca/step_000003.png",
        f"mlflow:{run_id}/embviz/tsne/step_000003.png",
    ]

    client = MlflowClient(tracking_uri=uri)
    assert [a.path for a in client.list_artifacts(run_id, "embviz")] == [
        "embviz/pca",
        "embviz/tsne",
    ]
    assert [a.path for a in client.list_artifacts(run_id, "embviz/pca")] == [
        "embviz/pca/step_000003.png"
    ]
    local = client.download_artifacts(run_id, "embviz/tsne/step_000003.png", str(tmp_path))
    assert_png_file(Path(local), BLUE)
    assert not (tmp_path / "unused").exists()


# --------------------------------------------------------------------------- W&B


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_wandb_offline_images_at_trainer_step(namespace, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = loggers_module(namespace).WandbLogger(
        save_dir=str(tmp_path), offline=True, project="embviz"
    )
    try:
        logger.log_metrics({"embviz/coverage": 0.5}, step=3)
        first = log_figures([logger], figures(), 3, fallback_dir=tmp_path / "unused")
        second = log_figures([logger], {"embviz/pca": solid_figure(BLUE)}, 9, fallback_dir=None)
        run_dir = Path(logger.experiment.dir).parent
    finally:
        wandb.finish()
    assert first == ["wandb:embviz/pca@3", "wandb:embviz/tsne@3"]
    assert second == ["wandb:embviz/pca@9"]

    media = sorted((run_dir / "files" / "media" / "images" / "embviz").glob("*.png"))
    assert sorted(path.name.split("_")[0] for path in media) == ["pca", "pca", "tsne"]

    (run_file,) = glob.glob(str(run_dir / "run-*.wandb"))
    # wandb.finish() can return before W&B's service has written the run file: wait for it.
    deadline = time.monotonic() + 20.0
    history = read_wandb_history(run_file)
    while sum("embviz/pca/filenames" in row for row in history) < 2:
        assert time.monotonic() < deadline, f"W&B never wrote the history to {run_file}"
        time.sleep(0.1)
        history = read_wandb_history(run_file)
    images = [row for row in history if "embviz/pca/filenames" in row]
    assert [row["trainer/global_step"] for row in images] == [3, 9]
    assert [(row["embviz/pca/width"], row["embviz/pca/height"]) for row in images] == [
        (WIDTH, HEIGHT)
    ] * 2
    # Images carry the same trainer step as the scalars logged at that step.
    (scalars,) = [row for row in history if "embviz/coverage" in row]
    assert scalars["trainer/global_step"] == 3
    tsne_rows = [row for row in history if "embviz/tsne/filenames" in row]
    assert [row["trainer/global_step"] for row in tsne_rows] == [3]
    (pca_at_3,) = images[0]["embviz/pca/filenames"]
    assert_png_file(run_dir / "files" / pca_at_3, RED)
    (pca_at_9,) = images[1]["embviz/pca/filenames"]
    assert_png_file(run_dir / "files" / pca_at_9, BLUE)
    assert not (tmp_path / "unused").exists()


# --------------------------------------------------------------------------- other loggers


class DirLogger:
    """A logger lightning-embviz does not know, with a run directory."""

    def __init__(self, log_dir=None, save_dir=None):
        self.log_dir = log_dir
        self.save_dir = save_dir


class BrokenDirLogger:
    """Its ``log_dir`` property fails (like some loggers without a Trainer)."""

    @property
    def log_dir(self):
        raise RuntimeError("no trainer")


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(embviz_loggers, "_WARNED_LOGGER_CLASSES", set())


def test_unknown_logger_warns_once_and_saves_under_its_dir(tmp_path, fresh_warnings):
    logger = DirLogger(log_dir=str(tmp_path / "run"), save_dir=str(tmp_path / "save"))
    with pytest.warns(
        UserWarning,
        match=r"DirLogger.*figures are saved as PNG files \(and tables as CSV files\) under",
    ):
        destinations = log_figures([logger], figures(), 5, fallback_dir=tmp_path / "fallback")
    assert destinations == [
        str(tmp_path / "run" / "embviz" / "pca" / "step_000005.png"),
        str(tmp_path / "run" / "embviz" / "tsne" / "step_000005.png"),
    ]
    assert_png_file(Path(destinations[0]), RED)
    assert_png_file(Path(destinations[1]), BLUE)

    other = DirLogger(save_dir=str(tmp_path / "save"))  # same class: no second warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = log_figures([other], {"embviz/pca": solid_figure(RED)}, 6, fallback_dir=None)
    assert again == [str(tmp_path / "save" / "embviz" / "pca" / "step_000006.png")]
    assert_png_file(Path(again[0]), RED)
    assert not (tmp_path / "fallback").exists()


def test_unknown_logger_without_dir_uses_fallback(tmp_path, fresh_warnings):
    with pytest.warns(UserWarning, match="BrokenDirLogger"):
        (destination,) = log_figures(
            [BrokenDirLogger()], {"embviz/pca": solid_figure(RED)}, 0, fallback_dir=tmp_path
        )
    assert destination == str(tmp_path / "embviz" / "pca" / "step_000000.png")
    assert_png_file(Path(destination), RED)


def test_unknown_logger_warning_only_on_rank_zero(tmp_path, fresh_warnings, monkeypatch):
    from lightning_utilities.core.rank_zero import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (destination,) = log_figures(
            [DirLogger(log_dir=str(tmp_path))],
            {"embviz/pca": solid_figure(RED)},
            1,
            fallback_dir=None,
        )
    assert Path(destination).is_file()


@pytest.mark.parametrize("given", [[], [None]])
def test_no_logger_saves_under_fallback_dir(tmp_path, given):
    destinations = log_figures(given, figures(), 42, fallback_dir=tmp_path)
    assert destinations == [
        str(tmp_path / "embviz" / "pca" / "step_000042.png"),
        str(tmp_path / "embviz" / "tsne" / "step_000042.png"),
    ]
    assert_png_file(Path(destinations[0]), RED)
    assert_png_file(Path(destinations[1]), BLUE)


def test_no_logger_and_no_fallback_uses_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (destination,) = log_figures([], {"embviz/pca": solid_figure(RED)}, 1, fallback_dir=None)
    assert Path(destination) == tmp_path / "embviz" / "pca" / "step_000001.png"
    assert_png_file(Path(destination), RED)


def test_no_figures_logs_nothing(tmp_path):
    assert log_figures([], {}, 1, fallback_dir=tmp_path) == []
    assert list(tmp_path.iterdir()) == []


def test_each_figure_rendered_once_for_all_loggers(tmp_path, fresh_warnings):
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    fig = solid_figure(RED)
    draws = []
    fig.canvas.mpl_connect("draw_event", lambda event: draws.append(event))
    tb = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    csv = CSVLogger(save_dir=str(tmp_path), name="csv")
    with pytest.warns(UserWarning, match="DirLogger"):
        destinations = log_figures(
            [tb, csv, DirLogger(log_dir=str(tmp_path / "other"))],
            {"embviz/pca": fig},
            2,
            fallback_dir=None,
        )
    assert len(draws) == 1
    assert destinations[0] == "tensorboard:embviz/pca@2"
    assert_png_file(Path(destinations[1]), RED)
    assert_png_file(Path(destinations[2]), RED)


def test_prerendered_arrays_log_like_figures(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from lightning_embviz.plotting import figure_to_array

    rgb = figure_to_array(solid_figure(RED))
    rgba = np.concatenate([figure_to_array(solid_figure(BLUE)), np.zeros((HEIGHT, WIDTH, 1))], 2)
    tb = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    arrays = {"embviz/pca": rgb, "embviz/tsne": rgba.astype(np.uint8)}
    destinations = log_figures([tb, None], arrays, 4, fallback_dir=tmp_path / "unused")
    assert destinations == ["tensorboard:embviz/pca@4", "tensorboard:embviz/tsne@4"]
    files = log_figures([], arrays, 4, fallback_dir=tmp_path / "files")
    assert_png_file(Path(files[0]), RED)
    assert_png_file(Path(files[1]), BLUE)  # alpha dropped, not transparent
    events = EventAccumulator(tb.log_dir, size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("embviz/pca")
    np.testing.assert_array_equal(decode_png(image.encoded_image_string), rgb)


def test_tags_become_safe_folders(tmp_path):
    tags = {
        "embviz/pca/dataloader_idx_1": solid_figure(RED),
        "embviz/../../escape me": solid_figure(BLUE),
    }
    destinations = [Path(p) for p in log_figures([], tags, 3, fallback_dir=tmp_path)]
    assert destinations[0] == tmp_path / "embviz" / "pca" / "dataloader_idx_1" / "step_000003.png"
    assert destinations[1] == tmp_path / "embviz" / "_" / "_" / "escape_me" / "step_000003.png"
    for path in destinations:
        assert path.resolve().is_relative_to(tmp_path.resolve())
        assert path.is_file()


@pytest.mark.parametrize(
    ("step", "figs", "error", "match"),
    [
        (-1, {"embviz/pca": None}, ValueError, r"`step` must be >= 0, got -1"),
        (1.5, {"embviz/pca": None}, TypeError, r"`step` must be an int, got 1.5"),
        (True, {"embviz/pca": None}, TypeError, r"`step` must be an int"),
        (1, {"embviz/pca": "fig"}, TypeError, r"'embviz/pca' must be a matplotlib.*got str"),
        (
            1,
            {"embviz/pca": np.zeros((4, 4, 3))},
            TypeError,
            r"uint8 array, got ndarray of shape \(4, 4, 3\) and dtype float64",
        ),
        (1, {"embviz/pca": np.zeros((4, 4), np.uint8)}, TypeError, r"shape \(4, 4\)"),
        (1, {"": "fig"}, ValueError, r"tag must name something"),
        (1, {3: "fig"}, TypeError, r"tag must be a str, got 3"),
    ],
)
def test_log_figures_bad_arguments(tmp_path, step, figs, error, match):
    with pytest.raises(error, match=match):
        log_figures([], figs, step, fallback_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- projector


def read_projector(log_dir: Path, step: int, tag: str) -> tuple[str, list[list[str]], Path]:
    config = (log_dir / "projector_config.pbtxt").read_text()
    folder = log_dir / f"{step:05d}" / tag.replace("%", "%25").replace("/", "%2f")
    rows = [line.split("\t") for line in (folder / "metadata.tsv").read_text().splitlines()]
    return config, rows, folder


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_projector_metadata_and_thumbnails(namespace, tmp_path):
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(6, 4, generator=generator)
    fake = torch.randn(5, 2, 2, generator=generator)  # (M, ...) is flattened
    real_images = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1  # tanh range
    fake_images = torch.rand(5, 8, 8, generator=generator) * 2 - 1  # (M, H, W)
    logger = loggers_module(namespace).TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    csv = loggers_module(namespace).CSVLogger(save_dir=str(tmp_path), name="csv")

    logged = log_embedding_projector(
        [csv, logger],
        real,
        fake,
        4,
        tag="embviz/embeddings",
        real_labels=torch.tensor([0, 1, 2, 0, 1, 2]),
        real_images=real_images,
        fake_images=fake_images,
    )
    assert logged is True
    log_dir = Path(logger.log_dir)
    config, rows, folder = read_projector(log_dir, 4, "embviz/embeddings")
    assert 'tensor_name: "embviz/embeddings:00004"' in config
    assert "sprite" in config
    assert rows[0] == ["source", "label"]
    assert rows[1:] == [["real", str(c)] for c in [0, 1, 2, 0, 1, 2]] + [["fake", "-"]] * 5
    vectors = np.loadtxt(folder / "tensors.tsv", delimiter="\t")
    np.testing.assert_allclose(vectors, torch.cat([real, fake.reshape(5, 4)]).numpy(), rtol=1e-5)
    sprite = np.asarray(Image.open(folder / "sprite.png"))
    assert sprite.shape[:2] == (4 * 8, 4 * 8)  # ceil(sqrt(11)) = 4 thumbnails per side
    assert "single_image_dim: 8" in config
    assert sprite.min() == 0 and sprite.max() == 255  # [-1, 1] was scaled into [0, 1]
    assert not list(Path(csv.log_dir).glob("**/*.tsv"))


def test_projector_float_labels_and_a_second_step(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    real, fake = torch.randn(3, 2), torch.randn(2, 2)
    labels = torch.tensor([1.0, 0.0, 2.0])
    assert log_embedding_projector([logger], real, fake, 1, tag="emb", real_labels=labels)
    assert log_embedding_projector([logger], real, fake, 2, tag="emb", fake_labels=np.array([7, 8]))
    config, rows, folder = read_projector(Path(logger.log_dir), 2, "emb")
    assert rows[1:] == [["real", "-"]] * 3 + [["fake", "7"], ["fake", "8"]]
    assert config.count("embeddings {") == 2
    assert not (folder / "sprite.png").exists()
    _, rows_1, _ = read_projector(Path(logger.log_dir), 1, "emb")
    assert [row[1] for row in rows_1[1:4]] == ["1", "0", "2"]


def test_projector_same_step_twice_warns_and_keeps_the_first(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    first, second = torch.zeros(2, 3), torch.ones(2, 3)
    assert log_embedding_projector([logger], first, first, 5, tag="embviz/e%1")
    with pytest.warns(UserWarning, match=r"already has 'embviz/e%1' at step 5"):
        assert not log_embedding_projector([logger], second, second, 5, tag="embviz/e%1")
    config, _, folder = read_projector(Path(logger.log_dir), 5, "embviz/e%1")
    assert folder.name == "embviz%2fe%251"
    assert config.count("embeddings {") == 1
    np.testing.assert_array_equal(np.loadtxt(folder / "tensors.tsv"), np.zeros((4, 3)))


def test_projector_shrinks_large_thumbnails(tmp_path, monkeypatch):
    from pytorch_lightning.loggers import TensorBoardLogger

    monkeypatch.setattr(embviz_loggers, "_MAX_SPRITE_SIDE", 64)
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    images = torch.rand(5, 3, 32, 32)
    assert log_embedding_projector(
        [logger],
        torch.randn(5, 3),
        torch.randn(5, 3),
        0,
        tag="emb",
        real_images=images,
        fake_images=images,
    )
    _, _, folder = read_projector(Path(logger.log_dir), 0, "emb")
    sprite = Image.open(folder / "sprite.png")
    assert sprite.size == (64, 64)  # 4 thumbnails of 16 px per side instead of 32 px


def test_projector_without_tensorboard_returns_false(tmp_path):
    from pytorch_lightning.loggers import CSVLogger

    csv = CSVLogger(save_dir=str(tmp_path), name="csv")
    assert log_embedding_projector([csv], torch.randn(3, 2), torch.randn(3, 2), 0, tag="e") is False
    assert log_embedding_projector([], torch.randn(3, 2), torch.randn(3, 2), 0, tag="e") is False
    assert not list(tmp_path.glob("**/*.tsv"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"fake": torch.randn(4, 3)}, ValueError, r"same width, got \(4, 2\) and \(4, 3\)"),
        ({"real": torch.randn(4)}, ValueError, r"`real` must have shape \(N, D\).*got \(4,\)"),
        ({"fake": torch.randn(0, 2)}, ValueError, r"`fake` must have shape \(N, D\)"),
        ({"real_labels": torch.arange(3)}, ValueError, r"one label per `real` row \(4\), got 3"),
        ({"fake_labels": torch.arange(5)}, ValueError, r"one label per `fake` row \(4\), got 5"),
        ({"real_images": torch.rand(4, 1, 2, 2)}, ValueError, r"`fake_images` is missing"),
        ({"fake_images": torch.rand(4, 1, 2, 2)}, ValueError, r"`real_images` is missing"),
        (
            {"real_images": torch.rand(4, 2, 2, 2), "fake_images": torch.rand(4, 1, 2, 2)},
            ValueError,
            r"`real_images` must have shape \(N, C, H, W\) with C in \(1, 3\)",
        ),
        (
            {"real_images": torch.rand(3, 1, 2, 2), "fake_images": torch.rand(4, 1, 2, 2)},
            ValueError,
            r"one image per `real` row \(4\), got 3",
        ),
        (
            {"real_images": torch.rand(4, 1, 2, 2), "fake_images": torch.rand(4, 1, 3, 2)},
            ValueError,
            r"same height and width, got \(2, 2\) and \(3, 2\)",
        ),
        ({"step": -2}, ValueError, r"`step` must be >= 0, got -2"),
        ({"tag": ""}, ValueError, r"tag must name something"),
    ],
)
def test_projector_bad_arguments(tmp_path, kwargs, error, match):
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    arguments = {"real": torch.randn(4, 2), "fake": torch.randn(4, 2), "step": 0, "tag": "emb"}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        log_embedding_projector([logger], **arguments)
    assert not list(tmp_path.glob("**/*.tsv"))


# --------------------------------------------------------------------------- tables


def tables() -> dict[str, dict[str, np.ndarray]]:
    real = {
        "index": np.array([10, 11, 12], dtype=np.int64),
        "label": np.array([3, 1, 3]),
        "radius": np.array([0.5, 0.25, 0.0], dtype=np.float32),
        "nearest_fake_ratio": np.array([0.5, 4.0, np.inf]),
        "covered": np.array([True, False, False]),
    }
    fake = {
        "index": np.array([0, 1], dtype=np.int64),
        "ball_count": np.array([2, 0], dtype=np.int64),
        "nearest_ball_ratio": np.array([0.1, 2.5]),
        "inside_real_manifold": np.array([True, False]),
    }
    return {"embviz/samples_real": real, "embviz/samples_fake": fake}


MARKDOWN = "**Missed real samples**: 2 of 3\n\n| index | ratio |\n|---|---|\n| 11 | 4.00× |\n"


def assert_table_file(path: Path, rows: dict[str, np.ndarray]) -> None:
    pd = pytest.importorskip("pandas")
    frame = pd.read_csv(path)
    assert list(frame.columns) == list(rows)
    for column, values in rows.items():
        np.testing.assert_array_equal(frame[column].to_numpy(), values)
        if values.dtype.kind in "biu":
            assert frame[column].dtype == values.dtype.newbyteorder("=")


def assert_tables_under(base: Path, step: int) -> None:
    for name, rows in tables().items():
        assert_table_file(base / name / f"step_{step:06d}.csv", rows)


def read_text_summaries(log_dir: str, tag: str) -> list[tuple[int, str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    events = EventAccumulator(log_dir, size_guidance={"tensors": 0})
    events.Reload()
    full = f"{tag}/text_summary"
    assert events.SummaryMetadata(full).plugin_data.plugin_name == "text"
    return [
        (event.step, tensor_util.make_ndarray(event.tensor_proto).item().decode())
        for event in events.Tensors(full)
    ]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_tables_tensorboard_text_summary_and_files(namespace, tmp_path):
    logger = loggers_module(namespace).TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    first = log_tables([logger], tables(), 3, markdown=MARKDOWN, fallback_dir=tmp_path / "unused")
    second = log_tables([logger], tables(), 7, markdown="later", fallback_dir=None)
    log_dir = Path(logger.log_dir)
    assert first == [
        "tensorboard:embviz/samples@3",
        str(log_dir / "embviz" / "samples_real" / "step_000003.csv"),
        str(log_dir / "embviz" / "samples_fake" / "step_000003.csv"),
    ]
    assert second[0] == "tensorboard:embviz/samples@7"
    assert read_text_summaries(str(log_dir), "embviz/samples") == [(3, MARKDOWN), (7, "later")]
    assert_tables_under(log_dir, 3)
    assert_tables_under(log_dir, 7)
    assert not (tmp_path / "unused").exists()


def test_tables_tensorboard_custom_tag_and_no_markdown(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    log_tables([logger], tables(), 1, markdown="x", markdown_tag="gan/samples", fallback_dir=None)
    destinations = log_tables([logger], tables(), 2, fallback_dir=None)
    assert not any(d.startswith("tensorboard:") for d in destinations)
    assert read_text_summaries(logger.log_dir, "gan/samples") == [(1, "x")]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_tables_csv_logger_next_to_the_figures(namespace, tmp_path):
    logger = loggers_module(namespace).CSVLogger(save_dir=str(tmp_path), name="csv")
    pngs = log_figures([logger], {"embviz/missed_real": solid_figure(RED)}, 3, fallback_dir=None)
    destinations = log_tables([logger], tables(), 3, markdown=MARKDOWN, fallback_dir=None)
    log_dir = Path(logger.log_dir)
    assert pngs == [str(log_dir / "embviz" / "missed_real" / "step_000003.png")]
    assert destinations == [
        str(log_dir / "embviz" / "samples_real" / "step_000003.csv"),
        str(log_dir / "embviz" / "samples_fake" / "step_000003.csv"),
    ]
    assert_tables_under(log_dir, 3)
    assert sorted(p.name for p in (log_dir / "embviz").iterdir()) == [
        "missed_real",
        "samples_fake",
        "samples_real",
    ]


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_tables_mlflow_artifacts(namespace, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is not installed")
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    logger = loggers_module(namespace).MLFlowLogger(experiment_name="embviz", tracking_uri=uri)
    destinations = log_tables([logger], tables(), 3, markdown=MARKDOWN, fallback_dir=tmp_path / "x")
    run_id = logger.run_id
    assert destinations == [
        f"mlflow:{run_id}/embviz/samples_real/step_000003.csv",
        f"mlflow:{run_id}/embviz/samples_fake/step_000003.csv",
    ]
    client = MlflowClient(tracking_uri=uri)
    assert [a.path for a in client.list_artifacts(run_id, "embviz")] == [
        "embviz/samples_fake",
        "embviz/samples_real",
    ]
    for name, rows in tables().items():
        local = client.download_artifacts(run_id, f"{name}/step_000003.csv", str(tmp_path))
        assert_table_file(Path(local), rows)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_tables_wandb_offline_table_at_trainer_step(namespace, tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb", reason="wandb is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = loggers_module(namespace).WandbLogger(
        save_dir=str(tmp_path), offline=True, project="embviz"
    )
    try:
        destinations = log_tables([logger], tables(), 4, markdown=MARKDOWN, fallback_dir=None)
        run_dir = Path(logger.experiment.dir).parent
    finally:
        wandb.finish()
    assert destinations == ["wandb:embviz/samples_real@4", "wandb:embviz/samples_fake@4"]

    (run_file,) = glob.glob(str(run_dir / "run-*.wandb"))
    deadline = time.monotonic() + 20.0
    history = read_wandb_history(run_file)
    while not any("embviz/samples_fake/_type" in row for row in history):
        assert time.monotonic() < deadline, f"W&B never wrote the history to {run_file}"
        time.sleep(0.1)
        history = read_wandb_history(run_file)
    for name, rows in tables().items():
        (row,) = [row for row in history if f"{name}/_type" in row]
        assert row["trainer/global_step"] == 4
        assert row[f"{name}/_type"] == "table-file"
        assert row[f"{name}/nrows"] == len(rows["index"])
        table = json.loads((run_dir / "files" / row[f"{name}/path"]).read_text())
        assert table["columns"] == list(rows)
        columns = [list(c) for c in zip(*table["data"])]
        assert columns == [values.tolist() for values in rows.values()]  # inf as Infinity


def test_tables_unknown_logger_no_logger_and_dummy(tmp_path, fresh_warnings):
    logger = DirLogger(log_dir=str(tmp_path / "run"))
    with pytest.warns(UserWarning, match=r"DirLogger.*tables as CSV files"):
        destinations = log_tables([logger], tables(), 5, markdown="x", fallback_dir=tmp_path / "f")
    assert destinations == [
        str(tmp_path / "run" / "embviz" / "samples_real" / "step_000005.csv"),
        str(tmp_path / "run" / "embviz" / "samples_fake" / "step_000005.csv"),
    ]
    assert_tables_under(tmp_path / "run", 5)
    assert not (tmp_path / "f").exists()

    none = log_tables([None], tables(), 6, markdown="x", fallback_dir=tmp_path / "fallback")
    assert none[0] == str(tmp_path / "fallback" / "embviz" / "samples_real" / "step_000006.csv")
    assert_tables_under(tmp_path / "fallback", 6)

    dummy = importlib.import_module("lightning.pytorch.loggers.logger").DummyLogger()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert log_tables([dummy], tables(), 1, markdown="x", fallback_dir=tmp_path / "d") == []
    assert not (tmp_path / "d").exists()


def test_tables_without_logger_use_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (real, _) = log_tables([], tables(), 2, fallback_dir=None)
    assert Path(real) == tmp_path / "embviz" / "samples_real" / "step_000002.csv"
    assert_tables_under(tmp_path, 2)


@pytest.mark.parametrize(
    ("step", "given", "kwargs", "error", "match"),
    [
        (-1, None, {}, ValueError, r"`step` must be >= 0, got -1"),
        (1, {"": {"a": np.zeros(2)}}, {}, ValueError, r"tag must name something"),
        (1, {"t": {}}, {}, ValueError, r"`t` must be a non-empty mapping"),
        (1, {"t": {"a": np.zeros(2), "b": np.zeros(1)}}, {}, ValueError, r"'a' has 2 values"),
        (1, None, {"markdown": 3}, TypeError, r"`markdown` must be a str or None, got int"),
        (1, None, {"markdown_tag": ""}, ValueError, r"tag must name something"),
    ],
)
def test_log_tables_bad_arguments(tmp_path, step, given, kwargs, error, match):
    with pytest.raises(error, match=match):
        log_tables(
            [], given if given is not None else tables(), step, fallback_dir=tmp_path, **kwargs
        )
    assert list(tmp_path.iterdir()) == []


def test_tables_tensorboard_outlier_table_gets_its_own_card(tmp_path):
    # The summary's second table (outlier fakes) was below the fold of one long card.
    from lightning.pytorch.loggers import TensorBoardLogger

    from lightning_embviz.samples import markdown_summary

    rows = tables()
    real = dict(rows["embviz/samples_real"], nearest_fake_distance=np.array([0.2, 1.0, 3.0]))
    markdown = markdown_summary(real, rows["embviz/samples_fake"])
    assert markdown.count("**") == 4  # two bold-titled sections
    logger = TensorBoardLogger(save_dir=str(tmp_path), name="tb")
    destinations = log_tables([logger], tables(), 5, markdown=markdown, fallback_dir=None)
    assert destinations[:2] == [
        "tensorboard:embviz/samples@5",
        "tensorboard:embviz/samples_outlier_fakes@5",
    ]
    ((step, missed),) = read_text_summaries(logger.log_dir, "embviz/samples")
    ((_, outliers),) = read_text_summaries(logger.log_dir, "embviz/samples_outlier_fakes")
    assert step == 5
    assert missed.startswith("**Missed real samples**: 2 of 3") and "Outlier" not in missed
    assert outliers.startswith("**Outlier fakes**: 1 of 2 lie outside every real k-NN ball")
    assert missed + "\n" + outliers == markdown  # nothing lost in the split
