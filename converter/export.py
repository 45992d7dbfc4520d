"""Writing a release artifact: `<name>.weights.h5` and its `<name>.json` manifest, atomically.

Both are written to temporary files in the output directory and renamed into place.
"""

import json
import os
import platform
from pathlib import Path

from converter.safe_write import (
    check_room,
    estimated_h5_size,
    fsync_dir,
    make_dirs,
    remove_empty_dirs,
    remove_stale_temps,
    temp_path,
)
from cvt_tf.artifact import MANIFEST_SUFFIX, WEIGHTS_SUFFIX, file_sha256

MANIFEST_FORMAT = "cvt-convert artifact v1"


def library_versions():
    import h5py
    import keras
    import numpy
    import tensorflow
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "tensorflow": tensorflow.__version__, "keras": keras.__version__,
        "numpy": numpy.__version__, "h5py": h5py.__version__,
    }


def _fsync_write(path, text):
    with open(path, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def write_artifact(model, out_dir, name, manifest):
    """Saves the model's weights and the manifest under `out_dir`; returns both paths.

    `manifest` gets an `artifact` entry (file, sha256, size). Nothing is left behind on failure:
    neither a temporary file nor a directory this call created. Temporary files of writers that
    were killed mid-write are removed first. The manifest is renamed into place last; a reader
    checks the weights against its sha256.
    """
    out_dir = Path(out_dir)
    weights_path = out_dir / (name + WEIGHTS_SUFFIX)
    manifest_path = out_dir / (name + MANIFEST_SUFFIX)
    temp_weights = temp_path(out_dir, name, WEIGHTS_SUFFIX)
    temp_manifest = temp_path(out_dir, name, MANIFEST_SUFFIX)
    created = make_dirs(out_dir)
    written, target = False, weights_path
    try:
        remove_stale_temps(out_dir)
        check_room(weights_path, estimated_h5_size(model))
        model.save_weights(temp_weights)
        with open(temp_weights, "rb+") as handle:
            os.fsync(handle.fileno())
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "artifact": {
                "file": weights_path.name,
                "sha256": file_sha256(temp_weights),
                "size": temp_weights.stat().st_size,
            },
            **manifest,
        }
        target = manifest_path
        _fsync_write(temp_manifest, json.dumps(manifest, indent=2) + "\n")
        os.replace(temp_weights, weights_path)
        os.replace(temp_manifest, manifest_path)
        fsync_dir(out_dir)
        written = True
    except OSError as error:
        if error.filename in (None, str(temp_weights), str(temp_manifest)):
            error.filename = str(target)  # name the file the user asked for, not our temporary one
        raise
    finally:
        for temp in (temp_weights, temp_manifest):
            temp.unlink(missing_ok=True)
        if not written:
            remove_empty_dirs(created)
    return weights_path, manifest_path
