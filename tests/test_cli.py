from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_embviz import compute_prdc, frechet_distance
from lightning_embviz.cli import main

PRDC_KEYS = ("precision", "recall", "density", "coverage")


def make_sets(n: int = 200, m: int = 160, width: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, width)).astype(np.float32)
    fake = (rng.normal(size=(m, width)) * 1.2 + 0.3).astype(np.float32)
    return real, fake


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg")
    return subprocess.run(
        [sys.executable, "-m", "lightning_embviz", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def save(path: Path, arr) -> str:
    suffix = path.suffix
    if suffix == ".npy":
        np.save(path, arr)
    elif suffix == ".npz":
        np.savez(path, embeddings=arr)
    elif suffix == ".pt":
        torch.save(torch.as_tensor(arr), path)
    elif suffix == ".csv":
        header = ",".join(f"f{i}" for i in range(arr.shape[1]))
        np.savetxt(path, arr, delimiter=",", header=header, comments="", fmt="%.9g")
    else:
        path.write_bytes(np.asarray(arr).tobytes())
    return str(path)


# ---------------------------------------------------------------- the command as a subprocess


def test_report_subprocess_writes_metrics_equal_to_compute_prdc_and_pngs(tmp_path):
    real, fake = make_sets()
    r = save(tmp_path / "real.npy", real)
    f = save(tmp_path / "fake.npy", fake)
    out = tmp_path / "out"
    proc = run_cli("report", r, f, "-k", "3", "-o", str(out), "--projection", "pca,tsne")
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    expected = compute_prdc(real, fake, nearest_k=3)
    assert {k: metrics[k] for k in PRDC_KEYS} == expected
    assert metrics["fd"] == pytest.approx(frechet_distance(real, fake), rel=1e-9)
    assert metrics["num_real"] == 200 and metrics["num_fake"] == 160
    assert metrics["nearest_k"] == 3
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["pca.png", "pca_coverage.png", "tsne.png"]
    assert sorted(p.name for p in out.glob("*.csv")) == ["samples_fake.csv", "samples_real.csv"]
    for name in pngs:
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
        assert (out / name).stat().st_size > 10_000
    # A short table on stdout, progress on stderr.
    assert f"precision  {expected['precision']:.4f}" in proc.stdout
    assert "computing PRDC" in proc.stderr and "projecting" in proc.stderr


BAD_CASES = {
    "missing": ("no such file", lambda d: str(d / "nope.npy")),
    "three_d": ("embeddings need shape", lambda d: save(d / "x3.npy", np.zeros((5, 2, 2)))),
    "one_d": ("is 1-D", lambda d: save(d / "x1.npy", np.arange(10.0))),
    "nan_rows": ("rows hold NaN", lambda d: save(d / "nan.npy", np.full((20, 8), np.nan))),
    "unknown_format": ("unknown format '.txt'", lambda d: save(d / "x.txt", np.zeros((4, 8)))),
    "width": ("width D=5", lambda d: save(d / "w5.npy", np.zeros((30, 5), np.float32))),
    "corrupt": ("cannot read as .npy", lambda d: _write(d / "bad.npy", b"not an array")),
    "text_csv": (
        "column 1 is not numeric (line 2: 'a')",
        lambda d: _write(d / "t.csv", b"1,2\na,b\n"),
    ),
}


def _write(path: Path, content: bytes) -> str:
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_bad_input_in_process_one_line_no_traceback(tmp_path, capsys, name):
    real, _ = make_sets()
    r = save(tmp_path / "real.npy", real)
    message, make = BAD_CASES[name]
    code = main(["report", r, make(tmp_path), "-o", str(tmp_path / "out"), "-q"])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("embviz: error: "), captured.err
    assert message in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out" / "metrics.json").exists()


SUBPROCESS_CASES = ("missing", "three_d", "one_d", "nan_rows", "unknown_format", "width")


def test_bad_input_subprocess_exits_nonzero_with_one_line_and_no_traceback(tmp_path):
    real, _ = make_sets()
    r = save(tmp_path / "real.npy", real)
    procs = {}
    env = dict(os.environ, MPLBACKEND="Agg")
    for name in SUBPROCESS_CASES:
        make = BAD_CASES[name][1]
        args = ["report", r, make(tmp_path), "-o", str(tmp_path / name), "-q"]
        procs[name] = subprocess.Popen(
            [sys.executable, "-m", "lightning_embviz", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode != 0, name
        assert "Traceback" not in stderr and "Traceback" not in stdout, name
        lines = stderr.strip().splitlines()
        assert len(lines) == 1, (name, stderr)
        assert lines[0].startswith("embviz: error: "), (name, stderr)
        assert BAD_CASES[name][0] in lines[0], (name, stderr)
        assert not (tmp_path / name / "metrics.json").exists()


def test_help_documents_everything(capsys):
    assert main(["report", "--help"]) == 0
    text = capsys.readouterr().out
    for option in (
        "-k",
        "--out",
        "--projection",
        "--max-samples",
        "--seed",
        "--labels",
        "--fake-labels",
        "--tsne-backend",
        "embviz report real.npy fake.npy",
        ".npz",
        ".csv",
        "metrics.json",
    ):
        assert option in text, option
    assert main(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    assert "embviz compare real.npy" in text and "metrics.csv" in text and "--names" in text


def test_console_script_entry_point():
    exe = shutil.which("embviz")
    if exe is None:
        pytest.skip("the embviz console script is not on PATH")
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert "report" in proc.stdout and "compare" in proc.stdout


# ---------------------------------------------------------------- main() in process


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".csv"])
def test_formats_give_the_same_metrics(tmp_path, suffix, capsys):
    real, fake = make_sets(120, 100)
    r = save(tmp_path / f"real{suffix}", real)
    f = save(tmp_path / f"fake{suffix}", fake)
    out = tmp_path / "out"
    assert main(["report", r, f, "-o", str(out), "--projection", "pca", "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {k: metrics[k] for k in PRDC_KEYS} == compute_prdc(real, fake, 5)
    assert "coverage" in capsys.readouterr().out


def test_report_with_labels_writes_class_views(tmp_path, capsys):
    real, fake = make_sets(150, 120)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    rl = save(tmp_path / "rl.npy", np.arange(150) % 3)
    fl = tmp_path / "fl.csv"
    fl.write_text("label\n" + "\n".join(str(i % 3) for i in range(120)) + "\n")
    out = tmp_path / "out"
    argv = ["report", r, f, "-o", str(out), "--projection", "pca", "--labels", rl]
    code = main([*argv, "--fake-labels", str(fl), "-q"])
    assert code == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["class_metrics.png", "pca.png", "pca_classes.png", "pca_coverage.png"]
    per_class = json.loads((out / "metrics.json").read_text())["per_class"]
    assert sorted(per_class) == ["0", "1", "2"]
    assert per_class["1"]["num_real"] == 50 and per_class["1"]["num_fake"] == 40
    assert 0.0 <= per_class["2"]["coverage"] <= 1.0


def test_compare_writes_side_by_side_figure_and_tables(tmp_path, capsys):
    real, fake = make_sets(150, 120)
    r = save(tmp_path / "real.npy", real)
    fakes = [save(tmp_path / f"ep{i}.npy", fake * (1 + 0.5 * i)) for i in range(3)]
    out = tmp_path / "cmp"
    assert main(["compare", r, *fakes, "-o", str(out), "--projection", "pca", "-q"]) == 0
    table = json.loads((out / "metrics.json").read_text())
    assert [row["name"] for row in table["sets"]] == ["ep0", "ep1", "ep2"]
    for i, row in enumerate(table["sets"]):
        expected = compute_prdc(real, fake * (1 + 0.5 * i), 5)
        assert {k: row[k] for k in PRDC_KEYS} == expected
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["ep0", "ep1", "ep2"]
    assert float(rows[2]["coverage"]) == table["sets"][2]["coverage"]
    assert (out / "compare_pca.png").stat().st_size > 10_000
    stdout = capsys.readouterr().out
    assert "ep1" in stdout and "precision" in stdout


def test_usage_errors_are_one_line(tmp_path, capsys):
    real, fake = make_sets(30, 30)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    cases = [
        (["report", r, f, "--projection", "pca,isomap"], "unknown projection 'isomap'"),
        (["report", r, f, "-k", "0"], "expected a positive integer"),
        (["report", r, f, "-k", "30"], "-k 30 needs more than 30 samples"),
        (["report", r, f, "--max-samples", "5"], "expected an integer >= 10"),
        (["report", r], "required: FAKE"),
        (["report", r, f, "--labels", save(tmp_path / "l.npy", np.zeros(7))], "has 7 labels"),
        (["report", r, f, "--fake-labels", save(tmp_path / "fl.npy", np.zeros(30))], "needs"),
        (["compare", r, f, f, "--names", "a"], "--names has 1 names for 2"),
        ([], "choose a command"),
    ]
    for argv, message in cases:
        code = main([*argv, "-q", "-o", str(tmp_path / "o")] if argv else argv)
        err = capsys.readouterr().err
        assert code == 2, argv
        assert message in err, (argv, err)
        assert "Traceback" not in err
        assert len([ln for ln in err.splitlines() if ln.startswith("embviz")]) == 1, err


def test_npz_and_pt_containers(tmp_path, capsys):
    real, fake = make_sets(40, 40)
    np.savez(tmp_path / "two.npz", a=real, b=real)
    torch.save({"features": torch.from_numpy(fake), "step": torch.tensor(3)}, tmp_path / "d.pt")
    code = main(["report", str(tmp_path / "two.npz"), str(tmp_path / "d.pt"), "-q"])
    assert code == 2
    assert "holds several arrays ['a', 'b']" in capsys.readouterr().err
    np.savez(tmp_path / "one.npz", whatever=real)
    out = tmp_path / "o"
    argv = ["report", str(tmp_path / "one.npz"), str(tmp_path / "d.pt"), "-o", str(out)]
    code = main([*argv, "--projection", "pca", "-q"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == compute_prdc(real, fake)["precision"]


# ---------------------------------------------------------------- CSV files written by pandas


@pytest.mark.parametrize(
    ("real_form", "fake_form"), [("index_false", "with_index"), ("with_index", "index_false")]
)
def test_pandas_csv_metrics_equal_compute_prdc_on_the_original_arrays(
    tmp_path, capsys, real_form, fake_form
):
    import pandas as pd

    rng = np.random.default_rng(5)
    real = rng.normal(size=(90, 6))
    fake = rng.normal(size=(70, 6)) * 1.1 + 0.2
    paths = {}
    for name, arr, form in (("real", real, real_form), ("fake", fake, fake_form)):
        paths[name] = tmp_path / f"{name}_{form}.csv"
        if form == "index_false":
            pd.DataFrame(arr).to_csv(paths[name], index=False)  # header 0,1,...,5
        else:
            pd.DataFrame(arr).to_csv(paths[name])  # header ,0,1,...,5 and an index column
    out = tmp_path / "out"
    argv = ["report", str(paths["real"]), str(paths["fake"]), "-o", str(out)]
    assert main([*argv, "--projection", "pca", "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {k: metrics[k] for k in PRDC_KEYS} == compute_prdc(real, fake, 5)
    assert metrics["fd"] == frechet_distance(real, fake)
    assert metrics["num_real"] == 90 and metrics["num_fake"] == 70
    assert "D=6" in capsys.readouterr().out


def test_csv_label_column_is_a_one_line_error(tmp_path, capsys):
    import pandas as pd

    real, fake = make_sets(40, 40)
    pd.DataFrame(real).add_prefix("f").assign(digit=["a"] * 40).to_csv(tmp_path / "r.csv")
    f = save(tmp_path / "f.npy", fake)
    assert main(["report", str(tmp_path / "r.csv"), f, "-o", str(tmp_path / "o"), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "column 10 'digit' is not numeric (line 2: 'a')" in err


# ---------------------------------------------------------------- -o checked before any work


@pytest.fixture
def work_spy(monkeypatch):
    """Count calls of the readers and the metric engine the command uses.

    ``__init__`` counts fits of the real set (``RealReference.load`` does not call it).
    """
    import lightning_embviz._io as io_module
    import lightning_embviz.metrics as metrics_module
    from lightning_embviz.reference import RealReference

    calls: dict[str, int] = {}

    def spy(owner, name):
        real_function = getattr(owner, name)

        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return real_function(*args, **kwargs)

        monkeypatch.setattr(owner, name, wrapper)

    spy(io_module, "load_embeddings")
    spy(io_module, "load_reference")
    spy(metrics_module, "frechet_distance")
    spy(RealReference, "__init__")
    spy(RealReference, "compare_details")
    return calls


def _bad_out_cases(tmp_path: Path) -> dict[str, tuple[str, str]]:
    a_file = tmp_path / "taken.txt"
    a_file.write_text("not a directory")
    return {
        "existing_file": (str(a_file), f"-o {a_file}: is an existing file, not a directory"),
        "parent_is_file": (
            str(a_file / "out"),
            f"-o {a_file / 'out'}: cannot create the directory, {a_file} is a file",
        ),
        "deeper_under_file": (str(a_file / "a" / "b"), f"{a_file} is a file"),
    }


@pytest.mark.parametrize("command", ["report", "compare"])
def test_bad_out_fails_before_reading_or_computing(tmp_path, capsys, work_spy, command):
    real, fake = make_sets(60, 50)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    for name, (out, message) in _bad_out_cases(tmp_path).items():
        code = main([command, r, f, "-o", out, "--projection", "pca", "-q"])
        err = capsys.readouterr().err
        assert code == 2, name
        assert err.startswith("embviz: error: ") and err.count("\n") == 1, (name, err)
        assert message in err, (name, err)
        assert "Traceback" not in err
        assert work_spy == {}, name  # nothing read, nothing computed
    # The spies are live: the same command with a good -o goes through them.
    assert main([command, r, f, "-o", str(tmp_path / "ok"), "--projection", "pca", "-q"]) == 0
    assert work_spy["compare_details"] >= 1 and work_spy["load_embeddings"] == 2


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="root writes into read-only (chmod) directories",
)
def test_out_under_read_only_directory(tmp_path, capsys, work_spy):
    real, fake = make_sets(30, 30)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["report", r, f, "-o", str(locked / "out"), "-q"]) == 2
        assert f"-o {locked / 'out'}: cannot create" in capsys.readouterr().err
        assert main(["report", r, f, "-o", str(locked), "-q"]) == 2
        assert "the directory is not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)
    assert work_spy == {}


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_out_where_even_root_cannot_write(capsys, work_spy, tmp_path):
    # /proc refuses new entries for every user, root included.
    real, fake = make_sets(30, 30)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    assert main(["report", r, f, "-o", "/proc/embviz-test-out", "-q"]) == 2
    assert "-o /proc/embviz-test-out: cannot create /proc/embviz-test-out (" in (
        capsys.readouterr().err
    )
    assert main(["report", r, f, "-o", "/proc", "-q"]) == 2
    assert "-o /proc: the directory is not writable (" in capsys.readouterr().err
    assert work_spy == {}


def test_failed_run_leaves_no_empty_out_directory(tmp_path, capsys):
    real, _ = make_sets(30, 30)
    r = save(tmp_path / "r.npy", real)
    out = tmp_path / "new" / "nested"
    assert main(["report", r, str(tmp_path / "missing.npy"), "-o", str(out), "-q"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # created for the check, removed after the failure
    existing = tmp_path / "existing"
    existing.mkdir()
    assert main(["report", r, str(tmp_path / "missing.npy"), "-o", str(existing), "-q"]) == 2
    assert existing.is_dir() and list(existing.iterdir()) == []  # a user's directory stays


def test_nested_out_is_created(tmp_path, capsys):
    real, fake = make_sets(40, 40)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    out = tmp_path / "a" / "b" / "c"
    assert main(["report", r, f, "-o", str(out), "--projection", "pca", "-q"]) == 0
    assert (out / "metrics.json").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".embviz")] == []


# ---------------------------------------------------------------- per-sample tables and galleries


def reference_indicators(real, fake, k):
    from prdc.prdc import compute_nearest_neighbour_distances, compute_pairwise_distance

    radii = compute_nearest_neighbour_distances(real, k)
    dist = compute_pairwise_distance(real, fake)
    return dist.min(axis=1) < radii, (dist < radii[:, None]).sum(axis=0)


def test_report_always_writes_sample_tables(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    real, fake = make_sets(150, 120)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    labels = save(tmp_path / "rl.npy", np.arange(150) % 3)
    out = tmp_path / "out"
    argv = ["report", r, f, "-k", "4", "-o", str(out), "--projection", "pca", "--labels", labels]
    assert main([*argv, "-q"]) == 0
    assert "samples_real.csv" in capsys.readouterr().out
    real_frame = pd.read_csv(out / "samples_real.csv")
    fake_frame = pd.read_csv(out / "samples_fake.csv")
    assert list(real_frame.columns) == [
        "index", "label", "radius", "nearest_fake_distance", "nearest_fake_ratio", "covered",
        "recalled",
    ]  # fmt: skip
    assert list(fake_frame.columns) == [
        "index", "ball_count", "nearest_ball_ratio", "inside_real_manifold",
    ]  # fmt: skip
    covered, counts = reference_indicators(real, fake, 4)
    assert real_frame["index"].tolist() == list(range(150))
    assert real_frame["label"].tolist() == (np.arange(150) % 3).tolist()
    np.testing.assert_array_equal(real_frame["covered"].to_numpy(), covered)
    np.testing.assert_array_equal(fake_frame["ball_count"].to_numpy(), counts)
    np.testing.assert_array_equal(fake_frame["inside_real_manifold"].to_numpy(), counts > 0)
    assert (
        real_frame["covered"].mean() == json.loads((out / "metrics.json").read_text())["coverage"]
    )
    assert not (out / "missed_real.png").exists() and not (out / "outlier_fake.png").exists()


@pytest.fixture
def gallery_spy(monkeypatch):
    """Record what the command hands to the gallery builders (and still draw them)."""
    import lightning_embviz.plotting as plotting

    calls: dict[str, list] = {}
    for name in ("missed_real_figure", "outlier_fake_figure"):
        original = getattr(plotting, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            calls.setdefault(_name, []).append((args, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(plotting, name, spy)
    return calls


@pytest.mark.parametrize(("real_suffix", "fake_suffix"), [(".npy", ".pt"), (".npz", ".npy")])
def test_report_galleries_show_the_ordered_samples(
    tmp_path, capsys, gallery_spy, real_suffix, fake_suffix
):
    from lightning_embviz import compute_prdc_details
    from lightning_embviz.samples import (
        deepest_fake_order,
        missed_real_order,
        outlier_fake_order,
    )

    real, fake = make_sets(120, 100)
    rng = np.random.default_rng(1)
    real_images = rng.normal(size=(120, 1, 6, 6)).astype(np.float32)  # any range
    fake_images = rng.integers(0, 256, size=(100, 3, 5, 4), dtype=np.uint8)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    ri = tmp_path / f"ri{real_suffix}"
    if real_suffix == ".npz":
        np.savez(ri, images=real_images, other=np.zeros(3))
    else:
        np.save(ri, real_images)
    fi = tmp_path / f"fi{fake_suffix}"
    if fake_suffix == ".pt":
        torch.save(torch.from_numpy(fake_images), fi)
    else:
        np.save(fi, fake_images)
    out = tmp_path / "out"
    argv = ["report", r, f, "-o", str(out), "--projection", "pca", "-k", "3", "-q"]
    argv += ["--real-images", str(ri), "--fake-images", str(fi), "--gallery-size", "7"]
    assert main(argv) == 0, capsys.readouterr().err
    for name in ("missed_real.png", "outlier_fake.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    details = compute_prdc_details(real, fake, nearest_k=3)
    missed = missed_real_order(details).numpy()
    outliers = outlier_fake_order(details).numpy()
    deepest = deepest_fake_order(details).numpy()
    assert len(missed) > 7 and len(outliers) > 7
    ((args, kwargs),) = gallery_spy["missed_real_figure"]
    np.testing.assert_array_equal(args[0], real_images[missed[:7]])
    np.testing.assert_array_equal(kwargs["indices"], missed[:7])
    np.testing.assert_array_equal(args[1], details.real_nearest_fake_ratio.numpy()[missed[:7]])
    assert kwargs["num_missed"] == len(missed) and kwargs["num_real"] == 120
    ((args, kwargs),) = gallery_spy["outlier_fake_figure"]
    np.testing.assert_array_equal(args[0], fake_images[outliers[:7]])
    np.testing.assert_array_equal(kwargs["indices"], outliers[:7])
    np.testing.assert_array_equal(kwargs["deepest_indices"], deepest[:7])
    np.testing.assert_array_equal(kwargs["deepest_images"], fake_images[deepest[:7]])
    assert kwargs["num_outliers"] == len(outliers) and kwargs["num_fake"] == 100


def test_report_channels_last_images_and_one_gallery_only(tmp_path, capsys, gallery_spy):
    real, fake = make_sets(80, 60)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    images = np.random.default_rng(0).random((80, 5, 6, 3))  # (N, H, W, C)
    ri = save(tmp_path / "ri.npy", images)
    out = tmp_path / "out"
    assert (
        main(["report", r, f, "-o", str(out), "--projection", "pca", "-q", "--real-images", ri])
        == 0
    )
    ((args, kwargs),) = gallery_spy["missed_real_figure"]
    np.testing.assert_array_equal(args[0], np.moveaxis(images, 3, 1)[kwargs["indices"]])
    assert len(kwargs["indices"]) == min(32, kwargs["num_missed"])
    assert (out / "missed_real.png").is_file() and not (out / "outlier_fake.png").exists()
    assert "outlier_fake_figure" not in gallery_spy


def test_report_gallery_with_labels_names_missed_per_class(tmp_path, capsys, gallery_spy):
    real, fake = make_sets(90, 70)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    labels = np.array(["cat", "dog", "owl"])[np.arange(90) % 3]
    rl = tmp_path / "labels.csv"
    rl.write_text("label\n" + "\n".join(labels) + "\n")
    ri = save(tmp_path / "ri.npy", np.zeros((90, 4, 4)))
    argv = ["report", r, f, "-o", str(tmp_path / "o"), "--projection", "pca", "-q"]
    assert main([*argv, "--labels", str(rl), "--real-images", ri]) == 0
    ((_, kwargs),) = gallery_spy["missed_real_figure"]
    covered, _ = reference_indicators(real, fake, 5)
    expected = {c: int((~covered[labels == c]).sum()) for c in ("cat", "dog", "owl")}
    assert kwargs["class_counts"] == expected
    np.testing.assert_array_equal(kwargs["labels"], labels[kwargs["indices"]])


def _bad_images(name: str, d: Path) -> str:
    if name == "count":
        return save(d / "i.npy", np.zeros((119, 1, 4, 4)))
    if name == "shape":
        return save(d / "i.npy", np.zeros((120, 2, 4, 4)))
    if name == "two_d":
        return save(d / "i.npy", np.zeros((120, 16)))
    if name == "format":
        return save(d / "i.png", np.zeros((120, 4, 4)))
    if name == "missing":
        return str(d / "nope.npy")
    if name == "text":
        return save(d / "i.npy", np.array(["a"] * 120))
    if name == "npz_keys":
        np.savez(d / "i.npz", a=np.zeros((120, 4, 4)), b=np.zeros((120, 4, 4)))
        return str(d / "i.npz")
    return _write(d / "i.pt", b"not a torch file")


BAD_IMAGES = {
    "count": "holds 119 images but",
    "shape": "images need shape (N, C, H, W) with C 1 or 3",
    "two_d": "has shape (120, 16)",
    "format": "unknown format '.png' for images",
    "missing": "--real-images",
    "text": "expected numbers",
    "npz_keys": "name the one to use 'images'",
    "corrupt": "cannot read as .pt",
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_image_files_fail_before_the_metrics(tmp_path, capsys, monkeypatch, name):
    from lightning_embviz.reference import RealReference

    def no_work(*args, **kwargs):
        raise AssertionError("metrics computed despite a bad image file")

    monkeypatch.setattr(RealReference, "__init__", no_work)
    monkeypatch.setattr(RealReference, "compare_details", no_work)
    real, fake = make_sets(120, 100)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    images = _bad_images(name, tmp_path)
    code = main(["report", r, f, "-o", str(tmp_path / "out"), "-q", "--real-images", images])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("embviz: error: --real-images ") and BAD_IMAGES[name] in line, line
    assert not (tmp_path / "out").exists()


def test_fake_image_count_names_the_fake_file(tmp_path, capsys):
    real, fake = make_sets(50, 40)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    fi = save(tmp_path / "fi.npy", np.zeros((50, 4, 4)))
    assert main(["report", r, f, "-o", str(tmp_path / "o"), "-q", "--fake-images", fi]) == 2
    err = capsys.readouterr().err
    assert f"--fake-images {fi}: holds 50 images but {f} has 40 embedding rows" in err


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_gallery_size_must_be_positive(tmp_path, capsys, value):
    real, fake = make_sets(30, 30)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    assert main(["report", r, f, "-o", str(tmp_path / "o"), "--gallery-size", value]) == 2
    assert "--gallery-size: expected a positive integer" in capsys.readouterr().err


def test_help_documents_galleries_and_tables(capsys):
    assert main(["report", "--help"]) == 0
    text = capsys.readouterr().out
    for part in (
        "--real-images",
        "--fake-images",
        "--gallery-size",
        "missed_real.png",
        "outlier_fake.png",
        "samples_real.csv",
        "samples_fake.csv",
        "min-max",
    ):
        assert part in text, part


# ---------------------------------------------------------------- a saved real reference


def fit_reference(tmp_path: Path, real, ks: str, name: str = "ref.npz") -> Path:
    """``embviz reference`` on ``real`` saved as .npy; returns the reference file."""
    r = save(tmp_path / "fit_input.npy", real)
    ref = tmp_path / name
    assert main(["reference", r, "-k", ks, "-o", str(ref), "-q"]) == 0
    return ref


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_reference_round_trip(tmp_path, capsys, suffix):
    from prdc import compute_prdc as prdc_reference

    from lightning_embviz import RealReference

    real, fake = make_sets(150, 120)
    r = save(tmp_path / "real.npy", real)
    ref = tmp_path / "sub" / f"ref{suffix}"  # a missing directory is created
    assert main(["reference", r, "-k", "3,5,10", "-o", str(ref)]) == 0
    captured = capsys.readouterr()
    (line,) = captured.out.strip().splitlines()
    assert line.startswith(
        f"wrote {ref}: RealReference of N=150 real, D=8 (float32), k = 3, 5, 10;"
    )
    assert "KiB, fitted in " in line and line.endswith(" s")
    size_kib = float(line.split("; ")[1].split(" KiB")[0])
    assert size_kib == pytest.approx(ref.stat().st_size / 1024, abs=0.05)
    assert "fitting the k-NN radii (k = 3, 5, 10)" in captured.err
    assert [p.name for p in ref.parent.iterdir()] == [ref.name]  # no temporary file left

    loaded = RealReference.load(ref)
    assert loaded.nearest_ks == (3, 5, 10)
    assert loaded.dtype == torch.float32
    np.testing.assert_array_equal(loaded.real.numpy(), real)
    for k in (3, 5, 10):
        assert loaded.compare(fake, nearest_k=k) == prdc_reference(real, fake, nearest_k=k)

    # A reference as REAL refits from the real set it holds (here: adds k = 7), in place.
    assert main(["reference", str(ref), "-k", "5,7", "-o", str(ref), "-q"]) == 0
    refit = RealReference.load(ref)
    assert refit.nearest_ks == (5, 7)
    assert refit.fingerprint == loaded.fingerprint
    assert refit.compare(fake) == prdc_reference(real, fake, nearest_k=5)
    assert refit.compare(fake, nearest_k=7) == prdc_reference(real, fake, nearest_k=7)


def _report_in(directory: Path, monkeypatch, argv: list[str]) -> dict[str, bytes]:
    """Run a command in ``directory`` (relative REAL path) and return its output files."""
    monkeypatch.chdir(directory)
    assert main([*argv, "-o", "out", "--projection", "pca", "-q"]) == 0
    return {p.name: p.read_bytes() for p in sorted((directory / "out").iterdir())}


@pytest.mark.parametrize(("ks", "k_args", "k"), [("10,3", [], 10), ("3,5,10", ["-k", "5"], 5)])
@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_report_with_reference_writes_the_same_files_as_with_real(
    tmp_path, capsys, monkeypatch, work_spy, ks, k_args, k, suffix
):
    from prdc import compute_prdc as prdc_reference

    real, fake = make_sets(150, 120)
    f = save(tmp_path / "fake.npy", fake)
    raw_dir, saved_dir = tmp_path / "raw", tmp_path / "saved"
    raw_dir.mkdir()
    saved_dir.mkdir()
    # Same file name in both directories, so that every output (titles included) may agree.
    save(raw_dir / f"real{suffix}", real)
    fit_reference(saved_dir, real, ks, f"real{suffix}")
    work_spy.clear()

    saved = _report_in(saved_dir, monkeypatch, ["report", f"real{suffix}", f, *k_args])
    assert work_spy.get("__init__", 0) == 0  # the real radii were read, not fitted
    assert work_spy["load_reference"] == 1 and work_spy["compare_details"] == 1
    stdout = capsys.readouterr().out
    assert "real radii from the saved reference, fitted k: " + ks.replace(",", ", ") in stdout
    work_spy.clear()
    raw = _report_in(raw_dir, monkeypatch, ["report", f"real{suffix}", f, "-k", str(k)])
    assert work_spy["__init__"] == 1 and "load_reference" not in work_spy

    for name in ("metrics.json", "samples_real.csv", "samples_fake.csv"):
        assert saved[name] == raw[name], name
    assert sorted(saved) == sorted(raw)
    metrics = json.loads(saved["metrics.json"])
    assert metrics["nearest_k"] == k
    assert {key: metrics[key] for key in PRDC_KEYS} == prdc_reference(real, fake, nearest_k=k)


def test_compare_with_reference_writes_the_same_tables_as_with_real(
    tmp_path, capsys, monkeypatch, work_spy
):
    from prdc import compute_prdc as prdc_reference

    real, fake = make_sets(150, 120)
    fakes = [save(tmp_path / f"ep{i}.npy", fake * (1 + 0.5 * i)) for i in range(3)]
    raw_dir, saved_dir = tmp_path / "raw", tmp_path / "saved"
    raw_dir.mkdir()
    saved_dir.mkdir()
    save(raw_dir / "real.npz", real)
    fit_reference(saved_dir, real, "3,5", "real.npz")
    work_spy.clear()

    saved = _report_in(saved_dir, monkeypatch, ["compare", "real.npz", *fakes, "-k", "5"])
    assert work_spy.get("__init__", 0) == 0 and work_spy["compare_details"] == 3
    work_spy.clear()
    raw = _report_in(raw_dir, monkeypatch, ["compare", "real.npz", *fakes])
    assert work_spy["__init__"] == 1  # one fit of the real set for all three fake sets
    assert work_spy["compare_details"] == 3

    assert saved["metrics.json"] == raw["metrics.json"]
    assert saved["metrics.csv"] == raw["metrics.csv"]
    table = json.loads(saved["metrics.json"])
    assert table["nearest_k"] == 5 and table["real"] == "real.npz"
    for i, row in enumerate(table["sets"]):
        expected = prdc_reference(real, fake * (1 + 0.5 * i), nearest_k=5)
        assert {key: row[key] for key in PRDC_KEYS} == expected
    assert "fitted k: 3, 5" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["report", "compare"])
def test_unfitted_k_is_a_one_line_error_listing_the_fitted_ones(
    tmp_path, capsys, work_spy, command
):
    real, fake = make_sets(60, 50)
    ref = fit_reference(tmp_path, real, "3,5,10")
    f = save(tmp_path / "f.npy", fake)
    work_spy.clear()
    out = tmp_path / "out"
    code = main([command, str(ref), f, "-k", "7", "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line == (
        f"embviz: error: -k 7 was not fitted in the reference {ref}; it holds k = 3, 5, 10: "
        f"pick one of them, or add it with `embviz reference {ref} -k 3,5,10,7 -o {ref}`."
    )
    assert "compare_details" not in work_spy and "__init__" not in work_spy
    assert not out.exists()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_fakes_of_another_width_than_the_reference(tmp_path, capsys, command):
    real, _ = make_sets(60, 50)
    ref = fit_reference(tmp_path, real, "3")
    narrow = save(tmp_path / "narrow.npy", np.zeros((40, 5), np.float32))
    code = main([command, str(ref), narrow, "-o", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line == (
        f"embviz: error: {narrow}: has width D=5 but the reference {ref} has D=8; both sets "
        "must come from the same embedding."
    )


def test_reference_saved_from_python_under_any_name_is_recognised(tmp_path, capsys):
    from lightning_embviz import RealReference

    real, fake = make_sets(80, 70)
    ref = tmp_path / "real.reference"  # RealReference.save writes npz whatever the name
    RealReference(real, (4, 2)).save(ref)
    f = save(tmp_path / "f.npy", fake)
    out = tmp_path / "out"
    assert main(["report", str(ref), f, "-o", str(out), "--projection", "pca", "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nearest_k"] == 4
    assert {key: metrics[key] for key in PRDC_KEYS} == compute_prdc(real, fake, 4)


def _npz_entries(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _damaged_reference(name: str, tmp_path: Path, real) -> str:
    """A reference file (or look-alike) damaged in one way."""
    ref = fit_reference(tmp_path, real, "3,5")
    entries = _npz_entries(ref)
    path = tmp_path / f"{name}.npz"
    if name == "values_changed":
        entries["real"] = entries["real"].copy()
        entries["real"][3, 1] += 1.0  # the fingerprint no longer matches
    elif name == "other_version":
        entries["format_version"] = np.asarray(99)
    elif name == "radii_edited":
        entries["radii"] = entries["radii"] * 4.0  # the fingerprint covers only the reals
    elif name == "version_text":
        entries["format_version"] = np.asarray("2")
    elif name == "entry_missing":
        del entries["radii"]
    elif name == "bytes_flipped":
        raw = bytearray(ref.read_bytes())
        at = raw.find(real[:4].tobytes())  # inside the stored real set, not its tag
        raw[at + 17] ^= 0xFF
        path.write_bytes(bytes(raw))
        return str(path)
    elif name == "truncated":
        path.write_bytes(ref.read_bytes()[: ref.stat().st_size // 2])
        return str(path)
    np.savez(path, **entries)
    return str(path)


DAMAGED = {
    "values_changed": "is damaged: its real set does not match the fingerprint",
    "other_version": "was written in RealReference format version 99",
    "entry_missing": "is not a saved RealReference (missing radii",
    "radii_edited": "its radii, fitted k, dtype or format version do not match the checksum",
    "version_text": "is damaged: its format version '2' is not an integer",
    "bytes_flipped": "is damaged: it cannot be read (BadZipFile: Bad CRC-32 for file 'real.npy')",
    "truncated": "cannot read as .npz",
}


@pytest.mark.parametrize("name", sorted(DAMAGED))
def test_damaged_reference_is_a_one_line_error(tmp_path, capsys, name):
    real, fake = make_sets(60, 50)
    bad = _damaged_reference(name, tmp_path, real)
    f = save(tmp_path / "f.npy", fake)
    code = main(["report", bad, f, "-o", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith("embviz: error: ") and DAMAGED[name] in line, line
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_foreign_npz_files_are_read_as_embeddings(tmp_path, capsys):
    real, fake = make_sets(60, 50)
    f = save(tmp_path / "f.npy", fake)
    out = tmp_path / "out"
    # Another tool's "format" entry next to the embeddings: plain embeddings.
    np.savez(tmp_path / "tagged.npz", embeddings=real, format=np.asarray("my-tool v2"))
    argv = ["-o", str(out), "--projection", "pca", "-q"]
    assert main(["report", str(tmp_path / "tagged.npz"), f, *argv]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {key: metrics[key] for key in PRDC_KEYS} == compute_prdc(real, fake, 5)
    # A reference's entries without its tag are not a reference either.
    np.savez(tmp_path / "lookalike.npz", real=real, radii=np.ones((1, 60)), nearest_ks=[5])
    assert main(["report", str(tmp_path / "lookalike.npz"), f, *argv]) == 2
    assert "holds several arrays ['real', 'radii', 'nearest_ks']" in capsys.readouterr().err


def test_reference_in_place_of_a_fake_or_labels(tmp_path, capsys):
    real, _ = make_sets(60, 50)
    ref = fit_reference(tmp_path, real, "3")
    r = save(tmp_path / "r.npy", real)
    message = f"{ref}: is a saved RealReference (embviz reference), not an array of embeddings"
    for argv in (
        ["report", r, str(ref)],
        ["compare", r, r, str(ref)],
        ["report", r, r, "--labels", str(ref)],
    ):
        assert main([*argv, "-o", str(tmp_path / "o"), "-q"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


BAD_REFERENCE_ARGS = {
    "k_text": (
        ["-k", "3,x"],
        "argument -k/--nearest-k: expected positive integers separated by commas, such as "
        "3,5,10, got '3,x'",
    ),
    "k_zero": (["-k", "0,5"], "got '0,5'"),
    "k_too_big": (["-k", "5,60"], "-k 60 needs more than 60 samples, {real} has 60"),
    "suffix": (
        ["-o", "{tmp}/ref.bin"],
        "-o {tmp}/ref.bin: a reference file ends in .npz (NumPy) or .pt/.pth (torch), got '.bin'",
    ),
    "directory": (["-o", "{tmp}"], "-o {tmp}: is a directory"),
    "is_real": (
        ["-o", "{real}"],
        "-o {real}: exists and is not a saved reference; it is not replaced",
    ),
    "parent_is_file": (
        ["-o", "{real}/ref.npz"],
        "-o {real}/ref.npz: cannot create the directory, {real} is a file; choose another FILE.",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_REFERENCE_ARGS))
def test_reference_command_errors(tmp_path, capsys, work_spy, name):
    real, _ = make_sets(60, 50)
    r = tmp_path / "real.npz"
    np.savez(r, embeddings=real)
    before = r.read_bytes()
    extra, message = BAD_REFERENCE_ARGS[name]
    extra = [a.format(tmp=tmp_path, real=r) for a in extra]
    argv = ["reference", str(r), "-q", *extra]
    if "-o" not in extra:
        argv += ["-o", str(tmp_path / "ref.npz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert message.format(tmp=tmp_path, real=r) in line, line
    assert "__init__" not in work_spy  # nothing fitted
    if name not in ("k_too_big",):
        assert work_spy == {}  # -o and -k are checked before REAL is read
    assert r.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real.npz"]


def test_failed_save_keeps_the_previous_reference(tmp_path, capsys, monkeypatch):
    from lightning_embviz import RealReference

    real, _ = make_sets(60, 50)
    ref = fit_reference(tmp_path, real, "3")
    before = ref.read_bytes()

    def broken_save(self, path):
        Path(path).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(RealReference, "save", broken_save)
    assert main(["reference", str(ref), "-k", "3,5", "-o", str(ref), "-q"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert ref.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit_input.npy", "ref.npz"]


def test_help_documents_the_reference(capsys):
    assert main(["--help"]) == 0
    assert "{report,compare,reference}" in capsys.readouterr().out
    assert main(["reference", "--help"]) == 0
    text = capsys.readouterr().out
    parts = ("-k K[,K...]", "3,5,10", "-o FILE", ".npz", ".pt/.pth", "RealReference.load")
    for part in (*parts, "embviz report ref.npz", "embviz compare ref.npz", "weights_only=True"):
        assert part in text, part
    for command in ("report", "compare"):
        assert main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "or a saved reference (embviz reference)" in text, command
        assert "any k it was fitted with, default its first" in text, command


# ---------------------------------------------------------------- --confidence

INTERVAL_METRICS = ("precision", "recall", "density", "coverage", "fd")
INTERVAL_KEYS = tuple(f"{m}_{part}" for m in INTERVAL_METRICS for part in ("low", "high", "se"))


def interval_sets(seed: int = 0):
    """A real set, two fake sets from the real distribution and one clearly worse (shifted)."""
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(400, 8)).astype(np.float32)
    equal_a = rng.normal(size=(300, 8)).astype(np.float32)
    equal_b = rng.normal(size=(300, 8)).astype(np.float32)
    worse = (rng.normal(size=(300, 8)) + 2.0).astype(np.float32)
    return real, equal_a, equal_b, worse


def test_report_confidence_writes_the_intervals_of_prdc_intervals(tmp_path, capsys):
    from lightning_embviz.intervals import prdc_intervals

    real, fake, _, _ = interval_sets()
    r, f = save(tmp_path / "real.npy", real), save(tmp_path / "fake.npy", fake)
    out = tmp_path / "out"
    argv = ["report", r, f, "-o", str(out), "--projection", "pca", "-q"]
    assert main([*argv, "--confidence", "0.9", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # 300 and 400 samples: no small-sample warning at k=5
    metrics = json.loads((out / "metrics.json").read_text())
    expected = prdc_intervals(real, fake, 5, 0.9, seed=3)
    assert {key: metrics[key] for key in expected} == expected  # exact, point values too
    assert metrics["confidence"] == 0.9 and metrics["interval_seed"] == 3
    assert list(metrics)[-len(INTERVAL_KEYS) :] == list(INTERVAL_KEYS)
    # --seed reaches the splits: another seed gives other standard errors.
    other = prdc_intervals(real, fake, 5, 0.9, seed=0)
    assert any(other[key] != metrics[key] for key in INTERVAL_KEYS if key.endswith("_se"))
    for key in INTERVAL_METRICS:
        low, high = metrics[f"{key}_low"], metrics[f"{key}_high"]
        line = f"  {key:<10} {metrics[key]:.4f} [{low:.4f}, {high:.4f}]"
        assert line in captured.out.splitlines(), (line, captured.out)
    assert "90% confidence intervals" in captured.out and "--seed 3" in captured.out

    # Without --confidence, no interval keys and no brackets.
    assert main(argv) == 0
    plain = json.loads((out / "metrics.json").read_text())
    assert not any(key in plain for key in (*INTERVAL_KEYS, "confidence", "interval_seed"))
    assert "[" not in capsys.readouterr().out


def test_report_confidence_with_a_saved_reference_equals_the_raw_file(
    tmp_path, capsys, monkeypatch
):
    from lightning_embviz.intervals import prdc_intervals

    real, fake, _, _ = interval_sets(1)
    f = save(tmp_path / "fake.npy", fake)
    raw_dir, saved_dir = tmp_path / "raw", tmp_path / "saved"
    raw_dir.mkdir()
    saved_dir.mkdir()
    save(raw_dir / "real.npz", real)
    fit_reference(saved_dir, real, "3,5", "real.npz")
    options = ["--confidence", "0.95", "-k", "3"]
    saved = _report_in(saved_dir, monkeypatch, ["report", "real.npz", f, *options])
    raw = _report_in(raw_dir, monkeypatch, ["report", "real.npz", f, *options])
    assert saved["metrics.json"] == raw["metrics.json"]
    metrics = json.loads(saved["metrics.json"])
    expected = prdc_intervals(real, fake, 3, 0.95, seed=0)
    assert {key: metrics[key] for key in expected} == expected


def test_compare_confidence_marks_only_the_worse_set(tmp_path, capsys):
    from lightning_embviz.intervals import prdc_intervals

    real, equal_a, equal_b, worse = interval_sets()
    r = save(tmp_path / "real.npy", real)
    fakes = {"a": equal_a, "b": equal_b, "worse": worse}
    paths = [save(tmp_path / f"{name}.npy", x) for name, x in fakes.items()]
    out = tmp_path / "cmp"
    argv = ["compare", r, *paths, "-o", str(out), "--projection", "pca", "-q"]
    assert main([*argv, "--confidence", "0.95", "--seed", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    table = json.loads((out / "metrics.json").read_text())
    assert table["confidence"] == 0.95 and table["interval_seed"] == 1
    assert "sqrt(se^2 + se_best^2) > 1.960" in table["difference_test"]
    rows = {row["name"]: row for row in table["sets"]}
    assert list(rows) == ["a", "b", "worse"]
    for name, fake in fakes.items():
        expected = prdc_intervals(real, fake, 5, 0.95, seed=1)
        assert {key: rows[name][key] for key in expected} == expected, name

    for metric in INTERVAL_METRICS:
        # The rule, recomputed here: best = highest (precision, recall, coverage), closest to
        # 1 (density), lowest (fd); z of the gap to the best over the combined standard error.
        def gap(value: float, metric: str = metric) -> float:
            return {"fd": value, "density": abs(value - 1.0)}.get(metric, -value)

        best = min(rows, key=lambda n: gap(rows[n][metric]))
        assert table["best"][metric] == best and best in ("a", "b"), metric
        for name, row in rows.items():
            se = float(np.hypot(row[f"{metric}_se"], rows[best][f"{metric}_se"]))
            z = 0.0 if name == best else (gap(row[metric]) - gap(rows[best][metric])) / se
            assert row[f"{metric}_z"] == pytest.approx(z, rel=1e-12, abs=1e-12)
            assert row[f"{metric}_differs"] is (z > 1.959963984540054)
        # The constructed case: the shifted set differs on every metric, the equal ones never.
        assert rows["worse"][f"{metric}_differs"], (metric, rows["worse"][f"{metric}_z"])
        assert not rows["a"][f"{metric}_differs"] and not rows["b"][f"{metric}_differs"], metric

    with open(out / "metrics.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert [row["name"] for row in csv_rows] == ["a", "b", "worse"]
    for row in csv_rows:
        for metric in INTERVAL_METRICS:
            for part in ("", "_low", "_high", "_se", "_z"):
                assert float(row[metric + part]) == rows[row["name"]][metric + part]
            assert row[f"{metric}_differs"] == str(rows[row["name"]][f"{metric}_differs"])

    lines = {line.split()[0]: line for line in captured.out.splitlines() if line}
    assert lines["worse"].count("*") == 5
    assert "*" not in lines["a"] and "*" not in lines["b"]
    cell = f"{rows['a']['coverage']:.3f} [{rows['a']['coverage_low']:.3f}, "
    assert cell in lines["a"]
    assert "* = differs from the best set" in captured.out
    assert f"best: precision {table['best']['precision']}," in captured.out


def _row(name: str, **values: tuple[float, float]) -> dict:
    row: dict = {"name": name}
    for metric in INTERVAL_METRICS:
        value, se = values.get(metric, (0.5, 0.01))
        row[metric], row[f"{metric}_se"] = value, se
    return row


def test_marks_rule_directions_ties_and_missing_standard_errors():
    from lightning_embviz.cli.stats import mark_differences

    nan = float("nan")
    rows = [
        _row("p", precision=(0.80, 0.03), density=(1.30, 0.05), coverage=(0.9, 0.0), fd=(5.0, nan)),
        _row("q", precision=(0.80, 0.04), density=(0.95, 0.05), coverage=(0.9, 0.0), fd=(2.0, 0.5)),
        _row("r", precision=(0.70, 0.04), density=(1.10, 0.05), coverage=(0.8, 0.0), fd=(9.0, 1.0)),
    ]
    best = mark_differences(rows, 0.95)
    # Ties go to the first set; density's best is the one closest to 1; fd's is the lowest.
    assert best == {"precision": "p", "recall": "p", "density": "q", "coverage": "p", "fd": "q"}
    p, q, r = rows
    assert q["precision_z"] == 0.0 and not q["precision_differs"]
    assert r["precision_z"] == pytest.approx(0.10 / 0.05)  # 3-4-5: sqrt(0.03^2 + 0.04^2)
    assert r["precision_differs"]  # 2.0 > 1.96
    strict = [dict(x) for x in rows]
    mark_differences(strict, 0.99)
    assert not strict[2]["precision_differs"]  # 2.0 < 2.576 at 99 %
    # |1.30 - 1| - |0.95 - 1| = 0.25 over sqrt(0.005): marked; |1.10 - 1| - 0.05 = 0.05: not.
    assert p["density_z"] == pytest.approx(0.25 / np.sqrt(0.005))
    assert p["density_differs"] and not r["density_differs"]
    # Both standard errors 0: any gap is a difference, no gap is none.
    assert r["coverage_z"] == float("inf") and r["coverage_differs"]
    # fd without an interval (NaN standard error) is never marked.
    assert np.isnan(p["fd_z"]) and not p["fd_differs"]
    assert r["fd_z"] == pytest.approx(7.0 / np.hypot(1.0, 0.5)) and r["fd_differs"]


@pytest.mark.parametrize("command", ["report", "compare"])
@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.2", "nan", "x", "95"])
def test_confidence_must_be_between_0_and_1(tmp_path, capsys, work_spy, command, value):
    real, fake = make_sets(60, 50)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    out = tmp_path / "out"
    assert main([command, r, f, "--confidence", value, "-o", str(out), "-q"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"embviz {command}: error: argument --confidence: expected a ")
    assert f"strictly between 0 and 1, such as 0.95, got {value!r}" in line
    if value == "95":
        assert line.endswith("(for 95 % write 0.95) (see `embviz " + command + " -h`)")
    assert work_spy == {}  # refused while parsing: nothing read
    assert not out.exists()


@pytest.mark.parametrize("command", ["report", "compare"])
def test_confidence_on_too_few_samples_fails_before_the_metrics(
    tmp_path, capsys, work_spy, command
):
    real, fake = make_sets(60, 11)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    out = tmp_path / "out"
    assert main([command, r, f, "--confidence", "0.95", "-o", str(out), "-q"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        "embviz: error: --confidence splits each set into two halves of more than k=5 points, "
        f"so each set needs at least 12 samples; {f} has 11. Use more samples, a smaller -k, "
        "or leave out --confidence."
    )
    assert "compare_details" not in work_spy and "__init__" not in work_spy
    assert not out.exists()


def test_confidence_on_few_samples_warns_once_per_set_on_stderr(tmp_path, capsys):
    real, fake = make_sets(120, 60)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    g = save(tmp_path / "g.npy", fake[::-1].copy())
    out = tmp_path / "out"
    argv = [r, f, g, "--confidence", "0.95", "-o", str(out), "--projection", "pca", "-q"]
    assert main(["compare", *argv]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines  # one per fake set, although -q
    assert [line[: len("embviz: warning: --confidence, f: ")] for line in lines] == [
        "embviz: warning: --confidence, f: ",
        "embviz: warning: --confidence, g: ",
    ]
    assert all("Use at least 200 samples per set" in line for line in lines)


def test_help_documents_confidence(capsys):
    assert main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in ("--confidence C", "<metric>_low", "<metric>_se", "--seed", "half splits"):
        assert part in text, part
    assert main(["compare", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for part in (
        "--confidence C",
        "z = (g_set - g_best) / sqrt(se_set^2 + se_best^2) > q",
        "density: closest to 1",
        "approximate",
        "conservative",
        "<metric>_differs",
    ):
        assert part in text, part


# ---------------------------------------------------------------- issue 18: 9, 10, 11, 12


def test_closed_stdout_is_not_an_error(tmp_path):
    # `embviz report ... | head -0`: the reader is gone before the summary is printed.
    real, fake = make_sets(60, 50, 4)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "f.npy", fake)
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to stdout now fails with EPIPE
    env = dict(os.environ, MPLBACKEND="Agg")
    out = tmp_path / "out"
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "lightning_embviz",
                "report",
                r,
                f,
                "-k",
                "3",
                "-o",
                str(out),
                "--projection",
                "pca",
            ],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=300,
        )
    finally:
        os.close(write_end)
    assert "Broken pipe" not in proc.stderr and "BrokenPipeError" not in proc.stderr
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert {k: metrics[k] for k in PRDC_KEYS} == compute_prdc(real, fake, nearest_k=3)


def test_top_level_help_is_short_and_points_to_each_command(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "embviz report -h" in text and "embviz compare real.npy" in text
    assert "CSV: line 1 is a header" not in text  # not the whole `report` help again
    assert len(text.splitlines()) < 30
    assert main(["report", "--help"]) == 0
    assert "CSV: line 1 is a header" in capsys.readouterr().out


def test_help_says_bounds_are_student_t_not_normal(capsys):
    assert main(["report", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "not value +- 1.96 * <metric>_se" in text
    assert "Student-t quantile on Satterthwaite's degrees of freedom" in text
    assert "Student-t quantile (Satterthwaite degrees of freedom), not 1.96 * se" in text


def _collapsed_sets(seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(240, 32)).astype(np.float32)
    good = rng.normal(size=(240, 32)).astype(np.float32)
    collapsed = (0.05 * rng.normal(size=(240, 32))).astype(np.float32)  # all near the centre
    return real, good, collapsed


def test_compare_never_ranks_a_collapsed_set_best(tmp_path, capsys):
    real, good, collapsed = _collapsed_sets()
    # The trap: the reference package ranks the collapsed set higher on precision, coverage.
    import prdc

    ref_good = prdc.compute_prdc(real, good, nearest_k=5)
    ref_collapsed = prdc.compute_prdc(real, collapsed, nearest_k=5)
    assert ref_collapsed["precision"] > ref_good["precision"]
    assert ref_collapsed["coverage"] > ref_good["coverage"]
    paths = [save(tmp_path / f"{n}.npy", a) for n, a in (("r", real), ("g", good))]
    paths.append(save(tmp_path / "c.npy", collapsed))
    out = tmp_path / "out"
    status = main(
        [
            "compare",
            *paths,
            "-o",
            str(out),
            "--projection",
            "pca",
            "--names",
            "good,collapsed",
            "--confidence",
            "0.9",
            "-q",
        ]
    )
    assert status == 0
    captured = capsys.readouterr()
    table = json.loads((out / "metrics.json").read_text())
    assert set(table["best"].values()) == {"good"}
    rows = {row["name"]: row for row in table["sets"]}
    assert rows["collapsed"]["degenerate"] is True and rows["good"]["degenerate"] is False
    assert "degenerate (collapsed) fake set: recall 0.000" in rows["collapsed"]["warnings"][0]
    assert rows["good"]["warnings"] == []
    line = next(x for x in captured.out.splitlines() if x.startswith("collapsed "))
    assert line.endswith("DEGENERATE")
    assert "degenerate sets are never best" in captured.out
    assert "warning: collapsed: degenerate (collapsed) fake set" in captured.out
    with open(out / "metrics.csv", newline="") as handle:
        assert [r["degenerate"] for r in csv.DictReader(handle)] == ["False", "True"]


def test_mark_differences_with_every_set_degenerate():
    from lightning_embviz.cli.compare import compare_table
    from lightning_embviz.cli.stats import mark_differences

    rows = [_row("a", precision=(1.0, 0.0)), _row("b", precision=(0.9, 0.01))]
    for row in rows:
        row["degenerate"] = True
    best = mark_differences(rows, 0.95)
    assert best == dict.fromkeys(("precision", "recall", "density", "coverage", "fd"))
    assert all(np.isnan(row["precision_z"]) and not row["precision_differs"] for row in rows)
    for row in rows:
        for metric in ("precision", "recall", "density", "coverage", "fd"):
            row[f"{metric}_low"] = row[f"{metric}_high"] = row[metric]
    assert "best: precision -, recall -" in "\n".join(compare_table(rows, best, 0.95))


def test_report_says_a_collapsed_set_is_degenerate(tmp_path, capsys):
    real, _, collapsed = _collapsed_sets(1)
    identical = np.repeat(collapsed[:1], len(collapsed), axis=0)  # every fake the same point
    r = save(tmp_path / "r.npy", real)
    for name, fake in (("near", collapsed), ("same", identical)):
        f = save(tmp_path / f"{name}.npy", fake)
        out = tmp_path / name
        args = ["report", r, f, "-o", str(out), "--projection", "pca", "-q"]
        assert main([*args, "--confidence", "0.95"]) == 0
        captured = capsys.readouterr()
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["degenerate"] is True
        assert metrics["warnings"][0].startswith("degenerate (collapsed) fake set: recall 0.000")
        assert "never ranked best" in metrics["warnings"][0]
        assert "  warning: degenerate (collapsed) fake set" in captured.out
        assert "embviz: warning: degenerate (collapsed) fake set" in captured.err
    # All fakes identical: no FD interval, and a warning says why (not the sample count).
    assert metrics["fd_low"] is None and metrics["fd_high"] is None
    assert "fd has no interval: a set's covariance is singular" in metrics["warnings"][1]
    assert "no interval: a set's covariance is singular" in captured.out
    assert "Fréchet distance has no confidence interval" in captured.err


def test_report_healthy_set_is_not_degenerate(tmp_path, capsys):
    real, good, _ = _collapsed_sets(2)
    r, f = save(tmp_path / "r.npy", real), save(tmp_path / "g.npy", good)
    assert main(["report", r, f, "-o", str(tmp_path / "o"), "--projection", "pca", "-q"]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["degenerate"] is False and metrics["warnings"] == []
    assert "degenerate" not in capsys.readouterr().out
