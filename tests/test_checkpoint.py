"""Safe checkpoint loading and the one check of the official layout (key accounting both ways, dtypes, NaN)."""

import collections

import numpy as np
import pytest
import torch

from converter.checkpoint import CheckpointError, load_checkpoint
from converter.layout import HeadMismatch, LayoutError, check_state_dict
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import normalize_spec
from tests.conftest import tiny_spec
from tests.corpus import MALFORMED_STATE_DICTS


@pytest.fixture(scope="module")
def state_dict(spec):
    return synthetic_state_dict(spec, 10, seed=3)


def _tensors(state_dict):
    return {key: torch.from_numpy(np.asarray(value)) for key, value in state_dict.items()}


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": sd, "epoch": 3},
        lambda sd: collections.OrderedDict(("module." + k, v) for k, v in sd.items()),
        lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}},
    ],
    ids=["bare", "state_dict", "model", "module_prefix", "nested_module"],
)
def test_wrappers_are_unwrapped(tmp_path, state_dict, wrap):
    path = tmp_path / "ckpt.pth"
    torch.save(wrap(_tensors(state_dict)), path)
    loaded = load_checkpoint(path)
    assert sorted(loaded) == sorted(state_dict)
    for key, value in state_dict.items():
        np.testing.assert_array_equal(loaded[key], value)


def test_safetensors_file_is_accepted(tmp_path, state_dict):
    from safetensors.torch import save_file

    path = tmp_path / "ckpt.safetensors"
    save_file({k: v.contiguous() for k, v in _tensors(state_dict).items()}, str(path))
    loaded = load_checkpoint(path)
    np.testing.assert_array_equal(loaded["head.weight"], state_dict["head.weight"])


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pth"
    torch.save({"head.weight": Exploit()}, path)
    with pytest.raises(CheckpointError, match="not a safe torch checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096)), "not a"),
    ],
    ids=["missing", "directory", "empty", "random_bytes"],
)
def test_unreadable_files_name_the_file(tmp_path, make, message):
    path = tmp_path / "bad.pth"
    make(path)
    with pytest.raises(CheckpointError, match=message) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)


def test_round_trip_through_a_pth_file(tmp_path, state_dict):
    path = tmp_path / "ckpt.pth"
    save_checkpoint(state_dict, path)
    loaded = load_checkpoint(path)
    assert loaded["stage0.blocks.0.attn.conv_proj_q.bn.num_batches_tracked"].dtype == np.int64


def test_one_error_lists_every_missing_unexpected_and_mismatched_name(spec, state_dict):
    broken = dict(state_dict)
    del broken["stage1.blocks.0.mlp.fc1.bias"]
    del broken["norm.weight"]
    broken["stage9.extra.weight"] = np.zeros((2, 2), np.float32)
    broken["head.bias"] = np.zeros(11, np.float32)
    with pytest.raises(LayoutError) as error:
        check_state_dict(broken, spec, 10)
    message = str(error.value)
    assert "(2 missing in checkpoint, 1 unexpected in checkpoint, 1 shape mismatch)" in message
    assert "missing in checkpoint: stage1.blocks.0.mlp.fc1.bias" in message
    assert "missing in checkpoint: norm.weight" in message
    assert "unexpected in checkpoint: stage9.extra.weight (2, 2)" in message
    assert "shape mismatch: head.bias is (11,), expected (10,)" in message


def test_checkpoint_of_another_variant_is_refused(spec, state_dict):
    other = normalize_spec(tiny_spec(DEPTH=[1, 1, 3]))
    with pytest.raises(LayoutError, match="missing in checkpoint: stage2.blocks.2.norm1.weight"):
        check_state_dict(dict(state_dict), other, 10)


def test_non_finite_and_integer_weights_are_refused(spec, state_dict):
    broken = dict(state_dict, **{"stage0.patch_embed.proj.bias": np.full(16, np.nan, np.float32)})
    with pytest.raises(LayoutError, match="stage0.patch_embed.proj.bias has 16 NaN and 0 Inf of 16 values"):
        check_state_dict(broken, spec, 10)
    broken = dict(state_dict, **{"norm.bias": np.zeros(48, np.int64)})
    with pytest.raises(LayoutError, match="dtype mismatch: norm.bias is int64, expected float32"):
        check_state_dict(broken, spec, 10)


def test_half_precision_weights_are_widened_with_a_note(spec, state_dict):
    half = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in state_dict.items()}
    notes = check_state_dict(half, spec, 10).notes
    assert notes and all("float16 converted to float32" in note for note in notes)


@pytest.mark.parametrize("case", sorted(MALFORMED_STATE_DICTS))
def test_malformed_state_dicts_name_the_file_and_the_key(tmp_path, case):
    make, fragments = MALFORMED_STATE_DICTS[case]
    path = make(tmp_path / f"{case}.pth")
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    for fragment in [str(path), *fragments]:
        assert fragment in str(error.value)


def test_safetensors_content_is_recognised_whatever_the_suffix(tmp_path, state_dict):
    from safetensors.torch import save_file

    path = tmp_path / "ckpt.bin"
    save_file({k: v.contiguous() for k, v in _tensors(state_dict).items()}, str(path))
    np.testing.assert_array_equal(load_checkpoint(path)["norm.weight"], state_dict["norm.weight"])


def test_bfloat16_is_widened_at_load_with_a_note(tmp_path, state_dict):
    path = tmp_path / "bf16.pth"
    torch.save({k: (v.bfloat16() if v.is_floating_point() else v) for k, v in _tensors(state_dict).items()}, path)
    notes = []
    loaded = load_checkpoint(path, dtype_notes=notes)
    assert loaded["norm.weight"].dtype == np.float32
    expected = torch.from_numpy(state_dict["norm.weight"]).bfloat16().float().numpy()
    np.testing.assert_array_equal(loaded["norm.weight"], expected)
    assert "norm.weight: bfloat16 converted to float32" in notes
    assert len(notes) == sum(1 for v in state_dict.values() if v.dtype == np.float32)


def test_validation_widens_half_precision_and_fills_step_counters(spec, state_dict):
    half = {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in state_dict.items()
            if not k.endswith("num_batches_tracked")}
    checked = check_state_dict(half, spec, 10)
    arrays, notes = checked.arrays, checked.notes
    assert sorted(arrays) == sorted(state_dict)
    assert arrays["head.weight"].dtype == np.float32
    np.testing.assert_array_equal(arrays["head.weight"], half["head.weight"].astype(np.float32))
    assert arrays["stage0.blocks.0.attn.conv_proj_q.bn.num_batches_tracked"] == 0
    assert "head.weight: float16 converted to float32" in notes


def test_head_mismatch_is_named_before_any_shape_listing(spec, state_dict):
    with pytest.raises(HeadMismatch, match=r"num_classes 1000 disagrees with the checkpoint's head: "
                       r"head.weight is \(10, 48\), a 10-class head; use num_classes 10"):
        check_state_dict(state_dict, spec, 1000)
