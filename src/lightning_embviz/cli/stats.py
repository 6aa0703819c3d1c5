"""The statistics rule of ``embviz compare --confidence``: which fake sets differ from the best.

For each metric the best set is the one closest to the metric's ideal (:data:`BEST_RULE`);
a set is marked when a two-sample z test on the standard errors puts it beyond the
two-sided normal quantile of the confidence level. The rule and its caveats are told in
``embviz compare -h`` (:data:`lightning_embviz.cli.help.COMPARE_EPILOG`).
"""

from __future__ import annotations

import math
from typing import Any, Optional

from lightning_embviz._keys import METRIC_KEYS as METRICS

__all__ = ["BEST_RULE", "METRICS", "difference_rule", "level", "mark_differences", "z_critical"]


def level(confidence: float) -> str:
    """A confidence level as a percentage: ``95%`` for 0.95."""
    return f"{confidence * 100:g}%"


def z_critical(confidence: float) -> float:
    """The two-sided standard normal quantile of ``confidence`` (1.96 for 0.95)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


BEST_RULE = "precision, recall, coverage: highest; density: closest to 1; fd: lowest"


def shortfall(metric: str, value: float) -> float:
    """How far ``value`` is from the metric's ideal; smaller is better (see ``BEST_RULE``)."""
    if metric == "fd":
        return value
    if metric == "density":
        # Density is 1 in expectation when the fake and real distributions agree; above 1
        # the fakes crowd into dense real regions, below 1 they fall outside the real balls.
        return abs(value - 1.0)
    return -value


def mark_differences(rows: list[dict[str, Any]], confidence: float) -> dict[str, Optional[str]]:
    """Mark, for each metric, the rows that differ from the best row beyond the intervals.

    Adds ``<metric>_z`` (the z statistic against the best row; 0 for the best row itself,
    NaN without a standard error) and ``<metric>_differs`` (``z`` above the two-sided normal
    quantile of ``confidence``) to every row. The rule and its caveats are in the help text
    of ``embviz compare``.

    Args:
        rows: one dict per fake set with ``name``, ``<metric>`` and ``<metric>_se``.
        confidence: the level of the intervals, in (0, 1).

    Returns:
        The name of the best row for each metric (the first one on ties). A row with
        ``degenerate`` true (a collapsed fake set) is never best; None for a metric when
        every row is degenerate (then every ``z`` is NaN and nothing is marked).
    """
    critical = z_critical(confidence)
    best: dict[str, Optional[str]] = {}
    candidates = [i for i, row in enumerate(rows) if not row.get("degenerate")]
    for metric in METRICS:
        if not candidates:
            best[metric] = None
            for row in rows:
                row[f"{metric}_z"] = math.nan
                row[f"{metric}_differs"] = False
            continue
        gaps = [shortfall(metric, row[metric]) for row in rows]
        top = min(candidates, key=gaps.__getitem__)
        best[metric] = rows[top]["name"]
        top_se = rows[top][f"{metric}_se"]
        for i, row in enumerate(rows):
            gap = gaps[i] - gaps[top]
            scale = math.hypot(row[f"{metric}_se"], top_se)
            if i == top:
                z = 0.0
            elif math.isnan(scale):  # fd without an interval (no more samples than features)
                z = math.nan
            elif scale == 0.0:  # both standard errors estimated as 0
                z = math.inf if gap > 0 else 0.0
            else:
                z = gap / scale
            row[f"{metric}_z"] = z
            row[f"{metric}_differs"] = bool(z > critical)  # NaN: not marked
    return best


def difference_rule(confidence: float) -> str:
    """The marking rule of ``embviz compare`` in one line, for the table and metrics.json."""
    return (
        f"* = differs from the best set: z = (g - g_best) / sqrt(se^2 + se_best^2) > "
        f"{z_critical(confidence):.3f} (two-sided normal, {level(confidence)}), g the distance "
        f"from the ideal ({BEST_RULE}); approximate, the sets share one real set "
        "(see `embviz compare -h`)"
    )
