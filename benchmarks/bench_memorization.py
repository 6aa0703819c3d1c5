"""Memorization metrics: a simulation of honest, copying and over-dispersed generators, and
the cost of the exact nearest-train pass against scikit-learn.

Simulation (``simulate``): a mixture of Gaussians in D dimensions (``--components`` means
drawn from N(0, 4 I), unit spread). Each draw makes a fresh training set, a fresh held-out
set and fresh fakes of one of these kinds:

- ``honest``: new samples of the same mixture;
- ``copy p``: a share p of the fakes are training samples plus a little noise (0.02 of the
  spread), the rest honest;
- ``overdispersed``: samples of the mixture with twice the spread.

and reports, over ``--draws`` draws, the mean and standard deviation of ``ct_score``,
``authenticity`` and ``copy_fraction`` (alpha = 0.05). Expected: C_T near 0 for honest
fakes (spread about 1 / sqrt(cells)), far below 0 with copies, above 0 when over-dispersed;
authenticity drops and copy_fraction rises with the copied share; copy_fraction near alpha
when honest.

Cost (``cost``): the nearest training sample of every fake, float32 standard normal data,
each method in its own process (its peak memory is the process's, reported by the kernel):

- ``ours``: :func:`lightning_embviz.memorization.nearest_train` (one call, exact);
- ``ours-fitted``: a :class:`TrainReference` fitted once, then the pass over the fakes (what
  each validation run pays);
- ``sklearn``: ``NearestNeighbors(n_neighbors=1, algorithm="brute").fit(train).kneighbors``
  (float32 arithmetic, not exact);
- ``ours-sharded``: the DDP search of the callback, the training set shared by ``--ranks``
  gloo ranks on this machine (each a process with ``--threads`` threads, holding the whole
  fitted :class:`TrainReference`): each rank searches its share of the training rows for
  every fake, one all-gather folds the shares. Reported per rank (wall, CPU, peak memory
  above the data); the indices are checked equal to ``ours``/``ours-fitted`` when run.

Agreement: the fraction of fakes for which ``sklearn`` returns the same index, and the
result of ``ours`` against float64 brute force on a subsample of the fakes.

Usage::

    python benchmarks/bench_memorization.py simulate --draws 50
    python benchmarks/bench_memorization.py cost --sizes 100000x10000 --threads 2
    python benchmarks/bench_memorization.py cost --sizes 1000000x10000 --methods ours
    python benchmarks/bench_memorization.py cost --sizes 100000x10000 --threads 1 \
        --methods ours ours-sharded --ranks 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from typing import Any

import numpy as np
import torch

# --- simulation ---------------------------------------------------------------------------


def _mixture(
    rng: np.random.Generator, means: np.ndarray, n: int, spread: float = 1.0
) -> np.ndarray:
    comp = rng.integers(0, len(means), size=n)
    return means[comp] + spread * rng.standard_normal((n, means.shape[1]))


def _fakes(
    rng: np.random.Generator, means: np.ndarray, train: np.ndarray, m: int, kind: str
) -> np.ndarray:
    if kind == "honest":
        return _mixture(rng, means, m)
    if kind == "overdispersed":
        return _mixture(rng, means, m, spread=2.0)
    share = float(kind.split()[1])
    copies = round(share * m)
    picked = train[rng.choice(len(train), size=copies, replace=False)]
    near = picked + 0.02 * rng.standard_normal(picked.shape)
    return np.concatenate([near, _mixture(rng, means, m - copies)])


def simulate(args: argparse.Namespace) -> list[dict[str, Any]]:
    from lightning_embviz.memorization import TrainReference

    kinds = args.kinds or ["honest", *[f"copy {p}" for p in args.copy_shares], "overdispersed"]
    rows = []
    for kind in kinds:
        values: dict[str, list[float]] = {"ct_score": [], "authenticity": [], "copy_fraction": []}
        for draw in range(args.draws):
            rng = np.random.default_rng([args.seed, draw])
            means = 2.0 * rng.standard_normal((args.components, args.dim))
            train = _mixture(rng, means, args.train)
            heldout = _mixture(rng, means, args.heldout)
            fake = _fakes(rng, means, train, args.fakes, kind)
            ref = TrainReference(train, n_cells=args.cells, seed=draw)
            out = ref.compare(fake, heldout, alpha=args.alpha)
            for key in values:
                values[key].append(out[key])
        row: dict[str, Any] = {"fakes": kind}
        for key, vals in values.items():
            row[key] = (float(np.mean(vals)), float(np.std(vals)))
        rows.append(row)
        print(_sim_line(row), flush=True)
    return rows


def _sim_line(row: dict[str, Any]) -> str:
    cells = [f"{row['fakes']:<14}"]
    for key in ("ct_score", "authenticity", "copy_fraction"):
        mean, std = row[key]
        cells.append(f"{mean:8.3f} ± {std:.3f}")
    return " | ".join(cells)


# --- cost ---------------------------------------------------------------------------------


def _data(n: int, m: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((n, d), dtype=np.float32)
    fake = rng.standard_normal((m, d), dtype=np.float32)
    return train, fake


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _sharded_rank(rank: int, args: argparse.Namespace, store: str, out_dir: str) -> None:
    """One gloo rank of ``ours-sharded``: its share of the search, timed; writes JSON."""
    import torch.distributed as dist

    from lightning_embviz.engine.distributed import _Group
    from lightning_embviz.engine.memorization_distributed import ShardedSearch
    from lightning_embviz.memorization import TrainReference

    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=args.ranks)
    try:
        train, fake = _data(args.n, args.m, args.dim, args.seed)
        base = _peak_rss_mib()
        wall0 = time.perf_counter()
        ref = TrainReference(train)
        fit_s = time.perf_counter() - wall0
        queries = torch.from_numpy(fake)
        dist.barrier()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        index, _ = ShardedSearch(_Group(None)).nearest(ref, lambda: (queries, None))
        row = {
            "rank": rank,
            "fit_s": fit_s,
            "wall_s": time.perf_counter() - wall0,
            "cpu_s": time.process_time() - cpu0,
            "peak_rss_mib": _peak_rss_mib(),
            "data_mib": base,
        }
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(row, fh)
        if rank == 0:
            np.save(os.path.join(out_dir, "index.npy"), index.numpy())
    finally:
        dist.destroy_process_group()


def cost_sharded(args: argparse.Namespace) -> None:
    """``ours-sharded``: spawn the ranks, print one JSON line with each rank's cost."""
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        store = os.path.join(out_dir, "store")
        mp.spawn(_sharded_rank, args=(args, store, out_dir), nprocs=args.ranks)
        ranks = []
        for rank in range(args.ranks):
            with open(os.path.join(out_dir, f"rank{rank}.json")) as fh:
                ranks.append(json.load(fh))
        np.save(args.out, np.load(os.path.join(out_dir, "index.npy")))
    result = {
        "method": "ours-sharded",
        "n": args.n,
        "m": args.m,
        "ranks": args.ranks,
        "wall_s": max(r["wall_s"] for r in ranks),
        "cpu_s": sum(r["cpu_s"] for r in ranks),
        "per_rank": ranks,
    }
    print(json.dumps(result), flush=True)


