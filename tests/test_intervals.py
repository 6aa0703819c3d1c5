"""prdc_intervals: point estimates, containment, shrinkage, determinism, errors, and coverage.

The coverage checks are small simulations: many independent (real, fake) draws, and the
fraction of intervals that contain the mean of the statistic over all draws. Each check is
also run on deliberately wrong intervals (half as wide, zero width, twice as wide, a naive
bootstrap) to show that it can fail.
"""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from lightning_embviz import compute_prdc, frechet_distance
from lightning_embviz.engine import intervals
from lightning_embviz.engine.intervals import _fd_variance_parts, interval_min_samples
from lightning_embviz.intervals import INTERVAL_METRICS, prdc_intervals

PRDC = ("precision", "recall", "density", "coverage")


@pytest.fixture(autouse=True)
def one_thread():
    # These tests run hundreds of small computations: on a busy machine, several threads per
    # tiny matrix product only wait for each other.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gaussian_sets(
    n: int, dim: int, seed: int, shift: float = 0.0, scale: float = 1.0, m: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, dim)).astype(np.float32)
    fake = (shift + scale * rng.normal(size=(m or n, dim))).astype(np.float32)
    return real, fake


def test_point_estimates_are_the_engine_values_and_lie_inside():
    real, fake = gaussian_sets(400, 8, seed=0, shift=0.1, scale=1.1)
    out = prdc_intervals(real, fake, 5)
    assert set(out) == {
        f"{key}{suffix}" for key in INTERVAL_METRICS for suffix in ("", "_low", "_high", "_se")
    }
    assert {key: out[key] for key in PRDC} == compute_prdc(real, fake, 5)
    assert out["fd"] == frechet_distance(real, fake)
    for key in INTERVAL_METRICS:
        assert out[f"{key}_low"] < out[key] < out[f"{key}_high"], key
        assert out[f"{key}_se"] > 0
        assert out[f"{key}_low"] >= 0
    for key in ("precision", "recall", "coverage"):
        assert out[f"{key}_high"] <= 1


def test_intervals_shrink_as_n_grows():
    sets = {n: gaussian_sets(n, 8, seed=n, shift=0.1, scale=1.1) for n in (300, 2400)}
    small, large = (prdc_intervals(*sets[n], 5, n_splits=8) for n in (300, 2400))
    for key in INTERVAL_METRICS:
        width_small = small[f"{key}_high"] - small[f"{key}_low"]
        width_large = large[f"{key}_high"] - large[f"{key}_low"]
        # Eight times the samples: about a third of the width (0.46 if the split part alone
        # decayed at the 2^-0.75 rate).
        assert width_large < 0.6 * width_small, (key, width_large / width_small)


def test_deterministic_for_a_seed_and_the_same_for_numpy_and_torch():
    real, fake = gaussian_sets(300, 6, seed=3)
    first = prdc_intervals(real, fake, 4, seed=7)
    assert prdc_intervals(real, fake, 4, seed=7) == first
    assert prdc_intervals(torch.from_numpy(real), torch.from_numpy(fake), 4, seed=7) == first
    other = prdc_intervals(real, fake, 4, seed=8)
    assert {key: other[key] for key in INTERVAL_METRICS} == {
        key: first[key] for key in INTERVAL_METRICS
    }
    assert any(other[f"{key}_low"] != first[f"{key}_low"] for key in PRDC)


def test_unequal_sizes_and_a_wider_confidence_level():
    real, fake = gaussian_sets(400, 6, seed=4, m=260)
    narrow = prdc_intervals(real, fake, 3, confidence=0.8)
    wide = prdc_intervals(real, fake, 3, confidence=0.99)
    for key in INTERVAL_METRICS:
        assert wide[f"{key}_low"] < narrow[f"{key}_low"] <= narrow[f"{key}_high"]
        assert narrow[f"{key}_high"] < wide[f"{key}_high"]
        assert wide[f"{key}_se"] == narrow[f"{key}_se"]


def test_doctests_run():
    result = doctest.testmod(intervals)
    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.2, math.nan])
