"""Task plug-ins: the one interface the platform calls, and the registry that finds them.

A task (classification, segmentation, ...) is one subpackage that defines a :class:`Task`
and registers it under the ``medflow.tasks`` entry-point group (pyproject.toml)::

    [project.entry-points."medflow.tasks"]
    segmentation = "medflow.components.tasks.segmentation:TASK"

The pipeline, ``medflow predict``, the DICOMweb push, the dashboard and ``medflow compile``
look the task up by the model contract's ``task`` (:func:`get_task`) and never name one, so a
new task is a new package, not branches through the platform. ``docs/adding-a-task.md``
walks through one. Methods that need heavy libraries (TensorFlow, TFMA, highdicom,
Streamlit) import them inside, so looking a task up stays cheap for every layer.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from medflow.core.errors import ConfigError

ENTRY_POINT_GROUP = "medflow.tasks"
# The task of `medflow run` and PipelineConfig when none is named (the one place that names it).
DEFAULT_TASK = "classification"


@dataclass(frozen=True)
class OutputOptions:
    """Where ``medflow predict`` writes a task's outputs besides the table/JSON.

    Attributes:
        files: option name -> folder for the task's file outputs (e.g. ``seg_out``); only
            the options the task lists in :attr:`Task.file_outputs` may be set.
        settings: task output settings (e.g. ``seg_type``).
        review_dir: with ``--record``: where per-image artifacts for review go.
    """

    files: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, Any] = field(default_factory=dict)
    review_dir: str | None = None


@dataclass
class OutputReport:
    """What a task's file outputs did, for ``medflow predict`` to show.

    Attributes:
        json: extra keys of the ``--json`` document (lists of dataclasses).
        per_result: key -> one value per result (None: omitted), merged into each
            prediction of the ``--json`` document.
        lines: printed after the table.
        problems: printed on stderr, and ``medflow predict`` exits 1.
    """

    json: dict[str, list] = field(default_factory=dict)
    per_result: dict[str, list] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class Task(abc.ABC):
    """What a task plug-in provides, from manifest columns to the reviewer's screen.

    Class attributes:
        name: the contract's ``task`` value and the entry-point name.
        default_pipeline_name / default_model_name: used when the user names neither.
        manifest_columns: label-manifest columns the task trains on (any one suffices).
        output_filter: outputs to ask TF Serving for (empty: all).
        file_outputs: ``medflow predict`` options that write files for this task (the
            task adds them in :meth:`add_predict_arguments`, except the platform's shared
            ``--overlay-out``, whose dest ``overlay_out`` a task lists to take it).
        output_settings: ``medflow predict`` options that shape those outputs.
    """

    name: str = ""
    default_pipeline_name: str = ""
    default_model_name: str = ""
    manifest_columns: tuple[str, ...] = ()
    output_filter: tuple[str, ...] = ()
    file_outputs: tuple[str, ...] = ()
    output_settings: tuple[str, ...] = ()

    # --- training (pipelines) -------------------------------------------------------
    @abc.abstractmethod
    def module_files(self) -> tuple[str, str]:
        """Absolute paths of the (Transform, Trainer) module files."""

    @abc.abstractmethod
    def check_hyperparameters(self, values: Mapping[str, Any], image_size: int, labels) -> None:
        """Raise ``ValueError``/``TypeError`` when the Trainer would refuse ``values``."""

    def ingest_labels(
        self, labels: Mapping[str, Any], image: Any, base: str, where: str
    ) -> Mapping[str, Any]:
        """An instance's manifest ``labels`` checked at ingestion, as its examples carry them
        (e.g. a file reference read into the cell). ``image``: the instance's data set
        (original geometry); ``base``: the manifest's folder (relative file references);
        ``where``: the file and manifest line, for messages.

        Raises:
            InputError: a cell this task cannot train on; ingestion quarantines the file with
                reason ``label_invalid`` and this message.
        """
        return labels

    @abc.abstractmethod
    def thresholds(self, values: Mapping[str, Any] | None) -> Any:
        """Blessing thresholds from ``--threshold NAME=VALUE`` pairs (defaults for None)."""

    @abc.abstractmethod
    def eval_config(self, thresholds: Any, labels: Sequence[str]) -> Any:
        """The TFMA ``EvalConfig`` of the Evaluator (metrics, slices, blessing)."""

    @abc.abstractmethod
    def contract_labels(self, labels: Sequence[str]) -> list[str]:
        """The labels the pushed model's contract records for the user's ``labels``."""

    # --- serving ------------------------------------------------------------------------
    @abc.abstractmethod
    def check_serving_outputs(
        self, outputs: Mapping[str, Any], size: Sequence[int] | None, labels: Sequence[str]
    ) -> str | None:
        """Why the exported ``serving_default`` outputs (name -> {"dtype", "shape"}) do not
        serve this task for an input of ``size`` (rows, cols) and ``labels`` (None: they do)."""

    @abc.abstractmethod
    def classes_from_signature(
        self, image_dims: Sequence[int], output_dims: Sequence[int]
    ) -> int | None:
        """Number of classes if a served ``probabilities`` of ``output_dims`` for an
        ``image`` input of ``image_dims`` is this task's output, else None."""

    @abc.abstractmethod
    def default_labels(self, n_classes: int) -> list[str]:
        """Labels when the model has no contract."""

    def check_labels(self, labels: Sequence[str], n_classes: int) -> str | None:
        """Why ``labels`` cannot name the served model's ``n_classes`` classes (None: fine)."""
        return None

    @abc.abstractmethod
    def decode(self, inputs: Sequence[Any], prediction: Any, info: Any) -> list[Any]:
        """Typed results of one ``Predict`` answer: one per model input of ``inputs``."""

    # --- outputs ------------------------------------------------------------------------
    def add_predict_arguments(self, group: Any) -> None:
        """Add this task's ``medflow predict`` options (an argparse group titled after the
        task): the folders of :attr:`file_outputs` and the names of :attr:`output_settings`.
        A task without outputs of its own adds none."""
        return None

    @abc.abstractmethod
    def format_table(self, results: Sequence[Any]) -> str:
        """The plain-text table ``medflow predict`` prints."""

    def write_files(self, results: list, options: OutputOptions) -> tuple[list, OutputReport]:
        """Write the task's file outputs (DICOM SEG, overlays, review artifacts) while the
        source files are on disk; returns the results (updated, e.g. with where review
        artifacts went) and what was written."""
        if options.files and results:
            flags = ", ".join("--" + k.replace("_", "-") for k in options.files)
            raise ConfigError(f"{flags}: not an output of a {self.name} model")
        return results, OutputReport()

    @abc.abstractmethod
    def push(self, results: Sequence[Any], source: Any, settings: Mapping[str, Any]) -> list:
        """Store the results in the PACS (STOW-RS) as DICOM objects; returns what was stored."""

    @abc.abstractmethod
    def review_record(self, result: Any) -> dict[str, Any]:
        """Fields of the review store's prediction for ``result`` (labels, scores, ...)."""

    # --- review (dashboard, labels export) ------------------------------------------------
    def review(self) -> TaskReview:
        """The task's review plug-in: the reviewer's actions and their rules, the case's
        rendering on the review page, and the labels export (see :class:`TaskReview`)."""
        raise ConfigError(f"task {self.name!r} has no review plug-in; it cannot be reviewed")


