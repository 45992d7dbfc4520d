"""The default inference path: a `tf.function` with a fixed input signature around the model.

What the bench times as `tf-function`, what TFLite conversion starts from.
"""

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from cvt_tf.layers import tracing_for_frozen_weights


def inference_function(model, input_shape, jit_compile=False, freeze=True):
    """A `tf.function` computing `model(images, training=False)` for one fixed input shape.

    Args:
        model: a built `cvt_tf.CvT`.
        input_shape: (batch, H, W, C), or (batch, C, H, W) for a channels_first model; batch may be None.
        jit_compile: compile the graph with XLA.
        freeze: snapshot the weights as constants.
    """
    signature = [tf.TensorSpec(tuple(input_shape), tf.float32, name="images")]

    def call(images):
        return model(images, training=False)

    if not freeze:
        return tf.function(call, input_signature=signature, jit_compile=jit_compile, reduce_retracing=False)

    def call_frozen(images):
        with tracing_for_frozen_weights():
            return model(images, training=False)

    frozen = convert_variables_to_constants_v2(
        tf.function(call_frozen, input_signature=signature).get_concrete_function()
    )
    return tf.function(lambda images: frozen(images)[0], input_signature=signature, jit_compile=jit_compile)
