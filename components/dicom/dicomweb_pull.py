"""Pulling the instances of a QIDO-RS query from a PACS into a local cache (DICOMweb).

The cache mirrors the query: instances already there are not retrieved again, files of
instances outside the query are removed once the pull is complete, and every file is written
whole (temp file, then rename). Ingestion and ``medflow predict --dicomweb`` both pull this way.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from medflow.components.dicom.dicomweb import DicomwebSource, InstanceRef, Query
from medflow.core.files import atomic_write

CACHE_DIR = ".dicomweb-cache"
_PART_PREFIX = ".part-"

Progress = Callable[[Iterator, int], Iterator]


@dataclass(frozen=True)
class PullResult:
    """What a pull found and did; ``instances == retrieved + cached + failed`` (failed:
    instances an ingest could not retrieve, quarantined as ``fetch_failed``)."""

    url: str
    query: dict
    instances: int
    retrieved: int
    cached: int
    bytes_retrieved: int
    studies: int
    fingerprint: str
    cache: str
    failed: int = 0

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


def cache_name(sop_uid: str) -> str:
    """The cache file name of an instance: a hash, never a path built from a DICOM value."""
    return hashlib.sha256(sop_uid.encode()).hexdigest()[:40] + ".dcm"


def fingerprint(query: Query, refs: Sequence[InstanceRef]) -> str:
    """Stable over reruns: the query and the set of instance UIDs (no timestamps)."""
    h = hashlib.sha256(json.dumps(query.to_dict(), sort_keys=True).encode())
    for ref in sorted(refs):
        h.update(f"\n{ref.study_uid}/{ref.series_uid}/{ref.sop_uid}".encode())
    return h.hexdigest()
