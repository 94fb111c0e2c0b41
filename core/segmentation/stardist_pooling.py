"""Anti-aliased pooling for StarDist 2D (Keras), the counterpart of :func:`core.segmentation.unet.blur_max_pool`.

StarDist's network down-samples with 2×2 max-pooling (the grid pooling of ``StarDist2D._build`` and the
U-Net's down path in ``csbdeep.internals.blocks.unet_block``), which makes its output change under a one-pixel
shift of the input more than the image does (Zhang, "Making convolutional networks shift-invariant again",
ICML 2019).  ``blurmax`` replaces each of those layers by a 2×2 max at stride 1 followed by a [1 2 1]² binomial
blur at stride 2.  Neither has parameters, so a max-pooling model's weights load unchanged into a blurmax one
(a fine-tune start point), and the choice is stored in the model's ``biocodec.json`` (``"pooling"``), not in
StarDist's ``config.json``.

    with stardist_pooling("blurmax"):
        model = StarDist2D(config, name=..., basedir=...)   # the network is built inside the context
"""
from __future__ import annotations

import contextlib

#: pooling of the StarDist network: StarDist's own 2×2 max-pooling, or the anti-aliased one.
POOLINGS = ("max", "blurmax")


def blur_max_layer_class():
    """The Keras layer class ``BlurMaxPool2D`` (built lazily: importing this module needs no TensorFlow)."""
    import tensorflow as tf
    from tensorflow import keras

    class BlurMaxPool2D(keras.layers.Layer):
        """(N, H, W, C) → (N, H/2, W/2, C): 2×2 max at stride 1 (edge-replicated to keep H × W), then a
        normalised [1 2 1]ᵀ[1 2 1] blur (reflect-padded) at stride 2, per channel.  H and W must be even."""

        def __init__(self, pool_size=(2, 2), **kwargs):
            kwargs.pop("strides", None)
            kwargs.pop("padding", None)
            super().__init__(**kwargs)
            if tuple(int(p) for p in pool_size) != (2, 2):
                raise ValueError(f"blurmax pooling supports pool size (2, 2) only, got {pool_size}")

        def call(self, x):
            x = tf.nn.max_pool2d(x, ksize=2, strides=1, padding="VALID")
            x = tf.pad(x, [[0, 0], [0, 1], [0, 1], [0, 0]], mode="SYMMETRIC")
            x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]], mode="REFLECT")
            taps = tf.constant([1.0, 2.0, 1.0], dtype=x.dtype)
            kernel = (taps[:, None] * taps[None, :] / 16.0)[:, :, None, None]
            kernel = tf.tile(kernel, [1, 1, int(x.shape[-1]), 1])
            return tf.nn.depthwise_conv2d(x, kernel, strides=[1, 2, 2, 1], padding="VALID")

        def compute_output_shape(self, input_shape):
            n, h, w, c = input_shape
            return (n, None if h is None else h // 2, None if w is None else w // 2, c)

    return BlurMaxPool2D


@contextlib.contextmanager
def stardist_pooling(kind: str = "max"):
    """Build StarDist 2D networks inside this context with pooling ``kind`` (:data:`POOLINGS`)."""
    if kind not in POOLINGS:
        raise ValueError(f"unknown pooling {kind!r} ({', '.join(POOLINGS)})")
    if kind == "max":
        yield
        return
    import csbdeep.internals.blocks as blocks
    import stardist.models.model2d as model2d

    layer = blur_max_layer_class()
    saved = (blocks.MaxPooling2D, model2d.MaxPooling2D)
    blocks.MaxPooling2D = model2d.MaxPooling2D = layer
    try:
        yield
    finally:
        blocks.MaxPooling2D, model2d.MaxPooling2D = saved
