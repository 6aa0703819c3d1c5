"""Vendi, kernel distance, FD(-infinity), clipped density/coverage, realism and rarity against
float64 reference formulas written out in full here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from _prdc_cases import make_sets
from lightning_embviz import RealReference, compute_prdc_details
from lightning_embviz.engine.balls import _ball_pass, _coverage_curve
from lightning_embviz.metrics import (
    FrechetReference,
    clipped_density_coverage,
    fd_infinity,
    frechet_distance,
    kernel_distance,
    rarity_score,
    realism_score,
    vendi_score,
)

# --- reference formulas ---------------------------------------------------------------------


def vendi_direct(x: np.ndarray, q: float) -> float:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.linalg.eigvalsh(xn @ xn.T / len(x))
    lam = lam[lam > 1e-12]
    lam = lam / lam.sum()
    if q == 1:
        return float(np.exp(-(lam * np.log(lam)).sum()))
    if q == 0:
        return float(len(lam))
    if math.isinf(q):
        return float(1 / lam.max())
    return float(((lam**q).sum()) ** (1 / (1 - q)))


def kd_double_sum(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    n, m = len(x), len(y)
    total_xx = sum((x[i] @ x[j] / d + 1) ** 3 for i in range(n) for j in range(n) if i != j)
    total_yy = sum((y[i] @ y[j] / d + 1) ** 3 for i in range(m) for j in range(m) if i != j)
    total_xy = sum((x[i] @ y[j] / d + 1) ** 3 for i in range(n) for j in range(m))
    return total_xx / (n * (n - 1)) + total_yy / (m * (m - 1)) - 2 * total_xy / (n * m)


def kd_matrix(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    n, m = len(x), len(y)
    return float(
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * kxy.mean()
    )


def scipy_frechet(real: np.ndarray, fake: np.ndarray) -> float:
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    diff = real.mean(0) - fake.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances rounded as the reference prdc (scikit-learn) rounds them."""
    sq = ((a.astype(np.float64)[:, None, :] - b.astype(np.float64)[None, :, :]) ** 2).sum(-1)
    if a.dtype == np.float32 and b.dtype == np.float32:
        return np.sqrt(sq.astype(np.float32).astype(np.float64)).astype(np.float32).astype(float)
    return np.sqrt(sq)


def kth_radii(x: np.ndarray, k: int) -> np.ndarray:
    return np.sort(keys(x, x), axis=1)[:, k]


# --- Vendi ----------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 2.0, math.inf])
@pytest.mark.parametrize("kind", ["normal", "discrete", "duplicates"])
def test_vendi_matches_eigenvalues_of_k_over_n(q, kind):
    x, _ = make_sets(kind, 70, 5, 12, seed=3)
    x = x[np.linalg.norm(x, axis=1) > 0]
    assert vendi_score(x, q) == pytest.approx(vendi_direct(x, q), rel=1e-9)
    # blocked accumulation, the (n, n) route (n < D) and tensors give the same value
    assert vendi_score(torch.from_numpy(x), q, chunk_size=7) == pytest.approx(
        vendi_direct(x, q), rel=1e-9
    )
    wide = np.concatenate([x[:9], x[:9] ** 2], axis=1)  # n = 9 < D = 24
    assert vendi_score(wide, q) == pytest.approx(vendi_direct(wide, q), rel=1e-9)


def test_vendi_identical_and_orthogonal_rows():
    assert vendi_score(np.tile([[1.0, 2.0, 3.0]], (40, 1))) == pytest.approx(1.0, abs=1e-9)
    for q in (0.0, 1.0, 2.0, math.inf):
        assert vendi_score(np.eye(6) * 3.0, q) == pytest.approx(6.0, rel=1e-9)
    # scale does not matter (cosine), and two copies of each of 3 directions give 3
    scales = np.array([[1.0], [5.0], [2.0], [0.5], [3.0], [7.0]])
    assert vendi_score(np.repeat(np.eye(3), 2, axis=0) * scales) == pytest.approx(3.0, rel=1e-9)


def test_vendi_wide_set_takes_the_gram_route():
    # n = 6 rows of D = 200 000: the (D, D) moment would be 320 GB; the (n, n) Gram matrix
    # has the same non-zero eigenvalues.
    x = np.random.default_rng(4).normal(size=(6, 200_000))
    x[1] = x[0] * 2.0  # a repeated direction
    for q in (0.0, 1.0, 2.0, math.inf):
        assert vendi_score(x, q) == pytest.approx(vendi_direct(x, q), rel=1e-9)
    assert vendi_score(x, 0.0) == 5.0


