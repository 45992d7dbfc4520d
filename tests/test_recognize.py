"""Recognition of a checkpoint from its keys, shapes and file name, against the official key lists."""

import pytest

from converter.layout import official_shapes
from cvt_spec import OFFICIAL_CHECKPOINTS, normalize_spec, variant_spec
from cvt_spec.recognize import (
    RecognitionError,
    checkpoint_signature,
    recognize,
    recognize_variant,
    resolution_from_name,
    version_from_name,
)
from tests.conftest import tiny_spec
from tests.test_official_layout import official_key_file


def _shapes(spec, num_classes=1000):
    return {key: shape for key, (shape, _) in official_shapes(normalize_spec(spec), num_classes).items()}


@pytest.mark.parametrize(("key_file", "variant"), [
    ("cvt-13-224", "cvt-13"), ("cvt-21-384", "cvt-21"), ("cvt-w24-384", "cvt-w24"),
])
def test_official_key_lists_are_recognised(key_file, variant):
    shapes = {key: shape for key, shape, _ in official_key_file(key_file)}
    name, spec, num_classes = recognize_variant(shapes)
    assert (name, num_classes) == (variant, 1000)
    assert spec == variant_spec(variant)


def test_signature_reads_every_derivable_field():
    spec = tiny_spec(
        MLP_RATIO=[4.0, 2.0, 3.0], QKV_BIAS=[True, False, True], CLS_TOKEN=[False, True, True],
        KERNEL_QKV=[3, 5, 3], PADDING_Q=[1, 2, 1], PATCH_SIZE=[7, 3, 5],
    )
    signature = checkpoint_signature(_shapes(spec, num_classes=10))
    assert signature == {
        "NUM_STAGES": 3, "DIM_EMBED": [16, 32, 48], "DEPTH": [1, 1, 2], "PATCH_SIZE": [7, 3, 5],
        "MLP_RATIO": [4.0, 2.0, 3.0], "QKV_BIAS": [True, False, True], "CLS_TOKEN": [False, True, True],
        "QKV_PROJ_METHOD": ["dw_bn"] * 3, "KERNEL_QKV": [3, 5, 3], "num_classes": 10,
    }


def test_headless_checkpoint_has_zero_classes():
    assert checkpoint_signature(_shapes(tiny_spec(), num_classes=0))["num_classes"] == 0


def test_a_custom_table_is_matched_and_an_odd_mlp_ratio_survives():
    spec = tiny_spec(MLP_RATIO=2.66)  # hidden widths int(16*2.66)=42, 85, 127
    name, found, _ = recognize_variant(_shapes(spec), variants={"odd": spec, "tiny": tiny_spec()})
    assert name == "odd" and found["MLP_RATIO"] == [2.66] * 3


def test_weights_that_fit_no_variant_name_the_nearest_and_the_difference():
    shapes = _shapes(dict(variant_spec("cvt-13"), DEPTH=[1, 3, 10]))
    with pytest.raises(RecognitionError, match=r"nearest cvt-13 differs in: DEPTH \[1, 3, 10\] \(not \[1, 2, 10\]\)"):
        recognize_variant(shapes)


def test_weights_cannot_tell_heads_apart():
    table = {"a": tiny_spec(), "b": tiny_spec(NUM_HEADS=[2, 4, 6])}
    with pytest.raises(RecognitionError, match="fit a, b alike"):
        recognize_variant(_shapes(tiny_spec()), variants=table)


def test_weights_cannot_tell_avg_from_linear():
    avg = tiny_spec(QKV_PROJ_METHOD=["avg", "dw_bn", "dw_bn"])
    linear = tiny_spec(QKV_PROJ_METHOD=["linear", "dw_bn", "dw_bn"])
    assert checkpoint_signature(_shapes(avg))["QKV_PROJ_METHOD"][0] == "avg or linear"
    with pytest.raises(RecognitionError, match="fit avg, linear alike"):
        recognize_variant(_shapes(avg), variants={"avg": avg, "linear": linear})


@pytest.mark.parametrize(("shapes", "message"), [
    ({"conv1.weight": (64, 3, 7, 7)}, "not a CvT state dict .it starts with conv1.weight"),
    ({}, "no keys at all"),
    ({"stage0.patch_embed.proj.weight": (16, 1, 7, 7)}, "takes 1 input channels, expected 3"),
])
def test_foreign_state_dicts_are_refused(shapes, message):
    with pytest.raises(RecognitionError, match=message):
        checkpoint_signature(shapes)


def test_a_missing_block_is_named():
    shapes = {k: v for k, v in _shapes(tiny_spec(DEPTH=[1, 1, 3])).items() if not k.startswith("stage2.blocks.1.")}
    with pytest.raises(RecognitionError, match=r"stage2 has blocks \[0, 2\]"):
        checkpoint_signature(shapes)


@pytest.mark.parametrize("official", OFFICIAL_CHECKPOINTS, ids=lambda c: c.file_name)
def test_official_file_names_give_resolution_version_and_artifact_name(official):
    shapes = _shapes(variant_spec(official.variant))
    recognized = recognize(f"/some/dir/{official.file_name}", shapes)
    assert recognized.resolution == (official.resolution, official.resolution)
    assert recognized.version == official.version
    assert recognized.name == official.artifact_name
    assert recognized.variant == official.variant and recognized.num_classes == 1000


@pytest.mark.parametrize(("name", "resolution", "version"), [
    ("CvT-13-97x113.pth", (97, 113), None),
    ("cvt21_384X384_in22k.safetensors", (384, 384), "22k"),
    ("model-IN-1k.pth", None, "1k"),
    ("cvt-13-in1k.pth", None, "1k"),
    ("cvt-13-v2.pth", None, None),
    ("cvt-13-2240x2240.pth", (2240, 2240), None),
])
def test_names(name, resolution, version):
    assert resolution_from_name(name) == resolution
    assert version_from_name(name) == version


def test_two_resolutions_in_a_name_are_ambiguous():
    with pytest.raises(RecognitionError, match=r"several resolutions \(224x224, 384x384\); pass --res"):
        resolution_from_name("cvt-13-224x224-ft-384x384.pth")


def test_resolution_must_come_from_name_or_argument():
    shapes = _shapes(variant_spec("cvt-21"))
    with pytest.raises(RecognitionError, match="recognised cvt-21, but the name my-model.pth does not say"):
        recognize("my-model.pth", shapes)
    recognized = recognize("my-model.pth", shapes, resolution=(320, 320))
    assert recognized.name == "cvt-21-320x320" and recognized.version is None
