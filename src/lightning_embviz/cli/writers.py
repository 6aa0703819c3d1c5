"""The files report and compare write besides the figures' pixels: PNGs, JSON, CSV tables."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    import numpy as np

__all__ = ["json_key", "json_safe", "write_figures", "write_json", "write_sample_tables"]


def write_figures(figures: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """Write each figure to ``out/<prefix><key>.png``; return the paths, in order."""
    from lightning_embviz.plotting import figure_to_png

    written = []
    for key, fig in figures.items():
        path = out / f"{prefix}{key}.png"
        path.write_bytes(figure_to_png(fig))
        written.append(path)
    return written


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as ``null`` (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_key(value: Any) -> str:
    """A label as a plain Python value (NumPy scalars unwrapped), for a JSON key."""
    return value.item() if hasattr(value, "item") else value


def write_sample_tables(
    details: Any,
    real_labels: Optional[np.ndarray],
    fake_labels: Optional[np.ndarray],
    out: Path,
    fake_columns: Optional[dict[str, np.ndarray]] = None,
) -> list[Path]:
    """Write ``out/samples_real.csv`` and ``out/samples_fake.csv``; return their paths.

    ``fake_columns`` (M,) each, e.g. ``nearest_train_index``, are appended to the fakes' table.
    """
    from lightning_embviz.samples import sample_tables, write_csv

    real_rows, fake_rows = sample_tables(details, real_labels=real_labels, fake_labels=fake_labels)
    fake_rows = {**fake_rows, **(fake_columns or {})}
    paths = [out / "samples_real.csv", out / "samples_fake.csv"]
    write_csv(real_rows, paths[0])
    write_csv(fake_rows, paths[1])
    return paths


def write_json(value: Any, path: Path) -> None:
    """Write ``value`` to ``path`` as indented JSON (NaN and infinities as ``null``)."""
    path.write_text(json.dumps(json_safe(value), indent=2) + "\n", encoding="utf-8")
