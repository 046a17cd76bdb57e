"""Regressions of the fault campaign (issue 23): burned-in text under any modality, and
symbolic links in the input folder."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pydicom
import pytest

from medflow.components.dicom.deid import DeidKey
from medflow.components.ingest.engine import REPORT_NAME, IngestOptions, ingest
from tests import phantoms as P

KEY = DeidKey(b"0123456789abcdef-test")


def _by_path(out: Path) -> dict[str, dict]:
    report = json.loads((out / REPORT_NAME).read_text())
    return {f["path"]: f for f in report["files"]}


@pytest.mark.parametrize(
    ("modality", "burned", "quarantined"),
    [
        ("CT", "YES", True),  # YES quarantines whatever the modality
        ("MR", "YES", True),
        ("", "YES", True),
        ("", None, True),  # no modality, no statement: pixels may hold text
        ("US", None, True),  # text is common on ultrasound
        ("CT", None, False),  # CT without the attribute: as before
        ("CT", "NO", False),
        ("US", "NO", False),
    ],
)
def test_burned_in_annotation_policy(tmp_path, modality, burned, quarantined):
    ds = P.phantom(modality or "CT", seed=7)
    if not modality:
        del ds.Modality
    if burned is None:
        ds.pop("BurnedInAnnotation", None)
    else:
        ds.BurnedInAnnotation = burned
    P.write(ds, tmp_path / "src" / "image.dcm")
    report = ingest(tmp_path / "src", tmp_path / "out", KEY)
    entry = _by_path(tmp_path / "out")["image.dcm"]
    if quarantined:
        assert entry["reason"] == "burned_in_annotation", entry
        assert report.counts["written"] == 0
        opts = IngestOptions(allow_burned_in=True)
        again = ingest(tmp_path / "src", tmp_path / "out2", KEY, options=opts)
        assert again.counts["written"] == 1  # --allow-burned-in admits it after a check
    else:
        assert entry["status"] == "written", entry


def test_links_are_inputs_that_are_quarantined_and_never_followed_or_copied(tmp_path):
    src, outside = tmp_path / "src", tmp_path / "outside"
    P.write(P.phantom("CT", seed=1, patient_id="A"), src / "a.dcm")
    secret = outside / "deid.key"
    secret.parent.mkdir()
    secret.write_bytes(b"the-site-key-that-must-never-leak")
    P.write(P.phantom("CT", seed=2, patient_id="B"), outside / "study" / "b.dcm")
    os.symlink(secret, src / "key.dcm")  # a file link leading out of the input
    os.symlink(outside / "study", src / "linked-study")  # a linked folder

    report = ingest(src, tmp_path / "out", KEY)

    files = _by_path(tmp_path / "out")
    assert report.counts["inputs"] == 3  # the linked folder is accounted for, not skipped
    assert files["a.dcm"]["status"] == "written"
    for rel in ("key.dcm", "linked-study"):
        assert (files[rel]["status"], files[rel]["reason"]) == ("quarantined", "symlink")
        assert files[rel]["copy"] == ""
    leaked = [
        p
        for p in (tmp_path / "out").rglob("*")
        if p.is_file() and b"the-site-key" in p.read_bytes()
    ]
    assert leaked == []


@pytest.mark.parametrize(
    "label", ['=HYPERLINK("http://x")', "+cmd|' /C calc'!A0", "@SUM(1)", "normal\nINJECT"]
)
def test_manifest_refuses_class_names_a_spreadsheet_would_run(tmp_path, label):
    from medflow.components.ingest.manifest import read_manifest
    from medflow.core.errors import InputError

    path = tmp_path / "labels.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["SOPInstanceUID", "label"])
        writer.writerows([["1.2.3", "normal"], ["1.2.4", label]])
    with pytest.raises(InputError, match=r"line 3: .*not a usable class name"):
        read_manifest(path)


def test_manifest_keeps_negative_numbers_as_labels(tmp_path):
    from medflow.components.ingest.manifest import read_manifest

    path = tmp_path / "labels.csv"
    path.write_text("SOPInstanceUID,label\n1.2.3,-1\n1.2.4,2\n")
    assert read_manifest(path).rows == {"1.2.3": {"label": -1}, "1.2.4": {"label": 2}}


def test_labels_export_writes_comments_that_open_as_text(tmp_path):
    from medflow.dashboard.labels_export import export_labels
    from medflow.dashboard.store import ReviewStore

    store = ReviewStore(f"sqlite:///{tmp_path}/review.db")
    pid = store.record_prediction(
        sop_instance_uid="1.2.3",
        study_instance_uid="1.2",
        series_instance_uid="1.2.1",
        image_ref="/data/a.dcm",
        model_name="cxr",
        model_version="1",
        labels=["normal", "pneumonia"],
        scores=[0.2, 0.8],
    )
    store.review(pid, action="accept", reviewer="alice", comment='=HYPERLINK("http://evil")')
    store.close()
    assert export_labels(ReviewStore(f"sqlite:///{tmp_path}/review.db"), tmp_path / "out.csv")
    with (tmp_path / "out.csv").open(newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["_comment"] == '\'=HYPERLINK("http://evil")'
    assert row["label"] == "1"
    assert row["_label_name"] == "pneumonia"  # issue 24, item 2: names, not only indices


# --- decompression bombs and honest quarantine reasons (issue 23, items 3 and 4) ----------


def _jpeg(rows: int, cols: int) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((rows, cols), 90, np.uint8), mode="L").save(buf, format="JPEG")
    return buf.getvalue()


def _with_jpeg_frame(frame: bytes, rows: int = 28, cols: int = 28):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    ds = P.phantom("MR", seed=3)
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return ds


def _ingest_one(tmp_path: Path, ds) -> dict:
    P.write(ds, tmp_path / "src" / "image.dcm")
    ingest(tmp_path / "src", tmp_path / "out", KEY)
    return _by_path(tmp_path / "out")["image.dcm"]


def test_a_jpeg_frame_larger_than_its_header_says_is_refused_before_decoding(tmp_path):
    entry = _ingest_one(tmp_path, _with_jpeg_frame(_jpeg(2000, 1500)))
    assert entry["reason"] == "codestream_mismatch", entry
    assert "2000x1500" in entry["message"] and "28x28" in entry["message"]


def test_a_jpeg_frame_over_the_pixel_cap_is_refused_before_decoding(tmp_path):
    frame = bytearray(_jpeg(28, 28))
    sof = frame.index(b"\xff\xc0")  # baseline frame header: length, precision, height, width
    frame[sof + 5 : sof + 9] = (30000).to_bytes(2, "big") * 2
    entry = _ingest_one(tmp_path, _with_jpeg_frame(bytes(frame)))
    assert entry["reason"] == "too_many_pixels", entry
    assert "30000x30000" in entry["message"]


def test_a_matching_jpeg_is_still_written(tmp_path):
    entry = _ingest_one(tmp_path, _with_jpeg_frame(_jpeg(28, 28)))
    assert entry["status"] == "written", entry


def test_codestream_sizes_of_jpeg_2000_and_unknown_data():
    from medflow.components.dicom.codestream import frame_size

    siz = b"\xff\x4f\xff\x51" + (41).to_bytes(2, "big") + b"\x00\x00"
    siz += b"".join(v.to_bytes(4, "big") for v in (3000, 4000, 0, 0, 3000, 4000, 0, 0))
    siz += (1).to_bytes(2, "big")
    assert frame_size(siz) == (4000, 3000, 1)
    assert frame_size(_jpeg(20, 30)) == (20, 30, 1)
    assert frame_size(b"\x00" * 64) is None


def test_a_file_cut_before_its_pixels_is_truncated_not_pixel_less(tmp_path):
    data = P.to_bytes(P.phantom("CT", seed=4))
    cut = data[: data.rindex(b"\xe0\x7f\x10\x00")]  # everything before (7FE0,0010)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "image.dcm").write_bytes(cut)
    ingest(tmp_path / "src", tmp_path / "out", KEY)
    entry = _by_path(tmp_path / "out")["image.dcm"]
    assert entry["reason"] == "truncated", entry


def test_rle_data_too_short_for_its_size_is_a_decode_error_not_a_missing_plugin(tmp_path):
    ds = P.compressed(P.phantom("CT", seed=5))  # RLE of a 32x32 image
    ds.Rows, ds.Columns = 2000, 2000  # declared far larger than the encoded data
    entry = _ingest_one(tmp_path, ds)
    assert entry["reason"] == "decode_error", entry


def test_an_absurd_pixel_spacing_is_ignored_not_an_internal_error(tmp_path):
    """Found by the fuzz suite: PixelSpacing 1e308 made resampling compute NaN."""
    ds = P.phantom("CT", seed=9)
    ds.PixelSpacing = ["1e308", "1e308"]
    entry = _ingest_one(tmp_path, ds)
    assert entry["status"] == "written", entry


def test_a_transfer_syntax_uid_that_names_no_transfer_syntax_is_unreadable(tmp_path):
    """Found by the fuzz suite (TransferSyntaxUID 'not a uid'): pydicom's is_compressed raises
    ValueError for it; a reason code, not an internal error."""
    path = P.write(P.phantom("CT", seed=1), tmp_path / "src" / "image.dcm")
    data = path.read_bytes()
    uid = pydicom.dcmread(path).file_meta.TransferSyntaxUID.encode()
    assert data.count(uid) == 1  # the file meta's (same length below: group length holds)
    path.write_bytes(data.replace(uid, b"not a uid".ljust(len(uid), b" ")))
    ingest(tmp_path / "src", tmp_path / "out", KEY)
    entry = _by_path(tmp_path / "out")["image.dcm"]
    assert entry["reason"] == "unreadable", entry
    assert "TransferSyntaxUID is not a transfer syntax UID" in entry["message"]


@pytest.mark.parametrize("shape", [(32, 1, 96), (1, 32, 32), (32, 32, 4), (32, 32, 3, 1)])
def test_a_decoded_frame_of_another_shape_than_the_header_is_a_decode_error(shape):
    """Found by the fuzz suite on the next stack: a decoder returned 32x1x96 for a 32x32 RGB
    header, and reshaping it to an image was an internal error."""
    import numpy as np

    from medflow.components.dicom.errors import DicomRejected
    from medflow.components.dicom.pixels import ImageInfo, _checked_shape

    info = ImageInfo(rows=32, cols=32, frames=1, samples=3, bits_allocated=8, encapsulated=False)
    with pytest.raises(DicomRejected) as err:
        _checked_shape(np.zeros(shape, np.uint8), info, "x.dcm")
    assert err.value.reason == "decode_error" and "x.dcm" in str(err.value)
    for ok in [(32, 32), (32, 32, 3), (32, 32, 1)]:
        assert _checked_shape(np.zeros(ok, np.uint8), info, "x.dcm").shape == ok


def test_pixel_data_whose_vr_cannot_be_resolved_is_unreadable_not_an_internal_error(tmp_path):
    """Found by the fuzz suite: a file meta saying Explicit VR over an implicit-VR body and no
    BitsAllocated: pydicom cannot decide PixelData's OB/OW and raised AttributeError."""
    from pydicom.filewriter import dcmwrite

    ds = P.phantom("CT", seed=5)
    ds["PixelData"].VR = "OB"  # written as is; read back, its VR is ambiguous again
    del ds.BitsAllocated
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.preamble = bytes(128)
    (tmp_path / "src").mkdir()
    dcmwrite(
        tmp_path / "src" / "image.dcm",
        ds,
        implicit_vr=True,
        little_endian=True,
        force_encoding=True,
    )
    ingest(tmp_path / "src", tmp_path / "out", KEY)
    entry = _by_path(tmp_path / "out")["image.dcm"]
    assert entry["reason"] == "unreadable" and "PixelData" in entry["message"], entry
