"""The fast pass's bookkeeping: pairs estimated per pass."""

from __future__ import annotations

import torch

from lightning_embviz.engine import cross_ball_tests, neighbour_radii
from lightning_embviz.engine.gemm import count_estimates


def test_count_estimates_counts_every_block_once():
    x, y = torch.randn(30, 4), torch.randn(20, 4)
    with count_estimates() as outer:
        with count_estimates() as inner:
            radii = neighbour_radii(x, [2], "f32", 10)  # 3 diagonal + 3 upper blocks of 100
        cross_ball_tests(x, y, radii, None, "f32", 8)  # 30 x 20
    assert inner.pairs == 6 * 100
    assert outer.pairs == 6 * 100 + 30 * 20
    neighbour_radii(x, [2], "f32", 10)
    assert outer.pairs == 6 * 100 + 30 * 20  # nothing counted after the block
