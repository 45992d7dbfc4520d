"""Crash-safe writing into an output directory: temporary names, stale temporaries, space checks.

A file is written as `.NAME.tmp<pid>SUFFIX` beside its final name and renamed into place when complete.
"""

import errno
import math
import os
import re
import resource
from pathlib import Path

import numpy as np

TEMP_NAME = re.compile(r"\.(?P<name>.+)\.tmp(?P<pid>[0-9]+)(?P<suffix>\.weights\.h5|\.json)")
# What HDF5 adds beyond the raw variable bytes: per-dataset headers and the file's metadata.
H5_BYTES_PER_VARIABLE = 4096
H5_BYTES_PER_FILE = 1 << 20


def temp_path(out_dir, name, suffix):
    return Path(out_dir) / f".{name}.tmp{os.getpid()}{suffix}"


def _process_alive(pid):
    if pid == os.getpid():
        return False  # an earlier process with our pid; this one has not started writing yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def remove_stale_temps(out_dir):
    """Deletes the temporary files of writers that died mid-write (e.g. SIGKILL); returns their names.

    Only files of this module's naming pattern whose process no longer runs are touched.
    """
    removed = []
    for path in Path(out_dir).iterdir():
        match = TEMP_NAME.fullmatch(path.name)
        if match and path.is_file() and not _process_alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def make_dirs(out_dir):
    """Creates `out_dir` and missing parents; returns the ones created, deepest first."""
    created = []
    path = Path(out_dir)
    while not path.exists():
        created.append(path)
        path = path.parent
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return created


def remove_empty_dirs(paths):
    for path in paths:
        try:
            path.rmdir()
        except OSError:
            return  # not empty (another writer) or already gone


def estimated_h5_size(model):
    """An upper estimate of a `.weights.h5` file's size in bytes, from the model's variables."""
    data = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in model.weights)
    return data + H5_BYTES_PER_VARIABLE * len(model.weights) + H5_BYTES_PER_FILE


def check_room(path, nbytes):
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


def _size(nbytes):
    for unit in ("bytes", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000


def fsync_dir(path):
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
