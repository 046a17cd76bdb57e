"""TFX Trainer module of the registration task (:mod:`.model`).

``run_fn`` reads the Transform's pairs, trains unsupervised (image similarity +
smoothness, plus Dice of the warped moving mask when masks are given: semi-supervised),
measures the eval split (:func:`pair_metrics`) and exports the SavedModel (:mod:`.export`).
:func:`fit_arrays` / :func:`register_arrays` are the same steps on in-memory arrays (tests
and the benchmark).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Any

import numpy as np

from medflow.components.models.hparams import shape_fields
from medflow.components.models.training import transformed_files
from medflow.components.tasks.registration.losses import SIMILARITIES

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RegHParams:
    """What the registration Trainer needs besides the data.

    Attributes:
        image_size: (rows, cols) of the model input, divisible by ``2**depth``.
        channels: must be 1.
        width, depth: U-Net channels of the first stage and number of down-samplings.
        integration_steps: scaling-and-squaring steps (0: a plain displacement field).
        similarity: ``ncc`` (local normalised cross-correlation) or ``mse``.
        smoothness: weight of the displacement's squared gradient.
        dice_weight: weight of ``1 - soft Dice`` of the warped moving mask (pairs with masks).
        epochs, batch_size, learning_rate: Adam with cosine decay.
        augment: random flips (both images alike) and fixed/moving swaps.
        affine: an affine stage (a small CNN, :func:`.model.build_affine_net`) before the
            deformable one, trained jointly with it.
        affine_weight: weight of the same loss on the affine stage's output alone (it
            learns the global pose instead of leaving it to the deformable field).
        augment_affine: amplitude ``a`` of a random affine applied to the moving image and
            mask of each training pair (rotation and log-scale within +-a, shift within
            +-a of the half image); 0: none.
        seed: random seed.
    """

    image_size: tuple[int, int] = (128, 128)
    channels: int = 1
    width: int = 16
    depth: int = 3
    integration_steps: int = 7
    similarity: str = "ncc"
    smoothness: float = 1.0
    dice_weight: float = 1.0
    epochs: int = 60
    batch_size: int = 8
    learning_rate: float = 2e-3
    augment: bool = True
    affine: bool = False
    affine_weight: float = 1.0
    augment_affine: float = 0.0
    seed: int = 42

    @property
    def grid(self) -> tuple[int, int, int]:
        return (*self.image_size, 1)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> RegHParams:
        """Build from a Trainer custom_config; unknown keys are ignored, bad values raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in dict(config or {}).items() if k in known}
        kwargs |= shape_fields(config)
        hp = cls(**kwargs)
        rows, cols = hp.image_size
        if hp.channels != 1:
            raise ValueError(f"channels={hp.channels}: registration takes grey images (1)")
        if hp.depth < 1 or rows % 2**hp.depth or cols % 2**hp.depth:
            raise ValueError(
                f"image_size {rows}x{cols}: must be divisible by 2**depth={2**hp.depth}"
            )
        if hp.similarity not in SIMILARITIES:
            raise ValueError(f"similarity={hp.similarity!r}: choose one of {SIMILARITIES}")
        if hp.epochs < 1 or hp.batch_size < 1 or hp.width < 1 or hp.integration_steps < 0:
            raise ValueError("epochs, batch_size and width must be >= 1, integration_steps >= 0")
        if min(hp.smoothness, hp.dice_weight, hp.affine_weight) < 0:
            raise ValueError("smoothness, dice_weight and affine_weight must be >= 0")
        if not 0 <= hp.augment_affine <= 0.5:
            raise ValueError(f"augment_affine={hp.augment_affine}: must be within [0, 0.5]")
        return hp


@dataclasses.dataclass
class Pairs:
    """Transformed pairs in memory: images and masks [n, rows, cols, 1] float32, has_masks
    [n] (1.0: the masks are real), spacing [n, 2] (row, col mm of a model-grid pixel of the
    fixed image; None when unknown: HD95 is then not reported)."""

    fixed: np.ndarray
    moving: np.ndarray
    fixed_mask: np.ndarray
    moving_mask: np.ndarray
    has_masks: np.ndarray
    spacing: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.fixed)


