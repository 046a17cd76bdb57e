"""Detection and localization: labelled boxes per image (manifest ``boxes`` column), a Keras 3
CenterNet, COCO mAP / per-class AP / FROC in TFMA, final boxes (NMS in the graph) served,
boxes out as DICOM SR (TID 1500 planar ROIs) and PNG overlays. Localization is the same
task with one box per image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medflow.core.errors import ConfigError
from medflow.core.table import text_table
from medflow.core.tasks import OutputOptions, OutputReport, Task

HERE = Path(__file__).resolve().parent
# The exported serving_default outputs (export.py).
SERVING_OUTPUTS = ("boxes", "scores", "classes", "num_detections", "probabilities")
# Rows of every padded output (export.MAX_DETECTIONS; not imported: TensorFlow stays unloaded).
MAX_DETECTIONS = 100


class DetectionTask(Task):
    """The detection plug-in (see :class:`medflow.core.tasks.Task`)."""

    name = "detection"
    default_pipeline_name = "medflow-detection"
    default_model_name = "medflow-detector"
    manifest_columns = ("boxes",)
    output_filter = SERVING_OUTPUTS
    file_outputs = ("sr_out", "overlay_out")

    def module_files(self) -> tuple[str, str]:
        return str(HERE / "transform.py"), str(HERE / "trainer.py")

    def check_hyperparameters(self, values: Mapping[str, Any], image_size: int, labels) -> None:
        from medflow.components.tasks.detection.trainer import DetHParams

        DetHParams.from_config({**values, "image_size": image_size, "labels": list(labels)})

    def ingest_labels(self, labels, image, base: str, where: str):
        from medflow.components.tasks.detection.ingest import ingest_boxes

        return ingest_boxes(labels, image, base, where)

    def thresholds(self, values: Mapping[str, Any] | None):
        from medflow.components.tasks.detection.evaluation import DetectionThresholds

        values = dict(values or {})
        try:
            return DetectionThresholds(**{k: float(v) for k, v in values.items()})
        except TypeError:
            raise ConfigError(
                f"--threshold {sorted(values)}: {self.name} takes min_map50 and max_map50_drop"
            ) from None

    def eval_config(self, thresholds, labels: Sequence[str]):
        from medflow.components.tasks.detection.evaluation import build_detection_eval_config

        return build_detection_eval_config(thresholds, labels)

    def contract_labels(self, labels: Sequence[str]) -> list[str]:
        return list(labels)

    def check_serving_outputs(self, outputs, size, labels) -> str | None:
        missing = [k for k in SERVING_OUTPUTS if k not in outputs]
        if missing:
            return f"serving_default lacks outputs {missing} (padded boxes, scores, classes)"
        shape = outputs["boxes"]["shape"]
        if len(shape) != 3 or shape[-1] != 4:
            return f"boxes output {shape} is not [batch, max detections, 4]"
        return None

    def classes_from_signature(self, image_dims, output_dims) -> int | None:
        # probabilities [-1, MAX_DETECTIONS, n_classes]: per box, not per pixel
        per_box = len(output_dims) == 3 and output_dims[1] == MAX_DETECTIONS
        if not per_box or list(output_dims[1:3]) == list(image_dims[1:3]):
            return None
        return int(output_dims[2])

    def default_labels(self, n_classes: int) -> list[str]:
        return [f"class_{i}" for i in range(n_classes)]

    def decode(self, inputs, prediction, info) -> list:
        from medflow.components.tasks.detection.results import decode

        return decode(inputs, prediction, info)

    def format_table(self, results) -> str:
        rows = [("file", "frame", "label", "score", "x0", "y0", "x1", "y1", "model")]
        for r in results:
            model = f"{r.model_name}:{r.model_version}"
            if not r.boxes:
                rows.append((r.path, str(r.frame_index), "-", "-", "-", "-", "-", "-", model))
            rows += [
                (
                    r.path,
                    str(r.frame_index),
                    b["label"],
                    f"{b['score']:.3f}",
                    *(f"{b[k]:.1f}" for k in ("x0", "y0", "x1", "y1")),
                    model,
                )
                for b in r.boxes
            ]
        return text_table(rows)

    def add_predict_arguments(self, group) -> None:
        group.add_argument(
            "--sr-out",
            metavar="DIR",
            help="write a DICOM SR measurement report (TID 1500, one planar ROI per box) "
            "per image: sr-<SOPInstanceUID>.dcm",
        )

    def write_files(self, results: list, options: OutputOptions) -> tuple[list, OutputReport]:
        from medflow.components.tasks.detection.outputs import write_files

        return write_files(results, options)

    def push(self, results, source, settings) -> list:
        from medflow.components.tasks.detection.outputs import push_reports

        return push_reports(results, source, settings)

    def review_record(self, result) -> dict[str, Any]:
        return {
            "labels": result.labels,
            "scores": result.scores,
            "task": self.name,
            "mask_ref": result.boxes_ref,
        }

    def review(self):
        from medflow.components.tasks.detection.review import REVIEW

        return REVIEW


TASK = DetectionTask()
