"""Precision, recall, density, coverage and the Fréchet distance, in pure torch.

No Lightning import here: these functions are the engine behind the callback and the
``embviz`` command, and they are usable on their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import PRDC_KEYS, ArrayLike, as_features, check_int
from lightning_embviz._knn import (
    cross_ball_tests,
    kth_neighbour_radii,
    pair_mode,
    shared_frames,
)

__all__ = ["PRDCResult", "compute_prdc", "compute_prdc_details", "frechet_distance"]


def _validate_pair(real: Any, fake: Any, nearest_k: Any) -> tuple[Tensor, Tensor, int]:
    k = check_int(nearest_k, "nearest_k", minimum=1)
    r = as_features(real, "real_features")
    f = as_features(fake, "fake_features")
    if r.device.type == "mps":  # no float64 on MPS: the exact re-checks run on the CPU
        r, f = r.cpu(), f.cpu()
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"`real_features` and `fake_features` must have the same width D, got "
            f"{r.shape[1]} and {f.shape[1]} (shapes {tuple(r.shape)} and {tuple(f.shape)})."
        )
    if r.device != f.device:
        raise ValueError(
            f"`real_features` and `fake_features` must be on the same device, got {r.device} "
            f"and {f.device}."
        )
    for name, t in (("real_features", r), ("fake_features", f)):
        if k >= t.shape[0]:
            raise ValueError(
                f"`nearest_k={k}` needs more than {k} samples in `{name}`, got {t.shape[0]}. "
                f"Use more samples or a smaller `nearest_k` (at most {t.shape[0] - 1})."
            )
    return r, f, k


# Default block sizes: square blocks of 2048 for the symmetric radius pass (16 MiB of
# float32 distances) and ~64 MiB row blocks for the real-fake pass. Large enough for the
# GEMM to run near peak throughput, small enough to keep memory O((N + M) * chunk).
_RADIUS_BLOCK = 2048
_CROSS_BLOCK_ELEMENTS = 8 << 20


def _cross_chunk(n_cols: int) -> int:
    return int(min(max(_CROSS_BLOCK_ELEMENTS // max(n_cols, 1), 64), 8192))


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

    @property
    def fake_in_real_manifold(self) -> Tensor:
        """(M,) bool, the fake lies inside at least one real ball (precision)."""
        return self.fake_ball_count > 0

    def as_dict(self) -> dict[str, float]:
        """The four metrics as a plain dict, like ``prdc.compute_prdc``."""
        return {key: getattr(self, key) for key in PRDC_KEYS}


def compute_prdc_details(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    nearest_k: int = 5,
    *,
    chunk_size: int | None = None,
) -> PRDCResult:
    """Compute PRDC and keep the per-sample results (which reals are covered, ball counts).

    Same arguments and same values as :func:`compute_prdc`; see there for the definitions.

    Returns:
        A :class:`PRDCResult`. Per-sample tensors live on the input's device.
    """
    real, fake, k = _validate_pair(real_features, fake_features, nearest_k)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"`chunk_size` must be a positive int or None, got {chunk_size!r}.")
    radius_block = chunk_size or _RADIUS_BLOCK
    cross_block = chunk_size or _cross_chunk(fake.shape[0])
    real_frame, fake_frame, cross_frame = shared_frames(real, fake, cross_block)
    real_radii = kth_neighbour_radii(
        real, k, pair_mode(real.dtype, real.dtype), radius_block, real_frame
    )
    fake_radii = kth_neighbour_radii(
        fake, k, pair_mode(fake.dtype, fake.dtype), radius_block, fake_frame
    )
    fake_count, covered, recalled = cross_ball_tests(
        real,
        fake,
        real_radii,
        fake_radii,
        pair_mode(real.dtype, fake.dtype),
        cross_block,
        cross_frame,
    )
    # Final reductions in NumPy with the reference's own operations, so that the floats are
    # bit-identical to prdc's, not just the counts.
    count_np = fake_count.cpu().numpy()
    covered_np = covered.cpu().numpy()
    recalled_np = recalled.cpu().numpy()
    precision = float((count_np > 0).mean())
    recall = float(recalled_np.mean())
    density = float((1.0 / float(k)) * count_np.mean())
    coverage = float(covered_np.mean())
    return PRDCResult(
        precision=precision,
        recall=recall,
        density=density,
        coverage=coverage,
        nearest_k=k,
        real_radii=real_radii,
        fake_radii=fake_radii,
        real_covered=covered,
        real_recalled=recalled,
        fake_ball_count=fake_count,
    )


def compute_prdc(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    nearest_k: int = 5,
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Precision, recall, density and coverage of a fake set against a real set.

    A drop-in replacement for ``prdc.compute_prdc`` (Naeem et al., ICML 2020): the same
    counts on every input, computed in chunks on the tensors' device, never holding an
    (N, N) matrix. With real set R (N points), fake set F (M points), Euclidean distance d
    and r_k(x) the distance from x to its k-th nearest neighbour in its own set (not counting
    itself; exact duplicates count as neighbours at distance 0):

    - precision = mean_{f in F} 1[ exists x in R : d(f, x) < r_k(x) ]
    - recall    = mean_{x in R} 1[ exists f in F : d(x, f) < r_k(f) ]
    - density   = (1/k) mean_{f in F} #{ x in R : d(f, x) < r_k(x) }
    - coverage  = mean_{x in R} 1[ min_f d(x, f) < r_k(x) ]

    Distances are rounded exactly as the reference rounds them (float32 when both inputs
    are float32, float64 otherwise, half precision included, as scikit-learn does) and
    every comparison near a threshold is re-checked in float64, so results do not depend on
    chunk size, thread count, device or row order.

    Args:
        real_features: (N, D) array or tensor of real embeddings, any float dtype.
        fake_features: (M, D) array or tensor of generated embeddings, same D.
        nearest_k: k of the k-NN balls, 1 <= k < min(N, M).
        chunk_size: rows per block (memory O((N + M) * chunk_size)); None picks one.

    Returns:
        ``{"precision": float, "recall": float, "density": float, "coverage": float}``.

    Raises:
        TypeError: if an input is not an array/tensor, or ``nearest_k`` is not an int.
        ValueError: on shapes other than (N, D), different widths, empty sets, NaN/Inf
            rows, or ``nearest_k`` outside ``[1, min(N, M) - 1]``.

    Example::

        >>> import numpy as np
        >>> from lightning_embviz import compute_prdc
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(1000, 64)).astype(np.float32)
        >>> fake = rng.normal(size=(1000, 64)).astype(np.float32)
        >>> sorted(compute_prdc(real, fake, nearest_k=5))
        ['coverage', 'density', 'precision', 'recall']
    """
    return compute_prdc_details(
        real_features, fake_features, nearest_k, chunk_size=chunk_size
    ).as_dict()


