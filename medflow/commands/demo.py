"""``medflow demo`` (what ``make run`` runs): real PneumoniaMNIST chest X-rays -> DICOM ->
the whole local pipeline -> a pushed model, with the evaluation printed at the end."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from medflow.core.errors import InputError
from medflow.pipelines import config

DEMO_NPZ = "pneumoniamnist_trainval.npz"
DEMO_CLASSES = ("normal", "pneumonia")


def default_data_dir() -> Path:
    """``$MEDFLOW_SHARED_DATA``, else ``shared/data`` beside the checkout."""
    env = os.environ.get("MEDFLOW_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="end-to-end demo on real data (PneumoniaMNIST -> DICOM -> pipeline -> model)",
        description="Converts PneumoniaMNIST train+val into DICOM files with a label manifest "
        "(val becomes the eval split), runs the full local pipeline and prints the evaluation.",
    )
    parser.add_argument("--workdir", default=config.DEFAULT_WORKDIR, help="work folder")
    parser.add_argument(
        "--npz", default=None, help=f"MedMNIST npz (default shared/data/{DEMO_NPZ})"
    )
    parser.add_argument("--limit", type=int, default=None, help="images per split (quick runs)")
    parser.add_argument("--epochs", type=int, default=None, help="maximum training epochs")
    parser.add_argument("--workers", type=int, default=2, help="ingestion processes")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from medflow.components.ingest.npz_import import import_npz
    from medflow.pipelines.local_runner import run_local
    from medflow.pipelines.run_summary import format_summary

    npz = Path(args.npz) if args.npz else default_data_dir() / DEMO_NPZ
    if not npz.is_file():
        raise InputError(
            f"demo data {npz} not found; pass --npz PATH or set MEDFLOW_SHARED_DATA to the folder "
            f"holding {DEMO_NPZ}"
        )
    workdir = Path(args.workdir)
    start = time.perf_counter()
    print(f"[demo] converting {npz.name} (train + val) to DICOM ...", flush=True)
    manifest = import_npz(
        npz,
        workdir / "demo-data" / npz.stem,
        splits=("train", "val"),
        limit=args.limit,
        progress=True,
    )
    print(
        f"[demo] {manifest.parent / 'dicom'} + {manifest.name} in "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )
    hyperparameters = {"epochs": args.epochs} if args.epochs else {}
    summary = run_local(
        manifest.parent / "dicom",
        workdir=workdir,
        label_manifest=manifest,
        labels=DEMO_CLASSES,
        ingest_workers=args.workers,
        hyperparameters=hyperparameters,
    )
    print(format_summary(summary))
    if summary.get("pushed"):
        base = Path(summary["model_path"]).parent.parent
        print(f"[demo] serve it: medflow serve --model-base {base}")
    print(f"[demo] done in {time.perf_counter() - start:.0f} s")
    return 0
