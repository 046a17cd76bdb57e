"""The terminal summary of a pipeline run shows the metrics the Evaluator computed."""

from __future__ import annotations

from medflow.pipelines.run_summary import format_summary


def _summary(metrics: dict) -> dict:
    return {"metrics": metrics, "blessed": True, "pushed": False, "anomalies": []}


def test_classification_columns():
    text = format_summary(
        _summary({"overall": {"example_count": 120.0, "auc": 0.93, "binary_accuracy": 0.88}})
    )
    header, row = text.splitlines()[:2]
    assert header.split() == [
        "slice",
        "example_count",
        "auc",
        "binary_accurac",
    ]  # 14 characters a column
    assert row.split() == ["overall", "120.000", "0.930", "0.880"]
    assert "dice" not in text


def test_segmentation_columns():
    metrics = {
        "overall": {"example_count": 22.0, "dice": 0.91, "iou": 0.84, "hausdorff95_mm": 3.5},
        "site:A": {"example_count": 10.0, "dice": 0.9, "iou": 0.8},
    }
    lines = format_summary(_summary(metrics)).splitlines()
    assert lines[0].split() == ["slice", "example_count", "dice", "iou", "hausdorff95_mm"]
    assert lines[1].split() == ["overall", "22.000", "0.910", "0.840", "3.500"]
    assert lines[2].split() == ["site:A", "10.000", "0.900", "0.800", "-"]
    assert "auc" not in lines[0]