def _augment(batch, seed, affine_amplitude: float = 0.0):
    """Flips (both images and masks alike), for half the pairs fixed <-> moving, and a
    random affine of the moving image and mask (``affine_amplitude``, see RegHParams)."""
    import tensorflow as tf

    f, m, fm, mm, hm = batch
    u = tf.random.stateless_uniform([3], seed=seed)
    stack = tf.concat([f, m, fm, mm], axis=-1)
    stack = tf.cond(u[0] < 0.5, lambda: tf.reverse(stack, [2]), lambda: stack)
    stack = tf.cond(u[1] < 0.5, lambda: tf.reverse(stack, [1]), lambda: stack)
    f, m, fm, mm = tf.split(stack, 4, axis=-1)
    swap = u[2] < 0.5
    f, m, fm, mm = (
        tf.where(swap, m, f),
        tf.where(swap, f, m),
        tf.where(swap, mm, fm),
        tf.where(swap, fm, mm),
    )
    if affine_amplitude > 0:
        m, mm = _random_affine(m, mm, seed, affine_amplitude)
    return f, m, fm, mm, hm


def _random_affine(moving, mask, seed, amplitude: float):
    import tensorflow as tf

    from medflow.components.tasks.registration.layers import affine_flow, warp

    n, rows, cols = tf.shape(moving)[0], moving.shape[1], moving.shape[2]
    r = tf.random.stateless_uniform([n, 5], seed=seed + 1, minval=-amplitude, maxval=amplitude)
    angle, scale = r[:, 0], tf.exp(r[:, 1])
    cos, sin = scale * tf.cos(angle), scale * tf.sin(angle)
    theta = tf.stack([cos - 1.0, -sin, r[:, 2], sin, cos - 1.0, r[:, 3]], axis=1)
    flow = affine_flow(theta, rows, cols)
    return warp(moving, flow), warp(mask, flow)


def _train_step(model, optimizer, hp: RegHParams):
    import tensorflow as tf

    from medflow.components.tasks.registration import layers, losses

    def loss_of(f, m, fm, mm, hm, flow, warped):
        loss = losses.similarity_loss(hp.similarity, f, warped)
        if hp.dice_weight:
            warped_mask = layers.warp(mm, flow)
            loss += hp.dice_weight * hm * (1.0 - losses.soft_dice(warped_mask, fm))
        return loss

    @tf.function
    def step(f, m, fm, mm, hm):
        with tf.GradientTape() as tape:
            warped, flow, *affine = model([f, m], training=True)
            loss = loss_of(f, m, fm, mm, hm, flow, warped)
            loss += hp.smoothness * losses.smoothness(flow)
            if affine and hp.affine_weight:
                aux = loss_of(f, m, fm, mm, hm, affine[0], layers.warp(m, affine[0]))
                loss += hp.affine_weight * aux
            loss = tf.reduce_mean(loss)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    return step


