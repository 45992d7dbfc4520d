"""The convolutional token embedding at the start of every stage: overlapping patches, then LayerNorm.

Symmetric zero padding and a `valid` conv, as torch's `Conv2d(padding=p)`; Keras `same` would differ.
"""

import keras
from keras import layers

from cvt_tf.layers.common import ConfiguredLayer, layer_norm, torch_conv_initializer


@keras.saving.register_keras_serializable(package="cvt_tf")
class ConvEmbedding(ConfiguredLayer):
    """Overlapping patch embedding: symmetric zero padding, strided conv, LayerNorm.

    Args:
        dim: output channels (the stage's DIM_EMBED).
        patch_size: conv kernel size (PATCH_SIZE).
        stride: conv stride (PATCH_STRIDE).
        padding: zero padding on every side (PATCH_PADDING).
    """

    def __init__(self, dim: int, patch_size: int, stride: int, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.keep(dim=dim, patch_size=patch_size, stride=stride, padding=padding)
        self.pad = layers.ZeroPadding2D(padding, name="pad", dtype=self.dtype_policy)
        self.proj = layers.Conv2D(
            dim, patch_size, strides=stride, padding="valid",
            kernel_initializer=torch_conv_initializer(), name="proj", dtype=self.dtype_policy,
        )
        self.norm = layer_norm("norm")

    def build(self, input_shape):
        self.proj.build((None, None, None, input_shape[-1]))
        self.norm.build((None, None, None, self.dim))

    def call(self, x):
        return self.norm(self.proj(self.pad(x)))
