"""Model quality of classification recipes on a MedMNIST val split, several seeds.

Each recipe (a set of Trainer hyperparameters) is trained with the Trainer's own
``components.models.training.fit`` on the npz train split (early stopping on a 10 % holdout
of train, as the Trainer), then scored on the val split: AUC; the calibration methods'
out-of-fold ECE (two-fold cross-fit on val, as the Trainer reports it) against the
uncalibrated ECE; and sensitivity / specificity / accuracy at the Youden cut-off chosen on
val. Mean +- sd over the seeds, and training minutes. Val is both where recipes are compared
and where the numbers are measured, so the best recipe's val AUC is optimistic; the judging
test splits are not here.

    .venv/bin/python benchmarks/quality.py --npz breastmnist.npz --seeds 1 2 3 \
        --recipe base: --recipe resnet18:backbone=resnet18,epochs=60 [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))
METHODS = ("temperature", "platt", "isotonic")


def parse_recipe(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` -> (name, hyperparameters)."""
    from medflow.commands.pipeline import parse_assignments

    name, _, rest = text.partition(":")
    return name, parse_assignments([kv for kv in rest.split(",") if kv], "--recipe")


def one_run(npz: Path, hparams: dict) -> dict:
    """Train once (bare Keras, the Trainer's fit) and score the val split."""
    from benchmarks.npz_examples import load_npz_split
    from benchmarks.pipeline import bare_keras
    from medflow.components.models import bootstrap, calibration
    from medflow.components.models.operating_point import Rule, choose
    from medflow.components.tasks.classification.trust import crossfit

    start = time.perf_counter()
    _, scorer = bare_keras(npz, hparams)
    minutes = (time.perf_counter() - start) / 60
    x, y = load_npz_split(npz, "val")
    p1 = scorer(x).astype(np.float64)
    probs = np.stack([1 - p1, p1], axis=1)
    patients = np.arange(len(y))  # MedMNIST: one image per patient
    out = {
        "minutes": minutes,
        "auc": bootstrap.auc(y, p1),
        "ece_raw": calibration.expected_calibration_error(probs, y),
    }
    for method in METHODS:
        oof = crossfit(method, probs, y, patients)
        out[f"ece_{method}"] = calibration.expected_calibration_error(oof, y)
    point = choose(Rule("youden"), p1, y)
    out.update(
        sensitivity=point.sensitivity,
        specificity=point.specificity,
        accuracy=float(np.mean((p1 >= point.threshold) == (y == 1))),
    )
    return out


def summarise(runs: list[dict]) -> dict[str, str]:
    return {
        k: f"{statistics.mean(r[k] for r in runs):.3f} ± "
        f"{statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0:.3f}"
        for k in runs[0]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", default=str(SHARED / "breastmnist.npz"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--recipe", action="append", default=[], help="NAME:key=value,...")
    parser.add_argument("--json", help="write per-seed results here")
    args = parser.parse_args()
    results = {}
    for text in args.recipe or ["default:"]:
        name, hparams = parse_recipe(text)
        runs = [one_run(Path(args.npz), {**hparams, "seed": s}) for s in args.seeds]
        results[name] = {"hparams": hparams, "runs": runs, "summary": summarise(runs)}
        print(f"{Path(args.npz).stem} {name} {hparams} seeds {args.seeds}:", flush=True)
        for key, value in results[name]["summary"].items():
            print(f"  {key:18s} {value}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