@functools.cache
def _registry() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def task_names() -> tuple[str, ...]:
    """Names of the installed task plug-ins, sorted."""
    return tuple(sorted(_registry()))


@functools.cache
def get_task(name: str) -> Task:
    """The task plug-in called ``name`` (a model contract's ``task``).

    Raises:
        ConfigError: no installed plug-in has that name.
    """
    entry = _registry().get(name)
    if entry is None:
        raise ConfigError(
            f"task {name!r} is not installed; installed tasks: {', '.join(task_names()) or 'none'} "
            "(a task plug-in registers under the 'medflow.tasks' entry points)"
        )
    task = entry.load()
    if not isinstance(task, Task) or task.name != name:
        raise ConfigError(
            f"entry point {entry.value} for task {name!r} is not a Task named {name!r}"
        )
    return task


def all_tasks() -> list[Task]:
    """Every installed task plug-in, in name order."""
    return [get_task(name) for name in task_names()]


def task_for_columns(columns: Sequence[str]) -> Task | None:
    """The first task (in name order) that trains on one of the manifest ``columns``."""
    return next((t for t in all_tasks() if set(t.manifest_columns) & set(columns)), None)


# --- review plug-ins ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewAction:
    """One thing a reviewer may do to a case.

    Attributes:
        name: the stored action, one of the review store's ("accept", "reject", "correct").
        text: the button text; key: its keyboard shortcut (one letter, shown after the text).
        asks_label: the action takes a corrected label (the page shows a label picker).
    """

    name: str
    text: str
    key: str
    asks_label: bool = False


