"""The official evaluation transform as a Keras layer, in TensorFlow ops (the TensorFlow backend only).

It gives the tensor of `cvt_tf.preprocess_input` exactly, inside a model that takes raw uint8 images.
"""

import keras
import numpy as np
from keras import ops

from cvt_tf.pil_resize import resize_bicubic_8bit
from cvt_tf.preprocessing import EvalTransform, normalize_pixels


@keras.saving.register_keras_serializable(package="cvt_tf")
class EvalPreprocessing(keras.layers.Layer):
    """The official evaluation transform as a Keras layer: (batch, H, W, 3) pixels 0-255 -> model input.

    Runs PIL's 8-bit bicubic arithmetic in TensorFlow ops (`cvt_tf.pil_resize`), so it gives the
    tensor of `preprocess_input` exactly; inputs hold integer values 0..255 (uint8 or any number type).
    Every image of a batch has the same size; sizes may be unknown until the graph runs.

    Args:
        resolution: the model's input size, e.g. 224 or 384, or (height, width).
        center_crop: None follows the official experiments (`official_center_crop`).
    """

    def __init__(self, resolution=224, center_crop=None, **kwargs):
        super().__init__(**kwargs)
        self.resolution = resolution
        self.center_crop = center_crop
        self.transform = EvalTransform.official(resolution, center_crop)
        # `normalize_pixels` of every (pixel value, channel), flattened: a graph may rewrite arithmetic
        # (a division by a constant into a product, one ulp off); a table lookup stays exact.
        levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
        self.normalized_levels = normalize_pixels(levels).reshape(-1)

    def call(self, images):
        shape = ops.shape(images)
        new_height, new_width = self.transform.resized_size(shape[1], shape[2], minimum=ops.minimum)
        pixels = resize_bicubic_8bit(images, new_height, new_width)
        if self.transform.center_crop:
            top, left = self.transform.crop_offsets(new_height, new_width)
            pixels = pixels[:, top : top + self.transform.height, left : left + self.transform.width, :]
        index = ops.cast(pixels, "int32") * 3 + ops.arange(3, dtype="int32")
        return ops.take(self.normalized_levels, index)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.transform.height, self.transform.width, 3)

    def get_config(self):
        config = super().get_config()
        config.update(resolution=self.resolution, center_crop=self.center_crop)
        return config
