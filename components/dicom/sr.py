"""Model predictions → a DICOM Comprehensive 3D SR (TID 1500 Measurement Report), with highdicom.

One measurement group per predicted image (frame): the algorithm (model name and version),
the predicted label as a qualitative evaluation, the score and every class probability as
measurements (and the operating point's score cut-off that decided the label, when the model
has one), and a reference to the source instance (and frame). The SR goes into the
source study, so a PACS shows it next to the images.
"""

from __future__ import annotations

from collections.abc import Sequence

import pydicom

from medflow import __version__
from medflow.core.errors import InputError

CODING_SCHEME = "99MEDFLOW"  # private coding scheme: model outputs have no standard codes
SR_SERIES_NUMBER = 9001


def _codes():
    import highdicom as hd

    concept = hd.sr.CodedConcept
    return {
        "procedure": concept("363679005", "SCT", "Imaging procedure"),
        "finding": concept("AI-CLASS", CODING_SCHEME, "AI classification"),
        "label": concept("AI-LABEL", CODING_SCHEME, "Predicted label"),
        "score": concept("AI-SCORE", CODING_SCHEME, "Model score of the predicted label"),
        "threshold": concept("AI-CUTOFF", CODING_SCHEME, "Operating point score cut-off"),
        "no_units": concept("1", "UCUM", "no units"),
    }


def build_prediction_sr(
    predictions: Sequence,
    sources: Sequence[pydicom.Dataset],
    *,
    series_number: int = SR_SERIES_NUMBER,
    instance_number: int = 1,
):
    """A Comprehensive 3D SR with the findings of ``predictions``.

    Args:
        predictions: :class:`serving.client.ImagePrediction` items (original UIDs), all of
            one study.
        sources: the source instances (headers suffice) that the predictions refer to.
        series_number: of the new SR series.
        instance_number: of the SR in that series.

    Returns:
        ``highdicom.sr.Comprehensive3DSR`` (a pydicom Dataset).

    Raises:
        InputError: no predictions, several studies, or a prediction without its source.
    """
    import highdicom as hd

    if not predictions:
        raise InputError("no predictions to report in a DICOM SR")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    studies = {p.study_instance_uid for p in predictions}
    if len(studies) != 1:
        raise InputError(f"one SR per study: the predictions span {len(studies)} studies")
    missing = sorted({p.sop_instance_uid for p in predictions} - set(by_uid))
    if missing:
        raise InputError(f"predictions refer to instances not among the sources: {missing[:3]}")
    codes = _codes()
    first = predictions[0]
    device = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=pydicom.uid.generate_uid(
                entropy_srcs=["medflow", first.model_name, str(first.model_version)]
            ),
            name=f"{first.model_name}:{first.model_version}"[:64],
            manufacturer_name="medflow",
            model_name=first.model_name[:64],
        ),
    )
    groups = [_group(p, by_uid[p.sop_instance_uid], i, codes) for i, p in enumerate(predictions)]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes["procedure"],
        imaging_measurements=groups,
    )
    used = [by_uid[uid] for uid in dict.fromkeys(p.sop_instance_uid for p in predictions)]
    return hd.sr.Comprehensive3DSR(
        evidence=used,
        content=report,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=instance_number,
        manufacturer="medflow",
        is_complete=True,
        series_description=f"AI results {first.model_name}:{first.model_version}"[:64],
        software_versions=f"medflow {__version__}",
    )


def _group(pred, source: pydicom.Dataset, index: int, codes: dict):
    import highdicom as hd

    n_frames = int(source.get("NumberOfFrames", 1) or 1)
    image = hd.sr.SourceImageForMeasurementGroup(
        referenced_sop_class_uid=str(source.SOPClassUID),
        referenced_sop_instance_uid=str(source.SOPInstanceUID),
        referenced_frame_numbers=[pred.frame_index + 1] if n_frames > 1 else None,
    )
    unit = codes["no_units"]
    measurements = [hd.sr.Measurement(name=codes["score"], value=float(pred.score), unit=unit)]
    for class_id, (label, prob) in enumerate(zip(pred.labels, pred.probabilities, strict=True)):
        name = hd.sr.CodedConcept(f"AI-P{class_id}", CODING_SCHEME, f"Probability of {label}"[:64])
        measurements.append(hd.sr.Measurement(name=name, value=float(prob), unit=unit))
    threshold = getattr(pred, "threshold", None)  # the cut-off that decided the label
    if threshold is not None:
        cut = hd.sr.Measurement(name=codes["threshold"], value=float(threshold), unit=unit)
        measurements.append(cut)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=hd.UID(), identifier=f"{pred.model_name} finding {index + 1}"
        ),
        finding_type=codes["finding"],
        algorithm_id=hd.sr.AlgorithmIdentification(
            name=pred.model_name[:64], version=str(pred.model_version)
        ),
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=codes["label"],
                value=hd.sr.CodedConcept(f"AI-L{pred.class_id}", CODING_SCHEME, pred.label[:64]),
            )
        ],
        source_images=[image],
    )


def sr_bytes(sr) -> bytes:
    """The SR as a DICOM Part 10 file (for STOW-RS)."""
    import io

    buf = io.BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
