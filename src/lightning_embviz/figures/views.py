"""Turn one validation run's embeddings and PRDC results into figures, in a frame kept across runs.

:class:`ViewBuilder` is what the callback and the ``embviz`` command use: it subsamples both
sets deterministically, projects them with each requested method into a frame fitted on the
real set (refitted only when the real set changes), and draws the figures of
:mod:`lightning_embviz.figures` (plots, per-class bars, sample galleries). No Lightning
import here.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_numpy
from lightning_embviz.engine.prdc import per_class_prdc
from lightning_embviz.engine.results import PRDCResult
from lightning_embviz.figures import plots, sample_galleries
from lightning_embviz.figures.per_class import class_metrics_figure
from lightning_embviz.figures.projections import (
    DEFAULT_MAX_SAMPLES,
    METHODS,
    Projection,
    fingerprint,
    make_projection,
    subsample_indices,
)

__all__ = ["DEFAULT_MAX_SAMPLES", "SampleTables", "SampleViews", "ViewBuilder"]


_STATE_VERSION = 1


def _features(x: ArrayLike, name: str) -> np.ndarray:
    arr = as_numpy(x, name)
    if arr.ndim != 2:
        raise ValueError(f"`{name}` must have shape (N, D), got {tuple(arr.shape)}.")
    return arr


def _parse_methods(methods: Any) -> tuple[str, ...]:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not isinstance(methods, Sequence) or not all(isinstance(m, str) for m in methods):
        raise TypeError(
            f"`ViewBuilder(methods={methods!r})`: expected a sequence of names "
            f"from {list(METHODS)}."
        )
    names = tuple(m.lower() for m in methods)
    if not names:
        raise ValueError(
            f"`ViewBuilder(methods={methods!r})`: give at least one of {list(METHODS)}."
        )
    for m in names:
        if m not in METHODS:
            raise ValueError(
                f"`ViewBuilder(methods={methods!r})`: unknown projection {m!r}; "
                f"expected names from {list(METHODS)}."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"`ViewBuilder(methods={methods!r})`: a method is listed twice.")
    return names


class ViewBuilder:
    """Build the 2-D figures of one validation run, keeping each projection's frame across runs.

    Each method's frame is fitted on the (subsampled) real set and kept: as long as the real
    set is the same, later calls only place the new fake set into it, so figures of successive
    epochs are directly comparable. PCA and openTSNE frames are saved by :meth:`state_dict`
    (plain tensors), so they survive checkpoint and resume. :meth:`build` holds a lock and is
    safe to call from a background thread.

    Args:
        methods: projections to draw, from ``("pca", "tsne", "umap")``.
        max_samples: at most this many points per set are projected and drawn (deterministic
            subsample; the metrics themselves always use every point).
        seed: seed for subsampling, t-SNE and UMAP; same inputs and seed give the same picture.
        coverage_view: also draw the k-NN-ball coverage picture (key ``"<method>_coverage"``
            for PCA if requested, else for the first method).
        tsne_backend: ``"auto"`` (openTSNE if installed, else scikit-learn), ``"opentsne"``
            (error if missing) or ``"sklearn"``.

    Raises:
        ValueError: unknown or repeated method, ``max_samples`` < 10, negative seed.
        TypeError: arguments of the wrong type.
        ModuleNotFoundError: ``"umap"`` requested without umap-learn installed, or
            ``tsne_backend="opentsne"`` without openTSNE.

    Figures returned by :meth:`build` (keys, without prefix):

    - ``"<method>"`` for each method: real vs fake scatter, missed modes and outliers marked;
    - ``"<method>_coverage"``: each real point's k-NN ball as a circle (if ``coverage_view``);
    - ``"<method>_classes"`` for each method, and ``"class_metrics"``: only with real labels.

    Example::

        >>> import numpy as np
        >>> from lightning_embviz import compute_prdc_details
        >>> rng = np.random.default_rng(0)
        >>> real, fake = rng.normal(size=(200, 16)), rng.normal(size=(200, 16)) + 0.5
        >>> views = ViewBuilder(methods=("pca",))
        >>> details = compute_prdc_details(real, fake, nearest_k=5)
        >>> figures = views.build(real, fake, details, title="epoch 3")
        >>> sorted(figures)
        ['pca', 'pca_coverage']
    """

    def __init__(
        self,
        methods: Sequence[str] = ("pca", "tsne"),
        max_samples: int = DEFAULT_MAX_SAMPLES,
        seed: int = 0,
        coverage_view: bool = True,
        *,
        tsne_backend: str = "auto",
    ) -> None:
        self.methods = _parse_methods(methods)
        if isinstance(max_samples, bool) or not isinstance(max_samples, (int, np.integer)):
            raise TypeError(f"`ViewBuilder(max_samples={max_samples!r})`: expected an int >= 10.")
        if max_samples < 10:
            raise ValueError(f"`ViewBuilder(max_samples={max_samples!r})`: expected an int >= 10.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"`ViewBuilder(seed={seed!r})`: expected an int >= 0.")
        if not isinstance(coverage_view, bool):
            raise TypeError(f"`ViewBuilder(coverage_view={coverage_view!r})`: expected a bool.")
        self.max_samples = int(max_samples)
        self.seed = int(seed)
        self.coverage_view = coverage_view
        self._projections: dict[str, Projection] = {
            m: make_projection(m, seed=self.seed, tsne_backend=tsne_backend) for m in self.methods
        }
        tsne = self._projections.get("tsne")
        if tsne is not None and not tsne.inductive:
            warnings.warn(
                "openTSNE is not installed: t-SNE views fall back to scikit-learn, which refits "
                "the map on every call (much slower, and the frame changes between calls). "
                "Install it with `pip install lightning-embviz[tsne]`.",
                UserWarning,
                stacklevel=2,
            )
        self._lock = threading.RLock()
        self.calls = 0

    @property
    def coverage_method(self) -> str:
        """The method whose frame the coverage picture uses."""
        return "pca" if "pca" in self.methods else self.methods[0]

    def projection(self, method: str) -> Projection:
        """The :class:`~lightning_embviz.projection.Projection` kept for ``method``."""
        return self._projections[method]

    def build(
        self,
        real: ArrayLike,
        fake: ArrayLike,
        details: PRDCResult,
        real_labels: ArrayLike | None = None,
        fake_labels: ArrayLike | None = None,
        title: str | None = None,
        *,
        progress: Optional[Callable[[str], None]] = None,
    ) -> dict[str, Figure]:
        """Project both sets with each method and draw the figures.

        Args:
            real: (N, D) real embeddings (the ones ``details`` was computed on).
            fake: (M, D) fake embeddings.
            details: :func:`~lightning_embviz.compute_prdc_details` of ``real`` and ``fake``.
            real_labels: (N,) class of each real point (optional).
            fake_labels: (M,) class of each fake point (optional; needs ``real_labels``).
            title: first title line of every figure (e.g. ``"epoch 3 · step 1200"``).
            progress: called with a short message before each slow step (for a command line).

        Returns:
            Figures by key (see the class docstring); always one per method.

        Raises:
            ValueError: shapes that do not match each other or ``details``.
        """
        real_np = _features(real, "real")
        fake_np = _features(fake, "fake")
        n, m = real_np.shape[0], fake_np.shape[0]
        if real_np.shape[1] != fake_np.shape[1]:
            raise ValueError(
                f"`real` and `fake` must have the same width, got {real_np.shape[1]} and "
                f"{fake_np.shape[1]}."
            )
        if details.real_covered.shape[0] != n or details.fake_ball_count.shape[0] != m:
            raise ValueError(
                f"`details` was computed on {details.real_covered.shape[0]} real and "
                f"{details.fake_ball_count.shape[0]} fake points, got {n} and {m}."
            )
        rl = None if real_labels is None else as_numpy(real_labels, "real_labels").reshape(-1)
        fl = None if fake_labels is None else as_numpy(fake_labels, "fake_labels").reshape(-1)
        if rl is not None and rl.shape[0] != n:
            raise ValueError(f"`real_labels` must have {n} entries, got {rl.shape[0]}.")
        if fl is not None and fl.shape[0] != m:
            raise ValueError(f"`fake_labels` must have {m} entries, got {fl.shape[0]}.")

        ri = subsample_indices(n, self.max_samples, self.seed)
        fi = subsample_indices(m, self.max_samples, self.seed + 1)
        real_s, fake_s = real_np[ri], fake_np[fi]
        covered = details.real_covered.cpu().numpy()[ri]
        inside = details.fake_in_real_manifold.cpu().numpy()[fi]
        radii = details.real_radii.cpu().numpy()[ri]
        metrics = details.as_dict()
        k = details.nearest_k

        figures: dict[str, Figure] = {}
        real_key = fingerprint(real_s)  # hashed once per build, shared by every method
        with self._lock:
            self.calls += 1
            for method in self.methods:
                if progress is not None:
                    progress(f"projecting {len(ri)} real + {len(fi)} fake points with {method}")
                start = time.perf_counter()
                real_2d, fake_2d = self._projections[method].project(
                    real_s, fake_s, reference_fingerprint=real_key
                )
                if progress is not None:
                    progress(f"{method} done in {time.perf_counter() - start:.1f} s")
                figures[method] = plots.projection_figure(
                    real_2d,
                    fake_2d,
                    real_covered=covered,
                    fake_in_real_manifold=inside,
                    metrics=metrics,
                    nearest_k=k,
                    method=method,
                    title=title,
                )
                if self.coverage_view and method == self.coverage_method:
                    figures[f"{method}_coverage"] = plots.coverage_figure(
                        real_2d,
                        fake_2d,
                        radii,
                        real_covered=covered,
                        metrics=metrics,
                        nearest_k=k,
                        method=method,
                        title=title,
                    )
                if rl is not None:
                    figures[f"{method}_classes"] = plots.classes_figure(
                        real_2d,
                        fake_2d,
                        rl[ri],
                        None if fl is None else fl[fi],
                        metrics=metrics,
                        nearest_k=k,
                        method=method,
                        title=title,
                    )
        if rl is not None:
            per_class = per_class_prdc(details, rl, fl)
            figures["class_metrics"] = class_metrics_figure(per_class, title=title)
        return figures

    def state_dict(self) -> dict[str, Any]:
        """Settings and each method's fitted frame, as plain tensors, strings and scalars.

        Loadable with ``torch.load(..., weights_only=True)``; never empty.
        """
        with self._lock:
            return {
                "version": _STATE_VERSION,
                "methods": ",".join(self.methods),
                "max_samples": self.max_samples,
                "seed": self.seed,
                "calls": self.calls,
                "frames": {m: p.state_dict() for m, p in self._projections.items()},
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore frames saved by :meth:`state_dict`.

        Frames of methods this builder does not draw are ignored; a frame saved with another
        seed or sample cap is not reused (it would not match the new subsample), and is
        refitted on the next :meth:`build`.

        Raises:
            ValueError: ``state`` is not a ViewBuilder state.
        """
        if not isinstance(state, dict) or "frames" not in state or "version" not in state:
            raise ValueError("`state` is not a ViewBuilder state (no 'version'/'frames' keys).")
        with self._lock:
            self.calls = int(state.get("calls", 0))
            same_sampling = (
                int(state.get("seed", -1)) == self.seed
                and int(state.get("max_samples", -1)) == self.max_samples
            )
            if not same_sampling:
                return
            for method, frame in state["frames"].items():
                if method in self._projections:
                    self._projections[method].load_state_dict(frame)


