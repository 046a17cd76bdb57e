"""Registration building blocks in TensorFlow ops (exportable in a SavedModel).

Displacement fields are float32 ``[batch, rows, cols, 2]`` in pixels of the model grid,
channel 0 the row (y) offset and channel 1 the column (x) offset. Warping ``moving`` with a
field ``u`` gives ``warped[y, x] = moving[y + u_y, x + u_x]`` (bilinear; positions outside
the image take the nearest border pixel), so an integer field shifts the image exactly.
:func:`warp` also takes volumes ([batch, slices, rows, cols, ch] with a 3-channel field:
trilinear); the rest of this module (integration, Jacobian, the Keras layers' use in the
model) is 2D.
"""

from __future__ import annotations

import itertools

import keras
import tensorflow as tf

# Scaling and squaring: the velocity field is divided by 2**steps and composed steps times.
DEFAULT_INTEGRATION_STEPS = 7


def warp(image: tf.Tensor, flow: tf.Tensor) -> tf.Tensor:
    """Bilinear (2D) or trilinear (3D) resampling of ``image`` [batch, *grid, ch] at the
    grid + ``flow`` [batch, *grid, ndim] (offsets in voxels along the grid's axes, in order);
    positions outside the grid take the nearest border voxel."""
    image = tf.convert_to_tensor(image)
    flow = tf.cast(flow, image.dtype)
    ndim = int(flow.shape[-1])
    shape = tf.shape(image)
    batch, ch = shape[0], shape[-1]
    sizes = [shape[1 + i] for i in range(ndim)]
    grids = tf.meshgrid(*[tf.range(n) for n in sizes], indexing="ij")
    flow = tf.where(tf.math.is_finite(flow), flow, tf.zeros_like(flow))  # never index with NaN
    lows, highs, weights = [], [], []
    for i, (grid, n) in enumerate(zip(grids, sizes, strict=True)):
        top = tf.cast(n - 1, image.dtype)
        pos = tf.clip_by_value(tf.cast(grid, image.dtype)[None] + flow[..., i], 0.0, top)
        low = tf.floor(pos)
        weights.append((pos - low)[..., None])
        lows.append(tf.cast(low, tf.int32))
        highs.append(tf.minimum(lows[-1] + 1, n - 1))
    strides = [tf.constant(1, tf.int32)]
    for n in reversed(sizes[1:]):
        strides.insert(0, strides[0] * n)
    flat = tf.reshape(image, [batch, -1, ch])
    out = tf.zeros_like(image)
    for corner in itertools.product((0, 1), repeat=ndim):
        index = sum((highs if c else lows)[i] * strides[i] for i, c in enumerate(corner))
        weight = 1.0
        for i, c in enumerate(corner):
            weight = weight * (weights[i] if c else 1.0 - weights[i])
        values = tf.gather(flat, tf.reshape(index, [batch, -1]), batch_dims=1)
        out += tf.reshape(values, shape) * weight
    return out


def integrate(velocity: tf.Tensor, steps: int = DEFAULT_INTEGRATION_STEPS) -> tf.Tensor:
    """Displacement of the flow of a stationary ``velocity`` field over unit time, by
    scaling and squaring (``steps`` compositions): a diffeomorphism for smooth fields."""
    field = velocity / (2.0**steps)
    for _ in range(steps):
        field = field + warp(field, field)
    return field


def _gradient(f: tf.Tensor, axis: int) -> tf.Tensor:
    """d f / d axis: central differences inside, one-sided at both ends (as np.gradient)."""
    n = tf.shape(f)[axis]
    take = lambda lo, hi: tf.gather(f, tf.range(lo, hi), axis=axis)  # noqa: E731
    return tf.concat(
        [
            take(1, 2) - take(0, 1),
            (take(2, n) - take(0, n - 2)) / 2.0,
            take(n - 1, n) - take(n - 2, n - 1),
        ],
        axis=axis,
    )


def jacobian_determinant(flow: tf.Tensor) -> tf.Tensor:
    """Determinant of the Jacobian of ``x -> x + flow(x)`` [batch, rows, cols]."""
    flow = tf.convert_to_tensor(flow, tf.float32)
    dy, dx = _gradient(flow, 1), _gradient(flow, 2)
    return (1.0 + dy[..., 0]) * (1.0 + dx[..., 1]) - dx[..., 0] * dy[..., 1]


def folding_fraction(flow: tf.Tensor) -> tf.Tensor:
    """Share of pixels per image [batch] whose Jacobian determinant is <= 0 (folding); a
    non-finite determinant (a diverged field) counts as folding too."""
    det = jacobian_determinant(flow)
    return tf.reduce_mean(tf.cast(tf.logical_not(det > 0.0), tf.float32), axis=[1, 2])


def compose(first: tf.Tensor, second: tf.Tensor) -> tf.Tensor:
    """The field of warping by ``first`` and then by ``second``: ``warp(warp(m, first),
    second) == warp(m, compose(first, second))`` (up to interpolation), i.e.
    ``second(x) + first(x + second(x))``."""
    return second + warp(first, second)


def affine_flow(theta: tf.Tensor, rows: int, cols: int) -> tf.Tensor:
    """Displacement field [batch, rows, cols, 2] of affine parameters ``theta`` [batch, 6].

    In coordinates centred on the image and scaled to [-1, 1] along each axis (``q``), the
    sampled position is ``(I + M) q + t`` with ``M = [[t0, t1], [t3, t4]]`` (row, col
    order) and ``t = (t2, t5)``: zeros are the identity, ``t2 = 2 / (rows - 1)`` a shift of
    one row, ``t0 = t4 = s - 1`` a zoom by ``1 / s`` about the centre."""
    theta = tf.reshape(tf.cast(theta, tf.float32), [-1, 2, 3])
    half = tf.constant([(rows - 1) / 2.0, (cols - 1) / 2.0], tf.float32)
    qy, qx = tf.meshgrid(tf.linspace(-1.0, 1.0, rows), tf.linspace(-1.0, 1.0, cols), indexing="ij")
    q = tf.stack([qy, qx, tf.ones_like(qy)], axis=-1)  # [rows, cols, 3]
    flow = tf.einsum("hwk,bjk->bhwj", q, theta)  # normalised offsets
    return flow * half


class AffineFlow(keras.layers.Layer):
    """Affine parameters [batch, 6] -> displacement field on a ``rows`` x ``cols`` grid
    (:func:`affine_flow`)."""

    def __init__(self, rows: int, cols: int, **kwargs):
        super().__init__(**kwargs)
        self.rows, self.cols = int(rows), int(cols)

    def call(self, theta):
        return affine_flow(theta, self.rows, self.cols)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.rows, self.cols, 2)

    def get_config(self):
        return {**super().get_config(), "rows": self.rows, "cols": self.cols}


class Compose(keras.layers.Layer):
    """``[first, second] -> compose(first, second)`` (:func:`compose`)."""

    def call(self, inputs):
        return compose(*inputs)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


class SpatialTransformer(keras.layers.Layer):
    """``[image, flow] -> warp(image, flow)`` as a Keras 3 layer."""

    def call(self, inputs):
        image, flow = inputs
        return warp(image, flow)

    def compute_output_shape(self, input_shape):
        return input_shape[0]


class VecInt(keras.layers.Layer):
    """Velocity field -> displacement by scaling and squaring (:func:`integrate`)."""

    def __init__(self, steps: int = DEFAULT_INTEGRATION_STEPS, **kwargs):
        super().__init__(**kwargs)
        self.steps = steps

    def call(self, velocity):
        return integrate(velocity, self.steps)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "steps": self.steps}
