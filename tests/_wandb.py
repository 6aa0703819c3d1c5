"""Reading an offline W&B run file back, for the logger tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def wandb_records(run_file: str | Path) -> list[Any]:
    """The protobuf records of an offline ``run-*.wandb`` file (W&B's own ``Record``).

    The file is a ':W&B' header, then a LevelDB-style log: 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2

    data = Path(run_file).read_bytes()
    assert data[:4] == b":W&B"
    block, pos, parts, records = 32768, 7, [], []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):
            pos += left
            continue
        if pos + 7 + length > len(data):  # a record still being written
            break
        parts.append(data[pos + 7 : pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            records.append(record)
            parts = []
    return records


def read_wandb_history(run_file: str | Path) -> list[dict[str, Any]]:
    """The history rows (logged dicts) of an offline ``run-*.wandb`` file, in order."""
    return [
        {
            item.key or "/".join(item.nested_key): json.loads(item.value_json)
            for item in record.history.item
        }
        for record in wandb_records(run_file)
        if record.WhichOneof("record_type") == "history"
    ]
