"""Pretraining -> transfer part of ``benchmarks/autoencoder.py`` (``--part transfer``).

An autoencoder (the Trainer's ``fit``) learns the unlabelled pool: the train and val images
of the npz, labels unused (the issue's "both splits' images"; val labels are never read by
it). Its encoder weights are saved as an export writes them, and for each seed a classifier
(the classification Trainer's ``fit``, small_cnn of the same width) trains on a stratified
``--fraction`` of the labelled train split twice with the same budget: from scratch, and
with ``init`` (frozen for ``--frozen`` epochs, then all layers). No early stopping (patience
0): val is only measured, never used to choose a model. Reported: val AUC per seed, mean and
standard deviation per arm.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.autoencoder import _dataset, load_npz


def pretrain(
    images: np.ndarray, width: int, epochs: int, out: Path, noise: float = 0.0, layers: int = 0
) -> Path:
    """Train the autoencoder on ``images`` (z-scored; ``noise``: denoising) and save its
    encoder as an export does (``layers`` > 0: only its first conv/BN layers, which is all
    ``init`` then copies)."""
    from medflow.components.models.encoder_init import ENCODER_WEIGHTS
    from medflow.components.tasks.autoencoder.export import encoder_weights
    from medflow.components.tasks.autoencoder.model import ENCODER
    from medflow.components.tasks.autoencoder.trainer import AEHParams, fit

    hp = AEHParams.from_config(
        {
            "image_size": 28,
            "width": width,
            "epochs": epochs,
            "patience": 0,
            "latent_dim": 64,
            "noise": noise,
        }  # fmt: skip
    )
    every = 10
    keep = np.arange(len(images)) % every != 0
    model, _, _, _ = fit(hp, _dataset(images[keep]), _dataset(images[~keep]))
    path = out / ENCODER_WEIGHTS
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = encoder_weights(model.get_layer(ENCODER))
    if layers:
        weights = {k: v for k, v in weights.items() if int(k.split("_")[0]) < layers}
    np.savez(path, **weights)
    return out


def subset(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a stratified ``fraction`` of ``labels`` (at least 2 per class)."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked += list(rng.choice(idx, max(2, round(fraction * len(idx))), replace=False))
    return np.sort(np.array(picked))


def val_auc(hp, x, y, vx, vy) -> float:
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    from medflow.components.models.training import fit

    train = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int64)))
    val = tf.data.Dataset.from_tensor_slices((vx, vy.astype(np.int64)))
    model, _, _ = fit(hp, train, val)
    probs = np.asarray(model.predict(vx, batch_size=256, verbose=0))[:, 1]
    return float(roc_auc_score(vy, probs))


def transfer_part(args) -> dict:
    from medflow.components.models.hparams import HParams

    data = load_npz(args.in_)
    (tx, ty), (vx, vy) = data["train"], data["val"]
    mean, std = float(tx.mean()), float(tx.std())
    tx, vx = (tx - mean) / std, (vx - mean) / std
    width, start = 16, time.perf_counter()
    result: dict = {"in": args.in_, "fraction": args.fraction, "epochs": args.epochs,
                    "frozen_epochs": args.frozen, "noise": args.noise, "init_layers": args.init_layers,
                    "lr_pretrained": args.lr_pretrained, "scratch": [], "pretrained": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        pool = np.concatenate([tx, vx])
        init = pretrain(pool, width, args.ae_epochs, Path(tmp), args.noise, args.init_layers)
        result["pretrain_s"] = time.perf_counter() - start
        for seed in range(args.seeds):
            idx = subset(ty, args.fraction, seed)
            base = {"image_size": 28, "labels": ["0", "1"], "backbone": "small_cnn",
                    "width": width, "epochs": args.epochs, "patience": 0, "seed": seed,
                    "validation_fraction": 0, "batch_size": 32}  # fmt: skip
            arms = {
                "scratch": {},
                "pretrained": {
                    "init": str(init),
                    "init_frozen_epochs": args.frozen,
                    **({"learning_rate": args.lr_pretrained} if args.lr_pretrained else {}),
                },  # fmt: skip
            }
            if args.skip_scratch:  # same seeds, same scratch runs (they repeat to the digit)
                del arms["scratch"]
            for arm, extra in arms.items():
                hp = HParams.from_config({**base, **extra})
                result[arm].append(val_auc(hp, tx[idx], ty[idx], vx, vy))
    for arm in ("scratch", "pretrained"):
        aucs = np.array(result[arm] or [np.nan])
        result[f"{arm}_mean"], result[f"{arm}_std"] = (
            float(aucs.mean()),
            float(aucs.std(ddof=1) if len(aucs) > 1 else 0.0),
        )
    result["labelled_images"] = int(len(subset(ty, args.fraction, 0)))
    result["total_s"] = time.perf_counter() - start
    return result
