"""Compare the checkpoints of a ``gan_digits.py`` run, in TensorBoard and with ``embviz``.

For every saved checkpoint (best-by-coverage and periodic ones, oldest first):

1. ``trainer.validate(model, ckpt_path=...)`` with ``EmbeddingMonitor``: the metrics and
   figures are logged at the checkpoint's own step, into one TensorBoard run
   (``RUN/compare/tensorboard``), so TensorBoard's step slider walks through the
   checkpoints and the curves have one point per checkpoint.
2. The generator's output on the fixed validation noise is embedded and saved to
   ``RUN/compare/embeddings/fake_step<step>.npy``, next to ``real.npy``.
3. ``embviz compare real.npy fake_step*.npy`` puts all of them in one frame, side by side.

Run::

    python examples/gan_digits.py --out outputs/gan_digits
    python examples/compare_checkpoints.py --run outputs/gan_digits
    tensorboard --logdir outputs/gan_digits/compare/tensorboard
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from gan_digits import MODES_KEY, DigitsData, DigitsGAN  # the example next to this file
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_embviz import EmbeddingMonitor


def find_checkpoints(run: Path) -> list[tuple[int, int, Path]]:
    """List the run's checkpoints as ``(global_step, epoch, path)``, oldest first.

    Checkpoints of the same step (the best one is often also a periodic one, and
    ``last.ckpt`` repeats the last) are kept once.
    """
    found: dict[int, tuple[int, int, Path]] = {}
    paths = sorted((run / "checkpoints").rglob("*.ckpt"), key=lambda p: (p.name == "last.ckpt", p))
    for path in paths:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        step, epoch = int(ckpt["global_step"]), int(ckpt["epoch"])
        found.setdefault(step, (step, epoch, path))
    return [found[step] for step in sorted(found)]


def embed_checkpoint(model: DigitsGAN, data: DigitsData) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of the held-out real digits and of the fakes from the fixed noise set."""
    model.eval()
    with torch.no_grad():
        real, _ = model.embed(data.x_val)
        fake, _ = model.embed(model(data.val_noise))
    return real.numpy(), fake.numpy()


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run",
        type=Path,
        default=Path("outputs/gan_digits"),
        help="output folder of gan_digits.py (holds checkpoints/)",
    )
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/compare")
    parser.add_argument(
        "--views", default="pca,tsne", help="EmbeddingMonitor views, comma-separated"
    )
    parser.add_argument(
        "--no-embviz", action="store_true", help="do not run `embviz compare` at the end"
    )
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Validate every checkpoint, save its embeddings and compare them with ``embviz``.

    Returns:
        One row per checkpoint: step, epoch, path and the ``embviz/*`` metrics.
    """
    args = parse_args(argv)
    out: Path = args.out or args.run / "compare"
    checkpoints = find_checkpoints(args.run)
    if not checkpoints:
        raise SystemExit(f"no checkpoints under {args.run / 'checkpoints'}; run gan_digits.py")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")  # torch vs Lightning
    # Training's ModelCheckpoint callbacks are not needed to evaluate a checkpoint.
    warnings.filterwarnings("ignore", ".*callbacks used to create the checkpoint.*")
    torch.set_num_threads(1)

    hparams = torch.load(checkpoints[0][2], map_location="cpu", weights_only=True)[
        "hyper_parameters"
    ]
    model = DigitsGAN(**hparams)
    data = DigitsData(
        latent_dim=hparams["latent_dim"], n_val=hparams["n_val"], seed=hparams["seed"]
    )
    views = tuple(v for v in args.views.split(",") if v)
    # One Trainer, one logger: every `validate` call adds a step to the same run. The
    # callback logs at the checkpoint's step and keeps its projection frame across calls.
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=TensorBoardLogger(save_dir=str(out), name="tensorboard", version=0),
        callbacks=[EmbeddingMonitor(nearest_k=5, views=views)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    emb_dir = out / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    fake_files: list[Path] = []
    for step, epoch, path in checkpoints:
        trainer.validate(model, datamodule=data, ckpt_path=str(path), verbose=False)
        # The callback's scalars go to the logger at the checkpoint's step, not to the
        # dict `validate` returns; `callback_metrics` holds them.
        metrics = trainer.callback_metrics
        if MODES_KEY in metrics:
            trainer.logger.log_metrics({MODES_KEY: float(metrics[MODES_KEY])}, step=step)
        real, fake = embed_checkpoint(model, data)
        if not fake_files:
            np.save(emb_dir / "real.npy", real)
        fake_file = emb_dir / f"fake_step{step:06d}.npy"
        np.save(fake_file, fake)
        fake_files.append(fake_file)
        row: dict[str, Any] = {"step": step, "epoch": epoch, "checkpoint": str(path)}
        row.update({k: float(v) for k, v in metrics.items() if k.startswith(("embviz/", "gan/"))})
        rows.append(row)

    names = ["precision", "recall", "density", "coverage", "fd"]
    print("\ncheckpoints (held-out real digits vs fakes from the fixed noise set):")
    header = " ".join(f"{n:>9}" for n in [*names, "modes"])
    print(f"{'step':>7} {'epoch':>6} {header}  checkpoint")
    for row in rows:
        values = [row.get("embviz/" + n, float("nan")) for n in names]
        values.append(row.get(MODES_KEY, float("nan")))
        cells = " ".join(f"{v:>9.3f}" for v in values[:-1]) + f" {values[-1]:>9.0f}"
        print(f"{row['step']:>7d} {row['epoch']:>6d} {cells}  {Path(row['checkpoint']).name}")

    command = [
        "embviz",
        "compare",
        str(emb_dir / "real.npy"),
        *map(str, fake_files),
        "--names",
        ",".join(f"epoch {epoch}" for _, epoch, _ in checkpoints),
        "--projection",
        args.views,
        "-o",
        str(out / "embviz"),
    ]
    print("\nside by side in one frame:\n    " + shlex.join(command))
    if not args.no_embviz:
        from lightning_embviz.cli import main as embviz_main

        status = embviz_main(command[1:])
        if status != 0:
            raise SystemExit(f"`embviz compare` failed with exit status {status}")
    print(f"\nopen the comparison with:\n    tensorboard --logdir {out / 'tensorboard'}")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
