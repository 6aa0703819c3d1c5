"""How long EmbeddingMonitor blocks the training loop at the end of a validation run.

A real Trainer on CPU validates on N real + N fake embeddings of width D (precomputed, so the
validation step itself costs nothing) and trains on small batches in between. Measured, per
validation run:

- ``blocked_epoch_end``: time inside the callback's ``on_validation_epoch_end`` (collect,
  metrics, logging the scalars, handing the figures to the worker), on the training thread;
- ``blocked_figures``: time the training thread spends later logging the finished figures;
- ``flush_at_fit_end``: waiting for the worker in ``on_fit_end`` (training is over then);
- ``all_done``: from the start of the epoch-end work until the figures are built (worker).

Run:  python benchmarks/bench_callback.py [--n 5000] [--width 512] [--views pca,tsne]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from lightning_embviz import EmbeddingMonitor, compute_prdc_details, frechet_distance


class EmbeddingPairs(Dataset):
    def __init__(self, n: int, width: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.real = torch.randn(n, width, generator=g)
        self.fake = torch.randn(n, width, generator=g) * 1.1 + 0.1

    def __len__(self) -> int:
        return len(self.real)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.real[i], self.fake[i]


class Model(pl.LightningModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, 64)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        return {"real": batch[0], "fake": batch[1]}

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class TimedMonitor(EmbeddingMonitor):
    """Records wall time spent in the hooks on the training thread and worker completion."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs: list[dict[str, float]] = []

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        start = time.perf_counter()
        n_pending = len(self._pending)
        super().on_validation_epoch_end(trainer, pl_module)
        end = time.perf_counter()
        run = {"blocked_epoch_end": end - start, "blocked_figures": 0.0, "all_done": end - start}
        self.runs.append(run)
        for pending in self._pending[n_pending:]:
            pending.future.add_done_callback(
                lambda _f, run=run, start=start: run.__setitem__(
                    "all_done", time.perf_counter() - start
                )
            )

    def _poll(self, trainer: Any, wait: bool) -> None:
        if not self._pending:
            return
        start = time.perf_counter()
        steps = [p.step for p in self._pending]
        super()._poll(trainer, wait)
        spent = time.perf_counter() - start
        if self.runs and len(self._pending) < len(steps):
            # waiting at the end of fit is not training time: report it apart
            key = "flush_at_fit_end" if wait else "blocked_figures"
            self.runs[-1][key] = self.runs[-1].get(key, 0.0) + spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="real and fake embeddings each")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--views", default="pca,tsne")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-batches", type=int, default=200)
    parser.add_argument("--root", default=os.path.join("benchmarks", "_out", "callback"))
    args = parser.parse_args()

    val = DataLoader(EmbeddingPairs(args.n, args.width), batch_size=500)
    train = DataLoader(TensorDataset(torch.randn(args.train_batches * 32, 64)), batch_size=32)
    views = tuple(v for v in args.views.split(",") if v)
    # Warm-up: the first large distance computation of a process pays one-off allocation
    # costs that have nothing to do with the callback.
    data = val.dataset
    compute_prdc_details(data.real, data.fake, 5)
    frechet_distance(data.real, data.fake)
    results = {}
    for background in (True, False):
        monitor = TimedMonitor(views=views, background=background)
        trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=args.epochs,
            num_sanity_val_steps=0,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=args.root,
            callbacks=[monitor],
        )
        start = time.perf_counter()
        trainer.fit(Model(args.width), train, val)
        total = time.perf_counter() - start
        results["background" if background else "inline"] = {"fit_s": total, "runs": monitor.runs}

    print(
        json.dumps(
            {
                "n": args.n,
                "width": args.width,
                "views": views,
                "threads": torch.get_num_threads(),
                **results,
            },
            indent=1,
        )
    )
    for mode, res in results.items():
        for i, run in enumerate(res["runs"]):
            blocked = run["blocked_epoch_end"] + run["blocked_figures"]
            print(
                f"{mode:10s} run {i}: training blocked {blocked:6.2f} s "
                f"(epoch end {run['blocked_epoch_end']:.2f} s + logging figures "
                f"{run['blocked_figures']:.2f} s); all epoch-end work done after "
                f"{run['all_done']:.2f} s; waited at fit end {run.get('flush_at_fit_end', 0):.2f} s"
            )


if __name__ == "__main__":
    main()
