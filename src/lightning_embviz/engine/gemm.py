"""The fast pass: GEMM estimates of squared distances, their error bound, their precision.

Estimates are ``|a|^2 + |b|^2 - 2 a.b`` computed with float32 (or, where proven sound and
faster, bfloat16 with float32 accumulation) GEMMs on frame data; :func:`gemm_tau` bounds
their error, which is what lets every decision far enough from its threshold be final.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_embviz.engine.frames import Frame

__all__ = [
    "EstimateCount",
    "Workspace",
    "bf16_gemm_is_fast_and_sound",
    "blocks",
    "count_estimates",
    "cross_uses_bf16",
    "estimate_squared",
    "gemm_choice",
    "gemm_tau",
]

_U32 = 2.0**-24  # unit round-off of float32
_BF16_U = 2.0**-8  # unit round-off of bfloat16
# Use bfloat16 GEMMs for a pass when the error band stays below this fraction of the
# thresholds (typical rows); otherwise the band would hold too many pairs to re-check.
_BF16_MAX_BAND = 0.02
_BF16_CHECKED: dict[str, bool] = {}


def gemm_tau(width: int, bf16: bool = False) -> float:
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


def gemm_choice() -> str:
    """``LIGHTNING_EMBVIZ_GEMM``: ``"auto"`` (default), ``"fp32"`` or ``"bf16"``."""
    return os.environ.get("LIGHTNING_EMBVIZ_GEMM", "auto").strip().lower()


def bf16_gemm_is_fast_and_sound(device: torch.device) -> bool:
    """Whether bfloat16 GEMMs may serve as the fast pass on this device (checked once).

    ``LIGHTNING_EMBVIZ_GEMM=fp32`` turns them off; ``=bf16`` skips the speed test and uses
    them whatever the band (for tests: the results must stay exact). Only the
    CPU is considered: there, with AVX512-BF16, they run several times faster than float32.
    The check proves the two properties the error bound relies on: float32 accumulation and
    a correctly rounded output; and it times both precisions on one block.
    """
    choice = gemm_choice()
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


def cross_uses_bf16(frame: Frame, theta_r: Tensor, theta_f: Tensor | None) -> bool:
    """Whether the real-fake pass runs its GEMMs in bfloat16.

    The symmetric radius passes always use float32: the k-th value's own uncertainty doubles
    their band, and with bfloat16 the re-checks would cost more than the GEMM saves
    (measured).

    Args:
        frame: both sets in one frame (real rows ``a32``, fakes ``b32``).
        theta_r: (K, N) squared real radii in frame units.
        theta_f: (K, M) squared fake radii in frame units, or None (no recall tests).

    Returns:
        True where bfloat16 is sound on the device and its wider band stays narrow enough.
    """
    if not bf16_gemm_is_fast_and_sound(frame.a32.device):
        return False
    a_max, b_max = float(frame.a_sq.max()), float(frame.b_sq.max())
    tau16 = gemm_tau(frame.a32.shape[1], bf16=True)
    band = _typical_band(tau16, frame.a_sq, b_max, theta_r[0])
    if theta_f is not None:
        band = max(band, _typical_band(tau16, frame.b_sq, a_max, theta_f[0]))
    # Each k adds its own band of pairs to re-check: the wider bfloat16 band pays off
    # for one or a few k, not for a long sweep.
    return band * theta_r.shape[0] < _BF16_MAX_BAND or gemm_choice() == "bf16"


class Workspace:
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


@dataclass(eq=False)  # compared by identity: nested counters are told apart
class EstimateCount:
    """Pairs estimated by the fast pass while a :func:`count_estimates` block runs."""

    pairs: int = 0


_COUNTS: list[EstimateCount] = []


@contextmanager
def count_estimates() -> Iterator[EstimateCount]:
    """Count the distance pairs the GEMM pass estimates in this process (benchmarks, tests).

    Example::

        with count_estimates() as count:
            compute_prdc(real, fake, 5)
        count.pairs  # every block of every pass, diagonal blocks included
    """
    count = EstimateCount()
    _COUNTS.append(count)
    try:
        yield count
    finally:
        _COUNTS.remove(count)


def estimate_squared(
    frame: Frame,
    rows: slice,
    b_sq32: Tensor,
    cols: slice,
    a_sq32: Tensor,
    bf16: bool,
    work: Workspace,
) -> Tensor:
    """Float32 estimates of squared distances between ``frame.a32[rows]`` and ``b32[cols]``.

    Args:
        frame: the data in its frame.
        rows: rows of ``a32``.
        b_sq32: (M,) float32 squared norms of ``b32``.
        cols: rows of ``b32``.
        a_sq32: (N,) float32 squared norms of ``a32``.
        bf16: run the GEMM in bfloat16 (float32 accumulation).
        work: buffers; the result lives in its ``"s"`` buffer until the next call.

    Returns:
        (len(rows), len(cols)) float32 estimates, within :func:`gemm_tau` ``* (|a|^2 +
        |b|^2)`` of the exact values.
    """
    left = frame.a16()[rows] if bf16 else frame.a32[rows]
    right = frame.b16()[cols] if bf16 else frame.b32[cols]
    s = work.get("s", left.shape[0], right.shape[0], torch.float32)
    if bf16:
        dot = work.get("dot16", left.shape[0], right.shape[0], torch.bfloat16)
        torch.mm(left, right.T, out=dot)
        s.copy_(dot)
        torch.add(b_sq32[cols].unsqueeze(0), s, alpha=-2.0, out=s)
    else:
        torch.addmm(b_sq32[cols].unsqueeze(0), left, right.T, alpha=-2.0, out=s)
    s += a_sq32[rows].unsqueeze(1)
    for count in _COUNTS:
        count.pairs += s.numel()
    return s


def blocks(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the consecutive blocks of ``size`` rows (the last one shorter)."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]
