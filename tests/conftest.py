"""Shared test fixtures. Tests are hermetic: they make their data or use ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (set MEDFLOW_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests leave files for people to look at (screenshots, plots)."""
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def compiled_spec(tmp_path_factory) -> Path:
    """The pipeline compiled once for Kubeflow (YAML; Trainer asks for 2 A100 GPUs)."""
    from medflow.pipelines.kubeflow_runner import compile_pipeline

    root = tmp_path_factory.mktemp("kfp")
    return compile_pipeline(
        root / "spec.yaml",
        pipeline_root=str(root / "root"),
        gpu_count=2,
        gpu_type="NVIDIA_TESLA_A100",
    )
