"""RealReference: fitted once, identical to compute_prdc and to the reference `prdc` package."""

from __future__ import annotations

import zipfile

import numpy as np
import prdc.prdc as prdc_impl
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _prdc_cases import KINDS, make_sets, reference
from lightning_embviz import RealReference, compute_prdc, compute_prdc_details
from lightning_embviz.engine import reference as reference_module
from lightning_embviz.engine.reference import ReferenceCore


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    n=st.integers(8, 80),
    m=st.integers(8, 80),
    d=st.sampled_from([1, 3, 12, 40]),
    ks=st.lists(st.integers(1, 6), min_size=1, max_size=4, unique=True),
    dtype=st.sampled_from([np.float32, np.float64]),
    seed=st.integers(0, 2**31 - 1),
)
def test_compare_and_sweep_match_compute_prdc_and_the_reference(kind, n, m, d, ks, dtype, seed):
    real, fake = (a.astype(dtype) for a in make_sets(kind, n, m, d, seed))
    ref = RealReference(real, nearest_k=ks)
    swept = ref.sweep(fake)
    assert list(swept) == ks
    for k in ks:
        expected = reference(real, fake, k)
        assert compute_prdc(real, fake, k) == expected
        assert ref.compare(fake, nearest_k=k) == expected
        assert swept[k] == expected
    assert ref.compare(fake) == swept[ks[0]]


@pytest.mark.parametrize("kind", KINDS)
def test_sweep_over_many_k_on_hard_inputs(kind):
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 160, 140, 8, seed=5))
    ks = tuple(range(1, 13))
    ref = RealReference(real, nearest_k=ks, chunk_size=40)
    swept = ref.sweep(fake, chunk_size=33)
    for k in ks:
        assert swept[k] == reference(real, fake, k), k
        # the radii for every k are the reference's, bit for bit
        np.testing.assert_array_equal(
            ref.real_radii(k).numpy().astype(np.float32),
            prdc_impl.compute_nearest_neighbour_distances(real, k),
        )


def test_details_are_identical_to_compute_prdc_details():
    real, fake = (a.astype(np.float32) for a in make_sets("quantized", 300, 250, 6, seed=2))
    ref = RealReference(real, nearest_k=(3, 7))
    for k in (3, 7):
        ours = ref.compare_details(fake, nearest_k=k)
        direct = compute_prdc_details(real, fake, k)
        assert ours.nearest_k == direct.nearest_k == k
        assert ours.as_dict() == direct.as_dict() == reference(real, fake, k)
        for name in ("real_radii", "fake_radii", "real_covered", "real_recalled"):
            assert torch.equal(getattr(ours, name), getattr(direct, name)), name
        assert torch.equal(ours.fake_ball_count, direct.fake_ball_count)
    swept = ref.sweep_details(fake)
    assert list(swept) == [3, 7]
    assert torch.equal(swept[7].real_covered, ref.compare_details(fake, 7).real_covered)


def test_compute_prdc_is_a_fitted_reference(monkeypatch):
    # compute_prdc fits the same core as RealReference (the engine's seam), once per call.
    calls = []
    original = ReferenceCore.fit.__func__

    def spy(cls, real, ks, chunk):
        calls.append(ks)
        return original(cls, real, ks, chunk)

    monkeypatch.setattr(ReferenceCore, "fit", classmethod(spy))
    rng = np.random.default_rng(0)
    compute_prdc(rng.normal(size=(30, 3)), rng.normal(size=(20, 3)), 4)
    compute_prdc_details(rng.normal(size=(30, 3)), rng.normal(size=(20, 3)), 2)
    assert calls == [(4,), (2,)]


