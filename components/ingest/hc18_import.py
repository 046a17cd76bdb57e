"""HC18 fetal head ultrasound (PNG + filled-ellipse annotation PNG) → DICOM + masks + manifest.

Layout written under ``out_dir``::

    dicom/<NNN_xHC>.dcm      one Secondary Capture instance (Modality US) per image, with
                             PixelSpacing from the CSV and BurnedInAnnotation NO
    masks/<NNN_xHC>.png      the annotation as a 0/255 grey PNG on the image grid
    labels.csv               SOPInstanceUID,mask,hc_mm,split,_source
    pairs.csv                registration pairs (fixed, moving, fixed_mask, moving_mask,
                             split) when the folder has intra_subject_pairs.csv

A fetus (the ``NNN`` prefix; ``010_HC`` and ``010_2HC`` are the same fetus) is one patient:
all its images share PatientID and split, and the split is a hash of the fetus id, so the
same fetus always lands in the same split. UIDs derive from the file name, so re-importing
gives the same UIDs. ``hc_mm`` is the reference head circumference from the CSV.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from medflow.components.ingest.import_output import grey8_image, publish, secondary_capture
from medflow.components.ingest.pairs_manifest import write_import_pairs
from medflow.core.errors import ConfigError, InputError

CSV_NAME = "training_set_pixel_size_and_HC.csv"
PAIRS_SOURCE = "intra_subject_pairs.csv"  # same-fetus frame pairs -> OUT/pairs.csv
IMAGE_DIR = "training_set"
DICOM_DIR = "dicom"
MASK_DIR = "masks"
HEADER = ("SOPInstanceUID", "mask", "hc_mm", "split", "_source")


def fetus_id(filename: str) -> str:
    """``"010_2HC.png"`` → ``"010"`` (the HC18 subject)."""
    return filename.split("_", 1)[0]


def fetus_split(fetus: str, eval_fraction: float = 0.2) -> str:
    """``eval`` for about ``eval_fraction`` of fetuses (a hash of the id), else ``train``."""
    u = int.from_bytes(hashlib.sha256(f"hc18|{fetus}".encode()).digest()[:8], "big") / 2**64
    return "eval" if u < eval_fraction else "train"


def read_reference(src: Path) -> dict[str, tuple[float, float]]:
    """``{image file name: (pixel size mm, head circumference mm)}`` from the HC18 CSV."""
    path = src / CSV_NAME
    try:
        with path.open(newline="") as fh:
            rows = list(csv.reader(fh))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: not found; pass the HC18 folder holding {CSV_NAME}") from exc
    out = {}
    for line, row in enumerate(rows[1:], start=2):
        try:
            out[row[0].strip()] = (float(row[1]), float(row[2]))
        except (IndexError, ValueError) as exc:
            raise InputError(f"{path} line {line}: expected filename,pixel size,HC") from exc
    return out


def import_hc18(
    src: str | Path,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    eval_fraction: float = 0.2,
) -> Path:
    """Write HC18 images as DICOM, their masks as PNG, and ``labels.csv``.

    Args:
        src: the HC18 folder (``training_set/`` and the pixel-size CSV).
        out_dir: created if needed; earlier ``dicom/``, ``masks/`` and ``labels.csv`` are
            replaced.
        limit: import only the first ``limit`` images (sorted by name) that have a mask.
        eval_fraction: share of fetuses put in the ``eval`` split.

    Returns:
        The path of ``labels.csv``.

    Raises:
        InputError: missing folder, CSV or annotation, or an image of the wrong size.
        ConfigError: invalid ``limit`` or ``eval_fraction``.
    """
    src, out_dir = Path(src), Path(out_dir)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be a positive number of images")
    if not 0 <= eval_fraction < 1:
        raise ConfigError(f"eval fraction {eval_fraction}: use a value in [0, 1)")
    reference = read_reference(src)
    images = sorted(p for p in (src / IMAGE_DIR).glob("*HC.png") if p.name in reference)
    if not images:
        raise InputError(f"{src / IMAGE_DIR}: no NNN_HC.png images listed in {CSV_NAME}")
    images = images[:limit] if limit else images
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=out_dir))
    rows = []
    try:
        (staging / DICOM_DIR).mkdir()
        (staging / MASK_DIR).mkdir()
        for path in images:
            rows.append(_import_one(path, reference[path.name], staging, eval_fraction))
        manifest = publish(staging, out_dir, (DICOM_DIR, MASK_DIR), HEADER, rows)
        pair_of = lambda row: (row["fixed"].strip(), row["moving"].strip())  # noqa: E731
        write_import_pairs(out_dir, HEADER, rows, src / PAIRS_SOURCE, pair_of)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _import_one(path: Path, ref: tuple[float, float], staging: Path, eval_fraction: float) -> tuple:
    annotation = path.with_name(path.stem + "_Annotation.png")
    if not annotation.is_file():
        raise InputError(f"{path}: no annotation {annotation.name} beside it")
    with Image.open(path) as im:
        pixels = np.asarray(im.convert("L"))
    with Image.open(annotation) as im:
        mask = (np.asarray(im.convert("L")) > 127).astype(np.uint8) * 255
    if mask.shape != pixels.shape:
        raise InputError(f"{annotation}: {mask.shape} differs from the image's {pixels.shape}")
    fetus = fetus_id(path.name)
    ds = _instance(pixels, path.stem, fetus, ref[0])
    dcmwrite(staging / DICOM_DIR / f"{path.stem}.dcm", ds, enforce_file_format=True)
    Image.fromarray(mask, mode="L").save(staging / MASK_DIR / f"{path.stem}.png")
    split = fetus_split(fetus, eval_fraction)
    return (ds.SOPInstanceUID, f"{MASK_DIR}/{path.stem}.png", ref[1], split, path.name)


def _instance(pixels: np.ndarray, stem: str, fetus: str, spacing_mm: float) -> Dataset:
    ds = secondary_capture("hc18", stem, "20180101", fetus)
    ds.Modality = "US"
    ds.ConversionType = "WSD"
    ds.Manufacturer = "medflow import-hc18"
    ds.StudyDescription = "HC18 fetal head biometry"
    ds.SeriesDescription = f"HC18 {stem}"
    ds.BodyPartExamined = "HEAD"
    ds.LossyImageCompression = "00"
    ds.PixelSpacing = [f"{spacing_mm:.10g}", f"{spacing_mm:.10g}"]
    grey8_image(ds, *pixels.shape[:2])
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds
