"""The engine's argument checks, one place per rule.

Every public face (``compute_prdc``, :class:`~lightning_embviz.RealReference`, the
distributed functions, the suite metrics, the intervals) checks its arguments here, so that a
given mistake gets the same message whichever face it comes through.

- :func:`check_nearest_k` / :func:`check_nearest_ks`: one k, or one k or a sequence of them.
- :func:`check_size`: a set has more rows than k.
- :func:`check_chunk`: a block size, or None.
- :func:`check_pair`: two sets of embeddings of the same width and device, and a k.
- :func:`width_pair` / :func:`same_width`: two sets of the same width (the suite metrics).
- :func:`need_rows`: a set has enough rows for a statistic.
- :func:`engine_device`: where the exact re-checks run (float64: not on MPS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from lightning_embviz._arrays import as_features, check_int

__all__ = [
    "check_chunk",
    "check_nearest_k",
    "check_nearest_ks",
    "check_pair",
    "check_size",
    "engine_device",
    "need_rows",
    "same_width",
    "width_pair",
]


def check_nearest_k(nearest_k: Any) -> int:
    """One k of the k-NN balls, an int >= 1 (``TypeError``/``ValueError`` otherwise)."""
    return check_int(nearest_k, "nearest_k", minimum=1)


def check_nearest_ks(nearest_k: Any) -> tuple[int, ...]:
    """``nearest_k`` as a tuple of distinct ints >= 1, in the order given.

    Args:
        nearest_k: an int, or a sequence (list, tuple, range, 1-D array) of ints.

    Returns:
        The distinct k, first occurrence first.

    Raises:
        TypeError: if it is neither an int nor a sequence of ints.
        ValueError: on an empty sequence or a k < 1.
    """
    if isinstance(nearest_k, (Sequence, range)) and not isinstance(nearest_k, (str, bytes)):
        if len(nearest_k) == 0:
            raise ValueError("`nearest_k` is an empty sequence; give at least one k, e.g. 5.")
        ks = [check_nearest_k(k) for k in nearest_k]
    elif isinstance(nearest_k, np.ndarray) and nearest_k.ndim == 1:
        return check_nearest_ks(nearest_k.tolist())
    else:
        if not isinstance(nearest_k, (int, np.integer)) or isinstance(nearest_k, bool):
            raise TypeError(
                f"`nearest_k` must be an int >= 1 or a sequence of them, got {nearest_k!r}."
            )
        ks = [check_nearest_k(nearest_k)]
    return tuple(dict.fromkeys(ks))


def check_size(k: int, rows: int, name: str) -> None:
    """``ValueError`` unless the set ``name`` of ``rows`` rows has more than ``k`` of them."""
    if k >= rows:
        raise ValueError(
            f"`nearest_k={k}` needs more than {k} samples in `{name}`, got {rows}. "
            f"Use more samples or a smaller `nearest_k` (at most {rows - 1})."
        )


def need_rows(t: Tensor, name: str, rows: int, why: str) -> None:
    """``ValueError`` unless ``t`` has at least ``rows`` rows (``why`` says what for)."""
    if t.shape[0] < rows:
        raise ValueError(f"`{name}` needs at least {rows} rows {why}, got {t.shape[0]}.")


def check_chunk(chunk_size: Any) -> int | None:
    """Rows per block: an int >= 1, or None (the engine picks one)."""
    if chunk_size is None:
        return None
    return check_int(chunk_size, "chunk_size", minimum=1, hint="Or pass None to pick one.")


def engine_device(t: Tensor) -> Tensor:
    """``t``, moved to the CPU when it lives on MPS (no float64 there for the re-checks)."""
    return t.cpu() if t.device.type == "mps" else t


def check_pair(real: Any, fake: Any, nearest_k: Any) -> tuple[Tensor, Tensor, int]:
    """The checks of ``compute_prdc(real_features, fake_features, nearest_k)``.

    Args:
        real: (N, D) array or tensor.
        fake: (M, D) array or tensor.
        nearest_k: k of the k-NN balls, ``1 <= k < min(N, M)``.

    Returns:
        ``(real (N, D), fake (M, D), k)``, on one device (the CPU for MPS input).

    Raises:
        TypeError: see :func:`~lightning_embviz._arrays.as_features`, or a k not an int.
        ValueError: on different widths or devices, or a set of at most k rows.
    """
    k = check_nearest_k(nearest_k)
    r = as_features(real, "real_features")
    f = as_features(fake, "fake_features")
    if r.device.type == "mps":  # no float64 on MPS: the exact re-checks run on the CPU
        r, f = r.cpu(), f.cpu()
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"`real_features` and `fake_features` must have the same width D, got "
            f"{r.shape[1]} and {f.shape[1]} (shapes {tuple(r.shape)} and {tuple(f.shape)})."
        )
    if r.device != f.device:
        raise ValueError(
            f"`real_features` and `fake_features` must be on the same device, got {r.device} "
            f"and {f.device}."
        )
    for name, t in (("real_features", r), ("fake_features", f)):
        check_size(k, t.shape[0], name)
    return r, f, k


def same_width(r: Tensor, f: Tensor, names: tuple[str, str]) -> None:
    """``ValueError`` unless the two sets ``names`` have the same width D."""
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same width D, got {r.shape[1]} and "
            f"{f.shape[1]}."
        )


def width_pair(
    real: Any, fake: Any, rows: int, why: str, names: tuple[str, str] = ("real", "fake")
) -> tuple[Tensor, Tensor]:
    """Two checked sets of the same width and enough rows, the second on the first's device.

    Args:
        real: (N, D) array or tensor.
        fake: (M, D) array or tensor.
        rows: the fewest rows each set needs (:func:`need_rows`).
        why: what they are needed for, e.g. ``"for a covariance"``.
        names: the arguments' names, for the messages.

    Returns:
        ``(real (N, D), fake (M, D))`` (on the CPU for MPS input).

    Raises:
        TypeError: see :func:`~lightning_embviz._arrays.as_features`.
        ValueError: on a bad set, different widths or too few rows.
    """
    r = engine_device(as_features(real, names[0]))
    f = engine_device(as_features(fake, names[1]))
    same_width(r, f, names)
    f = f.to(r.device)
    for name, t in zip(names, (r, f)):
        need_rows(t, name, rows, why)
    return r, f
