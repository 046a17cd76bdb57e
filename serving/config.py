"""TF Serving configuration files: ModelServerConfig (models.config) and batching parameters.

Both are protobuf text format, parsed with ``google.protobuf.text_format`` so a file that works
with ``tensorflow_model_server --model_config_file`` / ``--batching_parameters_file`` works here
unchanged (and the other way round).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from medflow.core.compat import message_class
from medflow.serving.errors import ServingConfigError


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions of a model to serve (TF Serving's ``model_version_policy``).

    Attributes:
        kind: "latest" (the ``num_versions`` newest), "all", or "specific".
        num_versions: for "latest".
        versions: for "specific".
    """

    kind: str = "latest"
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, available: list[int]) -> list[int]:
        """Versions to serve out of the complete ones found on disk."""
        ordered = sorted(available)
        if self.kind == "all":
            return ordered
        if self.kind == "specific":
            return [v for v in ordered if v in self.versions]
        return ordered[-self.num_versions :] if self.num_versions > 0 else []


@dataclass(frozen=True)
class ModelSpecConfig:
    """One served model: its name, folder of version directories, policy and labels."""

    name: str
    base_path: Path
    policy: VersionPolicy = field(default_factory=VersionPolicy)
    labels: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BatchingConfig:
    """TF Serving's BatchingParameters with its defaults (BasicBatchScheduler::Options)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()
    enable_large_batch_splitting: bool = False


def parse_model_config(text: str, *, source: str, base_dir: Path) -> list[ModelSpecConfig]:
    """Parse ModelServerConfig text (``model_config_list { config { ... } }``).

    Args:
        text: the file content.
        source: file name used in error messages.
        base_dir: relative ``base_path`` values are resolved against it (the config's folder).

    Raises:
        ServingConfigError: unparsable text, a non-TensorFlow platform, or duplicate names.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    msg = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        # TF Serving's own words (its tests look for them), then the parser's.
        raise ServingConfigError(
            f"{source}: Error parsing text-format tensorflow.serving.ModelServerConfig: {exc}"
        ) from exc
    return models_from_proto(msg, source=source, base_dir=base_dir)


def models_from_proto(msg, *, source: str, base_dir: Path) -> list[ModelSpecConfig]:
    """The models of a ModelServerConfig message (a file's, or HandleReloadConfigRequest's)."""
    if msg.WhichOneof("config") == "custom_model_config":
        raise ServingConfigError(
            f"{source}: custom_model_config is not supported; use model_config_list"
        )
    models: list[ModelSpecConfig] = []
    for cfg in msg.model_config_list.config:
        models.append(_model_from_proto(cfg, source, base_dir))
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ServingConfigError(f"{source}: model name(s) {dupes} appear more than once")
    if not models:
        raise ServingConfigError(f"{source}: model_config_list has no config entries")
    return models


def _model_from_proto(cfg, source: str, base_dir: Path) -> ModelSpecConfig:
    if not cfg.name:
        raise ServingConfigError(f"{source}: a config entry has no name")
    if not cfg.base_path:
        raise ServingConfigError(f"{source}: model {cfg.name!r} has no base_path")
    if cfg.model_platform not in ("", "tensorflow"):
        raise ServingConfigError(
            f"{source}: model {cfg.name!r} has model_platform {cfg.model_platform!r}; "
            "only 'tensorflow' SavedModels are served"
        )
    base_path = Path(cfg.base_path)
    if not base_path.is_absolute():
        base_path = (base_dir / base_path).resolve()
    policy_msg = cfg.model_version_policy
    which = policy_msg.WhichOneof("policy_choice")
    if which == "all":
        policy = VersionPolicy(kind="all")
    elif which == "specific":
        if not policy_msg.specific.versions:
            raise ServingConfigError(
                f"{source}: model {cfg.name!r}: specific policy lists no versions"
            )
        policy = VersionPolicy(kind="specific", versions=tuple(policy_msg.specific.versions))
    else:
        n = policy_msg.latest.num_versions if which == "latest" else 1
        policy = VersionPolicy(kind="latest", num_versions=max(1, n))
    return ModelSpecConfig(cfg.name, base_path, policy, dict(cfg.version_labels))


def read_model_config(path: str | Path) -> list[ModelSpecConfig]:
    """Read a ModelServerConfig text file (TF Serving's ``--model_config_file``)."""
    path = Path(path)
    if not path.is_file():
        raise ServingConfigError(f"model config {path} does not exist; pass a models.config file")
    return parse_model_config(path.read_text(), source=str(path), base_dir=path.parent.resolve())


def models_in_base(base: str | Path) -> list[ModelSpecConfig]:
    """One model per sub-folder of ``base`` (``<base>/<name>/<version>/saved_model.pb``)."""
    base = Path(base)
    if not base.is_dir():
        raise ServingConfigError(f"model base {base} is not a folder; pass --model-base DIR")
    return [
        ModelSpecConfig(p.name, p.resolve())
        for p in sorted(base.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    ]


@functools.lru_cache(maxsize=1)
def _batching_parameters_class():
    """A message class with the fields and names of TF Serving's BatchingParameters.

    tensorflow-serving-api does not ship session_bundle_config_pb2, so the message is declared
    here (same field names, numbers and wrapper types) for text_format to parse against.
    """
    from google.protobuf import descriptor_pb2, descriptor_pool, wrappers_pb2

    fdp = descriptor_pb2.FileDescriptorProto(
        name="medflow/serving/batching_parameters.proto",
        package="tensorflow.serving.medflow",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    msg = fdp.message_type.add(name="BatchingParameters")
    f = descriptor_pb2.FieldDescriptorProto
    fields = [
        ("max_batch_size", 1, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
        ("batch_timeout_micros", 2, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
        ("max_enqueued_batches", 3, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
        ("num_batch_threads", 4, ".google.protobuf.Int64Value", f.LABEL_OPTIONAL),
        ("thread_pool_name", 5, ".google.protobuf.StringValue", f.LABEL_OPTIONAL),
    ]
    for name, number, type_name, label in fields:
        msg.field.add(
            name=name, number=number, type=f.TYPE_MESSAGE, type_name=type_name, label=label
        )
    msg.field.add(name="allowed_batch_sizes", number=6, type=f.TYPE_INT64, label=f.LABEL_REPEATED)
    msg.field.add(
        name="pad_variable_length_inputs", number=7, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL
    )
    msg.field.add(
        name="enable_large_batch_splitting", number=8, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL
    )
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName("tensorflow.serving.medflow.BatchingParameters")
    return message_class(desc)


def parse_batching_parameters(text: str, *, source: str = "batching parameters") -> BatchingConfig:
    """Parse TF Serving's batching parameters text (``max_batch_size { value: 32 }`` ...).

    Raises:
        ServingConfigError: unknown fields, bad values, or allowed_batch_sizes that do not
            increase and end at max_batch_size (TF Serving's own rule).
    """
    from google.protobuf import text_format

    msg = _batching_parameters_class()()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        raise ServingConfigError(f"{source}: not TF Serving batching parameters: {exc}") from exc
    defaults = BatchingConfig()

    def pick(name: str) -> int:
        return getattr(msg, name).value if msg.HasField(name) else getattr(defaults, name)

    cfg = BatchingConfig(
        max_batch_size=pick("max_batch_size"),
        batch_timeout_micros=pick("batch_timeout_micros"),
        max_enqueued_batches=pick("max_enqueued_batches"),
        num_batch_threads=pick("num_batch_threads"),
        allowed_batch_sizes=tuple(msg.allowed_batch_sizes),
        enable_large_batch_splitting=msg.enable_large_batch_splitting,
    )
    _check_batching(cfg, source)
    return cfg


def _check_batching(cfg: BatchingConfig, source: str) -> None:
    for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
        if getattr(cfg, name) < 1:
            raise ServingConfigError(f"{source}: {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.batch_timeout_micros < 0:
        raise ServingConfigError(f"{source}: batch_timeout_micros must be >= 0")
    sizes = list(cfg.allowed_batch_sizes)
    if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != cfg.max_batch_size or sizes[0] < 1):
        raise ServingConfigError(
            f"{source}: allowed_batch_sizes {sizes} must increase and end at max_batch_size "
            f"({cfg.max_batch_size})"
        )


def read_batching_parameters(path: str | Path) -> BatchingConfig:
    """Read TF Serving's ``--batching_parameters_file``."""
    path = Path(path)
    if not path.is_file():
        raise ServingConfigError(f"batching parameters file {path} does not exist")
    return parse_batching_parameters(path.read_text(), source=str(path))


def parse_grpc_channel_arguments(
    text: str, *, source: str = "--grpc-channel-arguments"
) -> tuple[tuple[str, int | str], ...]:
    """TF Serving's ``--grpc_channel_arguments``: ``name=value`` pairs, comma-separated, passed to
    the gRPC server (e.g. ``grpc.max_connection_age_ms=60000``). A value that parses as an
    integer is passed as one, anything else as a string, as TF Serving does."""
    args: list[tuple[str, int | str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not name or not value:
            raise ServingConfigError(
                f"{source}: {item!r} is not name=value; write e.g. "
                "grpc.max_connection_age_ms=60000,grpc.max_connection_age_grace_ms=30000"
            )
        try:
            args.append((name, int(value)))
        except ValueError:
            args.append((name, value))
    return tuple(args)


@dataclass(frozen=True)
class MonitoringConfig:
    """TF Serving's ``--monitoring_config_file``: where the Prometheus page is served, if at all."""

    prometheus_enabled: bool = False
    prometheus_path: str = "/monitoring/prometheus/metrics"


@functools.lru_cache(maxsize=1)
def _monitoring_config_class():
    """TF Serving's MonitoringConfig message (monitoring_config.proto: prometheus_config
    { enable, path }); tensorflow-serving-api does not ship it."""
    from google.protobuf import descriptor_pb2, descriptor_pool

    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="medflow/serving/monitoring_config.proto",
        package="tensorflow.serving.medflow",
        syntax="proto3",
    )
    prometheus = fdp.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=f.TYPE_BOOL, label=f.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2, type=f.TYPE_STRING, label=f.LABEL_OPTIONAL)
    monitoring = fdp.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=f.TYPE_MESSAGE,
        type_name=".tensorflow.serving.medflow.PrometheusConfig",
        label=f.LABEL_OPTIONAL,
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName("tensorflow.serving.medflow.MonitoringConfig")
    return message_class(desc)


def read_monitoring_config(path: str | Path) -> MonitoringConfig:
    """Read TF Serving's ``--monitoring_config_file`` (text format)."""
    from google.protobuf import text_format

    path = Path(path)
    if not path.is_file():
        raise ServingConfigError(f"monitoring config file {path} does not exist")
    msg = _monitoring_config_class()()
    try:
        text_format.Parse(path.read_text(), msg)
    except text_format.ParseError as exc:
        raise ServingConfigError(
            f"{path}: Error parsing text-format tensorflow.serving.MonitoringConfig: {exc}"
        ) from exc
    prometheus = msg.prometheus_config
    default = MonitoringConfig.prometheus_path
    path_value = prometheus.path or default
    if not path_value.startswith("/"):
        raise ServingConfigError(f"{path}: prometheus_config path {path_value!r} must start with /")
    return MonitoringConfig(prometheus.enable, path_value)
