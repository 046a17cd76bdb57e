"""Review queue page: the case's image first and large, the case panel beside it.

The image is in the viewer (:mod:`.viewer`: window/level by mouse or arrow keys, invert,
zoom, pan, distance and area measurement, full screen), sized to the window so it is above
the fold. The case panel shows the patient, study and series as pseudonyms
(:mod:`.case_context`), the task's part and the actions. Queue filters are in the sidebar.

What a reviewer may do with a case, and what the page shows besides the image (scores,
overlays such as a mask or heatmap, a label picker), is the case's task's review plug-in
(:class:`medflow.core.tasks.TaskReview`, found by the prediction's ``task``); this page names
no task. A task whose review judges mask files and takes "correct" gets the mask editor
(:mod:`.mask_editor`: draw the right mask, save it), or its own editor of the judged file
(:meth:`~medflow.core.tasks.TaskReview.editor`, e.g. boxes).

Keyboard: each action's key (e.g. A accept, X reject, L correct label, S save a corrected
mask), N next case, P previous case (Streamlit button shortcuts; C and R are reserved by
Streamlit); the viewer passes them on when it has the focus. Every opened case writes one
"view" audit record; every action one more (in the store, same transaction as the review).
"""

from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from medflow.components.dicom import display as viewer
from medflow.core.tasks import ReviewAction, TaskReview, get_task
from medflow.dashboard.config import Settings
from medflow.dashboard.records import Prediction, Review, ReviewConflict, User
from medflow.dashboard.store import ReviewStore
from medflow.dashboard.views import case_context, mask_editor
from medflow.dashboard.views import viewer as viewer_view

SORTS = {
    "Least confident first": ("confidence", False),
    "Most disagreement first": ("disagreement", True),
    "Newest first": ("created", True),
}
STATUS_FILTERS = {"To review": "pending", "Reviewed": "reviewed", "All": "all"}
CASE_KEY = "review_case"
# Less space above the page's content, so that the image starts near the top of the window.
_COMPACT = "<style>.stMainBlockContainer{padding:4rem 1rem 1rem 1rem}</style>"
VIEWED_KEY = "review_viewed_case"


@st.cache_data(show_spinner=False, max_entries=8)
def _study(path: str, mtime: float) -> viewer.Study:  # mtime: re-read when the file changes
    return viewer.load_study(path)


def _review(pred: Prediction) -> TaskReview:
    return get_task(pred.task).review()


def ood_flag(pred: Prediction) -> str:
    """A prefix for a case the model's guard flagged (the queue sorts those first), else ""."""
    return "OUT OF DISTRIBUTION · " if pred.in_distribution is False else ""


def _queue_table(queue: list[Prediction]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "case": [p.id for p in queue],
            "guard": [ood_flag(p).rstrip(" ·") or "-" for p in queue],
            "prediction": [_review(p).queue_label(p) for p in queue],
            "model": [f"{p.model_name} v{p.model_version}" for p in queue],
            "task": [p.task for p in queue],
            "confidence": [round(p.confidence, 3) for p in queue],
            "disagreement": [round(p.disagreement, 3) for p in queue],
            "status": [p.status for p in queue],
        }
    )


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


def _controls(store: ReviewStore) -> tuple[str, bool, str, str | None]:
    with st.sidebar:
        sort_name = st.selectbox("Order", list(SORTS), key="review_sort")
        status_name = st.selectbox("Show", list(STATUS_FILTERS), key="review_status")
        models = ["All models", *store.model_names()]
        model = st.selectbox("Model", models, key="review_model")
    sort, descending = SORTS[sort_name]
    return sort, descending, STATUS_FILTERS[status_name], None if model == models[0] else model


def show(settings: Settings, store: ReviewStore, user: User) -> None:
    """Renders the review page: the image first and large (left), the case panel (right)."""
    st.sidebar.title("Review queue")
    sort, descending, status, model = _controls(store)
    queue = store.list_queue(sort=sort, descending=descending, status=status, model_name=model)
    st.sidebar.caption(
        f"{len(queue)} case(s); {store.count(status='pending')} waiting for review in all."
    )
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
    st.html(_COMPACT)
    image_col, side_col = st.columns([3, 1])
    with side_col:
        st.selectbox(
            "Case",
            ids,
            key=CASE_KEY,
            format_func=lambda i: (
                f"#{i} · {ood_flag(by_id[i])}{_review(by_id[i]).queue_label(by_id[i])}"
            ),
        )
    pred = by_id[st.session_state[CASE_KEY]]
    st.query_params["case"] = str(pred.id)
    if st.session_state.get(VIEWED_KEY) != pred.id:
        store.record_view(pred.id, actor=user.username)
        st.session_state[VIEWED_KEY] = pred.id
    head = case_context.header(pred)
    seen = store.latest_review(pred.id)
    with side_col:
        st.markdown(case_context.context_markdown(store.session_key(), pred, head))
        review = _review(pred)
        # A task that reviews masks and takes "correct" gets the drawing canvas.
        drawing = bool(review.reviews_mask_file and review.action("correct")) and st.toggle(
            f"Correct {review.judged_file} (draw)", key=f"edit_mask_{pred.id}"
        )
    with image_col:
        problem = _image(settings, store, user, pred, head, seen, ids, drawing)
    with side_col:
        _case_panel(store, user, pred, ids, problem, seen)
    with st.expander("Queue", expanded=False):
        st.dataframe(_queue_table(queue), hide_index=True, width="stretch")


