"""Train a small audio generator on synthetic tones and hear which kinds of sound it never makes.

Everything runs on the CPU in a few minutes and downloads nothing: the data set is made in
code, and the embedding is a small classifier trained on it first.

1. **Data**: 0.5 s clips at 8 kHz in six classes, built from notes of a semitone grid with
   envelopes and a little noise: ``pluck`` (low note with overtones, fast decay), ``flute``
   (high note, slow attack), ``major`` and ``minor`` chords, ``arpeggio`` (three notes in
   turn) and ``snare`` (noise burst over a low tone). Each class has four roots; the group of
   a real clip is its class and root (``major-C4``), like the song a frame comes from.
2. **Embedding**: a small MLP on log-spectrograms, trained to tell the classes apart, then
   frozen; its penultimate layer (32-d) is the embedding (the "FAD network" of this example).
3. **Generator**: a differentiable synthesizer. From noise, an MLP chooses the loudness of
   each note of the grid, of a high noise band, an attack and a decay time (one envelope for
   all notes, so it cannot play notes in turn) and a noise floor. It is trained with
   Lightning as a generative moment-matching network: the loss is the MMD (Gaussian kernels)
   between the frozen embeddings of a batch of fakes and a batch of reals. A kernel only
   pulls on fakes that are already near a real mode: the classes the synthesizer starts near
   are learned, the others are dropped — the mode dropping this example is about.
4. **Monitoring**: ``EmbeddingMonitor(sample_rate=8000)`` after every epoch: precision,
   recall, density, coverage and FD of 600 held-out reals against fakes from fixed noise;
   the missed real clips and the outlier fakes as playable audio (TensorBoard's AUDIO tab)
   with their spectrograms; the per-group table ``embviz/groups`` (real groups = class-root,
   fake groups = the classifier's predicted class) and its bar chart ``embviz/groups_worst``.

Run::

    python examples/audio_tones.py            # 10 epochs of 100 steps, about 2 CPU minutes
    tensorboard --logdir outputs/audio_tones/tensorboard --samples_per_plugin images=1000,audio=1000
    python examples/audio_tones.py --quick    # a few-second smoke run
    python examples/audio_tones.py --figures docs/images  # also the README images

Measured with ``nice -n 10`` on the shared 2-core build machine (load average 11): 108 s of
CPU time (the process uses about one core), 9.5 min wall under that load. After 10 epochs
(1000 steps) the generator makes plucks and snares (coverage 0.40 and 0.69 of their held-out
clips) and misses flutes, major and minor chords (coverage 0.01-0.02) and arpeggios (0):
precision 0.170, recall 0.498, density 0.094, coverage 0.188, FD 76.6. The per-group table
lists the four arpeggio groups and ``major-E4``/``minor-E4`` first (coverage 0), and the
missed-real audio (and its spectrograms) are arpeggios: notes in turn, which one envelope
cannot play.

Flags: ``--epochs``, ``--out``, ``--seed``, ``--quick``, ``--overwrite``, ``--figures DIR``
(writes ``DIR/audio_missed_real.png`` and ``DIR/audio_groups_worst.png`` from the last
validation: the README's images).
"""

from __future__ import annotations

import argparse
import csv
import logging
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from lightning_embviz import EmbeddingMonitor

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
LATENT_DIM = 16
SNARE_BAND = (1600.0, 4000.0)  # Hz: the noise band of the snares and of the synthesizer
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
            x = hit * (_band_noise(rng, CLIP_SAMPLES, *SNARE_BAND) + 0.6 * note(root))
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


