"""Per-class metrics live in the engine (metrics.per_class_prdc); plotting draws them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lightning_embviz import compute_prdc, compute_prdc_details
from lightning_embviz.metrics import per_class_prdc


def test_per_class_values_are_the_metrics_of_each_class_subset():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 8))
    fake = rng.normal(size=(240, 8)) + 0.4
    real_labels, fake_labels = np.arange(300) % 3, np.arange(240) % 4
    details = compute_prdc_details(real, fake, nearest_k=5)
    out = per_class_prdc(details, real_labels, fake_labels)
    assert list(out) == [0, 1, 2, 3]
    for c in (0, 1, 2):
        mine = details.real_covered.numpy()[real_labels == c]
        assert out[c]["coverage"] == pytest.approx(mine.mean())
        assert out[c]["num_real"] == (real_labels == c).sum()
    assert math.isnan(out[3]["coverage"]) and out[3]["num_fake"] == 60
    # the fake-side numbers, weighted by class size, give back the overall ones
    total = compute_prdc(real, fake, nearest_k=5)
    weighted = sum(out[c]["precision"] * out[c]["num_fake"] for c in out) / 240
    assert weighted == pytest.approx(total["precision"])


def test_label_counts_must_match():
    rng = np.random.default_rng(1)
    details = compute_prdc_details(rng.normal(size=(20, 3)), rng.normal(size=(20, 3)), 3)
    with pytest.raises(ValueError, match=r"`real_labels` must have one label per sample \(20\)"):
        per_class_prdc(details, np.zeros(19))
