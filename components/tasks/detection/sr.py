"""Boxes <-> a DICOM SR measurement report (TID 1500) with highdicom.

Writing: an image-level group with the number of boxes (an image without boxes still gets a
report), and one planar ROI measurement group (TID 1410) per box: the region is an SCOORD
POLYLINE (the closed rectangle, source pixel coordinates) referencing the source image,
the finding type is the box's class, and the score is a measurement. Reading takes the
planar ROI groups of any TID 1500 SR back to ``{label, score, x0, y0, x1, y1}`` boxes (the
bounding rectangle of each region), so boxes can also come in as SR.
"""

from __future__ import annotations

import numpy as np
import pydicom

from medflow import __version__
from medflow.components.dicom.sr import CODING_SCHEME, SR_SERIES_NUMBER
from medflow.core.errors import InputError


def _class_code(label: str):
    import highdicom as hd

    return hd.sr.CodedConcept(f"AI-BOX-{label}"[:16], CODING_SCHEME, label[:64])


def _group(box: dict, source: pydicom.Dataset, frame: int | None, index: int, result):
    import highdicom as hd

    x0, y0, x1, y1 = (float(box[k]) for k in ("x0", "y0", "x1", "y1"))
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=str(source.SOPClassUID),
            referenced_sop_instance_uid=str(source.SOPInstanceUID),
            referenced_frame_numbers=[frame] if frame else None,
        ),
    )
    score = hd.sr.CodedConcept("AI-SCORE", CODING_SCHEME, "Model score of the predicted label")
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"box {index + 1}"),
        referenced_region=region,
        finding_type=_class_code(box["label"]),
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=result.model_name[:64], version=str(result.model_version)
        ),
        measurements=[
            hd.sr.Measurement(
                name=score,
                value=float(box.get("score", 1.0)),
                unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            )
        ],
    )


def _count_group(result, source: pydicom.Dataset, frame: int | None):
    """The image-level group: how many boxes the model found (0 is a finding too)."""
    import highdicom as hd

    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="image"),
        finding_type=hd.sr.CodedConcept("AI-BOXES", CODING_SCHEME, "AI detection"),
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=result.model_name[:64], version=str(result.model_version)
        ),
        measurements=[
            hd.sr.Measurement(
                name=hd.sr.CodedConcept("AI-NBOX", CODING_SCHEME, "Number of boxes"),
                value=len(result.boxes),
                unit=hd.sr.CodedConcept("1", "UCUM", "no units"),
            )
        ],
        source_images=[
            hd.sr.SourceImageForMeasurementGroup(
                referenced_sop_class_uid=str(source.SOPClassUID),
                referenced_sop_instance_uid=str(source.SOPInstanceUID),
                referenced_frame_numbers=[frame] if frame else None,
            )
        ],
    )


def build_box_sr(result, source: pydicom.Dataset):
    """A Comprehensive 3D SR holding ``result.boxes`` (a BoxPrediction) on ``source``."""
    import highdicom as hd

    if str(source.SOPInstanceUID) != result.sop_instance_uid:
        raise InputError(f"{result.path}: the SR source is not the predicted instance")
    n_frames = int(source.get("NumberOfFrames", 1) or 1)
    frame = result.frame_index + 1 if n_frames > 1 else None
    groups = [_count_group(result, source, frame)]
    groups += [_group(b, source, frame, i, result) for i, b in enumerate(result.boxes)]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(),
        procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[source],
        content=report,
        series_instance_uid=hd.UID(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medflow",
        is_complete=True,
        series_description=f"AI boxes {result.model_name}:{result.model_version}"[:64],
        software_versions=f"medflow {__version__}",
    )


def read_box_sr(dataset: pydicom.Dataset, where: str) -> tuple[str, list[dict]]:
    """(referenced SOPInstanceUID, boxes) of a TID 1500 SR's planar ROI groups.

    Raises:
        InputError: not a TID 1500 SR, no planar ROI, or regions on several images.
    """
    import highdicom as hd

    try:
        sr = hd.sr.Comprehensive3DSR.from_dataset(dataset)
        groups = sr.content.get_planar_roi_measurement_groups()
    except (AttributeError, ValueError, TypeError, KeyError) as exc:
        raise InputError(f"{where}: not a TID 1500 measurement report SR ({exc})") from None
    boxes, sources = [], set()
    for g in groups:
        region = g.roi
        if region is None or not hasattr(region, "value"):
            continue
        xy = np.asarray(region.value, float).reshape(-1, 2)
        image = region.ContentSequence[0]  # the SCOORD's SELECTED FROM image reference
        sources.add(str(image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID))
        scores = [m.value for m in g.get_measurements()]
        boxes.append(
            {
                "label": str(g.finding_type.meaning),
                "score": float(scores[0]) if scores else 1.0,
                "x0": float(xy[:, 0].min()),
                "y0": float(xy[:, 1].min()),
                "x1": float(xy[:, 0].max()),
                "y1": float(xy[:, 1].max()),
            }
        )
    if not boxes:
        raise InputError(f"{where}: the SR holds no planar ROI (image region) to read boxes from")
    if len(sources) != 1:
        raise InputError(f"{where}: the SR's regions refer to {len(sources)} images; expected one")
    return sources.pop(), boxes
