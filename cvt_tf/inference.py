"""The fast inference path: a `tf.function` with a fixed input signature over a frozen weight snapshot.

What the bench times as `tf-function`.
"""

import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

from cvt_tf.layers.options import DEFAULT_INFERENCE_STREAMS, InferenceOptions, check_count
from cvt_tf.threads import warn_on_default_threads

# Freezing copies the weights into the graph several times: cvt-w24 (277M weights) took 218 s and
# 12.5 GB of RAM (2 cores), so larger models keep live variables unless asked.
FREEZE_MAX_WEIGHTS = 64_000_000


def inference_function(model, input_shape: tuple, jit_compile: bool = False, freeze: bool | str = "auto",
                       streams: int = DEFAULT_INFERENCE_STREAMS) -> tf.types.experimental.GenericFunction:
    """A `tf.function` computing `model(images, training=False)` for one fixed input shape.

    Frozen, the weights are a snapshot taken now: BatchNorm, the attention scale and QuickGELU's
    slope are folded into them once, by constant folding. Build the function again after changing
    the weights (training, `load_weights`); the model itself always computes with its live weights.

    Args:
        model: a built `cvt_tf.CvT`.
        input_shape: (batch, H, W, C), or (batch, C, H, W) for a channels_first model; batch may be None.
        jit_compile: compile the graph with XLA.
        freeze: True, False, or "auto": freeze models of at most `FREEZE_MAX_WEIGHTS` weights.
        streams: independent parts of each call run side by side (`cvt_tf.layers.InferenceOptions`);
            fastest with one per core and `cvt_tf.set_cpu_threads(cores)`. 1 computes in one piece.
    """
    check_count("streams", streams)
    warn_on_default_threads()
    signature = [tf.TensorSpec(tuple(input_shape), tf.float32, name="images")]
    if freeze == "auto":
        freeze = model.count_params() <= FREEZE_MAX_WEIGHTS
    options = InferenceOptions(streams=streams, frozen_weights=bool(freeze))

    def call(images):
        return model(images, training=False, options=options)

    if freeze:
        frozen = convert_variables_to_constants_v2(tf.function(call, input_signature=signature).get_concrete_function())
        return tf.function(lambda images: frozen(images)[0], input_signature=signature, jit_compile=jit_compile)
    return tf.function(call, input_signature=signature, jit_compile=jit_compile, reduce_retracing=False)
