"""Convolutional attention: multi-head attention whose q, k and v come from projections of the token grid.

The scale is dim ** -0.5 over the whole width, as in the official code, not per head.
"""

import keras
from keras import layers, ops

from cvt_spec.stages import query_method
from cvt_tf.layers.common import ConfiguredLayer, flatten_grid, linear_initializer, reshape_batch, token_dense
from cvt_tf.layers.options import WHOLE, InferenceOptions
from cvt_tf.layers.projection import ConvProjection


@keras.saving.register_keras_serializable(package="cvt_tf")
class ConvAttention(ConfiguredLayer):
    """Multi-head attention over a stage's tokens, with convolutional q/k/v projections.

    Args:
        dim: token width (DIM_EMBED); also the width of q, k and v.
        num_heads: attention heads (NUM_HEADS); `dim` is split evenly among them.
        qkv_bias: whether `proj_q`, `proj_k` and `proj_v` have biases (QKV_BIAS).
        method: projection of the grid before q/k/v (QKV_PROJ_METHOD): `dw_bn`, `avg` or `linear`.
        kernel_size: projection window (KERNEL_QKV).
        stride_kv: stride of the key and value projections (STRIDE_KV).
        stride_q: stride of the query projection (STRIDE_Q).
        padding_kv: padding of the key and value projections (PADDING_KV).
        padding_q: padding of the query projection (PADDING_Q).
        with_cls_token: the first token is a cls token, kept out of the conv projections (CLS_TOKEN).
        attn_drop: dropout on the attention weights (ATTN_DROP_RATE).
        proj_drop: dropout after the output projection (DROP_RATE).
        init: dense kernel initializer of the SPEC INIT option, `trunc_norm` or `xavier`.
        synchronized_batch_norm: the projections' BatchNorms use every replica's batch (`ConvProjection`).
    """

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool, method: str, kernel_size: int, stride_kv: int,
        stride_q: int, padding_kv: int, padding_q: int, with_cls_token: bool, attn_drop: float = 0.0,
        proj_drop: float = 0.0, init: str = "trunc_norm", synchronized_batch_norm: bool = False, **kwargs,
    ):
        super().__init__(**kwargs)
        self.keep(dim=dim, num_heads=num_heads, qkv_bias=qkv_bias, method=method, kernel_size=kernel_size,
                  stride_kv=stride_kv, stride_q=stride_q, padding_kv=padding_kv, padding_q=padding_q,
                  with_cls_token=with_cls_token, attn_drop=attn_drop, proj_drop=proj_drop, init=init,
                  synchronized_batch_norm=synchronized_batch_norm)
        self.scale = dim**-0.5
        policy = {"dtype": self.dtype_policy}
        projection = {"synchronized_batch_norm": synchronized_batch_norm, **policy}
        self.conv_proj_q = ConvProjection(query_method(method), kernel_size, stride_q, padding_q, name="conv_proj_q",
                                          **projection)
        self.conv_proj_k = ConvProjection(method, kernel_size, stride_kv, padding_kv, name="conv_proj_k",
                                          **projection)
        self.conv_proj_v = ConvProjection(method, kernel_size, stride_kv, padding_kv, name="conv_proj_v",
                                          **projection)
        dense = {"kernel_initializer": linear_initializer(init), **policy}
        self.proj_q = layers.Dense(dim, use_bias=qkv_bias, name="proj_q", **dense)
        self.proj_k = layers.Dense(dim, use_bias=qkv_bias, name="proj_k", **dense)
        self.proj_v = layers.Dense(dim, use_bias=qkv_bias, name="proj_v", **dense)
        self.attn_dropout = layers.Dropout(attn_drop, name="attn_drop", **policy)
        self.proj = layers.Dense(dim, name="proj", **dense)
        self.proj_dropout = layers.Dropout(proj_drop, name="proj_drop", **policy)

    def build(self, input_shape):
        for projection in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v):
            projection.build((None, None, None, input_shape[-1]))
        for dense in (self.proj_q, self.proj_k, self.proj_v):
            dense.build((None, None, input_shape[-1]))
        self.proj.build((None, None, self.dim))

    def call(self, tokens, height, width, training=None, options: InferenceOptions = WHOLE):
        q, keys, v = self._projected(tokens, height, width, training, options)
        return self._output(q, keys, v, training, options)

    def call_in_parts(self, parts: list, height, width, options: InferenceOptions = WHOLE) -> list:
        """Inference on token rows held in slices: the output rows in the same slices."""
        q, keys, v = self._projected(ops.concatenate(parts, axis=1), height, width, False, options)
        sizes = [ops.shape(part)[1] for part in parts]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        return [
            self._output(q[:, start:start + size], keys, v, False, options)
            for start, size in zip(starts, sizes, strict=True)
        ]

    def _qkv(self, tokens, height, width, training):
        if self.method == "linear":
            # The official code raises UnboundLocalError here; its evident intent is that
            # q, k and v are the tokens themselves, cls token included.
            return tokens, tokens, tokens
        if self.with_cls_token:
            cls_token, tokens = tokens[:, :1], tokens[:, 1:]
        grid = reshape_batch(tokens, (height, width, tokens.shape[-1]))
        projected = []
        for projection in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v):
            sequence = flatten_grid(projection(grid, training=training))
            if self.with_cls_token:
                sequence = ops.concatenate([cls_token, sequence], axis=1)
            projected.append(sequence)
        return projected

    def _split_heads(self, x):
        tokens = x.shape[1] if x.shape[1] is not None else -1
        x = reshape_batch(x, (tokens, self.num_heads, self.dim // self.num_heads))
        return ops.transpose(x, (0, 2, 1, 3))

    def _projected(self, tokens, height, width, training, options):
        q, k, v = self._qkv(tokens, height, width, training)
        k = self._split_heads(token_dense(self.proj_k, k, options))
        v = self._split_heads(token_dense(self.proj_v, v, options))
        return q, ops.transpose(k, (0, 1, 3, 2)), v

    def _output(self, q, keys, v, training, options):
        # The scale multiplies q's projection weights (dim**2 values) rather than the scores
        # (heads * tokens_q * tokens_kv values, 2.5M per image in stage 0 at 224).
        q = self._split_heads(token_dense(self.proj_q, q, options, kernel_scale=self.scale))
        queries, query_chunk = q.shape[2], options.query_chunk
        if query_chunk and queries is not None and queries > query_chunk:
            x = ops.concatenate(
                [self._attend(q[:, :, start:start + query_chunk], keys, v, training)
                 for start in range(0, queries, query_chunk)],
                axis=2,
            )
        else:
            x = self._attend(q, keys, v, training)
        x = ops.transpose(x, (0, 2, 1, 3))
        x = reshape_batch(x, (x.shape[1] if x.shape[1] is not None else -1, self.dim))
        return self.proj_dropout(token_dense(self.proj, x, options), training=training)

    def _attend(self, q, keys, v, training):
        scores = ops.matmul(q, keys)
        attention = ops.softmax(ops.cast(scores, "float32"), axis=-1)
        attention = self.attn_dropout(ops.cast(attention, v.dtype), training=training)
        return ops.matmul(attention, v)
