"""Pipeline configuration: typed values, no import-time effects.

Constants here are the one place other layers (k8s manifests, Dockerfile, compile, serving)
read shared names from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from medflow.core.errors import ConfigError
from medflow.core.pixel_spec import PixelSpec
from medflow.core.tasks import DEFAULT_TASK, get_task

# Container image for pipeline steps (Dockerfile at the repo root builds it; k8s manifests
# and `medflow compile` reference this exact name and tag).
PIPELINE_IMAGE = "medflow/pipeline:0.1.0"
# TF Serving image used on Kubernetes (k8s/base).
SERVING_IMAGE = "tensorflow/serving:2.16.1"

DEFAULT_WORKDIR = ".medflow"

# Local ports: TF Serving's own gRPC and REST defaults for `medflow serve`, and the review
# dashboard's (`medflow dashboard`), which must not take TF Serving's REST port.
SERVING_GRPC_PORT = 8500
SERVING_REST_PORT = 8501
DASHBOARD_PORT = 8502

# Kubernetes storage shared by the pipeline steps, TF Serving and the dashboard
# (k8s/base/storage/pvcs.yaml). The compiled Kubeflow spec mounts the same claims.
ARTIFACTS_PVC = "medflow-pipeline-artifacts"
ARTIFACTS_MOUNT = "/artifacts"
MODELS_PVC = "medflow-models"
MODELS_MOUNT = "/models"
# Secret holding the de-identification key (k8s/make-secrets.sh), mounted as a file.
DEID_SECRET = "medflow-deid-key"
DEID_KEY_DIR = "/etc/medflow/deid"
DEID_KEY_FILE = f"{DEID_KEY_DIR}/deid.key"


INTENDED_USE = (
    "Research and clinical decision support only: a second reader that flags images for "
    "review. Not a diagnostic device; not validated outside the training population."
)
INPUT_FORMATS = ("dicom", "tfrecord")


@dataclass(frozen=True)
class PipelineConfig:
    """Everything a pipeline run needs besides where it runs; defaults live here only.

    Built once (by the CLI or a caller), validated on construction, and passed whole to the
    runners, :func:`medflow.pipelines.pipeline.create_pipeline` and the components' custom
    config.

    Attributes:
        data_root: DICOM folder or DICOMweb root URL (``dicom``), or a folder with
            ``train/`` and ``eval/`` TFRecords of the feature contract (``tfrecord``).
        label_manifest: label CSV for DICOM ingestion.
        input_format: ``dicom`` (DicomExampleGen) or ``tfrecord`` (ImportExampleGen).
        task: the task plug-in (:func:`medflow.core.tasks.task_names`).
        pipeline_name / model_name: empty: the task's defaults.
        splits: DicomExampleGen split spec, e.g. ``train=80,eval=20`` (by patient).
        ingest_workers: DicomExampleGen worker processes.
        beam_args: Beam pipeline arguments for every Beam-based component (DicomExampleGen,
            StatisticsGen, Transform, Evaluator), e.g. ``--runner=FlinkRunner``.
        dicomweb_query: with a DICOMweb ``data_root``: the QIDO-RS query as JSON.
        dicomweb_auth_file: PACS credentials file (JSON), if the PACS needs them.
        image_size: model input rows = cols.
        channels: 1 or 3.
        labels: class names, index = class id.
        hyperparameters: Trainer custom_config overrides (the task checks them).
        thresholds: blessing thresholds as NAME=VALUE pairs (the task parses them).
        schema_path: curated schema folder imported instead of inferring one.
        intended_use: copied into each pushed model's contract.
        enable_cache: reuse outputs of unchanged component executions.
        guard: also train an out-of-distribution guard on the same Transform output and push
            it beside the model (``<model>-guard``, same versions; components.models.guard).
        guard_hyperparameters: the guard Trainer's custom_config overrides (its task checks
            them), e.g. ``guard_quantile`` (default 0.99) or ``kind``.
        require_guard: the Pusher refuses to push a model without a guard.
    """

    data_root: str = ""
    label_manifest: str = ""
    input_format: str = "dicom"
    task: str = DEFAULT_TASK
    pipeline_name: str = ""
    model_name: str = ""
    splits: str = "train=80,eval=20"
    ingest_workers: int = 1
    beam_args: tuple[str, ...] = ()
    dicomweb_query: str = ""
    dicomweb_auth_file: str = ""
    image_size: int = 28
    channels: int = 1
    labels: tuple[str, ...] = ("0", "1")
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    thresholds: Mapping[str, Any] = field(default_factory=dict)
    schema_path: str = ""
    intended_use: str = INTENDED_USE
    enable_cache: bool = True
    guard: bool = False
    guard_hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    require_guard: bool = False

    def __post_init__(self) -> None:
        if self.input_format not in INPUT_FORMATS:
            raise ConfigError(f"input format {self.input_format!r}: choose one of {INPUT_FORMATS}")
        task = get_task(self.task)  # ConfigError naming the installed tasks
        if self.image_size < 1 or self.channels not in (1, 3):
            raise ConfigError(
                f"image size {self.image_size} / channels {self.channels}: need a size >= 1 "
                "and 1 or 3 channels"
            )
        if not self.labels:
            raise ConfigError("no class names: pass --class-names, e.g. normal,pneumonia")
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "beam_args", tuple(str(x) for x in self.beam_args))
        object.__setattr__(self, "hyperparameters", dict(self.hyperparameters))
        object.__setattr__(self, "thresholds", dict(self.thresholds))
        object.__setattr__(self, "pipeline_name", self.pipeline_name or task.default_pipeline_name)
        object.__setattr__(self, "model_name", self.model_name or task.default_model_name)
        try:  # fail here, not minutes later inside the Trainer or the Evaluator
            task.check_hyperparameters(self.hyperparameters, self.image_size, self.labels)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"hyperparameters: {exc}") from None
        task.thresholds(self.thresholds)
        self._check_guard()

    def _check_guard(self) -> None:
        object.__setattr__(self, "guard_hyperparameters", dict(self.guard_hyperparameters))
        if self.require_guard and not self.guard:
            raise ConfigError("--require-guard: the model would have no guard; add --guard")
        if not self.guard:
            return
        from medflow.components.models.guard import check_pool, guard_task

        try:
            guard_task().check_hyperparameters(self.guard_config(), self.image_size, ())
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"guard hyperparameters: {exc}") from None
        check_pool(self.guard_hyperparameters.get("pool"), "guard hyperparameters")

    def replace(self, **changes: Any) -> PipelineConfig:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def task_plugin(self):
        """The :class:`medflow.core.tasks.Task` of :attr:`task`."""
        return get_task(self.task)

    def pixel_spec(self) -> PixelSpec:
        """The model input the pipeline ingests, trains and serves with."""
        return PixelSpec(size=(self.image_size, self.image_size), channels=self.channels)

    def transform_config(self) -> dict[str, Any]:
        """The Transform's ``custom_config``."""
        return {"image_size": self.image_size, "channels": self.channels}

    def trainer_config(self) -> dict[str, Any]:
        """The Trainer's ``custom_config``: the input shape, labels and hyperparameters."""
        return {**self.transform_config(), "labels": list(self.labels), **self.hyperparameters}

    def guard_config(self) -> dict[str, Any]:
        """The guard Trainer's ``custom_config``: the input shape and its hyperparameters."""
        return {**self.transform_config(), **self.guard_hyperparameters}

    def blessing_thresholds(self):
        """The task's blessing thresholds from :attr:`thresholds`."""
        return self.task_plugin.thresholds(self.thresholds)

    def contract(self) -> dict[str, Any]:
        """The static fields of each pushed model's contract."""
        return {
            "task": self.task,
            "labels": self.task_plugin.contract_labels(self.labels),
            "intended_use": self.intended_use,
            "pixel_spec": self.pixel_spec().to_dict(),
            "preprocessing": {
                "size": [self.image_size, self.image_size],
                "channels": self.channels,
            },
        }
