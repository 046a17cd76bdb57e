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

``--ablation`` runs :data:`ABLATIONS` (each recipe element on and off, same epochs) instead
of ``--recipe``. ``--dataset hc18`` / ``--dataset sunnybrook`` ablate the U-Net the same way
(the segmentation Trainer's ``fit``; HC18: train split -> its eval split of other fetuses;
Sunnybrook: leave-one-patient-out over the 5 patients, as ``benchmarks/segmentation.py``):
Dice at 0.5 and at the cut-off chosen for Dice on the held-out images (in sample for the
cut-off), HD95 (mm), minutes. ``--ece-intervals JSON`` prints, from a classification JSON
this script wrote, each run's ECE raw and temperature-calibrated (out of fold) with a 95%
bootstrap interval.
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
    arrays = {"val_labels": y.tolist(), "val_scores": p1.tolist()}
    for method in METHODS:
        oof = crossfit(method, probs, y, patients)
        out[f"ece_{method}"] = calibration.expected_calibration_error(oof, y)
        arrays[f"val_scores_{method}"] = oof[:, 1].tolist()
    point = choose(Rule("youden"), p1, y)
    out.update(
        sensitivity=point.sensitivity,
        specificity=point.specificity,
        accuracy=float(np.mean((p1 >= point.threshold) == (y == 1))),
    )
    return {**out, "arrays": arrays}


# Each recipe element on and off from the default, same epochs (issue 21).
ABLATIONS = {
    "classification": [
        "defaults_large:recipe=large",
        "small:recipe=small",
        "small_lr1e-3:recipe=small,learning_rate=0.001",
        "small_batch64:recipe=small,batch_size=64",
        "small_earlystop:recipe=small,patience=8",
        "small_noclassweight:recipe=small,class_weight=none",
        "small_noaugment:recipe=small,augment=false",
    ],
    "segmentation": [
        "defaults:",
        "noaugment:augment=false",
        "earlystop:patience=8",
        "lr1e-3:learning_rate=0.001",
        "batch4:batch_size=4",
    ],
}


def seg_run(dataset: str, data, hparams: dict) -> dict:
    """Train the U-Net per held-out set (HC18: the eval split; Sunnybrook: each patient)
    and score the held-out images."""
    import tensorflow as tf

    from benchmarks.segmentation import trainer_run
    from medflow.components.tasks.segmentation.trainer import SegHParams
    from medflow.components.tasks.segmentation.trust import choose_threshold, dice_at

    hp = SegHParams.from_config(hparams)
    probs, masks, spacing, seconds = [], [], [], 0.0
    for train, held in data:
        val = held[:2]  # monitoring only, unless early stopping is on:
        if hp.patience > 0:  # then it watches every 10th training image, never held-out ones
            keep = np.arange(len(train[0])) % 10 != 0
            train, val = (train[0][keep], train[1][keep]), (train[0][~keep], train[1][~keep])
        model, _, train_s = trainer_run(hp, train, val)
        seconds += train_s
        out = model.predict(tf.constant(held[0]), batch_size=16, verbose=0)
        probs.append(np.asarray(out).reshape(held[1].shape))
        masks.append(held[1] > 0)
        spacing += list(held[2])
    probs, masks = np.concatenate(probs), np.concatenate(masks)
    cut = choose_threshold(probs, masks)
    from medflow.components.tasks.segmentation.metrics import hausdorff95_mm

    hd95 = [hausdorff95_mm(p >= 0.5, m, s) for p, m, s in zip(probs, masks, spacing, strict=True)]
    return {
        "minutes": seconds / 60,
        "dice": float(dice_at(probs, masks, 0.5).mean()),
        "dice_at_chosen": float(dice_at(probs, masks, cut).mean()),
        "chosen_threshold": cut,
        "hd95_mm": float(np.mean(hd95)),
    }


def seg_data(dataset: str, size: int) -> list:
    """[(train, held-out)] of (images, masks, spacings): HC18's one split by fetus, or
    Sunnybrook's five leave-one-patient-out folds (z-scored with train statistics)."""
    import tempfile

    from benchmarks import segmentation as seg

    work = Path(tempfile.mkdtemp(prefix=f"quality-{dataset}-"))
    if dataset == "hc18":
        train, test, _ = seg.prepare(size, work)
        return [(train[:3], test[:3])]
    data, _ = seg.prepare_sunnybrook(size, work)
    folds = []
    for patient in sorted(set(data["patient"].tolist())):
        held = data["patient"] == patient
        x_tr, x_te = data["image"][~held], data["image"][held]
        mean, std = x_tr.mean(), x_tr.std()
        spacing = np.array(data["spacing"], dtype=object)
        folds.append(
            (
                ((x_tr - mean) / std, data["mask"][~held], spacing[~held]),
                ((x_te - mean) / std, data["mask"][held], spacing[held]),
            )
        )
    return folds


def ece_intervals(path: str) -> None:
    """Each run's ECE (raw; temperature, out of fold) with its 95% bootstrap interval."""
    from medflow.components.models import bootstrap, calibration

    for name, result in json.loads(Path(path).read_text(encoding="utf-8")).items():
        for seed, run in enumerate(result["runs"], 1):
            arrays = run["arrays"]
            y = np.asarray(arrays["val_labels"])
            for key in ("val_scores", "val_scores_temperature"):
                p1 = np.asarray(arrays[key])
                probs = np.stack([1 - p1, p1], axis=1)
                ece = calibration.expected_calibration_error(probs, y)
                low, high = bootstrap.bootstrap(
                    lambda i, probs=probs, y=y: calibration.expected_calibration_error(
                        probs[i], y[i]
                    ),
                    np.arange(len(y)),
                )
                print(f"{name} run {seed} {key}: ECE {ece:.3f} [{low:.3f}, {high:.3f}]")


def summarise(runs: list[dict]) -> dict[str, str]:
    return {
        k: f"{statistics.mean(r[k] for r in runs):.3f} ± "
        f"{statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0:.3f}"
        for k in runs[0]
        if k != "arrays"
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", default=str(SHARED / "breastmnist.npz"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--recipe", action="append", default=[], help="NAME:key=value,...")
    parser.add_argument("--json", help="write per-seed results here")
    parser.add_argument("--ablation", action="store_true", help="run ABLATIONS")
    parser.add_argument("--dataset", choices=("hc18", "sunnybrook"), help="segmentation")
    parser.add_argument("--size", type=int, default=64, help="segmentation input rows = cols")
    parser.add_argument("--ece-intervals", metavar="JSON", help="see the module doc")
    args = parser.parse_args()
    if args.ece_intervals:
        ece_intervals(args.ece_intervals)
        return
    kind = "segmentation" if args.dataset else "classification"
    recipes = ABLATIONS[kind] if args.ablation else args.recipe or ["default:"]
    data = seg_data(args.dataset, args.size) if args.dataset else None
    label = args.dataset or Path(args.npz).stem
    results = {}
    for text in recipes:
        name, hparams = parse_recipe(text)
        if data is not None:
            hparams = {"image_size": args.size, **hparams}
            runs = [seg_run(args.dataset, data, {**hparams, "seed": s}) for s in args.seeds]
        else:
            runs = [one_run(Path(args.npz), {**hparams, "seed": s}) for s in args.seeds]
        results[name] = {"hparams": hparams, "runs": runs, "summary": summarise(runs)}
        print(f"{label} {name} {hparams} seeds {args.seeds}:", flush=True)
        for key, value in results[name]["summary"].items():
            print(f"  {key:18s} {value}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
