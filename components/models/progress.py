"""One progress line per training epoch, for the console of a local run.

The Trainer runs inside the LocalDagRunner, whose console output goes to the run's log file;
the run's progress lines come from absl's log records (:mod:`medflow.pipelines.progress`),
so each epoch is logged there under :data:`PROGRESS_PREFIX` and shown on the console as it
ends. Elsewhere (Kubeflow) it is one log line per epoch.
"""

from __future__ import annotations

import logging
import time

# Log records starting with this are progress lines for the console.
PROGRESS_PREFIX = "medflow progress: "


def epoch_line(epoch: int, epochs: int, logs: dict, seconds: float) -> str:
    """``epoch 3/20: loss 0.3120, accuracy 0.8810, val_loss 0.2911, val_auc 0.9712 (12 s)``"""
    values = ", ".join(
        f"{name} {float(value):.4f}"
        for name, value in logs.items()
        if name != "learning_rate" and isinstance(value, int | float)
    )
    return f"epoch {epoch}/{epochs}: {values} ({seconds:.0f} s)"


def epoch_progress(epochs: int, logger: logging.Logger | None = None):
    """A Keras callback logging :func:`epoch_line` at the end of every epoch."""
    import keras

    log = logger or logging.getLogger("absl")

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            line = epoch_line(
                epoch + 1,
                epochs,
                {k: _scalar(v) for k, v in (logs or {}).items()},
                time.perf_counter() - self._start,
            )
            log.info("%s%s", PROGRESS_PREFIX, line)

    return EpochProgress()


def _scalar(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
