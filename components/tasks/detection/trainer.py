"""TFX Trainer module of the detection task (CenterNet, :mod:`.model`).

``run_fn`` reads the Transform's ``image``, ``boxes`` and resample geometry, maps the boxes
onto the model-input grid, trains with flips as augmentation, evaluates the eval split with
the COCO protocol (:mod:`.evaluation`) and exports the SavedModel with NMS inside
(:mod:`.export`). :func:`fit_arrays` / :func:`predict_arrays` are the same steps on in-memory
arrays (tests and the benchmark).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from medflow.components.models.hparams import shape_fields
from medflow.components.models.training import transformed_files
from medflow.components.tasks.detection.boxes import cell_to_model_grid, centernet_targets
from medflow.components.tasks.detection.model import STRIDE
from medflow.core import features

log = logging.getLogger(__name__)
MIN_WIDTH = 12


@dataclasses.dataclass(frozen=True)
class DetHParams:
    """What the detection Trainer needs besides the data.

    Attributes:
        image_size: (rows, cols) of the model input, divisible by 32.
        channels: 1 or 3.
        labels: the class names (index = class index in ``classes``).
        width: channels of the first stage.
        epochs, batch_size, learning_rate, weight_decay: AdamW with cosine decay.
        augment: horizontal and vertical flips (each image seen in 4 orientations).
        seed: random seed.
    """

    image_size: tuple[int, int] = (256, 256)
    channels: int = 1
    labels: tuple[str, ...] = ()
    width: int = 16
    epochs: int = 30
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True
    seed: int = 42

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    @property
    def grid(self) -> tuple[int, int]:
        return self.image_size[0] // STRIDE, self.image_size[1] // STRIDE

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_size"], out["labels"] = list(self.image_size), list(self.labels)
        return out

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> DetHParams:
        """Build from a Trainer custom_config; unknown keys are ignored, bad values raise."""
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in dict(config or {}).items() if k in known}
        kwargs |= shape_fields(config)
        kwargs["labels"] = tuple(str(x) for x in kwargs.get("labels", ()))
        hp = cls(**kwargs)
        rows, cols = hp.image_size
        if rows % 32 or cols % 32:
            raise ValueError(f"image_size {rows}x{cols}: the detector needs multiples of 32")
        if not hp.labels:
            raise ValueError("no class labels: pass the box classes with --labels A,B,...")
        if hp.epochs < 1 or hp.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if hp.width < MIN_WIDTH:
            # width 8 corrupts the heap in TF 2.16's oneDNN CPU kernels (measured: malloc
            # aborts in model.fit; 12, 16, 24, 32 train)
            raise ValueError(f"width {hp.width}: the detector needs width >= {MIN_WIDTH}")
        return hp


def _flips(images: np.ndarray, boxes: list[tuple[np.ndarray, np.ndarray]], hp: DetHParams):
    """The images and boxes as given, mirrored left-right, top-bottom and both."""
    rows, cols = hp.image_size
    out_images, out_boxes = [images], list(boxes)
    for flip_x, flip_y in ((True, False), (False, True), (True, True)):
        axes = (2,) * flip_x + (1,) * flip_y  # [n, rows, cols, ch]: cols flip x, rows flip y
        out_images.append(np.flip(images, axis=axes))
        for xyxy, cls in boxes:
            x0, y0, x1, y1 = xyxy.T
            if flip_x:
                x0, x1 = cols - x1, cols - x0
            if flip_y:
                y0, y1 = rows - y1, rows - y0
            out_boxes.append((np.stack([x0, y0, x1, y1], axis=-1), cls))
    return np.concatenate(out_images), out_boxes


def fit_arrays(hp: DetHParams, images: np.ndarray, boxes, log_dir: str | None = None):
    """Train the detector on model-grid ``images`` [n, rows, cols, ch] (Transform output)
    and ``boxes`` (per image: model-grid xyxy [k, 4], class indices [k]); returns
    (model, history)."""
    import keras
    import tensorflow as tf

    from medflow.components.models.progress import epoch_progress
    from medflow.components.tasks.detection.model import build_centernet, centernet_loss

    if not len(images):
        raise ValueError("the training split is empty")
    keras.utils.set_random_seed(hp.seed)
    if hp.augment:
        images, boxes = _flips(images, boxes, hp)
    n_classes = len(hp.labels)
    targets = np.stack([centernet_targets(b, c, hp.grid, STRIDE, n_classes) for b, c in boxes])
    steps = math.ceil(len(images) / hp.batch_size)
    data = (
        tf.data.Dataset.from_tensor_slices((images.astype(np.float32), targets))
        .shuffle(len(images), seed=hp.seed, reshuffle_each_iteration=True)
        .batch(hp.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = build_centernet(hp.input_shape, n_classes, hp.width)
    schedule = keras.optimizers.schedules.CosineDecay(
        hp.learning_rate, decay_steps=max(1, steps * hp.epochs), alpha=0.01
    )
    model.compile(
        optimizer=keras.optimizers.AdamW(schedule, weight_decay=hp.weight_decay),
        loss=centernet_loss(n_classes),
    )
    callbacks = [epoch_progress(hp.epochs)]
    if log_dir:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=log_dir, write_graph=False))
    history = model.fit(data, epochs=hp.epochs, callbacks=callbacks, verbose=2)
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def predict_arrays(model, images: np.ndarray, n_classes: int, batch_size: int = 16) -> list:
    """Per image (model-grid xyxy [m, 4], scores [m], class indices [m]) after the exported
    graph's decoding and NMS (:func:`.export.detection_head`)."""
    import tensorflow as tf

    from medflow.components.tasks.detection.export import detection_head

    out = []
    for start in range(0, len(images), batch_size):
        raw = model(tf.constant(images[start : start + batch_size]), training=False)
        head = {
            k: v.numpy() for k, v in detection_head(tf.cast(raw, tf.float32), n_classes).items()
        }
        for i, n in enumerate(head["num_detections"]):
            out.append((head["boxes"][i, :n], head["scores"][i, :n], head["classes"][i, :n]))
    return out


