"""Connecting to ML Metadata for the dashboard: a read-only SQLite file, or a text-format
connection config (MySQL, the metadata gRPC service). :mod:`medflow.dashboard.lineage`
re-exports these functions.
"""

from __future__ import annotations

from pathlib import Path

from medflow.core.errors import ConfigError, ServiceError


def sqlite_config(path: str | Path):
    """Read-only connection to an existing MLMD SQLite file (never creates one)."""
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    config = mlmd.ConnectionConfig()
    config.sqlite.filename_uri = str(path)
    config.sqlite.connection_mode = mlmd.SqliteMetadataSourceConfig.READONLY
    return config


def config_from_file(path: str | Path):
    """Parses a text-format ``ConnectionConfig`` (mysql/sqlite) or ``MetadataStoreClientConfig``.

    Example (MySQL)::

        mysql { host: "mysql.kubeflow" port: 3306 database: "metadb" user: "medflow"
                password: "..." }

    Example (the metadata gRPC service)::

        host: "metadata-grpc-service.kubeflow" port: 8080
    """
    from google.protobuf import text_format
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the ML Metadata config {path}: {exc}") from exc
    errors = []
    for message in (mlmd.ConnectionConfig(), mlmd.MetadataStoreClientConfig()):
        try:
            return text_format.Parse(text, message)
        except text_format.ParseError as exc:
            errors.append(f"{type(message).__name__}: {exc}")
    raise ConfigError(
        f"ML Metadata config {path} is neither a text-format ConnectionConfig (mysql {{...}}) "
        f"nor a MetadataStoreClientConfig (host/port): {'; '.join(errors)}"
    )


def open_store(config):
    """A ``MetadataStore`` for a connection config, or ServiceError saying what failed."""
    from ml_metadata.metadata_store import metadata_store

    try:
        return metadata_store.MetadataStore(config)
    except Exception as exc:  # noqa: BLE001 - MLMD raises RuntimeError / errors.* per backend
        where = config.sqlite.filename_uri if config.HasField("sqlite") else "the configured store"
        raise ServiceError(
            f"cannot open ML Metadata at {where}: {exc}; check the path or connection settings"
        ) from exc
