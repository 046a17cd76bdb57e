"""Localization labels from masks (``medflow labels boxes-from-masks``) on real HC18 and
Sunnybrook imports, and the top-1 box IoU summary."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from medflow.cli import main
from medflow.components.ingest.mask_boxes import boxes_from_masks, mask_box
from medflow.components.ingest.voc_import import parse_boxes
from medflow.components.tasks.detection.evaluation import localization_iou
from medflow.core.errors import InputError


def _rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_mask_box_is_the_foreground_bounding_box():
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 1
    mask[7, 4] = 2  # every class but background counts
    box = mask_box(mask, "head")
    assert (box.label, box.x0, box.y0, box.x1, box.y1) == ("head", 3, 2, 9, 8)
    assert mask_box(np.zeros((4, 4), np.uint8), "head") is None


def test_hc18_masks_become_one_head_box_each(shared_data, tmp_path, capsys):
    from medflow.components.ingest.hc18_import import import_hc18

    manifest = import_hc18(shared_data / "hc18", tmp_path / "hc18", limit=3)
    rows = _rows(manifest)
    empty = tmp_path / "hc18" / "masks" / "empty.png"
    Image.fromarray(np.zeros((540, 800), np.uint8)).save(empty)
    extra = [{**rows[0], "mask": "masks/empty.png"}, {**rows[1], "SOPInstanceUID": "1.2.3"}]
    with manifest.open("a", newline="") as handle:
        csv.DictWriter(handle, fieldnames=list(rows[0])).writerows(extra)
    out = tmp_path / "boxes.csv"
    code = main(["labels", "boxes-from-masks", str(tmp_path / "hc18" / "dicom"), "--labels",
                 str(manifest), "--label", "head", "--out", str(out)])  # fmt: skip
    said = capsys.readouterr().out
    assert code == 0 and "wrote 3 box(es)" in said and "1 empty_mask, 1 no_image" in said
    written = _rows(out)
    assert list(written[0])[:2] == ["SOPInstanceUID", "boxes"] and "mask" not in written[0]
    for row, src in zip(written, rows, strict=True):
        assert row["split"] == src["split"] and row["_mask"] == src["mask"]
        [box] = parse_boxes(row["boxes"], "boxes.csv", ("head",))
        ys, xs = np.nonzero(np.asarray(Image.open(tmp_path / "hc18" / src["mask"]).convert("L")))
        assert (box.x0, box.y0, box.x1, box.y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_sunnybrook_contours_become_one_lv_box_each(shared_data, tmp_path):
    from medflow.components.ingest.sunnybrook_import import import_sunnybrook

    manifest = import_sunnybrook(shared_data / "sunnybrook", tmp_path / "sb")
    report = boxes_from_masks(tmp_path / "sb" / "dicom", manifest, tmp_path / "b.csv", "lv")
    assert report.written == len(_rows(manifest)) == 96 and not report.left_out
    boxes = [json.loads(r["boxes"])[0] for r in _rows(tmp_path / "b.csv")]
    sides = [b["x1"] - b["x0"] for b in boxes]
    assert all(b["label"] == "lv" for b in boxes) and 10 < np.median(sides) < 80  # 256 px MRI


def test_bad_mask_manifests_are_one_line_errors(tmp_path):
    (tmp_path / "m.csv").write_text("SOPInstanceUID,label\n1.2,1\n")
    with pytest.raises(InputError, match=r"m.csv: no mask column; pass a mask manifest"):
        boxes_from_masks(tmp_path, tmp_path / "m.csv", tmp_path / "o.csv", "head")
    (tmp_path / "m.csv").write_text("SOPInstanceUID,mask\n1.2,a.png\n")
    with pytest.raises(InputError, match=r"no row gave a box \(\{'no_image': 1\}\)"):
        boxes_from_masks(tmp_path, tmp_path / "m.csv", tmp_path / "o.csv", "head")
    assert not (tmp_path / "o.csv").exists()


def test_localization_iou_takes_the_top_scoring_box():
    truth = [(np.array([[0, 0, 10, 10]]), np.array([0]))] * 3
    preds = [
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]]), np.array([0.9, 0.2]), np.array([0, 0])),
        (np.array([[50, 50, 60, 60], [0, 0, 10, 5]]), np.array([0.9, 0.2]), np.array([0, 0])),
        (np.zeros((0, 4)), np.zeros(0), np.zeros(0)),
    ]
    got = localization_iou(truth, preds)
    assert got["mean_iou"] == pytest.approx(1 / 3) and got["share_iou_50"] == pytest.approx(1 / 3)
    assert got["min_iou"] == 0 and got["images"] == 3 and got["std_iou"] > 0.4


def test_tfma_metric_reports_localization_iou_for_one_class():
    from types import SimpleNamespace

    from tensorflow_model_analysis.metrics import metric_types

    from medflow.components.tasks.detection.evaluation import (
        DetectionThresholds,
        build_detection_eval_config,
    )
    from medflow.components.tasks.detection.tfma_metrics import _DetectionCombiner, value_names

    assert value_names(["head"])[-2:] == ["mean_iou", "share_iou_50"]
    assert "mean_iou" not in value_names(["a", "b"])
    config = build_detection_eval_config(DetectionThresholds(), ["head"])
    assert "mean_iou" in str(config.metrics_specs)
    keys = [metric_types.MetricKey(name=n) for n in ("mean_iou", "share_iou_50")]
    combiner = _DetectionCombiner(keys, ["head"])
    acc = combiner.create_accumulator()
    feats = {"resample_scale": np.array([1.0]), "resample_pad": np.array([0, 0])}
    for x1 in (10.0, 20.0):  # IoU 1 and 0.5 with the true box [0, 0, 10, 10]
        served = {"boxes": np.array([[0.0, 0.0, x1, 10.0]], np.float32),
                  "scores": np.array([0.9], np.float32), "classes": np.array([0], np.int32),
                  "num_detections": np.array([1], np.int32)}  # fmt: skip
        label = np.array(['[{"label":"head","x0":0,"y0":0,"x1":10,"y1":10}]'])
        element = SimpleNamespace(prediction=served, features=feats, label=label)
        acc = combiner.add_input(acc, element)
    out = combiner.extract_output(acc)
    assert out[keys[0]] == pytest.approx(0.75) and out[keys[1]] == pytest.approx(1.0)
