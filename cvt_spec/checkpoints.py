"""The seven official CvT checkpoints and the artifact names they convert to.

File names and top-1 accuracies (ImageNet-1k validation set, in %) as published by microsoft/CvT;
the 22k files carry 1000-class heads (fine-tuned on 1k).
"""

from dataclasses import dataclass
from pathlib import Path

from cvt_spec.errors import InputError

PUBLISHED_AT = "the microsoft/CvT README (OneDrive 'CvT' model zoo)"


@dataclass(frozen=True)
class OfficialCheckpoint:
    variant: str
    resolution: int
    version: str
    top1: float  # the README's "Main results" tables
    num_classes: int = 1000

    @property
    def file_name(self) -> str:
        number = self.variant.split("-", 1)[1]
        res = f"{self.resolution}x{self.resolution}"
        return f"CvT-{number}-{res}-IN-{self.version}.pth"

    @property
    def artifact_name(self) -> str:
        res = f"{self.resolution}x{self.resolution}"
        return f"{self.variant}-{res}_{self.version}"


OFFICIAL_CHECKPOINTS = (
    OfficialCheckpoint("cvt-13", 224, "1k", 81.6),
    OfficialCheckpoint("cvt-13", 384, "1k", 83.0),
    OfficialCheckpoint("cvt-13", 384, "22k", 83.3),
    OfficialCheckpoint("cvt-21", 224, "1k", 82.5),
    OfficialCheckpoint("cvt-21", 384, "1k", 83.3),
    OfficialCheckpoint("cvt-21", 384, "22k", 84.9),
    # The README's table says 87.6; its introduction (and the paper's abstract) round it to 87.7.
    OfficialCheckpoint("cvt-w24", 384, "22k", 87.6),
)


def find_official(variant: str, resolution: int, version: str) -> "OfficialCheckpoint":
    """Returns the official checkpoint of that variant, resolution and version.

    Raises:
        InputError: no such checkpoint was published; the message lists the seven that were.
    """
    for checkpoint in OFFICIAL_CHECKPOINTS:
        if (checkpoint.variant, checkpoint.resolution, checkpoint.version) == (
            variant,
            resolution,
            version,
        ):
            return checkpoint
    valid = ", ".join(c.artifact_name for c in OFFICIAL_CHECKPOINTS)
    raise InputError(
        f"no official checkpoint for {variant} at {resolution} ({version}); "
        f"the published ones are: {valid}"
    )


def official_of_artifact(manifest: dict) -> "OfficialCheckpoint | None":
    """The official checkpoint an artifact was converted from (by its source file name), or None."""
    source = (manifest.get("source") or {}).get("file")
    return next((official for official in OFFICIAL_CHECKPOINTS if official.file_name == source), None)


def locate_official(checkpoint_dir) -> tuple[list, list]:
    """([(OfficialCheckpoint, path)] found, [path] missing) for the seven file names in `checkpoint_dir`."""
    found, missing = [], []
    for official in OFFICIAL_CHECKPOINTS:
        path = Path(checkpoint_dir) / official.file_name
        if path.is_file():
            found.append((official, path))
        else:
            missing.append(path)
    return found, missing
