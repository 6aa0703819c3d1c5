"""Chunked nearest-neighbour kernels with exact decisions.

Everything here answers questions of the form "is ``d(a, b) < r``?" or "what is the k-th
smallest ``d(a, ·)``?" exactly as the reference ``prdc`` package would, without ever holding
an (N, N) or (N, M) matrix in memory.

How exactness is obtained
-------------------------
The reference computes squared distances in float64 and, for float32 inputs, rounds them to
float32 before taking a float32 square root (scikit-learn's ``euclidean_distances``). We call
that rounded distance the *key* of a pair: ``key(s) = sqrt32(fl32(s))`` for float32 pairs and
``key(s) = sqrt64(s)`` for float64 pairs, where ``s`` is the exact squared distance.

1. A fast pass computes every squared distance with one float32 GEMM on data that has been
   centred (float64 mean) and scaled by a power of two, so the arithmetic sees numbers of
   order one whatever the offset or the scale of the input.
2. The float32 GEMM error has a proven bound ``tau * (|a|^2 + |b|^2)`` (``tau`` from the
   width D). Every decision whose float32 value lies farther than that bound (plus the
   rounding of the key) from its threshold is final.
3. The few pairs inside the band are recomputed from the original values in float64,
   directly from coordinate differences, and decided on their exact key.

The fast pass therefore costs what a plain float32 distance computation costs, and the
answers do not depend on chunk size, thread count, device or row order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "PairMode",
    "cross_ball_tests",
    "exact_squared_distances",
    "kth_neighbour_radii",
    "pair_mode",
    "round_key",
    "shared_frames",
]

PairMode = str  # "f32" or "f64": the precision the reference rounds a pair's distance to

_U32 = 2.0**-24  # unit round-off of float32
# Keys are compared through squared thresholds; this relative margin covers the rounding of
# the key (fl32 of s, then a float32 sqrt) with room to spare. The f64 margin covers sqrt64.
_KEY_MARGIN = {"f32": 2.0**-19, "f64": 2.0**-47}
# Absolute margin on squared distances (unscaled units) for the float32 subnormal range.
_KEY_ABS_MARGIN = {"f32": 2.0**-140, "f64": 0.0}
# Extra neighbours fetched beyond k so that near-ties are usually resolved without a full row.
_TOPK_SLACK = 8


def pair_mode(a_dtype: torch.dtype, b_dtype: torch.dtype) -> PairMode:
    """Precision the reference rounds distances between two sets to.

    scikit-learn keeps float32 only when both operands are float32 and works in float64
    otherwise. Half precision inputs are treated as float32 (they are exactly representable
    and the reference has no half-precision path).
    """

    def is32(dt: torch.dtype) -> bool:
        return dt in (torch.float32, torch.float16, torch.bfloat16)

    return "f32" if is32(a_dtype) and is32(b_dtype) else "f64"


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
    block = max(1, (1 << 22) // width)  # ~32 MiB of float64 per block
    for start in range(0, p, block):
        r = rows[start : start + block]
        c = cols[start : start + block]
        diff = a.index_select(0, r).to(torch.float64) - b.index_select(0, c).to(torch.float64)
        out[start : start + block] = (diff * diff).sum(dim=1)
    return out


@dataclass
class _Frame:
    """Float32 copies of one or two sets in a shared, well-conditioned frame."""

    a32: Tensor  # (N, D) float32, (a - center) * scale
    b32: Tensor  # (M, D) float32, (b - center) * scale
    a_sq: Tensor  # (N,) float64 squared norms of a32
    b_sq: Tensor  # (M,) float64 squared norms of b32
    scale: float  # a power of two


def _to_frame(x: Tensor, center: Tensor, scale: float, chunk: int) -> tuple[Tensor, Tensor]:
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = (x[start : start + chunk].to(torch.float64) - center) * scale
        out[start : start + chunk] = block.to(torch.float32)
    sq = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = out[start : start + chunk].to(torch.float64)
        sq[start : start + chunk] = (block * block).sum(dim=1)
    return out, sq


def _max_abs_centered(x: Tensor, center: Tensor, chunk: int) -> float:
    m = 0.0
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].to(torch.float64) - center
        if block.numel():
            m = max(m, float(block.abs().max()))
    return m


def _mean64(x: Tensor, chunk: int) -> Tensor:
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        total += x[start : start + chunk].to(torch.float64).sum(dim=0)
    return total / max(x.shape[0], 1)


def _make_frame(a: Tensor, b: Tensor | None, chunk: int) -> _Frame:
    """Centre on the mean of ``a`` and scale by a power of two so values are of order one."""
    center = _mean64(a, chunk)
    biggest = _max_abs_centered(a, center, chunk)
    if b is not None:
        biggest = max(biggest, _max_abs_centered(b, center, chunk))
    if biggest > 0 and math.isfinite(biggest):
        scale = 2.0 ** (-math.frexp(biggest)[1])  # biggest * scale lies in [0.5, 1)
    else:
        scale = 1.0
    a32, a_sq = _to_frame(a, center, scale, chunk)
    if b is None:
        return _Frame(a32, a32, a_sq, a_sq, scale)
    b32, b_sq = _to_frame(b, center, scale, chunk)
    return _Frame(a32, b32, a_sq, b_sq, scale)


def shared_frames(real: Tensor, fake: Tensor, chunk: int) -> tuple[_Frame, _Frame, _Frame]:
    """Frames for the real-real, fake-fake and real-fake passes, built with one conversion.

    All three share the real set's centre. The fake set gets a frame of its own only when
    it sits far from that centre compared with its own spread (say, a collapsed generator
    early in training): there the shared frame would widen the GEMM error band.
    """
    cross = _make_frame(real, fake, chunk)
    real_view = _Frame(cross.a32, cross.a32, cross.a_sq, cross.a_sq, cross.scale)
    fake_mean = _mean64(cross.b32, chunk)
    offset2 = float(fake_mean @ fake_mean)
    mean_sq = float(cross.b_sq.mean())
    if offset2 <= 0.75 * mean_sq:  # offset^2 <= 3 * spread^2
        fake_view = _Frame(cross.b32, cross.b32, cross.b_sq, cross.b_sq, cross.scale)
    else:
        fake_view = _make_frame(fake, None, chunk)
    return real_view, fake_view, cross


def _gemm_tau(width: int) -> float:
    """Bound on |float32 value - exact| of ``|a|^2 + |b|^2 - 2 a.b``, per unit of norms.

    Dot product: gamma_D * |a||b| <= gamma_D (|a|^2 + |b|^2) / 2, doubled by the factor 2;
    centring/scaling into float32: <= 6u (|a|^2+|b|^2); float32 norms, additions and the
    stored result: a few u more. We take (D + 16) u with a 2x safety factor.
    """
    return 2.0 * (width + 16) * _U32


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


def _kth_smallest_per_row(row_ids: Tensor, values: Tensor, order: Tensor, n_rows: int) -> Tensor:
    """Per row r of ``row_ids``, the ``order[r]``-th smallest (1-based) of its ``values``."""
    srt = torch.argsort(values, stable=True)
    grp = torch.argsort(row_ids[srt], stable=True)
    perm = srt[grp]
    counts = torch.bincount(row_ids, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    return values[perm[offsets + order - 1]]


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def _smallest(values: Tensor, count: int, dim: int) -> tuple[Tensor, Tensor]:
    return torch.topk(values, min(count, values.shape[dim]), dim=dim, largest=False, sorted=False)


def kth_neighbour_radii(
    x: Tensor, k: int, mode: PairMode, chunk_size: int, frame: _Frame | None = None
) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row, as the reference rounds it.

    The point itself is not counted; exact duplicates count as neighbours at distance 0
    (the reference takes the (k+1)-th smallest value of a row that includes the zero
    self-distance).

    The distance matrix is symmetric, so only blocks on and above the diagonal are computed:
    each block gives candidate neighbours to its rows and, transposed, to its columns.

    Args:
        x: (N, D) tensor with N > k.
        k: neighbour rank, 1 <= k < N.
        mode: key rounding, see :func:`pair_mode`.
        chunk_size: rows per block; memory is O(chunk_size * (chunk_size + N)).
        frame: ``x`` already converted by :func:`shared_frames` (built here if None).

    Returns:
        (N,) float64 tensor of radii.
    """
    n = x.shape[0]
    device = x.device
    if frame is None:
        frame = _make_frame(x, None, chunk_size)
    a32, sq = frame.a32, frame.a_sq
    sq32 = sq.to(torch.float32)
    kk = min(k + _TOPK_SLACK, n - 1)
    blocks = _blocks(n, chunk_size)
    # Running k+slack smallest candidates of each row block, merged as blocks arrive.
    best: list[tuple[Tensor, Tensor] | None] = [None] * len(blocks)

    def merge(block: int, vals: Tensor, cols: Tensor) -> None:
        held = best[block]
        if held is not None:
            vals = torch.cat([held[0], vals], dim=1)
            cols = torch.cat([held[1], cols], dim=1)
            if vals.shape[1] > kk:
                vals, pos = _smallest(vals, kk, dim=1)
                cols = cols.gather(1, pos)
        best[block] = (vals, cols)

    radii_sq = torch.empty(n, dtype=torch.float64, device=device)
    tau = _gemm_tau(x.shape[1])
    sq_max = float(sq.max())
    for bi, (r0, r1) in enumerate(blocks):
        for bj in range(bi, len(blocks)):
            c0, c1 = blocks[bj]
            s = torch.addmm(sq32[c0:c1].unsqueeze(0), a32[r0:r1], a32[c0:c1].T, alpha=-2.0)
            s += sq32[r0:r1].unsqueeze(1)
            if bi == bj:
                s.fill_diagonal_(math.inf)  # not itself
            vals, idx = _smallest(s, kk, dim=1)
            merge(bi, vals, idx + c0)
            if bi != bj:
                vals, idx = _smallest(s, kk, dim=0)
                merge(bj, vals.T, idx.T + r0)
        # Row block bi has now seen every column: settle its radii and free its candidates.
        held = best[bi]
        assert held is not None
        best[bi] = None
        vals, pos = torch.sort(held[0], dim=1)
        cols = held[1].gather(1, pos)
        radii_sq[r0:r1] = _resolve_kth(x, r0, r1, vals, cols, k, tau * (sq[r0:r1] + sq_max), frame)
    return round_key(radii_sq, mode)


