"""Correcting a predicted mask by drawing: brush, eraser, polygon fill and polygon erase over
the image with the mask, on ``streamlit-drawable-canvas`` (a maintained Streamlit v2
component, Fabric.js; see the README's dashboard section for why this one).

The canvas returns what was drawn as an RGBA picture; each drawn pixel takes the class whose
colour is nearest (black: erase to background), scaled back to the image's grid, on top of the
predicted mask. Saving writes the corrected mask as a PNG of class indices under
``<workdir>/corrected_masks/`` (temporary file, then rename) and records a "correct" review
with it (:meth:`ReviewStore.review`, ``mask_ref``): the store hashes and audits it, and
``medflow labels export`` gives it as the case's mask for the next run.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

from medflow.components.dicom import display
from medflow.core.files import atomic_write
from medflow.dashboard.config import Settings
from medflow.dashboard.records import Prediction, ReviewConflict, User
from medflow.dashboard.store import ReviewStore

TOOLS = {  # name -> (canvas drawing mode, erases)
    "Brush": ("freedraw", False),
    "Eraser": ("freedraw", True),
    "Polygon fill": ("polygon", False),
    "Polygon erase": ("polygon", True),
}
ERASE_COLOR = (0, 0, 0)
CANVAS_WIDTH = 760  # display pixels (fits the image column at 1400 px); keeps the image aspect
CORRECTED_DIR = "corrected_masks"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def drawn_classes(rgba: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The class of each drawn pixel of a canvas picture, and which pixels were drawn.

    A pixel counts as drawn when it is at least half opaque; its class is the one whose
    display colour is nearest (:data:`ERASE_COLOR` is class 0), so anti-aliased stroke
    edges go to the stroke's class.
    """
    palette = np.array(
        [ERASE_COLOR, *(display.class_color(k) for k in range(1, n_classes))], np.float32
    )
    drawn = rgba[..., 3] >= 128
    distance = ((rgba[..., None, :3].astype(np.float32) - palette) ** 2).sum(axis=-1)
    return distance.argmin(axis=-1).astype(np.uint8), drawn


def corrected_mask(mask: np.ndarray, rgba: np.ndarray, n_classes: int) -> np.ndarray:
    """``mask`` with the canvas picture's drawn pixels (scaled to the mask's grid) applied."""
    classes, drawn = drawn_classes(rgba, n_classes)
    size = (mask.shape[1], mask.shape[0])
    classes = np.asarray(Image.fromarray(classes).resize(size, Image.Resampling.NEAREST))
    drawn = np.asarray(Image.fromarray(drawn.astype(np.uint8) * 255).resize(size)) >= 128
    out = mask.copy()
    out[drawn] = classes[drawn]
    return out


def save_corrected_mask(folder: Path, case_id: int, mask: np.ndarray) -> Path:
    """Writes the mask as a PNG of class indices, atomically; returns its absolute path."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = (folder / f"case-{case_id}-{stamp}.png").resolve()
    png = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8), mode="L").save(png, format="PNG")
    atomic_write(path, png.getvalue())
    return path


def frame_pixels(study: display.Study, frame: int) -> np.ndarray:
    """The frame's display pixels at the study's first window preset (colour as stored)."""
    center, width = study.preset_window(study.presets()[0]) if not study.is_color else (0, 1)
    return display.render(study, frame, center, width)


def _background(study: display.Study, frame: int, mask: np.ndarray, size) -> Image.Image:
    shown = display.blend_mask(frame_pixels(study, frame), mask, 0.35, "fill")
    return Image.fromarray(shown).resize(size, Image.Resampling.NEAREST)


def show(
    settings: Settings,
    store: ReviewStore,
    user: User,
    pred: Prediction,
    study: display.Study,
    frame: int,
    *,
    seen_review_id: int | None,
    after: int | None,
) -> None:
    """The editor for one case's mask, with its Save button."""
    from streamlit_drawable_canvas import st_canvas

    try:
        mask = display.load_mask(pred.mask_ref)
        display.check_mask_shape(mask, study.frames.shape[1:3], pred.mask_ref)
    except Exception as exc:  # noqa: BLE001 - said; drawing from an empty mask still works
        st.warning(f"{exc}; drawing on an empty mask")
        mask = np.zeros(study.frames.shape[1:3], np.uint8)
    cols = st.columns([3, 2, 2])
    tool = cols[0].radio("Tool", list(TOOLS), horizontal=True, key="mask_tool")
    classes = list(range(1, max(len(pred.labels), 2)))
    label = cols[1].selectbox("Class", classes, format_func=lambda k: pred.labels[k]
                              if k < len(pred.labels) else f"class {k}", key="mask_class")  # fmt: skip
    stroke = cols[2].slider("Brush size", 1, 60, 16, key="mask_brush")
    mode, erases = TOOLS[tool]
    color = _hex(ERASE_COLOR if erases else display.class_color(label))
    rows, cols_ = mask.shape
    width = CANVAS_WIDTH
    height = max(1, round(width * rows / cols_))
    result = st_canvas(
        fill_color=color,
        stroke_width=stroke,
        stroke_color=color,
        background_image=_background(study, frame, mask, (width, height)),
        update_streamlit=True,
        height=height,
        width=width,
        drawing_mode=mode,
        return_image_data=True,
        key=f"mask_canvas_{pred.id}",
    )
    st.caption(
        "Draw where the mask is wrong: Brush/Polygon fill paint the class, Eraser/Polygon "
        "erase paint background (close a polygon by clicking its first point). Undo is in "
        "the canvas toolbar. Save stores the corrected mask as this case's label."
    )
    st.button(
        "Save corrected mask (S)",
        key="mask_save",
        shortcut="S",
        type="primary",
        on_click=_save,
        args=(settings, store, user, pred, mask, result, seen_review_id, after),
    )


def _save(settings, store, user, pred, mask, result, seen_review_id, after) -> None:
    rgba = result.image_data if result.json_data and result.json_data.get("objects") else None
    if rgba is None or not (rgba[..., 3] >= 128).any():
        st.session_state["review_error"] = (
            f"Case {pred.id}: nothing drawn yet; draw the correction on the mask, then save"
        )
        return
    new = corrected_mask(mask, rgba, max(len(pred.labels), 2))
    path = save_corrected_mask(Path(settings.workdir) / CORRECTED_DIR, pred.id, new)
    changed = int((new != mask).sum())
    done = f"Case {pred.id}: corrected mask saved ({changed} pixel(s) changed)."
    record_correction(store, user, pred, path, seen_review_id, after, done)


def record_correction(store, user, pred, path: Path, seen_review_id, after, done: str) -> None:
    """Records a "correct" review with the corrected file ``path`` and says ``done`` (or, when
    refused, removes the file and says why), then opens the case ``after``."""
    from medflow.dashboard.views.review import CASE_KEY

    try:
        store.review(
            pred.id,
            action="correct",
            reviewer=user.username,
            comment=st.session_state.get("review_comment", ""),
            expected_review_id=seen_review_id,
            mask_ref=path,
        )
    except Exception as exc:  # noqa: BLE001 - shown to the reviewer; nothing was recorded
        path.unlink(missing_ok=True)
        said = f"Not saved: {exc}. The case now shows their review." if isinstance(
            exc, ReviewConflict) else str(exc)  # fmt: skip
        st.session_state["review_error"] = said
        return
    st.session_state["review_done"] = done
    st.session_state["review_comment"] = ""
    st.session_state[CASE_KEY] = after