class TaskReview(abc.ABC):
    """What the review dashboard and ``medflow labels export`` need from a task.

    ``pred`` is the review store's prediction (``medflow.dashboard.records.Prediction``) and
    ``item`` a reviewed label (``ReviewedLabel``); rule violations raise
    :class:`~medflow.core.errors.InputError`, which the store reports as its own error.
    Rendering methods import Streamlit inside.

    Class attributes:
        actions: what a reviewer may do, in button order (the first is the primary button).
        reviews_mask_file: the review judges the prediction's mask file (``mask_ref``): the
            store records the file's SHA-256 with each review, and the export checks it.
        judged_file: what that file holds: "mask" (drawn with the page's mask editor) or
            another kind with the task's own :meth:`editor` (e.g. "boxes").
        export_kind: what one manifest row carries, in messages ("labels", "masks").
        export_columns: manifest columns after ``SOPInstanceUID`` (what the task trains on).
        export_extra_columns: provenance columns after the common ones.
    """

    actions: tuple[ReviewAction, ...] = ()
    reviews_mask_file: bool = False
    judged_file: str = "mask"
    export_kind: str = "labels"
    export_columns: tuple[str, ...] = ()
    export_extra_columns: tuple[str, ...] = ()

    # --- what the store accepts -----------------------------------------------------------
    def action(self, name: str) -> ReviewAction | None:
        """The action called ``name`` (None: the task does not take it)."""
        return next((a for a in self.actions if a.name == name), None)

    @abc.abstractmethod
    def label_index(self, pred: Any, action: str, label: int | str | None) -> int | None:
        """The class index a review ``action`` records (None: none), checking ``label``.

        Raises:
            InputError: the task does not take ``action``, or ``label`` does not fit it.
        """

    def artifact_digest(self, pred: Any, action: str) -> str | None:
        """What the store records of the file the review judges (its SHA-256; None: no file).

        Raises:
            InputError: the file is required for ``action`` and cannot be read.
        """
        return None

    @abc.abstractmethod
    def outcome(self, pred: Any, action: str, label_index: int | None, digest: str | None) -> str:
        """The audit log's outcome text of a review (before the reviewer's comment)."""

    # --- the review page ------------------------------------------------------------------
    def label_widget_key(self, pred: Any) -> str:
        """Session-state key of the label picker that actions with ``asks_label`` read."""
        return f"review_label_{pred.id}"

    @abc.abstractmethod
    def queue_label(self, pred: Any) -> str:
        """The case's short description in the queue's case picker."""

    def overlay_blend(
        self, pred: Any, shape: tuple[int, int], on_frame: bool
    ) -> tuple[Callable[[Any], Any] | None, str | None]:
        """Draws the case's overlay controls; returns the chosen overlay as a function of the
        display pixels (RGB or grey uint8 of ``shape`` -> RGB uint8; None: no overlay shown)
        and why the judged artifact cannot be shown (None: it is, or there is none).
        ``on_frame``: the displayed frame is the prediction's."""
        return None, None

    @abc.abstractmethod
    def render_details(self, pred: Any) -> None:
        """Draws the task's part of the case panel (scores, label picker, what actions mean)."""

    def blocked(self, action: ReviewAction, problem: str | None) -> str | None:
        """Why ``action`` cannot be taken while the overlay has ``problem`` (None: it can)."""
        return None

    def editor(self) -> Callable[..., None] | None:
        """The task's own editor of the judged file for "correct", called like the page's
        mask editor (``medflow.dashboard.views.mask_editor.show``); None: that editor."""
        return None

    # --- labels export --------------------------------------------------------------------
    @abc.abstractmethod
    def manifest_cells(self, item: Any) -> dict[str, str]:
        """The task's cells (:attr:`export_columns` and :attr:`export_extra_columns`) of the
        manifest row of a reviewed ``item``.

        Raises:
            InputError: the item cannot be exported (e.g. its file changed after review).
        """


def mask_review_task() -> str | None:
    """The installed task whose review judges mask files (first by name; None: none), the
    task of a review-store prediction recorded with a ``mask_ref`` but no task."""
    return next((t.name for t in all_tasks() if _reviews_masks(t)), None)


def _reviews_masks(task: Task) -> bool:
    try:
        review = task.review()
        return review.reviews_mask_file and review.judged_file == "mask"
    except ConfigError:  # a task without a review plug-in
        return False
