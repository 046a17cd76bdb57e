"""The AI-results SR: built with highdicom, read back from bytes, references checked."""

from __future__ import annotations

import io

import highdicom as hd
import pydicom
import pytest

from medflow.components.dicom.sr import build_prediction_sr, sr_bytes
from medflow.components.tasks.classification.results import ImagePrediction
from medflow.core.errors import InputError
from tests.phantoms import phantom

LABELS = ["benign", "malignant"]


def _pred(ds, frame: int, probs: list[float]) -> ImagePrediction:
    class_id = max(range(len(probs)), key=probs.__getitem__)
    return ImagePrediction(
        "x", frame, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
        "breast-cls", 7, LABELS, probs, class_id, probs[class_id],
    )  # fmt: skip


def _content_value(group, meaning: str) -> str:
    """TextValue of the first content item named ``meaning`` anywhere in the group."""
    stack = list(group)
    while stack:
        item = stack.pop(0)
        if item.ConceptNameCodeSequence[0].CodeMeaning == meaning:
            return str(item.TextValue)
        stack += list(item.get("ContentSequence", []))
    return ""


def test_sr_reads_back_with_references_to_the_right_instances():
    ct = phantom("CT", instance=1)
    mr = phantom("MR", series=2, instance=2, frames=3)
    other = phantom("CT", instance=3)  # same study, not predicted: not referenced
    preds = [_pred(ct, 0, [0.8, 0.2]), _pred(mr, 0, [0.4, 0.6]), _pred(mr, 2, [0.1, 0.9])]
    data = sr_bytes(build_prediction_sr(preds, [ct, mr, other]))

    ds = pydicom.dcmread(io.BytesIO(data))
    sr = hd.sr.Comprehensive3DSR.from_dataset(ds)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert (ds.StudyInstanceUID, ds.PatientID) == (ct.StudyInstanceUID, ct.PatientID)
    assert ds.SeriesInstanceUID not in (ct.SeriesInstanceUID, mr.SeriesInstanceUID)
    assert ds.CompletionFlag == "COMPLETE"
    evidence = {
        sop.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }
    assert evidence == {ct.SOPInstanceUID, mr.SOPInstanceUID}

    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 3
    for group, pred in zip(groups, preds, strict=True):
        (ref,) = group.source_images
        assert ref.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == pred.sop_instance_uid
        frames = ref.ReferencedSOPSequence[0].get("ReferencedFrameNumber")
        expected_frames = (
            None if pred.sop_instance_uid == ct.SOPInstanceUID else pred.frame_index + 1
        )
        assert (int(frames) if frames is not None else None) == expected_frames
        (label,) = group.get_qualitative_evaluations()
        assert label.value.meaning == pred.label
        values = {m.name.meaning: m.value for m in group.get_measurements()}
        assert values == pytest.approx(
            {
                "Model score of the predicted label": pred.score,
                "Probability of benign": pred.probabilities[0],
                "Probability of malignant": pred.probabilities[1],
            }
        )
        assert _content_value(group, "Algorithm Name") == "breast-cls"
        assert _content_value(group, "Algorithm Version") == "7"


def test_sr_refuses_missing_sources_and_mixed_studies():
    ct = phantom("CT", instance=1)
    elsewhere = phantom("CT", study=2, instance=1)
    with pytest.raises(InputError, match="not among the sources"):
        build_prediction_sr([_pred(ct, 0, [0.5, 0.5])], [elsewhere])
    with pytest.raises(InputError, match="span 2 studies"):
        build_prediction_sr([_pred(ct, 0, [0.5, 0.5]), _pred(elsewhere, 0, [0.5, 0.5])], [ct])
    with pytest.raises(InputError, match="no predictions"):
        build_prediction_sr([], [ct])
