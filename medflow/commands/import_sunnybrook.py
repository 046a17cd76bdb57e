"""``medflow import-sunnybrook``: Sunnybrook cardiac MRI + LV contours → DICOM + manifest."""

from __future__ import annotations

import argparse

from medflow.commands import comma_list
from medflow.core.errors import ConfigError
from medflow.core.tasks import task_for_columns


def register(subparsers: argparse._SubParsersAction) -> None:
    # The task that trains on the manifest's mask column (named in the help text).
    mask_task = getattr(task_for_columns(["mask"]), "name", "?")
    parser = subparsers.add_parser(
        "import-sunnybrook",
        help="Sunnybrook cardiac MRI frames with LV contours → DICOM folder, contours, labels.csv",
        description=(
            "Copy the Sunnybrook cine MR frames that have an LV endocardium (i-)contour to "
            "OUT/dicom/<patient>/ (the original DICOM files, unchanged), their contour files "
            "to OUT/contours/, and write OUT/labels.csv (SOPInstanceUID, mask = the i-contour "
            "file, filled at ingestion; site, split by patient, phase ED/ES, slice location, "
            "trigger time). Then: medflow run OUT/dicom --labels OUT/labels.csv --task "
            f"{mask_task}."
        ),
    )
    parser.add_argument(
        "src", metavar="SUNNYBROOK_DIR", help="folder with dicoms/, contourfiles/ and link.csv"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--eval-patients",
        metavar="IDS",
        help="comma-separated patient folders (e.g. SCD0000501) for the eval split "
        "(default: the last patient of link.csv); the others are train",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medflow.components.ingest.sunnybrook_import import import_sunnybrook

    eval_patients = None
    if args.eval_patients is not None:
        eval_patients = tuple(comma_list(args.eval_patients))
        if not eval_patients:
            raise ConfigError(
                f"--eval-patients {args.eval_patients!r}: name at least one patient folder"
            )
    manifest = import_sunnybrook(args.src, args.out, eval_patients=eval_patients, progress=True)
    rows = sum(1 for _ in manifest.open()) - 1
    print(f"wrote {rows} DICOM files under {manifest.parent / 'dicom'}, contours and {manifest}")
    return 0
