"""Autoencoder guard and pretraining benchmark: the autoencoder Trainer's steps in one process.

Guard (``--part guard``): the npz's train images, z-scored with the train mean/std (what the
Transform does), train the guard (``trainer.fit``, the Trainer's loop); its threshold is the
``--quantile`` of the val split's scores (``trainer.calibrate``, as the Trainer does). Scored
then: the val split (in distribution) against

- far OOD, each image through the serving client's preprocessing (``to_model_input`` with the
  guard's PixelSpec, 28x28 grey, no window) after the project's importers wrote it as DICOM:
  the other MedMNIST set, HC18 fetal ultrasound, Sunnybrook cardiac MRI, BCCD blood smears;
  and hippocampus MRI middle slices (NIfTI, scaled per volume to 0..255 and resized with
  PIL, as a Secondary Capture of them would be);
- near OOD: the val images rotated 90 degrees, inverted (255 - x), or through a wrong window
  (centre 96, width 64 of the 0..255 values, rescaled to 0..255).

Reported per set: AUROC (in = val, higher score = OOD), the detection rate at the stored
threshold, and the false-alarm rate on val (the calibration split: about 1 - quantile by
construction) and on a train holdout the guard did not train on.

Transfer (``--part transfer``): a classifier on ``--fraction`` of the labelled train split
(stratified, per seed) from scratch vs its encoder initialised from an autoencoder trained on
all train + val images (labels unused), same budget; val AUC per seed, mean and spread.

    .venv/bin/python benchmarks/autoencoder.py --part guard --in breastmnist
    .venv/bin/python benchmarks/autoencoder.py --part transfer --in breastmnist --seeds 3
    .venv/bin/python benchmarks/autoencoder.py --part latency --limit 200 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = REPO.parent / "shared" / "data"
NPZ = {"breastmnist": "breastmnist.npz", "pneumoniamnist": "pneumoniamnist_trainval.npz"}


def load_npz(name: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (images float32 [n, 28, 28, 1] in 0..255, labels [n])} of train and val."""
    d = np.load(DATA / NPZ[name])
    return {
        s: (d[f"{s}_images"][..., None].astype(np.float32), d[f"{s}_labels"].ravel())
        for s in ("train", "val")
    }


def _dicom_inputs(folder: Path, spec, limit: int) -> np.ndarray:
    from medflow.components.dicom.pixels import load_model_input

    files = sorted(p for p in folder.rglob("*.dcm"))[:limit]
    return np.stack([a for f in files for a, _ in load_model_input(f, spec)][:limit])


def _hippocampus(limit: int) -> np.ndarray:
    import nibabel as nib
    from PIL import Image

    out = []
    for path in sorted((DATA / "hippocampus" / "imagesTr").glob("*.nii.gz"))[:limit]:
        vol = np.asarray(nib.load(str(path)).dataobj, dtype=np.float32)
        sl = vol[:, :, vol.shape[2] // 2]
        sl = 255 * (sl - sl.min()) / max(float(sl.max() - sl.min()), 1e-6)
        img = Image.fromarray(sl.astype(np.uint8)).resize((28, 28), Image.BILINEAR)
        out.append(np.asarray(img, np.float32)[..., None])
    return np.stack(out)


def far_ood(name: str, work: Path, limit: int) -> dict[str, np.ndarray]:
    """Model inputs of other modalities (see the module docstring)."""
    from medflow.components.ingest.hc18_import import import_hc18
    from medflow.components.ingest.sunnybrook_import import import_sunnybrook
    from medflow.components.ingest.voc_import import import_voc
    from medflow.core.pixel_spec import PixelSpec

    spec = PixelSpec(size=(28, 28), channels=1)
    other = "pneumoniamnist" if name == "breastmnist" else "breastmnist"
    sets = {other: load_npz(other)["val"][0][:limit]}
    import_hc18(DATA / "hc18", work / "hc18", limit=limit)
    sets["hc18"] = _dicom_inputs(work / "hc18" / "dicom", spec, limit)
    import_sunnybrook(DATA / "sunnybrook", work / "sunnybrook")
    sets["sunnybrook"] = _dicom_inputs(work / "sunnybrook" / "dicom", spec, limit)
    import_voc(DATA / "bccd", work / "bccd", limit=limit)
    sets["bccd"] = _dicom_inputs(work / "bccd" / "dicom", spec, limit)
    sets["hippocampus"] = _hippocampus(limit)
    return sets


def near_ood(val: np.ndarray) -> dict[str, np.ndarray]:
    window = np.clip((val - 64.0) / 64.0, 0, 1) * 255.0
    return {"rotated90": np.rot90(val, 1, axes=(1, 2)), "inverted": 255.0 - val, "window": window}


def _dataset(x: np.ndarray):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, x))


