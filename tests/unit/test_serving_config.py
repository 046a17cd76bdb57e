"""TF Serving configuration: models.config policies/labels, batching parameters, gRPC arguments."""

from __future__ import annotations

from pathlib import Path

import pytest

from medflow.serving.config import (
    BatchingConfig,
    VersionPolicy,
    parse_batching_parameters,
    parse_grpc_channel_arguments,
    parse_model_config,
    read_model_config,
)
from medflow.serving.errors import ServingConfigError

MODELS = """
model_config_list {
  config {
    name: "cxr"
    base_path: "/models/cxr"
    model_platform: "tensorflow"
    model_version_policy { latest { num_versions: 2 } }
    version_labels { key: "stable" value: 3 }
    version_labels { key: "canary" value: 4 }
  }
  config {
    name: "seg"
    base_path: "seg"
    model_version_policy { specific { versions: 1 versions: 7 } }
  }
  config { name: "all" base_path: "all" model_version_policy { all {} } }
  config { name: "plain" base_path: "plain" }
}
"""


def test_policies_labels_and_paths(tmp_path):
    models = {m.name: m for m in parse_model_config(MODELS, source="m", base_dir=tmp_path)}
    assert list(models) == ["cxr", "seg", "all", "plain"]
    assert models["cxr"].base_path == Path("/models/cxr")
    assert models["seg"].base_path == tmp_path / "seg"  # relative to the config's folder
    assert models["cxr"].policy == VersionPolicy("latest", 2)
    assert models["cxr"].labels == {"stable": 3, "canary": 4}
    assert models["seg"].policy == VersionPolicy("specific", versions=(1, 7))
    assert models["all"].policy.kind == "all"
    assert models["plain"].policy == VersionPolicy("latest", 1)  # TF Serving's default


@pytest.mark.parametrize(
    ("policy", "available", "selected"),
    [
        (VersionPolicy("latest", 1), [3, 1, 2], [3]),
        (VersionPolicy("latest", 2), [3, 1, 2], [2, 3]),
        (VersionPolicy("latest", 5), [3, 1], [1, 3]),
        (VersionPolicy("specific", versions=(1, 7)), [1, 2, 3], [1]),
        (VersionPolicy("specific", versions=(1, 7)), [7, 1], [1, 7]),
        (VersionPolicy("all"), [3, 1, 2], [1, 2, 3]),
        (VersionPolicy("latest", 1), [], []),
    ],
)
def test_policy_select(policy, available, selected):
    assert policy.select(available) == selected


def test_read_model_config_file(tmp_path):
    path = tmp_path / "models.config"
    path.write_text('model_config_list { config { name: "a" base_path: "models/a" } }')
    (model,) = read_model_config(path)
    assert model.base_path == tmp_path / "models" / "a"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "model_config_list { config { name: ",
            "Error parsing text-format tensorflow.serving.ModelServerConfig",
        ),
        ("model_config_list { }", "no config entries"),
        ('model_config_list { config { base_path: "/m" } }', "no name"),
        ('model_config_list { config { name: "a" } }', "no base_path"),
        (
            'model_config_list { config { name: "a" base_path: "/a" model_platform: "onnx" } }',
            "onnx",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/a" } '
            'config { name: "a" base_path: "/b" } }',
            "more than once",
        ),
        (
            'model_config_list { config { name: "a" base_path: "/a" '
            "model_version_policy { specific { } } } }",
            "lists no versions",
        ),
        ('custom_model_config { type_url: "x" }', "custom_model_config"),
    ],
)
def test_model_config_errors(text, needle, tmp_path):
    with pytest.raises(ServingConfigError, match=needle):
        parse_model_config(text, source="models.config", base_dir=tmp_path)


def test_missing_model_config_file(tmp_path):
    with pytest.raises(ServingConfigError, match="does not exist"):
        read_model_config(tmp_path / "nope.config")


def test_batching_parameters():
    text = """
    max_batch_size { value: 32 }
    batch_timeout_micros { value: 2000 }
    max_enqueued_batches { value: 100 }
    num_batch_threads { value: 2 }
    allowed_batch_sizes: 8
    allowed_batch_sizes: 32
    enable_large_batch_splitting: true
    """
    assert parse_batching_parameters(text) == BatchingConfig(
        max_batch_size=32,
        batch_timeout_micros=2000,
        max_enqueued_batches=100,
        num_batch_threads=2,
        allowed_batch_sizes=(8, 32),
        enable_large_batch_splitting=True,
    )
    assert parse_batching_parameters("") == BatchingConfig()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("max_batch_size { value: 0 }", "max_batch_size must be >= 1"),
        ("batch_timeout_micros { value: -1 }", "batch_timeout_micros"),
        ("max_batch_size { value: 32 } allowed_batch_sizes: 8 allowed_batch_sizes: 16", "end at"),
        ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4", "increase"),
        ("max_batch_size: 32", "not TF Serving batching parameters"),
        ("no_such_field { value: 1 }", "not TF Serving batching parameters"),
    ],
)
def test_batching_parameter_errors(text, needle):
    with pytest.raises(ServingConfigError, match=needle):
        parse_batching_parameters(text)


def test_grpc_channel_arguments():
    assert parse_grpc_channel_arguments("") == ()
    assert parse_grpc_channel_arguments(
        " grpc.max_connection_age_ms=60000, grpc.primary_user_agent = medflow ,"
    ) == (("grpc.max_connection_age_ms", 60000), ("grpc.primary_user_agent", "medflow"))


@pytest.mark.parametrize("text", ["grpc.max_connection_age_ms", "=5", "grpc.x="])
def test_grpc_channel_argument_errors(text):
    with pytest.raises(ServingConfigError, match=r"--grpc-channel-arguments: .* not name=value"):
        parse_grpc_channel_arguments(text)
