"""Classification: a label per image (manifest ``label`` column), a Keras backbone, AUC and
accuracy in TFMA, class probabilities served, a DICOM SR per study in the PACS."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medflow.components.models import TRANSFORM_MODULE
from medflow.core.table import text_table
from medflow.core.tasks import Task

HERE = Path(__file__).resolve().parent
# What the exported serving_default returns (trainer.py -> models/export.py).
SERVING_OUTPUTS = ("probabilities", "class_id", "score")


class ClassificationTask(Task):
    """The classification plug-in (see :class:`medflow.core.tasks.Task`)."""

    name = "classification"
    default_pipeline_name = "medflow-classification"
    default_model_name = "medflow-classifier"
    manifest_columns = ("label",)
    # --overlay-out: Grad-CAM heat maps over the source image (the model's explain signature)
    file_outputs = ("overlay_out",)

    def module_files(self) -> tuple[str, str]:
        return TRANSFORM_MODULE, str(HERE / "trainer.py")

    def check_hyperparameters(self, values: Mapping[str, Any], image_size: int, labels) -> None:
        from medflow.components.models.hparams import HParams
        from medflow.components.tasks.classification.trust import TrustSettings

        HParams.from_config({**values, "image_size": image_size, "labels": list(labels)})
        TrustSettings.from_config(dict(values), len(labels))

    def thresholds(self, values: Mapping[str, Any] | None):
        from medflow.components.tasks.classification.evaluation import BlessingThresholds

        return BlessingThresholds.from_dict(dict(values or {}))

    def eval_config(self, thresholds, labels: Sequence[str]):
        from medflow.components.tasks.classification.evaluation import build_eval_config

        return build_eval_config(thresholds, len(labels))

    def contract_labels(self, labels: Sequence[str]) -> list[str]:
        return list(labels)

    def check_serving_outputs(self, outputs, size, labels) -> str | None:
        missing = [k for k in SERVING_OUTPUTS if k not in outputs]
        if missing:
            return f"serving_default lacks outputs {missing}"
        n_out = outputs["probabilities"]["shape"][-1]
        if n_out != len(labels):
            return f"model has {n_out} classes but the contract lists labels {list(labels)}"
        return None

    def classes_from_signature(self, image_dims, output_dims) -> int | None:
        return int(output_dims[-1]) if len(output_dims) == 2 else None

    def default_labels(self, n_classes: int) -> list[str]:
        return [f"class_{i}" for i in range(n_classes)]

    def decode(self, inputs, prediction, info) -> list:
        from medflow.components.tasks.classification.results import decode

        return decode(inputs, prediction, info)

    def format_table(self, results) -> str:
        # the cut-off column only where a model decided at an operating point
        cut = any(r.threshold is not None for r in results)
        rows = [("file", "frame", "label", "probability", "model") + (("cut-off",) if cut else ())]
        rows += [
            (
                r.path,
                str(r.frame_index),
                r.label,
                f"{r.probabilities[r.class_id]:.4f}",
                f"{r.model_name}:{r.model_version}",
            )
            + ((cut_off_text(r.labels, r.threshold),) if cut else ())
            for r in results
        ]
        return text_table(rows)

    def write_files(self, results: list, options):
        from medflow.components.tasks.classification.heatmaps import write_files

        return write_files(results, options)

    def push(self, results, source, settings) -> list:
        from medflow.components.tasks.classification.outputs import push_reports

        return push_reports(results, source)

    def review_record(self, result) -> dict[str, Any]:
        return {
            "labels": result.labels,
            "scores": result.probabilities,
            "mask_ref": None,
            "heatmap_ref": result.heatmap_ref,
            "task": self.name,
            # the model's decision (its operating point), not the highest probability
            "predicted_index": result.class_id,
        }

    def review(self):
        from medflow.components.tasks.classification.review import REVIEW

        return REVIEW


def cut_off_text(labels, threshold: float | None) -> str:
    """How the label was decided: ``p(<class 1>) >= 0.4123`` (the operating point the
    model applied) or ``argmax`` (the most probable class)."""
    if threshold is None:
        return "argmax"
    return f"p({labels[1]})>={threshold:.4f}"


TASK = ClassificationTask()
