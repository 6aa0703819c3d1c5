"""The exact engine: chunked nearest-neighbour kernels with exact decisions.

Everything here answers questions of the form "is ``d(a, b) < r``?" or "what is the k-th
smallest ``d(a, ·)``?" exactly as the reference ``prdc`` package would, without ever holding
an (N, N) or (N, M) matrix in memory.

How exactness is obtained
-------------------------
The reference computes squared distances in float64 and, when both inputs are float32, rounds
them to float32 before taking a float32 square root (scikit-learn's ``euclidean_distances``;
every other dtype, float16 included, stays in float64). We call that rounded distance the
*key* of a pair: ``key(s) = sqrt32(fl32(s))`` for float32 pairs and ``key(s) = sqrt64(s)``
otherwise, where ``s`` is the exact squared distance.

1. A fast pass computes every squared distance with GEMMs on data that has been centred
   (float64 mean) and scaled by a power of two, so the arithmetic sees numbers of order one
   whatever the offset or the scale of the input. The symmetric real-real and fake-fake
   passes use float32 and compute only the blocks on and above the diagonal; the real-fake
   pass uses bfloat16 (float32 accumulation) where that is proven sound and faster.
2. The GEMM error has a proven bound ``tau * (|a|^2 + |b|^2)`` (``tau`` from the width D and
   the precision). Every decision whose estimate lies farther than that bound (plus the
   rounding of the key) from its threshold is final.
3. The few pairs inside the band are recomputed from the original values in float64,
   directly from coordinate differences, and decided on their exact key.

The fast pass therefore costs what a plain distance computation costs, and the answers do
not depend on chunk size, thread count, device or row order.

Radii for several k, and bounded memory
---------------------------------------
The radius pass keeps, per row, the pairs that may be among its k nearest for the largest
k. Each row's bound (its k-th smallest estimate so far, plus the band) tightens after every
block, and the held pairs are pruned against it, so memory stays O(N k) whatever N / block.
The k nearest for every smaller k are among the same pairs: one pass serves a sweep over k.
The real-fake pass likewise tests every k on one block of estimates: only pairs inside the
largest ball get per-k work.

Where the reference is not exact itself
---------------------------------------
The reference's float64 ``|x|^2 + |y|^2 - 2 x.y`` loses digits to cancellation when the
data sit far from the origin compared with their spread; once that error reaches the float32
rounding step of a distance, its float32 distances differ from the correctly rounded exact
ones that are computed here (measured by ``benchmarks/exactness_boundary.py``: for float32
Gaussian data, identical results up to an offset of 1e4 times the spread; from 1e5 on, most
of the reference's distances are off by tens to thousands of float32 ulps).

Where each step lives
---------------------
- :mod:`~lightning_embviz.engine.exact`: keys, exact squared distances, their margins.
- :mod:`~lightning_embviz.engine.frames`: the centred, power-of-two-scaled float32 frames.
- :mod:`~lightning_embviz.engine.gemm`: the fast pass's estimates, error bound and precision.
- :mod:`~lightning_embviz.engine.limits`: the memory bounds of the passes.
- :mod:`~lightning_embviz.engine.radii`: the radius pass (:func:`neighbour_radii`).
- :mod:`~lightning_embviz.engine.cross`: the real-fake pass (:func:`cross_ball_tests`),
  with :mod:`~lightning_embviz.engine.nearest` riding on it for the nearest searches.

What is built on the passes
---------------------------
- :mod:`~lightning_embviz.engine.inputs`: the argument checks (``nearest_k`` once, set
  sizes, chunk sizes, pairs of sets), one place per rule.
- :mod:`~lightning_embviz.engine.reference`: :class:`RealReference` and its seam
  :class:`~lightning_embviz.engine.reference.ReferenceCore` (the real set, its frame and
  radii, the passes against a fake set), which every face below uses;
  :mod:`~lightning_embviz.engine.reference_file` its file format;
  :mod:`~lightning_embviz.engine.results` :class:`PRDCResult` and the four reductions.
- :mod:`~lightning_embviz.engine.prdc`: ``compute_prdc``, ``compute_prdc_details``,
  ``per_class_prdc``; :mod:`~lightning_embviz.engine.distributed`: the same shared by ranks;
  :mod:`~lightning_embviz.engine.intervals`: confidence intervals (and the split-size rule).
- :mod:`~lightning_embviz.engine.kernels` (Vendi, KID), :mod:`~lightning_embviz.engine.frechet`
  (FD, FD-infinity), :mod:`~lightning_embviz.engine.balls` (clipped density and coverage,
  realism, rarity).

The public faces (:mod:`lightning_embviz.metrics`, ``.suite``, ``.intervals``,
``.distributed``, ``.reference``) re-export these names.
"""

from lightning_embviz.engine.cross import CrossTests, cross_ball_tests
from lightning_embviz.engine.exact import PairMode, exact_squared_distances, pair_mode, round_key
from lightning_embviz.engine.frames import Frame, frame_scale, max_abs_centered, mean64, to_frame
from lightning_embviz.engine.limits import LIMITS, Limits
from lightning_embviz.engine.radii import neighbour_radii

__all__ = [
    "LIMITS",
    "CrossTests",
    "Frame",
    "Limits",
    "PairMode",
    "cross_ball_tests",
    "exact_squared_distances",
    "frame_scale",
    "max_abs_centered",
    "mean64",
    "neighbour_radii",
    "pair_mode",
    "round_key",
    "to_frame",
]
