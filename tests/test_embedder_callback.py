"""``EmbeddingMonitor(embedder=...)``: real Trainer runs whose ``validation_step`` returns
images only; the callback embeds them. Metrics are read back from ``metrics.csv`` and
compared with the reference ``prdc`` package on the embedder's own outputs for the same
images; the embedder stays out of the module, its checkpoint and its optimizer.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from prdc import compute_prdc
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_embviz import EmbeddingMonitor, embedders
from lightning_embviz.metrics import frechet_distance

try:
    import transformers
except ModuleNotFoundError:
    transformers = None

K = 3
SIDE = 8
N_VAL = 24


class ImageNet(torch.nn.Module):
    """A user's own embedder: any module mapping images (B, C, H, W) to (B, D)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(
            torch.nn.Flatten(), torch.nn.Linear(3 * SIDE * SIDE, 5), torch.nn.Dropout(0.5)
        )
        self.calls: list[tuple[bool, bool, int]] = []  # (training, grad enabled, rows)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if torch.isnan(images).any():
            raise ValueError("NaN pixels")
        self.calls.append((self.training, torch.is_grad_enabled(), len(images)))
        return self.net(images.float())


class ImageGAN(pl.LightningModule):
    """``validation_step`` returns ``real_images``/``fake_images`` in [0, 1], nothing else."""

    def __init__(self, nan_batch: int = -1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = torch.nn.Linear(4, 3 * SIDE * SIDE)
        self.nan_batch = nan_batch
        self.seen: list[dict[str, torch.Tensor]] = []
        self.training_flags: list[bool] = []

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.fake_images(len(batch[0])).mean()

    def fake_images(self, count: int) -> torch.Tensor:
        z = torch.randn(count, 4, device=self.device)
        return torch.sigmoid(self.generator(z)).view(count, 3, SIDE, SIDE)

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        self.training_flags.append(self.training)
        out = {"real_images": batch[0], "fake_images": self.fake_images(len(batch[0]))}
        if not self.trainer.sanity_checking:
            if batch_idx == self.nan_batch:
                out["fake_images"][0, 0, 0, 0] = float("nan")
            self.seen.append({k: v.detach().clone() for k, v in out.items()})
        return out

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    train = TensorDataset(torch.rand(16, 3, SIDE, SIDE, generator=g))
    val = TensorDataset(torch.rand(N_VAL, 3, SIDE, SIDE, generator=g))
    return DataLoader(train, batch_size=8), DataLoader(val, batch_size=8)


def _fit(tmp_path: Path, model: ImageGAN, monitor: EmbeddingMonitor) -> pl.Trainer:
    train, val = _loaders()
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=2,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(tmp_path),
        logger=CSVLogger(tmp_path, name="csv", version=0),
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[monitor],
    )
    trainer.fit(model, train, val)
    return trainer


def _logged(trainer: pl.Trainer) -> dict[str, float]:
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("embviz/coverage")]
    assert len(rows) == 1
    return {k.split("/")[1]: float(v) for k, v in rows[0].items() if k.startswith("embviz/")}


def _embed(embedder: torch.nn.Module, images: list[torch.Tensor]) -> np.ndarray:
    was = embedder.training
    embedder.eval()
    with torch.no_grad():
        out = torch.cat([embedder(x).reshape(len(x), -1) for x in images])
    embedder.train(was)
    return out.double().numpy()


def _check_metrics(logged: dict[str, float], real: np.ndarray, fake: np.ndarray) -> None:
    expected = compute_prdc(real, fake, nearest_k=K)
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, abs=1e-6), key
    assert logged["fd"] == pytest.approx(frechet_distance(real, fake), rel=1e-4, abs=1e-6)


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _check_isolated(trainer: pl.Trainer, model: ImageGAN, embedder: torch.nn.Module) -> None:
    """Not in the module, its optimizer or the checkpoint file; no gradients."""
    assert all(p.grad is None for p in embedder.parameters())
    ids = {id(p) for p in embedder.parameters()}
    assert not any(isinstance(m, type(embedder)) for m in model.modules())
    assert set(model.state_dict()) == {"generator.weight", "generator.bias"}
    for optimizer in trainer.optimizers:
        for group in optimizer.param_groups:
            assert not ids & {id(p) for p in group["params"]}
    path = trainer.checkpoint_callback.best_model_path
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert set(checkpoint["state_dict"]) == {"generator.weight", "generator.bias"}
    (state,) = checkpoint["optimizer_states"]
    assert sum(len(g["params"]) for g in state["param_groups"]) == 2
    # nowhere else either (callback states, loops): no tensor of the embedder's in the file
    weights = [p.detach().cpu() for p in embedder.parameters()]
    for tensor in _tensors(checkpoint):
        assert not any(t.shape == tensor.shape and torch.equal(t, tensor) for t in weights)
    assert model.training_flags and not any(model.training_flags)  # Lightning's eval, kept
    assert model.training  # back in train mode after validation, as Lightning leaves it


