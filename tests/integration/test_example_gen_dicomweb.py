"""DicomExampleGen with a DICOMweb source, in a real TFX run against a real Orthanc.

ExampleGen -> StatisticsGen under LocalDagRunner: the PACS pull gives the same examples as
ingesting the files from disk; a rerun with the same query and the same instances is a
cache hit; one more instance in the PACS changes the fingerprint and reruns ingestion.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from medflow.components.dicom.dicomweb import Credentials, DicomwebSource, RetryPolicy
from medflow.components.ingest.npz_import import import_npz
from tests.integration.orthanc import orthanc  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(900)  # TFX runs under LocalDagRunner


def _run(pipeline_root: Path, metadata: Path, key_file: Path, **source) -> dict:
    from tfx import v1 as tfx

    from medflow.components.dicom_example_gen.component import DicomExampleGen
    from medflow.pipelines.progress import ProgressTracker, capture_tfx_logs

    gen = DicomExampleGen(deid_key_file=str(key_file), **source).with_id("ExampleGen")
    stats = tfx.components.StatisticsGen(examples=gen.outputs["examples"])
    pipeline = tfx.dsl.Pipeline(
        pipeline_name="dicomweb-test",
        pipeline_root=str(pipeline_root),
        components=[gen, stats],
        enable_cache=True,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            str(metadata)
        ),
        beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    )
    tracker = ProgressTracker(None)
    with capture_tfx_logs(tracker, pipeline_root.parent / f"{pipeline_root.name}.log"):
        tfx.orchestration.LocalDagRunner().run(pipeline)
    return tracker.components


def _examples(root: Path) -> dict[str, list[bytes]]:
    uris = sorted((root / "ExampleGen" / "examples").iterdir(), key=lambda p: int(p.name))
    out = {}
    for split in ("train", "eval"):
        files = sorted(str(p) for p in (uris[-1] / f"Split-{split}").glob("*.gz"))
        records = tf.data.TFRecordDataset(files, compression_type="GZIP")
        out[split] = sorted(r.numpy() for r in records)
    return out


def test_dicomweb_source_matches_folder_and_caches_on_instance_uids(
    orthanc,  # noqa: F811
    shared_data,
    tmp_path,
    monkeypatch,
):
    manifest = import_npz(shared_data / "breastmnist.npz", tmp_path / "npz", limit=12)
    files = sorted((manifest.parent / "dicom").rglob("*.dcm"))
    source = DicomwebSource(
        orthanc.dicomweb_url, Credentials(*orthanc.auth), retry=RetryPolicy(attempts=2)
    )
    held_back = files[-1]
    assert source.store([p.read_bytes() for p in files[:-1]]) == len(files) - 1
    monkeypatch.setenv("MEDFLOW_DICOMWEB_USERNAME", orthanc.auth[0])
    monkeypatch.setenv("MEDFLOW_DICOMWEB_PASSWORD", orthanc.auth[1])
    key = tmp_path / "deid.key"
    key.write_text("0123456789abcdef-test-key\n")
    common = {"label_manifest": str(manifest), "image_size": 28}
    query = json.dumps({"modality": "DX"})

    # The folder without the held-back file, as a reference.
    folder = tmp_path / "folder"
    for path in files[:-1]:
        dest = folder / path.relative_to(manifest.parent / "dicom")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dest)
    _run(tmp_path / "ref", tmp_path / "ref.sqlite", key, input_base=str(folder), **common)

    pacs_run = dict(dicomweb_url=orthanc.dicomweb_url, dicomweb_query=query, **common)
    first = _run(tmp_path / "pacs", tmp_path / "pacs.sqlite", key, **pacs_run)
    assert first["ExampleGen"]["status"] == "executed"
    pulled = _examples(tmp_path / "pacs")
    assert pulled == _examples(tmp_path / "ref")
    assert sum(len(v) for v in pulled.values()) == len(files) - 1

    again = _run(tmp_path / "pacs", tmp_path / "pacs.sqlite", key, **pacs_run)
    assert again["ExampleGen"]["status"] == "cached"
    assert again["StatisticsGen"]["status"] == "cached"

    assert source.store([held_back.read_bytes()]) == 1
    third = _run(tmp_path / "pacs", tmp_path / "pacs.sqlite", key, **pacs_run)
    assert third["ExampleGen"]["status"] == "executed"
    assert sum(len(v) for v in _examples(tmp_path / "pacs").values()) == len(files)
    # No PACS data is left in the artifact store: only examples and the report.
    for uri in (tmp_path / "pacs" / "ExampleGen").rglob("*"):
        assert uri.suffix != ".dcm", uri
