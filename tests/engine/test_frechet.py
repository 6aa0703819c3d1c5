"""The Fréchet distance's fast routes (blocked SYRK, triangular sandwich, ``Z Z^T`` for few
rows, whitened Gram for a low-rank real side, prefix Gram of FD-infinity) against the
``scipy.linalg.sqrtm`` formula of pytorch-fid and torchmetrics, with column blocks and row
chunks small enough that every loop runs several times with a ragged last block."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from lightning_embviz.engine import frechet
from lightning_embviz.metrics import FrechetReference, fd_infinity, frechet_distance


def sqrtm_formula(real: np.ndarray, fake: np.ndarray) -> float:
    """pytorch-fid's ``calculate_frechet_distance`` (without its singular-matrix offset)."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = np.real(scipy.linalg.sqrtm(s1 @ s2))
    diff = real.mean(0) - fake.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frechet, "_BLOCK", 5)


def _mixed(rng: np.random.Generator, rows: int, d: int) -> np.ndarray:
    return rng.normal(size=(rows, d)) @ rng.normal(size=(d, d)) / np.sqrt(d)


def _case(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(len(name))
    d = 23
    if name == "random":  # N, M > D: Cholesky factor, SYRK + triangular sandwich
        return _mixed(rng, 120, d), rng.normal(0.2, 1.3, size=(90, d))
    if name == "few_fakes":  # M <= D: (M, M) Z Z^T of the whitened fakes
        return _mixed(rng, 120, d), rng.normal(0.2, 1.3, size=(17, d))
    if name == "few_reals":  # N <= D: F = X_c^T / sqrt(N-1), rank N-1 < D
        return _mixed(rng, 8, d), rng.normal(0.2, 1.3, size=(300, d))
    if name == "singular_real":  # N > D, duplicated column: the eigh factor, rank D-1
        real = _mixed(rng, 150, d - 1)
        return np.concatenate([real, real[:, :1]], axis=1), rng.normal(size=(140, d))
    if name == "duplicated_rows":  # every row three times on both sides
        real, fake = _mixed(rng, 40, d), rng.normal(0.1, 1.1, size=(30, d))
        return np.repeat(real, 3, axis=0), np.repeat(fake, 3, axis=0)
    raise AssertionError(name)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize(
    ("name", "rank", "triangular", "whitens"),
    [
        ("random", 23, True, False),
        ("few_fakes", 23, True, False),
        ("few_reals", 7, False, True),
        ("singular_real", 22, False, False),
        ("duplicated_rows", 23, True, False),
    ],
)
def test_every_route_equals_the_sqrtm_formula(name, rank, triangular, whitens):
    real, fake = _case(name)
    expected = sqrtm_formula(real, fake)
    ref = FrechetReference(real, chunk_size=7)
    assert (ref.rank, ref._triangular, ref._whitens_fakes(len(fake))) == (
        rank,
        triangular,
        whitens,
    )
    assert ref.distance(fake) == pytest.approx(expected, rel=1e-6)
    assert ref.distance(fake.astype(np.float32)) == pytest.approx(
        sqrtm_formula(real, fake.astype(np.float32)), rel=1e-6
    )
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6)
    # tr(S_r) and the mean from the blocked passes, as np.cov has them
    assert ref.trace == pytest.approx(np.trace(np.cov(real, rowvar=False)), rel=1e-12)


@pytest.mark.usefixtures("small_blocks")
def test_identical_sets_give_zero():
    real, _ = _case("random")
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-9)
    assert FrechetReference(real, chunk_size=7).distance(real[::-1]) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.usefixtures("small_blocks")
@pytest.mark.parametrize("name", ["random", "few_reals", "singular_real"])
def test_fd_infinity_points_equal_the_sqrtm_formula(name):
    # Sizes below and above the rank of F: Z Z^T per subset, then the prefix Gram.
    real, _ = _case(name)
    rng = np.random.default_rng(5)
    fake = rng.normal(0.1, 1.2, size=(160, real.shape[1]))
    out = fd_infinity(FrechetReference(real, chunk_size=7), fake, num_points=6, min_size=10)
    order = torch.randperm(len(fake), generator=torch.Generator().manual_seed(0)).numpy()
    assert out.sizes[0] < 22 < out.sizes[1]
    for size, value in zip(out.sizes, out.fd):
        subset = fake[order[:size]]
        assert value == pytest.approx(sqrtm_formula(real, subset), rel=1e-6)
        assert value == pytest.approx(frechet_distance(real, subset), rel=1e-9)


@pytest.mark.usefixtures("small_blocks")
def test_blocked_gram_fills_the_lower_triangle():
    # The accelerator path of the Gram matrix (the CPU one is BLAS dsyrk in place).
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(9, 23)))
    out = torch.ones(23, 23, dtype=torch.float64)
    frechet._gram_lower_blocked(x, out)
    expected = x.T @ x + 1
    assert torch.allclose(out.tril(), expected.tril(), rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("layout", ["c", "fortran", "transposed view"])
def test_cpu_gram_updates_the_lower_triangle_in_place(layout: str):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(9, 23))
    if layout == "fortran":
        a = np.asfortranarray(a)
    x = torch.from_numpy(a) if layout != "transposed view" else torch.from_numpy(a.T.copy()).T
    out = torch.ones(23, 23, dtype=torch.float64)
    before = out.data_ptr()
    frechet._gram_lower(x, out)
    frechet._gram_lower(x, out)  # accumulates
    expected = 2 * (a.T @ a) + 1
    assert out.data_ptr() == before
    assert np.allclose(np.tril(out.numpy()), np.tril(expected), rtol=1e-14, atol=1e-13)
    assert (np.triu(out.numpy(), 1) == np.triu(np.ones((23, 23)), 1)).all()  # untouched


def test_eigensolver_runs_on_one_thread_and_restores(monkeypatch: pytest.MonkeyPatch):
    seen: list[int] = []
    eigvalsh = torch.linalg.eigvalsh

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return eigvalsh(*args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigvalsh", spy)
    before = torch.get_num_threads()
    real, fake = _case("random")
    torch.set_num_threads(2)
    try:
        value = FrechetReference(real).distance(fake)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert seen == [1]
    assert value == pytest.approx(sqrtm_formula(real, fake), rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_rounding_level_pivot_takes_the_eigh_factor(seed: int):
    # A column that is a combination of others: S_r is singular, but whether Cholesky fails
    # depends on the last bits. A rounding-level pivot must not be kept as a factor column.
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(300, 5))
    real = np.concatenate([base, base[:, :2] @ np.array([[0.3], [-1.7]])], axis=1)
    fake = rng.normal(0.2, 1.1, size=(250, 6))
    ref = FrechetReference(real)
    assert ref.rank == 5
    assert ref.distance(fake) == pytest.approx(sqrtm_formula(real, fake), rel=1e-6)
