"""Dashboard settings, passed from ``medflow dashboard`` to the Streamlit script by environment.

The pipeline's work folder (``pipelines.local_runner`` layout) gives the defaults::

    <workdir>/metadata/<pipeline_name>.sqlite   ML Metadata, one file per pipeline
    <workdir>/models/<model_name>/<version>/    pushed models (TF Serving layout)

``mlmd_db`` / ``models_dir`` override them (one SQLite file, another models folder);
``mlmd_config`` points at a text-format ML Metadata ``ConnectionConfig`` (MySQL in
production) or ``MetadataStoreClientConfig`` (the metadata gRPC service of Kubeflow).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# The review store (dashboard.store); here, so that reading settings does not import SQLAlchemy.
# The Streamlit script `medflow dashboard` runs (inside the installed package).
APP_SCRIPT = Path(__file__).resolve().with_name("app.py")
DEFAULT_URL = "sqlite:///.medflow/review.db"
ENV_STORE_URL = "MEDFLOW_STORE_URL"
ENV_WORKDIR = "MEDFLOW_WORKDIR"
ENV_MLMD_DB = "MEDFLOW_MLMD_DB"
ENV_MLMD_CONFIG = "MEDFLOW_MLMD_CONFIG"
ENV_MODELS_DIR = "MEDFLOW_MODELS_DIR"
DEFAULT_WORKDIR = ".medflow"


def store_url_from_env() -> str:
    """The review store's URL: ``MEDFLOW_STORE_URL``, else the default SQLite file."""
    return os.environ.get(ENV_STORE_URL) or DEFAULT_URL


@dataclass(frozen=True)
class Settings:
    """Where the dashboard reads from.

    Attributes:
        store_url: SQLAlchemy URL of the review store.
        workdir: the pipeline work folder (metadata/ and models/ below it).
        mlmd_db: one ML Metadata SQLite file; empty: every ``<workdir>/metadata/*.sqlite``.
        mlmd_config: text-format MLMD connection config file (MySQL / gRPC); wins over SQLite.
        models_dir: TF Serving base folder (``<name>/<version>/`` with ``contract.json``);
            empty: ``<workdir>/models``.
    """

    store_url: str = DEFAULT_URL
    workdir: str = DEFAULT_WORKDIR
    mlmd_db: str = ""
    mlmd_config: str = ""
    models_dir: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store_url=store_url_from_env(),
            workdir=os.environ.get(ENV_WORKDIR) or DEFAULT_WORKDIR,
            mlmd_db=os.environ.get(ENV_MLMD_DB, ""),
            mlmd_config=os.environ.get(ENV_MLMD_CONFIG, ""),
            models_dir=os.environ.get(ENV_MODELS_DIR, ""),
        )

    def to_env(self) -> dict[str, str]:
        return {
            ENV_STORE_URL: self.store_url,
            ENV_WORKDIR: self.workdir,
            ENV_MLMD_DB: self.mlmd_db,
            ENV_MLMD_CONFIG: self.mlmd_config,
            ENV_MODELS_DIR: self.models_dir,
        }

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else Path(self.workdir) / "models"

    def mlmd_sqlite_files(self) -> dict[str, Path]:
        """Pipeline name (file stem) -> SQLite file, for the local stores that exist."""
        if self.mlmd_db:
            path = Path(self.mlmd_db)
            return {path.stem: path} if path.is_file() else {}
        folder = Path(self.workdir) / "metadata"
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.glob("*.sqlite")) if p.is_file()}

    def mlmd_where(self) -> str:
        """Where runs are looked for, in words, for messages."""
        if self.mlmd_config:
            return f"the ML Metadata store configured in {self.mlmd_config}"
        if self.mlmd_db:
            return f"ML Metadata file {self.mlmd_db}"
        return f"{Path(self.workdir) / 'metadata'}/*.sqlite"
