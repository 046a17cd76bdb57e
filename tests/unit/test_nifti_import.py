"""NIfTI in: medflow import-nifti on real hippocampus volumes, volume ingestion into
tf.Examples, and the bad inputs (mask on another grid, a 4D file, a missing mask)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medflow.components.dicom.keys import DeidKey
from medflow.components.ingest.engine import ingest
from medflow.components.ingest.manifest import read_manifest
from medflow.components.ingest.nifti_import import import_nifti
from medflow.components.ingest.volume_spec import restore
from medflow.core import features as F
from medflow.core.errors import InputError

KEY = DeidKey(b"k" * 32)
N = 5


@pytest.fixture(scope="module")
def hippo(shared_data: Path, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hippo")
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir()
        for f in sorted((shared_data / "hippocampus" / sub).glob("*.nii.gz"))[:N]:
            shutil.copyfile(f, root / sub / f.name)
    return root


@pytest.fixture(scope="module")
def imported(hippo: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imported")
    import_nifti(hippo / "imagesTr", hippo / "labelsTr", out, KEY)
    return out


def _rows(manifest: Path) -> list[dict]:
    with manifest.open() as fh:
        return list(csv.DictReader(fh))


def test_import_pseudonymises_and_keeps_voxels_and_affine(hippo, imported):
    rows = _rows(imported / "labels.csv")
    assert len(rows) == N and {r["split"] for r in rows} <= {"train", "eval"}
    text = (imported / "labels.csv").read_text()
    assert "hippocampus" not in text  # the original names stay out of the manifest
    assert all(r["path"] == f"images/{r['_id']}.nii.gz" for r in rows)
    sources = sorted((hippo / "imagesTr").glob("*.nii.gz"))
    copies = {np.asarray(nib.load(imported / r["path"]).dataobj).tobytes(): r for r in rows}
    for src in sources:
        img = nib.load(src)
        row = copies[np.asarray(img.dataobj).astype(np.float32).tobytes()]
        copy = nib.load(imported / row["path"])
        assert np.allclose(copy.affine, img.affine)
        mask = nib.load(hippo / "labelsTr" / src.name)
        assert np.array_equal(np.asarray(nib.load(imported / row["mask"]).dataobj), mask.dataobj)
    spec = json.loads((imported / "volume_spec.json").read_text())
    assert spec["spacing"] == [1.0, 1.0, 1.0] and all(s % 16 == 0 for s in spec["size"])


def _examples(folder: Path) -> list:
    import tensorflow as tf

    out = []
    for shard in sorted(folder.glob("*/data_tfrecord-*.gz")):
        for raw in tf.data.TFRecordDataset(str(shard), compression_type="GZIP"):
            out.append(tf.train.Example.FromString(raw.numpy()).features.feature)
    return out


def test_ingest_writes_volume_examples_that_map_back(imported, tmp_path):
    report = ingest(imported, tmp_path / "ex", KEY, read_manifest(imported / "labels.csv"))
    assert report.counts["written"] == N and report.counts["examples"] == N
    doc = json.loads((tmp_path / "ex" / "ingest_report.json").read_text())
    assert doc["volumes"] == {
        "volumes": N,
        "image_files": N,
        "mask_files": N,
        "quarantined": 0,
        "duplicates": 0,
    }
    rows = {r["_id"]: r for r in _rows(imported / "labels.csv")}
    examples = _examples(tmp_path / "ex")
    assert len(examples) == N
    for ex in examples:
        shape = list(ex[F.IMAGE_SHAPE].int64_list.value)
        grid = np.frombuffer(ex[F.MASK].bytes_list.value[0], np.uint8).reshape(shape[:3])
        image = np.frombuffer(ex[F.IMAGE].bytes_list.value[0], "<f4").reshape(shape)
        assert shape[3] == 1 and 0.0 <= np.median(image) <= 1.0
        row = rows[ex[F.PATIENT_ID].bytes_list.value[0].decode()]
        source = np.asarray(nib.load(imported / row["mask"]).dataobj)
        back = restore(
            grid,
            list(ex[F.VOLUME_OFFSET].int64_list.value),
            list(ex[F.VOLUME_RESAMPLED_SHAPE].int64_list.value),
            list(ex[F.VOLUME_SOURCE_SHAPE].int64_list.value),
            ex[F.VOLUME_ORIENTATION].bytes_list.value[0].decode(),
        )
        assert np.array_equal(back, source)
        # the grid's affine puts the source's first voxel where the source affine does
        affine = np.array(ex[F.VOLUME_AFFINE].float_list.value).reshape(4, 4)
        offset = np.array([*ex[F.VOLUME_OFFSET].int64_list.value, 1.0])
        src_affine = np.diag([-1.0, -1, 1, 1]) @ nib.load(imported / row["path"]).affine
        assert np.allclose(affine @ offset, src_affine[:, 3], atol=1e-4)
        assert ex[F.VOLUME_ORIENTATION].bytes_list.value[0] == b"RAS"


def _nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    return path


def test_bad_pairs_are_refused_with_a_reason_and_nothing_written(tmp_path):
    images, masks, out = tmp_path / "i", tmp_path / "m", tmp_path / "out"
    images.mkdir(), masks.mkdir()
    _nifti(images / "a.nii.gz", np.zeros((8, 9, 10), np.float32))
    _nifti(masks / "a.nii.gz", np.zeros((8, 9, 11), np.uint8))
    _nifti(images / "b.nii.gz", np.zeros((8, 9, 10, 3), np.float32))
    _nifti(masks / "b.nii.gz", np.zeros((8, 9, 10), np.uint8))
    with pytest.raises(InputError) as e:
        import_nifti(images, masks, out, KEY)
    msg = str(e.value)
    assert "a.nii.gz: mask shape [8, 9, 11] differs from its image a.nii.gz [8, 9, 10]" in msg
    assert "b.nii.gz: a 4D NIfTI (shape [8, 9, 10, 3])" in msg and "nothing was written" in msg
    assert not out.exists() or not any(out.iterdir())

    (masks / "a.nii.gz").unlink()
    _nifti(images / "b.nii.gz", np.zeros((8, 9, 10), np.float32))
    with pytest.raises(InputError, match=r"no mask for a.nii.gz \(1 images\)"):
        import_nifti(images, masks, out, KEY)


def test_a_mask_edited_after_import_is_quarantined_not_written(imported, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(imported, folder)
    row = _rows(folder / "labels.csv")[0]
    _nifti(folder / row["mask"], np.zeros((3, 3, 3), np.uint8))
    report = ingest(folder, tmp_path / "ex", KEY, read_manifest(folder / "labels.csv"))
    assert report.counts["written"] == N - 1
    assert report.quarantine_reasons == {"mask_mismatch": 1}
    bad = [f for f in report.files if f["status"] == "quarantined"][0]
    assert bad["path"] == row["path"] and "resample the mask onto the image grid" in bad["message"]
    assert len(_examples(tmp_path / "ex")) == N - 1  # the other volumes are there
    assert (tmp_path / "ex" / bad["copy"]).is_file()  # the quarantined image, for a look


def test_a_volume_reaches_the_grid_the_same_way_round_in_any_axis_order():
    from medflow.components.ingest.volume_spec import VolumeSpec, prepare

    rng = np.random.default_rng(0)
    ras = rng.random((12, 14, 10)).astype(np.float32)  # (i, j, k) along R, A, S, 1 mm
    mask = (ras > 0.8).astype(np.uint8)
    lps_affine = np.diag([-1.0, -1.0, 1.0, 1.0])  # RAS index axes in LPS coordinates
    # the same voxels as a DICOM series stores them: (slice along S, row along P, column
    # along L), i.e. reversed axes with the first two flipped
    dicom = np.ascontiguousarray(np.flip(ras, (0, 1)).transpose(2, 1, 0))
    dicom_affine = np.zeros((4, 4))
    dicom_affine[:3, 0], dicom_affine[:3, 1], dicom_affine[:3, 2] = [0, 0, 1], [0, 1, 0], [1, 0, 0]
    dicom_affine[:3, 3] = [-11.0, -13.0, 0.0]  # the last R/A voxel is the first L/P one
    dicom_affine[3, 3] = 1.0
    spec = VolumeSpec((1.0, 1.0, 1.0), (16, 16, 16))
    a = prepare(ras, lps_affine, spec, mask)
    b = prepare(
        dicom, dicom_affine, spec, np.ascontiguousarray(np.flip(mask, (0, 1)).transpose(2, 1, 0))
    )
    assert (a.orientation, b.orientation) == ("RAS", "SPL")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert np.allclose(a.affine, b.affine)
    back = restore(b.mask, b.offset, b.resampled_shape, b.source_shape, b.orientation)
    assert np.array_equal(back, np.flip(mask, (0, 1)).transpose(2, 1, 0))
