"""What each command was asked to do: a frozen options object built from the parsed arguments.

The argparse namespace is read once, by :func:`options_of`, and never changed; the commands
read these objects. ``nearest_k`` of report and compare is what ``-k`` said (None: the
default, resolved once REAL is read, see :class:`~lightning_embviz.cli.files.RealSide`).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

__all__ = ["CompareOptions", "ReferenceOptions", "ReportOptions", "options_of"]


@dataclass(frozen=True, kw_only=True)
class ViewOptions:
    """The options report and compare share (``REAL`` and ``parser._add_common``)."""

    real: str
    nearest_k: Optional[int]
    out: Path
    projection: tuple[str, ...]
    max_samples: int
    seed: int
    confidence: Optional[float]
    tsne_backend: str
    quiet: bool
    metrics: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ReportOptions(ViewOptions):
    """``embviz report REAL FAKE``: one fake set, optional labels and image files."""

    fake: str
    labels: Optional[str]
    fake_labels: Optional[str]
    real_images: Optional[str]
    fake_images: Optional[str]
    gallery_size: int
    embedder: Optional[str] = None
    train: Optional[str] = None
    train_images: Optional[str] = None
    real_audio: Optional[str] = None
    fake_audio: Optional[str] = None
    sample_rate: Optional[int] = None
    audio_seconds: float = 10.0
    groups: Optional[str] = None
    fake_groups: Optional[str] = None


@dataclass(frozen=True, kw_only=True)
class CompareOptions(ViewOptions):
    """``embviz compare REAL FAKE...``: several fake sets, optional panel names."""

    fakes: tuple[str, ...]
    names: Optional[str]
    embedder: Optional[str] = None
    real_audio: Optional[str] = None  # the audio and group options (cli/audio.py)
    fake_audio: Optional[str] = None  # comma-separated, one per FAKE
    sample_rate: Optional[int] = None
    audio_seconds: float = 10.0
    groups: Optional[str] = None
    fake_groups: Optional[str] = None  # one file for all FAKE, or one per FAKE


@dataclass(frozen=True, kw_only=True)
class ReferenceOptions:
    """``embviz reference REAL -k K[,K...] -o FILE``; ``nearest_k`` lists every k to fit."""

    real: str
    nearest_k: Optional[tuple[int, ...]]  # None: -k not given (DEFAULT_K for a RealReference)
    out: Path
    quiet: bool
    train: bool = False  # --train: fit a TrainReference (cli/reference.py)
    cells: Optional[int] = None
    seed: int = 0
    embedder: Optional[str] = None


Options = Union[ReportOptions, CompareOptions, ReferenceOptions]
_KINDS: dict[str, type[Any]] = {
    "report": ReportOptions,
    "compare": CompareOptions,
    "reference": ReferenceOptions,
}


def options_of(args: argparse.Namespace) -> Options:
    """The frozen options of a parsed command line (``args.command`` is set).

    Every field is read from the argument of the same name; ``out`` becomes a
    :class:`~pathlib.Path` and lists become tuples.
    """
    kind = _KINDS[args.command]
    values: dict[str, Any] = {}
    for field in dataclasses.fields(kind):
        value = getattr(args, field.name)
        if field.name == "out":
            value = Path(value)
        elif isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    options: Options = kind(**values)
    return options
