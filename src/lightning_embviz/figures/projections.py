"""2-D projections behind one small interface: fit on a reference, transform new points.

Every projection here is fitted on a *reference* set (the real embeddings) and then places
other sets (the generated embeddings) into the same frame, so that pictures drawn at
different epochs, or for different checkpoints, are comparable.

- :class:`PCAProjection`: fast, deterministic signs; its fitted state is plain tensors.
- :class:`~lightning_embviz.figures.neighbour_maps.TSNEProjection` and
  :class:`~lightning_embviz.figures.neighbour_maps.UMAPProjection`: the neighbour-embedding
  maps of optional libraries (:mod:`lightning_embviz.figures.neighbour_maps`).
- :func:`make_projection`: the one named by ``method``, with this package's defaults.

No Lightning import here.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_numpy

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "METHODS",
    "TSNE_BACKENDS",
    "PCAProjection",
    "Projection",
    "fingerprint",
    "make_projection",
    "subsample_indices",
]


METHODS = ("pca", "tsne", "umap")

#: Points per set that views project and draw by default (a deterministic subsample). Chosen
#: with ``benchmarks/bench_projection.py`` so that the whole epoch-end work for 5 000 + 5 000
#: embeddings of width 512 stays within about 10 s on 2 CPU cores (see the README).
DEFAULT_MAX_SAMPLES = 2000
TSNE_BACKENDS = ("auto", "opentsne", "sklearn")


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """A (N, D) set as a contiguous float64 array (the projections compute in float64)."""
    if not isinstance(x, (Tensor, np.ndarray)):
        raise TypeError(
            f"`{name}` must be a torch.Tensor or a numpy.ndarray of shape (N, D), "
            f"got {type(x).__name__}."
        )
    arr = as_numpy(x)
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, D), got shape {tuple(arr.shape)}.")
    if not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
        raise TypeError(f"`{name}` must hold numbers, got dtype {arr.dtype}.")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` has NaN or Inf values.")
    return arr


def subsample_indices(n: int, cap: int | None, seed: int) -> np.ndarray:
    """Deterministic subsample of ``range(n)`` of at most ``cap`` indices, in increasing order.

    The same ``(n, cap, seed)`` always gives the same indices, so a fixed real set keeps the
    same subsample (and the same projection frame) from one epoch to the next.

    Args:
        n: number of rows.
        cap: maximum number of rows to keep; None or ``cap >= n`` keeps all.
        seed: seed of the random choice.

    Returns:
        (min(n, cap),) int64 array of sorted row indices.
    """
    if cap is None or n <= cap:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=cap, replace=False)).astype(np.int64)


def fingerprint(x: ArrayLike) -> str:
    """A short hash of an array's shape and float32 values, used to detect a changed reference.

    Args:
        x: (N, D) array or tensor.

    Returns:
        A hex string; equal arrays give equal strings.
    """
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    digest = hashlib.sha1(str(arr.shape).encode())
    digest.update(arr.tobytes())
    return digest.hexdigest()[:20]


class Projection(ABC):
    """A 2-D projection fitted on a reference set.

    Subclasses implement :meth:`fit` and :meth:`transform`. :meth:`project` is what callers
    use: it fits on the reference when it changed (or was never seen) and places the other
    sets into the same frame. Projections that cannot place new points into an existing map
    (``inductive = False``) are fitted jointly on the reference and the other sets.
    """

    name: str = ""
    inductive: bool = True

    def __init__(self) -> None:
        self.reference_fingerprint: str | None = None
        self._reference_embedding: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        """Whether a frame has been fitted."""
        return self._reference_embedding is not None

    @property
    def reference_embedding(self) -> np.ndarray:
        """(N, 2) coordinates of the reference points in the fitted frame."""
        if self._reference_embedding is None:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call `fit` first.")
        return self._reference_embedding

    @abstractmethod
    def _fit(self, reference: np.ndarray) -> np.ndarray:
        """Fit on (N, D) float64 data and return its (N, 2) embedding."""

    @abstractmethod
    def _transform(self, points: np.ndarray) -> np.ndarray:
        """Place (M, D) float64 points into the fitted frame, returning (M, 2)."""

    def fit(self, reference: ArrayLike) -> Projection:
        """Fit the frame on a reference set.

        Args:
            reference: (N, D) array or tensor.

        Returns:
            ``self``.
        """
        ref = _to_numpy(reference, "reference")
        self._reference_embedding = np.asarray(self._fit(ref), dtype=np.float64)
        self.reference_fingerprint = fingerprint(ref)
        return self

    def transform(self, points: ArrayLike) -> np.ndarray:
        """Place new points into the fitted frame.

        Args:
            points: (M, D) array or tensor with the reference's width.

        Returns:
            (M, 2) float64 coordinates.

        Raises:
            RuntimeError: if not fitted, or the projection cannot transform new points.
        """
        if not self.fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call `fit` first.")
        if not self.inductive:
            raise RuntimeError(
                f"{type(self).__name__} cannot place new points into a fitted map; "
                "use `project(reference, *others)`, which fits jointly."
            )
        pts = _to_numpy(points, "points")
        if pts.shape[0] == 0:
            return np.zeros((0, 2))
        return np.asarray(self._transform(pts), dtype=np.float64)

    def fit_transform(self, reference: ArrayLike) -> np.ndarray:
        """Fit on ``reference`` and return its (N, 2) embedding."""
        return self.fit(reference).reference_embedding

    def project(
        self, reference: ArrayLike, *others: ArrayLike, reference_fingerprint: str | None = None
    ) -> list[np.ndarray]:
        """Coordinates of a reference set and of other sets in one frame.

        The frame is refitted only when the reference differs from the one it was fitted on,
        so repeated calls with the same reference draw every set in the same frame.

        Args:
            reference: (N, D) array or tensor (e.g. the real embeddings).
            *others: (M_i, D) arrays or tensors (e.g. generated embeddings).
            reference_fingerprint: :func:`fingerprint` of ``reference`` if the caller has it
                (saves hashing the reference again).

        Returns:
            ``[reference_2d, other_2d, ...]``, each (rows, 2) float64.
        """
        ref = _to_numpy(reference, "reference")
        rest = [_to_numpy(o, f"others[{i}]") for i, o in enumerate(others)]
        for i, o in enumerate(rest):
            if o.shape[1] != ref.shape[1]:
                raise ValueError(
                    f"`others[{i}]` has width {o.shape[1]}, the reference has {ref.shape[1]}."
                )
        if not self.inductive:
            joint = np.concatenate([ref, *rest], axis=0)
            emb = np.asarray(self._fit(joint), dtype=np.float64)
            self._reference_embedding = emb[: len(ref)]
            self.reference_fingerprint = reference_fingerprint or fingerprint(ref)
            bounds = np.cumsum([len(ref)] + [len(o) for o in rest])
            return [emb[: bounds[0]]] + [emb[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
        key = reference_fingerprint or fingerprint(ref)
        if not self.fitted or self.reference_fingerprint != key:
            self.fit(ref)
        return [self.reference_embedding] + [self.transform(o) for o in rest]

    def state_dict(self) -> dict[str, Any]:
        """Fitted state as plain tensors, strings and scalars (``weights_only`` loadable)."""
        state: dict[str, Any] = {"name": self.name, "fitted": self.fitted}
        if self.fitted:
            state["fingerprint"] = self.reference_fingerprint or ""
            state["reference_embedding"] = torch.from_numpy(self.reference_embedding.copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state.get("name") != self.name:
            raise ValueError(
                f"state is for projection {state.get('name')!r}, this one is {self.name!r}."
            )
        if state.get("fitted") and "reference_embedding" in state:
            self._reference_embedding = state["reference_embedding"].double().numpy().copy()
            self.reference_fingerprint = str(state["fingerprint"])
        else:
            self._reference_embedding = None
            self.reference_fingerprint = None


class PCAProjection(Projection):
    """Principal component analysis with deterministic signs.

    Each component's sign is fixed so that its largest-magnitude loading is positive (the
    rule of scikit-learn's ``svd_flip`` on the right singular vectors), so a picture never
    mirrors between epochs. Computed in float64 from the eigenvectors of the smaller Gram
    matrix of the centred reference (the same subspace as its SVD).

    Args:
        n_components: number of output dimensions (2 for pictures; 50 as a t-SNE pre-step).
    """

    name = "pca"

    def __init__(self, n_components: int = 2) -> None:
        super().__init__()
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise ValueError(f"`n_components` must be an int >= 1, got {n_components!r}.")
        self.n_components = n_components
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.explained_variance_: np.ndarray | None = None

    def _fit(self, reference: np.ndarray) -> np.ndarray:
        n, d = reference.shape
        mean = reference.mean(axis=0)
        centred = reference - mean
        # Top directions from the smaller Gram matrix (D x D or N x N) with a symmetric eigen
        # solver: the same subspace as an SVD of the centred data, many times faster for the
        # tall (N >> D) or wide (D >> N) matrices seen here.
        keep = min(self.n_components, n, d)
        if d <= n:
            evals, evecs = np.linalg.eigh(centred.T @ centred)
            top = np.argsort(evals)[::-1][:keep]
            vt = evecs[:, top].T
            s = np.sqrt(np.clip(evals[top], 0.0, None))
        else:
            evals, u = np.linalg.eigh(centred @ centred.T)
            top = np.argsort(evals)[::-1][:keep]
            s = np.sqrt(np.clip(evals[top], 0.0, None))
            safe = np.where(s > 0, s, 1.0)
            vt = (centred.T @ u[:, top] / safe).T
            vt[s <= 0] = 0.0
        # Fix signs: the largest |loading| of each component is positive.
        pivot = np.argmax(np.abs(vt), axis=1)
        signs = np.sign(vt[np.arange(keep), pivot])
        signs[signs == 0] = 1.0
        vt = vt * signs[:, None]
        if keep < self.n_components:
            # Fewer directions than asked (D or N too small): pad with zero components.
            vt = np.concatenate([vt, np.zeros((self.n_components - keep, d))], axis=0)
            s = np.concatenate([s, np.zeros(self.n_components - keep)])
        self.mean_ = mean
        self.components_ = vt
        self.explained_variance_ = s**2 / max(n - 1, 1)
        return self._transform(reference)

    def _transform(self, points: np.ndarray) -> np.ndarray:
        assert self.mean_ is not None and self.components_ is not None  # fitted (internal)
        return (points - self.mean_) @ self.components_.T

    def state_dict(self) -> dict[str, Any]:
        """Fitted state: mean (D,), components (n_components, D), explained variance, as tensors."""
        state = super().state_dict()
        state["n_components"] = self.n_components
        if self.fitted:
            assert self.mean_ is not None and self.components_ is not None
            assert self.explained_variance_ is not None
            state["mean"] = torch.from_numpy(self.mean_.copy())
            state["components"] = torch.from_numpy(self.components_.copy())
            state["explained_variance"] = torch.from_numpy(self.explained_variance_.copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a fitted PCA from :meth:`state_dict`."""
        super().load_state_dict(state)
        self.n_components = int(state.get("n_components", self.n_components))
        if self.fitted:
            self.mean_ = state["mean"].double().numpy().copy()
            self.components_ = state["components"].double().numpy().copy()
            self.explained_variance_ = state["explained_variance"].double().numpy().copy()


def make_projection(
    method: str,
    *,
    seed: int = 0,
    tsne_backend: str = "auto",
    n_jobs: int = 1,
) -> Projection:
    """Build the projection named ``method`` with this package's defaults.

    Args:
        method: one of ``"pca"``, ``"tsne"``, ``"umap"``.
        seed: random seed for t-SNE and UMAP.
        tsne_backend: ``"auto"``, ``"opentsne"`` or ``"sklearn"``.
        n_jobs: threads for openTSNE.

    Returns:
        An unfitted :class:`Projection`.

    Raises:
        ValueError: unknown ``method``.
        ModuleNotFoundError: the backend's optional dependency is missing.
    """
    if method == "pca":
        return PCAProjection(2)
    from lightning_embviz.figures.neighbour_maps import TSNEProjection, UMAPProjection

    if method == "tsne":
        return TSNEProjection(seed=seed, backend=tsne_backend, n_jobs=n_jobs)
    if method == "umap":
        return UMAPProjection(seed=seed)
    raise ValueError(f"Unknown projection {method!r}; expected one of {list(METHODS)}.")
