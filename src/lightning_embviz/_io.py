"""Read embedding and label files for the ``embviz`` command (.npy, .npz, .pt/.pth, .csv).

Every problem raises :class:`EmbeddingFileError` with a one-line message naming the file,
what is wrong and what to do, so that the command can print it without a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMATS", "EmbeddingFileError", "load_embeddings", "load_labels"]

FORMATS = (".npy", ".npz", ".pt", ".pth", ".csv")
# Keys tried, in order, when an .npz / .pt file holds several arrays.
_PREFERRED_KEYS = ("embeddings", "features", "x", "arr_0")
_LABEL_KEYS = ("labels", "label", "y", "targets", "arr_0")


class EmbeddingFileError(ValueError):
    """A file that cannot be read as embeddings or labels (message is one line)."""


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise EmbeddingFileError(
            f"{path}: unknown format {suffix or '(no extension)'!r}; "
            f"expected one of {', '.join(FORMATS)}."
        )
    return suffix


def _pick(container: dict[str, Any], path: Path, preferred: tuple[str, ...]) -> Any:
    keys = list(container)
    if not keys:
        raise EmbeddingFileError(f"{path}: the file holds no arrays.")
    if len(keys) == 1:
        return container[keys[0]]
    for key in preferred:
        if key in container:
            return container[key]
    raise EmbeddingFileError(
        f"{path}: holds several arrays {keys}; name the one to use "
        f"{' or '.join(repr(k) for k in preferred[:2])}."
    )


def _read_csv(path: Path) -> np.ndarray:
    with open(path, encoding="utf-8") as handle:
        first = handle.readline()
    if not first.strip():
        raise EmbeddingFileError(f"{path}: the CSV file is empty.")
    delimiter = "\t" if "\t" in first and "," not in first else ","
    skip = 0
    try:
        [float(v) for v in first.strip().split(delimiter) if v.strip() != ""]
    except ValueError:
        skip = 1  # a header line
    try:
        data = np.loadtxt(path, delimiter=delimiter, skiprows=skip, ndmin=2, dtype=np.float64)
    except ValueError as err:
        reason = str(err).splitlines()[0] if str(err) else "not numeric"
        raise EmbeddingFileError(f"{path}: cannot parse as numbers ({reason}).") from None
    return data


def _read_raw(path: Path, preferred: tuple[str, ...]) -> Any:
    if not path.exists():
        raise EmbeddingFileError(f"{path}: no such file.")
    if path.is_dir():
        raise EmbeddingFileError(f"{path}: is a directory, expected a file.")
    suffix = _suffix(path)
    try:
        if suffix == ".npy":
            return np.load(path, allow_pickle=False)
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                return _pick({k: npz[k] for k in npz.files}, path, preferred)
        if suffix in (".pt", ".pth"):
            import torch

            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict):
                obj = _pick(obj, path, preferred)
            if isinstance(obj, (list, tuple)) and obj and all(hasattr(t, "shape") for t in obj):
                obj = torch.cat([torch.as_tensor(t) for t in obj])
            if isinstance(obj, torch.Tensor):
                return obj.detach().cpu().numpy()
            raise EmbeddingFileError(
                f"{path}: holds a {type(obj).__name__}, expected a tensor or a dict of tensors."
            )
        return _read_csv(path)
    except EmbeddingFileError:
        raise
    except Exception as err:  # any reader failure becomes a one-line message
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        raise EmbeddingFileError(f"{path}: cannot read as {suffix} ({reason}).") from None


def load_embeddings(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an (N, D) embedding array from a file.

    Supported: ``.npy``; ``.npz`` with one array (or one named ``embeddings``/``features``);
    ``.pt``/``.pth`` holding a tensor, a list of tensors (concatenated) or a dict of tensors
    (loaded with ``weights_only=True``); ``.csv`` with one row per sample (optional header).

    Args:
        path: the file.

    Returns:
        (N, D) float array (float32 kept, other types become float64).

    Raises:
        EmbeddingFileError: missing file, unknown format, unreadable content, non-numeric
            values, a shape other than (N, D) with N >= 2 and D >= 1, or NaN/Inf rows.
    """
    p = Path(path)
    arr = np.asarray(_read_raw(p, _PREFERRED_KEYS))
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise EmbeddingFileError(f"{p}: holds values of type {arr.dtype}, expected numbers.")
    if np.iscomplexobj(arr):
        raise EmbeddingFileError(f"{p}: holds complex numbers, expected real numbers.")
    if arr.ndim == 1:
        raise EmbeddingFileError(
            f"{p}: is 1-D with shape {arr.shape}; embeddings need shape (N, D), one row per "
            "sample (for N scalars, save x.reshape(-1, 1))."
        )
    if arr.ndim != 2:
        raise EmbeddingFileError(
            f"{p}: has shape {arr.shape}; embeddings need shape (N, D). "
            "Flatten per-sample features first, e.g. x.reshape(len(x), -1)."
        )
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise EmbeddingFileError(f"{p}: has shape {arr.shape}; need at least 2 rows and 1 column.")
    if arr.dtype not in (np.float32, np.float64):
        arr = arr.astype(np.float64)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise EmbeddingFileError(
            f"{p}: {len(bad)} of {arr.shape[0]} rows hold NaN or Inf (first: row {bad[0]}); "
            "drop them first."
        )
    return arr


def load_labels(path: str | os.PathLike[str], expected_rows: int | None = None) -> np.ndarray:
    """Read one class label per sample (ints or strings) from a file.

    Same formats as :func:`load_embeddings`; an (N, 1) array is squeezed to (N,). In an
    ``.npz``/``.pt`` dict the key ``labels`` (or ``y``/``targets``) is used.

    Args:
        path: the file.
        expected_rows: the number of samples the labels must match.

    Returns:
        (N,) array.

    Raises:
        EmbeddingFileError: unreadable file, wrong shape, or a row count other than
            ``expected_rows``.
    """
    p = Path(path)
    if p.suffix.lower() == ".csv" and p.exists():
        with open(p, encoding="utf-8") as handle:
            lines = [line.strip() for line in handle if line.strip()]
        values = [line.split(",")[-1].strip() for line in lines]
        try:
            [float(v) for v in values[:1]]
        except ValueError:
            values = values[1:]  # header
        arr: np.ndarray = np.asarray(values)
        try:
            as_float = arr.astype(np.float64)
            arr = as_float.astype(np.int64) if np.all(as_float == np.round(as_float)) else as_float
        except ValueError:
            pass  # string labels
    else:
        arr = np.asarray(_read_raw(p, _LABEL_KEYS))
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise EmbeddingFileError(
            f"{p}: labels need shape (N,), one per sample, got shape {arr.shape}."
        )
    if expected_rows is not None and arr.shape[0] != expected_rows:
        raise EmbeddingFileError(
            f"{p}: has {arr.shape[0]} labels but the embeddings have {expected_rows} rows."
        )
    return arr
