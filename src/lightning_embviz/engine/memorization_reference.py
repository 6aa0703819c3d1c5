"""The training side of the memorization numbers, fitted once: :class:`TrainReference`.

A training set kept with what every comparison against it needs (its float32 frame, the
leave-one-out nearest distances of a sample of its rows, k-means cells), compared with
many fake sets (:meth:`TrainReference.compare`), saved and loaded like
:class:`~lightning_embviz.RealReference` (:meth:`TrainReference.save`,
:meth:`TrainReference.load`; a saved file is recognised by its content with
:func:`is_train_reference_file`). The nearest search is :mod:`.nearest_train`; the
definitions of the numbers are :mod:`.memorization`.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import zipfile
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features, check_int
from lightning_embviz.engine.memorization import (
    MemorizationResult,
    check_alpha,
    copy_threshold,
    ct_statistic,
)
from lightning_embviz.engine.nearest_train import (
    TrainFrame,
    check_chunk,
    check_width,
    device_ok,
    nearest_squared,
    train_frame,
)
from lightning_embviz.engine.reference_file import saved_format_tag

__all__ = [
    "DEFAULT_SELF_ROWS",
    "FORMAT_VERSION",
    "LocalSearch",
    "TrainReference",
    "is_train_reference_file",
]

_T = TypeVar("_T")

FORMAT_VERSION = 1
"""Version of the file format written by :meth:`TrainReference.save`."""

FORMAT_NAME = "lightning_embviz.TrainReference"
"""The tag :meth:`TrainReference.save` writes under the key ``format``."""

_FILE_KEYS = (
    "format",
    "format_version",
    "dtype",
    "fingerprint",
    "train",
    "n_cells",
    "self_rows",
    "kmeans_rows",
    "seed",
    "sample_rows",
    "self_distance",
    "centroids",
)

_DEFAULT_CELLS = 20
DEFAULT_SELF_ROWS = 10_000
"""Training rows sampled for the copy threshold without held-out reals."""
_DEFAULT_KMEANS_ROWS = 100_000


class LocalSearch:
    """How a comparison searches the training set: here, the whole set in this process.

    :meth:`TrainReference.compare_with` does every search and every fit through such an
    object; :class:`~lightning_embviz.engine.memorization_distributed.ShardedSearch` is the
    same contract with the training set shared by DDP ranks (each rank searches its share,
    the shares are folded: the same results, bit for bit). Each method that takes a
    ``work`` function runs it as one step (under DDP: the ranks agree on failure before
    the collective that follows).
    """

    def step(self, stage: str, work: Callable[[], _T]) -> _T:
        """``work()``; ``stage`` names it in a failure message (under DDP)."""
        return work()

    def nearest(
        self, reference: TrainReference, work: Callable[[], tuple[Tensor, Tensor | None]]
    ) -> tuple[Tensor, Tensor]:
        """Nearest training row of the queries that ``work()`` returns.

        Args:
            reference: the training side searched.
            work: returns ``(queries (Q, D), exclude (Q,) int64 or None)``.

        Returns:
            ``(index (Q,) int64, squared distance (Q,) float64)``, lowest index on ties.
        """
        queries, exclude = work()
        return nearest_squared(
            queries, reference.train, reference.frame, exclude, reference.chunk_size
        )

    def union(self, work: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """``work()``'s ``(rows (R,), missing (R,) bool)``; under DDP missing on any rank."""
        return work()

    def centroids(self, reference: TrainReference) -> Tensor:
        """The k-means centroids (under DDP: rank 0's, on every rank)."""
        return reference.centroids()


