"""Compile the pipeline for Kubeflow (KubeflowV2DagRunner) and check the spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medflow.pipelines import config
from medflow.pipelines.config import PipelineConfig
from medflow.pipelines.pipeline import COMPONENT_IDS, RESOLVER_ID

REPO = Path(__file__).resolve().parents[2]
ORDER = [c for c in COMPONENT_IDS if c != RESOLVER_ID]


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from medflow.pipelines.kubeflow_runner import KubeflowResources, compile_pipeline

    root = tmp_path_factory.mktemp("kfp")
    path = compile_pipeline(
        root / "spec.yaml",
        pipeline_root=str(root / "root"),
        resources=KubeflowResources(gpu_count=2, gpu_type="NVIDIA_TESLA_A100"),
    )
    docs = list(yaml.safe_load_all(path.read_text()))
    return {"pipeline": docs[0], "platform": docs[1], "path": path}


def _upstream_closure(tasks: dict, name: str) -> set[str]:
    seen, todo = set(), [name]
    while todo:
        for dep in tasks[todo.pop()].get("dependentTasks", []):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_all_components_in_order(spec):
    tasks = spec["pipeline"]["root"]["dag"]["tasks"]
    assert set(ORDER) <= set(tasks)
    for before, after in zip(ORDER, ORDER[1:], strict=False):
        if before == "ExampleValidator":  # a leaf: nothing depends on it
            assert "SchemaGen" in _upstream_closure(tasks, before)
            continue
        assert before in _upstream_closure(tasks, after), (before, after)


def test_image_and_gpu_on_trainer_only(spec):
    executors = spec["pipeline"]["deploymentSpec"]["executors"]
    containers = {k: v["container"] for k, v in executors.items() if "container" in v}
    assert len(containers) == len(ORDER)
    for label, container in containers.items():
        assert container["image"] == config.PIPELINE_IMAGE, label
        accelerator = container.get("resources", {}).get("accelerator")
        if label.startswith("Trainer"):
            assert accelerator == {"count": "2", "type": "NVIDIA_TESLA_A100"}  # conftest compile
        else:
            assert accelerator is None, label


def test_runtime_parameters(spec):
    params = spec["pipeline"]["root"]["inputDefinitions"]["parameters"]
    assert set(params) == {"data_root", "label_manifest"}
    assert params["data_root"]["defaultValue"].startswith(config.ARTIFACTS_MOUNT)


def test_loads_as_kfp_pipeline_spec(spec):
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    parsed = json_format.ParseDict(spec["pipeline"], pipeline_spec_pb2.PipelineSpec())
    assert parsed.pipeline_info.name == PipelineConfig().pipeline_name
    assert "Trainer" in parsed.root.dag.tasks


def test_volumes_match_the_k8s_manifests(spec):
    claims = {
        d["metadata"]["name"]
        for d in yaml.safe_load_all((REPO / "k8s/base/storage/pvcs.yaml").read_text())
        if d
    }
    serving = (REPO / "k8s/base/serving/deployment.yaml").read_text()
    executors = spec["platform"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert executors, "no executor mounts the shared claims"
    for mounts in executors.values():
        by_claim = {m["constant"]: m["mountPath"] for m in mounts["pvcMount"]}
        assert set(by_claim) <= claims
        assert by_claim[config.MODELS_PVC] == config.MODELS_MOUNT
        [secret] = mounts["secretAsVolume"]
        assert secret["secretName"] == config.DEID_SECRET
        assert config.DEID_KEY_FILE.startswith(secret["mountPath"] + "/")
    # make-secrets.sh creates that Secret with a file named as the pipeline expects.
    script = (REPO / "k8s/make-secrets.sh").read_text()
    assert config.DEID_SECRET in script and "deid/deid.key" in script
    # TF Serving reads the models claim at the path the Pusher writes to.
    assert f"mountPath: {config.MODELS_MOUNT}" in serving
    assert f"claimName: {config.MODELS_PVC}" in serving


def test_segmentation_task_compiles_with_its_trainer_and_metrics(tmp_path):
    from medflow.pipelines.kubeflow_runner import compile_pipeline

    path = compile_pipeline(
        tmp_path / "seg.yaml",
        PipelineConfig(task="segmentation", image_size=128),
        pipeline_root=str(tmp_path / "root"),
    )
    text = path.read_text()
    spec = next(yaml.safe_load_all(text))
    assert spec["pipelineInfo"]["name"] == "medflow-segmentation"  # the task's default name
    trainer = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
    run_fn = trainer["run_fn"]["runtimeValue"]["constant"]
    # The segmentation trainer, imported from the installed package (no module wheel).
    assert run_fn == "medflow.components.tasks.segmentation.trainer.run_fn"
    assert "SegmentationMetrics" in text
    assert "medflow-segmenter" in text and "medflow-classifier" not in text


def test_beam_args_reach_every_beam_component(tmp_path):
    """`medflow compile --beam-arg ...` gives every Beam-based component (DicomExampleGen,
    StatisticsGen, Transform, Evaluator) the same Beam arguments in the Kubeflow spec."""
    from medflow.cli import main

    beam = ["--runner=FlinkRunner", "--flink_master=flink-jobmanager:8081", "--parallelism=8"]
    out = tmp_path / "spec.yaml"
    assert main(["compile", "--out", str(out), *(f"--beam-arg={a}" for a in beam)]) == 0
    executors = yaml.safe_load_all(out.read_text()).__next__()["deploymentSpec"]["executors"]
    args = {k: v["container"]["args"] for k, v in executors.items() if "container" in v}
    for name in (
        "ExampleGen",
        "StatisticsGen",
        "Transform",
        "Evaluator",
    ):  # DicomExampleGen: ExampleGen
        (label,) = [label for label in args if label.startswith(name)]
        assert args[label][-len(beam) :] == beam, (label, args[label])
