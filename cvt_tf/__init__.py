"""cvt_tf: a Keras 3 CvT that reproduces the official microsoft/CvT models, on any Keras backend.

Imports neither PyTorch nor the PyTorch reference, and TensorFlow only under the TensorFlow backend,
where the parts that need it come too: `inference_function`, `set_cpu_threads` (and its `ThreadingWarning`),
`EvalPreprocessing` and,
when keras-hub is installed, the keras-hub classes (`cvt_tf.hub`).
"""

import importlib.util

import keras

from cvt_spec import InputError
from cvt_tf.artifact import load_artifact
from cvt_tf.imagenet import decode_predictions
from cvt_tf.images import ImageError, load_image
from cvt_tf.layers.options import InferenceOptions
from cvt_tf.model import CvT
from cvt_tf.preprocessing import EvalTransform, preprocess_input
from cvt_tf.weights import restore_artifact

# They run TensorFlow ops or TensorFlow's graph tools.
TENSORFLOW_ONLY = ("inference_function", "set_cpu_threads", "ThreadingWarning", "EvalPreprocessing")


class BackendError(InputError):
    """A TensorFlow-only part used under another Keras backend."""


if keras.backend.backend() == "tensorflow":  # loaded by Keras already; registers EvalPreprocessing for load_model
    from cvt_tf.inference import inference_function
    from cvt_tf.preprocessing_layer import EvalPreprocessing
    from cvt_tf.threads import ThreadingWarning, set_cpu_threads

    # keras-hub imports TensorFlow itself, and its presets of CvT run the transform in TensorFlow ops.
    if importlib.util.find_spec("keras_hub") is not None:  # registers the keras-hub classes for from_preset
        import cvt_tf.hub  # noqa: F401


def __getattr__(name):
    if name not in TENSORFLOW_ONLY:
        raise AttributeError(f"module 'cvt_tf' has no attribute {name!r}")
    raise BackendError(
        f"cvt_tf.{name} needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process runs Keras on "
        f"{keras.backend.backend()}, where load_artifact, CvT, preprocess_input, predict and fit work"
    )


__all__ = [
    "CvT",
    "EvalPreprocessing",
    "EvalTransform",
    "ImageError",
    "InferenceOptions",
    "ThreadingWarning",
    "decode_predictions",
    "inference_function",
    "load_artifact",
    "load_image",
    "preprocess_input",
    "restore_artifact",
    "set_cpu_threads",
]
