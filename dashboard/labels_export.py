"""Reviewed labels -> a label manifest CSV that DicomExampleGen takes on the next run.

Format (notes/interfaces.md): key column ``SOPInstanceUID``; ``label`` = integer class index
into the prediction's ``labels``; provenance columns start with ``_`` (ingestion ignores
them). One row per SOP instance: when several reviews cover one instance (frames, models)
the latest review wins.

Accepted segmentation masks give a ``mask`` column instead of ``label``: the absolute path
of the mask file the reviewer accepted (``--task segmentation`` reads it), checked against
the SHA-256 recorded at review time. Rejected masks are left out.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

from medflow.core.errors import InputError
from medflow.dashboard.records import ReviewedLabel
from medflow.dashboard.store import ReviewStore, file_sha256

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
MASK_COLUMNS = ["SOPInstanceUID", "mask", *COLUMNS[2:], "_mask_sha256"]


def manifest_rows(labels: list[ReviewedLabel]) -> list[dict[str, str]]:
    """One manifest row per SOP instance, the latest review winning.

    Raises:
        InputError: the reviewed predictions use different label lists (e.g. two models
            with other class orders), so one integer column cannot hold them; they mix
            classification labels and segmentation masks; or an accepted mask file is
            missing or changed since it was accepted.
    """
    if len({x.mask_ref is None for x in labels}) > 1:
        models = sorted({x.model_name for x in labels})
        raise InputError(
            "reviewed predictions mix classification labels and segmentation masks "
            f"(models {', '.join(models)}); export one model at a time with --model NAME"
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
    rows = []
    for x in latest.values():
        row = {"SOPInstanceUID": x.sop_instance_uid}
        if x.mask_ref is None:
            row["label"] = str(x.label_index)
        else:
            row["mask"] = str(Path(_unchanged_mask(x)).resolve())
        row.update(
            _reviewer=x.reviewer,
            _model_name=x.model_name,
            _model_version=x.model_version,
            _reviewed_at=x.reviewed_at.isoformat(),
            _comment=x.comment,
            _action=x.action,
        )
        if x.mask_ref is not None:
            row["_mask_sha256"] = x.mask_sha256 or ""
        rows.append(row)
    return rows


def _unchanged_mask(item: ReviewedLabel) -> str:
    """The accepted mask's path, after checking the file still has the reviewed bytes."""
    what = (
        f"mask {item.mask_ref} of case {item.prediction_id} (accepted by {item.reviewer} "
        f"at {item.reviewed_at:%Y-%m-%d %H:%M} UTC)"
    )
    try:
        digest = file_sha256(item.mask_ref)
    except OSError as exc:
        raise InputError(
            f"{what} cannot be read ({exc.strerror or exc}); restore the file or review the "
            "case again"
        ) from exc
    if digest != item.mask_sha256:
        raise InputError(
            f"{what} changed after it was accepted (SHA-256 differs); review the case again "
            "or restore the accepted file"
        )
    return item.mask_ref


def write_manifest(rows: list[dict[str, str]], out: str | Path) -> Path:
    """Writes rows atomically (temp file in the same folder, then rename); the columns are
    :data:`MASK_COLUMNS` when the rows carry masks, else :data:`COLUMNS`."""
    out = Path(out)
    if out.is_dir():
        raise InputError(f"--out {out} is a folder; give a file name such as {out}/labels.csv")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            columns = MASK_COLUMNS if rows and "mask" in rows[0] else COLUMNS
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def export_labels(store: ReviewStore, out: str | Path, *, model_name: str | None = None) -> int:
    """Exports accepted and corrected labels (or accepted masks) as a manifest; returns the
    number of rows.

    Raises:
        InputError: nothing has been reviewed yet (for this model), mixed label lists or
            kinds, or an accepted mask file that is missing or changed.
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
