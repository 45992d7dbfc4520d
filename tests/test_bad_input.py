"""The hostile-input corpus through convert.py in subprocesses: exit code, one stderr line, nothing written.

Argument and file errors must come before torch is imported, checkpoint errors before TensorFlow:
those cases run with the modules replaced by ones that fail on import.
"""

import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from converter.synthetic import save_checkpoint
from cvt_spec.artifacts import read_manifest
from tests.conftest import run_cli, tiny_spec, visible_names
from tests.corpus import (
    NOT_CHECKPOINTS,
    NUM_CLASSES,
    assert_refused,
    malicious_raw_pickle,
    malicious_torch_file,
    poisoned_env,
    run_cli_unprivileged,
    tiny_state_dict,
    write_spec,
)

EARLY_FILE_CASES = {"missing", "directory", "fifo", "device", "empty"}


@pytest.fixture
def spec_args(tmp_path):
    """--spec of the tiny SPEC with its head size and resolution, and --out inside tmp_path."""
    return ["--spec", write_spec(tmp_path), "--num-classes", NUM_CLASSES, "--res", 64, "--out", tmp_path / "out"]


ARGUMENT_CASES = {
    "config_unknown": (["--config", "cvt-99"], ["--config", "'cvt-99'", "valid: cvt-13, cvt-21, cvt-w24"]),
    "config_and_spec": (["--config", "cvt-13"], ["exactly one of --config"]),
    "res_word": (["--res", "abc"], ["--res", "positive integer or HxW", "'abc'"]),
    "res_zero": (["--res", "0"], ["--res", "'0'"]),
    "res_negative": (["--res", "-3"], ["--res", "'-3'"]),
    "res_fraction": (["--res", "1.5"], ["--res", "'1.5'"]),
    "res_half_pair": (["--res", "64x"], ["--res", "'64x'"]),
    "res_three_sides": (["--res", "64x64x64"], ["--res", "'64x64x64'"]),
    "res_huge": (["--res", "5000"], ["--res", "at most 1024", "'5000'"]),
    "res_too_small": (["--synthetic", "--res", "2"], ["--res 2x2", "too small", "stage 0", "PATCH_SIZE 7"]),
    "atol_negative": (["--atol", "-1"], ["--atol", "positive finite number, got -1.0"]),
    "atol_zero": (["--atol", "0"], ["--atol", "got 0.0"]),
    "atol_nan": (["--atol", "nan"], ["--atol", "got nan"]),
    "atol_inf": (["--atol", "inf"], ["--atol", "got inf"]),
    "atol_word": (["--atol", "x"], ["--atol", "'x'"]),
    "num_classes_negative": (["--num-classes", "-1"], ["--num-classes", "-1"]),
    "seed_negative": (["--synthetic", "--seed", "-1"], ["--seed", "-1"]),
    "name_traversal": (["--synthetic", "--name", "../escape"], ["--name", "'../escape'"]),
    "name_hidden": (["--synthetic", "--name", ".hidden"], ["--name", "'.hidden'"]),
    "synthetic_and_checkpoint": (["--synthetic", "--checkpoint", "x.pth"], ["--synthetic and --checkpoint"]),
    "no_checkpoint": ([], ["--spec needs --checkpoint"]),
    "unknown_option": (["--no-such-option"], ["--no-such-option"]),
}


@pytest.mark.parametrize("case", sorted(ARGUMENT_CASES))
def test_bad_arguments_fail_before_torch_is_imported(tmp_path, spec_args, case):
    args, fragments = ARGUMENT_CASES[case]
    env = poisoned_env(tmp_path / "poison", "torch", "tensorflow")
    base = ["--out", tmp_path / "out"] if case == "config_unknown" else spec_args
    result = run_cli(*base, *args, env=env)
    assert_refused(case, result, 2, fragments, tmp_path / "out")


def _spec_file_cases(tmp_path):
    directory = tmp_path / "specs"
    directory.mkdir()
    garbage = directory / "random.yaml"
    garbage.write_bytes(np.random.default_rng(1).bytes(512))
    return {
        "spec_missing": (directory / "nope.json", ["--spec", "nope.json: no such file"]),
        "spec_unknown_key": (write_spec(directory, {**tiny_spec(), "DEPTHS": 3}, "typo.json"),
                             ["--spec", "unknown SPEC keys ['DEPTHS']"]),
        "spec_bad_value": (write_spec(directory, tiny_spec(NUM_HEADS=[1, 3, 3]), "heads.json"),
                           ["DIM_EMBED must be divisible by NUM_HEADS", "DIM_EMBED=32, NUM_HEADS=3 (stage 1)"]),
        "spec_random_bytes": (garbage, ["--spec", "random.yaml"]),
    }


