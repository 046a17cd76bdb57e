"""DICOMweb options without a server: queries, credentials, accession manifests, cache names."""

from __future__ import annotations

import json

import pytest

from medflow.components.dicom.dicomweb import (
    Credentials,
    DicomwebSource,
    InstanceRef,
    Query,
    load_credentials,
    read_accessions,
)
from medflow.components.dicom.dicomweb_pull import cache_name, fingerprint
from medflow.core.errors import ConfigError, InputError, ServiceError


def test_query_normalises_dates_and_refuses_bad_values():
    q = Query(modality="CT", date_from="2021-03-01", date_to="20210331")
    assert (q.date_from, q.date_to) == ("20210301", "20210331")
    with pytest.raises(ConfigError, match="does not pull a whole PACS"):
        Query()
    with pytest.raises(ConfigError, match="not a DICOM UID"):
        Query(study_uids=("1.2.3/../../etc",))
    with pytest.raises(ConfigError, match="--date-from '2021-13-01'"):
        Query(date_from="2021-13-01")
    with pytest.raises(ConfigError, match="modality 'c t'"):
        Query(modality="c t")


def test_credentials_from_file_then_environment(tmp_path):
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"token": "s3cret-token"}))
    creds = load_credentials(auth, env={"MEDFLOW_DICOMWEB_USERNAME": "ignored"})
    assert creds.kind == "bearer" and "s3cret" not in repr(creds)
    env = {"MEDFLOW_DICOMWEB_AUTH_FILE": str(auth)}
    assert load_credentials(env=env).token == "s3cret-token"
    env = {"MEDFLOW_DICOMWEB_USERNAME": "ann", "MEDFLOW_DICOMWEB_PASSWORD": "pw"}
    assert load_credentials(env=env) == Credentials("ann", "pw")
    assert load_credentials(env={"MEDFLOW_DICOMWEB_TOKEN": "t"}).kind == "bearer"
    assert load_credentials(env={}).kind == "none"
    auth.write_text(json.dumps({"user": "x"}))
    with pytest.raises(ConfigError, match='expected {"username"'):
        load_credentials(auth, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_credentials(tmp_path / "missing.json", env={})


def test_read_accessions_keeps_order_and_drops_blanks(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("SOPInstanceUID,accessionnumber,label\n1.2,A2,0\n1.3,A1,1\n1.4,,1\n1.5,A2,0\n")
    assert read_accessions(path) == ("A2", "A1")
    path.write_text("SOPInstanceUID,label\n1.2,0\n")
    with pytest.raises(InputError, match="no AccessionNumber column"):
        read_accessions(path)


def test_cache_name_is_a_hash_and_fingerprint_ignores_order():
    name = cache_name("1.2.840.1")
    assert name.endswith(".dcm") and "1.2.840" not in name and len(name) == 44
    refs = [InstanceRef("1", "2", "3"), InstanceRef("1", "2", "4")]
    q = Query(modality="CT")
    assert fingerprint(q, refs) == fingerprint(q, refs[::-1]) != fingerprint(q, refs[:1])


def test_source_checks_url_and_ca_bundle(tmp_path):
    with pytest.raises(ConfigError, match="expected an http"):
        DicomwebSource("pacs.example.org/dicom-web")
    with pytest.raises(ConfigError, match="CA bundle .* does not exist"):
        DicomwebSource("https://pacs.example.org/dicom-web", ca_bundle=tmp_path / "none.pem")


def test_unreachable_pacs_is_retried_then_named(tmp_path):
    import socket

    from medflow.components.dicom.dicomweb import RetryPolicy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connections are refused
    source = DicomwebSource(
        f"http://127.0.0.1:{port}/dicom-web", retry=RetryPolicy(attempts=3, backoff_s=0.01)
    )
    with pytest.raises(ServiceError, match=r"of study 1\.2\.3 failed after 3 attempts"):
        source.retrieve(InstanceRef("1.2.3", "1.2.3.4", "1.2.3.4.5"))