def _next_after(ids: list[int], current: int) -> int | None:
    """The case to open after acting on ``current``: the next one, else the first other."""
    following = [i for i in ids if i != current]
    return _step(ids, current, 1) if current != ids[-1] else (following[0] if following else None)


def _case_panel(
    store: ReviewStore,
    user: User,
    pred: Prediction,
    ids: list[int],
    problem: str | None,
    seen: Review | None,
) -> None:
    """The case's task part and actions, and the queue navigation.

    ``problem``: why the image's overlay cannot be judged (None: it can).
    """
    review = _review(pred)
    st.markdown(
        f"**Status** {pred.status} · **disagreement** {pred.disagreement:.3f}  \n"
        f"**Last review** {_said(seen)}"
    )
    if pred.in_distribution is False:
        st.warning(
            f"Out of distribution: the model's guard scored this image {pred.ood_score:.3g}, "
            "above its threshold; the model was not trained on images like it"
        )
    review.render_details(pred)
    st.text_input("Comment", key="review_comment", placeholder="optional, kept in the audit log")
    blocked = {a.name: review.blocked(a, problem) for a in review.actions}
    for why in dict.fromkeys(w for w in blocked.values() if w):
        st.warning(why)
    current = st.session_state[CASE_KEY]
    after = _next_after(ids, current)
    # A mask's correction is saved from the drawing canvas (mask_editor), not from here.
    for action in review.actions:
        if review.reviews_mask_file and action.name == "correct":
            continue
        st.button(
            f"{action.text} ({action.key})",
            key=f"review_{action.name}",
            on_click=_act,
            args=(store, user, pred, action, after, seen.id if seen else None),
            shortcut=action.key,
            type="primary" if action is review.actions[0] else "secondary",
            disabled=bool(blocked[action.name]),
            width="stretch",
        )
    nav = st.columns(2)
    nav[0].button(
        "Previous (P)",
        key="review_prev",
        shortcut="P",
        on_click=lambda: st.session_state.update({CASE_KEY: _step(ids, current, -1)}),
        width="stretch",
    )
    nav[1].button(
        "Next (N)",
        key="review_next",
        shortcut="N",
        on_click=lambda: st.session_state.update({CASE_KEY: _step(ids, current, 1)}),
        width="stretch",
    )
    with st.expander("Identifiers"):
        st.markdown(
            f"Study `{pred.study_instance_uid}`  \nSeries `{pred.series_instance_uid}`  \n"
            f"Instance `{pred.sop_instance_uid}` (frame {pred.frame_index})"
        )


def _said(review: Review | None) -> str:
    if review is None:
        return "none yet"
    when = f"{review.created_at:%Y-%m-%d %H:%M} UTC"
    return f"{review.action} by {review.reviewer} at {when} (review {review.id})"


def _image(
    settings: Settings,
    store: ReviewStore,
    user: User,
    pred: Prediction,
    head: case_context.Header | None,
    seen: Review | None,
    ids: list[int],
    drawing: bool,
) -> str | None:
    """Shows the case's image in the viewer, its task's overlay controls below it, or (when
    ``drawing``) the mask editor; returns why the overlay the review judges cannot be shown
    (None: it is)."""
    path = pred.image_ref
    if not os.path.isfile(path):
        st.warning(f"Image {path} is not a readable file here; cannot display it.")
        return "the image cannot be displayed"
    try:
        study = _study(path, os.path.getmtime(path))
    except Exception as exc:  # noqa: BLE001 - a bad image must not break the queue
        st.error(f"Cannot display {path}: {exc}")
        return "the image cannot be displayed"
    review = _review(pred)
    frame = pred.frame_index if pred.frame_index < study.n_frames else 0
    slot = st.container()
    if study.n_frames > 1:
        frame = st.slider("Frame", 0, study.n_frames - 1, frame, key=f"frame_{pred.id}")
    spacing = head.spacing if head else None
    if drawing and frame == pred.frame_index:
        with slot:
            (review.editor() or mask_editor.show)(
                settings, store, user, pred, study, frame,
                seen_review_id=seen.id if seen else None, after=_next_after(ids, pred.id),
            )  # fmt: skip
        return None
    if drawing:
        st.caption(
            f"The {review.judged_file} belongs to frame {pred.frame_index + 1}; draw on that frame."
        )
    layer, problem = _layer(review, pred, study, frame)
    caption = f"frame {frame + 1}/{study.n_frames} · {study.photometric}"
    if spacing:
        caption += f" · {spacing[0]:.3g}×{spacing[1]:.3g} mm pixels"
    with slot:
        viewer_view.show(
            viewer_view.payload(
                study, frame, key=str(pred.id), layer=layer, spacing=spacing, caption=caption
            )  # fmt: skip
        )
    return problem


def _layer(review: TaskReview, pred: Prediction, study: viewer.Study, frame: int):
    """The task's overlay as an RGBA layer (its controls drawn here), and why the judged
    overlay cannot be shown (None: it can)."""
    shape = study.frames.shape[1:3]
    on_frame = frame == pred.frame_index
    blend, problem = review.overlay_blend(pred, shape, on_frame)
    return (None if blend is None else viewer_view.overlay_layer(blend, shape)), problem
