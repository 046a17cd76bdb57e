"""The Volumes page's data side on real hippocampus MRI volumes and their masks: planes
turned to RAS, window/level and per-label overlay, decisions with the mask's digest, and
the export of accepted pairs that ``medflow import-nifti`` reads."""

from __future__ import annotations

import shutil

import nibabel as nib
import numpy as np
import pytest

from medflow.core.errors import InputError
from medflow.dashboard import volume_review as vr

NAMES = ("hippocampus_003", "hippocampus_004")


@pytest.fixture()
def folder(shared_data, tmp_path):
    for kind in ("images", "masks"):
        (tmp_path / kind).mkdir()
        for name in NAMES:
            src = shared_data / "hippocampus" / ("imagesTr" if kind == "images" else "labelsTr")
            shutil.copy(src / f"{name}.nii.gz", tmp_path / kind / f"{name}.nii.gz")
    return tmp_path


def test_planes_cut_the_ras_volume_and_overlay_each_label(folder):
    case = vr.load_case(folder, NAMES[0])
    raw = nib.load(folder / "images" / f"{NAMES[0]}.nii.gz")
    assert sorted(case.image.shape) == sorted(raw.shape) and case.labels == [1, 2]
    x, y, z = case.image.shape
    assert [case.slices(p) for p in vr.PLANES] == [z, y, x]
    axial = vr.plane_slice(case.image, "axial", 3)
    assert axial.shape == (y, x)  # anterior up, rows from A to P
    assert np.array_equal(axial[::-1, ::-1].T, case.image[:, :, 3])
    k = int(np.argmax((case.mask == 2).sum(axis=(0, 1))))  # the axial slice with most label 2
    window = vr.default_window(case.image)
    both = vr.render(case, "axial", k, window, [1, 2])
    plain = vr.render(case, "axial", k, window, [])
    only1 = vr.render(case, "axial", k, window, [1])
    on2 = vr.plane_slice(case.mask, "axial", k) == 2
    assert both.shape == (y, x, 3) and both.dtype == np.uint8
    assert not np.array_equal(both[on2], plain[on2]) and np.array_equal(only1[on2], plain[on2])


def test_accepted_masks_export_for_import_nifti(folder, tmp_path):
    from medflow.components.ingest.nifti import check_pair

    assert vr.list_cases(folder) == list(NAMES)
    first, second = (vr.load_case(folder, n) for n in NAMES)
    with pytest.raises(InputError, match="no accepted mask"):
        vr.export_accepted(folder, tmp_path / "out")
    vr.decide(folder, first, "accept", "alice")
    vr.decide(folder, second, "reject", "alice")
    assert {n: r["decision"] for n, r in vr.read_decisions(folder).items()} == {
        NAMES[0]: "accept",
        NAMES[1]: "reject",
    }
    assert vr.export_accepted(folder, tmp_path / "out") == [NAMES[0]]
    out = tmp_path / "out"
    assert [p.name for p in (out / "masks").iterdir()] == [f"{NAMES[0]}.nii.gz"]
    check_pair(out / "images" / f"{NAMES[0]}.nii.gz", out / "masks" / f"{NAMES[0]}.nii.gz")
    # a mask rewritten after its review is not exported as reviewed
    mask = folder / "masks" / f"{NAMES[0]}.nii.gz"
    img = nib.load(mask)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), mask)
    with pytest.raises(InputError, match="changed since alice accepted it"):
        vr.export_accepted(folder, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_a_mask_off_the_image_grid_is_refused(folder):
    mask = folder / "masks" / f"{NAMES[1]}.nii.gz"
    img = nib.load(mask)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), img.affine), mask)
    with pytest.raises(InputError, match=r"mask shape \[4, 4, 4\] differs from the image"):
        vr.load_case(folder, NAMES[1])
