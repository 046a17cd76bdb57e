"""Sample review cases for tests, demos and benchmarks (``medflow dashboard sample-data``).

Classification cases are synthetic phantoms with made-up scores. Segmentation cases use real
images and human-drawn masks (HC18 fetal head annotations), or a threshold of a real pydicom
test image: the masks are reference masks, not model output, and their model is named
:data:`SAMPLE_MASK_MODEL` so nobody takes them for a model's. The code finds both tasks
through the plug-ins: the default task, and the task whose review judges mask files.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from medflow.core.tasks import DEFAULT_TASK, mask_review_task
from medflow.dashboard.store import ReviewStore

LABELS = ["normal", "pneumonia"]
MASK_LABELS = ["background", "head"]
SAMPLE_MASK_MODEL = "sample-reference-masks"


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
                task=DEFAULT_TASK,
            )
        )
    return ids


def threshold_mask(dicom_path: str | Path, out: str | Path, threshold: float) -> Path:
    """Writes ``frame 0 > threshold`` (Modality-LUT units) of a DICOM image as a 0/1 mask.

    The suffix of ``out`` picks the format: ``.npy`` or an image file (PNG).
    """
    from PIL import Image

    from medflow.components.dicom.display import load_study

    mask = (load_study(dicom_path).frames[0] > threshold).astype(np.uint8)
    if mask.ndim != 2:
        raise ValueError(f"{dicom_path}: a threshold mask needs a grey-level image")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, mask)
    else:
        Image.fromarray(mask, mode="L").save(out)
    return out


def record_mask_prediction(
    store: ReviewStore,
    dicom_path: str | Path,
    mask_path: str | Path,
    *,
    labels: list[str],
    model: str = SAMPLE_MASK_MODEL,
    version: str = "sample",
) -> int:
    """Queues a segmentation case: the image's UIDs, its mask file, and as scores each
    class's share of the image's pixels (a sample mask has no model probabilities)."""
    import pydicom

    from medflow.components.dicom.display import load_mask

    ds = pydicom.dcmread(dicom_path, stop_before_pixels=True)
    mask = load_mask(mask_path)
    shares = np.bincount(mask.ravel(), minlength=len(labels))[: len(labels)] / mask.size
    return store.record_prediction(
        sop_instance_uid=str(ds.SOPInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        image_ref=str(Path(dicom_path).resolve()),
        model_name=model,
        model_version=version,
        labels=labels,
        scores=[float(x) for x in shares],
        mask_ref=str(Path(mask_path).resolve()),
        task=mask_review_task(),
    )


def seed_masks(
    store: ReviewStore, out_dir: str | Path, *, hc18_dir: str | Path | None = None, n: int = 3
) -> list[int]:
    """Queues ``n`` segmentation cases with real masks; returns their ids.

    With ``hc18_dir`` (the shared HC18 folder): the first ``n`` HC18 images as DICOM
    (``medflow import-hc18``) with their human-drawn head annotations. Without: pydicom's
    CT_small.dcm with a soft-tissue threshold (> -100 HU) as a one-class body mask.
    """
    out_dir = Path(out_dir)
    if hc18_dir is None:
        from pydicom.data import get_testdata_file

        image = Path(get_testdata_file("CT_small.dcm"))
        mask = threshold_mask(image, out_dir / "ct_small_body.png", -100.0)
        return [record_mask_prediction(store, image, mask, labels=["background", "body"])]
    from medflow.components.ingest.hc18_import import import_hc18

    manifest = import_hc18(hc18_dir, out_dir / "hc18", limit=n)
    with manifest.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [
        record_mask_prediction(
            store,
            manifest.parent / "dicom" / f"{Path(row['mask']).stem}.dcm",
            manifest.parent / row["mask"],
            labels=MASK_LABELS,
        )
        for row in rows
    ]
