"""A real set fitted once: its k-NN radii for several k, reusable, savable.

:class:`RealReference` holds what every comparison against a fixed real set needs (the real
embeddings and their k-NN radii for each fitted k) so that comparing a fake set costs only
the fake-fake and real-fake distance passes. :func:`lightning_embviz.compute_prdc` is
``ReferenceCore.fit(real, k).metrics(fake)``, the path of ``RealReference(real, k).compare``:
one code path, identical results.

The seam
--------
:class:`ReferenceCore` is what the engine's faces share: the real set, its float32 frame,
its radii and the passes against a fake set. :class:`RealReference` (the user's object, with
its files) holds one as :attr:`RealReference.core`; :mod:`~lightning_embviz.engine.prdc`
(``compute_prdc``) and :mod:`~lightning_embviz.engine.distributed` (the same work shared by
ranks: radii of a share of the rows, frames, radii set from an all-gather) use it directly.
Its methods are the package's internal API: named, documented, not re-exported at the top.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features, as_tensor
from lightning_embviz.engine.cross import CrossTests, cross_ball_tests
from lightning_embviz.engine.exact import pair_mode
from lightning_embviz.engine.frames import Frame, frame_scale, max_abs_centered, mean64, to_frame
from lightning_embviz.engine.inputs import (
    check_chunk,
    check_nearest_k,
    check_nearest_ks,
    check_size,
    engine_device,
)
from lightning_embviz.engine.radii import neighbour_radii
from lightning_embviz.engine.reference_file import (
    FORMAT_VERSION,
    fingerprint,
    read_reference,
    write_reference,
)
from lightning_embviz.engine.results import PRDCResult, assemble_results, prdc_metrics

_T = TypeVar("_T")

__all__ = ["FORMAT_VERSION", "PRDCResult", "RealReference", "ReferenceCore"]

# Default block sizes: square blocks of 2048 for the symmetric radius pass (16 MiB of
# float32 distances) and tiles of 512 real rows by up to 16 384 fakes for the real-fake
# pass. Large enough for the GEMM to run near peak throughput, small enough to keep memory
# bounded whatever N and M.
RADIUS_BLOCK = 2048
CROSS_ROWS = 512
_CONVERT_ROWS = 2048  # rows converted at a time into the engine's float32 frame


class ReferenceCore:
    """The real side of every comparison: the real set, its frame, its radii, the passes.

    Built by :meth:`prepare` (no radii yet) or :meth:`fit`; the distributed face computes
    the radii of its share of the rows (:meth:`radii_of_rows`) and sets the gathered ones
    (:meth:`set_radii`).

    Attributes:
        real: (N, D) the real set (contiguous; moved to the CPU from MPS).
        ks: the fitted k, in the order given (the first is the default).
        sorted_ks: the same, increasing: the order of the radii's rows.
        radii: (K, N) float64 radii for ``sorted_ks``, once fitted.
    """

    def __init__(self, real: Tensor, ks: tuple[int, ...]) -> None:
        self.real = engine_device(real).contiguous()
        self.ks = ks
        self.sorted_ks = tuple(sorted(ks))
        self._radii: Tensor | None = None
        # Centre (float64 mean) and power-of-two scale of the real set, its float32 copy.
        self._center = mean64(self.real, _CONVERT_ROWS)
        self._biggest = max_abs_centered(self.real, self._center, _CONVERT_ROWS)
        self._scale = frame_scale(self._biggest)
        self._real32, self._real_sq = to_frame(self.real, self._center, self._scale, _CONVERT_ROWS)
        self._real16: Tensor | None = None

    @classmethod
    def prepare(cls, real: Tensor, ks: tuple[int, ...]) -> ReferenceCore:
        """Everything but the radii, on a checked real set (see :meth:`fit`)."""
        return cls(real, ks)

    @classmethod
    def fit(cls, real: Tensor, ks: tuple[int, ...], chunk: int | None) -> ReferenceCore:
        """Prepare and fit the radii of every row, on an already checked real set.

        Args:
            real: (N, D) checked embeddings (:func:`~lightning_embviz._arrays.as_features`).
            ks: distinct k, each below N.
            chunk: rows per block of the radius pass; None picks one.
        """
        core = cls(real, ks)
        core.set_radii(core.radii_of_rows(chunk))
        return core

    @property
    def radii(self) -> Tensor:
        """(K, N) float64 radii for :attr:`sorted_ks`."""
        if self._radii is None:
            raise RuntimeError("The reference's radii are not fitted yet.")
        return self._radii

    def set_radii(self, radii: Tensor) -> None:
        """Set the (K, N) float64 radii for :attr:`sorted_ks` (computed or gathered)."""
        self._radii = radii

    def radii_of_rows(self, chunk: int | None, rows: tuple[int, int] | None = None) -> Tensor:
        """(K, N) radii of the real rows for the sorted ks; (K, stop - start) for ``rows``."""
        frame = Frame(self._real32, self._real32, self._real_sq, self._real_sq, self._scale)
        return neighbour_radii(
            self.real,
            self.sorted_ks,
            pair_mode(self.real.dtype, self.real.dtype),
            chunk or RADIUS_BLOCK,
            frame,
            rows,
        )

    def radii_for(self, ks: tuple[int, ...]) -> Tensor:
        """(len(ks), N) rows of :attr:`radii` for fitted ``ks``."""
        rows = torch.tensor([self.sorted_ks.index(k) for k in ks], device=self.real.device)
        return self.radii.index_select(0, rows)

    def to(self, device: torch.device) -> ReferenceCore:
        """A copy on ``device`` (the frame is recomputed there)."""
        core = ReferenceCore(self.real.to(device), self.ks)
        core.set_radii(self.radii.to(device))
        return core

    # --- checks ----------------------------------------------------------------------------

    def resolve_k(self, nearest_k: Any) -> int:
        """A fitted k (None: the first fitted one); ValueError naming the fitted ones."""
        if nearest_k is None:
            return self.ks[0]
        k = check_nearest_k(nearest_k)
        if k not in self.ks:
            fitted = ", ".join(str(x) for x in self.ks)
            raise ValueError(
                f"`nearest_k={k}` was not fitted; this reference has nearest_k in ({fitted}). "
                f"Fit it with `RealReference(real, nearest_k=({fitted}, {k}))`."
            )
        return k

    def check_fake(self, fake: Any, name: str) -> Tensor:
        """``fake`` as checked (M, D) features of the real set's width, on its device."""
        f = engine_device(as_features(fake, name))
        width = int(self.real.shape[1])
        if f.shape[1] != width:
            raise ValueError(
                f"`{name}` has width D={f.shape[1]} (shape {tuple(f.shape)}) but the real set "
                f"has width {width}; both must come from the same embedding."
            )
        if f.device != self.real.device:
            raise ValueError(
                f"`{name}` is on {f.device} but the real set is on {self.real.device}; move one "
                f"of them, e.g. `reference.to({str(f.device)!r})`."
            )
        return f

    def check_compare(
        self, fake: Any, nearest_k: Any, chunk_size: Any
    ) -> tuple[int, int | None, Tensor]:
        """The checks of a comparison for one k: ``(k, chunk, fake (M, D))``."""
        k = self.resolve_k(nearest_k)
        chunk = check_chunk(chunk_size)
        f = self.check_fake(fake, "fake")
        check_size(k, f.shape[0], "fake")
        return k, chunk, f

    def check_sweep(self, fake: Any, chunk_size: Any) -> tuple[int | None, Tensor]:
        """The checks of a sweep over every fitted k: ``(chunk, fake (M, D))``."""
        chunk = check_chunk(chunk_size)
        f = self.check_fake(fake, "fake")
        check_size(max(self.ks), f.shape[0], "fake")
        return chunk, f

    # --- passes ----------------------------------------------------------------------------

    def frames(self, fake: Tensor, chunk: int) -> tuple[Frame, Frame]:
        """The real-fake frame (centred on the real mean) and the fake-fake frame."""
        biggest = max(self._biggest, max_abs_centered(fake, self._center, chunk))
        scale = frame_scale(biggest)
        if scale == self._scale:  # the fitted float32 copy of the real set serves as is
            real32, real_sq = self._real32, self._real_sq
            half = {} if self._real16 is None else {"a": self._real16}
        else:
            real32, real_sq = to_frame(self.real, self._center, scale, chunk)
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

    def run(
        self, fake: Tensor, ks: tuple[int, ...], chunk: int | None, details: bool
    ) -> tuple[Tensor, Tensor, CrossTests]:
        """The fake radii and the real-fake tests for the fitted ``ks`` (increasing).

        Returns:
            ``(real_radii (K, N), fake_radii (K, M), tests)``.
        """
        cross_block = chunk or CROSS_ROWS
        cross, fake_frame = self.frames(fake, _CONVERT_ROWS)
        fake_radii = neighbour_radii(
            fake, ks, pair_mode(fake.dtype, fake.dtype), chunk or RADIUS_BLOCK, fake_frame
        )
        real_radii = self.radii_for(ks)
        tests = cross_ball_tests(
            self.real,
            fake,
            real_radii,
            fake_radii,
            pair_mode(self.real.dtype, fake.dtype),
            cross_block,
            cross,
            details=details,
        )
        if cross.scale == self._scale and "a" in cross._half:
            self._real16 = cross._half["a"]  # keep the bfloat16 copy for the next comparison
        return real_radii, fake_radii, tests

    def metrics(
        self, fake: Tensor, ks: tuple[int, ...], chunk: int | None
    ) -> dict[int, dict[str, float]]:
        """The four metrics for each of ``ks`` (increasing), without per-sample extras."""
        _, _, tests = self.run(fake, ks, chunk, details=False)
        assert tests.real_recalled is not None  # fake radii were given
        return {
            k: prdc_metrics(
                tests.fake_ball_count[t], tests.real_covered[t], tests.real_recalled[t], k
            )
            for t, k in enumerate(ks)
        }

    def results(
        self, fake: Tensor, ks: tuple[int, ...], chunk: int | None
    ) -> dict[int, PRDCResult]:
        """Metrics and per-sample results for each of ``ks`` (increasing)."""
        return assemble_results(ks, *self.run(fake, ks, chunk, details=True))


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
        ks = check_nearest_ks(nearest_k)
        t = as_features(real, "real")
        for k in ks:
            check_size(k, t.shape[0], "real")
        # A private copy: the radii must not go stale if the caller's array changes later.
        self.core = ReferenceCore.fit(t.clone(), ks, check_chunk(chunk_size))
        self._fingerprint: str | None = None
        self._kept: dict[Hashable, Any] = {}

    @classmethod
    def from_core(cls, core: ReferenceCore, real_fingerprint: str | None = None) -> RealReference:
        """The user's object around a fitted :class:`ReferenceCore` (engine seam)."""
        obj = cls.__new__(cls)
        obj.core = core
        obj._fingerprint = real_fingerprint
        obj._kept = {}
        return obj

    def kept(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """A value derived from the fitted real set alone, computed once and kept (engine seam).

        The other metrics' real-only parts (the reals' own clipped-ball counts, their kernel
        sums) live here, so a caller that reuses this reference across runs pays them once.

        Args:
            key: What the value is (with the parameters it depends on).
            compute: Computes it from :attr:`real` when not kept yet.

        Returns:
            The kept value.
        """
        if key not in self._kept:
            self._kept[key] = compute()
        return self._kept[key]

    # --- description ---------------------------------------------------------------------

    @property
    def nearest_ks(self) -> tuple[int, ...]:
        """The fitted k, in the order given; the first is the default of :meth:`compare`."""
        return self.core.ks

    @property
    def nearest_k(self) -> int:
        """The default k (the first fitted one)."""
        return self.core.ks[0]

    @property
    def num_real(self) -> int:
        """N, the number of real samples."""
        return int(self.core.real.shape[0])

    @property
    def width(self) -> int:
        """D, the embedding width."""
        return int(self.core.real.shape[1])

    @property
    def dtype(self) -> torch.dtype:
        """The real set's dtype (decides how distances are rounded, as the reference does)."""
        return self.core.real.dtype

    @property
    def device(self) -> torch.device:
        """Where the real set lives and the comparisons run."""
        return self.core.real.device

    @property
    def real(self) -> Tensor:
        """(N, D) the real embeddings (do not modify)."""
        return self.core.real

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the real set's shape, dtype and values; stored by :meth:`save`."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.core.real)
        return self._fingerprint

    def real_radii(self, nearest_k: int | None = None) -> Tensor:
        """(N,) float64 k-NN radii of the real points for a fitted k (default: the first)."""
        return self.core.radii[self.core.sorted_ks.index(self.core.resolve_k(nearest_k))]

    def __repr__(self) -> str:
        return (
            f"RealReference(num_real={self.num_real}, width={self.width}, "
            f"nearest_ks={self.core.ks}, dtype={self.dtype}, device={self.device})"
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
        if tuple(real.shape) != tuple(self.core.real.shape):
            return False
        try:
            t = as_tensor(real, "real")  # integers become float64, as when fitting
        except TypeError:
            return False
        if t.dtype != self.core.real.dtype:
            return False
        real = t.to(self.core.real.device)
        n = self.core.real.shape[0]
        probe = torch.linspace(0, n - 1, min(n, 64), device=self.core.real.device).long()
        if not torch.equal(real[probe], self.core.real[probe]):
            return False
        return torch.equal(real, self.core.real)

    def to(self, device: torch.device | str) -> RealReference:
        """A copy of this reference on another device (the same object if already there)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return RealReference.from_core(self.core.to(device), self._fingerprint)

    # --- comparisons ---------------------------------------------------------------------

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
        k, chunk, f = self.core.check_compare(fake, nearest_k, chunk_size)
        return self.core.results(f, (k,), chunk)[k]

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
        k, chunk, f = self.core.check_compare(fake, nearest_k, chunk_size)
        return self.core.metrics(f, (k,), chunk)[k]

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
        chunk, f = self.core.check_sweep(fake, chunk_size)
        results = self.core.results(f, self.core.sorted_ks, chunk)
        return {k: results[k] for k in self.core.ks}

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
        chunk, f = self.core.check_sweep(fake, chunk_size)
        results = self.core.metrics(f, self.core.sorted_ks, chunk)
        return {k: results[k] for k in self.core.ks}

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
        write_reference(path, self.core.real, self.core.ks, self.core.radii, self.fingerprint)

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
        stored = read_reference(path)
        real = stored.real if device is None else stored.real.to(device)
        if stored.radii is None:
            # A version 1 file: no checksum over the radii, recompute them (one fit).
            for k in stored.ks:
                check_size(k, real.shape[0], "real")
            core = ReferenceCore.fit(real, stored.ks, None)
        else:
            core = ReferenceCore.prepare(real, stored.ks)
            core.set_radii(stored.radii.to(real.device))
        return cls.from_core(core, stored.fingerprint)
