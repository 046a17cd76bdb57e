"""TFMA metric computing COCO detection quality inside the Evaluator.

Reads the ``serve_examples`` signature's ``boxes``, ``scores``, ``classes`` and
``num_detections`` (model-input grid), the label ``boxes`` (the manifest's JSON text, source
pixels) and the example's ``resample_scale`` / ``resample_pad``; maps the predictions back
to source pixels and computes, per slice, ``map50``, ``map`` (IoU .5:.95), ``ap50_<class>``
and ``froc_mean`` with pycocotools (:func:`.evaluation.detection_metrics`); with one class
(localization) also ``mean_iou`` and ``share_iou_50`` (:func:`.evaluation.localization_iou`).
"""

from __future__ import annotations

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types

from medflow.components.ingest.voc_import import parse_boxes
from medflow.components.models.evaluation import combiner_computations
from medflow.components.tasks.detection.boxes import boxes_array, to_source_grid
from medflow.core import features

MAP50, MAP, FROC_MEAN = "map50", "map", "froc_mean"
# Localization (one class, one box per image): the top-scoring box's IoU with the true box.
MEAN_IOU, SHARE_IOU_50 = "mean_iou", "share_iou_50"
GEOMETRY = (features.RESAMPLE_SCALE, features.RESAMPLE_PAD)


def value_names(labels) -> list[str]:
    """Every value the metric can report for ``labels`` (one label: localization too)."""
    local = [MEAN_IOU, SHARE_IOU_50] if len(labels) == 1 else []
    return [MAP50, MAP, FROC_MEAN] + [f"ap50_{c}" for c in labels] + local


def _first(value):
    return np.asarray(value).reshape(-1)


class _DetectionCombiner(beam.CombineFn):
    """Collects (truth, predictions) per image of a slice; COCO metrics at the end."""

    def __init__(self, keys, labels: list[str], model_name: str = ""):
        self._keys = keys
        self._labels = list(labels)
        self._model_name = model_name

    def create_accumulator(self):
        return ([], [])

    def add_input(self, acc, element):
        pred = element.prediction
        if self._model_name in pred:  # candidate and baseline: outputs keyed by model name
            pred = pred[self._model_name]
        feats = element.features or {}
        scale = float(_first(feats[features.RESAMPLE_SCALE])[0])
        pad = _first(feats[features.RESAMPLE_PAD])[:2]
        n = int(_first(pred["num_detections"])[0])
        xyxy = np.asarray(pred["boxes"], np.float32).reshape(-1, 4)[:n]
        label = element.label
        if isinstance(label, dict):  # candidate and baseline: labels keyed by model name too
            label = label[self._model_name]
        cell = _first(label)[0]
        cell = cell.decode() if isinstance(cell, bytes) else str(cell)
        truth = boxes_array(parse_boxes(cell, "label boxes", tuple(self._labels)), self._labels)
        # Source size is not needed for the COCO match: clip to a large bound.
        source = to_source_grid(xyxy, scale, pad, 10**6, 10**6)
        scores = _first(pred["scores"])[:n].astype(np.float64)
        classes = _first(pred["classes"])[:n].astype(np.int64)
        acc[0].append((truth[0] / 1.0, truth[1]))
        acc[1].append((source, scores, classes))
        return acc

    def merge_accumulators(self, accumulators):
        truth, preds = [], []
        for t, p in accumulators:
            truth += t
            preds += p
        return (truth, preds)

    def extract_output(self, acc):
        from medflow.components.tasks.detection.evaluation import (
            detection_metrics,
            localization_iou,
        )

        m = detection_metrics(acc[0], acc[1], self._labels)
        values = {MAP50: m["map50"], MAP: m["map"], FROC_MEAN: m["froc_mean"]}
        for c, ap in m["ap50_per_class"].items():
            values[f"ap50_{c}"] = float("nan") if ap is None else ap
        if {MEAN_IOU, SHARE_IOU_50} & {k.name for k in self._keys}:
            local = localization_iou(acc[0], acc[1])
            values[MEAN_IOU], values[SHARE_IOU_50] = local["mean_iou"], local["share_iou_50"]
        return {key: values[key.name] for key in self._keys}


def _computations(
    labels=(),
    name: str = "detection",
    values=(MAP50,),
    eval_config=None,
    model_names=None,
    output_names=None,
    example_weighted: bool = False,
):
    del name, eval_config

    return combiner_computations(
        values,
        model_names,
        output_names,
        example_weighted,
        lambda keys, model_name: _DetectionCombiner(keys, list(labels), model_name),
        GEOMETRY,
    )


class DetectionMetrics(metric_types.Metric):
    """TFMA metric: COCO mAP@0.5 and friends per slice (see the module).

    Args:
        labels: the class names (index = the served ``classes``).
        name: metric name (the values keep their own names).
        values: which of :func:`value_names` to report. A ``MetricConfig.threshold`` applies
            to every value its metric reports, so blessing goes on an instance reporting
            ``map50`` alone.
    """

    def __init__(self, labels=(), name: str = "detection", values=(MAP50,)):
        unknown = set(values) - set(value_names(labels))
        if unknown or not values:
            raise ValueError(f"values={list(values)}: choose from {value_names(labels)}")
        super().__init__(_computations, labels=tuple(labels), name=name, values=tuple(values))