def test_bad_spec_files_fail_before_torch_is_imported(tmp_path):
    env = poisoned_env(tmp_path / "poison", "torch", "tensorflow")
    for case, (path, fragments) in _spec_file_cases(tmp_path).items():
        result = run_cli("--spec", path, "--num-classes", 10, "--res", 64, "--synthetic",
                         "--out", tmp_path / "out", env=env)
        assert_refused(case, result, 2, fragments, tmp_path / "out")


def test_malicious_yaml_spec_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "yaml-pwned"
    spec = tmp_path / "evil.yaml"
    spec.write_text(f'MODEL:\n  SPEC: !!python/object/apply:os.system ["touch {marker}"]\n')
    result = run_cli("--spec", spec, "--synthetic", "--res", 64, "--out", tmp_path / "out")
    assert_refused("spec_malicious_yaml", result, 2, ["--spec", "evil.yaml", "not valid yaml"], tmp_path / "out")
    assert not marker.exists()


def _alias_bomb(path):
    """877 bytes of YAML whose DEPTH, once its aliases are expanded, holds 9**9 (387 million) values."""
    lines = ["MODEL:", "  SPEC:", "    NUM_STAGES: 3", "    x0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"    x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path.write_text("\n".join([*lines, "    DEPTH: *a8"]) + "\n")
    return path


def _written(text, suffix=".yaml"):
    """A builder of a SPEC file holding `text`."""

    def make(path):
        path = path.with_suffix(suffix)
        path.write_text(text)
        return path

    return make


HOSTILE_SPECS = {
    "spec_alias_bomb": (_alias_bomb, ["holds more than 10000 values or nests deeper than 32 levels"]),
    "spec_alias_to_itself": (_written("DEPTH: &x [1, *x]\n"), ["a YAML alias refers to itself"]),
    "spec_nested_json": (_written("[" * 100_000 + "]" * 100_000, ".json"), ["nests deeper than JSON can be read"]),
    "spec_huge_integer": (_written("NUM_STAGES: " + "9" * 5000 + "\n"), ["not a usable YAML value", "4300 digits"]),
    "spec_oversized_file": (_written("# " + "x" * (1 << 20) + "\n"), ["bytes; a SPEC file holds at most 1048576"]),
    "spec_huge_model": (_written(json.dumps(tiny_spec(DIM_EMBED=[16, 32, 16384], DEPTH=[1, 1, 4], NUM_HEADS=[1, 2, 8])),
                                 ".json"), ["make about 1.3e+10 weights, more than the 4e+09"]),
    "spec_nan_ratio": (_written(json.dumps(tiny_spec()).replace("[4.0, 4.0, 4.0]", "[4.0, NaN, 4.0]"), ".json"),
                       ["MLP_RATIO must hold numbers >= 0.0 (at most 64.0), got [4.0, nan, 4.0]"]),
    "spec_bad_sections": (_written("MODEL:\n  SPEC: {}\n  NUM_CLASSES: ten\nTEST: [1]\n"),
                          ["MODEL.NUM_CLASSES must be an integer >= 0, got 'ten'"]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_SPECS))
def test_hostile_spec_files_fail_in_one_line_before_torch_under_the_memory_ceiling(tmp_path, case):
    """Bounded: what a SPEC may expand to, how deep it may nest, how large it and the model it makes may be;
    and no message reprs an unbounded value. The CLI runs under the tests' RLIMIT_AS ceiling."""
    make, fragments = HOSTILE_SPECS[case]
    path = make(tmp_path / f"{case}.yaml")
    result = run_cli("--spec", path, "--num-classes", 10, "--res", 64, "--synthetic", "--out", tmp_path / "out",
                     env=poisoned_env(tmp_path / "poison", "torch", "tensorflow"))
    assert_refused(case, result, 2, ["--spec", path.name, *fragments], tmp_path / "out")
    assert len(result.stderr) < 1000


def _name_with_a_byte_that_is_not_utf8(directory, suffix):
    return Path(os.fsdecode(os.fsencode(str(directory)) + b"/bad-\xff-name" + suffix.encode()))


def test_a_file_name_that_is_not_utf8_is_one_escaped_line(tmp_path, spec_args):
    empty = _name_with_a_byte_that_is_not_utf8(tmp_path, ".pth")
    empty.write_bytes(b"")
    result = run_cli(*spec_args, "--checkpoint", empty)
    assert_refused("checkpoint_name_not_utf8", result, 2, [f"{tmp_path}/bad-\\xff-name.pth: file is empty"],
                   tmp_path / "out")


def test_a_valid_checkpoint_under_a_name_that_is_not_utf8_converts(tmp_path, spec_args):
    path = _name_with_a_byte_that_is_not_utf8(tmp_path, ".pth")
    save_checkpoint(tiny_state_dict(), path)
    result = run_cli(*spec_args, "--checkpoint", path, "--no-parity", errors="surrogateescape")  # stdout: raw bytes
    assert result.returncode == 0, result.stderr
    assert visible_names(tmp_path / "out") == ["tiny.json", "tiny.weights.h5"]
    assert read_manifest(tmp_path / "out" / "tiny")["source"]["file"] == path.name


def test_keys_that_collide_once_module_is_stripped_are_named_both(tmp_path, spec_args):
    state_dict = {f"module.{key}": value for key, value in tiny_state_dict().items()}
    state_dict["head.weight"] = np.zeros((NUM_CLASSES, 48), np.float32)  # a second, different head
    path = tmp_path / "collide.pth"
    save_checkpoint(state_dict, path)
    result = run_cli(*spec_args, "--checkpoint", path, env=poisoned_env(tmp_path / "poison", "tensorflow"))
    assert_refused("module_prefix_collision", result, 2, [
        str(path), "keys module.head.weight and head.weight both name head.weight once `module.` is stripped",
    ], tmp_path / "out")


@pytest.mark.parametrize("case", sorted(NOT_CHECKPOINTS))
def test_files_that_are_not_checkpoints(tmp_path, spec_args, case):
    make, fragments = NOT_CHECKPOINTS[case]
    path = make(tmp_path / f"{case}.pth")
    # Stat-level problems are found before torch is imported; the rest before TensorFlow.
    poisoned = ("torch", "tensorflow") if case in EARLY_FILE_CASES else ("tensorflow",)
    result = run_cli(*spec_args, "--checkpoint", path, env=poisoned_env(tmp_path / "poison", *poisoned))
    assert_refused(case, result, 2, [str(path), *fragments], tmp_path / "out")


@pytest.mark.parametrize(
    ("make", "called", "unsafe_load"),
    [
        (malicious_torch_file, "io.open", lambda path: torch.load(path, weights_only=False)),
        (malicious_raw_pickle, "posix.system", lambda path: pickle.loads(path.read_bytes())),
    ],
    ids=["torch_zip", "raw_pickle"],
)
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, spec_args, make, called, unsafe_load):
    marker = tmp_path / "pwned"
    path = make(tmp_path / "evil.pth", marker)
    result = run_cli(*spec_args, "--checkpoint", path)
    assert_refused(f"malicious_pickle_{make.__name__}", result, 2,
                   [str(path), f"not a safe torch checkpoint (refused: it calls {called} on load"], tmp_path / "out")
    assert not marker.exists()
    # The payload is real: an unsafe load, as careless converters do, creates the marker.
    unsafe_load(path)
    assert marker.exists()


