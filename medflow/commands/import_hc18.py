"""``medflow import-hc18``: HC18 fetal head ultrasound → DICOM + masks + a label manifest."""

from __future__ import annotations

import argparse

from medflow.core.tasks import task_for_columns


def register(subparsers: argparse._SubParsersAction) -> None:
    # The task that trains on the manifest's mask column (named in the help text).
    mask_task = getattr(task_for_columns(["mask"]), "name", "?")
    parser = subparsers.add_parser(
        "import-hc18",
        help="HC18 ultrasound PNGs + head annotations → DICOM, mask PNGs and labels.csv",
        description=(
            "Write each HC18 image as a DICOM instance (US, Secondary Capture, PixelSpacing "
            "from the CSV) under OUT/dicom/, its filled head annotation as OUT/masks/*.png, "
            "and OUT/labels.csv (SOPInstanceUID, mask, hc_mm, split by fetus). Then: medflow "
            f"run OUT/dicom --labels OUT/labels.csv --task {mask_task}."
        ),
    )
    parser.add_argument("src", metavar="HC18_DIR", help="folder with training_set/ and the CSV")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    parser.add_argument(
        "--eval-fraction",
        type=float,
        default=0.2,
        help="share of fetuses in the eval split (default 0.2; by a hash of the fetus id)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medflow.components.ingest.hc18_import import import_hc18

    manifest = import_hc18(args.src, args.out, limit=args.limit, eval_fraction=args.eval_fraction)
    rows = sum(1 for _ in manifest.open()) - 1
    print(f"wrote {rows} DICOM files under {manifest.parent / 'dicom'}, masks and {manifest}")
    return 0
