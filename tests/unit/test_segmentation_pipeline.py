"""The segmentation task's wiring: Trainer module, Evaluator config, Pusher contract check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medflow.components.pusher.publish import ContractMismatch, check_contract
from medflow.components.tasks.segmentation.evaluation import (
    SegmentationThresholds,
    build_segmentation_eval_config,
)
from medflow.core.errors import ConfigError
from medflow.core.tasks import get_task
from medflow.pipelines.config import PipelineConfig


def _contract(outputs: dict) -> dict:
    return {
        "task": "segmentation",
        "preprocessing": {"size": [64, 64], "channels": 1},
        "signatures": {
            "serving_default": {
                "inputs": {"image": {"dtype": "float32", "shape": [-1, 64, 64, 1]}},
                "outputs": outputs,
            }
        },
    }


def test_task_chooses_the_trainer_module():
    transform, trainer = get_task("segmentation").module_files()
    assert Path(trainer).parent.name == "segmentation" and Path(trainer).is_file()
    assert Path(get_task("classification").module_files()[1]).parent.name == "classification"
    assert Path(transform).name == "preprocessing.py"
    with pytest.raises(ConfigError, match="tractography"):
        get_task("tractography")
    with pytest.raises(ConfigError, match="task 'tractography' is not installed"):
        PipelineConfig(task="tractography")


def test_eval_config_computes_dice_iou_hd95_in_tfma_and_blesses_on_dice():
    from medflow.components.tasks.segmentation.tfma_metrics import SegmentationMetrics

    config = build_segmentation_eval_config(SegmentationThresholds(min_dice=0.9))
    (spec,) = config.metrics_specs
    from tensorflow_model_analysis.metrics import metric_specs

    metric = next(m for m in spec.metrics if m.class_name == "SegmentationMetrics")
    assert metric.module == SegmentationMetrics.__module__
    assert json.loads(metric.config)["spacing_feature"] == "pixel_spacing"
    # The blessing threshold is keyed exactly as TFMA computes the metric (a mismatch
    # makes the Evaluator refuse every model with "Metric not found").
    thresholds = metric_specs.metric_thresholds_from_metrics_specs(
        config.metrics_specs, eval_config=config
    )
    computed = {
        key
        for computation in metric_specs.to_computations(config.metrics_specs, eval_config=config)
        for key in computation.keys
    }
    value_keys = [key for key in thresholds if not key.is_diff]
    assert [key.name for key in value_keys] == ["dice"]
    assert set(value_keys) <= computed
    [(_, bound)] = thresholds[value_keys[0]]
    assert bound.lower_bound.value == 0.9
    assert {"iou", "hausdorff95_mm"} <= {key.name for key in computed}
    assert config.model_specs[0].label_key == "mask"
    assert config.model_specs[0].prediction_key == "probabilities"
    keys = SegmentationMetrics().computations(model_names=[""], output_names=[""])[0].keys
    assert [k.name for k in keys] == ["dice", "iou", "hausdorff95_mm"]


def test_contract_check_for_per_pixel_outputs():
    good = {
        "probabilities": {"dtype": "float32", "shape": [-1, 64, 64]},
        "mask": {"dtype": "uint8", "shape": [-1, 64, 64]},
    }
    check_contract(_contract(good))
    with pytest.raises(ContractMismatch, match="lacks outputs \\['mask'\\]"):
        check_contract(_contract({"probabilities": good["probabilities"]}))
    wrong = {**good, "probabilities": {"dtype": "float32", "shape": [-1, 2]}}
    with pytest.raises(ContractMismatch, match="input grid"):
        check_contract(_contract(wrong))
    with pytest.raises(ConfigError, match="min_dice"):
        SegmentationThresholds(min_dice=1.5)
