"""2-D projections behind one small interface: fit on a reference, transform new points.

Every projection here is fitted on a *reference* set (the real embeddings) and then places
other sets (the generated embeddings) into the same frame, so that pictures drawn at
different epochs, or for different checkpoints, are comparable.

- :class:`PCAProjection`: fast, deterministic signs; its fitted state is plain tensors.
- :class:`TSNEProjection`: openTSNE when installed (the real map is fitted once, new points
  are placed into it), scikit-learn's ``TSNE`` otherwise (fitted jointly on every call).
- :class:`UMAPProjection`: umap-learn (optional extra ``umap``).

No Lightning import here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import warnings
from abc import ABC, abstractmethod
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_numpy

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "METHODS",
    "PCAProjection",
    "Projection",
    "TSNEProjection",
    "UMAPProjection",
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


def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


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


def _opentsne_available() -> bool:
    return _module_available("openTSNE")


class TSNEProjection(Projection):
    """t-SNE with a map fitted once on the reference and new points placed into it.

    With openTSNE (``pip install lightning-embviz[tsne]``) the reference map is optimised
    once; later sets are placed into it with openTSNE's ``transform`` (each new point is
    optimised against the fixed map, so identical points land on identical places). Without
    openTSNE, scikit-learn's ``TSNE`` is used and cannot place new points: every
    :meth:`project` call fits the reference and the other sets jointly (slower, and the frame
    changes between calls). The data are reduced to ``pca_dims`` dimensions by PCA first.

    Args:
        perplexity: t-SNE perplexity (lowered automatically for very small sets).
        n_iter: optimisation iterations after early exaggeration.
        early_exaggeration_iter: early exaggeration iterations.
        transform_iter: iterations when placing new points (openTSNE only).
        pca_dims: PCA dimensions before t-SNE (0 disables the PCA step).
        seed: random seed; the same inputs and seed give the same picture.
        backend: ``"auto"`` (openTSNE if installed, else scikit-learn), ``"opentsne"`` or
            ``"sklearn"``.
        n_jobs: threads for openTSNE.

    Raises:
        ValueError: on an unknown backend or out-of-range numbers.
        ModuleNotFoundError: ``backend="opentsne"`` without openTSNE installed.
    """

    name = "tsne"

    def __init__(
        self,
        perplexity: float = 30.0,
        n_iter: int = 250,
        early_exaggeration_iter: int = 125,
        transform_iter: int = 100,
        pca_dims: int = 50,
        seed: int = 0,
        backend: str = "auto",
        n_jobs: int = 1,
    ) -> None:
        super().__init__()
        if backend not in TSNE_BACKENDS:
            raise ValueError(f"`backend={backend!r}` is not one of {list(TSNE_BACKENDS)}.")
        if not (isinstance(perplexity, (int, float)) and perplexity > 0):
            raise ValueError(f"`perplexity` must be a positive number, got {perplexity!r}.")
        for arg, value, low in (
            ("n_iter", n_iter, 1),
            ("early_exaggeration_iter", early_exaggeration_iter, 0),
            ("transform_iter", transform_iter, 1),
            ("pca_dims", pca_dims, 0),
            ("n_jobs", n_jobs, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{arg}` must be an int >= {low}, got {value!r}.")
        if backend == "opentsne" and not _opentsne_available():
            raise ModuleNotFoundError(
                "`TSNEProjection(backend='opentsne')` requires openTSNE. "
                "Install it with `pip install lightning-embviz[tsne]`."
            )
        if backend == "auto":
            backend = "opentsne" if _opentsne_available() else "sklearn"
        self.backend = backend
        self.inductive = backend == "opentsne"
        self.perplexity = float(perplexity)
        self.n_iter = n_iter
        self.early_exaggeration_iter = early_exaggeration_iter
        self.transform_iter = transform_iter
        self.pca_dims = pca_dims
        self.seed = int(seed)
        self.n_jobs = n_jobs
        self._pca: PCAProjection | None = None
        self._reduced_reference: np.ndarray | None = None
        self._embedding: Any = None  # openTSNE.TSNEEmbedding

    def _reduce_fit(self, x: np.ndarray) -> np.ndarray:
        if self.pca_dims and x.shape[1] > self.pca_dims:
            self._pca = PCAProjection(self.pca_dims)
            return self._pca.fit_transform(x)
        self._pca = None
        return x

    def _reduce(self, x: np.ndarray) -> np.ndarray:
        return self._pca.transform(x) if self._pca is not None else x

    def _perplexity_for(self, n: int) -> float:
        return float(max(1.0, min(self.perplexity, (n - 1) / 3.0)))

    def _fit(self, reference: np.ndarray) -> np.ndarray:
        n = reference.shape[0]
        if n < 4:
            raise ValueError(f"t-SNE needs at least 4 points, got {n}.")
        reduced = self._reduce_fit(reference)
        perplexity = self._perplexity_for(n)
        if self.backend == "opentsne":
            from openTSNE import TSNE

            tsne = TSNE(
                n_components=2,
                perplexity=perplexity,
                n_iter=self.n_iter,
                early_exaggeration_iter=self.early_exaggeration_iter,
                initialization="pca",
                neighbors="annoy" if n > 1000 else "exact",
                negative_gradient_method="fft" if n > 1000 else "bh",
                random_state=self.seed,
                n_jobs=self.n_jobs,
                verbose=False,
            )
            embedding = tsne.fit(reduced)
            self._embedding = embedding
            self._reduced_reference = reduced.astype(np.float32)
            return np.asarray(embedding, dtype=np.float64)
        from sklearn.manifold import TSNE as SkTSNE

        iters = max(self.n_iter + self.early_exaggeration_iter, 250)
        # scikit-learn renamed `n_iter` to `max_iter` in 1.5.
        iter_arg = "max_iter" if "max_iter" in inspect.signature(SkTSNE).parameters else "n_iter"
        tsne_sk = SkTSNE(
            n_components=2,
            perplexity=perplexity,
            init="pca",
            learning_rate="auto",
            random_state=self.seed,
            **{iter_arg: iters},
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            out = tsne_sk.fit_transform(reduced)
        return np.asarray(out, dtype=np.float64)

    def _ensure_embedding(self) -> Any:
        if self._embedding is None:
            # Restored from a checkpoint: rebuild the map around the saved coordinates. The
            # affinities are recomputed from the saved reduced reference (a k-NN search, not
            # an optimisation), so the frame is exactly the saved one.
            from openTSNE import TSNEEmbedding, affinity

            if self._reduced_reference is None:
                raise RuntimeError("TSNEProjection has no fitted map to place points into.")
            ref = self._reduced_reference.astype(np.float64)
            n = ref.shape[0]
            aff = affinity.PerplexityBasedNN(
                ref,
                perplexity=self._perplexity_for(n),
                method="annoy" if n > 1000 else "exact",
                random_state=self.seed,
                n_jobs=self.n_jobs,
            )
            self._embedding = TSNEEmbedding(
                self.reference_embedding.copy(),
                aff,
                negative_gradient_method="fft" if n > 1000 else "bh",
                random_state=self.seed,
                n_jobs=self.n_jobs,
            )
        return self._embedding

    def _transform(self, points: np.ndarray) -> np.ndarray:
        embedding = self._ensure_embedding()
        reduced = self._reduce(points)
        placed = embedding.transform(reduced, n_iter=self.transform_iter)
        return np.asarray(placed, dtype=np.float64)

    def state_dict(self) -> dict[str, Any]:
        """The map (reference coordinates), the PCA pre-step and the reduced reference."""
        state = super().state_dict()
        state["backend"] = self.backend
        if self.fitted and self.backend == "opentsne" and self._reduced_reference is not None:
            state["reduced_reference"] = torch.from_numpy(self._reduced_reference.copy())
            state["pca"] = self._pca.state_dict() if self._pca is not None else {"none": True}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a map saved by :meth:`state_dict` (only for the same backend)."""
        if state.get("backend") != self.backend or "reduced_reference" not in state:
            # A map from another backend (or none) cannot be reused; refit on next use.
            self._reference_embedding = None
            self.reference_fingerprint = None
            self._embedding = None
            return
        super().load_state_dict(state)
        self._reduced_reference = state["reduced_reference"].float().numpy().copy()
        pca_state = state["pca"]
        if "none" in pca_state:
            self._pca = None
        else:
            self._pca = PCAProjection(int(pca_state["n_components"]))
            self._pca.load_state_dict(pca_state)
        self._embedding = None


