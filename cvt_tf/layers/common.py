"""What every CvT layer shares: torch's norm settings, initializers, LayerNorm, QuickGELU and token helpers.

Tensors are channels_last; token sequences are (batch, tokens, channels) with the cls token first.
"""

import itertools

import keras
from keras import initializers, layers, ops

from cvt_tf.layers.options import InferenceOptions

LAYER_NORM_EPSILON = 1e-5
BATCH_NORM_EPSILON = 1e-5
# torch BatchNorm momentum 0.1 weights the new batch; Keras momentum weights the old average.
BATCH_NORM_MOMENTUM = 0.9
QUICK_GELU_SLOPE = 1.702


def quick_gelu(x):
    """The activation of the official weights: x * sigmoid(1.702 x)."""
    return x * ops.sigmoid(QUICK_GELU_SLOPE * x)


def torch_conv_initializer() -> initializers.Initializer:
    """torch's default Conv2d init, kaiming_uniform(a=sqrt(5)): U(+-sqrt(1/fan_in))."""
    return initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def trunc_normal_initializer() -> initializers.Initializer:
    """timm's trunc_normal_(std=0.02): cut at +-2 absolute, i.e. 100 std, so a plain normal.

    Keras' TruncatedNormal cuts at 2 std and would give std 0.0176 instead of 0.02.
    """
    return initializers.RandomNormal(stddev=0.02)


def linear_initializer(init: str) -> initializers.Initializer:
    """Dense kernel init of the SPEC INIT option."""
    if init == "xavier":
        return initializers.GlorotUniform()
    return trunc_normal_initializer()


class ConfiguredLayer(layers.Layer):
    """A layer that keeps each constructor argument as an attribute of its name, and as its config."""

    def keep(self, **arguments) -> None:
        for name, value in arguments.items():
            setattr(self, name, value)
        self._argument_names = (*getattr(self, "_argument_names", ()), *arguments)

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in self._argument_names})
        return config


@keras.saving.register_keras_serializable(package="cvt_tf")
class LayerNorm(layers.LayerNormalization):
    """torch's LayerNorm over the channels (last axis): `(x - mean) / sqrt(var + eps) * gamma + beta`.

    The variables of Keras' LayerNormalization, computed in this order: one full-size multiply and
    add fewer than Keras' `x * inv + (beta - mean * inv)` (see README "Speed").
    """

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean = ops.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        normalized = centered * ops.rsqrt(variance + self.epsilon)
        return ops.cast(normalized * self.gamma + self.beta, self.compute_dtype)


def layer_norm(name: str) -> LayerNorm:
    """LayerNorm with torch's eps; float32 even under a mixed precision policy, as torch autocast keeps it."""
    return LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype="float32", name=name)


def reshape_batch(x, tail: tuple, batch_of=None):
    """`x` reshaped to (batch, *tail), the batch being that of `batch_of` (default: `x`).

    Where every entry of `tail` is a known size, the batch is given as -1: a graph with an open batch
    then computes no shape (in TFLite, Shape ops split the XNNPack delegate into dozens of pieces).
    """
    if all(isinstance(size, int) and size >= 0 for size in tail):
        return ops.reshape(x, (-1, *tail))
    return ops.reshape(x, (ops.shape(x if batch_of is None else batch_of)[0], *tail))


def flatten_grid(grid):
    """(batch, h, w, c) -> (batch, h*w, c)."""
    _, height, width, channels = grid.shape
    tokens = height * width if height is not None and width is not None else -1
    return reshape_batch(grid, (tokens, channels))


def split_evenly(x, parts: int, axis: int) -> list:
    """`x` cut along `axis` into `parts` consecutive slices of (nearly) equal length."""
    n = ops.shape(x)[axis]
    bounds = [n * i // parts for i in range(parts + 1)]
    leading = (slice(None),) * axis
    return [x[leading + (slice(start, end),)] for start, end in itertools.pairwise(bounds)]


def token_dense(dense: layers.Dense, x, options: InferenceOptions, kernel_scale: float | None = None,
                bias_scale: float | None = None):
    """`dense` on (batch, tokens, c) as one 2-D matmul over the tokens of the whole batch.

    The bias is added to the matmul's 2-D rows (`options.dense_bias_before_reshape`), which TensorFlow's
    oneDNN fuses into the matmul, or to its output reshaped back to (batch, tokens, units), which
    OpenVINO fuses into the matmul together with the activation after it. `kernel_scale` multiplies
    the kernel and, unless `bias_scale` is given, the bias: the output is scaled at the cost of a
    weight-sized multiply (free once the weights are frozen).
    """
    tokens, bias_before_reshape = ops.shape(x)[1], options.dense_bias_before_reshape
    flat = ops.reshape(x, (-1, x.shape[-1]))
    if kernel_scale is None and bias_before_reshape:
        return reshape_batch(dense(flat), (tokens, dense.units), batch_of=x)
    kernel = ops.cast(dense.kernel, flat.dtype)
    y = ops.matmul(flat, kernel if kernel_scale is None else kernel * kernel_scale)
    if not bias_before_reshape:
        y = reshape_batch(y, (tokens, dense.units), batch_of=x)
    if dense.bias is not None:
        bias_scale = kernel_scale if bias_scale is None else bias_scale
        bias = ops.cast(dense.bias, flat.dtype)
        y = y + (bias if bias_scale is None else bias * bias_scale)
    return reshape_batch(y, (tokens, dense.units), batch_of=x) if bias_before_reshape else y
