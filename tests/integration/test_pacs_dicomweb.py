"""medflow against a real Orthanc PACS over DICOMweb (QIDO-RS, WADO-RS, STOW-RS).

One Orthanc serves the module: real DICOM files (pydicom's test files and BreastMNIST
imported to DICOM) are uploaded with STOW-RS, then pulled back through ``medflow ingest
--dicomweb`` and compared with ingesting the same files from disk.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from medflow.cli import main
from medflow.components.dicom.dicomweb import (
    Credentials,
    DicomwebSource,
    Query,
    RetryPolicy,
)
from medflow.components.dicom.dicomweb_pull import CACHE_DIR, cache_name, pull
from medflow.components.dicom.keys import load_key_file
from medflow.components.dicom.reader import parse
from medflow.components.ingest.dicomweb_ingest import ingest_dicomweb
from medflow.components.ingest.engine import REPORT_NAME, ingest
from medflow.components.ingest.npz_import import import_npz
from tests.integration.orthanc import orthanc  # noqa: F401 - fixture

PYDICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "SC_rgb.dcm")  # SC: quarantined (burned-in)
KEY = "0123456789abcdef-test-key"
FAST_RETRY = RetryPolicy(attempts=2, backoff_s=0.05, timeout_s=10)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data) -> Path:
    """23 real DICOM files on disk: pydicom's plus 20 BreastMNIST images."""
    root = tmp_path_factory.mktemp("corpus")
    import_npz(shared_data / "breastmnist.npz", root / "npz", limit=10)
    files = root / "files"
    shutil.copytree(root / "npz" / "dicom", files / "breastmnist")
    for name in PYDICOM_FILES:
        (files / "pydicom").mkdir(parents=True, exist_ok=True)
        shutil.copy(get_testdata_file(name), files / "pydicom" / name)
    return files


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.dcm"))


@pytest.fixture(scope="module")
def pacs(orthanc, corpus):  # noqa: F811
    """The Orthanc with the corpus stored over STOW-RS."""
    source = DicomwebSource(orthanc.dicomweb_url, Credentials(*orthanc.auth), retry=FAST_RETRY)
    stored = source.store([p.read_bytes() for p in _files(corpus)])
    assert stored == orthanc.instance_count() == len(_files(corpus)) == 23
    return orthanc


@pytest.fixture()
def env(monkeypatch, pacs, tmp_path):
    monkeypatch.setenv("MEDFLOW_DEID_KEY", KEY)
    monkeypatch.delenv("MEDFLOW_DEID_KEY_FILE", raising=False)
    monkeypatch.setenv("MEDFLOW_DICOMWEB_USERNAME", pacs.auth[0])
    monkeypatch.setenv("MEDFLOW_DICOMWEB_PASSWORD", pacs.auth[1])
    return monkeypatch


def _key(tmp_path: Path):
    path = tmp_path / "key"
    path.write_text(KEY)
    return load_key_file(path)


def _examples(out: Path) -> dict[str, list[bytes]]:
    """Serialized tf.Examples per split, sorted (file order differs between sources)."""
    import tensorflow as tf

    found = {}
    for split in ("train", "eval"):
        shards = sorted(str(p) for p in (out / split).glob("*.gz"))
        records = tf.data.TFRecordDataset(shards, compression_type="GZIP") if shards else []
        found[split] = sorted(r.numpy() for r in records)
    return found


def _report(out: Path) -> dict:
    import json

    return json.loads((out / REPORT_NAME).read_text())


def test_orthanc_fixture_serves_dicomweb_behind_basic_auth(orthanc):  # noqa: F811
    assert requests.get(f"{orthanc.url}/system", timeout=5).status_code == 401
    assert orthanc.rest("GET", "/system").json()["DicomPort"] == orthanc.dicom_port
    assert "dicom-web" in orthanc.rest("GET", "/plugins").json()


def test_qido_filters_and_wado_bytes(pacs, corpus):
    source = DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=FAST_RETRY)
    ct = pydicom.dcmread(corpus / "pydicom" / "CT_small.dcm")
    by_study = source.search(Query(study_uids=(ct.StudyInstanceUID,)))
    assert [r.sop_uid for r in by_study] == [ct.SOPInstanceUID]
    assert [r.sop_uid for r in source.search(Query(series_uid=ct.SeriesInstanceUID))] == [
        ct.SOPInstanceUID
    ]
    assert {r.sop_uid for r in source.search(Query(modality="MR"))} == {
        pydicom.dcmread(corpus / "pydicom" / "MR_small.dcm").SOPInstanceUID
    }
    on_disk = {p: pydicom.dcmread(p, stop_before_pixels=True) for p in _files(corpus)}
    in_2004 = {d.SOPInstanceUID for d in on_disk.values() if d.StudyDate.startswith("2004")}
    assert {
        r.sop_uid for r in source.search(Query(date_from="2004-01-01", date_to="20041231"))
    } == (in_2004)
    assert len(in_2004) >= 2
    # WADO-RS gives back the stored Part 10 bytes unchanged
    assert source.retrieve(by_study[0]) == (corpus / "pydicom" / "CT_small.dcm").read_bytes()


def test_wrong_password_is_a_clear_error(pacs):
    from medflow.core.errors import ServiceError

    source = DicomwebSource(pacs.dicomweb_url, Credentials(pacs.auth[0], "wrong"))
    with pytest.raises(ServiceError, match="HTTP 401; check the credentials"):
        source.search(Query(modality="CT"))


