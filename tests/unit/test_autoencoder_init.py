"""Pretraining -> transfer: a pushed autoencoder's encoder initialises a classifier's backbone
(frozen first, then all layers), and the pipeline records which model initialised which; the
guard's second Trainer and the Pusher's guard input are wired in the pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medflow.core.errors import ConfigError

# An autoencoder export, three backbones and a pipeline built: ~2-4 min on the shared 2 cores.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pushed_autoencoder(tmp_path_factory):
    """``<base>/ae/<version>/`` of an (untrained) small_cnn width-4 autoencoder."""
    import keras

    from medflow.components.pusher.publish import publish
    from medflow.components.tasks.autoencoder.export import export_autoencoder
    from medflow.components.tasks.autoencoder.model import ENCODER, build_autoencoder
    from medflow.components.tasks.autoencoder.trainer import AEHParams
    from tests.support.fixed_transform import FixedTransform

    keras.utils.set_random_seed(3)
    hp = AEHParams.from_config({"image_size": 28, "width": 4, "latent_dim": 8})
    model, served = build_autoencoder(hp)
    export = tmp_path_factory.mktemp("export") / "serving"
    transform = FixedTransform((28, 28, 1), 100.0, 50.0)
    encoder = model.get_layer(ENCODER)
    export_autoencoder(served, encoder, transform, str(export), hp.input_shape, {})
    base = tmp_path_factory.mktemp("models")
    contract = {"model_name": "ae", "task": "autoencoder", "labels": [], "preprocessing": {}}
    version, path, _ = publish(str(export), str(base / "ae"), contract)
    return {"base": base / "ae", "version": path, "encoder": encoder}


def _classifier(**values):
    from medflow.components.models.backbones import build_model
    from medflow.components.models.hparams import HParams

    hp = HParams.from_config({"image_size": 28, "width": 4, "backbone": "small_cnn", **values})
    return hp, build_model(hp)


def test_init_copies_the_encoder_into_the_backbone(pushed_autoencoder):
    from medflow.components.models.encoder_init import initialise, weight_layers

    source = [w for lay in weight_layers(pushed_autoencoder["encoder"]) for w in lay.get_weights()]
    _, model = _classifier()
    before = [w for lay in weight_layers(model) for w in lay.get_weights()]
    assert not all(np.allclose(a, b) for a, b in zip(source, before, strict=False))
    # the model folder (newest version) and the version folder name the same weights
    for path in (pushed_autoencoder["base"], pushed_autoencoder["version"]):
        lineage = initialise(model, str(path))
        after = [w for lay in weight_layers(model) for w in lay.get_weights()][: len(source)]
        assert all(np.array_equal(a, b) for a, b in zip(source, after, strict=True))
        assert lineage["layers"] == 12 and len(lineage["encoder_sha256"]) == 64
        assert lineage["path"] == str(pushed_autoencoder["version"])


def test_init_refuses_other_backbones_and_folders_without_an_encoder(pushed_autoencoder, tmp_path):
    from medflow.components.models.encoder_init import initialise

    _, wider = _classifier(width=8)
    with pytest.raises(ValueError, match="does not fit this model"):
        initialise(wider, str(pushed_autoencoder["version"]))
    with pytest.raises(ValueError, match="no assets.extra/encoder.weights.npz there"):
        initialise(wider, str(tmp_path))
    with pytest.raises(ValueError, match="init is set but backbone='resnet50'"):
        _classifier(backbone="resnet50", init=str(tmp_path))


def test_frozen_phase_keeps_the_encoder_and_trains_the_head(pushed_autoencoder):
    import tensorflow as tf

    from medflow.components.models.encoder_init import weight_layers
    from medflow.components.models.hparams import HParams
    from medflow.components.models.training import fit

    hp = HParams.from_config(
        {"image_size": 28, "width": 4, "backbone": "small_cnn", "epochs": 1, "batch_size": 8,
         "init": str(pushed_autoencoder["base"]), "init_frozen_epochs": 1, "augment": False,
         "patience": 0, "validation_fraction": 0}
    )  # fmt: skip
    rng = np.random.default_rng(0)
    images = rng.normal(size=(16, 28, 28, 1)).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((images, np.arange(16) % 2))
    model, history, _ = fit(hp, data, data)
    source = [w for lay in weight_layers(pushed_autoencoder["encoder"]) for w in lay.get_weights()]
    after = [w for lay in weight_layers(model) for w in lay.get_weights()]
    assert all(np.array_equal(a, b) for a, b in zip(source, after, strict=False))
    assert len(history["loss"]) == 1


def test_pipeline_wires_the_init_importer_and_the_guard_trainer(pushed_autoencoder, tmp_path):
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.pipeline import (
        GUARD_EVALUATOR_ID,
        GUARD_TRAINER_ID,
        INIT_IMPORTER_ID,
        create_pipeline,
    )

    init = str(pushed_autoencoder["base"])
    config = PipelineConfig(
        data_root=str(tmp_path), label_manifest=str(tmp_path / "labels.csv"), guard=True,
        require_guard=True, guard_hyperparameters={"guard_quantile": 0.995},
        hyperparameters={"init": init, "backbone": "small_cnn", "width": 4},
    )  # fmt: skip
    pipeline = create_pipeline(
        config, pipeline_root=str(tmp_path / "root"), serving_model_dir=str(tmp_path / "m"),
        deid_key_file=str(tmp_path / "key"),
    )  # fmt: skip
    nodes = {c.id: c for c in pipeline.components}
    trainer, guard = nodes["Trainer"], nodes[GUARD_TRAINER_ID]
    assert trainer.inputs["base_model"].producer_component_id == INIT_IMPORTER_ID
    trainer_config = json.loads(trainer.exec_properties["custom_config"])
    assert trainer_config["init"] == str(pushed_autoencoder["version"])
    assert json.loads(guard.exec_properties["custom_config"])["guard_quantile"] == 0.995
    assert guard.inputs["examples"].producer_component_id == "Transform"
    pusher = nodes["Pusher"]
    assert pusher.inputs["guard_model"].producer_component_id == GUARD_TRAINER_ID
    assert pusher.exec_properties["require_guard"] == 1
    guard_evaluator = nodes[GUARD_EVALUATOR_ID]  # the guard's false-alarm rate in TFMA
    assert guard_evaluator.inputs["model"].producer_component_id == GUARD_TRAINER_ID
    assert "false_alarm_rate" in guard_evaluator.exec_properties["eval_config"]
    with pytest.raises(ConfigError, match="--require-guard: the model would have no guard"):
        config.replace(guard=False)
    with pytest.raises(ConfigError, match="guard hyperparameters: kind='gan'"):
        config.replace(guard_hyperparameters={"kind": "gan"})
