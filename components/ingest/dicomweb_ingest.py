"""Ingestion from a PACS: pull a DICOMweb query into a local cache, then ingest that folder.

Each retrieved instance is written whole (temporary file, then rename) as
``<cache>/<hash of SOPInstanceUID>.dcm``, so an interrupted pull leaves only complete
instances, and a rerun retrieves only the missing ones. The cache then goes through
:func:`components.dicom.ingest.ingest` like any folder: same safe reading, validation,
de-identification, quarantine and report. The cache holds the PACS's identifiable data; it
is created owner-only and removed after a successful ingest unless it is kept on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from medflow.components.dicom.deid import DeidKey
from medflow.components.dicom.dicomweb import DicomwebSource, Query
from medflow.components.dicom.dicomweb_pull import CACHE_DIR, Progress, PullResult, pull
from medflow.components.ingest.engine import (
    REPORT_NAME,
    IngestOptions,
    IngestReport,
    ingest,
    write_json_atomic,
)
from medflow.components.ingest.manifest import LabelManifest


def ingest_dicomweb(
    source: DicomwebSource,
    query: Query,
    out: str | os.PathLike[str],
    key: DeidKey,
    manifest: LabelManifest | None = None,
    options: IngestOptions | None = None,
    *,
    cache: str | os.PathLike[str] | None = None,
    keep_cache: bool = False,
    pull_progress: Progress | None = None,
) -> tuple[IngestReport, PullResult]:
    """Pull ``query`` into ``cache`` (default ``<out>/.dicomweb-cache``), then ingest it.

    The report's ``source`` is the DICOMweb URL and its ``dicomweb`` section holds the
    query, the counts of the pull and a fingerprint of the query and instance UIDs.
    """
    out = Path(out)
    cache = Path(cache) if cache is not None else out / CACHE_DIR
    pulled = pull(source, query, cache, pull_progress)
    report = ingest(cache, out, key, manifest, options or IngestOptions())
    report.source = source.url
    doc = json.loads((out / REPORT_NAME).read_text())
    doc["source"] = source.url
    doc["dicomweb"] = pulled.to_dict() | {"cache_kept": keep_cache}
    write_json_atomic(out / REPORT_NAME, doc)
    if not keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return report, pulled
