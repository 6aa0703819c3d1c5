"""PRDC with the distance work shared by every rank (:mod:`lightning_embviz.engine.distributed`).

This name is the engine module itself (an alias in ``sys.modules``), so that
``import lightning_embviz.distributed`` and ``from lightning_embviz import distributed`` give
the same module object as before the move, attributes and all.
"""

import sys

from lightning_embviz.engine import distributed as _engine_distributed

sys.modules[__name__] = _engine_distributed
