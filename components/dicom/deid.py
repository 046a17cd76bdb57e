"""De-identification following DICOM PS3.15 Annex E, Basic Application Level Confidentiality
Profile, with the Retain Longitudinal Temporal Information with Modified Dates option
(dates shifted by a per-patient offset) and the Retain Patient Characteristics option (sex,
age, size, weight are kept for slicing; ages over 89 are capped at 90, as HIPAA requires).

UIDs are remapped with a keyed hash (HMAC-SHA256 → "2.25.<int>"), so the same input UID
always maps to the same output UID under one key and references between instances stay
consistent without any shared state. Standard UIDs (SOP classes, transfer syntaxes,
"1.2.840.10008.*") are kept.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

import pydicom
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from medflow.components.dicom.keys import DeidKey
from medflow.components.dicom.reader import HeaderView, header_view

# Annex E actions by keyword: "X" remove, "Z" empty (present, zero length).
# PatientName/PatientID are replaced by the pseudonym; UIDs and dates handled by VR.
_REMOVE = """
AccessionNumber:Z AcquisitionComments AcquisitionDeviceProcessingDescription
AcquisitionProtocolDescription ActualHumanPerformersSequence AdditionalPatientHistory
AdmissionID AdmittingDiagnosesCodeSequence AdmittingDiagnosesDescription Allergies
AuthorObserverSequence BranchOfService CommentsOnThePerformedProcedureStep
ConsultingPhysicianName ContentCreatorName:Z ContentCreatorIdentificationCodeSequence
ContributionDescription CountryOfResidence CurrentPatientLocation CustodialOrganizationSequence
DerivationDescription DeviceSerialNumber DigitalSignaturesSequence
DischargeDiagnosisDescription DistributionAddress DistributionName EncryptedAttributesSequence
EthnicGroup FrameComments GraphicAnnotationSequence HumanPerformerName
HumanPerformerOrganization IconImageSequence IdentifyingComments ImageComments
ImagePresentationComments ImagingServiceRequestComments InstitutionAddress
InstitutionCodeSequence InstitutionName InstitutionalDepartmentName
InstitutionalDepartmentTypeCodeSequence InsurancePlanIdentification
IntendedRecipientsOfResultsIdentificationSequence InterpretationApproverSequence
InterpretationAuthor InterpretationRecorder InterpretationText InterpretationTranscriber
IssuerOfAdmissionID IssuerOfPatientID MACParametersSequence MedicalAlerts MedicalRecordLocator
MilitaryRank ModifiedAttributesSequence NameOfPhysiciansReadingStudy
NamesOfIntendedRecipientsOfResults Occupation OperatorIdentificationSequence OperatorsName
OrderCallbackPhoneNumber OrderEnteredBy OrderEntererLocation OriginalAttributesSequence
OtherPatientIDs OtherPatientIDsSequence OtherPatientNames ParticipantSequence PatientAddress
PatientBirthDate:Z PatientBirthName PatientBirthTime PatientComments
PatientInsurancePlanCodeSequence PatientMotherBirthName PatientPrimaryLanguageCodeSequence
PatientReligiousPreference PatientState PatientTelephoneNumbers PatientTransportArrangements
PerformedLocation PerformedProcedureStepDescription PerformedProcedureStepID
PerformingPhysicianIdentificationSequence PerformingPhysicianName PersonAddress
PersonIdentificationCodeSequence PersonName PersonTelephoneNumbers
PhysicianApprovingInterpretation PhysiciansOfRecord PhysiciansOfRecordIdentificationSequence
PhysiciansReadingStudyIdentificationSequence PreMedication ProtocolName ReasonForStudy
ReasonForTheImagingServiceRequest ReasonForTheRequestedProcedure ReferencedPatientAliasSequence
ReferencedPatientPhotoSequence ReferencedPatientSequence ReferringPhysicianAddress
ReferringPhysicianIdentificationSequence ReferringPhysicianName:Z
ReferringPhysicianTelephoneNumbers RegionOfResidence RequestAttributesSequence
RequestedContrastAgent RequestedProcedureComments RequestedProcedureDescription
RequestedProcedureID RequestedProcedureLocation RequestingPhysician RequestingService
ResponsibleOrganization ResponsiblePerson ResultsComments ResultsDistributionListSequence
ScheduledHumanPerformersSequence ScheduledPatientInstitutionResidence
ScheduledPerformingPhysicianIdentificationSequence ScheduledPerformingPhysicianName
ScheduledProcedureStepDescription ScheduledProcedureStepLocation ScheduledStationName
ServiceEpisodeDescription ServiceEpisodeID SeriesDescription SpecialNeeds StationName
StudyComments StudyDescription StudyID:Z TextComments TextString TopicAuthor TopicKeywords
TopicSubject TopicTitle VerifyingObserverIdentificationCodeSequence:Z VerifyingObserverName:Z
VerifyingOrganization VisitComments DeviceDescription ClinicalTrialSponsorName
ClinicalTrialSiteName ClinicalTrialSubjectID ClinicalTrialSubjectReadingID
""".split()

ACTIONS: dict[int, str] = {}
for _entry in _REMOVE:
    _keyword, _, _action = _entry.partition(":")
    _tag = tag_for_keyword(_keyword)
    if _tag is not None:
        ACTIONS[_tag] = _action or "X"

_PATIENT_NAME = tag_for_keyword("PatientName")
_PATIENT_ID = tag_for_keyword("PatientID")
_PATIENT_AGE = tag_for_keyword("PatientAge")
_STANDARD_UID_ROOT = "1.2.840.10008."

# Codes of CID 7050 "De-identification Method" (DICOM PS3.16).
_METHOD_CODES = (
    ("113100", "Basic Application Confidentiality Profile"),
    ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    ("113108", "Retain Patient Characteristics Option"),
)
METHOD = "medflow: PS3.15 E basic, modified dates, patient chars kept"


@dataclass(frozen=True)
class Identity:
    """Pseudonymous values derived before the identifying attributes are removed."""

    patient_key: str
    site: str
    age_years: int | None
    date_shift_days: int


def remap_uid(key: DeidKey, uid: str) -> str:
    """Same input UID → same output UID under one key; standard UIDs are kept."""
    uid = str(uid).strip()
    if not uid or uid.startswith(_STANDARD_UID_ROOT):
        return uid
    return "2.25." + str(int.from_bytes(key.digest("uid", uid)[:16], "big"))


def derive_identity(ds: Dataset | HeaderView, key: DeidKey, site: str | None = None) -> Identity:
    """Pseudonymous patient key, site code, age and date shift from the original header."""
    ds = header_view(ds)
    pid = str(ds.get("PatientID", "") or "").strip()
    issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
    # Without a PatientID each study stands for its own patient (documented in the report).
    basis = f"{issuer}|{pid}" if pid else f"study|{ds.get('StudyInstanceUID', '')}"
    patient_key = "P" + key.digest("patient", basis).hex()[:16]
    if site is None:
        institution = str(ds.get("InstitutionName", "") or "").strip()
        site = (
            "site-" + key.digest("site", institution.upper()).hex()[:8]
            if institution
            else "UNKNOWN"
        )
    shift = 365 + int.from_bytes(key.digest("date", basis)[:4], "big") % 3650
    return Identity(patient_key, site, _age_years(ds), shift)


def deidentify(ds: Dataset, key: DeidKey, identity: Identity | None = None) -> Identity:
    """De-identify ``ds`` in place (file meta included); returns the derived identity."""
    identity = identity or derive_identity(ds, key)
    _clean(ds, key, identity.date_shift_days)
    _replace_identifiers(ds, identity)
    ds.PatientIdentityRemoved = "YES"
    ds.LongitudinalTemporalInformationModified = "MODIFIED"
    ds.DeidentificationMethod = METHOD
    codes = []
    for value, meaning in _METHOD_CODES:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        codes.append(item)
    ds.DeidentificationMethodCodeSequence = Sequence(codes)
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "MediaStorageSOPInstanceUID" in meta:
        meta.MediaStorageSOPInstanceUID = remap_uid(key, meta.MediaStorageSOPInstanceUID)
    return identity


def deidentified_values(
    ds: Dataset | HeaderView, keywords: tuple[str, ...], key: DeidKey, identity: Identity
) -> dict[str, object]:
    """``{keyword: value}`` of the non-sequence attributes ``keywords`` exactly as they read
    after :func:`deidentify` (same per-element Annex E action, same pseudonyms); attributes
    that de-identification removes, or that ``ds`` lacks, are absent. ``ds`` is unchanged.

    For consumers that emit a few attributes and never write the data set (ingestion emits
    ``tf.Example`` features): Annex E acts element by element, so this gives the emitted
    values without walking and rewriting the whole data set.
    """
    view = header_view(ds)
    out: dict[str, object] = {}
    for keyword in keywords:
        if keyword in _REPLACED:
            value = _replacement(keyword, identity)
            if value is not None:
                out[keyword] = value
                continue
        found = view.element(keyword)
        if found is None:
            continue
        vr, value = found
        action = _keyword_action(keyword, vr)
        if action == "S":
            raise ValueError(f"{keyword} is a sequence: de-identify the data set with deidentify()")
        if action != "X":
            out[keyword] = _apply(action, value, key, identity.date_shift_days)
    return out


_REPLACED = frozenset({"PatientName", "PatientID", "PatientAge"})


def _replacement(keyword: str, identity: Identity) -> str | None:
    """The value :func:`deidentify` writes over an identifier (None: it writes nothing)."""
    if keyword == "PatientName":
        return f"ANON^{identity.patient_key}"
    if keyword == "PatientID":
        return identity.patient_key
    if identity.age_years is not None:  # PatientAge
        return f"{min(identity.age_years, 90):03d}Y"
    return None


def _replace_identifiers(ds: Dataset, identity: Identity) -> None:
    for keyword in ("PatientName", "PatientID", "PatientAge"):
        value = _replacement(keyword, identity)
        if value is not None:
            setattr(ds, keyword, value)


def age_bucket(age_years: int | None) -> str:
    """Decade buckets, 90+ aggregated."""
    if age_years is None or age_years < 0:
        return "UNKNOWN"
    if age_years >= 90:
        return "90+"
    lo = (age_years // 10) * 10
    return f"{lo:02d}-{lo + 9:02d}"


@functools.lru_cache(maxsize=1024)
def _keyword_action(keyword: str, vr: str) -> str:
    """:func:`element_action` by keyword (memoised: the same few keywords in every file)."""
    return element_action(BaseTag(tag_for_keyword(keyword)), vr)


def element_action(tag: BaseTag, vr: str) -> str:
    """The action on one element (PS3.15 Annex E with the options in the module docstring):
    "X" remove, "Z" empty, "S" clean each item of the sequence, "U" remap the UID(s),
    "D" shift the date(s), "N" empty (a person's name), "K" keep."""
    group = tag.group
    action = ACTIONS.get(tag)
    if (
        tag.is_private
        or action == "X"
        or (0x5000 <= group <= 0x50FF)
        or (0x6000 <= group <= 0x60FF and tag.element in (0x3000, 0x4000))
    ):
        return "X"
    if action == "Z":
        return "Z"
    if vr == "SQ":
        return "S"
    if vr == "UI" and tag != 0x00020010:  # the transfer syntax is kept
        return "U"
    if vr in ("DA", "DT"):
        return "D"
    if vr == "PN" and tag != _PATIENT_NAME:
        return "N"
    return "K"


def _apply(action: str, value, key: DeidKey, shift: int):
    """The new value of a non-sequence element under ``action`` (not "X" or "S")."""
    if action in ("Z", "N"):
        return ""
    if action == "U":
        return _map_values(value, lambda v: remap_uid(key, v))
    if action == "D":
        return _map_values(value, lambda v: _shift_date(str(v), shift))
    return value


def _clean(ds: Dataset, key: DeidKey, shift: int) -> None:
    doomed: list[BaseTag] = []
    for elem in ds:
        action = element_action(elem.tag, elem.VR)
        if action == "X":
            doomed.append(elem.tag)
        elif action == "S":
            for item in elem.value or []:
                _clean(item, key, shift)
        elif action == "Z" and elem.VR == "SQ":
            elem.value = []
        elif action != "K":
            elem.value = _apply(action, elem.value, key, shift)
    for tag in doomed:
        del ds[tag]


def _map_values(value, fn):
    if value is None or value == "":
        return value
    if isinstance(value, pydicom.multival.MultiValue | list):
        return [fn(v) for v in value]
    return fn(value)


def _shift_date(value: str, days: int) -> str:
    """Shift YYYYMMDD (and the date part of DT) back by ``days``; invalid dates emptied."""
    value = value.strip()
    try:
        date = _parse_date(value)
    except ValueError:
        return ""
    return (date - dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]


def _parse_date(value: str) -> dt.date:
    """The date of YYYYMMDD (and of DT values' first 8 characters); ValueError if invalid.
    Eight digits are read directly (strptime costs ~8 µs), anything else by strptime."""
    head = value[:8]
    if not head:  # absent dates are common (birth dates); strptime would raise the same
        raise ValueError("empty date")
    if len(head) == 8 and head.isascii() and head.isdigit():
        return dt.date(int(head[:4]), int(head[4:6]), int(head[6:]))
    return dt.datetime.strptime(head, "%Y%m%d").date()


def _age_years(ds: Dataset | HeaderView) -> int | None:
    age = str(ds.get("PatientAge", "") or "").strip().upper()
    if len(age) == 4 and age[:3].isdigit():
        n, unit = int(age[:3]), age[3]
        return {"Y": n, "M": n // 12, "W": n // 52, "D": n // 365}.get(unit)
    birth, study = str(ds.get("PatientBirthDate", "") or ""), str(ds.get("StudyDate", "") or "")
    try:
        b, s = _parse_date(birth), _parse_date(study)
    except ValueError:
        return None
    years = s.year - b.year - ((s.month, s.day) < (b.month, b.day))
    return years if years >= 0 else None
