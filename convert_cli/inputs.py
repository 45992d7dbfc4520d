"""Checks of the paths and names given on the command line, run before torch or TensorFlow is imported.

Each failure is a BadInput naming the option or the file, and what is wrong with it.
"""

import importlib.util
import os
import re
from pathlib import Path

from convert_cli.errors import BadInput
from cvt_spec import InputFileError
from cvt_spec.files import check_input_file

# Names become file names inside --out: no separators, no leading dot (temporary files start with one).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


def check_artifact_name(name: str, source: str = "--name") -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise BadInput(
            f"{source}: an artifact name must be 1-128 letters, digits, '.', '_', '+' or '-', starting "
            f"with a letter or digit (it becomes a file name in --out), got {name!r}"
            + ("" if source == "--name" else "; pass --name")
        )


def check_checkpoint_file(path) -> None:
    try:
        check_input_file(path, kind="checkpoint")
    except InputFileError as error:
        raise BadInput(str(error)) from None


def _not_writable(directory):
    if os.access(directory, os.W_OK | os.X_OK):
        return None
    read_only = os.statvfs(directory).f_flag & os.ST_RDONLY
    return "read-only file system" if read_only else "permission denied"


def check_output_dir(out_dir) -> None:
    """Checks that `out_dir` is a writable directory, or can be created; creates nothing."""
    out_dir = Path(out_dir)
    existing = out_dir
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing == out_dir:
        if not out_dir.is_dir():
            raise BadInput(f"--out {out_dir}: is not a directory")
        reason = _not_writable(out_dir)
        if reason:
            raise BadInput(f"--out {out_dir}: cannot write there ({reason})")
        return
    if not existing.is_dir():
        raise BadInput(f"--out {out_dir}: cannot create it, {existing} is not a directory")
    reason = _not_writable(existing)
    if reason:
        raise BadInput(f"--out {out_dir}: cannot create it in {existing} ({reason})")


def require_package(module: str, what: str, package: str, extra: str) -> None:
    """Refuses, naming the extra to install, when `what` needs `module` and it is not installed."""
    if importlib.util.find_spec(module) is None:
        raise BadInput(f"{what} needs {package}, which is not installed: pip install 'cvt-convert[{extra}]'")


def require_pytorch(what: str) -> None:
    require_package("torch", what, "the PyTorch reference", "convert")
