"""The out-of-distribution check of ``medflow predict``, one code path for every task: when the
model's contract names a guard (``guard``: its served name and calibrated threshold), each
input the model answered is also scored by the guard of the same version, and each result is
marked ``in_distribution`` (score at or below the threshold) with its ``ood_score``.

The guard sees the very arrays the model saw: :meth:`GuardCheck.screen` keeps the inputs the
client sends (after any other screen), so files are read and preprocessed once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from medflow.core.contract import ModelContract
from medflow.core.errors import MedflowError
from medflow.core.table import text_table

SCORE = "score"  # the guard's served per-image score (higher = more unusual)
# What each result is marked with (the --json keys, the review store's columns).
GUARD_KEYS = ("ood_score", "in_distribution")


@dataclass
class GuardCheck:
    """Scores a prediction run's inputs with the model's guard.

    Attributes:
        model: the guard's served name; threshold: scores above it are out of distribution.
        quantile / false_alarm_rate: how the threshold was calibrated (for the printed line).
        batch_size: images per Predict request.
    """

    model: str
    threshold: float
    quantile: float | None = None
    false_alarm_rate: float | None = None
    batch_size: int = 32
    _inputs: list = field(default_factory=list)

    @classmethod
    def of(cls, contract: ModelContract | None, batch_size: int = 32) -> GuardCheck | None:
        """The check of ``contract``'s guard (None: no contract, or no guard in it)."""
        guard = dict(contract.guard) if contract is not None else {}
        if not guard:
            return None
        return cls(
            model=str(guard["model_name"]),
            threshold=float(guard["threshold"]),
            quantile=guard.get("quantile"),
            false_alarm_rate=guard.get("false_alarm_rate"),
            batch_size=max(1, batch_size),
        )

    def screen(self, inner: Callable | None = None) -> Callable:
        """A screen for ``predict_dicom`` that keeps what ``inner`` (if any) lets through."""

        def screen(inputs):
            kept, refused = inner(inputs) if inner is not None else (inputs, [])
            self._inputs.extend(kept)
            return kept, refused

        return screen

    def scores(self, client, results: list, warnings: list[str]) -> list[float | None]:
        """The guard's score of each result's input (None where it could not be scored: a
        warning says why), asking the guard version equal to the answering model version."""
        arrays = {(i.sop_instance_uid, i.frame_index): i.array for i in self._inputs}
        by_version: dict[int, list[int]] = defaultdict(list)
        for n, r in enumerate(results):
            if (r.sop_instance_uid, r.frame_index) in arrays:
                by_version[int(r.model_version)].append(n)
        out: list[float | None] = [None] * len(results)
        for version, indices in sorted(by_version.items()):
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                keys = [(results[n].sop_instance_uid, results[n].frame_index) for n in chunk]
                batch = np.stack([arrays[k] for k in keys]).astype(np.float32)
                try:
                    pred = client.predict(
                        self.model, {"image": batch}, version=version, output_filter=(SCORE,)
                    )
                except MedflowError as exc:
                    warnings.append(
                        f"guard {self.model} version {version} did not answer ({exc}); "
                        f"{len(indices)} result(s) not checked: serve the guard beside the model"
                    )
                    break
                for n, value in zip(chunk, np.ravel(pred.outputs[SCORE]), strict=True):
                    out[n] = float(value)
        return out

    def verdicts(self, scores: list[float | None]) -> dict[str, list]:
        """``{"ood_score": [...], "in_distribution": [...]}`` (None where not scored)."""
        return {
            "ood_score": scores,
            "in_distribution": [None if s is None else bool(s <= self.threshold) for s in scores],
        }

    def lines(self, results: list, scores: list[float | None]) -> list[str]:
        """The printed check: one line on the guard, a row per result."""
        how = f"{self.quantile:.0%} quantile of eval scores" if self.quantile else "calibrated"
        if self.false_alarm_rate is not None:
            how += f", false alarms on eval {self.false_alarm_rate:.1%}"
        rows = [("file", "frame", "ood_score", "in_distribution")]
        rows += [
            (
                r.path,
                str(r.frame_index),
                "-" if s is None else f"{s:.4f}",
                "-" if s is None else ("yes" if s <= self.threshold else "NO"),
            )
            for r, s in zip(results, scores, strict=True)
        ]
        header = f"out-of-distribution guard {self.model} (threshold {self.threshold:.4g}: {how})"
        return ["", header, text_table(rows)]
