"""Correcting detections on the review page: the boxes scoring at least the threshold are
drawn over the image on ``streamlit-drawable-canvas`` (the canvas the mask editor uses) as
labelled boxes in their class colours. The reviewer adds boxes (drag, with the class picked
for new boxes), and with the canvas toolbar's Edit toggle moves, resizes, deletes ("Delete
selected") or relabels them (click a selected box twice and type the class).

Saving maps the canvas boxes back to the image's pixels, checks each box's class and size,
writes them as a new boxes file under ``<workdir>/corrected_boxes/`` (temporary file, then
rename) and records a "correct" review with it (:meth:`ReviewStore.review`, ``mask_ref``):
the store hashes and audits it, and ``medflow labels export`` gives its boxes as the image's
``boxes`` cell for the next run.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from medflow.components.tasks.detection.outputs import COLOURS
from medflow.components.tasks.detection.review import (
    BoxesFile,
    counts_text,
    read_boxes_file,
    threshold_slider,
    write_boxes_file,
)
from medflow.core.errors import InputError

CANVAS_WIDTH = 760  # display pixels, as the mask editor's
CORRECTED_DIR = "corrected_boxes"
MIN_SIDE = 1.0  # source pixels: a saved box is at least this wide and high


def _hex(k: int) -> str:
    return "#{:02x}{:02x}{:02x}".format(*COLOURS[k % len(COLOURS)])


def to_canvas(boxes: list[dict], labels: list[str], scale: tuple[float, float]) -> dict:
    """The canvas's ``initial_drawing`` of source-pixel ``boxes`` (``scale``: canvas pixels
    per source pixel along x and y), each in its class colour."""
    sx, sy = scale
    objects = []
    for b in boxes:
        k = labels.index(b["label"]) if b["label"] in labels else 0
        objects.append({
            "type": "LabeledRect", "label": b["label"], "originX": "left", "originY": "top",
            "left": b["x0"] * sx, "top": b["y0"] * sy, "width": (b["x1"] - b["x0"]) * sx,
            "height": (b["y1"] - b["y0"]) * sy, "scaleX": 1, "scaleY": 1, "angle": 0,
            "stroke": _hex(k), "strokeWidth": 2, "fill": "rgba(0, 0, 0, 0)",
            "lockRotation": True, "strokeUniform": True,
        })  # fmt: skip
    return {"objects": objects}


def from_canvas(
    drawn: list[dict], labels: list[str], scale: tuple[float, float], size: tuple[int, int]
) -> list[dict]:
    """Source-pixel boxes (score None: the reviewer's) of the canvas's boxes (``{label, left,
    top, width, height}`` in canvas pixels), clipped to the ``size`` (rows, columns) image.

    Raises:
        InputError: a box whose label is not a class, or smaller than :data:`MIN_SIDE`
            inside the image (naming the box by its number and place).
    """
    sx, sy = scale
    rows, cols = size
    out = []
    for i, d in enumerate(drawn, start=1):
        x0, y0 = d["left"] / sx, d["top"] / sy
        x1, y1 = x0 + d["width"] / sx, y0 + d["height"] / sy
        x0, x1 = sorted((min(max(x0, 0.0), cols), min(max(x1, 0.0), cols)))
        y0, y1 = sorted((min(max(y0, 0.0), rows), min(max(y1, 0.0), rows)))
        where = f"box {i} (at x {x0:.0f}, y {y0:.0f})"
        if d["label"] not in labels:
            raise InputError(
                f"{where} has class {d['label']!r}, not one of {labels}; select it with Edit, "
                "click it again and type a class"
            )
        if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
            raise InputError(f"{where} is under {MIN_SIDE:g} pixel inside the image; delete it")
        out.append({"label": d["label"], "score": None, "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    return out


def save_corrected_boxes(folder: Path, case_id: int, boxes: list[dict], base: BoxesFile) -> Path:
    """Writes the reviewer's boxes as a boxes file, atomically; returns its absolute path."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    path = folder / f"case-{case_id}-{stamp}.boxes.json"
    return write_boxes_file(
        path, boxes, base.labels, (base.rows, base.columns), source="reviewer", score_threshold=0.0
    )


def show(settings, store, user, pred, study, frame, *, seen_review_id, after) -> None:
    """The box editor of one case, with its Save button."""
    import streamlit as st
    from PIL import Image
    from streamlit_drawable_canvas import st_canvas

    from medflow.dashboard.views.mask_editor import frame_pixels

    try:
        boxes = read_boxes_file(pred.mask_ref)
    except InputError as exc:
        st.error(f"{exc}; the boxes cannot be corrected here")
        return
    cols = st.columns([3, 2])
    label = cols[0].selectbox("Class of new boxes", boxes.labels, key=f"box_class_{pred.id}")
    threshold = threshold_slider(cols[1], boxes, f"box_threshold_{pred.id}")
    width = CANVAS_WIDTH
    height = max(1, round(width * boxes.rows / boxes.columns))
    scale = (width / boxes.columns, height / boxes.rows)
    start = boxes.shown(threshold)
    picture = Image.fromarray(frame_pixels(study, frame)).resize((width, height))
    result = st_canvas(
        fill_color="rgba(0, 0, 0, 0)",
        stroke_width=2,
        stroke_color=_hex(boxes.labels.index(label)),
        background_image=picture,
        height=height,
        width=width,
        drawing_mode="labeled_rect",
        label=label,
        font_size=12,
        initial_drawing=to_canvas(start, boxes.labels, scale),
        key=f"box_canvas_{pred.id}_{threshold:.2f}",
    )
    st.caption(
        f"Starts from the {len(start)} box(es) scoring ≥ {threshold:.2f}. Drag to add a box of "
        "the class above. Edit (canvas toolbar) to move or resize a box, Delete selected to "
        "remove it, or click a selected box again to type its class. Save stores the boxes "
        "as this case's label."
    )
    st.button(
        "Save corrected boxes (S)",
        key="boxes_save",
        shortcut="S",
        type="primary",
        on_click=_save,
        args=(settings, store, user, pred, boxes, result, scale, seen_review_id, after),
    )


def _save(settings, store, user, pred, boxes, result, scale, seen_review_id, after) -> None:
    import streamlit as st

    from medflow.dashboard.views.mask_editor import record_correction

    try:
        new = from_canvas(result.boxes, boxes.labels, scale, (boxes.rows, boxes.columns))
    except InputError as exc:
        st.session_state["review_error"] = f"Case {pred.id}: not saved: {exc}"
        return
    path = save_corrected_boxes(Path(settings.workdir) / CORRECTED_DIR, pred.id, new, boxes)
    done = f"Case {pred.id}: corrected boxes saved ({counts_text(new)})."
    record_correction(store, user, pred, path, seen_review_id, after, done)
