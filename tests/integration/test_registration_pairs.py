"""Registration pairs in: the pairs manifest, one example per pair, bad pairs quarantined
with a reason and counted, splits by the fixed image's patient, and the importers'
pairs.csv (issue 18)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.filewriter import dcmwrite

from medflow.components.dicom.keys import DeidKey
from medflow.components.ingest.engine import IngestOptions, ingest
from medflow.components.ingest.import_output import grey8_image, secondary_capture
from medflow.components.ingest.manifest import read_manifest
from medflow.components.ingest.pairs_manifest import PairsManifest
from medflow.core.errors import InputError
from medflow.core.pixel_spec import PixelSpec

KEY = DeidKey(b"registration-pairs-test-key")
DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def _dicom(folder: Path, stem: str, patient: str, modality="US", shape=(32, 32), seed=0):
    ds = secondary_capture("regtest", stem, "20200101", patient)
    ds.Modality = modality
    pixels = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    grey8_image(ds, *shape)
    ds.PixelData = pixels.tobytes()
    dcmwrite(folder / f"{stem}.dcm", ds, enforce_file_format=True)
    return ds.SOPInstanceUID


def _mask(folder: Path, name: str, box: tuple[int, int, int, int]) -> str:
    mask = np.zeros((32, 32), np.uint8)
    y0, y1, x0, x1 = box
    mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(folder / name)
    return name


@pytest.fixture
def pair_folder(tmp_path):
    src = tmp_path / "dicom"
    src.mkdir()
    uid = {
        "a": _dicom(src, "a", "p1"),
        "b": _dicom(src, "b", "p1", seed=1),
        "mr": _dicom(src, "mr", "p1", modality="MR", seed=2),
        "big": _dicom(src, "big", "p1", shape=(40, 32), seed=3),
        "lone": _dicom(src, "lone", "p2", seed=4),
    }
    _mask(tmp_path, "a.png", (4, 20, 4, 20))
    _mask(tmp_path, "b.png", (6, 22, 6, 22))
    rows = [
        "fixed,moving,fixed_mask,moving_mask",
        f"{uid['a']},{uid['b']},a.png,b.png",
        f"{uid['b']},{uid['a']},b.png,a.png",
        f"{uid['a']},{uid['mr']},,",
        f"big.dcm,{uid['b']},,",  # keyed by path works too; the grids differ
        f"{uid['a']},1.2.3.404,,",
    ]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    return tmp_path, uid


def _records(path: Path) -> list:
    import tensorflow as tf

    if not path.exists():
        return []
    return [
        tf.train.Example.FromString(r)
        for r in tf.data.TFRecordDataset(str(path), compression_type="GZIP").as_numpy_iterator()
    ]


def test_pairs_ingest_writes_one_example_per_pair_and_quarantines_bad_pairs(pair_folder, tmp_path):
    folder, uid = pair_folder
    manifest = read_manifest(folder / "pairs.csv")
    assert isinstance(manifest, PairsManifest) and len(manifest.pairs) == 5
    options = IngestOptions(pixel=PixelSpec(size=(16, 16)), splits=(("train", 1.0), ("eval", 0.0)))
    report = ingest(folder / "dicom", tmp_path / "out", KEY, manifest, options)
    counts = report.counts
    assert counts["pairs"] == 5 and counts["pairs_written"] == 2 and counts["examples"] == 2
    reasons = report.quarantine_reasons
    assert reasons == {
        "dims_mismatch": 1,
        "missing_image": 1,
        "modality_mismatch": 1,
        "pair_quarantined": 2,  # mr.dcm and big.dcm: in quarantined pairs only
        "unpaired": 1,  # lone.dcm
    }
    assert counts["inputs"] == counts["written"] + counts["quarantined"] + counts["duplicates"]
    messages = {p["reason"]: p["message"] for p in report.pairs if p["status"] == "quarantined"}
    assert "line 4" in messages["modality_mismatch"] and "MR" in messages["modality_mismatch"]
    assert "40x32" in messages["dims_mismatch"]
    assert "'1.2.3.404'" in messages["missing_image"]
    examples = _records(tmp_path / "out" / "train" / "data_tfrecord-00000-of-00001.gz")
    assert len(examples) == 2
    feats = examples[0].features.feature
    fixed = np.frombuffer(feats["fixed"].bytes_list.value[0], "<f4").reshape(16, 16)
    moving = np.frombuffer(feats["moving"].bytes_list.value[0], "<f4").reshape(16, 16)
    assert not np.array_equal(fixed, moving)
    fixed_mask = np.frombuffer(feats["fixed_mask"].bytes_list.value[0], np.uint8).reshape(16, 16)
    moving_mask = np.frombuffer(feats["moving_mask"].bytes_list.value[0], np.uint8).reshape(16, 16)
    assert fixed_mask.sum() > 0 and moving_mask.sum() > 0
    assert not np.array_equal(fixed_mask, moving_mask)
    assert feats["has_masks"].int64_list.value[0] == 1
    assert feats["sop_uid"].bytes_list.value[0].decode() != uid["a"]  # de-identified
    assert (tmp_path / "out" / "ingest_report.json").exists()


def test_missing_mask_file_quarantines_the_pair_not_the_image(pair_folder, tmp_path):
    folder, uid = pair_folder
    (folder / "pairs.csv").write_text(
        f"fixed,moving,fixed_mask,moving_mask,split\n{uid['a']},{uid['b']},a.png,gone.png,eval\n"
        f"{uid['lone']},{uid['b']},,,eval\n"
    )
    options = IngestOptions(pixel=PixelSpec(size=(16, 16)))
    report = ingest(
        folder / "dicom", tmp_path / "out", KEY, read_manifest(folder / "pairs.csv"), options
    )
    pairs = {p["line"]: p for p in report.pairs}
    assert pairs[2]["reason"] == "missing_mask" and "gone.png" in pairs[2]["message"]
    # inter-subject pair (p2 fixed, p1 moving) in the manifest's split
    assert pairs[3]["status"] == "written" and pairs[3]["split"] == "eval"
    assert report.splits["eval"]["examples"] == 1 and report.splits["train"]["examples"] == 0


@pytest.mark.parametrize(
    "rows, message",
    [
        ("fixed,moving\nx,x\n", "line 2: image 'x' is paired with itself"),
        ("fixed,moving\nx,y\nx,y\n", "line 3: pair (x, y) repeats line 2"),
        ("fixed,moving\n,y\n", "line 2: empty fixed"),
        ("fixed,moving,fixed_mask\nx,y,m1.png\nx,z,m2.png\n", "line 3: fixed 'x' has mask"),
        ("fixed,moving\n", "no rows"),
    ],
)
def test_bad_pairs_manifest_names_the_file_and_line(tmp_path, rows, message):
    (tmp_path / "p.csv").write_text(rows)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        read_manifest(tmp_path / "p.csv")
    assert "p.csv" in str(info.value)


@pytest.mark.skipif(not (DATA / "hc18").is_dir(), reason="needs shared/data/hc18")
def test_import_hc18_writes_pairs_csv_of_the_imported_images(tmp_path):
    src = tmp_path / "hc18"
    (src / "training_set").mkdir(parents=True)
    for stem in ("014_2HC", "014_3HC", "014_HC", "010_HC"):
        for suffix in (".png", "_Annotation.png"):
            shutil.copy(DATA / "hc18" / "training_set" / f"{stem}{suffix}", src / "training_set")
    shutil.copy(DATA / "hc18" / "training_set_pixel_size_and_HC.csv", src)
    shutil.copy(DATA / "hc18" / "intra_subject_pairs.csv", src)
    from medflow.components.ingest.hc18_import import import_hc18

    import_hc18(src, tmp_path / "out")
    manifest = read_manifest(tmp_path / "out" / "pairs.csv")
    assert len(manifest.pairs) == 3  # the 014 pairs; 010_2HC was not imported
    assert all(
        Path(p.fixed_mask).is_file() and Path(p.moving_mask).is_file() for p in manifest.pairs
    )
    labels = read_manifest(tmp_path / "out" / "labels.csv")
    assert {p.fixed for p in manifest.pairs} <= set(labels.rows)
