"""Segmentation predictions -> DICOM Segmentation objects (highdicom), one per source series.

Each SEG references its source instances (ReferencedSeriesSequence, and per frame a
Derivation Image / Source Image Sequence) and takes its geometry from them: highdicom copies
the pixel measures, the plane orientation and each frame's plane position from the sources
when they have them (CT, MR, ...).

- ``binary``: one segment per non-background class (a binary model has one), 1 bit per
  pixel, every predicted frame kept (an empty frame says "nothing found");
- ``fractional``: the class probabilities as PROBABILITY, 8 bits (0..255 for 0..1).

Grouping (what highdicom can encode): single-frame sources with a patient coordinate system
(Frame of Reference + Image Position) share one SEG per series (and image size); a source
without one (Secondary Capture, ultrasound stills) gets a SEG of its own, without a frame of
reference, with pixel measures when it has a PixelSpacing, its frame matched to the source
by reference alone (highdicom takes one source frame when there is no coordinate system).
A multi-frame source with a coordinate system gets its own SEG holding the predicted frames
(frames not predicted are left out, as empty frames are); a multi-frame source without one
cannot be encoded and is reported as skipped.

Segment labels come from the model contract's labels (class 0 is the background and has no
segment); their codes are private (``99MEDFLOW``): a model's classes have no standard codes.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from medflow import __version__
from medflow.components.dicom.reader import read_dicom
from medflow.core.errors import InputError
from medflow.core.files import atomic_write

CODING_SCHEME = "99MEDFLOW"
SEG_SERIES_NUMBER = 9002
SEG_TYPES = ("binary", "fractional")
# Type 2 attributes highdicom copies from the first source by attribute access: a source
# without them (some Secondary Captures) gets them empty, as Type 2 allows.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


@dataclass(frozen=True)
class SkippedSeg:
    """A source for which no SEG could be made, and why."""

    path: str
    sop_instance_uid: str
    reason: str


@dataclass(frozen=True)
class WrittenSeg:
    """A DICOM SEG written (or stored) for one source series."""

    path: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    source_series_instance_uid: str
    frames: int
    segment_type: str


def _source_header(ds: pydicom.Dataset) -> pydicom.Dataset:
    """A copy of the source header without pixels, with empty Type 2 attributes added."""
    header = pydicom.Dataset()
    header.file_meta = getattr(ds, "file_meta", pydicom.dataset.FileMetaDataset())
    for element in ds:
        if element.tag.group != 0x7FE0:  # no pixel data
            header.add(element)
    for keyword in _TYPE2:
        if keyword not in header:
            setattr(header, keyword, "")
    if "Modality" not in header:
        header.Modality = "OT"
    return header


def segment_descriptions(labels: Sequence[str], model_name: str, model_version: int | str):
    """One ``highdicom.seg.SegmentDescription`` per non-background label (segment k = class k)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name[:64],
        family=codes.cid7162.ArtificialIntelligence,
        version=str(model_version)[:64],
        source="medflow",
    )
    category = hd.sr.CodedConcept("AI-OUTPUT", CODING_SCHEME, "Model output class")
    return [
        hd.seg.SegmentDescription(
            segment_number=k,
            segment_label=str(labels[k])[:64],
            segmented_property_category=category,
            segmented_property_type=hd.sr.CodedConcept(
                f"AI-SEG{k}", CODING_SCHEME, str(labels[k])[:64]
            ),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for k in range(1, len(labels))
    ]


def _frame_array(pred, seg_type: str) -> np.ndarray:
    """[rows, cols] (one segment or label map) or [rows, cols, segments] for one frame."""
    if seg_type == "binary":
        return pred.mask.astype(np.uint8)
    probs = np.clip(np.asarray(pred.probabilities, dtype=np.float32), 0.0, 1.0)
    return probs if probs.ndim == 2 else probs[..., 1:]


def build_segmentation(
    predictions: Sequence,
    sources: Sequence[pydicom.Dataset],
    *,
    seg_type: str = "binary",
    series_number: int = SEG_SERIES_NUMBER,
    instance_number: int = 1,
):
    """A DICOM SEG of ``predictions`` (all of one source series, or of one multi-frame
    instance) referencing ``sources``.

    Args:
        predictions: mask results (``mask``, ``probabilities``, UIDs, model, labels) on
            their source grids.
        sources: the source instances (headers suffice), in the order of the SEG frames:
            several single-frame images of one series, or one multi-frame image.
        seg_type: ``binary`` or ``fractional``.
        series_number: of the new SEG series.
        instance_number: of the SEG in that series.

    Returns:
        ``highdicom.seg.Segmentation`` (a pydicom Dataset).

    Raises:
        InputError: no predictions, an unknown ``seg_type``, a prediction without its
            source, or a mask whose size differs from its source image's.
    """
    import highdicom as hd

    if seg_type not in SEG_TYPES:
        raise InputError(f"--seg-type {seg_type!r}: choose one of {', '.join(SEG_TYPES)}")
    if not predictions:
        raise InputError("no segmentation predictions to write as a DICOM SEG")
    first = predictions[0]
    multi_frame = len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) > 1
    array, headers = _frames(predictions, sources, seg_type, multi_frame)
    model = f"{first.model_name}:{first.model_version}"
    return hd.seg.Segmentation(
        source_images=headers,
        pixel_array=array,
        segmentation_type=seg_type.upper(),
        segment_descriptions=segment_descriptions(
            first.labels, first.model_name, first.model_version
        ),
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer="medflow",
        manufacturer_model_name=model[:64],
        software_versions=f"medflow {__version__}",
        device_serial_number=str(first.model_version)[:64] or "0",
        fractional_type="PROBABILITY" if seg_type == "fractional" else None,
        max_fractional_value=255,
        content_description=f"AI {seg_type} segmentation {model}"[:64],
        content_label="AI_SEG",
        series_description=f"AI segmentation {model}"[:64],
        # a multi-frame source's unpredicted frames are zeros: leave them out, unless
        # nothing was found at all (a SEG needs a frame)
        omit_empty_frames=multi_frame and bool(array.any()),
    )


