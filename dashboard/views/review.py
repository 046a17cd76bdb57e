"""Review queue page: pick a case, look at the image, accept / reject / correct its label.

A segmentation prediction (one with a mask) shows its mask over the image (fill or contour,
one colour per class, adjustable opacity) and is accepted (the mask is right) or rejected.

Keyboard: A accept, X reject, L correct, N next case, P previous case (Streamlit button
shortcuts; C and R are reserved by Streamlit). Every opened case writes one "view" audit
record; every action one more (in the store, same transaction as the review).
"""

from __future__ import annotations

import html
import os

import numpy as np
import pandas as pd
import streamlit as st

from medflow.components.dicom import display as viewer
from medflow.core.errors import InputError
from medflow.dashboard.config import Settings
from medflow.dashboard.records import Prediction, User
from medflow.dashboard.store import ReviewStore

SORTS = {
    "Least confident first": ("confidence", False),
    "Most disagreement first": ("disagreement", True),
    "Newest first": ("created", True),
}
STATUS_FILTERS = {"To review": "pending", "Reviewed": "reviewed", "All": "all"}
CASE_KEY = "review_case"
VIEWED_KEY = "review_viewed_case"


@st.cache_data(show_spinner=False, max_entries=8)
def _study(path: str, mtime: float) -> viewer.Study:  # mtime: re-read when the file changes
    return viewer.load_study(path)


@st.cache_data(show_spinner=False, max_entries=16)
def _mask(path: str, mtime: float) -> np.ndarray:  # mtime: re-read when the file changes
    return viewer.load_mask(path)


def _queue_table(queue: list[Prediction]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case": [p.id for p in queue],
            "SOP Instance UID": [p.sop_instance_uid for p in queue],
            "model": [f"{p.model_name} v{p.model_version}" for p in queue],
            "task": ["segmentation" if p.is_segmentation else "classification" for p in queue],
            "predicted": [p.predicted_label for p in queue],
            "confidence": [round(p.confidence, 3) for p in queue],
            "disagreement": [round(p.disagreement, 3) for p in queue],
            "status": [p.status for p in queue],
        }
    )


def _controls(store: ReviewStore) -> tuple[str, bool, str, str | None]:
    cols = st.columns(3)
    sort_name = cols[0].selectbox("Order", list(SORTS), key="review_sort")
    status_name = cols[1].selectbox("Show", list(STATUS_FILTERS), key="review_status")
    models = ["All models", *store.model_names()]
    model = cols[2].selectbox("Model", models, key="review_model")
    sort, descending = SORTS[sort_name]
    return sort, descending, STATUS_FILTERS[status_name], None if model == models[0] else model


def _step(ids: list[int], current: int | None, delta: int) -> int | None:
    if not ids:
        return None
    if current not in ids:
        return ids[0]
    return ids[min(max(ids.index(current) + delta, 0), len(ids) - 1)]


def _act(store: ReviewStore, user: User, pred: Prediction, action: str, next_id: int | None):
    label = st.session_state.get(f"review_label_{pred.id}") if action == "correct" else None
    try:
        store.review(
            pred.id,
            action=action,
            reviewer=user.username,
            label=label,
            comment=st.session_state.get("review_comment", ""),
        )
    except Exception as exc:  # noqa: BLE001 - shown to the reviewer, nothing was written
        st.session_state["review_error"] = str(exc)
        return
    st.session_state["review_done"] = f"Case {pred.id}: {action} saved."
    st.session_state["review_comment"] = ""
    st.session_state[CASE_KEY] = next_id


def show(settings: Settings, store: ReviewStore, user: User) -> None:
    """Renders the review page."""
    st.title("Review queue")
    sort, descending, status, model = _controls(store)
    queue = store.list_queue(sort=sort, descending=descending, status=status, model_name=model)
    st.caption(f"{len(queue)} case(s); {store.count(status='pending')} waiting for review in all.")
    for key, say in (("review_done", st.success), ("review_error", st.error)):
        if key in st.session_state:
            say(st.session_state.pop(key))
    if not queue:
        st.info("Nothing to review here.")
        return
    ids = [p.id for p in queue]
    wanted = st.query_params.get("case")
    if CASE_KEY not in st.session_state and wanted and wanted.isdigit() and int(wanted) in ids:
        st.session_state[CASE_KEY] = int(wanted)
    if st.session_state.get(CASE_KEY) not in ids:
        st.session_state[CASE_KEY] = ids[0]
    by_id = {p.id: p for p in queue}
    with st.expander("Queue", expanded=False):
        st.dataframe(_queue_table(queue), hide_index=True, width="stretch")
    st.selectbox(
        "Case",
        ids,
        key=CASE_KEY,
        format_func=lambda i: (
            f"#{i} · "
            + (
                f"mask ({by_id[i].model_name})"
                if by_id[i].is_segmentation
                else f"{by_id[i].predicted_label} {by_id[i].confidence:.2f}"
            )
            + f" · {by_id[i].sop_instance_uid}"
        ),
    )
    pred = by_id[st.session_state[CASE_KEY]]
    st.query_params["case"] = str(pred.id)
    if st.session_state.get(VIEWED_KEY) != pred.id:
        store.record_view(pred.id, actor=user.username)
        st.session_state[VIEWED_KEY] = pred.id
    image_col, side_col = st.columns([3, 2])
    with image_col:
        mask_problem = _image(pred)
    with side_col:
        _case_panel(store, user, pred, ids, mask_problem)


