"""Transfer from self-supervised pretraining: a classifier's backbone (or a U-Net's
contracting path) initialised from the encoder of a pushed model that saved one
(``assets.extra/encoder.weights.npz``: the models that guard others save the backbone they
encode with, built by the same functions), then fine-tuned with the initialised layers frozen
for ``init_frozen_epochs`` and with all layers after. The weights go into the model's first
conv/BN layers in build order: a classifier's backbone of the same kind and width, or a
U-Net's first three levels from a ``small_cnn`` encoder of the U-Net's width (the same
two-conv VGG stages).

``--hparam init=PATH`` names a pushed version folder, its model folder (the newest version is
taken) or a Trainer's Model artifact (``Format-Serving`` inside).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

ENCODER_WEIGHTS = os.path.join("assets.extra", "encoder.weights.npz")
# The layers an encoder's weights go into, in build order (the backbones' conv/BN stack).
WEIGHT_LAYERS = ("Conv2D", "BatchNormalization")


def resolve(path: str) -> Path:
    """The encoder weights file of ``path`` (see the module docstring).

    Raises:
        ValueError: none there (the message says what to pass).
    """
    root = Path(path)
    candidates = [root, root / "Format-Serving"]
    versions = sorted((p for p in root.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)) \
        if root.is_dir() else []  # fmt: skip
    candidates += versions[-1:]
    for folder in candidates:
        if (folder / ENCODER_WEIGHTS).is_file():
            return folder / ENCODER_WEIGHTS
    raise ValueError(
        f"init={path}: no {ENCODER_WEIGHTS} there; pass a pushed version folder (or its model "
        "folder) of a model trained to reconstruct images, e.g. a guard (<model>-guard)"
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def contract_lineage(training: dict[str, Any]) -> dict[str, Any]:
    """The pushed contract's ``training_data`` entry on transfer: ``{"init": {...}}`` (the
    initialising model's name, version and task from its own contract, the folder and the
    encoder's SHA-256) when the Trainer's ``training.json`` has ``hparams.init``; else ``{}``.
    """
    path = ((training or {}).get("hparams") or {}).get("init")
    if not path:
        return {}
    try:
        source = resolve(str(path))
    except ValueError:  # gone since training: the path alone (lineage never stops a push)
        return {"init": {"path": str(path)}}
    folder = source.parent.parent
    init: dict[str, Any] = {
        "path": str(folder),
        "encoder_sha256": _sha256(source),
    }
    contract = folder / "contract.json"
    if contract.is_file():  # a pushed version (a Trainer's Model artifact has none)
        found = json.loads(contract.read_text(encoding="utf-8"))
        init |= {k: found[k] for k in ("model_name", "version", "task") if k in found}
    return {"init": init}


def weight_layers(model) -> list:
    """The backbone's conv/BN layers of a classifier (or an encoder), in build order."""
    return [
        layer
        for layer in model._flatten_layers(include_self=False)
        if type(layer).__name__ in WEIGHT_LAYERS
    ]


def initialise(model, path: str) -> dict[str, Any]:
    """Copy the encoder weights of ``path`` into ``model``'s backbone; returns the lineage
    (``init``: the weights file, its SHA-256, layers copied).

    Raises:
        ValueError: the encoder does not fit the backbone (other backbone or width).
    """
    source = resolve(path)
    weights = _layer_weights(source)
    layers = weight_layers(model)[: len(weights)]
    shapes = [[w.shape for w in ws] for ws in weights]
    if len(layers) < len(weights) or shapes != [
        [tuple(v.shape) for v in lay.weights] for lay in layers
    ]:
        raise ValueError(
            f"init={path}: its encoder ({len(weights)} layers) does not fit this model; train "
            "it with the encoder's backbone and width (--hparam backbone=... width=...; a "
            "U-Net takes a small_cnn encoder of its width)"
        )
    for layer, ws in zip(layers, weights, strict=True):
        layer.set_weights(ws)
    return {
        "path": str(source.parent.parent),
        "encoder_sha256": _sha256(source),
        "layers": len(layers),
    }


def _layer_weights(source: Path) -> list[list[np.ndarray]]:
    """The encoder file's weights, one list per layer, in build order."""
    with np.load(source) as npz:
        groups: dict[int, list[np.ndarray]] = {}
        for key in sorted(npz.files):
            groups.setdefault(int(key.split("_")[0]), []).append(npz[key])
    return [groups[i] for i in sorted(groups)]


def encoder_layers(path: str) -> int:
    """How many conv/BN layers the encoder of ``path`` initialises."""
    return len(_layer_weights(resolve(path)))


def set_encoder_trainable(model, n_layers: int, trainable: bool) -> None:
    """(Un)freeze the first ``n_layers`` backbone layers (BN in inference mode when frozen)."""
    for layer in weight_layers(model)[:n_layers]:
        layer.trainable = trainable


def fit_in_phases(model, hp, recompile, train, **fit_args):
    """``model.fit`` for ``hp.epochs``: with an initialised encoder first ``init_frozen_epochs``
    with its layers frozen (the rest trains), then all layers (``recompile()`` after each
    change); returns the history dict of both phases."""
    frozen = min(hp.init_frozen_epochs, hp.epochs) if hp.init else 0
    n_layers = encoder_layers(hp.init) if frozen else 0
    history: dict[str, list[float]] = {}
    for trainable, epochs, first in ((False, frozen, 0), (True, hp.epochs, frozen)):
        if epochs <= first:
            continue
        set_encoder_trainable(model, n_layers, trainable)
        recompile()
        done = model.fit(train, epochs=epochs, initial_epoch=first, **fit_args)
        for k, values in done.history.items():
            history.setdefault(k, []).extend(float(v) for v in values)
    return history
