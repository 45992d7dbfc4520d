"""cvt_tf: a Keras 3 CvT that reproduces the official microsoft/CvT models.

Imports neither PyTorch nor the PyTorch reference.
"""

from cvt_tf.artifact import load_artifact
from cvt_tf.imagenet import decode_predictions
from cvt_tf.images import ImageError, load_image
from cvt_tf.inference import inference_function, set_cpu_threads
from cvt_tf.layers.options import InferenceOptions
from cvt_tf.model import CvT
from cvt_tf.preprocessing import EvalPreprocessing, EvalTransform, preprocess_input
from cvt_tf.weights import restore_artifact

__all__ = [
    "CvT",
    "EvalPreprocessing",
    "EvalTransform",
    "ImageError",
    "InferenceOptions",
    "decode_predictions",
    "inference_function",
    "load_artifact",
    "load_image",
    "preprocess_input",
    "restore_artifact",
    "set_cpu_threads",
]
