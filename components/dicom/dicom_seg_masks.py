"""DICOM Segmentation objects as the mask source of an instance (manifest ``mask`` column).

A manifest cell naming a DICOM file (``seg.dcm``, or ``seg.dcm#2`` for segment 2 only) is
read with highdicom; the frame(s) of the SEG that reference the instance's SOP Instance UID
(and, for a multi-frame instance, the frame ingestion takes) become a uint8 mask on the
instance's own grid, the same as a PNG mask:

- all segments (default): pixel value = segment number (class index, 0 = background);
  overlapping segments are refused (a pixel can hold one class);
- ``#N``: segment N only, as 0/1.

FRACTIONAL segmentations are thresholded at 0.5 of the maximum fractional value. A SEG that
does not reference the instance, has another size, or lacks the segment is refused with
``mask_mismatch``; a file that is not a readable SEG with ``mask_unreadable``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pydicom

from medflow.components.dicom.errors import DicomRejected
from medflow.components.dicom.reader import read_dicom

SEG_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.66.4",  # Segmentation Storage
    "1.2.840.10008.5.1.4.1.1.66.7",  # Label Map Segmentation Storage
)
_FRAGMENT = re.compile(r"^(?P<path>.*?)#(?P<segment>\d+)$")
DICOM_SUFFIXES = (".dcm", ".dicom")


def split_segment(path: str | Path) -> tuple[Path, int | None]:
    """``"seg.dcm#2"`` -> (Path("seg.dcm"), 2); without ``#N`` the segment is None."""
    match = _FRAGMENT.match(str(path))
    if match:
        return Path(match["path"]), int(match["segment"])
    return Path(path), None


