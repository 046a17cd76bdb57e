"""After training a binary segmenter: the mask threshold, chosen on the eval split for Dice
and then applied by the exported graph (so ``predict``, the DICOM SEG, the PACS push and the
dashboard's masks all use it), and Dice / HD95 with 95% patient-level bootstrap intervals on
the same split (:func:`components.models.bootstrap.mean_interval`).

``--operating-point`` for segmentation:

- ``dice`` (default): the cut-off of :data:`GRID` with the highest mean per-image Dice on
  eval (ties: the one nearest 0.5, so a model that is sure of every pixel keeps 0.5);
- ``threshold=0.4``: that cut-off as given.

A pixel is foreground when its probability is >= the cut-off. The Dice and HD95 reported
are those at the cut-off on eval, where it was chosen (in sample for the cut-off).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from medflow.components.models import bootstrap
from medflow.components.models.operating_point import Rule
from medflow.components.tasks.segmentation.metrics import DICE, HD95, hausdorff95_mm
from medflow.core.errors import ConfigError

GRID = np.round(np.arange(1, 100) / 100, 2)  # candidate cut-offs 0.01 .. 0.99
DEFAULT_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class MaskSettings:
    """The segmentation Trainer's ``custom_config`` keys for its outputs.

    Attributes:
        operating_point: ``dice`` or ``threshold=VALUE`` (see the module doc).
        bootstrap: bootstrap replicates of the Dice / HD95 intervals (0: none).
    """

    operating_point: str = "dice"
    bootstrap: int = bootstrap.REPLICATES

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> MaskSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in (config or {}).items() if k in known})
        settings.rule()
        if int(settings.bootstrap) < 0:
            raise ConfigError(f"bootstrap={settings.bootstrap}: replicates must be >= 0")
        return settings

    def rule(self) -> Rule:
        """The parsed rule; a one-line ConfigError for anything but dice or threshold=X."""
        text = str(self.operating_point).strip()
        if text == "dice":
            return Rule("dice")
        rule = Rule.parse(text) if text.startswith("threshold") else None
        if rule is None:
            raise ConfigError(
                f"operating point {text!r}: segmentation takes dice (the mask threshold with "
                "the best mean Dice on the eval split; default) or threshold=0.4"
            )
        return rule


def dice_at(probs: np.ndarray, masks: np.ndarray, threshold: float) -> np.ndarray:
    """Per-image Dice [N] of ``probs >= threshold`` against ``masks`` [N, rows, cols]; 1.0
    where both are empty (as :func:`metrics.dice`)."""
    pred = np.asarray(probs) >= np.float32(threshold)
    true = np.asarray(masks).astype(bool)
    axes = tuple(range(1, pred.ndim))
    inter = np.logical_and(pred, true).sum(axis=axes)
    total = pred.sum(axis=axes) + true.sum(axis=axes)
    safe = np.where(total == 0, 1, total)
    return np.where(total == 0, 1.0, 2.0 * inter / safe)


def choose_threshold(probs: np.ndarray, masks: np.ndarray, candidates=GRID) -> float:
    """The cut-off of ``candidates`` with the highest mean per-image Dice; ties go to the one
    nearest :data:`DEFAULT_THRESHOLD`."""
    probs = np.asarray(probs, np.float32)
    means = np.array([dice_at(probs, masks, t).mean() for t in candidates])
    best = np.flatnonzero(means >= means.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]])


def _spacing(value) -> tuple[float, float]:
    """(row_mm, col_mm) of a passed-through ``pixel_spacing``; (1, 1) (pixels) when unknown."""
    values = np.asarray(value, np.float64).reshape(-1)
    if len(values) >= 2 and values[0] > 0 and values[1] > 0:
        return float(values[0]), float(values[1])
    return 1.0, 1.0


def fit_mask_outputs(settings: MaskSettings, probs, masks, groups, spacings=None):
    """(cut-off, report) from eval-split foreground ``probs`` and ``masks`` [N, rows, cols].

    Args:
        settings: the rule and the bootstrap replicates.
        probs: the trained model's per-pixel foreground probabilities.
        masks: the reference masks (0/1).
        groups: the patient of each image [N] (the resampling unit).
        spacings: [N, 2] mm per pixel of the model grid (None: HD95 in pixels).
    """
    probs = np.asarray(probs, np.float32)
    masks = np.asarray(masks).astype(bool)
    rule = settings.rule()
    threshold = float(rule.value) if rule.kind == "threshold" else choose_threshold(probs, masks)
    dice = dice_at(probs, masks, threshold)
    spacing = [_spacing(s) for s in (spacings if spacings is not None else [[]] * len(dice))]
    cut = np.float32(threshold)
    hd95 = [hausdorff95_mm(p >= cut, m, s) for p, m, s in zip(probs, masks, spacing, strict=True)]
    report: dict[str, Any] = {
        "operating_point": {
            "rule": str(rule),
            "threshold": threshold,
            "dice": float(dice.mean()),
            "dice_at_0.5": float(dice_at(probs, masks, DEFAULT_THRESHOLD).mean()),
            "split": "eval",
            "cases": len(dice),
        }
    }
    if settings.bootstrap:
        replicates = int(settings.bootstrap)
        report["intervals"] = {
            "level": bootstrap.LEVEL,
            "resampling": "patient",
            "replicates": replicates,
            "split": "eval",
            "metrics": {
                DICE: bootstrap.mean_interval(dice, groups, replicates=replicates),
                HD95: bootstrap.mean_interval(hd95, groups, replicates=replicates),
            },
        }
        if (1.0, 1.0) in spacing:
            report["intervals"]["note"] = "images without a pixel spacing: their HD95 in pixels"
    return threshold, report
