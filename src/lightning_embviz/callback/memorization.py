"""The callback's memorization side (``EmbeddingMonitor(train=...)``): numbers and gallery.

- :func:`check_train` / :func:`check_train_images`: the ``train=`` and ``train_images=``
  arguments, resolved and checked at construction (one clear error, before training).
- :class:`MemorizationPass`: adds ``authenticity``, ``ct_score`` and ``copy_fraction`` to
  a run's :class:`~lightning_embviz.callback.evaluation.Evaluation` (the validation reals
  are the held-out set), computed on the same rows as the other metrics (after the sample
  cap and the finiteness check), against the training side fitted once at construction.
  Under DDP every rank searches its share of the training set
  (:mod:`lightning_embviz.engine.memorization_distributed`) and gets the single-process
  values. Bad data gives NaN and a warning, never an exception.
- :func:`closest_train_gallery`: the ``closest_train`` figure: rank 0 picks the fakes
  closest to the training set, every rank contributes the thumbnails it holds for them (a
  collective: every rank calls it), and only the shown training rows are read.

No Lightning here.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, Optional

import numpy as np
import torch
from torch import Tensor

from lightning_embviz.callback.buffer import collective_device, gather_selected_images
from lightning_embviz.engine.memorization import MEMORIZATION_KEYS
from lightning_embviz.engine.memorization_reference import TrainReference
from lightning_embviz.engine.memorization_seam import (
    PER_FAKE_KEYS,
    closest_to_train,
    memorization_scalars,
    resolve_train,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lightning_embviz.callback.evaluation import Evaluation

__all__ = [
    "MEMORIZATION_KEYS",
    "PER_FAKE_KEYS",
    "MemorizationPass",
    "check_train",
    "check_train_images",
    "closest_train_gallery",
    "memorization_pass",
]


def _bad(arg: str, value: Any, expected: str, error: type[Exception]) -> NoReturn:
    shown = value if isinstance(value, (str, int, float, type(None))) else type(value).__name__
    raise error(f"`EmbeddingMonitor({arg}={shown!r})` is not valid. Expected {expected}.")


def check_train(train: Any) -> Optional[TrainReference]:
    """``train=`` resolved to a fitted :class:`TrainReference` (None stays None).

    Raises:
        TypeError: ``train`` of another type (a list, a number).
        ValueError: a missing or unreadable file, a saved RealReference, or embeddings that
            are not (N, D) with N >= 2 and finite (the message names the argument).
    """
    if train is None:
        return None
    expected = (
        "an (N, D) array or tensor of training embeddings, the path of an embeddings file "
        "(.npy, .npz, .pt, .csv) or of a saved TrainReference, or a TrainReference"
    )
    try:
        return resolve_train(train)
    except TypeError:
        _bad("train", train, expected, TypeError)
    except ValueError as err:
        message = f"`EmbeddingMonitor(train=...)` is not valid: {err}"
        raise ValueError(message) from None


def check_train_images(images: Any, train: Optional[TrainReference]) -> Any:
    """``train_images=`` checked against the training set: rows, shape, indexability.

    An array or tensor must be (N, C, H, W) with C in {1, 3} or (N, H, W), one image per
    training row; any other object must support ``len()`` and ``[i]`` (a dataset: only the
    shown rows are read, each item an image or a tuple whose first element is one).

    Raises:
        ValueError: ``train_images`` without ``train``, or another number of rows than the
            training set, or an array of another shape.
        TypeError: an object that cannot be indexed.
    """
    if images is None:
        return None
    if train is None:
        raise ValueError(
            "`EmbeddingMonitor(train_images=...)` needs `train=` (the training embeddings, "
            "one row per training image)."
        )
    if isinstance(images, (np.ndarray, Tensor)):
        shape = tuple(images.shape)
        if not (len(shape) == 3 or (len(shape) == 4 and shape[1] in (1, 3))):
            _bad(
                "train_images",
                images,
                f"an (N, C, H, W) array with C in (1, 3) or (N, H, W), got shape {shape}",
                ValueError,
            )
    elif not (hasattr(images, "__getitem__") and hasattr(images, "__len__")):
        _bad(
            "train_images",
            images,
            "an (N, C, H, W) or (N, H, W) array or tensor, or an indexable dataset with len()",
            TypeError,
        )
    if len(images) != train.num_train:
        raise ValueError(
            f"`EmbeddingMonitor(train_images=...)` has {len(images)} images but `train` has "
            f"{train.num_train} rows; pass one image per training row, in the same order."
        )
    return images


def _read_images(images: Any, rows: Tensor) -> Tensor:
    """The training images at ``rows`` as one (G, C, H, W) or (G, H, W) float tensor."""
    index = rows.tolist()
    if isinstance(images, np.ndarray):
        return torch.as_tensor(np.asarray(images[np.asarray(index, dtype=np.int64)]))
    if isinstance(images, Tensor):
        return images[rows.to(images.device)].detach().cpu()
    items = []
    for i in index:
        item = images[i]
        if isinstance(item, (tuple, list)):
            item = item[0]
        items.append(torch.as_tensor(np.asarray(item)))
    if not items:
        return torch.zeros((0, 1, 1))
    return torch.stack(items)


class MemorizationPass:
    """One run's memorization numbers, added to its evaluation.

    Args:
        reference: The fitted training side (:func:`check_train`).
        alpha: Quantile level of ``copy_fraction``'s threshold.
    """

    keys = MEMORIZATION_KEYS

    def __init__(self, reference: TrainReference, alpha: float) -> None:
        self.reference = reference
        self.alpha = alpha

    def add(self, result: Evaluation, where: str = "", distributed: bool = False) -> None:
        """Add the three scalars (NaN when impossible) and the per-fake columns to ``result``.

        The fakes and the held-out reals are ``result.fake`` / ``result.real`` (the rows of
        the other metrics). A reason for NaN goes to ``result.notes`` (warned once). With
        ``distributed``, every rank calls this with its (identical, gathered) evaluation
        and searches its share of the training set (collectives).
        """
        if result.fake is None or len(result.fake) == 0:
            result.metrics.update(dict.fromkeys(self.keys, float("nan")))
            return
        heldout = None if result.real is None or len(result.real) == 0 else result.real.features
        run = memorization_scalars(
            self.reference,
            result.fake.features,
            heldout,
            alpha=self.alpha,
            distributed=distributed,
        )
        result.metrics.update(run.scalars)
        result.memorization = run.per_fake
        if run.warning is not None:
            result.notes.append(("memorization", f"EmbeddingMonitor{where}: {run.warning}"))


def closest_train_gallery(
    result: Optional[Evaluation],
    local: tuple[Any, ...],
    *,
    count: int,
    train_images: Any,
    distributed: bool,
) -> tuple[Optional[Callable[[str], Figure]], Optional[str]]:
    """The ``closest_train`` figure of a run (a function of the title), built on rank 0.

    Every rank must call this (under DDP the shown fakes' keys are broadcast and their
    thumbnails gathered). Only the ``count`` shown training rows of ``train_images`` are
    read, on rank 0.

    Args:
        result: Rank 0's evaluation, with ``memorization`` set (None on other ranks).
        local: This rank's ``(real_keys, real_thumbnails, fake_keys, fake_thumbnails)``.
        count: The most pairs to show.
        train_images: The checked ``train_images`` (:func:`check_train_images`).
        distributed: Whether the ranks take part (collectives).

    Returns:
        ``(draw or None, problem or None)``: ``draw(title)`` returns the Figure (rank 0 with
        thumbnails only); a failure never raises but comes back as the message.
    """
    wanted = torch.full((count,), -1, dtype=torch.int64)
    picked = None
    problem = None
    per_fake = None if result is None else getattr(result, "memorization", None)
    if result is not None and result.fake is not None and per_fake is not None:
        try:
            picked = closest_to_train(per_fake, count)
            keys = result.fake.keys.cpu()[picked.fake_index]
            wanted[: len(keys)] = keys
        except Exception as err:
            picked = None
            wanted.fill_(-1)
            problem = _failed("selecting the closest_train samples", err)
    if distributed:
        shared = wanted.to(collective_device(torch.device("cpu")))
        torch.distributed.broadcast(shared, src=0)
        wanted = shared.cpu()
    _, _, fake_keys, fake_thumbs = local
    try:
        thumbs = gather_selected_images(fake_thumbs, fake_keys, wanted[wanted >= 0])
    except ValueError as err:  # thumbnails of different sizes on the ranks: every rank
        thumbs = None
        problem = problem or f"EmbeddingMonitor: {err} The closest_train gallery is missing."
    if picked is None or thumbs is None or result is None or result.fake is None:
        return None, problem
    try:
        train = _read_images(train_images, picked.train_index)
    except Exception as err:
        return None, _failed("reading the training images of closest_train", err)
    from lightning_embviz.callback.sampler import shown_index
    from lightning_embviz.figures.closest_train import closest_train_figure

    fake_index = shown_index(result.fake.keys.cpu())[picked.fake_index]
    draw = functools.partial(
        _draw,
        closest_train_figure,
        thumbs.values(),
        train,
        picked.distance,
        fake_index,
        picked.train_index,
    )
    return draw, problem


def _draw(
    figure: Callable[..., Figure],
    fakes: Tensor,
    train: Tensor,
    distance: Tensor,
    fake_index: Tensor,
    train_index: Tensor,
    title: str,
) -> Figure:
    return figure(
        fakes,
        train,
        distance,
        fake_indices=fake_index,
        train_indices=train_index,
        title=title,
    )


def _failed(what: str, err: BaseException) -> str:
    detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return (
        f"EmbeddingMonitor: {what} failed; the metrics were logged, the closest_train "
        f"gallery of this run is missing.\n{detail}"
    )


def memorization_pass(config: Any) -> Optional[MemorizationPass]:
    """The run's memorization pass for a checked configuration, or None without ``train``."""
    train = getattr(config, "train", None)
    if train is None:
        return None
    return MemorizationPass(train, config.memorization_alpha)
