"""A real set fitted once: its k-NN radii for several k, reusable, savable.

:class:`RealReference` holds what every comparison against a fixed real set needs (the real
embeddings and their k-NN radii for each fitted k) so that comparing a fake set costs only
the fake-fake and real-fake distance passes. :func:`lightning_embviz.compute_prdc` is
``RealReference(real, k).compare(fake)``: one code path, identical results.
"""

from __future__ import annotations

import hashlib
import math
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

from lightning_embviz._arrays import PRDC_KEYS, ArrayLike, as_features, as_tensor, check_int
from lightning_embviz.engine import (
    CrossTests,
    Frame,
    cross_ball_tests,
    frame_scale,
    max_abs_centered,
    mean64,
    neighbour_radii,
    pair_mode,
    to_frame,
)

__all__ = ["FORMAT_VERSION", "PRDCResult", "RealReference"]

FORMAT_VERSION = 2
"""Version of the file format written by :meth:`RealReference.save`.

Version 2 adds a checksum over everything that decides a result (format, version, dtype,
the fitted k, the real set and its radii). Version 1 files (no checksum) are still read:
their radii are recomputed from the real set, which the fingerprint covers.
"""

_FORMAT_NAME = "lightning_embviz.RealReference"
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

# Default block sizes: square blocks of 2048 for the symmetric radius pass (16 MiB of
# float32 distances) and tiles of 512 real rows by up to 16 384 fakes for the real-fake
# pass. Large enough for the GEMM to run near peak throughput, small enough to keep memory
# bounded whatever N and M.
_RADIUS_BLOCK = 2048
_CROSS_ROWS = 512
_CONVERT_ROWS = 2048  # rows converted at a time into the engine's float32 frame


def _cross_chunk(n_cols: int) -> int:
    """Real rows per tile of the real-fake pass (the tile's width follows from it)."""
    return _CROSS_ROWS


@dataclass(frozen=True)
class PRDCResult:
    """Precision, recall, density and coverage with the per-sample results behind them.

    Attributes:
        precision: fraction of fakes inside at least one real k-NN ball.
        recall: fraction of reals inside at least one fake k-NN ball.
        density: mean number of real balls containing a fake, divided by k.
        coverage: fraction of reals whose own k-NN ball contains at least one fake.
        nearest_k: the k used.
        real_radii: (N,) distance of each real point to its k-th nearest real neighbour.
        fake_radii: (M,) distance of each fake point to its k-th nearest fake neighbour.
        real_covered: (N,) bool, a fake lies inside this real point's ball (coverage).
        real_recalled: (N,) bool, this real point lies inside some fake ball (recall).
        fake_ball_count: (M,) int64, number of real balls containing this fake (density).
        real_nearest_fake_distance: (N,) float64, distance from each real point to its
            nearest fake, rounded as the reference rounds distances.
        real_nearest_fake_index: (N,) int64, that fake's row (the lowest one on ties).
        real_nearest_fake_ratio: (N,) float64, ``real_nearest_fake_distance / real_radii``
            (inf where the radius is 0). A real point is covered exactly when this is < 1.
        fake_nearest_ball_ratio: (M,) float64, ``min over reals x of d(f, x) / r_k(x)``: how
            far the nearest real ball's edge is, relative to that ball's radius (inf when
            every radius is 0). A fake is inside the real manifold exactly when this is < 1.
        fake_nearest_ball_index: (M,) int64, the real point of that ball (-1 when none).
    """

    precision: float
    recall: float
    density: float
    coverage: float
    nearest_k: int
    real_radii: Tensor
    fake_radii: Tensor
    real_covered: Tensor
    real_recalled: Tensor
    fake_ball_count: Tensor
    real_nearest_fake_distance: Tensor
    real_nearest_fake_index: Tensor
    real_nearest_fake_ratio: Tensor
    fake_nearest_ball_ratio: Tensor
    fake_nearest_ball_index: Tensor

    @property
    def fake_in_real_manifold(self) -> Tensor:
        """(M,) bool, the fake lies inside at least one real ball (precision)."""
        return self.fake_ball_count > 0

    def as_dict(self) -> dict[str, float]:
        """The four metrics as a plain dict, like ``prdc.compute_prdc``."""
        return {key: getattr(self, key) for key in PRDC_KEYS}


