"""Read an offline W&B run back from its ``run-<id>.wandb`` file (wandb 0.31 ships no reader).

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1, version 0), then
32 KiB blocks of records, each ``crc32c (4) | length (2) | type (1) | payload``, where type
1 is a whole record and 2/3/4 the first/middle/last piece of one split across blocks. Each
payload is a ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK_SIZE = 32 * 1024
HEADER = struct.Struct("<4sHB")
RECORD_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    ident, magic, version = HEADER.unpack_from(data)
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a W&B run file"
    records, pieces, position = [], b"", HEADER.size
    while position + RECORD_HEADER.size <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:
            position += left_in_block  # block trailer
            continue
        _, length, kind = RECORD_HEADER.unpack_from(data, position)
        if kind == 0:  # zero padding to the end of the block
            position += left_in_block
            continue
        payload = data[position + RECORD_HEADER.size : position + RECORD_HEADER.size + length]
        position += RECORD_HEADER.size + length
        if kind == FIRST:
            pieces = payload
            continue
        if kind == MIDDLE:
            pieces += payload
            continue
        if kind == LAST:
            payload, pieces = pieces + payload, b""
        record = wandb_internal_pb2.Record()
        record.ParseFromString(payload)
        records.append(record)
    return records


def _items(items) -> dict:
    """Key/value items as a dict; an item with a nested key (``["t", "_type"]``) lands in nested dicts."""
    values: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = values
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = json.loads(item.value_json)
    return values


@dataclass
class OfflineRun:
    """What an offline run recorded: its config, history rows, final summary and artifacts."""

    run_id: str
    group: str = ""
    tags: list[str] = field(default_factory=list)
    job_type: str = ""
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    artifacts: list = field(default_factory=list)  # wandb_internal_pb2.ArtifactRecord
    exit_code: int | None = None

    def table(self, key: str) -> dict:
        """The JSON of the last table logged under ``key`` (W&B stages it with its images as an
        artifact whose manifest names ``{key}.table.json``)."""
        entries = [e for a in self.artifacts for e in a.manifest.contents if e.path == f"{key}.table.json"]
        assert entries, f"no table {key!r} was logged"
        return json.loads(Path(entries[-1].local_path).read_text())


def read_offline_run(run_dir: Path) -> OfflineRun:
    """Parse ``run_dir/run-<id>.wandb`` (``run_dir`` is an ``offline-run-<time>-<id>`` folder)."""
    (path,) = run_dir.glob("run-*.wandb")
    run = None
    for record in read_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = OfflineRun(record.run.run_id, record.run.run_group, list(record.run.tags), record.run.job_type)
            run.config.update(_items(record.run.config.update))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
        elif kind == "artifact":
            run.artifacts.append(record.artifact)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    assert run is not None, f"{path} holds no run record"
    return run


def isolated_environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment for a subprocess whose W&B writes only below ``tmp_path`` (runs in
    ``tmp_path/wandb_dir/wandb``, staged artifacts, settings, cache) and finds no login."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    for name in ("DIR", "DATA_DIR", "CACHE_DIR", "CONFIG_DIR"):
        env[f"WANDB_{name}"] = str(tmp_path / f"wandb_{name.lower()}")
    env["NETRC"] = str(tmp_path / "no_netrc")
    return {**env, **extra}


def offline_runs(tmp_path: Path) -> list[Path]:
    """The offline run folders of a subprocess run with :func:`isolated_environment`, oldest first."""
    return sorted((tmp_path / "wandb_dir" / "wandb").glob("offline-run-*"))
