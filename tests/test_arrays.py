"""The input boundary: conversion, integer checks, metric keys."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch

from lightning_embviz import _arrays
from lightning_embviz._arrays import (
    METRIC_KEYS,
    PRDC_KEYS,
    as_features,
    as_numpy,
    as_tensor,
    check_int,
)


def test_doctests_run():
    result = doctest.testmod(_arrays)
    assert result.attempted > 0 and result.failed == 0


def test_metric_keys():
    assert PRDC_KEYS == ("precision", "recall", "density", "coverage")
    assert METRIC_KEYS == ("precision", "recall", "density", "coverage", "fd")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (np.zeros((3, 2), dtype=np.float32), torch.float32),
        (np.zeros((3, 2), dtype=np.float64), torch.float64),
        (np.zeros((3, 2), dtype=np.float16), torch.float16),
        (np.zeros((3, 2), dtype=np.int16), torch.float64),
        (np.zeros((3, 2), dtype=bool), torch.float64),
        (torch.zeros(3, 2, dtype=torch.bfloat16), torch.bfloat16),
        (torch.zeros(3, 2, dtype=torch.int64), torch.float64),
    ],
)
def test_as_tensor_keeps_floats_and_promotes_integers(value, expected):
    out = as_tensor(value, "x")
    assert out.dtype == expected
    np.testing.assert_array_equal(as_numpy(out), np.zeros((3, 2)))


def test_as_tensor_shares_memory_and_detaches():
    arr = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert np.shares_memory(as_tensor(arr, "x").numpy(), arr)
    t = torch.ones(3, 2, requires_grad=True)
    assert not as_tensor(t, "x").requires_grad


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        ([[1.0, 2.0]], TypeError, r"`x` must be a torch.Tensor or a numpy.ndarray .* got list"),
        (np.array([["a"]]), TypeError, "`x` must hold numbers, got a NumPy array of dtype <U1"),
        (np.array([[None]]), TypeError, "must hold numbers"),
        (np.ones((2, 2), dtype=np.complex64), TypeError, "must be real-valued"),
        (torch.ones(2, 2, dtype=torch.complex64), TypeError, "must be real-valued"),
    ],
)
def test_as_tensor_errors(value, exc, match):
    with pytest.raises(exc, match=match):
        as_tensor(value, "x")


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.zeros(4), r"`x` must be 2-D with shape \(N, D\), got shape \(4,\)"),
        (np.zeros((0, 3)), r"`x` is empty \(shape \(0, 3\)\)"),
        (np.zeros((3, 0)), r"`x` has zero features"),
        (np.array([[0.0, np.nan], [1.0, np.inf], [1.0, 1.0]]), r"`x` has 2 row\(s\) with NaN"),
    ],
)
def test_as_features_errors(value, match):
    with pytest.raises(ValueError, match=match):
        as_features(value, "x")


def test_as_features_makes_contiguous():
    t = torch.arange(12.0).reshape(3, 4).T
    out = as_features(t, "x")
    assert out.is_contiguous()
    torch.testing.assert_close(out, t)


def test_as_numpy():
    t = torch.tensor([[1.5, -2.0]], dtype=torch.bfloat16, requires_grad=True)
    out = as_numpy(t)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.5, -2.0]])
    assert as_numpy(torch.ones(2, dtype=torch.float16)).dtype == np.float16
    arr = np.ones(3)
    assert as_numpy(arr) is arr
    np.testing.assert_array_equal(as_numpy([1, 2]), [1, 2])
    assert as_numpy(arr, "points") is arr
    with pytest.raises(TypeError, match=r"`points` must be a torch.Tensor or a numpy.ndarray, got"):
        as_numpy([1, 2], "points")


def test_check_int_accepts_ints_and_numpy_ints():
    assert check_int(3, "k", minimum=1) == 3
    out = check_int(np.int64(7), "k", minimum=1, maximum=7)
    assert out == 7 and type(out) is int
    assert check_int(-4, "offset") == -4


@pytest.mark.parametrize(
    ("value", "kwargs", "exc", "match"),
    [
        (True, {"minimum": 1}, TypeError, r"^`k` must be an int >= 1, got True\.$"),
        (np.bool_(False), {}, TypeError, r"^`k` must be an int, got "),
        (2.0, {"minimum": 1, "maximum": 9}, TypeError, r"`k` must be an int in \[1, 9\], got 2\.0"),
        ("5", {"maximum": 9}, TypeError, r"`k` must be an int <= 9, got '5'"),
        (None, {"minimum": 1}, TypeError, "got None"),
        (0, {"minimum": 1}, ValueError, r"^`k` must be >= 1, got 0\.$"),
        (10, {"minimum": 1, "maximum": 9}, ValueError, r"`k` must be between 1 and 9, got 10"),
        (10, {"maximum": 9}, ValueError, r"`k` must be <= 9, got 10"),
    ],
)
def test_check_int_errors(value, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        check_int(value, "k", **kwargs)


def test_check_int_hint_is_appended():
    with pytest.raises(ValueError, match=r"got 0\. Use 1 or more\.$"):
        check_int(0, "k", minimum=1, hint="Use 1 or more.")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.9, 0.9),
        (1, 1.0),
        (np.float32(0.9), 0.9),  # what the user wrote, not 0.8999999761581421
        (np.float16(0.95), 0.95),
        (np.float64(0.9), 0.9),
        (np.int64(2), 2.0),
    ],
)
def test_check_float_accepts_numbers_and_numpy_scalars(value, expected):
    out = _arrays.check_float(value, "confidence")
    assert out == expected and type(out) is float


@pytest.mark.parametrize("value", [True, np.bool_(True), "0.9", None, np.array([0.9])])
def test_check_float_errors(value):
    with pytest.raises(TypeError, match=r"`confidence` must be a number, got"):
        _arrays.check_float(value, "confidence")


def test_numpy_scalars_are_accepted_as_callback_arguments():
    from lightning_embviz import EmbeddingMonitor, RealReference, compute_prdc
    from lightning_embviz.intervals import prdc_intervals

    monitor = EmbeddingMonitor(
        nearest_k=np.int64(3),
        confidence=np.float32(0.9),
        max_samples=np.int64(50),
        every_n_epochs=np.int32(2),
        view_max_samples=np.int64(20),
        gallery_size=np.int64(4),
        thumbnail_size=np.int16(8),
        seed=np.uint8(1),
        views=("pca",),
    )
    assert monitor.confidence == 0.9 and type(monitor.confidence) is float
    assert monitor.nearest_ks == (3,) and monitor.max_samples == 50 and monitor.seed == 1
    assert monitor.every_n_epochs == 2 and monitor.gallery_size == 4
    assert EmbeddingMonitor(nearest_k=(np.int64(3), np.int32(5))).nearest_ks == (3, 5)
    assert EmbeddingMonitor(nearest_k=np.array([3, 5])).nearest_ks == (3, 5)
    assert all(type(k) is int for k in EmbeddingMonitor(nearest_k=np.array([3, 5])).nearest_ks)
    with pytest.raises(ValueError, match=r"confidence=np.float32\(1.5\)\)` is not valid"):
        EmbeddingMonitor(confidence=np.float32(1.5))
    with pytest.raises(TypeError, match=r"confidence=np.True_"):
        EmbeddingMonitor(confidence=np.bool_(True))
    # the engine's entry points take them too
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    want = compute_prdc(real, fake, nearest_k=3)
    assert compute_prdc(real, fake, nearest_k=np.int64(3)) == want
    assert RealReference(real, np.int32(3)).compare(fake) == want
    bounds = prdc_intervals(real, fake, np.int64(3), np.float32(0.9), seed=np.int64(0))
    assert bounds["coverage_low"] <= want["coverage"] <= bounds["coverage_high"]
