"""The DICOMweb source as a step of the Beam ingestion pipeline (issue 25), against a real
Orthanc on loopback: the instances are listed once (QIDO-RS), then retrieved (WADO-RS)
inside the per-instance step on each runner; the records equal those of ingesting the same
files from disk, and an instance deleted from the PACS after the search is quarantined as
``fetch_failed`` and counted, with no patient data in any log."""

# ruff: noqa: F811 - the fixtures are imported by name, then used as arguments
from __future__ import annotations

import json
import logging

import pydicom
import pytest

from medflow.components.dicom.dicomweb import Credentials, DicomwebSource, Query
from medflow.components.dicom.dicomweb_pull import CACHE_DIR
from medflow.components.ingest.dicomweb_ingest import ingest_dicomweb
from medflow.components.ingest.engine import REPORT_NAME, IngestOptions, ingest
from tests.integration.orthanc import orthanc  # noqa: F401 - fixture
from tests.integration.test_ingest_beam import RUNNERS
from tests.integration.test_pacs_dicomweb import (  # noqa: F401 - fixtures
    FAST_RETRY,
    _examples,
    _files,
    _key,
    corpus,
    pacs,
)

ALL = Query(date_from="1900-01-01", date_to="2100-12-31")


@pytest.fixture(scope="module")
def direct(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("direct")
    report = ingest(corpus, out, _key(out))
    return report, _examples(out)


def _identifiers(corpus) -> set[str]:
    """Values that must never reach a log: UIDs, names and IDs of the stored instances."""
    found = set()
    for path in _files(corpus):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "PatientID", "PatientName"):
            value = str(ds.get(keyword, "") or "")
            if len(value) >= 4:
                found.add(value)
    return found


def _source(pacs) -> DicomwebSource:
    return DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=FAST_RETRY)


@pytest.mark.parametrize(
    "runner", ["in-memory", pytest.param("multi-processing-2", marks=pytest.mark.slow)]
)
def test_dicomweb_ingest_gives_the_records_of_the_files(
    pacs,
    corpus,
    direct,
    tmp_path,
    runner,
    caplog,
    capfd,
):
    caplog.set_level(logging.DEBUG)
    options = IngestOptions(beam_args=RUNNERS[runner])
    out = tmp_path / "out"
    report, pulled = ingest_dicomweb(_source(pacs), ALL, out, _key(tmp_path), options=options)
    want, want_examples = direct
    assert report.counts == want.counts and report.counts["inputs"] == 23
    assert report.quarantine_reasons == want.quarantine_reasons
    assert report.splits == want.splits
    assert _examples(out) == want_examples
    assert (pulled.instances, pulled.retrieved, pulled.cached, pulled.failed) == (23, 23, 0, 0)
    doc = json.loads((out / REPORT_NAME).read_text())
    assert doc["source"] == pacs.dicomweb_url and doc["dicomweb"]["retrieved"] == 23
    assert not (out / CACHE_DIR).exists()  # identifiable cache removed after success
    printed = capfd.readouterr()
    logged = "\n".join(r.getMessage() for r in caplog.records) + printed.out + printed.err
    assert not [v for v in _identifiers(corpus) if v in logged]
    assert pacs.auth[1] not in logged


def test_an_instance_deleted_after_the_search_is_quarantined_and_counted(
    pacs,
    corpus,
    direct,
    tmp_path,
    caplog,
):
    caplog.set_level(logging.DEBUG)
    gone = pydicom.dcmread(corpus / "pydicom" / "MR_small.dcm")
    source = _source(pacs)
    search = source.search

    def search_then_delete(query):
        refs = search(query)
        (orthanc_id,) = [
            hit["ID"]
            for hit in pacs.rest("POST", "/tools/lookup", data=gone.SOPInstanceUID).json()
            if hit["Type"] == "Instance"
        ]
        pacs.rest("DELETE", f"/instances/{orthanc_id}")
        return refs

    source.search = search_then_delete
    out = tmp_path / "out"
    options = IngestOptions(beam_args=RUNNERS["in-memory"])
    try:
        report, pulled = ingest_dicomweb(source, ALL, out, _key(tmp_path), options=options)
    finally:  # put it back for the other tests of the module
        source.store([(corpus / "pydicom" / "MR_small.dcm").read_bytes()])
    want = direct[0].counts
    assert report.counts["inputs"] == 23
    assert report.counts["written"] == want["written"] - 1
    assert report.counts["quarantined"] == want["quarantined"] + 1
    assert report.quarantine_reasons["fetch_failed"] == 1
    assert (pulled.retrieved, pulled.failed) == (22, 1)
    (entry,) = [f for f in report.files if f.get("reason") == "fetch_failed"]
    assert "WADO-RS failed with HTTP 404" in entry["message"]
    assert gone.SOPInstanceUID not in json.dumps(report.to_dict())
    assert gone.SOPInstanceUID not in "\n".join(r.getMessage() for r in caplog.records)
