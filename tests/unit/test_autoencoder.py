"""The autoencoder task: AE/VAE on the project's backbones, the export's outputs, calibration,
the TFMA metric and the plug-in's answers."""

from __future__ import annotations

import numpy as np
import pytest

from medflow.core.errors import ConfigError
from medflow.core.tasks import get_task


def _blobs(n: int, seed: int = 0) -> np.ndarray:
    """z-scored images of one bright disc each, at random places: something to learn."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:28, :28]
    centres = rng.uniform(8, 20, (n, 2))
    x = np.stack([np.exp(-((rr - r) ** 2 + (cc - c) ** 2) / 20.0) for r, c in centres])
    return ((x - x.mean()) / x.std()).astype("float32")[..., None]


def _hp(**values):
    from medflow.components.tasks.autoencoder.trainer import AEHParams

    return AEHParams.from_config({"image_size": 28, "width": 4, "latent_dim": 8, **values})


def test_hyperparameters_are_checked_before_the_pipeline_starts():
    from medflow.pipelines.config import PipelineConfig

    task = get_task("autoencoder")
    task.check_hyperparameters({"kind": "vae", "guard_quantile": 0.995}, 28, ())
    for bad, match in (
        ({"kind": "gan"}, "kind='gan'"),
        ({"backbone": "resnet50"}, "backbone='resnet50'"),
        ({"guard_quantile": 1.0}, "guard_quantile=1.0"),
    ):
        with pytest.raises(ConfigError, match=match):
            PipelineConfig(task="autoencoder", hyperparameters=bad)
    with pytest.raises(ConfigError, match="max_error and max_error_increase"):
        task.thresholds({"min_auc": 0.9})


@pytest.mark.slow  # trains 30 epochs: ~45 s on the shared 2 cores
def test_vae_trains_and_its_serving_model_carries_input_and_kl():
    import keras

    from medflow.components.tasks.autoencoder.model import ENCODER, build_autoencoder

    keras.utils.set_random_seed(0)
    model, served = build_autoencoder(_hp(kind="vae"))
    x = _blobs(16)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    before = model.evaluate(x, x, verbose=0)
    model.fit(x, x, epochs=30, batch_size=8, verbose=0)
    assert model.evaluate(x, x, verbose=0) < 0.5 * before  # inference mode: moving BN stats
    out = np.asarray(served(x, training=False))
    assert out.shape == (16, 28, 28, 3)  # reconstruction, input, KL per example
    np.testing.assert_allclose(out[..., 1], x[..., 0], atol=1e-6)
    assert (out[:, 0, 0, 2] > 0).all()
    assert model.get_layer(ENCODER).output.shape[-1] == 16  # small_cnn: 4 * width features
    assert model.losses  # the KL term


def test_plain_autoencoder_has_no_kl_and_fits_any_grid():
    from medflow.components.tasks.autoencoder.model import build_autoencoder

    model, served = build_autoencoder(_hp())
    x = _blobs(4)
    assert (np.asarray(served(x, training=False))[:, 0, 0, 2] == 0).all() and not model.losses
    # an odd grid and the ResNet-18 encoder reconstruct on their own grid
    for shape, backbone in (((30, 45), "small_cnn"), ((32, 32), "resnet18")):
        odd, _ = build_autoencoder(_hp(image_size=list(shape), backbone=backbone))
        assert odd.output.shape[1:] == (*shape, 1)


@pytest.mark.slow  # a SavedModel export and load: ~25 s on the shared 2 cores
def test_export_serves_reconstruction_score_and_elbo(tmp_path):
    import keras
    import tensorflow as tf

    from medflow.components.tasks.autoencoder.export import ENCODER_WEIGHTS, export_autoencoder
    from medflow.components.tasks.autoencoder.model import ENCODER, build_autoencoder
    from tests.support.fixed_transform import FixedTransform

    keras.utils.set_random_seed(1)
    hp = _hp(kind="vae")
    model, served = build_autoencoder(hp)
    path = tmp_path / "export"
    export_autoencoder(
        served, model.get_layer(ENCODER), FixedTransform((28, 28, 1), 100.0, 50.0), str(path),
        hp.input_shape, {"guard": {"threshold": 1.0}},
    )  # fmt: skip
    raw = np.random.default_rng(2).uniform(0, 255, (3, 28, 28, 1)).astype("float32")
    out = tf.saved_model.load(str(path)).signatures["serving_default"](image=tf.constant(raw))
    out = {k: v.numpy() for k, v in out.items()}
    z = (raw - 100.0) / 50.0
    recon = np.asarray(model(z, training=False))
    np.testing.assert_allclose(out["reconstruction"], recon, atol=1e-4)
    np.testing.assert_allclose(out["score"], ((recon - z) ** 2).mean(axis=(1, 2, 3)), rtol=1e-4)
    assert (out["elbo"] < -0.5 * ((recon - z) ** 2).sum(axis=(1, 2, 3)) + 1e-3).all()  # KL > 0
    weights = np.load(path / ENCODER_WEIGHTS)
    assert len(weights.files) == sum(len(lay.weights) for lay in model.get_layer(ENCODER).layers)


def test_calibration_threshold_and_false_alarm_rates():
    from medflow.components.tasks.autoencoder.trainer import calibrate

    scores = np.arange(1, 201, dtype=float)  # 200 eval images
    cal = calibrate(scores, 0.99, holdout_scores=np.array([1.0, 250.0, 300.0, 5.0]))
    assert cal["threshold"] == pytest.approx(np.quantile(scores, 0.99))
    assert cal["false_alarm_rate"] == pytest.approx(0.01)  # 2 of 200 above
    assert cal["false_alarm_rate_holdout"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="eval split is empty"):
        calibrate(np.zeros(0), 0.99)


def test_tfma_metric_means_the_served_score_and_elbo():
    from types import SimpleNamespace

    from medflow.components.tasks.autoencoder.evaluation import (
        ReconstructionThresholds,
        build_autoencoder_eval_config,
    )
    from medflow.components.tasks.autoencoder.tfma_metrics import ReconstructionMetrics

    metric = ReconstructionMetrics(values=["reconstruction_error", "elbo"])
    (computation,) = metric.computations()
    combiner = computation.combiner
    acc = combiner.create_accumulator()
    for score, elbo in ((0.2, -10.0), (0.4, -30.0)):
        element = SimpleNamespace(prediction={"score": np.array([score]), "elbo": np.array([elbo])})
        acc = combiner.add_input(acc, element)
    out = {
        k.name: v for k, v in combiner.extract_output(combiner.merge_accumulators([acc])).items()
    }
    assert out == pytest.approx({"reconstruction_error": 0.3, "elbo": -20.0})
    config = build_autoencoder_eval_config(ReconstructionThresholds(max_error=0.8))
    metrics = config.metrics_specs[0].metrics
    blessed = [m for m in metrics if m.HasField("threshold")]
    assert [m.class_name for m in blessed] == ["ReconstructionMetrics"]
    assert blessed[0].threshold.value_threshold.upper_bound.value == 0.8
    with pytest.raises(ConfigError, match="max_error=0.0"):
        ReconstructionThresholds(max_error=0.0)


def test_plugin_recognises_its_signature_and_formats_results():
    from medflow.components.tasks.autoencoder.results import ReconstructionPrediction

    task = get_task("autoencoder")
    assert task.classes_from_signature([-1, 28, 28, 1], [-1, 28, 28, 1]) == 0
    assert task.classes_from_signature([-1, 28, 28, 1], [-1, 2]) is None
    outputs = {"reconstruction": {"shape": [-1, 28, 28, 1]}, "score": {}, "elbo": {}}
    assert task.check_serving_outputs(outputs, (28, 28), []) is None
    assert "lacks outputs ['elbo']" in task.check_serving_outputs(
        {k: v for k, v in outputs.items() if k != "elbo"}, (28, 28), []
    )
    result = ReconstructionPrediction(
        "a.dcm", 0, "1.2", "1.3", "1.4", "medflow-autoencoder", 7, [], 0.1234, -55.0,
        np.zeros((28, 28, 1), np.float32),
    )  # fmt: skip
    assert "0.1234" in task.format_table([result]) and "medflow-autoencoder:7" in task.format_table(
        [result]
    )
    assert "reconstruction" not in result.to_dict() and result.to_dict()["score"] == 0.1234
    with pytest.raises(ConfigError, match="not reviewed"):
        task.review_record(result)


def test_pretraining_pool_takes_both_splits_and_is_refused_as_a_guard(tmp_path):
    import json

    from medflow.components.models.guard import calibration
    from medflow.components.tasks.autoencoder.trainer import pool_files
    from medflow.pipelines.config import PipelineConfig

    train, evals = ["t/Split-train/*.gz"], "t/Split-eval/*.gz"
    assert pool_files(_hp(), train, evals) == train  # a guard: the train split alone
    assert pool_files(_hp(pool="all"), train, evals) == [*train, evals]
    with pytest.raises(ConfigError, match="pool='both'"):
        PipelineConfig(task="autoencoder", hyperparameters={"pool": "both"})
    from medflow.core.errors import InputError
    from medflow.pipelines.preflight import check_inputs

    # the pool needs no label manifest (every instance of --data-root); a classifier does
    pool = PipelineConfig(task="autoencoder", hyperparameters={"pool": "all"}, data_root="d")
    check_inputs(pool)
    with pytest.raises(InputError, match="trains on labels: pass --labels"):
        check_inputs(pool.replace(task="classification", hyperparameters={}))
    with pytest.raises(ConfigError, match="pool=all trains on the eval split"):
        PipelineConfig(guard=True, guard_hyperparameters={"pool": "all"})
    # a guard trained on the pool is refused at push time too (its calibration is in sample)
    info = tmp_path / "assets.extra" / "training.json"
    info.parent.mkdir()
    info.write_text(json.dumps({"guard": {"threshold": 0.5, "pool": "all"}}))
    with pytest.raises(ConfigError, match="drop pool=all from --guard-hparam"):
        calibration(str(tmp_path))
    info.write_text(json.dumps({"guard": {"threshold": 0.5, "pool": "train"}}))
    assert calibration(str(tmp_path))["threshold"] == 0.5


def test_denoising_noise_is_training_only():
    from medflow.components.tasks.autoencoder.model import build_autoencoder

    model, served = build_autoencoder(_hp(noise=0.5))
    x = _blobs(4)
    clean = np.asarray(model(x, training=False))
    np.testing.assert_allclose(np.asarray(model(x, training=False)), clean)  # no noise served
    np.testing.assert_allclose(np.asarray(served(x, training=False))[..., :1], clean, atol=1e-6)
    assert not np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=True)))
    with pytest.raises(ValueError, match="noise=-0.1"):
        _hp(noise=-0.1)
