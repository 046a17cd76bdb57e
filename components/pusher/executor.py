"""ContractPusher executor: TFX glue around :mod:`components.pusher.publish`.

Builds the :class:`~medflow.core.contract.ModelContract` from the pipeline's static fields,
the Trainer's ``training.json``, StatisticsGen and Evaluator outputs and the ML Metadata ids
of this execution, then publishes the model with it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from medflow.components.models.encoder_init import contract_lineage
from medflow.components.pusher import publish
from medflow.core.contract import ModelContract, image_input
from medflow.core.errors import ConfigError
from medflow.core.pixel_spec import PixelSpec
from medflow.core.tasks import DEFAULT_TASK

log = logging.getLogger(__name__)

TRAINING_INFO = os.path.join("assets.extra", "training.json")


def _serving_dir(model: types.Artifact) -> str:
    # Trainer writes the SavedModel under <model.uri>/Format-Serving.
    return os.path.join(model.uri, "Format-Serving")


def _is_blessed(blessing: types.Artifact) -> bool:
    return bool(blessing.get_int_custom_property("blessed"))


def _static_property(exec_properties: dict[str, Any]) -> dict[str, Any]:
    text = exec_properties.get("contract") or "{}"
    try:
        static = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"ContractPusher's contract property is not JSON: {exc}") from exc
    if not isinstance(static, dict):
        raise ConfigError(f"ContractPusher's contract property is not a JSON object: {text}")
    return static


def static_fields(static: dict[str, Any]) -> ModelContract:
    """The contract fields the pipeline knows (the ``contract`` exec property).

    Args:
        static: ``{"task", "labels", "intended_use", "pixel_spec"}``; ``preprocessing``
            (``{size, channels}``) stands in for a missing ``pixel_spec``.

    Raises:
        ConfigError: a pixel spec that :class:`PixelSpec` refuses.
    """
    prep = static.get("pixel_spec") or static.get("preprocessing") or {}
    try:
        spec = PixelSpec.from_dict(prep)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"ContractPusher's contract property: pixel spec {prep}: {exc}; fix the pipeline's "
            "contract"
        ) from exc
    return ModelContract(
        task=static.get("task", DEFAULT_TASK),
        labels=tuple(static.get("labels", ())),
        intended_use=static.get("intended_use", ""),
        pixel_spec=spec,
        inputs=(image_input(spec),),
    )


def _training_summary(model_dir: str) -> dict[str, Any]:
    import tensorflow as tf

    info_path = os.path.join(model_dir, TRAINING_INFO)
    if not tf.io.gfile.exists(info_path):
        return {}
    with tf.io.gfile.GFile(info_path) as f:
        info = json.load(f)
    return {
        "class_counts": info.get("train_class_counts", {}),
        "backbone": info.get("backbone"),
        "epochs_run": info.get("epochs_run"),
        "trust": info.get("trust") or {},
        "volume_spec": info.get("volume_spec") or {},  # 3D Trainers: the grid's VolumeSpec
        **contract_lineage(info),  # the pushed model whose encoder initialised the backbone
    }


def build_contract(
    static: dict[str, Any],
    model_dir: str,
    model_name: str,
    evaluation_uri: str | None,
    statistics_uri: str | None,
    lineage: dict[str, int | str] | None = None,
) -> ModelContract:
    """Contract fields known before publishing (version/signatures/hash come later).

    Args:
        static: the pipeline's static fields (see :func:`static_fields`).
        model_dir: the SavedModel (its ``assets.extra/training.json`` gives training facts).
        model_name: TF Serving model name.
        evaluation_uri: ModelEvaluation artifact (metrics), if any.
        statistics_uri: ExampleStatistics artifact (example count, input value range), if any.
        lineage: ML Metadata ids to record.
    """
    from medflow import __version__
    from medflow.components.evaluation_results import load_metrics, load_statistics_summary

    contract = static_fields(static)
    training = _training_summary(model_dir)
    trust = training.pop("trust", {})  # calibration, operating point, intervals (Trainer, on eval)
    volume_spec = training.pop("volume_spec", {})
    inputs = contract.inputs
    expected: dict[str, Any] = {}
    if statistics_uri:
        from medflow.components.models.expected_input import from_statistics

        expected = from_statistics(statistics_uri, "train")
        summary = load_statistics_summary(statistics_uri, "train")
        training["num_examples"] = summary["num_examples"]
        if "value_range" in summary:
            inputs = (image_input(contract.pixel_spec, summary["value_range"]),)
    metrics = {}
    if evaluation_uri:
        metrics = {"eval": load_metrics(evaluation_uri).get("overall", {})}
    if trust.get("intervals"):
        metrics["eval_intervals"] = trust["intervals"]
    return replace(
        contract,
        calibration=trust.get("calibration") or {},
        operating_point=trust.get("operating_point") or {},
        volume_spec=volume_spec,
        model_name=model_name,
        inputs=inputs,
        training_data=training,
        expected_input=expected,
        metrics=metrics,
        evaluation_uri=evaluation_uri or "",
        lineage=dict(lineage or {}),
        created_by=f"medflow {__version__}",
    )


def _artifact_id(artifact: types.Artifact | None) -> int | None:
    try:
        return int(artifact.id) if artifact is not None and artifact.id else None
    except Exception:  # noqa: BLE001 - lineage is best effort, never a reason not to push
        return None


def lineage_ids(
    context: base_executor.BaseExecutor.Context | None,
    artifacts: dict[str, types.Artifact | None],
) -> dict[str, int | str]:
    """ML Metadata ids of this execution and its artifacts, as far as they are known.

    Args:
        context: the executor's context (execution id, pipeline run id, pipeline name).
        artifacts: ``{"model": artifact, ...}``; recorded as ``<key>_artifact_id``.
    """
    ids: dict[str, int | str] = {}
    for key, artifact in artifacts.items():
        artifact_id = _artifact_id(artifact)
        if artifact_id:
            ids[f"{key}_artifact_id"] = artifact_id
    if context is None:
        return ids
    # TFX's launchers pass the MLMD execution id as the context's unique_id.
    execution = str(getattr(context, "_unique_id", "") or "")
    if execution.isdigit():
        ids["execution_id"] = int(execution)
    try:
        run_id = context.pipeline_run_id
        pipeline = context.pipeline_info.id if context.pipeline_info else ""
    except Exception:  # noqa: BLE001 - best effort
        run_id, pipeline = None, ""
    if run_id:
        ids["pipeline_run_id"] = str(run_id)
    if pipeline:
        ids["pipeline_name"] = str(pipeline)
    return ids


def _publish_guarded(model_dir, base_directory, model_name, contract, guard):
    """Publish the guard Trainer's model beside the model (components.models.guard)."""
    from medflow.components.models import guard as guards
    from medflow.components.pusher.guarded import publish_guarded

    guard_dir = _serving_dir(guard)
    contract = replace(contract, guard=guards.contract_field(guard_dir, model_name))
    guard_base = os.path.join(base_directory, guards.guard_name(model_name))
    own = guards.guard_contract(contract, model_name, guard_dir, _artifact_id(guard))
    return publish_guarded(
        model_dir, os.path.join(base_directory, model_name), contract, guard_dir, guard_base, own
    )


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
        lineage = lineage_ids(
            self._context,
            {
                "model": model,
                "model_blessing": blessing,
                "evaluation": evaluation[0] if evaluation else None,
                "statistics": statistics[0] if statistics else None,
            },
        )
        contract = build_contract(
            _static_property(exec_properties),
            model_dir,
            model_name,
            evaluation[0].uri if evaluation else None,
            statistics[0].uri if statistics else None,
            lineage,
        )
        guard = input_dict.get("guard_model") or []
        if guard:
            version, destination, new = _publish_guarded(
                model_dir, exec_properties["base_directory"], model_name, contract, guard[0]
            )
        elif exec_properties.get("require_guard"):
            raise ConfigError(
                f"not pushing {model_name}: it has no out-of-distribution guard and the "
                "pipeline requires one (--require-guard); train one with --guard"
            )
        else:
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
