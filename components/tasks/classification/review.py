"""Reviewing classification predictions: accept the predicted label, reject it, or correct it
to another of the model's labels; the export's ``label`` column is the class index, and
``_label_name`` the class's name.

The review page shows the class probabilities as bars and the prediction's heatmap (if any)
over the image. Streamlit is imported inside the rendering methods.
"""

from __future__ import annotations

from medflow.core.errors import InputError
from medflow.core.tasks import ReviewAction, TaskReview

_PAST = {"accept": "accepted", "reject": "rejected", "correct": "corrected"}


class LabelReview(TaskReview):
    """The classification review plug-in (see :class:`medflow.core.tasks.TaskReview`)."""

    actions = (
        ReviewAction("accept", "Accept", "A"),
        ReviewAction("reject", "Reject", "X"),
        ReviewAction("correct", "Correct label", "L", asks_label=True),
    )
    export_kind = "labels"
    export_columns = ("label",)
    export_extra_columns = ("_label_name",)

    def label_index(self, pred, action: str, label: int | str | None) -> int | None:
        if self.action(action) is None:
            names = ", ".join(a.name for a in self.actions)
            raise InputError(f"case {pred.id} takes {names}, not {action!r}")
        if action == "accept":
            return pred.predicted_index
        if action == "reject":
            return None
        if label is None:
            raise InputError(f"correcting case {pred.id} needs a label (one of {pred.labels})")
        if isinstance(label, str) and label in pred.labels:
            index = pred.labels.index(label)
        elif isinstance(label, int) and 0 <= label < len(pred.labels):
            index = label
        else:
            raise InputError(f"label {label!r} is not one of case {pred.id}'s labels {pred.labels}")
        if index == pred.predicted_index:
            raise InputError(
                f"case {pred.id}: {pred.labels[index]!r} is what the model predicted; "
                "use accept, or pick a different label to correct"
            )
        return index

    def outcome(self, pred, action: str, label_index: int | None, digest: str | None) -> str:
        text = f"{_PAST[action]} {pred.predicted_label} ({pred.confidence:.3f})"
        if action == "correct":
            text += f" -> {pred.labels[label_index] if label_index is not None else ''}"
        return text

    def queue_label(self, pred) -> str:
        return f"{pred.predicted_label} {pred.confidence:.2f}"

    def overlay_blend(self, pred, shape: tuple[int, int], on_frame: bool):
        """Draws the overlay controls; returns the heatmap as a function of the display
        pixels (None: no overlay shown) and None (nothing the review judges is missing)."""
        from medflow.dashboard.views import overlays

        if not pred.heatmap_ref:
            return None, None
        kind, cols = overlays.layer_picker(pred, [overlays.HEATMAP])
        alpha = overlays.opacity(cols[2])
        if kind == overlays.HEATMAP:
            return overlays.heatmap_blend(pred, shape, alpha), None
        return None, None

    def render_details(self, pred) -> None:
        import pandas as pd
        import streamlit as st

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
            key=self.label_widget_key(pred),
            horizontal=True,
            help="used by Correct label; Accept keeps the predicted label",
        )

    def manifest_cells(self, item) -> dict[str, str]:
        # ``label`` stays the class index the next run trains on; ``_label_name`` is the
        # model's name for it (columns starting with "_" are provenance, not labels).
        return {"label": str(item.label_index), "_label_name": item.labels[item.label_index]}


REVIEW = LabelReview()