def _case_panel(
    store: ReviewStore, user: User, pred: Prediction, ids: list[int], mask_problem: str | None
) -> None:
    st.subheader(f"Case #{pred.id}")
    st.markdown(
        f"**Model** {pred.model_name} v{pred.model_version}  \n"
        f"**Study** `{pred.study_instance_uid}`  \n**Series** `{pred.series_instance_uid}`  \n"
        f"**Instance** `{pred.sop_instance_uid}` (frame {pred.frame_index})  \n"
        f"**Status** {pred.status} · **disagreement** {pred.disagreement:.3f}"
    )
    if pred.is_segmentation:
        st.markdown(f"**Mask** `{pred.mask_ref}`")
        scores = ", ".join(f"{n} {v:.3f}" for n, v in zip(pred.labels, pred.scores, strict=True))
        st.caption(f"Scores recorded with the mask: {scores}")
        st.caption(
            "Accept: the mask is right and becomes a training label (`medflow labels export`). "
            "Reject: it is wrong and is left out. Correcting a mask by drawing is not supported."
        )
        actions = (("accept", "Accept mask", "A"), ("reject", "Reject mask", "X"))
    else:
        st.bar_chart(
            pd.DataFrame({"probability": pred.scores}, index=pred.labels),
            horizontal=True,
            height=150,
        )
        others = [i for i in range(len(pred.labels)) if i != pred.predicted_index]
        st.radio(
            "Correct label",
            others,
            format_func=lambda i: pred.labels[i],
            key=f"review_label_{pred.id}",
            horizontal=True,
            help="used by Correct label; Accept keeps the predicted label",
        )
        actions = (
            ("accept", "Accept", "A"),
            ("reject", "Reject", "X"),
            ("correct", "Correct label", "L"),
        )
    st.text_input("Comment", key="review_comment", placeholder="optional, kept in the audit log")
    if pred.is_segmentation and mask_problem:
        st.warning(f"Accept needs a mask you can see: {mask_problem}")
    current = st.session_state[CASE_KEY]
    following = [i for i in ids if i != current]
    after = _step(ids, current, 1) if current != ids[-1] else (following[0] if following else None)
    buttons = st.columns(3)
    for col, (action, text, key) in zip(buttons, actions, strict=False):
        col.button(
            f"{text} ({key})",
            key=f"review_{action}",
            on_click=_act,
            args=(store, user, pred, action, after),
            shortcut=key,
            type="primary" if action == "accept" else "secondary",
            disabled=action == "accept" and bool(pred.is_segmentation and mask_problem),
        )
    nav = st.columns(2)
    nav[0].button(
        "Previous (P)",
        key="review_prev",
        shortcut="P",
        on_click=lambda: st.session_state.update({CASE_KEY: _step(ids, current, -1)}),
    )
    nav[1].button(
        "Next (N)",
        key="review_next",
        shortcut="N",
        on_click=lambda: st.session_state.update({CASE_KEY: _step(ids, current, 1)}),
    )


