"""The one input boundary: array conversion, integer checks and the metric key names (re-exported).

Every public entry point that takes embeddings or integer options goes through the helpers
here, so that a given mistake gets the same message everywhere.

- :data:`ArrayLike`: what the public functions accept for embeddings.
- :func:`as_tensor` / :func:`as_features`: any accepted array to a torch tensor (the second
  also checks the (N, D) shape and finiteness).
- :func:`as_numpy`: a tensor or array to NumPy for the plotting side.
- :func:`check_int`: an integer option, with bool rejected.
- :data:`PRDC_KEYS`, :data:`METRIC_KEYS`: the metric names, re-exported from
  :mod:`lightning_embviz._keys` where they are defined.

Dtypes follow the reference ``prdc`` package (which computes through scikit-learn): float32
stays float32, float64 stays float64, half precision (float16, bfloat16) is kept as it is
(its values are exactly representable in float32 and float64, so no copy is made) but the
distances between half-precision rows are rounded as the reference rounds them, in float64
(see :func:`lightning_embviz.engine.pair_mode`); integer and boolean inputs become float64.
"""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._keys import METRIC_KEYS, PRDC_KEYS

__all__ = [
    "METRIC_KEYS",
    "PRDC_KEYS",
    "ArrayLike",
    "as_features",
    "as_numpy",
    "as_tensor",
    "check_float",
    "check_int",
]

ArrayLike = Union[Tensor, np.ndarray]
"""Embeddings as accepted by the public functions: a torch tensor or a NumPy array."""


def as_tensor(x: Any, name: str) -> Tensor:
    """Convert an array or tensor to a real floating-point tensor, without copying if possible.

    Floating tensors keep their dtype and device (float16 and bfloat16 included); integer and
    boolean inputs become float64, as the reference computes them. The result is detached.

    Args:
        x: ``torch.Tensor`` or ``numpy.ndarray`` of numbers, any shape.
        name: the argument's name, used in error messages.

    Returns:
        A floating-point tensor holding the same values.

    Raises:
        TypeError: if ``x`` is neither a tensor nor an array, holds no numbers (strings,
            objects), or is complex.
    """
    if isinstance(x, Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype == object or not (
            np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)
        ):
            raise TypeError(f"`{name}` must hold numbers, got a NumPy array of dtype {x.dtype}.")
        if np.iscomplexobj(x):
            raise TypeError(f"`{name}` must be real-valued, got dtype {x.dtype}.")
        t = torch.from_numpy(np.ascontiguousarray(x))
    else:
        raise TypeError(
            f"`{name}` must be a torch.Tensor or a numpy.ndarray of shape (N, D), "
            f"got {type(x).__name__}."
        )
    if t.is_complex():
        raise TypeError(f"`{name}` must be real-valued, got dtype {t.dtype}.")
    if not t.is_floating_point():
        # The reference (scikit-learn) computes integer and boolean input in float64.
        t = t.to(torch.float64)
    return t


