"""Neighbour-embedding maps: t-SNE and UMAP behind the :class:`Projection` interface.

- :class:`TSNEProjection`: openTSNE when installed (the real map is fitted once, new points
  are placed into it), scikit-learn's ``TSNE`` otherwise (fitted jointly on every call).
- :class:`UMAPProjection`: umap-learn (optional extra ``umap``).

The optional libraries are imported inside the methods that need them; a missing one is an
error naming the extra to install. No Lightning import here.
"""

from __future__ import annotations

import importlib.util
import inspect
import warnings
from typing import Any

import numpy as np
import torch

from lightning_embviz._arrays import ArrayLike
from lightning_embviz.figures.projections import TSNE_BACKENDS, PCAProjection, Projection

__all__ = ["TSNEProjection", "UMAPProjection"]


def _module_available(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


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
