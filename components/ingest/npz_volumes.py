"""MedMNIST-3D-style ``.npz`` (``<split>_images`` (N, D, H, W) uint8) -> one Enhanced
multi-frame DICOM volume per case, a label manifest and the volume spec ingestion reads.

Layout written under ``out_dir``::

    volumes/<npz split>/<index>.dcm   one Enhanced CT instance (D frames) per case
    labels.csv                        path,label,split,_npz_split,_npz_index
    volume_spec.json                  the VolumeSpec (1 mm, the npz grid, a 0..255 window)

Why multi-frame rather than a series of single-frame slices: a case is one file (1,286 files
instead of 36,000 for 28^3, 82,000 for 64^3), the geometry of every frame sits in the
per-frame functional groups that :func:`components.dicom.volume.assemble_multiframe` reads
with highdicom, and a PACS stores and returns the case as one object.

The volumes carry no true spacing (MedMNIST resamples to a cube): 1 mm isotropic is written,
axial, at the origin. UIDs derive from a digest of the npz file, its split and the case
index (the same as the 2D import's), so re-importing gives the same UIDs. The npz ``val``
split becomes ``eval``. The folders are built in a staging folder and moved in whole; the
spec and then ``labels.csv`` are written last, atomically.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence

from medflow.components.ingest.import_output import progress_bar, publish
from medflow.components.ingest.volume_spec import SPEC_NAME, VolumeSpec
from medflow.core.files import atomic_write

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT Image Storage
VOLUME_DIR = "volumes"
# uint8 voxels 0..255 -> 0..1 (a window centred on 127.5, 255 wide): the same scale for
# every case (per-volume percentiles would stretch a near-empty shape mask).
NPZ_WINDOW = (127.5, 255.0)
HEADER = ("path", "label", "split", "_npz_split", "_npz_index")


def volume_spec(shape: tuple[int, int, int]) -> VolumeSpec:
    """The spec of an npz volume grid: 1 mm, the grid itself, the 0..255 window."""
    return VolumeSpec((1.0, 1.0, 1.0), tuple(int(s) for s in shape), hu_window=NPZ_WINDOW)


def import_npz_volumes(
    npz_path: Path,
    out_dir: Path,
    arrays: dict[str, tuple[np.ndarray, np.ndarray]],
    limit: int | None,
    progress: bool,
    split_names: dict[str, str],
) -> Path:
    """Write every case of ``arrays`` (split -> (images (N, D, H, W), labels (N,))) as one
    multi-frame DICOM file; returns the path of ``labels.csv``."""
    from medflow.components.ingest.npz_import import _uid, _values, start_import

    total, root, staging = start_import(npz_path, out_dir, arrays, limit)
    grids = {images.shape[1:] for images, _ in arrays.values()}
    rows: list[tuple] = []
    try:
        bar = progress_bar(total, progress, "import-npz (volumes)")
        for split, (images, labels) in arrays.items():
            folder = staging / VOLUME_DIR / split
            folder.mkdir(parents=True)
            for index in range(min(len(labels), limit or len(labels))):
                values = _values(images[index][0], split, index, root, npz_path.name)
                values["FrameOfReferenceUID"] = _uid(root, "frame", split, index)
                ds = multiframe_instance(images[index], values, npz_path.name, split)
                ds.save_as(folder / f"{index:06d}.dcm", enforce_file_format=True)
                rel = f"{VOLUME_DIR}/{split}/{index:06d}.dcm"
                rows.append((rel, int(labels[index]), split_names.get(split, split), split, index))
                bar.update(1)
        bar.close()
        (out_dir / "labels.csv").unlink(missing_ok=True)  # no manifest beside a half spec
        atomic_write(out_dir / SPEC_NAME, volume_spec(next(iter(grids))).to_json())
        manifest = publish(staging, out_dir, [VOLUME_DIR], HEADER, rows)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def multiframe_instance(voxels: np.ndarray, values: dict, source: str, split: str) -> Dataset:
    """One Enhanced CT instance holding ``voxels`` (D, H, W) uint8 as D axial frames, 1 mm
    apart, with per-frame plane positions (``values``: the identity attributes)."""
    from medflow.components.ingest.npz_import import new_instance

    depth, rows, cols = (int(s) for s in voxels.shape)
    ds = new_instance(ENHANCED_CT, values["SOPInstanceUID"])
    ds.SOPClassUID = ENHANCED_CT
    ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    ds.Modality = "CT"
    ds.Manufacturer = "medflow import-npz"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = f"{source} {split}"
    ds.PatientBirthDate = ds.PatientSex = ""
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AcquisitionDateTime = f"{values['StudyDate']}120000"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    for keyword, value in values.items():
        if keyword != "PixelData":
            setattr(ds, keyword, value)
    ds.NumberOfFrames = depth
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SharedFunctionalGroupsSequence = DicomSequence([_shared_groups()])
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(
        [_frame_groups(k, depth) for k in range(depth)]
    )
    ds.PixelData = np.ascontiguousarray(voxels, dtype="<u2").tobytes()
    return ds


def _item(**attributes) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _shared_groups() -> Dataset:
    return _item(
        PixelMeasuresSequence=DicomSequence(
            [_item(PixelSpacing=[1.0, 1.0], SliceThickness=1.0, SpacingBetweenSlices=1.0)]
        ),
        PlaneOrientationSequence=DicomSequence(
            [_item(ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0])]
        ),
        PixelValueTransformationSequence=DicomSequence(
            [_item(RescaleIntercept=0, RescaleSlope=1, RescaleType="US")]
        ),
    )


def _frame_groups(k: int, depth: int) -> Dataset:
    return _item(
        PlanePositionSequence=DicomSequence([_item(ImagePositionPatient=[0.0, 0.0, float(k)])]),
        FrameContentSequence=DicomSequence(
            [_item(DimensionIndexValues=[k + 1], InStackPositionNumber=k + 1, StackID="1")]
        ),
    )
