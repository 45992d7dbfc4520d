"""Keeping a conversion's memory near one copy of the weights: glibc and TensorFlow settings, collection.

`prefer_returning_memory` changes process-wide settings: the CLI calls it once, before TensorFlow loads.
"""

import ctypes
import gc
import os

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter
MMAP_THRESHOLD_BYTES = 1 << 20
TF_SYSTEM_ALLOCATOR = "TF_ONEDNN_USE_SYSTEM_ALLOCATOR"


def _glibc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc: the allocator returns memory on its own schedule


def prefer_returning_memory() -> None:
    """Makes freed weight- and activation-sized blocks go back to the system at once (process-wide).

    glibc gives every block of 1 MB or more its own mapping, returned when freed. By default it
    raises that threshold each time such a block is freed (up to 32 MB), after which weight-sized
    blocks come from the heap and stay there. TensorFlow, if not imported yet, allocates through
    glibc too instead of its oneDNN pool, which keeps the largest working set it has seen (figures in
    the README, "Releases"). A user's own TF_ONEDNN_USE_SYSTEM_ALLOCATOR=0 keeps the pool.
    """
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    os.environ.setdefault(TF_SYSTEM_ALLOCATOR, "1")


def release_memory() -> None:
    """Collects dropped tensors and hands glibc's free heap back to the system (elsewhere a no-op)."""
    gc.collect()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