def test_vendi_moment_sum_is_exact_in_any_block_order():
    from lightning_embviz.engine.kernels import _from_limbs, _moment_limbs

    x = torch.from_numpy(np.random.default_rng(5).normal(size=(500, 24)))
    forward = _moment_limbs(x, 16, range(32))
    parts = [_moment_limbs(x, 16, range(b, 32, 3)) for b in (2, 0, 1)]  # other sums, order
    assert torch.equal(forward, parts[0] + parts[1] + parts[2])
    xn = x / x.norm(dim=1, keepdim=True)
    # the lower triangle holds the moment (the eigensolver reads only that one)
    moment = torch.tril(_from_limbs(forward))
    torch.testing.assert_close(moment, torch.tril(xn.T @ xn), rtol=1e-13, atol=1e-13)


def test_vendi_errors():
    with pytest.raises(ValueError, match=r"1 row\(s\) of zero norm out of 3"):
        vendi_score(np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="`q` must be >= 0"):
        vendi_score(np.eye(3), q=-1)
    with pytest.raises(TypeError, match="`q` must be a number"):
        vendi_score(np.eye(3), q="1")


# --- kernel distance ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "discrete", "duplicates", "far"])
def test_kernel_distance_matches_double_sum(kind):
    x, y = make_sets(kind, 14, 11, 3, seed=5)
    # KD is a difference of sums of kernel values: float64 rounding of the sums bounds it
    tol = 1e-12 * max(np.abs(a @ b.T / 3 + 1).max() ** 3 for a, b in ((x, x), (y, y), (x, y)))
    out = kernel_distance(x, y, chunk_size=4)
    assert out["kd"] == pytest.approx(kd_double_sum(x, y), rel=1e-10, abs=tol)
    assert kernel_distance(x.astype(np.float32), y.astype(np.float32))["kd"] == pytest.approx(
        kd_matrix(x.astype(np.float32).astype(float), y.astype(np.float32).astype(float)),
        rel=1e-10,
        abs=tol,
    )


def test_kernel_distance_jackknife_and_chunks():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(40, 6)), rng.normal(0.2, 1.0, size=(30, 6))
    drop_x = np.array([kd_matrix(np.delete(x, i, 0), y) for i in range(len(x))])
    drop_y = np.array([kd_matrix(x, np.delete(y, j, 0)) for j in range(len(y))])
    se = math.sqrt(
        39 / 40 * ((drop_x - drop_x.mean()) ** 2).sum()
        + 29 / 30 * ((drop_y - drop_y.mean()) ** 2).sum()
    )
    for chunk in (1, 7, 64):
        out = kernel_distance(x, y, chunk_size=chunk)
        assert out["kd"] == pytest.approx(kd_matrix(x, y), rel=1e-10)
        assert out["kd_se"] == pytest.approx(se, rel=1e-8)
    assert math.isnan(kernel_distance(x[:2], y)["kd_se"])


def test_kernel_distance_is_centred_under_equal_distributions():
    # Unbiased: over draws of equal distributions the mean is 0 within its standard error;
    # the jackknife SE matches the spread of the estimates (it errs on the large side).
    rng = np.random.default_rng(0)
    values, ses = [], []
    for _ in range(40):
        out = kernel_distance(rng.normal(size=(60, 4)), rng.normal(size=(50, 4)))
        values.append(out["kd"])
        ses.append(out["kd_se"])
    values = np.array(values)
    assert abs(values.mean()) < 3 * values.std(ddof=1) / math.sqrt(len(values))
    assert (values < 0).any()  # negative values are legitimate
    assert 0.7 < np.mean(ses) / values.std(ddof=1) < 2.5


def test_kernel_distance_errors():
    with pytest.raises(ValueError, match="at least 2 rows for the unbiased kernel distance"):
        kernel_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="same width D, got 3 and 4"):
        kernel_distance(np.zeros((5, 3)), np.zeros((5, 4)))


# --- Fréchet distance -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "m", "d"), [(600, 500, 16), (40, 30, 64), (300, 50, 64), (50, 300, 64), (65, 65, 64)]
)
def test_frechet_reference_matches_sqrtm_formula(n, m, d):
    rng = np.random.default_rng(n + m)
    real = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)
    fake = rng.normal(0.2, 1.3, size=(m, d))
    ref = FrechetReference(real)
    expected = scipy_frechet(real, fake)
    assert ref.distance(fake) == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6)
    assert ref.distance(torch.from_numpy(fake)) == ref.distance(fake)  # reusable, same value


