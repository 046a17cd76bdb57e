"""Writing ingested examples: GZIP TFRecord shards per split, built in a staging folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from medflow.components.ingest.examples import FileResult

if TYPE_CHECKING:
    from medflow.components.ingest.engine import IngestOptions

SHARD_PATTERN = "data_tfrecord-{index:05d}-of-{count:05d}.gz"


class SplitWriter:
    """GZIP TFRecord shards per split, named data_tfrecord-<i>-of-<n>.gz at close.

    Records arrive framed and compressed by the workers (``tfrecord.gzip_record``), so this
    only appends bytes: no TensorFlow and no compression in the writing process.
    """

    def __init__(self, staging: Path, options: IngestOptions):
        self._staging = staging
        self._options = options
        self._splits = {
            name: {"examples": 0, "patients": set(), "labels": Counter(), "shards": []}
            for name, _ in options.splits
        }
        self._files: dict[str, BinaryIO] = {}

    def add(self, res: FileResult, split: str) -> None:
        state = self._splits[split]
        for record, label in zip(res.records, res.record_labels, strict=True):
            if state["examples"] % self._options.shard_size == 0:
                self._open_shard(split)
            self._files[split].write(record)
            state["examples"] += 1
            if label is not None:
                state["labels"][label] += 1
        state["patients"].add(res.patient_key)

    def _open_shard(self, split: str) -> None:
        if split in self._files:
            self._files[split].close()
        folder = self._staging / self._options.split_dir.format(split=split)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"shard-{len(self._splits[split]['shards']):05d}.tmp"
        self._splits[split]["shards"].append(path)
        self._files[split] = open(path, "wb")  # noqa: SIM115 - closed in _open_shard/close

    def close(self) -> dict[str, dict]:
        for fh in self._files.values():
            fh.close()
        summary = {}
        for name, state in self._splits.items():
            folder = self._staging / self._options.split_dir.format(split=name)
            folder.mkdir(parents=True, exist_ok=True)
            shards = state["shards"]
            for i, path in enumerate(shards):
                path.rename(folder / SHARD_PATTERN.format(index=i, count=len(shards)))
            summary[name] = {
                "examples": state["examples"],
                "patients": len(state["patients"]),
                "labels": dict(sorted(state["labels"].items())),
                "shards": len(shards),
            }
        return summary
