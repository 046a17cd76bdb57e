"""The guard's false-alarm rate as a TFMA metric: a guard exported as its Trainer exports it
(threshold in ``serve_examples``), evaluated by real TFMA with the guard Evaluator's config on
serialized examples; the metric is the share of examples whose served score is above the
threshold, and the run summary prints it."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def guard(tmp_path_factory):
    """(export path, serialized examples, threshold): half the examples above it."""
    import keras
    import tensorflow as tf

    from medflow.components.models.preprocessing import encode_image
    from medflow.components.tasks.autoencoder.export import export_autoencoder
    from medflow.components.tasks.autoencoder.model import ENCODER, build_autoencoder
    from medflow.components.tasks.autoencoder.trainer import AEHParams
    from tests.support.fixed_transform import FixedTransform

    keras.utils.set_random_seed(3)
    hp = AEHParams.from_config({"image_size": 28, "width": 4, "latent_dim": 8})
    model, served = build_autoencoder(hp)
    rng = np.random.default_rng(4)
    raw = rng.uniform(0, 255, (24, 28, 28, 1)) * rng.uniform(0.05, 1.0, (24, 1, 1, 1))
    raw = np.round(raw).astype("float32")
    z = (raw - 100.0) / 50.0
    scores = np.mean((np.asarray(model(z, training=False)) - z) ** 2, axis=(1, 2, 3))
    threshold = float(np.quantile(scores, 0.7))
    path = tmp_path_factory.mktemp("guard") / "export"
    transform = FixedTransform((28, 28, 1), 100.0, 50.0)
    info = {"guard": {"threshold": threshold}}
    export_autoencoder(served, model.get_layer(ENCODER), transform, str(path), hp.input_shape, info)
    encoded = encode_image(tf.constant(raw)).numpy()
    examples = [
        tf.train.Example(
            features=tf.train.Features(
                feature={"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))}
            )
        ).SerializeToString()
        for b in encoded
    ]
    return path, examples, threshold


def test_serve_examples_carries_the_threshold_and_serving_default_does_not(guard):
    import tensorflow as tf

    path, examples, threshold = guard
    loaded = tf.saved_model.load(str(path))
    out = loaded.signatures["serve_examples"](examples=tf.constant(examples))
    np.testing.assert_allclose(out["threshold"].numpy(), threshold, rtol=1e-6)
    assert "threshold" not in loaded.signatures["serving_default"].structured_outputs


def test_tfma_reports_the_share_of_eval_examples_above_the_threshold(guard, tmp_path):
    import tensorflow as tf
    import tensorflow_model_analysis as tfma

    from medflow.components.evaluation_results import load_metrics
    from medflow.components.models.guard import guard_task
    from medflow.pipelines.run_summary import guard_and_init_lines

    path, examples, threshold = guard
    served = tf.saved_model.load(str(path)).signatures["serve_examples"]
    scores = served(examples=tf.constant(examples))["score"].numpy()
    expected = float(np.mean(scores > threshold))
    assert 0.2 < expected < 0.4  # the 70th percentile of the Keras model's scores
    data = tmp_path / "eval.tfrecord"
    with tf.io.TFRecordWriter(str(data)) as writer:
        for example in examples:
            writer.write(example)
    config = guard_task().guard_eval_config()
    model = tfma.default_eval_shared_model(eval_saved_model_path=str(path), eval_config=config)
    out = tmp_path / "evaluation"
    tfma.run_model_analysis(
        eval_shared_model=model, eval_config=config, data_location=str(data),
        output_path=str(out),
    )  # fmt: skip
    overall = load_metrics(str(out))["overall"]
    assert overall["example_count"] == len(examples)
    assert overall["false_alarm_rate"] == pytest.approx(expected)
    assert overall["reconstruction_error"] == pytest.approx(float(scores.mean()), rel=1e-5)
    summary = {"guard": {"threshold": threshold, "quantile": 0.7, "evaluator": overall}}
    lines = guard_and_init_lines(summary)
    assert f"false-alarm rate {expected:.1%} of {len(examples)} examples" in lines[1]