def as_features(x: Any, name: str) -> Tensor:
    """Convert and check a set of embeddings: shape (N, D), N, D >= 1, finite values.

    Args:
        x: ``torch.Tensor`` or ``numpy.ndarray`` of shape (N, D).
        name: the argument's name, used in error messages.

    Returns:
        A contiguous floating-point tensor of shape (N, D) (see :func:`as_tensor`).

    Raises:
        TypeError: see :func:`as_tensor`.
        ValueError: on another number of dimensions, an empty set, zero features, or rows
            with NaN or Inf values (their count is given).
    """
    t = as_tensor(x, name)
    if t.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D with shape (N, D), got shape {tuple(t.shape)}. "
            "Flatten per-sample features first, e.g. `x.reshape(len(x), -1)`."
        )
    if t.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (shape {tuple(t.shape)}); it needs at least 2 rows.")
    if t.shape[1] == 0:
        raise ValueError(f"`{name}` has zero features (shape {tuple(t.shape)}).")
    # In blocks of rows: torch.isfinite makes several full-size temporaries (3.4 GiB
    # for a 1M x 512 float32 set).
    finite = torch.empty(t.shape[0], dtype=torch.bool, device=t.device)
    step = max(1, (1 << 22) // t.shape[1])
    for start in range(0, t.shape[0], step):
        finite[start : start + step] = torch.isfinite(t[start : start + step]).all(dim=1)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ValueError(
            f"`{name}` has {bad} row(s) with NaN or Inf values out of {t.shape[0]}. "
            f"Drop them first, e.g. `{name}[np.isfinite({name}).all(axis=1)]`."
        )
    return t.contiguous()


def as_numpy(x: Any, name: str | None = None) -> np.ndarray:
    """A tensor or array as a NumPy array on the CPU, for plotting and file output.

    bfloat16 (which NumPy lacks) becomes float32, exactly; every other dtype is kept.

    Args:
        x: ``torch.Tensor`` (any device, gradients allowed), ``numpy.ndarray``, or (without
            ``name``) anything ``numpy.asarray`` accepts.
        name: the argument's name; when given, ``x`` must be a tensor or an array and the
            ``TypeError`` names it.

    Returns:
        The values as a NumPy array (a view where possible).

    Raises:
        TypeError: with ``name``, if ``x`` is neither a tensor nor an array.
    """
    if isinstance(x, Tensor):
        t = x.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        return t.numpy()
    if name is not None and not isinstance(x, np.ndarray):
        raise TypeError(
            f"`{name}` must be a torch.Tensor or a numpy.ndarray, got {type(x).__name__}."
        )
    return np.asarray(x)


def check_int(
    value: Any,
    name: str,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    hint: str = "",
) -> int:
    """Check an integer option and return it as a Python int.

    NumPy integers are accepted; ``bool`` is not (``True`` is an int in Python, but never
    a meaningful count).

    Args:
        value: the value given by the user.
        name: the option's name, used in the messages (e.g. ``"nearest_k"``).
        minimum: smallest allowed value, or None.
        maximum: largest allowed value, or None.
        hint: a sentence appended to the ``ValueError`` message (what to do instead).

    Returns:
        ``int(value)``.

    Raises:
        TypeError: if ``value`` is not an int (or is a bool); the message quotes it.
        ValueError: if it lies outside ``[minimum, maximum]``; the message quotes it.

    Example::

        >>> check_int(5, "nearest_k", minimum=1)
        5
        >>> check_int(0, "nearest_k", minimum=1)
        Traceback (most recent call last):
        ...
        ValueError: `nearest_k` must be >= 1, got 0.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        allowed = _describe_range(minimum, maximum)
        raise TypeError(f"`{name}` must be an int{allowed}, got {value!r}.")
    out = int(value)
    too_small = minimum is not None and out < minimum
    too_large = maximum is not None and out > maximum
    if too_small or too_large:
        if minimum is not None and maximum is not None:
            rule = f"between {minimum} and {maximum}"
        elif minimum is not None:
            rule = f">= {minimum}"
        else:
            rule = f"<= {maximum}"
        extra = f" {hint}" if hint else ""
        raise ValueError(f"`{name}` must be {rule}, got {out!r}.{extra}")
    return out


def check_float(value: Any, name: str) -> float:
    """Check a real-number option and return it as a Python float.

    Python and NumPy ints and floats are accepted (``np.float32(0.9)`` is a number); ``bool``
    is not. A NumPy float narrower than float64 is read through its shortest decimal form, so
    ``np.float32(0.9)`` gives ``0.9``, what the user wrote, not ``0.8999999761581421``.

    Args:
        value: the value given by the user.
        name: the option's name, used in the message.

    Returns:
        The value as a Python float (range checks are the caller's).

    Raises:
        TypeError: if ``value`` is not a real number (or is a bool); the message quotes it.

    Example::

        >>> check_float(np.float32(0.9), "confidence")
        0.9
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (int, float, np.integer, np.floating)
    ):
        raise TypeError(f"`{name}` must be a number, got {value!r}.")
    if isinstance(value, np.floating) and np.finfo(value.dtype).bits < 64:
        return float(str(value))
    return float(value)


def _describe_range(minimum: int | None, maximum: int | None) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    if maximum is not None:
        return f" <= {maximum}"
    return ""
