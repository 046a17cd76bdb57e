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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from medflow.components.dicom.deid import DeidKey
from medflow.components.dicom.dicomweb import (
    DicomwebSource,
    InstanceRef,
    Query,
    cache_name,
    fingerprint,
)
from medflow.components.ingest.engine import (
    REPORT_NAME,
    IngestOptions,
    IngestReport,
    ingest,
    write_json_atomic,
)
from medflow.components.ingest.manifest import LabelManifest
from medflow.core.files import atomic_write

CACHE_DIR = ".dicomweb-cache"
_PART_PREFIX = ".part-"

Progress = Callable[[Iterator, int], Iterator]


@dataclass(frozen=True)
class PullResult:
    """What a pull found and did; ``instances == retrieved + cached``."""

    url: str
    query: dict
    instances: int
    retrieved: int
    cached: int
    bytes_retrieved: int
    studies: int
    fingerprint: str
    cache: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def pull(
    source: DicomwebSource,
    query: Query,
    cache: str | os.PathLike[str],
    progress: Progress | None = None,
) -> PullResult:
    """Retrieve every instance matching ``query`` that ``cache`` lacks.

    Files of instances outside the query are removed from ``cache`` once the pull is
    complete (the cache mirrors the query). Raises ServiceError when the PACS fails; what
    was retrieved until then stays, whole.
    """
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    for leftover in cache.glob(f"{_PART_PREFIX}*"):  # from a process killed mid-write
        leftover.unlink(missing_ok=True)
    refs = source.search(query)
    wanted = {cache_name(ref.sop_uid): ref for ref in refs}
    retrieved = nbytes = 0
    items: Iterator[tuple[str, InstanceRef]] = iter(wanted.items())
    if progress is not None:
        items = progress(items, len(wanted))
    for name, ref in items:
        path = cache / name
        if path.exists():
            continue
        data = source.retrieve(ref)
        atomic_write(path, data, prefix=_PART_PREFIX)
        retrieved += 1
        nbytes += len(data)
    for path in cache.glob("*.dcm"):
        if path.name not in wanted:
            path.unlink()
    return PullResult(
        url=source.url,
        query=query.to_dict(),
        instances=len(wanted),
        retrieved=retrieved,
        cached=len(wanted) - retrieved,
        bytes_retrieved=nbytes,
        studies=len({ref.study_uid for ref in refs}),
        fingerprint=fingerprint(query, refs),
        cache=str(cache),
    )


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
    progress: Progress | None = None,
) -> tuple[IngestReport, PullResult]:
    """Pull ``query`` into ``cache`` (default ``<out>/.dicomweb-cache``), then ingest it.

    The report's ``source`` is the DICOMweb URL and its ``dicomweb`` section holds the
    query, the counts of the pull and a fingerprint of the query and instance UIDs.
    """
    out = Path(out)
    cache = Path(cache) if cache is not None else out / CACHE_DIR
    pulled = pull(source, query, cache, pull_progress)
    report = ingest(cache, out, key, manifest, options or IngestOptions(), progress)
    report.source = source.url
    doc = json.loads((out / REPORT_NAME).read_text())
    doc["source"] = source.url
    doc["dicomweb"] = pulled.to_dict() | {"cache_kept": keep_cache}
    write_json_atomic(out / REPORT_NAME, doc)
    if not keep_cache:
        shutil.rmtree(cache, ignore_errors=True)
    return report, pulled
