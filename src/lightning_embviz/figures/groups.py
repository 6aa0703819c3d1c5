"""The worst groups as horizontal bars: which songs, prompts or identities are served worst.

One panel per side of the per-group table (:func:`lightning_embviz.engine.groups.
per_group_scores`): real groups with their coverage and recall, fake groups with their
precision and density, the worst group at the top (the table's order). A real group whose
bars are empty is one the generator never comes near.

Drawn on a ``Figure`` with the Agg canvas attached (no pyplot), no Lightning.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
from matplotlib.figure import Figure

from lightning_embviz.figures.style import METRIC_COLORS, new_figure, set_title

__all__ = ["GROUPS_SHOWN", "worst_groups_figure"]

GROUPS_SHOWN = 20
"""At most this many groups (both sides together) are drawn by default."""

_SIDES = {
    "real": ("coverage", "recall"),
    "fake": ("precision", "density"),
}
_LABEL_CHARS = 24  # longer group names are cut with an ellipsis


def _rows_of(table: Any) -> list[dict[str, Any]]:
    """Rows as dicts from a list of ``GroupScore`` (or dicts) or a column mapping."""
    if isinstance(table, Mapping):
        columns = {name: list(np.asarray(values, dtype=object)) for name, values in table.items()}
        missing = {"group", "side", "count"} - set(columns)
        if missing:
            raise ValueError(
                f"`table` must have the columns group, side and count; {sorted(missing)} "
                "are missing."
            )
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"`table` has columns of unequal length: {sorted(lengths)}.")
        count = lengths.pop() if lengths else 0
        return [{name: values[i] for name, values in columns.items()} for i in range(count)]
    if isinstance(table, (str, bytes)) or not isinstance(table, Sequence):
        raise TypeError(
            "`table` must be a list of GroupScore rows or a mapping column -> values, got "
            f"{type(table).__name__}."
        )
    rows = []
    for row in table:
        if hasattr(row, "as_dict"):
            rows.append(row.as_dict())
        elif isinstance(row, Mapping):
            rows.append(dict(row))
        else:
            raise TypeError(f"a row of `table` must be a GroupScore or a mapping, got {row!r}.")
    return rows


def _value(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key, math.nan)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _label(row: Mapping[str, Any]) -> str:
    name = str(row["group"])
    if len(name) > _LABEL_CHARS:
        name = name[: _LABEL_CHARS - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return f"{name} (n={int(row['count'])})"


def _share(counts: dict[str, int], limit: int) -> dict[str, int]:
    """Split ``limit`` bars between the sides: evenly, the unused share to the other side."""
    sides = [s for s in _SIDES if counts.get(s, 0)]
    shown = {s: 0 for s in _SIDES}
    if not sides:
        return shown
    fair = limit // len(sides)
    for side in sides:
        shown[side] = min(counts[side], fair)
    spare = limit - sum(shown.values())
    for side in sides:
        extra = min(spare, counts[side] - shown[side])
        shown[side] += extra
        spare -= extra
    return shown


def worst_groups_figure(
    table: Union[Sequence[Any], Mapping[str, Any]],
    *,
    limit: int = GROUPS_SHOWN,
    title: str | None = None,
) -> Figure:
    """Horizontal bars of the worst groups: real coverage/recall, fake precision/density.

    The rows are drawn in the order given (the per-group table is sorted worst first), the
    first at the top. Real groups get two bars, ``coverage`` and ``recall``; fake groups
    ``precision`` and ``density`` (a dashed line marks density 1, a fake group spread like
    the real set). A NaN value draws no bar and reads ``n/a``. Each bar row is labelled
    ``group (n=count)`` and the first value is written at the end of its bar.

    Args:
        table: the per-group rows, worst first: a list of
            :class:`~lightning_embviz.engine.groups.GroupScore` (or of dicts with their
            fields), or a mapping column -> (R,) values with at least ``group``, ``side`` and
            ``count`` (the callback's table, ``GROUP_COLUMNS``).
        limit: the most groups drawn, both sides together (split evenly when both are
            given, a side's unused share going to the other).
        title: the first title line, or None.

    Returns:
        A Figure (Agg canvas attached) with one axes per side present, real first; with no
        rows, one empty axes that says so.

    Raises:
        TypeError: ``table`` is neither a list of rows nor a mapping of columns, or
            ``limit`` is not an int.
        ValueError: a mapping without the ``group``/``side``/``count`` columns or with
            columns of unequal length, a side other than ``"real"``/``"fake"``, or
            ``limit`` below 1.
    """
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
        raise TypeError(f"`limit` must be a positive int, got {limit!r}.")
    if int(limit) < 1:
        raise ValueError(f"`limit` must be a positive int, got {limit!r}.")
    rows = _rows_of(table)
    for row in rows:
        if row.get("side") not in _SIDES:
            raise ValueError(f"a row's side must be 'real' or 'fake', got {row.get('side')!r}.")
    by_side = {side: [r for r in rows if r["side"] == side] for side in _SIDES}
    shown = _share({s: len(v) for s, v in by_side.items()}, int(limit))
    sides = [s for s in _SIDES if shown[s]]
    height = 1.5 + 0.34 * max([shown[s] for s in sides] + [2])
    fig = new_figure((6.0 * max(len(sides), 1), height))
    if not sides:
        ax = fig.add_subplot()
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no groups", ha="center", va="center", fontsize=9)
        set_title(fig, title or "worst groups", "no per-group rows")
        return fig
    for panel, side in enumerate(sides, start=1):
        ax = fig.add_subplot(1, len(sides), panel)
        _draw_side(ax, by_side[side][: shown[side]], side)
        total = len(by_side[side])
        ax.set_title(
            f"{side} groups: the {shown[side]} worst of {total}"
            if shown[side] < total
            else f"{side} groups ({total})",
            fontsize=9,
        )
    subtitle = "worst first; empty bars: a real group the generator never reaches"
    set_title(fig, title or "worst groups", subtitle)
    return fig


def _draw_side(ax: Any, rows: list[dict[str, Any]], side: str) -> None:
    keys = _SIDES[side]
    y = np.arange(len(rows), dtype=np.float64)
    bar_h = 0.8 / len(keys)
    top = 1.0
    for i, key in enumerate(keys):
        values = np.array([_value(r, key) for r in rows])
        finite = np.isfinite(values)
        if finite.any():
            top = max(top, float(values[finite].max()))
        ax.barh(
            y + (i - (len(keys) - 1) / 2) * bar_h,
            np.where(finite, values, 0.0),
            bar_h,
            label=key,
            color=METRIC_COLORS[key],
        )
    first = keys[0]
    for yi, row in zip(y, rows):
        value = _value(row, first)
        text = "n/a" if math.isnan(value) else f"{value:.2f}"
        ax.text(
            (0.0 if math.isnan(value) else value) + 0.01 * top,
            yi - (len(keys) - 1) / 2 * bar_h,
            text,
            va="center",
            fontsize=7,
        )
    if side == "fake":
        ax.axvline(1.0, color="#555555", linestyle="--", linewidth=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([_label(r) for r in rows], fontsize=7)
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the worst group at the top
    ax.set_xlim(0.0, top * 1.12)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="lower right")
