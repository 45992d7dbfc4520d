"""official_ref: a PyTorch CvT with the state-dict layout and numerics of microsoft/CvT.

Loads official checkpoints with strict=True; imports no TensorFlow.
"""

from official_ref.model import (
    ConvolutionalVisionTransformer,
    build_model,
    load_reference,
    official_state_dict_shapes,
)

__all__ = ["ConvolutionalVisionTransformer", "build_model", "load_reference", "official_state_dict_shapes"]