def _frames(
    predictions: Sequence, sources: Sequence[pydicom.Dataset], seg_type: str, multi_frame: bool
) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """The SEG's pixel array (one frame per source frame) and the source headers it
    references, after checking every mask lies on its source's grid."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    missing = sorted({p.sop_instance_uid for p in predictions} - set(by_uid))
    if missing:
        raise InputError(f"predictions refer to instances not among the sources: {missing[:3]}")
    for p in predictions:
        src = by_uid[p.sop_instance_uid]
        if p.mask.shape != (int(src.Rows), int(src.Columns)):
            raise InputError(
                f"{p.path}: mask {p.mask.shape} is not on the source grid "
                f"{int(src.Rows)}x{int(src.Columns)}"
            )
    if multi_frame:
        src = sources[0]
        frames = {p.frame_index: _frame_array(p, seg_type) for p in predictions}
        sample = next(iter(frames.values()))
        array = np.zeros((int(src.NumberOfFrames), *sample.shape), dtype=sample.dtype)
        for index, values in frames.items():
            array[index] = values
        return array, [_source_header(src)]
    preds = {p.sop_instance_uid: p for p in predictions}  # one frame per instance
    order = [uid for uid in by_uid if uid in preds]
    array = np.stack([_frame_array(preds[uid], seg_type) for uid in order])
    return array, [_source_header(by_uid[uid]) for uid in order]


def _coordinates(ds: pydicom.Dataset) -> bool:
    from highdicom.spatial import get_image_coordinate_system

    return get_image_coordinate_system(ds) is not None


def group_by_source(
    predictions: Sequence, sources: dict[str, pydicom.Dataset]
) -> tuple[list[tuple[str, list]], list[SkippedSeg]]:
    """Predictions grouped into one SEG each (see the module docstring), first-seen order:
    ``([(file key, predictions)], skipped)``; the key is the source series UID for a series
    SEG, else the source SOP Instance UID."""
    groups: dict[tuple, list] = {}
    skipped: list[SkippedSeg] = []
    for p in predictions:
        src = sources[p.path]
        multi_frame = int(src.get("NumberOfFrames", 1) or 1) > 1
        if multi_frame and not _coordinates(src):
            skipped.append(
                SkippedSeg(
                    p.path,
                    p.sop_instance_uid,
                    "a multi-frame image without a patient coordinate system (Frame of "
                    "Reference, plane positions) cannot be referenced frame by frame in a "
                    "DICOM SEG; use --overlay-out",
                )
            )
            continue
        if multi_frame or not _coordinates(src):
            key: tuple = ("instance", p.sop_instance_uid)
        else:
            key = ("series", p.series_instance_uid, int(src.Rows), int(src.Columns))
        groups.setdefault(key, []).append(p)
    return [(key[1], group) for key, group in groups.items()], skipped


def seg_bytes(seg) -> bytes:
    """The SEG as a DICOM Part 10 file (for a file or STOW-RS)."""
    buf = io.BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def build_segmentations(
    predictions: Sequence,
    *,
    seg_type: str = "binary",
    read_source: Callable[[str], pydicom.Dataset] | None = None,
) -> tuple[list[tuple[object, str]], list[SkippedSeg]]:
    """The SEGs of ``predictions`` grouped as :func:`group_by_source` does:
    ``([(seg, file key)], skipped sources)``.

    Args:
        predictions: :class:`serving.client.MaskPrediction` items with local source paths.
        seg_type: ``binary`` or ``fractional``.
        read_source: reads a source file's header (default: the safe reader).
    """
    if read_source is None:
        read_source = read_dicom
    sources = {p.path: read_source(p.path) for p in predictions}
    groups, skipped = group_by_source(predictions, sources)
    out = []
    for number, (key, group) in enumerate(groups, start=1):
        headers = list({p.sop_instance_uid: sources[p.path] for p in group}.values())
        seg = build_segmentation(group, headers, seg_type=seg_type, instance_number=number)
        out.append((seg, key))
    return out, skipped


def write_segmentations(
    predictions: Sequence,
    out_dir: str | Path,
    *,
    seg_type: str = "binary",
    read_source: Callable[[str], pydicom.Dataset] | None = None,
) -> tuple[list[WrittenSeg], list[SkippedSeg]]:
    """Write the SEGs of ``predictions`` to ``out_dir/seg-<source series or instance
    UID>.dcm`` (atomically: a temporary file in the folder, then a rename; a rerun replaces
    them). Returns (written, skipped sources)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    segs, skipped = build_segmentations(predictions, seg_type=seg_type, read_source=read_source)
    for seg, key in segs:
        path = out_dir / f"seg-{key}.dcm"
        atomic_write(path, seg_bytes(seg))
        written.append(_written(seg, str(path), seg_type))
    return written, skipped


def _written(seg, path: str, seg_type: str) -> WrittenSeg:
    return WrittenSeg(
        path=path,
        sop_instance_uid=str(seg.SOPInstanceUID),
        series_instance_uid=str(seg.SeriesInstanceUID),
        study_instance_uid=str(seg.StudyInstanceUID),
        source_series_instance_uid=str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID),
        frames=int(seg.NumberOfFrames),
        segment_type=seg_type,
    )
