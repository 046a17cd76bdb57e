"""Compile the pipeline for Kubeflow Pipelines (KubeflowV2DagRunner) and submit it.

The compiled spec runs every step in :data:`pipelines.config.PIPELINE_IMAGE` with the
artifacts and models claims of ``k8s/base/storage`` mounted at the same paths the
manifests use; the data folder and label manifest are runtime parameters, so one
compiled spec serves every data drop. The Trainer alone may request GPUs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medflow.core.errors import ConfigError, ServiceError
from medflow.core.files import atomic_write
from medflow.pipelines import config
from medflow.pipelines.config import PipelineConfig

# Runtime parameters of the compiled pipeline (name -> default).
RUNTIME_PARAMETERS = {
    "data_root": f"{config.ARTIFACTS_MOUNT}/data/dicom",
    "label_manifest": f"{config.ARTIFACTS_MOUNT}/data/labels.csv",
}


def _trainer_resources(gpu_count: int, gpu_type: str, cpu: float, memory_gb: float):
    from kfp.pipeline_spec import pipeline_spec_pb2 as pipeline_pb2

    spec = pipeline_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec
    resources = spec(cpu_limit=cpu, memory_limit=memory_gb)
    if gpu_count:
        resources.accelerator.type = gpu_type
        resources.accelerator.count = gpu_count
    return resources


@dataclass(frozen=True)
class KubeflowResources:
    """What the Trainer step asks the cluster for (the other steps take the defaults)."""

    gpu_count: int = 0
    gpu_type: str = "NVIDIA_TESLA_T4"
    trainer_cpu: float = 4
    trainer_memory_gb: float = 16


def build_kubeflow_pipeline(
    pipeline_config: PipelineConfig,
    *,
    pipeline_root: str = "",
    resources: KubeflowResources = KubeflowResources(),
):
    """The pipeline as it runs on the cluster (paths inside the pipeline image); the data
    folder and label manifest are runtime parameters."""
    from tfx import v1 as tfx

    from medflow.pipelines.pipeline import create_pipeline

    params = {
        name: tfx.dsl.experimental.RuntimeParameter(name=name, ptype=str, default=default)
        for name, default in RUNTIME_PARAMETERS.items()
    }
    name = pipeline_config.pipeline_name
    pipeline = create_pipeline(
        pipeline_config,
        pipeline_root=pipeline_root or f"{config.ARTIFACTS_MOUNT}/pipelines/{name}",
        data_root=params["data_root"],
        label_manifest=params["label_manifest"],
        serving_model_dir=config.MODELS_MOUNT,
        deid_key_file=config.DEID_KEY_FILE,
        beam_pipeline_args=pipeline_config.beam_args,
    )
    for component in pipeline.components:
        if component.id == "Trainer":
            component.with_platform_config(
                _trainer_resources(
                    resources.gpu_count,
                    resources.gpu_type,
                    resources.trainer_cpu,
                    resources.trainer_memory_gb,
                )
            )
    return pipeline


def compile_pipeline(
    output: str | os.PathLike[str],
    pipeline_config: PipelineConfig | None = None,
    *,
    image: str = config.PIPELINE_IMAGE,
    pipeline_root: str = "",
    resources: KubeflowResources = KubeflowResources(),
) -> Path:
    """Write the Kubeflow pipeline spec; ``.yaml`` = bare PipelineSpec (what ``kfp.Client``
    uploads), ``.json`` = a PipelineJob wrapper. Returns the output path.

    Args:
        output: spec file to write.
        pipeline_config: what the pipeline runs (default: ``PipelineConfig()``).
        image: container image of every step.
        pipeline_root: artifact root on the cluster (default under the artifacts claim).
        resources: what the Trainer step requests.
    """
    from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner as v2

    output = Path(output)
    if output.suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"{output}: the spec file must end in .yaml or .json")
    output.parent.mkdir(parents=True, exist_ok=True)
    pipeline = build_kubeflow_pipeline(
        pipeline_config or PipelineConfig(), pipeline_root=pipeline_root, resources=resources
    )
    runner = v2.KubeflowV2DagRunner(
        config=v2.KubeflowV2DagRunnerConfig(default_image=image, use_pipeline_spec_2_1=True),
        output_dir=str(output.parent),
        output_filename=output.name,
    )
    runner.run(pipeline, write_out=True)
    finish_spec(output)
    return output


def _container_executors(spec: dict[str, Any]) -> list[str]:
    executors = spec.get("deploymentSpec", {}).get("executors", {})
    return sorted(label for label, body in executors.items() if "container" in body)


def finish_spec(path: Path) -> None:
    """Mount the artifacts and models claims and the de-identification key Secret into
    every container executor (KFP's kubernetes platform spec, the format the
    ``kfp-kubernetes`` extension writes), and give the runtime parameters their defaults."""
    import yaml

    text = path.read_text()
    is_json = path.suffix == ".json"
    doc = json.loads(text) if is_json else yaml.safe_load(text)
    spec = doc.get("pipelineSpec", doc)
    # TFX keeps runtime-parameter defaults in the PipelineJob's runtimeConfig, which the
    # bare YAML spec drops: put them on the root inputs, where kfp.Client reads them.
    params = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    for name, default in RUNTIME_PARAMETERS.items():
        if name in params:
            params[name]["defaultValue"] = default
    mounts = [
        {"constant": config.ARTIFACTS_PVC, "mountPath": config.ARTIFACTS_MOUNT},
        {"constant": config.MODELS_PVC, "mountPath": config.MODELS_MOUNT},
    ]
    executors = {
        label: {
            "pvcMount": [dict(m) for m in mounts],
            "secretAsVolume": [
                {"secretName": config.DEID_SECRET, "mountPath": config.DEID_KEY_DIR}
            ],
        }
        for label in _container_executors(spec)
    }
    platform = {"platforms": {"kubernetes": {"deploymentSpec": {"executors": executors}}}}
    if is_json:
        doc["platformSpec"] = platform
        out = json.dumps(doc, indent=2, sort_keys=True)
    else:
        # A KFP package with a platform spec is a two-document YAML stream.
        out = yaml.safe_dump(spec, sort_keys=True) + "---\n" + yaml.safe_dump(platform)
    atomic_write(path, out)


def submit(
    spec_path: str | os.PathLike[str],
    *,
    host: str,
    token: str | None = None,
    experiment: str = "medflow",
    run_name: str | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Submit a compiled spec to a Kubeflow Pipelines endpoint; returns run id and URL."""
    import kfp

    spec_path = Path(spec_path)
    if not spec_path.is_file():
        raise ConfigError(f"pipeline spec {spec_path} not found; run `medflow compile` first")
    unknown = set(parameters or {}) - set(RUNTIME_PARAMETERS)
    if unknown:
        raise ConfigError(
            f"unknown pipeline parameter(s) {sorted(unknown)}; known: {sorted(RUNTIME_PARAMETERS)}"
        )
    try:
        client = kfp.Client(host=host, existing_token=token)
        result = client.create_run_from_pipeline_package(
            str(spec_path),
            arguments=dict(parameters or {}),
            run_name=run_name,
            experiment_name=experiment,
        )
    except Exception as exc:  # kfp raises urllib3/ApiException/ValueError variants
        raise ServiceError(
            f"Kubeflow Pipelines at {host} refused or is unreachable: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    run_id = result.run_id
    return {"run_id": run_id, "url": f"{host.rstrip('/')}/#/runs/details/{run_id}"}
