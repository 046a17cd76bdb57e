"""The pipeline's fixed-cost work (issue 27) replaced no component: the compiled Kubeflow
spec has the same tasks, executors and dependencies as before it, and the Transform and
Trainer name user code that imports."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import yaml

from medflow.core.tasks import get_task, task_names
from medflow.pipelines.local_runner import LOCAL_BEAM_ARGS, local_beam_args
from medflow.pipelines.pipeline import importable_name, user_code

# Task -> (executor class, upstream tasks), from the spec compiled at commit b6a5ae5 (before
# issue 27's changes).
BEFORE = {
    "Evaluator": (
        "tfx.components.evaluator.executor.Executor",
        ["ExampleGen", "Trainer", "latest_blessed_model_resolver-model-resolver"],
    ),
    "ExampleGen": ("medflow.components.dicom_example_gen.executor.Executor", []),
    "ExampleValidator": (
        "tfx.components.example_validator.executor.Executor",
        ["SchemaGen", "StatisticsGen"],
    ),
    "Pusher": (
        "medflow.components.pusher.executor.Executor",
        ["Evaluator", "StatisticsGen", "Trainer"],
    ),
    "SchemaGen": ("tfx.components.schema_gen.executor.Executor", ["StatisticsGen"]),
    "StatisticsGen": ("tfx.components.statistics_gen.executor.Executor", ["ExampleGen"]),
    "Trainer": ("tfx.components.trainer.executor.GenericExecutor", ["SchemaGen", "Transform"]),
    "Transform": ("tfx.components.transform.executor.Executor", ["ExampleGen", "SchemaGen"]),
    "latest_blessed_model_resolver-model-blessing-resolver": ("resolver", []),
    "latest_blessed_model_resolver-model-resolver": ("resolver", []),
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    from medflow.pipelines.kubeflow_runner import compile_pipeline

    root = tmp_path_factory.mktemp("kfp")
    path = compile_pipeline(root / "spec.yaml", pipeline_root=str(root / "root"))
    return next(yaml.safe_load_all(path.read_text()))


def test_compiled_spec_has_the_same_components_as_before(spec):
    tasks = spec["root"]["dag"]["tasks"]
    executors = spec["deploymentSpec"]["executors"]
    found = {}
    for name, task in tasks.items():
        label = spec["components"][task["componentRef"]["name"]].get("executorLabel")
        executor = executors.get(label, {})
        args = executor.get("container", {}).get("args", [])
        if "--executor_class_path" in args:
            kind = args[args.index("--executor_class_path") + 1]
        else:
            kind = sorted(executor)[0]
        found[name] = (kind, sorted(task.get("dependentTasks", [])))
    assert found == BEFORE


def _constant(spec, task: str, parameter: str):
    parameters = spec["root"]["dag"]["tasks"][task]["inputs"]["parameters"]
    return parameters[parameter]["runtimeValue"]["constant"]


def test_transform_and_trainer_name_importable_functions(spec):
    for task, key in (("Transform", "preprocessing_fn"), ("Trainer", "run_fn")):
        module, _, fn = _constant(spec, task, key).rpartition(".")
        assert callable(getattr(importlib.import_module(module), fn)), (task, key)
    # Nothing reads the Transform's pre/post-transform statistics.
    assert _constant(spec, "Transform", "disable_statistics") == 1


@pytest.mark.parametrize("task", task_names())
def test_every_task_module_is_imported_not_packaged(task):
    for path, fn in zip(get_task(task).module_files(), ("preprocessing_fn", "run_fn"), strict=True):
        name = importable_name(path)
        assert name and Path(importlib.import_module(name).__file__).resolve() == Path(path)
        assert user_code(path, fn) == {fn: f"{name}.{fn}"}


def test_a_module_file_outside_the_package_stays_a_module_file(tmp_path):
    module = tmp_path / "my_trainer.py"
    module.write_text("def run_fn(fn_args):\n    pass\n")
    assert user_code(str(module), "run_fn") == {"module_file": str(module)}


def test_beam_runs_in_process_unless_the_input_is_large(tmp_path, monkeypatch):
    (tmp_path / "a.dcm").write_bytes(b"")
    (tmp_path / "b.dcm").write_bytes(b"")
    assert local_beam_args(str(tmp_path), cpus=16) == LOCAL_BEAM_ARGS == ()
    monkeypatch.setattr("medflow.pipelines.local_runner.MULTI_PROCESS_MIN_FILES", 2)
    assert local_beam_args(str(tmp_path), cpus=16) == (
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=8",
    )
    assert local_beam_args(str(tmp_path), cpus=2) == ()  # too few cores to gain
    assert local_beam_args("https://pacs.example/dicom-web", cpus=16) == ()
