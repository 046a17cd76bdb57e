"""The terminal summary of a pipeline run (issue 24, item 7): the metrics the Evaluator
computed under their full names, counts as integers, only slices that split the data, in a
stable order, and why a model was not blessed."""

from __future__ import annotations

import pytest

from medflow.pipelines.run_summary import blessing_failures, format_summary


def _summary(metrics: dict, **extra) -> dict:
    return {"metrics": metrics, "blessed": True, "pushed": False, "anomalies": [], **extra}


def test_classification_columns_full_names_and_integer_counts():
    overall = {"example_count": 516.0, "auc": 0.93, "binary_accuracy": 0.88, "recall": 1.0}
    text = format_summary(_summary({"overall": {**overall, "calibration": 1.007}}))
    header, row = text.splitlines()[:2]
    assert header.split() == ["slice", "example_count", "auc", "binary_accuracy", "recall"]
    assert row.split() == ["overall", "516", "0.930", "0.880", "1.000"]  # a rate of 1 stays 1.000
    assert "dice" not in text and "516.000" not in text and "calibration" not in text


def test_segmentation_columns():
    metrics = {
        "overall": {"example_count": 22.0, "dice": 0.91, "iou": 0.84, "hausdorff95_mm": 3.5},
        "site=B": {"example_count": 12.0, "dice": 0.92, "iou": 0.85},
        "site=A": {"example_count": 10.0, "dice": 0.9, "iou": 0.8},
    }
    lines = format_summary(_summary(metrics)).splitlines()
    assert lines[0].split() == ["slice", "example_count", "dice", "iou", "hausdorff95_mm"]
    assert lines[1].split() == ["overall", "22", "0.910", "0.840", "3.500"]
    assert lines[2].split() == ["site=A", "10", "0.900", "0.800", "-"]
    assert lines[3].split() == ["site=B", "12", "0.920", "0.850", "-"]
    assert "auc" not in lines[0]


def test_only_slices_with_more_than_one_value_in_a_stable_order():
    one = {"example_count": 524.0, "auc": 0.99}
    metrics = {
        "sex=UNKNOWN": one,
        "modality=DX": one,
        "manufacturer=b": {"example_count": 300.0, "auc": 0.98},
        "overall": one,
        "manufacturer=a": {"example_count": 224.0, "auc": 0.97},
    }
    shuffled = dict(reversed(list(metrics.items())))
    first = format_summary(_summary(metrics))
    assert first == format_summary(_summary(shuffled))
    rows = [line.split()[0] for line in first.splitlines()[1:4]]
    assert rows == ["overall", "manufacturer=a", "manufacturer=b"]
    assert "UNKNOWN" not in first and "modality=DX" not in first


def test_not_blessed_says_which_threshold_failed():
    text = format_summary(
        _summary(
            {"overall": {"auc": 0.81}},
            blessed=False,
            blessing_failures=["auc 0.8100, needs >= 0.9 (overall)"],
        )
    )
    assert "blessed: no (a threshold failed)" in text
    assert "failed: auc 0.8100, needs >= 0.9 (overall)" in text


def test_already_pushed_model_is_named():
    summary = _summary({}, model_path="/w/models/m/7", model_version=7)
    assert "pushed: already, as /w/models/m/7 (version 7)" in format_summary(summary)


@pytest.fixture()
def failed_validation(tmp_path):
    """The ValidationResult TFMA's Evaluator writes when two thresholds fail."""
    import tensorflow as tf
    from tensorflow_model_analysis.proto import config_pb2, validation_result_pb2

    result = validation_result_pb2.ValidationResult(validation_ok=False)
    per_slice = result.metric_validations_per_slice.add()
    failure = per_slice.failures.add()
    failure.metric_key.name = "auc"
    failure.metric_threshold.CopyFrom(
        config_pb2.MetricThreshold(
            value_threshold=config_pb2.GenericValueThreshold(lower_bound={"value": 0.9})
        )
    )
    failure.metric_value.double_value.value = 0.8123
    drop = per_slice.failures.add()
    drop.metric_key.name = "auc"
    drop.metric_key.is_diff = True
    drop.metric_threshold.change_threshold.absolute.value = -0.02
    drop.metric_threshold.change_threshold.direction = config_pb2.MetricDirection.HIGHER_IS_BETTER
    drop.metric_value.double_value.value = -0.05
    with tf.io.TFRecordWriter(str(tmp_path / "validations.tfrecord")) as writer:
        writer.write(result.SerializeToString())
    return str(tmp_path)


def test_blessing_failures_read_from_the_evaluators_validation_result(failed_validation):
    assert blessing_failures(failed_validation) == [
        "auc 0.8123, needs >= 0.9 (overall)",
        "auc change vs the blessed baseline -0.0500, needs >= -0.02 (overall)",
    ]


def test_blessing_failures_of_a_passed_or_missing_validation(tmp_path):
    import tensorflow as tf
    from tensorflow_model_analysis.proto import validation_result_pb2

    assert blessing_failures(str(tmp_path)) == []  # no file: nothing to say
    with tf.io.TFRecordWriter(str(tmp_path / "validations.tfrecord")) as writer:
        writer.write(validation_result_pb2.ValidationResult(validation_ok=True).SerializeToString())
    assert blessing_failures(str(tmp_path)) == []
