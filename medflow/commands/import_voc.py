"""``medflow import-voc``: a Pascal VOC folder (JPEG + XML boxes) → colour DICOM + a boxes
manifest."""

from __future__ import annotations

import argparse
import json

from medflow.core.tasks import task_for_columns


def register(subparsers: argparse._SubParsersAction) -> None:
    # The task that trains on the manifest's boxes column (named in the help text).
    boxes_task = getattr(task_for_columns(["boxes"]), "name", "?")
    parser = subparsers.add_parser(
        "import-voc",
        help="Pascal VOC JPEGs + box XMLs → colour DICOM, labels.csv with a boxes column",
        description=(
            "Write each VOC image as a colour DICOM instance (Secondary Capture, RGB) under "
            "OUT/dicom/ and OUT/labels.csv (SOPInstanceUID, boxes as JSON in source pixels, "
            "split from ImageSets/Main/*.txt, _source). Zero-area, out-of-image and duplicate "
            "boxes are dropped and counted in OUT/import_report.json. Then: medflow run "
            f"OUT/dicom --labels OUT/labels.csv --task {boxes_task}."
        ),
    )
    parser.add_argument("src", metavar="VOC_DIR", help="folder with JPEGImages/ and Annotations/")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N images per split")
    parser.add_argument(
        "--classes",
        metavar="A,B,...",
        help="the class list; a box of another label is an error (default: any label)",
    )
    parser.add_argument(
        "--splits", metavar="S,...", help="only these manifest splits (train, eval, test)"
    )
    parser.set_defaults(func=_run)


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(s.strip() for s in text.split(",") if s.strip()) if text else None


def _run(args: argparse.Namespace) -> int:
    from medflow.components.ingest.voc_import import REPORT_NAME, import_voc

    manifest = import_voc(
        args.src,
        args.out,
        classes=_names(args.classes),
        limit=args.limit,
        splits=_names(args.splits),
    )
    report = json.loads((manifest.parent / REPORT_NAME).read_text())
    dropped = ", ".join(f"{n} {r}" for r, n in report["boxes_dropped"].items()) or "none"
    print(
        f"wrote {report['images']} DICOM files under {manifest.parent / 'dicom'} and {manifest}: "
        f"{report['boxes_kept']} of {report['boxes_read']} boxes kept (dropped: {dropped}); "
        f"details in {manifest.parent / REPORT_NAME}"
    )
    return 0