def test_frechet_reference_singular_covariance_falls_back():
    # N > D but rank-deficient (a duplicated column): Cholesky fails, the eigh factor serves.
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 6))
    real = np.concatenate([real, real[:, :1]], axis=1)
    fake = rng.normal(size=(150, 7))
    ref = FrechetReference(real)
    assert ref.rank == 6
    assert ref.distance(fake) == pytest.approx(scipy_frechet(real, fake), rel=1e-6)


def test_frechet_reference_errors():
    with pytest.raises(ValueError, match="`real` needs at least 2 rows for a covariance"):
        FrechetReference(np.zeros((1, 3)))
    ref = FrechetReference(np.random.default_rng(0).normal(size=(10, 3)))
    with pytest.raises(ValueError, match="same width D, got 3 and 4"):
        ref.distance(np.zeros((5, 4)))
    with pytest.raises(ValueError, match="`fake` needs at least 2 rows"):
        ref.distance(np.zeros((1, 3)))
    assert repr(ref) == "FrechetReference(num_real=10, width=3, rank=3)"


# --- FD-infinity ----------------------------------------------------------------------------


@pytest.mark.parametrize(("m", "d", "min_size"), [(400, 8, None), (120, 32, 10)])
def test_fd_infinity_points_are_subset_fds_and_line_fit(m, d, min_size):
    rng = np.random.default_rng(d)
    real = rng.normal(size=(500, d))
    fake = rng.normal(0.1, 1.2, size=(m, d))
    out = fd_infinity(real, fake, num_points=4, min_size=min_size, seed=3)
    order = torch.randperm(m, generator=torch.Generator().manual_seed(3)).numpy()
    assert out.sizes[-1] == m and len(out.sizes) == 4
    for size, value in zip(out.sizes, out.fd):
        assert value == pytest.approx(frechet_distance(real, fake[order[:size]]), rel=1e-8)
    fit = scipy.stats.linregress(1 / np.array(out.sizes), out.fd)
    assert out.fd_inf == pytest.approx(fit.intercept, rel=1e-9)
    assert out.slope == pytest.approx(fit.slope, rel=1e-9)
    assert out.r_squared == pytest.approx(fit.rvalue**2, rel=1e-9)
    # the same with a fitted reference, and seeded
    again = fd_infinity(FrechetReference(real), fake, num_points=4, min_size=min_size, seed=3)
    assert again == out


def test_fd_infinity_is_nearer_the_truth_than_fd():
    # N(0, I) against N(mu 1, sigma^2 I): FD = d mu^2 + d (1 - sigma)^2.
    rng = np.random.default_rng(0)
    d, mu, sigma = 16, 0.1, 1.2
    truth = d * mu**2 + d * (1 - sigma) ** 2
    real = rng.normal(size=(20000, d))
    errors_fd, errors_inf = [], []
    for _ in range(3):
        fake = rng.normal(mu, sigma, size=(600, d))
        errors_fd.append(abs(frechet_distance(real, fake) - truth))
        errors_inf.append(abs(fd_infinity(real, fake).fd_inf - truth))
    assert np.mean(errors_inf) < np.mean(errors_fd)


def test_fd_infinity_errors():
    real, fake = np.zeros((10, 2)) + np.arange(2), np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match="`num_points` must be >= 2, got 1"):
        fd_infinity(real, fake, num_points=1)
    with pytest.raises(ValueError, match=r"subset sizes \[10\] of M=10 fakes"):
        fd_infinity(real, fake, min_size=10)
    with pytest.raises(TypeError, match="`seed` must be an int"):
        fd_infinity(real, fake, seed=0.5)


# --- clipped density / coverage, realism, rarity ----------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "discrete", "duplicates", "far", "quantized"])
def test_ball_pass_is_exact(kind):
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 45, 38, 4, seed=9))
    radii = kth_radii(real, 3)
    clipped = np.minimum(radii, np.median(radii))
    both = torch.from_numpy(np.stack([clipped, radii]))
    stats = _ball_pass(torch.from_numpy(real), torch.from_numpy(fake), both, "f32")
    inside = keys(real, fake)[None] < np.stack([clipped, radii])[:, :, None]  # (2, N, M)
    assert np.array_equal(stats.row_count.numpy(), inside.sum(axis=2))
    assert np.array_equal(stats.col_count.numpy(), inside.sum(axis=1))
    low = np.where(inside, np.stack([clipped, radii])[:, :, None], np.inf).min(axis=1)
    assert np.array_equal(stats.col_min_radius.numpy(), low)
    # the engine's own counts agree
    details = compute_prdc_details(real, fake, 3)
    assert np.array_equal(stats.col_count[1].numpy(), details.fake_ball_count.numpy())


