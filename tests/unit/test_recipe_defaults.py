"""The small-data recipe as a default (issue 21): ``recipe=auto`` trains a training set of
fewer than SMALL_TRAIN images with batch 32 and no early stopping, larger ones with the
field defaults; whatever the config sets is kept."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medflow.components.models.hparams import SMALL_RECIPE, SMALL_TRAIN, HParams


def _hp(**config) -> HParams:
    return HParams.from_config({"image_size": 28, **config})


def test_auto_picks_the_small_recipe_below_the_size_and_the_defaults_above():
    hp = _hp()
    small, large = hp.for_train_size(SMALL_TRAIN - 1), hp.for_train_size(SMALL_TRAIN)
    assert (small.recipe, small.batch_size, small.patience) == ("small", 32, 0)
    assert (large.recipe, large.batch_size, large.patience) == ("large", 64, 8)
    assert small.learning_rate == large.learning_rate == hp.learning_rate
    assert SMALL_RECIPE == {"batch_size": 32, "patience": 0}


def test_values_the_config_sets_are_never_replaced():
    hp = _hp(batch_size=16, epochs=3)
    small = hp.for_train_size(10)
    assert (small.batch_size, small.patience, small.epochs) == (16, 0, 3)
    assert small.given == ("batch_size",)
    again = HParams.from_config(small.to_dict())  # training.json's resolved values reload as set
    assert (again.recipe, again.batch_size, again.patience) == ("small", 16, 0)
    assert again.for_train_size(10**6).batch_size == 16


def test_a_recipe_can_be_forced_either_way_and_a_bad_one_is_refused():
    assert _hp(recipe="small").for_train_size(10**6).batch_size == 32
    assert _hp(recipe="large").for_train_size(10).patience == 8
    with pytest.raises(ValueError, match="recipe='tiny'"):
        _hp(recipe="tiny")


@pytest.mark.slow  # ~50 s of Keras under load: the resolution above is the unit
def test_fit_trains_a_small_set_with_the_small_recipe(caplog):
    import tensorflow as tf

    from medflow.components.models.training import fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 28, 28, 1)).astype("float32")
    y = (rng.random(40) < 0.5).astype("int64")
    data = tf.data.Dataset.from_tensor_slices((x, y))
    hp = _hp(epochs=1, width=4)
    with caplog.at_level(logging.INFO, logger="medflow.components.models.training"):
        _, history, _ = fit(hp, data, data.take(8))
    assert "recipe small for 40 training images" in caplog.text
    assert "'batch_size': 32" in caplog.text and len(history["loss"]) == 1