def test_confidence_outside_the_open_unit_interval(confidence):
    real, fake = gaussian_sets(100, 4, seed=5)
    with pytest.raises(ValueError, match=r"`confidence` must be strictly between 0 and 1"):
        prdc_intervals(real, fake, 3, confidence=confidence)


@pytest.mark.parametrize("confidence", ["0.95", True, None])
def test_confidence_of_the_wrong_type(confidence):
    real, fake = gaussian_sets(100, 4, seed=5)
    with pytest.raises(TypeError, match=r"`confidence` must be a float in \(0, 1\)"):
        prdc_intervals(real, fake, 3, confidence=confidence)


def test_bad_n_splits_and_seed():
    real, fake = gaussian_sets(100, 4, seed=5)
    with pytest.raises(ValueError, match=r"`n_splits` must be >= 2"):
        prdc_intervals(real, fake, 3, n_splits=1)
    with pytest.raises(TypeError, match=r"`n_splits` must be an int >= 2, got 4.0"):
        prdc_intervals(real, fake, 3, n_splits=4.0)
    with pytest.raises(ValueError, match=r"`seed` must be a non-negative int or None, got -1"):
        prdc_intervals(real, fake, 3, seed=-1)
    with pytest.raises(TypeError, match=r"`seed` must be a non-negative int or None, got 'a'"):
        prdc_intervals(real, fake, 3, seed="a")


def test_sets_too_small_to_split_and_engine_errors():
    real, fake = gaussian_sets(11, 3, seed=6, m=40)
    with pytest.raises(ValueError, match=r"at least 12 samples per set; got 11 real and 40 fake"):
        prdc_intervals(real, fake, 5)
    with pytest.raises(ValueError, match=r"`nearest_k` must be >= 1"):
        prdc_intervals(real, fake, 0)
    with pytest.raises(ValueError, match=r"same width D"):
        prdc_intervals(real, fake[:, :2], 2)


def test_the_smallest_sets_the_split_rule_allows_give_intervals():
    # 2 (k + 1) rows per set, the one rule the library and `embviz --confidence` share.
    k = 3
    rows = interval_min_samples(k)
    assert rows == 8
    real, fake = gaussian_sets(rows, 2, seed=3)
    with pytest.warns(UserWarning, match=r"fewer than 20 \* k"):
        out = prdc_intervals(real, fake, k)
    assert out["coverage_low"] <= out["coverage"] <= out["coverage_high"]
    with pytest.raises(ValueError, match=r"at least 8 samples per set; got 7 real and 8 fake"):
        prdc_intervals(real[:-1], fake, k)


def test_small_sets_warn_and_fd_needs_more_samples_than_features():
    real, fake = gaussian_sets(40, 64, seed=7)
    with pytest.warns(UserWarning, match=r"fewer than 20 \* k"):
        out = prdc_intervals(real, fake, 3)
    assert out["fd"] == frechet_distance(real, fake)
    assert math.isnan(out["fd_low"]) and math.isnan(out["fd_high"]) and math.isnan(out["fd_se"])
    assert out["coverage_low"] <= out["coverage"] <= out["coverage_high"]


# --- coverage by simulation -----------------------------------------------------------------


def coverage_fractions(values: np.ndarray, lows: np.ndarray, highs: np.ndarray) -> np.ndarray:
    """(draws, metrics) arrays -> fraction of intervals that contain the mean over draws."""
    target = values.mean(axis=0)
    return ((lows <= target) & (target <= highs)).mean(axis=0)


def coverage_problems(fractions: np.ndarray, names: tuple[str, ...]) -> list[str]:
    """What is wrong with nominal 95 % intervals; empty when the check passes.

    With 60 draws a fraction has a Monte Carlo standard error of about 0.03, so a right
    method stays above 0.85 (more than three standard errors below 0.95); intervals that are
    too wide show as a pooled fraction above 0.99.
    """
    problems = [f"{name}: {frac:.3f} < 0.85" for name, frac in zip(names, fractions) if frac < 0.85]
    if fractions.mean() > 0.99:
        problems.append(f"pooled {fractions.mean():.3f} > 0.99")
    return problems


