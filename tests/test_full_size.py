"""Full-size synthetic parity of cvt-13 @ 224 through the CLI, run once (marked slow)."""

import json

import pytest

from tests.conftest import run_cli


@pytest.mark.slow
def test_cvt13_224_full_size_parity(tmp_path):
    result = run_cli("--config", "cvt-13", "--res", 224, "--synthetic", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "cvt-13-224x224_1k.json").read_text())
    outputs = manifest["parity"]["outputs"]
    assert set(outputs) == {"stage0", "stage1", "stage2", "features", "logits", "logits[channels_first]"}
    assert max(o["max_abs"] for o in outputs.values()) < 1e-4
    print(result.stdout)
