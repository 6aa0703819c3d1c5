"""compute_prdc against the reference `prdc` package; frechet_distance against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _prdc_cases import KEYS, KINDS, make_sets, reference
from lightning_embviz import compute_prdc, compute_prdc_details, frechet_distance


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    n=st.integers(4, 90),
    m=st.integers(4, 90),
    d=st.sampled_from([1, 2, 3, 7, 16, 40]),
    k=st.integers(1, 6),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_reference_exactly(kind, n, m, d, k, dtype, seed):
    k = min(k, n - 2, m - 2)  # the reference needs k + 1 < N
    if k < 1:
        return
    real, fake = (a.astype(dtype) for a in make_sets(kind, n, m, d, seed))
    assert compute_prdc(real, fake, k) == reference(real, fake, k)


@settings(max_examples=40, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    chunk=st.integers(1, 64),
    seed=st.integers(0, 2**31 - 1),
)
def test_independent_of_chunk_size_and_row_order(kind, chunk, seed):
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 70, 55, 5, seed))
    rng = np.random.default_rng(seed)
    expected = compute_prdc(real, fake, 3)
    shuffled = compute_prdc(
        real[rng.permutation(len(real))], fake[rng.permutation(len(fake))], 3, chunk_size=chunk
    )
    assert shuffled == expected
    assert expected == reference(real, fake, 3)


@pytest.mark.parametrize(
    ("n", "m", "d", "k"),
    [(400, 300, 2048, 5), (300, 500, 512, 1), (600, 200, 64, 10), (150, 150, 3000, 3)],
)
def test_high_dimensions_unequal_sizes_and_k(n, m, d, k):
    rng = np.random.default_rng(n + d)
    real = rng.normal(size=(n, d)).astype(np.float32)
    fake = (rng.normal(size=(m, d)) * 1.03 + 0.02).astype(np.float32)
    assert compute_prdc(real, fake, k) == reference(real, fake, k)


def naive_float32_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """What a plain float32 torch.cdist implementation gets."""
    r = torch.from_numpy(real.astype(np.float32))
    f = torch.from_numpy(fake.astype(np.float32))
    rr, ff, rf = torch.cdist(r, r), torch.cdist(f, f), torch.cdist(r, f)
    rr.fill_diagonal_(0)
    ff.fill_diagonal_(0)
    r_rad = rr.kthvalue(k + 1, dim=1).values
    f_rad = ff.kthvalue(k + 1, dim=1).values
    inside = rf < r_rad[:, None]
    return {
        "precision": float(inside.any(0).double().mean()),
        "recall": float((rf < f_rad[None, :]).any(1).double().mean()),
        "density": float(inside.sum(0).double().mean() / k),
        "coverage": float((rf.min(1).values < r_rad).double().mean()),
    }


@pytest.mark.parametrize("kind", ["far", "discrete_far", "huge"])
def test_exact_where_naive_float32_fails(kind):
    # These inputs make the GEMM-based float32 distances wrong; ours must still be exact.
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 300, 300, 32, seed=3))
    expected = reference(real, fake, 5)
    assert naive_float32_prdc(real, fake, 5) != expected
    assert compute_prdc(real, fake, 5) == expected


def test_torch_tensors():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 24)).astype(np.float32)
    fake = rng.normal(size=(150, 24)).astype(np.float32)
    expected = reference(real, fake, 4)
    assert compute_prdc(torch.from_numpy(real), torch.from_numpy(fake), 4) == expected
    assert compute_prdc(torch.from_numpy(real), fake, 4) == expected


# Squared distances 2**24 and 2**24 + 1 are one float32 value apart from nothing: both round
# to 2**24 in float32, so a fake at squared distance 2**24 of a real whose radius is
# sqrt(2**24 + 1) is inside the ball in float64 and on its edge in float32. The reference
# computes half precision in float64 (scikit-learn upcasts everything but float32).
HALF_REAL = [[0, 0], [4096, 1], [-4096, -1], [0, 8192]]
HALF_FAKE = [[4096, 0], [0, 8000], [30000, -30000], [-30000, 30000]]


def test_float16_is_computed_like_the_reference_in_float64():
    real = np.array(HALF_REAL, dtype=np.float16)
    fake = np.array(HALF_FAKE, dtype=np.float16)
    expected = reference(real, fake, 1)
    assert expected["density"] == 0.75
    # the same numbers as float32 give another answer: the case tells the two roundings apart
    assert reference(real.astype(np.float32), fake.astype(np.float32), 1)["density"] == 0.5
    assert compute_prdc(real, fake, 1) == expected
    assert compute_prdc(torch.from_numpy(real), torch.from_numpy(fake), 1) == expected
    det = compute_prdc_details(real, fake, 1)
    assert det.fake_ball_count.tolist() == [2, 1, 0, 0]


def test_bfloat16_is_computed_like_the_reference_on_its_float64_values():
    real = torch.tensor(HALF_REAL, dtype=torch.bfloat16)
    fake = torch.tensor(HALF_FAKE, dtype=torch.bfloat16)
    real64, fake64 = real.double().numpy(), fake.double().numpy()
    np.testing.assert_array_equal(real64, HALF_REAL)  # exactly representable
    expected = reference(real64, fake64, 1)
    assert expected["density"] == 0.75
    assert compute_prdc(real, fake, 1) == expected


def test_mixed_float32_and_half_precision_is_computed_in_float64():
    real = np.array(HALF_REAL, dtype=np.float32)
    fake = np.array(HALF_FAKE, dtype=np.float16)
    expected = reference(real, fake, 1)
    assert compute_prdc(real, fake, 1) == expected
    assert compute_prdc(torch.from_numpy(real), torch.from_numpy(fake).bfloat16(), 1) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["normal", "discrete", "quantized", "duplicates", "near_copies"]),
    scale=st.sampled_from([1.0, 2.0**-10, 300.0]),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_half_precision_matches_reference(kind, scale, k, seed):
    real, fake = make_sets(kind, 70, 60, 6, seed)
    real16, fake16 = (real * scale).astype(np.float16), (fake * scale).astype(np.float16)
    expected = reference(real16, fake16, k)
    assert compute_prdc(real16, fake16, k) == expected
    bf_real = torch.from_numpy(real * scale).bfloat16()
    bf_fake = torch.from_numpy(fake * scale).bfloat16()
    assert compute_prdc(bf_real, bf_fake, k) == reference(
        bf_real.double().numpy(), bf_fake.double().numpy(), k
    )


def test_integer_input_is_treated_like_the_reference():
    rng = np.random.default_rng(1)
    real = rng.integers(0, 5, size=(120, 6))
    fake = rng.integers(0, 5, size=(100, 6))
    assert compute_prdc(real, fake, 3) == reference(real, fake, 3)


def test_returns_python_floats_and_default_k():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(60, 4)).astype(np.float32)
    fake = rng.normal(size=(60, 4)).astype(np.float32)
    out = compute_prdc(real, fake)
    assert list(out) == list(KEYS)
    assert all(type(v) is float for v in out.values())
    assert out == reference(real, fake, 5)


def test_details_are_consistent_with_the_metrics():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(300, 8)).astype(np.float32)
    fake = rng.normal(0.5, 1.0, size=(250, 8)).astype(np.float32)
    det = compute_prdc_details(real, fake, 5)
    assert det.as_dict() == reference(real, fake, 5)
    assert det.real_radii.shape == (300,) and det.fake_radii.shape == (250,)
    assert det.precision == float(det.fake_in_real_manifold.double().mean())
    assert det.coverage == float(det.real_covered.double().mean())
    assert det.recall == float(det.real_recalled.double().mean())
    assert det.density == pytest.approx(float(det.fake_ball_count.double().mean() / 5))
    # radii equal the reference's: squared distances rounded to float32, then a float32 sqrt
    sq = scipy.spatial.distance.cdist(real, real, "sqeuclidean")
    expected_radii = np.sqrt(np.sort(sq, axis=1)[:, 5].astype(np.float32))
    np.testing.assert_array_equal(det.real_radii.numpy().astype(np.float32), expected_radii)


def test_largest_k_is_accepted():
    # The reference needs k + 1 < N; k = N - 1 (radius = farthest other point) is valid here.
    rng = np.random.default_rng(5)
    real = rng.normal(size=(10, 3))
    fake = rng.normal(size=(12, 3))
    out = compute_prdc(real, fake, 9)
    assert out["coverage"] == 1.0


@pytest.mark.parametrize(
    ("real", "fake", "k", "exc", "match"),
    [
        (np.zeros(10), np.zeros((10, 2)), 3, ValueError, r"must be 2-D with shape \(N, D\)"),
        (np.zeros((10, 2, 2)), np.zeros((10, 2)), 3, ValueError, r"got shape \(10, 2, 2\)"),
        (np.zeros((10, 3)), np.zeros((10, 2)), 3, ValueError, "same width D, got 3 and 2"),
        (np.zeros((0, 3)), np.zeros((10, 3)), 3, ValueError, "is empty"),
        (np.zeros((10, 0)), np.zeros((10, 0)), 3, ValueError, "zero features"),
        (np.zeros((10, 3)), np.zeros((10, 3)), 0, ValueError, "must be >= 1, got 0"),
        (np.zeros((10, 3)), np.zeros((10, 3)), 10, ValueError, "needs more than 10 samples"),
        (np.zeros((10, 3)), np.zeros((4, 3)), 5, ValueError, "`fake_features`, got 4"),
        (np.zeros((10, 3)), np.zeros((10, 3)), 2.5, TypeError, "must be an int"),
        (np.zeros((10, 3)), np.zeros((10, 3)), True, TypeError, "must be an int"),
        ([[0.0, 1.0]] * 5, np.zeros((10, 2)), 2, TypeError, "torch.Tensor or a numpy.ndarray"),
        (np.array([["a", "b"]] * 5), np.zeros((5, 2)), 2, TypeError, "must hold numbers"),
    ],
)
def test_input_errors(real, fake, k, exc, match):
    with pytest.raises(exc, match=match):
        compute_prdc(real, fake, k)


def test_non_finite_rows_are_counted_in_the_error():
    real = np.zeros((10, 3))
    real[[1, 4], 0] = np.nan
    real[7, 2] = np.inf
    with pytest.raises(ValueError, match=r"`real_features` has 3 row\(s\) with NaN or Inf"):
        compute_prdc(real, np.ones((10, 3)), 2)


def test_bad_chunk_size():
    with pytest.raises(ValueError, match=r"`chunk_size` must be >= 1, got 0\. Or pass None"):
        compute_prdc(np.zeros((10, 3)), np.zeros((10, 3)), 2, chunk_size=0)
    with pytest.raises(TypeError, match=r"`chunk_size` must be an int >= 1, got 2\.5"):
        compute_prdc(np.zeros((10, 3)), np.zeros((10, 3)), 2, chunk_size=2.5)


# --- Fréchet distance -----------------------------------------------------------------------


def scipy_frechet(real: np.ndarray, fake: np.ndarray) -> float:
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize(("n", "m", "d"), [(500, 400, 8), (2000, 1500, 64), (300, 300, 32)])
def test_frechet_matches_scipy(n, m, d):
    rng = np.random.default_rng(d)
    real = rng.normal(size=(n, d))
    fake = rng.normal(0.3, 1.5, size=(m, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    assert frechet_distance(real, fake) == pytest.approx(scipy_frechet(real, fake), rel=1e-8)
    assert frechet_distance(real.astype(np.float32), fake.astype(np.float32)) == pytest.approx(
        scipy_frechet(real.astype(np.float32), fake.astype(np.float32)), rel=1e-5
    )


def test_frechet_singular_covariances():
    # N < D: both covariances are singular; the nuclear-norm route stays exact.
    rng = np.random.default_rng(7)
    real = rng.normal(size=(40, 128))
    fake = rng.normal(0.1, 1.3, size=(30, 128))
    ours = frechet_distance(real, fake)
    # Reference via the full D x D symmetric route in float64.
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    mid = root @ s2 @ root
    tr = np.sqrt(np.clip(np.linalg.eigvalsh((mid + mid.T) / 2), 0, None)).sum()
    expected = ((real.mean(0) - fake.mean(0)) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
    assert ours == pytest.approx(expected, rel=1e-7)
    assert ours == pytest.approx(scipy_frechet(real, fake), rel=1e-6)


def test_frechet_properties():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(300, 16))
    y = rng.normal(size=(250, 16)) * 2
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    shift = np.arange(16) / 10
    assert frechet_distance(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)
    assert frechet_distance(torch.from_numpy(x), torch.from_numpy(y)) == frechet_distance(x, y)


def test_frechet_errors():
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="same width D, got 3 and 4"):
        frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"1 row\(s\) with NaN"):
        frechet_distance(np.array([[0.0, np.nan], [1.0, 2.0], [3.0, 4.0]]), np.zeros((5, 2)))


def test_independent_of_thread_count():
    real, fake = (a.astype(np.float32) for a in make_sets("far", 400, 350, 24, seed=11))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = compute_prdc(real, fake, 4)
    finally:
        torch.set_num_threads(threads)
    assert compute_prdc(real, fake, 4) == one == reference(real, fake, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_tensors_device():
    real, fake = (a.astype(np.float32) for a in make_sets("normal", 500, 400, 64, seed=12))
    det = compute_prdc_details(torch.from_numpy(real).cuda(), torch.from_numpy(fake).cuda(), 5)
    assert det.real_covered.device.type == "cuda"
    assert det.as_dict() == reference(real, fake, 5)


@pytest.fixture(params=["fp32", "bf16"])
def gemm_precision(request, monkeypatch):
    """Run a test with the fast pass forced to float32 or to bfloat16 GEMMs."""
    from lightning_embviz.engine.gemm import bf16_gemm_is_fast_and_sound

    monkeypatch.setenv("LIGHTNING_EMBVIZ_GEMM", request.param)  # checked once per choice
    if request.param == "bf16" and not bf16_gemm_is_fast_and_sound(torch.device("cpu")):
        pytest.skip("this CPU's bfloat16 GEMM is not usable")
    return request.param


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 2**31 - 1))
def test_exact_with_either_gemm_precision(gemm_precision, kind, seed):
    # The bfloat16 fast pass has a 1% error band; the band and the re-checks must still make
    # every decision exact, on the hardest inputs too.
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 80, 70, 12, seed))
    assert compute_prdc(real, fake, 3) == reference(real, fake, 3)


@pytest.mark.parametrize(
    "case",
    ["identical", "fakes_one_point", "fakes_on_a_real_point", "binary_ties", "half_duplicates"],
)
def test_degenerate_sets_stay_exact_and_bounded(case):
    # Identical rows make every pair a candidate; the per-row candidate cap, its exact
    # fallback and the radius-0 shortcut must keep the answer exact (and memory bounded).
    rng = np.random.default_rng(21)
    if case == "identical":
        real, fake = np.ones((400, 16)), np.full((350, 16), 2.0)
    elif case == "fakes_one_point":
        real = rng.normal(size=(400, 16))
        fake = np.repeat(rng.normal(size=(1, 16)), 350, axis=0)
    elif case == "fakes_on_a_real_point":
        real = rng.normal(size=(400, 16))
        fake = np.repeat(real[:1], 350, axis=0)
    elif case == "binary_ties":  # Hamming distances: hundreds of exact ties per row
        real = rng.integers(0, 2, size=(600, 6)).astype(float)
        fake = rng.integers(0, 2, size=(500, 6)).astype(float)
    else:
        real = np.concatenate([np.zeros((200, 8)), rng.normal(size=(200, 8))])
        fake = rng.normal(size=(300, 8))
    real, fake = real.astype(np.float32), fake.astype(np.float32)
    expected = reference(real, fake, 5)
    assert compute_prdc(real, fake, 5) == expected
    assert compute_prdc(real, fake, 5, chunk_size=37) == expected


def test_frechet_rank_deficient_covariance_with_more_samples_than_width():
    # N > D but a dead feature (constant column): the Cholesky route fails and the
    # symmetric square-root route must take over.
    rng = np.random.default_rng(9)
    real = rng.normal(size=(600, 12))
    real[:, 3] = 1.5
    fake = rng.normal(0.2, 1.1, size=(500, 12))
    expected = scipy_frechet(real, fake)
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-7)
    assert frechet_distance(fake, real) == pytest.approx(expected, rel=1e-7)


def test_public_modules_keep_their_names_and_the_keys_are_defined_once():
    import lightning_embviz
    import lightning_embviz._arrays as arrays
    import lightning_embviz._keys as keys
    import lightning_embviz.distributed as distributed
    import lightning_embviz.engine.distributed as engine_distributed
    import lightning_embviz.intervals as intervals
    import lightning_embviz.metrics as metrics
    import lightning_embviz.reference as reference

    assert metrics.PRDC_KEYS is arrays.PRDC_KEYS is keys.PRDC_KEYS
    assert arrays.METRIC_KEYS is keys.METRIC_KEYS is intervals.INTERVAL_METRICS
    assert keys.METRIC_KEYS == ("precision", "recall", "density", "coverage", "fd")
    assert reference.RealReference is metrics.RealReference is lightning_embviz.RealReference
    assert reference.PRDCResult is metrics.PRDCResult
    assert metrics.compute_prdc is lightning_embviz.compute_prdc
    assert distributed.compute_prdc_details_distributed is (
        engine_distributed.compute_prdc_details_distributed
    )
    assert distributed.RankFailedError is engine_distributed.RankFailedError
    assert callable(distributed.compute_prdc_details_distributed)


@pytest.mark.parametrize("face", ["compute_prdc", "reference", "compare", "clipped", "ddp"])
def test_nearest_k_gets_the_same_message_on_every_face(face):
    from lightning_embviz.distributed import compute_prdc_details_distributed
    from lightning_embviz.metrics import RealReference, clipped_density_coverage

    real = np.random.default_rng(0).normal(size=(20, 3))
    calls = {
        "compute_prdc": lambda k: compute_prdc(real, real, k),
        "reference": lambda k: RealReference(real, k),
        "compare": lambda k: RealReference(real, 2).compare(real, k),
        "clipped": lambda k: clipped_density_coverage(real, real, k),
        "ddp": lambda k: compute_prdc_details_distributed(real, real, k),
    }
    with pytest.raises(ValueError, match=r"^`nearest_k` must be >= 1, got 0\.$"):
        calls[face](0)
    with pytest.raises(TypeError, match=r"^`nearest_k` must be an int >= 1.*, got 2\.5\.$"):
        calls[face](2.5)


def test_metrics_module_exports_the_suite():
    import lightning_embviz.metrics as metrics
    import lightning_embviz.suite as suite

    for name in suite.__all__:
        assert name in metrics.__all__
        assert getattr(metrics, name) is getattr(suite, name)
