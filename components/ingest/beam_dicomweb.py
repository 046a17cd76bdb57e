"""The DICOMweb source as a step of the ingestion pipeline (:mod:`.beam_pipeline`).

The QIDO-RS search lists the instance references once, in the launching process (a few
paged requests); the pipeline reshuffles them and :class:`FetchInstances` retrieves each
instance (WADO-RS, retried with backoff by :class:`~medflow.components.dicom.dicomweb.
DicomwebSource`) into the cache inside the per-instance step, so a PACS pull fans out over
the Beam workers. Each instance is written whole (temporary file, then rename) as
``<cache>/<hash of SOPInstanceUID>.dcm`` and read from there by the same per-file worker
code as any file; one already in the cache is not retrieved again (a rerun resumes per
instance, and a bundle the runner retries rewrites nothing). An instance that still cannot
be retrieved after the retries (deleted from the PACS since the search, a PACS that keeps
failing) is quarantined as ``fetch_failed`` with the HTTP outcome, never a crash. No UID,
name or other DICOM value reaches a log or the report: an instance is named by its cache
file; the credentials reach the workers as an owner-only file, never as an option.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam

from medflow.components.dicom.dicomweb import (
    DicomwebSource,
    InstanceRef,
    RetryPolicy,
    load_credentials,
)
from medflow.components.dicom.dicomweb_pull import _PART_PREFIX as PART_PREFIX
from medflow.components.dicom.dicomweb_pull import cache_name
from medflow.components.ingest.beam_pipeline import FAILED
from medflow.components.ingest.examples import FileResult
from medflow.core.errors import ServiceError
from medflow.core.files import atomic_write

_OUTCOME = re.compile(r"failed (with HTTP \d+|after \d+ attempts \([^)]*\))")


@dataclass(frozen=True)
class SourceSpec:
    """What a worker needs to open the DICOMweb source (no secret: ``auth_file`` names an
    owner-only file written by :func:`write_auth_file`)."""

    url: str
    auth_file: str | None
    ca_bundle: str | None
    retry: RetryPolicy

    def open(self) -> DicomwebSource:
        creds = load_credentials(self.auth_file, env={})
        return DicomwebSource(self.url, creds, ca_bundle=self.ca_bundle, retry=self.retry)


def spec_for(source: DicomwebSource, secret_dir: Path) -> SourceSpec:
    """The spec of ``source``, its credentials written into ``secret_dir`` (owner-only)."""
    return SourceSpec(
        source.url, write_auth_file(source, secret_dir), source.ca_bundle, source.retry
    )


def write_auth_file(source: DicomwebSource, secret_dir: Path) -> str | None:
    creds = source.credentials
    if creds.kind == "none":
        return None
    doc = {"token": creds.token} if creds.token else {"username": creds.username}
    if not creds.token:
        doc["password"] = creds.password
    path = secret_dir / "dicomweb-auth.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(doc, fh)
    return str(path)


def list_instances(refs: list[InstanceRef], cache: Path) -> list[tuple[str, str, tuple]]:
    """The pipeline's inputs: (cache path, cache name, reference) in cache-name order (the
    order a folder of the cache would be listed in, so the outputs equal ingesting it)."""
    named = sorted((cache_name(ref.sop_uid), ref) for ref in refs)
    return [(str(cache / name), name, dataclasses.astuple(ref)) for name, ref in named]


class FetchInstances(beam.DoFn):
    """(position, cache path, name, reference) → (position, cache path, name) once the
    instance is in the cache; an instance that cannot be retrieved goes to the ``FAILED``
    output as a quarantined (position, path, FileResult)."""

    def __init__(self, spec: SourceSpec):
        self._spec = spec
        self._source: DicomwebSource | None = None

    def setup(self) -> None:
        self._source = self._spec.open()

    def process(self, item):
        index, path, name, ref = item
        if not os.path.exists(path):
            try:
                data = self._source.retrieve(InstanceRef(*ref))
            except ServiceError as exc:
                found = _OUTCOME.search(str(exc))
                outcome = found.group(0) if found else "failed"
                message = (
                    f"{name}: the instance listed by the QIDO-RS search could not be "
                    f"retrieved (WADO-RS {outcome}); deleted from the PACS since, or the PACS "
                    "failing: rerun to retry it (instances already retrieved are kept)"
                )
                result = FileResult(name, "quarantined", "fetch_failed", message)
                yield beam.pvalue.TaggedOutput(FAILED, (index, path, result))
                return
            atomic_write(Path(path), data, prefix=PART_PREFIX)
        yield index, path, name
