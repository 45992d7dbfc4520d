"""The predefined CvT variants in official SPEC form (experiments/imagenet/cvt/*.yaml).

One table serves official_ref (PyTorch) and cvt_tf (Keras).
"""

from cvt_spec.errors import SpecError
from cvt_spec.spec import normalize_spec

_COMMON = {
    "INIT": "trunc_norm",
    "NUM_STAGES": 3,
    "PATCH_SIZE": [7, 3, 3],
    "PATCH_STRIDE": [4, 2, 2],
    "PATCH_PADDING": [2, 1, 1],
    "MLP_RATIO": [4.0, 4.0, 4.0],
    "ATTN_DROP_RATE": [0.0, 0.0, 0.0],
    "DROP_RATE": [0.0, 0.0, 0.0],
    "QKV_BIAS": [True, True, True],
    "CLS_TOKEN": [False, False, True],
    "POS_EMBED": [False, False, False],
    "QKV_PROJ_METHOD": ["dw_bn", "dw_bn", "dw_bn"],
    "KERNEL_QKV": [3, 3, 3],
    "PADDING_KV": [1, 1, 1],
    "STRIDE_KV": [2, 2, 2],
    "PADDING_Q": [1, 1, 1],
    "STRIDE_Q": [1, 1, 1],
}

VARIANTS = {
    "cvt-13": {
        **_COMMON,
        "DIM_EMBED": [64, 192, 384],
        "NUM_HEADS": [1, 3, 6],
        "DEPTH": [1, 2, 10],
        "DROP_PATH_RATE": [0.0, 0.0, 0.1],
    },
    "cvt-21": {
        **_COMMON,
        "DIM_EMBED": [64, 192, 384],
        "NUM_HEADS": [1, 3, 6],
        "DEPTH": [1, 4, 16],
        "DROP_PATH_RATE": [0.0, 0.0, 0.1],
    },
    "cvt-w24": {
        **_COMMON,
        "DIM_EMBED": [192, 768, 1024],
        "NUM_HEADS": [3, 12, 16],
        "DEPTH": [2, 2, 20],
        "DROP_PATH_RATE": [0.0, 0.0, 0.3],
    },
}


def variant_spec(name: str) -> dict:
    """Returns a normalized copy of the SPEC of a predefined variant.

    Raises:
        SpecError: `name` is not a predefined variant; the message lists the valid ones.
    """
    if name not in VARIANTS:
        raise SpecError(
            f"unknown configuration {name!r}; valid: {', '.join(sorted(VARIANTS))}"
        )
    return normalize_spec(VARIANTS[name])