def test_the_core_seam_shared_by_the_faces():
    # What the distributed face does through the seam: radii of row shares, put end to end,
    # set on a prepared core, give the fitted reference's radii and results bit for bit.
    rng = np.random.default_rng(5)
    real = torch.from_numpy(rng.normal(size=(57, 4)).astype(np.float32))
    fake = torch.from_numpy(rng.normal(0.2, 1.0, size=(41, 4)).astype(np.float32))
    fitted = RealReference(real, (4, 2))
    core = ReferenceCore.prepare(real.clone(), (4, 2))
    assert core.sorted_ks == (2, 4) and core.ks == (4, 2)
    with pytest.raises(RuntimeError, match="not fitted yet"):
        core.radii  # noqa: B018
    shares = [core.radii_of_rows(None, rows) for rows in ((0, 20), (20, 21), (21, 57))]
    core.set_radii(torch.cat(shares, dim=1))
    assert torch.equal(core.radii, fitted.core.radii)
    assert torch.equal(core.radii_for((4,))[0], fitted.real_radii(4))
    rebuilt = RealReference.from_core(core)
    assert rebuilt.fingerprint == fitted.fingerprint
    assert (
        rebuilt.sweep(fake)
        == fitted.sweep(fake)
        == {k: reference(real.numpy(), fake.numpy(), k) for k in (4, 2)}
    )
    k, chunk, f = core.check_compare(fake.numpy(), None, None)
    assert (k, chunk) == (4, None) and torch.equal(f, fake)
    with pytest.raises(ValueError, match=r"`nearest_k=3` was not fitted"):
        core.check_compare(fake, 3, None)
    with pytest.raises(ValueError, match=r"`fake` has width D=2"):
        core.check_sweep(fake[:, :2], None)


def test_each_pass_runs_once(monkeypatch):
    # Fitting: one radius pass for all k. A sweep: one fake radius pass, one real-fake pass.
    radius_calls, cross_calls = [], []
    original_radii = reference_module.neighbour_radii
    original_cross = reference_module.cross_ball_tests
    monkeypatch.setattr(
        reference_module,
        "neighbour_radii",
        lambda x, ks, *a: radius_calls.append(tuple(ks)) or original_radii(x, ks, *a),
    )
    monkeypatch.setattr(
        reference_module,
        "cross_ball_tests",
        lambda *a, **kw: cross_calls.append(a[2].shape[0]) or original_cross(*a, **kw),
    )
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 5)).astype(np.float32)
    fake = rng.normal(size=(180, 5)).astype(np.float32)
    ref = RealReference(real, nearest_k=(10, 2, 5))
    assert radius_calls == [(2, 5, 10)]
    ref.sweep(fake)
    assert radius_calls == [(2, 5, 10), (2, 5, 10)]
    assert cross_calls == [3]
    ref.compare(fake, nearest_k=5)
    assert radius_calls[-1] == (5,) and cross_calls[-1] == 1


def test_description_and_order_of_k():
    rng = np.random.default_rng(3)
    real = rng.normal(size=(50, 6)).astype(np.float32)
    ref = RealReference(torch.from_numpy(real), nearest_k=[10, 3, 10, 5])
    assert ref.nearest_ks == (10, 3, 5)
    assert ref.nearest_k == 10
    assert (ref.num_real, ref.width, ref.dtype) == (50, 6, torch.float32)
    assert ref.device == torch.device("cpu")
    assert "nearest_ks=(10, 3, 5)" in repr(ref)
    assert torch.equal(ref.real, torch.from_numpy(real))
    assert list(ref.sweep(rng.normal(size=(40, 6)).astype(np.float32))) == [10, 3, 5]
    assert RealReference(real, nearest_k=range(1, 4)).nearest_ks == (1, 2, 3)
    assert RealReference(real, nearest_k=np.array([4, 2])).nearest_ks == (4, 2)
    # radii grow with k
    assert bool((ref.real_radii(3) <= ref.real_radii(5)).all())
    assert bool((ref.real_radii(5) <= ref.real_radii(10)).all())


