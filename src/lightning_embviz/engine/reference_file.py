"""The file format of a fitted :class:`~lightning_embviz.RealReference`: write, read, check.

A saved reference holds the real set, its radii for every fitted k, the fitted k, a
fingerprint (SHA-256) of the real set, the format version and a checksum (SHA-256) over all
of these, so that a file edited or damaged anywhere is refused instead of giving wrong
numbers. ``.pt``/``.pth`` files are torch files (``torch.load(weights_only=True)``), anything
else npz (``numpy.load(allow_pickle=False)``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "StoredReference",
    "fingerprint",
    "read_reference",
    "write_reference",
]

FORMAT_VERSION = 2
"""Version of the file format written by :meth:`RealReference.save`.

Version 2 adds a checksum over everything that decides a result (format, version, dtype,
the fitted k, the real set and its radii). Version 1 files (no checksum) are still read:
their radii are recomputed from the real set, which the fingerprint covers.
"""

FORMAT_NAME = "lightning_embviz.RealReference"
"""The tag stored under the key ``format`` (how a reference file is recognised)."""

_FILE_KEYS = ("format", "format_version", "dtype", "nearest_ks", "fingerprint", "real", "radii")
_READABLE_VERSIONS = (1, 2)
_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_DTYPES["float64"] = torch.float64
# What a damaged file raises while it is read (a bad copy, a truncated download).
_READ_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    pickle.UnpicklingError,
)


@dataclass(frozen=True)
class StoredReference:
    """What :func:`read_reference` found in a file, checked against its checksum.

    Attributes:
        real: (N, D) the real set, on the CPU, in its stored dtype.
        ks: the fitted k, in the order given at fitting.
        radii: (K, N) float64 radii; None for a version 1 file (recompute them).
        fingerprint: the real set's fingerprint (checked against ``real``).
    """

    real: Tensor
    ks: tuple[int, ...]
    radii: Tensor | None
    fingerprint: str


def format_tag(value: Any) -> str | None:
    """A container's ``format`` entry as a string (a str or a 0-d str array); None otherwise."""
    if isinstance(value, np.ndarray):
        if value.shape != () or value.dtype.kind != "U":
            return None
        value = str(value)
    return value if isinstance(value, str) else None


def saved_format_tag(path: str | os.PathLike[str]) -> str | None:
    """The ``format`` tag of a file saved by a reference's ``save``, judged by its content.

    The name does not matter: an npz archive with an entry ``format``, or a torch zip file
    holding a dict with one. Only that entry is read (torch files are memory-mapped).
    Embedding files and anything that cannot be opened give None.
    """
    try:
        if not os.path.isfile(path) or not zipfile.is_zipfile(path):
            return None
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if "format.npy" in names:
            with np.load(path, allow_pickle=False) as npz:
                return format_tag(npz["format"])
        if any(name.endswith("data.pkl") for name in names):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return format_tag(obj.get("format")) if isinstance(obj, dict) else None
    except Exception:  # unreadable: not recognisable as a saved reference
        return None
    return None


def fingerprint(real: Tensor) -> str:
    """SHA-256 of the real set's shape, dtype and bytes (hex)."""
    cpu = real.detach().cpu().contiguous()
    if cpu.dtype == torch.bfloat16:
        raw = cpu.view(torch.int16).numpy()
    else:
        raw = cpu.numpy()
    digest = hashlib.sha256(f"{tuple(cpu.shape)}|{cpu.dtype}|".encode())
    digest.update(np.ascontiguousarray(raw).tobytes())
    return digest.hexdigest()


def _checksum(version: int, dtype: str, ks: Sequence[int], fingerprint: str, radii: Tensor) -> str:
    """SHA-256 over every field of a saved reference that decides a result (hex).

    The real set enters through its fingerprint; the radii as float64 bytes with their shape.
    """
    values = np.ascontiguousarray(radii.detach().cpu().to(torch.float64).numpy())
    head = f"{FORMAT_NAME}|{version}|{dtype}|{tuple(int(k) for k in ks)}|{fingerprint}|"
    digest = hashlib.sha256((head + f"{values.shape}|").encode())
    digest.update(values.tobytes())
    return digest.hexdigest()


def _format_version(value: Any, name: str) -> int:
    """The stored format version as an int; ValueError on anything but an integer."""
    raw = value.item() if isinstance(value, np.ndarray) and value.shape == () else value
    if isinstance(raw, (bool, np.bool_)) or not isinstance(raw, (int, np.integer)):
        raise ValueError(
            f"{name!r} is damaged: its format version {raw!r} is not an integer. Fit and save "
            "the reference again."
        )
    return int(raw)


