"""Contour polygons as masks (components.dicom.contours) and the Sunnybrook importer on the
real cardiac MR data: rasterisation geometry, malformed files, import counts, ingestion."""

from __future__ import annotations

import csv
import re
import shutil
from collections import Counter

import numpy as np
import pydicom
import pytest
from pydicom.config import IGNORE, settings
from scipy import ndimage

from medflow.cli import main
from medflow.components.dicom.contours import (
    CONTOUR_ORIGIN,
    contour_mask,
    polygon_area,
    rasterize_polygon,
    read_contour,
)
from medflow.components.dicom.deid import DeidKey
from medflow.components.dicom.errors import DicomRejected
from medflow.components.ingest.engine import IngestOptions, ingest
from medflow.components.ingest.manifest import read_manifest
from medflow.components.ingest.sunnybrook_import import HEADER, find_frames, import_sunnybrook
from medflow.core import features as F
from medflow.core.errors import ConfigError, InputError
from medflow.core.pixel_spec import PixelSpec
from tests.unit.test_ingest import read_examples

KEY = DeidKey(b"0123456789abcdef-test")


@pytest.fixture(scope="module")
def sunnybrook(shared_data):
    return shared_data / "sunnybrook"


@pytest.fixture(scope="module")
def frames(sunnybrook):
    """(pixels, i-contour vertices) of all 96 contoured frames."""
    out = []
    for frame in find_frames(sunnybrook):
        out.append((_pixels(frame.dicom), read_contour(frame.i_contour)))
    return out


@pytest.fixture(scope="module")
def imported(sunnybrook, tmp_path_factory):
    out = tmp_path_factory.mktemp("sb") / "sunnybrook"
    return import_sunnybrook(sunnybrook, out)


def _pixels(path) -> np.ndarray:
    mode = settings.reading_validation_mode
    settings.reading_validation_mode = IGNORE  # Sunnybrook UIDs have leading-zero components
    try:
        return pydicom.dcmread(path).pixel_array.astype(np.float64)
    finally:
        settings.reading_validation_mode = mode


def _perimeter(points: np.ndarray) -> float:
    return float(np.hypot(*np.diff(np.vstack([points, points[:1]]), axis=0).T).sum())


# --- rasterisation -------------------------------------------------------------------------


def test_rectangle_fills_exactly_its_pixel_centres_with_x_as_columns():
    # x 2..7 (columns), y 3..9 (rows): centres c in [2, 7), r in [3, 9) with origin 0.
    rect = np.array([(2, 3), (7, 3), (7, 9), (2, 9)], float)
    mask = rasterize_polygon(rect, 12, 10, origin=0)
    expected = np.zeros((12, 10), np.uint8)
    expected[3:9, 2:7] = 1
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == polygon_area(rect) == 30
    # The same vertices read as 1-based centres are one pixel up and left.
    shifted = np.zeros((12, 10), np.uint8)
    shifted[2:8, 1:6] = 1
    np.testing.assert_array_equal(rasterize_polygon(rect, 12, 10, origin=1), shifted)


def test_concave_polygon_any_vertex_order_and_clipping():
    ell = np.array([(0, 0), (4, 0), (4, 2), (2, 2), (2, 4), (0, 4)], float)
    mask = rasterize_polygon(ell, 6, 6)
    assert mask.sum() == polygon_area(ell) == 12
    assert mask[:2, :4].all() and mask[2:4, :2].all() and not mask[2:4, 2:].any()
    np.testing.assert_array_equal(rasterize_polygon(ell[::-1], 6, 6), mask)  # clockwise too
    # A polygon running off the grid is clipped, not wrapped around.
    big = np.array([(-5, -5), (3.5, -5), (3.5, 20), (-5, 20)], float)
    clipped = rasterize_polygon(big, 6, 6)
    assert clipped[:, :4].all() and not clipped[:, 4:].any()


def test_area_matches_shoelace_within_the_boundary_pixels(frames):
    # A circle at a non-integer centre, then all 96 real contours: the pixel count is the
    # polygon area up to pixels cut by the boundary (a fill that adds the boundary pixels,
    # like an outlined PIL polygon, is about half a perimeter too large and fails this).
    t = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    circle = np.c_[30.3 + 17.2 * np.cos(t), 25.7 + 17.2 * np.sin(t)]
    polygons = [circle] + [points for _, points in frames]
    for points in polygons:
        count = int(rasterize_polygon(points, 256, 256, origin=CONTOUR_ORIGIN).sum())
        assert abs(count - polygon_area(points)) <= 0.25 * _perimeter(points)


