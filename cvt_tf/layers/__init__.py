"""The Keras 3 layers of CvT, one module per kind: embedding, projection, attention, block, stage.

`options` holds the explicit settings of an inference call; `common` what the layers share.
"""

from cvt_tf.layers.attention import ConvAttention
from cvt_tf.layers.block import Block, DropPath, Mlp
from cvt_tf.layers.common import LayerNorm
from cvt_tf.layers.embedding import ConvEmbedding
from cvt_tf.layers.options import DEFAULT_INFERENCE_STREAMS, InferenceOptions
from cvt_tf.layers.projection import ConvProjection, TorchAvgPool2D
from cvt_tf.layers.stage import Stage

__all__ = [
    "DEFAULT_INFERENCE_STREAMS",
    "Block",
    "ConvAttention",
    "ConvEmbedding",
    "ConvProjection",
    "DropPath",
    "InferenceOptions",
    "LayerNorm",
    "Mlp",
    "Stage",
    "TorchAvgPool2D",
]
