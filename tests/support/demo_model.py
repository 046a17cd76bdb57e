"""A small CNN SavedModel with medflow's serving signatures, for tests, benchmarks and demos.

It has the exact serving interface of the Trainer's export (``serving_default`` on ``image``
float32 [None, rows, cols, channels]; ``serve_examples`` on serialized tf.Examples; outputs
``probabilities``, ``class_id``, ``score``) plus a ``classify`` signature whose method name is
``tensorflow/serving/classify`` so TF Serving's Classify API can be exercised. Weights come from
a seed, so two versions give different numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medflow.serving.servable import CLASSIFY_METHOD


def _build_module(size: tuple[int, int], channels: int, labels: tuple[str, ...], seed: int):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    rows, cols = size
    n_classes = len(labels)

    class DemoClassifier(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.k1 = tf.Variable(rng.normal(0, 0.3, (3, 3, channels, 8)).astype("float32"))
            self.k2 = tf.Variable(rng.normal(0, 0.2, (3, 3, 8, 16)).astype("float32"))
            self.w = tf.Variable(rng.normal(0, 0.3, (16, n_classes)).astype("float32"))
            self.b = tf.Variable(rng.normal(0, 0.1, (n_classes,)).astype("float32"))
            self.labels = tf.constant(list(labels))

        def _forward(self, image):
            # Per-image standardisation stands in for the Transform graph of real exports.
            mean, var = tf.nn.moments(image, axes=[1, 2, 3], keepdims=True)
            x = (image - mean) / tf.sqrt(var + 1e-6)
            x = tf.nn.relu(tf.nn.conv2d(x, self.k1, 1, "SAME"))
            x = tf.nn.max_pool2d(x, 2, 2, "SAME")
            x = tf.nn.relu(tf.nn.conv2d(x, self.k2, 1, "SAME"))
            probs = tf.nn.softmax(tf.matmul(tf.reduce_mean(x, axis=[1, 2]), self.w) + self.b)
            return {
                "probabilities": probs,
                "class_id": tf.argmax(probs, axis=1, output_type=tf.int64),
                "score": probs[:, 1] if n_classes > 1 else probs[:, 0],
            }

        def _parse(self, examples):
            feats = tf.io.parse_example(examples, {"image": tf.io.FixedLenFeature([], tf.string)})
            flat = tf.io.decode_raw(feats["image"], tf.float32)
            return tf.reshape(flat, [-1, rows, cols, channels])

        @tf.function(
            input_signature=[tf.TensorSpec([None, rows, cols, channels], tf.float32, name="image")]
        )
        def serving_default(self, image):
            return self._forward(image)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve_examples(self, examples):
            return self._forward(self._parse(examples))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
        def classify(self, inputs):
            probs = self._forward(self._parse(inputs))["probabilities"]
            classes = tf.tile(self.labels[tf.newaxis, :], [tf.shape(probs)[0], 1])
            return {"classes": classes, "scores": probs}

    return DemoClassifier()


def export_demo_model(
    base: str | Path,
    name: str = "demo",
    version: int = 1,
    *,
    size: tuple[int, int] = (28, 28),
    channels: int = 1,
    labels: tuple[str, ...] = ("normal", "abnormal"),
    seed: int = 0,
) -> Path:
    """Write ``<base>/<name>/<version>/`` (SavedModel + contract.json) atomically.

    The version appears in one ``os.replace`` of a finished folder, the way model pushes
    should land in a watched model base.

    Returns:
        The version directory.
    """
    import tensorflow as tf

    model_dir = Path(base) / name
    model_dir.mkdir(parents=True, exist_ok=True)
    final = model_dir / str(version)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=model_dir))
    try:
        module = _build_module(size, channels, labels, seed)
        signatures = {
            "serving_default": module.serving_default,
            "serve_examples": module.serve_examples,
            "classify": module.classify,
        }
        tf.saved_model.save(module, str(tmp / "m"), signatures=signatures)
        export = tmp / "m"
        _set_method_name(export / "saved_model.pb", "classify", CLASSIFY_METHOD)
        contract = _contract(name, version, size, channels, labels)
        (export / "contract.json").write_text(json.dumps(contract, indent=2))
        os.replace(export, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _set_method_name(saved_model_pb: Path, signature: str, method: str) -> None:
    """tf.saved_model.save marks every signature 'predict'; TF Serving's Classify needs this."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(saved_model_pb.read_bytes())
    for graph in proto.meta_graphs:
        graph.signature_def[signature].method_name = method
    saved_model_pb.write_bytes(proto.SerializeToString())


def _contract(name: str, version: int, size, channels: int, labels) -> dict:
    rows, cols = size
    out_probs = {"dtype": "float32", "shape": [-1, len(labels)]}
    outputs = {
        "probabilities": out_probs,
        "class_id": {"dtype": "int64", "shape": [-1]},
        "score": {"dtype": "float32", "shape": [-1]},
    }
    return {
        "model_name": name,
        "version": version,
        "task": "classification",
        "signatures": {
            "serving_default": {
                "inputs": {"image": {"dtype": "float32", "shape": [-1, rows, cols, channels]}},
                "outputs": outputs,
            },
            "serve_examples": {
                "inputs": {"examples": {"dtype": "string", "shape": [-1]}},
                "outputs": outputs,
            },
        },
        "preprocessing": {
            "size": [rows, cols],
            "channels": channels,
            "window": None,
            "frames": "middle",
            "max_pixels": 2**28,
        },
        "value_range": [None, None],
        "labels": list(labels),
        "intended_use": "Demonstration and testing of medflow serving only; not for clinical use.",
        "training_data": {},
        "metrics": {},
        "created_by": "medflow serving.demo_model",
    }
