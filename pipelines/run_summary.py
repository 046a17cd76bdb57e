"""Summarise one local pipeline run from ML Metadata (outputs of the executions it used)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medflow.core.trust import trust_lines
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


def execution_outputs(store, execution_id: int, inputs: bool = False) -> dict[str, list]:
    """Output artifacts (``inputs``: input artifacts) of one execution keyed by name."""
    from ml_metadata.proto import metadata_store_pb2

    Event = metadata_store_pb2.Event
    kinds = (Event.INPUT, Event.DECLARED_INPUT) if inputs else (Event.OUTPUT, Event.DECLARED_OUTPUT)
    events = store.get_events_by_execution_ids([execution_id])
    outputs: dict[str, list[int]] = {}
    for event in events:
        if event.type in kinds:
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
        if not summary["blessed"] and summary.get("evaluation_uri"):
            summary["blessing_failures"] = blessing_failures(summary["evaluation_uri"])
    trainer = outputs.get("Trainer", {})
    if trainer.get("model"):
        summary["trained_model_uri"] = trainer["model"][0].uri
        summary["trust"] = trust_report(trainer["model"][0].uri)
    pusher = outputs.get("Pusher", {})
    if pusher.get("pushed_model"):
        pushed = pusher["pushed_model"][0]
        summary["pushed"] = bool(_property(pushed, "pushed"))
        summary["model_path"] = _property(pushed, "pushed_destination")
        summary["model_version"] = _property(pushed, "pushed_version")
    trainer_id = tracker.components.get("Trainer", {}).get("execution_id")
    trainer_inputs = execution_outputs(store, trainer_id, inputs=True) if trainer_id else {}
    _guard_and_init(summary, outputs, trainer_inputs)
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


def trust_report(model_uri: str) -> dict[str, Any]:
    """The Trainer's calibration, operating point and intervals (``training.json``'s
    ``trust``, written beside the SavedModel); empty if it wrote none."""
    return training_info(model_uri).get("trust") or {}


def training_info(model_uri: str) -> dict[str, Any]:
    """A Trainer Model artifact's ``training.json`` (empty if none)."""
    import json

    for path in sorted(Path(model_uri).glob("*/assets.extra/training.json")):
        return json.loads(path.read_text(encoding="utf-8"))
    return {}


def _guard_and_init(summary: dict[str, Any], outputs: dict[str, dict], trainer_inputs) -> None:
    """The guard Trainer's calibration (``guard``, with the guard Evaluator's TFMA metrics
    overall as ``guard.evaluator``) and the Model that initialised the Trainer's backbone
    (``init``: the Trainer's ``base_model`` input, its URI and ML Metadata artifact id), when
    the run had them."""
    from medflow.components.evaluation_results import load_metrics
    from medflow.pipelines.pipeline import GUARD_EVALUATOR_ID, GUARD_TRAINER_ID

    guard = outputs.get(GUARD_TRAINER_ID, {}).get("model")
    if guard:
        summary["guard"] = training_info(guard[0].uri).get("guard") or {}
        evaluation = outputs.get(GUARD_EVALUATOR_ID, {}).get("evaluation")
        if evaluation:
            overall = load_metrics(evaluation[0].uri).get("overall", {})
            summary["guard"]["evaluator"] = {**overall, "evaluation_uri": evaluation[0].uri}
    init = trainer_inputs.get("base_model")
    if init:
        summary["init"] = {"uri": init[0].uri, "artifact_id": init[0].id}


def guard_and_init_lines(summary: dict[str, Any]) -> list[str]:
    """The summary's lines on the guard and the backbone's initialisation."""
    lines = []
    guard = summary.get("guard")
    if guard:
        line = (
            f"guard: out-of-distribution threshold {guard['threshold']:.4g} ("
            f"{guard.get('quantile', 0):.0%} quantile of eval), false alarms on eval "
            f"{guard.get('false_alarm_rate', 0):.1%}"
        )
        if "false_alarm_rate_holdout" in guard:
            line += f", on a train holdout {guard['false_alarm_rate_holdout']:.1%}"
        lines.append(line)
        tfma = guard.get("evaluator") or {}
        if "false_alarm_rate" in tfma:
            lines.append(
                f"guard Evaluator (TFMA, eval split): false-alarm rate "
                f"{tfma['false_alarm_rate']:.1%} of {_count(tfma.get('example_count', '?'))} "
                f"examples, mean reconstruction error {tfma.get('reconstruction_error', 0):.4g}"
            )
    init = summary.get("init")
    if init:
        lines.append(
            f"backbone initialised from: {init['uri']} (ML Metadata artifact {init['artifact_id']})"
        )
    return lines


def _anomalies(uri: str) -> list[str]:
    """``split: feature: short description`` for each anomaly the ExampleValidator found."""
    from medflow.components.evaluation_results import read_anomalies

    return [
        f"{split}: {feature}: {info.short_description}"
        for split, anomalies in read_anomalies(uri)
        for feature, info in sorted(anomalies.anomaly_info.items())
    ]


# Metrics table columns in this order (those of them the Evaluator computed).
METRIC_COLUMNS = (
    "example_count",
    "auc",
    "binary_accuracy",
    "precision",
    "recall",
    "dice",
    "iou",
    "hausdorff95_mm",
    "dice_before",
    "dice_after",
    "folding_fraction",
    "ncc",
    "reconstruction_error",
    "elbo",
)
OVERALL = "overall"


