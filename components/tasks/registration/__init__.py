"""Registration: image pairs (a pairs manifest's ``fixed`` and ``moving``, optional masks;
:mod:`components.ingest.pairs`), a Keras 3 U-Net predicting a dense displacement field
(optionally diffeomorphic) warped by a spatial transformer, Dice before/after, folding and
NCC in TFMA, the warped moving image and the field served."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medflow.core.errors import ConfigError
from medflow.core.table import text_table
from medflow.core.tasks import OutputOptions, OutputReport, Task

HERE = Path(__file__).resolve().parent
# The exported serving_default outputs (export.SERVING_OUTPUTS; not imported: no TensorFlow).
SERVING_OUTPUTS = ("warped", "displacement", "folding_fraction", "ncc")
MASK_LABELS = ("background", "foreground")


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


class RegistrationTask(Task):
    """The registration plug-in (see :class:`medflow.core.tasks.Task`)."""

    name = "registration"
    default_pipeline_name = "medflow-registration"
    default_model_name = "medflow-registration"
    manifest_columns = ("fixed", "moving")
    output_filter = SERVING_OUTPUTS
    file_outputs = ("warp_out", "overlay_out")
    # the served output by which the serving client recognises a registration model
    signature_output = "displacement"

    def module_files(self) -> tuple[str, str]:
        return str(HERE / "transform.py"), str(HERE / "trainer.py")

    def check_hyperparameters(self, values: Mapping[str, Any], image_size: int, labels) -> None:
        from medflow.components.tasks.registration.trainer import RegHParams

        RegHParams.from_config({**values, "image_size": image_size})

    def thresholds(self, values: Mapping[str, Any] | None):
        from medflow.components.tasks.registration.evaluation import RegistrationThresholds

        values = dict(values or {})
        try:
            return RegistrationThresholds(**{k: float(v) for k, v in values.items()})
        except TypeError:
            raise ConfigError(
                f"--threshold {sorted(values)}: {self.name} takes min_dice, max_dice_drop and "
                "max_folding"
            ) from None

    def eval_config(self, thresholds, labels: Sequence[str]):
        from medflow.components.tasks.registration.evaluation import (
            build_registration_eval_config,
        )

        return build_registration_eval_config(thresholds)

    def contract_labels(self, labels: Sequence[str]) -> list[str]:
        return list(MASK_LABELS)  # the classes of the masks Dice is measured on

    def check_serving_outputs(self, outputs, size, labels) -> str | None:
        missing = [k for k in SERVING_OUTPUTS if k not in outputs]
        if missing:
            return f"serving_default lacks outputs {missing} (warped image, displacement field)"
        shape = outputs["displacement"]["shape"]
        if size is not None and shape != [-1, int(size[0]), int(size[1]), 2]:
            return f"displacement field {shape} is not [-1, {size[0]}, {size[1]}, 2]"
        return None

    def classes_from_signature(self, image_dims, output_dims) -> int | None:
        # displacement [-1, rows, cols, 2] on the input grid: the masks' 2 classes
        field = len(output_dims) == 4 and output_dims[3] == 2
        return 2 if field and list(output_dims[1:3]) == list(image_dims[1:3]) else None

    def default_labels(self, n_classes: int) -> list[str]:
        return list(MASK_LABELS)

    def decode(self, inputs, prediction, info) -> list:
        from medflow.components.tasks.registration.results import decode

        return decode(inputs, prediction, info)

    def format_table(self, results) -> str:
        rows = [
            (
                "fixed", "moving", "dice_before", "dice_after", "hd95_before_mm",
                "hd95_after_mm", "folding", "ncc", "model",
            )
        ]  # fmt: skip
        rows += [
            (
                r.fixed,
                r.moving,
                _fmt(r.dice_before),
                _fmt(r.dice_after),
                _fmt(r.hd95_before_mm),
                _fmt(r.hd95_after_mm),
                f"{r.folding_fraction:.4%}",
                _fmt(r.ncc),
                f"{r.model_name}:{r.model_version}",
            )
            for r in results
        ]
        return text_table(rows)

    def add_predict_arguments(self, group) -> None:
        group.add_argument(
            "--warp-out",
            metavar="DIR",
            help="with --pairs: write each pair's warped moving image as a derived DICOM "
            "image on the fixed image's grid (warped-<SOPInstanceUID>.dcm, referencing both "
            "sources) and its displacement field (field-<SOPInstanceUID>.npy)",
        )

    def write_files(self, results: list, options: OutputOptions) -> tuple[list, OutputReport]:
        from medflow.components.tasks.registration.outputs import write_files

        return write_files(results, options)

    def push(self, results, source, settings) -> list:
        from medflow.components.tasks.registration.outputs import push_warped

        return push_warped(results, source, settings)

    def review_record(self, result) -> dict[str, Any]:
        score = result.dice_after if result.dice_after is not None else max(result.ncc or 0, 0)
        return {
            "labels": ["registered"],
            "scores": [float(score)],
            "mask_ref": result.review_ref,  # the warped image (PNG on the fixed grid)
            "task": self.name,
        }

    def review(self):
        from medflow.components.tasks.registration.review import REVIEW

        return REVIEW


TASK = RegistrationTask()
