"""Sunnybrook cardiac MRI (DICOM + expert LV contours) → DICOM folder + contour masks + manifest.

Source layout (the Sunnybrook Cardiac Data subset in ``shared/data/sunnybrook``)::

    dicoms/<SCDxxxxxxx>/<N>.dcm                                  cine MR frames
    contourfiles/<SC-HF-I-k>/i-contours/IM-0001-<NNNN>-icontour-manual.txt   LV endocardium
    contourfiles/<SC-HF-I-k>/o-contours/IM-0001-<NNNN>-ocontour-manual.txt   LV epicardium
    link.csv                                                     patient_id,original_id

A contour file ``IM-0001-<NNNN>-...`` belongs to image ``<N>.dcm`` of the linked patient
folder (``NNNN`` without its leading zeros); the import checks that this file's
InstanceNumber is ``N``. Only frames with an i-contour are imported.

Layout written under ``out_dir``::

    dicom/<SCDxxxxxxx>/<N>.dcm         the original files, copied byte for byte
    contours/<SC-HF-I-k>/{i,o}-contours/*.txt   the contour files, copied
    labels.csv                          SOPInstanceUID, mask (the i-contour), site, split,
                                        phase, slice_location_mm, trigger_time_ms,
                                        _patient, _o_contour, _source
    pairs.csv                           registration pairs from ed_es_pairs.csv (frame_a
                                        fixed, frame_b moving, their i-contours as masks)

``mask`` names the i-contour file: ingestion fills it on the instance's grid
(:mod:`components.dicom.contours`), so the mask is the LV blood pool. ``phase`` is ``ED`` or
``ES``: each contoured slice position has two contoured frames, and the later one in the
cardiac cycle (larger TriggerTime) is end-diastole (the Sunnybrook experts drew epicardial
o-contours at end-diastole only, and every o-contour is on that frame); a slice position
with another number of contoured frames gets ``unknown``. ``split`` is ``eval`` for the
patients in ``eval_patients`` and ``train`` for the others (all frames of a patient in one
split).
"""

from __future__ import annotations

import csv
import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from medflow.components.ingest.import_output import progress_bar, publish
from medflow.components.ingest.pairs_manifest import write_import_pairs
from medflow.core.errors import ConfigError, InputError

LINK_NAME = "link.csv"
PAIRS_SOURCE = "ed_es_pairs.csv"  # slice positions contoured at two phases -> OUT/pairs.csv
DICOM_SRC = "dicoms"
CONTOUR_SRC = "contourfiles"
DICOM_DIR = "dicom"
CONTOUR_DIR = "contours"
SITE = "SUNNYBROOK"
HEADER = (
    "SOPInstanceUID",
    "mask",
    "site",
    "split",
    "phase",
    "slice_location_mm",
    "trigger_time_ms",
    "_patient",
    "_o_contour",
    "_source",
)
CONTOUR_NAME = re.compile(r"IM-\d{4}-(\d{4})-([io])contour-manual\.txt")


@dataclass
class Frame:
    """One contoured frame of the source."""

    patient: str
    original_id: str
    number: int
    dicom: Path
    i_contour: Path
    o_contour: Path | None
    sop_uid: str
    slice_location: float
    trigger_time: float
    phase: str = "unknown"


def read_links(src: Path) -> list[tuple[str, str]]:
    """``[(patient folder, contour folder)]`` from ``link.csv``, in file order.

    Raises:
        InputError: missing file, missing columns, empty cells, or a duplicate patient.
    """
    path = src / LINK_NAME
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError as exc:
        raise InputError(
            f"{path}: not found; pass the Sunnybrook folder holding {DICOM_SRC}/, "
            f"{CONTOUR_SRC}/ and {LINK_NAME}"
        ) from exc
    if not {"patient_id", "original_id"} <= set(header):
        raise InputError(f"{path}: expected columns patient_id,original_id; found {header}")
    links, seen = [], set()
    for line, row in enumerate(rows, start=2):
        patient, original = (row.get("patient_id") or "").strip(), (row.get("original_id") or "")
        original = original.strip()
        if not patient or not original:
            raise InputError(f"{path} line {line}: empty patient_id or original_id")
        if patient in seen:
            raise InputError(f"{path} line {line}: patient {patient} is listed twice")
        seen.add(patient)
        links.append((patient, original))
    if not links:
        raise InputError(f"{path}: no patients listed")
    return links


def find_frames(src: str | Path) -> list[Frame]:
    """The contoured frames of every linked patient, with their header facts and phase.

    Raises:
        InputError: a missing folder, an i-contour without its DICOM file, a DICOM whose
            InstanceNumber is not the contour's image number, or a patient with no i-contour.
    """
    src = Path(src)
    if not src.is_dir():
        raise InputError(f"{src}: not a folder; pass the Sunnybrook folder ({LINK_NAME} inside)")
    links = read_links(src)
    frames = []
    for patient, original in links:
        contour_dir = src / CONTOUR_SRC / original
        i_files = _contours(contour_dir / "i-contours", "i")
        if not i_files:
            raise InputError(
                f"{contour_dir / 'i-contours'}: no IM-0001-NNNN-icontour-manual.txt files for "
                f"patient {patient} ({LINK_NAME}); check the folder or remove the patient"
            )
        o_files = _contours(contour_dir / "o-contours", "o")
        for number, i_path in sorted(i_files.items()):
            dicom = src / DICOM_SRC / patient / f"{number}.dcm"
            if not dicom.is_file():
                raise InputError(
                    f"{i_path}: its image {dicom} does not exist (contour IM-0001-{number:04d} "
                    f"is image {number}.dcm of {patient}); restore the file or remove the contour"
                )
            try:
                instance, sop, location, trigger = _header(dicom)
            except Exception as exc:  # noqa: BLE001 - any parse problem is this file's fault
                raise InputError(
                    f"{dicom}: cannot read its InstanceNumber/SOPInstanceUID ({exc})"
                ) from exc
            if instance != number:
                raise InputError(
                    f"{dicom}: InstanceNumber {instance} but contour {i_path.name} names image "
                    f"{number}; the contour does not belong to this file"
                )
            frames.append(
                Frame(
                    patient, original, number, dicom, i_path, o_files.get(number), sop,
                    location, trigger,
                )
            )  # fmt: skip
    _assign_phases(frames)
    return frames