def test_results_do_not_depend_on_chunk_size_or_fake_row_order():
    real, fake = (a.astype(np.float32) for a in make_sets("discrete_far", 120, 110, 5, seed=8))
    ref = RealReference(real, nearest_k=(1, 4))
    expected = ref.sweep(fake)
    order = np.random.default_rng(0).permutation(len(fake))
    assert ref.sweep(fake[order], chunk_size=7) == expected
    assert RealReference(real, nearest_k=(1, 4), chunk_size=9).sweep(fake) == expected


def test_fake_far_from_the_real_scale_rebuilds_the_frame():
    # A fake set far larger than the real one changes the frame's scale: the real set is
    # converted again for that comparison, the fitted copy stays for the next one.
    rng = np.random.default_rng(4)
    real = rng.normal(size=(90, 4)).astype(np.float32)
    fake_huge = (rng.normal(size=(80, 4)) * 1e6).astype(np.float32)
    fake = rng.normal(size=(80, 4)).astype(np.float32)
    ref = RealReference(real, nearest_k=3)
    assert ref.compare(fake_huge) == reference(real, fake_huge, 3)
    assert ref.compare(fake) == reference(real, fake, 3)


@pytest.mark.parametrize("suffix", [".npz", ".pt", ".ref"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_save_and_load_round_trip(tmp_path, suffix, dtype):
    real, fake = (
        torch.from_numpy(a).to(dtype) for a in make_sets("quantized", 120, 100, 7, seed=6)
    )
    ref = RealReference(real, nearest_k=(5, 2, 9))
    path = tmp_path / f"reference{suffix}"
    ref.save(path)
    assert path.exists()  # written as given, no suffix added
    loaded = RealReference.load(path)
    assert loaded.nearest_ks == (5, 2, 9)
    assert loaded.dtype == dtype and loaded.width == 7 and loaded.num_real == 120
    assert loaded.fingerprint == ref.fingerprint
    assert torch.equal(loaded.real, ref.real)
    for k in (2, 5, 9):
        assert torch.equal(loaded.real_radii(k), ref.real_radii(k))
    assert loaded.sweep(fake) == ref.sweep(fake)
    assert loaded.matches(real)
    # the files open with the safe loaders
    if suffix == ".pt":
        assert set(torch.load(path, weights_only=True)) >= {"real", "radii", "format_version"}
    else:
        with np.load(path, allow_pickle=False) as data:
            assert int(data["format_version"]) == reference_module.FORMAT_VERSION


def test_loaded_reference_matches_the_reference_package(tmp_path):
    real, fake = (a.astype(np.float32) for a in make_sets("far", 150, 130, 9, seed=9))
    RealReference(real, nearest_k=(3, 6)).save(tmp_path / "r.npz")
    loaded = RealReference.load(tmp_path / "r.npz", device="cpu")
    assert loaded.compare(fake) == reference(real, fake, 3)
    assert loaded.compare(fake, nearest_k=6) == reference(real, fake, 6)


def _rewrite_npz(src, dst, **changes):
    with np.load(src, allow_pickle=False) as data:
        fields = {key: data[key] for key in data.files}
    fields.update(changes)
    with open(dst, "wb") as fh:
        np.savez(fh, **fields)


def test_load_errors(tmp_path):
    rng = np.random.default_rng(10)
    real = rng.normal(size=(30, 4)).astype(np.float32)
    good = tmp_path / "good.npz"
    RealReference(real, nearest_k=3).save(good)

    _rewrite_npz(good, tmp_path / "v99.npz", format_version=np.asarray(99))
    with pytest.raises(ValueError, match=r"format version 99; this version .* reads versions 1, 2"):
        RealReference.load(tmp_path / "v99.npz")

    damaged = real.copy()
    damaged[7, 2] += 1.0
    _rewrite_npz(good, tmp_path / "damaged.npz", real=damaged)
    with pytest.raises(ValueError, match="is damaged: its real set does not match the fingerpr"):
        RealReference.load(tmp_path / "damaged.npz")

    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match=r"is not a saved RealReference \(missing format, "):
        RealReference.load(tmp_path / "other.npz")

    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a saved RealReference"):
        RealReference.load(tmp_path / "other.pt")

    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(ValueError, match=r"not an npz or torch file.*embviz reference"):
        RealReference.load(tmp_path / "text.npz")

    with zipfile.ZipFile(good) as archive:
        assert any(name.startswith("real") for name in archive.namelist())


def _saved(tmp_path, suffix=".npz"):
    rng = np.random.default_rng(12)
    real = rng.normal(size=(60, 8)).astype(np.float32)
    fake = rng.normal(size=(50, 8)).astype(np.float32)
    path = tmp_path / f"good{suffix}"
    RealReference(real, nearest_k=(3, 5)).save(path)
    return real, fake, path


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("radii", "scaled"),
        ("nearest_ks", np.asarray([5, 3])),
        ("nearest_ks", np.asarray([3, 6])),
    ],
)
def test_load_refuses_edited_fields_the_fingerprint_does_not_cover(tmp_path, field, value):
    _, _, good = _saved(tmp_path)
    with np.load(good, allow_pickle=False) as data:
        if isinstance(value, str):  # radii edited (or damaged) in place: density would lie
            value = data["radii"] * 3.0
    edited = tmp_path / "edited.npz"
    _rewrite_npz(good, edited, **{field: value})
    with pytest.raises(ValueError, match=r"is damaged: its radii, fitted k, dtype or format "):
        RealReference.load(edited)
    _rewrite_npz(good, edited, dtype=np.asarray("float64"))
    with pytest.raises(ValueError, match=r"is damaged: its real set does not match the finger"):
        RealReference.load(edited)
    _rewrite_npz(good, edited, dtype=np.asarray("int8"))
    with pytest.raises(ValueError, match=r"is damaged: dtype 'int8' is not one of float16"):
        RealReference.load(edited)


