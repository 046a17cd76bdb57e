"""ContractPusher executor: TFX glue around :mod:`components.pusher.publish`."""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from medflow.components.pusher import publish

log = logging.getLogger(__name__)

TRAINING_INFO = os.path.join("assets.extra", "training.json")


def _serving_dir(model: types.Artifact) -> str:
    # Trainer writes the SavedModel under <model.uri>/Format-Serving.
    return os.path.join(model.uri, "Format-Serving")


def _is_blessed(blessing: types.Artifact) -> bool:
    return bool(blessing.get_int_custom_property("blessed"))


def build_contract(
    static: dict[str, Any],
    model_dir: str,
    model_name: str,
    evaluation_uri: str | None,
    statistics_uri: str | None,
) -> dict[str, Any]:
    """Contract fields known before publishing (version/signatures/hash come later)."""
    import tensorflow as tf

    from medflow import __version__
    from medflow.components.evaluation_results import load_metrics, load_statistics_summary

    contract: dict[str, Any] = {
        "model_name": model_name,
        "task": static.get("task", "classification"),
        "labels": list(static.get("labels", [])),
        "intended_use": static.get("intended_use", ""),
        "preprocessing": static.get("preprocessing", {}),
        "created_by": f"medflow {__version__}",
    }
    training: dict[str, Any] = {}
    info_path = os.path.join(model_dir, TRAINING_INFO)
    if tf.io.gfile.exists(info_path):
        with tf.io.gfile.GFile(info_path) as f:
            info = json.load(f)
        training["class_counts"] = info.get("train_class_counts", {})
        training["backbone"] = info.get("backbone")
        training["epochs_run"] = info.get("epochs_run")
    if statistics_uri:
        summary = load_statistics_summary(statistics_uri, "train")
        training["num_examples"] = summary["num_examples"]
        if "value_range" in summary:
            contract["value_range"] = summary["value_range"]
    contract["training_data"] = training
    if evaluation_uri:
        metrics = load_metrics(evaluation_uri)
        contract["metrics"] = {"eval": metrics.get("overall", {})}
    return contract


class Executor(base_executor.BaseExecutor):
    """Pushes the model if blessed; records pushed / pushed_version / pushed_destination."""

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict["model"])
        blessing = artifact_utils.get_single_instance(input_dict["model_blessing"])
        pushed = artifact_utils.get_single_instance(output_dict["pushed_model"])
        if not _is_blessed(blessing):
            log.info("model %s is not blessed: not pushing", model.uri)
            pushed.set_int_custom_property("pushed", 0)
            return
        model_name = exec_properties["model_name"]
        model_base = os.path.join(exec_properties["base_directory"], model_name)
        evaluation = input_dict.get("evaluation") or []
        statistics = input_dict.get("statistics") or []
        model_dir = _serving_dir(model)
        contract = build_contract(
            json.loads(exec_properties.get("contract") or "{}"),
            model_dir,
            model_name,
            evaluation[0].uri if evaluation else None,
            statistics[0].uri if statistics else None,
        )
        version, destination, new = publish.publish(model_dir, model_base, contract)
        if new:
            log.info("pushed model version %s to %s", version, destination)
        else:
            log.info(
                "model already published as version %s (%s): not pushed again", version, destination
            )
        pushed.set_int_custom_property("pushed", int(new))
        pushed.set_string_custom_property("pushed_destination", destination)
        pushed.set_int_custom_property("pushed_version", int(version))
        pushed.set_string_custom_property("model_sha256", publish.content_sha256(model_dir))
