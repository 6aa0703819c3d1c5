"""Train a small audio GAN on synthetic tones and hear which kinds of sound it never makes.

Everything runs on the CPU in a few minutes and downloads nothing: the data set is made in
code, and the embedding is a small classifier trained on it first.

1. **Data**: 0.5 s clips at 8 kHz in six classes, built from notes of a semitone grid with
   envelopes and a little noise: ``pluck`` (low note with overtones, fast decay), ``flute``
   (high note, slow attack), ``major`` and ``minor`` chords, ``arpeggio`` (three notes in
   turn) and ``snare`` (noise burst over a low tone). Each class has four roots; the group of
   a real clip is its class and root (``major-C4``), like the song a frame comes from.
2. **Embedding**: a small MLP on log-spectrograms, trained to tell the classes apart, then
   frozen; its penultimate layer (32-d) is the embedding (the "FAD network" of this example).
3. **Generator**: a differentiable synthesizer. From noise, an MLP sets the loudness of each
   note of the grid over 8 time frames and of four noise bands; trained as a GAN against a
   spectrogram discriminator. GANs drop modes: which classes it misses differs from seed to
   seed.
4. **Evaluation**: precision, recall, density, coverage (``compute_prdc_details``) and the
   Fréchet distance of the held-out reals against fakes from fixed noise; per-group scores
   (:func:`lightning_embviz.engine.groups.per_group_scores`: real groups = class-root,
   fake groups = the classifier's predicted class) as ``groups.csv``; the most clearly missed
   real clips and the outlier fakes as WAV files and spectrogram galleries.

Run::

    python examples/audio_tones.py               # about 4 min of CPU time (2 threads)
    python examples/audio_tones.py --quick       # a short smoke run

Measured on the shared 2-core build machine under heavy load: 230 s of CPU time, 12 min
wall. With the default 300 GAN steps the generator makes pluck-, major- and minor-like
sounds (by the classifier's judgement) but no flute, arpeggio or snare, and its clips are
still far from the real ones in the embedding (precision and coverage 0): the per-group
table lists every real group as missed. More ``--steps`` bring it closer.

Writes to ``--out`` (default ``outputs/audio_tones``): ``metrics.json``, ``groups.csv``,
``missed_real/*.wav``, ``outlier_fake/*.wav``, ``missed_real.png``, ``outlier_fake.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_embviz import compute_prdc_details, frechet_distance
from lightning_embviz.audio import encode_wav
from lightning_embviz.engine.groups import GroupScore, per_group_scores, write_group_csv
from lightning_embviz.figures.audio import figure_to_rgb, spectrogram_gallery

SAMPLE_RATE = 8000
CLIP_SAMPLES = 4000  # 0.5 s
CLASSES = ("pluck", "flute", "major", "minor", "arpeggio", "snare")
GRID = 110.0 * 2.0 ** (np.arange(49) / 12.0)  # A2 (110 Hz) .. A6 (1760 Hz), semitones
NOTE_NAMES = ("A", "A#", "B", "C", "C#", "D", "D#", "E", "F", "F#", "G", "G#")
ROOTS = {  # grid steps of each class's four roots
    "pluck": (0, 3, 5, 7),
    "flute": (24, 27, 29, 31),
    "major": (12, 15, 17, 19),
    "minor": (12, 15, 17, 19),
    "arpeggio": (12, 14, 15, 17),
    "snare": (3, 5, 7, 8),
}
N_FFT, HOP = 256, 128
FRAMES = 8  # envelope frames of the generator
NOISE_BANDS = ((200.0, 800.0), (800.0, 1600.0), (1600.0, 3000.0), (3000.0, 4000.0))
EMBED_DIM = 32

# ----------------------------------------------------------------------------- data


def _note_name(step: int) -> str:
    semis = step + 0  # A2 is step 0; octave numbers change at C
    name = NOTE_NAMES[semis % 12]
    octave = 2 + (semis + 9) // 12
    return f"{name}{octave}"


def _band_noise(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE)
    spectrum[(freqs < low) | (freqs > high)] = 0.0
    out = np.fft.irfft(spectrum, n)
    return out / (np.abs(out).max() + 1e-9)


def make_tones(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Synthesize ``count`` clips, classes in turn.

    Args:
        count: number of clips.
        seed: the random seed (phases, roots, envelope times, noise).

    Returns:
        ``waves`` (count, 4000) float32 in [-1, 1] at 8 kHz, ``labels`` (count,) int64 class
        indices, ``groups`` (count,) ``"class-root"`` names.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(CLIP_SAMPLES) / SAMPLE_RATE
    waves = np.zeros((count, CLIP_SAMPLES))
    labels = np.arange(count) % len(CLASSES)
    groups = []
    for i, label in enumerate(labels):
        name = CLASSES[label]
        root = int(rng.choice(ROOTS[name]))
        groups.append(f"{name}-{_note_name(root)}")

        def note(step: int, amp: float = 1.0) -> np.ndarray:
            return amp * np.sin(2 * np.pi * GRID[step] * t + rng.uniform(0, 2 * np.pi))

        if name == "pluck":
            x = sum(note(root + s, a) for s, a in ((0, 1.0), (12, 0.5), (19, 0.3), (24, 0.2)))
            x = x * np.exp(-t / rng.uniform(0.05, 0.1))
        elif name == "flute":
            x = note(root) + note(root + 12, 0.15)
            x = x * np.clip(t / rng.uniform(0.1, 0.2), 0, 1)
        elif name in ("major", "minor"):
            third = 4 if name == "major" else 3
            x = note(root) + note(root + third) + note(root + 7)
            x = x * np.minimum(t / 0.02, 1.0) * np.exp(-t / 0.6)
        elif name == "arpeggio":
            x = np.zeros_like(t)
            for j, s in enumerate((0, 4, 7)):
                part = (t >= j / 6) & (t < (j + 1) / 6 + 0.02)
                x = x + part * note(root + s) * np.exp(-(t - j / 6).clip(0) / 0.08)
        else:  # snare
            hit = np.exp(-t / rng.uniform(0.03, 0.06))
            x = hit * (_band_noise(rng, CLIP_SAMPLES, 1600, 4000) + 0.6 * note(root))
        x = x + 0.01 * rng.normal(size=CLIP_SAMPLES)
        waves[i] = 0.8 * x / (np.abs(x).max() + 1e-9)
    return waves.astype(np.float32), labels.astype(np.int64), groups


def log_spectrogram(waves: Tensor) -> Tensor:
    """(B, T) waveforms -> (B, 129, frames) log-magnitude spectrograms."""
    window = torch.hann_window(N_FFT, device=waves.device)
    spec = torch.stft(waves, N_FFT, HOP, window=window, return_complex=True).abs()
    return torch.log(spec + 1e-4)


# ------------------------------------------------------------------ embedding network


class ToneClassifier(nn.Module):
    """A small MLP on log-spectrograms; its penultimate layer (32-d) is the embedding."""

    def __init__(self, frames: int = CLIP_SAMPLES // HOP + 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear((N_FFT // 2 + 1) * frames, 128),
            nn.ReLU(),
            nn.Linear(128, EMBED_DIM),
            nn.ReLU(),
        )
        self.head = nn.Linear(EMBED_DIM, len(CLASSES))

    def features(self, waves: Tensor) -> Tensor:
        """Embed (B, T) waveforms into (B, 32)."""
        return self.body(log_spectrogram(waves))

    def forward(self, waves: Tensor) -> Tensor:
        """Class logits (B, 6)."""
        return self.head(self.features(waves))


def train_classifier(
    waves: Tensor, labels: Tensor, *, steps: int = 200, seed: int = 0
) -> tuple[ToneClassifier, float]:
    """Train the embedding network (minibatches, a few seconds); return it frozen.

    Returns:
        The classifier in eval mode without gradients, and its training accuracy.
    """
    torch.manual_seed(seed)
    net = ToneClassifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        pick = torch.randint(len(waves), (128,), generator=gen)
        noisy = waves[pick] + 0.01 * torch.randn(128, waves.shape[1], generator=gen)
        loss = F.cross_entropy(net(noisy), labels[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)
    with torch.no_grad():
        accuracy = float((net(waves).argmax(1) == labels).float().mean())
    return net, accuracy


# ------------------------------------------------------------------------ generator


class ToneGenerator(nn.Module):
    """A differentiable synthesizer: noise -> loudness of 49 grid notes and 4 noise bands.

    Each note is a sine of the semitone grid, each band a fixed band of white noise drawn
    anew per clip; the MLP sets their loudness over 8 frames (linearly interpolated).
    """

    def __init__(self, latent_dim: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        outputs = (len(GRID) + len(NOISE_BANDS)) * FRAMES
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, outputs),
        )
        # Start nearly silent (softplus(-6) ~ 0.0025): every note at once is easy to reject.
        nn.init.constant_(self.net[-1].bias, -6.0)
        t = torch.arange(CLIP_SAMPLES) / SAMPLE_RATE
        # Linear interpolation of the 8 frames over the clip, as a (FRAMES, T) matrix.
        pos = torch.linspace(0, FRAMES - 1, CLIP_SAMPLES)
        interp = (1 - (pos[None, :] - torch.arange(FRAMES)[:, None]).abs()).clamp_min(0)
        notes = torch.sin(2 * math.pi * torch.tensor(GRID, dtype=torch.float32)[:, None] * t)
        # One row per (note, frame): the whole tonal part is one matrix product.
        self.register_buffer("basis", (notes[:, None, :] * interp[None]).reshape(-1, CLIP_SAMPLES))
        self.register_buffer("interp", interp)
        freqs = torch.fft.rfftfreq(CLIP_SAMPLES, 1.0 / SAMPLE_RATE)
        masks = torch.stack([((freqs >= lo) & (freqs < hi)).float() for lo, hi in NOISE_BANDS])
        self.register_buffer("band_masks", masks)

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) noise -> (B, 4000) waveforms in [-1, 1]."""
        b = z.shape[0]
        levels = F.softplus(self.net(z)).view(b, -1, FRAMES) * 0.1
        n_notes = len(GRID)
        tonal = levels[:, :n_notes].reshape(b, -1) @ self.basis
        white = torch.fft.rfft(torch.randn(b, CLIP_SAMPLES, device=z.device))
        bands = torch.fft.irfft(white[:, None] * self.band_masks, CLIP_SAMPLES) * 10.0
        noisy = ((levels[:, n_notes:] @ self.interp) * bands).sum(1)
        return torch.tanh(tonal + noisy)


