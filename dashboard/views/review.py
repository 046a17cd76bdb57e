"""Review queue page: pick a case, look at the image, review it.

What a reviewer may do with a case, and what the page shows besides the image (scores,
overlays such as a mask or heatmap, a label picker), is the case's task's review plug-in
(:class:`medflow.core.tasks.TaskReview`, found by the prediction's ``task``); this page names
no task.

Keyboard: each action's key (e.g. A accept, X reject, L correct), N next case, P previous
case (Streamlit button shortcuts; C and R are reserved by Streamlit). Every opened case
writes one "view" audit record; every action one more (in the store, same transaction as
the review).
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from medflow.components.dicom import display as viewer
from medflow.core.tasks import ReviewAction, TaskReview, get_task
from medflow.dashboard.config import Settings
from medflow.dashboard.records import Prediction, Review, ReviewConflict, User
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


def _review(pred: Prediction) -> TaskReview:
    return get_task(pred.task).review()


def _queue_table(queue: list[Prediction]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case": [p.id for p in queue],
            "SOP Instance UID": [p.sop_instance_uid for p in queue],
            "model": [f"{p.model_name} v{p.model_version}" for p in queue],
            "task": [p.task for p in queue],
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


def _act(
    store: ReviewStore,
    user: User,
    pred: Prediction,
    action: ReviewAction,
    next_id: int | None,
    seen_review_id: int | None,
):
    """Saves the action; ``seen_review_id``: the case's latest review the page showed."""
    key = _review(pred).label_widget_key(pred)
    label = st.session_state.get(key) if action.asks_label else None
    try:
        store.review(
            pred.id,
            action=action.name,
            reviewer=user.username,
            label=label,
            comment=st.session_state.get("review_comment", ""),
            expected_review_id=seen_review_id,
        )
    except ReviewConflict as exc:  # someone else reviewed it meanwhile: stay on the case
        st.session_state["review_error"] = f"Not saved: {exc}. The case now shows their review."
        return
    except Exception as exc:  # noqa: BLE001 - shown to the reviewer, nothing was written
        st.session_state["review_error"] = str(exc)
        return
    st.session_state["review_done"] = f"Case {pred.id}: {action.name} saved."
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
            f"#{i} · {_review(by_id[i]).queue_label(by_id[i])} · {by_id[i].sop_instance_uid}"
        ),
    )
    pred = by_id[st.session_state[CASE_KEY]]
    st.query_params["case"] = str(pred.id)
    if st.session_state.get(VIEWED_KEY) != pred.id:
        store.record_view(pred.id, actor=user.username)
        st.session_state[VIEWED_KEY] = pred.id
    image_col, side_col = st.columns([3, 2])
    with image_col:
        problem = _image(pred)
    with side_col:
        _case_panel(store, user, pred, ids, problem)


def _case_panel(
    store: ReviewStore, user: User, pred: Prediction, ids: list[int], problem: str | None
) -> None:
    """The case's details, its task's part and actions, and the queue navigation.

    ``problem``: why the image's overlay cannot be judged (None: it can).
    """
    review = _review(pred)
    st.subheader(f"Case #{pred.id}")
    st.markdown(
        f"**Model** {pred.model_name} v{pred.model_version}  \n"
        f"**Study** `{pred.study_instance_uid}`  \n**Series** `{pred.series_instance_uid}`  \n"
        f"**Instance** `{pred.sop_instance_uid}` (frame {pred.frame_index})  \n"
        f"**Status** {pred.status} · **disagreement** {pred.disagreement:.3f}"
    )
    seen = store.latest_review(pred.id)
    st.markdown(f"**Last review** {_said(seen)}")
    review.render_details(pred)
    st.text_input("Comment", key="review_comment", placeholder="optional, kept in the audit log")
    blocked = {a.name: review.blocked(a, problem) for a in review.actions}
    for why in dict.fromkeys(w for w in blocked.values() if w):
        st.warning(why)
    current = st.session_state[CASE_KEY]
    following = [i for i in ids if i != current]
    after = _step(ids, current, 1) if current != ids[-1] else (following[0] if following else None)
    buttons = st.columns(3)
    for col, action in zip(buttons, review.actions, strict=False):
        col.button(
            f"{action.text} ({action.key})",
            key=f"review_{action.name}",
            on_click=_act,
            args=(store, user, pred, action, after, seen.id if seen else None),
            shortcut=action.key,
            type="primary" if action is review.actions[0] else "secondary",
            disabled=bool(blocked[action.name]),
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


def _said(review: Review | None) -> str:
    if review is None:
        return "none yet"
    when = f"{review.created_at:%Y-%m-%d %H:%M} UTC"
    return f"{review.action} by {review.reviewer} at {when} (review {review.id})"


def _image(pred: Prediction) -> str | None:
    """Shows the case's image with its task's overlays; returns why the overlay the review
    judges cannot be shown (None when it is, or there is none)."""
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
    pixels, problem = _review(pred).render_overlay(pred, pixels, frame == pred.frame_index)
    factor = st.slider("Zoom", 1.0, 8.0, 1.0, 0.5, key="review_zoom")
    if factor > 1.0:
        c = st.columns(2)
        cy = c[0].slider("Pan vertical", 0.0, 1.0, 0.5, key="review_pan_y")
        cx = c[1].slider("Pan horizontal", 0.0, 1.0, 0.5, key="review_pan_x")
        pixels = viewer.zoom(pixels, factor, (cy, cx))
    show_inline(pixels, f"frame {frame + 1}/{study.n_frames} · {study.photometric}")
    return problem


def show_inline(pixels, caption: str) -> None:
    """The image inside the page itself (a data URI), not through Streamlit's /media/
    files: those are served to anyone with the URL, session or not, and stay fetchable
    after sign-out until the tab closes (issue 23). The image lives only in the page."""
    png = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(png, format="PNG")
    data = base64.b64encode(png.getvalue()).decode("ascii")
    st.markdown(
        f'<img class="medflow-case-image" alt="case image" src="data:image/png;base64,{data}" '
        'style="width:100%;image-rendering:pixelated">',
        unsafe_allow_html=True,
    )
    st.caption(caption)


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