def _metrics(count: Tensor, covered: Tensor, recalled: Tensor, k: int) -> dict[str, float]:
    # Final reductions in NumPy with the reference's own operations, so that the floats are
    # bit-identical to prdc's, not just the counts.
    count_np = count.cpu().numpy()
    precision = float((count_np > 0).mean())
    recall = float(recalled.cpu().numpy().mean())
    density = float((1.0 / float(k)) * count_np.mean())
    coverage = float(covered.cpu().numpy().mean())
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


def _assemble_results(
    ks: tuple[int, ...], real_radii: Tensor, fake_radii: Tensor, tests: CrossTests
) -> dict[int, PRDCResult]:
    """One :class:`PRDCResult` per k from the radii ((K, N), (K, M)) and the detailed tests."""
    recalled = tests.real_recalled
    nearest, nearest_index = tests.real_nearest, tests.real_nearest_index
    ratio, ratio_index = tests.fake_ratio, tests.fake_ratio_index
    assert recalled is not None and nearest is not None and nearest_index is not None
    assert ratio is not None and ratio_index is not None
    out = {}
    for t, k in enumerate(ks):
        radii = real_radii[t]
        out[k] = PRDCResult(
            **_metrics(tests.fake_ball_count[t], tests.real_covered[t], recalled[t], k),
            nearest_k=k,
            real_radii=radii,
            fake_radii=fake_radii[t],
            real_covered=tests.real_covered[t],
            real_recalled=recalled[t],
            fake_ball_count=tests.fake_ball_count[t],
            real_nearest_fake_distance=nearest,
            real_nearest_fake_index=nearest_index,
            real_nearest_fake_ratio=torch.where(radii > 0, nearest / radii, math.inf),
            fake_nearest_ball_ratio=ratio[t],
            fake_nearest_ball_index=ratio_index[t],
        )
    return out


def _check_ks(nearest_k: Any) -> tuple[int, ...]:
    """``nearest_k`` as a tuple of distinct ints >= 1, in the order given."""
    if isinstance(nearest_k, (Sequence, range)) and not isinstance(nearest_k, (str, bytes)):
        if len(nearest_k) == 0:
            raise ValueError("`nearest_k` is an empty sequence; give at least one k, e.g. 5.")
        ks = [check_int(k, "nearest_k", minimum=1) for k in nearest_k]
    elif isinstance(nearest_k, np.ndarray) and nearest_k.ndim == 1:
        return _check_ks(nearest_k.tolist())
    else:
        if not isinstance(nearest_k, (int, np.integer)) or isinstance(nearest_k, bool):
            raise TypeError(
                f"`nearest_k` must be an int >= 1 or a sequence of them, got {nearest_k!r}."
            )
        ks = [check_int(nearest_k, "nearest_k", minimum=1)]
    return tuple(dict.fromkeys(ks))


def _check_size(k: int, rows: int, name: str) -> None:
    if k >= rows:
        raise ValueError(
            f"`nearest_k={k}` needs more than {k} samples in `{name}`, got {rows}. "
            f"Use more samples or a smaller `nearest_k` (at most {rows - 1})."
        )


