"""Autoencoders: a convolutional autoencoder or VAE trained on the images alone (labels are
never read), with the project's backbones as encoders; reconstruction error and ELBO in
TFMA; the reconstruction and a per-image score (higher = more unusual) served. The same
model guards a classifier or segmenter as its out-of-distribution check, and its encoder
initialises one (``--hparam init=...``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medflow.components.models import TRANSFORM_MODULE
from medflow.core.errors import ConfigError
from medflow.core.table import text_table
from medflow.core.tasks import Task

HERE = Path(__file__).resolve().parent
# What the exported serving_default returns (export.py); `reconstruction` identifies it.
SERVING_OUTPUTS = ("reconstruction", "score", "elbo")


class AutoencoderTask(Task):
    """The autoencoder plug-in (see :class:`medflow.core.tasks.Task`)."""

    name = "autoencoder"
    default_pipeline_name = "medflow-autoencoder"
    default_model_name = "medflow-autoencoder"
    manifest_columns = ()  # unsupervised: any manifest (for the splits) will do
    output_filter = SERVING_OUTPUTS
    # the served output whose shape identifies the task (serving.client; default probabilities)
    signature_output = "reconstruction"
    # its models score how unusual an image is: the guards of other models (models/guard.py)
    ood_guard = True

    def module_files(self) -> tuple[str, str]:
        return TRANSFORM_MODULE, str(HERE / "trainer.py")

    def check_hyperparameters(self, values: Mapping[str, Any], image_size: int, labels) -> None:
        from medflow.components.tasks.autoencoder.trainer import AEHParams

        AEHParams.from_config({**values, "image_size": image_size})

    def thresholds(self, values: Mapping[str, Any] | None):
        from medflow.components.tasks.autoencoder.evaluation import ReconstructionThresholds

        values = dict(values or {})
        try:
            return ReconstructionThresholds(**{k: float(v) for k, v in values.items()})
        except TypeError:
            raise ConfigError(
                f"--threshold {sorted(values)}: {self.name} takes max_error and max_error_increase"
            ) from None

    def eval_config(self, thresholds, labels: Sequence[str]):
        from medflow.components.tasks.autoencoder.evaluation import (
            build_autoencoder_eval_config,
        )

        return build_autoencoder_eval_config(thresholds)

    def guard_eval_config(self):
        """The Evaluator's config for this task's model as a guard (models/guard.py)."""
        from medflow.components.tasks.autoencoder.evaluation import build_guard_eval_config

        return build_guard_eval_config()

    def contract_labels(self, labels: Sequence[str]) -> list[str]:
        return []  # an autoencoder has no classes

    def check_serving_outputs(self, outputs, size, labels) -> str | None:
        missing = [k for k in SERVING_OUTPUTS if k not in outputs]
        if missing:
            return f"serving_default lacks outputs {missing}"
        shape = outputs["reconstruction"]["shape"]
        if size is not None and list(shape[1:3]) != [int(size[0]), int(size[1])]:
            return f"reconstruction {shape} is not on the input grid {list(size)}"
        return None

    def classes_from_signature(self, image_dims, output_dims) -> int | None:
        # `reconstruction` has the input's shape; an autoencoder has no classes (0)
        return 0 if list(output_dims[1:]) == list(image_dims[1:]) else None

    def default_labels(self, n_classes: int) -> list[str]:
        return []

    def decode(self, inputs, prediction, info) -> list:
        from medflow.components.tasks.autoencoder.results import decode

        return decode(inputs, prediction, info)

    def format_table(self, results) -> str:
        rows = [("file", "frame", "score", "elbo", "model")]
        rows += [
            (
                r.path,
                str(r.frame_index),
                f"{r.score:.4f}",
                "-" if r.elbo is None else f"{r.elbo:.1f}",
                f"{r.model_name}:{r.model_version}",
            )
            for r in results
        ]
        return text_table(rows)

    def push(self, results, source, settings) -> list:
        raise ConfigError(
            f"--push: a {self.name} model's scores are not stored in the PACS; predict with "
            "the model it guards"
        )

    def review_record(self, result) -> dict[str, Any]:
        raise ConfigError(
            f"--record: a {self.name} model's scores are not reviewed; the model it guards "
            "records its results with their out-of-distribution flag"
        )


TASK = AutoencoderTask()
