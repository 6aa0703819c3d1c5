"""The image galleries of ``embviz report``: the missed reals and the outlier fakes.

The rows are :mod:`lightning_embviz.samples`' orders cut to ``--gallery-size`` (and the
callback's count of contrast tiles); their images are read from the files on demand
(:class:`~lightning_embviz.cli.files.ImageFile`); the figures are
:mod:`lightning_embviz.plotting`'s gallery builders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

from lightning_embviz.cli.files import ImageFile

if TYPE_CHECKING:
    import numpy as np

__all__ = ["galleries"]


def galleries(
    details: Any,
    real_images: Optional[ImageFile],
    fake_images: Optional[ImageFile],
    real_labels: Optional[np.ndarray],
    fake_labels: Optional[np.ndarray],
    size: int,
    nearest_k: int,
) -> dict[str, Any]:
    """``missed_real`` and ``outlier_fake`` figures for the image files that were given.

    Args:
        details: the :class:`~lightning_embviz.PRDCResult` of REAL against FAKE (CPU).
        real_images: one image per real row, or None (no ``missed_real``).
        fake_images: one image per fake row, or None (no ``outlier_fake``).
        real_labels: (N,) labels of the reals, or None.
        fake_labels: (M,) labels of the fakes, or None.
        size: the most tiles per gallery (``--gallery-size``).
        nearest_k: k, for the titles.

    Returns:
        The figures by key (empty without image files).
    """
    from lightning_embviz.callback.galleries import CONTRAST_TILES
    from lightning_embviz.plotting import missed_real_figure, outlier_fake_figure
    from lightning_embviz.samples import (
        deepest_fake_order,
        missed_per_class,
        missed_real_order,
        outlier_fake_order,
    )

    figures: dict[str, Any] = {}
    if real_images is not None:
        order = missed_real_order(details).numpy()
        shown = order[:size]
        figures["missed_real"] = missed_real_figure(
            real_images.take(shown),
            details.real_nearest_fake_ratio.cpu().numpy()[shown],
            num_missed=len(order),
            num_real=len(details.real_covered),
            indices=shown,
            labels=real_labels[shown] if real_labels is not None else None,
            class_counts=missed_per_class(details, real_labels)
            if real_labels is not None
            else None,
            nearest_k=nearest_k,
        )
    if fake_images is not None:
        order = outlier_fake_order(details).numpy()
        shown = order[:size]
        deepest = deepest_fake_order(details).numpy()[: min(size, CONTRAST_TILES)]
        figures["outlier_fake"] = outlier_fake_figure(
            fake_images.take(shown),
            details.fake_nearest_ball_ratio.cpu().numpy()[shown],
            num_outliers=len(order),
            num_fake=len(details.fake_ball_count),
            indices=shown,
            labels=fake_labels[shown] if fake_labels is not None else None,
            deepest_images=fake_images.take(deepest),
            deepest_counts=details.fake_ball_count.cpu().numpy()[deepest],
            deepest_indices=deepest,
            deepest_labels=fake_labels[deepest] if fake_labels is not None else None,
            nearest_k=nearest_k,
        )
    return figures
