"""import-npz: valid, deterministic DICOM from MedMNIST-style arrays, written atomically."""

from __future__ import annotations

import csv

import numpy as np
import pydicom
import pytest

from medflow.components.ingest import npz_import as npz
from medflow.core.errors import ConfigError, InputError


@pytest.fixture
def small_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(
        path,
        train_images=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        train_labels=np.array([[0], [1], [1], [0], [1], [0]]),
        val_images=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8),
        val_labels=np.array([[1], [0], [1]]),
    )
    return path


def _rows(manifest):
    with manifest.open() as fh:
        return list(csv.DictReader(fh))


def test_files_and_manifest(small_npz, tmp_path):
    out = tmp_path / "out"
    manifest = npz.import_npz(small_npz, out)
    assert manifest == out / "labels.csv"
    rows = _rows(manifest)
    assert [(r["split"], r["_npz_split"], r["label"]) for r in rows] == [
        ("train", "train", "0"), ("train", "train", "1"), ("train", "train", "1"),
        ("train", "train", "0"), ("train", "train", "1"), ("train", "train", "0"),
        ("eval", "val", "1"), ("eval", "val", "0"), ("eval", "val", "1"),
    ]  # fmt: skip
    data = np.load(small_npz)
    for row in rows:
        path = out / "dicom" / row["_npz_split"] / f"{int(row['_npz_index']):06d}.dcm"
        ds = pydicom.dcmread(path, force=False)
        assert ds.SOPInstanceUID == row["SOPInstanceUID"] == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.Modality == "DX" and ds.BurnedInAnnotation == "NO"
        assert ds.SOPClassUID == npz.DX_STORAGE and ds.PhotometricInterpretation == "MONOCHROME2"
        expected = data[f"{row['_npz_split']}_images"][int(row["_npz_index"])]
        np.testing.assert_array_equal(ds.pixel_array, expected)
    patients = {pydicom.dcmread(p).PatientID for p in (out / "dicom").rglob("*.dcm")}
    assert len(patients) == 9
    assert sorted(p.name for p in out.iterdir()) == ["dicom", "labels.csv"]  # no leftovers


def test_fast_encoder_equals_pydicom_writer():
    images = np.random.default_rng(1).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    for modality in ("DX", "US"):
        encoder = npz._template_encoder(images, "val", "r00t", modality, "x.npz")
        for index in (0, 1, 9, 11):  # UIDs of odd and even lengths
            fast = encoder.encode(npz._values(images[index], "val", index, "r00t", "x.npz"))
            slow = npz._to_bytes(
                npz._instance(images[index], "val", index, "r00t", modality, "x.npz")
            )
            assert fast == slow


def test_deterministic_uids_and_rerun_replaces(small_npz, tmp_path):
    first = _rows(npz.import_npz(small_npz, tmp_path / "a"))
    second = _rows(npz.import_npz(small_npz, tmp_path / "a"))
    assert first == second
    a = (tmp_path / "a" / "dicom" / "train" / "000003.dcm").read_bytes()
    npz.import_npz(small_npz, tmp_path / "b", splits=("train",), limit=4)
    assert (tmp_path / "b" / "dicom" / "train" / "000003.dcm").read_bytes() == a
    assert len(_rows(tmp_path / "b" / "labels.csv")) == 4
    assert not (tmp_path / "b" / "dicom" / "val").exists()


def test_secondary_capture_modality(small_npz, tmp_path):
    npz.import_npz(small_npz, tmp_path, modality="us", limit=1)
    ds = pydicom.dcmread(tmp_path / "dicom" / "train" / "000000.dcm")
    assert (ds.Modality, ds.SOPClassUID, ds.ConversionType) == ("US", npz.SC_STORAGE, "WSD")


def test_errors_name_the_file_and_what_to_do(small_npz, tmp_path):
    with pytest.raises(InputError, match="no 'test_images'.*holds train_images"):
        npz.import_npz(small_npz, tmp_path, splits=("test",))
    with pytest.raises(InputError, match="no such npz file"):
        npz.import_npz(tmp_path / "missing.npz", tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="cannot read as a NumPy"):
        npz.import_npz(tmp_path / "junk.npz", tmp_path)
    bad = tmp_path / "float.npz"
    np.savez(bad, train_images=np.zeros((2, 4, 4), np.float32), train_labels=np.zeros((2, 1)))
    with pytest.raises(InputError, match="uint8"):
        npz.import_npz(bad, tmp_path, splits=("train",))
    with pytest.raises(ConfigError, match="--limit"):
        npz.import_npz(small_npz, tmp_path, limit=0)
    assert not (tmp_path / "labels.csv").exists()
