"""Ingestion from a PACS: a DICOMweb query ingested by the Beam pipeline, whose per-instance
step retrieves each instance (:mod:`.beam_dicomweb`).

Each retrieved instance is written whole (temporary file, then rename) into the cache as
``<cache>/<hash of SOPInstanceUID>.dcm`` by the worker that processes it, so an interrupted
run leaves only complete instances and a rerun retrieves only the missing ones; the files
then go through the same safe reading, validation, de-identification, quarantine and report
as a folder's. The cache holds the PACS's identifiable data; it is created owner-only and
removed after a successful ingest unless it is kept on purpose.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from medflow.components.dicom.deid import DeidKey
from medflow.components.dicom.dicomweb import DicomwebSource, Query
from medflow.components.dicom.dicomweb_pull import (
    _PART_PREFIX,
    CACHE_DIR,
    Progress,
    PullResult,
    fingerprint,
)
from medflow.components.ingest.beam_dicomweb import FetchInstances, list_instances, spec_for
from medflow.components.ingest.engine import (
    REPORT_NAME,
    IngestOptions,
    IngestReport,
    ingest_inputs,
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
    """Search ``query``, then ingest its instances, retrieving those ``cache`` (default
    ``<out>/.dicomweb-cache``) lacks inside the pipeline.

    The report's ``source`` is the DICOMweb URL and its ``dicomweb`` section holds the
    query, the counts of the pull (``instances == retrieved + cached + failed``) and a
    fingerprint of the query and instance UIDs. ``pull_progress`` wraps an iterator of one
    step per instance retrieved and processed, given the total (e.g. tqdm).
    """
    out = Path(out)
    cache = Path(cache) if cache is not None else out / CACHE_DIR
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    for leftover in cache.glob(f"{_PART_PREFIX}*"):  # from a process killed mid-write
        leftover.unlink(missing_ok=True)
    refs = source.search(query)
    inputs = list_instances(refs, cache)
    wanted = {name for _, name, _ in inputs}
    for path in cache.glob("*.dcm"):  # the cache mirrors the query
        if path.name not in wanted:
            path.unlink()
    cached = {name for name in wanted if (cache / name).exists()}
    out.mkdir(parents=True, exist_ok=True)
    secret_dir = Path(tempfile.mkdtemp(prefix="medflow-dicomweb-"))  # owner-only (0700)
    try:
        fetch = FetchInstances(spec_for(source, secret_dir))
        opts = options or IngestOptions()
        report = ingest_inputs(
            inputs, source.url, out, key, manifest, opts, fetch=fetch, progress=pull_progress
        )
    finally:
        shutil.rmtree(secret_dir, ignore_errors=True)
    pulled = _pull_result(source, query, refs, cache, sorted(wanted), cached)
    doc = json.loads((out / REPORT_NAME).read_text())
    doc["dicomweb"] = pulled.to_dict() | {"cache_kept": keep_cache}
    write_json_atomic(out / REPORT_NAME, doc)
    if not keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return report, pulled


def _pull_result(source, query, refs, cache: Path, names, cached: set[str]) -> PullResult:
    fresh = [cache / n for n in names if n not in cached and (cache / n).exists()]
    return PullResult(
        url=source.url,
        query=query.to_dict(),
        instances=len(refs),
        retrieved=len(fresh),
        cached=len(cached),
        bytes_retrieved=sum(p.stat().st_size for p in fresh),
        studies=len({ref.study_uid for ref in refs}),
        fingerprint=fingerprint(query, refs),
        cache=str(cache),
        failed=len(refs) - len(fresh) - len(cached),
    )
