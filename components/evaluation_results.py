"""Reading Evaluator (TFMA), StatisticsGen and ExampleValidator outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medflow.core import features


def _value(metric: dict[str, Any]) -> float | None:
    if "doubleValue" in metric:
        return float(metric["doubleValue"])
    bounded = metric.get("boundedValue")
    if bounded and "value" in bounded:
        return float(bounded["value"])
    return None


def _slice_name(slice_key) -> str:
    if not slice_key:
        return "overall"
    return ",".join(f"{k}={v.decode() if isinstance(v, bytes) else v}" for k, v in slice_key)


def load_metrics(evaluation_uri: str, model_name: str = "") -> dict[str, dict[str, float]]:
    """Scalar metrics per slice of a ModelEvaluation artifact.

    Returns:
        ``{"overall": {"auc": ..., ...}, "modality=CR": {...}, ...}``; baseline
        comparisons (``*_diff``) are left out.
    """
    import tensorflow_model_analysis as tfma

    result = tfma.load_eval_result(evaluation_uri, model_name=model_name or None)
    out: dict[str, dict[str, float]] = {}
    for slice_key, by_output in result.slicing_metrics:
        metrics = by_output.get("", {}).get("", {})
        values = {}
        for name, metric in metrics.items():
            value = _value(metric)
            if value is not None and not name.endswith("_diff"):
                values[name] = value
        out[_slice_name(slice_key)] = values
    return out


def load_statistics_summary(statistics_uri: str, split: str = "train") -> dict[str, Any]:
    """Example count and the image value range of one split of an ExampleStatistics artifact."""
    import tensorflow_data_validation as tfdv

    stats = tfdv.load_stats_binary(f"{statistics_uri.rstrip('/')}/Split-{split}/FeatureStats.pb")
    dataset = stats.datasets[0]
    summary: dict[str, Any] = {"split": split, "num_examples": int(dataset.num_examples)}
    by_name = {f.path.step[0]: f for f in dataset.features if f.path.step}
    if "img_min" in by_name and "img_max" in by_name:
        summary["value_range"] = [
            float(by_name["img_min"].num_stats.min),
            float(by_name["img_max"].num_stats.max),
        ]
    label = by_name.get(features.LABEL)
    if label is not None and label.num_stats.histograms:
        summary["label_mean"] = float(label.num_stats.mean)
    return summary


def read_anomalies(uri: str) -> list[tuple[str, Any]]:
    """``(split, tensorflow_metadata Anomalies)`` for each split an ExampleAnomalies
    artifact holds (``<uri>/Split-<split>/SchemaDiff.pb``), in split order."""
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    out = []
    for split_dir in sorted(Path(uri).glob("Split-*")):
        path = split_dir / "SchemaDiff.pb"
        if path.is_file():
            anomalies = anomalies_pb2.Anomalies()
            anomalies.ParseFromString(path.read_bytes())
            out.append((split_dir.name.removeprefix("Split-"), anomalies))
    return out
