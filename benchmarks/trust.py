"""Calibration, operating point and intervals of the real pipeline on MedMNIST npz data.

Each dataset runs the local pipeline (npz -> DICOM -> ... -> Trainer -> Evaluator -> Pusher)
with train = the npz train split and eval = its val split, then prints what the pushed
contract records: the calibration map and its ECE / Brier score before and after (judged by
a two-fold cross-fit on eval), the operating point and its sensitivity / specificity on
eval, and the 95% bootstrap intervals (patient-level; MedMNIST has one image per patient).
The numbers are on val, where calibration and the cut-off were also fitted: no test split
is used (or present).

    .venv/bin/python benchmarks/trust.py [--npz PATH ...] [--epochs N] [--seeds 42 ...]
        [--operating-point RULE] [--calibration METHOD] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))
DEFAULT_NPZ = ("pneumoniamnist_trainval.npz", "breastmnist.npz")


def run_once(npz: Path, workdir: Path, hparams: dict) -> dict:
    """One pipeline run; the pushed contract's trust fields and TFMA's overall metrics."""
    from medflow.components.ingest.npz_import import import_npz
    from medflow.core.contract import ModelContract
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.local_runner import run_local

    manifest = import_npz(npz, workdir / "data", splits=("train", "val"))
    config = PipelineConfig(
        data_root=str(manifest.parent / "dicom"),
        label_manifest=str(manifest),
        hyperparameters=hparams,
        thresholds={"min_auc": 0.5},
        enable_cache=False,
    )
    start = time.perf_counter()
    summary = run_local(config, workdir=workdir, progress=None)
    seconds = time.perf_counter() - start
    if not summary.get("model_path"):
        raise SystemExit(f"{npz.name}: no model pushed: {summary.get('blessing_failures')}")
    contract = ModelContract.load(Path(summary["model_path"]))
    cal = dict(contract.calibration)
    for side in ("before", "after"):
        if cal.get(side):
            cal[side] = {k: v for k, v in cal[side].items() if k != "reliability"}
    return {
        "seconds": seconds,
        "trainer_seconds": summary["components"]["Trainer"].get("seconds"),
        "calibration": cal,
        "operating_point": dict(contract.operating_point),
        "intervals": contract.metrics.get("eval_intervals", {}).get("metrics", {}),
        "tfma": {
            k: v
            for k, v in contract.metrics.get("eval", {}).items()
            if k in ("auc", "auc_lower", "auc_upper", "binary_accuracy", "example_count")
        },
    }


def show(name: str, seed: int, r: dict) -> None:
    cal, point = r["calibration"], r["operating_point"]
    print(f"\n{name} seed {seed}: pipeline {r['seconds']:.0f} s")
    print(f"  TFMA on eval (val): {r['tfma']}")
    before, after = cal.get("before") or {}, cal.get("after") or {}
    print(
        f"  calibration {cal.get('method')} {cal.get('params')}: ECE {before.get('ece', 0):.4f}"
        f" -> {after.get('ece', float('nan')):.4f}, Brier {before.get('brier', 0):.4f} -> "
        f"{after.get('brier', float('nan')):.4f} ({cal.get('judged_on')})"
    )
    print(
        f"  operating point {point.get('rule')}: cut-off {point.get('threshold', 0):.4f}, "
        f"sensitivity {point.get('sensitivity', 0):.3f}, specificity "
        f"{point.get('specificity', 0):.3f} on {point.get('split')}"
    )
    for metric, m in r["intervals"].items():
        print(f"  {metric:12s} {m['value']:.3f}  95% CI [{m['lower']:.3f}, {m['upper']:.3f}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", action="append", help="MedMNIST npz (default both)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--operating-point", default="youden")
    parser.add_argument("--calibration", default="temperature")
    parser.add_argument("--hparam", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--workdir", help="keep the runs' work folders under this folder")
    args = parser.parse_args()
    from medflow.commands.pipeline import parse_assignments

    extra = parse_assignments(args.hparam, "--hparam")
    results = {}
    for npz in [Path(p) for p in args.npz or [SHARED / n for n in DEFAULT_NPZ]]:
        for seed in args.seeds:
            hparams = {
                "epochs": args.epochs,
                "seed": seed,
                "operating_point": args.operating_point,
                "calibration": args.calibration,
                **extra,
            }
            if args.workdir:
                r = run_once(npz, Path(args.workdir) / f"{npz.stem}-{seed}", hparams)
            else:
                with tempfile.TemporaryDirectory(prefix="medflow-trust-") as tmp:
                    r = run_once(npz, Path(tmp), hparams)
            results[f"{npz.stem}/{seed}"] = r
            show(npz.stem, seed, r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