class SampleViews:
    """What one validation run shows per sample: the two galleries and the per-sample tables.

    Built by the callback from the engine's per-sample results and the few thumbnails it
    fetched; :meth:`build` runs in the figure worker.

    Args:
        details: The run's :class:`~lightning_embviz.PRDCResult` (on the CPU).
        real_index: (N,) dataset index of each real row.
        fake_index: (M,) dataset index of each fake row.
        real_labels: (N,) labels or None.
        fake_labels: (M,) labels or None.
        missed: Rows of the shown missed reals (``samples.missed_real_order``, cut).
        outliers: Rows of the shown outlier fakes (``samples.outlier_fake_order``, cut).
        deepest: Rows of the fakes shown for contrast (``samples.deepest_fake_order``, cut).
        real_images: (len(missed), C, h, w) images of the shown reals, or None (no gallery).
        fake_images: (len(outliers) + len(deepest), C, h, w) images, or None.
        tables: Also build the per-sample tables.
        columns: Tiles per gallery row, or None (chosen from the tiles shown). The callback
            passes the choice for its ``gallery_size``, so the galleries keep their width
            from one run to the next.
    """

    def __init__(
        self,
        details: PRDCResult,
        *,
        real_index: Tensor,
        fake_index: Tensor,
        real_labels: Optional[Tensor],
        fake_labels: Optional[Tensor],
        missed: Tensor,
        outliers: Tensor,
        deepest: Tensor,
        real_images: Optional[Tensor],
        fake_images: Optional[Tensor],
        tables: bool,
        columns: Optional[int] = None,
    ) -> None:
        self.details = details
        self.real_index, self.fake_index = real_index, fake_index
        self.real_labels, self.fake_labels = real_labels, fake_labels
        self.missed, self.outliers, self.deepest = missed, outliers, deepest
        self.real_images, self.fake_images = real_images, fake_images
        self.tables = tables
        self.columns = columns
        # More per-fake columns for the fakes' table, (M,) each (e.g. nearest_train_index).
        self.fake_columns: dict[str, Any] = {}

    def build(self, title: Optional[str]) -> dict[str, Any]:
        """The galleries and tables of this run.

        Returns:
            ``"missed_real"`` / ``"outlier_fake"`` figures (when images were given) and, with
            ``tables``, a :class:`SampleTables` under ``"samples"``.
        """
        from lightning_embviz import samples

        d: Any = self.details
        out: dict[str, Any] = {}
        real_labels = None if self.real_labels is None else as_numpy(self.real_labels)
        fake_labels = None if self.fake_labels is None else as_numpy(self.fake_labels)
        if self.real_images is not None:
            rows = self.missed
            out["missed_real"] = sample_galleries.missed_real_figure(
                self.real_images,
                as_numpy(d.real_nearest_fake_ratio)[rows.numpy()],
                num_missed=int((~d.real_covered).sum()),
                num_real=len(d.real_covered),
                indices=as_numpy(self.real_index)[rows.numpy()],
                labels=None if real_labels is None else real_labels[rows.numpy()],
                class_counts=None
                if real_labels is None
                else samples.missed_per_class(d, real_labels),
                nearest_k=d.nearest_k,
                title=title,
                columns=self.columns,
            )
        if self.fake_images is not None:
            out_rows, deep = self.outliers.numpy(), self.deepest.numpy()
            n_out = len(out_rows)
            fake_index = as_numpy(self.fake_index)
            out["outlier_fake"] = sample_galleries.outlier_fake_figure(
                self.fake_images[:n_out],
                as_numpy(d.fake_nearest_ball_ratio)[out_rows],
                num_outliers=int((d.fake_ball_count == 0).sum()),
                num_fake=len(d.fake_ball_count),
                indices=fake_index[out_rows],
                labels=None if fake_labels is None else fake_labels[out_rows],
                deepest_images=self.fake_images[n_out:] if len(deep) else None,
                deepest_counts=as_numpy(d.fake_ball_count)[deep] if len(deep) else None,
                deepest_indices=fake_index[deep] if len(deep) else None,
                deepest_labels=None if fake_labels is None or not len(deep) else fake_labels[deep],
                nearest_k=d.nearest_k,
                title=title,
                columns=self.columns,
            )
        if self.tables:
            real_rows, fake_rows = samples.sample_tables(
                d, self.real_index, self.fake_index, real_labels, fake_labels
            )
            fake_rows.update({k: as_numpy(v) for k, v in self.fake_columns.items()})
            out["samples"] = SampleTables(
                {"samples_real": real_rows, "samples_fake": fake_rows},
                samples.markdown_summary(real_rows, fake_rows),
            )
        return out


class SampleTables:
    """Per-sample tables (name -> columns) and their markdown summary, ready for the loggers."""

    def __init__(self, tables: dict[str, Any], markdown: str) -> None:
        self.tables = tables
        self.markdown = markdown
