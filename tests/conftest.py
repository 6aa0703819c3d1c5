"""Shared fixtures: a tiny "GAN" LightningModule for real Trainer runs on CPU."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

os.environ.setdefault("MPLBACKEND", "Agg")

WIDTH = 6


def make_data(n: int = 64, width: int = WIDTH, seed: int = 0, classes: int = 3) -> TensorDataset:
    """Real samples (n, width) in `classes` clusters, with their labels."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    centres = torch.randn(classes, width, generator=g) * 3
    x = centres[labels] + torch.randn(n, width, generator=g)
    return TensorDataset(x, labels)


def make_module_class(pl: Any) -> type:
    """A LightningModule class of the given namespace with a tiny linear "generator".

    ``validation_step`` returns ``{"real": x, "fake": generator(x) + shift(epoch)}`` and
    records what it returned (outside the sanity check), so tests can recompute the metrics.
    """

    class TinyGAN(pl.LightningModule):
        def __init__(
            self,
            shifts: tuple[float, ...] = (0.0,),
            outputs: Callable[[Any, Any, Any], Any] | None = None,
            lr: float = 0.05,
        ) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.generator = torch.nn.Linear(WIDTH, WIDTH)
            self.shifts = shifts
            self.custom_outputs = outputs
            self.lr = lr
            self.seen: dict[tuple[int, int], list[dict[str, torch.Tensor]]] = {}

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x = batch[0]
            return (self.generator(x) - x).pow(2).mean()

        def fake(self, x: torch.Tensor) -> torch.Tensor:
            shift = self.shifts[min(self.current_epoch, len(self.shifts) - 1)]
            return self.generator(x) + shift

        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            x, y = batch[0], batch[1]
            self.log("val_marker", x.mean())  # Lightning's own epoch-level metric, for its step
            out = {"real": x, "fake": self.fake(x), "labels": y}
            if self.custom_outputs is not None:
                out = self.custom_outputs(self, out, batch)
            if not self.trainer.sanity_checking and isinstance(out, dict):
                run = self.seen.setdefault((self.current_epoch, dataloader_idx), [])
                run.append({k: v.detach().clone() for k, v in out.items() if torch.is_tensor(v)})
            return out

        def collected(self, key: str, epoch: int, dataloader_idx: int = 0) -> torch.Tensor:
            rows = [b[key] for b in self.seen[(epoch, dataloader_idx)]]
            return torch.cat([r.reshape(len(r), -1) for r in rows]).float()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.lr)

    return TinyGAN


def trainer_kwargs(tmp_path: Any, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 2,
        "limit_train_batches": 2,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "log_every_n_steps": 1,
    }
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def val_loader() -> DataLoader:
    return DataLoader(make_data(64), batch_size=16)


@pytest.fixture
def train_loader() -> DataLoader:
    return DataLoader(make_data(32, seed=1), batch_size=16)
