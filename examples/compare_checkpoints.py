"""Compare the checkpoints of a ``gan_digits.py`` run, in TensorBoard and with ``embviz``.

For every epoch that has a saved checkpoint (best-by-coverage and periodic ones, oldest
first; copies of the same epoch hold the same weights and are validated once):

1. ``trainer.validate(model, ckpt_path=...)`` with ``EmbeddingMonitor``, into the training
   run's TensorBoard folder as a second run, ``RUN/tensorboard/compare``. Everything the
   validation logs (the ``embviz/*`` metrics, the figures, the model's ``gan/modes_hit``) lands
   at the step where the training run logged that checkpoint's validation, so one TensorBoard
   shows the training curves and the comparison on one step axis; figure titles name the
   checkpoint's epoch and step. ``validate`` returns the values, which the table prints.
2. The generator's output on the fixed validation noise is embedded and saved to
   ``RUN/compare/embeddings/fake_epoch<E>.npy``, next to ``real.npy``.
3. ``embviz compare real.npy fake_epoch*.npy`` puts all of them in one frame, side by side.

Run::

    python examples/gan_digits.py --out outputs/gan_digits
    python examples/compare_checkpoints.py --run outputs/gan_digits
    tensorboard --logdir outputs/gan_digits/tensorboard --samples_per_plugin images=1000

TensorBoard keeps only 10 images per tag unless ``--samples_per_plugin`` says otherwise, so
without the flag it would show the figures of only 10 of the steps.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
from gan_digits import (  # the example next to this file
    MODES_KEY,
    TENSORBOARD_HINT,
    DigitsData,
    DigitsGAN,
    quiet_lightning,
    tensorboard_command,
)
from pytorch_lightning.loggers import TensorBoardLogger

from lightning_embviz import EmbeddingMonitor

METRICS = ("precision", "recall", "density", "coverage", "fd")


def find_checkpoints(run: Path) -> list[tuple[int, Path]]:
    """List the run's checkpoints as ``(epoch, path)``, one per epoch, oldest first.

    ``gan_digits.py`` saves all of its checkpoints at the end of a training epoch, so a best
    checkpoint, the periodic one of the same epoch and ``last.ckpt`` hold the same weights:
    each epoch is kept once (a periodic copy by preference, ``last.ckpt`` last).
    """
    found: dict[int, Path] = {}
    paths = sorted(
        (run / "checkpoints").rglob("*.ckpt"),
        key=lambda p: (p.name == "last.ckpt", p.parent.name != "periodic", p),
    )
    for path in paths:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        found.setdefault(int(ckpt["epoch"]), path)
    return sorted(found.items())


def embed_checkpoint(model: DigitsGAN, data: DigitsData) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of the held-out real digits and of the fakes from the fixed noise set."""
    model.eval()
    with torch.no_grad():
        real, _ = model.embed(data.x_val)
        fake, _ = model.embed(model(data.val_noise))
    return real.numpy(), fake.numpy()


def clear_previous_comparison(log_dir: Path) -> None:
    """Remove an earlier comparison's TensorBoard run, so that its points do not mix in.

    Raises:
        SystemExit: ``log_dir`` holds files that TensorBoard's logger did not write.
    """
    if not log_dir.exists():
        return
    foreign = [
        p
        for p in log_dir.rglob("*")
        if p.is_file()
        and not (p.name.startswith("events.out.tfevents.") or p.name == "hparams.yaml")
    ]
    if foreign:
        raise SystemExit(
            f"{log_dir} holds files that are not TensorBoard logs (such as {foreign[0]}); "
            "move them away or remove the folder, then run the comparison again."
        )
    shutil.rmtree(log_dir)
    print(f"replacing the earlier comparison in {log_dir}")


def format_table(rows: list[dict[str, Any]]) -> str:
    """Format one row per checkpoint (epoch, metrics, modes hit, file) as a text table."""
    lines = [" ".join(f"{n:>9}" for n in ["epoch", *METRICS, "modes"]) + "  checkpoint"]
    for row in rows:
        cells = [f"{row['epoch']:>9d}"]
        cells += [f"{row.get('embviz/' + n, float('nan')):>9.3f}" for n in METRICS]
        cells.append(f"{row.get(MODES_KEY, float('nan')):>9.0f}")
        lines.append(" ".join(cells) + f"  {row['checkpoint']}")
    return "\n".join(lines)