def blessing_failures(evaluation_uri: str) -> list[str]:
    """Why the Evaluator did not bless: one line per failed threshold (metric, value,
    threshold, slice), from the ValidationResult TFMA writes beside the metrics."""
    from tensorflow_model_analysis.writers.metrics_plots_and_validations_writer import (
        load_and_deserialize_validation_result,
    )

    try:
        result = load_and_deserialize_validation_result(evaluation_uri)
    except (AssertionError, OSError, ValueError):
        return []
    if result.validation_ok:
        return []
    lines = []
    for per_slice in result.metric_validations_per_slice:
        where = _slice_text(per_slice.slice_key)
        for failure in per_slice.failures:
            lines.append(_failure_text(failure, where))
    lines += [
        f"slice {_slice_text(key)} missing from the evaluation" for key in result.missing_slices
    ]
    return lines or ["the Evaluator's validation failed (see the log)"]


def _slice_text(slice_key) -> str:
    parts = [f"{s.column}={getattr(s, s.WhichOneof('kind'))}" for s in slice_key.single_slice_keys]
    return ",".join(parts) or OVERALL


def _failure_text(failure, where: str) -> str:
    key, threshold = failure.metric_key, failure.metric_threshold
    value = failure.metric_value.double_value.value
    bounded = failure.metric_value.bounded_value
    if failure.metric_value.HasField("bounded_value"):
        value = bounded.value.value
    if key.is_diff:
        change = threshold.change_threshold
        need = _bound_text(change.absolute.value, change.direction)
        return f"{key.name} change vs the blessed baseline {value:+.4f}, needs {need} ({where})"
    bounds = threshold.value_threshold
    need = []
    if bounds.HasField("lower_bound"):
        need.append(f">= {bounds.lower_bound.value:g}")
    if bounds.HasField("upper_bound"):
        need.append(f"<= {bounds.upper_bound.value:g}")
    return f"{key.name} {value:.4f}, needs {' and '.join(need) or 'a valid value'} ({where})"


def _bound_text(absolute: float, direction: int) -> str:
    from tensorflow_model_analysis.proto import config_pb2

    lower_is_better = direction == config_pb2.MetricDirection.LOWER_IS_BETTER
    return f"<= {absolute:+g}" if lower_is_better else f">= {absolute:+g}"


def shown_slices(metrics: dict[str, dict[str, float]]) -> list[str]:
    """``overall``, then the slices of each slicing feature (or cross) that has more than one
    value, in name order: a feature with one value (``modality=UNKNOWN``) repeats overall."""
    groups: dict[str, list[str]] = {}
    for name in metrics:
        if name != OVERALL:
            key = ",".join(part.split("=", 1)[0] for part in name.split(","))
            groups.setdefault(key, []).append(name)
    shown = [OVERALL] if OVERALL in metrics else []
    for key in sorted(groups):
        if len(groups[key]) > 1:
            shown += sorted(groups[key])
    return shown


def _cell(name: str, value: Any, width: int) -> str:
    if not isinstance(value, int | float):
        return f"{'-':>{width}}"
    if name.endswith("count") and float(value).is_integer():  # a count, not a rate of 1.0
        return f"{int(value):>{width}d}"
    return f"{value:>{width}.3f}"


def metrics_table(metrics: dict[str, dict[str, float]]) -> list[str]:
    """The metrics as aligned lines: full metric names, counts as integers, rates with three
    decimals."""
    slices = shown_slices(metrics)
    present = {name for s in slices for name in metrics[s]}
    names = [n for n in METRIC_COLUMNS if n in present]  # the rest: in the log and the contract
    first = max([len("slice"), *map(len, slices)])
    widths = [max(len(n), 7) for n in names]
    lines = [
        f"{'slice':<{first}}" + "".join(f"  {n:>{w}}" for n, w in zip(names, widths, strict=True))
    ]
    for s in slices:
        cells = "".join(
            f"  {_cell(n, metrics[s].get(n), w)}" for n, w in zip(names, widths, strict=True)
        )
        lines.append(f"{s:<{first}}{cells}")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """The run summary as a few lines for the terminal."""
    lines = [f"task: {summary['task']}"] if summary.get("task") else []
    ingest = summary.get("ingest") or {}
    if ingest:
        lines.append(
            "ingest: {inputs} inputs = {written} written + {quarantined} quarantined + "
            "{duplicates} duplicates ({examples} examples)".format(
                **{k: _count(ingest.get(k, "?")) for k in REPORT_KEYS}
            )
        )
    if summary.get("metrics"):
        lines += metrics_table(summary["metrics"])
    trust = summary.get("trust") or {}
    lines += trust_lines(
        trust.get("calibration"), trust.get("operating_point"), trust.get("intervals")
    )
    lines += guard_and_init_lines(summary)
    for anomaly in summary.get("anomalies") or []:
        lines.append(f"data anomaly: {anomaly}")
    if summary.get("blessed"):
        lines.append("blessed: yes")
    else:
        failures = summary.get("blessing_failures") or []
        lines.append("blessed: no" + (" (a threshold failed)" if failures else ""))
        lines += [f"  failed: {f}" for f in failures]
    if summary.get("pushed"):
        lines.append(f"pushed: {summary['model_path']} (version {summary['model_version']})")
    elif summary.get("model_path"):
        lines.append(
            f"pushed: already, as {summary['model_path']} (version {summary['model_version']})"
        )
    else:
        lines.append("pushed: no (only blessed models are pushed)")
    wall = summary.get("wall_seconds")
    if wall is not None:
        lines.append(f"wall time: {wall:.0f} s; log: {summary.get('log_file')}")
    return "\n".join(lines)


def _count(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value