def _resolve_kth(
    x: Tensor, r0: int, r1: int, vals: Tensor, cols: Tensor, k: int, err: Tensor, frame: _Frame
) -> Tensor:
    """Exact k-th smallest squared distance for rows ``r0:r1`` from their float32 candidates.

    ``vals`` (rows, kk) are the sorted float32 estimates of the smallest squared distances
    and ``cols`` their columns; every estimate is within ``err`` (per row) of the truth.
    """
    n = x.shape[0]
    vals64 = vals.to(torch.float64)
    tk = vals64[:, k - 1]
    # The exact k-th value lies in [tk - err, tk + err]; a pair is undecided when its own
    # interval overlaps that one, i.e. when |estimate - tk| <= 2 err. Pairs below the band
    # are certainly among the k nearest, so the answer is the (k - below)-th undecided one.
    lo = (tk - 2.0 * err).unsqueeze(1)
    hi = (tk + 2.0 * err).unsqueeze(1)
    below = (vals64 < lo).sum(dim=1)
    undecided = (vals64 >= lo) & (vals64 <= hi)
    # Undecided pairs may continue past the candidates we kept: scan those rows in full.
    overflow = (vals64[:, -1:] <= hi).squeeze(1) if vals.shape[1] < n - 1 else None
    loc, pos = undecided.nonzero(as_tuple=True)
    pair_cols = cols[loc, pos]
    if overflow is not None and bool(overflow.any()):
        keep = ~overflow[loc]
        loc, pair_cols = loc[keep], pair_cols[keep]
        over = overflow.nonzero(as_tuple=True)[0]
        a32, sq32 = frame.a32, frame.a_sq.to(torch.float32)
        rows = over + r0
        full = torch.addmm(sq32.unsqueeze(0), a32[rows], a32.T, alpha=-2.0)
        full += sq32[rows].unsqueeze(1)
        full[torch.arange(rows.numel(), device=x.device), rows] = math.inf
        full64 = full.to(torch.float64)
        mask = (full64 >= lo[over]) & (full64 <= hi[over])
        r2, c2 = mask.nonzero(as_tuple=True)
        loc = torch.cat([loc, over[r2]])
        pair_cols = torch.cat([pair_cols, c2])
    exact = exact_squared_distances(x, x, loc + r0, pair_cols)
    return _kth_smallest_per_row(loc, exact, k - below, r1 - r0)


