"""Reading a converted artifact: `<name>.weights.h5` (Keras 3 weights) beside `<name>.json`.

The manifest carries the SPEC and head size the weights were converted for.
"""

import json

from cvt_spec import normalize_spec
from cvt_spec.artifact_files import MANIFEST_SUFFIX, WEIGHTS_SUFFIX, artifact_paths, file_sha256  # noqa: F401


def read_manifest(path):
    """The manifest of an artifact, checked against its weights file.

    Raises:
        FileNotFoundError: the weights or the manifest is missing.
        ValueError: the weights file's sha256 differs from the manifest's.
    """
    weights_path, manifest_path = artifact_paths(path)
    for required in (weights_path, manifest_path):
        if not required.is_file():
            raise FileNotFoundError(f"{required}: artifact file not found")
    manifest = json.loads(manifest_path.read_text())
    expected = manifest["artifact"]["sha256"]
    actual = file_sha256(weights_path)
    if actual != expected:
        raise ValueError(
            f"{weights_path}: sha256 {actual} differs from the manifest's {expected}; "
            "the file is damaged or was replaced"
        )
    return manifest


def _restore(model, weights_path, manifest):
    spec = normalize_spec(manifest["spec"])
    differing = sorted(key for key in spec if spec[key] != model.spec.get(key))
    if differing:
        raise ValueError(
            f"{weights_path} was converted for another SPEC: "
            + "; ".join(f"{key} {spec[key]} (model: {model.spec.get(key)})" for key in differing)
        )
    if model.head is not None and manifest["num_classes"] != model.num_classes:
        raise ValueError(
            f"{weights_path} has a {manifest['num_classes']}-class head, the model num_classes={model.num_classes}; "
            f"use num_classes={manifest['num_classes']}, or include_top=False to put your own head on the features"
        )
    if not model.built:
        channels_first = model.data_format == "channels_first"
        model.build((None, model.in_chans, None, None) if channels_first else (None, None, None, model.in_chans))
    # A model without a head (include_top=False, num_classes=0) leaves the file's head unread.
    model.load_weights(weights_path)
    return model


def restore_artifact(model, path):
    """Loads a converted artifact into a `CvT` of the same SPEC; returns the model.

    Raises:
        FileNotFoundError, ValueError: as `read_manifest`; ValueError also when the SPEC or head size differs.
    """
    return _restore(model, artifact_paths(path)[0], read_manifest(path))


def load_artifact(path, **model_kwargs):
    """A built `CvT` with the weights of a converted artifact.

    Args:
        path: `<name>.weights.h5`, `<name>.json` or `<dir>/<name>`.
        **model_kwargs: passed to `CvT`, e.g. `classifier_activation="softmax"`.
    """
    from cvt_tf.model import CvT

    manifest = read_manifest(path)
    model = CvT(spec=manifest["spec"], num_classes=manifest["num_classes"], **model_kwargs)
    return _restore(model, artifact_paths(path)[0], manifest)
