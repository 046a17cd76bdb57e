"""Predicting image pairs (``medflow predict --pairs CSV``): each pair's fixed and moving
image go through the model's PixelSpec and one two-input ``Predict`` (``image``: the fixed
image, ``moving``); the model's task plug-in decodes the answer (given the pair's masks,
if any) and writes its file outputs. Nothing here names a task.

A pairs CSV has ``fixed`` and ``moving`` columns and optional ``fixed_mask`` and
``moving_mask`` (as a pairs manifest for ingestion): an image cell is a DICOM file path
(relative to the CSV's folder, or absolute) or the SOPInstanceUID of a file under the
command's PATHs; a mask path is relative to the CSV's folder.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medflow.core.errors import ConfigError, InputError
from medflow.core.tasks import get_task
from medflow.serving.client import PredictionClient
from medflow.serving.dicom_input import ModelInput, Rejected, dicom_files, load_inputs
from medflow.workflows.predict import PredictJob, PredictOutcome, default_mask_dir, record


@dataclass(frozen=True)
class PairInput:
    """One pair ready for the model (what a task's ``decode`` receives per pair)."""

    line: int
    fixed: ModelInput
    moving: ModelInput
    fixed_mask: str | None
    moving_mask: str | None
    spec: object  # the model's PixelSpec (masks are resampled with it)


def read_pairs(path: str | Path) -> list[dict]:
    """The rows of a pairs CSV (``line`` added), stripped.

    Raises:
        InputError: the file cannot be read, or lacks ``fixed``/``moving`` or a cell.
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = [
                {"line": n, **{(k or "").strip(): (v or "").strip() for k, v in r.items()}}
                for n, r in enumerate(reader, start=2)
            ]
            header = reader.fieldnames or []
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"--pairs {path}: cannot read as a UTF-8 CSV ({exc})") from exc
    if "fixed" not in header or "moving" not in header:
        raise InputError(f"--pairs {path}: needs 'fixed' and 'moving' columns (header {header})")
    empty = [r["line"] for r in rows if not r.get("fixed") or not r.get("moving")]
    if empty or not rows:
        raise InputError(
            f"--pairs {path}: empty fixed/moving on line(s) {empty or 'all (no rows)'}"
        )
    return rows


def _locate(cell: str, folder: Path, by_uid: dict[str, ModelInput]) -> str | None:
    """The resolved file path of an image cell (a path, or a SOP UID of a loaded file)."""
    if cell in by_uid:
        return by_uid[cell].path
    candidate = (folder / cell).resolve()
    return str(candidate) if candidate.is_file() else None


def _pair_inputs(job: PredictJob, pairs_csv: str, spec) -> tuple[list[PairInput], list[Rejected]]:
    folder = Path(pairs_csv).resolve().parent
    rows = read_pairs(pairs_csv)
    loaded, rejected = load_inputs(dicom_files(job.paths), spec) if job.paths else ([], [])
    by_uid = {i.sop_instance_uid: i for i in loaded}
    by_path = {i.path: i for i in loaded}
    wanted = {
        p
        for r in rows
        for k in ("fixed", "moving")
        if (p := _locate(r[k], folder, by_uid)) and p not in by_path
    }
    extra, bad = load_inputs([Path(p) for p in sorted(wanted)], spec)
    by_path.update({i.path: i for i in extra})
    rejected += bad
    pairs = []
    for r in rows:
        paths = [_locate(r[k], folder, by_uid) for k in ("fixed", "moving")]
        found = [by_path.get(p) if p else None for p in paths]
        if None in found:
            which = "fixed" if found[0] is None else "moving"
            rejected.append(
                Rejected(
                    f"{pairs_csv}:{r['line']}",
                    "missing_image",
                    f"line {r['line']}: {which} image {r[which]!r} is no readable DICOM file "
                    "(a path relative to the CSV, or the SOPInstanceUID of a file under PATHs)",
                )
            )
            continue
        masks = [
            str((folder / r[k]).resolve()) if r.get(k) else None
            for k in ("fixed_mask", "moving_mask")
        ]
        pairs.append(PairInput(r["line"], found[0], found[1], *masks, spec))
    return pairs, rejected


def run_predict_pairs(job: PredictJob, pairs_csv: str, source=None) -> PredictOutcome:
    """Register every pair of ``pairs_csv`` with the served model; write the task's files
    and, with ``job.push``, store the task's DICOM results through ``source`` (a
    ``DicomwebSource``: STOW-RS into the fixed images' studies)."""
    if job.push and source is None:
        raise ConfigError("--push stores results in a PACS: with --pairs it needs --dicomweb URL")
    with PredictionClient(job.server, timeout_s=job.timeout_s) as client:
        info = client.model_info(
            job.model, version=job.version, label=job.label, contract=job.contract
        )
        task = get_task(info.task)
        pairs, rejected = _pair_inputs(job, pairs_csv, info.spec)
        results = []
        for start in range(0, len(pairs), max(1, job.batch_size)):
            chunk = pairs[start : start + job.batch_size]
            inputs = {
                "image": np.stack([p.fixed.array for p in chunk]).astype(np.float32),
                "moving": np.stack([p.moving.array for p in chunk]).astype(np.float32),
            }
            pred = client.predict(
                job.model,
                inputs,
                version=job.version,
                label=job.label,
                output_filter=task.output_filter,
            )
            results += task.decode(chunk, pred, info)
    options = job.outputs
    if job.record:
        review_dir = job.mask_dir or default_mask_dir(job.store_url)
        options = dataclasses.replace(options, review_dir=review_dir)
    outcome = PredictOutcome(results, rejected)
    if results:
        outcome.results, outcome.report = task.write_files(results, options)
    if job.push and outcome.results:
        outcome.pushed = task.push(outcome.results, source, options.settings)
    if job.record and outcome.results:
        outcome.recorded = record(outcome.results, job.store_url)
    return outcome
