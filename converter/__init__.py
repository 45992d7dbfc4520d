"""converter: official CvT checkpoint -> mapping rows -> Keras CvT -> parity -> release artifact.

The only package that touches both frameworks. PyTorch and timm are imported before TensorFlow:
with the CUDA torch build, triton imported after TensorFlow crashes the process.
"""

import official_ref  # noqa: F401  (torch and timm first; see the docstring)
