"""``tensorflow_model_server``'s command line, read the way the real binary reads it.

``medflow-model-server`` takes TF Serving's flags with their names, defaults and meanings, so a
Kubernetes manifest, a Docker command or TF Serving's own tests run it unchanged. Syntax as
TensorFlow's flag parser: ``--name=value``, ``--name value``, and for booleans ``--name``,
``--name=true`` / ``--name=false``. A flag the embedded server cannot honour is refused at
start when it is given a value other than its default (never silently dropped); an unknown
flag is refused as the real binary refuses it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from medflow.serving.config import (
    BatchingConfig,
    ModelSpecConfig,
    parse_grpc_channel_arguments,
    read_batching_parameters,
    read_model_config,
    read_monitoring_config,
)
from medflow.serving.errors import ServingConfigError
from medflow.serving.servable import LoadOptions

# name -> (type, default) of every flag honoured here (TF Serving's defaults).
HONOURED: dict[str, tuple[type, object]] = {
    "port": (int, 8500),
    "grpc_socket_path": (str, ""),
    "rest_api_port": (int, 0),
    "rest_api_timeout_in_ms": (int, 30000),
    "enable_batching": (bool, False),
    "batching_parameters_file": (str, ""),
    "model_config_file": (str, ""),
    "model_config_file_poll_wait_seconds": (int, 0),
    "model_name": (str, "default"),
    "model_base_path": (str, ""),
    "file_system_poll_wait_seconds": (int, 1),
    "tensorflow_session_parallelism": (int, 0),
    "tensorflow_intra_op_parallelism": (int, 0),
    "tensorflow_inter_op_parallelism": (int, 0),
    "grpc_channel_arguments": (str, ""),
    "grpc_max_threads": (int, 0),
    "enable_model_warmup": (bool, True),
    "num_request_iterations_for_warmup": (int, 1),
    "monitoring_config_file": (str, ""),
    "prefer_tflite_model": (bool, False),
    "enable_signature_method_name_check": (bool, False),
    "enable_profiler": (bool, True),
    "saved_model_tags": (str, "serve"),
    "version": (bool, False),
}
# Flags accepted at their default only: any other value changes behaviour this server lacks.
DEFAULT_ONLY: dict[str, tuple[type, object]] = {
    "rest_api_num_threads": (int, 0),
    "rest_api_enable_cors_support": (bool, False),
    "allow_version_labels_for_unavailable_models": (bool, False),
    "enable_per_model_batching_parameters": (bool, False),
    "num_load_threads": (int, 0),
    "num_unload_threads": (int, 0),
    "max_num_load_retries": (int, 5),
    "load_retry_interval_micros": (int, 60_000_000),
    "flush_filesystem_caches": (bool, True),
    "tensorflow_session_config_file": (str, ""),
    "use_alts_credentials": (bool, False),
    "ssl_config_file": (str, ""),
    "platform_config_file": (str, ""),
    "per_process_gpu_memory_fraction": (float, 0.0),
    "remove_unused_fields_from_bundle_metagraph": (bool, True),
    "num_tflite_pools": (int, 1),
    "num_tflite_interpreters_per_pool": (int, 1),
    "xla_cpu_compilation_enabled": (bool, False),
    "mixed_precision": (str, ""),
    "skip_initialize_tpu": (bool, False),
    "enable_grpc_healthcheck_service": (bool, False),
    "thread_pool_factory_config_file": (str, ""),
}
_BOOLS = {"true": True, "1": True, "false": False, "0": False}


def _convert(name: str, kind: type, text: str):
    if kind is bool:
        if text.lower() not in _BOOLS:
            raise ServingConfigError(f"--{name}={text}: expected true or false")
        return _BOOLS[text.lower()]
    try:
        return kind(text)
    except ValueError:
        raise ServingConfigError(f"--{name}={text}: expected {kind.__name__}") from None


def parse_flags(argv: list[str]) -> dict[str, object]:
    """Every flag's value (defaults filled in); ServingConfigError for an unknown flag, a bad
    value, or a flag that cannot be honoured here."""
    table = {**HONOURED, **DEFAULT_ONLY}
    values = {name: default for name, (_, default) in table.items()}
    args = list(argv)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--") or arg == "--":
            raise ServingConfigError(f"unexpected argument {arg!r}: flags are --name=value")
        name, sep, text = arg[2:].partition("=")
        if name not in table:
            raise ServingConfigError(
                f"unknown flag --{name}: not a tensorflow_model_server flag "
                "(see medflow-model-server --help)"
            )
        kind = table[name][0]
        if not sep:
            if kind is bool:
                text = "true"
            elif args:
                text = args.pop(0)
            else:
                raise ServingConfigError(f"--{name} needs a value")
        values[name] = _convert(name, kind, text)
    for name, (_, default) in DEFAULT_ONLY.items():
        if values[name] != default:
            raise ServingConfigError(
                f"--{name}={values[name]} cannot be honoured by medflow-model-server (only "
                f"its default, {default}); leave the flag out"
            )
    if values["saved_model_tags"] != "serve":
        raise ServingConfigError(
            f"--saved_model_tags={values['saved_model_tags']}: only the 'serve' MetaGraph is "
            "loaded; leave the flag out"
        )
    return values


@dataclass
class FlagPlan:
    """What the flags ask for, in the terms of :class:`serving.server.ModelServer`."""

    models: list[ModelSpecConfig]
    options: dict = field(default_factory=dict)  # ServerOptions keyword arguments
    reload_config: str | None = None  # the config file to read again while running
    intra_op_threads: int = 0
    inter_op_threads: int = 0


def plan_from_flags(values: dict[str, object]) -> FlagPlan:
    """Models and server options from parsed flags (TF Serving's rules for each)."""
    config_file = str(values["model_config_file"])
    if config_file:
        models = read_model_config(config_file)
    elif values["model_base_path"]:
        base = Path(str(values["model_base_path"])).resolve()
        models = [ModelSpecConfig(str(values["model_name"]), base)]
    else:
        raise ServingConfigError(
            "Both --model_base_path and --model_config_file are empty: pass one of them"
        )
    batching = None
    if values["enable_batching"]:
        batching_file = str(values["batching_parameters_file"])
        batching = read_batching_parameters(batching_file) if batching_file else BatchingConfig()
    metrics_path = None
    if values["monitoring_config_file"]:
        monitoring = read_monitoring_config(str(values["monitoring_config_file"]))
        metrics_path = monitoring.prometheus_path if monitoring.prometheus_enabled else None
    timeout_ms = int(values["rest_api_timeout_in_ms"])
    options = dict(
        host="0.0.0.0",
        grpc_port=int(values["port"]),
        rest_port=int(values["rest_api_port"]) or None,
        poll_seconds=float(values["file_system_poll_wait_seconds"]),
        batching=batching,
        grpc_channel_arguments=parse_grpc_channel_arguments(
            str(values["grpc_channel_arguments"]), source="--grpc_channel_arguments"
        ),
        metrics_path=metrics_path,
        grpc_socket_path=str(values["grpc_socket_path"]) or None,
        rest_timeout_s=timeout_ms / 1000 if timeout_ms > 0 else None,
        models_poll_seconds=float(values["model_config_file_poll_wait_seconds"]),
        loading=LoadOptions(
            prefer_tflite=bool(values["prefer_tflite_model"]),
            check_method_name=bool(values["enable_signature_method_name_check"]),
            warmup=bool(values["enable_model_warmup"]),
            warmup_iterations=max(1, int(values["num_request_iterations_for_warmup"])),
        ),
        profiler=bool(values["enable_profiler"]),
    )
    if int(values["grpc_max_threads"]) > 0:
        options["grpc_workers"] = int(values["grpc_max_threads"])
    parallelism = int(values["tensorflow_session_parallelism"])
    return FlagPlan(
        models,
        options,
        reload_config=config_file or None,
        intra_op_threads=int(values["tensorflow_intra_op_parallelism"]) or parallelism,
        inter_op_threads=int(values["tensorflow_inter_op_parallelism"]) or parallelism,
    )


def usage() -> str:
    """The flags, for ``--help``."""
    lines = ["usage: medflow-model-server --flag=value ... (tensorflow_model_server's flags)", ""]
    lines += [f"  --{n}={d!r}" for n, (_, d) in sorted(HONOURED.items())]
    lines += ["", "accepted at their default only:"]
    lines += [f"  --{n}={d!r}" for n, (_, d) in sorted(DEFAULT_ONLY.items())]
    return os.linesep.join(lines)
