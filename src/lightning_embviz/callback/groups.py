"""Group ids in the callback: parsed per batch, coded per run, merged across ranks, tabled.

What ``validation_step`` may return under ``groups_key`` (default ``"groups"``):

- (B,) group ids of the real rows (the song, the prompt, the identity a row comes from), or
  ``{"real": (B,), "fake": (B',)}``: integers (a tensor, array or list) or strings (a
  list/tuple of ``str``, or a NumPy array of dtype ``str``/``bytes``/``object``)
  (:func:`parse_groups`). They travel with the rows as int64 codes: integers as they are;
  strings through a per-run vocabulary on each rank (:class:`GroupNames`, code = order of
  first appearance), which :func:`merge_group_names` turns into one vocabulary for all
  ranks at the run's end (the sorted union of every rank's names, exchanged once per run
  with ``torch.distributed.all_gather_object``: exact, no hashing, cost one small object per
  rank). The table and the captions show the original strings (:func:`decode_groups`). A
  side whose ids are integers in some batches (or on some ranks) and strings in others has
  no table that run.

At the end of every measured run with groups, rank 0 logs the per-group table
``<prefix>groups`` (:func:`group_table`: :func:`lightning_embviz.engine.groups.
group_scores_from_details` on the run's details, worst first) through
:func:`lightning_embviz.loggers.log_tables`, and queues its worst groups as bars (figure
``<prefix>groups_worst``, :func:`lightning_embviz.figures.groups.worst_groups_figure`) on the
figure worker (:func:`log_group_table`, called by
:func:`lightning_embviz.callback.audio.finish_run`).

Each side's kind of ids is fixed by the run's first batch that gives them (:class:`RunGroups`);
which parts a run keeps (the first batch decides; a batch that breaks this drops its part
with one warning) is :class:`lightning_embviz.callback.audio.RunAudio`'s job, for clips and
groups alike. Bad group data after the sanity check never ends training. No Lightning here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from lightning_embviz.callback.audio import RunAudio

__all__ = [
    "GroupNames",
    "RunGroups",
    "SideIds",
    "decode_groups",
    "group_table",
    "log_group_table",
    "merge_group_names",
    "parse_groups",
]

SideIds = tuple[Optional[Tensor], Optional[np.ndarray]]
"""One side's parsed ids: ``(ids, names)``, (B,) int64 ids or (B,) ``str`` names, or both None."""

# --------------------------------------------------------------------------- parsing


def _names(arr: np.ndarray) -> Optional[np.ndarray]:
    """(B,) ``str`` objects if ``arr`` holds strings (or bytes), else None (numbers)."""
    if arr.dtype.kind == "U":
        return np.asarray(arr.tolist(), dtype=object).reshape(-1)
    if arr.dtype.kind == "S":
        return np.asarray([b.decode("utf-8", "replace") for b in arr.reshape(-1).tolist()], object)
    if arr.dtype.kind != "O":
        return None
    items = arr.reshape(-1).tolist()
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
        return None  # Python ints in an object array: integer ids
    if all(isinstance(v, (str, np.str_)) for v in items):
        return np.asarray([str(v) for v in items], dtype=object)
    if all(isinstance(v, (bytes, np.bytes_)) for v in items):
        return np.asarray([bytes(v).decode("utf-8", "replace") for v in items], dtype=object)
    kinds = sorted({type(v).__name__ for v in items})
    if len(kinds) == 1:
        raise TypeError(f"holds {kinds[0]} values")
    raise TypeError(f"mixes {', '.join(kinds)}; give all integers or all strings")


def _group_ids(value: Any, key: str, name: str, rows: int, where: str) -> SideIds:
    """``(ids, names)``: (B,) int64 ids, or (B,) ``str`` names; (None, None) if not given."""
    if value is None:
        return None, None
    names: Optional[np.ndarray] = None
    t: Optional[Tensor] = None
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError(f"is a single {type(value).__name__}, not one id per row")
        if isinstance(value, Tensor):
            t = value.detach()
        else:
            if isinstance(value, np.ndarray):
                names = _names(value)
                if names is None:
                    t = torch.as_tensor(value.astype(np.int64) if value.dtype == object else value)
            elif isinstance(value, (list, tuple)) and any(
                isinstance(v, (str, bytes, np.str_, np.bytes_)) for v in value
            ):
                # kept as objects (not np.asarray's '<U'), so that a mix with numbers is caught
                arr = np.empty(len(value), dtype=object)
                arr[:] = list(value)
                names = _names(arr)
            else:
                t = torch.as_tensor(value)
    except TypeError as err:
        raise TypeError(
            f"EmbeddingMonitor: {key!r} for the {name} rows must hold integer or string group "
            f"ids, but it {err} ({where})."
        ) from None
    if names is not None:
        if names.shape[0] != rows:
            raise ValueError(
                f"EmbeddingMonitor: {key!r} for the {name} rows has {names.shape[0]} entries but "
                f"there are {rows} {name} rows ({where})."
            )
        return None, names
    assert t is not None
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(
            f"EmbeddingMonitor: {key!r} for the {name} rows must hold integer or string group "
            f"ids, got dtype {t.dtype} ({where})."
        )
    t = t.reshape(-1).cpu().to(torch.int64)
    if t.shape[0] != rows:
        raise ValueError(
            f"EmbeddingMonitor: {key!r} for the {name} rows has {t.shape[0]} entries but there "
            f"are {rows} {name} rows ({where})."
        )
    return t, None


def parse_groups(
    groups: Any, key: str, real_rows: int, fake_rows: int, where: str
) -> tuple[SideIds, SideIds]:
    """Check one batch's group ids (what ``validation_step`` returned under ``key``).

    Args:
        groups: (B,) ids of the real rows, ``{"real": (B,), "fake": (B',)}``, or None.
        key: The callback's ``groups_key``, for messages.
        real_rows: B, the batch's real rows.
        fake_rows: B', its fake rows.
        where: ``"dataloader 0, batch 3"``, for messages.

    Returns:
        ``((real_ids, real_names), (fake_ids, fake_names))``: per side (B,) int64 ids or
        (B,) ``str`` names (an object array), the other None; both None if not given.

    Raises:
        TypeError: Ids that are neither integers nor strings (floats, bools, a mix of both
            kinds, a single string).
        ValueError: Ids of another count than the side's rows.
    """
    if isinstance(groups, Mapping):
        real, fake = groups.get("real"), groups.get("fake")
    else:
        real, fake = groups, None
    return (
        _group_ids(real, key, "real", real_rows, where),
        _group_ids(fake, key, "fake", fake_rows, where),
    )


# --------------------------------------------------------------------------- string groups


class GroupNames:
    """One side's string group ids on one rank during a run: name -> int64 code.

    Codes are given in order of first appearance (0, 1, ...); the rows carry the codes, so
    that they travel between ranks as integers. :func:`merge_group_names` maps them onto
    the run's vocabulary shared by all ranks.
    """

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    @property
    def names(self) -> list[str]:
        """The names by code: ``names[c]`` is the name of code ``c``."""
        return list(self.codes)

    def encode(self, names: np.ndarray) -> Tensor:
        """(B,) ``str`` names -> (B,) int64 codes (new names get the next codes)."""
        codes = self.codes
        return torch.tensor([codes.setdefault(n, len(codes)) for n in names], dtype=torch.int64)


class RunGroups:
    """One run's group ids on one rank: each side's kind of ids and its string names.

    The first batch that gives a side's ids fixes their kind ("int" or "str") for the run;
    string names are coded by the side's :class:`GroupNames`.
    """

    def __init__(self) -> None:
        # per side: "int" or "str", fixed by the first batch that gives ids; string names
        self.kinds: dict[str, str] = {}
        self.names = {"real": GroupNames(), "fake": GroupNames()}

    def string_names(self, side: str) -> Optional[list[str]]:
        """The names of ``side`` ("real"/"fake") by code, or None (integer ids or none)."""
        if self.kinds.get(side) != "str":
            return None
        return self.names[side].names

    def encode(
        self, side: str, ids: Optional[Tensor], names: Optional[np.ndarray], where: str
    ) -> tuple[Optional[Tensor], Optional[str]]:
        """One batch's ids of ``side`` -> ``(codes, problem)``.

        Args:
            side: ``"real"`` or ``"fake"``.
            ids: (B,) int64 ids, or None.
            names: (B,) ``str`` names (an object array), or None.
            where: For messages.

        Returns:
            (B,) int64 codes (integer ids as they are, names coded) and None; or None and
            why, when the kind of ids differs from the run's first batch; (None, None)
            without ids.
        """
        if ids is None and names is None:
            return None, None
        kind = "int" if names is None else "str"
        first = self.kinds.setdefault(side, kind)
        if kind != first:
            return None, (
                f"the {side} group ids are {'strings' if kind == 'str' else 'integers'} "
                f"({where}) but were {'strings' if first == 'str' else 'integers'} in the run's "
                "first batch"
            )
        if names is not None:
            return self.names[side].encode(names), None
        return ids, None


_SIDES = ("real", "fake")


