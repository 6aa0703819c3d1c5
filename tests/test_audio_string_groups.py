"""String group ids (song names, prompts) in the callback: parsed, coded, merged across ranks."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from _models import DDPGAN, indexed_dataset, make_data, make_module_class, trainer_kwargs
from lightning_embviz import EmbeddingMonitor
from lightning_embviz.callback.audio import RunAudio, parse_audio
from lightning_embviz.callback.buffer import EmbeddingSet
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.groups import merge_group_names
from lightning_embviz.engine.groups import GROUP_COLUMNS, per_group_scores

TinyGAN = make_module_class(pl)
# names a CSV and a markdown table must keep whole: a comma, a pipe, a quote, non-ASCII
SONGS = np.array(['song "a", live', "b|side", "Çà et là"])
PROMPTS = ("a prompt", "another prompt")


def with_string_groups(module: Any, out: dict[str, Any], batch: Any) -> dict[str, Any]:
    labels = out["labels"].cpu().numpy()
    out["groups"] = {
        "real": [str(name) for name in SONGS[labels]],  # a list of str
        "fake": np.array([PROMPTS[int(v) % 2] for v in labels]),  # a '<U..' array
    }
    return out


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def assert_rows_equal(rows: list[dict[str, str]], expected: list[Any], rel: float) -> None:
    assert [(r["group"], r["side"], int(r["count"])) for r in rows] == [
        (e.group, e.side, e.count) for e in expected
    ]
    for got, want in zip(rows, expected):
        for name in ("coverage", "recall", "precision", "density", "fd"):
            value = getattr(want, name)
            if math.isnan(value):
                assert got[name] in ("", "nan"), name
            else:
                assert float(got[name]) == pytest.approx(value, rel=rel, abs=1e-12), name


def test_string_groups_table_equals_per_group_scores(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = TinyGAN(shifts=(2.5,), outputs=with_string_groups)
    monitor = EmbeddingMonitor(views=None, background=False, log_samples=False)
    trainer = pl.Trainer(callbacks=[monitor], **trainer_kwargs(tmp_path, max_epochs=2))
    trainer.fit(
        model,
        DataLoader(make_data(16, seed=1), batch_size=8),
        DataLoader(make_data(48), batch_size=16),
    )
    log_dir = Path(trainer.logger.log_dir)  # Lightning's default logger: TensorBoard
    events = EventAccumulator(str(log_dir), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    steps = sorted(e.step for e in events.Scalars("embviz/coverage"))
    assert len(steps) == 2
    for epoch, step in enumerate(steps):
        real, fake = model.collected("real", epoch), model.collected("fake", epoch)
        labels = model.collected("labels", epoch).reshape(-1).long().numpy()
        expected = per_group_scores(
            real,
            fake,
            real_groups=SONGS[labels],
            fake_groups=np.array([PROMPTS[v % 2] for v in labels]),
        )
        rows = read_rows(log_dir / "embviz" / "groups" / f"step_{step:06d}.csv")
        assert list(rows[0]) == list(GROUP_COLUMNS)
        assert len(rows) == 5  # 3 songs, 2 prompts
        assert {r["group"] for r in rows} == {*SONGS, *PROMPTS}
        assert_rows_equal(rows, expected, rel=1e-9)
    text = "".join(
        str(event.tensor_proto.string_val)
        for tag in events.Tags()["tensors"]
        if "embviz/groups" in tag
        for event in events.Tensors(tag)
    )
    assert "b\\\\|side" in text and "another prompt" in text  # the pipe escaped in markdown


# --------------------------------------------------------------------------- parsing


def config(**kw: Any) -> MonitorConfig:
    return EmbeddingMonitor(**kw).config


@pytest.mark.parametrize(
    ("groups", "error", "match"),
    [
        (["a", 1, "b"], TypeError, r"'groups' for the real rows.*mixes int, str"),
        (np.array([0.5, 1.5, 2.5]), TypeError, r"integer or string group ids, got dtype"),
        (np.array([1.0, "a", 2], dtype=object), TypeError, r"mixes float, int, str"),
        ("abc", TypeError, r"a single str, not one id per row"),
        (["a", "b"], ValueError, r"has 2 entries but there are 3 real rows"),
        (np.array([b"x", b"y"]), ValueError, r"has 2 entries but there are 3 real rows"),
    ],
)
def test_bad_group_ids_are_refused(groups, error, match):
    with pytest.raises(error, match=match):
        parse_audio({"groups": groups}, config(), 3, 3, "batch 0")


@pytest.mark.parametrize(
    "groups",
    [
        ["x", "y", "x"],
        ("x", "y", "x"),
        np.array(["x", "y", "x"]),
        np.array([b"x", b"y", b"x"]),
        np.array(["x", "y", "x"], dtype=object),
    ],
)
def test_string_ids_in_every_container(groups):
    run = RunAudio()
    batch, problem = run.admit({"groups": groups}, config(), 3, 3, "batch 0", strict=True)
    assert problem is None
    assert batch.real_groups.tolist() == [0, 1, 0] and batch.real_names is None
    assert run.string_names("real") == ["x", "y"]
    again, _ = run.admit({"groups": ["z", "x", "z"]}, config(), 3, 3, "batch 1", strict=True)
    assert again.real_groups.tolist() == [2, 0, 2]  # one vocabulary per run
    assert run.string_names("real") == ["x", "y", "z"]


def test_integer_ids_are_unchanged():
    for groups in (
        [3, 1, 3],
        np.array([3, 1, 3]),
        torch.tensor([3, 1, 3]),
        np.array([3, 1, 3], object),
    ):
        batch = parse_audio({"groups": groups}, config(), 3, 3, "batch 0")
        assert batch.real_groups.dtype == torch.int64 and batch.real_groups.tolist() == [3, 1, 3]
        assert batch.real_names is None


def test_a_change_of_kind_drops_the_side_for_the_run():
    run = RunAudio()
    run.admit({"groups": {"real": ["a", "b"], "fake": [0, 1]}}, config(), 2, 2, "b0", strict=False)
    batch, problem = run.admit(
        {"groups": {"real": [4, 5], "fake": [1, 1]}}, config(), 2, 2, "b1", strict=False
    )
    assert problem is not None
    assert "the real group ids are integers (b1) but were strings" in problem
    assert batch.real_groups is None and batch.fake_groups.tolist() == [1, 1]
    assert run.string_names("real") is None  # dropped: no names at the run's end
    batch, problem = run.admit(
        {"groups": {"real": ["a", "b"], "fake": [1, 0]}}, config(), 2, 2, "b2", strict=False
    )
    assert problem is None and batch.real_groups is None  # stays dropped, one message


def rows_of(groups: torch.Tensor) -> EmbeddingSet:
    return EmbeddingSet(torch.zeros(len(groups), 2), torch.arange(len(groups)), groups=groups)


def two_ranks(runs: list[RunAudio], sets: list[tuple[EmbeddingSet, EmbeddingSet]]) -> list[Any]:
    """merge_group_names on two simulated ranks (each collective sees both ranks' inputs)."""
    flags: list[torch.Tensor] = []
    payloads: list[Any] = []
    # first pass: record what each rank sends; second pass: answer with both
    for run, (real, fake) in zip(runs, sets):
        merge_group_names(
            real,
            fake,
            run,
            distributed=True,
            all_gather=lambda t: flags.append(t) or [t],
            all_gather_object=lambda o: payloads.append(o) or [o],
        )
    out = []
    for run, (real, fake) in zip(runs, sets):
        out.append(
            merge_group_names(
                real,
                fake,
                run,
                distributed=True,
                all_gather=lambda t: flags[:2],
                all_gather_object=lambda o: payloads[:2],
            )
        )
    return out


def test_ranks_agree_on_one_vocabulary():
    runs = [RunAudio(), RunAudio()]
    cfg = config()
    first, _ = runs[0].admit({"groups": ["c", "a", "c"]}, cfg, 3, 3, "r0", strict=True)
    second, _ = runs[1].admit({"groups": ["b", "c", "d"]}, cfg, 3, 3, "r1", strict=True)
    assert first.real_groups.tolist() == [0, 1, 0] and second.real_groups.tolist() == [0, 1, 2]
    fake = rows_of(torch.zeros(0, dtype=torch.int64))
    sets = [(rows_of(first.real_groups), fake), (rows_of(second.real_groups), fake)]
    (real0, _, names0, p0), (real1, _, names1, p1) = two_ranks(runs, sets)
    assert names0 == names1 == {"real": ["a", "b", "c", "d"], "fake": None}
    assert p0 is None and p1 is None
    vocabulary = names0["real"]
    assert [vocabulary[c] for c in real0.groups] == ["c", "a", "c"]
    assert [vocabulary[c] for c in real1.groups] == ["b", "c", "d"]


def test_strings_on_one_rank_and_integers_on_another_drop_that_side():
    runs = [RunAudio(), RunAudio()]
    cfg = config()
    first, _ = runs[0].admit({"groups": ["a", "b"]}, cfg, 2, 2, "r0", strict=True)
    second, _ = runs[1].admit({"groups": [7, 8]}, cfg, 2, 2, "r1", strict=True)
    fake = rows_of(torch.zeros(0, dtype=torch.int64))
    sets = [(rows_of(first.real_groups), fake), (rows_of(second.real_groups), fake)]
    for real, _, names, problem in two_ranks(runs, sets):
        assert real.groups is None and names == {"real": None, "fake": None}
        assert "strings on some ranks, integers on others" in problem


def test_integer_ids_need_no_object_exchange():
    run = RunAudio()
    batch, _ = run.admit({"groups": [5, 6]}, config(), 2, 2, "r0", strict=True)

    def refuse(obj: Any) -> Any:
        raise AssertionError("no all_gather_object for integer ids")

    real, _, names, problem = merge_group_names(
        rows_of(batch.real_groups),
        rows_of(torch.zeros(0, dtype=torch.int64)),
        run,
        distributed=True,
        all_gather=lambda t: [t, t],
        all_gather_object=refuse,
    )
    assert real.groups.tolist() == [5, 6] and names == {"real": None, "fake": None}
    assert problem is None


# --------------------------------------------------------------------------- DDP


SINGERS = ("zeta", "alpha", "mu", "omega", "beta")


class StringGroupsDDPGAN(DDPGAN):
    """Group names from the dataset index, so each rank sees other names in another order."""

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        out = super().validation_step(batch, batch_idx, dataloader_idx)
        index = batch[2].tolist()
        out["groups"] = {
            "real": [SINGERS[(7 - i) % 5] for i in index],
            "fake": np.array([f"take {i % 4}" for i in index]),  # rank 0: takes 0, 2
        }
        return out


@pytest.mark.slow
def test_string_groups_under_ddp_equal_single_process(tmp_path):
    # 37 samples: the DistributedSampler repeats one; rank 0 holds the even indices
    val = DataLoader(indexed_dataset(37, seed=3), batch_size=8)
    model = StringGroupsDDPGAN()
    tables = {}
    for name in ("ddp", "single"):
        kwargs: dict[str, Any] = {
            "logger": CSVLogger(tmp_path, name=name, version=0),
            "callbacks": [EmbeddingMonitor(views=None, background=False, log_samples=False)],
            "accelerator": "cpu",
            "default_root_dir": str(tmp_path),
            "enable_progress_bar": False,
        }
        if name == "ddp":
            kwargs.update(devices=2, strategy="ddp_spawn")
        pl.Trainer(**kwargs).validate(model, val)
        tables[name] = read_rows(tmp_path / name / "version_0" / "embviz/groups/step_000000.csv")
    ddp, single = tables["ddp"], tables["single"]
    assert {r["group"] for r in single} == {*SINGERS, "take 0", "take 1", "take 2", "take 3"}
    assert sum(int(r["count"]) for r in ddp if r["side"] == "real") == 37  # repeat dropped
    assert [(r["group"], r["side"], r["count"]) for r in ddp] == [
        (r["group"], r["side"], r["count"]) for r in single
    ]
    for a, b in zip(ddp, single):
        for column in ("coverage", "recall", "precision", "density", "fd"):
            if b[column] in ("", "nan"):
                assert a[column] == b[column]
            else:  # distances: the engine's float32 GEMM values
                assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-6), column
    # and the single process equals the reference restricted to each group
    data = val.dataset.tensors
    x, index = data[0], data[2].tolist()
    expected = per_group_scores(
        x,
        model.fake(x).detach(),
        real_groups=[SINGERS[(7 - i) % 5] for i in index],
        fake_groups=[f"take {i % 4}" for i in index],
    )
    assert_rows_equal(single, expected, rel=1e-6)
