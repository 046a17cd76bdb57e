"""medflow-model-server's command line: tensorflow_model_server's flags, names and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from medflow.serving.errors import ServingConfigError
from medflow.serving.manager import scan_versions
from medflow.serving.tfs_flags import parse_flags, plan_from_flags


def test_flag_syntaxes_as_tensorflow_parses_them():
    values = parse_flags(
        [
            "--port=9000",
            "--rest_api_port",
            "9001",
            "--enable_batching",
            "--enable_model_warmup=false",
        ]
    )
    assert (values["port"], values["rest_api_port"]) == (9000, 9001)
    assert values["enable_batching"] is True and values["enable_model_warmup"] is False
    assert values["model_name"] == "default"  # TF Serving's default


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--no_such_flag=1"], "unknown flag --no_such_flag"),
        (["--port=http"], "--port=http: expected int"),
        (["--enable_batching=maybe"], "expected true or false"),
        (["--port"], "--port needs a value"),
        (["model_base_path"], "unexpected argument"),
        (["--rest_api_num_threads=4"], "--rest_api_num_threads=4 cannot be honoured"),
        (["--ssl_config_file=/etc/ssl.cfg"], "cannot be honoured"),
        (["--saved_model_tags=serve,gpu"], "only the 'serve' MetaGraph"),
    ],
)
def test_flags_it_cannot_take_are_refused_at_start(argv, needle):
    with pytest.raises(ServingConfigError, match=needle):
        parse_flags(argv)


def test_single_model_flags_and_their_defaults(tmp_path):
    plan = plan_from_flags(parse_flags([f"--model_base_path={tmp_path}", "--model_name=m"]))
    assert [(m.name, m.base_path) for m in plan.models] == [("m", tmp_path.resolve())]
    opts = plan.options
    assert (opts["grpc_port"], opts["rest_port"]) == (8500, None)  # REST off unless asked
    assert opts["metrics_path"] is None  # no monitoring config: no Prometheus page
    assert opts["rest_timeout_s"] == 30.0 and opts["models_poll_seconds"] == 0.0
    assert opts["loading"].warmup and not opts["loading"].check_method_name
    assert opts["batching"] is None and plan.reload_config is None


def test_nothing_to_serve_is_tf_servings_error():
    with pytest.raises(ServingConfigError, match="Both --model_base_path and --model_config_file"):
        plan_from_flags(parse_flags(["--port=8500"]))


def test_config_monitoring_and_batching_files(tmp_path):
    (tmp_path / "models.config").write_text(
        'model_config_list { config { name: "a" base_path: "/models/a" } }'
    )
    (tmp_path / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/metrics" }'
    )
    (tmp_path / "batching.config").write_text("max_batch_size { value: 8 }")
    plan = plan_from_flags(
        parse_flags(
            [
                f"--model_config_file={tmp_path / 'models.config'}",
                "--model_config_file_poll_wait_seconds=60",
                f"--monitoring_config_file={tmp_path / 'monitoring.config'}",
                "--enable_batching=true",
                f"--batching_parameters_file={tmp_path / 'batching.config'}",
                "--tensorflow_intra_op_parallelism=2",
            ]
        )
    )
    assert [m.name for m in plan.models] == ["a"]
    assert plan.reload_config == str(tmp_path / "models.config")
    assert plan.options["models_poll_seconds"] == 60.0
    assert plan.options["metrics_path"] == "/metrics"
    assert plan.options["batching"].max_batch_size == 8
    assert plan.intra_op_threads == 2


def test_a_bad_monitoring_config_is_tf_servings_parse_error(tmp_path):
    (tmp_path / "monitoring.config").write_text("prometheus { }")
    argv = [
        f"--model_base_path={tmp_path}",
        f"--monitoring_config_file={tmp_path}/monitoring.config",
    ]
    with pytest.raises(ServingConfigError, match="Error parsing text-format"):
        plan_from_flags(parse_flags(argv))


def test_version_folders_are_kept_as_written(tmp_path: Path):
    for name in ("00000123", "7", "latest", "1e3", "²"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "saved_model.pb").write_bytes(b"")
    found = scan_versions(tmp_path)
    assert {v: folder for v, (folder, _) in found.items()} == {123: "00000123", 7: "7"}


def test_tflite_versions_count_only_where_preferred(tmp_path: Path):
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.tflite").write_bytes(b"")
    assert scan_versions(tmp_path) == {}
    assert list(scan_versions(tmp_path, prefer_tflite=True)) == [1]


def test_typed_float_answers_are_read_without_copies():
    # TF Serving answers float_val (packed): a large one is split off as a view, like
    # tensor_content, and decodes to the same array; a mismatched field is left to protobuf.
    import numpy as np
    from tensorflow_serving.apis import predict_pb2

    from medflow.serving.tensors import parse_with_tensors, serialize_with_tensors
    from medflow.serving.wire import split_tensor_contents

    outputs = {
        "p": np.random.default_rng(0).random((64, 70), np.float32),
        "d": np.arange(1000, dtype=np.float64),
        "i": np.arange(5, dtype=np.int32),
    }
    raw = serialize_with_tensors(predict_pb2.PredictResponse(), "outputs", outputs, typed=True)
    _, views = split_tensor_contents(raw, 1)
    assert set(views) == {"p", "d"}  # int_val is varints: protobuf decodes it
    message, arrays = parse_with_tensors(predict_pb2.PredictResponse, raw, "outputs", min_bytes=0)
    for key, value in outputs.items():
        np.testing.assert_array_equal(arrays[key], value)
    wrong = predict_pb2.PredictResponse()
    wrong.outputs["x"].dtype = 2  # DT_DOUBLE carrying float_val: not split
    wrong.outputs["x"].float_val.extend([1.0] * 2000)
    assert split_tensor_contents(wrong.SerializeToString(), 1) is None
