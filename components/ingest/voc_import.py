"""Pascal VOC folders (JPEG images + XML boxes) → colour DICOM + a ``boxes`` label manifest.

Layout read from ``src``::

    JPEGImages/<name>.jpg      the images (kept in colour)
    Annotations/<name>.xml     VOC boxes (1-based inclusive pixel corners)
    ImageSets/Main/<split>.txt optional: image names per split (``val`` becomes ``eval``)

Layout written under ``out_dir``::

    dicom/<name>.dcm           one Secondary Capture instance per image (RGB, Modality GM)
    labels.csv                 SOPInstanceUID,boxes,split,_source
    import_report.json         images, boxes read/kept, dropped boxes by reason and by image

``boxes`` is a JSON list of ``{"label", "x0", "y0", "x1", "y1"}`` in source pixels: corners
of the pixel edges, so a VOC box ``xmin=1..xmax=10`` is ``x0=0, x1=10`` (``xmin == xmax`` is
an annotator's click, kept as a zero-area box). Validation drops
zero-area, out-of-image and duplicate boxes (same label, IoU >= :data:`DUPLICATE_IOU`) and
counts them in the report; a label outside ``classes`` is an error naming the file. UIDs
derive from the image name, so re-importing gives the same UIDs.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite

from medflow.components.ingest.import_output import publish, secondary_capture
from medflow.core.errors import ConfigError, InputError
from medflow.core.files import atomic_write

DICOM_DIR = "dicom"
REPORT_NAME = "import_report.json"
HEADER = ("SOPInstanceUID", "boxes", "split", "_source")
SPLIT_NAMES = {"val": "eval", "test": "test", "train": "train"}
DUPLICATE_IOU = 0.9
# Corners may lie this far outside the image (annotation rounding) and are clipped; further
# out, the box is dropped as out of the image.
EDGE_TOLERANCE = 2.0
BOX_KEYS = ("label", "x0", "y0", "x1", "y1")


@dataclass(frozen=True)
class Box:
    """One labelled box in source pixels (pixel-edge corners, x right, y down)."""

    label: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def area(self) -> float:
        return max(0.0, self.x1 - self.x0) * max(0.0, self.y1 - self.y0)


def boxes_to_json(boxes: list[Box]) -> str:
    """The manifest cell of ``boxes`` (compact JSON)."""
    return json.dumps([asdict(b) for b in boxes], separators=(",", ":"))


def parse_boxes(text: str, where: str, classes: tuple[str, ...] | None = None) -> list[Box]:
    """A manifest ``boxes`` cell → boxes.

    Raises:
        InputError: naming ``where``: not a JSON list of objects with ``label`` and numeric
            ``x0, y0, x1, y1``, or a label not in ``classes`` (when given).
    """
    what = "a JSON list of {label, x0, y0, x1, y1}"
    try:
        items = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: boxes cell is not {what} ({exc}); fix the cell") from None
    if not isinstance(items, list):
        raise InputError(f"{where}: boxes cell is not {what}; fix the cell")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(BOX_KEYS) - set(item):
            raise InputError(f"{where}: box {i} is {item!r}, not {what}; fix the cell")
        try:
            coords = [float(item[k]) for k in BOX_KEYS[1:]]
        except (TypeError, ValueError):
            raise InputError(f"{where}: box {i} has a non-numeric corner ({item!r})") from None
        if not all(np.isfinite(coords)):
            raise InputError(f"{where}: box {i} has a non-finite corner ({item!r})")
        label = str(item["label"])
        if classes is not None and label not in classes:
            raise InputError(
                f"{where}: box {i} has label {label!r}, not one of {list(classes)}; fix the "
                "label or add the class"
            )
        out.append(Box(label, *coords))
    return out


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    inter = max(0.0, w) * max(0.0, h)
    union = a.area + b.area - inter
    return inter / union if union > 0 else 0.0


def box_problem(box: Box, rows: int, cols: int) -> str:
    """Why ``box`` cannot be on a ``rows`` x ``cols`` image ("zero_area", "out_of_image": a
    corner more than :data:`EDGE_TOLERANCE` pixels outside); "" when it can."""
    t = EDGE_TOLERANCE
    if box.x1 <= box.x0 or box.y1 <= box.y0:
        return "zero_area"
    if box.x0 < -t or box.y0 < -t or box.x1 > cols + t or box.y1 > rows + t:
        return "out_of_image"
    return ""


def clip_box(box: Box, rows: int, cols: int) -> Box:
    """``box`` with its corners clipped to the image."""
    return Box(box.label, max(box.x0, 0.0), max(box.y0, 0.0), min(box.x1, cols), min(box.y1, rows))


def clean_boxes(boxes: list[Box], rows: int, cols: int) -> tuple[list[Box], list[dict]]:
    """Boxes fit to train on, and the dropped ones with a reason each.

    Reasons: ``zero_area`` (x1 <= x0 or y1 <= y0), ``out_of_image`` (a corner more than
    :data:`EDGE_TOLERANCE` pixels outside the ``rows`` x ``cols`` image; closer corners are
    clipped), ``duplicate`` (same label and IoU >= :data:`DUPLICATE_IOU` with a kept box).
    """
    kept: list[Box] = []
    dropped: list[dict] = []
    for box in boxes:
        reason = box_problem(box, rows, cols)
        if not reason:
            box = clip_box(box, rows, cols)
            same = (k for k in kept if k.label == box.label)
            reason = "duplicate" if any(iou(k, box) >= DUPLICATE_IOU for k in same) else ""
        if reason:
            dropped.append({"reason": reason, **asdict(box)})
        else:
            kept.append(box)
    return kept, dropped


def read_voc_annotation(path: Path) -> tuple[tuple[int, int], list[Box]]:
    """((rows, cols) stated, boxes in pixel-edge corners) of one VOC XML file.

    Raises:
        InputError: unreadable XML, or an object without a name or numeric bndbox.
    """
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputError(f"{path}: cannot read as Pascal VOC XML ({exc})") from None
    try:
        size = (int(root.findtext("size/height")), int(root.findtext("size/width")))
    except (TypeError, ValueError):
        size = (0, 0)  # not stated: the image's own size is used
    boxes = []
    for i, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        try:
            xmin, ymin, xmax, ymax = (
                float(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")
            )
        except (TypeError, ValueError):
            raise InputError(f"{path}: object {i} has no numeric bndbox corners") from None
        if not name:
            raise InputError(f"{path}: object {i} has no <name> (its class)")
        if xmax > xmin and ymax > ymin:
            boxes.append(Box(name, xmin - 1, ymin - 1, xmax, ymax))
        else:  # a click, not a box (xmin == xmax): kept degenerate, dropped as zero-area
            boxes.append(Box(name, xmin, ymin, xmax, ymax))
    return size, boxes


def read_splits(src: Path) -> dict[str, str]:
    """Image name → manifest split from ``ImageSets/Main/{train,val,test}.txt`` (empty: none)."""
    out: dict[str, str] = {}
    folder = src / "ImageSets" / "Main"
    for name, split in SPLIT_NAMES.items():
        path = folder / f"{name}.txt"
        if path.is_file():
            for line in path.read_text().split():
                out.setdefault(line.strip(), split)
    return out


def import_voc(
    src: str | Path,
    out_dir: str | Path,
    *,
    classes: tuple[str, ...] | None = None,
    limit: int | None = None,
    splits: tuple[str, ...] | None = None,
) -> Path:
    """Write a VOC folder's images as colour DICOM, ``labels.csv`` and ``import_report.json``.

    Args:
        src: the VOC folder (``JPEGImages/``, ``Annotations/``, optional ``ImageSets/Main``).
        out_dir: created if needed; an earlier ``dicom/`` and ``labels.csv`` are replaced.
        classes: the class list; a box of another label is an error (None: any label).
        limit: only the first ``limit`` images (by name) of each split.
        splits: only images of these manifest splits (e.g. ``("train", "eval")``).

    Returns:
        The path of ``labels.csv``.

    Raises:
        InputError: missing folders, unreadable images or XML, a label outside ``classes``.
        ConfigError: invalid ``limit``.
    """
    src, out_dir = Path(src), Path(out_dir)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: must be a positive number of images")
    images = _select(src, read_splits(src), limit, splits)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=out_dir))
    rows, report = [], _Report()
    try:
        (staging / DICOM_DIR).mkdir()
        for image, split in images:
            rows.append(_import_one(src, image, split, classes, staging, report))
        manifest = publish(staging, out_dir, (DICOM_DIR,), HEADER, rows)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write(out_dir / REPORT_NAME, json.dumps(report.as_dict(), indent=2) + "\n")
    return manifest


def _select(src: Path, split_of: dict[str, str], limit, splits) -> list[tuple[Path, str]]:
    folder = src / "JPEGImages"
    images = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise InputError(f"{folder}: no .jpg/.png images; pass a Pascal VOC folder")
    picked, per_split = [], Counter()
    for path in images:
        split = split_of.get(path.stem, "train") if split_of else "train"
        if split_of and path.stem not in split_of:
            continue  # the VOC split lists leave it out (e.g. a held-back test image)
        if (splits and split not in splits) or (limit and per_split[split] >= limit):
            continue
        per_split[split] += 1
        picked.append((path, split))
    if not picked:
        raise InputError(f"{src}: no image left after the split lists and --splits {splits}")
    return picked


class _Report:
    def __init__(self):
        self.images = 0
        self.boxes_read = 0
        self.boxes_kept = 0
        self.dropped: Counter = Counter()
        self.dropped_by_image: dict[str, list[dict]] = {}
        self.kept_by_label: Counter = Counter()

    def add(self, name: str, read: int, kept: list[Box], dropped: list[dict]) -> None:
        self.images += 1
        self.boxes_read += read
        self.boxes_kept += len(kept)
        self.kept_by_label.update(b.label for b in kept)
        self.dropped.update(d["reason"] for d in dropped)
        if dropped:
            self.dropped_by_image[name] = dropped

    def as_dict(self) -> dict:
        return {
            "images": self.images,
            "boxes_read": self.boxes_read,
            "boxes_kept": self.boxes_kept,
            "boxes_kept_by_label": dict(sorted(self.kept_by_label.items())),
            "boxes_dropped": dict(sorted(self.dropped.items())),
            "dropped_by_image": self.dropped_by_image,
        }


def _import_one(src: Path, image: Path, split: str, classes, staging: Path, report) -> tuple:
    xml = src / "Annotations" / f"{image.stem}.xml"
    if not xml.is_file():
        raise InputError(f"{image}: no annotation {xml} beside it; add it or remove the image")
    stated, boxes = read_voc_annotation(xml)
    try:
        with Image.open(image) as im:
            pixels = np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise InputError(f"{image}: cannot read the image ({exc})") from None
    rows, cols = pixels.shape[:2]
    if stated != (0, 0) and stated != (rows, cols):
        raise InputError(f"{xml}: size {stated} differs from the image's {(rows, cols)}")
    bad = [b.label for b in boxes if classes is not None and b.label not in classes]
    if bad:
        raise InputError(f"{xml}: label {bad[0]!r} is not one of {list(classes)}")
    kept, dropped = clean_boxes(boxes, rows, cols)
    report.add(image.name, len(boxes), kept, dropped)
    ds = _instance(pixels, image.stem)
    dcmwrite(staging / DICOM_DIR / f"{image.stem}.dcm", ds, enforce_file_format=True)
    return (ds.SOPInstanceUID, boxes_to_json(kept), split, image.name)


def _instance(pixels: np.ndarray, stem: str) -> Dataset:
    """A Secondary Capture instance (Modality GM, general microscopy) holding RGB ``pixels``."""
    ds = secondary_capture("voc", stem, "20200101", stem)
    ds.Modality = "GM"
    ds.ConversionType = "DI"
    ds.Manufacturer = "medflow import-voc"
    ds.StudyDescription = "Pascal VOC import"
    ds.SeriesDescription = f"VOC {stem}"
    ds.LossyImageCompression = "01"  # the source JPEG was lossy; stored here uncompressed
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = (int(n) for n in pixels.shape[:2])
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    return ds
