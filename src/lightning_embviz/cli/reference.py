"""``embviz reference REAL -k K[,K...] -o FILE``: fit the real set once and save it.

Steps: read REAL (embeddings, or a saved reference to refit from the reals it holds) and
check it (every rank), fit the radii for every k (the ranks share the work), then on
rank 0 alone write FILE atomically and print one line.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from lightning_embviz.cli.console import Progress, out
from lightning_embviz.cli.measure import check_k
from lightning_embviz.cli.options import ReferenceOptions
from lightning_embviz.cli.ranks import Ranks, agreed

__all__ = ["run_reference"]


def run_reference(options: ReferenceOptions, progress: Progress, ranks: Ranks) -> int:
    """Run ``embviz reference``; the directory of ``options.out`` was checked. Returns 0."""
    from lightning_embviz.engine.distributed import fit_reference_distributed

    real = agreed(ranks, lambda: _read(options, progress))
    listed = ", ".join(str(k) for k in options.nearest_k)
    progress(f"fitting the k-NN radii (k = {listed}) of {len(real)} real x D={real.shape[1]}")
    start = time.perf_counter()
    # One process: RealReference(real, ks).
    reference = fit_reference_distributed(real, options.nearest_k)
    seconds = time.perf_counter() - start
    if not ranks.lead:
        return 0
    _save(reference, options.out)
    out(
        f"wrote {options.out}: RealReference of N={reference.num_real} real, "
        f"D={reference.width} ({str(reference.dtype).removeprefix('torch.')}), k = {listed}; "
        f"{_file_size(options.out.stat().st_size)}, fitted in {seconds:.2f} s"
    )
    return 0


def _read(options: ReferenceOptions, progress: Progress) -> Any:
    """REAL's embeddings: from an embeddings file, or the stored reals of a saved reference."""
    from lightning_embviz._io import is_reference_file, load_embeddings, load_reference

    progress(f"reading {options.real}")
    real: Any
    if is_reference_file(options.real):
        real = load_reference(options.real).real  # refit: the stored real set, bit for bit
    else:
        real = load_embeddings(options.real)
    check_k(max(options.nearest_k), {options.real: len(real)})
    return real


def _save(reference: Any, out_file: Path) -> None:
    """Write ``reference`` to ``out_file`` under a temporary name first, then rename it.

    A failed or interrupted run leaves any previous file (possibly REAL itself, when
    refitting) intact.
    """
    temporary = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp{out_file.suffix}")
    try:
        reference.save(temporary)
        os.replace(temporary, out_file)
    finally:
        temporary.unlink(missing_ok=True)


def _file_size(size: int) -> str:
    if size < 1 << 20:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1 << 20):.1f} MiB"
