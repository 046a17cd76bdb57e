"""Post-hoc calibration of a classifier's probabilities, fitted in NumPy and applied in the
exported graph.

- ``temperature``: ``softmax(log p / T)``, one parameter, any number of classes; keeps the
  ranking (AUC unchanged).
- ``platt``: binary only, ``sigmoid(a * logit(p1) + b)``.
- ``isotonic``: binary only, a monotone step function of ``p1`` (pool adjacent violators),
  applied by linear interpolation between its knots.
- ``none``: the probabilities as trained.

:func:`expected_calibration_error`, :func:`brier_score` and :func:`reliability` measure
how well probabilities match outcome frequencies (10 equal-width bins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medflow.core.errors import ConfigError, InputError

METHODS = ("temperature", "platt", "isotonic", "none")
BINS = 10
TEMPERATURE_RANGE = (0.05, 20.0)  # searched; a fit at either end is reported as degenerate
_EPS = 1e-7


def check_method(method: str, n_classes: int) -> None:
    """One-line :class:`ConfigError` for an unknown method or a binary-only one on more classes."""
    if method not in METHODS:
        raise ConfigError(f"calibration={method!r}: choose one of {', '.join(METHODS)}")
    if method in ("platt", "isotonic") and n_classes != 2:
        raise ConfigError(
            f"calibration={method!r} is for 2 classes, the model has {n_classes}; "
            "use calibration=temperature"
        )


def _logit(probs: np.ndarray) -> np.ndarray:
    """log(p1 / p0) of [N, 2] probabilities (both columns: precise near 0 and 1 in float32)."""
    p = np.clip(probs, _EPS, 1.0)
    return np.log(p[:, 1]) - np.log(p[:, 0])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map; ``params`` are JSON numbers (see the module docstring)."""

    method: str = "none"
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibration:
        d = d or {}
        return cls(d.get("method", "none"), dict(d.get("params") or {}))

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities [N, C] (NumPy; the same map as :meth:`apply_tf`)."""
        probs = np.asarray(probs, np.float64)
        if self.method == "temperature":
            z = np.log(np.clip(probs, _EPS, 1.0)) / self.params["temperature"]
            z -= z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        if self.method == "platt":
            p1 = _sigmoid(self.params["a"] * _logit(probs) + self.params["b"])
        elif self.method == "isotonic":
            p1 = np.interp(probs[:, 1], self.params["x"], self.params["y"])
        else:
            return probs
        return np.stack([1 - p1, p1], axis=1)

    def apply_tf(self, probs):
        """The calibration map inside a TensorFlow graph (float32 [None, C] -> same)."""
        import tensorflow as tf

        if self.method == "temperature":
            logits = tf.math.log(tf.clip_by_value(probs, _EPS, 1.0))
            return tf.nn.softmax(logits / float(self.params["temperature"]), axis=-1)
        if self.method == "none":
            return probs
        if self.method == "platt":
            p = tf.math.log(tf.clip_by_value(probs, _EPS, 1.0))
            logit = p[:, 1] - p[:, 0]
            p1 = tf.sigmoid(float(self.params["a"]) * logit + float(self.params["b"]))
        else:
            p1 = _interp_tf(probs[:, 1], self.params["x"], self.params["y"])
        return tf.stack([1.0 - p1, p1], axis=-1)


def _interp_tf(p, xs, ys):
    """``np.interp(p, xs, ys)`` in TensorFlow (xs increasing, clamped at the ends)."""
    import tensorflow as tf

    x = tf.constant(xs, tf.float32)
    y = tf.constant(ys, tf.float32)
    if len(xs) == 1:
        return tf.fill(tf.shape(p), y[0])
    i = tf.clip_by_value(tf.searchsorted(x, p, side="right"), 1, len(xs) - 1)
    x0, x1 = tf.gather(x, i - 1), tf.gather(x, i)
    y0, y1 = tf.gather(y, i - 1), tf.gather(y, i)
    t = tf.clip_by_value((p - x0) / tf.maximum(x1 - x0, 1e-12), 0.0, 1.0)
    return y0 + t * (y1 - y0)


def fit(method: str, probs: np.ndarray, labels: np.ndarray) -> Calibration:
    """Fit ``method`` to probabilities [N, C] and integer labels [N] (minimum NLL)."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    check_method(method, probs.shape[1])
    if len(labels) == 0:
        raise InputError("calibration: no examples to fit on")
    if method == "temperature":
        return Calibration(method, {"temperature": _fit_temperature(probs, labels)})
    if method == "platt":
        a, b = _fit_platt(_logit(probs), labels)
        return Calibration(method, {"a": a, "b": b})
    if method == "isotonic":
        x, y = _fit_isotonic(probs[:, 1], labels)
        return Calibration(method, {"x": x, "y": y})
    return Calibration()


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return float(-np.mean(np.log(picked)))


def _fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    def loss(log_t: float) -> float:
        return _nll(Calibration("temperature", {"temperature": np.exp(log_t)}).apply(probs), labels)

    best = minimize_scalar(loss, bounds=np.log(TEMPERATURE_RANGE), method="bounded")
    return float(np.exp(best.x))


def _fit_platt(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Logistic regression of ``y`` on ``x`` with Platt's smoothed targets."""
    from scipy.optimize import minimize

    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(ab: np.ndarray) -> float:
        q = np.clip(_sigmoid(ab[0] * x + ab[1]), 1e-12, 1 - 1e-12)
        return float(-np.mean(target * np.log(q) + (1 - target) * np.log(1 - q)))

    best = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-6})
    return float(best.x[0]), float(best.x[1])


def _fit_isotonic(p: np.ndarray, y: np.ndarray) -> tuple[list[float], list[float]]:
    """Pool adjacent violators: knots (block mean score, block positive rate)."""
    order = np.argsort(p, kind="stable")
    blocks: list[list[float]] = []  # [sum of p, sum of y, count]
    for pi, yi in zip(p[order], y[order], strict=True):
        blocks.append([float(pi), float(yi), 1.0])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            last = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last, strict=True)]
    return [b[0] / b[2] for b in blocks], [b[1] / b[2] for b in blocks]


def _top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, np.float64)
    return probs.max(axis=1), (probs.argmax(axis=1) == np.asarray(labels)).astype(np.float64)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Top-label ECE: the count-weighted mean |accuracy - confidence| over equal-width bins."""
    conf, correct = _top_label(probs, labels)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - conf[inside].mean())
    return float(total / max(len(conf), 1))


def brier_score(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean squared error of the positive-class probability (binary) or, for more classes,
    the mean over examples of the squared distance to the one-hot label."""
    probs = np.asarray(probs, np.float64)
    onehot = np.eye(probs.shape[1])[np.asarray(labels)]
    if probs.shape[1] == 2:
        return float(np.mean((probs[:, 1] - onehot[:, 1]) ** 2))
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Reliability diagram rows: per non-empty bin of the top-label confidence, its range,
    count, mean confidence and accuracy."""
    conf, correct = _top_label(probs, labels)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        inside = which == b
        if inside.any():
            rows.append(
                {
                    "bin": [b / bins, (b + 1) / bins],
                    "count": int(inside.sum()),
                    "confidence": float(conf[inside].mean()),
                    "accuracy": float(correct[inside].mean()),
                }
            )
    return rows


def quality(probs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """ECE, Brier score, NLL and the reliability rows of ``probs``."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    return {
        "ece": expected_calibration_error(probs, labels),
        "brier": brier_score(probs, labels),
        "nll": _nll(probs, labels),
        "reliability": reliability(probs, labels),
    }
