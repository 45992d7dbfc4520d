"""SPEC options that parity on synthetic weights cannot see: INIT, the drop-path rule, YAML files."""

import numpy as np
import pytest
import torch

from cvt_spec import normalize_spec
from cvt_spec.files import read_spec_file
from tests.conftest import TINY_SPEC, run_cli, tiny_spec

EXPERIMENT_YAML = """\
MODEL:
  NAME: cls_cvt
  NUM_CLASSES: 7
  SPEC:
    INIT: 'xavier'
    NUM_STAGES: 2
    PATCH_SIZE: [7, 3]
    PATCH_STRIDE: [4, 2]
    PATCH_PADDING: [2, 1]
    DIM_EMBED: [16, 32]
    NUM_HEADS: [1, 2]
    DEPTH: [1, 2]
    MLP_RATIO: [4.0, 4.0]
    ATTN_DROP_RATE: [0.0, 0.0]
    DROP_RATE: [0.0, 0.0]
    DROP_PATH_RATE: [0.0, 0.1]
    QKV_BIAS: [True, True]
    CLS_TOKEN: [False, True]
    POS_EMBED: [False, False]
    QKV_PROJ_METHOD: ['dw_bn', 'avg']
    KERNEL_QKV: [3, 3]
    PADDING_KV: [1, 1]
    STRIDE_KV: [2, 2]
    PADDING_Q: [1, 1]
    STRIDE_Q: [1, 1]
TRAIN:
  IMAGE_SIZE: [72, 56]
TEST:
  IMAGE_SIZE: [72, 56]
"""


def _linear_std(init, framework):
    spec = normalize_spec(tiny_spec(INIT=init, DIM_EMBED=[16, 32, 96]))
    if framework == "torch":
        from official_ref.model import ConvolutionalVisionTransformer

        torch.manual_seed(0)
        model = ConvolutionalVisionTransformer(spec, 10)
        return float(model.stage2.blocks[0].mlp.fc1.weight.detach().std())
    from cvt_tf import CvT

    model = CvT(spec=spec, num_classes=10)
    model.build((None, 64, 64, 3))
    return float(np.std(model.stages[2].blocks[0].mlp.fc1.kernel.numpy()))


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_init_option_is_honoured(framework):
    # fc1 of stage 2 is 96 -> 384: trunc_norm has std 0.02, xavier sqrt(2 / (96 + 384)) = 0.0645.
    assert _linear_std("trunc_norm", framework) == pytest.approx(0.02, rel=0.05)
    assert _linear_std("xavier", framework) == pytest.approx((2 / 480) ** 0.5, rel=0.05)


def test_drop_path_rates_follow_the_official_linear_rule():
    from cvt_tf import CvT
    from official_ref.model import ConvolutionalVisionTransformer

    spec = normalize_spec(tiny_spec(DEPTH=[1, 2, 4], DROP_PATH_RATE=[0.0, 0.2, 0.3]))
    reference = ConvolutionalVisionTransformer(spec, 10)
    model = CvT(spec=spec, num_classes=10)
    for i in range(3):
        expected = [getattr(block.drop_path, "drop_prob", 0.0) for block in getattr(reference, f"stage{i}").blocks]
        actual = [block.drop_path.rate for block in model.stages[i].blocks]
        np.testing.assert_allclose(actual, expected, rtol=1e-6)
    assert actual == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_experiment_yaml_gives_spec_classes_and_size(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT_YAML)
    spec_file = read_spec_file(path)
    assert spec_file.num_classes == 7
    assert spec_file.image_size == (56, 72)  # the official IMAGE_SIZE is width, height
    assert spec_file.spec["QKV_PROJ_METHOD"] == ["dw_bn", "avg"]
    bare = tmp_path / "bare.yaml"
    bare.write_text("\n".join(f"{k}: {v}" for k, v in TINY_SPEC.items()))
    assert read_spec_file(bare).spec == normalize_spec(TINY_SPEC)


def test_experiment_yaml_converts_through_the_cli(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(EXPERIMENT_YAML)
    result = run_cli("--spec", path, "--synthetic", "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "parity PASSED" in result.stdout
    assert "2x14x18x16" in result.stdout  # stage0 grid of a 56x72 input
    assert (tmp_path / "out" / "exp.weights.h5").is_file()
