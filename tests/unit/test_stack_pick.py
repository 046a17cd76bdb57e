"""`make setup` picks the stack from what the machine offers (issue 26): the next stack
(Python 3.12/3.13, TFX 1.21, requirements-next.lock) where glibc >= 2.39 and such an
interpreter exist, else the default (Python 3.10, TFX 1.16, requirements.lock); STACK=
forces either. The glibc version is stood in for (MEDFLOW_GLIBC_VERSION) and interpreters
are small scripts answering the version check the way a real one would."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

PICK = REPO / "scripts/next-stack/pick-stack"


def fake_python(tmp_path: Path, version: str) -> Path:
    """An executable that passes pick-stack's version check for ``version`` only."""
    path = tmp_path / f"python{version}"
    path.write_text(f'#!/bin/sh\ncase "$2" in *"\'{version}\'"*) exit 0;; esac\nexit 1\n')
    path.chmod(0o755)
    return path


def pick(stack: str | None, *, glibc: str, py310: Path | None, next_py: Path | None) -> str:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/nonexistent",  # no pyenv interpreters
        "MEDFLOW_GLIBC_VERSION": glibc,
        "PYTHON310": str(py310 or ""),
        "NEXT_PYTHON": str(next_py or ""),
    }
    args = [str(PICK)] + ([stack] if stack else [])
    return subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def pythons(tmp_path):
    return fake_python(tmp_path, "3.10"), fake_python(tmp_path, "3.13")


def test_auto_picks_next_where_glibc_and_python_allow(pythons):
    py310, py313 = pythons
    assert pick(None, glibc="2.41", py310=py310, next_py=py313) == f"next {py313}"
    assert pick("auto", glibc="2.39", py310=py310, next_py=py313) == f"next {py313}"


def test_auto_falls_back_to_default_on_old_glibc_or_without_python(pythons, tmp_path):
    py310, py313 = pythons
    assert pick("auto", glibc="2.36", py310=py310, next_py=py313) == f"default {py310}"
    assert pick("auto", glibc="2.38", py310=py310, next_py=py313) == f"default {py310}"
    # A NEXT_PYTHON that is not 3.12/3.13 does not count as one.
    (tmp_path / "x").mkdir()
    wrong = fake_python(tmp_path / "x", "3.11")
    assert pick("auto", glibc="2.41", py310=py310, next_py=wrong).startswith("default ")


def test_forced_stacks_and_their_errors(pythons):
    py310, py313 = pythons
    assert pick("default", glibc="2.41", py310=py310, next_py=py313) == f"default {py310}"
    out = pick("next", glibc="2.36", py310=py310, next_py=py313)
    assert out.startswith("error: the next stack needs glibc >= 2.39 (this system has 2.36)")
    out = pick("next", glibc="2.41", py310=py310, next_py=py310)
    assert out.startswith("error: python3.13 or python3.12 not found")
    assert pick("default", glibc="2.36", py310=py313, next_py=py313).startswith(
        "error: python3.10 not found"
    )
    assert pick("bogus", glibc="2.41", py310=py310, next_py=py313).startswith(
        "error: STACK=bogus is not a stack"
    )


def test_make_setup_installs_the_picked_stacks_lock(pythons):
    py310, py313 = pythons
    env = {**os.environ, "MEDFLOW_GLIBC_VERSION": "2.41", "NEXT_PYTHON": str(py313)}
    env.pop("MAKEFLAGS", None)

    def plan(*args: str) -> str:
        cmd = ["make", "-n", "-B", "-C", str(REPO), "setup", *args]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout

    assert "medflow setup: next stack" in plan() and "sync" in plan()
    assert "requirements-next.lock" in plan() and ".medflow-installed-next" in plan()
    default = plan("STACK=default", f"PYTHON310={py310}")
    assert "medflow setup: default stack" in default and "requirements-next.lock" not in default
