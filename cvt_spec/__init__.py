"""The CvT variant table and SPEC validation, shared by both implementations.

Plain Python: importing it pulls in neither PyTorch nor TensorFlow.
"""

from cvt_spec.checkpoints import (
    OFFICIAL_CHECKPOINTS,
    PUBLISHED_AT,
    OfficialCheckpoint,
    find_official,
    locate_official,
)
from cvt_spec.spec import PER_STAGE_KEYS, SpecError, check_input_size, normalize_spec
from cvt_spec.variants import VARIANTS, variant_spec

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "PER_STAGE_KEYS",
    "VARIANTS",
    "PUBLISHED_AT",
    "OfficialCheckpoint",
    "SpecError",
    "check_input_size",
    "find_official",
    "locate_official",
    "normalize_spec",
    "variant_spec",
]
