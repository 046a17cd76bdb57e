"""Defaults that must not collide (issue 24, items 1 and 5)."""

from __future__ import annotations

from medflow.cli import build_parser
from medflow.core.tasks import task_names
from medflow.pipelines.config import PipelineConfig
from medflow.pipelines.local_runner import workdir_paths


def test_each_task_has_its_own_pipeline_and_model_name():
    """After the demo (classification), a segmentation run in the same work folder has its
    own pipeline (ML Metadata, artifacts) and model name, so its Evaluator never takes the
    pushed classifier as its baseline."""
    configs = {t: PipelineConfig(task=t, image_size=64) for t in task_names()}
    assert len({c.pipeline_name for c in configs.values()}) == len(configs)
    assert len({c.model_name for c in configs.values()}) == len(configs)
    paths = [workdir_paths(".medflow", c.pipeline_name) for c in configs.values()]
    assert (
        len({p["metadata"] for p in paths})
        == len({p["pipeline_root"] for p in paths})
        == len(configs)
    )
    assert configs["segmentation"].model_name == "medflow-segmenter"
    assert configs["classification"].model_name == "medflow-classifier"


def test_dashboard_and_serving_default_ports_differ():
    parser = build_parser()
    dashboard = parser.parse_args(["dashboard"])
    serve = parser.parse_args(["serve", "--model-base", "m"])
    assert serve.grpc_port == 8500 and serve.rest_port == 8501  # TF Serving's own defaults
    assert dashboard.port == 8502
    assert dashboard.port not in (serve.grpc_port, serve.rest_port)
