"""ModelContract: JSON round trip, schema errors, migration of schema 0, and the Pusher."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from medflow.core.contract import (
    SCHEMA_VERSION,
    ModelContract,
    TensorSpec,
    image_input,
    schema,
)
from medflow.core.errors import ConfigError
from medflow.core.pixel_spec import PixelSpec

GOLDEN_V0 = Path(__file__).resolve().parents[1] / "golden" / "contract_v0.json"
LABELS = ("normal", "pneumonia")
STATIC = {  # the Pusher's exec property, as pipelines/pipeline.py sends it today
    "task": "classification",
    "labels": list(LABELS),
    "intended_use": "Research only.",
    "preprocessing": {"size": [28, 28], "channels": 1},
}


def _contract(**changes) -> ModelContract:
    spec = PixelSpec(size=(32, 24), channels=3, window=(40.0, 400.0), frames="first")
    contract = ModelContract(
        task="classification",
        labels=LABELS,
        pixel_spec=spec,
        inputs=(image_input(spec, (0.0, 1.0)),),
        outputs=(TensorSpec("probabilities", (-1, 2), "float32"),),
        intended_use="Research only.",
        model_name="medflow-classifier",
        version="17",
        model_sha256="ab" * 32,
        training_data={"num_examples": 10, "class_counts": {"0": 5, "1": 5}},
        metrics={"eval": {"auc": 0.9}},
        lineage={"execution_id": 12, "model_artifact_id": 7, "pipeline_run_id": "run-1"},
        created_by="medflow 0.1.0",
    )
    return replace(contract, **changes)


def _validate_raw(d: dict) -> None:
    from jsonschema import Draft202012Validator

    Draft202012Validator(schema()).validate(d)


def test_round_trip_through_dict_json_and_file(tmp_path):
    contract = _contract()
    d = contract.to_dict()
    assert d["schema_version"] == SCHEMA_VERSION == 1
    assert d["pixel_spec"]["window"] == [40.0, 400.0] and d["preprocessing"] == d["pixel_spec"]
    _validate_raw(d)
    assert ModelContract.from_dict(d) == contract
    assert ModelContract.from_dict(json.loads(contract.to_json())) == contract
    written = contract.write(tmp_path)  # a version directory: contract.json inside it
    assert written == tmp_path / "contract.json"
    assert [p.name for p in tmp_path.iterdir()] == ["contract.json"]  # no temporary left
    loaded = ModelContract.load(tmp_path)
    assert loaded == ModelContract.load(written) == contract
    assert loaded.pixel_spec == PixelSpec(size=(32, 24), channels=3, window=(40.0, 400.0),
                                          frames="first")  # fmt: skip
    assert loaded.labels == LABELS and loaded.task == "classification"
    assert loaded.inputs[0] == TensorSpec("image", (-1, 32, 24, 3), "float32", (0.0, 1.0))


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (
            lambda d: d["pixel_spec"].update(channels=2),
            r"\$\.pixel_spec\.channels: 2 is not one of",
        ),
        (lambda d: d.update(task="tractography"), r"\$\.task: 'tractography' is not one of"),
        (lambda d: d.pop("labels"), r"top level: 'labels' is a required property"),
        (lambda d: d.update(colour="red"), r"top level: Additional properties .*'colour'"),
        (lambda d: d["inputs"][0].update(shape=[-2]), r"\$\.inputs\[0\]\.shape\[0\]: -2"),
        (lambda d: d.update(model_sha256="xyz"), r"\$\.model_sha256: 'xyz' does not match"),
    ],
)
def test_schema_rejects_a_bad_contract_with_a_one_line_message(tmp_path, change, where):
    d = _contract().to_dict()
    d.pop("preprocessing")
    change(d)
    path = tmp_path / "contract.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=where) as info:
        ModelContract.load(path)
    message = str(info.value)
    assert message.startswith(f"model contract {path}: ") and "\n" not in message
    assert message.endswith("push the model again with the medflow Pusher")


def test_unreadable_newer_or_inconsistent_contracts_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="model contract .*absent.* not found"):
        ModelContract.load(tmp_path / "absent")
    (tmp_path / "contract.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read model contract .*not JSON"):
        ModelContract.load(tmp_path)
    with pytest.raises(ConfigError, match="is not a JSON object"):
        ModelContract.from_dict([1, 2])
    newer = {**_contract().to_dict(), "schema_version": 2}
    with pytest.raises(ConfigError, match="schema_version 2 .* reads up to 1; upgrade medflow"):
        ModelContract.from_dict(newer)
    edited = _contract().to_dict()
    edited["preprocessing"] = {**edited["pixel_spec"], "channels": 1}
    with pytest.raises(ConfigError, match="differs from pixel_spec"):
        ModelContract.from_dict(edited)
    v0 = {"task": "classification", "labels": ["a"], "preprocessing": {"size": [28]}}
    with pytest.raises(ConfigError, match=r"^old.json \(schema 0\): preprocessing .*rows, cols"):
        ModelContract.from_dict(v0, source="old.json")


def test_schema_0_contract_as_the_first_pusher_wrote_it_is_migrated():
    raw = json.loads(GOLDEN_V0.read_text())
    assert "schema_version" not in raw and raw["preprocessing"] == {"channels": 1, "size": [28, 28]}
    contract = ModelContract.load(GOLDEN_V0)
    assert contract.schema_version == 1
    assert contract.pixel_spec == PixelSpec(size=(28, 28), channels=1)  # defaults filled in
    assert contract.task == raw["task"] and list(contract.labels) == raw["labels"]
    for key in ("model_name", "version", "intended_use", "model_sha256", "created_by"):
        assert getattr(contract, key) == raw[key], key
    for key in ("training_data", "metrics", "signatures"):
        assert dict(getattr(contract, key)) == raw[key], key
    assert contract.inputs == (TensorSpec("image", (-1, 28, 28, 1), "float32", (0.0, 1.0)),)
    assert [t.name for t in contract.outputs] == ["class_id", "probabilities", "score"]
    assert contract.lineage == {} and contract.evaluation_uri == ""
    migrated = contract.to_dict()
    _validate_raw(migrated)
    # Every key a reader of schema 0 used is still there, with the same meaning.
    for key in set(raw) - {"value_range", "preprocessing"}:
        assert migrated[key] == raw[key], key
    assert migrated["preprocessing"]["size"] == raw["preprocessing"]["size"]
    assert ModelContract.from_dict(migrated) == contract


def test_schema_0_without_preprocessing_takes_the_grid_from_the_signature():
    from tests.support.demo_model import _contract as demo_contract

    raw = demo_contract("demo", 3, (32, 40), 3, ("a", "b", "c"))  # version is an int there
    raw.pop("preprocessing")
    contract = ModelContract.from_dict(raw)
    assert contract.version == "3" and contract.pixel_spec == PixelSpec(size=(32, 40), channels=3)
    assert contract.inputs[0].value_range is None  # [None, None]: unknown
    bare = ModelContract.from_dict({"task": "segmentation", "labels": ["bg", "fg"]})
    assert bare.pixel_spec.size is None and bare.inputs[0].shape == (-1, None, None, 1)


# --- the Pusher ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A SavedModel with the Trainer export's signatures, as <model uri>/Format-Serving."""
    import tensorflow as tf

    from tests.support.demo_model import _build_module

    uri = tmp_path_factory.mktemp("model")
    model_dir = uri / "Format-Serving"
    module = _build_module((28, 28), 1, LABELS, 0)
    signatures = {"serving_default": module.serving_default,
                  "serve_examples": module.serve_examples}  # fmt: skip
    tf.saved_model.save(module, str(model_dir), signatures=signatures)
    (model_dir / "assets.extra").mkdir()
    (model_dir / "assets.extra" / "training.json").write_text(
        json.dumps({"train_class_counts": {"0": 6, "1": 4}, "backbone": "small", "epochs_run": 2})
    )
    return uri