def test_load_refuses_edited_radii_in_a_torch_file(tmp_path):
    real, fake, good = _saved(tmp_path, ".pt")
    fields = torch.load(good, weights_only=True)
    fields["radii"] = fields["radii"] * 2.0
    torch.save(fields, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match="do not match the checksum stored with them"):
        RealReference.load(tmp_path / "edited.pt")
    assert RealReference.load(good).compare(fake) == reference(real, fake, 3)


@pytest.mark.parametrize("version", [np.asarray(1.9), np.asarray("1"), np.asarray(True)])
def test_load_refuses_a_version_that_is_not_an_integer(tmp_path, version):
    _, _, good = _saved(tmp_path)
    _rewrite_npz(good, tmp_path / "v.npz", format_version=version)
    with pytest.raises(ValueError, match=r"is damaged: its format version .* is not an integer"):
        RealReference.load(tmp_path / "v.npz")
    _rewrite_npz(good, tmp_path / "word.npz", format_version=np.asarray("two"))
    with pytest.raises(ValueError, match=r"format version 'two' is not an integer"):
        RealReference.load(tmp_path / "word.npz")


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_load_damaged_bytes_raise_value_error(tmp_path, suffix):
    _, _, good = _saved(tmp_path, suffix)
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as archive:  # flip bytes inside the stored real set
        info = next(i for i in archive.infolist() if "real" in i.filename or "/data/" in i.filename)
    offset = info.header_offset  # the local header's own name and extra lengths
    name_len = int.from_bytes(raw[offset + 26 : offset + 28], "little")
    extra_len = int.from_bytes(raw[offset + 28 : offset + 30], "little")
    start = offset + 30 + name_len + extra_len + 8
    for i in range(start, start + 16):
        raw[i] ^= 0xFF
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"is damaged"):
        RealReference.load(bad)


