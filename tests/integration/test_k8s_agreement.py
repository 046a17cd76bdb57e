"""The Kubernetes manifests, the compiled pipeline and the embedded server agree.

TF Serving on the cluster reads ``models.config`` / ``batching.config`` from the ConfigMap
kustomize generates; ``medflow serve`` must parse the very same files, and the model base
path must be where the pipeline's Pusher writes (``<MODELS_MOUNT>/<model_name>/<version>``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medflow.pipelines import config
from medflow.serving.config import (
    parse_batching_parameters,
    parse_grpc_channel_arguments,
    parse_model_config,
)
from tests.support import kfp_manifests as km


@pytest.fixture(scope="module")
def base_objects() -> list[dict]:
    km.kustomize_or_skip()
    return km.render(km.REPO / "k8s" / "base")


def _serving_configmap(objects: list[dict]) -> dict:
    [cm] = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("medflow-serving-config")
    ]
    return cm


def test_configmap_models_config_is_what_the_embedded_server_reads(base_objects):
    data = _serving_configmap(base_objects)["data"]
    models = parse_model_config(data["models.config"], source="ConfigMap", base_dir=Path("/"))
    default_model = config.PipelineConfig().model_name  # the default task's model name
    assert [m.name for m in models] == [default_model]
    assert models[0].base_path == Path(config.MODELS_MOUNT) / default_model
    batching = parse_batching_parameters(data["batching.config"], source="ConfigMap")
    assert batching.max_batch_size >= 1


def test_tf_serving_reads_the_configmap_and_the_models_claim(base_objects):
    [deploy] = [
        o for o in base_objects if o["kind"] == "Deployment" and "serving" in o["metadata"]["name"]
    ]
    pod = deploy["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["image"].startswith("tensorflow/serving")]
    assert container["image"] == config.SERVING_IMAGE
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_mount = next(
        mounts[name]
        for name, v in volumes.items()
        if v.get("configMap", {}).get("name", "").startswith("medflow-serving-config")
    )
    models_mount = next(
        mounts[name]
        for name, v in volumes.items()
        if v.get("persistentVolumeClaim", {}).get("claimName") == config.MODELS_PVC
    )
    assert models_mount == config.MODELS_MOUNT
    assert f"--model_config_file={config_mount}/models.config" in container["args"]
    assert f"--batching_parameters_file={config_mount}/batching.config" in container["args"]


def test_tf_serving_closes_old_connections_so_new_replicas_get_traffic(base_objects):
    # The HPA adds replicas behind a Service that balances per connection; the age limit is
    # what moves long-lived gRPC clients onto them. The value must also be one `medflow
    # serve --grpc-channel-arguments` takes (tests/integration/test_serving_workers.py).
    [deploy] = [
        o for o in base_objects if o["kind"] == "Deployment" and "serving" in o["metadata"]["name"]
    ]
    pod = deploy["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["image"].startswith("tensorflow/serving")]
    [flag] = [a for a in container["args"] if a.startswith("--grpc_channel_arguments=")]
    arguments = dict(parse_grpc_channel_arguments(flag.partition("=")[2]))
    assert 0 < arguments["grpc.max_connection_age_ms"] <= 300_000
    assert arguments["grpc.max_connection_age_grace_ms"] > 0
    assert any(o["kind"] == "HorizontalPodAutoscaler" for o in base_objects)


def test_medflow_model_server_takes_the_deployments_tf_serving_args_unchanged(
    base_objects, tmp_path
):
    # The same args start the real tensorflow_model_server on the cluster and
    # medflow-model-server on a laptop (issue 22).
    from medflow.serving.tfs_flags import parse_flags, plan_from_flags

    [deploy] = [
        o for o in base_objects if o["kind"] == "Deployment" and "serving" in o["metadata"]["name"]
    ]
    pod = deploy["spec"]["template"]["spec"]
    [container] = [c for c in pod["containers"] if c["image"].startswith("tensorflow/serving")]
    args = container["args"]
    values = parse_flags(args)  # every flag known and honoured, as written
    # The files come from the ConfigMap mounted at the config folder: lay it out here.
    [config_arg] = [a for a in args if a.startswith("--model_config_file=")]
    mount = Path(config_arg.partition("=")[2]).parent
    for name, text in _serving_configmap(base_objects)["data"].items():
        (tmp_path / name).write_text(text)
    local = {
        k: str(tmp_path / Path(v).name) if isinstance(v, str) and v.startswith(f"{mount}/") else v
        for k, v in values.items()
    }
    plan = plan_from_flags(local)
    opts = plan.options
    assert (opts["grpc_port"], opts["rest_port"]) == (8500, 8501)
    assert opts["models_poll_seconds"] == values["model_config_file_poll_wait_seconds"] > 0
    assert opts["poll_seconds"] == values["file_system_poll_wait_seconds"] > 0
    assert opts["batching"] is not None
    assert opts["metrics_path"] == "/monitoring/prometheus/metrics"  # the liveness probe's
    assert dict(opts["grpc_channel_arguments"])["grpc.max_connection_age_ms"] == 60000
    assert [m.name for m in plan.models] == [config.PipelineConfig().model_name]
