"""The CvT variant table, SPEC validation, the per-stage rules and the artifact files, shared by every part.

Plain Python: importing it pulls in neither PyTorch nor TensorFlow.
"""

from cvt_spec.checkpoints import (
    OFFICIAL_CHECKPOINTS,
    PUBLISHED_AT,
    OfficialCheckpoint,
    find_official,
    locate_official,
)
from cvt_spec.errors import (
    ArtifactError,
    ArtifactNotFound,
    CheckFailed,
    CvtError,
    InputError,
    InputFileError,
    OutputError,
    RecognitionError,
    SpecError,
)
from cvt_spec.spec import PER_STAGE_KEYS, normalize_spec
from cvt_spec.stages import StageSpec, check_input_size, stage_specs
from cvt_spec.variants import VARIANTS, variant_spec

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "PER_STAGE_KEYS",
    "PUBLISHED_AT",
    "VARIANTS",
    "ArtifactError",
    "ArtifactNotFound",
    "CheckFailed",
    "CvtError",
    "InputError",
    "InputFileError",
    "OfficialCheckpoint",
    "OutputError",
    "RecognitionError",
    "SpecError",
    "StageSpec",
    "check_input_size",
    "find_official",
    "locate_official",
    "normalize_spec",
    "stage_specs",
    "variant_spec",
]
