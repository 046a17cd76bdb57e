"""Reviewing segmentation predictions: the mask file (``mask_ref``) is accepted (it is right
and becomes a training label) or rejected; correcting a mask by drawing is not supported.

The store records the SHA-256 of the mask file with each review, and the labels export
gives the accepted mask's path in a ``mask`` column after checking the file still has the
reviewed bytes. The review page draws the mask over the image (fill or contour, one colour
per class, adjustable opacity) with a legend. Streamlit is imported inside the rendering
functions.
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
_PAST = {"accept": "accepted", "reject": "rejected"}


class MaskReview(TaskReview):
    """The segmentation review plug-in (see :class:`medflow.core.tasks.TaskReview`)."""

    actions = (
        ReviewAction("accept", "Accept mask", "A"),
        ReviewAction("reject", "Reject mask", "X"),
    )
    reviews_mask_file = True
    export_kind = "masks"
    export_columns = ("mask",)
    export_extra_columns = ("_mask_sha256",)

    def label_index(self, pred, action: str, label: int | str | None) -> int | None:
        if self.action(action) is None:
            raise InputError(
                f"case {pred.id} is a segmentation prediction: accept or reject its mask "
                "(correcting a mask by drawing is not supported)"
            )
        return pred.predicted_index if action == "accept" else None

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
        return f"{_PAST[action]} mask {pred.mask_ref} (sha256 {sha})"

    def queue_label(self, pred) -> str:
        return f"mask ({pred.model_name})"

    def render_overlay(self, pred, pixels, on_frame: bool):
        return _render_overlay(pred, pixels, on_frame)

    def render_details(self, pred) -> None:
        import streamlit as st

        st.markdown(f"**Mask** `{pred.mask_ref}`")
        scores = ", ".join(f"{n} {v:.3f}" for n, v in zip(pred.labels, pred.scores, strict=True))
        st.caption(f"Scores recorded with the mask: {scores}")
        st.caption(
            "Accept: the mask is right and becomes a training label (`medflow labels export`). "
            "Reject: it is wrong and is left out. Correcting a mask by drawing is not supported."
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


def _unchanged_mask(item) -> str:
    """The accepted mask's path, after checking the file still has the reviewed bytes."""
    from medflow.dashboard.store import file_sha256

    what = (
        f"mask {item.mask_ref} of case {item.prediction_id} (accepted by {item.reviewer} "
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
            f"{what} changed after it was accepted (SHA-256 differs); review the case again "
            "or restore the accepted file"
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


def _render_overlay(pred, pixels: np.ndarray, on_frame: bool) -> tuple[np.ndarray, str | None]:
    """Draws the chosen overlay; returns the pixels and why the mask cannot be shown (or None).

    ``on_frame``: the displayed frame is the one the prediction (and its mask) is about.
    """
    import streamlit as st

    from medflow.dashboard.views import overlays

    layers = [k for k, ref in ((MASK, pred.mask_ref), (overlays.HEATMAP, pred.heatmap_ref)) if ref]
    if not layers:
        return pixels, None
    mask, problem = (
        _checked_mask(pred.mask_ref, pixels.shape[:2]) if pred.mask_ref else (None, None)
    )
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
            return pixels, problem
        if not on_frame:
            st.caption(f"The mask belongs to frame {pred.frame_index + 1}; not drawn here.")
            return pixels, problem
        _legend(pred, mask)
        return viewer.blend_mask(pixels, mask, alpha, view), problem
    if kind == overlays.HEATMAP:
        return overlays.heatmap(pred, pixels, alpha), problem
    return pixels, problem


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


def _legend(pred, mask: np.ndarray) -> None:
    """Colour, class name and share of the image for each class in the mask."""
    import streamlit as st

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


REVIEW = MaskReview()
