"""Full-size synthetic parity of the three variants at their release resolutions, each run once (slow).

cvt-13 @ 224 goes through `--all`, cvt-21 @ 384 through `--checkpoint` alone and then `verify`,
cvt-w24 @ 384 through `--config ... --synthetic`, then `inspect`, then `export` to OpenVINO and TFLite:
every entry point at full size, and the two exports at the largest model (about 5 GB and 11 GB peak RSS).
"""

import hashlib
import json

import pytest

from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import variant_spec
from tests.conftest import run_cli

OUTPUTS = {"stage0", "stage1", "stage2", "features", "logits", "logits[channels_first]"}


def _assert_full_parity(manifest, resolution):
    parity = manifest["parity"]
    assert parity["passed"] and parity["resolution"] == [resolution, resolution] and parity["batch"] == 2
    assert set(parity["outputs"]) == OUTPUTS
    assert max(output["max_abs"] for output in parity["outputs"].values()) < 1e-4


@pytest.mark.slow
def test_cvt13_224_through_all(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    checkpoint = tmp_path / "checkpoints/CvT-13-224x224-IN-1k.pth"
    save_checkpoint(synthetic_state_dict(variant_spec("cvt-13"), 1000), checkpoint)
    result = run_cli("--all", "--out", "out", cwd=tmp_path, memory_limit=None)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    manifest = json.loads((tmp_path / "out/cvt-13-224x224_1k.json").read_text())
    _assert_full_parity(manifest, 224)
    digest = hashlib.sha256((tmp_path / "out/cvt-13-224x224_1k.weights.h5").read_bytes()).hexdigest()
    assert (tmp_path / "out/SHA256SUMS").read_text() == f"{digest}  cvt-13-224x224_1k.weights.h5\n"
    row = next(line for line in result.stdout.splitlines() if line.startswith("cvt-13-224x224_1k "))
    assert row.split()[1] == "passed" and row.split()[-1] == digest
    assert "missing from checkpoints/, not converted: CvT-13-384x384-IN-1k.pth" in result.stdout


@pytest.mark.slow
def test_cvt21_384_recognised_from_the_checkpoint_then_verified(tmp_path):
    checkpoint = tmp_path / "CvT-21-384x384-IN-1k.pth"
    save_checkpoint(synthetic_state_dict(variant_spec("cvt-21"), 1000, seed=1), checkpoint)
    result = run_cli("--checkpoint", checkpoint, "--out", tmp_path / "out", memory_limit=None)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    manifest = json.loads((tmp_path / "out/cvt-21-384x384_1k.json").read_text())
    _assert_full_parity(manifest, 384)
    assert manifest["configuration"] == "cvt-21" and manifest["source"]["file"] == checkpoint.name
    verified = run_cli("verify", tmp_path / "out/cvt-21-384x384_1k.weights.h5", "--checkpoint", checkpoint,
                       memory_limit=None)
    assert verified.returncode == 0, verified.stderr
    print(verified.stdout)
    logits = next(line for line in verified.stdout.splitlines() if line.startswith("logits "))
    assert logits.split()[2] == f"{manifest['parity']['outputs']['logits']['max_abs']:.3e}"


@pytest.mark.slow
def test_cvtw24_384_synthetic_then_inspected_and_exported(tmp_path):
    result = run_cli("--config", "cvt-w24", "--res", 384, "--version", "22k", "--synthetic", "--out", tmp_path,
                     memory_limit=None)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    manifest = json.loads((tmp_path / "cvt-w24-384x384_22k.json").read_text())
    _assert_full_parity(manifest, 384)
    inspected = run_cli("inspect", tmp_path / "cvt-w24-384x384_22k", memory_limit=None)
    assert inspected.returncode == 0, inspected.stderr
    assert f"sha256 {manifest['artifact']['sha256']} matches the manifest" in inspected.stdout
    assert f"{manifest['parameters']:,} parameters" in inspected.stdout
    assert 277_000_000 < manifest["parameters"] < 278_000_000
    for export_format in ("openvino", "tflite"):
        exported = run_cli("export", tmp_path / "cvt-w24-384x384_22k.json", "--format", export_format,
                           "--samples", 2, memory_limit=None)
        assert exported.returncode == 0, exported.stderr
        print(exported.stdout)
    exports = json.loads((tmp_path / "cvt-w24-384x384_22k.json").read_text())["exports"]
    assert [(entry["format"], entry["file"]) for entry in exports] == [
        ("openvino", "cvt-w24-384x384_22k.openvino"), ("tflite", "cvt-w24-384x384_22k.tflite")]
    assert all(entry["parity"]["passed"] and entry["parity"]["logits_max_abs"] < 1e-4 for entry in exports)
    assert (tmp_path / "cvt-w24-384x384_22k.tflite").stat().st_size > 4 * 277_000_000  # float32 weights