def _everything_wrong(state_dict):
    """One checkpoint with each kind of defect; the one error must list them all."""
    broken = dict(state_dict)
    del broken["stage1.blocks.0.mlp.fc1.bias"]
    broken["stage9.extra.weight"] = np.zeros((2, 2), np.float32)
    broken["stage0.patch_embed.proj.weight"] = np.zeros((16, 3, 5, 5), np.float32)
    broken["norm.bias"] = np.arange(48, dtype=np.int64)
    broken["stage0.patch_embed.proj.bias"] = state_dict["stage0.patch_embed.proj.bias"].copy()
    broken["stage0.patch_embed.proj.bias"][[1, 5]] = np.nan
    broken["head.bias"] = state_dict["head.bias"].copy()
    broken["head.bias"][0] = -np.inf
    return broken


CONTENT_CASES = {
    "missing_unexpected_shape_dtype_nan_inf": (_everything_wrong, [], [
        "checkpoint does not fit the model (1 missing in checkpoint, 1 unexpected in checkpoint, "
        "1 shape mismatch, 1 dtype mismatch, 2 non-finite values): ",
        "missing in checkpoint: stage1.blocks.0.mlp.fc1.bias (128,)",
        "unexpected in checkpoint: stage9.extra.weight (2, 2)",
        "shape mismatch: stage0.patch_embed.proj.weight is (16, 3, 5, 5), expected (16, 3, 7, 7)",
        "dtype mismatch: norm.bias is int64, expected float32",
        "non-finite values: stage0.patch_embed.proj.bias has 2 NaN and 0 Inf of 16 values",
        "non-finite values: head.bias has 0 NaN and 1 Inf of 10 values",
    ]),
    "num_classes_mismatch": (lambda sd: sd, ["--num-classes", 5], [
        "--num-classes 5 disagrees with the checkpoint's head: head.weight is (10, 48), a 10-class head; "
        "use --num-classes 10",
    ]),
    "headless_checkpoint": (
        lambda sd: {key: value for key, value in sd.items() if not key.startswith("head.")}, [],
        ["--num-classes 10 disagrees with the checkpoint's head: it has no head.weight", "use --num-classes 0"],
    ),
}


