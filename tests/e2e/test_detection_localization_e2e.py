"""Localization through the whole pipeline: an HC18 subset (``medflow import-hc18``), one box
per image around the human head mask (``medflow labels boxes-from-masks``), then ``medflow
run --task detection`` with one class: ingestion (the boxes checked there), Transform,
CenterNet Trainer, the Evaluator's TFMA metric with the localization IoU (``mean_iou``,
``share_iou_50``) besides COCO AP, blessing and push. Few images and epochs: this checks the
path, not the quality (BENCHMARKS.md has the quality)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_hc18_head_localization_runs_through_the_detection_pipeline(shared_data, tmp_path):
    from medflow.components.ingest.hc18_import import import_hc18
    from medflow.components.ingest.mask_boxes import boxes_from_masks
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    masks = import_hc18(shared_data / "hc18", tmp_path / "hc18", limit=24)
    report = boxes_from_masks(tmp_path / "hc18" / "dicom", masks, tmp_path / "boxes.csv", "head")
    assert report.written == 24 and not report.left_out
    config = PipelineConfig(
        data_root=str(tmp_path / "hc18" / "dicom"),
        label_manifest=str(tmp_path / "boxes.csv"),
        task="detection",
        image_size=64,
        channels=1,
        labels=("head",),
        hyperparameters={"epochs": 2, "width": 12, "batch_size": 8},
        thresholds={"min_map50": 0.0},
        pipeline_name="hc18-loc",
        model_name="hc18-head",
    )
    summary = run_local(config, workdir=tmp_path / "work", progress=None)
    overall = summary["metrics"]["overall"]
    assert {"map50", "ap50_head", "mean_iou", "share_iou_50"} <= set(overall)
    assert 0 <= overall["mean_iou"] <= 1 and 0 <= overall["share_iou_50"] <= 1
    assert summary["ingest"]["written"] == 24
    assert summary["blessed"] and summary["pushed"]
    contract = json.loads((Path(summary["model_path"]) / "contract.json").read_text())
    assert contract["task"] == "detection" and contract["labels"] == ["head"]
