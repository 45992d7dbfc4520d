"""Reproducible artifacts: the same checkpoint gives byte-identical weights and equal manifests but for `run`.

Keras 3 stores every layer's name in `.weights.h5`; auto-generated names (`dense_7`) would change with
whatever the process built before, so every layer of CvT is named explicitly. These tests prove it.
"""

import hashlib
import json

import keras
import numpy as np

from converter.pipeline import Conversion, convert
from converter.steps import build_keras_model
from converter.synthetic import save_checkpoint, synthetic_state_dict
from cvt_spec import normalize_spec
from tests.conftest import run_cli, tiny_spec

# Every layer kind CvT has: all three projections, cls tokens, dropout and stochastic depth on.
SPEC = normalize_spec(tiny_spec(
    QKV_PROJ_METHOD=["avg", "linear", "dw_bn"], CLS_TOKEN=[False, True, True], DEPTH=[1, 2, 2],
    DROP_RATE=0.1, ATTN_DROP_RATE=0.1, DROP_PATH_RATE=[0.0, 0.1, 0.2],
))
RUN_KEYS = {"command", "started", "seconds"}


def _convert(out_dir, checkpoint=None):
    job = Conversion(spec=SPEC, num_classes=10, resolution=(48, 40), name="tiny", out_dir=out_dir,
                     checkpoint=checkpoint, command=f"test {out_dir.name}")
    weights_path, manifest_path, _ = convert(job, progress=lambda _: None)
    return weights_path.read_bytes(), json.loads(manifest_path.read_text())


def _build_unrelated_models():
    """Advances every Keras auto-name counter CvT's layer classes could draw from."""
    grid, tokens = (None, 8, 8, 3), (None, 5, 3)
    for _ in range(2):
        for layer, shape in (
            (keras.layers.Dense(4), tokens), (keras.layers.LayerNormalization(), tokens),
            (keras.layers.Dropout(0.1), tokens), (keras.layers.Conv2D(2, 3), grid),
            (keras.layers.DepthwiseConv2D(3), grid), (keras.layers.BatchNormalization(), grid),
            (keras.layers.ZeroPadding2D(1), grid), (keras.layers.AveragePooling2D(2), grid),
        ):
            layer.build(shape)
    build_keras_model(normalize_spec(tiny_spec()), 5)
    build_keras_model(SPEC, 10, "channels_first")


def _without_run(manifest):
    return {key: value for key, value in manifest.items() if key != "run"}


def test_second_conversion_after_other_models_is_byte_identical(tmp_path):
    first_bytes, first = _convert(tmp_path / "first")
    _build_unrelated_models()
    second_bytes, second = _convert(tmp_path / "second")
    assert hashlib.sha256(first_bytes).hexdigest() == hashlib.sha256(second_bytes).hexdigest()
    assert first_bytes == second_bytes
    assert _without_run(first) == _without_run(second)
    assert set(first["run"]) == RUN_KEYS and first["run"]["command"] != second["run"]["command"]
    assert first["artifact"]["sha256"] == hashlib.sha256(first_bytes).hexdigest()


def test_checkpoint_file_converts_to_the_same_bytes_as_its_synthetic_twin(tmp_path):
    path = tmp_path / "tiny.pth"
    save_checkpoint(synthetic_state_dict(SPEC, 10, seed=0), path)
    synthetic_bytes, _ = _convert(tmp_path / "synthetic")
    first_bytes, first = _convert(tmp_path / "first", checkpoint=path)
    _build_unrelated_models()
    second_bytes, second = _convert(tmp_path / "second", checkpoint=path)
    assert first_bytes == second_bytes == synthetic_bytes
    assert _without_run(first) == _without_run(second)
    assert first["source"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_keras_stores_layer_names_so_unnamed_layers_would_differ(tmp_path):
    """The trap the explicit names avoid: equal weights, different auto names, different bytes."""
    paths = []
    for i in range(2):
        model = keras.Sequential([keras.layers.Dense(3)])
        model.build((None, 2))
        model.set_weights([np.ones((2, 3), np.float32), np.zeros(3, np.float32)])
        paths.append(tmp_path / f"m{i}.weights.h5")
        model.save_weights(paths[-1])
    assert paths[0].read_bytes() != paths[1].read_bytes()


def test_two_cli_runs_give_identical_weights_and_manifests_but_for_run(tmp_path, tiny_spec_file):
    results = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = run_cli("--spec", tiny_spec_file, "--num-classes", 10, "--res", 64, "--synthetic",
                         "--out", out, "--name", "tiny")
        assert result.returncode == 0, result.stderr
        results.append(((out / "tiny.weights.h5").read_bytes(), json.loads((out / "tiny.json").read_text())))
    (bytes_a, manifest_a), (bytes_b, manifest_b) = results
    assert bytes_a == bytes_b
    assert _without_run(manifest_a) == _without_run(manifest_b)
    assert manifest_a["run"]["command"].endswith("--name tiny") and manifest_a["run"] != manifest_b["run"]
    assert list(manifest_a)[-1] == "run"
