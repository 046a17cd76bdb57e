"""DICOM SEG out (serving.dicom_seg) and in (components.dicom.dicom_seg_masks), real highdicom.

Sources are real files: pydicom's CT (patient frame of reference, positions) made into a
three-slice series, and an HC18-style Secondary Capture ultrasound still (PixelSpacing, no
frame of reference).
"""

from __future__ import annotations

import copy

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medflow.components.dicom.dicom_seg_masks import is_dicom_mask, load_segmentation, seg_mask
from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.masks import mask_for_instance
from medflow.components.dicom.pixels import resample_mask
from medflow.components.dicom.seg import build_segmentation, write_segmentations
from medflow.components.ingest.hc18_import import _instance
from medflow.components.tasks.segmentation.results import MaskPrediction
from medflow.core.pixel_spec import PixelSpec

LABELS = ["background", "lesion"]


def _ct_series(tmp_path, n: int = 3) -> list:
    """n real CT slices (pydicom's CT_small) at z, z+5, ... with their own SOP UIDs."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    paths = []
    for i in range(n):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = hd.UID()
        ds.InstanceNumber = i + 1
        x, y, z = (float(v) for v in base.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5.0 * i]
        path = tmp_path / f"ct{i}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _sc(tmp_path, name: str = "001_HC", rows: int = 60, cols: int = 80):
    pixels = np.random.default_rng(int(name[:3])).integers(0, 255, (rows, cols), dtype=np.uint8)
    ds = _instance(pixels, name, name[:3], 0.25)
    path = tmp_path / f"{name}.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _prediction(path, mask, probs, labels=LABELS, frame_index=0) -> MaskPrediction:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return MaskPrediction(
        path=str(path),
        frame_index=frame_index,
        sop_instance_uid=ds.SOPInstanceUID,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        model_name="seg-model",
        model_version=7,
        labels=list(labels),
        mask=mask,
        probabilities=probs,
        pixel_spacing=None,
        foreground_pixels=int((mask > 0).sum()),
        area_mm2=None,
        mean_probability=0.0,
    )


def _write(predictions, out_dir, **kwargs) -> list:
    written, skipped = write_segmentations(predictions, out_dir, **kwargs)
    assert skipped == []
    return written


def _disc(rows, cols, center, radius) -> np.ndarray:
    rr, cc = np.mgrid[:rows, :cols]
    return (rr - center[0]) ** 2 + (cc - center[1]) ** 2 <= radius**2


def _binary(path, center, radius=10.0):
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    rows, cols = int(ds.Rows), int(ds.Columns)
    rr, cc = np.mgrid[:rows, :cols]
    dist = np.sqrt((rr - center[0]) ** 2 + (cc - center[1]) ** 2)
    probs = (1.0 / (1.0 + np.exp(dist - radius))).astype(np.float32)  # smooth disc
    return _prediction(path, (probs >= 0.5).astype(np.uint8), probs)


def test_binary_seg_of_a_ct_series_reads_back_with_frames_geometry_and_references(tmp_path):
    paths = _ct_series(tmp_path)
    preds = [_binary(p, (40 + 10 * i, 60), 12.0) for i, p in enumerate(paths)]
    preds[1] = _prediction(paths[1], np.zeros_like(preds[1].mask), preds[1].probabilities * 0)
    written = _write(preds, tmp_path / "seg")
    assert len(written) == 1 and written[0].frames == 3
    seg = pydicom.dcmread(written[0].path)
    sources = [pydicom.dcmread(p) for p in paths]
    src = sources[0]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.Modality == "SEG"
    assert seg.SegmentationType == "BINARY" and seg.BitsAllocated == 1
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.PatientID == src.PatientID
    assert seg.SeriesInstanceUID != src.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert (seg.Rows, seg.Columns, seg.NumberOfFrames) == (src.Rows, src.Columns, 3)
    # references: the source series and each source instance
    (ref_series,) = seg.ReferencedSeriesSequence
    assert ref_series.SeriesInstanceUID == src.SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in ref_series.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources
    }
    # geometry: pixel measures and orientation shared, one plane position per frame
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == pytest.approx(
        [float(v) for v in src.PixelSpacing]
    )
    assert [
        float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient
    ] == pytest.approx([float(v) for v in src.ImageOrientationPatient])
    positions = {}  # frames are in spatial order: match them to sources by reference
    for frame in seg.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPClassUID == src.SOPClassUID
        position = frame.PlanePositionSequence[0].ImagePositionPatient
        positions[ref.ReferencedSOPInstanceUID] = [float(v) for v in position]
    assert positions == {
        s.SOPInstanceUID: pytest.approx([float(v) for v in s.ImagePositionPatient]) for s in sources
    }
    (segment,) = seg.SegmentSequence
    assert segment.SegmentNumber == 1 and segment.SegmentLabel == "lesion"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == "seg-model"
    # pixels: every frame (the empty one too) back on its source instance
    back = hd.seg.segread(written[0].path)
    for pred, source in zip(preds, sources, strict=True):
        pixels = back.get_pixels_by_source_instance([source.SOPInstanceUID])[0, ..., 0]
        np.testing.assert_array_equal(pixels, pred.mask)


def test_fractional_seg_stores_probabilities(tmp_path):
    path = _sc(tmp_path)
    pred = _binary(path, (30, 40), 15.0)
    written = _write([pred], tmp_path / "seg", seg_type="fractional")
    seg = pydicom.dcmread(written[0].path)
    assert seg.SegmentationType == "FRACTIONAL"
    assert seg.SegmentationFractionalType == "PROBABILITY" and seg.MaximumFractionalValue == 255
    assert seg.BitsAllocated == 8
    back = load_segmentation(written[0].path)
    probs = back.get_pixels_by_source_instance([pred.sop_instance_uid], rescale_fractional=True)[
        0, ..., 0
    ]
    np.testing.assert_allclose(probs, pred.probabilities, atol=0.5 / 255 + 1e-6)
    assert probs.min() < 0.01 and probs.max() > 0.99


def test_secondary_capture_without_frame_of_reference(tmp_path):
    """An ultrasound still as Secondary Capture (PixelSpacing, no position/orientation)."""
    path = _sc(tmp_path)
    source = pydicom.dcmread(path)
    assert "FrameOfReferenceUID" not in source and "ImagePositionPatient" not in source
    pred = _binary(path, (20, 50), 8.0)
    (written,) = _write([pred], tmp_path / "seg")
    seg = pydicom.dcmread(written.path)
    assert "FrameOfReferenceUID" not in seg
    shared = seg.SharedFunctionalGroupsSequence[0]
    assert [float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing] == [0.25, 0.25]
    assert "PlanePositionSequence" not in seg.PerFrameFunctionalGroupsSequence[0]
    ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    np.testing.assert_array_equal(seg_mask(source, written.path, name="sc"), pred.mask)


def test_source_missing_type2_attributes_still_works(tmp_path):
    path = _sc(tmp_path)
    ds = pydicom.dcmread(path)
    for keyword in ("PatientBirthDate", "PatientSex", "AccessionNumber", "StudyID", "Modality"):
        delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    pred = _binary(path, (30, 30), 6.0)
    seg = build_segmentation([pred], [pydicom.dcmread(path)])
    assert seg.NumberOfFrames == 1 and seg.PatientID == ds.PatientID


def test_multi_class_seg_and_segment_selection(tmp_path):
    path = _sc(tmp_path)
    source = pydicom.dcmread(path)
    rows, cols = int(source.Rows), int(source.Columns)
    labels = ["background", "head", "brain"]
    mask = np.zeros((rows, cols), np.uint8)
    mask[_disc(rows, cols, (30, 40), 20)] = 1
    mask[_disc(rows, cols, (30, 40), 8)] = 2
    probs = np.eye(3, dtype=np.float32)[mask] * 0.8 + 0.2 / 3
    pred = _prediction(path, mask, probs, labels)
    (written,) = _write([pred], tmp_path / "bin")
    seg = pydicom.dcmread(written.path)
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["head", "brain"]
    assert seg.NumberOfFrames == 2  # one frame per segment
    np.testing.assert_array_equal(seg_mask(source, written.path), mask)
    np.testing.assert_array_equal(seg_mask(source, f"{written.path}#2"), mask == 2)
    np.testing.assert_array_equal(seg_mask(source, f"{written.path}#1"), mask == 1)
    (fractional,) = _write([pred], tmp_path / "frac", seg_type="fractional")
    back = load_segmentation(fractional.path)
    stacked = back.get_pixels_by_source_instance([source.SOPInstanceUID], rescale_fractional=True)[
        0
    ]
    np.testing.assert_allclose(stacked, probs[..., 1:], atol=0.5 / 255 + 1e-6)
    np.testing.assert_array_equal(seg_mask(source, fractional.path), mask)


def test_round_trip_seg_as_the_ingestion_mask_source(tmp_path):
    """Masks -> SEG -> manifest mask source -> the same model-grid mask as the PNG route."""
    from PIL import Image

    paths = _ct_series(tmp_path)
    preds = [_binary(p, (50, 50 + 8 * i), 14.0) for i, p in enumerate(paths)]
    (written,) = _write(preds, tmp_path / "seg")
    spec = PixelSpec(size=(64, 48), channels=1)
    for pred, path in zip(preds, paths, strict=True):
        ds = pydicom.dcmread(path)
        png = tmp_path / f"{path.stem}.png"
        Image.fromarray(pred.mask * 255).save(png)
        from_seg = mask_for_instance(ds, written.path, spec, path.name)
        from_png = mask_for_instance(ds, png, spec, path.name)
        np.testing.assert_array_equal(from_seg, from_png)
        np.testing.assert_array_equal(
            from_seg, resample_mask(pred.mask, spec.size, (0.661468, 0.661468))
        )
        assert from_seg.sum() > 0


def test_ingestion_with_a_seg_mask_column(tmp_path):
    """``medflow ingest``: a manifest whose mask column names SEG files (one with #1), and a
    row whose SEG belongs to another image (quarantined as mask_mismatch)."""
    from medflow.components.dicom.deid import DeidKey
    from medflow.components.ingest.engine import IngestOptions, ingest
    from medflow.components.ingest.manifest import read_manifest
    from medflow.core import features as F
    from tests.unit.test_ingest import read_examples

    dicom = tmp_path / "dicom"
    dicom.mkdir()
    paths = [_sc(dicom, f"00{i}_HC") for i in range(3)]
    preds = [_binary(p, (30, 30 + 10 * i), 12.0) for i, p in enumerate(paths)]
    written = _write(preds, tmp_path / "seg")
    assert len(written) == 3  # each HC18 still is its own series
    seg_of = {w.source_series_instance_uid: w.path for w in written}
    cells = [seg_of[preds[0].series_instance_uid], seg_of[preds[1].series_instance_uid] + "#1"]
    cells.append(seg_of[preds[0].series_instance_uid])  # the wrong image's SEG
    manifest = tmp_path / "labels.csv"
    manifest.write_text(
        "SOPInstanceUID,mask,split\n"
        + "".join(f"{p.sop_instance_uid},{c},train\n" for p, c in zip(preds, cells, strict=True))
    )
    options = IngestOptions(pixel=PixelSpec(size=(32, 32)))
    report = ingest(
        dicom, tmp_path / "out", DeidKey(b"0123456789abcdef-test"), read_manifest(manifest), options
    )
    assert report.counts["written"] == 2
    assert report.quarantine_reasons == {"mask_mismatch": 1}
    rows = read_examples(tmp_path / "out")["train"]
    got = sorted(np.frombuffer(r[F.MASK], np.uint8).reshape(32, 32).tobytes() for r in rows)
    expected = sorted(resample_mask(p.mask, (32, 32), (0.25, 0.25)).tobytes() for p in preds[:2])
    assert got == expected


def test_seg_that_does_not_reference_the_instance_is_refused(tmp_path):
    a, b = _sc(tmp_path, "001_HC"), _sc(tmp_path, "002_HC")
    (written,) = _write([_binary(a, (30, 30))], tmp_path / "seg")
    other = pydicom.dcmread(b)
    with pytest.raises(DicomRejected, match="does not reference this instance") as exc:
        mask_for_instance(other, written.path, PixelSpec(size=(32, 32)), "002_HC.dcm")
    assert exc.value.reason == "mask_mismatch"
    with pytest.raises(DicomRejected, match="no segment 3") as exc:
        seg_mask(pydicom.dcmread(a), f"{written.path}#3", name="001_HC.dcm")
    assert exc.value.reason == "mask_mismatch"
    with pytest.raises(DicomRejected, match="not a Segmentation") as exc:
        seg_mask(other, b, name="x")  # a DICOM image, not a SEG
    assert exc.value.reason == "mask_unreadable"
    with pytest.raises(DicomRejected) as exc:
        seg_mask(other, tmp_path / "missing.dcm", name="x")
    assert exc.value.reason == "mask_unreadable"


def test_is_dicom_mask():
    assert is_dicom_mask("a/seg.dcm") and is_dicom_mask("a/seg.DCM#2")
    assert not is_dicom_mask("a/mask.png") and not is_dicom_mask("a/mask.npy")


def test_to_source_grid_inverts_the_ingestion_resample():
    """A mask put on the model grid the way ingestion does it, mapped back by the client."""
    from medflow.serving.source_grid import to_source_grid

    for (rows, cols), spacing, size in [
        ((60, 90), (0.5, 0.25), (32, 32)),  # anisotropic, padded left/right
        ((120, 50), None, (64, 48)),  # no spacing, padded left/right
        ((64, 64), (0.7, 0.7), (64, 64)),  # unchanged
        ((40, 100), (0.3, 0.3), (64, 64)),  # padded top/bottom
    ]:
        truth = _disc(rows, cols, (rows / 2, cols / 2), min(rows, cols) / 3).astype(np.uint8)
        model_grid = resample_mask(truth, size, spacing).astype(np.float32)
        back = to_source_grid(model_grid, rows, cols, spacing, size) >= 0.5
        dice = 2 * (back & (truth > 0)).sum() / (back.sum() + truth.sum())
        # (a one-model-pixel offset gives 0.88-0.92 here: the box is exact, edges blur)
        assert back.shape == (rows, cols) and dice > 0.96, (rows, cols, spacing, dice)
        if size == (rows, cols):
            np.testing.assert_array_equal(back, truth > 0)


def test_series_without_coordinates_gets_a_seg_per_instance(tmp_path):
    """highdicom encodes one source frame when there is no coordinate system."""
    paths = [_sc(tmp_path, f"00{i}_HC") for i in range(2)]
    for path in paths:  # one series, as two stills of one examination
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.1"
        ds.save_as(path, enforce_file_format=True)
    preds = [_binary(p, (30, 40), 9.0) for p in paths]
    written = _write(preds, tmp_path / "seg")
    assert [w.frames for w in written] == [1, 1]
    assert {w.path.split("seg-")[-1] for w in written} == {
        f"{p.sop_instance_uid}.dcm" for p in preds
    }
    for w, p, path in zip(written, preds, paths, strict=True):
        np.testing.assert_array_equal(seg_mask(pydicom.dcmread(path), w.path), p.mask)


def test_multi_frame_source(tmp_path):
    """pydicom-data's enhanced CT (2 frames, patient coordinates): the predicted frame only."""
    path = get_testdata_file("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(path)
    rows, cols = int(ds.Rows), int(ds.Columns)
    mask = _disc(rows, cols, (200, 300), 60).astype(np.uint8)
    pred = _prediction(path, mask, mask.astype(np.float32), frame_index=1)
    (written,) = _write([pred], tmp_path / "seg")
    seg = pydicom.dcmread(written.path)
    assert seg.NumberOfFrames == 1 and seg.FrameOfReferenceUID == ds.FrameOfReferenceUID
    ref = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == ds.SOPInstanceUID and ref.ReferencedFrameNumber == 2
    np.testing.assert_array_equal(seg_mask(ds, written.path, frame_index=1), mask)
    assert not seg_mask(ds, written.path, frame_index=0).any()  # not predicted: empty


def test_multi_frame_source_without_coordinates_is_skipped(tmp_path):
    path = get_testdata_file("emri_small.dcm")  # Enhanced MR, no plane positions
    ds = pydicom.dcmread(path)
    mask = np.zeros((ds.Rows, ds.Columns), np.uint8)
    mask[10:20, 10:30] = 1
    pred = _prediction(path, mask, mask.astype(np.float32), frame_index=5)
    written, skipped = write_segmentations([pred], tmp_path / "seg")
    assert written == [] and [s.sop_instance_uid for s in skipped] == [ds.SOPInstanceUID]
    assert "coordinate system" in skipped[0].reason


def test_a_third_party_seg_as_mask_source():
    """pydicom-data's liver.dcm (a BINARY SEG of three CT slices made elsewhere)."""
    path = get_testdata_file("liver.dcm")
    raw = pydicom.dcmread(path)
    frames = raw.pixel_array  # [3, 512, 512] 0/1, decoded by pydicom alone
    for index, group in enumerate(raw.PerFrameFunctionalGroupsSequence):
        ref = group.DerivationImageSequence[0].SourceImageSequence[0]
        instance = pydicom.Dataset()  # the CT slice's header as far as masks need it
        instance.SOPInstanceUID = ref.ReferencedSOPInstanceUID
        instance.Rows, instance.Columns = raw.Rows, raw.Columns
        got = seg_mask(instance, path, name=f"slice {index}")
        np.testing.assert_array_equal(got, frames[index])
        assert got.sum() > 1000  # the liver is there
