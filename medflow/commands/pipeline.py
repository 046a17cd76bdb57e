"""``medflow run`` (local pipeline), ``medflow compile`` and ``medflow submit`` (Kubeflow)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from medflow.commands import comma_list
from medflow.commands.ingest import add_beam_arguments, beam_args
from medflow.core.errors import ConfigError
from medflow.pipelines import config
from medflow.pipelines.config import PipelineConfig


def parse_assignments(items: list[str] | None, what: str) -> dict[str, Any]:
    """``["epochs=5", "backbone=resnet18"]`` -> ``{"epochs": 5, "backbone": "resnet18"}``
    (values parsed as JSON when they are JSON, else kept as strings)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _training_args(parser: argparse.ArgumentParser) -> None:
    from medflow.core.tasks import DEFAULT_TASK, task_names

    parser.add_argument(
        "--task",
        choices=task_names(),
        default=DEFAULT_TASK,
        help="what the model learns: its label-manifest columns, Trainer, Evaluator metrics and "
        f"thresholds, and the default model and pipeline names come from the task "
        f"(default {DEFAULT_TASK})",
    )
    parser.add_argument("--image-size", type=int, default=28, help="model input rows = cols")
    parser.add_argument(
        "--class-names", default="0,1", help="class names in label order (default 0,1)"
    )
    parser.add_argument("--epochs", type=int, help="maximum training epochs")
    parser.add_argument("--backbone", help="auto, small_cnn, resnet18, resnet50, densenet121, ...")
    parser.add_argument(
        "--operating-point",
        metavar="RULE",
        help="binary classifiers: the cut-off chosen on the eval split after training and "
        "applied by the exported model: youden (default), sensitivity=0.95, specificity=0.90 "
        "or threshold=0.4; per-pixel models: the mask threshold, dice (default: the best "
        "mean Dice on eval) or threshold=0.4",
    )
    parser.add_argument(
        "--calibration",
        choices=("temperature", "platt", "isotonic", "none"),
        help="probability calibration fitted on the eval split and built into the exported "
        "model (default temperature)",
    )
    parser.add_argument(
        "--hparam",
        action="append",
        metavar="KEY=VALUE",
        help="any Trainer hyperparameter (see components/models/hparams.py); repeatable",
    )
    parser.add_argument("--model-name", help="TF Serving model name (default: the task's)")
    parser.add_argument(
        "--guard",
        action="store_true",
        help="also train an out-of-distribution guard on the same images (labels unused), "
        "calibrated on the eval split, pushed beside the model as <model>-guard",
    )
    parser.add_argument(
        "--guard-hparam",
        action="append",
        metavar="KEY=VALUE",
        help="a guard Trainer hyperparameter, e.g. guard_quantile=0.995 (default 0.99) or "
        "kind=vae; repeatable",
    )
    parser.add_argument(
        "--require-guard",
        action="store_true",
        help="refuse to push a model without an out-of-distribution guard",
    )
    parser.add_argument("--pipeline-name", help="pipeline name (default: the task's)")