def test_version_1_files_are_read_with_radii_recomputed(tmp_path):
    real, fake, good = _saved(tmp_path)
    with np.load(good, allow_pickle=False) as data:
        fields = {key: data[key] for key in data.files if key != "checksum"}
    fields["format_version"] = np.asarray(1)
    fields["radii"] = fields["radii"] * 50.0  # unchecked in version 1: not used
    with open(tmp_path / "v1.npz", "wb") as fh:
        np.savez(fh, **fields)
    loaded = RealReference.load(tmp_path / "v1.npz")
    assert loaded.compare(fake) == reference(real, fake, 3)
    assert loaded.compare(fake, nearest_k=5) == reference(real, fake, 5)


def test_compare_errors():
    rng = np.random.default_rng(11)
    real = rng.normal(size=(30, 4)).astype(np.float32)
    ref = RealReference(real, nearest_k=(3, 5, 10))
    with pytest.raises(ValueError, match=r"`fake` has width D=5 .* real set has width 4"):
        ref.compare(np.zeros((20, 5), dtype=np.float32))
    with pytest.raises(
        ValueError,
        match=r"`nearest_k=7` was not fitted; this reference has nearest_k in \(3, 5, 10\)\. "
        r"Fit it with `RealReference\(real, nearest_k=\(3, 5, 10, 7\)\)`",
    ):
        ref.compare(rng.normal(size=(20, 4)), nearest_k=7)
    with pytest.raises(ValueError, match="`nearest_k=10` needs more than 10 samples in `fake`"):
        ref.sweep(rng.normal(size=(8, 4)).astype(np.float32))
    with pytest.raises(ValueError, match="`nearest_k=5` needs more than 5 samples in `fake`"):
        ref.compare(rng.normal(size=(5, 4)).astype(np.float32), nearest_k=5)
    with pytest.raises(ValueError, match=r"`fake` has 1 row\(s\) with NaN"):
        ref.compare(np.array([[np.nan] * 4] + [[0.0] * 4] * 9))
    with pytest.raises(TypeError, match="`nearest_k` must be an int >= 1, got 'a'"):
        ref.compare(real, nearest_k="a")
    with pytest.raises(ValueError, match="`chunk_size` must be >= 1, got 0"):
        ref.compare(real, chunk_size=0)


@pytest.mark.parametrize(
    ("nearest_k", "exc", "match"),
    [
        ((), ValueError, "`nearest_k` is an empty sequence"),
        (0, ValueError, "`nearest_k` must be >= 1, got 0"),
        ((3, 0), ValueError, "`nearest_k` must be >= 1, got 0"),
        (30, ValueError, r"`nearest_k=30` needs more .* `real`, got 30.*at most 29"),
        ((5, 31), ValueError, "`nearest_k=31` needs more than 31 samples in `real`"),
        (2.0, TypeError, r"`nearest_k` must be an int >= 1 or a sequence of them, got 2\.0"),
        (True, TypeError, "got True"),
        ((5, True), TypeError, "`nearest_k` must be an int >= 1, got True"),
        ("5", TypeError, "got '5'"),
    ],
)
def test_fit_errors(nearest_k, exc, match):
    real = np.random.default_rng(12).normal(size=(30, 4))
    with pytest.raises(exc, match=match):
        RealReference(real, nearest_k=nearest_k)


def test_fit_input_errors():
    with pytest.raises(ValueError, match=r"`real` must be 2-D with shape \(N, D\)"):
        RealReference(np.zeros(10))
    with pytest.raises(TypeError, match=r"`real` must be a torch\.Tensor or a numpy\.ndarray"):
        RealReference([[0.0, 1.0]] * 10)


def test_matches():
    rng = np.random.default_rng(13)
    real = rng.normal(size=(300, 8)).astype(np.float32)
    ref = RealReference(real, nearest_k=3)
    assert ref.matches(real.copy())
    assert ref.matches(torch.from_numpy(real.copy()))
    changed = real.copy()
    changed[-2, 5] = np.nextafter(changed[-2, 5], np.float32(np.inf))  # one ulp, one value
    assert not ref.matches(changed)
    assert not ref.matches(real.astype(np.float64))
    assert not ref.matches(real[:-1])
    assert not ref.matches(real.tolist())
    ints = rng.integers(0, 5, size=(40, 3))
    assert RealReference(ints, nearest_k=2).matches(ints.copy())