def test_coverage_by_simulation_and_the_check_can_fail():
    draws, keys = 60, INTERVAL_METRICS
    values, lows, highs = (np.empty((draws, len(keys))) for _ in range(3))
    for i in range(draws):
        real, fake = gaussian_sets(300, 16, seed=100 + i, shift=0.1, scale=1.1)
        out = prdc_intervals(real, fake, 5, seed=i)
        values[i] = [out[key] for key in keys]
        lows[i] = [out[f"{key}_low"] for key in keys]
        highs[i] = [out[f"{key}_high"] for key in keys]

    right = coverage_fractions(values, lows, highs)
    assert coverage_problems(right, keys) == [], right

    half = coverage_fractions(values, values - (values - lows) / 2, values + (highs - values) / 2)
    assert len(coverage_problems(half, keys)) >= 3, half
    zero = coverage_fractions(values, values, values)
    assert len(coverage_problems(zero, keys)) == len(keys), zero
    double = coverage_fractions(values, values - 2 * (values - lows), values + 2 * (highs - values))
    assert coverage_problems(double, keys) == [f"pooled {double.mean():.3f} > 0.99"], double


def test_naive_bootstrap_fails_the_coverage_check():
    # Resampling with replacement puts duplicates into the sets; the resampled statistics are
    # centred elsewhere, and percentile intervals miss the expected value.
    draws, resamples = 20, 15
    values, lows, highs = (np.empty((draws, len(PRDC))) for _ in range(3))
    rng = np.random.default_rng(0)
    for i in range(draws):
        real, fake = gaussian_sets(200, 16, seed=200 + i, shift=0.1, scale=1.1)
        point = compute_prdc(real, fake, 5)
        values[i] = [point[key] for key in PRDC]
        boot = np.array(
            [
                list(
                    compute_prdc(
                        real[rng.integers(0, len(real), len(real))],
                        fake[rng.integers(0, len(fake), len(fake))],
                        5,
                    ).values()
                )
                for _ in range(resamples)
            ]
        )
        lows[i], highs[i] = np.quantile(boot, 0.025, axis=0), np.quantile(boot, 0.975, axis=0)
    assert len(coverage_problems(coverage_fractions(values, lows, highs), PRDC)) >= 2


def test_fd_variance_when_both_sets_come_from_one_distribution():
    # Equal distributions: FD's first-order term vanishes, the plug-in (first-order) variance
    # is about twice the truth, and the second-order correction recovers it.
    draws = 150
    fds, estimates, first_order = np.empty(draws), np.empty(draws), np.empty(draws)
    rng = np.random.default_rng(1)
    for i in range(draws):
        real, fake = gaussian_sets(300, 16, seed=300 + i)
        fds[i] = frechet_distance(real, fake)
        first, second = _fd_variance_parts(torch.from_numpy(real), torch.from_numpy(fake), rng)
        estimates[i], first_order[i] = max(first - second, second), first
    truth = fds.var(ddof=1)
    assert 0.75 < estimates.mean() / truth < 1.33, estimates.mean() / truth
    assert first_order.mean() / truth > 1.6, first_order.mean() / truth
    inside = np.abs(fds - fds.mean()) <= 1.96 * np.sqrt(estimates)
    assert 0.88 <= inside.mean() <= 0.99, inside.mean()


def test_collapsed_fake_set_fd_bounds_are_nan_with_a_warning():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(200, 8)).astype(np.float32)
    fake = np.zeros((200, 8), dtype=np.float32)  # every fake the same point (M > D)
    with pytest.warns(UserWarning, match=r"Fréchet distance has no confidence interval .* a set"):
        result = prdc_intervals(real, fake, nearest_k=3, seed=0)
    assert math.isnan(result["fd_low"]) and math.isnan(result["fd_high"])
    assert math.isnan(result["fd_se"])
    assert result["fd"] == pytest.approx(frechet_distance(real, fake))
