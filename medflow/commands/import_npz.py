"""``medflow import-npz``: a MedMNIST-style .npz → DICOM files + a label manifest."""

from __future__ import annotations

import argparse

from medflow.commands import comma_list
from medflow.core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import-npz",
        help="MedMNIST-style .npz → DICOM files + labels.csv (to feed `medflow ingest`)",
        description=(
            "Write each image of the chosen splits as a DICOM instance with a synthetic "
            "patient/study/series (OUT/dicom/<split>/NNNNNN.dcm) and a label manifest "
            "OUT/labels.csv keyed by SOPInstanceUID with label and split columns (the npz "
            "'val' split becomes 'eval'). Then: medflow ingest OUT/dicom --labels "
            "OUT/labels.csv --out DIR. 3D arrays (N, D, H, W) give one Enhanced multi-frame "
            "DICOM volume per case (OUT/volumes/<split>/NNNNNN.dcm), labels.csv keyed by path "
            "and OUT/volume_spec.json; then: medflow run OUT --labels OUT/labels.csv."
        ),
    )
    parser.add_argument("npz", metavar="NPZ", help="file with <split>_images and <split>_labels")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--splits", default="train,val", help="npz splits to import (default train,val)"
    )
    parser.add_argument("--limit", type=int, metavar="N", help="at most N images per split")
    parser.add_argument(
        "--modality",
        default="DX",
        help="DX (Digital X-Ray, default) or another modality code, written as Secondary Capture",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medflow.components.ingest.npz_import import import_npz

    splits = comma_list(args.splits)
    if not splits:
        raise ConfigError(f"--splits {args.splits!r}: name at least one split, e.g. train,val")
    manifest = import_npz(
        args.npz,
        args.out,
        splits=tuple(splits),
        limit=args.limit,
        modality=args.modality,
        progress=True,
    )
    rows = sum(1 for _ in manifest.open()) - 1
    folder = next(p for p in (manifest.parent / "volumes", manifest.parent / "dicom") if p.is_dir())
    kind = (
        "DICOM volumes (one multi-frame file per case)"
        if folder.name == "volumes"
        else "DICOM files"
    )
    print(f"wrote {rows} {kind} under {folder} and {manifest}")
    return 0
