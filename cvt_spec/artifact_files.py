"""File names and digests of a converted artifact: `<name>.weights.h5` beside `<name>.json`.

Plain Python, so `convert.py inspect` can use them without importing Keras.
"""

import hashlib
from pathlib import Path

WEIGHTS_SUFFIX = ".weights.h5"
MANIFEST_SUFFIX = ".json"


def artifact_paths(path):
    """(weights, manifest) paths of an artifact given either file or their common stem."""
    path = Path(path)
    stem = path.name
    for suffix in (WEIGHTS_SUFFIX, MANIFEST_SUFFIX):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return path.with_name(stem + WEIGHTS_SUFFIX), path.with_name(stem + MANIFEST_SUFFIX)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
