"""The operating point of a binary classifier: the cut-off on the positive-class score,
chosen on the eval split and then used by every output (the exported graph's ``class_id``).

Rules (``--operating-point``):

- ``youden``: the cut-off maximising sensitivity + specificity - 1;
- ``sensitivity=0.95``: the highest cut-off whose sensitivity is at least 0.95;
- ``specificity=0.90``: the lowest cut-off whose specificity is at least 0.90;
- ``threshold=0.4``: that cut-off as given.

A case is called positive when its score is >= the cut-off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from medflow.core.errors import ConfigError, InputError

RULES = ("youden", "sensitivity", "specificity", "threshold")
_FORMS = "youden, sensitivity=0.95, specificity=0.90 or threshold=0.4"


@dataclass(frozen=True)
class Rule:
    """A parsed ``--operating-point`` value."""

    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``"sensitivity=0.95"`` -> Rule("sensitivity", 0.95); a one-line ConfigError else."""
        kind, sep, raw = str(text).strip().partition("=")
        kind = kind.strip()
        if kind == "youden" and not sep:
            return cls("youden")
        if kind not in RULES[1:] or not sep:
            raise ConfigError(f"operating point {text!r}: use {_FORMS}")
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"operating point {text!r}: {raw!r} is not a number") from None
        if not 0.0 <= value <= 1.0 or math.isnan(value):
            raise ConfigError(
                f"operating point {text!r}: {kind} must be within [0, 1] (it is a "
                f"{'probability' if kind == 'threshold' else 'rate'})"
            )
        return cls(kind, value)

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}={self.value:g}"


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen cut-off and what it gave on the split it was chosen on."""

    rule: str
    threshold: float
    sensitivity: float
    specificity: float
    split: str = "eval"
    positives: int = 0
    negatives: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def check_classes(rule: Rule, n_pos: int, n_neg: int, split: str = "eval") -> None:
    """InputError (one line) when ``rule`` cannot be chosen on a split with these counts."""
    if rule.kind == "threshold":
        return
    if n_pos == 0 or n_neg == 0:
        missing = "positive (class 1)" if n_pos == 0 else "negative (class 0)"
        raise InputError(
            f"operating point {rule}: the {split} split has no {missing} example "
            f"({n_pos} positive, {n_neg} negative), so no cut-off can be chosen on it; "
            "put both classes in the eval split or give --operating-point threshold=VALUE"
        )


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float, float]:
    """(sensitivity, specificity) of calling ``scores >= threshold`` positive (NaN if a class
    is absent)."""
    called = np.asarray(scores) >= threshold
    labels = np.asarray(labels).astype(bool)
    sens = called[labels].mean() if labels.any() else float("nan")
    spec = (~called[~labels]).mean() if (~labels).any() else float("nan")
    return float(sens), float(spec)


def choose(rule: Rule, scores: np.ndarray, labels: np.ndarray, split: str = "eval"):
    """The :class:`OperatingPoint` of ``rule`` on positive-class ``scores`` and 0/1 ``labels``."""
    # float32 as in the exported graph, so the graph's comparison gives the same calls
    scores = np.asarray(scores, np.float32)
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.sort(scores[labels])[::-1], np.sort(scores[~labels])
    check_classes(rule, len(pos), len(neg), split)
    if rule.kind == "threshold":
        threshold = float(rule.value)
    elif rule.kind == "sensitivity":
        # the k-th highest positive score keeps k positives at or above the cut-off
        k = max(1, math.ceil(rule.value * len(pos) - 1e-9))
        threshold = float(pos[k - 1])
    elif rule.kind == "specificity":
        # just above the m-th lowest negative score puts m negatives below the cut-off
        m = math.ceil(rule.value * len(neg) - 1e-9)
        threshold = float(np.nextafter(neg[m - 1], np.float32(np.inf))) if m > 0 else float(neg[0])
    else:
        threshold = _youden(scores, labels)
    sens, spec = rates(scores, labels, threshold)
    return OperatingPoint(str(rule), threshold, sens, spec, split, len(pos), len(neg))


def _youden(scores: np.ndarray, labels: np.ndarray) -> float:
    candidates = np.unique(scores)
    best, best_j = float(candidates[0]), -np.inf
    for t in candidates:
        sens, spec = rates(scores, labels, t)
        if sens + spec - 1 > best_j + 1e-12:
            best, best_j = float(t), sens + spec - 1
    return best


def decide(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Class ids (1 where ``score >= threshold``): the rule the exported graph applies."""
    return (np.asarray(scores) >= threshold).astype(np.int64)