def clipped_reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    """The definitions, written out on full distance matrices."""
    n, m = len(real), len(fake)
    radii = kth_radii(real, k)
    clipped = np.minimum(radii, np.median(radii))
    rr = keys(real, real) < clipped[:, None]
    np.fill_diagonal(rr, False)
    real_part = np.minimum(rr.sum(axis=0) / k, 1).mean()
    fake_part = np.minimum((keys(real, fake) < clipped[:, None]).sum(axis=0) / k, 1).mean()
    raw = np.minimum((keys(real, fake) < radii[:, None]).sum(axis=1), k).mean() / k
    curve = [
        np.minimum(np.arange(j + 1), k) @ scipy.stats.betabinom.pmf(np.arange(j + 1), j, k, n - k)
        for j in range(m + 1)
    ]
    curve = np.array(curve) / k
    return {
        "clipped_density": min(1.0, fake_part / real_part) if real_part > 0 else math.nan,
        "clipped_coverage": float((curve < raw).sum() / (m + 1)),
    }


@pytest.mark.parametrize("kind", ["normal", "discrete", "duplicates", "collapsed"])
def test_clipped_density_coverage_match_definitions(kind):
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 50, 40, 3, seed=4))
    ours = clipped_density_coverage(real, fake, 3)
    expected = clipped_reference(real, fake, 3)
    assert ours == pytest.approx(expected, rel=1e-12, nan_ok=True)
    # a fitted reference serves its radii
    again = clipped_density_coverage(RealReference(real, (3, 5)), fake, 3)
    assert again == pytest.approx(ours, nan_ok=True)


def test_clipped_with_a_fitted_reference_runs_the_real_real_pass_once(monkeypatch):
    import lightning_embviz.engine.balls as balls

    real, fake = (a.astype(np.float32) for a in make_sets("discrete", 50, 40, 3, seed=5))
    other = make_sets("normal", 50, 30, 3, seed=6)[1].astype(np.float32)
    calls = []
    real_pass = balls._ball_pass
    monkeypatch.setattr(
        balls, "_ball_pass", lambda a, b, *rest: calls.append(b is a) or real_pass(a, b, *rest)
    )
    ref = RealReference(real, (3, 5))
    for k, f in ((3, fake), (3, other), (5, fake), (5, other)):
        assert clipped_density_coverage(ref, f, k) == pytest.approx(
            clipped_reference(real, f, k), rel=1e-12, nan_ok=True
        )
    # one real-real pass per k (kept with the reference), one real-fake pass per call
    assert calls == [True, False, False, True, False, False]


def test_kernel_distance_keeps_the_real_sums_with_their_reference(monkeypatch):
    import lightning_embviz.engine.kernels as kernels

    real, fake = (a.astype(np.float32) for a in make_sets("duplicates", 40, 30, 3, seed=7))
    other = make_sets("normal", 40, 25, 3, seed=8)[1]
    calls = []
    sums = kernels._kernel_sums
    monkeypatch.setattr(
        kernels, "_kernel_sums", lambda a, b, *rest: calls.append(b is None) or sums(a, b, *rest)
    )
    reference = RealReference(real, 3)
    counts = []
    for f in (fake, other, fake):
        expected = kernels.kernel_distance(real, f, chunk_size=16)
        calls.clear()
        assert kernels.kernel_distance_kept(real, f, reference=reference, chunk_size=16) == expected
        counts.append(len(calls))
    # the real-real sums once (with the reference), then only the fake-fake and real-fake sums
    assert counts == [3, 2, 2]


def test_coverage_curve_is_the_beta_binomial_expectation():
    k, n, m = 4, 30, 25
    expected = [
        np.minimum(np.arange(j + 1), k) @ scipy.stats.betabinom.pmf(np.arange(j + 1), j, k, n - k)
        for j in range(m + 1)
    ]
    assert np.allclose(_coverage_curve(k, n, m) * k, expected, rtol=1e-10, atol=1e-14)


def test_clipped_metrics_calibrated_and_robust():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(1000, 8))
    same = clipped_density_coverage(real, rng.normal(size=(1000, 8)))
    assert same["clipped_density"] > 0.9 and same["clipped_coverage"] > 0.9
    # half the fakes replaced by far-away junk: both drop to about one half
    half = np.concatenate([rng.normal(size=(500, 8)), rng.normal(size=(500, 8)) + 50])
    out = clipped_density_coverage(real, half)
    assert 0.4 < out["clipped_density"] < 0.6
    assert 0.4 < out["clipped_coverage"] < 0.6


