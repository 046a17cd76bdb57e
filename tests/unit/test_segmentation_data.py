"""Masks into ingestion (manifest ``mask`` column) and the HC18 importer on real images."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pydicom
import pytest
from PIL import Image

from medflow.components.dicom.deid import DeidKey
from medflow.components.ingest.engine import IngestOptions, ingest
from medflow.components.ingest.hc18_import import fetus_id, fetus_split, import_hc18, read_reference
from medflow.components.ingest.manifest import read_manifest
from medflow.core import features as F
from medflow.core.pixel_spec import PixelSpec
from tests import phantoms as P
from tests.unit.test_ingest import read_examples

KEY = DeidKey(b"0123456789abcdef-test")


def _decode(row: dict, name: str, dtype, shape) -> np.ndarray:
    return np.frombuffer(row[name], dtype=dtype).reshape(shape)


def _sc_with_rectangle(path, rows=60, cols=90, spacing=(0.5, 0.25)):
    ds = P.phantom("SC", rows=rows, cols=cols)
    pixels = np.full((rows, cols), 20, np.uint8)
    pixels[10:40, 30:80] = 200
    ds.PixelData = pixels.tobytes()
    ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    P.write(ds, path)
    mask = np.zeros((rows, cols), np.uint8)
    mask[10:40, 30:80] = 255
    return ds.SOPInstanceUID, mask


def test_mask_round_trips_through_ingestion_with_the_image_geometry(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sop, mask = _sc_with_rectangle(src / "a.dcm")
    (tmp_path / "m").mkdir()
    Image.fromarray(mask).save(tmp_path / "m" / "a.png")
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"SOPInstanceUID,mask,split\n{sop},m/a.png,train\n")
    options = IngestOptions(pixel=PixelSpec(size=(32, 32)))
    report = ingest(src, tmp_path / "out", KEY, read_manifest(manifest), options)
    assert report.counts["written"] == 1
    (row,) = read_examples(tmp_path / "out")["train"]
    image = _decode(row, F.IMAGE, "<f4", (32, 32))
    got = _decode(row, F.MASK, np.uint8, (32, 32))
    assert set(np.unique(got)) == {0, 1}  # 0/255 PNG stored as 0/1
    # 60 rows x 0.5 mm = 30 mm tall, 90 cols x 0.25 mm = 22.5 mm wide: rows fill 32 px.
    spacing = row[F.PIXEL_SPACING]
    assert spacing[0] == pytest.approx(30 / 32) and spacing[1] == pytest.approx(spacing[0], 0.05)
    top, left = row[F.RESAMPLE_PAD]
    assert top == 0 and left > 0 and not got[:, :left].any() and not got[:, 32 - left :].any()
    # The mask lands on the bright rectangle: same resampling as the pixels.
    # (edge pixels blend bilinearly: above the midpoint 110 of 20 and 200, not at 200)
    assert image[got == 1].min() > 110 and image[got == 0].max() < 110
    area_mm2 = got.sum() * spacing[0] * spacing[1]
    assert area_mm2 == pytest.approx(30 * 0.5 * 50 * 0.25, rel=0.1)


def test_mask_of_the_wrong_size_is_quarantined(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    sop, mask = _sc_with_rectangle(src / "a.dcm")
    np.save(tmp_path / "a.npy", mask[:, :-1])
    manifest = tmp_path / "labels.csv"
    manifest.write_text(f"SOPInstanceUID,mask\n{sop},a.npy\n")
    report = ingest(src, tmp_path / "out", KEY, read_manifest(manifest))
    assert report.quarantine_reasons == {"mask_mismatch": 1}
    assert "60x89" in report.files[0]["message"] and "60x90" in report.files[0]["message"]


def test_manifest_mask_alone_is_a_label_and_is_required(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("SOPInstanceUID,mask\n1.2.3,masks/x.png\n1.2.4,\n")
    with pytest.raises(Exception, match="line 3: missing label mask"):
        read_manifest(path)
    path.write_text("SOPInstanceUID,mask,label\n1.2.3,masks/x.png,1\n1.2.4,,0\n")
    m = read_manifest(path)
    assert m.label_columns == ["label"] and m.masks == {"1.2.3": str(tmp_path / "masks/x.png")}


def test_fetus_split_keeps_each_fetus_in_one_split(shared_data):
    names = read_reference(shared_data / "hc18")
    splits = defaultdict(set)
    for name in names:
        splits[fetus_id(name)].add(fetus_split(fetus_id(name)))
    assert all(len(s) == 1 for s in splits.values())
    share = sum("eval" in s for s in splits.values()) / len(splits)
    assert 0.1 < share < 0.3


def test_hc18_import_then_ingest(shared_data, tmp_path):
    manifest = import_hc18(shared_data / "hc18", tmp_path / "hc18", limit=6)
    rows = list(csv.DictReader(manifest.open()))
    reference = read_reference(shared_data / "hc18")
    assert [r["_source"] for r in rows] == sorted(reference)[:6]
    ds = pydicom.dcmread(tmp_path / "hc18" / "dicom" / "000_HC.dcm")
    assert (ds.Modality, ds.BurnedInAnnotation, ds.PatientID) == ("US", "NO", "HC18-000")
    assert float(ds.PixelSpacing[0]) == pytest.approx(reference["000_HC.png"][0])
    assert float(rows[0]["hc_mm"]) == reference["000_HC.png"][1]
    report = ingest(
        tmp_path / "hc18" / "dicom",
        tmp_path / "out",
        KEY,
        read_manifest(manifest),
        IngestOptions(pixel=PixelSpec(size=(64, 64))),
    )
    assert report.counts["written"] == 6
    examples = [r for split in read_examples(tmp_path / "out").values() for r in split]
    original = {
        float(r["hc_mm"]): np.asarray(Image.open(manifest.parent / r["mask"])).mean() / 255
        for r in rows
    }
    for row in examples:
        mask = _decode(row, F.MASK, np.uint8, (64, 64))
        # 800x540 at square pixels -> 64x43 content, padded top/bottom
        assert row[F.RESAMPLE_PAD] == [10, 0] and not mask[:10].any() and not mask[53:].any()
        fraction = mask.sum() / (64 * 43)
        match = [f for hc, f in original.items() if abs(hc - row["hc_mm"]) < 1e-3]
        assert fraction == pytest.approx(match[0], rel=0.1)
        assert row[F.PIXEL_SPACING][0] > 0.5  # mm per stored pixel: 800 px x ~0.1 mm / 64
