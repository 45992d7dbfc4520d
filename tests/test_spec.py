"""SPEC validation: every bad SPEC is refused with the key and the value named."""

import pytest

from cvt_spec import VARIANTS, SpecError, normalize_spec, variant_spec
from tests.conftest import TINY_SPEC, tiny_spec


def test_variants_are_valid_and_normalized():
    for name in VARIANTS:
        spec = variant_spec(name)
        assert spec["NUM_STAGES"] == 3
        assert all(len(spec[key]) == 3 for key in ("DEPTH", "DIM_EMBED", "CLS_TOKEN"))


def test_unknown_variant_lists_valid_ones():
    with pytest.raises(ValueError, match="cvt-13, cvt-21, cvt-w24"):
        variant_spec("cvt-99")


def test_scalars_are_repeated_and_rates_default_to_zero():
    spec = normalize_spec(tiny_spec(MLP_RATIO=2, QKV_BIAS=False))
    assert spec["MLP_RATIO"] == [2.0, 2.0, 2.0]
    assert spec["QKV_BIAS"] == [False, False, False]
    assert spec["DROP_PATH_RATE"] == [0.0, 0.0, 0.0]
    assert spec["INIT"] == "trunc_norm"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"DEPTH": [1, 1]}, "DEPTH has 2 values, NUM_STAGES is 3"),
        ({"DIM_EMBED": [16, 31, 48]}, "divisible by NUM_HEADS"),
        ({"QKV_PROJ_METHOD": ["dw_bn", "conv", "dw_bn"]}, "QKV_PROJ_METHOD values must be one of"),
        ({"STRIDE_Q": [1, 2, 1]}, "size-preserving query projection"),
        ({"PADDING_KV": [2, 1, 1], "QKV_PROJ_METHOD": ["avg", "dw_bn", "dw_bn"]}, "PADDING_KV <= KERNEL_QKV/2"),
        ({"CLS_TOKEN": [0, 0, 1]}, "CLS_TOKEN must hold true/false"),
        ({"PATCH_SIZE": [7, 0, 3]}, "PATCH_SIZE must hold integers >= 1"),
        ({"DROP_PATH_RATE": [0, 0, 1.0]}, "DROP_PATH_RATE must be below 1"),
        ({"INIT": "kaiming"}, "INIT must be one of"),
        ({"WIDTH": 3}, "unknown SPEC keys \\['WIDTH'\\]"),
    ],
)
def test_bad_specs_name_key_and_value(overrides, message):
    with pytest.raises(SpecError, match=message):
        normalize_spec(tiny_spec(**overrides))


def test_missing_keys_are_listed_together():
    spec = {k: v for k, v in TINY_SPEC.items() if k not in ("DEPTH", "NUM_HEADS")}
    with pytest.raises(SpecError, match=r"missing required keys \['DEPTH', 'NUM_HEADS'\]"):
        normalize_spec(spec)