def train_guard(train: np.ndarray, hp, holdout_fraction: float = 0.1):
    """(model, z-score (mean, std), holdout images): the Trainer's fit on z-scored images."""
    from medflow.components.tasks.autoencoder.trainer import fit

    mean, std = float(train.mean()), float(train.std())
    z = (train - mean) / std
    every = round(1 / holdout_fraction)
    keep = np.arange(len(z)) % every != 0
    model, _, history, _ = fit(hp, _dataset(z[keep]), _dataset(z[~keep]))
    return model, (mean, std), z[~keep], len(history["loss"])


def guard_part(args) -> dict:
    from sklearn.metrics import roc_auc_score

    from medflow.components.tasks.autoencoder.trainer import (
        AEHParams,
        calibrate,
        reconstruction_errors,
    )

    data = load_npz(args.in_)
    hp = AEHParams.from_config(
        {"image_size": 28, "epochs": args.epochs, "kind": args.kind, "seed": args.seed}
    )
    start = time.perf_counter()
    model, (mean, std), holdout, epochs = train_guard(data["train"][0], hp)
    train_s = time.perf_counter() - start

    def scores(x: np.ndarray) -> np.ndarray:
        return reconstruction_errors(model, _dataset((x - mean) / std))

    val = data["val"][0]
    in_scores = scores(val)
    cal = calibrate(in_scores, args.quantile, reconstruction_errors(model, _dataset(holdout)))
    with tempfile.TemporaryDirectory() as tmp:
        sets = {**far_ood(args.in_, Path(tmp), args.limit), **near_ood(val)}
    rows = {}
    for name, x in sets.items():
        s = scores(x)
        y = np.r_[np.zeros(len(in_scores)), np.ones(len(s))]
        rows[name] = {
            "n": len(s),
            "auroc": float(roc_auc_score(y, np.r_[in_scores, s])),
            "detected_at_threshold": float(np.mean(s > cal["threshold"])),
        }
    return {"in": args.in_, "kind": args.kind, "epochs_run": epochs, "train_s": train_s,
            "calibration": cal, "ood": rows}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("guard", "transfer", "latency"), default="guard")
    parser.add_argument("--repeats", type=int, default=5, help="latency: runs per arm")
    parser.add_argument("--in", dest="in_", choices=sorted(NPZ), default="breastmnist")
    parser.add_argument("--kind", choices=("ae", "vae"), default="ae")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--quantile", type=float, default=0.99)
    parser.add_argument("--limit", type=int, default=200, help="images per far-OOD set")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--seeds", type=int, default=3, help="transfer: seeds")
    parser.add_argument("--fraction", type=float, default=0.1, help="transfer: labelled share")
    parser.add_argument("--frozen", type=int, default=5, help="transfer: epochs frozen")
    parser.add_argument("--ae-epochs", type=int, default=30, help="transfer: pretraining epochs")
    parser.add_argument("--noise", type=float, default=0.0, help="transfer: denoising std")
    parser.add_argument(
        "--lr-pretrained", type=float, default=0.0, help="transfer: the init arm's learning rate"
    )
    parser.add_argument(
        "--init-layers", type=int, default=0, help="transfer: copy only the first N conv/BN layers"
    )
    parser.add_argument("--skip-scratch", action="store_true", help="transfer: init arm only")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args()
    if args.part == "guard":
        result = guard_part(args)
    elif args.part == "latency":
        from benchmarks.autoencoder_latency import latency_part

        result = latency_part(args)
    else:
        from benchmarks.autoencoder_transfer import transfer_part

        result = transfer_part(args)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
