"""Digest of ingestion output on a slice of the demo set (PneumoniaMNIST as DICOM).

Recorded before the renovation moved the ingestion code (issue 16); the test in
tests/integration/test_ingest_golden.py compares today's output against it, record for record.
Run as a script to print the digest: ``python -m tests.golden.ingest_digest``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import tensorflow as tf

from medflow.components.dicom.deid import DeidKey
from medflow.components.ingest.engine import IngestOptions, ingest
from medflow.components.ingest.manifest import read_manifest
from medflow.components.ingest.npz_import import import_npz

LIMIT = 40
KEY = DeidKey(b"medflow-golden-digest-key-0001")


def split_digests(out: Path) -> dict[str, dict]:
    """{split: {records, sha256}}: sha256 over the sorted per-record digests."""
    result = {}
    for split_dir in sorted(p for p in out.iterdir() if p.is_dir() and p.name != "quarantine"):
        digests = sorted(
            hashlib.sha256(rec.numpy()).hexdigest()
            for shard in sorted(split_dir.glob("*.gz"))
            for rec in tf.data.TFRecordDataset(str(shard), compression_type="GZIP")
        )
        result[split_dir.name] = {
            "records": len(digests),
            "sha256": hashlib.sha256("".join(digests).encode()).hexdigest(),
        }
    return result


def ingest_digest(npz: Path, work: Path) -> dict:
    manifest = import_npz(npz, work / "data", splits=("train", "val"), limit=LIMIT)
    report = ingest(
        manifest.parent / "dicom",
        work / "out",
        KEY,
        manifest=read_manifest(manifest),
        options=IngestOptions(),
    )
    return {"counts": dict(report.counts), "splits": split_digests(work / "out")}


if __name__ == "__main__":
    npz = Path(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(ingest_digest(npz, Path(tmp)), indent=2, sort_keys=True))
