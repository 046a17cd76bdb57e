"""A segmentation U-Net initialised from a pushed autoencoder (``--hparam init=``): the
``small_cnn`` encoder of the U-Net's width fills its first three levels, they stay frozen for
``init_frozen_epochs`` while the rest trains, and the lineage reaches the contract and the
pipeline (the Trainer's ``base_model``)."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def pushed_encoder(tmp_path_factory):
    """``<base>/ae/1/`` holding a small_cnn width-4 autoencoder's encoder weights and contract
    (what an export and push leave; the SavedModel itself is not read by ``init``)."""
    import keras

    from medflow.components.models.encoder_init import ENCODER_WEIGHTS
    from medflow.components.tasks.autoencoder.export import encoder_weights
    from medflow.components.tasks.autoencoder.model import ENCODER, build_autoencoder
    from medflow.components.tasks.autoencoder.trainer import AEHParams

    keras.utils.set_random_seed(5)
    hp = AEHParams.from_config({"image_size": 28, "width": 4, "latent_dim": 8})
    encoder = build_autoencoder(hp)[0].get_layer(ENCODER)
    version = tmp_path_factory.mktemp("models") / "ae" / "1"
    (version / ENCODER_WEIGHTS).parent.mkdir(parents=True)
    np.savez(version / ENCODER_WEIGHTS, **encoder_weights(encoder))
    contract = {"model_name": "ae", "version": "1", "task": "autoencoder"}
    (version / "contract.json").write_text(json.dumps(contract))
    return version, encoder


def _seg_hp(**values):
    from medflow.components.tasks.segmentation.trainer import SegHParams

    return SegHParams.from_config(
        {"image_size": 32, "depth": 3, "width": 4, "epochs": 1, "batch_size": 4,
         "augment": False, "validation_fraction": 0, **values}
    )  # fmt: skip


def _levels(model) -> list[np.ndarray]:
    """The U-Net's first three levels' conv/BN weights, in build order."""
    names = [f"down{level}_{kind}{i}" for level in range(3) for i in (1, 2)
             for kind in ("conv", "bn")]  # fmt: skip
    return [w for name in names for w in model.get_layer(name).get_weights()]


def test_unet_encoder_takes_the_autoencoders_weights(pushed_encoder):
    import keras

    from medflow.components.models.encoder_init import initialise, weight_layers
    from medflow.components.tasks.segmentation.unet import build_unet

    version, encoder = pushed_encoder
    source = [w for layer in weight_layers(encoder) for w in layer.get_weights()]
    keras.utils.set_random_seed(6)
    unet = build_unet((32, 32, 1), 3, 4)
    before = _levels(unet)
    assert not any(np.allclose(a, b) for a, b in zip(before, source, strict=True) if a.ndim == 4)
    lineage = initialise(unet, str(version))
    assert lineage["layers"] == 12 and lineage["path"] == str(version)  # 6 conv + 6 BN
    for a, b in zip(_levels(unet), source, strict=True):
        np.testing.assert_array_equal(a, b)
    # an encoder of another width does not fit: one line naming what to do
    with pytest.raises(ValueError, match="a U-Net takes a small_cnn encoder of its width"):
        initialise(build_unet((32, 32, 1), 3, 8), str(version))


@pytest.mark.slow  # three short U-Net trainings: ~1-4 min on the shared 2 cores
def test_unet_encoder_is_initialised_frozen_then_trained(pushed_encoder):
    import tensorflow as tf

    from medflow.components.models.encoder_init import weight_layers
    from medflow.components.tasks.segmentation.trainer import fit

    version, encoder = pushed_encoder
    source = [w for layer in weight_layers(encoder) for w in layer.get_weights()]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 32, 32, 1)).astype("float32")
    y = (x[..., 0] > 0.5).astype("float32")
    data = tf.data.Dataset.from_tensor_slices((x, y))
    # one epoch, frozen: the three levels are the autoencoder's, the decoder trained
    frozen, history, _ = fit(_seg_hp(init=str(version), init_frozen_epochs=1), data, data)
    for a, b in zip(_levels(frozen), source, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(history["loss"]) == 1
    # then all layers: the encoder moves away from its initialisation
    tuned, history, _ = fit(_seg_hp(init=str(version), init_frozen_epochs=1, epochs=2), data, data)
    convs = [(a, b) for a, b in zip(_levels(tuned), source, strict=True) if a.ndim == 4]
    assert not any(np.array_equal(a, b) for a, b in convs) and len(history["loss"]) == 2


def test_lineage_reaches_the_contract_and_the_pipeline(pushed_encoder, tmp_path):
    from medflow.components.models.encoder_init import contract_lineage
    from medflow.pipelines.config import PipelineConfig
    from medflow.pipelines.pipeline import INIT_IMPORTER_ID, create_pipeline

    version, _ = pushed_encoder
    hp = _seg_hp(init=str(version.parent))  # the model folder: its newest version
    init = contract_lineage({"hparams": hp.to_dict()})["init"]
    assert (init["model_name"], init["version"], init["path"]) == ("ae", "1", str(version))
    config = PipelineConfig(
        task="segmentation", data_root=str(tmp_path), label_manifest=str(tmp_path / "m.csv"),
        image_size=32, hyperparameters={"init": str(version), "width": 4, "depth": 3},
    )  # fmt: skip
    pipeline = create_pipeline(
        config, pipeline_root=str(tmp_path / "root"), serving_model_dir=str(tmp_path / "m"),
        deid_key_file=str(tmp_path / "key"),
    )  # fmt: skip
    trainer = {c.id: c for c in pipeline.components}["Trainer"]
    assert trainer.inputs["base_model"].producer_component_id == INIT_IMPORTER_ID
    assert json.loads(trainer.exec_properties["custom_config"])["init"] == str(version)
