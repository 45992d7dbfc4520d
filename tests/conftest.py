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
from converter.layout import check_state_dict  # noqa: E402
from converter.mapping import mapping_rows  # noqa: E402
from converter.parity import ParityRun, check_parity  # noqa: E402
from converter.port import build_ported  # noqa: E402
from converter.steps import build_keras_model  # noqa: E402
from converter.synthetic import synthetic_state_dict  # noqa: E402
from cvt_spec import normalize_spec  # noqa: E402
from official_ref import load_reference  # noqa: E402

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


def ported(spec, state_dict, num_classes=10, data_format="channels_last"):
    """A Keras model holding `state_dict` (official layout), through the layout check and the mapping."""
    spec = normalize_spec(spec)
    return build_ported(check_state_dict(dict(state_dict), spec, num_classes),
                        lambda: build_keras_model(spec, num_classes, data_format), mapping_rows(spec, num_classes))


def ported_pair(spec, num_classes=10, seed=0, data_format="channels_last"):
    """(reference torch model, Keras model) holding the same synthetic weights."""
    spec = normalize_spec(spec)
    state_dict = synthetic_state_dict(spec, num_classes, seed)
    keras_model = ported(spec, state_dict, num_classes, data_format)
    return load_reference(spec, num_classes, state_dict), keras_model


def assert_parity(spec, num_classes=10, size=(64, 64), batch=2, seed=0, atol=1e-4):
    """Parity over every output, channels_last and channels_first; returns the report."""
    reference, keras_model = ported_pair(spec, num_classes, seed)
    twin = build_keras_model(normalize_spec(spec), num_classes, "channels_first")
    twin.set_weights(keras_model.get_weights())
    report = check_parity(reference, keras_model, ParityRun(size, atol, batch, seed), channels_first_model=twin)
    assert report.passed, "\n" + report.table()
    return report


# The address space a CLI run of the tests may take (RLIMIT_AS): a tiny conversion, with TensorFlow
# and the CUDA build of torch mapped, needs between 4 and 6 GiB; an input that makes memory explode
# fails its test here instead of exhausting the machine.
MEMORY_CEILING = 8 << 30


def run_cli(*args, cwd=None, env=None, memory_limit=MEMORY_CEILING, **popen_kwargs):
    """Runs `python convert.py ARGS` in a subprocess, its address space capped at `memory_limit` bytes.

    `memory_limit=None` for the full-size models.
    """
    import subprocess

    command = [sys.executable, str(REPO / "convert.py"), *map(str, args)]
    if memory_limit is not None:
        # A trampoline sets the limit and execs the CLI (no preexec_fn in a threaded parent).
        trampoline = ("import os, resource, sys; "
                      f"resource.setrlimit(resource.RLIMIT_AS, ({memory_limit}, {memory_limit})); "
                      "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
        command = [sys.executable, "-c", trampoline, *command[1:]]
    return subprocess.run(command, cwd=cwd or REPO, env=env, capture_output=True, text=True, timeout=600,
                          **popen_kwargs)


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
    twin = CvT.from_config(config).build_for_any_size()
    twin.set_weights(model.get_weights())
    return twin


def visible_names(directory):
    """The names a user sees in `directory`, after checking its hidden entries are exactly the artifacts'.

    Each artifact NAME shows as `NAME.weights.h5` and `NAME.json`, links through `.NAME.current` to its
    one current version `.NAME.w<pid>-<nonce>/` holding both files; nothing else may be hidden there.
    """
    import os
    import re

    entries = {p.name: p for p in Path(directory).iterdir()}
    visible = sorted(name for name in entries if not name.startswith("."))
    expected_hidden = set()
    for name in visible:
        if name.endswith(".weights.h5"):
            stem = name.removesuffix(".weights.h5")
            pointer = entries[f".{stem}.current"]
            version = os.readlink(pointer)
            assert re.fullmatch(rf"\.{re.escape(stem)}\.w\d+-[0-9a-f]{{8}}", version), version
            assert sorted(p.name for p in (Path(directory) / version).iterdir()) == [f"{stem}.json", name]
            for file_name in (name, f"{stem}.json"):
                assert os.readlink(entries[file_name]) == f".{stem}.current/{file_name}"
            expected_hidden |= {pointer.name, version}
    assert sorted(n for n in entries if n.startswith(".")) == sorted(expected_hidden), sorted(entries)
    return visible
