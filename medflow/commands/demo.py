"""``medflow demo`` (what ``make run`` runs): real PneumoniaMNIST chest X-rays -> DICOM ->
the whole local pipeline -> a pushed model, with the evaluation printed at the end."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from medflow.pipelines import config

DEMO_NPZ = "pneumoniamnist_trainval.npz"


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
    from medflow.workflows.demo import run_demo

    npz = Path(args.npz) if args.npz else default_data_dir() / DEMO_NPZ
    run_demo(npz, Path(args.workdir), limit=args.limit, epochs=args.epochs, workers=args.workers)
    return 0
