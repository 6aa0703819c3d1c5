"""Distance work and wall time per rank of the distributed PRDC, against one process.

Spawns W gloo processes on this machine (a ``file://`` rendezvous), gives each the same
float32 sets (N = M rows of width D) and runs
:func:`lightning_embviz.distributed.compute_prdc_details_distributed`; then runs
:func:`lightning_embviz.compute_prdc_details` in one process. Per rank it prints the
distance pairs estimated by the GEMM pass (counted by ``count_estimates``), the wall time
and the process CPU time of the call, and checks that every rank's result is bit-identical
to the single-process one.

Ranks share the machine's cores: each uses ``cores / W`` threads (``--threads`` to choose).
On a machine with fewer cores than ranks need, the wall time cannot go down: the pairs per
rank show the sharing, the wall time shows the machine.

Usage::

    python benchmarks/bench_distributed.py                        # 4000x128, W = 2 and 3
    python benchmarks/bench_distributed.py --size 20000x512 --worlds 2,4,8
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_embviz import compute_prdc_details
from lightning_embviz.distributed import compute_prdc_details_distributed
from lightning_embviz.engine.gemm import EstimateCount, count_estimates


def make_sets(n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(n, d)).astype(np.float32)
    fake = rng.normal(0.1, 1.1, size=(n, d)).astype(np.float32)
    return real, fake


def count_pairs() -> EstimateCount:
    """Count the pairs of every GEMM block from now on (``engine.gemm.count_estimates``)."""
    return count_estimates().__enter__()  # left open: it counts until the process ends


def timed(fn: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def worker(rank: int, world: int, args: argparse.Namespace, store: str, out_dir: str) -> None:
    torch.set_num_threads(args.threads or max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        real, fake = make_sets(args.n, args.d)
        pairs = count_pairs()
        dist.barrier()
        result, wall, cpu = timed(lambda: compute_prdc_details_distributed(real, fake, args.k))
        fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
        torch.save(
            {"result": fields, "pairs": pairs.pairs, "wall": wall, "cpu": cpu},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="4000x128", help="N x D, with M = N (default 4000x128)")
    parser.add_argument("--worlds", default="2,3", help="rank counts, comma-separated")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="threads per rank (0: cores / W)")
    args = parser.parse_args()
    args.n, args.d = (int(v) for v in args.size.lower().split("x"))
    real, fake = make_sets(args.n, args.d)
    pairs = count_pairs()
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    want, wall, cpu = timed(lambda: compute_prdc_details(real, fake, args.k))
    total = pairs.pairs
    print(f"N = M = {args.n}, D = {args.d}, k = {args.k}, {os.cpu_count()} cores")
    print(f"{'ranks':>5} {'rank':>4} {'pairs':>12} {'of 1 proc':>9} {'wall s':>7} {'cpu s':>7}")
    print(f"{1:>5} {0:>4} {total:>12} {1.0:>9.3f} {wall:>7.2f} {cpu:>7.2f}")
    for world in (int(w) for w in args.worlds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            mp.spawn(worker, args=(world, args, f"{tmp}/store", tmp), nprocs=world)
            ranks = [
                torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(world)
            ]
        for rank, got in enumerate(ranks):
            for f in dataclasses.fields(want):
                value = getattr(want, f.name)
                same = (
                    torch.equal(got["result"][f.name], value)
                    if isinstance(value, torch.Tensor)
                    else got["result"][f.name] == value
                )
                if not same:
                    raise SystemExit(f"rank {rank} of {world}: {f.name} differs from one process")
            print(
                f"{world:>5} {rank:>4} {got['pairs']:>12} {got['pairs'] / total:>9.3f} "
                f"{got['wall']:>7.2f} {got['cpu']:>7.2f}"
            )
    print("every rank's result is bit-identical to the single-process one")


if __name__ == "__main__":
    main()
