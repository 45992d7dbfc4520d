"""Where `CvT(pretrained=True)` finds the converted official weights: one artifact per checkpoint.

The directory is $CVT_TF_WEIGHTS, else the user cache (~/.cache/cvt_tf, or $XDG_CACHE_HOME/cvt_tf).
"""

import os
import shlex
from pathlib import Path

from cvt_spec import PUBLISHED_AT, ArtifactNotFound, find_official
from cvt_spec.artifacts import artifact_paths

WEIGHTS_ENV = "CVT_TF_WEIGHTS"


def weights_dir() -> Path:
    """The directory holding the converted artifacts."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "cvt_tf"


def convert_command(configuration: str, resolution: int, version: str, out_dir) -> str:
    """The `convert.py` command line that writes the artifact of that official checkpoint."""
    args = ["python", "convert.py", "--config", configuration, "--res", str(resolution), "--version", version]
    return shlex.join([*args, "--out", str(out_dir)])


def pretrained_artifact(configuration: str, resolution: int, version: str) -> Path:
    """The `<dir>/<name>` stem of the artifact converted from that official checkpoint.

    Raises:
        InputError: no such official checkpoint; the message lists the seven that exist.
        ArtifactNotFound: not converted yet; the message names the file and the command to run.
    """
    official = find_official(configuration, resolution, version)
    directory = weights_dir()
    stem = directory / official.artifact_name
    for path in artifact_paths(stem):
        if not path.is_file():
            raise ArtifactNotFound(
                f"{path} not found: convert {official.file_name} (from {PUBLISHED_AT}, placed in "
                f"checkpoints/) with `{convert_command(configuration, resolution, version, directory)}`, "
                f"or set {WEIGHTS_ENV} to the directory that holds {official.artifact_name}.weights.h5"
            )
    return stem