def merge_group_names(
    real: Any,
    fake: Any,
    run: RunAudio,
    *,
    distributed: bool,
    all_gather: Any = None,
    all_gather_object: Any = None,
) -> tuple[Any, Any, dict[str, Optional[list[str]]], Optional[str]]:
    """Put string group ids of every rank on one vocabulary, before the rows are gathered.

    Each rank coded its names in order of first appearance (:class:`GroupNames`), so code 3
    may be another name on another rank. Here the ranks agree on the run's vocabulary: the
    sorted union of all ranks' names (one ``all_gather_object`` of each rank's name list,
    only when some rank has string ids; a small int all-gather of four flags decides that,
    so every rank takes the same path). Each rank then recodes its rows to positions in that
    list. Exact (no hashing) and the same without DDP, so the codes, and the table, equal one
    process's. A side with integer ids on one rank and strings on another loses its ids on
    every rank (``problem`` says so); integer ids are left as they are.

    Every rank must call this under ``distributed`` (collectives).

    Args:
        real: This rank's real :class:`~lightning_embviz.callback.buffer.EmbeddingSet`.
        fake: Its fake rows.
        run: This rank's :class:`~lightning_embviz.callback.audio.RunAudio` of the run
            (the names).
        distributed: Whether the ranks take part.
        all_gather: ``tensor -> list of tensors, one per rank`` (tests); defaults to
            ``torch.distributed.all_gather``.
        all_gather_object: ``object -> list of objects, one per rank`` (tests); defaults to
            ``torch.distributed.all_gather_object``.

    Returns:
        ``(real, fake, names, problem)``: the rows with recoded ids, ``{"real": names or
        None, "fake": ...}`` (the vocabulary by code), and a problem or None.
    """
    rows = {"real": real, "fake": fake}
    local = {side: run.string_names(side) for side in _SIDES}
    flags = []
    for side in _SIDES:
        has = rows[side].groups is not None and len(rows[side]) > 0
        flags += [int(has and local[side] is not None), int(has and local[side] is None)]
    mine = torch.tensor(flags, dtype=torch.int64)
    if distributed:
        if all_gather is None:
            from lightning_embviz.callback.buffer import _dist_all_gather, collective_device

            all_gather = _dist_all_gather(collective_device())
        total = torch.stack([t.cpu() for t in all_gather(mine)]).amax(dim=0)
    else:
        total = mine
    names: dict[str, Optional[list[str]]] = {"real": None, "fake": None}
    problems: list[str] = []
    strings: list[str] = []
    for i, side in enumerate(_SIDES):
        is_str, is_int = bool(total[2 * i]), bool(total[2 * i + 1])
        if is_str and is_int:
            rows[side] = dataclasses.replace(rows[side], groups=None)
            problems.append(f"the {side} group ids are strings on some ranks, integers on others")
        elif is_str:
            strings.append(side)
    if strings:
        payload = {side: local[side] or [] for side in strings}
        if distributed:
            if all_gather_object is None:
                everyone: list[Any] = [None] * torch.distributed.get_world_size()
                torch.distributed.all_gather_object(everyone, payload)
            else:
                everyone = list(all_gather_object(payload))
        else:
            everyone = [payload]
        for side in strings:
            vocabulary = sorted(set().union(*(set(p[side]) for p in everyone)))
            names[side] = vocabulary
            ids = rows[side].groups
            if ids is None or not len(ids) or not local[side]:
                continue
            position = {name: code for code, name in enumerate(vocabulary)}
            table = torch.tensor([position[n] for n in local[side] or []], dtype=torch.int64)
            recoded = table[ids.cpu().to(torch.int64)].to(ids.device)
            rows[side] = dataclasses.replace(rows[side], groups=recoded)
    problem = None
    if problems:
        problem = "; ".join(problems) + " (give one kind of group ids everywhere)"
    return rows["real"], rows["fake"], names, problem


def decode_groups(ids: Optional[Tensor], names: Optional[list[str]]) -> Optional[np.ndarray]:
    """(N,) codes -> (N,) names (object array of ``str``), or the int64 ids as they are."""
    if ids is None:
        return None
    codes = ids.detach().cpu().to(torch.int64).numpy()
    if names is None:
        return codes
    return np.asarray(names, dtype=object)[codes] if len(codes) else np.zeros(0, dtype=object)


# --------------------------------------------------------------------------- tables


