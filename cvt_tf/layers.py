"""Keras 3 layers of CvT: convolutional token embedding, convolutional projections, attention, block.

Tensors are channels_last; token sequences are (batch, tokens, channels) with the cls token first.
"""

import contextlib
import threading

import keras
from keras import initializers, layers, ops

LAYER_NORM_EPSILON = 1e-5
BATCH_NORM_EPSILON = 1e-5
# torch BatchNorm momentum 0.1 weights the new batch; Keras momentum weights the old average.
BATCH_NORM_MOMENTUM = 0.9


QUICK_GELU_SLOPE = 1.702

_calls = threading.local()  # how the layers run in the current thread; see the two context managers


@contextlib.contextmanager
def _setting(name, value):
    previous = getattr(_calls, name, None)
    setattr(_calls, name, value)
    try:
        yield
    finally:
        setattr(_calls, name, previous)


def tracing_for_frozen_weights():
    """Marks a trace whose variables will become constants (`cvt_tf.inference_function`).

    Folds that rescale weights are then computed once, by constant folding, instead of on every call.
    """
    return _setting("frozen", True)


def weights_will_be_frozen():
    return bool(getattr(_calls, "frozen", False))


def attention_in_query_chunks(rows):
    """Attention computes its scores `rows` queries at a time while the block runs (None: all at once).

    Each query's softmax row is whole either way, so the result is the same up to float rounding;
    the scores' memory shrinks from all queries to `rows` of them (cvt-w24 at 384, stage 0: 255 MB
    per image at once). For eager calls on large inputs, such as the conversion's parity check.
    """
    return _setting("query_rows", rows)


def attention_query_rows():
    return getattr(_calls, "query_rows", None)


# Independent parts per graph-mode inference call: one per core of the machines we measured (2).
DEFAULT_INFERENCE_STREAMS = 2


def inference_streams(streams):
    """Graph inference as `streams` independent parts that TensorFlow's inter-op threads run side by side.

    The model splits a batch of at least `streams` images into `streams` slices; a smaller batch runs
    each block on `streams` slices of its token rows, joined only where attention needs them all
    (the conv projections and the keys and values). None or 1: one stream. The result is the same.

    Why: TensorFlow hands each op's work to its intra-op threads and waits for them, which costs
    tens of microseconds per op on these (virtualised) cores; cvt-13 at batch 1 gained only 1.16x
    from a second intra-op thread. With one intra-op thread per op and independent streams on
    the inter-op threads, both cores stay busy without that hand-off (`cvt_tf.set_cpu_threads`).
    """
    return _setting("streams", streams)


def inference_stream_count():
    return getattr(_calls, "streams", None) or 1


