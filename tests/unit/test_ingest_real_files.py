"""Real files: every DICOM file shipped with pydicom and pydicom-data is ingested or
quarantined with a reason; MedMNIST round-trips through import-npz and ingestion."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pydicom.data
import pytest

from medflow.components.dicom.deid import DeidKey, remap_uid
from medflow.components.dicom.errors import REASONS
from medflow.components.ingest.engine import IngestOptions, ingest
from medflow.components.ingest.examples import BURNED_IN_MODALITIES
from medflow.components.ingest.manifest import read_manifest
from medflow.components.ingest.npz_import import import_npz
from medflow.core.pixel_spec import PixelSpec
from tests.unit.test_ingest import assert_no_partial_outputs, read_examples

KEY = DeidKey(b"0123456789abcdef-test")


def _corpus_roots() -> list[Path]:
    roots = {Path(f).parent for f in pydicom.data.get_testdata_files()}
    test_files = Path(pydicom.data.__file__).parent / "test_files"
    try:
        import data_store  # the pydicom-data package

        store = Path(data_store.__file__).parent / "data"
    except ImportError:
        pytest.skip("pydicom-data is not installed")
    assert store in roots  # get_testdata_files() covers pydicom-data too
    return [test_files, store]


@pytest.mark.parametrize("allow_burned_in", [False, True], ids=["default", "burned-in-allowed"])
def test_every_shipped_file_is_ingested_or_quarantined(tmp_path, allow_burned_in):
    src = tmp_path / "src"
    for name, root in zip(("pydicom", "pydicom-data"), _corpus_roots(), strict=True):
        shutil.copytree(root, src / name)  # ingestion does not follow directory links
    inputs = [p for p in src.rglob("*") if p.is_file()]
    assert len(inputs) > 200
    out = tmp_path / "out"
    options = IngestOptions(allow_burned_in=allow_burned_in)
    report = ingest(src, out, KEY, options=options)
    c = report.counts
    assert c["inputs"] == len(inputs)
    assert c["inputs"] == c["written"] + c["quarantined"] + c["duplicates"]
    reasons = report.quarantine_reasons
    assert "internal_error" not in reasons, [
        f["message"] for f in report.files if f.get("reason") == "internal_error"
    ]
    assert set(reasons) <= set(REASONS)
    for entry in report.files:
        if entry["status"] == "quarantined":
            assert entry["message"] and entry["path"].split("/")[-1] in entry["message"]
            assert (out / entry["copy"]).is_file()
    # well-known files end where they should
    by_name = {f["path"].split("/", 1)[1]: f for f in report.files}
    assert by_name["CT_small.dcm"]["status"] == "written"
    assert by_name["MR_truncated.dcm"]["reason"] == "truncated"
    assert by_name["no_meta.dcm"]["reason"] == "not_dicom"
    assert by_name["rtplan.dcm"]["reason"] == "no_pixel_data"
    # Files without a Modality and without BurnedInAnnotation NO are quarantined by default
    # (their pixels may show text: issue 23); allowed, they are written.
    assert c["written"] >= (60 if allow_burned_in else 55)
    burned = [f for f in report.files if f.get("reason") == "burned_in_annotation"]
    assert all(
        "BurnedInAnnotation=YES" in f["message"]
        or "no-modality" in f["message"]
        or f["message"].split(": ", 1)[1].split(" ")[0] in BURNED_IN_MODALITIES
        for f in burned
    ), burned
    assert not burned if allow_burned_in else burned
    examples = read_examples(out)
    assert sum(len(v) for v in examples.values()) == c["examples"]
    assert_no_partial_outputs(out)


def test_medmnist_round_trip(shared_data, tmp_path):
    npz_path = shared_data / "breastmnist.npz"
    manifest = import_npz(npz_path, tmp_path / "imp", limit=12, modality="US")
    report = ingest(
        tmp_path / "imp" / "dicom",
        tmp_path / "out",
        KEY,
        read_manifest(manifest),
        IngestOptions(pixel=PixelSpec(size=(28, 28))),
    )
    assert report.counts["written"] + report.counts["duplicates"] == 24
    assert report.counts["quarantined"] == 0
    with manifest.open() as fh:
        source = {remap_uid(KEY, r["SOPInstanceUID"]): r for r in csv.DictReader(fh)}
    data = np.load(npz_path)
    examples = read_examples(tmp_path / "out")
    assert set(examples) <= {"train", "eval"} and examples["eval"]
    seen = 0
    for split, rows in examples.items():
        for row in rows:
            src = source[row["sop_uid"].decode()]
            assert split == src["split"] == {"train": "train", "val": "eval"}[src["_npz_split"]]
            index = int(src["_npz_index"])
            expected = data[f"{src['_npz_split']}_images"][index]
            image = np.frombuffer(row["image"], "<f4").reshape(28, 28)
            np.testing.assert_array_equal(image, expected.astype(np.float32))
            assert row["label"] == int(data[f"{src['_npz_split']}_labels"][index][0])
            seen += 1
    assert seen == report.counts["examples"] == report.counts["written"]
