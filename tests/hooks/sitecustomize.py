"""Test-only fault injection for convert.py subprocesses; tests/corpus.py puts this folder on PYTHONPATH.

CVT_TEST_PAUSE_WRITE=FILE: h5py stops for good after CVT_TEST_PAUSE_AFTER datasets, having flushed
them and written the file's name to FILE, so a test can SIGKILL the writer mid-write.
CVT_TEST_BUG=1: converter.manifest.library_versions raises, a bug after TensorFlow is loaded.
Patches are applied right after the module's own import, so the import order is not changed.
"""

import importlib.abc
import importlib.util
import os
import sys
import time


class _AfterImport(importlib.abc.MetaPathFinder):
    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        execute = spec.loader.exec_module

        def exec_and_patch(module):
            execute(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def _pause_h5py_writes(h5py):
    ready, after = os.environ["CVT_TEST_PAUSE_WRITE"], int(os.environ.get("CVT_TEST_PAUSE_AFTER", "10"))
    original = h5py.Group.__setitem__
    written = []

    def setitem_then_pause(group, name, value):
        original(group, name, value)
        written.append(name)
        if len(written) == after:
            group.file.flush()
            with open(ready + ".part", "w") as handle:
                handle.write(group.file.filename)
            os.replace(ready + ".part", ready)
            time.sleep(3600)

    h5py.Group.__setitem__ = setitem_then_pause


def _break_library_versions(manifest):
    def library_versions():
        raise KeyError("injected bug")

    manifest.library_versions = library_versions


if os.environ.get("CVT_TEST_PAUSE_WRITE"):
    sys.meta_path.insert(0, _AfterImport("h5py", _pause_h5py_writes))
if os.environ.get("CVT_TEST_BUG"):
    sys.meta_path.insert(0, _AfterImport("converter.manifest", _break_library_versions))
