"""``medflow predict``: DICOM files through a model on TF Serving (or ``medflow serve``).

Flags are parsed here; :mod:`medflow.workflows.predict` does the work, and the model's task
plug-in decides what its results are and where they go (e.g. a label per image, or a mask per
image written as DICOM SEG with ``--seg-out``, PNG overlays with ``--overlay-out``, mask
files recorded for review with ``--record``, or stored back in the PACS with ``--push``).
"""

from __future__ import annotations

import argparse
import json
import sys

from medflow.core.tasks import all_tasks
from medflow.pipelines.config import DEFAULT_WORKDIR


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict DICOM files/folders with a served model (gRPC)",
        description="Preprocess DICOM files as ingestion does, send them to a TF Serving gRPC "
        "endpoint and print the predictions (optionally recording them for review). The "
        "model's task decides what a result is (a label per image, a mask on the source "
        "grid, ...) and which outputs it can write (see the options of each task below).",
    )
    parser.add_argument("paths", nargs="*", metavar="PATH", help="DICOM files or folders")
    parser.add_argument(
        "--pairs",
        metavar="CSV",
        help="register image pairs: a CSV with fixed, moving (DICOM paths relative to it, or "
        "SOPInstanceUIDs of files under PATHs) and optional fixed_mask, moving_mask (Dice "
        "before/after is printed); for models with a two-input signature",
    )
    parser.add_argument(
        "--server", default="localhost:8500", help="gRPC HOST:PORT (default localhost:8500)"
    )
    parser.add_argument("--model", required=True, help="model name on the server")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--version", type=int, help="model version (default: latest)")
    group.add_argument("--label", help="version label, e.g. stable")
    _contract_arguments(parser)
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
        help="with --dicomweb: store the results in each study (STOW-RS) as the task's DICOM "
        "objects (e.g. an SR of the findings, a SEG per series)",
    )
    parser.add_argument(
        "--mask-dir",
        metavar="DIR",
        help="with --record: where per-image review files such as mask PNGs (named by "
        "mask_ref) go (default: masks/ beside a SQLite review store, else .medflow/masks)",
    )
    parser.add_argument(
        "--overlay-out",
        metavar="DIR",
        help="write a PNG overlay per image, the model's result drawn over the image (a mask, "
        "boxes): <SOPInstanceUID>_f<frame>.png; for tasks that list overlay_out",
    )
    for task in all_tasks():  # each task's own output options, in a group of its own
        task.add_predict_arguments(parser.add_argument_group(f"{task.name} models"))
    parser.set_defaults(func=_run)


def _contract_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--contract",
        help="model contract.json or version folder (default: the served version's under "
        "--model-base, when there)",
    )
    parser.add_argument(
        "--model-base",
        default=f"{DEFAULT_WORKDIR}/models",
        help="pushed models folder where the served version's contract.json is found "
        f"(default {DEFAULT_WORKDIR}/models)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse files unlike the training images (modality, photometric interpretation, "
        "body part, pixel spacing in the contract); without it each such file gets a warning",
    )


def _run(args: argparse.Namespace) -> int:
    from medflow.core.errors import InputError
    from medflow.core.tasks import OutputOptions
    from medflow.workflows.predict import PredictJob, run_predict

    tasks = all_tasks()
    files = {k: getattr(args, k) for t in tasks for k in t.file_outputs if getattr(args, k)}
    settings = {k: getattr(args, k) for t in tasks for k in t.output_settings}
    job = PredictJob(
        server=args.server,
        model=args.model,
        paths=tuple(args.paths),
        study_uids=tuple(args.study or ()),
        version=args.version,
        label=args.label,
        contract=args.contract,
        batch_size=args.batch_size,
        timeout_s=args.timeout,
        push=args.push,
        outputs=OutputOptions(files=files, settings=settings),
        record=args.record,
        store_url=args.store_url,
        mask_dir=args.mask_dir,
        strict=args.strict,
        model_base=args.model_base,
    )
    source = None
    if args.dicomweb:
        from medflow.commands.ingest import dicomweb_source

        source = dicomweb_source(args)
    if args.pairs:  # two-input models (image pairs); the task decides what a result is
        from medflow.workflows.predict_pairs import run_predict_pairs

        outcome = run_predict_pairs(job, args.pairs, source)
    else:
        outcome = run_predict(job, source)
    print(_json(outcome, bool(args.dicomweb)) if args.json else _text(outcome))
    for warning in outcome.warnings:
        print(f"medflow predict: warning: {warning}", file=sys.stderr)
    for r in outcome.rejected:
        print(f"medflow predict: skipped {r.path}: {r.message}", file=sys.stderr)
    for problem in outcome.report.problems:
        print(f"medflow predict: {problem}", file=sys.stderr)
    if not outcome.results:
        raise InputError("no DICOM image could be predicted (see the messages above)")
    return 1 if outcome.rejected or outcome.report.problems else 0


def _json(outcome, dicomweb: bool) -> str:
    n = len(outcome.results)
    recorded = outcome.recorded or [None] * n
    extra = outcome.report.per_result
    predictions = []
    for i, (r, rid) in enumerate(zip(outcome.results, recorded, strict=True)):
        item = {**r.to_dict(), **({"review_id": rid} if outcome.recorded else {})}
        item.update({k: v[i] for k, v in extra.items() if v[i] is not None})
        predictions.append(item)
    doc = {
        "predictions": predictions,
        "rejected": [vars(r) for r in outcome.rejected],
        "warnings": outcome.warnings,
    }
    doc.update({k: [vars(x) for x in v] for k, v in outcome.report.json.items()})
    if dicomweb:
        doc["pushed"] = [vars(p) for p in outcome.pushed]
    return json.dumps(doc, indent=2)


def _text(outcome) -> str:
    lines = [outcome.task.format_table(outcome.results)] if outcome.results else []
    if outcome.recorded:
        lines.append(f"recorded {len(outcome.recorded)} prediction(s) in the review store")
    lines += outcome.report.lines
    lines += [p.describe() for p in outcome.pushed]
    return "\n".join(lines)
