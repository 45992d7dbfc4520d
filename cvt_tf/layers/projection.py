"""The convolutional projections of the token grid before q, k and v: `dw_bn`, `avg` or `linear`.

`dw_bn` is a depthwise conv and BatchNorm (folded into one conv at inference); `avg` pools as torch does.
"""

import keras
from keras import layers, ops

from cvt_spec.stages import ceil_pooled_size
from cvt_tf.layers.common import BATCH_NORM_EPSILON, BATCH_NORM_MOMENTUM, ConfiguredLayer, torch_conv_initializer


def _as_int(flag):
    """0 or 1 from a boolean: Python's for static sizes, a cast for sizes known when the graph runs."""
    return int(flag) if isinstance(flag, bool) else ops.cast(flag, "int32")


@keras.saving.register_keras_serializable(package="cvt_tf")
class TorchAvgPool2D(ConfiguredLayer):
    """torch AvgPool2d(ceil_mode=True, count_include_pad=True) on channels_last input.

    The divisor counts the zero padding but not the ceil-mode overhang past it, so border windows
    divide by less than kernel**2; Keras pooling alone cannot express that, hence the rescale.

    Args:
        kernel_size: pooling window (KERNEL_QKV).
        stride: window stride (STRIDE_KV).
        padding: zero padding on every side (PADDING_KV), at most half the kernel.
    """

    def __init__(self, kernel_size: int, stride: int, padding: int, **kwargs):
        super().__init__(**kwargs)
        self.keep(kernel_size=kernel_size, stride=stride, padding=padding)
        self.pool = layers.AveragePooling2D(kernel_size, strides=stride, padding="valid", name="pool",
                                            dtype=self.dtype_policy)

    def _axis(self, n):
        k, s, p = self.kernel_size, self.stride, self.padding
        out = ceil_pooled_size(n, k, s, p, as_int=_as_int)
        right_padding = ops.maximum((out - 1) * s + k - n - p, 0)
        starts = ops.arange(out) * s - p
        window = ops.minimum(starts + k, n + p) - starts
        return out, right_padding, ops.cast(window, "float32")

    def call(self, x):
        _, height, width, _ = ops.shape(x)
        out_h, pad_h, window_h = self._axis(height)
        out_w, pad_w, window_w = self._axis(width)
        p = self.padding
        padded = ops.pad(x, [[0, 0], [p, pad_h], [p, pad_w], [0, 0]])
        mean = self.pool(padded)[:, :out_h, :out_w, :]
        rescale = float(self.kernel_size**2) / (window_h[:, None] * window_w[None, :])
        return mean * ops.cast(rescale[None, :, :, None], mean.dtype)


@keras.saving.register_keras_serializable(package="cvt_tf")
class ConvProjection(ConfiguredLayer):
    """Projection of the token grid before q, k or v.

    Args:
        method: `dw_bn` (depthwise conv + BatchNorm), `avg` (torch's ceil-mode average pooling) or
            `linear` (the grid as it is).
        kernel_size: conv or pooling window (KERNEL_QKV).
        stride: STRIDE_Q or STRIDE_KV.
        padding: PADDING_Q or PADDING_KV.
        synchronized_batch_norm: `dw_bn`'s BatchNorm computes batch statistics over every replica of a
            `tf.distribute` strategy (Keras `synchronized=True`), so training does not depend on the split.
    """

    def __init__(self, method: str, kernel_size: int, stride: int, padding: int,
                 synchronized_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.keep(method=method, kernel_size=kernel_size, stride=stride, padding=padding,
                  synchronized_batch_norm=synchronized_batch_norm)
        policy = {"dtype": self.dtype_policy}
        if method == "dw_bn":
            self.pad = layers.ZeroPadding2D(padding, name="pad", **policy)
            self.conv = layers.DepthwiseConv2D(
                kernel_size, strides=stride, padding="valid", use_bias=False,
                depthwise_initializer=torch_conv_initializer(), name="conv", **policy,
            )
            self.bn = layers.BatchNormalization(
                epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, synchronized=synchronized_batch_norm,
                name="bn", **policy,
            )
        elif method == "avg":
            self.avg = TorchAvgPool2D(kernel_size, stride, padding, name="avg", **policy)

    def build(self, input_shape):
        if self.method == "dw_bn":
            grid_shape = (None, None, None, input_shape[-1])
            self.conv.build(grid_shape)
            self.bn.build(grid_shape)

    def call(self, grid, training=None):
        if self.method == "dw_bn":
            if training:
                return self.bn(self.conv(self.pad(grid)), training=training)
            return self._folded_dw_bn(self.pad(grid))
        if self.method == "avg":
            return self.avg(grid)
        return grid

    def _folded_dw_bn(self, padded):
        """Inference: BatchNorm's moving statistics folded into the depthwise kernel and a bias.

        Computed from the live variables on every call (per-channel vectors, a k*k*C kernel), so it
        follows any change of the weights; one fused conv+bias instead of conv, then BatchNorm.
        """
        bn = self.bn
        scale = bn.gamma * ops.rsqrt(bn.moving_variance + bn.epsilon)
        kernel = self.conv.kernel * scale[:, None]
        bias = bn.beta - bn.moving_mean * scale
        dtype = padded.dtype
        conv = ops.depthwise_conv(padded, ops.cast(kernel, dtype), strides=self.stride, padding="valid")
        return conv + ops.cast(bias, dtype)
