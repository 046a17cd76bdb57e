"""Segmentation outputs -> MaskPrediction (serving.client) without a server: the geometry,
the multi-class path, the review-queue scores and the JSON summary."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

from medflow.components.dicom.pixels import resample_mask
from medflow.components.ingest.hc18_import import _instance
from medflow.components.tasks.segmentation.results import decode as _mask_predictions
from medflow.core.pixel_spec import PixelSpec
from medflow.serving.client import ModelInfo, Prediction
from medflow.serving.dicom_input import load_inputs

SPEC = PixelSpec(size=(32, 32))


def _file(tmp_path, rows=40, cols=100, spacing=(0.4, 0.2)):
    ds = _instance(np.full((rows, cols), 50, np.uint8), "001_HC", "001", spacing[0])
    ds.PixelSpacing = [str(spacing[0]), str(spacing[1])]
    path = tmp_path / "a.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def _classes(rows, cols) -> np.ndarray:
    rr, cc = np.mgrid[:rows, :cols]
    out = np.zeros((rows, cols), np.uint8)
    out[(rr - rows / 2) ** 2 / 15**2 + (cc - cols / 2) ** 2 / 40**2 <= 1] = 1
    out[(rr - rows / 2) ** 2 / 6**2 + (cc - cols / 2) ** 2 / 15**2 <= 1] = 2
    return out


def test_multi_class_outputs_come_back_as_class_indices_on_the_source_grid(tmp_path):
    path = _file(tmp_path)
    (item,), rejected = load_inputs([path], SPEC)
    assert rejected == []
    truth = _classes(40, 100)
    on_grid = resample_mask(truth, SPEC.size, (0.4, 0.2))  # what a perfect model would see
    probs = np.eye(3, dtype=np.float32)[on_grid] * 0.9 + 0.1 / 3
    pred = Prediction("m", 4, "serving_default", {"probabilities": probs[None]})
    info = ModelInfo(SPEC, ["background", "skull", "brain"], "segmentation")
    (out,) = _mask_predictions([item], pred, info)
    assert out.mask.shape == (40, 100) and out.probabilities.shape == (40, 100, 3)
    agree = (out.mask == truth).mean()
    assert agree > 0.97  # only edge pixels may differ (nearest down, bilinear up)
    areas = out.class_areas()
    assert set(areas) == {"skull", "brain"}
    assert areas["brain"]["pixels"] == int((out.mask == 2).sum()) > 0
    assert areas["skull"]["area_mm2"] == pytest.approx(areas["skull"]["pixels"] * 0.4 * 0.2)
    assert out.area_mm2 == pytest.approx((out.mask > 0).sum() * 0.08)
    chosen = out.probabilities.max(axis=-1)[out.mask > 0]  # argmax class = mask class
    assert out.mean_probability == pytest.approx(float(chosen.mean()), abs=1e-6)
    assert 0.85 < out.mean_probability <= 0.9 + 0.1 / 3 + 1e-6  # edges blend bilinearly
    skull = out.probabilities[..., 1][out.mask == 1].mean()
    assert len(out.scores) == 3 and out.scores[1] == pytest.approx(float(skull), abs=1e-6)
    assert out.scores[0] == pytest.approx(1 - max(out.scores[1:]))
    doc = json.loads(json.dumps(out.to_dict()))
    assert doc["task"] == "segmentation" and doc["rows"] == 40 and doc["columns"] == 100
    assert doc["pixel_spacing"] == [0.4, 0.2] and "mask" not in doc


def test_binary_scores_say_whether_anything_was_found(tmp_path):
    path = _file(tmp_path)
    (item,), _ = load_inputs([path], SPEC)
    info = ModelInfo(SPEC, ["background", "head"], "segmentation")
    low = np.full((1, 32, 32), 0.2, np.float32)
    low[0, 12:15, 10:13] = 0.4
    (empty,) = _mask_predictions([item], Prediction("m", 1, "", {"probabilities": low}), info)
    assert empty.foreground_pixels == 0 and empty.mean_probability == 0.0
    assert empty.label == "background" and empty.scores == pytest.approx([0.6, 0.4], abs=0.02)
    high = np.full((1, 32, 32), 0.1, np.float32)
    high[0, 8:24, 8:24] = 0.8
    (found,) = _mask_predictions([item], Prediction("m", 1, "", {"probabilities": high}), info)
    assert found.label == "head" and found.foreground_pixels > 0
    assert found.scores[1] == pytest.approx(found.mean_probability) and found.scores[1] >= 0.5
