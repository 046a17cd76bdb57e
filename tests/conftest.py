"""Shared test fixtures. Tests are hermetic: they make their data or use ../shared/data.

Tiers come from the folder (see ``pytest_collection_modifyitems``): tests/unit -> ``unit``
(no servers, no subprocesses), tests/integration -> ``integration`` (real local servers and
processes), tests/e2e -> ``e2e``. ``slow`` is set by the tests themselves. Every test has a
time limit (pytest-timeout, default in pyproject.toml; ``@pytest.mark.timeout`` for more).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
SHARED_DATA = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))
TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with the tier of its folder; a test outside tests/<tier>/ is an error."""
    for item in items:
        try:
            tier = Path(item.path).resolve().relative_to(TESTS).parts[0]
        except ValueError:  # not under tests/ (e.g. a path given on the command line)
            continue
        if tier not in TIERS:
            raise pytest.UsageError(
                f"{item.nodeid}: tests live in tests/unit, tests/integration or tests/e2e "
                "(the folder sets the tier marker)"
            )
        other = {m.name for m in item.iter_markers() if m.name in TIERS} - {tier}
        if other:
            raise pytest.UsageError(
                f"{item.nodeid}: marked {sorted(other)} but lives in tests/{tier}: move the "
                "module instead (the folder sets the tier)"
            )
        item.add_marker(getattr(pytest.mark, tier))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """No test selected (e.g. ``-m integration`` on a folder without any) is not a failure."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.OK


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
    from medflow.pipelines.kubeflow_runner import KubeflowResources, compile_pipeline

    root = tmp_path_factory.mktemp("kfp")
    return compile_pipeline(
        root / "spec.yaml",
        pipeline_root=str(root / "root"),
        resources=KubeflowResources(gpu_count=2, gpu_type="NVIDIA_TESLA_A100"),
    )
