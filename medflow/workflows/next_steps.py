"""The commands to run after a pipeline run (serve, predict, add a reviewer, open the
dashboard), printed so that they run as printed from the folder the run started in."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

from medflow.pipelines.config import DASHBOARD_PORT, SERVING_GRPC_PORT, SERVING_REST_PORT


def medflow_command() -> str:
    """How to call this ``medflow`` from the current folder: ``medflow`` when the shell finds
    this very program on PATH, else its path (``.venv/bin/medflow`` from the repo root)."""
    exe = Path(sys.executable).parent / "medflow"
    if not exe.exists():
        return "medflow"
    found = shutil.which("medflow")
    if found and Path(found).resolve() == exe.resolve():
        return "medflow"
    return shown_path(exe)


def shown_path(path: str | Path) -> str:
    """``path`` relative to the current folder when it is below it, else absolute; quoted
    for a POSIX shell."""
    path = Path(path).absolute()
    try:
        text = str(path.relative_to(Path.cwd()))
    except ValueError:
        text = str(path)
    return shlex.quote(text)


def next_steps(summary: dict[str, Any], example: str | Path | None = None) -> list[str]:
    """The lines that say what to run next, or why there is nothing to serve.

    Args:
        summary: :func:`medflow.pipelines.local_runner.run_local`'s summary (``model_path``
            ``<models>/<name>/<version>`` of the pushed or already-pushed model).
        example: a DICOM file or folder to try ``predict`` on.
    """
    model_path = summary.get("model_path")
    if not model_path:
        return [
            "next: nothing to serve (no blessed model pushed); see why above, adjust "
            "--threshold or the data, and run again"
        ]
    version_dir = Path(model_path)
    base, name = version_dir.parent.parent, version_dir.parent.name
    medflow = medflow_command()
    lines = ["next (each in its own terminal, from this folder):"]
    lines.append(
        f"  {medflow} serve --model-base {shown_path(base)}   # gRPC {SERVING_GRPC_PORT}, REST {SERVING_REST_PORT}"
    )
    target = shown_path(example) if example else "DICOM_FILES"
    lines.append(
        f"  {medflow} predict {target} --server localhost:{SERVING_GRPC_PORT} --model {name}"
    )
    lines.append(f"  {medflow} dashboard add-user reviewer --role reviewer   # asks a password")
    lines.append(f"  {medflow} dashboard   # then open http://localhost:{DASHBOARD_PORT}")
    activate = Path(sys.executable).parent / "activate"
    if medflow != "medflow" and activate.is_file():
        lines.append(f"  (or `source {shown_path(activate)}` once, then plain `medflow ...`)")
    return lines


def first_dicom(folder: str | Path) -> Path | None:
    """The first ``*.dcm`` file below ``folder`` in name order (None: none)."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(".dcm"):
                return Path(root) / name
    return None
