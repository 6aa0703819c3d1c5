"""The Lightning side: :class:`EmbeddingMonitor` and the rooms it routes data to.

- :mod:`~lightning_embviz.callback.monitor`: the callback, hooks and state only;
- :mod:`~lightning_embviz.callback.config`: the arguments, checked into a frozen
  :class:`~lightning_embviz.callback.config.MonitorConfig`;
- :mod:`~lightning_embviz.callback.outputs`: what ``validation_step`` returns (the contract);
- :mod:`~lightning_embviz.callback.sampler`: each row's global sample index;
- :mod:`~lightning_embviz.callback.collector`: one dataloader's run, numbered and buffered;
- :mod:`~lightning_embviz.callback.buffer`: the bounded uniform subsample, gathering ranks;
- :mod:`~lightning_embviz.callback.evaluation`: one run's scalars and figures' inputs (the
  seam where metrics are added);
- :mod:`~lightning_embviz.callback.extras`: the optional metrics (``extra_metrics``);
- :mod:`~lightning_embviz.callback.embedding`: ``embedder=``, raw images or audio embedded;
- :mod:`~lightning_embviz.callback.memorization` and
  :mod:`~lightning_embviz.callback.train_embedding`: ``train=`` / ``train_images=``;
- :mod:`~lightning_embviz.callback.galleries`: which samples the galleries show;
- :mod:`~lightning_embviz.callback.audio`: audio clips kept per row, the shown ones logged;
- :mod:`~lightning_embviz.callback.groups`: group ids (integers or strings) and the
  per-group table;
- :mod:`~lightning_embviz.callback.worker`: the figures, built off the training thread;
- :mod:`~lightning_embviz.callback.lightning`: the Trainer helpers (both namespaces).

A validation run's path: ``on_validation_batch_end`` -> ``outputs.parse_outputs`` ->
``collector.RunCollector.add`` (``sampler.RowKeys``, ``buffer.EmbeddingBuffer``);
``on_validation_epoch_end`` -> ``RunCollector.sets`` (gathered under DDP) ->
``evaluation.RunEvaluator.run`` (scalars, broadcast) -> ``pl_module.log`` ->
``galleries.select_samples`` -> ``worker.MonitorFigures.submit`` -> figures logged by
``MonitorFigures.log_finished`` from a later hook.

Only :mod:`~lightning_embviz.callback.monitor` and :mod:`~lightning_embviz.callback.lightning`
import Lightning; the callback is loaded when first asked for, so that importing a room (or
this package) does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lightning_embviz.callback.monitor import METRIC_NAMES, EmbeddingMonitor

__all__ = ["METRIC_NAMES", "EmbeddingMonitor"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lightning_embviz.callback import monitor

        return getattr(monitor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