def test_masks_lie_on_the_bright_lv_blood_pool(frames):
    # Inside the LV endocardium is blood (bright in cine SSFP); a 3-pixel ring outside it is
    # mostly myocardium (dark). The transposed mask (x and y swapped) does not fit.
    ratios, transposed = [], []
    for pixels, points in frames:
        for out, pts in ((ratios, points), (transposed, points[:, ::-1])):
            mask = rasterize_polygon(pts, *pixels.shape, origin=CONTOUR_ORIGIN).astype(bool)
            ring = ndimage.binary_dilation(mask, iterations=3) & ~mask
            out.append(pixels[mask].mean() / pixels[ring].mean())
    ratios, transposed = np.array(ratios), np.array(transposed)
    assert np.median(ratios) > 1.8 and (ratios > 1.3).all()
    assert np.median(transposed) < 1.3 and np.mean(ratios > transposed) > 0.9


def test_contours_are_one_based_pixel_centres(frames):
    # The image edge (gradient magnitude) along the contours is strongest when the vertices
    # are read with origin 1: the measurement behind CONTOUR_ORIGIN.
    def edge_strength(origin: float) -> float:
        total = 0.0
        for pixels, points in frames:
            grad = np.hypot(*np.gradient(ndimage.gaussian_filter(pixels, 0.5)))
            closed = np.vstack([points, points[:1]])
            dense = np.concatenate(
                [
                    a + (b - a) * s
                    for a, b in zip(closed[:-1], closed[1:], strict=True)
                    for s in (0, 0.5)
                ]
            ).reshape(-1, 2)
            total += ndimage.map_coordinates(
                grad, [dense[:, 1] - origin, dense[:, 0] - origin], order=1
            ).mean()
        return total / len(frames)

    assert CONTOUR_ORIGIN == 1.0
    one, half, zero = edge_strength(1.0), edge_strength(0.5), edge_strength(0.0)
    assert one > half > zero and one > 1.05 * zero


# --- malformed contour files ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, match",
    [
        ("10 10\n20 10\nabc 20\n", r"bad\.txt line 3: 'abc 20' is not 'x y'"),
        ("10 10\n20 10 5\n20 20\n", r"line 2: '20 10 5' is not 'x y'"),
        ("10 10\nnan 10\n20 20\n", r"line 2"),
        ("10 10\n20 10\n", r"has 2 vertices; a polygon needs at least 3"),
        ("", r"has 0 vertices"),
    ],
)
def test_malformed_contour_file_names_file_and_line(tmp_path, text, match):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(DicomRejected, match=match) as info:
        contour_mask(path, 64, 64, name="x.dcm")
    assert info.value.reason == "mask_unreadable" and str(path) in str(info.value)


def test_missing_or_binary_contour_file_and_vertex_outside_the_image(tmp_path):
    with pytest.raises(DicomRejected, match="cannot read contour file") as info:
        contour_mask(tmp_path / "none.txt", 64, 64)
    assert info.value.reason == "mask_unreadable"
    (tmp_path / "bin.txt").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(DicomRejected, match="cannot read contour file"):
        contour_mask(tmp_path / "bin.txt", 64, 64)
    (tmp_path / "far.txt").write_text("10 10\n300 10\n10 20\n")
    with pytest.raises(DicomRejected, match=r"vertex 2 \(300, 10\) lies outside the 64x64") as info:
        contour_mask(tmp_path / "far.txt", 64, 64)
    assert info.value.reason == "mask_mismatch"


# --- import ----------------------------------------------------------------------------------


def test_import_selects_the_96_contoured_frames_of_5_patients(sunnybrook, imported):
    out = imported.parent
    with imported.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == HEADER
        rows = list(reader)
    assert len(rows) == 96 and len({r["SOPInstanceUID"] for r in rows}) == 96
    assert Counter(r["_patient"] for r in rows) == {
        "SCD0000101": 18, "SCD0000201": 18, "SCD0000301": 20, "SCD0000401": 18,
        "SCD0000501": 22,
    }  # fmt: skip
    assert sum(bool(r["_o_contour"]) for r in rows) == 46
    assert {r["split"] for r in rows if r["_patient"] == "SCD0000501"} == {"eval"}
    assert {r["split"] for r in rows if r["_patient"] != "SCD0000501"} == {"train"}
    assert {r["site"] for r in rows} == {"SUNNYBROOK"}
    for r in rows:
        dicom = out / "dicom" / r["_patient"] / r["_source"].rsplit("/", 1)[1]
        assert dicom.read_bytes() == (sunnybrook / r["_source"]).read_bytes()  # not rewritten
        number = int(re.search(r"IM-0001-(\d{4})", r["mask"]).group(1))
        assert dicom.name == f"{number}.dcm" and (out / r["mask"]).is_file()
        assert not r["_o_contour"] or (out / r["_o_contour"]).is_file()
    # Phase: the later frame of each slice position is ED; the data README's ED/ES pairs
    # (frame_a early, frame_b late) and the o-contours (drawn at ED only) agree.
    phase = {(r["_patient"], int(r["_source"].rsplit("/", 1)[1][:-4])): r["phase"] for r in rows}
    assert Counter(phase.values()) == {"ED": 48, "ES": 48}
    with (sunnybrook / "ed_es_pairs.csv").open() as fh:
        for pair in csv.DictReader(fh):
            assert phase[(pair["patient_id"], int(pair["frame_a"]))] == "ES"
            assert phase[(pair["patient_id"], int(pair["frame_b"]))] == "ED"
    assert {r["phase"] for r in rows if r["_o_contour"]} == {"ED"}
    manifest = read_manifest(imported)
    assert manifest.key_column == "SOPInstanceUID"
    assert manifest.label_columns == ["phase", "slice_location_mm", "trigger_time_ms"]
    # One feature type per column (an int-looking "286" among floats breaks StatisticsGen).
    for column in ("slice_location_mm", "trigger_time_ms"):
        assert {type(v[column]) for v in manifest.rows.values()} == {float}