def test_publish_writes_a_v1_contract_once_per_content(saved_model, tmp_path):
    from medflow.components.pusher import executor, publish

    model_dir = str(saved_model / "Format-Serving")
    static = {**STATIC, "pixel_spec": {"size": [28, 28], "channels": 1, "window": "header"}}
    contract = executor.build_contract(static, model_dir, "cxr", None, None, {"execution_id": 3})
    assert contract.pixel_spec.window == "header"  # pixel_spec wins over preprocessing
    base = tmp_path / "models" / "cxr"
    version, dest, new = publish.publish(model_dir, str(base), contract)
    assert new and Path(dest) == base / str(version)
    raw = json.loads((Path(dest) / "contract.json").read_text())
    assert raw["schema_version"] == 1
    _validate_raw(raw)
    loaded = ModelContract.load(dest)
    assert loaded.version == str(version) and loaded.model_sha256 == publish.content_sha256(
        model_dir
    )
    assert loaded.training_data == {"class_counts": {"0": 6, "1": 4}, "backbone": "small",
                                    "epochs_run": 2}  # fmt: skip
    assert loaded.lineage == {"execution_id": 3} and loaded.created_by.startswith("medflow ")
    assert [t.name for t in loaded.inputs] == ["image"]
    assert {t.name for t in loaded.outputs} == {"probabilities", "class_id", "score"}
    assert set(loaded.signatures) == {"serving_default", "serve_examples"}
    # Same content again (a contract of any schema records the hash): not pushed twice.
    assert publish.publish(model_dir, str(base), executor.static_fields(STATIC)) == (
        version,
        dest,
        False,
    )


