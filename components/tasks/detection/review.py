"""Reviewing detections: the boxes file (``mask_ref``) is accepted (its boxes scoring at least
its review threshold are right and become the image's training boxes), rejected, or
corrected on the review page (the box editor, :mod:`.box_editor`: move, resize, delete, add
and relabel boxes), which saves the reviewer's boxes as a new boxes file.

A boxes file is JSON: ``{"labels", "rows", "columns", "score_threshold", "source", "boxes":
[{label, score, x0, y0, x1, y1}]}`` in source pixels (``score`` is None for a reviewer's
box). ``medflow predict --record`` writes one per image; the store records the SHA-256 of
the judged file with each review, and ``medflow labels export`` writes its kept boxes as the
manifest's ``boxes`` column (the next run's labels) after checking the file is unchanged.
"""

from __future__ import annotations

import html
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from medflow.components.ingest.voc_import import Box, boxes_to_json, parse_boxes
from medflow.components.tasks.detection.outputs import COLOURS, overlay_boxes
from medflow.core.errors import InputError
from medflow.core.files import atomic_write
from medflow.core.tasks import ReviewAction, TaskReview

# Boxes scoring at least this are the prediction an "accept" keeps (and the page first shows).
REVIEW_SCORE = 0.3
_PAST = {"accept": "accepted", "reject": "rejected", "correct": "corrected"}


@dataclass(frozen=True)
class BoxesFile:
    """A decoded boxes file (see the module)."""

    path: str
    labels: list[str]
    rows: int
    columns: int
    score_threshold: float
    source: str
    boxes: list[dict]

    def shown(self, threshold: float | None = None) -> list[dict]:
        """Boxes scoring at least ``threshold`` (default: the file's); a reviewer's box
        (score None) always."""
        t = self.score_threshold if threshold is None else threshold
        return [b for b in self.boxes if b.get("score") is None or b["score"] >= t]

    def kept(self) -> list[Box]:
        """The boxes an accepted file gives the next run."""
        corners = ("x0", "y0", "x1", "y1")
        return [Box(b["label"], *(float(b[k]) for k in corners)) for b in self.shown()]


def write_boxes_file(
    path: str | Path,
    boxes: list[dict],
    labels: list[str],
    size: tuple[int, int],
    *,
    source: str,
    score_threshold: float = REVIEW_SCORE,
) -> Path:
    """Writes a boxes file atomically (``size``: the image's rows, columns); returns its
    absolute path."""
    path = Path(path).resolve()
    doc = {
        "labels": list(labels),
        "rows": int(size[0]),
        "columns": int(size[1]),
        "score_threshold": float(score_threshold),
        "source": source,
        "boxes": [
            {"label": b["label"], "score": b.get("score"),
             **{k: round(float(b[k]), 2) for k in ("x0", "y0", "x1", "y1")}}
            for b in boxes
        ],
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, indent=1) + "\n")
    return path


def read_boxes_file(path: str | Path) -> BoxesFile:
    """Decodes a boxes file.

    Raises:
        InputError: naming the file: unreadable, not JSON, a missing field or a bad box.
    """
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        labels = [str(x) for x in doc["labels"]]
        boxes = doc["boxes"]
        parse_boxes(json.dumps(boxes), f"boxes file {path}", tuple(labels))
        scores = [b.get("score") for b in boxes]
        if not all(s is None or isinstance(s, (int, float)) for s in scores):
            raise InputError(f"boxes file {path}: a box score is not a number or null")
        return BoxesFile(
            str(path), labels, int(doc["rows"]), int(doc["columns"]),
            float(doc.get("score_threshold", REVIEW_SCORE)), str(doc.get("source", "")), boxes,
        )  # fmt: skip
    except OSError as exc:
        raise InputError(f"boxes file {path} cannot be read ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(
            f"boxes file {path} is not a medflow boxes file ({type(exc).__name__}: {exc}); "
            "record the prediction again"
        ) from None


def counts_text(boxes: list[dict]) -> str:
    """E.g. "12 RBC, 1 WBC"; "no boxes"."""
    counts = Counter(b["label"] for b in boxes)
    return ", ".join(f"{n} {label}" for label, n in counts.most_common()) or "no boxes"


