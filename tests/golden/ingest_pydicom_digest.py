"""Digest of ingestion output on pydicom's own test files (~190 real and deliberately broken
DICOM files, 12 transfer syntaxes): counts, quarantine reasons, the sha256 of every shard
file's bytes and of the report's per-file entries and split summary.

``ingest_pydicom_digest.json`` was recorded with the worker-pool ingestion that the Beam
pipeline replaced (issue 25, commit b6a5ae5); tests/integration/test_ingest_beam.py compares
the Beam pipeline's output on every runner against it. Run as a script to print the digest:
``python -m tests.golden.ingest_pydicom_digest [--workers N]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import orjson
import pydicom.data

from medflow.components.dicom.deid import DeidKey
from medflow.components.ingest.engine import REPORT_NAME, IngestOptions, ingest

KEY = DeidKey(b"medflow-golden-digest-key-0002")
# Burned-in images admitted (more records written) and small shards (several per split).
OPTIONS = IngestOptions(allow_burned_in=True, shard_size=7)


def pydicom_test_files(dest: Path) -> Path:
    """pydicom's test_files folder copied to ``dest`` (links are not followed by ingestion)."""
    shutil.copytree(Path(pydicom.data.__file__).parent / "test_files", dest)
    return dest


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def output_digest(out: Path) -> dict:
    report = orjson.loads((out / REPORT_NAME).read_bytes())
    shards = {
        p.relative_to(out).as_posix(): _sha(p.read_bytes())
        for p in sorted(out.rglob("*.gz"))
        if not p.relative_to(out).as_posix().startswith("quarantine/")
    }
    return {
        "counts": report["counts"],
        "quarantine_reasons": report["quarantine_reasons"],
        "splits": report["splits"],
        "shards": shards,
        "files_sha256": _sha(orjson.dumps(report["files"], option=orjson.OPT_SORT_KEYS)),
    }


def ingest_digest(src: Path, out: Path, options: IngestOptions = OPTIONS) -> dict:
    ingest(src, out, KEY, options=options)
    return output_digest(out)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = pydicom_test_files(Path(tmp) / "src")
        digest = ingest_digest(
            src, Path(tmp) / "out", dataclasses.replace(OPTIONS, workers=args.workers)
        )
        print(json.dumps(digest, indent=2, sort_keys=True))
