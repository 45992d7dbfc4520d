"""converter: official CvT checkpoint -> mapping rows -> Keras CvT -> parity -> release artifact.

The only package that touches both frameworks. PyTorch and timm are imported before TensorFlow:
with the CUDA torch build, triton imported after TensorFlow crashes the process. Without PyTorch (the
runtime install) the parts that need no reference still work: writing artifacts, fine-tuning.
"""

import importlib.util

if importlib.util.find_spec("torch") is not None:
    import official_ref  # noqa: F401  (torch and timm first; see the docstring)