def cost_one(args: argparse.Namespace) -> None:
    """One method in this process; prints one JSON line."""
    if args.method == "ours-sharded":
        cost_sharded(args)
        return
    torch.set_num_threads(args.threads)
    train, fake = _data(args.n, args.m, args.dim, args.seed)
    base = _peak_rss_mib()
    result: dict[str, Any] = {"method": args.method, "n": args.n, "m": args.m}
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if args.method == "ours":
        from lightning_embviz.memorization import nearest_train

        rows, _ = nearest_train(train, fake)
        index = rows.numpy()
    elif args.method == "ours-fitted":
        from lightning_embviz.engine.nearest_train import nearest_rows
        from lightning_embviz.memorization import TrainReference

        ref = TrainReference(train)
        result["fit_s"] = time.perf_counter() - wall0
        wall0, cpu0 = time.perf_counter(), time.process_time()
        rows, _ = nearest_rows(torch.from_numpy(fake), ref.train, ref.frame)
        index = rows.numpy()
    else:
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=1, algorithm="brute").fit(train)
        index = nn.kneighbors(fake, return_distance=False)[:, 0]
    result["wall_s"] = time.perf_counter() - wall0
    result["cpu_s"] = time.process_time() - cpu0
    result["peak_rss_mib"] = _peak_rss_mib()
    result["data_mib"] = base
    if args.check:
        # Exact float64 brute force on a subsample of the fakes.
        pick = np.random.default_rng(1).choice(args.m, size=min(args.m, args.check), replace=False)
        t64 = torch.from_numpy(train).double()
        best = torch.full((len(pick),), np.inf, dtype=torch.float64)
        best_i = torch.zeros(len(pick), dtype=torch.int64)
        q = torch.from_numpy(fake[pick]).double()
        for c0 in range(0, args.n, 8192):
            d = torch.cdist(q, t64[c0 : c0 + 8192], compute_mode="donot_use_mm_for_euclid_dist")
            v, i = d.min(dim=1)
            better = v < best
            best[better], best_i[better] = v[better], i[better] + c0
        result["exact_on_subsample"] = float((best_i.numpy() == index[pick]).mean())
    np.save(args.out, index)
    print(json.dumps(result), flush=True)


