"""A CvT block (pre-norm attention and MLP with stochastic depth) and a CvT stage.

A stage embeds its input grid, prepends its cls token, runs its blocks and returns the grid.
"""

import keras
from keras import layers, ops

from cvt_tf.layers import (
    ConvAttention,
    ConvEmbedding,
    DropPath,
    Mlp,
    flatten_grid,
    inference_stream_count,
    layer_norm,
    split_evenly,
    trunc_normal_initializer,
)


@keras.saving.register_keras_serializable(package="cvt_tf")
class Block(layers.Layer):
    """x + DropPath(attn(norm1(x))), then x + DropPath(mlp(norm2(x)))."""

    def __init__(self, dim, num_heads, mlp_ratio, drop_path, attention, drop=0.0, init="trunc_norm", **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.drop_path_rate = drop_path
        self.attention = attention
        self.drop = drop
        self.init = init
        self.norm1 = layer_norm("norm1")
        self.attn = ConvAttention(dim, num_heads, proj_drop=drop, init=init, name="attn", **attention)
        self.drop_path = DropPath(drop_path, name="drop_path")
        self.norm2 = layer_norm("norm2")
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop, init=init, name="mlp")

    def build(self, input_shape):
        tokens_shape = (None, None, self.dim)
        self.norm1.build(tokens_shape)
        self.attn.build(tokens_shape)
        self.norm2.build(tokens_shape)
        self.mlp.build(tokens_shape)

    def call(self, x, height, width, training=None):
        attended = self.attn(self.norm1(x), height=height, width=width, training=training)
        x = x + self.drop_path(attended, training=training)
        return x + self.drop_path(self.mlp(self.norm2(x), training=training), training=training)

    def call_in_parts(self, parts, height, width):
        """Inference on token rows held in slices (see `inference_streams`); only attention joins them."""
        normed = [self.norm1(part) for part in parts]
        parts = [part + attended for part, attended in zip(parts, self.attn.call_in_parts(normed, height, width))]
        return [part + self.mlp(self.norm2(part)) for part in parts]

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
            drop_path=self.drop_path_rate, attention=self.attention, drop=self.drop, init=self.init,
        )
        return config


def stage_kwargs(spec, i):
    """The keyword arguments of `Stage` for stage `i` of a normalized SPEC."""
    return {
        "dim": spec["DIM_EMBED"][i],
        "depth": spec["DEPTH"][i],
        "num_heads": spec["NUM_HEADS"][i],
        "mlp_ratio": spec["MLP_RATIO"][i],
        "patch_size": spec["PATCH_SIZE"][i],
        "patch_stride": spec["PATCH_STRIDE"][i],
        "patch_padding": spec["PATCH_PADDING"][i],
        "drop": spec["DROP_RATE"][i],
        "drop_path": spec["DROP_PATH_RATE"][i],
        "with_cls_token": spec["CLS_TOKEN"][i],
        "init": spec["INIT"],
        "attention": {
            "qkv_bias": spec["QKV_BIAS"][i],
            "method": spec["QKV_PROJ_METHOD"][i],
            "kernel_size": spec["KERNEL_QKV"][i],
            "stride_kv": spec["STRIDE_KV"][i],
            "stride_q": spec["STRIDE_Q"][i],
            "padding_kv": spec["PADDING_KV"][i],
            "padding_q": spec["PADDING_Q"][i],
            "attn_drop": spec["ATTN_DROP_RATE"][i],
        },
    }


@keras.saving.register_keras_serializable(package="cvt_tf")
class Stage(layers.Layer):
    """Conv embedding, optional cls token, `depth` blocks.

    Returns the output grid (batch, h, w, dim), and with a cls token the pair (grid, cls (batch, 1, dim)).
    """

    def __init__(
        self, dim, depth, num_heads, mlp_ratio, patch_size, patch_stride, patch_padding,
        attention, with_cls_token, drop=0.0, drop_path=0.0, init="trunc_norm", **kwargs,
    ):
        super().__init__(**kwargs)
        self.dim = dim
        self.depth = depth
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.patch_size = patch_size
        self.patch_stride = patch_stride
        self.patch_padding = patch_padding
        self.attention = attention
        self.with_cls_token = with_cls_token
        self.drop = drop
        self.drop_path = drop_path
        self.init = init
        self.patch_embed = ConvEmbedding(dim, patch_size, patch_stride, patch_padding, name="patch_embed")
        self.pos_drop = layers.Dropout(drop, name="pos_drop")
        # Linear stochastic-depth rule over the stage's blocks, as torch.linspace(0, rate, depth).
        rates = [drop_path * j / (depth - 1) for j in range(depth)] if depth > 1 else [0.0]
        self.blocks = [
            Block(
                dim, num_heads, mlp_ratio, rates[j],
                attention={**attention, "with_cls_token": with_cls_token},
                drop=drop, init=init, name=f"block{j}",
            )
            for j in range(depth)
        ]

    def build(self, input_shape):
        self.patch_embed.build(input_shape)
        if self.with_cls_token:
            self.cls_token = self.add_weight(
                shape=(1, 1, self.dim), initializer=trunc_normal_initializer(),
                name="cls_token",
            )
        for block in self.blocks:
            block.build((None, None, self.dim))

    def call(self, x, training=None):
        grid = self.patch_embed(x)
        batch, height, width = ops.shape(grid)[0], ops.shape(grid)[1], ops.shape(grid)[2]
        tokens = flatten_grid(grid)
        if self.with_cls_token:
            cls_token = ops.broadcast_to(ops.cast(self.cls_token, tokens.dtype), (batch, 1, self.dim))
            tokens = ops.concatenate([cls_token, tokens], axis=1)
        tokens = self.pos_drop(tokens, training=training)
        streams = inference_stream_count()
        if streams > 1 and not training:
            token_parts = split_evenly(tokens, streams, axis=1)
            for block in self.blocks:
                token_parts = block.call_in_parts(token_parts, height, width)
            tokens = ops.concatenate(token_parts, axis=1)
        else:
            for block in self.blocks:
                tokens = block(tokens, height=height, width=width, training=training)
        if self.with_cls_token:
            cls_token, tokens = tokens[:, :1], tokens[:, 1:]
        grid = ops.reshape(tokens, (batch, height, width, self.dim))
        return (grid, cls_token) if self.with_cls_token else grid

    def compute_output_shape(self, input_shape):
        def embedded(n):
            return None if n is None else (n + 2 * self.patch_padding - self.patch_size) // self.patch_stride + 1

        batch, height, width, _ = input_shape
        grid_shape = (batch, embedded(height), embedded(width), self.dim)
        return (grid_shape, (batch, 1, self.dim)) if self.with_cls_token else grid_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            dim=self.dim, depth=self.depth, num_heads=self.num_heads, mlp_ratio=self.mlp_ratio,
            patch_size=self.patch_size, patch_stride=self.patch_stride,
            patch_padding=self.patch_padding, attention=self.attention,
            with_cls_token=self.with_cls_token, drop=self.drop, drop_path=self.drop_path,
            init=self.init,
        )
        return config
