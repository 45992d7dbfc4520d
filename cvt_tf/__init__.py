"""cvt_tf: a Keras 3 CvT that reproduces the official microsoft/CvT models.

Imports neither PyTorch nor the PyTorch reference.
"""

from cvt_tf.artifact import load_artifact
from cvt_tf.model import CvT

__all__ = ["CvT", "load_artifact"]
