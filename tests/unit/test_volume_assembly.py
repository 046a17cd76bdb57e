"""Series -> volume on real DICOM: the brain-tumour series (5 mm slices 6.5 mm apart,
oblique), shuffled, duplicated, gapped and mixed-orientation copies, and an Enhanced
multi-frame CT."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medflow.components.dicom.volume import (
    VolumeRejected,
    assemble_folder,
    assemble_multiframe,
    assemble_series,
)

STUDY = "brain_tumor_progression/PGBM-001/04-02-1992-FH-HEADBrain Protocols-79896"


@pytest.fixture(scope="module")
def t1_files(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / STUDY / "11-T1post-80644").glob("*.dcm"))
    assert len(files) == 24
    return files


def _copy(files: list[Path], dest: Path) -> list[Path]:
    dest.mkdir()
    names = [f"x{i:03d}.dcm" for i in range(len(files))]
    random.Random(7).shuffle(names)  # file names say nothing about the slice order
    out = []
    for f, n in zip(files, names, strict=True):
        out.append(dest / n)
        shutil.copyfile(f, dest / n)
    return out


def _ipp(path) -> np.ndarray:
    return np.array([float(v) for v in pydicom.dcmread(path).ImagePositionPatient])


def test_tumour_series_geometry_matches_every_source_slice(t1_files):
    vol = assemble_series(t1_files)
    assert vol.voxels.shape == (24, 320, 260)
    assert vol.spacing == pytest.approx((6.5, 0.6875, 0.6875), abs=1e-3)
    assert vol.slice_thickness == 5.0  # thickness is kept apart from the 6.5 mm step
    assert abs(vol.orientation[5]) > 0.1  # oblique: the column cosines leave the axial plane
    positions = vol.slice_positions()
    for k, path in enumerate(vol.source_files):
        assert np.allclose(positions[k], _ipp(path), atol=1e-3)
        ds = pydicom.dcmread(path)
        assert str(ds.SOPInstanceUID) == vol.sop_instance_uids[k]
        assert np.array_equal(vol.voxels[k], ds.pixel_array.astype(np.float32))


def test_shuffled_copy_gives_the_same_volume(t1_files, tmp_path):
    ref = assemble_series(t1_files)
    shuffled = _copy(t1_files, tmp_path / "s")
    vol = assemble_series(list(reversed(shuffled)))
    assert np.array_equal(vol.voxels, ref.voxels)
    assert np.allclose(vol.affine, ref.affine)


def test_duplicated_slice_is_quarantined_with_its_position(t1_files, tmp_path):
    files = _copy(t1_files, tmp_path / "d")
    dup = pydicom.dcmread(files[3])
    dup.SOPInstanceUID = pydicom.uid.generate_uid()
    dup.save_as(tmp_path / "d" / "dup.dcm")
    with pytest.raises(VolumeRejected, match="two slices at .* mm.*remove the duplicate") as e:
        assemble_series([*files, tmp_path / "d" / "dup.dcm"])
    assert e.value.reason == "duplicate_slices"


def test_missing_slice_names_the_gap(t1_files):
    with pytest.raises(
        VolumeRejected, match=r"1 slice\(s\) missing between .* \(step 6.50 mm\)"
    ) as e:
        assemble_series(t1_files[:10] + t1_files[11:])
    assert e.value.reason == "missing_slices"


def test_uneven_step_and_mixed_orientation_are_refused(t1_files, tmp_path):
    files = _copy(t1_files, tmp_path / "u")
    moved = pydicom.dcmread(files[5])
    moved.ImagePositionPatient = [float(v) + 2.0 for v in moved.ImagePositionPatient]
    moved.save_as(files[5])
    result = assemble_folder(files)
    assert result.volumes == [] and result.files == 24
    assert [r[1] for r in result.rejected] == ["uneven_spacing"]

    tilted = pydicom.dcmread(t1_files[0])
    tilted.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]  # a coronal slice in the series
    tilted.save_as(files[5])
    with pytest.raises(VolumeRejected, match="differently oriented planes") as e:
        assemble_series(files)
    assert e.value.reason == "mixed_orientation"


def test_folder_of_two_series_gives_two_volumes(shared_data, t1_files, tmp_path):
    masks = sorted((shared_data / STUDY / "5388-MaskTumor-63335").glob("*.dcm"))
    (tmp_path / "notes.txt").write_text("not DICOM")
    result = assemble_folder([*masks, tmp_path / "notes.txt", *t1_files])
    assert [r[1] for r in result.rejected] == ["not_dicom"] and len(result.volumes) == 2
    image, mask = sorted(result.volumes, key=lambda v: v.voxels.max(), reverse=True)
    assert np.allclose(image.affine, mask.affine, atol=1e-3)  # the mask is on the image grid
    assert int(mask.voxels.sum()) == 6809  # series.csv: mask_fg_voxels


def test_enhanced_multiframe_ct():
    from pydicom.data import get_testdata_file

    path = get_testdata_file("eCT_Supplemental.dcm", download=False)
    if path is None:  # pydicom-data is a dependency (requirements.lock); never silently skip
        from importlib.resources import files

        path = str(files("data_store") / "data" / "eCT_Supplemental.dcm")
    vol = assemble_multiframe(path)
    assert vol.voxels.shape == (2, 512, 512)
    assert vol.spacing == pytest.approx((10.0, 0.388672, 0.388672))
    ds = pydicom.dcmread(path)
    for k in range(2):
        fg = ds.PerFrameFunctionalGroupsSequence[k]
        ipp = np.array([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient])
        assert any(np.allclose(p, ipp, atol=1e-3) for p in vol.slice_positions())
