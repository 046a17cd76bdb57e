"""``predict_split``: a model's outputs on transformed TFRecords with the features beside
them (labels or masks, patient ids, pixel spacings), in file order."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from medflow.components.models.eval_split import predict_split


class _Spec:
    """What ``predict_split`` reads of a ``tft.TFTransformOutput``: the transformed spec."""

    def __init__(self, with_patient: bool):
        self.spec = {
            "image": tf.io.FixedLenFeature([4], tf.float32),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "pixel_spacing": tf.io.FixedLenFeature([2], tf.float32),
        }
        if with_patient:
            self.spec["patient_id"] = tf.io.FixedLenFeature([], tf.string)

    def transformed_feature_spec(self):
        return dict(self.spec)


def _write(path, n: int) -> None:
    with tf.io.TFRecordWriter(str(path), options="GZIP") as w:
        for i in range(n):
            feats = {
                "image": tf.train.Feature(float_list=tf.train.FloatList(value=[i, 0, 0, 1])),
                "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 2])),
                "pixel_spacing": tf.train.Feature(float_list=tf.train.FloatList(value=[i, 2])),
                "patient_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"p%d" % i])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString())


def _model(images, training=False):  # the first pixel and the sum of each image: [N, 2]
    return tf.stack([images[:, 0, 0, 0], tf.reduce_sum(images, axis=[1, 2, 3])], axis=1)


def test_outputs_labels_patients_and_spacings_line_up(tmp_path):
    _write(tmp_path / "a.gz", 5)
    probs, found = predict_split(
        _model, str(tmp_path / "*.gz"), _Spec(True), (2, 2, 1), ("label", "pixel_spacing"), 2
    )
    np.testing.assert_array_equal(probs[:, 0], np.arange(5))
    np.testing.assert_array_equal(found["label"], np.arange(5) % 2)
    np.testing.assert_array_equal(found["pixel_spacing"][:, 0], np.arange(5))
    assert found["patient_id"].tolist() == [f"p{i}" for i in range(5)]


def test_without_patient_ids_each_case_is_its_own_patient(tmp_path):
    _write(tmp_path / "a.gz", 3)
    _, found = predict_split(_model, [str(tmp_path / "a.gz")], _Spec(False), (2, 2, 1), ("mask",))
    assert found["patient_id"].tolist() == ["0", "1", "2"] and "mask" not in found