def test_to_device_returns_an_equivalent_reference():
    rng = np.random.default_rng(14)
    real = rng.normal(size=(60, 4)).astype(np.float32)
    fake = rng.normal(size=(50, 4)).astype(np.float32)
    ref = RealReference(real, nearest_k=(2, 4))
    assert ref.to("cpu") is ref
    target = "cuda" if torch.cuda.is_available() else "meta"
    if target == "meta":
        pytest.skip("needs a CUDA device")
    moved = ref.to(target)
    assert moved.device.type == "cuda"
    assert moved.sweep(torch.from_numpy(fake).cuda()) == ref.sweep(fake)
    with pytest.raises(ValueError, match=r"`fake` is on cpu but the real set is on cuda"):
        moved.compare(fake)


def test_doctests_run():
    import doctest

    result = doctest.testmod(reference_module)
    assert result.attempted > 0 and result.failed == 0


# --- per-sample nearest results (compute_prdc_details / compare_details) -------------------


def reference_nearest(real: np.ndarray, fake: np.ndarray, k: int):
    """Nearest fakes and nearest ball edges from the reference's own distance matrices."""
    dist = prdc_impl.compute_pairwise_distance(real, fake)  # (N, M), rounded like prdc
    radii = prdc_impl.compute_nearest_neighbour_distances(real, k)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = dist.astype(np.float64) / radii.astype(np.float64)[:, None]
    ratio[radii == 0, :] = np.inf
    return dist.min(axis=1), dist.argmin(axis=1), ratio.min(axis=0), ratio.argmin(axis=0)


def assert_consistent(det) -> None:
    """The ratios decide the indicators exactly."""
    assert torch.equal(det.real_nearest_fake_ratio < 1, det.real_covered)
    assert torch.equal(det.fake_nearest_ball_ratio < 1, det.fake_in_real_manifold)
    radii = det.real_radii
    expected = torch.where(radii > 0, det.real_nearest_fake_distance / radii, torch.inf)
    assert torch.equal(det.real_nearest_fake_ratio, expected)


@pytest.mark.parametrize("kind", KINDS)
def test_nearest_results_equal_the_reference_on_hard_inputs(kind):
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 150, 130, 9, seed=7))
    det = compute_prdc_details(real, fake, 4, chunk_size=29)
    assert det.as_dict() == reference(real, fake, 4)
    assert_consistent(det)
    nearest, nearest_index, ratio, ratio_index = reference_nearest(real, fake, 4)
    # float32 input: the reference's distances are the exact ones rounded to float32
    np.testing.assert_array_equal(det.real_nearest_fake_distance.numpy(), nearest)
    np.testing.assert_array_equal(det.fake_nearest_ball_ratio.numpy(), ratio)
    if kind != "tiny":  # there both round most distances to 0 or to float32 subnormals
        np.testing.assert_array_equal(det.real_nearest_fake_index.numpy(), nearest_index)
        # the index points at a real whose ratio is the minimum (the lowest one on ties)
        np.testing.assert_array_equal(det.fake_nearest_ball_index.numpy(), ratio_index)


