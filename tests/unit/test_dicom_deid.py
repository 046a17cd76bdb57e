"""De-identification (PS3.15 Annex E): no identifying value survives, references stay linked."""

from __future__ import annotations

import copy

import pytest
from pydicom.dataset import Dataset

from medflow.components.dicom import deid
from medflow.components.dicom.deid import DeidKey, deidentify, remap_uid
from medflow.core.errors import ConfigError
from tests import phantoms as P

KEY = DeidKey(b"0123456789abcdef-test")


def _deidentified(**kwargs) -> tuple[Dataset, Dataset]:
    original = P.phantom(**kwargs)
    out = copy.deepcopy(original)
    deidentify(out, KEY)
    return original, out


@pytest.mark.parametrize("keyword", sorted(P.PHI))
def test_each_identifying_attribute_is_removed_emptied_or_replaced(keyword):
    original, out = _deidentified(modality="CT")
    value = str(original[keyword].value)
    if keyword in ("PatientName", "PatientID"):  # replaced by the pseudonym
        assert out.PatientID.startswith("P") and out.PatientName == f"ANON^{out.PatientID}"
    else:
        assert keyword not in out or out[keyword].value in ("", None, [])
    # and the value appears nowhere, at any depth, in any element
    for elem in out.iterall():
        assert value not in str(elem.value), f"{keyword} value survives in {elem.tag} {elem.name}"


def test_no_identifying_string_in_the_written_file():
    _, out = _deidentified(modality="MR")
    data = P.to_bytes(out)
    for value in P.ALL_PHI_STRINGS:
        assert value.encode() not in data, value


def test_annex_e_actions_hold_at_every_depth():
    _, out = _deidentified(modality="CT")
    for elem in out.iterall():
        action = deid.ACTIONS.get(elem.tag)
        assert action != "X", f"{elem.name} should be removed"
        if action == "Z":
            assert elem.value in ("", None, []) or elem.VR == "SQ" and len(elem.value) == 0
        assert not elem.tag.is_private, f"private tag {elem.tag} kept"
        if elem.VR == "PN" and elem.tag != 0x00100010:
            assert not str(elem.value), f"{elem.name} holds a name"


def test_nested_sequences_are_cleaned_not_dropped():
    original, out = _deidentified(modality="CT")
    assert "RequestAttributesSequence" not in out  # removed whole (X)
    item = out.SourceImageSequence[0]  # kept, but its PHI is gone
    assert "InstitutionName" not in item
    assert "PersonName" not in item
    assert item.ReferencedSOPInstanceUID == remap_uid(
        KEY, original.SourceImageSequence[0].ReferencedSOPInstanceUID
    )


def test_deidentification_marks_and_method_codes():
    _, out = _deidentified(modality="DX")
    assert out.PatientIdentityRemoved == "YES"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out.DeidentificationMethod
    codes = {item.CodeValue for item in out.DeidentificationMethodCodeSequence}
    assert {"113100", "113107", "113108"} <= codes
    assert all(i.CodingSchemeDesignator == "DCM" for i in out.DeidentificationMethodCodeSequence)


def test_patient_characteristics_are_kept_and_dates_shifted():
    original, out = _deidentified(modality="CT")
    assert (out.PatientSex, out.PatientAge, out.PatientWeight) == ("F", "059Y", 61.5)
    assert out.StudyDate != original.StudyDate and len(out.StudyDate) == 8
    assert out.PatientBirthDate == ""


def test_uids_are_remapped_consistently_across_instances():
    first = P.phantom("CT", seed=1, instance=1)
    second = P.phantom("CT", seed=2, instance=2, referenced_sop_uid=first.SOPInstanceUID)
    a, b = copy.deepcopy(first), copy.deepcopy(second)
    deidentify(a, KEY)
    deidentify(b, KEY)
    assert b.SourceImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert a.SOPInstanceUID != first.SOPInstanceUID and a.SOPInstanceUID.startswith("2.25.")
    assert a.StudyInstanceUID == b.StudyInstanceUID != first.StudyInstanceUID
    assert a.FrameOfReferenceUID == b.FrameOfReferenceUID
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    assert a.ReferencedStudySequence[0].ReferencedSOPInstanceUID == a.StudyInstanceUID
    # standard UIDs (SOP class, transfer syntax) are not remapped
    assert a.SOPClassUID == first.SOPClassUID
    assert a.file_meta.TransferSyntaxUID == first.file_meta.TransferSyntaxUID


def test_same_patient_same_pseudonym_other_key_other_pseudonym():
    x = deid.derive_identity(P.phantom("CT", seed=1), KEY)
    y = deid.derive_identity(P.phantom("MR", seed=2), KEY)
    z = deid.derive_identity(P.phantom("CT", seed=1), DeidKey(b"another-key-0123456789"))
    assert x.patient_key == y.patient_key != z.patient_key
    assert P.PHI["PatientID"] not in x.patient_key


def test_short_key_is_refused_with_a_hint():
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        DeidKey(b"short")
