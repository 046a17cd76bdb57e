"""``medflow predict``: classify DICOM files with a model on TF Serving (or ``medflow serve``)."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify DICOM files/folders with a served model (gRPC)",
        description="Preprocess DICOM files as ingestion does, send them to a TF Serving gRPC "
        "endpoint and print the predictions (optionally recording them for review).",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="DICOM files or folders")
    parser.add_argument(
        "--server", default="localhost:8500", help="gRPC HOST:PORT (default localhost:8500)"
    )
    parser.add_argument("--model", required=True, help="model name on the server")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--version", type=int, help="model version (default: latest)")
    group.add_argument("--label", help="version label, e.g. stable")
    parser.add_argument("--contract", help="model contract.json (preprocessing and labels)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--record", action="store_true", help="record predictions in the review store"
    )
    parser.add_argument(
        "--store-url", help="review store SQLAlchemy URL (default: the dashboard's)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline per request (s)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per Predict request")
    from medflow.commands.ingest import add_dicomweb_arguments

    add_dicomweb_arguments(parser, pull=False)
    parser.add_argument(
        "--push",
        action="store_true",
        help="with --dicomweb: store the results in each study as a DICOM SR (STOW-RS)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medflow.errors import ConfigError, InputError
    from serving.client import PredictionClient

    if bool(args.paths) == bool(args.dicomweb) or bool(args.study) != bool(args.dicomweb):
        raise ConfigError("give PATHs, or --dicomweb URL with --study UID (not both)")
    if args.push and not args.dicomweb:
        raise ConfigError("--push stores results in a PACS: it needs --dicomweb and --study")
    pushed = []
    with PredictionClient(args.server, timeout_s=args.timeout) as client:
        options = dict(
            version=args.version,
            label=args.label,
            contract=args.contract,
            batch_size=max(1, args.batch_size),
        )
        if args.dicomweb:
            from medflow.commands.ingest import dicomweb_source
            from serving.dicomweb_predict import predict_studies

            results, rejected, pushed = predict_studies(
                client, dicomweb_source(args), args.study, args.model, push=args.push, **options
            )
        else:
            results, rejected = client.predict_dicom(args.paths, args.model, **options)
    recorded = record(results, args.store_url) if args.record else []
    if args.json:
        doc = {
            "predictions": [
                {**r.to_dict(), **({"review_id": i} if recorded else {})}
                for r, i in zip(results, recorded or [None] * len(results), strict=True)
            ],
            "rejected": [vars(r) for r in rejected],
        }
        if args.dicomweb:
            doc["pushed"] = [vars(p) for p in pushed]
        print(json.dumps(doc, indent=2))
    else:
        print(format_table(results))
        if recorded:
            print(f"recorded {len(recorded)} prediction(s) in the review store")
        for p in pushed:
            print(
                f"stored SR {p.sop_instance_uid} ({p.findings} finding(s)) in study "
                f"{p.study_instance_uid}"
            )
    for r in rejected:
        print(f"medflow predict: skipped {r.path}: {r.message}", file=sys.stderr)
    if not results:
        raise InputError("no DICOM image could be predicted (see the messages above)")
    return 1 if rejected else 0


def record(results, store_url: str | None) -> list[int]:
    """Write predictions into the dashboard's review store; returns their ids."""
    try:
        from dashboard.store import DEFAULT_URL, ReviewStore
    except ImportError as exc:  # the dashboard extra is optional for predicting
        from medflow.errors import ConfigError

        raise ConfigError(f"--record needs the dashboard package: {exc}") from exc
    store = ReviewStore(store_url or DEFAULT_URL)
    try:
        return [
            store.record_prediction(
                sop_instance_uid=r.sop_instance_uid,
                study_instance_uid=r.study_instance_uid,
                series_instance_uid=r.series_instance_uid,
                image_ref=r.path,
                model_name=r.model_name,
                model_version=str(r.model_version),
                labels=r.labels,
                scores=r.probabilities,
                frame_index=r.frame_index,
            )
            for r in results
        ]
    finally:
        close = getattr(store, "close", None)
        if close:
            close()


def format_table(results) -> str:
    """A plain-text table: file, frame, predicted label, its probability, model:version."""
    rows = [("file", "frame", "label", "probability", "model")]
    for r in results:
        rows.append(
            (
                r.path,
                str(r.frame_index),
                r.label,
                f"{r.probabilities[r.class_id]:.4f}",
                f"{r.model_name}:{r.model_version}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
