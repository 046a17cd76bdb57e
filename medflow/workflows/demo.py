"""The end-to-end demo (``make run``): real PneumoniaMNIST chest X-rays -> DICOM -> the whole
local pipeline -> a pushed model, with the evaluation printed at the end."""

from __future__ import annotations

import time
from pathlib import Path

from medflow.components.ingest.npz_import import import_npz
from medflow.core.errors import InputError
from medflow.pipelines.config import PipelineConfig
from medflow.pipelines.local_runner import run_local
from medflow.pipelines.run_summary import format_summary

DEMO_CLASSES = ("normal", "pneumonia")


def run_demo(
    npz: Path,
    workdir: Path,
    *,
    limit: int | None = None,
    epochs: int | None = None,
    workers: int = 2,
) -> dict:
    """Convert ``npz`` (train + val; val becomes the eval split) to DICOM with a label
    manifest, run the pipeline on it under ``workdir`` and print its summary."""
    if not npz.is_file():
        raise InputError(
            f"demo data {npz} not found; pass --npz PATH or set MEDFLOW_SHARED_DATA to the folder "
            f"holding {npz.name}"
        )
    start = time.perf_counter()
    print(f"[demo] converting {npz.name} (train + val) to DICOM ...", flush=True)
    manifest = import_npz(
        npz, workdir / "demo-data" / npz.stem, splits=("train", "val"), limit=limit, progress=True
    )
    print(
        f"[demo] {manifest.parent / 'dicom'} + {manifest.name} in "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )
    config = PipelineConfig(
        data_root=str(manifest.parent / "dicom"),
        label_manifest=str(manifest),
        labels=DEMO_CLASSES,
        ingest_workers=workers,
        hyperparameters={"epochs": epochs} if epochs else {},
    )
    summary = run_local(config, workdir=workdir)
    print(format_summary(summary))
    if summary.get("pushed"):
        base = Path(summary["model_path"]).parent.parent
        print(f"[demo] serve it: medflow serve --model-base {base}")
    print(f"[demo] done in {time.perf_counter() - start:.0f} s")
    return summary
