from __future__ import annotations

import math

import numpy as np
import prdc
import pytest
import torch

from lightning_embviz.degenerate import (
    DENSITY_MIN,
    SPREAD_RATIO_MAX,
    degenerate_message,
    degenerate_reasons,
    spread,
)


def test_spread_is_the_rms_distance_to_the_mean():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(5000, 3)) * [1.0, 2.0, 3.0] + 1e4).astype(np.float32)
    expected = math.sqrt(((x.astype(np.float64) - x.mean(0, dtype=np.float64)) ** 2).sum(1).mean())
    assert spread(x) == pytest.approx(expected, rel=1e-12)
    assert spread(torch.from_numpy(x)) == pytest.approx(expected, rel=1e-12)
    assert spread(np.ones((4, 2))) == 0.0


@pytest.mark.parametrize("scale", [0.0, 0.05, 0.2])
def test_collapsed_sets_are_flagged(scale):
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 32)).astype(np.float32)
    fake = (scale * rng.normal(size=(300, 32))).astype(np.float32)
    metrics = prdc.compute_prdc(real, fake, nearest_k=5)  # precision 1, coverage high
    assert metrics["precision"] == 1.0 and metrics["coverage"] > 0.8
    reasons = degenerate_reasons(real, fake, metrics)
    assert reasons and reasons[0].startswith("recall 0.000 with density")
    assert metrics["density"] > DENSITY_MIN
    if scale < SPREAD_RATIO_MAX:
        assert "spread is" in reasons[-1]
    message = degenerate_message(reasons)
    assert message.startswith("degenerate (collapsed) fake set: recall")
    assert "never ranked best" in message


@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_healthy_or_shifted_sets_are_not_flagged(shift):
    rng = np.random.default_rng(2)
    real = rng.normal(size=(300, 32)).astype(np.float32)
    fake = (rng.normal(size=(300, 32)) + shift).astype(np.float32)
    metrics = prdc.compute_prdc(real, fake, nearest_k=5)
    assert degenerate_reasons(real, fake, metrics) == []
