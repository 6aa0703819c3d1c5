"""Embedders: the FID Inception against torch-fidelity's network on one weights file, and
the transformers-backed ones against the manual ``processor + model`` pipeline.

No pretrained weights can be downloaded in CI: Inception runs on a random weights file with
the standard keys, and the transformers models are tiny random ones written with
``save_pretrained`` (with their own processor) and loaded back through the same
``from_pretrained`` path a hub id takes. Checks with real weights are marked ``pretrained``
and run only with ``pytest -m pretrained`` and a network.
"""

from __future__ import annotations

import builtins
import functools
import importlib.util
import socket
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_embviz import embedders
from lightning_embviz.embedders.base import as_image_batch, as_waveform_batch
from lightning_embviz.embedders.inception import FIDInceptionV3, resize_bilinear_tf1

try:
    import transformers
except ModuleNotFoundError:  # without the [hf] extra, only those tests skip
    transformers = None
needs_hf = pytest.mark.skipif(
    transformers is None, reason="needs transformers: pip install lightning-embviz[hf]"
)


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=2)
def _random_inception_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with the standard keys, scaled so activations stay O(1) to the end."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    with torch.device("meta"):
        shapes = FIDInceptionV3().state_dict()
    for key, value in shapes.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):
            fan_in = value[0].numel()
            state[key] = torch.randn(value.shape, generator=generator) * (2.0 / fan_in) ** 0.5
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        elif key.endswith(("bn.bias", "running_mean")):
            state[key] = torch.randn(value.shape, generator=generator) * 0.1
        else:
            state[key] = torch.randn(value.shape, generator=generator) * 0.01
    return state


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fid") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(_random_inception_state(), path)
    return path


@pytest.fixture(scope="module")
def inception_net(inception_weights: Path) -> FIDInceptionV3:
    return embedders.inception(inception_weights)


