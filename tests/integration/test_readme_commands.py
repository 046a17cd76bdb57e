"""The README's commands work as printed (issue 24).

Default tier: every command line of every ``bash`` block parses: a ``medflow`` line with
the real CLI parser (each subcommand and flag exists), ``make`` targets exist in the
Makefile, other programs are on PATH; every repository path the README names exists; the
file the first-hour block predicts on is where the demo writes it.

Slow tier: the block marked ``<!-- readme-test: run -->`` runs in order, in bash, in a fresh
folder (``make run`` and all), with its servers in the background.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.support.command_lines import check_line, words

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
RUN_MARKER = "<!-- readme-test: run -->"
BUILTINS = {"source", ".", "cd", "export", "set", "printf", "echo"}
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
_PATH = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+/?)(?:::\w+)?`")


def bash_blocks(text: str) -> list[tuple[bool, str]]:
    """(marked to run, body) of each ``bash`` block, in order."""
    out = []
    for m in _FENCE.finditer(text):
        if m.group(1) == "bash":
            before = text[: m.start()].rstrip().splitlines()
            out.append((bool(before) and before[-1].strip() == RUN_MARKER, m.group(2)))
    return out


def command_lines(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comment-only lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [
        line for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def pipeline_parts(line: str) -> list[str]:
    """``a | b`` -> ["a", "b"]; leading ``NAME=value`` assignments dropped."""
    parts, current = [], []
    for word in words(line):
        if word == "|":
            parts.append(current)
            current = []
        else:
            current.append(word)
    parts.append(current)
    out = []
    for argv in parts:
        while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", argv[0]):
            argv = argv[1:]
        out.append(" ".join(_quote(w) for w in argv))
    return out


def _quote(word: str) -> str:
    import shlex

    return shlex.quote(word)


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][\w-]*):", text, re.M))


def problems_of(line: str) -> list[str]:
    out = []
    for part in pipeline_parts(line):
        argv = words(part)
        if not argv:
            continue
        if argv[0] == "make":
            missing = [t for t in argv[1:] if not t.startswith("-") and t not in make_targets()]
            out += [f"make target {t!r} not in the Makefile" for t in missing]
        elif argv[0] not in BUILTINS:
            problem = check_line(part, REPO)
            if problem:
                out.append(problem)
    return out


def test_every_readme_command_parses_as_printed():
    blocks = bash_blocks(README.read_text())
    assert sum(run for run, _ in blocks) == 1, f"one block marked {RUN_MARKER}"
    lines = [line for _, body in blocks for line in command_lines(body)]
    assert len(lines) > 25
    problems = [p for line in lines for p in problems_of(line)]
    assert problems == []


def test_the_checker_catches_a_wrong_command():
    assert problems_of("medflow predict x.dcm --modle m")  # a misspelt flag
    assert problems_of("medflow serv --model-base m")  # no such subcommand
    assert problems_of("make runn")
    assert problems_of("printf x | medflow dashboard add-user bob --role boss")
    assert problems_of("medflow dashboard add-user bob --role reviewer") == []


def test_every_repository_path_the_readme_names_exists():
    text = README.read_text()
    named = set(_PATH.findall(text))
    layout = re.search(r"^## Layout.*?^```\n(.*?)^```", text, re.M | re.S).group(1)
    named |= {m for m in re.findall(r"^(\S+/)\s", layout, re.M)}
    named |= {p.strip() for m in re.findall(r"^(\S+/(?:, \S+/)+)\s", layout, re.M)
              for p in m.split(",")}  # fmt: skip
    checked = {p for p in named if not p.startswith(("../", ".medflow"))}
    assert len(checked) > 10
    missing = sorted(p for p in checked if not _exists(p))
    assert missing == []


def _exists(path: str) -> bool:
    """``path`` in the repository; a ``<placeholder>`` segment matches any name."""
    pattern = re.sub(r"<[^>]+>", "*", path.rstrip("/"))
    return any(REPO.glob(pattern)) if "*" in pattern else (REPO / pattern).exists()


def test_first_hour_predicts_a_file_the_demo_writes(tmp_path):
    """The block's predict path is ``.medflow/demo-data/<npz stem>/dicom/val/000000.dcm``."""
    from medflow.commands.demo import DEMO_NPZ, default_data_dir
    from medflow.workflows.demo import import_once

    run_block = next(body for run, body in bash_blocks(README.read_text()) if run)
    predicted = [w for line in command_lines(run_block) for w in words(line) if w.endswith(".dcm")]
    stem = Path(DEMO_NPZ).stem
    assert predicted == [f".medflow/demo-data/{stem}/dicom/val/000000.dcm"]
    # the same layout from a small npz (the demo's npz is large to convert in this tier)
    out = tmp_path / "demo-data" / "breastmnist"
    import_once(default_data_dir() / "breastmnist.npz", out, limit=1)
    assert (out / "dicom" / "val" / "000000.dcm").is_file()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_first_hour_block_runs_in_a_fresh_folder(tmp_path):
    """Runs the marked block in bash with ``set -e`` in a folder holding only the Makefile,
    its inputs and the existing ``.venv`` (a link: set-up itself is not rerun here, its
    inputs are dated before the venv's stamp so ``make`` sees it done)."""
    busy = [p for p in (8500, 8501, 8502) if not _port_free(p)]
    assert not busy, (
        f"ports {busy} are in use: the block serves on TF Serving's and the dashboard's defaults"
    )
    stamp = (REPO / ".venv" / ".medflow-installed").stat().st_mtime
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy2(REPO / name, tmp_path / name)
        os.utime(tmp_path / name, (stamp - 60, stamp - 60))
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    block = next(body for run, body in bash_blocks(README.read_text()) if run)
    script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + block
    (tmp_path / "first-hour.sh").write_text(script)
    env = {**os.environ, "MEDFLOW_SHARED_DATA": str(REPO.parent / "shared" / "data")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # a fresh shell: the venv is not on PATH
    log = tmp_path / "first-hour.log"
    with open(log, "w") as out:  # a file, not a pipe: the servers' children outlive bash
        proc = subprocess.Popen(
            ["bash", "first-hour.sh"], cwd=tmp_path, env=env, text=True,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            code = proc.wait(timeout=1500)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # serve, dashboard and Streamlit
    text = log.read_text()
    assert code == 0, text[-4000:]
    assert "pushed:" in text and "next (each in its own terminal" in text
    assert re.search(r"\b(normal|pneumonia)\b", text) and "class_0" not in text
    assert "user reviewer (reviewer) saved" in text
