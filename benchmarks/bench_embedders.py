"""Throughput of the ready embedders on the CPU: inputs per second at batch 32.

Usage::

    python benchmarks/bench_embedders.py                       # the README table
    python benchmarks/bench_embedders.py --backbones inception,dinov2-s --repeats 3

No pretrained weights are needed (none can be downloaded on the benchmark machine): each
backbone is built at its real size from its published configuration with random weights
(the FLOPs do not depend on the values), saved with ``save_pretrained`` and its real
preprocessing configuration, and loaded through the same ``lightning_embviz.embedders``
function a user calls with a hub id. Inputs: uint8 images of 64x64 (a typical GAN output;
each backbone resizes them itself), float waveforms of 5 s at the backbone's rate.

Reported per backbone: inputs/s end to end (preprocessing + network) and the share of the
time spent in the preprocessing (image processor / feature extractor / resize), best of
``--repeats`` timed batches after a warm-up on two inputs.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from lightning_embviz import embedders
from lightning_embviz.embedders.inception import FIDInceptionV3

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}


def build_inception(folder: Path) -> Any:
    with torch.device("meta"):
        shapes = FIDInceptionV3().state_dict()
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, value in shapes.items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var") or key.endswith("bn.weight"):
            state[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(value.shape, generator=generator) * 0.05
    path = folder / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return embedders.inception(path)


def _dinov2(hidden: int, layers: int, heads: int) -> Callable[[Path], Any]:
    def build(folder: Path) -> Any:
        import transformers

        config = transformers.Dinov2Config(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            patch_size=14,
            image_size=518,
        )
        transformers.Dinov2Model(config).save_pretrained(folder)
        # facebook/dinov2-*'s preprocessor_config.json: resize 256 bicubic, crop 224.
        transformers.BitImageProcessor(
            size={"shortest_edge": 256},
            crop_size={"height": 224, "width": 224},
            do_center_crop=True,
            resample=3,
            **IMAGENET,
        ).save_pretrained(folder)
        return embedders.dinov2(folder, local_files_only=True)

    return build


def build_clip(folder: Path) -> Any:
    import transformers

    # openai/clip-vit-base-patch32's vision tower; a small text tower (not run for images).
    config = transformers.CLIPConfig(
        text_config={
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "intermediate_size": 128,
        },
        vision_config={"hidden_size": 768, "patch_size": 32, "image_size": 224},
        projection_dim=512,
    )
    transformers.CLIPModel(config).save_pretrained(folder)
    transformers.CLIPImageProcessor(
        size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}
    ).save_pretrained(folder)
    return embedders.clip(folder, local_files_only=True)


def build_clap(folder: Path) -> Any:
    import transformers

    # laion/clap-htsat-unfused: HTSAT audio tower (the ClapAudioConfig defaults), 48 kHz.
    config = transformers.ClapConfig(
        text_config={
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "intermediate_size": 128,
        },
        projection_dim=512,
    )
    transformers.ClapModel(config).save_pretrained(folder)
    transformers.ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(folder)
    return embedders.clap(folder, local_files_only=True)


def build_wav2vec2(folder: Path) -> Any:
    import transformers

    # facebook/wav2vec2-base: the Wav2Vec2Config defaults, 16 kHz.
    transformers.Wav2Vec2Model(transformers.Wav2Vec2Config()).save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000).save_pretrained(folder)
    return embedders.wav2vec2(folder, local_files_only=True)


BACKBONES: dict[str, tuple[str, Callable[[Path], Any]]] = {
    "inception": ("FID Inception-v3, 299x299", build_inception),
    "dinov2-s": ("DINOv2 ViT-S/14, 224x224", _dinov2(384, 12, 6)),
    "dinov2-b": ("DINOv2 ViT-B/14, 224x224", _dinov2(768, 12, 12)),
    "clip-b32": ("CLIP ViT-B/32, 224x224", build_clip),
    "clap": ("CLAP HTSAT, 5 s at 48 kHz", build_clap),
    "wav2vec2": ("Wav2Vec2-base, 5 s at 16 kHz", build_wav2vec2),
}


def preprocess_only(net: Any, batch: torch.Tensor) -> None:
    if isinstance(net, FIDInceptionV3):
        net.preprocess(batch)
    elif net.modality == "image":
        net.processor(
            images=list(batch.numpy()), return_tensors="pt", input_data_format="channels_first"
        )
    else:
        net.processor(list(batch.numpy()), sampling_rate=net.sample_rate, return_tensors="pt")


def matmul_gflops() -> float:
    # Context for the numbers on a shared machine: float32 GEMM throughput right now.
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b
    seconds = best_time(3, lambda: a @ b)
    return 2 * 1024**3 / seconds / 1e9


def best_time(repeats: int, fn: Callable[[], Any]) -> float:
    # The minimum over repeats: the machine is shared, and noise only ever adds time.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0, help="audio clip length")
    args = parser.parse_args()

    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}, "
        f"load average {os.getloadavg()[0]:.1f}, float32 GEMM {matmul_gflops():.0f} GFLOP/s"
    )
    print(f"\nbatch {args.batch}, best of {args.repeats} timed batches\n")
    print("| backbone | D | inputs/s | preprocessing share | load average |")
    print("|---|---:|---:|---:|---:|")
    generator = torch.Generator().manual_seed(0)
    for key in args.backbones.split(","):
        label, build = BACKBONES[key]
        with tempfile.TemporaryDirectory() as folder:
            net = build(Path(folder))
        if net.modality == "image":
            batch = torch.randint(
                0, 256, (args.batch, 3, 64, 64), generator=generator, dtype=torch.uint8
            )
        else:
            length = int(args.seconds * net.sample_rate)
            batch = 0.1 * torch.randn(args.batch, length, generator=generator)
        with torch.no_grad():
            net(batch[:2])  # warm-up: lazy initialization, allocator
            total = best_time(args.repeats, lambda net=net, batch=batch: net(batch))
            prep = best_time(args.repeats, lambda net=net, batch=batch: preprocess_only(net, batch))
        print(
            f"| {label} | {net.dim} | {args.batch / total:.1f} | {prep / total:.0%} |", flush=True
        )
        del net


if __name__ == "__main__":
    main()
