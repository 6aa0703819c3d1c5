"""select_samples without a Trainer: rank 0 picks, the thumbnails follow the keys."""

from __future__ import annotations

import numpy as np
import torch

from lightning_embviz.callback.buffer import EmbeddingSet
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.evaluation import RunEvaluator
from lightning_embviz.callback.galleries import CONTRAST_TILES, select_samples
from lightning_embviz.callback.outputs import make_thumbnails
from lightning_embviz.samples import missed_real_order


def _run():
    rng = np.random.default_rng(1)
    real = torch.from_numpy(rng.normal(size=(24, 3)))
    fake = torch.from_numpy(rng.normal(2.0, 1.0, size=(20, 3)))  # misses many reals
    real_keys, fake_keys = torch.arange(24) * 10, torch.arange(20) * 10 + 1
    real_images = make_thumbnails(torch.rand(24, 1, 4, 4), 4)
    fake_images = make_thumbnails(torch.rand(20, 1, 4, 4), 4)
    evaluator = RunEvaluator(MonitorConfig.from_arguments(3, views=None))
    result = evaluator(EmbeddingSet(real, real_keys), EmbeddingSet(fake, fake_keys))
    local = (real_keys, real_images, fake_keys, fake_images)
    return result, local, real_images


def test_the_selected_reals_come_with_their_own_thumbnails():
    result, local, real_images = _run()
    views, problem = select_samples(result, local, gallery_size=4, tables=True, distributed=False)
    assert problem is None and views is not None
    missed = missed_real_order(result.details)[:4]
    assert views.missed.tolist() == missed.tolist()
    shown = views.real_images
    assert shown is not None and len(shown) == len(missed)
    expected = real_images.select(result.real.keys[missed] // 10)
    np.testing.assert_array_equal(np.asarray(shown[0]), np.asarray(expected.values()[0]))
    assert CONTRAST_TILES == 8 and len(views.deepest) <= min(4, CONTRAST_TILES)


def test_no_gallery_size_fetches_no_images_and_other_ranks_get_nothing():
    result, local, _ = _run()
    views, problem = select_samples(result, local, gallery_size=0, tables=True, distributed=False)
    assert problem is None and views is not None and views.real_images is None
    assert select_samples(None, local, gallery_size=4, tables=True, distributed=False) == (
        None,
        None,
    )


def test_a_failing_selection_is_a_message_not_an_error():
    result, local, _ = _run()
    result.details = object()  # not a PRDCResult: the ordering fails
    views, problem = select_samples(result, local, gallery_size=4, tables=False, distributed=False)
    assert views is None
    assert problem is not None and problem.startswith(
        "EmbeddingMonitor: selecting the gallery samples failed; the metrics were logged"
    )