class ToneSynth(nn.Module):
    """A differentiable synthesizer: noise -> notes of the grid, a noise band, one envelope.

    From ``z`` (B, 16) an MLP sets, per clip: the loudness of each of the 49 grid notes and
    of a 1.6-4 kHz noise band (sigmoids), an attack time (2 ms to 0.3 s), a decay time
    (20 ms to 2 s) and a noise floor (0.3 % to 3 % of the peak). The clip is
    ``min(t / attack, 1) * exp(-t / decay) * (sum of notes + band)`` plus the floor,
    scaled to a peak of 0.8 like the real clips. One envelope for every note: it can make
    plucks, flutes, chords and snares, never notes in turn (arpeggios).
    """

    def __init__(self, latent_dim: int = LATENT_DIM, hidden: int = 128) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        notes = len(GRID)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, notes + 4),
        )
        with torch.no_grad():  # start with every note and the band quiet (sigmoid(-3) ~ 0.05)
            self.net[-1].bias.zero_()
            self.net[-1].bias[: notes + 1] = -3.0
        t = torch.arange(CLIP_SAMPLES) / SAMPLE_RATE
        self.register_buffer("t", t)
        grid = torch.tensor(GRID, dtype=torch.float32)
        self.register_buffer("sines", torch.sin(2 * math.pi * grid[:, None] * t))
        freqs = torch.fft.rfftfreq(CLIP_SAMPLES, 1.0 / SAMPLE_RATE)
        low, high = SNARE_BAND
        self.register_buffer("band", ((freqs >= low) & (freqs <= high)).float())

    def forward(self, z: Tensor) -> Tensor:
        """(B, latent_dim) noise -> (B, 4000) waveforms, peak 0.8."""
        notes = len(GRID)
        out = self.net(z)
        loudness = torch.sigmoid(out[:, :notes])
        band_level = torch.sigmoid(out[:, notes : notes + 1])
        attack = 0.002 * 150.0 ** torch.sigmoid(out[:, notes + 1 : notes + 2])
        decay = 0.02 * 100.0 ** torch.sigmoid(out[:, notes + 2 : notes + 3])
        floor = 0.003 * 10.0 ** torch.sigmoid(out[:, notes + 3 : notes + 4])
        envelope = torch.clamp(self.t / attack, max=1.0) * torch.exp(-self.t / decay)
        white = torch.fft.rfft(torch.randn(len(z), CLIP_SAMPLES, device=z.device))
        band = torch.fft.irfft(white * self.band, CLIP_SAMPLES)
        band = band / band.abs().amax(1, keepdim=True)
        x = envelope * (loudness @ self.sines + band_level * band)
        x = x / (x.abs().amax(1, keepdim=True) + 1e-6) + floor * torch.randn_like(x)
        return 0.8 * x / (x.abs().amax(1, keepdim=True) + 1e-6)