def cost(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    for size in args.sizes:
        n, m = (int(v) for v in size.lower().split("x"))
        indices = {}
        for method in args.methods:
            out = f"/tmp/bench_memorization_{os.getpid()}_{method}.npy"
            cmd = [
                sys.executable,
                __file__,
                "cost-one",
                "--method",
                method,
                "--n",
                str(n),
                "--m",
                str(m),
                "--dim",
                str(args.dim),
                "--threads",
                str(args.threads),
                "--check",
                str(args.check if method in ("ours", "ours-fitted") else 0),
                "--ranks",
                str(args.ranks),
                "--out",
                out,
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if proc.returncode:
                print(proc.stderr, file=sys.stderr)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            indices[method] = np.load(out)
            os.remove(out)
            rows.append(row)
            print(json.dumps(row), flush=True)
        for single in ("ours", "ours-fitted"):
            if single in indices and "ours-sharded" in indices:
                same = bool(np.array_equal(indices[single], indices["ours-sharded"]))
                print(f"{size}: ours-sharded gives the indices of {single}: {same}")
        if "sklearn" in indices:
            for method, index in indices.items():
                if method != "sklearn":
                    same = float((index == indices["sklearn"]).mean())
                    print(f"{size}: {method} agrees with sklearn on {same:.4%} of fakes")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sim = sub.add_parser("simulate")
    sim.add_argument("--draws", type=int, default=50)
    sim.add_argument("--dim", type=int, default=16)
    sim.add_argument("--components", type=int, default=10)
    sim.add_argument("--train", type=int, default=5000)
    sim.add_argument("--heldout", type=int, default=1000)
    sim.add_argument("--fakes", type=int, default=1000)
    sim.add_argument("--cells", type=int, default=20)
    sim.add_argument("--alpha", type=float, default=0.05)
    sim.add_argument("--copy-shares", type=float, nargs="*", default=[0.05, 0.1, 0.25, 0.5])
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--kinds", nargs="*", help='e.g. honest "copy 0.1" overdispersed')
    cst = sub.add_parser("cost")
    cst.add_argument("--sizes", nargs="+", default=["100000x10000"], help="NxM (train x fakes)")
    cst.add_argument("--methods", nargs="+", default=["ours", "ours-fitted", "sklearn"])
    cst.add_argument("--dim", type=int, default=512)
    cst.add_argument("--threads", type=int, default=2)
    cst.add_argument("--check", type=int, default=200, help="fakes checked against float64")
    cst.add_argument("--ranks", type=int, default=2, help="gloo ranks of ours-sharded")
    one = sub.add_parser("cost-one")
    one.add_argument("--method", required=True)
    one.add_argument("--n", type=int, required=True)
    one.add_argument("--m", type=int, required=True)
    one.add_argument("--dim", type=int, default=512)
    one.add_argument("--threads", type=int, default=2)
    one.add_argument("--check", type=int, default=0)
    one.add_argument("--seed", type=int, default=0)
    one.add_argument("--out", required=True)
    one.add_argument("--ranks", type=int, default=2)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore", UserWarning)
    if args.command == "simulate":
        print(f"{'fakes':<14} | {'ct_score':^16} | {'authenticity':^16} | {'copy_fraction':^16}")
        simulate(args)
    elif args.command == "cost":
        cost(args)
    else:
        cost_one(args)


if __name__ == "__main__":
    main()