class BoxReview(TaskReview):
    """The detection review plug-in (see :class:`medflow.core.tasks.TaskReview`)."""

    actions = (
        ReviewAction("accept", "Accept boxes", "A"),
        ReviewAction("reject", "Reject boxes", "X"),
        ReviewAction("correct", "Save corrected boxes", "S"),
    )
    reviews_mask_file = True
    judged_file = "boxes"
    export_kind = "boxes"
    export_columns = ("boxes",)
    export_extra_columns = ("_boxes_sha256",)

    def label_index(self, pred, action: str, label: int | str | None) -> int | None:
        if self.action(action) is None:
            raise InputError(
                f"case {pred.id} is a detection prediction: accept, reject or correct its "
                f"boxes, not {action!r}"
            )
        return None if action == "reject" else pred.predicted_index

    def artifact_digest(self, pred, action: str) -> str | None:
        """SHA-256 of the boxes file (None: a missing file being rejected)."""
        from medflow.dashboard.store import file_sha256

        if action != "reject":
            read_boxes_file(pred.mask_ref)  # a file that cannot be exported is refused now
        try:
            return file_sha256(pred.mask_ref)
        except OSError as exc:
            if action == "reject":
                return None
            raise InputError(f"boxes file {pred.mask_ref} cannot be read: {exc}") from None

    def outcome(self, pred, action: str, label_index: int | None, digest: str | None) -> str:
        sha = digest[:16] if digest else "n/a: file missing"
        what = _PAST[action] + " boxes"
        if action != "reject":
            boxes = read_boxes_file(pred.mask_ref)
            what += f" ({counts_text(boxes.shown())})"
        saved = "corrected boxes, saved as" if action == "correct" else what
        return f"{saved} {pred.mask_ref} (sha256 {sha})"

    def queue_label(self, pred) -> str:
        try:
            boxes = read_boxes_file(pred.mask_ref)
        except InputError:
            return "boxes file unreadable"
        return f"{counts_text(boxes.shown())} (score ≥ {boxes.score_threshold:.2f})"

    def overlay_blend(self, pred, shape: tuple[int, int], on_frame: bool):
        return _overlay_blend(pred, shape, on_frame)

    def render_details(self, pred) -> None:
        import streamlit as st

        try:
            boxes = read_boxes_file(pred.mask_ref)
        except InputError as exc:
            st.error(str(exc))
            return
        st.markdown(f"**Boxes** {counts_text(boxes.shown())}")
        st.caption(
            f"Boxes file `{Path(pred.mask_ref).name}`. Accept: the "
            f"{len(boxes.shown())} box(es) scoring ≥ {boxes.score_threshold:.2f} are right "
            "and become this image's training boxes (`medflow labels export`). Reject: they "
            "are wrong and are left out. Correct: switch on Correct boxes (draw), move, "
            "resize, delete, add or relabel boxes and save; the saved boxes are exported."
        )

    def blocked(self, action: ReviewAction, problem: str | None) -> str | None:
        if action.name == "accept" and problem:
            return f"Accept needs boxes you can see: {problem}"
        return None

    def editor(self):
        from medflow.components.tasks.detection.box_editor import show

        return show

    def manifest_cells(self, item) -> dict[str, str]:
        from medflow.dashboard.store import file_sha256

        what = (
            f"boxes file {item.mask_ref} of case {item.prediction_id} ({_PAST[item.action]} "
            f"by {item.reviewer} at {item.reviewed_at:%Y-%m-%d %H:%M} UTC)"
        )
        try:
            same = file_sha256(item.mask_ref) == item.mask_sha256
        except OSError as exc:
            raise InputError(f"{what} cannot be read ({exc.strerror or exc}); restore it "
                             "or review the case again") from None  # fmt: skip
        if not same:
            raise InputError(
                f"{what} changed after it was {_PAST[item.action]} (SHA-256 differs); review "
                "the case again or restore the reviewed file"
            )
        kept = read_boxes_file(item.mask_ref).kept()
        return {"boxes": boxes_to_json(kept), "_boxes_sha256": item.mask_sha256 or ""}


def threshold_slider(column, boxes: BoxesFile, key: str) -> float:
    """The review page's score threshold slider (starts at the file's threshold)."""
    return column.slider("Score ≥", 0.0, 1.0, float(boxes.score_threshold), 0.05, key=key)


def _overlay_blend(pred, shape: tuple[int, int], on_frame: bool):
    """The boxes (class colours, label and score) scoring at least the slider's threshold,
    and why the boxes cannot be shown (None: they can)."""
    import streamlit as st

    from medflow.dashboard.views import overlays

    layers = ["boxes"] + ([overlays.HEATMAP] if pred.heatmap_ref else [])
    try:
        boxes = read_boxes_file(pred.mask_ref)
    except InputError as exc:
        st.error(str(exc))
        return None, str(exc)
    if (boxes.rows, boxes.columns) != tuple(shape):
        problem = (
            f"boxes file {pred.mask_ref} is for a {boxes.rows}x{boxes.columns} image, not "
            f"{shape[0]}x{shape[1]}"
        )
        st.error(problem)
        return None, problem
    kind, cols = overlays.layer_picker(pred, layers)
    threshold = threshold_slider(cols[1], boxes, f"box_threshold_{pred.id}")
    if kind == overlays.HEATMAP:
        return overlays.heatmap_blend(pred, shape, overlays.opacity(cols[2])), None
    if kind != "boxes":
        return None, None
    if not on_frame:
        st.caption(f"The boxes belong to frame {pred.frame_index + 1}; not drawn here.")
        return None, None
    shown = boxes.shown(threshold)
    _legend(boxes, shown)
    return (lambda pixels: overlay_boxes(pixels, shown, boxes.labels)), None


def _legend(boxes: BoxesFile, shown: list[dict]) -> None:
    import streamlit as st

    counts = Counter(b["label"] for b in shown)
    items = []
    for k, name in enumerate(boxes.labels):
        r, g, b = COLOURS[k % len(COLOURS)]
        items.append(f'<span style="color:rgb({r},{g},{b})">&#9633;</span> '
                     f"{html.escape(name)} ({counts.get(name, 0)})")  # fmt: skip
    st.markdown(" &nbsp; ".join(items), unsafe_allow_html=True)


def boxes_file_for(review_dir: str | Path, result) -> str:
    """Where ``medflow predict --record`` writes a result's boxes file."""
    return os.path.join(
        str(review_dir), f"{result.sop_instance_uid}_f{result.frame_index}.boxes.json"
    )


REVIEW = BoxReview()
