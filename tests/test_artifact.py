"""Artifacts: written only after parity, read back from disk with the same logits."""

import json

import numpy as np
import pytest

from converter.parity import ParityError
from converter.pipeline import Conversion, convert
from cvt_spec import normalize_spec
from cvt_tf import load_artifact
from tests.conftest import ported_pair, tiny_spec, visible_names


def _job(tmp_path, **overrides):
    fields = {
        "spec": normalize_spec(tiny_spec()), "num_classes": 10, "resolution": (64, 64),
        "name": "tiny", "out_dir": tmp_path / "out",
    }
    fields.update(overrides)
    return Conversion(**fields)


def test_artifact_round_trip_gives_the_same_logits(tmp_path):
    weights_path, manifest_path, report = convert(_job(tmp_path), progress=lambda _: None)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["name"] == "tiny" and manifest["num_classes"] == 10
    assert manifest["resolution"] == [64, 64]
    assert manifest["parity"]["passed"] and manifest["parity"]["outputs"]["logits"]["max_abs"] < 1e-4
    assert manifest["source"]["synthetic"] and manifest["artifact"]["size"] == weights_path.stat().st_size

    model = load_artifact(weights_path)
    _, live = ported_pair(tiny_spec(), num_classes=10)
    x = np.random.default_rng(5).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model(x)), np.asarray(live(x)))
    assert visible_names(weights_path.parent) == ["tiny.json", "tiny.weights.h5"]


def test_failed_parity_writes_nothing(tmp_path):
    with pytest.raises(ParityError, match="parity failed"):
        convert(_job(tmp_path, atol=1e-12), progress=lambda _: None)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_damaged_artifact_is_refused(tmp_path):
    weights_path, _, _ = convert(_job(tmp_path), progress=lambda _: None)
    with open(weights_path, "r+b") as handle:
        handle.seek(-100, 2)
        handle.write(b"\0" * 10)
    with pytest.raises(ValueError, match="differs from the manifest"):
        load_artifact(weights_path)