@pytest.mark.parametrize("kind", ["normal", "far", "discrete", "duplicates", "collapsed"])
def test_nearest_results_in_float64(kind):
    # The reference's float64 distances come from a float64 GEMM and carry its rounding;
    # ours are exact. The values agree to that rounding and the indicators exactly.
    real, fake = make_sets(kind, 140, 120, 6, seed=8)
    det = compute_prdc_details(real, fake, 3)
    assert det.as_dict() == reference(real, fake, 3)
    assert_consistent(det)
    nearest, _, ratio, _ = reference_nearest(real, fake, 3)
    rtol = 1e-6 if kind == "far" else 1e-12  # far from the origin the GEMM cancels digits
    np.testing.assert_allclose(det.real_nearest_fake_distance.numpy(), nearest, rtol=rtol)
    finite = np.isfinite(ratio)
    np.testing.assert_allclose(
        det.fake_nearest_ball_ratio.numpy()[finite], ratio[finite], rtol=rtol
    )
    assert np.array_equal(np.isfinite(det.fake_nearest_ball_ratio.numpy()), finite)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(KINDS),
    chunk=st.integers(1, 50),
    k=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
)
def test_nearest_results_do_not_depend_on_chunk_size_or_row_order(kind, chunk, k, seed):
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 60, 50, 4, seed))
    det = compute_prdc_details(real, fake, k)
    assert_consistent(det)
    rng = np.random.default_rng(seed)
    pr, pf = rng.permutation(len(real)), rng.permutation(len(fake))
    other = compute_prdc_details(real[pr], fake[pf], k, chunk_size=chunk)
    assert_consistent(other)
    assert torch.equal(other.real_nearest_fake_distance, det.real_nearest_fake_distance[pr])
    assert torch.equal(other.real_nearest_fake_ratio, det.real_nearest_fake_ratio[pr])
    assert torch.equal(other.fake_nearest_ball_ratio, det.fake_nearest_ball_ratio[pf])
    # indices point at samples at that same distance / ratio
    rows = torch.arange(len(real))
    picked = fake[pf][other.real_nearest_fake_index.numpy()]
    np.testing.assert_array_equal(
        np.sqrt(((real[pr].astype(np.float64) - picked) ** 2).sum(1).astype(np.float32)),
        other.real_nearest_fake_distance.numpy().astype(np.float32),
    )
    assert bool((other.real_nearest_fake_index[rows] >= 0).all())


def test_sweep_details_carry_per_k_ratios():
    real, fake = (a.astype(np.float32) for a in make_sets("quantized", 130, 110, 5, seed=3))
    ref = RealReference(real, nearest_k=(2, 6))
    swept = ref.sweep_details(fake)
    for k in (2, 6):
        single = compute_prdc_details(real, fake, k)
        for name in (
            "real_nearest_fake_distance",
            "real_nearest_fake_index",
            "real_nearest_fake_ratio",
            "fake_nearest_ball_ratio",
            "fake_nearest_ball_index",
        ):
            assert torch.equal(getattr(swept[k], name), getattr(single, name)), (k, name)
        assert_consistent(swept[k])


def test_radius_zero_balls_give_infinite_ratios():
    # Duplicated real rows have radius 0 for k = 1: nothing is inside, ratio inf.
    real = np.repeat(np.arange(12, dtype=np.float32).reshape(6, 2), 2, axis=0)
    fake = np.arange(20, dtype=np.float32).reshape(10, 2) + 0.25
    det = compute_prdc_details(real, fake, 1)
    assert bool((det.real_radii == 0).all())
    assert bool(torch.isinf(det.real_nearest_fake_ratio).all())
    assert bool(torch.isinf(det.fake_nearest_ball_ratio).all())
    assert bool((det.fake_nearest_ball_index == -1).all())
    assert_consistent(det)
    assert det.as_dict() == reference(real, fake, 1)


def test_reference_keeps_its_own_copy():
    rng = np.random.default_rng(16)
    real = rng.normal(size=(80, 5)).astype(np.float32)
    fake = rng.normal(size=(70, 5)).astype(np.float32)
    ref = RealReference(real, nearest_k=3)
    expected = ref.compare(fake)
    real[:] = 0.0  # the caller reuses its buffer
    assert ref.compare(fake) == expected
    assert not ref.matches(real)
    assert ref.matches(torch.from_numpy(np.asarray(ref.real).copy()))
    ints = torch.from_numpy(rng.integers(0, 4, size=(50, 3)))
    assert RealReference(ints, nearest_k=2).matches(ints.clone())
    assert not ref.matches(np.array([["a"] * 5] * 80))
