"""The detection task's pieces: boxes through the PixelSpec geometry and back, CenterNet
targets, decoding + NMS inside the serving graph, source-grid decode, COCO metrics (pycocotools),
the SR round trip, and the plug-in's registration."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from medflow.components.dicom.pixels import resample_mask, to_model_input
from medflow.components.ingest.voc_import import import_voc
from medflow.components.tasks.detection.boxes import (
    cell_to_model_grid,
    centernet_targets,
    to_model_grid,
    to_source_grid,
)
from medflow.components.tasks.detection.evaluation import DetectionThresholds, detection_metrics
from medflow.components.tasks.detection.export import MAX_DETECTIONS, detection_head
from medflow.components.tasks.detection.results import BoxPrediction, decode
from medflow.components.tasks.detection.sr import build_box_sr, read_box_sr
from medflow.core.errors import InputError
from medflow.core.pixel_spec import PixelSpec
from medflow.core.tasks import get_task, task_for_columns
from medflow.serving.client import ModelInfo, Prediction
from medflow.serving.dicom_input import ModelInput

CLASSES = ["RBC", "WBC", "Platelets"]
SPEC = PixelSpec(size=(256, 256), channels=3)


@pytest.fixture(scope="module")
def bccd(shared_data, tmp_path_factory):
    """Two BCCD images as imported DICOM, with their manifest rows."""
    out = tmp_path_factory.mktemp("bccd")
    import_voc(shared_data / "bccd", out, classes=tuple(CLASSES), limit=1)
    import csv

    rows = list(csv.DictReader((out / "labels.csv").open()))
    return out, rows


def _dicom(out, row):
    return pydicom.dcmread(out / "dicom" / row["_source"].replace(".jpg", ".dcm"))


def test_boxes_follow_the_pixels_through_the_pixel_spec_and_back(bccd):
    out, rows = bccd
    for row in rows:
        ds = _dicom(out, row)
        ((_, geom),) = to_model_input(ds, SPEC)
        xyxy, cls = cell_to_model_grid(row["boxes"], "row", CLASSES, geom.scale, geom.pad)
        # a box's pixels resampled as ingestion resamples masks land on the mapped box
        b = json.loads(row["boxes"])[0]
        mask = np.zeros((ds.Rows, ds.Columns), np.uint8)
        mask[int(b["y0"]) : int(b["y1"]), int(b["x0"]) : int(b["x1"])] = 1
        r, c = np.nonzero(resample_mask(mask, SPEC.size, None))
        np.testing.assert_allclose([c.min(), r.min(), c.max() + 1, r.max() + 1], xyxy[0], atol=1.0)
        back = to_source_grid(xyxy, geom.scale, geom.pad, geom.orig_rows, geom.orig_cols)
        truth = np.array(
            [[d[k] for k in ("x0", "y0", "x1", "y1")] for d in json.loads(row["boxes"])]
        )
        np.testing.assert_allclose(back, truth, atol=1e-3)
        assert len(cls) == len(truth)


def test_anisotropic_spacing_scales_columns_apart():
    xyxy = np.array([[10, 10, 20, 20]], np.float32)
    model = to_model_grid(xyxy, 0.5, (0, 3), spacing=(1.0, 2.0))
    np.testing.assert_allclose(model, [[13, 5, 23, 10]])
    np.testing.assert_allclose(to_source_grid(model, 0.5, (0, 3), 100, 100, (1.0, 2.0)), xyxy)


def test_centernet_target_marks_the_centre_size_and_offset():
    t = centernet_targets(np.array([[8.0, 16.0, 24.0, 48.0]]), np.array([1]), (16, 16), 4, 2)
    assert t.shape == (16, 16, 7)
    iy, ix = np.unravel_index(t[..., 1].argmax(), (16, 16))
    assert (iy, ix) == (8, 4) and t[iy, ix, 1] == 1.0 and t[..., 0].max() == 0.0
    np.testing.assert_allclose(t[iy, ix, 2:], [4.0, 8.0, 0.0, 0.0, 1.0])
    assert t[..., 6].sum() == 1


def _centernet_output(peaks, n_classes=2, grid=16):
    """A CenterNet output with heatmap peaks (row, col, class, score, w, h in cells)."""
    out = np.zeros((1, grid, grid, n_classes + 4), np.float32)
    for r, c, k, s, w, h in peaks:
        out[0, r, c, k] = s
        out[0, r, c, n_classes : n_classes + 2] = (w, h)
        out[0, r, c, n_classes + 2 :] = 0.5
    return out


def test_nms_in_the_graph_keeps_the_best_of_overlapping_boxes_and_pads():
    out = _centernet_output(
        [
            (4, 4, 0, 0.9, 8.0, 8.0),
            (4, 6, 0, 0.6, 8.0, 8.0),  # same class, IoU 0.6 with the first: suppressed
            (12, 12, 1, 0.7, 2.0, 2.0),
            (1, 14, 0, 0.01, 2.0, 2.0),  # under the score threshold
        ]
    )
    head = {k: v.numpy() for k, v in detection_head(out, 2).items()}
    assert head["boxes"].shape == (1, MAX_DETECTIONS, 4)
    assert head["scores"].shape == head["classes"].shape == (1, MAX_DETECTIONS)
    assert int(head["num_detections"][0]) == 2
    np.testing.assert_allclose(head["scores"][0, :2], [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(head["classes"][0, :2], [0, 1])
    # centre (4.5, 4.5) cells, 8x8 cells, stride 4 -> model pixels
    np.testing.assert_allclose(head["boxes"][0, 0], [2, 2, 34, 34])
    np.testing.assert_allclose(head["boxes"][0, 1], [46, 46, 54, 54])
    assert not head["scores"][0, 2:].any()
    # per box, every class's heatmap at its centre cell
    np.testing.assert_allclose(head["probabilities"][0, :2], [[0.9, 0.0], [0.0, 0.7]])
    assert not head["probabilities"][0, 2:].any()


def test_decode_maps_served_boxes_to_source_pixels(bccd):
    out, rows = bccd
    ds = _dicom(out, rows[0])
    ((arr, geom),) = to_model_input(ds, SPEC)
    item = ModelInput(rows[0]["_source"], 0, ds.SOPInstanceUID, "1.2", "1.3", arr, geom)
    truth = np.array([[100.0, 50.0, 200.0, 150.0]])
    served = to_model_grid(truth, geom.scale, geom.pad)
    pred = Prediction(
        "m",
        3,
        "serving_default",
        {
            "boxes": np.concatenate([served, np.zeros((MAX_DETECTIONS - 1, 4))])[None],
            "scores": np.array([[0.8] + [0.0] * (MAX_DETECTIONS - 1)]),
            "classes": np.array([[1] + [0] * (MAX_DETECTIONS - 1)]),
            "num_detections": np.array([1]),
        },
    )
    (res,) = decode([item], pred, ModelInfo(SPEC, CLASSES, "detection"))
    assert res.boxes == [
        {"label": "WBC", "score": 0.8, "x0": 100.0, "y0": 50.0, "x1": 200.0, "y1": 150.0}
    ]
    doc = res.to_dict()
    assert doc["sop_instance_uid"] == ds.SOPInstanceUID and doc["rows"] == 480
    assert res.scores == [0.0, 0.8, 0.0]


def test_coco_metrics_perfect_partial_and_froc():
    truth = [
        (np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.array([0, 1])),
        (np.array([[5, 5, 15, 15]], float), np.array([0])),
    ]
    perfect = [(b, np.ones(len(c)), c) for b, c in truth]
    m = detection_metrics(truth, perfect, ["a", "b", "c"])
    assert m["map50"] == pytest.approx(1.0) and m["map"] == pytest.approx(1.0)
    assert m["ap50_per_class"] == {"a": pytest.approx(1.0), "b": pytest.approx(1.0), "c": None}
    assert all(v == pytest.approx(1.0) for v in m["froc"].values())
    # image 1's class-b box missed, one false positive ranked first in image 2
    partial = [
        (truth[0][0][:1], np.array([0.9]), np.array([0])),
        (
            np.array([[50, 50, 60, 60], [5, 5, 15, 15]], float),
            np.array([0.95, 0.8]),
            np.array([0, 0]),
        ),
    ]
    m = detection_metrics(truth, partial, ["a", "b"])
    assert m["ap50_per_class"]["b"] == pytest.approx(0.0)
    assert 0.5 < m["ap50_per_class"]["a"] < 1.0
    assert m["froc"][0.125] == 0.0  # the first detection is the false positive
    assert m["froc"][1.0] == pytest.approx(2 / 3)  # 2 of 3 boxes found, 1 FP over 2 images
    empty = detection_metrics(truth, [(np.zeros((0, 4)), [], [])] * 2, ["a", "b"])
    assert empty["map50"] == 0.0


def test_blessing_on_map50():
    t = DetectionThresholds(min_map50=0.5, max_map50_drop=0.02)
    assert t.bless(0.6, None)[0] and t.bless(0.6, 0.61)[0]
    assert not t.bless(0.45, None)[0]
    assert "below the current" in t.bless(0.6, 0.7)[1]


def test_sr_round_trip_reads_the_boxes_back(bccd, tmp_path):
    from medflow.components.dicom.sr import sr_bytes

    out, rows = bccd
    ds = _dicom(out, rows[0])
    boxes = [
        {"label": "WBC", "score": 0.75, "x0": 10.0, "y0": 20.0, "x1": 110.0, "y1": 90.0},
        {"label": "Platelets", "score": 0.5, "x0": 300.0, "y0": 40.0, "x1": 330.0, "y1": 70.0},
    ]
    res = BoxPrediction(
        "x.dcm", 0, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
        "det", 2, CLASSES, boxes, 480, 640,
    )  # fmt: skip
    path = tmp_path / "sr.dcm"
    path.write_bytes(sr_bytes(build_box_sr(res, ds)))
    back = pydicom.dcmread(path)
    assert back.StudyInstanceUID == ds.StudyInstanceUID
    uid, read = read_box_sr(back, str(path))
    assert uid == ds.SOPInstanceUID
    assert read == boxes
    empty = BoxPrediction(
        "x.dcm", 0, ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
        "det", 2, CLASSES, [], 480, 640,
    )  # fmt: skip
    with pytest.raises(InputError, match="no planar ROI") as info:
        read_box_sr(build_box_sr(empty, ds), "empty.dcm")
    assert "\n" not in str(info.value)


def test_plugin_is_registered_and_checks_its_outputs():
    task = get_task("detection")
    assert task_for_columns(["boxes"]) is task
    good = {
        "boxes": {"dtype": "DT_FLOAT", "shape": [-1, 100, 4]},
        "scores": {"dtype": "DT_FLOAT", "shape": [-1, 100]},
        "classes": {"dtype": "DT_INT32", "shape": [-1, 100]},
        "num_detections": {"dtype": "DT_INT32", "shape": [-1]},
        "probabilities": {"dtype": "DT_FLOAT", "shape": [-1, 100, 3]},
    }
    assert task.check_serving_outputs(good, (256, 256), CLASSES) is None
    assert "lacks outputs" in task.check_serving_outputs({"probabilities": {}}, None, CLASSES)
    assert task.classes_from_signature([-1, 256, 256, 3], [-1, 100, 3]) == 3
    assert task.classes_from_signature([-1, 100, 3, 1], [-1, 100, 3]) is None  # per pixel
    assert task.classes_from_signature([-1, 64, 64, 1], [-1, 3]) is None
    task.check_hyperparameters({"epochs": 1}, 256, CLASSES)
    with pytest.raises(ValueError, match="width >= 12"):
        task.check_hyperparameters({"width": 8}, 256, CLASSES)
    with pytest.raises(ValueError, match="multiples of 32"):
        task.check_hyperparameters({}, 250, CLASSES)
    assert task.thresholds({"min_map50": "0.7"}).min_map50 == 0.7
    with pytest.raises(InputError, match="label 'Cat'"):
        cell_to_model_grid('[{"label":"Cat","x0":0,"y0":0,"x1":1,"y1":1}]', "r", CLASSES, 1, (0, 0))


def test_tfma_combiner_maps_predictions_to_source_pixels_for_candidate_and_baseline():
    from types import SimpleNamespace

    from tensorflow_model_analysis.metrics import metric_types

    from medflow.components.tasks.detection.tfma_metrics import DetectionMetrics, _DetectionCombiner

    truth = '[{"label":"WBC","x0":100,"y0":50,"x1":200,"y1":150}]'
    served = {  # the truth on a grid scaled by 0.5 and padded (top 8, left 0)
        "boxes": np.array([[50.0, 33.0, 100.0, 83.0]] + [[0.0] * 4] * 99, np.float32),
        "scores": np.array([0.9] + [0.0] * 99, np.float32),
        "classes": np.array([1] + [0] * 99, np.int32),
        "num_detections": np.array([1], np.int32),
    }
    feats = {"resample_scale": np.array([0.5]), "resample_pad": np.array([8, 0])}
    label = np.array([truth])
    for name, prediction, labels in (
        ("", served, label),
        ("candidate", {"candidate": served, "baseline": {}}, {"candidate": label, "baseline": 0}),
    ):
        keys = [metric_types.MetricKey(name="map50"), metric_types.MetricKey(name="ap50_WBC")]
        combiner = _DetectionCombiner(keys, CLASSES, name)
        element = SimpleNamespace(prediction=prediction, features=feats, label=labels)
        acc = combiner.add_input(combiner.create_accumulator(), element)
        out = combiner.extract_output(combiner.merge_accumulators([acc]))
        assert out[keys[0]] == pytest.approx(1.0) and out[keys[1]] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="choose from"):
        DetectionMetrics(labels=CLASSES, values=["dice"])