def fit_arrays(hp: RegHParams, pairs: Pairs):
    """Train on ``pairs``; returns (model, history {"loss": per-epoch mean})."""
    import keras
    import tensorflow as tf

    from medflow.components.tasks.registration.model import build_registration_model, served_outputs

    if not len(pairs):
        raise ValueError("the training split has no pairs")
    keras.utils.set_random_seed(hp.seed)
    model = build_registration_model(
        hp.image_size, hp.width, hp.depth, hp.integration_steps, hp.affine, affine_output=True
    )
    steps = math.ceil(len(pairs) / hp.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(
        hp.learning_rate, decay_steps=max(1, steps * hp.epochs), alpha=0.05
    )
    optimizer = keras.optimizers.Adam(schedule)
    step = _train_step(model, optimizer, hp)
    arrays = (pairs.fixed, pairs.moving, pairs.fixed_mask, pairs.moving_mask, pairs.has_masks)
    data = tf.data.Dataset.from_tensor_slices(arrays)
    history = []
    for epoch in range(hp.epochs):
        batches = data.shuffle(len(pairs), seed=hp.seed + epoch).batch(hp.batch_size)
        started, total = time.monotonic(), []
        for i, batch in enumerate(batches):
            if hp.augment:
                batch = _augment(batch, tf.constant([hp.seed + epoch, i]), hp.augment_affine)
            total.append(float(step(*batch)))
        history.append(float(np.mean(total)))
        if not np.isfinite(history[-1]):
            raise ValueError(
                f"registration training diverged: loss {history[-1]} at epoch {epoch + 1}; "
                "check the images for non-finite pixels, or lower learning_rate / raise "
                "smoothness (--hparam)"
            )
        log.info(
            "epoch %d/%d loss %.4f (%.1f s)",
            epoch + 1,
            hp.epochs,
            history[-1],
            time.monotonic() - started,
        )
    return served_outputs(model), {"loss": history}


def register_arrays(model, pairs: Pairs, batch_size: int = 16) -> dict[str, np.ndarray]:
    """``warped``, ``flow`` and the warped moving mask ``warped_mask`` of every pair."""
    import tensorflow as tf

    from medflow.components.tasks.registration.layers import warp

    out: dict[str, list] = {"warped": [], "flow": [], "warped_mask": []}
    for start in range(0, len(pairs), batch_size):
        part = slice(start, start + batch_size)
        warped, flow = model([tf.constant(pairs.fixed[part]), tf.constant(pairs.moving[part])])
        out["warped"].append(warped.numpy())
        out["flow"].append(flow.numpy())
        out["warped_mask"].append(warp(pairs.moving_mask[part], flow).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def pair_metrics(pairs: Pairs, result: dict[str, np.ndarray]) -> dict[str, float]:
    """Means over the pairs: ``dice_before``/``dice_after`` and, when ``pairs.spacing`` is
    known, ``hd95_before_mm``/``hd95_after_mm`` (pairs with masks; :func:`.losses.mask_scores`),
    ``folding_fraction``, ``ncc_before``/``ncc_after`` (local NCC, :mod:`.losses`)."""
    from medflow.components.tasks.registration import layers, losses

    with_masks = np.flatnonzero(pairs.has_masks > 0)
    spacing = pairs.spacing if pairs.spacing is not None else np.ones((len(pairs), 2))
    scores = [
        losses.mask_scores(
            pairs.fixed_mask[i, ..., 0],
            pairs.moving_mask[i, ..., 0],
            result["warped_mask"][i, ..., 0],
            spacing[i],
        )
        for i in with_masks
    ]
    names = list(scores[0]) if scores else []
    if pairs.spacing is None:
        names = [n for n in names if not n.startswith("hd95")]
    out: dict[str, float | None] = {"pairs": len(pairs)}
    out |= {n: float(np.mean([s[n] for s in scores])) for n in names}
    out.setdefault("dice_before", None)
    out.setdefault("dice_after", None)
    return out | {
        "folding_fraction": float(np.mean(layers.folding_fraction(result["flow"]).numpy())),
        "ncc_before": float(np.mean(losses.local_ncc(pairs.fixed, pairs.moving).numpy())),
        "ncc_after": float(np.mean(losses.local_ncc(pairs.fixed, result["warped"]).numpy())),
    }


def read_transformed(files, tft_output, hp: RegHParams) -> Pairs:
    """The pairs of transformed GZIP TFRecords (``files``: a glob or a list of globs)."""
    import tensorflow as tf

    from medflow.components.tasks.registration import transform as T

    paths = transformed_files(files)
    spec = tft_output.transformed_feature_spec()
    keys = [T.FIXED, T.MOVING] + (
        [T.FIXED_MASK, T.MOVING_MASK, T.HAS_MASKS] if T.FIXED_MASK in spec else []
    )
    spec = {k: spec[k] for k in keys}
    rows: dict[str, list] = {k: [] for k in keys}
    for record in tf.data.TFRecordDataset(paths, compression_type="GZIP").as_numpy_iterator():
        ex = tf.io.parse_single_example(record, spec)
        for k in keys:
            rows[k].append(np.asarray(ex[k], np.float32))
    n = len(rows[T.FIXED])
    shape = (n, *hp.grid)

    def stack(k):
        return np.stack(rows[k]).reshape(shape) if rows.get(k) else np.zeros(shape, np.float32)

    has = (
        np.stack(rows[T.HAS_MASKS]).reshape(n) if rows.get(T.HAS_MASKS) else np.zeros(n, np.float32)
    )
    return Pairs(stack(T.FIXED), stack(T.MOVING), stack(T.FIXED_MASK), stack(T.MOVING_MASK), has)


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``tfx.components.FnArgs``)."""
    import tensorflow_transform as tft

    from medflow.components.tasks.registration.export import export_registration_model

    hp = RegHParams.from_config(fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    train = read_transformed(fn_args.train_files, tft_output, hp)
    model, history = fit_arrays(hp, train)
    evaluation = read_transformed(fn_args.eval_files, tft_output, hp)
    metrics = (
        pair_metrics(evaluation, register_arrays(model, evaluation)) if len(evaluation) else {}
    )
    log.info("eval split: %s", metrics)
    info = {
        "task": "registration",
        "hparams": hp.to_dict(),
        "architecture": model.name,
        "train_pairs": len(train),
        "epochs_run": len(history["loss"]),
        "history": history,
        "parameters": int(model.count_params()),
        "eval_metrics": metrics,
    }
    export_registration_model(model, fn_args.serving_model_dir, hp.image_size, info)
