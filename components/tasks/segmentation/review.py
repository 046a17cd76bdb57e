"""Reviewing segmentation predictions: the mask file (``mask_ref``) is accepted (it is right
and becomes a training label), rejected, or corrected by drawing on the review page (brush,
eraser, polygon; ``medflow.dashboard.views.mask_editor``), which saves the corrected mask as a
new file and records the review with it.

The store records the SHA-256 of the judged mask file (the prediction's, or the corrected
one) with each review, and the labels export gives that file's path in a ``mask`` column
after checking the file still has the reviewed bytes. The review page draws the mask over the
image with a legend of its classes and their areas; the queue names each case by the classes
its mask holds. Streamlit is imported inside the rendering functions.
"""

from __future__ import annotations

import functools
import html
import os
from pathlib import Path

import numpy as np

from medflow.components.dicom import display as viewer
from medflow.core.errors import InputError
from medflow.core.tasks import ReviewAction, TaskReview

MASK = "mask"
_PAST = {"accept": "accepted", "reject": "rejected", "correct": "corrected"}


class MaskReview(TaskReview):
    """The segmentation review plug-in (see :class:`medflow.core.tasks.TaskReview`)."""

    actions = (
        ReviewAction("accept", "Accept mask", "A"),
        ReviewAction("reject", "Reject mask", "X"),
        ReviewAction("correct", "Save corrected mask", "S"),
    )
    reviews_mask_file = True
    export_kind = "masks"
    export_columns = ("mask",)
    export_extra_columns = ("_mask_sha256",)

    def label_index(self, pred, action: str, label: int | str | None) -> int | None:
        if self.action(action) is None:
            raise InputError(
                f"case {pred.id} is a segmentation prediction: accept, reject or correct its "
                f"mask, not {action!r}"
            )
        return None if action == "reject" else pred.predicted_index

    def artifact_digest(self, pred, action: str) -> str | None:
        """SHA-256 of the mask file (None: a missing file being rejected)."""
        from medflow.dashboard.store import file_sha256

        try:
            return file_sha256(pred.mask_ref)
        except OSError as exc:
            if action == "reject":
                return None
            raise InputError(
                f"cannot accept case {pred.id}: its mask {pred.mask_ref} cannot be read "
                f"({exc.strerror or exc}); reject it or restore the file"
            ) from exc

    def outcome(self, pred, action: str, label_index: int | None, digest: str | None) -> str:
        sha = digest[:16] if digest else "n/a: file missing"
        saved = "corrected mask, saved as" if action == "correct" else f"{_PAST[action]} mask"
        return f"{saved} {pred.mask_ref} (sha256 {sha})"

    def queue_label(self, pred) -> str:
        """The classes the mask holds and their share and area (not "background")."""
        return class_areas_text(pred, _spacing(pred)) or "mask unreadable"

    def overlay_blend(self, pred, shape: tuple[int, int], on_frame: bool):
        """Draws the overlay controls; returns the chosen overlay as a function of the
        display pixels (None: no overlay) and why the mask cannot be shown (or None)."""
        return _overlay_blend(pred, shape, on_frame)

    def render_details(self, pred) -> None:
        import streamlit as st

        st.markdown(f"**Mask** {class_areas_text(pred, _spacing(pred)) or 'cannot be read'}")
        st.caption(f"Mask file `{Path(pred.mask_ref).name}`")
        st.caption(
            "Accept: the mask is right and becomes a training label (`medflow labels export`). "
            "Reject: it is wrong and is left out. Correct: switch on Correct mask (draw), draw "
            "the right mask and save it; the saved mask is exported instead."
        )

    def blocked(self, action: ReviewAction, problem: str | None) -> str | None:
        if action.name == "accept" and problem:
            return f"Accept needs a mask you can see: {problem}"
        return None

    def manifest_cells(self, item) -> dict[str, str]:
        return {
            "mask": str(Path(_unchanged_mask(item)).resolve()),
            "_mask_sha256": item.mask_sha256 or "",
        }


def _spacing(pred) -> tuple[float, float] | None:
    """The image's pixel spacing (row, column mm), None when unknown."""
    from medflow.dashboard.views import case_context

    head = case_context.header(pred)
    return head.spacing if head else None


