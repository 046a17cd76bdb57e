"""``medflow labels export``: reviewed labels -> label manifest for the next training run;
``medflow labels boxes-from-masks``: a mask manifest -> one box per image (localization)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("labels", help="export reviewed labels as a label manifest")
    sub = parser.add_subparsers(dest="labels_command", metavar="ACTION", required=True)
    export = sub.add_parser(
        "export",
        help="write accepted/corrected reviews as a manifest CSV (key SOPInstanceUID) with the "
        "columns the model's task trains on (e.g. a label index or an accepted mask file)",
    )
    from medflow.dashboard.config import DEFAULT_URL, ENV_STORE_URL

    export.add_argument(
        "--store-url",
        default=None,
        help=f"review store (default ${ENV_STORE_URL}, else {DEFAULT_URL})",
    )
    export.add_argument("--out", required=True, help="manifest CSV to write (atomically)")
    export.add_argument("--model", default=None, help="only reviews of this model's predictions")
    export.set_defaults(func=_export)
    derive = sub.add_parser(
        "boxes-from-masks",
        help="localization labels: one box per image around its mask's foreground, as a "
        "boxes manifest (e.g. HC18 heads, Sunnybrook LV) for a box-detecting task",
    )
    derive.add_argument("dicom_dir", metavar="DICOM_DIR", help="the DICOM folder labelled")
    derive.add_argument("--labels", required=True, help="the mask manifest (key SOPInstanceUID)")
    derive.add_argument("--label", required=True, help="class name of the boxes (e.g. head)")
    derive.add_argument("--out", required=True, help="boxes manifest CSV to write (atomically)")
    derive.set_defaults(func=_boxes_from_masks)


def _export(args: argparse.Namespace) -> int:
    from medflow.dashboard.config import store_url_from_env
    from medflow.dashboard.labels_export import export_labels
    from medflow.dashboard.store import ReviewStore

    url = args.store_url or store_url_from_env()
    store = ReviewStore(url)
    try:
        count = export_labels(store, args.out, model_name=args.model)  # audited as the OS user
    finally:
        store.close()
    print(f"wrote {count} label(s) to {args.out}")
    return 0


def _boxes_from_masks(args: argparse.Namespace) -> int:
    from medflow.components.ingest.mask_boxes import boxes_from_masks

    report = boxes_from_masks(args.dicom_dir, args.labels, args.out, args.label)
    left = ", ".join(f"{n} {why}" for why, n in sorted(report.left_out.items()))
    print(f"wrote {report.written} box(es) to {args.out}" + (f"; left out {left}" if left else ""))
    for line in report.problems[:5]:
        print(f"  {line}")
    return 0
