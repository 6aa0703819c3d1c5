"""Chunked nearest-neighbour kernels with exact decisions.

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
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "CrossTests",
    "Frame",
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

PairMode = str  # "f32" or "f64": the precision the reference rounds a pair's distance to

_U32 = 2.0**-24  # unit round-off of float32
# Keys are compared through squared thresholds; this relative margin covers the rounding of
# the key (fl32 of s, then a float32 sqrt) with room to spare. The f64 margin covers sqrt64.
_KEY_MARGIN = {"f32": 2.0**-19, "f64": 2.0**-47}
# Absolute margin on squared distances (unscaled units) for the float32 subnormal range.
_KEY_ABS_MARGIN = {"f32": 2.0**-140, "f64": 0.0}


def pair_mode(a_dtype: torch.dtype, b_dtype: torch.dtype) -> PairMode:
    """Precision the reference rounds distances between two sets to.

    scikit-learn keeps float32 only when both operands are float32 and works in float64
    otherwise, half precision included: a float16 array goes through its float64 path, so
    its distances are float64 values, not float32 ones. bfloat16 (which NumPy lacks) is
    treated the same way: the reference run on the float64 values of the same numbers.
    """
    return "f32" if a_dtype == torch.float32 and b_dtype == torch.float32 else "f64"


def round_key(sq: Tensor, mode: PairMode) -> Tensor:
    """Turn exact squared distances (float64) into the reference's distance values.

    Args:
        sq: exact squared distances, float64, any shape.
        mode: ``"f32"`` or ``"f64"``.

    Returns:
        Float64 tensor of distances rounded as the reference rounds them.
    """
    sq = sq.clamp_min(0.0)
    if mode == "f32":
        # fl32(s), then a correctly rounded float32 square root. torch's float32 sqrt on the
        # CPU is not correctly rounded (1 ulp off for ~15% of inputs); the float64 sqrt
        # rounded to float32 is (double rounding is innocuous for sqrt from binary64).
        rounded = sq.to(torch.float32).to(torch.float64)
        return torch.sqrt(rounded).to(torch.float32).to(torch.float64)
    return torch.sqrt(sq)


def exact_squared_distances(a: Tensor, b: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Squared distances of the pairs ``(a[rows[p]], b[cols[p]])`` from coordinate differences.

    Computed in float64 from the original values, in blocks so that memory stays bounded.

    Args:
        a: (N, D) tensor.
        b: (M, D) tensor.
        rows: (P,) int64 indices into ``a``.
        cols: (P,) int64 indices into ``b``.

    Returns:
        (P,) float64 tensor.
    """
    p = rows.numel()
    out = torch.empty(p, dtype=torch.float64, device=a.device)
    if p == 0:
        return out
    width = max(a.shape[1], 1)
    block = min(p, max(1, (1 << 19) // width))  # ~4 MiB of float64 per block
    # One set of buffers for all blocks: fresh multi-MiB tensors per block cost a page fault
    # per 4 KiB (twice as slow as the arithmetic).
    pick_a = torch.empty(block, a.shape[1], dtype=a.dtype, device=a.device)
    pick_b = torch.empty(block, b.shape[1], dtype=b.dtype, device=a.device)
    diff = torch.empty(block, a.shape[1], dtype=torch.float64, device=a.device)
    other = torch.empty_like(diff)
    for start in range(0, p, block):
        r = rows[start : start + block]
        c = cols[start : start + block]
        n = r.numel()
        torch.index_select(a, 0, r, out=pick_a[:n])
        torch.index_select(b, 0, c, out=pick_b[:n])
        diff[:n].copy_(pick_a[:n])
        other[:n].copy_(pick_b[:n])
        diff[:n].sub_(other[:n]).square_()
        if n == 1:
            # torch splits a one-row sum of >= 32768 values over its threads (the value then
            # depends on the thread count); two rows are summed one row per thread.
            out[start] = diff[:1].expand(2, -1).contiguous().sum(dim=1)[0]
        else:
            torch.sum(diff[:n], dim=1, out=out[start : start + n])
    return out


@dataclass
class Frame:
    """Float32 copies of one or two sets in a shared, well-conditioned frame."""

    a32: Tensor  # (N, D) float32, (a - center) * scale
    b32: Tensor  # (M, D) float32, (b - center) * scale
    a_sq: Tensor  # (N,) float64 squared norms of a32
    b_sq: Tensor  # (M,) float64 squared norms of b32
    scale: float  # a power of two
    _half: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def a16(self) -> Tensor:
        """``a32`` in bfloat16, made once."""
        if "a" not in self._half:
            self._half["a"] = self.a32.to(torch.bfloat16)
        return self._half["a"]

    def b16(self) -> Tensor:
        """``b32`` in bfloat16, made once."""
        if self.b32 is self.a32:
            return self.a16()
        if "b" not in self._half:
            self._half["b"] = self.b32.to(torch.bfloat16)
        return self._half["b"]


def frame_scale(biggest: float) -> float:
    """The power of two that brings ``biggest`` (a largest centred magnitude) into [0.5, 1)."""
    if biggest > 0 and math.isfinite(biggest):
        return 2.0 ** (-math.frexp(biggest)[1])
    return 1.0


def to_frame(x: Tensor, center: Tensor, scale: float, chunk: int) -> tuple[Tensor, Tensor]:
    """``(x - center) * scale`` as float32, and the float64 squared norms of those rows.

    Args:
        x: (N, D) tensor.
        center: (D,) float64 tensor.
        scale: a power of two.
        chunk: rows converted at a time.

    Returns:
        ``(x32 (N, D) float32, sq (N,) float64)``.
    """
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = (x[start : start + chunk].to(torch.float64) - center) * scale
        out[start : start + chunk] = block.to(torch.float32)
    sq = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = out[start : start + chunk].to(torch.float64)
        sq[start : start + chunk] = (block * block).sum(dim=1)
    return out, sq


def max_abs_centered(x: Tensor, center: Tensor, chunk: int) -> float:
    """Largest ``|x - center|`` over all entries, computed in float64."""
    m = 0.0
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].to(torch.float64) - center
        if block.numel():
            m = max(m, float(block.abs().max()))
    return m


def mean64(x: Tensor, chunk: int) -> Tensor:
    """Column means of ``x`` in float64, (D,)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        total += x[start : start + chunk].to(torch.float64).sum(dim=0)
    return total / max(x.shape[0], 1)


def _make_frame(a: Tensor, b: Tensor | None, chunk: int) -> Frame:
    """Centre on the mean of ``a`` and scale by a power of two so values are of order one."""
    center = mean64(a, chunk)
    biggest = max_abs_centered(a, center, chunk)
    if b is not None:
        biggest = max(biggest, max_abs_centered(b, center, chunk))
    scale = frame_scale(biggest)
    a32, a_sq = to_frame(a, center, scale, chunk)
    if b is None:
        return Frame(a32, a32, a_sq, a_sq, scale)
    b32, b_sq = to_frame(b, center, scale, chunk)
    return Frame(a32, b32, a_sq, b_sq, scale)


_BF16_U = 2.0**-8  # unit round-off of bfloat16
# Use bfloat16 GEMMs for a pass when the error band stays below this fraction of the
# thresholds (typical rows); otherwise the band would hold too many pairs to re-check.
_BF16_MAX_BAND = 0.02
_BF16_CHECKED: dict[str, bool] = {}
# Candidates kept per row and block in the radius pass: _CAP_PER_K * k + _CAP_EXTRA.
_CAP_PER_K, _CAP_EXTRA = 4, 64
# Elements of one real-fake tile (rows x columns): 32 MiB of float32 estimates.
_CROSS_TILE_ELEMENTS = 8 << 20
# The radius pass prunes its candidates once they exceed _COMPACT_PER_ROW * N * (k + 4)
# (and _COMPACT_MIN): memory stays O(N k) whatever N / block.
_COMPACT_PER_ROW, _COMPACT_MIN = 4, 1 << 20
# Pairs collected for an exact re-check before they are settled (bounds memory).
_MAX_PENDING_PAIRS = 1 << 22


def _gemm_tau(width: int, bf16: bool = False) -> float:
    """Bound on |estimate - exact| of ``|a|^2 + |b|^2 - 2 a.b``, per unit of ``|a|^2 + |b|^2``.

    float32 GEMM: gamma_D |a||b| <= gamma_D (|a|^2 + |b|^2) / 2 for the dot product, doubled
    by the factor 2; centring/scaling into float32 <= 6u; norms, additions and the stored
    value a few u more: (D + 32) u, taken twice for safety. bfloat16 GEMM (float32
    accumulation, bfloat16 output): the rounding of both inputs (2 u_bf16 per product) and
    of the output (u_bf16) add 3 u_bf16. A float32 GEMM that torch may run with reduced
    internal precision (``torch.set_float32_matmul_precision`` other than "highest", or
    TF32 on CUDA) is bounded as if its inputs were bfloat16.
    """
    tau = 2.0 * (width + 32) * _U32
    if bf16:
        return tau + 1.01 * 3.0 * _BF16_U
    reduced = torch.get_float32_matmul_precision() != "highest" or (
        torch.cuda.is_available() and torch.backends.cuda.matmul.allow_tf32
    )
    return tau + 1.01 * 2.0 * _BF16_U if reduced else tau


def _gemm_choice() -> str:
    return os.environ.get("LIGHTNING_EMBVIZ_GEMM", "auto").strip().lower()


def _bf16_gemm_is_fast_and_sound(device: torch.device) -> bool:
    """Whether bfloat16 GEMMs may serve as the fast pass on this device (checked once).

    ``LIGHTNING_EMBVIZ_GEMM=fp32`` turns them off; ``=bf16`` skips the speed test and uses
    them whatever the band (for tests: the results must stay exact). Only the
    CPU is considered: there, with AVX512-BF16, they run several times faster than float32.
    The check proves the two properties the error bound relies on: float32 accumulation and
    a correctly rounded output; and it times both precisions on one block.
    """
    choice = _gemm_choice()
    if choice == "fp32" or device.type != "cpu":
        return False
    key = f"{device.type}:{choice}"
    if key not in _BF16_CHECKED:
        _BF16_CHECKED[key] = _probe_bf16(device, timed=choice != "bf16")
    return _BF16_CHECKED[key]


def _probe_bf16(device: torch.device, timed: bool) -> bool:
    ones = torch.ones(1, 4096, dtype=torch.bfloat16, device=device)
    if float(ones @ ones.T) != 4096.0:  # bfloat16 accumulation would stop at 256
        return False
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(64, 1024, generator=gen).to(device=device, dtype=torch.bfloat16)
    b = torch.randn(256, 1024, generator=gen).to(device=device, dtype=torch.bfloat16)
    got = (a @ b.T).to(torch.float64)
    a64, b64 = a.to(torch.float64), b.to(torch.float64)
    exact = a64 @ b64.T
    allowed = _BF16_U * exact.abs() + 2 * 1024 * _U32 * (a64.abs() @ b64.abs().T)
    if not bool(((got - exact).abs() <= allowed * 1.01 + 1e-30).all()):
        return False
    if not timed:
        return True
    x = torch.randn(1024, 512, generator=gen).to(device)
    y = torch.randn(4096, 512, generator=gen).to(device)
    x16, y16 = x.to(torch.bfloat16), y.to(torch.bfloat16)

    def best(fn: Callable[[], Tensor]) -> float:
        fn()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times)

    fp32 = best(lambda: x @ y.T)
    bf16 = best(lambda: (x16 @ y16.T).to(torch.float32))
    return bf16 * 1.6 < fp32


def _typical_band(tau: float, norms: Tensor, other_max: float, theta: Tensor) -> float:
    """Median over rows of the error band relative to the row's threshold."""
    ratio = tau * (norms + other_max) / theta.clamp_min(1e-300)
    return float(ratio.median()) if ratio.numel() else math.inf


class _Workspace:
    """Reusable buffers for the per-block matrices.

    Allocating a fresh 16-64 MiB block for every GEMM and comparison makes glibc raise its
    mmap threshold and keep the freed blocks in the heap: the process then holds several
    times the memory the computation needs. Reusing one buffer per kind avoids that.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
        """A contiguous (rows, cols) tensor backed by the buffer ``name``."""
        need = rows * cols
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < need or buf.dtype != dtype:
            buf = torch.empty(need, dtype=dtype, device=self.device)
            self._buffers[name] = buf
        return buf[:need].view(rows, cols)

    def compare(self, name: str, op: Callable[..., Tensor], a: Tensor, b: Tensor) -> Tensor:
        """``op(a, b)`` (a comparison) into the boolean buffer ``name``."""
        out = self.get(name, a.shape[0], a.shape[1], torch.bool)
        return op(a, b, out=out)


def _distances(
    a: Frame,
    rows: slice,
    b_sq32: Tensor,
    cols: slice,
    a_sq32: Tensor,
    bf16: bool,
    work: _Workspace,
) -> Tensor:
    """Float32 estimates of squared distances between a.a32[rows] and a.b32[cols]."""
    left = a.a16()[rows] if bf16 else a.a32[rows]
    right = a.b16()[cols] if bf16 else a.b32[cols]
    s = work.get("s", left.shape[0], right.shape[0], torch.float32)
    if bf16:
        dot = work.get("dot16", left.shape[0], right.shape[0], torch.bfloat16)
        torch.mm(left, right.T, out=dot)
        s.copy_(dot)
        torch.add(b_sq32[cols].unsqueeze(0), s, alpha=-2.0, out=s)
    else:
        torch.addmm(b_sq32[cols].unsqueeze(0), left, right.T, alpha=-2.0, out=s)
    s += a_sq32[rows].unsqueeze(1)
    return s


def _count_into(counts: Tensor, index: Tensor) -> None:
    """``counts[i] += number of times i occurs in index``, without an (M,) temporary.

    (``bincount(minlength=M)`` per block allocates M-sized tensors between long-lived small
    ones; at 200 000 columns glibc's heap then fragments into gigabytes.)
    """
    if index.numel():
        counts.index_add_(0, index, torch.ones_like(index, dtype=counts.dtype))


def _down32(x: Tensor) -> Tensor:
    """Round float64 thresholds to float32 towards -inf."""
    y = x.to(torch.float32)
    return torch.where(
        y.to(torch.float64) > x, torch.nextafter(y, torch.full_like(y, -math.inf)), y
    )


def _up32(x: Tensor) -> Tensor:
    """Round float64 thresholds to float32 towards +inf."""
    y = x.to(torch.float32)
    return torch.where(y.to(torch.float64) < x, torch.nextafter(y, torch.full_like(y, math.inf)), y)


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _sort_by_row(rows: Tensor, vals: Tensor) -> Tensor:
    """Permutation that sorts pairs by row, then by value within a row."""
    by_val = torch.argsort(vals, stable=True)
    return by_val[torch.argsort(rows[by_val], stable=True)]


def neighbour_radii(
    x: Tensor,
    ks: Sequence[int],
    mode: PairMode,
    chunk_size: int,
    frame: Frame | None = None,
    row_range: tuple[int, int] | None = None,
) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row for several k, one pass.

    The radii are rounded as the reference rounds them.

    The point itself is not counted; exact duplicates count as neighbours at distance 0
    (the reference takes the (k+1)-th smallest value of a row that includes the zero
    self-distance).

    Two passes over the blocks of the symmetric distance matrix, each block computed once:
    the diagonal blocks give every row an upper bound on its k-th smallest estimate (the k-th
    smallest over a subset of the columns, for the largest k); the blocks above the diagonal
    then only keep the pairs under the bound of their row or of their column (one
    comparison, no sort), and each row's bound is tightened with what it kept, block after
    block. The candidates of each row hold its nearest neighbours for every k up to the
    largest, and are finally settled exactly for each k; pairs undecided for several k are
    recomputed once.

    Args:
        x: (N, D) tensor with N > max(ks).
        ks: neighbour ranks, increasing, 1 <= k < N.
        mode: key rounding, see :func:`pair_mode`.
        chunk_size: rows per block; memory is O(chunk_size^2 + N k), the candidates held
            being pruned as the bounds tighten.
        frame: ``x`` already converted into a float32 frame (built here if None).
        row_range: ``(start, stop)``: only the radii of rows ``start:stop``, each row block
            against every column block (no symmetry: the work of one rank of a
            distributed run). The values are those of the whole run (every decision is
            exact). None: every row.

    Returns:
        (K, N) float64 tensor: row j holds the radii for ``ks[j]``; (K, stop - start) with
        ``row_range``.
    """
    ks = [int(k) for k in ks]
    if not ks or ks != sorted(set(ks)) or ks[0] < 1:
        raise ValueError(f"ks must be increasing ints >= 1, got {ks}")  # internal misuse
    k = ks[-1]  # bounds and candidate lists are sized for the largest k
    n = x.shape[0]
    first_row, stop_row = (0, n) if row_range is None else row_range
    if not 0 <= first_row <= stop_row <= n:
        raise ValueError(f"row_range must lie in [0, {n}], got {row_range}")  # internal misuse
    n_out = stop_row - first_row
    device = x.device
    if n_out == 0:
        return torch.empty(len(ks), 0, dtype=torch.float64, device=device)
    if frame is None:
        frame = _make_frame(x, None, chunk_size)
    sq = frame.a_sq
    sq32 = sq.to(torch.float32)
    sq_max = float(sq.max())
    width = x.shape[1]
    # Blocks of equal size, large enough that a diagonal block holds k other rows.
    size = min(n, max(chunk_size, 4 * (k + 1)))
    count = -(-n // size)
    size = -(-n // count)
    blocks = _blocks(n, size)

    work = _Workspace(device)

    # float32 GEMMs throughout: the k-th value's own uncertainty doubles the band here, and
    # with bfloat16 the re-checks would cost more than the GEMM saves (measured).
    def distances(r0: int, r1: int, c0: int, c1: int) -> Tensor:
        return _distances(frame, slice(r0, r1), sq32, slice(c0, c1), sq32, False, work)

    # Each estimate is within err of the exact squared distance (per row bound).
    err = _gemm_tau(width) * (sq + sq_max)

    rows_l: list[Tensor] = []
    cols_l: list[Tensor] = []
    vals_l: list[Tensor] = []
    # Candidates kept per row and block. Far more than typical rows need; it bounds memory
    # on degenerate data (many identical rows), where every pair would be a candidate. Rows
    # that hit the cap are verified below.
    cap = _CAP_PER_K * k + _CAP_EXTRA
    dropped = torch.full((n,), math.inf, dtype=torch.float64, device=device)
    # The k smallest estimates seen so far in each row, and the row's limit derived from
    # them: a pair above the limit cannot be among the k nearest. The limit tightens after
    # every block, so late blocks keep only the few pairs that can still matter and the
    # candidate lists stay O(N k log(N / block)) instead of O(N k N / block).
    best = torch.full((n, k), math.inf, dtype=torch.float32, device=device)
    limit = torch.full((n,), math.inf, dtype=torch.float32, device=device)
    held = [0]  # candidates held, and the level that triggers the next compaction
    compact_at = [max(_COMPACT_PER_ROW * n * (k + 4), _COMPACT_MIN)]

    def collect(
        s: Tensor,
        mask: Tensor,
        r0: int,
        c0: int,
        transposed: bool = False,
        tighten_rows: bool = True,
    ) -> None:
        """Keep the pairs of ``mask`` (a block of ``s``), at most ``cap`` per row.

        With ``transposed``, the rows are the block's columns (``mask`` and ``s`` stay in
        their contiguous layout; only the indices are swapped). With ``tighten_rows``, the
        limits of the rows are then tightened with the kept values (each pair of a row must
        enter its k smallest once only).
        """
        if transposed:
            c, r = mask.nonzero(as_tuple=True)
            s, mask = s.T, mask.T
        else:
            r, c = mask.nonzero(as_tuple=True)
        counts = torch.bincount(r, minlength=s.shape[0])
        heavy = counts > cap
        new_rows, new_vals = [], []
        if bool(heavy.any()):
            light = ~heavy[r]
            r, c = r[light], c[light]
            hv = heavy.nonzero(as_tuple=True)[0]
            masked = torch.where(mask[hv], s[hv], math.inf)
            vals, idx = torch.topk(masked, cap + 1, dim=1, largest=False, sorted=True)
            dropped[hv + r0] = torch.minimum(dropped[hv + r0], vals[:, cap].to(torch.float64))
            new_rows.append(hv.repeat_interleave(cap))
            cols_l.append(idx[:, :cap].reshape(-1) + c0)
            new_vals.append(vals[:, :cap].reshape(-1))
        new_rows.append(r)
        cols_l.append(c + c0)
        new_vals.append(s[r, c])
        local = torch.cat(new_rows) if len(new_rows) > 1 else new_rows[0]
        values = torch.cat(new_vals) if len(new_vals) > 1 else new_vals[0]
        rows_l.append(local + r0)
        vals_l.append(values)
        held[0] += local.numel()
        if tighten_rows:
            tighten(local, values, r0, s.shape[0])

    def tighten(local: Tensor, values: Tensor, r0: int, n_rows: int) -> None:
        """Merge new candidate values into each row's k smallest; lower the row limits."""
        if not local.numel():
            return
        values = values.clamp_min(0.0)
        order = torch.argsort((local << 31) | values.view(torch.int32).to(torch.int64))
        local, values = local[order], values[order]
        counts = torch.bincount(local, minlength=n_rows)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(local.numel(), device=device) - starts[local]
        first = rank < k
        fresh = torch.full((n_rows, k), math.inf, dtype=torch.float32, device=device)
        fresh[local[first], rank[first]] = values[first]
        rows = slice(r0, r0 + n_rows)
        merged = torch.cat([best[rows], fresh], dim=1)
        best[rows] = torch.topk(merged, k, dim=1, largest=False, sorted=False).values
        # Keep whatever may be below the k-th estimate plus its band: bound + 2 err.
        bound = best[rows].amax(dim=1).to(torch.float64)
        torch.minimum(limit[rows], _up32(bound + 2.0 * err[rows]), out=limit[rows])

    if row_range is not None:
        row_blocks = [(r0, min(r0 + size, stop_row)) for r0 in range(first_row, stop_row, size)]
        for r0, r1 in row_blocks:
            for c0, c1 in blocks:
                s = distances(r0, r1, c0, c1)
                if max(r0, c0) < min(r1, c1):
                    both = torch.arange(max(r0, c0), min(r1, c1), device=device)
                    s[both - r0, both - c0] = math.inf  # not itself
                whole = c1 - c0 >= k
                if whole:  # the tile's k smallest tighten the bounds first, as below
                    tighten(
                        torch.arange(r1 - r0, device=device).repeat_interleave(k),
                        torch.topk(s, k, dim=1, largest=False, sorted=False).values.reshape(-1),
                        r0,
                        r1 - r0,
                    )
                mask = work.compare("mask", torch.le, s, limit[r0:r1].unsqueeze(1))
                collect(s, mask, r0, c0, tighten_rows=not whole)
                if held[0] > compact_at[0]:
                    held[0] = _compact(rows_l, cols_l, vals_l, limit)
                    compact_at[0] = max(compact_at[0], 2 * held[0])
        blocks = []  # the symmetric passes below have nothing left to do
    for r0, r1 in blocks:
        s = distances(r0, r1, r0, r1)
        s.fill_diagonal_(math.inf)  # not itself
        first = r1 - r0 - 1 >= k
        if first:
            # The k smallest of the diagonal block give a first bound without keeping all
            # (topk is several times faster than kthvalue on the CPU).
            tighten(
                torch.arange(r1 - r0, device=device).repeat_interleave(k),
                torch.topk(s, k, dim=1, largest=False, sorted=False).values.reshape(-1),
                r0,
                r1 - r0,
            )
        # (a tiny final block, only when N is small, keeps everything and bounds its rows
        # with what it kept)
        mask = work.compare("mask", torch.le, s, limit[r0:r1].unsqueeze(1))
        collect(s, mask, r0, r0, tighten_rows=not first)
    for bi, (r0, r1) in enumerate(blocks):
        for c0, c1 in blocks[bi + 1 :]:
            s = distances(r0, r1, c0, c1)
            mask = work.compare("mask", torch.le, s, limit[r0:r1].unsqueeze(1))
            collect(s, mask, r0, c0)
            mask = work.compare("mask", torch.le, s, limit[c0:c1].unsqueeze(0))
            collect(s, mask, c0, r0, transposed=True)
            if held[0] > compact_at[0]:
                held[0] = _compact(rows_l, cols_l, vals_l, limit)
                compact_at[0] = max(compact_at[0], 2 * held[0])
    rows = torch.cat(rows_l)
    if first_row:
        rows -= first_row  # from here on, rows count from the first row of the range
    cols = torch.cat(cols_l)
    # Estimates below 0 are raised to 0 (the exact values are >= 0, so they stay within
    # err); non-negative float32 values order like their bit patterns, so one int64 sort
    # by (row, value) does what two stable sorts would.
    vals = torch.cat(vals_l).clamp_min_(0.0)
    for pieces in (rows_l, cols_l, vals_l):  # free the pieces
        pieces.clear()
    order = torch.argsort((rows << 31) | vals.view(torch.int32).to(torch.int64))
    rows, cols, vals = rows[order], cols[order], vals[order].to(torch.float64)
    del order
    err = err[first_row:stop_row]
    dropped = dropped[first_row:stop_row]
    n = n_out
    counts = torch.bincount(rows, minlength=n)
    offsets = torch.cumsum(counts, 0) - counts
    scale2 = frame.scale**2
    exact_rows = err > 0
    # For each k: the exact k-th value lies in [tk - err, tk + err] (tk the k-th smallest
    # estimate of the row); a pair is undecided when its own interval overlaps that one, i.e.
    # when |estimate - tk| <= 2 err. Pairs below the band are certainly among the k nearest,
    # so the answer is the (k - below)-th undecided one. Rows with err = 0 (all their points
    # sit on the frame's centre) have exact estimates.
    tks = [vals[offsets + (kk - 1)] for kk in ks]
    # Only pairs between the first k's band and the last k's band get per-k work.
    lo_first = (tks[0] - 2.0 * err)[rows]
    below_all = torch.bincount(rows[vals < lo_first], minlength=n)
    near = ((vals >= lo_first) & (vals <= (tks[-1] + 2.0 * err)[rows])).nonzero(as_tuple=True)[0]
    del lo_first
    rows, cols, vals = rows[near], cols[near], vals[near]
    belows, undecided = [], []
    any_undecided = torch.zeros_like(rows, dtype=torch.bool)
    for tk in tks:
        lo = (tk - 2.0 * err)[rows]
        hi = (tk + 2.0 * err)[rows]
        belows.append(below_all + torch.bincount(rows[vals < lo], minlength=n))
        und = (vals >= lo) & (vals <= hi) & (err[rows] > 0)
        del lo, hi
        undecided.append(und)
        any_undecided |= und
    # Each undecided pair is recomputed once, whatever the number of k it matters for.
    exact_all = torch.full_like(vals, math.nan)
    which = any_undecided.nonzero(as_tuple=True)[0]
    exact_all[which] = exact_squared_distances(x[first_row:stop_row], x, rows[which], cols[which])
    radii_sq = torch.empty(len(ks), n, dtype=torch.float64, device=device)
    for j, kk in enumerate(ks):
        und = undecided[j]
        u_rows, exact = rows[und], exact_all[und]
        order = _sort_by_row(u_rows, exact)
        u_counts = torch.bincount(u_rows, minlength=n)
        u_offsets = torch.cumsum(u_counts, 0) - u_counts
        radii_sq[j] = tks[j] / scale2  # exact where err = 0
        pick = (u_offsets + (kk - belows[j]) - 1)[exact_rows]
        radii_sq[j, exact_rows] = exact[order][pick]
    # A capped row is right when nothing left out can be below its answer (ties are equal).
    capped = (dropped - err < radii_sq[-1] * scale2).nonzero(as_tuple=True)[0]
    for i in capped.tolist():
        radii_sq[:, i] = _exact_kth_of_row(x, i + first_row, ks)
    return round_key(radii_sq, mode)


def _compact(
    rows_l: list[Tensor], cols_l: list[Tensor], vals_l: list[Tensor], limit: Tensor
) -> int:
    """Drop, in place, the held candidates that the tightened row limits have ruled out.

    Returns:
        The number of candidates left.
    """
    for i in range(len(rows_l)):
        keep = vals_l[i] <= limit[rows_l[i]]
        rows_l[i], cols_l[i], vals_l[i] = rows_l[i][keep], cols_l[i][keep], vals_l[i][keep]
    return sum(t.numel() for t in rows_l)


def _exact_kth_of_row(x: Tensor, i: int, ks: Sequence[int]) -> Tensor:
    """k-th smallest exact squared distances from row i to the other rows (dense fallback).

    Returns:
        (len(ks),) float64 tensor.
    """
    rows = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
    sq = exact_squared_distances(x, x, rows, torch.arange(x.shape[0], device=x.device))
    sq[i] = math.inf
    ordered = torch.sort(sq).values
    return ordered[torch.tensor([k - 1 for k in ks], device=x.device)]


@dataclass
class CrossTests:
    """Results of :func:`cross_ball_tests`, one row per k."""

    fake_ball_count: Tensor  # (K, M) int64
    real_covered: Tensor  # (K, N) bool
    real_recalled: Tensor | None  # (K, N) bool; None when no fake radii were given
    # With details=True (else None):
    real_nearest: Tensor | None = None  # (N,) float64 key of each real's nearest fake
    real_nearest_index: Tensor | None = None  # (N,) int64 that fake (lowest index on ties)
    fake_ratio: Tensor | None = None  # (K, M) float64 min over reals of key / radius
    fake_ratio_index: Tensor | None = None  # (K, M) int64 that real (-1: every radius is 0)


_F32_MAX = float(torch.finfo(torch.float32).max)
# Relative slack that covers the float32 rounding of the bounds computed in the dense passes
# of the nearest searches (a product and a sum: 2 u, taken twice).
_BOUND_SLACK = 2.0**-21
# Radii this small (squared, in frame units) make float32 ratio bounds overflow; their rows
# are handled exactly against every fake instead (they only arise from near-duplicates).
_TINY_THETA = 2.0**-100


def _merge_min(
    best: Tensor, best_index: Tensor, groups: Tensor, values: Tensor, index: Tensor
) -> None:
    """Fold ``values`` (with their ``index``) into the per-group minimum and its index.

    Ties keep the lowest index, so the result does not depend on the order of the pairs.
    """
    if not groups.numel():
        return
    size = best.shape[0]
    low = torch.full((size,), math.inf, dtype=best.dtype, device=best.device)
    low.scatter_reduce_(0, groups, values, reduce="amin")
    at_low = values == low[groups]
    low_index = torch.full((size,), torch.iinfo(torch.int64).max, device=best.device)
    low_index.scatter_reduce_(0, groups[at_low], index[at_low], reduce="amin")
    better = low < best
    tie = (low == best) & torch.isfinite(low)
    best_index[tie] = torch.minimum(best_index[tie], low_index[tie])
    best[better] = low[better]
    best_index[better] = low_index[better]


# Average candidates per row above which the nearest-fake search narrows them with float64
# GEMM estimates first (cheaper than that many exact re-checks from gathered rows).
_DENSE_CANDIDATES = 16
_U64 = 2.0**-53


def _present(index: Tensor, size: int) -> Tensor:
    """The distinct values of ``index`` (in [0, size)), increasing; O(P + size), no sort."""
    seen = torch.zeros(size, dtype=torch.bool, device=index.device)
    seen[index] = True
    return seen.nonzero(as_tuple=True)[0]


def _narrow_row_minimum(
    real: Tensor, fake: Tensor, rows: Tensor, cols: Tensor, mode: PairMode
) -> tuple[Tensor, Tensor]:
    """Keep the candidate pairs that float64 estimates cannot rule out of their row's minimum.

    The candidates' rows and columns are centred on the mean of the candidate fakes, so a
    tight clump of fakes becomes small numbers, and their squared distances are estimated
    with float64 GEMMs (error below ``2 (D + 32) u64 (|a|^2 + |b|^2)``, as for float32). A
    pair stays when its exact value may lie within the key rounding of its row's minimum
    (then its key may equal the minimum's: ties go to the lowest index).

    Args:
        real: (N, D) tensor.
        fake: (M, D) tensor.
        rows: (P,) row indices of the candidate pairs.
        cols: (P,) column indices; every row's minimum is among its candidates.
        mode: key rounding of the pairs.

    Returns:
        The remaining ``(rows, cols)``.
    """
    uniq_rows = _present(rows, real.shape[0])
    uniq_cols = _present(cols, fake.shape[0])
    b = fake.index_select(0, uniq_cols).to(torch.float64)
    center = b.mean(dim=0)
    b -= center
    b_sq = (b * b).sum(dim=1)
    b_max = float(b_sq.max())
    tau = 2.0 * (real.shape[1] + 32) * _U64
    # Rows are handled a few at a time so the float64 block stays near 32 MiB.
    step = max(1, (1 << 22) // max(uniq_cols.numel(), 1))
    kept_rows, kept_cols = [], []
    for start in range(0, uniq_rows.numel(), step):
        r = uniq_rows[start : start + step]
        a = real.index_select(0, r).to(torch.float64) - center
        a_sq = (a * a).sum(dim=1)
        est = torch.addmm(b_sq.unsqueeze(0), a, b.T, alpha=-2.0).add_(a_sq.unsqueeze(1))
        err = tau * (a_sq + b_max)
        limit = (est.amin(dim=1) + err) * (1.0 + 2.0 * _KEY_MARGIN[mode]) + err
        rr, cc = (est <= limit.unsqueeze(1)).nonzero(as_tuple=True)
        kept_rows.append(r[rr])
        kept_cols.append(uniq_cols[cc])
    return torch.cat(kept_rows), torch.cat(kept_cols)


class _NearestSearch:
    """Exact nearest searches riding on the real-fake pass (for ``details=True``).

    - For each real i: ``min_j key(i, j)`` (its nearest fake) and that fake.
    - For each fake j and each k: ``min_i key(i, j) / r_k(i)`` (how far, relative to the
      ball's radius, the nearest real ball's edge is; < 1 exactly when the fake lies inside
      some ball) and that real.

    Both use the block's float32 estimates to keep only the pairs whose error band can
    reach the minimum (a row minimum is complete within a block; a column minimum is
    tightened block after block), and settle those pairs on exact keys.
    """

    def __init__(
        self,
        real: Tensor,
        fake: Tensor,
        real_radii: Tensor,
        frame: Frame,
        tau: float,
        mode: PairMode,
        b_max: float,
    ) -> None:
        self.real, self.fake, self.mode = real, fake, mode
        self.radii = real_radii  # (K, N)
        n, m = real.shape[0], fake.shape[0]
        n_k = real_radii.shape[0]
        device = real.device
        self.err = tau * (frame.a_sq + b_max)  # (N,) per-row GEMM error bound
        self.nearest = torch.full((n,), math.inf, dtype=torch.float64, device=device)
        self.nearest_index = torch.full((n,), -1, dtype=torch.int64, device=device)
        self.ratio = torch.full((n_k, m), math.inf, dtype=torch.float64, device=device)
        self.ratio_index = torch.full((n_k, m), -1, dtype=torch.int64, device=device)
        # Ratio^2 of pair (i, j) lies in [c_i s - d_i, a_i s + b_i] (s: its estimate).
        margin = _KEY_MARGIN[mode] + 2.0**-45  # key rounding, and the float64 of theta
        abs_margin = _KEY_ABS_MARGIN[mode] * frame.scale**2
        theta = (real_radii * frame.scale) ** 2
        usable = theta >= _TINY_THETA
        inv = torch.where(usable, 1.0 / theta.clamp_min(_TINY_THETA), 0.0)
        up, down = 1.0 + _BOUND_SLACK, 1.0 - _BOUND_SLACK
        self.a = _up32(inv * (1.0 + margin) * up)
        self.b = _up32(
            torch.where(usable, (self.err * (1.0 + margin) + abs_margin) * inv * up, 0.0)
        )
        self.c = _down32(inv * (1.0 - margin) * down)
        self.d = _up32(
            torch.where(usable, (self.err * (1.0 - margin) + abs_margin) * inv * up, 0.0)
        )
        self.b[~usable] = math.inf  # never an upper bound ...
        self.d[~usable] = -math.inf  # ... nor a candidate (c s - d = +inf)
        self.upper = torch.full((n_k, m), _F32_MAX, dtype=torch.float32, device=device)
        # Rows with a tiny but non-zero radius: decided exactly against every fake.
        self.tiny = ((real_radii > 0) & ~usable).any(dim=0).nonzero(as_tuple=True)[0]
        self.row_low = torch.full((n,), math.inf, dtype=torch.float64, device=device)
        self.band_pairs: list[tuple[Tensor, Tensor, Tensor]] = []  # the current rows' tiles
        self.band_held = 0
        self.row_pairs: list[tuple[Tensor, Tensor]] = []
        self.col_pairs: list[tuple[int, Tensor, Tensor, Tensor]] = []
        self.pending = 0

    def update(self, s: Tensor, r0: int, c0: int, work: _Workspace) -> None:
        """Take the candidates of one tile ``s`` (rows r0.., fakes c0..)."""
        r1, c1 = r0 + s.shape[0], c0 + s.shape[1]
        # Row minimum: the exact minimum lies within 2 err of the smallest estimate; every
        # pair whose key may equal the minimum's key (lowest index wins ties) is kept too.
        # The smallest estimate so far gives a limit that the row's later tiles tighten.
        row_min = work.get("row_min", 1, s.shape[0], torch.float32)[0]
        torch.amin(s, dim=1, out=row_min)
        low = torch.minimum(self.row_low[r0:r1], row_min.to(torch.float64))
        self.row_low[r0:r1] = low
        mask = work.compare("near", torch.le, s, self._row_limit(r0, r1).unsqueeze(1))
        rows, cols = mask.nonzero(as_tuple=True)
        self.band_pairs.append((rows + r0, cols + c0, s[rows, cols]))
        self.band_held += rows.numel()
        if self.band_held > _MAX_PENDING_PAIRS:  # only on degenerate data
            self._shrink_band(r0, r1)
        # Column minimum of the ratio, per k.
        w = work.get("ratio", s.shape[0], s.shape[1], torch.float32)
        column_min = work.get("column_min", 1, s.shape[1], torch.float32)[0]
        for t in range(self.a.shape[0]):
            a, b = self.a[t, r0:r1].unsqueeze(1), self.b[t, r0:r1].unsqueeze(1)
            c, d = self.c[t, r0:r1].unsqueeze(1), self.d[t, r0:r1].unsqueeze(1)
            upper = self.upper[t, c0:c1]
            torch.addcmul(b, s, a, out=w)
            torch.amin(w, dim=0, out=column_min)
            torch.minimum(upper, column_min, out=upper)
            torch.addcmul(-d, s, c, out=w)
            rows, cols = work.compare("near", torch.le, w, upper.unsqueeze(0)).nonzero(
                as_tuple=True
            )
            self.col_pairs.append((t, rows + r0, cols + c0, w[rows, cols]))
            self.pending += rows.numel()
        if self.pending > _MAX_PENDING_PAIRS:
            self.settle()

    def _row_limit(self, r0: int, r1: int) -> Tensor:
        """Largest estimate that may still hold the minimum key of rows r0:r1."""
        err = self.err[r0:r1]
        return _up32((self.row_low[r0:r1] + err) * (1.0 + 2.0 * _KEY_MARGIN[self.mode]) + err)

    def _band_candidates(self, r0: int, r1: int) -> tuple[Tensor, Tensor]:
        """The current rows' candidates under their limit so far, narrowed when dense."""
        rows = torch.cat([p[0] for p in self.band_pairs])
        cols = torch.cat([p[1] for p in self.band_pairs])
        values = torch.cat([p[2] for p in self.band_pairs])
        self.band_pairs.clear()
        keep = values <= self._row_limit(r0, r1)[rows - r0]
        rows, cols = rows[keep], cols[keep]
        if rows.numel() > _DENSE_CANDIDATES * (r1 - r0):
            # Many fakes within the float32 band of the nearest one (a collapsed generator):
            # narrow them down with float64 estimates before the exact re-checks. (Done on
            # the fakes seen so far, it keeps whatever can hold the minimum among them.)
            rows, cols = _narrow_row_minimum(self.real, self.fake, rows, cols, self.mode)
        return rows, cols

    def _shrink_band(self, r0: int, r1: int) -> None:
        rows, cols = self._band_candidates(r0, r1)
        # kept whatever the final limit: -inf passes every later filter
        values = torch.full(rows.shape, -math.inf, dtype=torch.float32, device=rows.device)
        self.band_pairs.append((rows, cols, values))
        self.band_held = rows.numel()

    def end_rows(self, r0: int, r1: int) -> None:
        """Rows r0:r1 have seen every fake: keep their candidates under the final limit."""
        rows, cols = self._band_candidates(r0, r1)
        self.band_held = 0
        self.row_pairs.append((rows, cols))
        self.pending += rows.numel()
        if self.pending > _MAX_PENDING_PAIRS:
            self.settle()

    def settle(self) -> None:
        """Decide the collected candidates exactly and free them."""
        if self.row_pairs:
            rows = torch.cat([r for r, _ in self.row_pairs])
            cols = torch.cat([c for _, c in self.row_pairs])
            self.row_pairs.clear()
            key = round_key(exact_squared_distances(self.real, self.fake, rows, cols), self.mode)
            _merge_min(self.nearest, self.nearest_index, rows, key, cols)
        for t in range(self.a.shape[0]):
            mine = [p for p in self.col_pairs if p[0] == t]
            if not mine:
                continue
            rows = torch.cat([p[1] for p in mine])
            cols = torch.cat([p[2] for p in mine])
            lower = torch.cat([p[3] for p in mine])
            keep = lower <= self.upper[t, cols]  # the bound has tightened since
            rows, cols = rows[keep], cols[keep]
            self._fold_ratios(t, rows, cols)
        self.col_pairs.clear()
        self.pending = 0

    def _fold_ratios(self, t: int, rows: Tensor, cols: Tensor) -> None:
        key = round_key(exact_squared_distances(self.real, self.fake, rows, cols), self.mode)
        radius = self.radii[t, rows]
        ratio = torch.where(radius > 0, key / radius, math.inf)
        _merge_min(self.ratio[t], self.ratio_index[t], cols, ratio, rows)
        # An achieved ratio bounds the minimum: later candidates must beat it.
        found = torch.isfinite(self.ratio[t])
        tighter = _up32(self.ratio[t][found] ** 2 * (1.0 + _BOUND_SLACK))
        self.upper[t, found] = torch.minimum(self.upper[t, found], tighter)

    def finish(self) -> None:
        """Settle what is left and handle the rows with tiny radii."""
        self.settle()
        m = self.fake.shape[0]
        for i in self.tiny.tolist():
            rows = torch.full((m,), i, dtype=torch.int64, device=self.fake.device)
            cols = torch.arange(m, device=self.fake.device)
            for t in range(self.a.shape[0]):
                self._fold_ratios(t, rows, cols)


def cross_ball_tests(
    real: Tensor,
    fake: Tensor,
    real_radii: Tensor,
    fake_radii: Tensor | None,
    mode: PairMode,
    chunk_size: int,
    frame: Frame | None = None,
    details: bool = False,
) -> CrossTests:
    """Ball-membership tests between two sets for several k, decided exactly, in one pass.

    With ``key(i, j)`` the reference-rounded distance between ``real[i]`` and ``fake[j]``,
    for each k (row ``t`` of the radii):

    - ``fake_ball_count[t, j] = #{i : key(i, j) < real_radii[t, i]}``
    - ``real_covered[t, i]    = any_j key(i, j) < real_radii[t, i]``
    - ``real_recalled[t, i]   = any_j key(i, j) < fake_radii[t, j]``

    Every block of distances is computed once for all k: the pairs that can matter lie
    inside the largest ball, and only those few get per-k work; a pair whose estimate is too
    close to one of its thresholds is recomputed exactly once and decided for every k.

    Args:
        real: (N, D) tensor.
        fake: (M, D) tensor.
        real_radii: (K, N) float64 radii of the real points, non-decreasing along K.
        fake_radii: (K, M) float64 radii of the fake points, non-decreasing along K, or None
            to skip the recall tests (precision, density and coverage do not need them).
        mode: key rounding of real-fake pairs.
        chunk_size: real rows per tile; a tile spans ``_CROSS_TILE_ELEMENTS / chunk_size``
            fakes, so memory is O(tile) whatever M.
        frame: both sets converted into one float32 frame (built here if None).
        details: also find each real's nearest fake and each fake's nearest ball edge
            relative to the ball's radius, exactly (a few more passes over each block).

    Returns:
        A :class:`CrossTests`.
    """
    device = real.device
    n, m = real.shape[0], fake.shape[0]
    n_k = real_radii.shape[0]
    if frame is None:
        frame = _make_frame(real, fake, chunk_size)
    scale2 = frame.scale**2
    key_margin = _KEY_MARGIN[mode]
    abs_margin = _KEY_ABS_MARGIN[mode] * scale2
    b_sq = frame.b_sq
    a_sq32, b_sq32 = frame.a_sq.to(torch.float32), b_sq.to(torch.float32)
    a_max, b_max = float(frame.a_sq.max()), float(b_sq.max())
    theta_r = (real_radii * frame.scale) ** 2  # (K, N)
    theta_f = None if fake_radii is None else (fake_radii * frame.scale) ** 2
    use_bf16 = False
    if _bf16_gemm_is_fast_and_sound(device):
        tau16 = _gemm_tau(real.shape[1], bf16=True)
        band = _typical_band(tau16, frame.a_sq, b_max, theta_r[0])
        if theta_f is not None:
            band = max(band, _typical_band(tau16, b_sq, a_max, theta_f[0]))
        # Each k adds its own band of pairs to re-check: the wider bfloat16 band pays off
        # for one or a few k, not for a long sweep.
        use_bf16 = band * n_k < _BF16_MAX_BAND or _gemm_choice() == "bf16"
    tau = _gemm_tau(real.shape[1], use_bf16)

    # A pair is inside a ball of squared radius theta (scaled units) for certain when its
    # float32 estimate is below lo, and outside for certain when above hi; in between it is
    # re-checked exactly. The band covers the GEMM error and the rounding of the key.
    # A ball of radius 0 (k duplicates of its centre) holds nothing: `d < 0` never holds.
    # Ruling it out here keeps degenerate sets (many identical rows) from turning every
    # pair into a re-check.
    err_r = tau * (frame.a_sq + b_max)
    lo_r = theta_r * (1.0 - key_margin) - abs_margin - err_r  # (K, N) float64
    hi_r = _up32(theta_r * (1.0 + key_margin) + abs_margin + err_r)  # (K, N) float32
    lo_r[real_radii == 0] = -math.inf
    hi_r[real_radii == 0] = -math.inf
    hi_r_max = hi_r[-1]  # the largest ball of each real point
    if theta_f is not None:
        assert fake_radii is not None
        err_f = tau * (a_max + b_sq)
        lo_f = _down32(theta_f * (1.0 - key_margin) - abs_margin - err_f)  # (K, M) float32
        hi_f = _up32(theta_f * (1.0 + key_margin) + abs_margin + err_f)
        lo_f[fake_radii == 0] = -math.inf
        hi_f[fake_radii == 0] = -math.inf
        lo_f_min = lo_f[0].unsqueeze(0)
        hi_f_max = hi_f[-1].unsqueeze(0)

    fake_count = torch.zeros(n_k, m, dtype=torch.int64, device=device)
    covered = torch.zeros(n_k, n, dtype=torch.bool, device=device)
    recalled = None if theta_f is None else torch.zeros(n_k, n, dtype=torch.bool, device=device)
    check_rows: list[Tensor] = []  # pairs to re-check exactly
    check_cols: list[Tensor] = []
    check_kind: list[Tensor] = []  # 1: real-ball tests, 2: fake-ball tests

    work = _Workspace(device)
    search = _NearestSearch(real, fake, real_radii, frame, tau, mode, b_max) if details else None

    def settle() -> None:
        """Decide the collected pairs exactly, for every k, and free them."""
        if not check_rows:
            return
        rows = torch.cat(check_rows)
        cols = torch.cat(check_cols)
        kind = torch.cat(check_kind)
        for pending in (check_rows, check_cols, check_kind):
            pending.clear()
        if recalled is not None:  # rows recalled for every k since their pairs were taken
            keep = (kind == 1) | ~recalled[0, rows]
            rows, cols, kind = rows[keep], cols[keep], kind[keep]
        if not rows.numel():
            return
        key = round_key(exact_squared_distances(real, fake, rows, cols), mode)
        real_ball = kind == 1
        fake_ball = kind == 2
        for t in range(n_k):
            in_r = real_ball & (key < real_radii[t, rows])
            _count_into(fake_count[t], cols[in_r])
            covered[t, rows[in_r]] = True
            if recalled is not None and fake_radii is not None:
                recalled[t, rows[fake_ball & (key < fake_radii[t, cols])]] = True

    def undecided(v: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        """Pairs whose estimate ``v`` lies in some band ``[lo[t], hi[t]]``; lo, hi (K, P)."""
        out = (v >= lo[0]) & (v <= hi[0])
        for t in range(1, n_k):
            out |= (v >= lo[t]) & (v <= hi[t])
        return out

    def real_balls(s: Tensor, r0: int, c0: int) -> None:
        """Precision, density, coverage: only pairs inside the largest ball need work."""
        mask = work.compare("mask", torch.le, s, hi_r_max[r0 : r0 + s.shape[0]].unsqueeze(1))
        rows, cols = mask.nonzero(as_tuple=True)
        v = s[rows, cols].to(torch.float64)
        rows += r0
        cols += c0
        open_pairs = undecided(v, lo_r[:, rows], hi_r[:, rows])
        check_rows.append(rows[open_pairs])
        check_cols.append(cols[open_pairs])
        check_kind.append(torch.ones_like(check_cols[-1], dtype=torch.int8))
        sure_rows, sure_cols, v = rows[~open_pairs], cols[~open_pairs], v[~open_pairs]
        for t in range(n_k):  # outside every band: below lo[t] means inside ball t
            inside = v < lo_r[t, sure_rows]
            _count_into(fake_count[t], sure_cols[inside])
            covered[t, sure_rows[inside]] = True

    def fake_balls(s: Tensor, r0: int, c0: int, c1: int) -> None:
        """Recall: rows inside a smallest ball for certain are recalled for every k.

        The other rows only need the pairs inside the largest balls.
        """
        assert recalled is not None
        r1 = r0 + s.shape[0]
        rec = work.compare("mask", torch.lt, s, lo_f_min[:, c0:c1]).any(dim=1)
        recalled[:, r0:r1] |= rec.unsqueeze(0)
        done = recalled[0, r0:r1]  # recalled for the smallest k, in this or an earlier tile
        if bool(done.all()):
            return
        # The whole tile is compared into a reused buffer rather than copying the open rows
        # out: a fresh multi-MiB copy per tile fragments the heap (glibc then keeps
        # gigabytes at 200 000 rows).
        mask = work.compare("mask", torch.le, s, hi_f_max[:, c0:c1])
        mask[done] = False
        r2, c2 = mask.nonzero(as_tuple=True)
        c2 += c0
        if n_k > 1:
            v2 = s[r2, c2 - c0]
            for t in range(1, n_k):
                recalled[t, r2[v2 < lo_f[t, c2]] + r0] = True
            keep = undecided(v2, lo_f[:, c2], hi_f[:, c2])
            r2, c2 = r2[keep], c2[keep]
        check_rows.append(r2 + r0)
        check_cols.append(c2)
        check_kind.append(torch.full_like(c2, 2, dtype=torch.int8))

    # Tiles of rows x columns: enough rows for the GEMM to run near its peak (thin blocks
    # of a few dozen rows against 100 000 columns run 30 % slower), bounded memory.
    col_size = max(1, min(m, _CROSS_TILE_ELEMENTS // max(chunk_size, 1)))
    col_blocks = _blocks(m, col_size)
    for r0, r1 in _blocks(n, chunk_size):
        for c0, c1 in col_blocks:
            s = _distances(frame, slice(r0, r1), b_sq32, slice(c0, c1), a_sq32, use_bf16, work)
            real_balls(s, r0, c0)
            if recalled is not None:
                fake_balls(s, r0, c0, c1)
            if search is not None:
                search.update(s, r0, c0, work)
            del s
        if search is not None:
            search.end_rows(r0, r1)
        # Keep the pairs awaiting a re-check bounded (they pile up only on degenerate data).
        if sum(t.numel() for t in check_rows) > _MAX_PENDING_PAIRS:
            settle()
    settle()
    if search is None:
        return CrossTests(fake_count, covered, recalled)
    search.finish()
    return CrossTests(
        fake_count,
        covered,
        recalled,
        search.nearest,
        search.nearest_index,
        search.ratio,
        search.ratio_index,
    )