def _copy_src(sunnybrook, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(sunnybrook, src)
    return src


def test_wrong_source_folders_give_one_clear_error(sunnybrook, tmp_path, capsys):
    with pytest.raises(InputError, match=r"link\.csv: not found; pass the Sunnybrook folder"):
        import_sunnybrook(tmp_path, tmp_path / "out")
    src = _copy_src(sunnybrook, tmp_path)
    (src / "dicoms" / "SCD0000101" / "48.dcm").unlink()
    with pytest.raises(InputError, match=r"IM-0001-0048-icontour-manual\.txt: its image .*48\.dcm"):
        import_sunnybrook(src, tmp_path / "out")
    shutil.copyfile(src / "dicoms" / "SCD0000101" / "59.dcm", src / "dicoms/SCD0000101/48.dcm")
    with pytest.raises(InputError, match=r"48\.dcm: InstanceNumber 59 but contour"):
        import_sunnybrook(src, tmp_path / "out")
    with pytest.raises(ConfigError, match="eval patients SCD9: not in"):
        import_sunnybrook(sunnybrook, tmp_path / "out", eval_patients=("SCD9",))
    assert not (tmp_path / "out" / "labels.csv").exists()
    capsys.readouterr()
    assert main(["import-sunnybrook", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("medflow import-sunnybrook: error: ") and "\n" not in err


# --- ingestion with contour masks ------------------------------------------------------------


def test_ingest_imported_frames_with_contour_masks(imported, tmp_path):
    out = imported.parent
    src = tmp_path / "few"
    picked = ["SCD0000101/48.dcm", "SCD0000101/59.dcm", "SCD0000501/9.dcm", "SCD0000501/19.dcm"]
    for rel in picked:
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "dicom" / rel, src / rel)
    report = ingest(
        src, tmp_path / "ex", KEY, read_manifest(imported),
        IngestOptions(pixel=PixelSpec(size=(128, 128))),
    )  # fmt: skip
    assert report.counts["written"] == 4, report.files
    rows = {r["_source"]: r for r in csv.DictReader(imported.open())}
    examples = [e for split in read_examples(tmp_path / "ex").values() for e in split]
    assert sorted(e["phase"].decode() for e in examples) == ["ED", "ED", "ES", "ES"]
    for e in examples:
        mask = np.frombuffer(e[F.MASK], np.uint8).reshape(128, 128)
        image = np.frombuffer(e[F.IMAGE], "<f4").reshape(128, 128)
        spacing = e[F.PIXEL_SPACING]
        assert set(np.unique(mask)) == {0, 1}
        assert spacing[0] == spacing[1] and 2.5 < spacing[0] < 2.9  # 256 px at ~1.3 mm -> 128
        # The filled contour's area in mm² survives the resampling (nearest neighbour).
        (row,) = [
            r for r in rows.values()
            if abs(float(r["trigger_time_ms"]) - e["trigger_time_ms"]) < 1e-2
            and abs(float(r["slice_location_mm"]) - e["slice_location_mm"]) < 1e-2
        ]  # fmt: skip
        dicom = out / "dicom" / row["_patient"] / row["_source"].rsplit("/", 1)[1]
        ds = pydicom.dcmread(dicom, stop_before_pixels=True)
        native = contour_mask(out / row["mask"], ds.Rows, ds.Columns)
        native_mm2 = native.sum() * float(ds.PixelSpacing[0]) * float(ds.PixelSpacing[1])
        assert mask.sum() * spacing[0] * spacing[1] == pytest.approx(native_mm2, rel=0.1)
        assert image[mask > 0].mean() > image[mask == 0].mean()  # bright blood pool


def test_malformed_contour_in_manifest_is_quarantined_with_its_line(imported, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(imported.parent, out)
    bad = out / "contours/SC-HF-I-1/i-contours/IM-0001-0048-icontour-manual.txt"
    bad.write_text(bad.read_text() + "12.5 oops\n")
    src = tmp_path / "one"
    src.mkdir()
    shutil.copyfile(out / "dicom/SCD0000101/48.dcm", src / "48.dcm")
    report = ingest(src, tmp_path / "ex", KEY, read_manifest(out / "labels.csv"))
    (entry,) = report.files
    assert entry["status"] == "quarantined" and entry["reason"] == "mask_unreadable"
    assert "IM-0001-0048-icontour-manual.txt line" in entry["message"]
    assert "'12.5 oops'" in entry["message"]