def _header(path: Path) -> tuple[int, str, float, float]:
    """InstanceNumber, SOPInstanceUID, SliceLocation, TriggerTime of one file."""
    import pydicom
    from pydicom.config import IGNORE, settings

    # Sunnybrook UIDs have components with leading zeros: valid enough to key a manifest,
    # so pydicom's value validation (one warning per UID) is off while reading them.
    mode = settings.reading_validation_mode
    settings.reading_validation_mode = IGNORE
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return (
            int(ds.InstanceNumber),
            str(ds.SOPInstanceUID),
            float(ds.get("SliceLocation", "nan")),
            float(ds.get("TriggerTime", "nan")),
        )
    finally:
        settings.reading_validation_mode = mode


def _contours(folder: Path, kind: str) -> dict[int, Path]:
    if not folder.is_dir():
        return {}
    out = {}
    for path in folder.iterdir():
        match = CONTOUR_NAME.fullmatch(path.name)
        if match and match.group(2) == kind:
            out[int(match.group(1))] = path
    return out


def _assign_phases(frames: list[Frame]) -> None:
    """ED/ES per slice position: of its two contoured frames, the later one is ED."""
    by_slice: dict[tuple[str, float], list[Frame]] = defaultdict(list)
    for frame in frames:
        by_slice[(frame.patient, round(frame.slice_location, 2))].append(frame)
    for group in by_slice.values():
        if len(group) == 2 and group[0].trigger_time != group[1].trigger_time:
            early, late = sorted(group, key=lambda f: f.trigger_time)
            early.phase, late.phase = "ES", "ED"


def import_sunnybrook(
    src: str | Path,
    out_dir: str | Path,
    *,
    eval_patients: tuple[str, ...] | None = None,
    progress: bool = False,
) -> Path:
    """Copy the contoured Sunnybrook frames and their contours; write ``labels.csv``.

    Args:
        src: the Sunnybrook folder (``dicoms/``, ``contourfiles/``, ``link.csv``).
        out_dir: created if needed; earlier ``dicom/``, ``contours/`` and ``labels.csv``
            are replaced.
        eval_patients: patient folder names (``SCD0000501``) put in the ``eval`` split;
            default: the last patient of ``link.csv``.
        progress: show a progress bar on a terminal.

    Returns:
        The path of ``labels.csv``.

    Raises:
        InputError: see :func:`find_frames`.
        ConfigError: an ``eval_patients`` name that is not a linked patient, or all of them.
    """
    src, out_dir = Path(src), Path(out_dir)
    frames = find_frames(src)
    patients = list(dict.fromkeys(f.patient for f in frames))
    eval_set = set(eval_patients) if eval_patients is not None else {patients[-1]}
    unknown = sorted(eval_set - set(patients))
    if unknown:
        raise ConfigError(
            f"eval patients {', '.join(unknown)}: not in {src / LINK_NAME} "
            f"(patients: {', '.join(patients)})"
        )
    if eval_set >= set(patients):
        raise ConfigError("eval patients: leave at least one patient for training")
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".import-", dir=out_dir))
    rows = []
    try:
        bar = progress_bar(len(frames), progress, "import-sunnybrook")
        for frame in frames:
            rows.append(_copy_one(frame, staging, "eval" if frame.patient in eval_set else "train"))
            bar.update(1)
        bar.close()
        manifest = publish(staging, out_dir, (DICOM_DIR, CONTOUR_DIR), HEADER, rows)
        write_import_pairs(out_dir, HEADER, rows, src / PAIRS_SOURCE, _pair_sources)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _pair_sources(row: dict) -> tuple[str, str]:
    """An ``ed_es_pairs.csv`` row -> (fixed, moving) ``_source`` paths: frame_a, frame_b."""
    patient = row["patient_id"].strip()
    return tuple(f"{DICOM_SRC}/{patient}/{int(row[k])}.dcm" for k in ("frame_a", "frame_b"))


def _copy_one(frame: Frame, staging: Path, split: str) -> tuple:
    dicom_rel = f"{DICOM_DIR}/{frame.patient}/{frame.dicom.name}"
    i_rel = f"{CONTOUR_DIR}/{frame.original_id}/i-contours/{frame.i_contour.name}"
    o_rel = ""
    copies = [(frame.dicom, dicom_rel), (frame.i_contour, i_rel)]
    if frame.o_contour is not None:
        o_rel = f"{CONTOUR_DIR}/{frame.original_id}/o-contours/{frame.o_contour.name}"
        copies.append((frame.o_contour, o_rel))
    for source, rel in copies:
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staging / rel)
    return (
        frame.sop_uid,
        i_rel,
        SITE,
        split,
        frame.phase,
        # Always with a decimal point: a manifest cell that looks like an int ("286") is
        # parsed as one, and a column mixing int64 and float features breaks StatisticsGen.
        f"{frame.slice_location:.3f}",
        f"{frame.trigger_time:.3f}",
        frame.patient,
        o_rel,
        f"{DICOM_SRC}/{frame.patient}/{frame.dicom.name}",
    )
