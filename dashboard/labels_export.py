"""Reviewed labels -> a label manifest CSV that DicomExampleGen takes on the next run.

Format (notes/interfaces.md): key column ``SOPInstanceUID``, then the columns the
prediction's task trains on (:attr:`medflow.core.tasks.TaskReview.export_columns`, e.g. an
integer ``label`` index into the prediction's ``labels``, or the path of an accepted mask
file); provenance columns start with ``_`` (ingestion ignores them). One row per SOP
instance: when several reviews cover one instance (frames, models) the latest review wins.
Rejected cases carry no label. The task checks each row it exports (e.g. that an accepted
mask file still has the bytes that were reviewed).
"""

from __future__ import annotations

import csv
import getpass
import os
from collections.abc import Sequence
from pathlib import Path

from medflow.core.errors import InputError
from medflow.core.files import atomic_open
from medflow.core.table import spreadsheet_safe
from medflow.core.tasks import TaskReview, get_task
from medflow.dashboard.records import ReviewedLabel
from medflow.dashboard.store import ReviewStore

KEY = "SOPInstanceUID"
PROVENANCE = ["_reviewer", "_model_name", "_model_version", "_reviewed_at", "_comment", "_action"]


def manifest_columns(review: TaskReview) -> list[str]:
    """The manifest's columns for a task's reviews."""
    return [KEY, *review.export_columns, *PROVENANCE, *review.export_extra_columns]


def manifest_rows(labels: list[ReviewedLabel]) -> list[dict[str, str]]:
    """One manifest row per SOP instance, the latest review winning.

    Raises:
        InputError: the reviewed predictions belong to different tasks (e.g. labels and
            masks), or use different label lists (e.g. two models with other class orders),
            so one column cannot hold them; or the task refuses an item (e.g. an accepted
            mask file is missing or changed since it was accepted).
    """
    tasks = sorted({x.task for x in labels})
    if len(tasks) > 1:
        models = sorted({x.model_name for x in labels})
        kinds = " and ".join(f"{t} {get_task(t).review().export_kind}" for t in tasks)
        raise InputError(
            f"reviewed predictions mix {kinds} (models {', '.join(models)}); export one model "
            "at a time with --model NAME"
        )
    class_lists = {tuple(x.labels) for x in labels}
    if len(class_lists) > 1:
        models = sorted({f"{x.model_name} {x.labels}" for x in labels})
        raise InputError(
            "reviewed predictions use different label lists, so class indices would mix: "
            f"{'; '.join(models)}; export one model at a time with --model NAME"
        )
    latest: dict[str, ReviewedLabel] = {}
    for item in labels:  # oldest first, so later reviews overwrite
        latest[item.sop_instance_uid] = item
    return [_row(get_task(x.task).review(), x) for x in latest.values()]


def _row(review: TaskReview, x: ReviewedLabel) -> dict[str, str]:
    values = {
        KEY: x.sop_instance_uid,
        **review.manifest_cells(x),
        "_reviewer": x.reviewer,
        "_model_name": x.model_name,
        "_model_version": x.model_version,
        "_reviewed_at": x.reviewed_at.isoformat(),
        "_comment": x.comment,
        "_action": x.action,
    }
    # Free text (reviewer, comment) opens as text in a spreadsheet, never as a formula.
    return {column: spreadsheet_safe(values[column]) for column in manifest_columns(review)}


def write_manifest(
    rows: list[dict[str, str]], out: str | Path, columns: Sequence[str] | None = None
) -> Path:
    """Writes rows atomically (temp file in the same folder, then rename); ``columns``
    default to the first row's keys."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out}/labels.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = list(rows[0]) if rows else [KEY]
    with atomic_open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return out


def os_user() -> str:
    """The name of the operating-system user running this process (for the audit log)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid {os.getuid()}"


def export_labels(
    store: ReviewStore,
    out: str | Path,
    *,
    model_name: str | None = None,
    actor: str | None = None,
) -> int:
    """Exports accepted and corrected reviews as a manifest; returns the number of rows.

    Each export is an "export" audit record: ``actor`` (default: the operating-system user,
    for the command line), the file written, the number of rows and the model filter.

    Raises:
        InputError: nothing has been reviewed yet (for this model), mixed tasks or label
            lists, or an item its task refuses (see :func:`manifest_rows`).
    """
    rows = manifest_rows(store.reviewed_labels(model_name=model_name))
    if not rows:
        which = f" for model {model_name!r}" if model_name else ""
        raise InputError(
            f"no accepted or corrected reviews{which} in {store.url}; review cases first "
            "(rejected cases carry no label)"
        )
    path = write_manifest(rows, out).resolve()
    which = f"model {model_name}" if model_name else "all models"
    by = actor or f"{os_user()} (OS user)"
    store.record_event(by, "export", f"labels manifest {path}: {len(rows)} row(s), {which}")
    return len(rows)
