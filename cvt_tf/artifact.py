"""A `CvT` made from a converted artifact: `<name>.weights.h5` (Keras 3 weights) beside `<name>.json`.

The manifest carries the SPEC and head size the weights were converted for.
"""

from cvt_spec.artifacts import read_manifest
from cvt_tf.model import CvT
from cvt_tf.weights import restore_artifact


def load_artifact(path, **model_kwargs) -> CvT:
    """A built `CvT` with the weights of a converted artifact.

    Args:
        path: `<name>.weights.h5`, `<name>.json` or `<dir>/<name>`.
        **model_kwargs: passed to `CvT`, e.g. `classifier_activation="softmax"`.

    Raises:
        ArtifactError: the artifact is missing, damaged, or does not fit `model_kwargs`.
    """
    manifest = read_manifest(path)
    model = CvT(spec=manifest["spec"], num_classes=manifest["num_classes"], **model_kwargs)
    return restore_artifact(model, path, manifest)
