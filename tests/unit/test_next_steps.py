"""The next commands a run prints run as printed from the folder it ran in (issue 24,
items 3 and 7): serve, predict, add a dashboard user, open the dashboard."""

from __future__ import annotations

import os
from pathlib import Path

from medflow.workflows.next_steps import next_steps
from tests.support.command_lines import check_line, words

REPO = Path(__file__).resolve().parents[2]


def _summary(tmp_path: Path) -> dict:
    version = tmp_path / "work" / "models" / "medflow-classifier" / "17"
    version.mkdir(parents=True)
    return {"model_path": str(version), "model_version": 17, "pushed": True}


def test_commands_run_as_printed_from_the_repo_root(tmp_path, monkeypatch):
    example = tmp_path / "x.dcm"
    example.write_bytes(b"")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a fresh shell: the venv is not on PATH
    lines = next_steps(_summary(tmp_path), example)
    commands = [line for line in lines[1:] if not line.strip().startswith("(")]
    assert len(commands) == 4
    assert all(words(c)[0] == ".venv/bin/medflow" for c in commands)
    assert [check_line(c, REPO) for c in commands] == [None] * 4
    assert words(commands[0])[1:] == ["serve", "--model-base", str(tmp_path / "work/models")]
    assert "--model medflow-classifier" in commands[1] and str(example) in commands[1]
    assert "http://localhost:8502" in commands[3]
    assert "source .venv/bin/activate" in lines[-1]


def test_plain_medflow_when_the_venv_is_on_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{REPO / '.venv' / 'bin'}{os.pathsep}/usr/bin:/bin")
    lines = next_steps(_summary(tmp_path))
    assert words(lines[1])[:4] == ["medflow", "serve", "--model-base", "work/models"]
    assert all(check_line(line, tmp_path) is None for line in lines[1:])


def test_nothing_to_serve_says_so(tmp_path):
    assert next_steps({"model_path": None})[0].startswith("next: nothing to serve")