class UMAPProjection(Projection):
    """UMAP through umap-learn (``pip install lightning-embviz[umap]``).

    Fitted on the reference; new points are placed with UMAP's ``transform``. With a fixed
    ``seed`` umap-learn runs single-threaded and is deterministic. Only the coordinates go
    into :meth:`state_dict`; after a restore the map is refitted on the next reference
    (deterministic, so the frame is the same).

    Args:
        n_neighbors: UMAP's ``n_neighbors`` (lowered for very small sets).
        min_dist: UMAP's ``min_dist``.
        seed: random seed.

    Raises:
        ModuleNotFoundError: umap-learn is not installed.
    """

    name = "umap"

    def __init__(self, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if not _module_available("umap"):
            raise ModuleNotFoundError(
                "The 'umap' projection requires umap-learn. "
                "Install it with `pip install lightning-embviz[umap]`."
            )
        if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, int) or n_neighbors < 2:
            raise ValueError(f"`n_neighbors` must be an int >= 2, got {n_neighbors!r}.")
        self.n_neighbors = n_neighbors
        self.min_dist = float(min_dist)
        self.seed = int(seed)
        self._model: Any = None

    def _fit(self, reference: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap

            n = reference.shape[0]
            if n < 4:
                raise ValueError(f"UMAP needs at least 4 points, got {n}.")
            self._model = umap.UMAP(
                n_components=2,
                n_neighbors=min(self.n_neighbors, n - 1),
                min_dist=self.min_dist,
                random_state=self.seed,
                init="spectral" if n > 10 else "random",
            )
            return np.asarray(self._model.fit_transform(reference), dtype=np.float64)

    def _transform(self, points: np.ndarray) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("UMAPProjection was restored without a model; refit it first.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(self._model.transform(points), dtype=np.float64)

    def project(
        self, reference: ArrayLike, *others: ArrayLike, reference_fingerprint: str | None = None
    ) -> list[np.ndarray]:
        """See :meth:`Projection.project`; a restored map without a model is refitted."""
        if self.fitted and self._model is None:
            self._reference_embedding = None
        return super().project(reference, *others, reference_fingerprint=reference_fingerprint)


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
    if method == "tsne":
        return TSNEProjection(seed=seed, backend=tsne_backend, n_jobs=n_jobs)
    if method == "umap":
        return UMAPProjection(seed=seed)
    raise ValueError(f"Unknown projection {method!r}; expected one of {list(METHODS)}.")
