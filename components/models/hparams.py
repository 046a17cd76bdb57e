"""Trainer hyperparameters: one typed object built from the Trainer's ``custom_config``."""

from __future__ import annotations

import dataclasses
from typing import Any

BACKBONES = ("auto", "small_cnn", "resnet18", "resnet50", "densenet121", "efficientnetb0")
# Backbones built from keras.applications (need 3 channels; 1-channel input is repeated).
APPLICATIONS = {
    "resnet50": "ResNet50",
    "densenet121": "DenseNet121",
    "efficientnetb0": "EfficientNetB0",
}
# The recipe ``recipe=auto`` gives a training set of fewer than SMALL_TRAIN images (after the
# early-stopping holdout): batch 32, no early stopping (BreastMNIST's ablation, BENCHMARKS.md
# "Issue 21"); larger sets keep the field defaults (PneumoniaMNIST's, make run's).
SMALL_TRAIN = 1000
SMALL_RECIPE = {"batch_size": 32, "patience": 0}
RECIPES = ("auto", "small", "large")


def input_shape(config: dict[str, Any] | None) -> tuple[int, int, int]:
    """(rows, cols, channels) of the model input from a Transform or Trainer custom_config:
    the one parser of the shape every task's modules read. ``image_size`` (int or [rows,
    cols]) is required, as PipelineConfig always writes it; ``channels`` defaults to 1."""
    config = config or {}
    if "image_size" not in config:
        raise ValueError(
            "custom_config has no image_size: build it with PipelineConfig.transform_config() "
            "or trainer_config()"
        )
    size = config["image_size"]
    rows, cols = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    channels = int(config.get("channels", 1))
    if rows <= 0 or cols <= 0 or channels not in (1, 3):
        raise ValueError(
            f"custom_config image_size={size!r} channels={channels!r}: need positive sizes "
            "and 1 or 3 channels"
        )
    return rows, cols, channels


def shape_fields(config: dict[str, Any] | None) -> dict[str, Any]:
    """``image_size`` (rows, cols) and ``channels`` of a hyperparameter dataclass."""
    rows, cols, channels = input_shape(config)
    return {"image_size": (rows, cols), "channels": channels}


class ImageInput:
    """What a task's hyperparameter dataclass with ``image_size`` (rows, cols) and
    ``channels`` shares: the input shape, the JSON form and the known keys of a config."""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        return out

    @classmethod
    def known_values(cls, config: dict[str, Any] | None) -> dict[str, Any]:
        """The dataclass's fields found in a Trainer custom_config, and the input shape."""
        known = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in dict(config or {}).items() if k in known} | shape_fields(config)


@dataclasses.dataclass(frozen=True)
class HParams:
    """What the classification Trainer needs besides the data.

    Attributes:
        image_size: (rows, cols) of the model input (same as the Transform's).
        channels: 1 or 3.
        labels: class names; their count is the number of classes.
        backbone: one of :data:`BACKBONES`; ``auto`` picks ``small_cnn`` up to 64 px and
            ``resnet18`` above.
        pretrained_weights: local weights file for a keras.applications backbone
            (``include_top=False``); empty trains from scratch. Nothing is downloaded.
        width: channels of the first stage (small_cnn / resnet18).
        epochs: maximum epochs (early stopping may end sooner).
        batch_size: per-replica batch size.
        learning_rate: peak Adam learning rate (cosine decay to 0 over ``epochs``).
        weight_decay: AdamW weight decay.
        dropout: before the classifier.
        patience: epochs without validation-AUC improvement before stopping (0 = off).
        class_weight: ``balanced`` (inverse class frequency) or ``none``.
        augment: random flips/shifts/rotations while training.
        validation_fraction: share of the train split held out for early stopping;
            0 uses the eval split instead.
        mixed_precision: mixed_float16 compute when a GPU is visible.
        seed: random seed for weights, shuffling and augmentation.
        init: a pushed model's encoder weights initialise the backbone (a version folder,
            its model folder or a Trainer's Model artifact; components.models.encoder_init);
            empty: random initialisation.
        init_frozen_epochs: with ``init``, epochs with the backbone frozen before all layers
            train.
        recipe: ``small`` trains with :data:`SMALL_RECIPE` in place of those fields'
            defaults, ``large`` with the defaults, ``auto`` picks by training-set size
            (:meth:`for_train_size`); a field set in the config is never replaced.
        given: the :data:`SMALL_RECIPE` fields the config set (filled by ``from_config``).
    """

    image_size: tuple[int, int] = (28, 28)
    channels: int = 1
    labels: tuple[str, ...] = ("0", "1")
    backbone: str = "auto"
    pretrained_weights: str = ""
    width: int = 16
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    dropout: float = 0.3
    patience: int = 8
    class_weight: str = "balanced"
    augment: bool = True
    validation_fraction: float = 0.1
    mixed_precision: bool = False
    seed: int = 42
    init: str = ""
    init_frozen_epochs: int = 0
    recipe: str = "auto"
    given: tuple[str, ...] = ()

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.channels)

    def resolved_backbone(self) -> str:
        if self.backbone != "auto":
            return self.backbone
        return "small_cnn" if max(self.image_size) <= 64 else "resnet18"

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["image_size"] = list(self.image_size)
        out["labels"] = list(self.labels)
        out["given"] = list(self.given)
        return out

    def for_train_size(self, n_train: int) -> HParams:
        """What ``fit`` trains ``n_train`` images with: ``recipe`` resolved to small or
        large, :data:`SMALL_RECIPE` in place of the defaults for small (fields in ``given``
        kept)."""
        small = self.recipe == "small" or (self.recipe == "auto" and n_train < SMALL_TRAIN)
        if not small:
            return dataclasses.replace(self, recipe="large")
        changes = {k: v for k, v in SMALL_RECIPE.items() if k not in self.given}
        return dataclasses.replace(self, recipe="small", **changes)

    @classmethod
    def from_config(cls, config: dict[str, Any] | None) -> HParams:
        """Build from a custom_config dict; unknown keys are ignored, bad values raise."""
        config = dict(config or {})
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in config.items() if k in known} | shape_fields(config)
        if "labels" in kwargs:
            kwargs["labels"] = tuple(str(x) for x in kwargs["labels"])
        kwargs["given"] = tuple(
            sorted(set(kwargs.get("given", ())) | (SMALL_RECIPE.keys() & config.keys()))
        )
        hp = cls(**kwargs)
        hp.validate()
        return hp

    def validate(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone={self.backbone!r}: choose one of {BACKBONES}")
        if self.n_classes < 2:
            raise ValueError(f"labels={list(self.labels)}: need at least 2 classes")
        if self.channels not in (1, 3):
            raise ValueError(f"channels={self.channels}: must be 1 or 3")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe={self.recipe!r}: choose one of {RECIPES}")
        if self.class_weight not in ("balanced", "none"):
            raise ValueError(f"class_weight={self.class_weight!r}: 'balanced' or 'none'")
        if not 0 <= self.validation_fraction < 0.5:
            raise ValueError(f"validation_fraction={self.validation_fraction}: use 0..0.5")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if self.init and self.resolved_backbone() not in ("small_cnn", "resnet18"):
            raise ValueError(
                f"init is set but backbone={self.backbone!r}: use small_cnn or resnet18"
            )
        if self.pretrained_weights and self.backbone not in APPLICATIONS:
            raise ValueError(
                f"pretrained_weights is set but backbone={self.backbone!r}; use one of "
                f"{sorted(APPLICATIONS)} for transfer learning"
            )