def mmd(a: Tensor, b: Tensor, scales: tuple[float, ...] = (0.05, 0.2, 1.0)) -> Tensor:
    """Squared MMD of two (B, D) batches with Gaussian kernels (biased estimate).

    The bandwidths are ``scales`` times the mean squared distance of the pooled batch
    (no gradient through it).
    """
    x = torch.cat([a, b])
    d2 = torch.cdist(x, x).pow(2)
    base = d2.detach().mean().clamp_min(1e-12)
    k = sum(torch.exp(-d2 / (base * s)) for s in scales)
    n = len(a)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class ToneData(pl.LightningDataModule):
    """Training clips drawn with replacement; held-out clips paired with fixed noise.

    Every validation batch is ``(real_waves, real_classes, real_group_index, noise)``: the
    same noise at every epoch, so the runs are comparable.
    """

    def __init__(
        self,
        n_train: int = 3000,
        n_val: int = 600,
        batch_size: int = 64,
        steps_per_epoch: int = 100,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.batch_size, self.steps_per_epoch, self.seed = batch_size, steps_per_epoch, seed
        waves, labels, _ = make_tones(n_train, seed=seed)
        self.x_train, self.y_train = torch.from_numpy(waves), torch.from_numpy(labels)
        waves, labels, groups = make_tones(n_val, seed=seed + 1)
        self.x_val, self.y_val = torch.from_numpy(waves), torch.from_numpy(labels)
        self.group_names = sorted(set(groups))
        self.g_val = torch.tensor([self.group_names.index(g) for g in groups])
        gen = torch.Generator().manual_seed(seed + 12345)
        self.val_noise = torch.randn(n_val, LATENT_DIM, generator=gen)

    def train_dataloader(self) -> DataLoader:
        sampler = RandomSampler(
            self.x_train,
            replacement=True,
            num_samples=self.steps_per_epoch * self.batch_size,
            generator=torch.Generator().manual_seed(self.seed),
        )
        return DataLoader(TensorDataset(self.x_train), batch_size=self.batch_size, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        data = TensorDataset(self.x_val, self.y_val, self.g_val, self.val_noise)
        return DataLoader(data, batch_size=200, shuffle=False)


class ToneGMMN(pl.LightningModule):
    """The synthesizer trained by MMD in the frozen classifier's embedding space.

    ``validation_step`` returns what ``EmbeddingMonitor`` reads: the embeddings of held-out
    reals and of fakes from fixed noise, labels (true classes, the classifier's predicted
    classes of the fakes), the waveforms (``real_audio``/``fake_audio`` at 8 kHz) and groups
    (real: ``class-root`` names; fake: predicted class names).
    """

    def __init__(self, group_names: list[str], lr: float = 1e-3, seed: int = 0) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.group_names = list(group_names)
        self.generator = ToneSynth()
        self.classifier = ToneClassifier()
        self.classifier.requires_grad_(False)
        self.last_validation: dict[str, Any] = {}

    def set_classifier(self, classifier: ToneClassifier) -> None:
        """Copy the trained embedding network in (frozen; it travels with checkpoints)."""
        self.classifier.load_state_dict(classifier.state_dict())
        self.classifier.requires_grad_(False)

    def forward(self, z: Tensor) -> Tensor:
        """(B, 16) noise -> (B, 4000) waveforms."""
        return self.generator(z)

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        (real,) = batch
        self.classifier.eval()
        fake = self.generator(torch.randn(len(real), LATENT_DIM, device=self.device))
        with torch.no_grad():
            real_emb = self.classifier.features(real)
        loss = mmd(self.classifier.features(fake), real_emb)
        self.log("loss/mmd", loss, on_step=False, on_epoch=True)
        return loss

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> dict[str, Any]:
        real, classes, group_index, z = batch
        self.classifier.eval()
        fake = self.generator(z)
        emb_real = self.classifier.features(real)
        emb_fake = self.classifier.features(fake)
        predicted = self.classifier.head(emb_fake).argmax(1)
        real_groups = [self.group_names[int(i)] for i in group_index]
        fake_groups = [CLASSES[int(c)] for c in predicted]
        if batch_idx == 0:
            self.last_validation = {k: [] for k in ("real", "fake", "real_audio", "groups")}
        for key, value in (("real", emb_real), ("fake", emb_fake), ("real_audio", real)):
            self.last_validation[key].append(value.cpu())
        self.last_validation["groups"] += real_groups
        return {
            "real": emb_real,
            "fake": emb_fake,
            "labels": {"real": classes, "fake": predicted},
            "real_audio": real,
            "fake_audio": fake,
            "groups": {"real": real_groups, "fake": fake_groups},
        }

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.generator.parameters(), lr=self.hparams["lr"], betas=(0.5, 0.999)
        )


# ----------------------------------------------------------------------- reporting

TABLE_KEYS = ("embviz/precision", "embviz/recall", "embviz/density", "embviz/coverage", "embviz/fd")


class MetricsTable(Callback):
    """Print one line of the logged metrics after every validation run (and keep them)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []
        self.started = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": float(trainer.current_epoch)}
        for key in TABLE_KEYS:
            value = trainer.callback_metrics.get(key)
            row[key] = float(value) if value is not None else math.nan
        if not self.rows:
            print(format_header(), flush=True)
        self.rows.append(row)
        print(format_row(row, time.perf_counter() - self.started), flush=True)


def format_header() -> str:
    """The header of the per-epoch table."""
    names = ("epoch", "precision", "recall", "density", "coverage", "fd", "seconds")
    return "  ".join(f"{n:>9}" for n in names)


def format_row(row: dict[str, float], seconds: float) -> str:
    """One line of the per-epoch table."""
    cells = [f"{int(row['epoch']):>9d}"] + [f"{row[k]:>9.3f}" for k in TABLE_KEYS]
    return "  ".join([*cells, f"{seconds:>9.0f}"])


def quiet_lightning() -> None:
    """Silence warnings that do not apply to this tiny CPU example, and Lightning's tips."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")

    class _NoTips(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return "Tip:" not in record.getMessage()

    for package in (
        "pytorch_lightning",
        "lightning_fabric",
        "lightning.pytorch",
        "lightning.fabric",
    ):
        logging.getLogger(f"{package}.utilities.rank_zero").addFilter(_NoTips())


def latest_group_table(log_dir: Path) -> list[dict[str, str]]:
    """The rows of the last per-group table the monitor wrote (``embviz/groups/*.csv``)."""
    files = sorted((log_dir / "embviz" / "groups").glob("step_*.csv"))
    if not files:
        return []
    with files[-1].open(newline="") as handle:
        return list(csv.DictReader(handle))


def format_groups(rows: list[dict[str, str]], limit: int = 8) -> str:
    """The worst real groups and every fake group of a per-group table, as text."""

    def num(text: str) -> str:
        return f"{float(text):.2f}" if text else "  - "

    lines = ["worst real groups (coverage, recall of the group's held-out clips):"]
    for row in [r for r in rows if r["side"] == "real"][:limit]:
        lines.append(
            f"  {row['group']:<12} n={row['count']:<3} coverage {num(row['coverage'])}"
            f"  recall {num(row['recall'])}"
        )
    lines.append("fake groups (the classifier's predicted class of the fakes):")
    for row in [r for r in rows if r["side"] == "fake"]:
        lines.append(
            f"  {row['group']:<12} n={row['count']:<3} precision {num(row['precision'])}"
            f"  density {num(row['density'])}  FD {num(row['fd'])}"
        )
    return "\n".join(lines)


def class_coverage(rows: list[dict[str, str]]) -> dict[str, float]:
    """Coverage per class: the count-weighted mean over the class's real groups."""
    totals: dict[str, list[float]] = {c: [0.0, 0.0] for c in CLASSES}
    for row in rows:
        if row["side"] == "real" and row["coverage"]:
            name = row["group"].split("-")[0]
            totals[name][0] += float(row["coverage"]) * int(row["count"])
            totals[name][1] += int(row["count"])
    return {c: (s / n if n else math.nan) for c, (s, n) in totals.items()}


def write_figures(model: ToneGMMN, folder: Path, nearest_k: int = 5) -> list[Path]:
    """The README images from the last validation: missed real clips and worst groups.

    The same selection as the monitor's ``embviz/missed_real_audio`` gallery (the first 8 of
    :func:`lightning_embviz.samples.missed_real_order`) and the same table as
    ``embviz/groups`` (real groups).
    """
    from lightning_embviz import compute_prdc_details, samples
    from lightning_embviz.engine.groups import group_scores_from_details
    from lightning_embviz.figures.audio import spectrogram_gallery
    from lightning_embviz.figures.groups import worst_groups_figure

    last = model.last_validation
    real, fake = torch.cat(last["real"]), torch.cat(last["fake"])
    audio, groups = torch.cat(last["real_audio"]), np.asarray(last["groups"])
    details = compute_prdc_details(real, fake, nearest_k=nearest_k)
    missed = samples.missed_real_order(details)[:8].numpy()
    folder.mkdir(parents=True, exist_ok=True)
    gallery = spectrogram_gallery(
        audio[missed],
        SAMPLE_RATE,
        indices=missed,
        groups=groups[missed],
        ratios=details.real_nearest_fake_ratio[missed],
        title="missed real clips (no fake in their 5-NN ball), most clearly missed first",
        columns=4,
    )
    table = group_scores_from_details(details, real, fake, groups)
    bars = worst_groups_figure(table, limit=12, title="the worst real groups (class-root)")
    written = []
    for name, fig in (("audio_missed_real.png", gallery), ("audio_groups_worst.png", bars)):
        fig.savefig(folder / name)
        written.append(folder / name)
    return written


# ---------------------------------------------------------------------------- main


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs of 100 steps (default 10; --quick: 2 of 4)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/audio_tones"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few-second smoke run")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run's TensorBoard logs in --out",
    )
    parser.add_argument(
        "--figures",
        type=Path,
        default=None,
        metavar="DIR",
        help="write DIR/audio_missed_real.png and DIR/audio_groups_worst.png (the README's)",
    )
    args = parser.parse_args(argv)
    if args.epochs is None:
        args.epochs = 2 if args.quick else 10
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, got {args.epochs}")
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """Train the classifier, then the synthesizer with the monitor; print what it missed.

    Returns:
        ``rows`` (the logged metrics per epoch), ``groups`` (the last per-group table as
        read back from its CSV), ``class_coverage`` and ``log_dir``.
    """
    args = parse_args(argv)
    out: Path = args.out
    run_dir = out / "tensorboard" / "train"
    if run_dir.exists():
        if not args.overwrite:
            raise SystemExit(f"{run_dir} holds an earlier run; pass --overwrite or another --out.")
        shutil.rmtree(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    quiet_lightning()
    torch.set_num_threads(1)  # tiny networks: one thread, the other core for the figures
    start = time.perf_counter()
    cpu_start = time.process_time()
    if args.quick:
        data = ToneData(n_train=240, n_val=60, batch_size=32, steps_per_epoch=4, seed=args.seed)
    else:
        data = ToneData(seed=args.seed)
    classifier, accuracy = train_classifier(
        data.x_train, data.y_train, steps=10 if args.quick else 150, seed=args.seed
    )
    with torch.no_grad():
        held_out = float((classifier(data.x_val).argmax(1) == data.y_val).float().mean())
    print(
        f"embedding net: train accuracy {accuracy:.3f}, held-out {held_out:.3f} "
        f"({time.perf_counter() - start:.0f} s)",
        flush=True,
    )
    model = ToneGMMN(data.group_names, seed=args.seed)
    model.set_classifier(classifier)
    from pytorch_lightning.loggers import TensorBoardLogger

    logger = TensorBoardLogger(
        save_dir=str(out), name="tensorboard", version="train", default_hp_metric=False
    )
    monitor = EmbeddingMonitor(
        nearest_k=5, views=("pca",), sample_rate=SAMPLE_RATE, background=not args.quick
    )
    table = MetricsTable()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=args.epochs,
        logger=logger,
        callbacks=[monitor, table],
        default_root_dir=str(out),
        log_every_n_steps=10,
        enable_model_summary=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        deterministic=True,
    )
    trainer.fit(model, datamodule=data)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(f"\ntrained for {args.epochs} epochs: {wall:.0f} s wall, {cpu:.0f} s CPU (this process)")
    log_dir = Path(logger.log_dir)
    groups = latest_group_table(log_dir)
    coverage = class_coverage(groups)
    if groups:
        print(format_groups(groups))
        print("coverage per class:", {c: round(v, 2) for c, v in coverage.items()})
        missed = [c for c, v in coverage.items() if v < 0.05]
        print(f"missed classes (coverage < 0.05): {', '.join(missed) or 'none'}")
    if args.figures is not None and model.last_validation:
        for path in write_figures(model, args.figures):
            print(f"wrote {path}")
    command = (
        f"tensorboard --logdir {out / 'tensorboard'} --samples_per_plugin images=1000,audio=1000"
    )
    print(f"\nlisten to the missed clips (AUDIO tab, embviz/missed_real_audio/NN):\n    {command}")
    return {"rows": table.rows, "groups": groups, "class_coverage": coverage, "log_dir": log_dir}


if __name__ == "__main__":
    main()