def pipeline_config(args: argparse.Namespace, **values: Any) -> PipelineConfig:
    """The validated PipelineConfig of the training flags (plus ``values``)."""
    hp = parse_assignments(args.hparam, "--hparam")
    if args.epochs is not None:
        hp["epochs"] = args.epochs
    if args.backbone:
        hp["backbone"] = args.backbone
    for key in ("operating_point", "calibration"):
        if getattr(args, key, None):
            hp[key] = getattr(args, key)
    return PipelineConfig(
        task=args.task,
        image_size=args.image_size,
        labels=tuple(comma_list(args.class_names)),
        hyperparameters=hp,
        pipeline_name=args.pipeline_name or "",
        model_name=args.model_name or "",
        guard=args.guard,
        guard_hyperparameters=parse_assignments(args.guard_hparam, "--guard-hparam"),
        require_guard=args.require_guard,
        **values,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="run the training pipeline locally (LocalDagRunner, SQLite ML Metadata)",
        description="Ingest -> validate -> Transform -> train -> evaluate -> push, on this machine. "
        "Everything goes under --workdir; pushed models under <workdir>/models/<model>/<version>/.",
    )
    run.add_argument(
        "data", nargs="?", help="DICOM folder (or train/ eval/ TFRecords with --format tfrecord)"
    )
    run.add_argument("--labels", default="", help="label manifest CSV (see `medflow ingest -h`)")
    run.add_argument("--workdir", default=config.DEFAULT_WORKDIR, help="work folder")
    run.add_argument("--format", choices=("dicom", "tfrecord"), default="dicom")
    run.add_argument("--splits", default="train=80,eval=20", help="patient split weights")
    run.add_argument("--workers", type=int, default=1, help="ingestion processes")
    run.add_argument(
        "--threshold",
        action="append",
        metavar="NAME=VALUE",
        help="blessing threshold NAME=VALUE of the task's Evaluator, e.g. min_auc=0.9 or "
        "min_dice=0.8 (an unknown name is refused with the task's names); repeatable",
    )
    run.add_argument("--no-cache", action="store_true", help="rerun every component")
    run.add_argument("--json", action="store_true", help="print the run summary as JSON")
    _training_args(run)
    from medflow.commands.ingest import add_dicomweb_arguments

    add_beam_arguments(run)
    add_dicomweb_arguments(run, pull=True)
    run.set_defaults(func=_run)

    comp = subparsers.add_parser(
        "compile",
        help="compile the pipeline for Kubeflow Pipelines (KubeflowV2DagRunner)",
        description="Write a Kubeflow pipeline spec (.yaml: PipelineSpec for `medflow submit`; "
        "runtime parameters data_root and label_manifest).",
    )
    comp.add_argument("--out", default="medflow-pipeline.yaml", help="spec file (.yaml or .json)")
    comp.add_argument("--image", default=config.PIPELINE_IMAGE, help="pipeline step image")
    comp.add_argument("--pipeline-root", default="", help="artifact root on the cluster")
    comp.add_argument("--gpus", type=int, default=0, help="GPUs requested by the Trainer")
    comp.add_argument("--gpu-type", default="NVIDIA_TESLA_T4", help="accelerator type")
    _training_args(comp)
    add_beam_arguments(comp)
    comp.set_defaults(func=_compile)

    sub = subparsers.add_parser(
        "submit",
        help="submit a compiled spec to a Kubeflow Pipelines endpoint",
        description="Host and token come from --host/--token-file or KFP_HOST/KFP_TOKEN "
        "(a token is never taken on the command line, where shell history would keep it).",
    )
    sub.add_argument("spec", help="spec written by `medflow compile` (.yaml)")
    sub.add_argument("--host", default=os.environ.get("KFP_HOST"), help="KFP endpoint URL")
    sub.add_argument("--token-file", help="file holding a bearer token (else $KFP_TOKEN)")
    sub.add_argument("--experiment", default="medflow")
    sub.add_argument("--run-name", default=None)
    sub.add_argument(
        "--param", action="append", metavar="NAME=VALUE", help="runtime parameter (repeatable)"
    )
    sub.set_defaults(func=_submit)


def _run(args: argparse.Namespace) -> int:
    from medflow.pipelines.local_runner import run_local
    from medflow.pipelines.run_summary import format_summary
    from medflow.workflows.next_steps import first_dicom, next_steps

    if bool(args.data) == bool(args.dicomweb):
        raise ConfigError("give either DATA (a folder) or --dicomweb URL with a query, not both")
    dicomweb = {}
    if args.dicomweb:
        from medflow.commands.ingest import dicomweb_query

        dicomweb = {
            "dicomweb_query": json.dumps(dicomweb_query(args).to_dict()),
            "dicomweb_auth_file": args.dicomweb_auth_file or "",
        }
    config = pipeline_config(
        args,
        data_root=str(args.data or args.dicomweb),
        label_manifest=args.labels,
        input_format=args.format,
        splits=args.splits,
        ingest_workers=args.workers,
        beam_args=beam_args(args),
        thresholds=parse_assignments(args.threshold, "--threshold"),
        enable_cache=not args.no_cache,
        **dicomweb,
    )
    # None: the local runner picks in-process or multi-process Beam from the data's size
    summary = run_local(config, workdir=args.workdir, beam_pipeline_args=config.beam_args or None)
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    else:
        example = first_dicom(args.data) if args.data and args.format == "dicom" else None
        print(format_summary(summary))
        print("\n".join(next_steps(summary, example)))
    return 0


def _compile(args: argparse.Namespace) -> int:
    from medflow.pipelines.kubeflow_runner import KubeflowResources, compile_pipeline

    path = compile_pipeline(
        args.out,
        pipeline_config(args, beam_args=beam_args(args)),
        image=args.image,
        pipeline_root=args.pipeline_root,
        resources=KubeflowResources(gpu_count=args.gpus, gpu_type=args.gpu_type),
    )
    print(f"wrote {path} ({args.task}, image {args.image}, Trainer GPUs {args.gpus})")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from medflow.pipelines.kubeflow_runner import submit

    if not args.host:
        raise ConfigError("no Kubeflow Pipelines endpoint: pass --host URL or set KFP_HOST")
    token = os.environ.get("KFP_TOKEN")
    if args.token_file:
        try:
            with open(args.token_file) as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc.strerror}") from None
    result = submit(
        args.spec,
        host=args.host,
        token=token,
        experiment=args.experiment,
        run_name=args.run_name,
        parameters=parse_assignments(args.param, "--param"),
    )
    print(f"submitted run {result['run_id']}: {result['url']}")
    return 0
