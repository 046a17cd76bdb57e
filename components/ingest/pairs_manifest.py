"""Pairs manifests: CSV files that pair DICOM images for registration.

Format: columns ``fixed`` and ``moving`` (required), ``fixed_mask`` and ``moving_mask``
(optional; a mask file as the label manifest's ``mask`` column takes it: PNG, ``.npy``,
contour file or DICOM SEG, relative to the manifest's folder), ``split`` and ``site``
(optional, as in label manifests) and ``_``-prefixed provenance columns (ignored). A
``fixed``/``moving`` cell names an image as the other manifests key it: its original
SOPInstanceUID, its SeriesInstanceUID (a volume) or its path relative to the ingested folder.

:class:`PairsManifest` is a :class:`LabelManifest` with one row per image named by a pair
(no labels; its mask), so ingestion reads each image once with the usual per-file
processing, and :mod:`.pairs` then joins the images into one example per pair.
:func:`write_import_pairs` is what ``medflow import-hc18`` / ``import-sunnybrook`` use to write
``pairs.csv`` beside their ``labels.csv``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from medflow.components.ingest.manifest import (
    MAX_ERRORS_SHOWN,
    SITE_COLUMN,
    SPLIT_COLUMN,
    LabelManifest,
)
from medflow.core.errors import InputError
from medflow.core.files import atomic_write

FIXED, MOVING = "fixed", "moving"
FIXED_MASK, MOVING_MASK = "fixed_mask", "moving_mask"
PAIR_COLUMNS = (FIXED, MOVING)
PAIRS_NAME = "pairs.csv"
KEY_KINDS = "SOPInstanceUID, SeriesInstanceUID or path"


def is_pairs_header(header: Iterable[str]) -> bool:
    """A manifest with ``fixed`` and ``moving`` columns is a pairs manifest."""
    return set(PAIR_COLUMNS) <= set(header)


@dataclass(frozen=True)
class PairRow:
    """One pair: manifest line, image keys, absolute mask paths (None: not given)."""

    line: int
    fixed: str
    moving: str
    fixed_mask: str | None = None
    moving_mask: str | None = None
    split: str | None = None


@dataclass
class PairsManifest(LabelManifest):
    """Pairs, and one label-manifest row per image they name (see the module)."""

    pairs: list[PairRow] = field(default_factory=list)

    def lookup(self, sop_uid: str, series_uid: str, study_uid: str, relpath: str) -> str | None:
        """The image key of one instance (its SOP UID, series UID or path), or None."""
        return next((k for k in (sop_uid, series_uid, relpath) if k in self.rows), None)


def read_pairs_manifest(path: Path, header: list[str], raw_rows: list[dict]) -> PairsManifest:
    """A pairs manifest from its parsed CSV (``manifest.read_manifest`` hands it over).

    Raises:
        InputError: naming the file and lines: empty keys, an image paired with itself,
            a pair listed twice, an image given two different masks, no rows.
    """
    manifest = PairsManifest(str(path), KEY_KINDS, list(PAIR_COLUMNS), {})
    errors: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for line, raw in enumerate(raw_rows, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        error = _check_row(row, line, seen)
        if error is None:
            error = _add_pair(manifest, path, line, row)
        if error:
            errors.append(error)
    if errors:
        more = len(errors) - MAX_ERRORS_SHOWN
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN]) + (f" (and {more} more)" if more > 0 else "")
        raise InputError(f"pairs manifest {path}: {shown}; fix these rows and rerun")
    if not manifest.pairs:
        raise InputError(f"pairs manifest {path}: no rows (header {header})")
    return manifest


def _check_row(row: dict, line: int, seen: dict) -> str | None:
    fixed, moving = row.get(FIXED, ""), row.get(MOVING, "")
    if not fixed or not moving:
        return f"line {line}: empty {FIXED if not fixed else MOVING}"
    if fixed == moving:
        return f"line {line}: image {fixed!r} is paired with itself"
    if (fixed, moving) in seen:
        return f"line {line}: pair ({fixed}, {moving}) repeats line {seen[(fixed, moving)]}"
    seen[(fixed, moving)] = line
    return None


def _add_pair(manifest: PairsManifest, path: Path, line: int, row: dict) -> str | None:
    """Adds the pair and its images; returns what is wrong with the row instead."""
    masks = {}
    for key_col, mask_col in ((FIXED, FIXED_MASK), (MOVING, MOVING_MASK)):
        key = row[key_col]
        mask = str((path.parent / row[mask_col]).resolve()) if row.get(mask_col) else None
        known = manifest.masks.get(key)
        if mask is not None and known is not None and mask != known:
            return (
                f"line {line}: {key_col} {key!r} has mask {row[mask_col]} but an earlier "
                f"line gave it {known}; one mask per image"
            )
        manifest.rows.setdefault(key, {})
        manifest.lines.setdefault(key, line)
        if mask is not None:
            manifest.masks[key] = mask
        if row.get(SPLIT_COLUMN):
            manifest.splits.setdefault(key, row[SPLIT_COLUMN])
        if row.get(SITE_COLUMN):
            manifest.sites.setdefault(key, row[SITE_COLUMN])
        masks[key_col] = mask
    manifest.pairs.append(
        PairRow(
            line,
            row[FIXED],
            row[MOVING],
            masks[FIXED],
            masks[MOVING],
            row.get(SPLIT_COLUMN) or None,
        )
    )
    return None


def write_import_pairs(
    out_dir: Path,
    header: tuple[str, ...],
    rows: list[tuple],
    pairs_file: Path,
    pair_of: Callable[[dict], tuple[str, str]],
) -> Path | None:
    """``out_dir/pairs.csv`` for an importer that wrote ``rows`` (its labels.csv rows under
    ``header``: ``SOPInstanceUID``, ``mask``, ``split`` and ``_source``), from the dataset's
    own pairs CSV ``pairs_file``, whose rows ``pair_of`` maps to (fixed, moving) ``_source``
    values. No ``pairs_file``, or no pair with both images imported (``--limit``): no
    pairs.csv (an old one is removed). Written atomically, after labels.csv.

    Raises:
        InputError: ``pairs_file`` cannot be read or lacks a column ``pair_of`` reads.
    """
    dest = out_dir / PAIRS_NAME
    dest.unlink(missing_ok=True)
    if not pairs_file.is_file():
        return None
    col = {name: i for i, name in enumerate(header)}
    images = {
        r[col["_source"]]: (r[col["SOPInstanceUID"]], r[col["mask"]], r[col[SPLIT_COLUMN]])
        for r in rows
    }
    try:
        with pairs_file.open(newline="", encoding="utf-8-sig") as fh:
            pairs = [pair_of(row) for row in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{pairs_file}: cannot read as a CSV ({exc})") from exc
    except (KeyError, ValueError) as exc:
        raise InputError(
            f"{pairs_file}: bad or missing column ({exc}); is it the dataset's pairs CSV?"
        ) from exc
    out = [
        (images[f][0], images[m][0], images[f][1], images[m][1], images[f][2], f, m)
        for f, m in pairs
        if f in images and m in images
    ]
    if not out:
        return None
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow((FIXED, MOVING, FIXED_MASK, MOVING_MASK, SPLIT_COLUMN, "_fixed", "_moving"))
    writer.writerows(out)
    atomic_write(dest, text.getvalue())
    return dest