def group_table(
    result: Any,
    real_names: Optional[list[str]] = None,
    fake_names: Optional[list[str]] = None,
) -> Optional[dict[str, np.ndarray]]:
    """The per-group table of a computed run (columns of ``GROUP_COLUMNS``), or None.

    :func:`~lightning_embviz.engine.groups.group_scores_from_details` on the run's details
    and rows (after the cap and the finiteness check), worst first.

    Args:
        result: The run's :class:`~lightning_embviz.callback.evaluation.Evaluation`.
        real_names: The run's real group names by code (:func:`merge_group_names`), or None
            for integer ids.
        fake_names: The same for the fake rows.

    Returns:
        ``{column: (G,) array}``; the ``group`` column holds int64 ids, or the original
        strings (an object array) when the ids were strings.
    """
    from lightning_embviz.engine.groups import GROUP_COLUMNS, group_scores_from_details

    real, fake = result.real, result.fake
    if real is None or fake is None or result.details is None:
        return None
    if real.groups is None and fake.groups is None:
        return None
    from lightning_embviz.callback.evaluation import details_on_cpu

    real_ids = decode_groups(real.groups, real_names)
    fake_ids = decode_groups(fake.groups, fake_names)
    rows = group_scores_from_details(
        details_on_cpu(result.details),
        real.features.detach().cpu(),
        fake.features.detach().cpu(),
        real_ids,
        fake_ids,
    )
    if not rows:
        return None
    columns = {name: [row.as_dict()[name] for row in rows] for name in GROUP_COLUMNS}
    table: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if name == "group" and any(isinstance(v, str) for v in values):
            table[name] = np.asarray([str(v) for v in values], dtype=object)
        elif name in ("group", "count"):
            table[name] = np.asarray(values, dtype=np.int64)
        elif name == "side":
            table[name] = np.asarray(values, dtype=object)
        else:
            table[name] = np.asarray(values, dtype=np.float64)
    return table


def _markdown(table: Mapping[str, np.ndarray], limit: int = 20) -> str:
    names = list(table)
    count = len(next(iter(table.values())))

    def cell(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            return "" if math.isnan(value) else f"{value:.4g}"
        return str(value).replace("|", "\\|").replace("\n", " ")  # a name is one cell

    lines = [
        f"**Per-group scores** ({count} groups, worst first"
        + (f", first {limit} shown)" if count > limit else ")"),
        "",
        "| " + " | ".join(names) + " |",
        "|" + "---|" * len(names),
    ]
    for i in range(min(count, limit)):
        lines.append("| " + " | ".join(cell(table[n][i]) for n in names) + " |")
    return "\n".join(lines)


@dataclasses.dataclass
class _WorstGroups:
    """Draws the per-group table's worst groups in the figure worker (a function of the title).

    :func:`lightning_embviz.figures.groups.worst_groups_figure`, logged as
    ``<prefix>groups_worst`` next to the ``<prefix>groups`` table.
    """

    table: dict[str, np.ndarray]

    def __call__(self, title: str) -> Any:
        from lightning_embviz.figures.groups import worst_groups_figure

        return worst_groups_figure(self.table, title=f"{title}\nworst groups")


def log_group_table(
    result: Any,
    real_names: Optional[list[str]],
    fake_names: Optional[list[str]],
    *,
    prefix: str,
    suffix: str,
    loggers: Any,
    step: int,
    root: Optional[str],
) -> Optional[str]:
    """Log a computed run's per-group table and queue its worst groups' bars (rank 0).

    The table (:func:`group_table`) goes to ``<prefix>groups<suffix>`` through
    :func:`lightning_embviz.loggers.log_tables` (with a markdown card of its first rows);
    the bars go into ``result.figures["groups_worst"]`` (drawn by the figure worker with the
    run's other figures). Nothing is logged without groups.

    Args:
        result: Rank 0's :class:`~lightning_embviz.callback.evaluation.Evaluation`.
        real_names: The run's real group names by code, or None for integer ids.
        fake_names: The same for the fake rows.
        prefix: The callback's metric prefix.
        suffix: ``"/dataloader_idx_1"`` or ``""``.
        loggers: The Trainer's loggers.
        step: The scalars' step.
        root: Where files go without a logger.

    Returns:
        A problem to warn about, or None. Never raises: a table never ends a training run.
    """
    from lightning_embviz.loggers import log_tables

    try:
        table = group_table(result, real_names, fake_names)
        if table is not None:
            name = f"{prefix}groups{suffix}"
            log_tables(
                loggers,
                {name: table},
                step,
                markdown=_markdown(table),
                markdown_tag=name,
                fallback_dir=root,
            )
            result.figures["groups_worst"] = _WorstGroups(table)  # bars of the worst
    except Exception as err:  # a table never ends a training run
        return f"the per-group table failed ({type(err).__name__}: {err})"
    return None
