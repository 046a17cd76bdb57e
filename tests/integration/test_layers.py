"""The layer contracts (pyproject [tool.importlinter]) hold, and a bad import breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")
FOLDERS = ("medflow", "components", "pipelines", "serving", "dashboard")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy_tree(dest: Path) -> Path:
    """A copy of the package folders (symlinks under medflow/ kept) and pyproject.toml."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in FOLDERS:
        shutil.copytree(REPO / name, dest / name, symlinks=True, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_layer_contracts_hold_for_the_repository():
    proc = _lint(REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("serving/zz_bad.py", "import medflow.components.ingest.engine", "serving needs core"),
        ("components/dicom/zz_bad.py", "import medflow.pipelines.pipeline", "medflow layers"),
        ("dashboard/zz_bad.py", "import medflow.serving.server", "dashboard needs"),
    ],
)
def test_a_deliberately_bad_import_is_caught(tmp_path, module, statement, contract):
    root = _copy_tree(tmp_path)
    (root / module).write_text(f"{statement}\n")
    proc = _lint(root)
    assert proc.returncode == 1, proc.stdout
    assert "zz_bad" in proc.stdout
    assert contract in proc.stdout
