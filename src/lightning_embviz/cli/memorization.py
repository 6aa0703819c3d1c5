"""``embviz report ... --train TRAIN [--train-images FILE]``: the memorization numbers.

:func:`read_train` (every rank, before the slow work) resolves ``--train`` (training
embeddings or a saved :class:`~lightning_embviz.memorization.TrainReference`) and opens
``--train-images`` (with ``--embedder`` and no ``--train``, the training images embedded
with the same embedder as REAL and FAKE, :func:`sample_files`, are the training set);
:func:`memorization_metrics` (rank 0) adds ``authenticity``, ``ct_score`` and
``copy_fraction`` of FAKE against it, REAL being the held-out set, and the per-fake
columns for ``samples_fake.csv``; :func:`closest_train_figures` draws
``closest_train.png`` (only the shown training and fake images are read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from lightning_embviz.cli.files import ImageFile

if TYPE_CHECKING:
    import numpy as np

    from lightning_embviz.engine.memorization_reference import TrainReference

__all__ = [
    "TrainSide",
    "closest_train_figures",
    "embeds_train_images",
    "memorization_metrics",
    "read_train",
    "sample_files",
]


@dataclass(frozen=True)
class TrainSide:
    """``--train`` fitted (or loaded) and ``--train-images`` opened (or None)."""

    reference: TrainReference
    images: Optional[ImageFile]


def embeds_train_images(train: Optional[str], train_images: Optional[str], embedder: Any) -> bool:
    """Whether ``--embedder`` embeds ``--train-images`` (given without ``--train``)."""
    return bool(embedder) and train is None and train_images is not None


def sample_files(options: Any) -> list[tuple[str, str]]:
    """The ``(path, flag)`` sample files ``--embedder`` embeds: REAL, FAKE, maybe the train.

    ``--train-images`` is embedded too (with the same embedder, built once) when ``--train``
    is not given: those embeddings are then the training set (:func:`read_train`).
    """
    files = [(options.real, "REAL"), (options.fake, "FAKE")]
    if embeds_train_images(options.train, options.train_images, options.embedder):
        files.append((options.train_images, "--train-images"))
    return files


def read_train(
    train: Optional[str],
    train_images: Optional[str],
    width: int,
    fake_images: Optional[str],
    *,
    embedded: Optional[tuple[np.ndarray, Optional[ImageFile]]] = None,
    embedder: Optional[str] = None,
) -> Optional[TrainSide]:
    """The training side of a report, or None without ``--train`` (or embedded images).

    Args:
        train: ``--train``: an embeddings file or a saved TrainReference.
        train_images: ``--train-images``: one image per training row.
        width: D of REAL and FAKE (the training set must have it too).
        fake_images: ``--fake-images``, or FAKE itself when ``--embedder`` embedded its
            images (``closest_train.png`` shows the fakes' images).
        embedded: With ``--embedder`` and no ``--train``: the (N_train, D) embeddings of
            ``--train-images`` and the opened image file; they are the training set.
        embedder: ``--embedder``, for the messages.

    Raises:
        ValueError: a bad file, another width than REAL, or ``--train-images`` without
            ``--train`` (and without ``--embedder``) or without ``--fake-images``
            (one-line messages, exit status 2).
    """
    if train is None and embedded is not None:
        from lightning_embviz.engine.memorization_reference import TrainReference

        features, opened = embedded
        try:
            fitted = TrainReference(features)
        except (TypeError, ValueError) as err:
            text = " ".join(str(err).split()).replace("`train`", "the embedded training images")
            raise ValueError(f"--train-images {train_images}: {text}") from None
        return TrainSide(fitted, opened)
    if train is None:
        if train_images is not None:
            raise ValueError(
                "--train-images needs --train (the training embeddings), or --embedder to "
                "embed the training images."
            )
        return None
    from lightning_embviz.engine.memorization_seam import resolve_train

    try:
        reference = resolve_train(train)
    except ValueError as err:
        text = str(err)
        text = (
            "--train " + text[len("`train`: ") :]
            if text.startswith("`train`: ")
            else f"--train {train}: {text}"
        )
        if embedder:
            text += (
                " --train takes embeddings; to embed training images with --embedder, pass "
                "them as --train-images and leave out --train."
            )
        raise ValueError(text) from None
    if reference.width != width:
        raise ValueError(
            f"--train {train}: has {reference.width} features per row but REAL and FAKE have "
            f"{width}; embed the training set with the same embedder."
        )
    images = None
    if train_images is not None:
        if fake_images is None:
            raise ValueError(
                "--train-images needs --fake-images: closest_train.png shows each fake's image "
                "beside its nearest training image."
            )
        images = ImageFile(train_images, reference.num_train, "--train-images", train)
    return TrainSide(reference, images)


def memorization_metrics(
    side: TrainSide, fake: np.ndarray, real: np.ndarray
) -> tuple[dict[str, float], dict[str, np.ndarray], list[str]]:
    """``authenticity``, ``ct_score``, ``copy_fraction`` of FAKE, REAL held out.

    Returns:
        ``(metrics, per_fake, notes)``: the three numbers (NaN when impossible), the
        ``nearest_train_index`` / ``nearest_train_distance`` columns (M,), and warnings.
    """
    from lightning_embviz.engine.memorization_seam import memorization_scalars

    run = memorization_scalars(side.reference, fake, real)
    per_fake = {key: value.numpy() for key, value in run.per_fake.items()}
    return run.scalars, per_fake, [] if run.warning is None else [run.warning]


def closest_train_figures(
    side: TrainSide,
    per_fake: dict[str, np.ndarray],
    fake_images: Optional[ImageFile],
    size: int,
    title: str,
) -> dict[str, Any]:
    """``{"closest_train": Figure}`` with ``--train-images`` and ``--fake-images``, else ``{}``.

    The ``size`` fakes closest to the training set (``--gallery-size``), closest first, each
    beside its nearest training image.
    """
    if side.images is None or fake_images is None:
        return {}
    import torch

    from lightning_embviz.engine.memorization_seam import closest_to_train
    from lightning_embviz.figures.closest_train import closest_train_figure

    picked = closest_to_train({k: torch.as_tensor(v) for k, v in per_fake.items()}, size)
    rows, train_rows = picked.fake_index.numpy(), picked.train_index.numpy()
    figure = closest_train_figure(
        fake_images.take(rows),
        side.images.take(train_rows),
        picked.distance.numpy(),
        fake_indices=rows,
        train_indices=train_rows,
        title=title,
    )
    return {"closest_train": figure}