def test_realism_and_rarity_match_definitions():
    real, fake = (a.astype(np.float32) for a in make_sets("quantized", 60, 30, 3, seed=2))
    k = 4
    radii = kth_radii(real, k)
    dist = keys(real, fake)
    kept = radii <= np.median(radii)
    with np.errstate(divide="ignore"):
        expected = np.where(kept[:, None] & (radii[:, None] > 0), radii[:, None] / dist, 0).max(0)
    got = realism_score(real, fake, k).numpy()
    assert np.allclose(got, expected, rtol=1e-12)
    inside = dist < radii[:, None]
    rarity = np.where(inside, radii[:, None], np.inf).min(axis=0)
    rarity[np.isinf(rarity)] = np.nan
    assert np.array_equal(rarity_score(real, fake, k).numpy(), rarity, equal_nan=True)
    # realism > 1 exactly for fakes inside a kept ball (ties at the edge: exactly 1)
    inside_kept = (inside & kept[:, None]).any(axis=0)
    assert np.array_equal(got > 1, inside_kept)
    assert (got == 1).any()  # the quantized data put fakes on ball edges


def test_per_sample_errors():
    real = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(ValueError, match="`keep` must be a fraction in"):
        realism_score(real, real, keep=0.0)
    with pytest.raises(ValueError, match="`nearest_k=20` needs more than 20 samples"):
        rarity_score(real, real, 20)
    with pytest.raises(ValueError, match="`nearest_k=4` was not fitted"):
        clipped_density_coverage(RealReference(real, 5), real, 4)
    with pytest.raises(ValueError, match="same width D, got 3 and 2"):
        clipped_density_coverage(real, real[:, :2])


def test_mode_dropping_moves_every_metric():
    # A small version of benchmarks/bench_suite.py's table: 7 modes, fakes drop them.
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((7, 16)) * 3.0
    real = (centres.repeat(60, axis=0) + rng.standard_normal((420, 16))).astype(np.float32)
    rows = {}
    for kept in (7, 4, 1):
        fake = centres[rng.integers(0, kept, 420)] + rng.standard_normal((420, 16))
        fake = fake.astype(np.float32)
        rows[kept] = (
            clipped_density_coverage(real, fake)["clipped_coverage"],
            vendi_score(fake),
            kernel_distance(real, fake)["kd"],
            fd_infinity(real, fake).fd_inf,
        )
    for column in range(4):
        values = [rows[kept][column] for kept in (7, 4, 1)]
        if column < 2:  # coverage and diversity fall
            assert values[0] > values[1] > values[2]
        else:  # distances grow
            assert values[0] < values[1] < values[2]
    assert rows[7][0] > 0.85 and rows[1][0] < 0.3


def test_vendi_bits_do_not_depend_on_the_thread_count():
    # DDP/torchrun ranks often run 1 thread where one process runs several: the eigensolver
    # runs on one thread, so the score is the same float for any torch thread count.
    from threadpoolctl import threadpool_limits

    x = np.random.default_rng(3).normal(size=(1500, 800))
    before = torch.get_num_threads()
    try:
        scores = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with threadpool_limits(threads):  # the moment's SYRK runs in the BLAS
                scores.append((vendi_score(x), vendi_score(x[:700]), vendi_score(x, q=2.0)))
    finally:
        torch.set_num_threads(before)
    assert scores[0] == scores[1]
    assert torch.get_num_threads() == before


def test_frechet_bits_do_not_depend_on_the_thread_count():
    # One process runs several BLAS and torch threads where DDP/torchrun ranks often run one:
    # every route of the Fréchet distance must give the same float for any thread count
    # (threaded GEMMs, Cholesky and eigensolvers round differently per thread count).
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(5)
    mix = rng.normal(size=(800, 800)) / np.sqrt(800)
    real = rng.normal(size=(1500, 800)) @ mix
    fake = rng.normal(0.1, 1.1, size=(1200, 800)) @ mix
    wide_real = real[:600]  # N <= D: the rows are the factor
    singular = np.concatenate([real[:, :700], real[:, :100]], axis=1)  # N > D, rank 700
    before = torch.get_num_threads()
    try:
        results = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with threadpool_limits(threads):
                ref = FrechetReference(real)
                results.append(
                    (
                        ref.distance(fake),
                        frechet_distance(real, fake),
                        fd_infinity(ref, fake, seed=1),
                        ref.distance(fake[:500]),
                        frechet_distance(wide_real, fake),
                        frechet_distance(singular, fake),
                    )
                )
    finally:
        torch.set_num_threads(before)
    assert results[0] == results[1]