def test_publish_refuses_a_contract_the_model_does_not_serve(saved_model, tmp_path):
    from medflow.components.pusher import executor, publish

    model_dir = str(saved_model / "Format-Serving")
    base = tmp_path / "cxr"
    three = executor.static_fields({**STATIC, "labels": ["a", "b", "c"]})
    with pytest.raises(publish.ContractMismatch, match="2 classes but .*labels"):
        publish.publish(model_dir, str(base), three)
    wide = executor.static_fields({**STATIC, "pixel_spec": {"size": [64, 64], "channels": 1}})
    with pytest.raises(publish.ContractMismatch, match="!= pixel_spec"):
        publish.publish(model_dir, str(base), wide)
    assert not base.exists()  # nothing staged or left behind
    with pytest.raises(ConfigError, match="pixel spec"):
        executor.static_fields({**STATIC, "preprocessing": {"size": [28, 28], "channels": 2}})


def test_check_contract_compares_the_contract_tensors_with_serving_default():
    from medflow.components.pusher.publish import ContractMismatch, check_contract

    image = {"dtype": "float32", "shape": [-1, 28, 28, 1]}
    outputs = {"probabilities": {"dtype": "float32", "shape": [-1, 2]},
               "class_id": {"dtype": "int64", "shape": [-1]},
               "score": {"dtype": "float32", "shape": [-1]}}  # fmt: skip
    sigs = {"serving_default": {"inputs": {"image": image}, "outputs": outputs}}
    contract = ModelContract(labels=LABELS, pixel_spec=PixelSpec()).with_signatures(sigs)
    check_contract(contract)
    check_contract(contract.to_dict())  # the JSON form is accepted too
    stale = replace(contract, outputs=(TensorSpec("probabilities", (-1, 3), "float32"),))
    with pytest.raises(ContractMismatch, match="contract outputs probabilities"):
        check_contract(stale)


def test_executor_pushes_and_records_lineage(saved_model, tmp_path):
    from tfx.dsl.components.base import base_executor
    from tfx.proto.orchestration import pipeline_pb2
    from tfx.types import standard_artifacts

    from medflow.components.pusher.executor import Executor

    model = standard_artifacts.Model()
    model.uri, model.id = str(saved_model), 21
    blessing = standard_artifacts.ModelBlessing()
    blessing.set_int_custom_property("blessed", 1)
    blessing.id = 22
    pushed = standard_artifacts.PushedModel()
    context = base_executor.BaseExecutor.Context(
        unique_id="42",
        pipeline_run_id="run-1",
        pipeline_info=pipeline_pb2.PipelineInfo(id="medflow"),
    )
    Executor(context).Do(
        {"model": [model], "model_blessing": [blessing]},
        {"pushed_model": [pushed]},
        {"model_name": "cxr", "base_directory": str(tmp_path), "contract": json.dumps(STATIC)},
    )
    assert pushed.get_int_custom_property("pushed") == 1
    contract = ModelContract.load(pushed.get_string_custom_property("pushed_destination"))
    assert contract.lineage == {
        "model_artifact_id": 21,
        "model_blessing_artifact_id": 22,
        "execution_id": 42,
        "pipeline_run_id": "run-1",
        "pipeline_name": "medflow",
    }
    assert contract.pixel_spec == PixelSpec(size=(28, 28), channels=1)
    assert contract.labels == LABELS and contract.intended_use == "Research only."
