"""Putting a converted artifact's weights into a `CvT`: checked against its manifest first.

Takes the model as an argument and imports no model code, so `cvt_tf.model` can use it.
"""

from typing import TYPE_CHECKING

from cvt_spec.artifacts import artifact_paths, check_artifact_fits, read_manifest

if TYPE_CHECKING:  # cvt_tf.model imports this module
    from cvt_tf.model import CvT


def restore_artifact(model, path, manifest: dict | None = None) -> "CvT":
    """Loads a converted artifact into a `CvT` of the same SPEC; returns the model.

    Args:
        path: `<name>.weights.h5`, `<name>.json` or `<dir>/<name>`.
        manifest: the artifact's manifest if already read (and checked) by the caller.

    Raises:
        ArtifactError: as `read_manifest`, or the SPEC or head size differs from the model's.
    """
    manifest = read_manifest(path) if manifest is None else manifest
    weights_path = artifact_paths(path)[0]
    check_artifact_fits(manifest, model.spec, model.num_classes, model.head is not None, weights_path)
    # A model without a head (include_top=False, num_classes=0) leaves the file's head unread.
    model.build_for_any_size().load_weights(weights_path)
    return model
