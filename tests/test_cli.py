"""convert.py end to end in subprocesses: exit codes, one-line errors, artifacts on disk."""

import json

import pytest

from tests.conftest import run_cli


def _assert_one_line_error(result, code, *fragments):
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_synthetic_conversion_writes_artifact_and_parity_table(tmp_path, tiny_spec_file):
    result = run_cli("--spec", tiny_spec_file, "--num-classes", 10, "--res", "61x75", "--synthetic",
                     "--out", tmp_path, "--name", "tiny")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "parity PASSED" in result.stdout and "logits[channels_first]" in result.stdout
    manifest = json.loads((tmp_path / "tiny.json").read_text())
    assert manifest["resolution"] == [61, 75]
    assert manifest["run"]["command"].startswith("convert.py --spec")
    assert (tmp_path / "tiny.weights.h5").stat().st_size == manifest["artifact"]["size"]


def test_parity_failure_exits_1_and_writes_nothing(tmp_path, tiny_spec_file):
    result = run_cli("--spec", tiny_spec_file, "--num-classes", 10, "--res", 64, "--synthetic",
                     "--out", tmp_path / "out", "--atol", "1e-12")
    _assert_one_line_error(result, 1, "parity failed")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--config", "cvt-99"], ["cvt-13, cvt-21, cvt-w24"]),
        (["--config", "cvt-21", "--res", "abc"], ["--res", "'abc'"]),
        (["--config", "cvt-21", "--res", "0"], ["--res"]),
        (["--config", "cvt-21", "--atol", "-1", "--synthetic"], ["--atol", "-1"]),
        (["--config", "cvt-21", "--atol", "x"], ["--atol"]),
        (["--config", "cvt-21", "--res", "384"], ["CvT-21-384x384-IN-1k.pth", "--synthetic"]),
        (["--config", "cvt-w24", "--res", "224"], ["no official checkpoint", "cvt-w24-384x384_22k"]),
        (["--config", "cvt-13", "--spec", "x.yaml"], ["exactly one of --config"]),
        (["--config", "cvt-13", "--checkpoint", "nope.pth"], ["nope.pth: no such file"]),
        (["--no-such-option"], ["--no-such-option"]),
    ],
)
def test_bad_input_is_one_line_with_exit_2(tmp_path, args, fragments):
    result = run_cli(*args, "--out", tmp_path / "out", cwd=tmp_path)
    _assert_one_line_error(result, 2, *fragments)
    assert not (tmp_path / "out").exists()


def test_mismatched_checkpoint_lists_problems_in_one_line(tmp_path):
    from converter.synthetic import save_checkpoint, synthetic_state_dict
    from cvt_spec import variant_spec

    path = tmp_path / "cvt13.pth"
    save_checkpoint(synthetic_state_dict(variant_spec("cvt-13"), 1000), path)
    result = run_cli("--config", "cvt-21", "--checkpoint", path, "--out", tmp_path / "out")
    _assert_one_line_error(result, 2, "missing in checkpoint: stage1.blocks.2.norm1.weight")
    assert not (tmp_path / "out").exists()


def test_show_mapping_needs_no_checkpoint(tmp_path):
    result = run_cli("--config", "cvt-13", "--show-mapping", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "stage0.patch_embed.proj.weight [64, 3, 7, 7] -> stage0/patch_embed/proj/kernel [7, 7, 3, 64] [conv]" in (
        lines
    )
    assert ("stage2.blocks.9.attn.conv_proj_v.conv.weight [384, 1, 3, 3] -> "
            "stage2/block9/attn/conv_proj_v/conv/kernel [3, 3, 384, 1] [depthwise]") in lines
    assert lines[-1] == "# 420 rows; ignored: 39 BatchNorm num_batches_tracked"


def test_help_explains_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for fragment in ("--config", "--synthetic", "--show-mapping", "Exit codes"):
        assert fragment in result.stdout


def _run_in_process(args, capfd):
    """(exit code, stderr lines) of the CLI's `run` in this process."""
    from convert_cli.app import run

    try:
        run([str(a) for a in args])
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    return code, capfd.readouterr().err.splitlines()


@pytest.mark.parametrize(
    ("module", "function", "args"),
    [
        ("converter.steps", "check_state_dict", ["--synthetic"]),  # a bug in a library step
        ("convert_cli.inspect", "stored_variables", ["inspect", "nothing-needed"]),  # in a subcommand
    ],
    ids=["conversion", "inspect"],
)
def test_a_planted_value_error_is_a_bug_not_bad_input(tmp_path, tiny_spec_file, monkeypatch, capfd, module,
                                                      function, args):
    """A ValueError that is not the project's own InputError means the code is wrong: exit 3, not 2."""
    import importlib

    def planted(*_args, **_kwargs):
        raise ValueError("planted")

    monkeypatch.setattr(importlib.import_module(module), function, planted)
    if args[0] == "inspect":
        from converter.pipeline import Conversion, convert
        from cvt_spec import normalize_spec
        from tests.conftest import TINY_SPEC

        convert(Conversion(spec=normalize_spec(TINY_SPEC), num_classes=10, resolution=(48, 48), name="tiny",
                           out_dir=tmp_path), progress=lambda _: None)
        args = ["inspect", tmp_path / "tiny"]
    else:
        args = ["--spec", tiny_spec_file, "--num-classes", 10, "--res", 48, *args, "--out", tmp_path / "out"]
    code, lines = _run_in_process(args, capfd)
    assert code == 3
    assert lines == ["error: internal error (ValueError: planted); rerun with --debug for the traceback"]
