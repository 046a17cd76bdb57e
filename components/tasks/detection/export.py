"""Export the detector with the Transform graph and box decoding + NMS inside the graph.

``serving_default`` (``image`` float32 [None, rows, cols, channels]) and ``serve_examples``
return, padded to :data:`MAX_DETECTIONS` per image (TF Serving answers final boxes):

- ``boxes`` float32 [None, MAX_DETECTIONS, 4]: (x0, y0, x1, y1) on the model-input grid;
- ``scores`` float32 [None, MAX_DETECTIONS] (0 for padding);
- ``classes`` int32 [None, MAX_DETECTIONS] (class index; 0 for padding);
- ``num_detections`` int32 [None]: how many of the rows are real;
- ``probabilities`` float32 [None, MAX_DETECTIONS, n_classes]: every class's centre heatmap
  at each box's centre cell (0 for padding): the output by which the serving client
  recognises a detection model (:meth:`DetectionTask.classes_from_signature`).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from medflow.components.models.export import save_with_transform
from medflow.components.tasks.detection.model import STRIDE

MAX_DETECTIONS = 100
CANDIDATES = 200  # heatmap peaks considered before NMS
NMS_IOU = 0.5
SCORE_THRESHOLD = 0.05
SERVING_OUTPUTS = ("boxes", "scores", "classes", "num_detections", "probabilities")


def detection_head(out: tf.Tensor, n_classes: int) -> dict[str, tf.Tensor]:
    """CenterNet output [B, h, w, n_classes + 4] -> padded final detections (see module)."""
    heat, size, offset = out[..., :n_classes], out[..., n_classes : n_classes + 2], out[..., -2:]
    peaks = heat * tf.cast(tf.equal(heat, tf.nn.max_pool2d(heat, 3, 1, "SAME")), heat.dtype)
    batch, h, w = tf.shape(out)[0], tf.shape(out)[1], tf.shape(out)[2]
    k = tf.minimum(CANDIDATES, h * w * n_classes)
    scores, index = tf.math.top_k(tf.reshape(peaks, [batch, -1]), k=k)
    cls, cell = index % n_classes, index // n_classes
    ys, xs = tf.cast(cell // w, tf.float32), tf.cast(cell % w, tf.float32)
    wh = tf.gather(tf.reshape(size, [batch, -1, 2]), cell, batch_dims=1)
    off = tf.gather(tf.reshape(offset, [batch, -1, 2]), cell, batch_dims=1)
    cx, cy = xs + off[..., 0], ys + off[..., 1]
    half_w, half_h = wh[..., 0] / 2, wh[..., 1] / 2
    yxyx = tf.stack([cy - half_h, cx - half_w, cy + half_h, cx + half_w], axis=-1) * STRIDE
    per_class = tf.one_hot(cls, n_classes) * scores[..., None]
    nms = tf.image.combined_non_max_suppression(
        yxyx[:, :, None, :],
        per_class,
        max_output_size_per_class=MAX_DETECTIONS,
        max_total_size=MAX_DETECTIONS,
        iou_threshold=NMS_IOU,
        score_threshold=SCORE_THRESHOLD,
        pad_per_class=False,
        clip_boxes=False,
    )
    y0, x0, y1, x1 = tf.unstack(nms.nmsed_boxes, axis=-1)
    # every class's heatmap at each kept box's centre cell (0 on padding rows)
    col = tf.clip_by_value(tf.cast(tf.floor((x0 + x1) / (2 * STRIDE)), tf.int32), 0, w - 1)
    row = tf.clip_by_value(tf.cast(tf.floor((y0 + y1) / (2 * STRIDE)), tf.int32), 0, h - 1)
    at_centre = tf.gather(tf.reshape(heat, [batch, -1, n_classes]), row * w + col, batch_dims=1)
    valid = tf.sequence_mask(nms.valid_detections, MAX_DETECTIONS, dtype=heat.dtype)
    return {
        "probabilities": at_centre * valid[..., None],
        "boxes": tf.stack([x0, y0, x1, y1], axis=-1),
        "scores": nms.nmsed_scores,
        "classes": tf.cast(nms.nmsed_classes, tf.int32),
        "num_detections": tf.cast(nms.valid_detections, tf.int32),
    }


def export_detection_model(
    model, tft_output, path: str, input_shape, n_classes: int, info: dict[str, Any]
) -> None:
    """Save ``model`` with the Transform graph of ``tft_output`` and the NMS head to ``path``."""
    save_with_transform(
        model, tft_output, path, input_shape, lambda out: detection_head(out, n_classes), info
    )