def test_own_module_metrics_equal_prdc_on_its_outputs(tmp_path: Path) -> None:
    embedder = ImageNet().train()  # in train mode (dropout on): must be embedded in eval mode
    model = ImageGAN()
    monitor = EmbeddingMonitor(nearest_k=K, views=None, embedder=embedder, embed_batch_size=5)
    trainer = _fit(tmp_path, model, monitor)

    assert embedder.training  # its own flag is put back
    assert all(not training and not grad for training, grad, _ in embedder.calls)
    assert max(rows for _, _, rows in embedder.calls) == 5  # chunks of embed_batch_size
    assert next(embedder.parameters()).requires_grad  # the user's module is not frozen
    real = _embed(embedder, [b["real_images"] for b in model.seen])
    fake = _embed(embedder, [b["fake_images"] for b in model.seen])
    assert real.shape == fake.shape == (N_VAL, 5)
    _check_metrics(_logged(trainer), real, fake)
    _check_isolated(trainer, model, embedder)
    # the galleries come from the same images
    assert list((Path(trainer.logger.log_dir) / "embviz" / "missed_real").glob("step_*.png"))


@pytest.mark.skipif(transformers is None, reason="needs transformers (extra [hf])")
def test_tiny_dinov2_from_a_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=4,
        image_size=16,
    )
    processor = transformers.BitImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    )
    folder = tmp_path / "dinov2"
    transformers.Dinov2Model(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    embedder = embedders.dinov2(folder, local_files_only=True)
    model = ImageGAN()
    monitor = EmbeddingMonitor(nearest_k=K, views=None, gallery_size=0, embedder=embedder)
    trainer = _fit(tmp_path, model, monitor)

    assert not embedder.training
    real = _embed(embedder, [b["real_images"] for b in model.seen])
    fake = _embed(embedder, [b["fake_images"] for b in model.seen])
    assert real.shape == (N_VAL, 16)
    _check_metrics(_logged(trainer), real, fake)
    _check_isolated(trainer, model, embedder)


def test_embedder_failure_after_the_check_drops_rows_and_warns(tmp_path: Path) -> None:
    embedder = ImageNet()
    model = ImageGAN(nan_batch=1)
    monitor = EmbeddingMonitor(nearest_k=K, views=None, gallery_size=0, embedder=embedder)
    with pytest.warns(UserWarning, match="the embedder failed on 'fake_images'"):
        trainer = _fit(tmp_path, model, monitor)
    real = _embed(embedder, [b["real_images"] for b in model.seen])
    fake = _embed(embedder, [b["fake_images"] for i, b in enumerate(model.seen) if i != 1])
    assert len(fake) == N_VAL - 8
    logged = _logged(trainer)
    assert all(math.isfinite(v) for v in logged.values())
    _check_metrics(logged, real, fake)


@pytest.mark.parametrize(
    ("outputs", "match"),
    [
        (lambda x, f: {"real": x, "real_images": x, "fake_images": f}, "as well as the samples"),
        (lambda x, f: {"real_images": x}, r"missing \['fake_images'\]"),
    ],
)
def test_contract_errors_in_the_sanity_check(tmp_path: Path, outputs: Any, match: str) -> None:
    class Broken(ImageGAN):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            return outputs(batch[0], self.fake_images(len(batch[0])))

    monitor = EmbeddingMonitor(nearest_k=K, views=None, embedder=ImageNet())
    with pytest.raises(ValueError, match=match):
        _fit(tmp_path, Broken(), monitor)


def test_audio_embedder_reads_audio_keys() -> None:
    from lightning_embviz.callback.embedding import BatchEmbedder

    class Audio(torch.nn.Module):
        modality = "audio"

        def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
            return torch.stack([waveforms.mean(1), waveforms.std(1)], dim=1)

    runner = BatchEmbedder(Audio(), 2, ("real", "fake", "real_images", "fake_images"))
    clips = torch.randn(3, 50)
    out, problem = runner.embed(
        {"real_audio": clips, "fake_audio": clips[:2]}, "cpu", source="s", where="w"
    )
    assert problem is None and out["real"].shape == (3, 2) and out["fake"].shape == (2, 2)
    torch.testing.assert_close(out["real"][:, 0], clips.mean(1))
    with pytest.raises(ValueError, match=r"missing \['real_audio', 'fake_audio'\]"):
        runner.embed({"real_images": clips}, "cpu", source="s", where="w")


def test_bad_embedder_arguments() -> None:
    with pytest.raises(TypeError, match=r"Expected a torch\.nn\.Module.*wrap a plain function"):
        EmbeddingMonitor(embedder=lambda x: x)

    class Video(torch.nn.Module):
        modality = "video"

    with pytest.raises(ValueError, match="modality='video'"):
        EmbeddingMonitor(embedder=Video())
    with pytest.raises(ValueError, match=r"embed_batch_size=0"):
        EmbeddingMonitor(embedder=ImageNet(), embed_batch_size=0)
