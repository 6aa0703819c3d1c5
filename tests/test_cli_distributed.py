"""``embviz`` under torchrun: the distance work shared by 2 gloo processes on the CPU.

Each test starts real processes (``python -m torch.distributed.run --standalone``, or two
processes given torchrun's environment by hand), with a timeout so that a rank left
waiting in a collective fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lightning_embviz.cli import main

TIMEOUT_S = 180


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # two cores on the test machine: one thread per process
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _torchrun(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", *args]
    return subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S
    )


@pytest.fixture
def files(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    np.save(tmp_path / "real.npy", rng.normal(size=(301, 8)).astype(np.float32))
    np.save(tmp_path / "fake.npy", rng.normal(0.3, 1.1, size=(287, 8)).astype(np.float32))
    np.save(tmp_path / "fake2.npy", rng.normal(size=(250, 8)).astype(np.float32))
    (tmp_path / "bad.npy").write_text("not an array", encoding="utf-8")
    return tmp_path


def _one_process(cwd: Path, *args: str) -> None:
    here = os.getcwd()
    os.chdir(cwd)
    try:
        assert main([*args, "-q"]) == 0
    finally:
        os.chdir(here)


def test_report_under_torchrun_writes_what_one_process_writes(files: Path) -> None:
    common = ("real.npy", "fake.npy", "--projection", "pca")
    _one_process(files, "report", *common, "-o", "one")
    run = _torchrun(files, "-m", "lightning_embviz", "report", *common, "-o", "two")
    assert run.returncode == 0, run.stderr
    for name in ("metrics.json", "samples_real.csv", "samples_fake.csv"):
        assert (files / "two" / name).read_bytes() == (files / "one" / name).read_bytes(), name
    assert json.loads((files / "two" / "metrics.json").read_text())["num_real"] == 301
    # Only rank 0 prints: one summary, one "wrote" line.
    assert run.stdout.count("fake.npy vs real.npy") == 1
    assert run.stdout.count("wrote ") == 1


def _compare_both_ways(files: Path, *common: str) -> subprocess.CompletedProcess[str]:
    """``compare`` in one process (-o one) and under torchrun (-o two): byte-identical files."""
    _one_process(files, "compare", *common, "-o", "one")
    run = _torchrun(files, "-m", "lightning_embviz", "compare", *common, "-o", "two")
    assert run.returncode == 0, run.stderr
    for name in ("metrics.json", "metrics.csv"):
        assert (files / "two" / name).read_bytes() == (files / "one" / name).read_bytes(), name
    return run


def test_compare_under_torchrun_writes_what_one_process_writes(files: Path) -> None:
    common = ("real.npy", "fake.npy", "fake2.npy", "--projection", "pca", "-k", "3")
    _compare_both_ways(files, *common)
    assert len(json.loads((files / "two" / "metrics.json").read_text())["sets"]) == 2


def test_reference_under_torchrun_saves_what_one_process_saves(files: Path) -> None:
    _one_process(files, "reference", "real.npy", "-k", "3,5", "-o", "one.npz")
    run = _torchrun(
        files, "-m", "lightning_embviz", "reference", "real.npy", "-k", "3,5", "-o", "two.npz"
    )
    assert run.returncode == 0, run.stderr
    assert (files / "two.npz").read_bytes() == (files / "one.npz").read_bytes()
    assert run.stdout.count("wrote two.npz") == 1


def test_both_ranks_share_the_distance_work(files: Path) -> None:
    # A spy: each rank counts its all-gathers. The single-process fallback makes none, so
    # rank 1's count proves that it took part in the metrics, and rank 0's output is still
    # that of one process.
    (files / "driver.py").write_text(
        "import json, os, sys\n"
        "from lightning_embviz.engine import distributed\n"
        "from lightning_embviz.cli import main\n"
        "calls = []\n"
        "gather = distributed._Group.all_gather\n"
        "def spy(self, tensor):\n"
        "    calls.append(self.world)\n"
        "    return gather(self, tensor)\n"
        "distributed._Group.all_gather = spy\n"
        "status = main(sys.argv[1:])\n"
        "with open(f\"calls_{os.environ['RANK']}.json\", 'w') as handle:\n"
        "    json.dump(calls, handle)\n"
        "sys.exit(status)\n",
        encoding="utf-8",
    )
    common = ("real.npy", "fake.npy", "--projection", "pca")
    _one_process(files, "report", *common, "-o", "one")
    run = _torchrun(files, "driver.py", "report", *common, "-o", "two")
    assert run.returncode == 0, run.stderr
    for rank in (0, 1):
        calls = json.loads((files / f"calls_{rank}.json").read_text())
        # The real radii, then the same-set check, the radii and the per-row results.
        assert calls == [2] * len(calls) and len(calls) >= 4, (rank, calls)
    assert (files / "two" / "metrics.json").read_bytes() == (
        files / "one" / "metrics.json"
    ).read_bytes()


def test_bad_input_under_torchrun_ends_every_rank_with_status_2(files: Path) -> None:
    run = _torchrun(files, "-m", "lightning_embviz", "report", "real.npy", "bad.npy", "-o", "out")
    assert run.returncode != 0
    # torchrun's summary lists the failed ranks with their exit status. Once one rank has
    # ended, torchrun may stop the other before it exits by itself (the test with two
    # processes started by hand checks that both end with 2).
    assert "exitcode  : 2" in run.stderr, run.stderr
    assert "exitcode  : 1" not in run.stderr, run.stderr
    assert run.stderr.count("embviz: error: bad.npy") == 1  # reported once, by rank 0
    assert not (files / "out").exists()  # the -o directory rank 0 made is removed again


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_rank_whose_input_fails_alone_stops_every_rank(files: Path) -> None:
    # Rank 1 runs in a directory where fake.npy is unreadable, rank 0 where it is fine:
    # neither may wait for the other in the metric collectives.
    other = files / "other"
    other.mkdir()
    (other / "real.npy").write_bytes((files / "real.npy").read_bytes())
    (other / "fake.npy").write_text("not an array", encoding="utf-8")
    port = str(_free_port())
    processes = []
    for rank, cwd in ((0, files), (1, other)):
        env = _env()
        env.update(
            WORLD_SIZE="2",
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        command = [sys.executable, "-m", "lightning_embviz", "report", "real.npy", "fake.npy"]
        processes.append(
            subprocess.Popen(
                [*command, "-o", "out", "-q"],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for process in processes:
            _, err = process.communicate(timeout=TIMEOUT_S)
            results.append((process.returncode, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    (status0, err0), (status1, err1) = results
    assert (status0, status1) == (2, 2), (err0, err1)
    assert "rank 1 of 2 could not read or check its inputs" in err0
    assert "embviz: error: fake.npy" in err1
    assert not (files / "out").exists()


def test_a_rank_failing_in_the_distance_work_ends_every_rank_with_one_message(
    files: Path,
) -> None:
    # Rank 1 runs out of memory (forced) in its share of the real-fake tests, after the input
    # agreement: both ranks must end, with the same message and status 1, none left waiting.
    (files / "driver.py").write_text(
        "import os, sys\n"
        "from lightning_embviz.engine import distributed\n"
        "from lightning_embviz.cli import main\n"
        "if os.environ['RANK'] == '1':\n"
        "    def broken(*args, **kwargs):\n"
        "        raise RuntimeError('CUDA out of memory (forced)')\n"
        "    distributed.cross_ball_tests = broken\n"
        "sys.exit(main(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    port = str(_free_port())
    processes = []
    for rank in (0, 1):
        env = _env()
        env.update(
            WORLD_SIZE="2",
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
        )
        command = [sys.executable, "driver.py", "report", "real.npy", "fake.npy", "-o", "out"]
        processes.append(
            subprocess.Popen(
                [*command, "-q"],
                cwd=files,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = []
    try:
        for process in processes:
            _, err = process.communicate(timeout=TIMEOUT_S)
            results.append((process.returncode, err))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    message = (
        "embviz: error: rank 1 of 2 failed while testing its real rows against the fakes: "
        "RuntimeError: CUDA out of memory (forced)."
    )
    for rank, (status, err) in enumerate(results):
        assert status == 1, (rank, err)
        assert err.startswith(message), (rank, err)
        assert "Connection reset" not in err and "Traceback" not in err, (rank, err)
    assert results[0][1] == results[1][1]  # the same message on every rank
    assert not (files / "out").exists()  # the -o directory rank 0 made is removed again


# --- --metrics vendi: every rank takes part in the Vendi scores -----------------------------


def _zero_row(files: Path, name: str, source: str) -> None:
    rows = np.load(files / source)
    rows[3] = 0.0  # a row of zero norm: the cosine kernel, so the Vendi score, fails
    np.save(files / name, rows)


def test_report_vendi_under_torchrun_equals_one_process_bit_for_bit(files: Path) -> None:
    from lightning_embviz.metrics import vendi_score

    common = ("real.npy", "fake.npy", "--projection", "pca", "--metrics", "vendi,kd")
    _one_process(files, "report", *common, "-o", "one")
    run = _torchrun(files, "-m", "lightning_embviz", "report", *common, "-o", "two")
    assert run.returncode == 0, run.stderr
    one = json.loads((files / "one" / "metrics.json").read_text())
    two = json.loads((files / "two" / "metrics.json").read_text())
    assert two["vendi"] == one["vendi"] == vendi_score(np.load(files / "fake.npy"))
    assert two["vendi_real"] == one["vendi_real"] == vendi_score(np.load(files / "real.npy"))
    assert two == one and two["kd"] == one["kd"]
    assert (files / "two" / "metrics.json").read_bytes() == (
        files / "one" / "metrics.json"
    ).read_bytes()
    assert run.stdout.count("  vendi_real") == 1  # rank 0 prints the summary, once


def test_compare_vendi_under_torchrun_equals_one_process_bit_for_bit(files: Path) -> None:
    common = ("real.npy", "fake.npy", "fake2.npy", "--projection", "pca", "-k", "3")
    common += ("--metrics", "vendi,fd_inf")
    _compare_both_ways(files, *common)
    sets = json.loads((files / "two" / "metrics.json").read_text())["sets"]
    assert [s["vendi_real"] for s in sets] == [sets[0]["vendi_real"]] * 2
    assert sets[0]["vendi"] != sets[1]["vendi"] and not any(s["warnings"] for s in sets)


_VENDI_SPY = (
    "import json, os, sys\n"
    "from lightning_embviz.engine import kernels\n"
    "from lightning_embviz.cli import main\n"
    "kernels._ROWS = 64  # blocks of 64 rows: 5 blocks per set, to share between 2 ranks\n"
    "calls = []\n"
    "moment = kernels._moment_limbs\n"
    "def spy(t, chunk, blocks):\n"
    "    calls.append([int(t.shape[0]), list(blocks)])\n"
    "    return moment(t, chunk, blocks)\n"
    "kernels._moment_limbs = spy\n"
    "status = main(sys.argv[1:])\n"
    "with open(f\"calls_{os.environ.get('RANK', 'solo')}.json\", 'w') as handle:\n"
    "    json.dump(calls, handle)\n"
    "sys.exit(status)\n"
)


def test_both_ranks_share_the_vendi_work(files: Path) -> None:
    # A spy on the second moment's row blocks: under torchrun each rank accumulates its own
    # blocks of each set (the fakes, then the reals), and metrics.json is still the one of
    # one process with the same blocks.
    (files / "driver.py").write_text(_VENDI_SPY, encoding="utf-8")
    common = ("report", "real.npy", "fake.npy", "--projection", "pca", "--metrics", "vendi")
    solo = subprocess.run(
        [sys.executable, "driver.py", *common, "-o", "one", "-q"],
        cwd=files,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert solo.returncode == 0, solo.stderr
    run = _torchrun(files, "driver.py", *common, "-o", "two")
    assert run.returncode == 0, run.stderr
    # One process: every block of the fakes (287 rows), then of the reals (301 rows).
    assert json.loads((files / "calls_solo.json").read_text()) == [
        [287, [0, 1, 2, 3, 4]],
        [301, [0, 1, 2, 3, 4]],
    ]
    shares = [json.loads((files / f"calls_{rank}.json").read_text()) for rank in (0, 1)]
    assert shares[0] == [[287, [0, 1, 2]], [301, [0, 1, 2]]]
    assert shares[1] == [[287, [3, 4]], [301, [3, 4]]]
    one = json.loads((files / "one" / "metrics.json").read_text())
    assert not math.isnan(one["vendi"]) and not math.isnan(one["vendi_real"])
    assert (files / "two" / "metrics.json").read_bytes() == (
        files / "one" / "metrics.json"
    ).read_bytes()


def test_vendi_on_bad_data_under_torchrun_is_null_with_one_process_warning(
    files: Path,
) -> None:
    # A fake set with a row of zero norm: the fakes' Vendi score fails on every rank alike,
    # so both Vendi keys are null with the warning of one process, the other set and the
    # other metric are computed, and every rank ends (the timeout catches a hang).
    _zero_row(files, "zero.npy", "fake.npy")
    common = ("real.npy", "zero.npy", "fake2.npy", "--projection", "pca", "-k", "3")
    common += ("--metrics", "vendi,kd")
    run = _compare_both_ways(files, *common)
    bad, good = json.loads((files / "two" / "metrics.json").read_text())["sets"]
    assert bad["vendi"] is None and bad["vendi_real"] is None and bad["kd"] is not None
    assert bad["warnings"] == [
        "vendi could not be computed (ValueError: `x` has 1 row(s) of zero norm out of 287; "
        "the cosine kernel needs non-zero rows. Drop them first.); it is null"
    ]
    assert good["vendi"] is not None and good["vendi_real"] is not None
    assert not good["warnings"]
    assert run.stdout.count("warning: zero: vendi could not be computed") == 1
    # A real set with a row of zero norm: the fakes' score is fine, the reals' fails, both
    # keys are null with the reals' message, as in one process.
    _zero_row(files, "zero_real.npy", "real.npy")
    common = ("zero_real.npy", "fake.npy", "--projection", "pca", "--metrics", "vendi")
    _one_process(files, "report", *common, "-o", "one_r")
    run = _torchrun(files, "-m", "lightning_embviz", "report", *common, "-o", "two_r")
    assert run.returncode == 0, run.stderr
    assert (files / "two_r" / "metrics.json").read_bytes() == (
        files / "one_r" / "metrics.json"
    ).read_bytes()
    metrics = json.loads((files / "two_r" / "metrics.json").read_text())
    assert metrics["vendi"] is None and metrics["vendi_real"] is None
    assert "`x` has 1 row(s) of zero norm out of 301" in metrics["warnings"][-1]


def test_a_rank_failing_in_the_vendi_work_gives_null_on_every_rank(files: Path) -> None:
    # Rank 1 fails (forced) in its share of the second moment: the ranks agree, the Vendi
    # keys are null with a warning naming rank 1, and both processes end normally.
    (files / "driver.py").write_text(
        "import os, sys\n"
        "from lightning_embviz.engine import kernels\n"
        "from lightning_embviz.cli import main\n"
        "if os.environ['RANK'] == '1':\n"
        "    def broken(*args, **kwargs):\n"
        "        raise RuntimeError('out of memory (forced)')\n"
        "    kernels._moment_limbs = broken\n"
        "sys.exit(main(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    common = ("report", "real.npy", "fake.npy", "--projection", "pca", "--metrics", "vendi,kd")
    run = _torchrun(files, "driver.py", *common, "-o", "two")
    assert run.returncode == 0, run.stderr
    metrics = json.loads((files / "two" / "metrics.json").read_text())
    assert metrics["vendi"] is None and metrics["vendi_real"] is None
    assert metrics["kd"] is not None
    assert metrics["warnings"] == [
        "vendi could not be computed (RankFailedError: rank 1 of 2 failed while computing its "
        "share of the second moments: RuntimeError: out of memory (forced). Every rank "
        "stopped the shared Vendi score here.); it is null"
    ]