class TrainReference:
    """A training set fitted once, compared with many fake sets: memorization and copying.

    Holds what every comparison against a fixed training set needs: the training embeddings
    (a private copy; the exact re-checks need the original values), their mean and extent
    (the frame of the nearest search), the leave-one-out nearest distances of a seeded sample
    of ``self_rows`` training rows (the copy threshold without held-out reals), and k-means
    cells (the C_T test). The sample distances and the cells are computed when first needed
    and kept; :meth:`save` computes both. Each training row's own nearest distance is
    computed for the rows that are some fake's nearest neighbour and kept as well, so later
    comparisons get cheaper; none of this caching changes a result.

    Cost of a comparison: one pass of the fakes (and of the held-out reals) over the training
    set, plus one pass of the fakes' distinct nearest training rows not seen before. Each
    pass costs what a float32 GEMM of (M, D) by (D, N) costs.

    Args:
        train: (N, D) training embeddings, N >= 2, any float dtype. Kept on its device.
        n_cells: number of k-means cells for C_T; None: ``min(20, N)``. More cells detect
            local copying better but need more held-out reals and fakes per cell.
        self_rows: training rows whose leave-one-out nearest distance gives the copy
            threshold without held-out reals (all rows when N <= self_rows; else a seeded
            uniform sample).
        kmeans_rows: k-means is fitted on a seeded sample of this many training rows (all
            when N <= kmeans_rows).
        seed: seed of both samples and of k-means.
        chunk_size: training rows per block of the nearest search; None: 2048.

    Raises:
        TypeError: if ``train`` is not an array or tensor of numbers, or an option is not
            an int.
        ValueError: on a shape other than (N, D), N < 2, NaN/Inf rows, or an option out of
            range.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> train = rng.normal(size=(2000, 8))
        >>> ref = TrainReference(train, n_cells=5)
        >>> copies = train[:200] + 1e-3
        >>> honest = rng.normal(size=(200, 8))
        >>> heldout = rng.normal(size=(500, 8))
        >>> ref.compare(copies, heldout)["copy_fraction"]
        1.0
        >>> ref.compare(copies, heldout)["authenticity"]
        0.0
        >>> ref.compare(honest, heldout)["copy_fraction"] < 0.2
        True
    """

    def __init__(
        self,
        train: ArrayLike,
        *,
        n_cells: int | None = None,
        self_rows: int = DEFAULT_SELF_ROWS,
        kmeans_rows: int = _DEFAULT_KMEANS_ROWS,
        seed: int = 0,
        chunk_size: int | None = None,
    ) -> None:
        t = device_ok(as_features(train, "train"))
        if t.shape[0] < 2:
            raise ValueError(
                f"`train` needs at least 2 rows, got shape {tuple(t.shape)}: authenticity "
                "compares each fake with its nearest training sample's own nearest neighbour."
            )
        n = t.shape[0]
        if n_cells is None:
            cells = min(_DEFAULT_CELLS, n)
        else:
            cells = check_int(n_cells, "n_cells", minimum=1, maximum=n, hint="Or pass None.")
        self._setup(
            t.clone(),
            cells,
            check_int(self_rows, "self_rows", minimum=1),
            check_int(kmeans_rows, "kmeans_rows", minimum=cells, hint="(at least n_cells)"),
            check_int(seed, "seed"),
            check_chunk(chunk_size),
        )

    def _setup(
        self, train: Tensor, n_cells: int, self_rows: int, kmeans_rows: int, seed: int, chunk: int
    ) -> None:
        self._train = train
        self._n_cells, self._self_rows = n_cells, self_rows
        self._kmeans_rows, self._seed, self._chunk = kmeans_rows, seed, chunk
        self._frame = train_frame(train, chunk, cache=True)
        n = train.shape[0]
        self._sample_rows = self._sample(n, self_rows, seed)
        # Each row's distance to its nearest other training row; NaN until computed.
        self._self_distance = torch.full((n,), math.nan, dtype=torch.float64, device=train.device)
        self._centroids: Tensor | None = None
        self._fingerprint: str | None = None

    @staticmethod
    def _sample(n: int, size: int, seed: int) -> Tensor:
        if n <= size:
            return torch.arange(n)
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(n, generator=gen)[:size].sort().values

    # --- properties ------------------------------------------------------------------------

    @property
    def num_train(self) -> int:
        """Number of training rows N."""
        return int(self._train.shape[0])

    @property
    def width(self) -> int:
        """Number of features D."""
        return int(self._train.shape[1])

    @property
    def n_cells(self) -> int:
        """Number of k-means cells of the C_T test."""
        return self._n_cells

    @property
    def train(self) -> Tensor:
        """The (N, D) training embeddings (the reference's own copy; do not modify)."""
        return self._train

    @property
    def chunk_size(self) -> int:
        """Training rows per block of the nearest search."""
        return self._chunk

    @property
    def frame(self) -> TrainFrame:
        """The training set's float32 frame of the nearest search (for :func:`nearest_rows`)."""
        return self._frame

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the training set's shape, dtype and bytes."""
        if self._fingerprint is None:
            cpu = self._train.detach().cpu().contiguous()
            raw = cpu.view(torch.int16) if cpu.dtype == torch.bfloat16 else cpu
            digest = hashlib.sha256(f"{tuple(cpu.shape)}|{cpu.dtype}|".encode())
            digest.update(np.ascontiguousarray(raw.numpy()).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"TrainReference(num_train={self.num_train}, width={self.width}, "
            f"n_cells={self._n_cells}, dtype={self._train.dtype})"
        )

    # --- fitted parts, computed when first needed ------------------------------------------

    def self_distances(self, rows: Tensor) -> Tensor:
        """Distance of each given training row to its nearest other training row.

        Exact duplicates count as neighbours at distance 0. Computed once per row and kept.

        Args:
            rows: (R,) int64 training row indices.

        Returns:
            (R,) float64 distances.
        """
        rows = rows.to(self._train.device)
        self._fill_self_distances(LocalSearch(), lambda: rows)
        return self._self_distance[rows]

    def _fill_self_distances(self, search: LocalSearch, rows: Callable[[], Tensor]) -> None:
        """Compute the leave-one-out distances of the rows ``rows()`` not known yet."""

        def missing() -> tuple[Tensor, Tensor]:
            unique = torch.unique(rows())
            return unique, torch.isnan(self._self_distance[unique])

        unique, todo = search.union(missing)
        if todo.any():
            wanted = unique[todo]
            _, sq = search.nearest(self, lambda: (self._train.index_select(0, wanted), wanted))
            self._self_distance[wanted] = torch.sqrt(sq)

    def centroids(self) -> Tensor:
        """(K, D) float64 k-means centroids of the training set (fitted on first call)."""
        if self._centroids is None:
            from sklearn.cluster import KMeans

            rows = self._sample(self.num_train, self._kmeans_rows, self._seed)
            sample = self._train.index_select(0, rows.to(self._train.device))
            data = sample.detach().cpu().to(torch.float64).numpy()
            km = KMeans(n_clusters=self._n_cells, n_init=3, random_state=self._seed).fit(data)
            self._centroids = torch.from_numpy(km.cluster_centers_).to(self._train.device)
        return self._centroids

    def cells(self, x: Tensor) -> Tensor:
        """(R,) int64 cell (nearest centroid, float64, lowest index on ties) of each row."""
        centroids = self.centroids()
        out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
        step = max(1, (1 << 21) // (centroids.numel() or 1))  # 16 MiB of differences
        for start in range(0, x.shape[0], step):
            block = x[start : start + step].to(torch.float64)
            d = (block.unsqueeze(1) - centroids.unsqueeze(0)).square().sum(dim=2)
            out[start : start + step] = d.argmin(dim=1)
        return out

    # --- comparisons -----------------------------------------------------------------------

    def compare(
        self,
        fake: ArrayLike,
        heldout: ArrayLike | None = None,
        *,
        alpha: float = 0.05,
        min_cell_fakes: int = 20,
    ) -> dict[str, float]:
        """Authenticity, C_T and copy fraction of a fake set; see :func:`compute_memorization`.

        Returns:
            ``{"authenticity", "ct_score", "copy_fraction"}`` as Python floats.
        """
        return self.compare_details(
            fake, heldout, alpha=alpha, min_cell_fakes=min_cell_fakes
        ).as_dict()

    def compare_details(
        self,
        fake: ArrayLike,
        heldout: ArrayLike | None = None,
        *,
        alpha: float = 0.05,
        min_cell_fakes: int = 20,
    ) -> MemorizationResult:
        """:meth:`compare` with the per-sample results behind the numbers.

        See :func:`compute_memorization_details`.
        """
        f, h, a, min_fakes = self.check_inputs(fake, heldout, alpha, min_cell_fakes)
        return self.compare_with(LocalSearch(), f, h, a, min_fakes)

    def check_inputs(
        self, fake: ArrayLike, heldout: ArrayLike | None, alpha: Any, min_cell_fakes: Any
    ) -> tuple[Tensor, Tensor | None, float, int]:
        """The checked arguments of :meth:`compare_details`: ``(fake, heldout, alpha, min)``.

        Raises:
            TypeError, ValueError: as :meth:`compare_details`.
        """
        f = check_width(as_features(fake, "fake"), self._train, "fake")
        h = None
        if heldout is not None:
            h = check_width(as_features(heldout, "heldout"), self._train, "heldout")
        a = check_alpha(alpha)
        return f, h, a, check_int(min_cell_fakes, "min_cell_fakes", minimum=1)

    def compare_with(
        self, search: LocalSearch, f: Tensor, h: Tensor | None, alpha: float, min_fakes: int
    ) -> MemorizationResult:
        """:meth:`compare_details` on checked inputs (:meth:`check_inputs`), searched by ``search``.

        Two searches of the training set: the fakes and the held-out reals together, then
        the training rows whose leave-one-out distance is not known yet (the fakes' nearest
        rows; without held-out reals, the ``self_rows`` sample too).

        Args:
            search: :class:`LocalSearch`, or the DDP one (the training set shared by ranks).
            f: (M, D) fakes on the training set's device.
            h: (H, D) held-out reals, or None.
            alpha: checked quantile level.
            min_fakes: checked ``min_cell_fakes``.

        Returns:
            The :class:`~lightning_embviz.memorization.MemorizationResult`.
        """
        m = f.shape[0]

        def queries() -> tuple[Tensor, Tensor | None]:
            return (f if h is None else torch.cat([f, h])), None

        found, found_sq = search.nearest(self, queries)
        index, dist = found[:m], torch.sqrt(found_sq[:m])
        h_index = h_dist = None
        if h is not None:
            h_index, h_dist = found[m:], torch.sqrt(found_sq[m:])
        sample = self._sample_rows.to(self._train.device)
        self._fill_self_distances(
            search, lambda: index if h is not None else torch.cat([index, sample])
        )
        own = self._self_distance[index]
        authentic = dist > own
        pool = h_dist if h_dist is not None else self._self_distance[sample]
        threshold = copy_threshold(pool, alpha)
        copied = dist < threshold
        k = self._n_cells
        zeros = torch.zeros(k, dtype=torch.int64)
        cell_z = torch.full((k,), math.nan, dtype=torch.float64)
        used = torch.zeros(k, dtype=torch.bool)
        if h is None or h_dist is None:
            warnings.warn(
                "ct_score is NaN: the C_T test needs held-out real samples (pass "
                "`heldout=`, e.g. validation reals never used in training).",
                UserWarning,
                stacklevel=4,
            )
            ct = math.nan
            fake_cell = torch.full_like(index, -1)
            fake_count, held_count = zeros, zeros.clone()
        else:
            search.centroids(self)
            fake_cell = self.cells(f)
            held_cell = self.cells(h)
            ct, cell_z, used, fake_count, held_count = ct_statistic(
                dist, fake_cell, h_dist, held_cell, k, min_fakes
            )
        return MemorizationResult(
            authenticity=float(authentic.to(torch.float64).mean()),
            ct_score=ct,
            copy_fraction=float(copied.to(torch.float64).mean()),
            alpha=alpha,
            copy_threshold=threshold,
            nearest_train_index=index,
            nearest_train_distance=dist,
            train_self_distance=own,
            authentic=authentic,
            copied=copied,
            fake_cell=fake_cell,
            heldout_nearest_train_index=h_index,
            heldout_nearest_train_distance=h_dist,
            cell_z=cell_z,
            cell_fake_count=fake_count,
            cell_heldout_count=held_count,
            cell_used=used,
        )

    # --- files -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted reference: ``.pt``/``.pth`` as torch, anything else as npz.

        Fits what is not fitted yet first (the sample's leave-one-out distances and the
        k-means cells), so a loaded reference computes nothing but the comparisons. Torch
        files load with ``torch.load(weights_only=True)``; npz with ``allow_pickle=False``.

        Args:
            path: destination; written as given (no suffix is added).
        """
        self.self_distances(self._sample_rows)
        centroids = self.centroids().detach().cpu()
        train = self._train.detach().cpu()
        dtype = str(train.dtype).removeprefix("torch.")
        payload: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dtype": dtype,
            "fingerprint": self.fingerprint,
            "n_cells": self._n_cells,
            "self_rows": self._self_rows,
            "kmeans_rows": self._kmeans_rows,
            "seed": self._seed,
        }
        tensors = {
            "sample_rows": self._sample_rows.cpu(),
            "self_distance": self._self_distance.detach().cpu(),
            "centroids": centroids,
        }
        if str(path).endswith((".pt", ".pth")):
            torch.save({**payload, **tensors, "train": train}, path)
            return
        arrays = {key: np.asarray(value) for key, value in payload.items()}
        arrays.update({key: value.numpy() for key, value in tensors.items()})
        arrays["train"] = (train.view(torch.int16) if dtype == "bfloat16" else train).numpy()
        with open(path, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
    ) -> TrainReference:
        """Read a reference written by :meth:`save`.

        Args:
            path: an npz or torch file written by :meth:`save`.
            device: where to put the training set (default: the CPU).
            chunk_size: training rows per block of the nearest search; None: 2048.

        Returns:
            The reference, ready to :meth:`compare`.

        Raises:
            ValueError: if the file is not a saved TrainReference, was written in another
                format version, or its training set does not match its fingerprint.
        """
        name = os.fspath(path)
        fix = "Create one with `TrainReference(train).save(path)`."
        try:
            with zipfile.ZipFile(name) as archive:
                is_torch = any(entry.endswith("data.pkl") for entry in archive.namelist())
        except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError) as exc:
            raise ValueError(
                f"{name!r} is not a saved TrainReference ({type(exc).__name__}). {fix}"
            ) from None
        if is_torch:
            fields = dict(torch.load(name, map_location="cpu", weights_only=True))
        else:
            with np.load(name, allow_pickle=False) as data:
                fields = {key: data[key] for key in data.files}
        missing = [key for key in _FILE_KEYS if key not in fields]
        if missing or str(fields["format"]) != FORMAT_NAME:
            raise ValueError(
                f"{name!r} is not a saved TrainReference (missing "
                f"{', '.join(missing) or 'its format tag'}). {fix}"
            )
        version = int(fields["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{name!r} was written in TrainReference format version {version}; this "
                f"version reads version {FORMAT_VERSION}. Fit and save it again."
            )

        def tensor(key: str) -> Tensor:
            value = fields[key]
            return (
                torch.from_numpy(np.ascontiguousarray(value))
                if isinstance(value, np.ndarray)
                else value
            )

        dtype = getattr(torch, str(fields["dtype"]))
        train = tensor("train")
        if dtype == torch.bfloat16 and train.dtype == torch.int16:
            train = train.view(torch.bfloat16)
        train = train.to(dtype).contiguous()
        obj = cls.__new__(cls)
        obj._fingerprint = None
        obj._train = train
        if obj.fingerprint != str(fields["fingerprint"]):
            raise ValueError(
                f"{name!r} is damaged: its training set does not match the fingerprint "
                "stored with it. Fit and save the reference again."
            )
        if device is not None:
            train = train.to(device)
        obj._setup(
            train,
            int(fields["n_cells"]),
            int(fields["self_rows"]),
            int(fields["kmeans_rows"]),
            int(fields["seed"]),
            check_chunk(chunk_size),
        )
        obj._fingerprint = str(fields["fingerprint"])
        obj._sample_rows = tensor("sample_rows").to(torch.int64)
        obj._self_distance = tensor("self_distance").to(torch.float64).to(train.device)
        obj._centroids = tensor("centroids").to(torch.float64).to(train.device)
        return obj


def is_train_reference_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` was written by :meth:`TrainReference.save`, judged by its content.

    The name does not matter: an npz archive with an entry ``format`` equal to the
    TrainReference tag, or a torch zip file holding a dict with that tag. Embedding files,
    saved RealReferences and anything that cannot be opened are not. Only the ``format``
    entry is read (torch files are memory-mapped).

    Args:
        path: any path.

    Returns:
        True for a saved TrainReference (possibly of another format version, or damaged:
        :meth:`TrainReference.load` then says what is wrong).
    """
    return saved_format_tag(path) == FORMAT_NAME
    return False