def _covariance64(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.to(torch.float64)
    mu = x.mean(dim=0)
    xc = x - mu
    return mu, xc


def _sqrt_psd(mat: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(mat)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(real: ArrayLike, fake: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (the FID formula).

    ``FD = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))`` with unbiased
    covariances (``np.cov`` convention). The trace term is computed without a matrix square
    root of a non-symmetric product: as the nuclear norm of ``X_r X_f^T`` when the sets are
    smaller than the width (exact for singular covariances, N < D), otherwise through the
    eigenvalues of the symmetric ``L^T S_f L`` with ``S_r = L L^T`` (or of
    ``S_r^(1/2) S_f S_r^(1/2)`` when ``S_r`` is singular). Computed in float64.

    Args:
        real: (N, D) array or tensor, N >= 2.
        fake: (M, D) array or tensor, M >= 2, same D.

    Returns:
        The Fréchet distance as a Python float (>= 0).

    Raises:
        ValueError: on shapes other than (N, D), different widths, fewer than 2 rows, or
            NaN/Inf values.
    """
    r = as_features(real, "real")
    f = as_features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"`real` and `fake` must have the same width D, got {r.shape[1]} and {f.shape[1]}."
        )
    for name, t in (("real", r), ("fake", f)):
        if t.shape[0] < 2:
            raise ValueError(f"`{name}` needs at least 2 rows for a covariance, got {t.shape[0]}.")
    if r.device != f.device:
        f = f.to(r.device)
    mu_r, xr = _covariance64(r)
    mu_f, xf = _covariance64(f)
    nr, nf, width = r.shape[0] - 1, f.shape[0] - 1, r.shape[1]
    diff = mu_r - mu_f
    tr_r = float((xr * xr).sum()) / nr
    tr_f = float((xf * xf).sum()) / nf
    if min(r.shape[0], f.shape[0]) < width:
        # tr((S_r S_f)^1/2) = sum of singular values of X_r X_f^T / sqrt(nr nf).
        cross = (xr @ xf.T) / np.sqrt(nr * nf)
        tr_cov = float(torch.linalg.svdvals(cross).sum())
    else:
        s_r = (xr.T @ xr) / nr
        s_f = (xf.T @ xf) / nf
        # S_r S_f is similar to the symmetric L^T S_f L (S_r = L L^T, Cholesky), whose
        # eigenvalues alone are needed; a singular S_r falls back to S_r^1/2 S_f S_r^1/2.
        chol, info = torch.linalg.cholesky_ex(s_r)
        if int(info) == 0:
            mid = chol.T @ s_f @ chol
        else:
            root = _sqrt_psd(s_r)
            mid = root @ s_f @ root
        mid = (mid + mid.T) / 2
        tr_cov = float(torch.linalg.eigvalsh(mid).clamp_min(0).sqrt().sum())
    value = float(diff @ diff) + tr_r + tr_f - 2.0 * tr_cov
    return max(value, 0.0)
