"""95% bootstrap intervals with patient-level resampling, for any task's metrics.

Cases of one patient are correlated, so resampling cases would make intervals too narrow:
each bootstrap replicate draws patients with replacement and takes all their cases. The
interval is the percentile interval of the replicates (:func:`bootstrap`).

:func:`binary_intervals` gives AUC, sensitivity, specificity, PPV and NPV (the last two
at a stated prevalence, by Bayes' rule from sensitivity and specificity) for a classifier;
:func:`mean_interval` is the task-agnostic helper for per-case values (Dice, HD95, an
error in mm), the mean over cases with its interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from medflow.components.models.operating_point import rates
from medflow.core.errors import InputError

REPLICATES = 1000
LEVEL = 0.95


def group_indices(groups: Sequence) -> list[np.ndarray]:
    """Case indices of each distinct group (patient), in first-seen order."""
    # one group per case, flat: NumPy 2 gives the inverse the input's shape (e.g. [n, 1])
    _, inverse = np.unique(np.asarray(groups).astype(str).reshape(-1), return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.flatnonzero(np.diff(inverse[order])) + 1
    return np.split(order, bounds)


def replicates_of(
    statistic: Callable[[np.ndarray], Sequence[float]],
    groups: Sequence,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> np.ndarray:
    """[replicates, k] values of ``statistic(case_indices)`` (k values per call) over
    patient-level resamples: each draws as many patients as there are, with replacement,
    and takes every case of each."""
    patients = group_indices(groups)
    if not patients:
        raise InputError("bootstrap: no cases")
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(replicates):
        drawn = rng.integers(0, len(patients), len(patients))
        draws.append(statistic(np.concatenate([patients[i] for i in drawn])))
    return np.asarray(draws, np.float64).reshape(replicates, -1)


def percentile_bounds(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap ``values``; NaN replicates (e.g. a sensitivity
    with no positive drawn) are left out."""
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    statistic: Callable[[np.ndarray], float],
    groups: Sequence,
    replicates: int = REPLICATES,
    seed: int = 0,
    level: float = LEVEL,
) -> tuple[float, float]:
    """Percentile interval of ``statistic(case_indices)`` over patient-level resamples.

    Args:
        statistic: metric of the cases at the given indices (may return NaN).
        groups: the patient of each case (any values; one per case).
        replicates: number of resamples.
        seed: of the resampling.
        level: coverage of the interval.
    """
    draws = replicates_of(lambda idx: [statistic(idx)], groups, replicates, seed)
    return percentile_bounds(draws[:, 0], level)


def interval(value: float, bounds: tuple[float, float]) -> dict[str, float]:
    """``{"value", "lower", "upper"}`` as written to reports."""
    return {"value": float(value), "lower": bounds[0], "upper": bounds[1]}


def mean_interval(values: Sequence[float], groups: Sequence, **kwargs) -> dict[str, float]:
    """Mean of per-case ``values`` (Dice, HD95, ...) with its patient-level interval; NaN
    values (e.g. HD95 of an empty mask) are left out of every mean."""
    values = np.asarray(values, np.float64)
    if np.ndim(groups) != 1 or len(groups) != len(values):
        raise InputError(f"bootstrap: {len(values)} values need one group each, got {groups!r:.80}")

    def mean(idx: np.ndarray) -> float:
        v = values[idx]
        v = v[~np.isnan(v)]
        return float(v.mean()) if len(v) else float("nan")

    return interval(mean(np.arange(len(values))), bootstrap(mean, groups, **kwargs))


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U; ties count half); NaN with one class."""
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def predictive_values(sens: float, spec: float, prevalence: float) -> tuple[float, float]:
    """(PPV, NPV) at ``prevalence`` by Bayes' rule."""
    tp, fp = sens * prevalence, (1 - spec) * (1 - prevalence)
    tn, fn = spec * (1 - prevalence), (1 - sens) * prevalence
    ppv = tp / (tp + fp) if tp + fp > 0 else float("nan")
    npv = tn / (tn + fn) if tn + fn > 0 else float("nan")
    return ppv, npv


def _binary_values(labels, scores, threshold: float, prevalence: float) -> dict[str, float]:
    sens, spec = rates(scores, labels, threshold)
    ppv, npv = predictive_values(sens, spec, prevalence)
    return {
        "auc": auc(labels, scores),
        "accuracy": float(np.mean((scores >= threshold) == labels)),
        "sensitivity": float(sens),
        "specificity": float(spec),
        "ppv": ppv,
        "npv": npv,
    }


def binary_intervals(
    labels: Sequence[int],
    scores: Sequence[float],
    groups: Sequence,
    threshold: float,
    prevalence: float,
    replicates: int = REPLICATES,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """AUC, accuracy, sensitivity, specificity, PPV and NPV (at ``prevalence``) of calling
    ``scores >= threshold`` positive, each with its 95% patient-level interval."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, np.float32)
    if not 0 < prevalence < 1:
        raise InputError(f"prevalence={prevalence}: must be strictly between 0 and 1")
    names = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv")

    def values(idx: np.ndarray) -> list[float]:
        v = _binary_values(labels[idx], scores[idx], threshold, prevalence)
        return [v[n] for n in names]

    draws = replicates_of(values, groups, replicates, seed)
    point = _binary_values(labels, scores, threshold, prevalence)
    return {n: interval(point[n], percentile_bounds(draws[:, j])) for j, n in enumerate(names)}
