"""Does a printed command line run as printed? Its program exists (from the folder it is
run in, or on PATH), and a ``medflow`` line parses with the real CLI parser (every
subcommand and flag exists, values have the right type)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import shutil
from pathlib import Path

from medflow.cli import build_parser


def words(line: str) -> list[str]:
    """The shell words of ``line`` (comments dropped; a trailing ``&`` too)."""
    out = shlex.split(line, comments=True)
    return out[:-1] if out and out[-1] == "&" else out


def is_medflow(program: str) -> bool:
    return program == "medflow" or program.endswith("/medflow")


def check_medflow_args(args: list[str]) -> str | None:
    """None when the real parser takes ``args``; else what it said."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(args)
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue() else str(exc.code)
    return None


def project_scripts() -> set[str]:
    """The console scripts ``pyproject.toml`` declares (``make setup`` installs them)."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[)", text, re.M | re.S)
    return set(re.findall(r"^([\w.-]+)\s*=", section.group(1), re.M)) if section else set()


def check_line(line: str, cwd: Path) -> str | None:
    """None when ``line`` can run as printed from ``cwd``; else the problem."""
    argv = words(line)
    if not argv:
        return None
    program = argv[0]
    if "/" in program:
        path = cwd / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{program}: no such program from {cwd}"
    elif not is_medflow(program) and program not in project_scripts():
        if shutil.which(program) is None:
            return f"{program}: not on PATH"
    if is_medflow(program):
        problem = check_medflow_args(argv[1:])
        return f"{line!r}: {problem}" if problem else None
    return None
