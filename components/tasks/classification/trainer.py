"""TFX Trainer module for image classification (Keras 3).

``run_fn`` reads the Transform's output, trains the backbone chosen in
``custom_config`` (see :class:`components.models.hparams.HParams`) and exports a
SavedModel whose signatures include the Transform graph
(:mod:`components.models.export`).
"""

from __future__ import annotations

import logging
from typing import Any

from medflow.components.models.hparams import HParams
from medflow.core import features

log = logging.getLogger(__name__)


def transformed_dataset(file_pattern: list[str] | str, tft_output, hp: HParams):
    """Unbatched ``(image, label)`` dataset from transformed GZIP TFRecords."""
    import tensorflow as tf

    files = tf.io.gfile.glob(file_pattern) if isinstance(file_pattern, str) else []
    if not isinstance(file_pattern, str):
        for pattern in file_pattern:
            files.extend(tf.io.gfile.glob(pattern))
    if not files:
        raise ValueError(f"no transformed examples match {file_pattern!r}")
    spec = tft_output.transformed_feature_spec()
    spec = {k: spec[k] for k in (features.IMAGE, features.LABEL)}
    shape = hp.input_shape

    def parse(record):
        parsed = tf.io.parse_single_example(record, spec)
        image = tf.reshape(parsed[features.IMAGE], shape)
        return image, tf.reshape(parsed[features.LABEL], [])

    ds = tf.data.TFRecordDataset(sorted(files), compression_type="GZIP")
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def train_and_export(
    hp: HParams,
    train_files,
    eval_files,
    transform_dir: str,
    serving_model_dir: str,
    log_dir: str | None = None,
) -> dict[str, Any]:
    """Train on the transformed splits and export the serving model; returns its summary."""
    from medflow.components.models.training import fit, transformed_splits
    from medflow.components.tasks.classification.export import export_serving_model

    tft_output, train, validation, validation_source = transformed_splits(
        hp, train_files, eval_files, transform_dir, transformed_dataset
    )
    model, history, counts = fit(hp, train, validation, log_dir)
    info = {
        "hparams": hp.to_dict(),
        "backbone": hp.resolved_backbone(),
        "train_class_counts": {str(k): v for k, v in sorted(counts.items())},
        "validation": validation_source,
        "epochs_run": len(history.get("loss", [])),
        "history": history,
        "parameters": int(model.count_params()),
    }
    export_serving_model(model, tft_output, serving_model_dir, hp.input_shape, hp.labels, info)
    log.info("exported %s model to %s", info["backbone"], serving_model_dir)
    return info


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``tfx.components.FnArgs``)."""
    hp = HParams.from_config(fn_args.custom_config)
    train_and_export(
        hp,
        fn_args.train_files,
        fn_args.eval_files,
        fn_args.transform_output,
        fn_args.serving_model_dir,
        fn_args.model_run_dir,
    )
