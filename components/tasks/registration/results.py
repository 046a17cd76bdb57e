"""Typed results of a registration ``Predict`` answer: one :class:`PairResult` per pair."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass
class PairResult:
    """One registered pair: what ``medflow predict`` prints and writes.

    ``warped`` [rows, cols] is the moving image warped onto the fixed image (model grid)
    and ``displacement`` [rows, cols, 2] the field (row, col offsets in model-grid pixels);
    Dice values are None without masks.
    """

    fixed: str
    moving: str
    folding_fraction: float
    ncc: float | None
    model_name: str
    model_version: str
    warped: np.ndarray | None = None
    displacement: np.ndarray | None = None
    dice_before: float | None = None
    dice_after: float | None = None
    outputs: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        skip = ("warped", "displacement")
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip
        }


def decode(inputs, prediction, info) -> list[PairResult]:
    """``prediction`` (output name -> array, batch first) for ``inputs`` (pairs with
    ``fixed`` and ``moving`` names) -> one :class:`PairResult` each."""
    outputs = prediction if isinstance(prediction, dict) else prediction.outputs
    name = getattr(info, "name", "") or ""
    version = str(getattr(info, "version", "") or "")
    results = []
    for i, pair in enumerate(inputs):
        results.append(
            PairResult(
                fixed=str(getattr(pair, "fixed", pair)),
                moving=str(getattr(pair, "moving", "")),
                folding_fraction=float(np.asarray(outputs["folding_fraction"])[i]),
                ncc=float(np.asarray(outputs["ncc"])[i]),
                model_name=name,
                model_version=version,
                warped=np.asarray(outputs["warped"])[i],
                displacement=np.asarray(outputs["displacement"])[i],
            )
        )
    return results
