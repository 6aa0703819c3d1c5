"""What a comparison returns: :class:`PRDCResult` and the reductions that make its numbers.

The single-process and the distributed faces both end here, so the four numbers are reduced
by one function (:func:`prdc_metrics`) and assembled by one (:func:`assemble_results`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_embviz._keys import PRDC_KEYS
from lightning_embviz.engine.cross import CrossTests

__all__ = ["PRDCResult", "assemble_results", "prdc_metrics"]


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


def prdc_metrics(count: Tensor, covered: Tensor, recalled: Tensor, k: int) -> dict[str, float]:
    """The four numbers from the per-sample tests of one k, bit-identical to ``prdc``'s.

    Args:
        count: (M,) int64 real balls holding each fake.
        covered: (N,) bool, a fake lies inside this real's ball.
        recalled: (N,) bool, this real lies inside some fake ball.
        k: the k of the balls.

    Returns:
        ``{"precision": ..., "recall": ..., "density": ..., "coverage": ...}``.
    """
    # Final reductions in NumPy with the reference's own operations, so that the floats are
    # bit-identical to prdc's, not just the counts.
    count_np = count.cpu().numpy()
    precision = float((count_np > 0).mean())
    recall = float(recalled.cpu().numpy().mean())
    density = float((1.0 / float(k)) * count_np.mean())
    coverage = float(covered.cpu().numpy().mean())
    return dict(zip(PRDC_KEYS, (precision, recall, density, coverage)))


def assemble_results(
    ks: tuple[int, ...], real_radii: Tensor, fake_radii: Tensor, tests: CrossTests
) -> dict[int, PRDCResult]:
    """One :class:`PRDCResult` per k from the radii ((K, N), (K, M)) and the detailed tests.

    Args:
        ks: the k, in the order of the radii's first dimension.
        real_radii: (K, N) float64 radii of the reals.
        fake_radii: (K, M) float64 radii of the fakes.
        tests: the real-fake pass's results with ``details=True``.

    Returns:
        ``{k: PRDCResult}`` in the order of ``ks``.
    """
    recalled = tests.real_recalled
    nearest, nearest_index = tests.real_nearest, tests.real_nearest_index
    ratio, ratio_index = tests.fake_ratio, tests.fake_ratio_index
    assert recalled is not None and nearest is not None and nearest_index is not None
    assert ratio is not None and ratio_index is not None
    out = {}
    for t, k in enumerate(ks):
        radii = real_radii[t]
        out[k] = PRDCResult(
            **prdc_metrics(tests.fake_ball_count[t], tests.real_covered[t], recalled[t], k),
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
