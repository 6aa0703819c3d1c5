"""A real ``tensorboard`` server, on loopback, serves what EmbeddingMonitor logged.

A tiny Trainer run writes TensorBoard logs with the callback (scalars, figures and the
Embedding Projector); then ``python -m tensorboard.main`` is started on 127.0.0.1 and its
HTTP data API (the one TensorBoard's own front end calls) is queried.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
from pytorch_lightning.loggers import TensorBoardLogger
from torch.utils.data import DataLoader

from _models import WIDTH, make_data, make_module_class
from lightning_embviz import EmbeddingMonitor

pytest.importorskip("tensorboard")

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STARTUP_TIMEOUT_S = 60.0
N_VAL = 48


TinyGAN = make_module_class(pl)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str, **params: Any) -> tuple[bytes, str]:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    url = f"http://{HOST}:{port}{path}{query}"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200, url
        return response.read(), response.headers.get("Content-Type", "")


def _get_json(port: int, path: str, **params: Any) -> Any:
    body, content_type = _get(port, path, **params)
    assert "json" in content_type, (path, content_type)
    return json.loads(body)


def _wait_until_served(server: subprocess.Popen, port: int, log: Path) -> str:
    """Wait (bounded) until the server has loaded the run's scalars and figures; its name."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error: Any = None
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"tensorboard exited with {server.returncode}:\n{log.read_text()}")
        try:
            # Fully loaded: both validation runs' scalars and the figures are in.
            tags = _get_json(port, "/data/plugin/scalars/tags")
            images = _get_json(port, "/data/plugin/images/tags")
            for run, run_tags in tags.items():
                if "embviz/coverage" in run_tags and "embviz/pca" in images.get(run, {}):
                    points = _get_json(
                        port, "/data/plugin/scalars/scalars", run=run, tag="embviz/coverage"
                    )
                    if len(points) >= 2:
                        return str(run)
        except (urllib.error.URLError, ConnectionError, OSError) as err:
            last_error = err
        time.sleep(0.25)
    pytest.fail(
        f"tensorboard did not serve embviz/coverage within {STARTUP_TIMEOUT_S:.0f} s "
        f"(last error: {last_error!r}):\n{log.read_text()}"
    )


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs of a 2-epoch run: scalars, PCA figures and projector embeddings."""
    root = tmp_path_factory.mktemp("tb_logs")
    monitor = EmbeddingMonitor(nearest_k=3, views=("pca",), background=False, log_projector=True)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        limit_train_batches=2,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        logger=TensorBoardLogger(save_dir=str(root), name="tiny"),
        callbacks=[monitor],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(
        TinyGAN(shifts=(0.5,), lr=0.1),
        train_dataloaders=DataLoader(make_data(32, seed=1), batch_size=16),
        val_dataloaders=DataLoader(make_data(N_VAL, seed=0), batch_size=16),
    )
    return root


@pytest.fixture(scope="module")
def server(logged_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A tensorboard server on 127.0.0.1 over the logs; killed afterwards, always."""
    port = _free_port()
    log = tmp_path_factory.mktemp("tb_server") / "tensorboard.log"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tensorboard.main",
                "--logdir",
                str(logged_run),
                "--host",
                HOST,
                "--port",
                str(port),
                "--load_fast",
                "false",
                "--reload_interval",
                "1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        run = _wait_until_served(proc, port, log)
        yield port, run
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_scalars_are_served(server: Any) -> None:
    port, run = server
    tags = _get_json(port, "/data/plugin/scalars/tags")
    for name in ("precision", "recall", "density", "coverage", "fd"):
        assert f"embviz/{name}" in tags[run], sorted(tags[run])
    points = _get_json(port, "/data/plugin/scalars/scalars", run=run, tag="embviz/coverage")
    # One point per validation run: [wall_time, step, value].
    assert len(points) == 2
    steps = [p[1] for p in points]
    assert steps == sorted(steps) and len(set(steps)) == 2
    assert all(0.0 <= p[2] <= 1.0 for p in points)
    fd = _get_json(port, "/data/plugin/scalars/scalars", run=run, tag="embviz/fd")
    assert [p[1] for p in fd] == steps
    assert all(np.isfinite(p[2]) and p[2] >= 0.0 for p in fd)


def test_images_are_served_as_png(server: Any) -> None:
    port, run = server
    tags = _get_json(port, "/data/plugin/images/tags")
    assert "embviz/pca" in tags[run], sorted(tags[run])
    scalar_steps = [
        p[1]
        for p in _get_json(port, "/data/plugin/scalars/scalars", run=run, tag="embviz/coverage")
    ]
    entries = _get_json(port, "/data/plugin/images/images", run=run, tag="embviz/pca", sample=0)
    # Figures are logged at the step of the scalars, so they line up in TensorBoard.
    assert [e["step"] for e in entries] == scalar_steps
    for entry in entries:
        query = dict(urllib.parse.parse_qsl(entry["query"]))
        body, content_type = _get(port, "/data/plugin/images/individualImage", **query)
        assert content_type == "image/png"
        assert body.startswith(PNG_SIGNATURE)
        assert len(body) > 1000


def test_projector_data_is_served(server: Any) -> None:
    port, _ = server
    runs = _get_json(port, "/data/plugin/projector/runs")
    assert runs, "the projector found no run with embeddings"
    run = runs[0]
    info = _get_json(port, "/data/plugin/projector/info", run=run)
    embeddings = info["embeddings"]
    assert embeddings
    first = embeddings[0]
    # Real rows then fake rows, WIDTH floats each.
    assert first["tensorShape"] == [2 * N_VAL, WIDTH]
    body, _ = _get(port, "/data/plugin/projector/tensor", run=run, name=first["tensorName"])
    tensor = np.frombuffer(body, dtype="<f4")
    assert tensor.size == 2 * N_VAL * WIDTH
    assert np.isfinite(tensor).all()
    meta, _ = _get(port, "/data/plugin/projector/metadata", run=run, name=first["tensorName"])
    lines = meta.decode().strip().splitlines()
    assert lines[0].split("\t") == ["source", "label"]
    sources = [line.split("\t")[0] for line in lines[1:]]
    assert sources.count("real") == N_VAL and sources.count("fake") == N_VAL