def test_cli_pull_gives_the_same_examples_as_the_files(env, pacs, corpus, tmp_path, capsys):
    direct = ingest(corpus, tmp_path / "direct", _key(tmp_path))
    accessions = tmp_path / "accessions.csv"
    on_disk = [pydicom.dcmread(p, stop_before_pixels=True) for p in _files(corpus)]
    wanted = sorted({d.AccessionNumber for d in on_disk if d.get("AccessionNumber")})[:3]
    with accessions.open("w", newline="") as fh:
        csv.writer(fh).writerows([["AccessionNumber", "note"], *[[a, "x"] for a in wanted]])
    out = tmp_path / "pulled"
    by_accession = tmp_path / "by_accession"
    code = main(
        ["ingest", "--dicomweb", pacs.dicomweb_url, "--accessions-from", str(accessions)]
        + ["--out", str(by_accession)]
    )
    assert code == 0
    n_wanted = sum(d.get("AccessionNumber") in wanted for d in on_disk)
    assert _report(by_accession)["counts"]["inputs"] == n_wanted >= 3
    capsys.readouterr()

    # The whole corpus, every study named
    args = ["ingest", "--dicomweb", pacs.dicomweb_url, "--out", str(out)]
    for study in sorted({d.StudyInstanceUID for d in on_disk}):
        args += ["--study", study]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "pulled 23 instance(s)" in printed and "23 retrieved, 0 already cached" in printed
    pulled = _report(out)
    assert pulled["source"] == pacs.dicomweb_url
    assert pulled["counts"] == direct.counts
    assert pulled["counts"]["quarantined"] == 1
    assert pulled["quarantine_reasons"] == direct.quarantine_reasons == {"burned_in_annotation": 1}
    assert pulled["splits"] == direct.splits
    assert pulled["dicomweb"]["instances"] == 23 and pulled["dicomweb"]["studies"] == len(
        {d.StudyInstanceUID for d in on_disk}
    )
    assert _examples(out) == _examples(tmp_path / "direct")
    assert not (out / CACHE_DIR).exists()  # identifiable cache removed after success


def test_pacs_killed_mid_pull_then_rerun_completes(pacs, corpus, tmp_path):
    from medflow.core.errors import ServiceError

    source = DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=FAST_RETRY)
    query = Query(date_from="1900-01-01", date_to="2100-12-31")
    total = len(_files(corpus))
    out = tmp_path / "out"
    cache = out / CACHE_DIR
    kill_after = 7

    def killing(items, n):
        assert n == total
        for i, item in enumerate(items):
            if i == kill_after:
                pacs.stop(kill=True)  # SIGKILL: the PACS crashes between two retrievals
            yield item

    try:
        with pytest.raises(ServiceError, match=r"of study [0-9.]+ failed after 2 attempts"):
            pull(source, query, cache, progress=killing)
    finally:
        pacs.start()
    cached = sorted(cache.iterdir())
    assert len(cached) == kill_after  # whole instances only, no temporary files
    originals = {cache_name(pydicom.dcmread(p).SOPInstanceUID): p for p in _files(corpus)}
    for path in cached:
        assert path.read_bytes() == originals[path.name].read_bytes()
        parse(path.read_bytes(), path.name)

    report, pulled = ingest_dicomweb(source, query, out, _key(tmp_path), keep_cache=True)
    assert (pulled.instances, pulled.retrieved, pulled.cached) == (total, total - kill_after, 7)
    direct = ingest(corpus, tmp_path / "direct", _key(tmp_path))
    assert report.counts == direct.counts
    assert report.counts["inputs"] == total
    assert sorted(p.name for p in cache.iterdir()) == sorted(originals)
    assert _examples(out) == _examples(tmp_path / "direct")


@pytest.fixture()
def model_server(tmp_path):
    from tests.integration.test_serving_helpers import add_version, start_server

    add_version(tmp_path / "models", 1)
    server = start_server(tmp_path / "models")
    yield server
    server.stop()


def test_predict_push_stores_an_sr_that_references_the_study(
    env, pacs, corpus, model_server, capsys
):
    """Last in the module: it adds an SR to the PACS."""
    import json

    import highdicom as hd

    ct = pydicom.dcmread(corpus / "pydicom" / "CT_small.dcm")
    code = main(
        ["predict", "--dicomweb", pacs.dicomweb_url, "--study", ct.StudyInstanceUID, "--push"]
        + ["--server", f"127.0.0.1:{model_server.grpc_port}", "--model", "demo", "--json"]
    )
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    (pred,) = doc["predictions"]
    assert pred["sop_instance_uid"] == ct.SOPInstanceUID
    assert pred["path"].endswith(f"/instances/{ct.SOPInstanceUID}")
    (pushed,) = doc["pushed"]
    assert pushed["study_instance_uid"] == ct.StudyInstanceUID and pushed["findings"] == 1

    # Read it back from Orthanc, through the same safe reader, and check it with highdicom
    source = DicomwebSource(pacs.dicomweb_url, Credentials(*pacs.auth), retry=FAST_RETRY)
    (ref,) = source.search(Query(study_uids=(ct.StudyInstanceUID,), modality="SR"))
    assert ref.sop_uid == pushed["sop_instance_uid"]
    ds = parse(source.retrieve(ref), "sr")
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    assert (ds.StudyInstanceUID, ds.PatientID) == (ct.StudyInstanceUID, ct.PatientID)
    (group,) = sr.content.get_image_measurement_groups()
    (image,) = group.source_images
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
    assert image.ReferencedSOPSequence[0].ReferencedSOPClassUID == ct.SOPClassUID
    (label,) = group.get_qualitative_evaluations()
    assert label.value.meaning == pred["label"]
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert values["Probability of class_1"] == pytest.approx(pred["probabilities"][1], abs=1e-6)
    assert values["Model score of the predicted label"] == pytest.approx(pred["score"], abs=1e-6)
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == ct.SOPInstanceUID
