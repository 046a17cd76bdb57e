"""Output of the ``medflow import-*`` helpers: folders built in a staging folder inside the
output folder, swapped in whole, and the label manifest written last (atomically), so an
interrupted import never leaves a manifest describing files that are not there."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from medflow.core.files import atomic_write, swap_in_folders

MANIFEST_NAME = "labels.csv"


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar on a terminal only (``disable=None``: no log spam in CI)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc=desc, disable=None if enabled else True)


def publish(
    staging: Path,
    out_dir: Path,
    folders: Sequence[str],
    header: Sequence[str],
    rows: Sequence[tuple],
) -> Path:
    """Moves ``staging/<folder>`` to ``out_dir/<folder>`` for each folder (an old one goes to
    the staging folder, to be removed with it), then writes ``out_dir/labels.csv``.

    The old manifest is removed first: no labels.csv beside folders it does not describe.
    Returns the manifest's path.
    """
    manifest = out_dir / MANIFEST_NAME
    manifest.unlink(missing_ok=True)
    swap_in_folders(staging, out_dir, folders)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write(manifest, text.getvalue())
    return manifest


def grey8_image(ds, rows: int, cols: int) -> None:
    """The Image Pixel module of an 8-bit MONOCHROME2 image (``PixelData`` set by the caller),
    as every importer writes its images."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(rows), int(cols)
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