def is_dicom_mask(path: str | Path) -> bool:
    """Whether a manifest mask cell names a DICOM file (SEG): a ``#N`` segment selector, a
    ``.dcm``/``.dicom`` suffix, or 'DICM' after the 128-byte preamble."""
    file, segment = split_segment(path)
    if segment is not None or file.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(file, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def load_segmentation(source: str | Path | pydicom.Dataset, name: str = ""):
    """A ``highdicom.seg.Segmentation`` from a file (read with medflow's safe reader) or a
    data set.

    A SEG without a frame of reference (e.g. of a Secondary Capture) may carry a Pixel
    Measures item with Pixel Spacing alone, as the standard allows (Slice Thickness is
    required only with a frame of reference, CP 1426); highdicom 0.28 refuses such an item
    when reading, so it is dropped from the in-memory copy (masks are read on the source
    grid, which does not need it).

    Raises:
        DicomRejected: ``mask_unreadable`` when the file is missing, not DICOM, or not a SEG.
    """
    import highdicom as hd

    if isinstance(source, pydicom.Dataset):
        ds = source
    else:
        try:
            ds = read_dicom(source)
        except DicomRejected as exc:
            raise DicomRejected(
                "mask_unreadable",
                f"{name}: its mask {source} is not readable DICOM ({exc.message})",
            ) from exc
    if str(ds.get("SOPClassUID", "")) not in SEG_SOP_CLASSES:
        raise DicomRejected(
            "mask_unreadable",
            f"{name}: mask {source} is DICOM but not a Segmentation (SOP class "
            f"{ds.get('SOPClassUID', '?')}); name a DICOM SEG, PNG or .npy in the mask column",
        )
    if "FrameOfReferenceUID" not in ds:
        ds = _without_incomplete_pixel_measures(ds)
    try:
        return hd.seg.Segmentation.from_dataset(ds, copy=False)
    except (AttributeError, ValueError, KeyError, TypeError) as exc:
        raise DicomRejected(
            "mask_unreadable", f"{name}: mask {source} is not a valid DICOM SEG ({exc})"
        ) from exc


def _without_incomplete_pixel_measures(ds: pydicom.Dataset) -> pydicom.Dataset:
    groups = [
        *ds.get("SharedFunctionalGroupsSequence", []),
        *ds.get("PerFrameFunctionalGroupsSequence", []),
    ]
    if not any(
        "PixelMeasuresSequence" in g and "SliceThickness" not in g.PixelMeasuresSequence[0]
        for g in groups
        if g.get("PixelMeasuresSequence")
    ):
        return ds
    import copy

    ds = copy.deepcopy(ds)
    for keyword in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(keyword, []):
            if "PixelMeasuresSequence" in group and not any(
                "SliceThickness" in item for item in group.PixelMeasuresSequence
            ):
                del group.PixelMeasuresSequence
    return ds


def seg_mask(
    ds: pydicom.Dataset, path: str | Path, frame_index: int = 0, name: str = ""
) -> np.ndarray:
    """The uint8 ``[rows, cols]`` mask of instance ``ds`` (frame ``frame_index``) from the
    DICOM SEG ``path`` (``seg.dcm`` or ``seg.dcm#N``, see the module docstring).

    Raises:
        DicomRejected: ``mask_unreadable`` or ``mask_mismatch`` (see the module docstring).
    """
    file, segment = split_segment(path)
    seg = load_segmentation(file, name)
    sop = str(ds.SOPInstanceUID)
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    if sop not in referenced:
        raise DicomRejected(
            "mask_mismatch",
            f"{name}: DICOM SEG {file} does not reference this instance (SOPInstanceUID {sop}; "
            f"it references {len(referenced)} other instance(s)); name the SEG of this image",
        )
    numbers = [int(n) for n in seg.get_segment_numbers()]
    if segment is not None and segment not in numbers:
        raise DicomRejected(
            "mask_mismatch",
            f"{name}: DICOM SEG {file} has no segment {segment} (segments {numbers}); fix the "
            "#N after the file name",
        )
    wanted = [segment] if segment is not None else numbers
    if segment is None and max(wanted, default=0) > 255:
        raise DicomRejected(
            "mask_unreadable",
            f"{name}: DICOM SEG {file} has segment numbers up to {max(wanted)}; a uint8 mask "
            "holds classes up to 255: pick one segment with seg.dcm#N",
        )
    if (int(seg.Rows), int(seg.Columns)) != (int(ds.Rows), int(ds.Columns)):
        raise DicomRejected(
            "mask_mismatch",
            f"{name}: DICOM SEG {file} is {int(seg.Rows)}x{int(seg.Columns)} but the image is "
            f"{int(ds.Rows)}x{int(ds.Columns)}",
        )
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    options = dict(
        segment_numbers=wanted,
        combine_segments=False,
        rescale_fractional=True,
        assert_missing_frames_are_empty=True,  # highdicom omits empty frames by default
        ignore_spatial_locations=True,  # same rows x cols checked above
    )
    try:
        if n_frames > 1:
            stacked = seg.get_pixels_by_source_frame(
                source_sop_instance_uid=sop, source_frame_numbers=[frame_index + 1], **options
            )
        else:
            stacked = seg.get_pixels_by_source_instance(source_sop_instance_uids=[sop], **options)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise DicomRejected(
            "mask_unreadable", f"{name}: cannot read the frames of DICOM SEG {file} ({exc})"
        ) from exc
    on = (
        np.asarray(stacked[0]) >= 0.5
        if seg.SegmentationType == "FRACTIONAL"
        else np.asarray(stacked[0]) > 0
    )
    if on.ndim == 2:
        on = on[..., None]
    if segment is not None:
        return on[..., 0].astype(np.uint8)
    overlap = on.sum(axis=-1) > 1
    if overlap.any():
        raise DicomRejected(
            "mask_unreadable",
            f"{name}: segments of DICOM SEG {file} overlap at {int(overlap.sum())} pixel(s); a "
            "mask holds one class per pixel: pick one segment with seg.dcm#N",
        )
    labels = np.zeros(on.shape[:2], np.uint8)
    for k, number in enumerate(wanted):
        labels[on[..., k]] = number
    return labels
