"""Reviewed labels -> a label manifest CSV that DicomExampleGen takes on the next run.

Format (notes/interfaces.md): key column ``SOPInstanceUID``; ``label`` = integer class index
into the prediction's ``labels``; provenance columns start with ``_`` (ingestion ignores
them). One row per SOP instance: when several reviews cover one instance (frames, models)
the latest review wins.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from dashboard.records import ReviewedLabel
from dashboard.store import ReviewStore
from medflow.errors import InputError

COLUMNS = [
    "SOPInstanceUID",
    "label",
    "_reviewer",
    "_model_name",
    "_model_version",
    "_reviewed_at",
    "_comment",
    "_action",
]


def manifest_rows(labels: list[ReviewedLabel]) -> list[dict[str, str]]:
    """One manifest row per SOP instance, the latest review winning.

    Raises:
        InputError: the reviewed predictions use different label lists (e.g. two models
            with other class orders), so one integer column cannot hold them.
    """
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
    return [
        {
            "SOPInstanceUID": x.sop_instance_uid,
            "label": str(x.label_index),
            "_reviewer": x.reviewer,
            "_model_name": x.model_name,
            "_model_version": x.model_version,
            "_reviewed_at": x.reviewed_at.isoformat(),
            "_comment": x.comment,
            "_action": x.action,
        }
        for x in latest.values()
    ]


def write_manifest(rows: list[dict[str, str]], out: str | Path) -> Path:
    """Writes rows atomically (temp file in the same folder, then rename)."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out}/labels.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def export_labels(store: ReviewStore, out: str | Path, *, model_name: str | None = None) -> int:
    """Exports accepted and corrected labels as a manifest; returns the number of rows.

    Raises:
        InputError: nothing has been reviewed yet (for this model), or mixed label lists.
    """
    rows = manifest_rows(store.reviewed_labels(model_name=model_name))
    if not rows:
        which = f" for model {model_name!r}" if model_name else ""
        raise InputError(
            f"no accepted or corrected reviews{which} in {store.url}; review cases first "
            "(rejected cases carry no label)"
        )
    write_manifest(rows, out)
    return len(rows)
