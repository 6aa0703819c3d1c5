"""Cost of gathering the embeddings across ranks (2 gloo processes on CPU).

Each rank holds about half of N real and N fake rows of width D (uneven by a few rows, like
a padded DistributedSampler); every rank calls ``gather_embeddings`` and the finalize step
(sort by key, de-duplicate, cap). Reports the median wall time over a few repeats, and the
bytes each rank receives.

Run:  python benchmarks/bench_gather.py [--n 5000] [--width 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_embviz.callback.buffer import EmbeddingSet, finalize_set, gather_embeddings


def worker(rank: int, world: int, n: int, width: int, repeats: int, tmp: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/store", rank=rank, world_size=world)
    torch.set_num_threads(1)
    local = (n + world - 1 - rank) // world  # uneven when n % world != 0
    keys = torch.arange(local) * world + rank
    real = EmbeddingSet(torch.randn(local, width), keys, keys % 10)
    fake = EmbeddingSet(torch.randn(local, width), keys.clone(), None)
    times = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        got_real, got_fake = gather_embeddings(real, fake)
        got_real = finalize_set(got_real, dedupe=True, max_samples=None)
        got_fake = finalize_set(got_fake, dedupe=True, max_samples=None)
        times.append(time.perf_counter() - start)
    assert len(got_real) == n and len(got_fake) == n
    received = (got_real.features.numel() + got_fake.features.numel()) * 4
    if rank == 0:
        Path(tmp, "result.json").write_text(
            json.dumps({"median_s": statistics.median(times), "times": times, "bytes": received})
        )
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="real and fake rows in total")
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(worker, args=(2, args.n, args.width, args.repeats, tmp), nprocs=2)
        result = json.loads(Path(tmp, "result.json").read_text())
    mib = result["bytes"] / 2**20
    print(json.dumps({"n": args.n, "width": args.width, "world": 2, **result}, indent=1))
    print(
        f"gather of {args.n}+{args.n} rows x {args.width} over 2 gloo ranks: "
        f"median {result['median_s'] * 1000:.0f} ms, {mib:.1f} MiB of features per rank"
    )


if __name__ == "__main__":
    main()