def write_reference(
    path: str | os.PathLike[str],
    real: Tensor,
    ks: tuple[int, ...],
    radii: Tensor,
    real_fingerprint: str,
) -> None:
    """Write a fitted reference: ``.pt``/``.pth`` as torch, anything else as npz.

    Args:
        path: destination; written as given (no suffix is added).
        real: (N, D) the real set.
        ks: the fitted k, in the order given.
        radii: (K, N) float64 radii for the sorted ks.
        real_fingerprint: :func:`fingerprint` of ``real``.
    """
    real = real.detach().cpu()
    dtype = str(real.dtype).removeprefix("torch.")
    payload: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "dtype": dtype,
        "nearest_ks": list(ks),
        "fingerprint": real_fingerprint,
    }
    radii = radii.detach().cpu()
    payload["checksum"] = _checksum(FORMAT_VERSION, dtype, ks, real_fingerprint, radii)
    if str(path).endswith((".pt", ".pth")):
        torch.save({**payload, "real": real, "radii": radii}, path)
        return
    arrays: dict[str, np.ndarray] = {key: np.asarray(value) for key, value in payload.items()}
    arrays["real"] = (real.view(torch.int16) if dtype == "bfloat16" else real).numpy()
    arrays["radii"] = radii.numpy()
    with open(path, "wb") as fh:
        np.savez(fh, allow_pickle=False, **arrays)


def _read_fields(name: str) -> dict[str, Any]:
    """Every stored field of an npz or torch file; ValueError if it is no such file."""
    try:
        with zipfile.ZipFile(name) as archive:
            is_torch = any(entry.endswith("data.pkl") for entry in archive.namelist())
    except zipfile.BadZipFile:
        raise ValueError(
            f"{name!r} is not a saved RealReference (not an npz or torch file). Create "
            "one with `RealReference(real, nearest_k=...).save(path)` or "
            "`embviz reference`."
        ) from None
    try:
        if is_torch:
            return dict(torch.load(name, map_location="cpu", weights_only=True))
        with np.load(name, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except _READ_ERRORS as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise ValueError(
            f"{name!r} is damaged: it cannot be read ({type(err).__name__}: {reason}). "
            "Fit and save the reference again."
        ) from None


def read_reference(path: str | os.PathLike[str]) -> StoredReference:
    """Read and check a file written by :func:`write_reference` (or format version 1).

    Args:
        path: an npz or torch file.

    Returns:
        The stored fields, checked against the fingerprint and (version 2) the checksum.

    Raises:
        ValueError: if the file is not a saved reference, is damaged (unreadable bytes,
            a format version that is not an integer, fields that do not match the checksum
            or the fingerprint stored with them), or was written in a format version this
            release does not read.
    """
    name = os.fspath(path)
    fields = _read_fields(name)
    missing = [key for key in _FILE_KEYS if key not in fields]
    if missing or str(fields["format"]) != FORMAT_NAME:
        raise ValueError(
            f"{name!r} is not a saved RealReference (missing {', '.join(missing) or 'its'}"
            " format tag). Create one with `RealReference(real, nearest_k=...).save(path)`"
            " or `embviz reference`."
        )
    version = _format_version(fields["format_version"], name)
    if version not in _READABLE_VERSIONS:
        raise ValueError(
            f"{name!r} was written in RealReference format version {version}; this "
            f"version of lightning-embviz reads versions "
            f"{', '.join(map(str, _READABLE_VERSIONS))}. Fit and save the reference again "
            "from the real embeddings."
        )
    dtype_name = str(fields["dtype"])
    if dtype_name not in _DTYPES:
        raise ValueError(
            f"{name!r} is damaged: dtype {dtype_name!r} is not one of "
            f"{', '.join(_DTYPES)}. Fit and save the reference again."
        )
    dtype = _DTYPES[dtype_name]
    real = fields["real"]
    if isinstance(real, np.ndarray):
        real = torch.from_numpy(np.ascontiguousarray(real))
        if dtype == torch.bfloat16:
            real = real.view(torch.bfloat16)
    radii = fields["radii"]
    radii = torch.from_numpy(radii) if isinstance(radii, np.ndarray) else radii
    stored_ks = np.asarray(fields["nearest_ks"]).reshape(-1)
    if stored_ks.dtype.kind not in "iu" or stored_ks.size == 0 or (stored_ks < 1).any():
        raise ValueError(
            f"{name!r} is damaged: its fitted k {stored_ks.tolist()!r} are not positive "
            "integers. Fit and save the reference again."
        )
    ks = tuple(int(k) for k in stored_ks)
    real = real.to(dtype).contiguous()
    stored_fingerprint = fingerprint(real)
    if stored_fingerprint != str(fields["fingerprint"]):
        raise ValueError(
            f"{name!r} is damaged: its real set does not match the fingerprint stored "
            "with it. Fit and save the reference again."
        )
    if version == 1:
        # No checksum over the radii: the caller recomputes them from the real set.
        return StoredReference(real, ks, None, stored_fingerprint)
    stored = str(fields.get("checksum", ""))
    if stored != _checksum(version, dtype_name, ks, stored_fingerprint, radii):
        raise ValueError(
            f"{name!r} is damaged: its radii, fitted k, dtype or format version do not "
            "match the checksum stored with them (edited, or a bad copy). Fit and save "
            "the reference again."
        )
    if tuple(radii.shape) != (len(ks), real.shape[0]):
        raise ValueError(
            f"{name!r} is damaged: radii of shape {tuple(radii.shape)} for "
            f"{len(ks)} k and {real.shape[0]} rows."
        )
    return StoredReference(real, ks, radii.to(torch.float64), stored_fingerprint)
