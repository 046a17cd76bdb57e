"""Dashboard settings, passed from ``medflow dashboard`` to the Streamlit script by environment."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dashboard.store import DEFAULT_URL

ENV_STORE_URL = "MEDFLOW_STORE_URL"
ENV_MLMD_DB = "MEDFLOW_MLMD_DB"
ENV_MODELS_DIR = "MEDFLOW_MODELS_DIR"
DEFAULT_MLMD_DB = ".medflow/metadata.sqlite"
DEFAULT_MODELS_DIR = ".medflow/serving_models"


@dataclass(frozen=True)
class Settings:
    """Where the dashboard reads from.

    Attributes:
        store_url: SQLAlchemy URL of the review store.
        mlmd_db: ML Metadata SQLite file of the pipeline runs.
        models_dir: TF Serving base folder (``<name>/<version>/`` with ``contract.json``).
    """

    store_url: str = DEFAULT_URL
    mlmd_db: str = DEFAULT_MLMD_DB
    models_dir: str = DEFAULT_MODELS_DIR

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            store_url=os.environ.get(ENV_STORE_URL) or DEFAULT_URL,
            mlmd_db=os.environ.get(ENV_MLMD_DB) or DEFAULT_MLMD_DB,
            models_dir=os.environ.get(ENV_MODELS_DIR) or DEFAULT_MODELS_DIR,
        )

    def to_env(self) -> dict[str, str]:
        return {
            ENV_STORE_URL: self.store_url,
            ENV_MLMD_DB: self.mlmd_db,
            ENV_MODELS_DIR: self.models_dir,
        }
