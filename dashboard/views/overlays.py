"""Overlay controls of the review page that every task's review plug-in shares.

A task's review plug-in puts its own layers (e.g. a mask) next to the prediction's heatmap
with these: one "Overlay" picker per case, an opacity slider, and the heatmap from the
prediction's ``heatmap_ref`` as a blend over display pixels. The review page asks a plug-in
for :meth:`~medflow.core.tasks.TaskReview.overlay_blend` (the chosen overlay as a function of
the pixels) and turns it into the viewer's RGBA layer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import streamlit as st

from medflow.components.dicom import display as viewer
from medflow.dashboard.records import Prediction

HEATMAP = "heatmap"


def layer_picker(pred: Prediction, layers: list[str]) -> tuple[str, list]:
    """The "Overlay" picker ("none" and ``layers``, the first layer on); returns the chosen
    layer and the row's three columns (picker, a task's own control, opacity)."""
    cols = st.columns([3, 2, 3])
    names = ["none", *layers]
    kind = cols[0].radio("Overlay", names, index=1, horizontal=True, key=f"overlay_{pred.id}")
    return kind, cols


def opacity(column) -> float:
    """The overlay opacity slider (shared by all cases)."""
    return column.slider("Opacity", 0.0, 1.0, 0.4, 0.05, key="review_opacity")


def heatmap_blend(
    pred: Prediction, shape: tuple[int, int], alpha: float
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The prediction's heatmap as a blend over display pixels of ``shape`` (None, with a
    warning, when the heatmap cannot be read)."""
    try:
        overlay = viewer.load_overlay(pred.heatmap_ref, shape)
    except Exception as exc:  # noqa: BLE001 - shown, image stays usable
        st.warning(str(exc))
        return None
    return lambda pixels: viewer.blend(pixels, overlay, alpha)