def read_transformed(files, tft_output, hp: DetHParams):
    """(images [n, rows, cols, ch], per image (model-grid xyxy, class indices)) of
    transformed GZIP TFRecords."""
    import tensorflow as tf

    from medflow.components.tasks.detection.transform import BOXES

    paths = transformed_files(files)
    spec = tft_output.transformed_feature_spec()
    if BOXES not in spec:
        raise ValueError("the transformed examples hold no 'boxes': ingest with a boxes manifest")
    keys = (features.IMAGE, BOXES, features.RESAMPLE_SCALE, features.RESAMPLE_PAD)
    spec = {k: spec[k] for k in keys}
    images, boxes = [], []
    for record in tf.data.TFRecordDataset(paths, compression_type="GZIP").as_numpy_iterator():
        ex = {k: np.asarray(v) for k, v in tf.io.parse_single_example(record, spec).items()}
        images.append(ex[features.IMAGE].reshape(hp.input_shape))
        cell = bytes(ex[BOXES].reshape(-1)[0]).decode()
        scale = float(ex[features.RESAMPLE_SCALE].reshape(-1)[0])
        pad = ex[features.RESAMPLE_PAD].reshape(-1)[:2]
        boxes.append(cell_to_model_grid(cell, "boxes feature", hp.labels, scale, pad))
    return np.stack(images) if images else np.zeros((0, *hp.input_shape), np.float32), boxes


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``tfx.components.FnArgs``)."""
    import tensorflow_transform as tft

    from medflow.components.tasks.detection.evaluation import detection_metrics
    from medflow.components.tasks.detection.export import export_detection_model

    hp = DetHParams.from_config(fn_args.custom_config)
    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    images, boxes = read_transformed(fn_args.train_files, tft_output, hp)
    model, history = fit_arrays(hp, images, boxes, fn_args.model_run_dir)
    eval_images, eval_boxes = read_transformed(fn_args.eval_files, tft_output, hp)
    metrics = detection_metrics(
        eval_boxes, predict_arrays(model, eval_images, len(hp.labels)), hp.labels
    )
    log.info("eval split mAP@0.5 %.4f mAP %.4f", metrics["map50"], metrics["map"])
    info = {
        "task": "detection",
        "hparams": hp.to_dict(),
        "architecture": model.name,
        "train_images": len(images),
        "epochs_run": len(history.get("loss", [])),
        "history": history,
        "parameters": int(model.count_params()),
        "eval_metrics": {**metrics, "froc": {str(k): v for k, v in metrics["froc"].items()}},
    }
    export_detection_model(
        model, tft_output, fn_args.serving_model_dir, hp.input_shape, len(hp.labels), info
    )