def split_evenly(x, parts, axis):
    """`x` cut along `axis` into `parts` consecutive slices of (nearly) equal length."""
    n = ops.shape(x)[axis]
    bounds = [n * i // parts for i in range(parts + 1)]
    leading = (slice(None),) * axis
    return [x[leading + (slice(start, end),)] for start, end in zip(bounds, bounds[1:])]


def quick_gelu(x):
    """The activation of the official weights: x * sigmoid(1.702 x)."""
    return x * ops.sigmoid(QUICK_GELU_SLOPE * x)


def torch_conv_initializer():
    """torch's default Conv2d init, kaiming_uniform(a=sqrt(5)): U(+-sqrt(1/fan_in))."""
    return initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def trunc_normal_initializer():
    """timm's trunc_normal_(std=0.02): cut at +-2 absolute, i.e. 100 std, so a plain normal.

    Keras' TruncatedNormal cuts at 2 std and would give std 0.0176 instead of 0.02.
    """
    return initializers.RandomNormal(stddev=0.02)


def linear_initializer(init):
    """Dense kernel init of the SPEC INIT option."""
    if init == "xavier":
        return initializers.GlorotUniform()
    return trunc_normal_initializer()


@keras.saving.register_keras_serializable(package="cvt_tf")
class LayerNorm(layers.LayerNormalization):
    """torch's LayerNorm over the channels (last axis): `(x - mean) / sqrt(var + eps) * gamma + beta`.

    Keras computes it as `x * inv + (beta - mean * inv)` with `inv = gamma * rsqrt(var + eps)`, which
    costs one more full-size multiply and add; this form made the inference of cvt-13 @ 224 7-8 %
    faster at batch 1 and 8 and cvt-21 @ 384 4 % (2 cores, same process, measured). Same variables.
    """

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        mean = ops.mean(x, axis=-1, keepdims=True)
        centered = x - mean
        variance = ops.mean(ops.square(centered), axis=-1, keepdims=True)
        normalized = centered * ops.rsqrt(variance + self.epsilon)
        return ops.cast(normalized * self.gamma + self.beta, self.compute_dtype)


def layer_norm(name):
    """LayerNorm with torch's eps; float32 even under a mixed precision policy, as torch autocast keeps it."""
    return LayerNorm(epsilon=LAYER_NORM_EPSILON, dtype="float32", name=name)


def flatten_grid(grid):
    """(batch, h, w, c) -> (batch, h*w, c)."""
    return ops.reshape(grid, (ops.shape(grid)[0], -1, grid.shape[-1]))


def dense_2d(dense, x, kernel_scale=None, bias_scale=None):
    """`dense` on (batch, tokens, c) as one 2-D matmul: oneDNN then fuses the bias into the matmul.

    `kernel_scale` multiplies the kernel and, unless `bias_scale` is given, the bias: the output is
    scaled at the cost of a weight-sized multiply (free once the weights are frozen).
    """
    batch, tokens = ops.shape(x)[0], ops.shape(x)[1]
    flat = ops.reshape(x, (-1, x.shape[-1]))
    if kernel_scale is None:
        y = dense(flat)
    else:
        bias_scale = kernel_scale if bias_scale is None else bias_scale
        y = ops.matmul(flat, ops.cast(dense.kernel, flat.dtype) * kernel_scale)
        if dense.bias is not None:
            y = y + ops.cast(dense.bias, flat.dtype) * bias_scale
    return ops.reshape(y, (batch, tokens, dense.units))


@keras.saving.register_keras_serializable(package="cvt_tf")
class ConvEmbedding(layers.Layer):
    """Overlapping patch embedding: symmetric zero padding, strided conv, LayerNorm."""

    def __init__(self, dim, patch_size, stride, padding, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.patch_size = patch_size
        self.stride = stride
        self.padding = padding
        self.pad = layers.ZeroPadding2D(padding, name="pad")
        self.proj = layers.Conv2D(
            dim, patch_size, strides=stride, padding="valid",
            kernel_initializer=torch_conv_initializer(), name="proj",
        )
        self.norm = layer_norm("norm")

    def build(self, input_shape):
        self.proj.build((None, None, None, input_shape[-1]))
        self.norm.build((None, None, None, self.dim))

    def call(self, x):
        return self.norm(self.proj(self.pad(x)))

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, patch_size=self.patch_size, stride=self.stride, padding=self.padding)
        return config


def pooled_size(n, kernel, stride, padding):
    """Output length of torch AvgPool2d(ceil_mode=True); `n` is an int or a scalar tensor."""
    out = (n + 2 * padding - kernel + stride - 1) // stride + 1
    # torch drops the last window when it would start in the right padding.
    last_starts_in_padding = (out - 1) * stride >= n + padding
    if isinstance(n, int):
        return out - int(last_starts_in_padding)
    return out - ops.cast(last_starts_in_padding, out.dtype)


@keras.saving.register_keras_serializable(package="cvt_tf")
class TorchAvgPool2D(layers.Layer):
    """torch AvgPool2d(ceil_mode=True, count_include_pad=True) on channels_last input.

    The divisor counts the zero padding but not the ceil-mode overhang past it, so border windows
    divide by less than kernel**2; Keras pooling alone cannot express that, hence the rescale.
    """

    def __init__(self, kernel_size, stride, padding, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.pool = layers.AveragePooling2D(kernel_size, strides=stride, padding="valid", name="pool")

    def _axis(self, n):
        k, s, p = self.kernel_size, self.stride, self.padding
        out = pooled_size(n, k, s, p)
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

    def get_config(self):
        config = super().get_config()
        config.update(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding)
        return config


@keras.saving.register_keras_serializable(package="cvt_tf")
class ConvProjection(layers.Layer):
    """Projection of the token grid before q/k/v: `dw_bn`, `avg` or `linear` (identity)."""

    def __init__(self, method, kernel_size, stride, padding, **kwargs):
        super().__init__(**kwargs)
        self.method = method
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        if method == "dw_bn":
            self.pad = layers.ZeroPadding2D(padding, name="pad")
            self.conv = layers.DepthwiseConv2D(
                kernel_size, strides=stride, padding="valid", use_bias=False,
                depthwise_initializer=torch_conv_initializer(), name="conv",
            )
            self.bn = layers.BatchNormalization(
                epsilon=BATCH_NORM_EPSILON, momentum=BATCH_NORM_MOMENTUM, name="bn"
            )
        elif method == "avg":
            self.avg = TorchAvgPool2D(kernel_size, stride, padding, name="avg")

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

    def get_config(self):
        config = super().get_config()
        config.update(
            method=self.method, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding
        )
        return config


@keras.saving.register_keras_serializable(package="cvt_tf")
class ConvAttention(layers.Layer):
    """Multi-head attention whose q/k/v come from convolutional projections of the token grid.

    The scale is dim ** -0.5 over the whole width, as in the official code, not per head.
    """

    def __init__(
        self, dim, num_heads, qkv_bias, method, kernel_size, stride_kv, stride_q, padding_kv,
        padding_q, with_cls_token, attn_drop=0.0, proj_drop=0.0, init="trunc_norm", **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.qkv_bias = qkv_bias
        self.method = method
        self.kernel_size = kernel_size
        self.stride_kv = stride_kv
        self.stride_q = stride_q
        self.padding_kv = padding_kv
        self.padding_q = padding_q
        self.with_cls_token = with_cls_token
        self.attn_drop = attn_drop
        self.proj_drop = proj_drop
        self.init = init
        self.scale = dim**-0.5
        # `avg` keeps q as it is: the official code builds q's projection as `linear` then.
        q_method = "linear" if method == "avg" else method
        self.conv_proj_q = ConvProjection(q_method, kernel_size, stride_q, padding_q, name="conv_proj_q")
        self.conv_proj_k = ConvProjection(method, kernel_size, stride_kv, padding_kv, name="conv_proj_k")
        self.conv_proj_v = ConvProjection(method, kernel_size, stride_kv, padding_kv, name="conv_proj_v")
        dense = {"kernel_initializer": linear_initializer(init)}
        self.proj_q = layers.Dense(dim, use_bias=qkv_bias, name="proj_q", **dense)
        self.proj_k = layers.Dense(dim, use_bias=qkv_bias, name="proj_k", **dense)
        self.proj_v = layers.Dense(dim, use_bias=qkv_bias, name="proj_v", **dense)
        self.attn_dropout = layers.Dropout(attn_drop, name="attn_drop")
        self.proj = layers.Dense(dim, name="proj", **dense)
        self.proj_dropout = layers.Dropout(proj_drop, name="proj_drop")

    def build(self, input_shape):
        for projection in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v):
            projection.build((None, None, None, input_shape[-1]))
        for dense in (self.proj_q, self.proj_k, self.proj_v):
            dense.build((None, None, input_shape[-1]))
        self.proj.build((None, None, self.dim))

    def _qkv(self, tokens, height, width, training):
        if self.method == "linear":
            # The official code raises UnboundLocalError here; its evident intent is that
            # q, k and v are the tokens themselves, cls token included.
            return tokens, tokens, tokens
        if self.with_cls_token:
            cls_token, tokens = tokens[:, :1], tokens[:, 1:]
        grid = ops.reshape(tokens, (ops.shape(tokens)[0], height, width, tokens.shape[-1]))
        projected = []
        for projection in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v):
            sequence = flatten_grid(projection(grid, training=training))
            if self.with_cls_token:
                sequence = ops.concatenate([cls_token, sequence], axis=1)
            projected.append(sequence)
        return projected

    def _split_heads(self, x):
        batch = ops.shape(x)[0]
        x = ops.reshape(x, (batch, -1, self.num_heads, self.dim // self.num_heads))
        return ops.transpose(x, (0, 2, 1, 3))

    def call(self, tokens, height, width, training=None):
        q, keys, v = self._projected(tokens, height, width, training)
        return self._output(q, keys, v, training)

    def call_in_parts(self, parts, height, width):
        """Inference on token rows held in slices: the output rows in the same slices."""
        q, keys, v = self._projected(ops.concatenate(parts, axis=1), height, width, training=False)
        sizes = [ops.shape(part)[1] for part in parts]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [
            self._output(q[:, start:start + size], keys, v, training=False)
            for start, size in zip(starts, sizes)
        ]

    def _projected(self, tokens, height, width, training):
        q, k, v = self._qkv(tokens, height, width, training)
        k = self._split_heads(dense_2d(self.proj_k, k))
        v = self._split_heads(dense_2d(self.proj_v, v))
        return q, ops.transpose(k, (0, 1, 3, 2)), v

    def _output(self, q, keys, v, training):
        # The scale multiplies q's projection weights (dim**2 values) rather than the scores
        # (heads * tokens_q * tokens_kv values, 2.5M per image in stage 0 at 224).
        q = self._split_heads(dense_2d(self.proj_q, q, kernel_scale=self.scale))
        rows, queries = attention_query_rows(), q.shape[2]
        if rows and queries is not None and queries > rows:
            x = ops.concatenate(
                [self._attend(q[:, :, start:start + rows], keys, v, training) for start in range(0, queries, rows)],
                axis=2,
            )
        else:
            x = self._attend(q, keys, v, training)
        x = ops.transpose(x, (0, 2, 1, 3))
        x = ops.reshape(x, (ops.shape(x)[0], -1, self.dim))
        return self.proj_dropout(dense_2d(self.proj, x), training=training)

    def _attend(self, q, keys, v, training):
        scores = ops.matmul(q, keys)
        attention = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        attention = self.attn_dropout(ops.cast(attention, v.dtype), training=training)
        return ops.matmul(attention, v)

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim, num_heads=self.num_heads, qkv_bias=self.qkv_bias, method=self.method,
            kernel_size=self.kernel_size, stride_kv=self.stride_kv, stride_q=self.stride_q,
            padding_kv=self.padding_kv, padding_q=self.padding_q,
            with_cls_token=self.with_cls_token, attn_drop=self.attn_drop,
            proj_drop=self.proj_drop, init=self.init,
        )
        return config


@keras.saving.register_keras_serializable(package="cvt_tf")
class DropPath(layers.Layer):
    """Stochastic depth: drops whole samples of a residual branch, scaling the rest by 1/keep."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        # The keep mask is drawn in float32: keep + noise rounded in bfloat16 would bias the rate.
        noise = keras.random.uniform(shape, seed=self.seed_generator)
        return x * ops.cast(ops.floor(keep + noise) / keep, x.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="cvt_tf")
class Mlp(layers.Layer):
    """fc1 -> QuickGELU -> dropout -> fc2 -> dropout."""

    def __init__(self, dim, hidden_dim, drop=0.0, init="trunc_norm", **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.drop = drop
        self.init = init
        dense = {"kernel_initializer": linear_initializer(init)}
        self.fc1 = layers.Dense(hidden_dim, name="fc1", **dense)
        self.fc2 = layers.Dense(dim, name="fc2", **dense)
        self.dropout = layers.Dropout(drop, name="drop")

    def build(self, input_shape):
        self.fc1.build((None, None, self.dim))
        self.fc2.build((None, None, self.hidden_dim))

    def call(self, x, training=None):
        if weights_will_be_frozen() and not training:
            # quick_gelu(h) = silu(1.702 h) / 1.702: 1.702 goes into fc1, 1/1.702 into fc2's kernel,
            # and oneDNN runs silu as one op (x * sigmoid(1.702 x) takes three).
            x = ops.silu(dense_2d(self.fc1, x, kernel_scale=QUICK_GELU_SLOPE))
            return dense_2d(self.fc2, x, kernel_scale=1.0 / QUICK_GELU_SLOPE, bias_scale=1.0)
        x = self.dropout(quick_gelu(dense_2d(self.fc1, x)), training=training)
        return self.dropout(dense_2d(self.fc2, x), training=training)

    def get_config(self):
        config = super().get_config()
        config.update(dim=self.dim, hidden_dim=self.hidden_dim, drop=self.drop, init=self.init)
        return config
