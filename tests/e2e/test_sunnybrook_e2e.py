"""The whole pipeline with the segmentation task on real Sunnybrook cardiac MRI: the original
DICOM files + LV contour files (filled at ingestion) -> ... -> U-Net Trainer -> TFMA Evaluator.

A short run (2 epochs at 64 px): it checks that the imported manifest (string ``phase`` and
float label columns beside the contour masks) passes every component and that the Evaluator
scores the held-out patient, not that the model is good (see BENCHMARKS.md for LV Dice).
"""

from __future__ import annotations

import pytest

from medflow.pipelines.pipeline import COMPONENT_IDS, RESOLVER_ID

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_sunnybrook_contours_through_every_component(shared_data, tmp_path):
    from medflow.components.ingest.sunnybrook_import import import_sunnybrook
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    manifest = import_sunnybrook(
        shared_data / "sunnybrook", tmp_path / "data", eval_patients=("SCD0000501",)
    )
    config = PipelineConfig(
        data_root=str(tmp_path / "data" / "dicom"),
        label_manifest=str(manifest),
        task="segmentation",
        image_size=64,
        hyperparameters={"epochs": 2, "width": 8, "depth": 3, "batch_size": 4},
        pipeline_name="sunnybrook-seg",
        model_name="sunnybrook",
    )
    summary = run_local(config, workdir=tmp_path / "work", progress=None)
    for name in COMPONENT_IDS:
        if name != RESOLVER_ID:
            assert summary["components"][name]["status"] == "executed", name
    overall = summary["metrics"]["overall"]
    assert overall["example_count"] == 22  # every frame of the eval patient SCD0000501
    assert 0 <= overall["iou"] <= overall["dice"] <= 1
    assert overall["hausdorff95_mm"] > 0
