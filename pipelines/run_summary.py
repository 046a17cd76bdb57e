"""Summarise one local pipeline run from ML Metadata (outputs of the executions it used)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medflow.pipelines.progress import ProgressTracker

REPORT_KEYS = ("inputs", "written", "quarantined", "duplicates", "examples")


def metadata_store(metadata_path: Path):
    """The ML Metadata store of a local run (SQLite)."""
    from ml_metadata.metadata_store import metadata_store
    from tfx.orchestration import metadata

    return metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(str(metadata_path))
    )


def _property(artifact, name: str):
    if name in artifact.custom_properties:
        value = artifact.custom_properties[name]
        field = value.WhichOneof("value")
        return getattr(value, field) if field else None
    if name in artifact.properties:
        value = artifact.properties[name]
        field = value.WhichOneof("value")
        return getattr(value, field) if field else None
    return None


def execution_outputs(store, execution_id: int) -> dict[str, list]:
    """Output artifacts of one execution keyed by output name."""
    from ml_metadata.proto import metadata_store_pb2

    events = store.get_events_by_execution_ids([execution_id])
    outputs: dict[str, list[int]] = {}
    for event in events:
        if event.type in (
            metadata_store_pb2.Event.OUTPUT,
            metadata_store_pb2.Event.DECLARED_OUTPUT,
        ):
            key = event.path.steps[0].key if event.path.steps else ""
            outputs.setdefault(key, []).append(event.artifact_id)
    return {key: store.get_artifacts_by_id(ids) for key, ids in outputs.items()}


def summarize(metadata_path: Path, tracker: ProgressTracker) -> dict[str, Any]:
    """Components' status/time, eval metrics, blessing, push and ingest results of a run."""
    from medflow.components.evaluation_results import load_metrics

    store = metadata_store(metadata_path)
    outputs = {
        name: execution_outputs(store, entry["execution_id"])
        for name, entry in tracker.components.items()
        if entry.get("execution_id") is not None
    }
    summary: dict[str, Any] = {
        "components": {
            name: {k: v for k, v in entry.items() if k != "execution_id"}
            for name, entry in tracker.components.items()
        },
        "metrics": {},
        "blessed": False,
        "pushed": False,
        "model_path": None,
        "model_version": None,
        "anomalies": [],
        "ingest": {},
    }
    evaluator = outputs.get("Evaluator", {})
    if evaluator.get("evaluation"):
        summary["metrics"] = load_metrics(evaluator["evaluation"][0].uri)
        summary["evaluation_uri"] = evaluator["evaluation"][0].uri
    if evaluator.get("blessing"):
        summary["blessed"] = bool(_property(evaluator["blessing"][0], "blessed"))
    trainer = outputs.get("Trainer", {})
    if trainer.get("model"):
        summary["trained_model_uri"] = trainer["model"][0].uri
    pusher = outputs.get("Pusher", {})
    if pusher.get("pushed_model"):
        pushed = pusher["pushed_model"][0]
        summary["pushed"] = bool(_property(pushed, "pushed"))
        summary["model_path"] = _property(pushed, "pushed_destination")
        summary["model_version"] = _property(pushed, "pushed_version")
    validator = outputs.get("ExampleValidator", {})
    if validator.get("anomalies"):
        summary["anomalies"] = _anomalies(validator["anomalies"][0].uri)
    report = outputs.get("ExampleGen", {}).get("ingest_report")
    if report:
        names = [*report[0].properties, *report[0].custom_properties]
        summary["ingest"] = {
            k: _property(report[0], k) for k in names if k not in ("tfx_version", "is_external")
        }
        summary["ingest"]["uri"] = report[0].uri
    return summary


def _anomalies(uri: str) -> list[str]:
    """``split: feature: short description`` for each anomaly the ExampleValidator found."""
    from medflow.components.evaluation_results import read_anomalies

    return [
        f"{split}: {feature}: {info.short_description}"
        for split, anomalies in read_anomalies(uri)
        for feature, info in sorted(anomalies.anomaly_info.items())
    ]


# Columns of the metrics table, those the Evaluator computed (classification or segmentation).
METRIC_COLUMNS = (
    "example_count",
    "auc",
    "binary_accuracy",
    "precision",
    "recall",
    "dice",
    "iou",
    "hausdorff95_mm",
)


def format_summary(summary: dict[str, Any]) -> str:
    """The run summary as a few lines for the terminal."""
    lines = [f"task: {summary['task']}"] if summary.get("task") else []
    ingest = summary.get("ingest") or {}
    if ingest:
        lines.append(
            "ingest: {inputs} inputs = {written} written + {quarantined} quarantined + "
            "{duplicates} duplicates ({examples} examples)".format(
                **{k: ingest.get(k, "?") for k in REPORT_KEYS}
            )
        )
    metrics = summary.get("metrics") or {}
    if metrics:
        present = {name for values in metrics.values() for name in values}
        names = [n for n in METRIC_COLUMNS if n in present]
        lines.append(f"{'slice':<28}" + "".join(f"{n[:14]:>15}" for n in names))
        for slice_name, values in metrics.items():
            cells = "".join(
                f"{values[n]:>15.3f}" if isinstance(values.get(n), float) else f"{'-':>15}"
                for n in names
            )
            lines.append(f"{slice_name[:28]:<28}{cells}")
    for anomaly in summary.get("anomalies") or []:
        lines.append(f"data anomaly: {anomaly}")
    lines.append(f"blessed: {'yes' if summary.get('blessed') else 'no'}")
    if summary.get("pushed"):
        lines.append(f"pushed: {summary['model_path']} (version {summary['model_version']})")
    else:
        lines.append("pushed: no (only blessed models are pushed)")
    wall = summary.get("wall_seconds")
    if wall is not None:
        lines.append(f"wall time: {wall:.0f} s; log: {summary.get('log_file')}")
    return "\n".join(lines)
