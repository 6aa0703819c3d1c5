"""The optional metrics of one evaluation: Vendi, kernel distance, FD-infinity, clipped PRDC.

Asked for by name (``EmbeddingMonitor(extra_metrics=...)``, ``embviz report/compare
--metrics``); each name adds the keys of :data:`lightning_embviz._keys.EXTRA_KEYS`:

- ``vendi``: ``vendi`` (the fakes) and ``vendi_real`` (the reals), :func:`~.kernels.vendi_score`;
- ``kd``: ``kd`` and its jackknife standard error ``kd_se``, :func:`~.kernels.kernel_distance`
  (an unbiased estimate: small negative values are legitimate);
- ``fd_inf``: ``fd_inf``, :func:`~.frechet.fd_infinity` against the fitted real side;
- ``clipped``: ``clipped_density`` and ``clipped_coverage``,
  :func:`~.balls.clipped_density_coverage` with the real radii of the fitted reference.

Nothing here raises for bad data: a metric that cannot be computed is NaN and comes back
with a message (:func:`extra_scalars`), which the callback warns about once and the command
writes into ``metrics.json``. No Lightning here (the ``embviz`` command imports this module).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional

from lightning_embviz._keys import EXTRA_KEYS, EXTRA_METRICS

if TYPE_CHECKING:
    from lightning_embviz._arrays import ArrayLike
    from lightning_embviz.callback.evaluation import Evaluation
    from lightning_embviz.engine.frechet import FrechetReference
    from lightning_embviz.engine.reference import RealReference

__all__ = ["ExtraMetrics", "extra_keys", "extra_scalars", "fake_scores", "parse_extra_metrics"]

Problems = list[tuple[str, str]]


def parse_extra_metrics(names: Iterable[Any]) -> tuple[str, ...]:
    """Check metric names against :data:`~lightning_embviz._keys.EXTRA_METRICS`.

    Args:
        names: Names such as ``("vendi", "kd")``, any order, each at most once.

    Returns:
        The names in their canonical order (``vendi, kd, fd_inf, clipped``).

    Raises:
        ValueError: On an unknown or repeated name; the message lists the allowed ones.
    """
    names = list(names)
    allowed = ", ".join(EXTRA_METRICS)
    unknown = [n for n in names if n not in EXTRA_METRICS]
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        raise ValueError(f"unknown metric {listed}; the extra metrics are {allowed}")
    if len(set(names)) != len(names):
        raise ValueError(f"a metric is named twice in {names}; the extra metrics are {allowed}")
    return tuple(n for n in EXTRA_METRICS if n in names)


def extra_keys(names: Iterable[str]) -> tuple[str, ...]:
    """Every key the named metrics add, in order (``vendi`` -> ``vendi``, ``vendi_real``)."""
    return tuple(key for name in names for key in EXTRA_KEYS[name])


def extra_scalars(
    real: ArrayLike,
    fake: ArrayLike,
    names: Iterable[str],
    *,
    nearest_k: int,
    seed: int = 0,
    reference: Optional[RealReference] = None,
    frechet: Optional[FrechetReference] = None,
    vendi_real: Optional[float] = None,
) -> tuple[dict[str, float], Problems]:
    """The named metrics of one real and one fake set; never raises for data.

    Args:
        real: (N, D) real rows (finite).
        fake: (M, D) fake rows, same D.
        names: Metric names from :data:`~lightning_embviz._keys.EXTRA_METRICS`.
        nearest_k: k of the clipped density/coverage balls.
        seed: Seed of FD-infinity's subsets.
        reference: The fitted real k-NN radii (``nearest_k`` among its k) to reuse, or None;
            also the owner of the reals' kept kernel sums (it is refitted when they change).
        frechet: The fitted real side of the Fréchet distance to reuse, or None.
        vendi_real: The reals' Vendi score if already known (the reals did not change).

    Returns:
        ``(values, problems)``: every key of :func:`extra_keys` (NaN where a metric could not
        be computed) and one ``(name, message)`` per metric that failed.
    """
    from lightning_embviz.engine.balls import clipped_density_coverage
    from lightning_embviz.engine.frechet import FrechetReference, fd_infinity
    from lightning_embviz.engine.kernels import kernel_distance_kept, vendi_score

    names = tuple(names)
    values = dict.fromkeys(extra_keys(names), math.nan)
    problems: Problems = []
    for name in names:
        try:
            if name == "vendi":
                values["vendi"] = vendi_score(fake)
                values["vendi_real"] = vendi_score(real) if vendi_real is None else vendi_real
            elif name == "kd":
                values.update(kernel_distance_kept(real, fake, reference=reference))
            elif name == "fd_inf":
                if frechet is None:
                    frechet = FrechetReference(real)
                values["fd_inf"] = fd_infinity(frechet, fake, seed=seed).fd_inf
            elif name == "clipped":
                side: Any = reference
                if reference is None or nearest_k not in reference.nearest_ks:
                    side = real
                values.update(clipped_density_coverage(side, fake, nearest_k))
        except Exception as err:  # bad data or too few rows: NaN, reported, never raised
            problems.append((name, f"{type(err).__name__}: {err}"))
            for key in EXTRA_KEYS[name]:
                values[key] = math.nan
    return values, problems


def fake_scores(real: Any, fake: ArrayLike, nearest_k: int) -> dict[str, Any]:
    """The per-fake realism and rarity scores, as NumPy columns for the fakes' table.

    Args:
        real: (N, D) real rows, or a fitted :class:`~lightning_embviz.RealReference` with
            ``nearest_k`` among its k (its radii are reused).
        fake: (M, D) fake rows, same D.
        nearest_k: k of the real balls.

    Returns:
        ``{"realism_score": (M,), "rarity_score": (M,)}`` float64 arrays
        (:func:`~lightning_embviz.metrics.realism_score`: inf on a kept real point;
        :func:`~lightning_embviz.metrics.rarity_score`: NaN outside every real ball).

    Raises:
        ValueError: On bad shapes or values (the functions' messages).
    """
    from lightning_embviz.engine.balls import rarity_score, realism_score

    return {
        "realism_score": realism_score(real, fake, nearest_k).cpu().numpy(),
        "rarity_score": rarity_score(real, fake, nearest_k).cpu().numpy(),
    }


class ExtraMetrics:
    """The callback's extra metrics: one evaluated run in, the extra scalars and notes out.

    Keeps the reals' Vendi score per dataloader while the fitted real side is reused (the
    real rows did not change); the Fréchet real side and the k-NN radii come with the
    :class:`~lightning_embviz.callback.evaluation.Evaluation`. Under DDP the Vendi scores
    are computed by every rank, each accumulating its share of the row blocks, with one
    all-reduce (:func:`~lightning_embviz.engine.kernels.vendi_scores_distributed`: the same
    bits as one process); the other metrics on rank 0. With ``clipped`` and ``tables``, the
    per-fake ``realism_score`` and ``rarity_score`` go into the fakes' table
    (``Evaluation.fake_columns``).

    Args:
        names: Checked metric names (:func:`parse_extra_metrics`).
        nearest_k: k of the clipped balls (the callback's first k).
        seed: Seed of FD-infinity's subsets.
        tables: The per-sample tables are logged (``log_samples``): add the fakes' realism
            and rarity scores to them when ``clipped`` is asked for.
    """

    def __init__(
        self, names: tuple[str, ...], nearest_k: int, seed: int, tables: bool = False
    ) -> None:
        self.names, self.nearest_k, self.seed = names, nearest_k, seed
        self.tables = tables
        self.keys = extra_keys(names)
        self._vendi_real: dict[int, tuple[Any, float]] = {}

    def __call__(
        self,
        result: Evaluation,
        dataloader_idx: int = 0,
        where: str = "",
        *,
        lead: bool = True,
        distributed: bool = False,
    ) -> tuple[dict[str, float], list[tuple[Optional[str], str]]]:
        """The extra scalars of one run (NaN unless it was computed) and notes to warn about.

        Args:
            result: The run's evaluation (``status == "ok"`` for values).
            dataloader_idx: The validation dataloader (for the cached real Vendi score).
            where: ``" of validation dataloader 1"`` or ``""``, for messages.
            lead: This is rank 0 (or the only process): it computes every metric. Other
                ranks only take part in the shared Vendi score.
            distributed: Every rank calls this with the same gathered rows (a collective
                when ``vendi`` is asked for).

        Returns:
            ``(values, notes)``: every key of :attr:`keys`; ``(once_id, message)`` notes.
        """
        values = dict.fromkeys(self.keys, math.nan)
        computed = result.status == "ok" and result.real is not None and result.fake is not None
        problems: Problems = []
        table_problem: Optional[str] = None
        names = self.names
        if distributed and "vendi" in names:
            names = tuple(n for n in names if n != "vendi")
            problem = self._shared_vendi(result, computed, values)
            if problem is not None and lead:
                problems.append(("vendi", problem))
        if lead and computed and names:
            assert result.real is not None and result.fake is not None
            frechet = getattr(result, "frechet", None)
            cached = self._vendi_real.get(dataloader_idx)
            known = (
                cached[1]
                if cached is not None and frechet is not None and cached[0] is frechet
                else None
            )
            more, failed = extra_scalars(
                result.real.features,
                result.fake.features,
                names,
                nearest_k=self.nearest_k,
                seed=self.seed,
                reference=result.reference,
                frechet=frechet,
                vendi_real=known,
            )
            values.update(more)
            problems += failed
            if frechet is not None and not math.isnan(more.get("vendi_real", math.nan)):
                self._vendi_real[dataloader_idx] = (frechet, more["vendi_real"])
            if "clipped" in names and self.tables and "clipped" not in dict(failed):
                table_problem = self._fake_columns(result)
        notes: list[tuple[Optional[str], str]] = [
            (
                f"extra-{name}",
                f"EmbeddingMonitor: could not compute the extra metric {name!r}{where} "
                f"({message}); logged NaN for {', '.join(EXTRA_KEYS[name])}.",
            )
            for name, message in problems
        ]
        if table_problem is not None:
            notes.append(
                (
                    "extra-clipped-table",
                    "EmbeddingMonitor: the fakes' table lacks its realism_score and "
                    f"rarity_score columns{where} ({table_problem}); the metrics were logged.",
                )
            )
        return values, notes

    def _shared_vendi(
        self, result: Evaluation, computed: bool, values: dict[str, float]
    ) -> Optional[str]:
        """Both Vendi scores with the ranks' one all-reduce (every rank calls this)."""
        from lightning_embviz.engine.kernels import vendi_scores_distributed

        # A rank without a computed run passes None: every rank still meets in the same
        # collectives and fails together (NaN), whatever the others decided.
        sets = [
            result.fake.features if computed and result.fake is not None else None,
            result.real.features if computed and result.real is not None else None,
        ]
        try:
            values["vendi"], values["vendi_real"] = vendi_scores_distributed(sets)
        except Exception as err:  # NaN, reported on rank 0, never raised
            return None if not computed else f"{type(err).__name__}: {err}"
        return None

    def _fake_columns(self, result: Evaluation) -> Optional[str]:
        """Put the fakes' realism and rarity scores into ``result.fake_columns``."""
        assert result.real is not None and result.fake is not None
        reference = result.reference
        real: Any = result.real.features
        if reference is not None and self.nearest_k in reference.nearest_ks:
            real = reference  # its radii are reused
        try:
            columns = fake_scores(real, result.fake.features, self.nearest_k)
        except Exception as err:  # a table column never ends a training run
            return f"{type(err).__name__}: {err}"
        result.fake_columns.update(columns)
        return None