def _fidelity_module(name: str) -> Any:
    """Import a torch-fidelity module file without the package ``__init__`` (which needs
    torchvision): a stand-in package object with the real ``__path__``; test-only reference
    installed with ``pip install --no-deps torch-fidelity``."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torch-fidelity not installed (pip install --no-deps torch-fidelity)")
    saved = {k: v for k, v in sys.modules.items() if k.split(".")[0] == "torch_fidelity"}
    stub = types.ModuleType("torch_fidelity")
    stub.__path__ = list(spec.submodule_search_locations)
    sys.modules["torch_fidelity"] = stub
    try:
        return importlib.import_module(f"torch_fidelity.{name}")
    finally:
        for key in [k for k in sys.modules if k.split(".")[0] == "torch_fidelity"]:
            del sys.modules[key]
        sys.modules.update(saved)


def _uint8_images(count: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, height, width), generator=generator, dtype=torch.uint8)


def _pil(images: torch.Tensor) -> list[Image.Image]:
    return [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]


# --------------------------------------------------------------------------- inception


@pytest.fixture(scope="module")
def fidelity_inception(inception_weights: Path) -> Any:
    reference_module = _fidelity_module("feature_extractor_inceptionv3")
    # The reference loads the file with load_state_dict(strict=True).
    return reference_module.FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(inception_weights)
    )


def test_inception_state_dict_is_torch_fidelitys(
    inception_net: FIDInceptionV3, fidelity_inception: Any
) -> None:
    ours = inception_net.state_dict()
    assert set(ours) == set(fidelity_inception.state_dict())
    for key, value in fidelity_inception.state_dict().items():
        assert ours[key].shape == value.shape, key
    assert inception_net.dim == 2048 and inception_net.modality == "image"
    assert inception_net.sample_rate is None
    assert not inception_net.training
    assert not any(p.requires_grad for p in inception_net.parameters())


@pytest.mark.parametrize(
    ("height", "width"), [(7, 9), (32, 32), (64, 48), (299, 299), (300, 512), (1024, 17)]
)
def test_resize_matches_tensorflow1_reference(height: int, width: int) -> None:
    interpolate = _fidelity_module("interpolate_compat_tensorflow")
    images = _uint8_images(2, height, width, seed=height).to(torch.float32)
    expected = interpolate.interpolate_bilinear_2d_like_tensorflow1x(
        images, size=(299, 299), align_corners=False
    )
    torch.testing.assert_close(resize_bilinear_tf1(images, (299, 299)), expected, rtol=0, atol=0)


def test_resize_is_not_pytorchs_half_pixel_bilinear() -> None:
    images = _uint8_images(1, 32, 32).to(torch.float32)
    ours = resize_bilinear_tf1(images, (299, 299))
    half_pixel = torch.nn.functional.interpolate(
        images, size=(299, 299), mode="bilinear", align_corners=False
    )
    assert (ours - half_pixel).abs().max() > 1.0
    # TF1: output pixel i samples input i * 32 / 299; pixel 0 is input pixel 0 exactly.
    torch.testing.assert_close(ours[..., 0, 0], images[..., 0, 0])


@pytest.mark.parametrize(("count", "height", "width"), [(2, 32, 32), (1, 80, 64), (1, 299, 299)])
def test_inception_matches_torch_fidelity(
    inception_net: FIDInceptionV3, fidelity_inception: Any, count: int, height: int, width: int
) -> None:
    images = _uint8_images(count, height, width, seed=width)
    with torch.no_grad():
        (expected,) = fidelity_inception(images)
        ours = inception_net(images)
    assert ours.shape == (count, 2048) and ours.dtype == torch.float32
    assert expected.abs().max() > 0.1  # the random weights keep activations alive
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_inception_float_grayscale_and_layout(inception_net: FIDInceptionV3) -> None:
    gray = _uint8_images(2, 24, 24)[:, :1]
    from_uint8 = inception_net.preprocess(gray.expand(-1, 3, -1, -1))
    from_float = inception_net.preprocess(gray.to(torch.float64) / 255.0)  # (B, 1, H, W)
    from_3d = inception_net.preprocess(gray[:, 0].numpy())  # (B, H, W) NumPy uint8
    assert from_uint8.shape == (2, 3, 299, 299)
    torch.testing.assert_close(from_float, from_uint8, rtol=0, atol=1e-6)
    torch.testing.assert_close(from_3d, from_uint8, rtol=0, atol=0)
    # (x - 128) / 128 of the resized values: the TF graph's normalization.
    resized = resize_bilinear_tf1(gray.expand(-1, 3, -1, -1).to(torch.float32), (299, 299))
    torch.testing.assert_close(from_uint8, (resized - 128) / 128, rtol=0, atol=0)


def test_inception_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        embedders.inception(tmp_path / "missing.pth")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, wrong)
    with pytest.raises(ValueError, match="not an FID Inception-v3 weights file: 471 missing"):
        embedders.inception(wrong)
    not_a_dict = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), not_a_dict)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        embedders.inception(not_a_dict)


def test_inception_default_downloads_the_standard_file(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_download(url: str, **options: Any) -> dict[str, torch.Tensor]:
        calls.append((url, options))
        return _random_inception_state(seed=1)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    net = embedders.inception()
    ((url, options),) = calls
    assert url.endswith("/pt_inception-2015-12-05-6726825d.pth")
    assert options["check_hash"] is True
    torch.testing.assert_close(net.fc.bias, _random_inception_state(seed=1)["fc.bias"])


# --------------------------------------------------------------------------- input checks


def test_image_layout_errors() -> None:
    with pytest.raises(ValueError, match=r"channels-last: pass images.permute\(0, 3, 1, 2\)"):
        as_image_batch(torch.zeros(2, 16, 16, 3, dtype=torch.uint8), "x()")
    with pytest.raises(ValueError, match="Drop the alpha channel"):
        as_image_batch(torch.zeros(2, 4, 16, 16, dtype=torch.uint8), "x()")
    with pytest.raises(ValueError, match=r"got shape \(16, 16\)"):
        as_image_batch(torch.zeros(16, 16, dtype=torch.uint8), "x()")
    with pytest.raises(ValueError, match="empty batch"):
        as_image_batch(torch.zeros(0, 3, 16, 16, dtype=torch.uint8), "x()")
    with pytest.raises(ValueError, match=r"floating images in \[0, 1\], got values in \[-1"):
        as_image_batch(torch.full((1, 3, 4, 4), -1.0), "x()")
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_image_batch(torch.full((1, 3, 4, 4), float("nan")), "x()")
    with pytest.raises(TypeError, match=r"got dtype torch\.int64"):
        as_image_batch(torch.zeros(1, 3, 4, 4, dtype=torch.int64), "x()")
    with pytest.raises(TypeError, match=r"expects a torch\.Tensor or a NumPy array, got list"):
        as_image_batch([[0]], "x()")


def test_waveform_errors_and_mono_mixdown() -> None:
    with pytest.raises(ValueError, match="expects audio at 16000 Hz, got 48000 Hz"):
        as_waveform_batch(torch.zeros(1, 100), "x()", 16000, sample_rate=48000)
    with pytest.raises(ValueError, match=r"\(B, T\) or \(B, C, T\), got shape \(100,\)"):
        as_waveform_batch(torch.zeros(100), "x()", 16000)
    with pytest.raises(TypeError, match="x / 32768"):
        as_waveform_batch(torch.zeros(1, 100, dtype=torch.int16), "x()", 16000)
    with pytest.raises(ValueError, match="empty batch"):
        as_waveform_batch(torch.zeros(2, 0), "x()", 16000)
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_waveform_batch(torch.full((1, 5), float("inf")), "x()", 16000)
    stereo = torch.stack([torch.ones(2, 5), 3 * torch.ones(2, 5)], dim=1)  # (B, C, T)
    torch.testing.assert_close(as_waveform_batch(stereo, "x()", 16000), 2 * torch.ones(2, 5))


def test_missing_transformers_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_transformers(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "transformers" or name.startswith("transformers."):
            raise ModuleNotFoundError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_transformers)
    with pytest.raises(ModuleNotFoundError, match=r"pip install lightning-embviz\[hf\]"):
        embedders.dinov2("facebook/dinov2-small")


# --------------------------------------------------------------------------- transformers


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _save(folder: Path, model: Any, processor: Any) -> Path:
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=4,
        image_size=32,
    )
    processor = transformers.BitImageProcessor(
        size={"shortest_edge": 36},
        crop_size={"height": 32, "width": 32},
        do_center_crop=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )
    folder = tmp_path_factory.mktemp("dinov2")
    return _save(folder, transformers.Dinov2Model(config), processor)


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(1)
    config = transformers.CLIPConfig(
        text_config={
            "vocab_size": 99,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 16,
        },
        vision_config={
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=24,
    )
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    folder = tmp_path_factory.mktemp("clip")
    return _save(folder, transformers.CLIPModel(config), processor)


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(2)
    config = transformers.ClapConfig(
        text_config={
            "vocab_size": 99,
            "hidden_size": 16,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 32,
            "max_position_embeddings": 40,
        },
        audio_config={
            "depths": [1, 1],
            "num_attention_heads": [1, 2],
            "patch_embeds_hidden_size": 8,
            "hidden_size": 16,
            "window_size": 4,
            "spec_size": 64,
            "num_mel_bins": 16,
            "enable_fusion": False,
        },
        projection_dim=12,
    )
    extractor = transformers.ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=8000,
        hop_length=80,
        max_length_s=1,
        fft_window_size=256,
        frequency_max=4000,
        truncation="rand_trunc",  # what the unfused LAION checkpoints use
    )
    folder = tmp_path_factory.mktemp("clap")
    return _save(folder, transformers.ClapModel(config), extractor)


_SPEECH = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "conv_dim": (8, 8),
    "conv_stride": (5, 4),
    "conv_kernel": (10, 4),
    "num_conv_pos_embeddings": 8,
    "num_conv_pos_embedding_groups": 2,
    "vocab_size": 10,
}


@pytest.fixture(scope="module")
def speech_folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(3)
    extractor = transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True)
    return {
        "wav2vec2": _save(
            tmp_path_factory.mktemp("wav2vec2"),
            transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**_SPEECH)),
            extractor,
        ),
        "hubert": _save(
            tmp_path_factory.mktemp("hubert"),
            transformers.HubertModel(transformers.HubertConfig(**_SPEECH)),
            extractor,
        ),
    }


def _manual_image_pipeline(folder: Path) -> tuple[Any, Any]:
    processor = transformers.AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    return processor, model


def _features(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@needs_hf
def test_dinov2_equals_manual_pipeline(dinov2_folder: Path) -> None:
    net = embedders.dinov2(dinov2_folder, local_files_only=True)
    assert (net.dim, net.modality, net.sample_rate) == (32, "image", None)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    images = _uint8_images(3, 40, 56)
    processor, model = _manual_image_pipeline(dinov2_folder)
    with torch.no_grad():
        expected = model(**processor(images=_pil(images), return_tensors="pt")).pooler_output
        ours = net(images)
        from_float = net(images.to(torch.float32) / 255.0)
    assert ours.shape == (3, 32)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(from_float, ours, rtol=0, atol=0)  # rounded back to uint8


@needs_hf
def test_dinov2_grayscale_is_repeated_to_rgb(dinov2_folder: Path) -> None:
    net = embedders.dinov2(dinov2_folder, local_files_only=True)
    gray = _uint8_images(2, 32, 32)[:, :1]
    processor, model = _manual_image_pipeline(dinov2_folder)
    pil_gray = [Image.fromarray(image[0].numpy(), mode="L").convert("RGB") for image in gray]
    with torch.no_grad():
        expected = model(**processor(images=pil_gray, return_tensors="pt")).pooler_output
        torch.testing.assert_close(net(gray), expected, rtol=1e-5, atol=1e-6)


@needs_hf
def test_clip_equals_manual_pipeline(clip_folder: Path) -> None:
    net = embedders.clip(clip_folder, local_files_only=True)
    assert (net.dim, net.modality) == (24, "image")
    images = _uint8_images(3, 48, 40, seed=5)
    processor, model = _manual_image_pipeline(clip_folder)
    with torch.no_grad():
        expected = _features(
            model.get_image_features(**processor(images=_pil(images), return_tensors="pt"))
        )
        ours = net(images)
    assert ours.shape == (3, 24)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)


@needs_hf
def test_wrong_checkpoint_kind_errors(
    clip_folder: Path, dinov2_folder: Path, clap_folder: Path
) -> None:
    with pytest.raises(ValueError, match=r"CLIPModel, a multimodal model; pass a DINOv2"):
        embedders.dinov2(clip_folder, local_files_only=True)
    with pytest.raises(ValueError, match="Dinov2Model, which has no get_image_features"):
        embedders.clip(dinov2_folder, local_files_only=True)
    with pytest.raises(ValueError, match="Dinov2Model, which has no get_audio_features"):
        embedders.clap(dinov2_folder, local_files_only=True)
    with pytest.raises(ValueError, match=r"ClapModel, a multimodal model; pass a speech"):
        embedders.hubert(clap_folder, local_files_only=True)


@needs_hf
def test_model_without_pooler_output_errors(dinov2_folder: Path) -> None:
    class NoPooler(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, **inputs: torch.Tensor) -> Any:
            return types.SimpleNamespace(last_hidden_state=inputs["pixel_values"])

    processor = transformers.AutoImageProcessor.from_pretrained(dinov2_folder)
    net = embedders.HFImageEmbedder("dinov2()", NoPooler(), processor, "pooler_output", 1, "image")
    with pytest.raises(ValueError, match="a NoPooler returns no pooler_output"):
        net(_uint8_images(1, 32, 32))


@needs_hf
def test_clap_equals_manual_pipeline(clap_folder: Path) -> None:
    net = embedders.clap(clap_folder, local_files_only=True)
    assert (net.dim, net.modality, net.sample_rate) == (12, "audio", 8000)
    waves = torch.randn(3, 4000, generator=torch.Generator().manual_seed(0)) * 0.1
    extractor = transformers.AutoFeatureExtractor.from_pretrained(
        clap_folder, local_files_only=True
    )
    model = transformers.AutoModel.from_pretrained(clap_folder, local_files_only=True).eval()
    inputs = extractor(list(waves.numpy()), sampling_rate=8000, return_tensors="pt")
    with torch.no_grad():
        expected = _features(model.get_audio_features(**inputs))
        ours = net(waves, sample_rate=8000)
    assert ours.shape == (3, 12)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(3))  # CLAP normalizes
    with pytest.raises(ValueError, match="expects audio at 8000 Hz, got 16000 Hz"):
        net(waves, sample_rate=16000)
    with pytest.raises(ValueError, match="has no get_image_features"):
        embedders.clip(clap_folder, local_files_only=True)


@needs_hf
@pytest.mark.parametrize("kind", ["wav2vec2", "hubert"])
def test_speech_mean_pooled_equals_manual_pipeline(
    speech_folders: dict[str, Path], kind: str
) -> None:
    folder = speech_folders[kind]
    net = getattr(embedders, kind)(folder, local_files_only=True)
    assert (net.dim, net.modality, net.sample_rate) == (16, "audio", 16000)
    waves = torch.randn(2, 1600, generator=torch.Generator().manual_seed(1))
    extractor = transformers.AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(folder, local_files_only=True).eval()
    inputs = extractor(list(waves.numpy()), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state.mean(dim=1)
        ours = net(waves)
        stereo = net(torch.stack([waves, waves], dim=1))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(stereo, ours, rtol=0, atol=0)


# --------------------------------------------------------------------------- pretrained


def _online(host: str) -> bool:
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.fixture
def network(request: pytest.FixtureRequest) -> None:
    # Real weights are hundreds of MB: run only when asked for (-m pretrained) and online.
    if "pretrained" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("real-weight check: run with `pytest -m pretrained`")
    if not (_online("huggingface.co") and _online("github.com")):
        pytest.skip("no network to download pretrained weights")


@pytest.mark.pretrained
@pytest.mark.usefixtures("network")
def test_pretrained_inception_matches_torch_fidelity() -> None:
    reference_module = _fidelity_module("feature_extractor_inceptionv3")
    reference = reference_module.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    net = embedders.inception()
    images = _uint8_images(2, 64, 64)
    with torch.no_grad():
        (expected,) = reference(images)
        torch.testing.assert_close(net(images), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.pretrained
@needs_hf
@pytest.mark.usefixtures("network")
@pytest.mark.parametrize(
    ("factory", "hub_id", "dim"),
    [
        ("dinov2", "facebook/dinov2-small", 384),
        ("clip", "openai/clip-vit-base-patch32", 512),
        ("clap", "laion/clap-htsat-unfused", 512),
        ("wav2vec2", "facebook/wav2vec2-base", 768),
    ],
)
def test_pretrained_checkpoints_load(factory: str, hub_id: str, dim: int) -> None:
    net = getattr(embedders, factory)(hub_id)
    assert net.dim == dim
    if net.modality == "image":
        batch: torch.Tensor = _uint8_images(2, 64, 64)
    else:
        batch = torch.from_numpy(np.sin(np.arange(net.sample_rate) / 10.0)[None].repeat(2, 0))
        batch = batch.to(torch.float32)
    with torch.no_grad():
        out = net(batch)
    assert out.shape == (2, dim) and bool(torch.isfinite(out).all())