def _image(pred: Prediction) -> str | None:
    """Shows the case's image with its overlays; returns why its mask cannot be judged
    (None when it is shown, or the case has no mask)."""
    path = pred.image_ref
    if not os.path.isfile(path):
        st.warning(f"Image {path} is not a readable file here; cannot display it.")
        return "the image cannot be displayed"
    try:
        study = _study(path, os.path.getmtime(path))
    except Exception as exc:  # noqa: BLE001 - a bad image must not break the queue
        st.error(f"Cannot display {path}: {exc}")
        return "the image cannot be displayed"
    frame = pred.frame_index if pred.frame_index < study.n_frames else 0
    if study.n_frames > 1:
        frame = st.slider("Frame", 0, study.n_frames - 1, frame, key=f"frame_{pred.id}")
    pixels = _windowed(study, frame, pred.id)
    pixels, mask_problem = _overlay(pred, pixels, on_frame=frame == pred.frame_index)
    factor = st.slider("Zoom", 1.0, 8.0, 1.0, 0.5, key="review_zoom")
    if factor > 1.0:
        c = st.columns(2)
        cy = c[0].slider("Pan vertical", 0.0, 1.0, 0.5, key="review_pan_y")
        cx = c[1].slider("Pan horizontal", 0.0, 1.0, 0.5, key="review_pan_x")
        pixels = viewer.zoom(pixels, factor, (cy, cx))
    st.image(
        pixels,
        caption=f"frame {frame + 1}/{study.n_frames} · {study.photometric}",
        clamp=True,
        width="stretch",
    )
    return mask_problem


def _windowed(study: viewer.Study, frame: int, case_id: int):
    if study.is_color:
        return viewer.render(study, frame, 0.0, 1.0)
    presets = study.presets()
    cols = st.columns([2, 3, 3])
    preset = cols[0].selectbox("Window preset", presets, key=f"preset_{case_id}")
    center, width = study.preset_window(preset)
    lo, hi = study.value_range()
    span = max(hi - lo, 1.0)
    # Slider keys include the preset so picking a preset resets the free sliders to it.
    center = cols[1].slider(
        "Level (center)", lo - span, hi + span, float(center), key=f"level_{case_id}_{preset}"
    )
    width = cols[2].slider(
        "Window (width)",
        1.0,
        4 * span,
        float(min(width, 4 * span)),
        key=f"width_{case_id}_{preset}",
    )
    return viewer.render(study, frame, center, width)


def _overlay(pred: Prediction, pixels: np.ndarray, on_frame: bool) -> tuple[np.ndarray, str | None]:
    """Draws the chosen overlay; returns the pixels and why the mask cannot be shown (or None).

    ``on_frame``: the displayed frame is the one the prediction (and its mask) is about.
    """
    choices = [
        (k, ref) for k, ref in (("mask", pred.mask_ref), ("heatmap", pred.heatmap_ref)) if ref
    ]
    if not choices:
        return pixels, None
    mask, problem = (
        _checked_mask(pred.mask_ref, pixels.shape[:2]) if pred.mask_ref else (None, None)
    )
    if problem:
        st.error(problem)
    cols = st.columns([3, 2, 3])
    names = ["none"] + [k for k, _ in choices]
    kind = cols[0].radio("Overlay", names, index=1, horizontal=True, key=f"overlay_{pred.id}")
    view = "fill"
    if pred.mask_ref:
        view = cols[1].radio(
            "Mask view", viewer.MASK_VIEWS, horizontal=True, key="review_mask_view"
        )
    opacity = cols[2].slider("Opacity", 0.0, 1.0, 0.4, 0.05, key="review_opacity")
    if kind == "mask":
        if mask is None:
            return pixels, problem
        if not on_frame:
            st.caption(f"The mask belongs to frame {pred.frame_index + 1}; not drawn here.")
            return pixels, problem
        _legend(pred, mask)
        return viewer.blend_mask(pixels, mask, opacity, view), problem
    if kind == "heatmap":
        try:
            overlay = viewer.load_overlay(pred.heatmap_ref, pixels.shape[:2])
        except Exception as exc:  # noqa: BLE001 - shown, image stays usable
            st.warning(str(exc))
            return pixels, problem
        return viewer.blend(pixels, overlay, opacity), problem
    return pixels, problem


def _checked_mask(ref: str, shape: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """The decoded mask (cached) if it fits the image, else None and why not."""
    try:
        mask = _mask(ref, os.path.getmtime(ref) if os.path.isfile(ref) else 0.0)
        viewer.check_mask_shape(mask, shape, ref)
    except InputError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot show the mask {ref}: {exc}"
    return mask, None


def _legend(pred: Prediction, mask: np.ndarray) -> None:
    """Colour, class name and share of the image for each class in the mask."""
    counts = np.bincount(mask.ravel(), minlength=2)
    items = []
    for k in np.flatnonzero(counts[1:]) + 1:
        name = pred.labels[k] if k < len(pred.labels) else f"class {k}"
        r, g, b = viewer.class_color(int(k))
        items.append(
            f'<span style="color:rgb({r},{g},{b})">&#9632;</span> {html.escape(name)} '
            f"({100.0 * counts[k] / mask.size:.1f} % of the image)"
        )
    st.markdown(
        " &nbsp; ".join(items) if items else "The mask is empty (background only).",
        unsafe_allow_html=True,
    )
