"""MonitorConfig: every argument checked at construction, the same messages, frozen."""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest

from lightning_embviz.callback.config import MonitorConfig


def test_defaults_and_frozen():
    config = MonitorConfig.from_arguments()
    assert config == MonitorConfig()
    assert config.nearest_k == 5 and config.nearest_ks == (5,)
    assert config.keys.real == "real" and config.keys.fake_images == "fake_images"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 3  # type: ignore[misc]


def test_the_callback_and_the_configuration_take_the_same_arguments():
    from lightning_embviz import EmbeddingMonitor

    parameters = list(inspect.signature(EmbeddingMonitor.__init__).parameters.values())[1:]
    defaults = {p.name: p.default for p in parameters}
    fields = {f.name: f.default for f in dataclasses.fields(MonitorConfig)}
    assert defaults.pop("nearest_k") == 5 and fields.pop("nearest_ks") == (5,)
    assert defaults == fields  # same names and defaults, so `locals()` can be passed on
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['nearest_ks'\]"):
        MonitorConfig.from_arguments(nearest_ks=(5,))
    made = EmbeddingMonitor(nearest_k=(3, 7), views=None, prefix="x/", seed=2)
    assert made.config == MonitorConfig.from_arguments((3, 7), views=None, prefix="x/", seed=2)
    assert made.nearest_ks == (3, 7) and made.nearest_k == 3 and made.views == ()
    assert made.prefix == "x/" and made.keys == made.config.keys


def test_values_are_normalised():
    config = MonitorConfig.from_arguments(
        np.array([3, 5]), confidence=np.float32(0.9), seed=np.uint8(1), views=["pca"]
    )
    assert config.nearest_ks == (3, 5) and all(type(k) is int for k in config.nearest_ks)
    assert config.confidence == 0.9 and type(config.confidence) is float
    assert type(config.seed) is int and config.views == ("pca",)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"nearest_k": 0}, ValueError, r"`EmbeddingMonitor\(nearest_k=0\)` is not valid"),
        ({"nearest_k": 2.5}, TypeError, r"Expected an int >= 1 or a sequence of ints\."),
        ({"nearest_k": ()}, ValueError, r"sequence of different ints >= 1, e\.g\. \(5, 10\)"),
        ({"nearest_k": (5, 5)}, ValueError, r"nearest_k=\(5, 5\)\)` is not valid"),
        ({"nearest_k": (5, 0)}, ValueError, r"nearest_k=\(5, 0\)\)` is not valid"),
        ({"real_key": 1}, TypeError, r"real_key=1\)` is not valid. Expected a string naming"),
        ({"index_key": ""}, ValueError, r"index_key=''\)` is not valid. Expected a non-empty"),
        ({"fake_key": "real"}, ValueError, r"must name different keys, got \{'real_key'"),
        ({"embed": 3}, TypeError, r"embed=3\)` is not valid. Expected None or a callable"),
        ({"prefix": 1}, TypeError, r"prefix=1\)` is not valid"),
        ({"every_n_epochs": 0}, ValueError, r"every_n_epochs=0\)` is not valid"),
        ({"max_samples": 5}, ValueError, r"Expected None or an int > nearest_k=5\."),
        ({"view_max_samples": 9}, ValueError, r"Expected None or an int >= 10\."),
        ({"gallery_size": -1}, ValueError, r"Expected an int >= 0 \(0: no galleries\)\."),
        ({"confidence": 1.5}, ValueError, r"confidence=1\.5\)` is not valid"),
        ({"confidence": "0.9"}, TypeError, r"Expected None or a level in \(0, 1\)"),
        ({"thumbnail_size": 3}, ValueError, r"Expected an int >= 4 \(pixels\)\."),
        ({"background": 1}, TypeError, r"background=1\)` is not valid. Expected True or False"),
        ({"seed": -1}, ValueError, r"seed=-1\)` is not valid. Expected an int >= 0\."),
        ({"views": "pca"}, TypeError, r"Expected a sequence of view names, e\.g\. \('pca',\)"),
        ({"views": ["pca", 1]}, TypeError, r"None or a sequence of view names such as"),
        ({"views": ("nope",)}, ValueError, r"EmbeddingMonitor\(views=\('nope',\)\)` is not valid:"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        MonitorConfig.from_arguments(**kwargs)


def test_the_callback_raises_the_configurations_errors():
    from lightning_embviz import EmbeddingMonitor

    with pytest.raises(ValueError, match=r"`EmbeddingMonitor\(nearest_k=\(5, 5\)\)` is not valid"):
        EmbeddingMonitor(nearest_k=(5, 5))


def test_view_builder_follows_the_configuration():
    config = MonitorConfig.from_arguments(views=("pca",), view_max_samples=20, seed=3)
    builder = config.view_builder()
    assert builder.methods == ("pca",) and builder.max_samples == 20 and builder.seed == 3
