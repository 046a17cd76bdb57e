"""A trained model's outputs on the transformed eval split, with the features beside them
(labels or masks, the patient id, the pixel spacing): what the Trainers fit their
calibration, operating point or mask threshold and bootstrap intervals on after training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medflow.components.models.training import transformed_files
from medflow.core import features


def predict_split(
    model, file_pattern, tft_output, input_shape, keys: Sequence[str], batch_size: int = 64
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(model outputs [N, ...], {key: values [N, ...]}) over the transformed examples.

    ``keys`` absent from the transformed feature spec are left out of the dict, except the
    patient id, which is always there: the example index where the split has none (e.g.
    TFRecords transformed before it was passed through), so each case is its own patient.
    """
    import tensorflow as tf

    spec = tft_output.transformed_feature_spec()
    wanted = [k for k in dict.fromkeys((*keys, features.PATIENT_ID)) if k in spec]
    parse_spec = {k: spec[k] for k in (features.IMAGE, *wanted)}
    ds = tf.data.TFRecordDataset(transformed_files(file_pattern), compression_type="GZIP")
    ds = ds.batch(batch_size).map(lambda r: tf.io.parse_example(r, parse_spec))
    outputs, columns = [], {k: [] for k in wanted}
    for batch in ds:
        images = tf.reshape(batch[features.IMAGE], [-1, *input_shape])
        outputs.append(tf.cast(model(images, training=False), tf.float32).numpy())
        for k in wanted:
            value = batch[k]
            if isinstance(value, tf.SparseTensor):
                value = tf.sparse.to_dense(value)
            columns[k].append(value.numpy())
    probs = np.concatenate(outputs)
    found = {k: np.concatenate(v) for k, v in columns.items()}
    if features.PATIENT_ID in found:
        found[features.PATIENT_ID] = found[features.PATIENT_ID].reshape(-1).astype(str)
    else:
        found[features.PATIENT_ID] = np.arange(len(probs)).astype(str)
    return probs, found
