"""A CvT block: pre-norm convolutional attention and MLP, each added back through stochastic depth.

Also the block's MLP (QuickGELU) and DropPath.
"""

import keras
from keras import layers, ops

from cvt_spec.stages import mlp_width
from cvt_tf.layers.attention import ConvAttention
from cvt_tf.layers.common import (
    QUICK_GELU_SLOPE,
    ConfiguredLayer,
    layer_norm,
    linear_initializer,
    quick_gelu,
    token_dense,
)
from cvt_tf.layers.options import WHOLE, InferenceOptions


@keras.saving.register_keras_serializable(package="cvt_tf")
class DropPath(ConfiguredLayer):
    """Stochastic depth: drops whole samples of a residual branch, scaling the rest by 1/keep.

    Args:
        rate: probability of dropping a sample's branch (0 keeps every one).
        seed: seed of the drop mask.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.keep(rate=rate, seed=seed)
        self.seed_generator = keras.random.SeedGenerator(seed, name="seed_generator")

    def call(self, x, training=None):
        if not training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (ops.shape(x)[0],) + (1,) * (len(x.shape) - 1)
        # The keep mask is drawn in float32: keep + noise rounded in bfloat16 would bias the rate.
        noise = keras.random.uniform(shape, seed=self.seed_generator)
        return x * ops.cast(ops.floor(keep + noise) / keep, x.dtype)


@keras.saving.register_keras_serializable(package="cvt_tf")
class Mlp(ConfiguredLayer):
    """fc1 -> QuickGELU -> dropout -> fc2 -> dropout.

    Args:
        dim: input and output width.
        hidden_dim: width of fc1's output (int(dim * MLP_RATIO)).
        drop: dropout rate (DROP_RATE).
        init: dense kernel initializer of the SPEC INIT option.
    """

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0, init: str = "trunc_norm", **kwargs):
        super().__init__(**kwargs)
        self.keep(dim=dim, hidden_dim=hidden_dim, drop=drop, init=init)
        dense = {"kernel_initializer": linear_initializer(init), "dtype": self.dtype_policy}
        self.fc1 = layers.Dense(hidden_dim, name="fc1", **dense)
        self.fc2 = layers.Dense(dim, name="fc2", **dense)
        self.dropout = layers.Dropout(drop, name="drop", dtype=self.dtype_policy)

    def build(self, input_shape):
        self.fc1.build((None, None, self.dim))
        self.fc2.build((None, None, self.hidden_dim))

    def call(self, x, training=None, options: InferenceOptions = WHOLE):
        if options.frozen_weights and not training:
            # quick_gelu(h) = silu(1.702 h) / 1.702: 1.702 goes into fc1, 1/1.702 into fc2's kernel,
            # and oneDNN runs silu as one op (x * sigmoid(1.702 x) takes three).
            x = ops.silu(token_dense(self.fc1, x, options, kernel_scale=QUICK_GELU_SLOPE))
            return token_dense(self.fc2, x, options, kernel_scale=1.0 / QUICK_GELU_SLOPE, bias_scale=1.0)
        x = self.dropout(quick_gelu(token_dense(self.fc1, x, options)), training=training)
        return self.dropout(token_dense(self.fc2, x, options), training=training)


@keras.saving.register_keras_serializable(package="cvt_tf")
class Block(ConfiguredLayer):
    """x + DropPath(attn(norm1(x))), then x + DropPath(mlp(norm2(x))).

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP width over `dim`.
        drop_path: stochastic depth rate of this block.
        attention: the remaining `ConvAttention` arguments (qkv_bias, method, kernel_size, ...).
        drop: dropout rate of the attention output and the MLP.
        init: dense kernel initializer of the SPEC INIT option.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, drop_path: float, attention: dict,
                 drop: float = 0.0, init: str = "trunc_norm", **kwargs):
        super().__init__(**kwargs)
        self.keep(dim=dim, num_heads=num_heads, mlp_ratio=mlp_ratio, attention=attention, drop=drop, init=init)
        # `drop_path` names the DropPath sublayer (its place in the weights file), so the rate has its own name.
        self.drop_path_rate = drop_path
        policy = {"dtype": self.dtype_policy}
        self.norm1 = layer_norm("norm1")
        self.attn = ConvAttention(dim, num_heads, proj_drop=drop, init=init, name="attn", **attention, **policy)
        self.drop_path = DropPath(drop_path, name="drop_path", **policy)
        self.norm2 = layer_norm("norm2")
        self.mlp = Mlp(dim, mlp_width(dim, mlp_ratio), drop=drop, init=init, name="mlp", **policy)

    def build(self, input_shape):
        tokens_shape = (None, None, self.dim)
        self.norm1.build(tokens_shape)
        self.attn.build(tokens_shape)
        self.norm2.build(tokens_shape)
        self.mlp.build(tokens_shape)

    def call(self, x, height, width, training=None, options: InferenceOptions = WHOLE):
        attended = self.attn(self.norm1(x), height=height, width=width, training=training, options=options)
        x = x + self.drop_path(attended, training=training)
        mlp = self.mlp(self.norm2(x), training=training, options=options)
        return x + self.drop_path(mlp, training=training)

    def call_in_parts(self, parts: list, height, width, options: InferenceOptions = WHOLE) -> list:
        """Inference on token rows held in slices (`InferenceOptions.streams`); only attention joins them."""
        normed = [self.norm1(part) for part in parts]
        attended = self.attn.call_in_parts(normed, height, width, options)
        parts = [part + update for part, update in zip(parts, attended, strict=True)]
        return [part + self.mlp(self.norm2(part), options=options) for part in parts]

    def get_config(self):
        return {**super().get_config(), "drop_path": self.drop_path_rate}
