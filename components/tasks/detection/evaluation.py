"""Detection metrics by the COCO protocol (pycocotools): mAP@0.5, mAP@[.5:.95], per-class
AP@0.5, and FROC (sensitivity at 1/8 ... 8 false positives per image, from pycocotools'
own IoU >= 0.5 matching); blessing thresholds on mAP@0.5."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass(frozen=True)
class DetectionThresholds:
    """Blessing: mAP@0.5 at least ``min_map50`` and at most ``max_map50_drop`` below the
    current (blessed) model's."""

    min_map50: float = 0.5
    max_map50_drop: float = 0.02

    def bless(self, candidate: float, baseline: float | None) -> tuple[bool, str]:
        """(blessed, why) for a candidate's mAP@0.5 against the thresholds and the baseline."""
        if candidate < self.min_map50:
            return False, f"mAP@0.5 {candidate:.4f} < min_map50 {self.min_map50}"
        if baseline is not None and candidate < baseline - self.max_map50_drop:
            return False, (
                f"mAP@0.5 {candidate:.4f} is more than {self.max_map50_drop} below the current "
                f"model's {baseline:.4f}"
            )
        return True, f"mAP@0.5 {candidate:.4f} passes"


def _coco(images: int, truth, classes: Sequence[str]):
    from pycocotools.coco import COCO

    anns = []
    for i, (xyxy, cls) in enumerate(truth):
        for (x0, y0, x1, y1), k in zip(np.asarray(xyxy).reshape(-1, 4), cls, strict=True):
            w, h = float(x1 - x0), float(y1 - y0)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(k) + 1,
                    "bbox": [float(x0), float(y0), w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": [{"id": i} for i in range(images)],
        "annotations": anns,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(classes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def detection_metrics(truth, predictions, classes: Sequence[str]) -> dict:
    """COCO metrics of ``predictions`` against ``truth`` (one entry per image, same order).

    Args:
        truth: per image ``(xyxy [n, 4], class indices [n])``.
        predictions: per image ``(xyxy [m, 4], scores [m], class indices [m])``.
        classes: class names (index = class index).

    Returns:
        ``map50``, ``map`` (IoU .5:.95), ``ap50_per_class`` {name: AP or None without
        ground truth}, ``froc`` {fp per image: sensitivity}, ``froc_mean`` (their mean).
    """
    from pycocotools.cocoeval import COCOeval

    gt = _coco(len(truth), truth, classes)
    rows = [
        [i, x0, y0, x1 - x0, y1 - y0, s, int(k) + 1]
        for i, (xyxy, scores, cls) in enumerate(predictions)
        for (x0, y0, x1, y1), s, k in zip(np.asarray(xyxy).reshape(-1, 4), scores, cls, strict=True)
    ]
    n_truth = len(gt.dataset["annotations"])
    empty = {"map50": 0.0, "map": 0.0, "froc": dict.fromkeys(FROC_RATES, 0.0), "froc_mean": 0.0}
    if not rows or not n_truth:
        return {**empty, "ap50_per_class": dict.fromkeys(classes)}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(np.asarray(rows, np.float64))
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [iou, recall, class, area, maxdet]
    per_class = {}
    for k, name in enumerate(classes):
        p = precision[0, :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else None
    froc = _froc(ev, len(truth), n_truth)
    return {
        "map50": float(ev.stats[1]),
        "map": float(ev.stats[0]),
        "ap50_per_class": per_class,
        "froc": froc,
        "froc_mean": float(np.mean(list(froc.values()))),
    }


def _froc(ev, n_images: int, n_truth: int) -> dict[float, float]:
    """Sensitivity at each of :data:`FROC_RATES` false positives per image, pooling
    pycocotools' per-image matches at IoU 0.5 (area 'all', the largest maxDets)."""
    scores, hits = [], []
    max_det = ev.params.maxDets[-1]
    for e in ev.evalImgs:
        if e is None or e["aRng"] != ev.params.areaRng[0] or e["maxDet"] != max_det:
            continue
        keep = ~np.asarray(e["dtIgnore"][0], bool)
        scores += list(np.asarray(e["dtScores"])[keep])
        hits += list(np.asarray(e["dtMatches"][0])[keep] > 0)
    order = np.argsort(-np.asarray(scores), kind="stable")
    hits_sorted = np.asarray(hits, bool)[order]
    tp, fp = np.cumsum(hits_sorted), np.cumsum(~hits_sorted)
    out = {}
    for rate in FROC_RATES:
        ok = fp / n_images <= rate
        out[rate] = float(tp[ok].max() / n_truth) if ok.any() else 0.0
    return out


def _metric(labels, name: str, values: list[str], threshold=None):
    import json

    from medflow.components.models.compat import tfma

    return tfma.MetricConfig(
        class_name="DetectionMetrics",
        module="medflow.components.tasks.detection.tfma_metrics",
        config=json.dumps({"labels": list(labels), "name": name, "values": values}),
        threshold=threshold,
    )


def build_detection_eval_config(thresholds: DetectionThresholds, labels: Sequence[str]):
    """TFMA EvalConfig: COCO mAP@0.5 (blessing), mAP@[.5:.95], per-class AP@0.5 and mean
    FROC sensitivity (one class: also the localization IoU), per slice, from the
    ``serve_examples`` outputs and the ``boxes`` label."""
    from medflow.components.models.compat import tfma
    from medflow.components.models.evaluation import floor_and_drop, sliced_eval_config
    from medflow.components.tasks.detection.tfma_metrics import MAP50, value_names
    from medflow.components.tasks.detection.transform import BOXES

    map_threshold = floor_and_drop(thresholds.min_map50, thresholds.max_map50_drop)
    metrics = [
        tfma.MetricConfig(class_name="ExampleCount"),
        _metric(labels, "map50", [MAP50], threshold=map_threshold),
        _metric(labels, "detection", [v for v in value_names(labels) if v != MAP50]),
    ]
    return sliced_eval_config(BOXES, "", metrics)


def localization_iou(truth, predictions) -> dict:
    """Localization quality (one object per image): IoU of each image's top-scoring box with
    its one true box (0 when the model gives none), summarised.

    Args: as :func:`detection_metrics` (the first true box of an image; images without one
        are left out).

    Returns:
        ``mean_iou``, ``std_iou``, ``median_iou``, ``min_iou``, ``share_iou_50`` and
        ``share_iou_90`` (the share of images with IoU >= 0.5 / 0.9), ``images``.
    """
    ious = []
    for (true_xyxy, _), (xyxy, scores, _) in zip(truth, predictions, strict=True):
        if not len(np.asarray(true_xyxy).reshape(-1, 4)):
            continue
        t = np.asarray(true_xyxy, np.float64).reshape(-1, 4)[0]
        boxes = np.asarray(xyxy, np.float64).reshape(-1, 4)
        if not len(boxes):
            ious.append(0.0)
            continue
        p = boxes[int(np.argmax(scores))]
        w = min(t[2], p[2]) - max(t[0], p[0])
        h = min(t[3], p[3]) - max(t[1], p[1])
        inter = max(0.0, w) * max(0.0, h)
        union = (t[2] - t[0]) * (t[3] - t[1]) + (p[2] - p[0]) * (p[3] - p[1]) - inter
        ious.append(inter / union if union > 0 else 0.0)
    v = np.asarray(ious or [0.0])
    return {
        "mean_iou": float(v.mean()),
        "std_iou": float(v.std()),
        "median_iou": float(np.median(v)),
        "min_iou": float(v.min()),
        "share_iou_50": float((v >= 0.5).mean()),
        "share_iou_90": float((v >= 0.9).mean()),
        "images": len(v),
    }
