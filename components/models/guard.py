"""The out-of-distribution guard of a pushed model: a model of the installed task whose models
score how unusual an image is (its plug-in sets ``ood_guard = True`` and gives the guard
Evaluator's config, ``guard_eval_config()``: the false-alarm rate on eval), trained on the same
Transform output as the model it guards, calibrated on the eval split, and published beside it
as ``<model>-guard`` with the same version numbers.

The guard's Trainer writes its calibration into ``assets.extra/training.json`` (``guard``:
``threshold``, ``quantile``, ``false_alarm_rate``, ...); the Pusher copies it into the guarded
model's contract (``guard``), publishes the guard first and then the model under the same
version, so a model version never appears before its guard.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any

from medflow.core.contract import ModelContract
from medflow.core.errors import ConfigError
from medflow.core.tasks import all_tasks

GUARD_SUFFIX = "-guard"
TRAINING_INFO = os.path.join("assets.extra", "training.json")
# Calibration keys copied from the guard's training.json into the guarded model's contract.
CONTRACT_KEYS = ("threshold", "quantile", "false_alarm_rate", "eval_images")


def guard_task():
    """The installed task whose models are guards (first by name).

    Raises:
        ConfigError: none is installed.
    """
    task = next((t for t in all_tasks() if getattr(t, "ood_guard", False)), None)
    if task is None:
        raise ConfigError(
            "no installed task plug-in trains out-of-distribution guards (ood_guard); "
            "reinstall medflow (make setup) or run without --guard"
        )
    return task


def guard_name(model_name: str) -> str:
    """The TF Serving name of ``model_name``'s guard."""
    return f"{model_name}{GUARD_SUFFIX}"


def calibration(guard_dir: str) -> dict[str, Any]:
    """The guard's calibration (``training.json``'s ``guard``) of the SavedModel at ``guard_dir``.

    Raises:
        ConfigError: no calibration there (not a guard's export).
    """
    import tensorflow as tf

    path = os.path.join(guard_dir, TRAINING_INFO)
    info: dict[str, Any] = {}
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            info = json.load(f)
    found = info.get("guard") if isinstance(info, dict) else None
    if not isinstance(found, dict) or "threshold" not in found:
        raise ConfigError(
            f"{path}: no guard calibration (guard.threshold); the guard must come from the "
            f"{guard_task().name} Trainer"
        )
    check_pool(found.get("pool"), path)
    return found


def check_pool(pool: str | None, where: str) -> None:
    """Refuse a guard that trained on its calibration split (``pool=all``, pretraining).

    Raises:
        ConfigError: it did.
    """
    if pool == "all":
        raise ConfigError(
            f"{where}: pool=all trains on the eval split the guard's threshold is calibrated "
            "on; a guard trains on the train split alone (drop pool=all from --guard-hparam)"
        )


def contract_field(guard_dir: str, model_name: str) -> dict[str, Any]:
    """The guarded model's contract ``guard`` field."""
    found = calibration(guard_dir)
    return {
        "model_name": guard_name(model_name),
        **{k: found[k] for k in CONTRACT_KEYS if k in found},
    }


def guard_contract(
    contract: ModelContract, model_name: str, guard_dir: str, artifact_id: int | None
) -> ModelContract:
    """The guard's own contract, from the guarded model's (same input and expected input,
    the guard's task and training facts; lineage: this push and the guard's Model artifact)."""
    task = guard_task()
    lineage = {k: v for k, v in contract.lineage.items() if not k.endswith("_artifact_id")}
    if artifact_id:
        lineage["model_artifact_id"] = artifact_id
    return replace(
        contract,
        task=task.name,
        labels=tuple(task.contract_labels(contract.labels)),
        model_name=guard_name(model_name),
        training_data={"guards": model_name, "calibration": calibration(guard_dir)},
        metrics={},
        evaluation_uri="",
        lineage=lineage,
        guard={},
    )
