"""The tiny models and data every Trainer test shares (imported by tests and conftest)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import TensorDataset

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
        "default_root_dir": str(tmp_path),
        "log_every_n_steps": 1,
    }
    kwargs.update(overrides)
    return kwargs


def make_manual_gan_class(pl: Any) -> type:
    """A GAN with manual optimization and two optimizers (two optimizer steps per batch).

    ``global_step`` then counts 2 per batch while Lightning logs validation metrics at its count
    of batches, which is what checkpoint comparisons must line up with.
    """

    class ManualGAN(pl.LightningModule):
        def __init__(self, shift: float = 0.5) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.automatic_optimization = False
            self.generator = torch.nn.Linear(WIDTH, WIDTH)
            self.critic = torch.nn.Linear(WIDTH, 1)
            self.shift = shift

        def training_step(self, batch: Any, batch_idx: int) -> None:
            opt_g, opt_c = self.optimizers()
            x = batch[0]
            loss_c = self.critic(self.generator(x).detach()).mean() - self.critic(x).mean()
            opt_c.zero_grad()
            self.manual_backward(loss_c)
            opt_c.step()
            loss_g = (self.generator(x) - x).pow(2).mean()
            opt_g.zero_grad()
            self.manual_backward(loss_g)
            opt_g.step()

        def fake(self, x: torch.Tensor) -> torch.Tensor:
            return self.generator(x) + self.shift

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            x = batch[0]
            self.log("val_marker", x.mean())
            return {"real": x, "fake": self.fake(x)}

        def configure_optimizers(self) -> Any:
            return (
                torch.optim.SGD(self.generator.parameters(), lr=0.05),
                torch.optim.SGD(self.critic.parameters(), lr=0.05),
            )

    return ManualGAN


# A module-level class: `ddp_spawn` pickles the module into its worker processes.


def indexed_dataset(n: int, seed: int) -> TensorDataset:
    """Clustered samples with labels and each sample's dataset index."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    x = torch.randn(3, WIDTH, generator=g)[labels] * 3 + torch.randn(n, WIDTH, generator=g)
    return TensorDataset(x, labels, torch.arange(n))


class DDPGAN(pl.LightningModule):
    """Deterministic "generator"; per-dataloader modes simulate awkward ranks."""

    def __init__(self, modes: dict[int, str] | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.generator = torch.nn.Linear(WIDTH, WIDTH)
        self.modes = modes or {}

    def fake(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x) + 0.5

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return (self.generator(batch[0]) - batch[0]).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        x, y, index = batch
        real, fake = x, self.fake(x)
        mode = self.modes.get(dataloader_idx)
        if mode == "nan" and self.global_rank == 1:
            real = torch.full_like(real, float("nan"))
        if mode == "empty" and self.global_rank == 1:
            real, fake, y = real[:0], fake[:0], y[:0]
        out = {"real": real, "fake": fake, "labels": y}
        if mode == "index":
            out["index"] = index
        if mode == "images":  # each row as a 2x3 picture, for the galleries
            out["real_images"] = real.reshape(-1, 1, 2, 3)
            out["fake_images"] = fake.reshape(-1, 1, 2, 3)
        return out

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)
