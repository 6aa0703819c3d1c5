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
        return torch.sqrt(sq.to(torch.float32)).to(torch.float64)
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
    """``values`` grouped by ``row_ids``: pick, per row r, the ``order[r]``-th smallest (1-based)."""
    srt = torch.argsort(values, stable=True)
    grp = torch.argsort(row_ids[srt], stable=True)
    perm = srt[grp]
    counts = torch.bincount(row_ids, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    return values[perm[offsets + order - 1]]


def kth_neighbour_radii(x: Tensor, k: int, mode: PairMode, chunk_size: int) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row, as the reference rounds it.

    The point itself is not counted; exact duplicates count as neighbours at distance 0
    (the reference takes the (k+1)-th smallest value of a row that includes the zero
    self-distance).

    Args:
        x: (N, D) tensor with N > k.
        k: neighbour rank, 1 <= k < N.
        mode: key rounding, see :func:`pair_mode`.
        chunk_size: rows per block; memory is O(chunk_size * N).

    Returns:
        (N,) float64 tensor of radii.
    """
    n = x.shape[0]
    frame = _make_frame(x, None, chunk_size)
    a32, sq = frame.a32, frame.a_sq
    sq32 = sq.to(torch.float32)
    tau = _gemm_tau(x.shape[1])
    sq_max = float(sq.max())
    kk = min(k + _TOPK_SLACK, n - 1)
    key_margin = _KEY_MARGIN[mode]
    abs_margin = _KEY_ABS_MARGIN[mode] * frame.scale**2
    radii_sq = torch.empty(n, dtype=torch.float64, device=x.device)
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        rows = torch.arange(start, stop, device=x.device)
        # t[i, j] = |x_j|^2 - 2 x_i.x_j  ==  s_ij - |x_i|^2 (row shift does not change order)
        t = torch.addmm(sq32.unsqueeze(0), a32[start:stop], a32.T, beta=1.0, alpha=-2.0)
        t[torch.arange(stop - start, device=x.device), rows] = math.inf  # not itself
        vals, idx = torch.topk(t, kk, dim=1, largest=False, sorted=True)
        vals64 = vals.to(torch.float64)
        err = tau * (sq[start:stop] + sq_max)
        tk = vals64[:, k - 1]
        # exact s_kth lies in [tk - err, tk + err] (row-shifted); a pair is undecided when its
        # interval overlaps that one, i.e. |t - tk| <= 2 err.
        lo = tk - 2.0 * err
        hi = tk + 2.0 * err
        below = (vals64 < lo.unsqueeze(1)).sum(dim=1)
        need = k - below  # rank of s_kth among undecided pairs
        undecided = (vals64 >= lo.unsqueeze(1)) & (vals64 <= hi.unsqueeze(1))
        overflow = vals64[:, -1] <= hi  # undecided pairs may continue past the top-kk
        if kk == n - 1:
            overflow = torch.zeros_like(overflow)
        loc_rows, pos = undecided.nonzero(as_tuple=True)
        cols = idx[loc_rows, pos]
        if bool(overflow.any()):
            keep = ~overflow[loc_rows]
            loc_rows, cols = loc_rows[keep], cols[keep]
            over_rows = overflow.nonzero(as_tuple=True)[0]
            t_over = t[over_rows].to(torch.float64)
            mask = (t_over >= _down32(lo[over_rows]).to(torch.float64).unsqueeze(1)) & (
                t_over <= _up32(hi[over_rows]).to(torch.float64).unsqueeze(1)
            )
            r2, c2 = mask.nonzero(as_tuple=True)
            loc_rows = torch.cat([loc_rows, over_rows[r2]])
            cols = torch.cat([cols, c2])
        s = exact_squared_distances(x, x, loc_rows + start, cols)
        radii_sq[start:stop] = _kth_smallest_per_row(loc_rows, s, need, stop - start)
    del key_margin, abs_margin  # radii are exact values: no threshold margin needed here
    return round_key(radii_sq, mode)


def cross_ball_tests(
    real: Tensor,
    fake: Tensor,
    real_radii: Tensor,
    fake_radii: Tensor,
    mode: PairMode,
    chunk_size: int,
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

    Returns:
        ``(fake_ball_count (M,) int64, real_covered (N,) bool, real_recalled (N,) bool)``.
    """
    device = real.device
    n, m = real.shape[0], fake.shape[0]
    frame = _make_frame(real, fake, chunk_size)
    tau = _gemm_tau(real.shape[1])
    scale2 = frame.scale**2
    key_margin = _KEY_MARGIN[mode]
    abs_margin = _KEY_ABS_MARGIN[mode] * scale2
    b32, b_sq = frame.b32, frame.b_sq
    b_sq32 = b_sq.to(torch.float32)
    a_max, b_max = float(frame.a_sq.max()), float(b_sq.max())

    # Column (fake) thresholds, in scaled squared units.
    theta_f = (fake_radii * frame.scale) ** 2
    err_f = tau * (a_max + b_sq)
    lo_f = _down32(theta_f * (1.0 - key_margin) - abs_margin - err_f).unsqueeze(0)
    hi_f = _up32(theta_f * (1.0 + key_margin) + abs_margin + err_f).unsqueeze(0)

    fake_count = torch.zeros(m, dtype=torch.int64, device=device)
    covered = torch.zeros(n, dtype=torch.bool, device=device)
    recalled = torch.zeros(n, dtype=torch.bool, device=device)
    und_rows: list[Tensor] = []
    und_cols: list[Tensor] = []
    und_kind: list[Tensor] = []  # 1: real-ball test undecided, 2: fake-ball test, 3: both

    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        a_sq = frame.a_sq[start:stop]
        s = torch.addmm(b_sq32.unsqueeze(0), frame.a32[start:stop], b32.T, beta=1.0, alpha=-2.0)
        s += a_sq.to(torch.float32).unsqueeze(1)
        theta_r = (real_radii[start:stop] * frame.scale) ** 2
        err_r = tau * (a_sq + b_max)
        lo_r = _down32(theta_r * (1.0 - key_margin) - abs_margin - err_r).unsqueeze(1)
        hi_r = _up32(theta_r * (1.0 + key_margin) + abs_margin + err_r).unsqueeze(1)

        inside_r = s < lo_r
        fake_count += inside_r.sum(dim=0)
        covered[start:stop] = inside_r.any(dim=1)
        maybe_r = s <= hi_r
        n_und_r = maybe_r.sum(dim=1) - inside_r.sum(dim=1)
        rows_r = (n_und_r > 0).nonzero(as_tuple=True)[0]

        inside_f = s < lo_f
        rec = inside_f.any(dim=1)
        recalled[start:stop] = rec
        # Recall only needs a decision for rows not already recalled.
        maybe_f = (s <= hi_f) & ~inside_f
        maybe_f &= ~rec.unsqueeze(1)
        rows_f = maybe_f.any(dim=1).nonzero(as_tuple=True)[0]

        if rows_r.numel() or rows_f.numel():
            rows_u = torch.unique(torch.cat([rows_r, rows_f]))
            kind = (maybe_r[rows_u] & ~inside_r[rows_u]).to(torch.int8) + 2 * maybe_f[rows_u].to(
                torch.int8
            )
            r_loc, c = kind.nonzero(as_tuple=True)
            und_rows.append(rows_u[r_loc] + start)
            und_cols.append(c)
            und_kind.append(kind[r_loc, c])

    if und_rows:
        rows = torch.cat(und_rows)
        cols = torch.cat(und_cols)
        kind = torch.cat(und_kind)
        key = round_key(exact_squared_distances(real, fake, rows, cols), mode)
        in_r = ((kind & 1) > 0) & (key < real_radii[rows])
        in_f = ((kind & 2) > 0) & (key < fake_radii[cols])
        fake_count += torch.bincount(cols[in_r], minlength=m)
        covered[rows[in_r]] = True
        recalled[rows[in_f]] = True
    return fake_count, covered, recalled
