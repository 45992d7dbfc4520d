"""`convert.py inspect` (h5py only, no TensorFlow) and `convert.py verify` (artifact reloaded from disk)."""

import json
import subprocess
import sys

import pytest

from converter.checkpoint import CheckpointError
from converter.layout import LayoutError
from converter.mapping import keras_variables, mapping_rows
from converter.pipeline import Conversion, convert
from converter.synthetic import save_checkpoint, synthetic_state_dict
from converter.verify import VerifyError, verify_artifact
from cvt_spec import normalize_spec
from cvt_tf import load_artifact
from tests.conftest import REPO, run_cli, tiny_spec

SPEC = normalize_spec(tiny_spec())


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """(weights path, manifest, source checkpoint path) of a tiny artifact converted from a .pth file."""
    root = tmp_path_factory.mktemp("artifact")
    checkpoint = root / "tiny-56x56.pth"
    save_checkpoint(synthetic_state_dict(SPEC, 10, seed=3), checkpoint)
    job = Conversion(spec=SPEC, num_classes=10, resolution=(56, 56), name="tiny", out_dir=root / "out",
                     checkpoint=checkpoint, parity_query_rows=50)  # stage 0 has 196 queries: chunked
    weights_path, manifest_path, _ = convert(job, progress=lambda _: None)
    return weights_path, json.loads(manifest_path.read_text()), checkpoint


def _one_line_error(result, code, fragment):
    assert result.returncode == code, result.stdout + result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: "), result.stderr
    assert fragment in result.stderr


def test_inspect_lists_manifest_and_variables_without_tensorflow_or_torch(artifact):
    weights_path, manifest, _ = artifact
    code = (
        "import sys\n"
        "from convert_cli.app import run\n"
        f"run(['inspect', {str(weights_path)!r}])\n"
        "heavy = sorted({'tensorflow', 'keras', 'torch'} & set(sys.modules))\n"
        "print('imported:', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "imported: []"
    assert f"sha256 {manifest['artifact']['sha256']} matches the manifest" in lines
    printed = result.stdout[result.stdout.index("{"):result.stdout.index("\nvariables in")]
    names = manifest["artifact"]["variables"]
    assert json.loads(printed) == {**manifest, "artifact": {k: v for k, v in manifest["artifact"].items()
                                                            if k != "variables"}}
    # The variable list against Keras' own view of the same file.
    model = load_artifact(weights_path)
    shapes = sorted(tuple(v.shape) for v in model.weights)
    start = next(i for i, line in enumerate(lines) if line.startswith("variables in"))
    listed = [line for line in lines[start + 1:] if line.startswith("  ")]
    assert sorted(_shape(line) for line in listed) == shapes
    assert f"{len(shapes)} variables, {manifest['parameters']:,} parameters" in lines
    # Named as --show-mapping names them: each line's name is a mapping row's Keras path, with its shape.
    rows = {row.keras_path: row for row in mapping_rows(SPEC, 10)}
    shapes_by_path = {path: tuple(v.shape) for path, v in keras_variables(model).items()}
    assert sorted(line.split()[0] for line in listed) == sorted(rows) == sorted(names.values())
    assert all(_shape(line) == shapes_by_path[line.split()[0]] for line in listed)
    assert "  stage2/block0/attn/conv_proj_q/conv/kernel [3, 3, 48, 1] float32" in lines


def _shape(line):
    """The shape of an inspect line `  path [d0, d1] float32`."""
    return tuple(json.loads(line[line.index("["):line.index("]") + 1]))


def test_inspect_refuses_a_damaged_artifact(artifact, tmp_path):
    weights_path, manifest, _ = artifact
    damaged = tmp_path / "tiny.weights.h5"
    data = bytearray(weights_path.read_bytes())
    data[-64:-54] = bytes(10)
    damaged.write_bytes(bytes(data))
    (tmp_path / "tiny.json").write_text(json.dumps(manifest))
    result = run_cli("inspect", tmp_path / "tiny")
    _one_line_error(result, 2, "differs from the manifest's")
    assert "variables in" in result.stdout


def test_inspect_of_a_missing_artifact_names_the_file(tmp_path):
    _one_line_error(run_cli("inspect", tmp_path / "nothing.weights.h5"), 2, "nothing.json: artifact file not found")


def test_verify_reproduces_the_manifest_figures(artifact):
    weights_path, manifest, checkpoint = artifact
    result = run_cli("verify", weights_path, "--checkpoint", checkpoint)
    assert result.returncode == 0, result.stderr
    assert "parity PASSED" in result.stdout
    assert "the checkpoint is the source the manifest records" in result.stdout
    assert manifest["parity"]["attention_query_rows"] == 50 and manifest["parity"]["images_per_call"] == 1
    recorded = manifest["parity"]["outputs"]
    for output in ("stage0", "stage1", "stage2", "features", "logits"):
        line = next(line for line in result.stdout.splitlines() if line.startswith(output + " "))
        assert line.split()[2] == f"{recorded[output]['max_abs']:.3e}", line


def test_verify_against_another_checkpoint_fails_with_exit_1(artifact, tmp_path):
    weights_path, _, _ = artifact
    other = tmp_path / "other.pth"
    save_checkpoint(synthetic_state_dict(SPEC, 10, seed=4), other)
    result = run_cli("verify", weights_path, "--checkpoint", other)
    _one_line_error(result, 1, "parity failed")
    assert "note: the checkpoint differs from the source the manifest records" in result.stdout


def test_verify_synthetic_regenerates_the_recorded_checkpoint(tmp_path):
    job = Conversion(spec=SPEC, num_classes=10, resolution=(40, 40), name="tiny", out_dir=tmp_path, seed=7)
    weights_path, _, _ = convert(job, progress=lambda _: None)
    messages = []
    report, same_source = verify_artifact(weights_path, progress=messages.append)
    assert report.passed and same_source
    assert "regenerating the synthetic checkpoint (seed 7)" in messages


@pytest.mark.parametrize(("args", "fragment"), [
    ([], "exactly one of --checkpoint FILE and --synthetic"),
    (["--checkpoint", "x.pth", "--atol", "0"], "--atol"),
])
def test_verify_usage_errors_exit_2(artifact, args, fragment, tmp_path):
    weights_path, _, _ = artifact
    _one_line_error(run_cli("verify", weights_path, *args, cwd=tmp_path), 2, fragment)


def test_verify_refuses_what_it_cannot_check(artifact, tmp_path):
    weights_path, _, _ = artifact
    with pytest.raises(VerifyError, match="was converted from tiny-56x56.pth: pass --checkpoint FILE"):
        verify_artifact(weights_path, progress=lambda _: None)
    with pytest.raises(CheckpointError, match="missing.pth: no such file"):
        verify_artifact(weights_path, tmp_path / "missing.pth", progress=lambda _: None)
    other = tmp_path / "deeper.pth"
    save_checkpoint(synthetic_state_dict(normalize_spec(tiny_spec(DEPTH=[1, 1, 3])), 10), other)
    with pytest.raises(LayoutError, match="unexpected in checkpoint: stage2.blocks.2.norm1.weight"):
        verify_artifact(weights_path, other, progress=lambda _: None)
