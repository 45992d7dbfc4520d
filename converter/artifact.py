"""Writing an artifact: `<name>.weights.h5` and its `<name>.json` manifest, switched into place together.

Both files go into a fresh hidden version directory that replaces the previous one in one rename
(`cvt_spec.atomic.writing_together`); readers keep using `<name>.weights.h5` and `<name>.json`.
"""

import errno
import json
import math
import os
import resource
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np

from converter.mapping import MappingMismatch
from cvt_spec.artifacts import MANIFEST_FORMAT, MANIFEST_SUFFIX, WEIGHTS_SUFFIX, file_sha256
from cvt_spec.atomic import fsync_path, named_errors, write_text_file, writing_together

# What HDF5 adds beyond the raw variable bytes: per-dataset headers and the file's metadata.
H5_BYTES_PER_VARIABLE = 4096
H5_BYTES_PER_FILE = 1 << 20
OPTIMIZER_GROUP = "optimizer/"


def estimated_h5_size(model) -> int:
    """An upper estimate of a `.weights.h5` file's size in bytes, from the model's variables."""
    data = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights)
    return data + H5_BYTES_PER_VARIABLE * len(model.weights) + H5_BYTES_PER_FILE


def _size(nbytes):
    for unit in ("bytes", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000


def check_room(path: Path, nbytes: int) -> None:
    """Refuses to start a write of `nbytes` that the file size limit or the free space cannot hold.

    HDF5 does not report a full disk cleanly (h5py crashes on closing a file whose write failed),
    so the space is checked before writing starts.

    Raises:
        OSError: EFBIG or ENOSPC, naming `path`.
    """
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and limit < nbytes:
        raise OSError(errno.EFBIG, f"File too large: needs about {_size(nbytes)}, the file size limit "
                      f"(ulimit -f) is {_size(limit)}", str(path))
    info = os.statvfs(Path(path).parent)
    free = (info.f_bfree if os.geteuid() == 0 else info.f_bavail) * info.f_frsize
    if free < nbytes:
        raise OSError(errno.ENOSPC, f"No space left on device: needs about {_size(nbytes)}, "
                      f"{_size(free)} free", str(path))


def _layer_path(handle, dataset_name):
    """The layer names above a dataset `.../vars/<i>`, from the `name` Keras stores on each `vars` group."""
    parts, names = dataset_name.split("/")[:-2], []
    for depth in range(len(parts) + 1):
        group = "/".join([*parts[:depth], "vars"])
        if group in handle:
            names.append(handle[group].attrs["name"])
    return "/".join(names)


def stored_variable_names(weights_path: Path, model) -> dict:
    """{h5 dataset path: variable path in the model} of a `.weights.h5` that `model` just saved.

    Keras stores variables by position (`layers/stage_2/blocks/block/.../vars/0`); the names are the
    ones `--show-mapping` and error messages use (`stage2/block0/attn/proj_q/kernel`), so `inspect`
    shows them without Keras. Each dataset is checked against its variable's shape and values; a
    trained model's optimizer state keeps its h5 path.

    Raises:
        MappingMismatch: a dataset does not hold the variable its position names (a bug).
    """
    own = defaultdict(list)  # layer path -> its own variables, in the order Keras saves them
    for variable in model.weights:
        own[variable.path.rpartition("/")[0]].append(variable)
    prefix, names = model.name + "/", {}
    with h5py.File(weights_path, "r") as handle:
        datasets = []
        handle.visititems(lambda name, item: datasets.append(name) if isinstance(item, h5py.Dataset) else None)
        for name in datasets:
            if name.startswith(OPTIMIZER_GROUP):  # a trained model's optimizer state: not a model variable
                continue
            layer_variables = own.get(_layer_path(handle, name), [])
            index = int(name.rpartition("/")[2])
            variable = layer_variables[index] if index < len(layer_variables) else None
            if variable is None or not np.array_equal(handle[name][()], np.asarray(variable.numpy())):
                raise MappingMismatch(f"{name} in {weights_path} is not the variable its position names")
            names[name] = variable.path.removeprefix(prefix)
    return names


def write_artifact(model, out_dir, name: str, manifest: dict) -> tuple[Path, Path]:
    """Saves the model's weights and the manifest under `out_dir` as one artifact; returns both paths.

    `manifest` gets `format`, `name` and an `artifact` entry (file, sha256, size, and the name of each
    stored variable) in front. Nothing
    is left behind on failure: neither a staged file nor a directory this call created.

    Raises:
        OutputError: the artifact cannot be written (full disk, file size limit, permissions).
    """
    out_dir = Path(out_dir)
    weights_name, manifest_name = name + WEIGHTS_SUFFIX, name + MANIFEST_SUFFIX
    with writing_together(out_dir, name, (weights_name, manifest_name)) as version:
        weights = version / weights_name
        with named_errors(weights):
            check_room(weights, estimated_h5_size(model))
            model.save_weights(weights)
            fsync_path(weights)
        entry = {"file": weights_name, "sha256": file_sha256(weights), "size": weights.stat().st_size,
                 "variables": stored_variable_names(weights, model)}
        text = json.dumps({"format": MANIFEST_FORMAT, "name": name, "artifact": entry, **manifest}, indent=2)
        with named_errors(version / manifest_name):
            write_text_file(version / manifest_name, text + "\n")
    return out_dir / weights_name, out_dir / manifest_name
