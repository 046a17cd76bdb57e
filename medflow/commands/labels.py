"""``medflow labels export``: reviewed labels -> label manifest for the next training run."""

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
