"""Shared fixtures: small SPECs and a parity helper over both implementations.

torch and timm are imported before TensorFlow, as the entry points do.
"""

import copy
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import converter  # noqa: E402,F401  (torch first)
from converter.mapping import mapping_rows  # noqa: E402
from converter.parity import check_parity, parity_inputs  # noqa: E402
from converter.pipeline import build_keras_model, reference_model  # noqa: E402
from converter.port import port_weights  # noqa: E402
from converter.synthetic import synthetic_state_dict  # noqa: E402
from cvt_spec import normalize_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OFFICIAL_KEYS = Path(__file__).parent / "data" / "official_keys"

TINY_SPEC = {
    "NUM_STAGES": 3,
    "PATCH_SIZE": [7, 3, 3],
    "PATCH_STRIDE": [4, 2, 2],
    "PATCH_PADDING": [2, 1, 1],
    "DIM_EMBED": [16, 32, 48],
    "NUM_HEADS": [1, 2, 3],
    "DEPTH": [1, 1, 2],
    "MLP_RATIO": [4.0, 4.0, 4.0],
    "QKV_BIAS": [True, True, True],
    "CLS_TOKEN": [False, False, True],
    "QKV_PROJ_METHOD": ["dw_bn", "dw_bn", "dw_bn"],
    "KERNEL_QKV": [3, 3, 3],
    "PADDING_KV": [1, 1, 1],
    "STRIDE_KV": [2, 2, 2],
    "PADDING_Q": [1, 1, 1],
    "STRIDE_Q": [1, 1, 1],
}


def tiny_spec(**overrides):
    """TINY_SPEC with some keys replaced."""
    spec = copy.deepcopy(TINY_SPEC)
    spec.update(overrides)
    return spec


@pytest.fixture(scope="module")
def spec():
    """TINY_SPEC normalized; a test module may define its own `spec` instead."""
    return normalize_spec(tiny_spec())


def ported_pair(spec, num_classes=10, seed=0, data_format="channels_last"):
    """(reference torch model, Keras model) holding the same synthetic weights."""
    spec = normalize_spec(spec)
    state_dict = synthetic_state_dict(spec, num_classes, seed)
    keras_model = build_keras_model(spec, num_classes, data_format)
    port_weights(dict(state_dict), keras_model, mapping_rows(spec, num_classes))
    return reference_model(spec, num_classes, state_dict), keras_model


def assert_parity(spec, num_classes=10, size=(64, 64), batch=2, seed=0, atol=1e-4):
    """Parity over every output, channels_last and channels_first; returns the report."""
    reference, keras_model = ported_pair(spec, num_classes, seed)
    twin = build_keras_model(normalize_spec(spec), num_classes, "channels_first")
    twin.set_weights(keras_model.get_weights())
    inputs = parity_inputs(*size, batch=batch, seed=seed)
    report = check_parity(reference, keras_model, inputs, atol, seed, channels_first_model=twin)
    assert report.passed, "\n" + report.table()
    return report


def run_cli(*args, cwd=None, env=None, **popen_kwargs):
    """Runs `python convert.py ARGS` in a subprocess; returns the CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, str(REPO / "convert.py"), *map(str, args)],
        cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=600, **popen_kwargs,
    )


@pytest.fixture
def tiny_spec_file(tmp_path):
    import json

    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY_SPEC))
    return path


def keras_twin(model, **overrides):
    """A new CvT with `model`'s arguments and weights under the current dtype policy; `overrides` change arguments."""
    from cvt_tf import CvT

    config = {**model.get_config(), **overrides}
    config.pop("dtype")
    twin = CvT.from_config(config)
    if not twin.built:
        channels_first = twin.data_format == "channels_first"
        twin.build((None, twin.in_chans, None, None) if channels_first else (None, None, None, twin.in_chans))
    twin.set_weights(model.get_weights())
    return twin
