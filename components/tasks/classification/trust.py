"""After training: calibration, operating point and uncertainty of a classifier, all from the
eval split (the split early stopping never saw: it watches a holdout of train).

Which split does what:

- the final calibration map and the operating point are fitted on the whole eval split
  (what the exported graph applies);
- the calibration quality reported "before/after" is judged out of sample by a two-fold
  patient cross-fit on eval: the map fitted on one half of the patients calibrates the
  other half, and ECE / Brier / reliability are computed on the pooled out-of-fold
  probabilities;
- the operating point's sensitivity and specificity are those on eval (where it was
  chosen), with patient-level 95% bootstrap intervals; PPV and NPV at a stated prevalence.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from medflow.components.models import bootstrap, calibration
from medflow.components.models.operating_point import Rule, check_classes, choose
from medflow.core.errors import ConfigError

FOLDS = 2


@dataclasses.dataclass(frozen=True)
class TrustSettings:
    """The Trainer's ``custom_config`` keys for trustworthy outputs.

    Attributes:
        calibration: one of :data:`calibration.METHODS`.
        operating_point: a rule of :mod:`components.models.operating_point` (binary models;
            models with more classes keep the most probable class).
        prevalence: for PPV/NPV; 0 takes the eval split's.
        bootstrap: bootstrap replicates of the intervals (0: no intervals).
    """

    calibration: str = "temperature"
    operating_point: str = "youden"
    prevalence: float = 0.0
    bootstrap: int = bootstrap.REPLICATES

    @classmethod
    def from_config(cls, config: dict[str, Any], n_classes: int) -> TrustSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in (config or {}).items() if k in known})
        settings.validate(n_classes)
        return settings

    def validate(self, n_classes: int) -> None:
        calibration.check_method(str(self.calibration), n_classes)
        rule = self.rule()
        if n_classes != 2 and rule != Rule("youden"):
            raise ConfigError(
                f"operating_point={self.operating_point!r} needs 2 classes, the model has "
                f"{n_classes}; leave it out (the most probable class is reported)"
            )
        if not 0.0 <= float(self.prevalence) < 1.0:
            raise ConfigError(f"prevalence={self.prevalence}: use 0 (the eval split's) or (0, 1)")
        if int(self.bootstrap) < 0:
            raise ConfigError(f"bootstrap={self.bootstrap}: replicates must be >= 0")

    def rule(self) -> Rule:
        return Rule.parse(self.operating_point)


def check_eval_split(settings: TrustSettings, counts: dict[int, int], n_classes: int) -> None:
    """Before training: the operating point can be chosen on an eval split with ``counts``
    examples per class (a one-line InputError otherwise)."""
    if n_classes == 2:
        check_classes(settings.rule(), counts.get(1, 0), counts.get(0, 0))


def _folds(groups: np.ndarray) -> np.ndarray:
    """Fold (0 or 1) of each case: patients sorted by id, alternately assigned."""
    patients = np.unique(groups.astype(str))
    fold_of = {p: i % FOLDS for i, p in enumerate(patients)}
    return np.array([fold_of[g] for g in groups.astype(str)])


def crossfit(method: str, probs: np.ndarray, labels: np.ndarray, groups: np.ndarray):
    """Out-of-fold calibrated probabilities (each fold calibrated by the map of the other);
    None when a fold is too small to fit (fewer than 2 cases or one class)."""
    folds = _folds(groups)
    out = np.empty_like(probs, dtype=np.float64)
    for k in range(FOLDS):
        train, held = folds != k, folds == k
        if train.sum() < 2 or len(np.unique(labels[train])) < 2 or not held.any():
            return None
        out[held] = calibration.fit(method, probs[train], labels[train]).apply(probs[held])
    return out


def fit_outputs(settings: TrustSettings, probs, labels, groups, calibrate_tf=None):
    """(Calibration, OperatingPoint or None, report) from eval-split probabilities.

    Args:
        settings: what to fit.
        probs: the trained model's probabilities [N, C] on the eval split.
        labels: eval labels [N].
        groups: the patient of each case [N] (the resampling and cross-fit unit).
        calibrate_tf: ``f(calibration, probs) -> probs`` in the exported graph's float32;
            the operating point is chosen on those scores so the graph's calls match.
    """
    probs, labels = np.asarray(probs, np.float64), np.asarray(labels, np.int64)
    groups = np.asarray(groups).astype(str)
    cal = calibration.fit(settings.calibration, probs, labels)
    served = calibrate_tf(cal, probs) if calibrate_tf else cal.apply(probs)
    oof = crossfit(settings.calibration, probs, labels, groups)
    report: dict[str, Any] = {
        "calibration": {
            **cal.to_dict(),
            "fitted_on": f"eval split ({len(labels)} cases, {len(np.unique(groups))} patients)",
            "judged_on": f"eval split, {FOLDS}-fold patient cross-fit (out-of-fold)",
            "before": calibration.quality(probs, labels),
            "after": calibration.quality(oof, labels) if oof is not None else None,
        }
    }
    low, high = calibration.TEMPERATURE_RANGE
    if cal.method == "temperature" and not low * 1.01 < cal.params["temperature"] < high * 0.99:
        report["calibration"]["note"] = (
            f"the temperature is at its search bound {list(calibration.TEMPERATURE_RANGE)}: "
            "the model's probabilities carry little on eval; try calibration=platt or none"
        )
    if probs.shape[1] != 2:
        return cal, None, report
    point = choose(settings.rule(), np.asarray(served)[:, 1], labels)
    report["operating_point"] = point.to_dict()
    prevalence = float(settings.prevalence) or float(labels.mean())
    if settings.bootstrap and 0 < prevalence < 1:
        report["intervals"] = {
            "level": bootstrap.LEVEL,
            "resampling": "patient",
            "replicates": int(settings.bootstrap),
            "prevalence": prevalence,
            "split": "eval",
            "metrics": bootstrap.binary_intervals(
                labels, served[:, 1], groups, point.threshold, prevalence, settings.bootstrap
            ),
        }
    return cal, point, report