class SpectrogramCritic(nn.Module):
    """The GAN's discriminator on log-spectrograms (trained, unlike the classifier)."""

    def __init__(self, frames: int = CLIP_SAMPLES // HOP + 1) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear((N_FFT // 2 + 1) * frames, 256),
            nn.LeakyReLU(0.2),
            nn.Linear(256, 64),
            nn.LeakyReLU(0.2),
            nn.Linear(64, 1),
        )

    def forward(self, waves: Tensor, noise: float = 0.0) -> Tensor:
        """(B, T) -> (B,) logits; ``noise``: std of instance noise on the log-spectrogram."""
        spec = log_spectrogram(waves)
        if noise:
            spec = spec + noise * torch.randn_like(spec)
        return self.net(spec).squeeze(1)


def train_gan(
    waves: Tensor, *, steps: int = 300, batch_size: int = 32, seed: int = 0, log_every: int = 0
) -> ToneGenerator:
    """Train the generator as a non-saturating GAN with annealed instance noise.

    Adam with betas (0.5, 0.999): lr 1e-3 for the generator, 2e-4 for the critic.

    Args:
        waves: (N, 4000) real training clips.
        steps: generator updates (one critic update each).
        batch_size: clips per step.
        seed: the random seed.
        log_every: print the losses every that many steps (0: never).

    Returns:
        The generator in eval mode.
    """
    torch.manual_seed(seed)
    gen, critic = ToneGenerator(), SpectrogramCritic()
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(critic.parameters(), lr=2e-4, betas=(0.5, 0.999))
    for step in range(steps):
        # Instance noise, annealed to 0.2: keeps the critic from winning outright early on.
        sigma = 0.2 + 1.8 * max(0.0, 1.0 - step / max(1, steps // 2))
        real = waves[torch.randint(len(waves), (batch_size,))]
        fake = gen(torch.randn(batch_size, gen.latent_dim))
        loss_d = (
            F.softplus(-critic(real, sigma)).mean()
            + F.softplus(critic(fake.detach(), sigma)).mean()
        )
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-critic(fake, sigma)).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        if log_every and (step + 1) % log_every == 0:
            print(
                f"step {step + 1:5d}  loss_d {loss_d.item():.3f}  loss_g {loss_g.item():.3f}",
                flush=True,
            )
    return gen.eval()


# ----------------------------------------------------------------------- evaluation


def validation_outputs(
    generator: ToneGenerator,
    classifier: ToneClassifier,
    real_waves: Tensor,
    real_groups: list[str],
    noise: Tensor,
) -> dict[str, Any]:
    """What a ``validation_step`` returns for ``EmbeddingMonitor``, for one batch.

    Returns:
        ``real``/``fake`` (B, 32) embeddings, ``labels`` (real classes, predicted fake
        classes), ``real_audio``/``fake_audio`` (B, 4000) waveforms at 8 kHz, and ``groups``
        (the real clips' class-root names and the fakes' predicted class names).
    """
    with torch.no_grad():
        fake_waves = generator(noise)
        real = classifier.features(real_waves)
        fake = classifier.features(fake_waves)
        real_pred = classifier.head(real).argmax(1)
        fake_pred = classifier.head(fake).argmax(1)
    return {
        "real": real,
        "fake": fake,
        "labels": {"real": real_pred, "fake": fake_pred},
        "real_audio": real_waves,
        "fake_audio": fake_waves,
        "groups": {
            "real": np.asarray(real_groups),
            "fake": np.asarray([CLASSES[int(c)] for c in fake_pred]),
        },
    }


def evaluate(outputs: dict[str, Any], out: Path, *, nearest_k: int = 5, shown: int = 8) -> dict:
    """Metrics, per-group table, WAVs and spectrogram galleries of one evaluation.

    Returns:
        The metrics dict written to ``metrics.json`` (PRDC, ``fd``, fake class counts,
        the missed real classes).
    """
    real, fake = outputs["real"], outputs["fake"]
    details = compute_prdc_details(real, fake, nearest_k=nearest_k)
    metrics: dict[str, Any] = {**details.as_dict(), "fd": frechet_distance(real, fake)}
    groups = outputs["groups"]
    rows = per_group_scores(real, fake, groups["real"], groups["fake"], nearest_k=nearest_k)
    out.mkdir(parents=True, exist_ok=True)
    write_group_csv(rows, out / "groups.csv")
    fake_classes = groups["fake"].tolist()
    metrics["fake_class_counts"] = {c: fake_classes.count(c) for c in CLASSES}
    real_class = np.array([g.split("-")[0] for g in groups["real"]])
    covered = details.real_covered.numpy()
    metrics["class_coverage"] = {c: float(covered[real_class == c].mean()) for c in CLASSES}
    ratio = details.real_nearest_fake_ratio.numpy()
    missed = np.flatnonzero(~covered)
    missed = missed[np.argsort(-ratio[missed], kind="stable")][:shown]
    outside = details.fake_nearest_ball_ratio.numpy()
    outliers = np.flatnonzero(outside >= 1)
    outliers = outliers[np.argsort(-outside[outliers], kind="stable")][:shown]
    for name, rows_shown, audio, caps, ratios in (
        ("missed_real", missed, outputs["real_audio"], groups["real"], ratio),
        ("outlier_fake", outliers, outputs["fake_audio"], groups["fake"], outside),
    ):
        folder = out / name
        folder.mkdir(exist_ok=True)
        clips = [audio[i].numpy() for i in rows_shown]
        for i, clip in zip(rows_shown, clips):
            (folder / f"{name}_{i:04d}.wav").write_bytes(encode_wav(clip, SAMPLE_RATE))
        fig = spectrogram_gallery(
            clips,
            SAMPLE_RATE,
            indices=rows_shown,
            groups=caps[rows_shown],
            ratios=ratios[rows_shown],
            title=f"{name.replace('_', ' ')} ({len(rows_shown)} shown)",
            columns=4,
        )
        from PIL import Image

        Image.fromarray(figure_to_rgb(fig)).save(out / f"{name}.png")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _print_groups(rows: list[GroupScore], limit: int = 6) -> None:
    print("worst groups (coverage of real groups; precision/FD of fake groups):")
    for row in rows[:limit]:
        if row.side == "real":
            print(f"  real {row.group:<12} n={row.count:<4} coverage {row.coverage:.2f}")
    for row in [r for r in rows if r.side == "fake"][:limit]:
        print(
            f"  fake {row.group:<12} n={row.count:<4} precision {row.precision:.2f}"
            f"  FD {row.fd:.1f}"
        )


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="GAN steps (default 300)")
    parser.add_argument("--out", type=Path, default=Path("outputs/audio_tones"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 20 if args.quick else 300
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    return args


def main(argv: Optional[list[str]] = None) -> dict:
    """Build the data, train the classifier and the GAN, evaluate, write the files."""
    args = parse_args(argv)
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    start = time.perf_counter()
    n_train, n_val = (600, 120) if args.quick else (3000, 600)
    train_waves, train_labels, _ = make_tones(n_train, seed=args.seed)
    val_waves, _, val_groups = make_tones(n_val, seed=args.seed + 1)
    x_train = torch.from_numpy(train_waves)
    classifier, accuracy = train_classifier(
        x_train, torch.from_numpy(train_labels), steps=30 if args.quick else 150, seed=args.seed
    )
    print(f"classifier training accuracy {accuracy:.3f} ({time.perf_counter() - start:.0f} s)")
    generator = train_gan(
        x_train, steps=args.steps, seed=args.seed, log_every=0 if args.quick else 50
    )
    print(f"GAN trained, {args.steps} steps ({time.perf_counter() - start:.0f} s)")
    noise = torch.randn(n_val, generator.latent_dim, generator=torch.Generator().manual_seed(7))
    outputs = validation_outputs(
        generator, classifier, torch.from_numpy(val_waves), val_groups, noise
    )
    metrics = evaluate(outputs, args.out)
    for key in ("precision", "recall", "density", "coverage", "fd"):
        print(f"{key:>10} {metrics[key]:.3f}")
    print("coverage per class:", {c: round(v, 2) for c, v in metrics["class_coverage"].items()})
    print("fakes per predicted class:", metrics["fake_class_counts"])
    with (args.out / "groups.csv").open() as handle:
        table = list(csv.DictReader(handle))
    print(f"{len(table)} group rows in {args.out / 'groups.csv'}")
    _print_groups(
        per_group_scores(
            outputs["real"],
            outputs["fake"],
            outputs["groups"]["real"],
            outputs["groups"]["fake"],
        )
    )
    print(f"done in {time.perf_counter() - start:.0f} s; WAVs and galleries in {args.out}")
    return metrics


if __name__ == "__main__":
    main()
