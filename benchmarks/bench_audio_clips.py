"""Memory and time of keeping audio clips per row, encoding WAVs and drawing the gallery.

For each (source rate, clip length) and each kept setting (rate, seconds), a batch of
random clips goes through :func:`lightning_embviz.audio.make_clips`. Reports:

- bytes kept per row (the tensors' size; it equals ``clip_bytes_per_row``) and the ratio to
  the float32 clip the batch held;
- the transient peak of NumPy/Python allocations while keeping one batch (``tracemalloc``);
- median milliseconds per clip to keep it (cut, mono, resample, int16), to encode one kept
  clip as WAV bytes, and to draw and render a gallery of 8 clips.

Run:  python benchmarks/bench_audio_clips.py [--batch 32] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from functools import partial

import numpy as np
import torch

from lightning_embviz.audio import clip_bytes_per_row, encode_wav, make_clips
from lightning_embviz.figures.audio import figure_to_rgb, spectrogram_gallery

SOURCES = ((16000, 4.0), (44100, 10.0), (48000, 10.0))
KEPT = ((8000, 2.0), (16000, 4.0))


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def run(batch: int, repeats: int) -> list[dict]:
    """Measure every (source, kept) pair; returns one dict per pair."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for rate, seconds in SOURCES:
        waves = torch.from_numpy(
            rng.uniform(-1, 1, size=(batch, round(rate * seconds))).astype(np.float32)
        )
        for keep_rate, keep_seconds in KEPT:
            clips = make_clips(waves, rate, keep_rate=keep_rate, max_seconds=keep_seconds)
            per_row = clips.nbytes / batch
            assert per_row == clip_bytes_per_row(keep_rate, keep_seconds)
            tracemalloc.start()
            make_clips(waves, rate, keep_rate=keep_rate, max_seconds=keep_seconds)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            keep = partial(make_clips, waves, rate, keep_rate=keep_rate, max_seconds=keep_seconds)
            keep_ms = _median_ms(keep, repeats)
            wav_ms = _median_ms(partial(encode_wav, clips.clip(0), clips.sample_rate), repeats)
            shown = [clips.clip(i) for i in range(min(8, batch))]
            gallery = partial(spectrogram_gallery, shown, clips.sample_rate)
            gallery_ms = _median_ms(lambda g=gallery: figure_to_rgb(g()), 3)
            rows.append(
                {
                    "source_rate": rate,
                    "source_seconds": seconds,
                    "keep_rate": keep_rate,
                    "keep_seconds": keep_seconds,
                    "bytes_per_row": int(per_row),
                    "float32_bytes_per_row": 4 * waves.shape[1],
                    "peak_alloc_mib_per_batch": peak / 2**20,
                    "keep_ms_per_clip": keep_ms / batch,
                    "wav_ms_per_clip": wav_ms,
                    "gallery8_ms": gallery_ms,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=str, default=None)
    args = parser.parse_args()
    rows = run(args.batch, args.repeats)
    print(
        "| source | kept | bytes/row | vs float32 clip | peak alloc / batch | keep ms/clip "
        "| WAV ms/clip | gallery (8) ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['source_rate'] / 1000:g} kHz {r['source_seconds']:g} s "
            f"| {r['keep_rate'] / 1000:g} kHz {r['keep_seconds']:g} s "
            f"| {r['bytes_per_row']:,} | 1/{r['float32_bytes_per_row'] / r['bytes_per_row']:.0f} "
            f"| {r['peak_alloc_mib_per_batch']:.1f} MiB | {r['keep_ms_per_clip']:.2f} "
            f"| {r['wav_ms_per_clip']:.2f} | {r['gallery8_ms']:.0f} |"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
