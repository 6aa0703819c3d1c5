"""Which samples a run shows: pick them on rank 0, fetch their thumbnails from every rank.

After the metrics, rank 0 orders the missed reals, the outlier fakes and the deepest fakes
(:mod:`lightning_embviz.samples`), broadcasts the keys of the few that a gallery shows, and
every rank contributes the thumbnails it holds for those keys
(:func:`~lightning_embviz.callback.buffer.gather_selected_images`): images of all samples are never
gathered. No Lightning here; every rank must call :func:`select_samples` (collectives).
"""

from __future__ import annotations

import traceback
from typing import Any, Optional

import torch

from lightning_embviz.callback.buffer import collective_device, gather_selected_images
from lightning_embviz.callback.evaluation import Evaluation, details_on_cpu
from lightning_embviz.callback.sampler import shown_index
from lightning_embviz.figures.galleries import gallery_columns
from lightning_embviz.figures.views import SampleViews

__all__ = ["CONTRAST_TILES", "select_samples"]

# Fakes deepest in the real manifold shown under the outliers, for contrast.
CONTRAST_TILES = 8


def select_samples(
    result: Optional[Evaluation],
    local: tuple[Any, ...],
    *,
    gallery_size: int,
    tables: bool,
    distributed: bool,
    images_dropped: bool = False,
) -> tuple[Optional[SampleViews], Optional[str]]:
    """The run's galleries and tables, built on rank 0 (None elsewhere), and a problem to warn.

    Args:
        result: Rank 0's evaluation (None on other ranks).
        local: This rank's ``(real_keys, real_thumbnails, fake_keys, fake_thumbnails)``.
        gallery_size: Tiles per gallery (0: no images are fetched).
        tables: Also build the per-sample tables.
        distributed: Whether the ranks take part (collectives).
        images_dropped: This rank dropped its images for this run (inconsistent batches,
            :class:`~lightning_embviz.callback.outputs.GalleryImages`): if any rank did, no rank
            shows images, so the galleries are all or nothing.

    Returns:
        ``(views or None, message or None)``; a failure in the selection never raises: it
        comes back as the message, and the collectives still run on every rank.
    """
    from lightning_embviz import samples

    size = gallery_size
    contrast = min(size, CONTRAST_TILES)
    wanted = torch.full((2 * size + contrast,), -1, dtype=torch.int64)
    rows = None
    problem = None
    if result is not None and result.details is not None:
        assert result.real is not None and result.fake is not None
        try:
            d = details_on_cpu(result.details)
            missed = samples.missed_real_order(d)[:size]
            outliers = samples.outlier_fake_order(d)[:size]
            deepest = samples.deepest_fake_order(d)[:contrast] if len(outliers) else missed[:0]
            real_keys, fake_keys = result.real.keys.cpu(), result.fake.keys.cpu()
            picked = [real_keys[missed], fake_keys[outliers], fake_keys[deepest]]
            for part, start in zip(picked, (0, size, 2 * size)):
                wanted[start : start + len(part)] = part
            rows = (d, missed, outliers, deepest)
        except Exception as err:
            wanted.fill_(-1)
            detail = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            problem = (
                "EmbeddingMonitor: selecting the gallery samples failed; the metrics were "
                f"logged, the galleries and per-sample tables are missing.\n{detail}"
            )
    dropped = images_dropped
    if distributed and size:
        device = collective_device(torch.device("cpu"))
        shared = wanted.to(device)
        torch.distributed.broadcast(shared, src=0)
        wanted = shared.cpu()
        flag = torch.tensor([int(images_dropped)], dtype=torch.int64, device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        dropped = bool(flag.item())
        if dropped and not images_dropped and problem is None:
            problem = (
                "EmbeddingMonitor: another rank dropped its images for this validation run "
                "(inconsistent batches); the galleries of this run are missing, the metrics "
                "were logged."
            )
    real_keys_local, real_images, fake_keys_local, fake_images = local
    real_thumbs = fake_thumbs = None
    if size and not dropped:
        want_real = wanted[:size][wanted[:size] >= 0]
        want_fake = wanted[size:][wanted[size:] >= 0]
        try:
            real_thumbs = gather_selected_images(real_images, real_keys_local, want_real)
            fake_thumbs = gather_selected_images(fake_images, fake_keys_local, want_fake)
        except ValueError as err:  # ranks with thumbnails of different sizes: every rank
            real_thumbs = fake_thumbs = None  # raises here, before the images move
            problem = problem or (
                f"EmbeddingMonitor: {err} The galleries of this run are missing; the metrics "
                "were logged. Return images of one size on every rank."
            )
    if rows is None or result is None or result.real is None or result.fake is None:
        return None, problem
    d, missed, outliers, deepest = rows
    views = SampleViews(
        d,
        real_index=shown_index(result.real.keys.cpu()),
        fake_index=shown_index(result.fake.keys.cpu()),
        real_labels=None if result.real.labels is None else result.real.labels.cpu(),
        fake_labels=None if result.fake.labels is None else result.fake.labels.cpu(),
        missed=missed,
        outliers=outliers,
        deepest=deepest,
        real_images=None if real_thumbs is None else real_thumbs.values(),
        fake_images=None if fake_thumbs is None else fake_thumbs.values(),
        tables=tables,
        columns=gallery_columns(size, contrast) if size else None,
    )
    return views, problem
