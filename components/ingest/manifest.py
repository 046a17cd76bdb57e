"""Label manifests: CSV files that attach labels to DICOM instances.

Format: exactly one key column (``SOPInstanceUID``, ``SeriesInstanceUID``,
``StudyInstanceUID`` or ``path`` relative to the ingested folder) and one or more label
columns. A column named ``site`` sets the site slicing feature; a column named ``split`` puts
the instance in that split (overriding the hash of the patient pseudonym; an empty cell keeps
the hash); a column named ``mask`` names a segmentation mask per instance (a PNG or ``.npy``
file, a contour file, or a DICOM SEG as ``seg.dcm`` or ``seg.dcm#N`` for segment N, relative
to the manifest's folder; see :mod:`components.dicom.masks`; it may be the only label); columns starting with
``_`` carry provenance (reviewer, model, ...) and are ignored. Keys are the ORIGINAL identifiers
of the files (the hospital's UIDs), not the de-identified ones.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from medflow.core.errors import InputError
from medflow.core.table import formula_like, has_control_characters

KEY_COLUMNS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "path")
SITE_COLUMN = "site"
SPLIT_COLUMN = "split"
MASK_COLUMN = "mask"
MAX_ERRORS_SHOWN = 5


@dataclass
class LabelManifest:
    """Labels by key, with the key kind and the label column names."""

    source: str
    key_column: str
    label_columns: list[str]
    rows: dict[str, dict[str, int | float | str]]
    sites: dict[str, str] = field(default_factory=dict)
    splits: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    masks: dict[str, str] = field(default_factory=dict)  # key -> absolute mask file path

    def lookup(self, sop_uid: str, series_uid: str, study_uid: str, relpath: str) -> str | None:
        """The manifest key matching one instance, or None."""
        key = {
            "SOPInstanceUID": sop_uid,
            "SeriesInstanceUID": series_uid,
            "StudyInstanceUID": study_uid,
            "path": relpath,
        }[self.key_column]
        return key if key in self.rows else None

    def check_splits(self, allowed: list[str] | tuple[str, ...]) -> None:
        """Raise if a ``split`` cell names a split that ingestion does not write.

        Raises:
            InputError: naming the file, line, value and the allowed split names.
        """
        bad = [(self.lines[k], v) for k, v in self.splits.items() if v not in allowed]
        if bad:
            shown = "; ".join(f"line {line}: split {value!r}" for line, value in sorted(bad)[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise InputError(
                f"label manifest {self.source}: {shown}{more} is not one of the configured splits "
                f"{', '.join(allowed)}; fix the {SPLIT_COLUMN!r} column or pass matching --splits"
            )


def read_manifest(path: str | Path) -> LabelManifest:
    """Read and validate a label manifest.

    Raises:
        InputError: naming the file, row and column of the first problems: no or several
            key columns, no label column, empty keys, duplicate keys, missing labels.
    """
    path = Path(path)
    header, raw_rows = _read_csv(path)
    from medflow.components.ingest import pairs_manifest  # imports this module

    if pairs_manifest.is_pairs_header(header):  # fixed/moving: a registration pairs manifest
        return pairs_manifest.read_pairs_manifest(path, header, raw_rows)
    key_col, labels = _columns(path, header)
    manifest = LabelManifest(str(path), key_col, labels, {}, {}, {}, {}, {})
    errors = [
        error
        for line, raw in enumerate(raw_rows, start=2)
        if (error := _add_row(manifest, path, line, raw, MASK_COLUMN in header))
    ]
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN])
        more = (
            f" (and {len(errors) - MAX_ERRORS_SHOWN} more)"
            if len(errors) > MAX_ERRORS_SHOWN
            else ""
        )
        raise InputError(f"label manifest {path}: {shown}{more}; fix these rows and rerun")
    if not manifest.rows:
        raise InputError(f"label manifest {path}: no rows")
    for column in labels:
        _parse_column(manifest.rows, column)
    return manifest


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            return header, list(reader)
    except FileNotFoundError as exc:
        raise InputError(f"label manifest {path} does not exist") from exc
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"label manifest {path}: cannot read as UTF-8 CSV ({exc})") from exc


def _columns(path: Path, header: list[str]) -> tuple[str, list[str]]:
    """(the key column, the label columns) of a manifest header."""
    keys = [h for h in header if h in KEY_COLUMNS]
    if len(keys) != 1:
        raise InputError(
            f"label manifest {path}: needs exactly one key column of {', '.join(KEY_COLUMNS)}; "
            f"found {keys or 'none'} in header {header}"
        )
    key_col = keys[0]
    labels = [
        h
        for h in header
        if h != key_col
        and h not in (SITE_COLUMN, SPLIT_COLUMN, MASK_COLUMN)
        and not h.startswith("_")
    ]
    if not labels and MASK_COLUMN not in header:
        raise InputError(
            f"label manifest {path}: no label column besides {key_col!r} (header {header})"
        )
    return key_col, labels


def _add_row(
    manifest: LabelManifest, path: Path, line: int, raw: dict, has_masks: bool
) -> str | None:
    """Adds one CSV row to ``manifest``; returns what is wrong with it instead, if anything."""
    key_col, labels = manifest.key_column, manifest.label_columns
    row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
    key = row.get(key_col, "")
    if not key:
        return f"line {line}: empty {key_col}"
    if key in manifest.rows:
        return f"line {line}: duplicate {key_col} {key!r} (first on line {manifest.lines[key]})"
    missing = [c for c in labels if row.get(c, "") == ""]
    if has_masks and not labels and not row.get(MASK_COLUMN):
        missing.append(MASK_COLUMN)  # the mask is the only label: required
    if missing:
        return f"line {line}: missing label {', '.join(missing)} for {key!r}"
    unusable = [c for c in labels if formula_like(row[c]) or has_control_characters(row[c])]
    if unusable:
        return (
            f"line {line}: label {', '.join(repr(row[c]) for c in unusable)} for {key!r} is not a "
            "usable class name (it starts like a spreadsheet formula, =, +, -, @, or holds a "
            "line break or control character); rename the class"
        )
    manifest.rows[key] = {c: row[c] for c in labels}
    manifest.lines[key] = line
    if row.get(SITE_COLUMN):
        manifest.sites[key] = row[SITE_COLUMN]
    if row.get(SPLIT_COLUMN):
        manifest.splits[key] = row[SPLIT_COLUMN]
    if row.get(MASK_COLUMN):
        manifest.masks[key] = str((path.parent / row[MASK_COLUMN]).resolve())
    return None


def _parse_column(rows: dict[str, dict], column: str) -> None:
    """Gives a label column one type, so its feature has one type in every example: int when
    every cell is an integer, float when every cell is a number ("286" next to "292.2" is
    286.0), else the text as written."""
    for cast in (int, float):
        try:
            parsed = {key: cast(row[column]) for key, row in rows.items()}
        except ValueError:
            continue
        for key, value in parsed.items():
            rows[key][column] = value
        return