def _check_chunk(chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    return check_int(chunk_size, "chunk_size", minimum=1, hint="Or pass None to pick one.")


def _checksum(version: int, dtype: str, ks: Sequence[int], fingerprint: str, radii: Tensor) -> str:
    """SHA-256 over every field of a saved reference that decides a result (hex).

    The real set enters through its fingerprint; the radii as float64 bytes with their shape.
    """
    values = np.ascontiguousarray(radii.detach().cpu().to(torch.float64).numpy())
    head = f"{_FORMAT_NAME}|{version}|{dtype}|{tuple(int(k) for k in ks)}|{fingerprint}|"
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


def _fingerprint(real: Tensor) -> str:
    """SHA-256 of the real set's shape, dtype and bytes (hex)."""
    cpu = real.detach().cpu().contiguous()
    if cpu.dtype == torch.bfloat16:
        raw = cpu.view(torch.int16).numpy()
    else:
        raw = cpu.numpy()
    digest = hashlib.sha256(f"{tuple(cpu.shape)}|{cpu.dtype}|".encode())
    digest.update(np.ascontiguousarray(raw).tobytes())
    return digest.hexdigest()


class RealReference:
    """A real set fitted once, compared with many fake sets: precision, recall, density, coverage.

    Fitting computes the real set's k-NN radii for every requested k in one pass over the
    real-real distances. Each comparison then needs only the fake-fake pass (for recall) and
    the real-fake pass; :meth:`sweep` gives every fitted k from one of each. Results are
    bit-identical to :func:`lightning_embviz.compute_prdc` (which is
    ``RealReference(real, k).compare(fake)``) and to the reference ``prdc`` package.

    Memory: the reference keeps a copy of the real set (the exact re-checks need the
    original values; a copy, so that later changes to the caller's array cannot make the
    radii stale), its radii ((K, N) float64), and a float32 copy of the real set in the
    engine's frame (plus a bfloat16 one after the first comparison where that precision is
    used).

    Args:
        real: (N, D) array or tensor of real embeddings, any float dtype. Kept on its device.
        nearest_k: one k, or a sequence of k to fit (e.g. ``(3, 5, 10)``); the first is the
            default of :meth:`compare`. Each 1 <= k < N.
        chunk_size: rows per block of the radius pass; None picks one.

    Raises:
        TypeError: if ``real`` is not an array or tensor of numbers, or a k is not an int.
        ValueError: on a shape other than (N, D), NaN/Inf rows, or a k outside [1, N - 1].

    Example::

        >>> import numpy as np
        >>> from lightning_embviz import RealReference, compute_prdc
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(500, 16)).astype(np.float32)
        >>> fake = rng.normal(0.1, 1.0, size=(400, 16)).astype(np.float32)
        >>> ref = RealReference(real, nearest_k=(5, 10))
        >>> ref.compare(fake) == compute_prdc(real, fake, nearest_k=5)
        True
        >>> sorted(ref.sweep(fake))
        [5, 10]
    """

    def __init__(
        self,
        real: ArrayLike,
        nearest_k: int | Sequence[int] = 5,
        *,
        chunk_size: int | None = None,
    ) -> None:
        ks = _check_ks(nearest_k)
        t = as_features(real, "real")
        for k in ks:
            _check_size(k, t.shape[0], "real")
        # A private copy: the radii must not go stale if the caller's array changes later.
        self._fit(t.clone(), ks, _check_chunk(chunk_size))

    @classmethod
    def _from_checked(cls, real: Tensor, ks: tuple[int, ...], chunk: int | None) -> RealReference:
        """Fit on an already checked tensor (the path of ``compute_prdc``)."""
        obj = cls.__new__(cls)
        obj._fit(real, ks, chunk)
        return obj

    def _fit(self, real: Tensor, ks: tuple[int, ...], chunk: int | None) -> None:
        self._prepare(real, ks)
        self._radii = self._real_radii_of_rows(chunk, None)

    def _prepare(self, real: Tensor, ks: tuple[int, ...]) -> None:
        """Everything of :meth:`_fit` but the radii (shared with the distributed fit)."""
        if real.device.type == "mps":  # no float64 on MPS: the exact re-checks run on the CPU
            real = real.cpu()
        self._real = real.contiguous()
        self._ks = ks
        self._sorted_ks = tuple(sorted(ks))
        self._set_frame(_CONVERT_ROWS)
        self._fingerprint: str | None = None

    def _real_radii_of_rows(self, chunk: int | None, rows: tuple[int, int] | None) -> Tensor:
        """(K, N) radii of the real rows for the sorted ks; (K, stop - start) for ``rows``."""
        frame = Frame(self._real32, self._real32, self._real_sq, self._real_sq, self._scale)
        return neighbour_radii(
            self._real,
            self._sorted_ks,
            pair_mode(self._real.dtype, self._real.dtype),
            chunk or _RADIUS_BLOCK,
            frame,
            rows,
        )

    def _set_frame(self, chunk: int) -> None:
        """Centre (float64 mean) and power-of-two scale of the real set, and its float32 copy."""
        self._center = mean64(self._real, chunk)
        self._biggest = max_abs_centered(self._real, self._center, chunk)
        self._scale = frame_scale(self._biggest)
        self._real32, self._real_sq = to_frame(self._real, self._center, self._scale, chunk)
        self._real16: Tensor | None = None

    # --- description ---------------------------------------------------------------------

    @property
    def nearest_ks(self) -> tuple[int, ...]:
        """The fitted k, in the order given; the first is the default of :meth:`compare`."""
        return self._ks

    @property
    def nearest_k(self) -> int:
        """The default k (the first fitted one)."""
        return self._ks[0]

    @property
    def num_real(self) -> int:
        """N, the number of real samples."""
        return int(self._real.shape[0])

    @property
    def width(self) -> int:
        """D, the embedding width."""
        return int(self._real.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The real set's dtype (decides how distances are rounded, as the reference does)."""
        return self._real.dtype

    @property
    def device(self) -> torch.device:
        """Where the real set lives and the comparisons run."""
        return self._real.device

    @property
    def real(self) -> Tensor:
        """(N, D) the real embeddings (do not modify)."""
        return self._real

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the real set's shape, dtype and values; stored by :meth:`save`."""
        if self._fingerprint is None:
            self._fingerprint = _fingerprint(self._real)
        return self._fingerprint

    def real_radii(self, nearest_k: int | None = None) -> Tensor:
        """(N,) float64 k-NN radii of the real points for a fitted k (default: the first)."""
        return self._radii[self._sorted_ks.index(self._resolve_k(nearest_k))]

    def __repr__(self) -> str:
        return (
            f"RealReference(num_real={self.num_real}, width={self.width}, "
            f"nearest_ks={self._ks}, dtype={self.dtype}, device={self.device})"
        )

    def matches(self, real: ArrayLike) -> bool:
        """Whether ``real`` is bit-identical to the fitted real set (then it can be reused).

        Cheap checks first (shape, dtype, a few rows), then exact equality of all values.

        Args:
            real: (N, D) array or tensor.

        Returns:
            True when every value is equal (and shape and dtype are the same).
        """
        if not isinstance(real, (Tensor, np.ndarray)):
            return False
        if tuple(real.shape) != tuple(self._real.shape):
            return False
        try:
            t = as_tensor(real, "real")  # integers become float64, as when fitting
        except TypeError:
            return False
        if t.dtype != self._real.dtype:
            return False
        real = t.to(self._real.device)
        n = self._real.shape[0]
        probe = torch.linspace(0, n - 1, min(n, 64), device=self._real.device).long()
        if not torch.equal(real[probe], self._real[probe]):
            return False
        return torch.equal(real, self._real)

    def to(self, device: torch.device | str) -> RealReference:
        """A copy of this reference on another device (the same object if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        obj = RealReference.__new__(RealReference)
        obj._real = self._real.to(device)
        obj._ks = self._ks
        obj._sorted_ks = self._sorted_ks
        obj._radii = self._radii.to(device)
        obj._set_frame(_CONVERT_ROWS)
        obj._fingerprint = self._fingerprint
        return obj

    # --- comparisons ---------------------------------------------------------------------

    def _resolve_k(self, nearest_k: Any) -> int:
        if nearest_k is None:
            return self._ks[0]
        k = check_int(nearest_k, "nearest_k", minimum=1)
        if k not in self._ks:
            fitted = ", ".join(str(x) for x in self._ks)
            raise ValueError(
                f"`nearest_k={k}` was not fitted; this reference has nearest_k in ({fitted}). "
                f"Fit it with `RealReference(real, nearest_k=({fitted}, {k}))`."
            )
        return k

    def _check_fake(self, fake: Any, name: str) -> Tensor:
        f = as_features(fake, name)
        if f.device.type == "mps":
            f = f.cpu()
        if f.shape[1] != self.width:
            raise ValueError(
                f"`{name}` has width D={f.shape[1]} (shape {tuple(f.shape)}) but the real set "
                f"has width {self.width}; both must come from the same embedding."
            )
        if f.device != self.device:
            raise ValueError(
                f"`{name}` is on {f.device} but the real set is on {self.device}; move one of "
                f"them, e.g. `reference.to({str(f.device)!r})`."
            )
        return f

    def _run(
        self, fake: Tensor, ks: tuple[int, ...], chunk: int | None, details: bool
    ) -> tuple[Tensor, Tensor, CrossTests]:
        """The fake radii and the real-fake tests for the fitted ``ks`` (increasing).

        Returns:
            ``(real_radii (K, N), fake_radii (K, M), tests)``.
        """
        cross_block = chunk or _CROSS_ROWS
        cross, fake_frame = self._frames(fake, _CONVERT_ROWS)
        fake_radii = neighbour_radii(
            fake, ks, pair_mode(fake.dtype, fake.dtype), chunk or _RADIUS_BLOCK, fake_frame
        )
        rows = torch.tensor([self._sorted_ks.index(k) for k in ks], device=self.device)
        real_radii = self._radii.index_select(0, rows)
        tests = cross_ball_tests(
            self._real,
            fake,
            real_radii,
            fake_radii,
            pair_mode(self._real.dtype, fake.dtype),
            cross_block,
            cross,
            details=details,
        )
        if cross.scale == self._scale and "a" in cross._half:
            self._real16 = cross._half["a"]  # keep the bfloat16 copy for the next comparison
        return real_radii, fake_radii, tests

    def _frames(self, fake: Tensor, chunk: int) -> tuple[Frame, Frame]:
        """The real-fake frame (centred on the real mean) and the fake-fake frame."""
        biggest = max(self._biggest, max_abs_centered(fake, self._center, chunk))
        scale = frame_scale(biggest)
        if scale == self._scale:  # the fitted float32 copy of the real set serves as is
            real32, real_sq = self._real32, self._real_sq
            half = {} if self._real16 is None else {"a": self._real16}
        else:
            real32, real_sq = to_frame(self._real, self._center, scale, chunk)
            half = {}
        fake32, fake_sq = to_frame(fake, self._center, scale, chunk)
        cross = Frame(real32, fake32, real_sq, fake_sq, scale, half)
        # The fake set gets a frame of its own only when it sits far from the real centre
        # compared with its own spread (a collapsed generator early in training): there the
        # shared frame would widen the GEMM error band of the fake-fake pass.
        fake_mean = mean64(fake32, chunk)
        if float(fake_mean @ fake_mean) <= 0.75 * float(fake_sq.mean()):
            fake_frame = Frame(fake32, fake32, fake_sq, fake_sq, scale)
        else:
            center = mean64(fake, chunk)
            own_scale = frame_scale(max_abs_centered(fake, center, chunk))
            own32, own_sq = to_frame(fake, center, own_scale, chunk)
            fake_frame = Frame(own32, own32, own_sq, own_sq, own_scale)
        return cross, fake_frame

    def _metrics(
        self, fake: Tensor, ks: tuple[int, ...], chunk: int | None
    ) -> dict[int, dict[str, float]]:
        """The four metrics for each of ``ks`` (increasing), without per-sample extras."""
        _, _, tests = self._run(fake, ks, chunk, details=False)
        assert tests.real_recalled is not None  # fake radii were given
        return {
            k: _metrics(tests.fake_ball_count[t], tests.real_covered[t], tests.real_recalled[t], k)
            for t, k in enumerate(ks)
        }

    def _results(
        self, fake: Tensor, ks: tuple[int, ...], chunk: int | None
    ) -> dict[int, PRDCResult]:
        """Metrics and per-sample results for each of ``ks`` (increasing)."""
        return _assemble_results(ks, *self._run(fake, ks, chunk, details=True))

    def compare_details(
        self,
        fake: ArrayLike,
        nearest_k: int | None = None,
        *,
        chunk_size: int | None = None,
    ) -> PRDCResult:
        """Compare a fake set and keep the per-sample results (covered, recalled, ball counts).

        Args:
            fake: (M, D) array or tensor of generated embeddings, same D and device.
            nearest_k: a fitted k; None takes the first fitted one.
            chunk_size: rows per block; None picks one.

        Returns:
            A :class:`PRDCResult`, identical to
            ``compute_prdc_details(real, fake, nearest_k)``.

        Raises:
            ValueError: on another width or device, NaN/Inf rows, ``nearest_k`` not fitted or
                not below M.
        """
        k = self._resolve_k(nearest_k)
        chunk = _check_chunk(chunk_size)
        f = self._check_fake(fake, "fake")
        _check_size(k, f.shape[0], "fake")
        return self._results(f, (k,), chunk)[k]

    def compare(
        self,
        fake: ArrayLike,
        nearest_k: int | None = None,
        *,
        chunk_size: int | None = None,
    ) -> dict[str, float]:
        """Precision, recall, density and coverage of a fake set against the fitted real set.

        Bit-identical to ``compute_prdc(real, fake, nearest_k)``; see there for the
        definitions. Costs the fake-fake and real-fake passes only.

        Args:
            fake: (M, D) array or tensor of generated embeddings, same D and device.
            nearest_k: a fitted k; None takes the first fitted one.
            chunk_size: rows per block; None picks one.

        Returns:
            ``{"precision": float, "recall": float, "density": float, "coverage": float}``.

        Raises:
            ValueError: on another width or device, NaN/Inf rows, ``nearest_k`` not fitted or
                not below M.
        """
        k = self._resolve_k(nearest_k)
        chunk = _check_chunk(chunk_size)
        f = self._check_fake(fake, "fake")
        _check_size(k, f.shape[0], "fake")
        return self._metrics(f, (k,), chunk)[k]

    def sweep_details(
        self, fake: ArrayLike, *, chunk_size: int | None = None
    ) -> dict[int, PRDCResult]:
        """:meth:`compare_details` for every fitted k from one fake-fake and one real-fake pass.

        Args:
            fake: (M, D) array or tensor, same D and device; M > the largest fitted k.
            chunk_size: rows per block; None picks one.

        Returns:
            ``{k: PRDCResult}`` in the order of :attr:`nearest_ks`.
        """
        chunk = _check_chunk(chunk_size)
        f = self._check_fake(fake, "fake")
        _check_size(max(self._ks), f.shape[0], "fake")
        results = self._results(f, self._sorted_ks, chunk)
        return {k: results[k] for k in self._ks}

    def sweep(
        self, fake: ArrayLike, *, chunk_size: int | None = None
    ) -> dict[int, dict[str, float]]:
        """:meth:`compare` for every fitted k from one fake-fake and one real-fake pass.

        Only the pairs inside the largest balls get per-k work, so a sweep over k = 1..20
        costs little more than one k.

        Args:
            fake: (M, D) array or tensor, same D and device; M > the largest fitted k.
            chunk_size: rows per block; None picks one.

        Returns:
            ``{k: {"precision": ..., "recall": ..., "density": ..., "coverage": ...}}`` in
            the order of :attr:`nearest_ks`, each identical to ``compute_prdc(real, fake, k)``.
        """
        chunk = _check_chunk(chunk_size)
        f = self._check_fake(fake, "fake")
        _check_size(max(self._ks), f.shape[0], "fake")
        results = self._metrics(f, self._sorted_ks, chunk)
        return {k: results[k] for k in self._ks}

    # --- files ---------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the reference to a file: ``.pt``/``.pth`` as torch, anything else as npz.

        The file holds the real set, its radii for every fitted k, the fitted k, a
        fingerprint (SHA-256) of the real set, the format version and a checksum (SHA-256)
        over all of these, so that a file edited or damaged anywhere is refused by
        :meth:`load` instead of giving wrong numbers. Torch files load with
        ``torch.load(weights_only=True)``; npz files with ``numpy.load(allow_pickle=False)``.

        Args:
            path: destination; written as given (no suffix is added).
        """
        real = self._real.detach().cpu()
        dtype = str(real.dtype).removeprefix("torch.")
        payload: dict[str, Any] = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dtype": dtype,
            "nearest_ks": list(self._ks),
            "fingerprint": self.fingerprint,
        }
        radii = self._radii.detach().cpu()
        payload["checksum"] = _checksum(FORMAT_VERSION, dtype, self._ks, self.fingerprint, radii)
        if str(path).endswith((".pt", ".pth")):
            torch.save({**payload, "real": real, "radii": radii}, path)
            return
        arrays: dict[str, np.ndarray] = {key: np.asarray(value) for key, value in payload.items()}
        arrays["real"] = (real.view(torch.int16) if dtype == "bfloat16" else real).numpy()
        arrays["radii"] = radii.numpy()
        with open(path, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, device: torch.device | str | None = None
    ) -> RealReference:
        """Read a reference written by :meth:`save`.

        Args:
            path: an npz or torch file written by :meth:`save`.
            device: where to put the real set (default: the CPU).

        Returns:
            The reference, ready to :meth:`compare`.

        Raises:
            ValueError: if the file is not a saved reference, is damaged (unreadable bytes,
                a format version that is not an integer, fields that do not match the
                checksum or the fingerprint stored with them), or was written in a format
                version this release does not read. Version 1 files (no checksum) are read
                and their radii recomputed from the real set.
        """
        name = os.fspath(path)
        try:
            with zipfile.ZipFile(name) as archive:
                is_torch = any(entry.endswith("data.pkl") for entry in archive.namelist())
        except zipfile.BadZipFile:
            raise ValueError(
                f"{name!r} is not a saved RealReference (not an npz or torch file). Create "
                "one with `RealReference(real, nearest_k=...).save(path)` or "
                "`embviz reference`."
            ) from None
        fields: dict[str, Any]
        try:
            if is_torch:
                fields = dict(torch.load(name, map_location="cpu", weights_only=True))
            else:
                with np.load(name, allow_pickle=False) as data:
                    fields = {key: data[key] for key in data.files}
        except _READ_ERRORS as err:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise ValueError(
                f"{name!r} is damaged: it cannot be read ({type(err).__name__}: {reason}). "
                "Fit and save the reference again."
            ) from None
        missing = [key for key in _FILE_KEYS if key not in fields]
        if missing or str(fields["format"]) != _FORMAT_NAME:
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
        obj = cls.__new__(cls)
        obj._real = real.to(dtype).contiguous()
        obj._ks = ks
        obj._sorted_ks = tuple(sorted(ks))
        obj._fingerprint = None
        if obj.fingerprint != str(fields["fingerprint"]):
            raise ValueError(
                f"{name!r} is damaged: its real set does not match the fingerprint stored "
                "with it. Fit and save the reference again."
            )
        if version == 1:
            # No checksum over the radii: recompute them from the real set (one fit).
            for k in ks:
                _check_size(k, obj._real.shape[0], "real")
            obj._fit(obj._real, ks, None)
        else:
            stored = str(fields.get("checksum", ""))
            if stored != _checksum(version, dtype_name, ks, obj.fingerprint, radii):
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
            obj._radii = radii.to(torch.float64)
        if device is not None:
            obj._real = obj._real.to(device)
            obj._radii = obj._radii.to(device)
        obj._set_frame(_CONVERT_ROWS)
        return obj
