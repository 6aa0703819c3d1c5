"""The callback's arguments, checked once: :class:`MonitorConfig`.

:meth:`MonitorConfig.from_arguments` is the only place where an ``EmbeddingMonitor`` argument
is validated; every message quotes the call (``EmbeddingMonitor(nearest_k=0)``) and says
what is expected, at construction, before any training step. The result is frozen: each
module downstream reads the value it needs from here, already normalised (``nearest_k`` as a
tuple of Python ints, ``views`` as a tuple, ``confidence`` as a float). No Lightning here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn, Optional

import numpy as np

from lightning_embviz import _arrays
from lightning_embviz.callback.embedding import check_embedder
from lightning_embviz.callback.outputs import OutputKeys

__all__ = ["MonitorConfig"]

_KEY_ARGUMENTS = (
    "real_key",
    "fake_key",
    "labels_key",
    "index_key",
    "real_images_key",
    "fake_images_key",
)


def _bad(arg: str, value: Any, expected: str, error: type[Exception] = ValueError) -> NoReturn:
    raise error(f"`EmbeddingMonitor({arg}={value!r})` is not valid. Expected {expected}.")


def _check_int(arg: str, value: Any, minimum: int, expected: str) -> int:
    try:
        return _arrays.check_int(value, arg, minimum)
    except (TypeError, ValueError) as err:  # the same rule, the call quoted
        _bad(arg, value, expected, type(err))


def _check_nearest_k(nearest_k: Any) -> tuple[int, ...]:
    if isinstance(nearest_k, np.ndarray) and nearest_k.ndim == 1:
        nearest_k = nearest_k.tolist()  # np.array([5, 10]) is a sequence of ints too
    if not isinstance(nearest_k, Sequence) or isinstance(nearest_k, str):
        return (_check_int("nearest_k", nearest_k, 1, "an int >= 1 or a sequence of ints"),)
    expected = "an int >= 1 or a sequence of different ints >= 1, e.g. (5, 10)"
    if not nearest_k:
        _bad("nearest_k", nearest_k, expected)
    try:
        ks = tuple(_arrays.check_int(k, "nearest_k", 1) for k in nearest_k)
    except (TypeError, ValueError) as err:
        _bad("nearest_k", nearest_k, expected, type(err))
    if len(set(ks)) != len(ks):
        _bad("nearest_k", nearest_k, expected)
    return ks


def _check_keys(keys: Mapping[str, Any]) -> None:
    for arg, value in keys.items():
        if not isinstance(value, str):
            _bad(arg, value, "a string naming a key of the validation outputs", TypeError)
        if not value:
            _bad(arg, value, "a non-empty string")
    if len(set(keys.values())) != len(keys):
        raise ValueError(
            "`EmbeddingMonitor(real_key=..., fake_key=..., labels_key=..., index_key=..., "
            f"real_images_key=..., fake_images_key=...)` must name different keys, got {keys}."
        )


def _check_confidence(confidence: Any) -> Optional[float]:
    if confidence is None:
        return None
    expected = "None or a level in (0, 1) such as 0.95"
    try:
        level = _arrays.check_float(confidence, "confidence")
    except TypeError:
        _bad("confidence", confidence, expected, TypeError)
    if not 0.0 < level < 1.0:
        _bad("confidence", confidence, expected)
    return level


def _check_views(views: Any) -> tuple[str, ...]:
    if views is None:
        return ()
    if isinstance(views, str):
        _bad("views", views, f"a sequence of view names, e.g. ({views!r},)", TypeError)
    if not isinstance(views, Sequence) or not all(isinstance(v, str) for v in views):
        _bad("views", views, 'None or a sequence of view names such as ("pca", "tsne")', TypeError)
    return tuple(views)


def _check_extra_metrics(names: Any) -> tuple[str, ...]:
    from lightning_embviz.callback.extras import parse_extra_metrics

    if names is None:
        return ()
    expected = 'None or a sequence of names such as ("vendi", "kd", "fd_inf", "clipped")'
    if isinstance(names, str) or not isinstance(names, Sequence):
        _bad("extra_metrics", names, expected, TypeError)
    try:
        return parse_extra_metrics(names)
    except ValueError as err:
        message = f"`EmbeddingMonitor(extra_metrics={names!r})` is not valid: {err}."
        raise ValueError(message) from err


def _check_memorization(a: dict[str, Any]) -> None:
    """``train``, ``train_images``, ``memorization_alpha``: resolved and checked in place."""
    from lightning_embviz.callback.memorization import check_train, check_train_images
    from lightning_embviz.engine.memorization import check_alpha

    try:
        a["memorization_alpha"] = check_alpha(a["memorization_alpha"])
    except (TypeError, ValueError) as err:
        expected = "a quantile level in (0, 1) such as 0.05"
        _bad("memorization_alpha", a["memorization_alpha"], expected, type(err))
    from lightning_embviz.callback.train_embedding import check_images_to_embed, embeds_train

    if embeds_train(a["train"], a["train_images"], a["embedder"]):  # embedded once, later
        a["train_images"] = check_images_to_embed(a["train_images"], a["embedder"])
        return
    a["train"] = check_train(a["train"])
    a["train_images"] = check_train_images(a["train_images"], a["train"])


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    """The checked arguments of one :class:`~lightning_embviz.EmbeddingMonitor`.

    Build it with :meth:`from_arguments` (which checks); the fields mean what the callback's
    arguments of the same name mean, except ``nearest_ks`` (every k, the first one giving
    the usual keys) and ``views`` (a tuple, empty for none).

    Example:
        >>> config = MonitorConfig.from_arguments(nearest_k=(5, 10), views=None)
        >>> config.nearest_k, config.nearest_ks, config.views
        (5, (5, 10), ())
        >>> MonitorConfig.from_arguments(nearest_k=0)
        Traceback (most recent call last):
        ...
        ValueError: `EmbeddingMonitor(nearest_k=0)` is not valid. Expected an int >= 1 or a sequence of ints.
    """  # noqa: E501

    nearest_ks: tuple[int, ...] = (5,)
    real_key: str = "real"
    fake_key: str = "fake"
    labels_key: str = "labels"
    index_key: str = "index"
    embed: Optional[Callable[[Any, Any], Mapping[str, Any]]] = None
    prefix: str = "embviz/"
    every_n_epochs: int = 1
    max_samples: Optional[int] = 10000
    views: tuple[str, ...] = ("pca", "tsne")
    view_max_samples: Optional[int] = None
    background: bool = True
    log_projector: bool = False
    keep_on_device: bool = False
    seed: int = 0
    real_images_key: str = "real_images"
    fake_images_key: str = "fake_images"
    gallery_size: int = 32
    thumbnail_size: int = 32
    log_samples: bool = True
    confidence: Optional[float] = None
    sample_rate: Optional[int] = None
    real_audio_key: str = "real_audio"
    fake_audio_key: str = "fake_audio"
    groups_key: str = "groups"
    audio_keep_rate: int = 8000
    audio_keep_seconds: float = 2.0
    embedder: Optional[Any] = None  # an nn.Module (see callback/embedding.py)
    embed_batch_size: int = 64
    extra_metrics: tuple[str, ...] = ()
    # A fitted TrainReference and the training images (see callback/memorization.py).
    train: Optional[Any] = dataclasses.field(default=None, compare=False)
    train_images: Optional[Any] = dataclasses.field(default=None, compare=False)
    memorization_alpha: float = 0.05

    @property
    def nearest_k(self) -> int:
        """The first k: the one behind the usual keys, the figures and the intervals."""
        return self.nearest_ks[0]

    @property
    def keys(self) -> OutputKeys:
        """The names of the keys read from the validation outputs."""
        return OutputKeys(
            self.real_key,
            self.fake_key,
            self.labels_key,
            self.index_key,
            self.real_images_key,
            self.fake_images_key,
        )

    def view_builder(self) -> Any:
        """A new :class:`~lightning_embviz.figures.views.ViewBuilder` for these views."""
        from lightning_embviz.figures.views import ViewBuilder

        kwargs: dict[str, Any] = {"methods": self.views, "seed": self.seed}
        if self.view_max_samples is not None:
            kwargs["max_samples"] = self.view_max_samples
        return ViewBuilder(**kwargs)

    @classmethod
    def from_arguments(cls, nearest_k: Any = 5, **arguments: Any) -> MonitorConfig:
        """Check ``EmbeddingMonitor``'s arguments (the same names).

        Args:
            nearest_k: One k or several (checked into :attr:`nearest_ks`).
            **arguments: Any other field by name; those left out keep the field's default
                (the callback's default).

        Raises:
            TypeError: If an argument has the wrong type (or is no argument of the callback).
            ValueError: If an argument has a bad value (``nearest_k=0``, an unknown view).
            ModuleNotFoundError: If a view needs a package that is not installed.
        """
        a: dict[str, Any] = {
            f.name: f.default for f in dataclasses.fields(cls) if f.name != "nearest_ks"
        }
        unknown = sorted(set(arguments) - set(a))
        if unknown:
            raise TypeError(f"EmbeddingMonitor got unexpected keyword arguments {unknown}.")
        a.update(arguments)
        ks = _check_nearest_k(nearest_k)
        _check_keys({arg: a[arg] for arg in _KEY_ARGUMENTS})
        if a["embed"] is not None and not callable(a["embed"]):
            expected = "None or a callable `embed(pl_module, batch) -> dict`"
            _bad("embed", a["embed"], expected, TypeError)
        if not isinstance(a["prefix"], str):
            _bad("prefix", a["prefix"], 'a string such as "embviz/"', TypeError)
        a["every_n_epochs"] = _check_int("every_n_epochs", a["every_n_epochs"], 1, "an int >= 1")
        if a["max_samples"] is not None:
            expected = f"None or an int > nearest_k={max(ks)}"
            a["max_samples"] = _check_int("max_samples", a["max_samples"], max(ks) + 1, expected)
        if a["view_max_samples"] is not None:
            a["view_max_samples"] = _check_int(
                "view_max_samples", a["view_max_samples"], 10, "None or an int >= 10"
            )
        expected = "an int >= 0 (0: no galleries)"
        a["gallery_size"] = _check_int("gallery_size", a["gallery_size"], 0, expected)
        a["confidence"] = _check_confidence(a["confidence"])
        a["embedder"] = check_embedder(a["embedder"])
        expected = "an int >= 1 (rows per embedder forward pass)"
        a["embed_batch_size"] = _check_int("embed_batch_size", a["embed_batch_size"], 1, expected)
        expected = "an int >= 4 (pixels)"
        a["thumbnail_size"] = _check_int("thumbnail_size", a["thumbnail_size"], 4, expected)
        for arg in ("log_samples", "background", "log_projector", "keep_on_device"):
            if not isinstance(a[arg], bool):
                _bad(arg, a[arg], "True or False", TypeError)
        a["seed"] = _check_int("seed", a["seed"], 0, "an int >= 0")
        views = a["views"]
        a["views"] = _check_views(views)
        a["extra_metrics"] = _check_extra_metrics(a["extra_metrics"])
        from lightning_embviz.callback.audio import check_audio_arguments

        check_audio_arguments(a)
        _check_memorization(a)
        config = cls(nearest_ks=ks, **a)
        if config.views:
            # Build one builder now, so that a bad view name or a missing optional
            # dependency fails at construction, not after the first epoch.
            try:
                config.view_builder()
            except ValueError as err:
                message = f"`EmbeddingMonitor(views={views!r})` is not valid: {err}"
                raise ValueError(message) from err
        return config
