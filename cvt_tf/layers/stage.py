"""A CvT stage: the convolutional token embedding, an optional cls token, then the stage's blocks.

A stage embeds its input grid, prepends its cls token, runs its blocks and returns the grid.
"""

import keras
from keras import layers, ops

from cvt_spec import StageSpec
from cvt_spec.stages import conv_output_size, drop_path_rates
from cvt_tf.layers.block import Block
from cvt_tf.layers.common import (
    ConfiguredLayer,
    flatten_grid,
    reshape_batch,
    split_evenly,
    trunc_normal_initializer,
)
from cvt_tf.layers.embedding import ConvEmbedding
from cvt_tf.layers.options import WHOLE, InferenceOptions


def stage_arguments(stage: StageSpec, synchronized_batch_norm: bool = False) -> dict:
    """The keyword arguments of `Stage` for one stage of a SPEC; its BatchNorms synchronized across replicas or not."""
    return {
        "dim": stage.dim,
        "depth": stage.depth,
        "num_heads": stage.num_heads,
        "mlp_ratio": stage.mlp_ratio,
        "patch_size": stage.patch_size,
        "patch_stride": stage.patch_stride,
        "patch_padding": stage.patch_padding,
        "drop": stage.drop_rate,
        "drop_path": stage.drop_path_rate,
        "with_cls_token": stage.cls_token,
        "init": stage.init,
        "attention": {
            "qkv_bias": stage.qkv_bias,
            "method": stage.method,
            "kernel_size": stage.kernel_size,
            "stride_kv": stage.stride_kv,
            "stride_q": stage.stride_q,
            "padding_kv": stage.padding_kv,
            "padding_q": stage.padding_q,
            "attn_drop": stage.attn_drop_rate,
            "synchronized_batch_norm": synchronized_batch_norm,
        },
    }


@keras.saving.register_keras_serializable(package="cvt_tf")
class Stage(ConfiguredLayer):
    """Conv embedding, optional cls token, `depth` blocks.

    Returns the output grid (batch, h, w, dim), and with a cls token the pair (grid, cls (batch, 1, dim)).

    Args:
        dim: token width (DIM_EMBED).
        depth: number of blocks (DEPTH).
        num_heads: attention heads (NUM_HEADS).
        mlp_ratio: MLP width over `dim` (MLP_RATIO).
        patch_size: kernel of the token embedding (PATCH_SIZE).
        patch_stride: stride of the token embedding (PATCH_STRIDE).
        patch_padding: padding of the token embedding (PATCH_PADDING).
        attention: `ConvAttention` arguments shared by the blocks, without `with_cls_token`.
        with_cls_token: prepend a learned cls token (CLS_TOKEN).
        drop: dropout rate (DROP_RATE).
        drop_path: stochastic depth rate of the last block (DROP_PATH_RATE).
        init: dense kernel initializer of the SPEC INIT option.
    """

    def __init__(
        self, dim: int, depth: int, num_heads: int, mlp_ratio: float, patch_size: int, patch_stride: int,
        patch_padding: int, attention: dict, with_cls_token: bool, drop: float = 0.0, drop_path: float = 0.0,
        init: str = "trunc_norm", **kwargs,
    ):
        super().__init__(**kwargs)
        self.keep(dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, patch_size=patch_size,
                  patch_stride=patch_stride, patch_padding=patch_padding, attention=attention,
                  with_cls_token=with_cls_token, drop=drop, drop_path=drop_path, init=init)
        policy = {"dtype": self.dtype_policy}
        self.patch_embed = ConvEmbedding(dim, patch_size, patch_stride, patch_padding, name="patch_embed", **policy)
        self.pos_drop = layers.Dropout(drop, name="pos_drop", **policy)
        self.blocks = [
            Block(
                dim, num_heads, mlp_ratio, rate, attention={**attention, "with_cls_token": with_cls_token},
                drop=drop, init=init, name=f"block{j}", **policy,
            )
            for j, rate in enumerate(drop_path_rates(drop_path, depth))
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

    def call(self, x, training=None, options: InferenceOptions = WHOLE):
        grid = self.patch_embed(x)
        batch, height, width = ops.shape(grid)[0], ops.shape(grid)[1], ops.shape(grid)[2]
        tokens = flatten_grid(grid)
        if self.with_cls_token:
            cls_token = ops.broadcast_to(ops.cast(self.cls_token, tokens.dtype), (batch, 1, self.dim))
            tokens = ops.concatenate([cls_token, tokens], axis=1)
        tokens = self.pos_drop(tokens, training=training)
        if options.streams > 1 and not training:
            token_parts = split_evenly(tokens, options.streams, axis=1)
            for block in self.blocks:
                token_parts = block.call_in_parts(token_parts, height, width, options)
            tokens = ops.concatenate(token_parts, axis=1)
        else:
            for block in self.blocks:
                tokens = block(tokens, height=height, width=width, training=training, options=options)
        if self.with_cls_token:
            cls_token, tokens = tokens[:, :1], tokens[:, 1:]
        grid = reshape_batch(tokens, (height, width, self.dim))
        return (grid, cls_token) if self.with_cls_token else grid

    def compute_output_shape(self, input_shape):
        def embedded(n):
            return None if n is None else conv_output_size(n, self.patch_size, self.patch_stride, self.patch_padding)

        batch, height, width, _ = input_shape
        grid_shape = (batch, embedded(height), embedded(width), self.dim)
        return (grid_shape, (batch, 1, self.dim)) if self.with_cls_token else grid_shape
