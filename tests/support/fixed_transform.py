"""A stand-in for ``tft.TFTransformOutput`` with a fixed z-score, for exporting small models
in tests without running the Transform component."""

from __future__ import annotations


class FixedTransform:
    """The two methods of ``tft.TFTransformOutput`` that the exports use: the raw ``image``
    feature (encoded bytes), decoded to ``shape`` (H, W, C) and scaled to
    ``(image - offset) / scale``."""

    def __init__(self, shape: tuple[int, int, int], offset: float, scale: float):
        self.shape, self.offset, self.scale = tuple(shape), offset, scale

    def raw_feature_spec(self):
        import tensorflow as tf

        return {"image": tf.io.FixedLenFeature([], tf.string)}

    def transform_features_layer(self):
        import tensorflow as tf

        from medflow.components.models.preprocessing import decode_image

        shape, offset, scale = self.shape, self.offset, self.scale

        class ZScore(tf.Module):
            def __call__(self, inputs):
                return {"image": (decode_image(inputs["image"], shape) - offset) / scale}

        return ZScore()