# The comparison as a TensorBoard text card: exact values, which no smoothing can shift.
TABLE_TAG = "compare/checkpoints"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The same table in markdown, for TensorBoard's text plugin (one row per checkpoint)."""
    names = ["epoch", *METRICS, "modes hit", "checkpoint"]
    lines = ["| " + " | ".join(names) + " |", "|" + "---:|" * (len(names) - 1) + "---|"]
    for row in rows:
        cells = [str(row["epoch"])]
        cells += [f"{row.get('embviz/' + n, float('nan')):.3f}" for n in METRICS]
        cells.append(f"{row.get(MODES_KEY, float('nan')):.0f}")
        cells.append(f"`{Path(row['checkpoint']).name}`")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run",
        type=Path,
        default=Path("outputs/gan_digits"),
        help="output folder of gan_digits.py (holds checkpoints/ and tensorboard/)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="embeddings and embviz output; default: RUN/compare"
    )
    parser.add_argument(
        "--views", default="pca,tsne", help="EmbeddingMonitor views, comma-separated"
    )
    parser.add_argument(
        "--no-embviz", action="store_true", help="do not run `embviz compare` at the end"
    )
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """Validate every epoch's checkpoint, save its embeddings and compare them with ``embviz``.

    Returns:
        One row per checkpoint: epoch, path, and the values ``validate`` returned
        (``embviz/*`` and ``gan/modes_hit``).
    """
    args = parse_args(argv)
    out: Path = args.out or args.run / "compare"
    checkpoints = find_checkpoints(args.run)
    if not checkpoints:
        raise SystemExit(f"no checkpoints under {args.run / 'checkpoints'}; run gan_digits.py")
    quiet_lightning()
    # Training's ModelCheckpoint callbacks are not needed to evaluate a checkpoint.
    warnings.filterwarnings("ignore", ".*callbacks used to create the checkpoint.*")
    torch.set_num_threads(1)

    hparams = torch.load(checkpoints[0][1], map_location="cpu", weights_only=True)[
        "hyper_parameters"
    ]
    model = DigitsGAN(**hparams)
    data = DigitsData(
        latent_dim=hparams["latent_dim"], n_val=hparams["n_val"], seed=hparams["seed"]
    )
    views = tuple(v for v in args.views.split(",") if v)
    # A second run next to the training run ("train") in the same TensorBoard folder. One
    # Trainer: every `validate` adds the checkpoint's point, at the step where the training
    # run logged the same epoch's validation.
    log_root = args.run / "tensorboard"
    clear_previous_comparison(log_root / "compare")
    # No `hp_metric` placeholder card next to the embviz ones (as in gan_digits.py).
    logger = TensorBoardLogger(
        save_dir=str(args.run), name="tensorboard", version="compare", default_hp_metric=False
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        logger=logger,
        callbacks=[EmbeddingMonitor(nearest_k=5, views=views)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    emb_dir = out / "embeddings"
    emb_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    fake_files: list[Path] = []
    for epoch, path in checkpoints:
        print(f"validating epoch {epoch}: {path}")
        (results,) = trainer.validate(model, datamodule=data, ckpt_path=str(path), verbose=False)
        # `validate` restored the checkpoint's weights into `model`.
        real, fake = embed_checkpoint(model, data)
        if not fake_files:
            np.save(emb_dir / "real.npy", real)
        fake_file = emb_dir / f"fake_epoch{epoch:03d}.npy"
        np.save(fake_file, fake)
        fake_files.append(fake_file)
        rows.append({"epoch": epoch, "checkpoint": str(path), **results})

    print("\ncheckpoints (held-out real digits vs fakes from the fixed noise set):")
    print(format_table(rows))
    # Also in TensorBoard (TEXT tab), at step 0: the values themselves, unsmoothed.
    logger.experiment.add_text(TABLE_TAG, markdown_table(rows), global_step=0)
    logger.experiment.flush()

    command = [
        "embviz",
        "compare",
        str(emb_dir / "real.npy"),
        *map(str, fake_files),
        "--names",
        ",".join(f"epoch {epoch}" for epoch, _ in checkpoints),
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
    print(
        "\nthe training run (train) and this comparison (compare), on one step axis:\n"
        f"    {tensorboard_command(log_root)}\n"
        f"{TENSORBOARD_HINT}; the table is in TEXT, under {TABLE_TAG}/text_summary"
    )
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
