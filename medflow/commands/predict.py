"""``medflow predict``: DICOM files through a model on TF Serving (or ``medflow serve``).

A classification model gives a label per image; a segmentation model a mask per image on
the source grid (area in mm², mean probability), optionally written as DICOM SEG
(``--seg-out``), PNG overlays (``--overlay-out``), mask files recorded for review
(``--record``) or a SEG stored back in the PACS (``--dicomweb ... --push``).
"""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="classify or segment DICOM files/folders with a served model (gRPC)",
        description="Preprocess DICOM files as ingestion does, send them to a TF Serving gRPC "
        "endpoint and print the predictions (optionally recording them for review). For a "
        "segmentation model: masks on the source grid, as DICOM SEG and/or PNG overlays.",
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
        help="with --dicomweb: store the results in each study (STOW-RS): a DICOM SR of a "
        "classification, a DICOM SEG per series of a segmentation",
    )
    seg = parser.add_argument_group("segmentation models")
    seg.add_argument(
        "--seg-out",
        metavar="DIR",
        help="write DICOM SEGs referencing the source instances: one per series of images "
        "with patient coordinates (seg-<SeriesInstanceUID>.dcm), else one per image "
        "(seg-<SOPInstanceUID>.dcm)",
    )
    seg.add_argument(
        "--seg-type",
        choices=("binary", "fractional"),
        default="binary",
        help="SEG of the thresholded mask (binary, probability >= 0.5; default) or of the "
        "probabilities (fractional)",
    )
    seg.add_argument(
        "--overlay-out",
        metavar="DIR",
        help="write a PNG overlay (image + coloured mask and outline) per image: "
        "<SOPInstanceUID>_f<frame>.png",
    )
    seg.add_argument(
        "--mask-dir",
        metavar="DIR",
        help="with --record: where the mask PNGs named by mask_ref go (default: masks/ beside "
        "a SQLite review store, else .medflow/masks)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from medflow.core.errors import ConfigError, InputError
    from medflow.serving.client import PredictionClient

    if bool(args.paths) == bool(args.dicomweb) or bool(args.study) != bool(args.dicomweb):
        raise ConfigError("give PATHs, or --dicomweb URL with --study UID (not both)")
    if args.push and not args.dicomweb:
        raise ConfigError("--push stores results in a PACS: it needs --dicomweb and --study")
    if args.mask_dir and not args.record:
        raise ConfigError("--mask-dir is where --record saves masks: add --record")
    pushed = []
    outputs: dict = {}
    with PredictionClient(args.server, timeout_s=args.timeout) as client:
        options = dict(
            version=args.version,
            label=args.label,
            contract=args.contract,
            batch_size=max(1, args.batch_size),
        )
        if args.dicomweb:
            from medflow.commands.ingest import dicomweb_source
            from medflow.serving.dicomweb_predict import predict_studies

            results, rejected, pushed = predict_studies(
                client,
                dicomweb_source(args),
                args.study,
                args.model,
                push=args.push,
                seg_type=args.seg_type,
                local=lambda res: _local_outputs(res, args, outputs),
                **options,
            )
        else:
            results, rejected = client.predict_dicom(args.paths, args.model, **options)
            results = _local_outputs(results, args, outputs)
    recorded = record(results, args.store_url) if args.record else []
    overlays = outputs.get("overlays") or [None] * len(results)
    if args.json:
        doc = {
            "predictions": [
                {
                    **r.to_dict(),
                    **({"review_id": i} if recorded else {}),
                    **({"overlay": o} if o else {}),
                }
                for r, i, o in zip(
                    results, recorded or [None] * len(results), overlays, strict=True
                )
            ],
            "rejected": [vars(r) for r in rejected],
        }
        if "segmentations" in outputs:
            doc["segmentations"] = [vars(w) for w in outputs["segmentations"]]
            doc["segmentations_skipped"] = [vars(s) for s in outputs["seg_skipped"]]
        if args.dicomweb:
            doc["pushed"] = [vars(p) for p in pushed]
        print(json.dumps(doc, indent=2))
    else:
        print(format_table(results))
        if recorded:
            print(f"recorded {len(recorded)} prediction(s) in the review store")
        for w in outputs.get("segmentations", []):
            print(
                f"wrote DICOM SEG {w.path} ({w.segment_type}, {w.frames} frame(s)) for series "
                f"{w.source_series_instance_uid}"
            )
        if outputs.get("overlays"):
            print(f"wrote {len(outputs['overlays'])} overlay(s) to {args.overlay_out}")
        for p in pushed:
            if getattr(p, "kind", "SR") == "SEG":
                print(
                    f"stored SEG {p.sop_instance_uid} ({p.frames} frame(s)) of series "
                    f"{p.source_series_instance_uid} in study {p.study_instance_uid}"
                )
            else:
                print(
                    f"stored SR {p.sop_instance_uid} ({p.findings} finding(s)) in study "
                    f"{p.study_instance_uid}"
                )
    for r in rejected:
        print(f"medflow predict: skipped {r.path}: {r.message}", file=sys.stderr)
    for s in outputs.get("seg_skipped", []):
        print(f"medflow predict: no DICOM SEG for {s.path}: {s.reason}", file=sys.stderr)
    if not results:
        raise InputError("no DICOM image could be predicted (see the messages above)")
    return 1 if rejected or outputs.get("seg_skipped") else 0


def _local_outputs(results: list, args: argparse.Namespace, outputs: dict) -> list:
    """SEG files, overlays and mask files of segmentation results (sources still on disk);
    returns the results (with ``mask_ref`` set when masks were saved)."""
    from medflow.core.errors import ConfigError

    segmentation = any(getattr(r, "task", "") == "segmentation" for r in results)
    if not segmentation:
        if args.seg_out or args.overlay_out:
            if results:
                raise ConfigError(
                    f"--seg-out/--overlay-out need a segmentation model; {args.model} is a "
                    "classification model"
                )
        return results
    from medflow.components.dicom.seg import write_segmentations
    from medflow.serving.overlays import save_masks, write_overlays

    if args.seg_out:
        outputs["segmentations"], outputs["seg_skipped"] = write_segmentations(
            results, args.seg_out, seg_type=args.seg_type
        )
    if args.overlay_out:
        outputs["overlays"] = write_overlays(results, args.overlay_out)
    if args.record:
        results = save_masks(results, args.mask_dir or default_mask_dir(args.store_url))
    return results


def default_mask_dir(store_url: str | None) -> str:
    """``masks/`` beside a SQLite review store's file, else ``.medflow/masks``."""
    from pathlib import Path

    url = store_url or "sqlite:///.medflow/review.db"
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return str(Path(url[len("sqlite:///") :]).parent / "masks")
    return ".medflow/masks"


def record(results, store_url: str | None) -> list[int]:
    """Write predictions into the dashboard's review store; returns their ids.

    A segmentation result is recorded with the contract's labels, its presence scores
    (:attr:`serving.client.MaskPrediction.scores`: for a binary model ``[1 - s, s]``, ``s``
    the mean foreground probability inside the mask, or the highest probability when the
    mask is empty) and ``mask_ref``: the absolute path of a 2-D uint8 PNG (mode L) with the
    source image's rows x columns, 0 = background, 1 = foreground of a binary model, k =
    class ``labels[k]`` of a multi-class one (written by :func:`serving.overlays.save_masks`;
    read it with ``numpy.asarray(PIL.Image.open(mask_ref))``).
    """
    try:
        from medflow.dashboard.store import DEFAULT_URL, ReviewStore
    except ImportError as exc:  # the dashboard extra is optional for predicting
        from medflow.core.errors import ConfigError

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
                scores=r.scores if getattr(r, "task", "") == "segmentation" else r.probabilities,
                frame_index=r.frame_index,
                mask_ref=getattr(r, "mask_ref", None),
            )
            for r in results
        ]
    finally:
        close = getattr(store, "close", None)
        if close:
            close()


def format_table(results) -> str:
    """A plain-text table. Classification: file, frame, predicted label, its probability,
    model:version. Segmentation: file, frame, predicted label, foreground pixels, their
    area in mm² ("-" without a pixel spacing), mean foreground probability, model:version."""
    if any(getattr(r, "task", "") == "segmentation" for r in results):
        rows = [("file", "frame", "label", "pixels", "area_mm2", "mean_prob", "model")]
        for r in results:
            rows.append(
                (
                    r.path,
                    str(r.frame_index),
                    r.label,
                    str(r.foreground_pixels),
                    "-" if r.area_mm2 is None else f"{r.area_mm2:.2f}",
                    f"{r.mean_probability:.4f}",
                    f"{r.model_name}:{r.model_version}",
                )
            )
        return _table(rows)
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
    return _table(rows)


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
