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
from medflow.components.models.training import transformed_files
from medflow.components.tasks.classification.trust import (
    TrustSettings,
    check_eval_split,
    fit_outputs,
)
from medflow.core import features

log = logging.getLogger(__name__)


def transformed_dataset(file_pattern: list[str] | str, tft_output, hp: HParams):
    """Unbatched ``(image, label)`` dataset from transformed GZIP TFRecords."""
    import tensorflow as tf

    files = transformed_files(file_pattern)
    spec = tft_output.transformed_feature_spec()
    spec = {k: spec[k] for k in (features.IMAGE, features.LABEL)}
    shape = hp.input_shape

    def parse(record):
        parsed = tf.io.parse_single_example(record, spec)
        image = tf.reshape(parsed[features.IMAGE], shape)
        return image, tf.reshape(parsed[features.LABEL], [])

    ds = tf.data.TFRecordDataset(sorted(files), compression_type="GZIP")
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def eval_cases(model, eval_files, tft_output, hp: HParams):
    """(probabilities [N, C], labels [N], patient ids [N]) of the trained ``model`` on the
    transformed eval split (:func:`components.models.eval_split.predict_split`)."""
    from medflow.components.models.eval_split import predict_split

    probs, found = predict_split(model, eval_files, tft_output, hp.input_shape, (features.LABEL,))
    return probs, found[features.LABEL].reshape(-1), found[features.PATIENT_ID]


def _calibrate_tf(cal, probs):
    import tensorflow as tf

    return cal.apply_tf(tf.constant(probs, tf.float32)).numpy()


def train_and_export(
    hp: HParams,
    train_files,
    eval_files,
    transform_dir: str,
    serving_model_dir: str,
    log_dir: str | None = None,
    trust: TrustSettings | None = None,
) -> dict[str, Any]:
    """Train on the transformed splits, fit calibration and the operating point on the eval
    split (:mod:`.trust`) and export the serving model; returns its summary."""
    from medflow.components.models.training import count_labels, fit, transformed_splits
    from medflow.components.tasks.classification.export import export_serving_model

    trust = trust or TrustSettings()
    tft_output, train, validation, validation_source = transformed_splits(
        hp, train_files, eval_files, transform_dir, transformed_dataset
    )
    eval_counts = count_labels(transformed_dataset(eval_files, tft_output, hp))
    check_eval_split(trust, eval_counts, hp.n_classes)  # before training, not after
    model, history, counts = fit(hp, train, validation, log_dir)
    probs, labels, groups = eval_cases(model, eval_files, tft_output, hp)
    calibration, point, report = fit_outputs(trust, probs, labels, groups, _calibrate_tf)
    info = {
        "hparams": hp.for_train_size(sum(counts.values())).to_dict(),  # as fit resolved it
        "backbone": hp.resolved_backbone(),
        "train_class_counts": {str(k): v for k, v in sorted(counts.items())},
        "validation": validation_source,
        "epochs_run": len(history.get("loss", [])),
        "history": history,
        "parameters": int(model.count_params()),
        "trust": report,
    }
    threshold = point.threshold if point is not None else None
    export_serving_model(
        model,
        tft_output,
        serving_model_dir,
        hp.input_shape,
        hp.labels,
        info,
        calibration,
        threshold,
    )
    log.info("exported %s model to %s", info["backbone"], serving_model_dir)
    return info


def run_fn(fn_args) -> None:
    """TFX Trainer entry point (``tfx.components.FnArgs``); volume examples train the 3D
    CNN (:mod:`.volumes`)."""
    import tensorflow_transform as tft

    from medflow.components.models.volume_examples import is_volume_transform

    tft_output = tft.TFTransformOutput(fn_args.transform_output)
    if is_volume_transform(tft_output):
        from medflow.components.tasks.classification.volumes import train_volumes_and_export

        train_volumes_and_export(fn_args, tft_output)
        return
    hp = HParams.from_config(fn_args.custom_config)
    trust = TrustSettings.from_config(fn_args.custom_config, hp.n_classes)
    train_and_export(
        hp,
        fn_args.train_files,
        fn_args.eval_files,
        fn_args.transform_output,
        fn_args.serving_model_dir,
        fn_args.model_run_dir,
        trust,
    )
