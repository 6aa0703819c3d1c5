"""``embviz`` under torchrun: the distance work shared by 2 gloo processes on the CPU.

Each test starts real processes (``python -m torch.distributed.run --standalone``, or two
processes given torchrun's environment by hand), with a timeout so that a rank left
waiting in a collective fails the test instead of hanging it.
"""

from __future__ import annotations

import json
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


def test_compare_under_torchrun_writes_what_one_process_writes(files: Path) -> None:
    common = ("real.npy", "fake.npy", "fake2.npy", "--projection", "pca", "-k", "3")
    _one_process(files, "compare", *common, "-o", "one")
    run = _torchrun(files, "-m", "lightning_embviz", "compare", *common, "-o", "two")
    assert run.returncode == 0, run.stderr
    for name in ("metrics.json", "metrics.csv"):
        assert (files / "two" / name).read_bytes() == (files / "one" / name).read_bytes(), name
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
