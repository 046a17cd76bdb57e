"""Segmentation: a mask per image (manifest ``mask`` column), a Keras U-Net, Dice/IoU/HD95 in
TFMA, per-pixel probabilities served, masks out as DICOM SEG, PNG overlays and review masks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medflow.components.models import TRANSFORM_MODULE
from medflow.core.errors import ConfigError
from medflow.core.table import text_table
from medflow.core.tasks import OutputOptions, OutputReport, Task

HERE = Path(__file__).resolve().parent
# A binary model's classes (the contract's labels; class 0 is the background).
BINARY_LABELS = ("background", "foreground")
# What the exported serving_default returns: per-pixel foreground probability
# [-1, rows, cols] and the uint8 mask (export.py).
SERVING_OUTPUTS = ("probabilities", "mask")


class SegmentationTask(Task):
    """The segmentation plug-in (see :class:`medflow.core.tasks.Task`)."""

    name = "segmentation"
    default_pipeline_name = "medflow-segmentation"
    default_model_name = "medflow-segmenter"
    manifest_columns = ("mask",)
    output_filter = ()  # probabilities and the served mask threshold (older models lack it)
    file_outputs = ("seg_out", "overlay_out", "nifti_out")
    output_settings = ("seg_type",)

    def module_files(self) -> tuple[str, str]:
        return TRANSFORM_MODULE, str(HERE / "trainer.py")

    def check_hyperparameters(self, values: Mapping[str, Any], image_size: int, labels) -> None:
        from medflow.components.tasks.segmentation.trainer import SegHParams
        from medflow.components.tasks.segmentation.trust import MaskSettings
        from medflow.components.tasks.segmentation.volumes import Seg3DHParams

        Seg3DHParams.from_config(values)  # the seg3d_* keys of volume training
        volume_mode = len(labels) > 2 or any(str(k).startswith("seg3d_") for k in values)
        if not volume_mode:  # a volume model's grid comes from the data, not image_size
            SegHParams.from_config({**values, "image_size": image_size})
            MaskSettings.from_config(values)
        if "calibration" in values:
            raise ConfigError(
                f"calibration={values['calibration']!r}: {self.name} does not calibrate; "
                "leave --calibration out (the mask threshold is --operating-point)"
            )

    def thresholds(self, values: Mapping[str, Any] | None):
        from medflow.components.tasks.segmentation.evaluation import SegmentationThresholds

        values = dict(values or {})
        try:
            return SegmentationThresholds(**{k: float(v) for k, v in values.items()})
        except TypeError:
            raise ConfigError(
                f"--threshold {sorted(values)}: {self.name} takes min_dice and max_dice_drop"
            ) from None

    def eval_config(self, thresholds, labels: Sequence[str]):
        from medflow.components.tasks.segmentation.evaluation import (
            build_segmentation_eval_config,
        )

        return build_segmentation_eval_config(thresholds, labels)

    def contract_labels(self, labels: Sequence[str]) -> list[str]:
        # several labels (background first): a multi-label model (the 3D volume mode)
        return list(labels) if len(labels) > 2 else list(BINARY_LABELS)

    def check_serving_outputs(self, outputs, size, labels) -> str | None:
        missing = [k for k in SERVING_OUTPUTS if k not in outputs]
        if missing:
            return f"serving_default lacks outputs {missing}"
        shape = outputs["probabilities"]["shape"]
        if len(shape) == 5:  # a volume model: [-1, slices, rows, cols, classes]
            return None if outputs["mask"]["shape"] == shape[:4] else "mask grid != probabilities"
        if size is not None and shape != [-1, int(size[0]), int(size[1])]:
            return f"per-pixel probabilities {shape} != the input grid {list(size)}"
        return None

    def classes_from_signature(self, image_dims, output_dims) -> int | None:
        if len(image_dims) == 5:  # a volume model
            same_grid = len(output_dims) == 5 and list(output_dims[1:4]) == list(image_dims[1:4])
            return int(output_dims[4]) if same_grid else None
        per_pixel = len(output_dims) in (3, 4) and list(output_dims[1:3]) == list(image_dims[1:3])
        if not per_pixel:
            return None
        return 2 if len(output_dims) == 3 else int(output_dims[3])

    def default_labels(self, n_classes: int) -> list[str]:
        if n_classes == 2:
            return list(BINARY_LABELS)
        return [f"class_{i}" for i in range(n_classes)]

    def check_labels(self, labels: Sequence[str], n_classes: int) -> str | None:
        if len(labels) != n_classes:
            return (
                f"labels {list(labels)} but the served model segments {n_classes} classes "
                "(background first)"
            )
        return None

    def decode(self, inputs, prediction, info) -> list:
        from medflow.components.tasks.segmentation.results import decode

        return decode(inputs, prediction, info)

    def format_table(self, results) -> str:
        if results and hasattr(results[0], "volume_ml"):  # volume models (predict_volumes)
            rows = [("file", "label", "voxels", "volume_ml", "model")]
            rows += [
                (r.path, label, str(n), f"{ml:.3f}", f"{r.model_name}:{r.model_version}")
                for r in results
                for label, n, ml in zip(r.labels[1:], r.voxels, r.volume_ml, strict=True)
            ]
            return text_table(rows)
        rows = [("file", "frame", "label", "pixels", "area_mm2", "mean_prob", "cut-off", "model")]
        rows += [
            (
                r.path,
                str(r.frame_index),
                r.label,
                str(r.foreground_pixels),
                "-" if r.area_mm2 is None else f"{r.area_mm2:.2f}",
                f"{r.mean_probability:.4f}",
                f"{r.threshold:.4f}",
                f"{r.model_name}:{r.model_version}",
            )
            for r in results
        ]
        return text_table(rows)

    def add_predict_arguments(self, group) -> None:
        group.add_argument(
            "--seg-out",
            metavar="DIR",
            help="write DICOM SEGs referencing the source instances: one per series of images "
            "with patient coordinates (seg-<SeriesInstanceUID>.dcm), else one per image "
            "(seg-<SOPInstanceUID>.dcm)",
        )
        group.add_argument(
            "--nifti-out",
            metavar="DIR",
            help="volume models: write DIR/<input name>.nii.gz, the label map on the source "
            "grid with the source affine (inputs: .nii/.nii.gz files or DICOM series folders)",
        )
        group.add_argument(
            "--seg-type",
            choices=(
                "binary",
                "fractional",
            ),  # dicom.seg.SEG_TYPES (not imported: --help stays fast)
            default="binary",
            help="SEG of the thresholded mask (binary, probability >= the model's mask "
            "threshold, chosen on eval; default) or of the "
            "probabilities (fractional)",
        )

    def write_files(self, results: list, options: OutputOptions) -> tuple[list, OutputReport]:
        if options.files.get("nifti_out"):
            raise ConfigError("--nifti-out writes label maps of a volume model; this one is 2D")
        from medflow.components.tasks.segmentation.outputs import write_files

        return write_files(results, options)

    def push(self, results, source, settings) -> list:
        from medflow.components.tasks.segmentation.outputs import push_segmentations

        return push_segmentations(results, source, settings)

    def review_record(self, result) -> dict[str, Any]:
        return {
            "labels": result.labels,
            "scores": result.scores,
            "mask_ref": result.mask_ref,
            "task": self.name,
        }

    def review(self):
        from medflow.components.tasks.segmentation.review import REVIEW

        return REVIEW


TASK = SegmentationTask()