def _unchanged_mask(item) -> str:
    """The accepted mask's path, after checking the file still has the reviewed bytes."""
    from medflow.dashboard.store import file_sha256

    what = (
        f"mask {item.mask_ref} of case {item.prediction_id} ({_PAST[item.action]} by "
        f"{item.reviewer} "
        f"at {item.reviewed_at:%Y-%m-%d %H:%M} UTC)"
    )
    try:
        digest = file_sha256(item.mask_ref)
    except OSError as exc:
        raise InputError(
            f"{what} cannot be read ({exc.strerror or exc}); restore the file or review the "
            "case again"
        ) from exc
    if digest != item.mask_sha256:
        raise InputError(
            f"{what} changed after it was {_PAST[item.action]} (SHA-256 differs); review the "
            "case again or restore the reviewed file"
        )
    return item.mask_ref


# --- the review page ---------------------------------------------------------------------


@functools.cache
def _mask_loader():
    import streamlit as st

    @st.cache_data(show_spinner=False, max_entries=16)
    def load(path: str, mtime: float) -> np.ndarray:  # mtime: re-read when the file changes
        return viewer.load_mask(path)

    return load


def _overlay_blend(pred, shape: tuple[int, int], on_frame: bool):
    """See :meth:`MaskReview.overlay_blend`. ``on_frame``: the displayed frame is the one the
    prediction (and its mask) is about."""
    import streamlit as st

    from medflow.dashboard.views import overlays

    layers = [k for k, ref in ((MASK, pred.mask_ref), (overlays.HEATMAP, pred.heatmap_ref)) if ref]
    if not layers:
        return None, None
    mask, problem = _checked_mask(pred.mask_ref, shape) if pred.mask_ref else (None, None)
    if problem:
        st.error(problem)
    kind, cols = overlays.layer_picker(pred, layers)
    view = "fill"
    if pred.mask_ref:
        view = cols[1].radio(
            "Mask view", viewer.MASK_VIEWS, horizontal=True, key="review_mask_view"
        )
    alpha = overlays.opacity(cols[2])
    if kind == MASK:
        if mask is None:
            return None, problem
        if not on_frame:
            st.caption(f"The mask belongs to frame {pred.frame_index + 1}; not drawn here.")
            return None, problem
        _legend(pred, mask)
        return (lambda pixels: viewer.blend_mask(pixels, mask, alpha, view)), problem
    if kind == overlays.HEATMAP:
        return overlays.heatmap_blend(pred, shape, alpha), problem
    return None, problem


def _checked_mask(ref: str, shape: tuple[int, int]) -> tuple[np.ndarray | None, str | None]:
    """The decoded mask (cached) if it fits the image, else None and why not."""
    try:
        mask = _mask_loader()(ref, os.path.getmtime(ref) if os.path.isfile(ref) else 0.0)
        viewer.check_mask_shape(mask, shape, ref)
    except InputError as exc:
        return None, str(exc)
    except OSError as exc:
        return None, f"cannot show the mask {ref}: {exc}"
    return mask, None


def class_areas(pred, mask: np.ndarray, spacing: tuple[float, float] | None):
    """(class index, name, share of the image in %, area text) of each class in the mask
    but background; the area in mm² when the pixel ``spacing`` (row, column mm) is known."""
    counts = np.bincount(mask.ravel(), minlength=2)
    out = []
    for k in np.flatnonzero(counts[1:]) + 1:
        name = pred.labels[k] if k < len(pred.labels) else f"class {k}"
        area = f"{counts[k]} px"
        if spacing:
            area = f"{counts[k] * spacing[0] * spacing[1]:,.0f} mm²"
        out.append((int(k), name, 100.0 * counts[k] / mask.size, area))
    return out


def class_areas_text(pred, spacing: tuple[float, float] | None) -> str | None:
    """E.g. "head 23.5 % (4,210 mm²)"; "empty mask"; None when the mask cannot be read."""
    try:
        mask = _mask_loader()(pred.mask_ref, os.path.getmtime(pred.mask_ref))
    except (OSError, InputError):
        return None
    parts = [f"{name} {pct:.1f} % ({area})" for _, name, pct, area in class_areas(
        pred, mask, spacing)]  # fmt: skip
    return ", ".join(parts) or "empty mask (background only)"


def _legend(pred, mask: np.ndarray) -> None:
    """Colour, class name, share of the image and area of each class in the mask."""
    import streamlit as st

    items = []
    for k, name, pct, area in class_areas(pred, mask, None):
        r, g, b = viewer.class_color(k)
        items.append(
            f'<span style="color:rgb({r},{g},{b})">&#9632;</span> {html.escape(name)} '
            f"({pct:.1f} % of the image, {area})"
        )
    st.markdown(
        " &nbsp; ".join(items) if items else "The mask is empty (background only).",
        unsafe_allow_html=True,
    )


REVIEW = MaskReview()
