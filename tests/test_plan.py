"""Planning a conversion from the CLI options: --checkpoint alone, official YAMLs, names and resolutions."""

import shutil

import pytest

from convert_cli.app import main
from convert_cli.errors import BadInput
from convert_cli.plan import plan_conversion
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import normalize_spec, variant_spec
from tests.conftest import run_cli, tiny_spec

# The layout of microsoft/CvT's experiments/imagenet/cvt/*.yaml, trimmed to the parts read here.
OFFICIAL_YAML = """\
OUTPUT_DIR: 'OUTPUT/'
MODEL:
  NAME: cls_cvt
  SPEC:
    INIT: 'trunc_norm'
    NUM_STAGES: 3
    PATCH_SIZE: [7, 3, 3]
    PATCH_STRIDE: [4, 2, 2]
    PATCH_PADDING: [2, 1, 1]
    DIM_EMBED: [64, 192, 384]
    NUM_HEADS: [1, 3, 6]
    DEPTH: [1, 2, 10]
    MLP_RATIO: [4.0, 4.0, 4.0]
    ATTN_DROP_RATE: [0.0, 0.0, 0.0]
    DROP_RATE: [0.0, 0.0, 0.0]
    DROP_PATH_RATE: [0.0, 0.0, 0.1]
    QKV_BIAS: [True, True, True]
    CLS_TOKEN: [False, False, True]
    POS_EMBED: [False, False, False]
    QKV_PROJ_METHOD: ['dw_bn', 'dw_bn', 'dw_bn']
    KERNEL_QKV: [3, 3, 3]
    PADDING_KV: [1, 1, 1]
    STRIDE_KV: [2, 2, 2]
    PADDING_Q: [1, 1, 1]
    STRIDE_Q: [1, 1, 1]
AUG:
  MIXUP_PROB: 1.0
TEST:
  BATCH_SIZE_PER_GPU: 32
  IMAGE_SIZE: [384, 384]
  INTERPOLATION: 3
TRAIN:
  BATCH_SIZE_PER_GPU: 128
  IMAGE_SIZE: [384, 384]
"""


def _plan(*args):
    """The Conversion `python convert.py ARGS` would run."""
    context = main.make_context("convert.py", [str(arg) for arg in args])
    return plan_conversion(context.params)


@pytest.fixture(scope="module")
def cvt13_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoints") / "CvT-13-384x384-IN-22k.pth"
    save_checkpoint(synthetic_state_dict(variant_spec("cvt-13"), 1000), path)
    return path


def test_checkpoint_alone_is_recognised(cvt13_checkpoint):
    job = _plan("--checkpoint", cvt13_checkpoint)
    assert job.spec == variant_spec("cvt-13") and job.configuration == "cvt-13"
    assert (job.name, job.resolution, job.num_classes) == ("cvt-13-384x384_22k", (384, 384), 1000)
    assert job.checkpoint == cvt13_checkpoint
    assert job.spec_source == "recognised from the weights of CvT-13-384x384-IN-22k.pth"


def test_a_name_without_resolution_needs_res(cvt13_checkpoint, tmp_path):
    renamed = tmp_path / "mine.pth"
    shutil.copy(cvt13_checkpoint, renamed)
    with pytest.raises(BadInput, match=r"mine.pth: recognised cvt-13, but the name mine.pth does not say .*--res"):
        _plan("--checkpoint", renamed)
    job = _plan("--checkpoint", renamed, "--res", "320", "--version", "1k")
    assert (job.name, job.resolution) == ("cvt-13-320x320_1k", (320, 320))


def test_num_classes_must_match_the_head(cvt13_checkpoint):
    with pytest.raises(BadInput, match="--num-classes 10: .*CvT-13-384x384-IN-22k.pth has a head of 1000 classes"):
        _plan("--checkpoint", cvt13_checkpoint, "--num-classes", "10")


def test_unknown_weights_name_the_nearest_variant(tmp_path):
    path = tmp_path / "tiny-64x64.pth"
    save_checkpoint(synthetic_state_dict(normalize_spec(tiny_spec()), 10), path)
    with pytest.raises(BadInput, match=r"tiny-64x64.pth: the weights fit no predefined variant \(nearest cvt-13"):
        _plan("--checkpoint", path)


def test_config_reads_resolution_and_version_from_the_checkpoint_name(tmp_path):
    checkpoint = tmp_path / "CvT-21-384x384-IN-22k.pth"
    checkpoint.write_bytes(b"planning reads only the name")
    job = _plan("--config", "cvt-21", "--checkpoint", checkpoint)
    assert (job.name, job.resolution) == ("cvt-21-384x384_22k", (384, 384))
    assert _plan("--config", "cvt-21", "--synthetic").name == "cvt-21-224x224_1k"


def test_official_experiment_yaml_is_a_spec(tmp_path):
    path = tmp_path / "cvt-13-384x384.yaml"
    path.write_text(OFFICIAL_YAML)
    checkpoint = tmp_path / "x.pth"
    checkpoint.write_bytes(b"planning reads only the name")
    job = _plan("--spec", path, "--checkpoint", checkpoint)
    assert job.spec == variant_spec("cvt-13") and job.configuration == "cvt-13"
    assert (job.name, job.resolution, job.num_classes) == ("cvt-13-384x384", (384, 384), 1000)
    assert job.spec_source == "--spec cvt-13-384x384.yaml"
    assert _plan("--spec", path, "--show-mapping").checkpoint is None


def test_nothing_to_convert_says_what_to_give():
    with pytest.raises(BadInput, match="nothing to convert: give --config NAME, --spec FILE, --checkpoint FILE"):
        _plan("--out", "x")


def test_cli_recognises_a_checkpoint_for_show_mapping(cvt13_checkpoint, tmp_path):
    result = run_cli("--checkpoint", cvt13_checkpoint, "--show-mapping", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "# 420 rows; ignored: 39 BatchNorm num_batches_tracked"