def cross_ball_tests(
    real: Tensor,
    fake: Tensor,
    real_radii: Tensor,
    fake_radii: Tensor,
    mode: PairMode,
    chunk_size: int,
    frame: _Frame | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Ball-membership tests between two sets, decided exactly.

    With ``key(i, j)`` the reference-rounded distance between ``real[i]`` and ``fake[j]``:

    - ``fake_ball_count[j] = #{i : key(i, j) < real_radii[i]}``
    - ``real_covered[i]    = any_j key(i, j) < real_radii[i]``
    - ``real_recalled[i]   = any_j key(i, j) < fake_radii[j]``

    Args:
        real: (N, D) tensor.
        fake: (M, D) tensor.
        real_radii: (N,) float64 radii of the real points.
        fake_radii: (M,) float64 radii of the fake points.
        mode: key rounding of real-fake pairs.
        chunk_size: real rows per block; memory is O(chunk_size * M).
        frame: both sets converted by :func:`shared_frames` (built here if None).

    Returns:
        ``(fake_ball_count (M,) int64, real_covered (N,) bool, real_recalled (N,) bool)``.
    """
    device = real.device
    n, m = real.shape[0], fake.shape[0]
    if frame is None:
        frame = _make_frame(real, fake, chunk_size)
    tau = _gemm_tau(real.shape[1])
    scale2 = frame.scale**2
    key_margin = _KEY_MARGIN[mode]
    abs_margin = _KEY_ABS_MARGIN[mode] * scale2
    b32, b_sq = frame.b32, frame.b_sq
    b_sq32 = b_sq.to(torch.float32)
    a_max, b_max = float(frame.a_sq.max()), float(b_sq.max())

    # A pair is inside a ball of squared radius theta (scaled units) for certain when its
    # float32 estimate is below lo, and outside for certain when above hi; in between it is
    # re-checked exactly. The band covers the GEMM error and the rounding of the key.
    theta_r = (real_radii * frame.scale) ** 2
    err_r = tau * (frame.a_sq + b_max)
    lo_r64 = theta_r * (1.0 - key_margin) - abs_margin - err_r
    hi_r = _up32(theta_r * (1.0 + key_margin) + abs_margin + err_r)
    theta_f = (fake_radii * frame.scale) ** 2
    err_f = tau * (a_max + b_sq)
    lo_f = _down32(theta_f * (1.0 - key_margin) - abs_margin - err_f).unsqueeze(0)
    hi_f = _up32(theta_f * (1.0 + key_margin) + abs_margin + err_f).unsqueeze(0)

    fake_count = torch.zeros(m, dtype=torch.int64, device=device)
    covered = torch.zeros(n, dtype=torch.bool, device=device)
    recalled = torch.zeros(n, dtype=torch.bool, device=device)
    check_rows: list[Tensor] = []  # pairs to re-check exactly
    check_cols: list[Tensor] = []
    check_kind: list[Tensor] = []  # bit 1: real-ball test, bit 2: fake-ball test

    for r0, r1 in _blocks(n, chunk_size):
        s = torch.addmm(b_sq32.unsqueeze(0), frame.a32[r0:r1], b32.T, alpha=-2.0)
        s += frame.a_sq[r0:r1].to(torch.float32).unsqueeze(1)

        # Real balls (precision, density, coverage): pairs that may be inside are few.
        rows, cols = (s <= hi_r[r0:r1].unsqueeze(1)).nonzero(as_tuple=True)
        sure = s[rows, cols].to(torch.float64) < lo_r64[rows + r0]
        fake_count += torch.bincount(cols[sure], minlength=m)
        covered[rows[sure] + r0] = True
        check_rows.append(rows[~sure] + r0)
        check_cols.append(cols[~sure])
        check_kind.append(torch.ones_like(check_cols[-1], dtype=torch.int8))

        # Fake balls (recall): only rows not already recalled for certain need a re-check.
        rec = (s < lo_f).any(dim=1)
        recalled[r0:r1] = rec
        open_rows = (~rec).nonzero(as_tuple=True)[0]
        if open_rows.numel():
            sub = s[open_rows]
            r2, c2 = (sub <= hi_f).nonzero(as_tuple=True)
            check_rows.append(open_rows[r2] + r0)
            check_cols.append(c2)
            check_kind.append(torch.full_like(c2, 2, dtype=torch.int8))
        del s

    rows = torch.cat(check_rows)
    if rows.numel():
        cols = torch.cat(check_cols)
        kind = torch.cat(check_kind)
        key = round_key(exact_squared_distances(real, fake, rows, cols), mode)
        in_r = (kind == 1) & (key < real_radii[rows])
        in_f = (kind == 2) & (key < fake_radii[cols])
        fake_count += torch.bincount(cols[in_r], minlength=m)
        covered[rows[in_r]] = True
        recalled[rows[in_f]] = True
    return fake_count, covered, recalled
