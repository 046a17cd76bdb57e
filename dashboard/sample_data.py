"""Small synthetic review cases (phantom DICOM + predictions) for tests, demos and benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dashboard.store import ReviewStore

LABELS = ["normal", "pneumonia"]


def write_phantom(
    path: str | Path,
    *,
    frames: int = 1,
    size: int = 64,
    photometric: str = "MONOCHROME2",
    modality: str = "CT",
    seed: int = 0,
) -> dict[str, str]:
    """Writes a disc phantom as a DICOM file (uint16, rescale to HU); returns its UIDs.

    The disc is +400 HU (bone-like) on a -1000 HU (air) background, with a +40 HU ring, so
    window presets visibly change the picture.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    stack = []
    for f in range(frames):
        r = np.hypot(yy - size / 2, xx - size / 2 - f)
        hu = np.full((size, size), -1000.0)
        hu[r < size * 0.4] = 40.0
        hu[r < size * 0.25] = 400.0
        stack.append(hu + rng.normal(0, 5, hu.shape))
    stored = (np.stack(stack) + 1024.0).clip(0, 4095).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.Modality = f"PHANTOM{seed}", modality
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.WindowCenter, ds.WindowWidth = 40, 400
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = (stored if frames > 1 else stored[0]).tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return {
        "sop_instance_uid": str(ds.SOPInstanceUID),
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.SeriesInstanceUID),
    }


def write_heatmap(path: str | Path, size: int = 64) -> Path:
    """A Gaussian blob heatmap (.npy) centred on the phantom's disc."""
    yy, xx = np.mgrid[:size, :size]
    heat = np.exp(-((yy - size / 2) ** 2 + (xx - size / 2) ** 2) / (2 * (size / 6) ** 2))
    path = Path(path)
    np.save(path, heat.astype(np.float32))
    return path


def seed_store(
    store: ReviewStore, image_dir: str | Path, n: int, *, model: str = "cxr", version: str = "1"
) -> list[int]:
    """Records ``n`` predictions on a few phantom images (shared, to keep it quick)."""
    image_dir = Path(image_dir)
    images = [
        (write_phantom(image_dir / f"img{i}.dcm", frames=3 if i == 0 else 1, seed=i), i)
        for i in range(min(n, 4))
    ]
    heatmap = write_heatmap(image_dir / "heat.npy")
    rng = np.random.default_rng(1)
    ids = []
    for k in range(n):
        uids, i = images[k % len(images)]
        p = float(rng.uniform(0.02, 0.98))
        ids.append(
            store.record_prediction(
                **{**uids, "sop_instance_uid": f"{uids['sop_instance_uid']}.{k}"},
                image_ref=str(image_dir / f"img{i}.dcm"),
                model_name=model,
                model_version=version,
                labels=LABELS,
                scores=[1 - p, p],
                heatmap_ref=str(heatmap),
            )
        )
    return ids
