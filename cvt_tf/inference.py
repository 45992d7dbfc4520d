"""The default inference path: a `tf.function` with a fixed input signature around the model.

What the bench times as `tf-function`, what TFLite conversion starts from.
"""

import tensorflow as tf


def inference_function(model, input_shape, jit_compile=False):
    """A `tf.function` computing `model(images, training=False)` for one fixed input shape.

    Args:
        model: a built `cvt_tf.CvT`.
        input_shape: (batch, H, W, C), or (batch, C, H, W) for a channels_first model; batch may be None.
        jit_compile: compile the graph with XLA.
    """
    signature = [tf.TensorSpec(tuple(input_shape), tf.float32, name="images")]

    @tf.function(input_signature=signature, jit_compile=jit_compile, reduce_retracing=False)
    def infer(images):
        return model(images, training=False)

    return infer