@pytest.mark.parametrize("case", sorted(CONTENT_CASES))
def test_checkpoints_that_do_not_fit_are_refused_before_tensorflow(tmp_path, spec_args, case):
    mutate, extra, fragments = CONTENT_CASES[case]
    path = tmp_path / "ckpt.pth"
    save_checkpoint(mutate(tiny_state_dict()), path)
    result = run_cli(*spec_args, "--checkpoint", path, *extra, env=poisoned_env(tmp_path / "poison", "tensorflow"))
    assert_refused(case, result, 2, [str(path), *fragments], tmp_path / "out")


def test_checkpoint_of_another_variant_lists_every_missing_key(tmp_path):
    path = tmp_path / "depth2.pth"
    save_checkpoint(tiny_state_dict(), path)
    deeper = write_spec(tmp_path, tiny_spec(DEPTH=[1, 1, 3]), "deeper.json")
    result = run_cli("--spec", deeper, "--num-classes", NUM_CLASSES, "--res", 64, "--checkpoint", path,
                     "--out", tmp_path / "out", env=poisoned_env(tmp_path / "poison", "tensorflow"))
    missing = [f"missing in checkpoint: stage2.blocks.2.{name}" for name in ("norm1.weight", "mlp.fc2.bias")]
    assert_refused("other_variant", result, 2, [str(path), "31 missing in checkpoint", *missing], tmp_path / "out")


@pytest.fixture
def world_dir():
    """A directory the `nobody` user can traverse (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="cvt-corpus-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory)


def test_unreadable_checkpoint_and_unwritable_output(world_dir):
    """File modes, honestly: as root the CLI runs as `nobody`, because root reads any file anyway."""
    world = world_dir
    spec = write_spec(world)
    spec.chmod(0o644)
    path = world / "ckpt.pth"
    save_checkpoint(tiny_state_dict(), path)
    locked = world / "locked"
    locked.mkdir(mode=0o555)
    args = ["--spec", spec, "--num-classes", NUM_CLASSES, "--res", 64, "--checkpoint", path]

    path.chmod(0o000)
    result = run_cli_unprivileged(*args, "--out", world / "out")
    assert_refused("checkpoint_unreadable", result, 2, ["'--checkpoint'", f"'{path}' is not readable"], world / "out")

    path.chmod(0o644)  # the same file, readable: now the output directory is the problem
    result = run_cli_unprivileged(*args, "--out", locked / "out")
    assert_refused("out_not_writable", result, 2, [f"--out {locked / 'out'}", "permission denied"], locked / "out")


def test_output_paths_that_cannot_be_directories(tmp_path, spec_args):
    spec = spec_args[1]
    for case, out, fragments in [
        ("out_under_a_file", spec / "out", [f"--out {spec / 'out'}", f"{spec} is not a directory"]),
        ("out_is_a_file", spec, ["'--out'", f"'{spec}' is a file"]),
    ]:
        result = run_cli(*spec_args, "--synthetic", "--out", out,
                         env=poisoned_env(tmp_path / "poison", "torch", "tensorflow"))
        assert_refused(case, result, 2, fragments, tmp_path / "out")
