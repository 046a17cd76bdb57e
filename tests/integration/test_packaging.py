"""The wheel users install: one top-level import package, every subpackage and its data, and
a console script that works from a fresh virtual environment outside the repository.

The wheel is built from this tree (``pip wheel --no-deps --no-build-isolation``) and installed
with ``--no-deps`` into a new venv of the same interpreter; the project's dependencies are made
visible there through a ``.pth`` file naming this environment's site-packages (a plain path
entry: the editable install's finder ``.pth`` files in it do not run, so ``medflow`` can only
come from the wheel).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path, PurePosixPath

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

from tests.conftest import REPO

# Shipped data files (globs relative to the repository): each file present must be in the wheel.
PACKAGE_DATA = ("medflow/core/*.json", "medflow/dashboard/views/*.html")
IMPORTS = ("medflow.serving.client", "medflow.pipelines.pipeline")
COPY_IGNORE = (".git", ".venv", ".medflow", "build", "dist", "*.egg-info", "__pycache__",
               "test-artifacts", ".pytest_cache", ".ruff_cache")  # fmt: skip


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{cmd} exited with {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools' build/ folder in the tree could hold stale modules that
    # would end up in the wheel, and the build must not rewrite the tree's egg-info.
    src = tmp_path_factory.mktemp("src") / "medflow"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    out = tmp_path_factory.mktemp("wheel")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", out, src],
        cwd=out,
    )  # fmt: skip
    [whl] = out.glob("medflow-*.whl")
    return whl


@pytest.fixture(scope="module")
def wheel_names(wheel) -> list[PurePosixPath]:
    with zipfile.ZipFile(wheel) as zf:
        return [PurePosixPath(n) for n in zf.namelist()]


def _source_packages() -> dict[str, Path]:
    """{package: folder} for every folder with an __init__.py under the package-dir mapping of
    pyproject.toml (links are not followed: medflow/ links the mapped folders)."""
    setuptools_cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {}
    for package, folder in setuptools_cfg["package-dir"].items():
        root = REPO / folder
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = [
                d for d in dirnames if d != "__pycache__" and not (here / d).is_symlink()
            ]
            if "__init__.py" in filenames:
                rel = here.relative_to(root).parts
                found.setdefault(".".join((package, *rel)), here)
    return found


def test_medflow_is_the_only_top_level_package(wheel, wheel_names):
    top = {n.parts[0] for n in wheel_names}
    [dist_info] = [t for t in top if t.endswith(".dist-info")]
    assert top - {dist_info} == {"medflow"}, sorted(top)
    with zipfile.ZipFile(wheel) as zf:
        if f"{dist_info}/top_level.txt" in zf.namelist():
            assert zf.read(f"{dist_info}/top_level.txt").decode().split() == ["medflow"]


def test_every_package_folder_is_in_the_wheel(wheel_names):
    packages = _source_packages()
    assert {"medflow", "medflow.components", "medflow.serving"} <= set(packages)
    shipped = {".".join(n.parent.parts) for n in wheel_names if n.name == "__init__.py"}
    missing = sorted(set(packages) - shipped)
    assert not missing, (
        f"packages not in the wheel (add them to [tool.setuptools] packages): {missing}"
    )
    modules = {str(n) for n in wheel_names if n.suffix == ".py"}
    for package, folder in packages.items():
        for source in folder.glob("*.py"):
            path = "/".join((*package.split("."), source.name))
            assert path in modules, f"{source.relative_to(REPO)} is not in the wheel as {path}"


def test_package_data_is_in_the_wheel(wheel_names):
    names = {str(n) for n in wheel_names}
    for pattern in PACKAGE_DATA:
        for source in REPO.glob(pattern):
            rel = source.relative_to(REPO).as_posix()
            assert rel in names, f"{rel} is not in the wheel"


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (no dependencies) and this environment's
    site-packages visible through a .pth file; returns its bin folder."""
    venv = tmp_path_factory.mktemp("venv")
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", "--without-pip", venv], cwd=venv)
    python = venv / "bin" / "python"
    # Installed before the .pth exists, so pip sees an empty environment (not ours).
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q",
         "--disable-pip-version-check", "--no-index", wheel],
        cwd=venv,
    )  # fmt: skip
    site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=venv
    ).stdout.strip()
    ours = sysconfig.get_path("purelib")
    Path(site, "_medflow_test_deps.pth").write_text(ours + "\n")
    return venv / "bin"


def test_console_script_lists_the_subcommands(installed, tmp_path):
    from medflow.cli import build_parser

    [sub] = [a for a in build_parser()._actions if a.dest == "command"]
    expected = sorted(sub.choices)
    assert expected
    out = _run([installed / "medflow", "--help"], cwd=tmp_path).stdout
    missing = [name for name in expected if name not in out]
    assert not missing, f"`medflow --help` does not mention {missing}:\n{out}"


def test_wheel_imports_outside_the_repository(installed, tmp_path):
    code = f"import medflow, {', '.join(IMPORTS)}; print(medflow.__file__)"
    out = _run([installed / "python", "-c", code], cwd=tmp_path).stdout
    location = Path(out.strip().splitlines()[-1]).resolve()
    assert installed.parent.resolve() in location.parents, (
        f"medflow imported from {location}, not from the wheel"
    )
