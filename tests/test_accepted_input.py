"""Checkpoints that differ from the official file only in form are accepted by convert.py.

Wrappers, `module.` prefixes, OrderedDicts and safetensors convert to the same weights; half precision
is widened to float32 with a note, and parity is checked on the widened weights.
"""

import collections
import json

import numpy as np
import pytest
import torch

from converter.mapping import keras_variables, mapping_rows
from converter.parity import parity_inputs
from cvt_spec import normalize_spec
from cvt_tf import load_artifact
from official_ref import load_reference
from tests.conftest import TINY_SPEC, run_cli, visible_names
from tests.corpus import NUM_CLASSES, record, tensors, tiny_state_dict, write_spec


def _assert_artifact_holds(weights_path, state_dict):
    """The artifact read back from disk holds exactly the checkpoint's values, through the mapping."""
    variables = keras_variables(load_artifact(weights_path))
    for row in mapping_rows(normalize_spec(TINY_SPEC), NUM_CLASSES):
        expected = row.torch_to_keras(np.asarray(state_dict[row.torch_key], np.float32))
        np.testing.assert_array_equal(variables[row.keras_path].numpy(), expected, err_msg=row.torch_key)


def _convert(tmp_path, checkpoint, case):
    out = tmp_path / "out"
    result = run_cli("--spec", write_spec(tmp_path), "--num-classes", NUM_CLASSES, "--res", 64,
                     "--checkpoint", checkpoint, "--out", out, "--name", "tiny")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert visible_names(out) == ["tiny.json", "tiny.weights.h5"]
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: ")]
    record(case, 0, " / ".join([notes[0], notes[-1]]) if notes else result.stdout.splitlines()[-1])
    return result, out / "tiny.weights.h5", json.loads((out / "tiny.json").read_text())


def _save_safetensors(state_dict, path):
    from safetensors.torch import save_file

    save_file({key: value.contiguous() for key, value in tensors(state_dict).items()}, str(path))


WRAPPED = {
    # state_dict wrapper around an OrderedDict of DataParallel (`module.`) keys
    "state_dict_module_ordered": lambda sd, path: torch.save(
        {"state_dict": collections.OrderedDict(("module." + k, v) for k, v in tensors(sd).items())}, path),
    "model_with_extras": lambda sd, path: torch.save({"model": tensors(sd), "epoch": 3, "best_acc": 0.8}, path),
    "safetensors": _save_safetensors,
}


@pytest.mark.parametrize("form", sorted(WRAPPED))
def test_wrapped_checkpoints_convert_to_the_same_weights(tmp_path, form):
    state_dict = tiny_state_dict(seed=4)
    path = tmp_path / ("ckpt.safetensors" if form == "safetensors" else "ckpt.pth")
    WRAPPED[form](state_dict, path)
    result, weights_path, manifest = _convert(tmp_path, path, f"accepted_{form}")
    assert "parity PASSED" in result.stdout
    assert manifest["dtype_notes"] == []
    _assert_artifact_holds(weights_path, state_dict)


def test_half_precision_is_widened_with_notes_and_parity_uses_the_widened_weights(tmp_path):
    state_dict = tiny_state_dict(seed=5)
    half, count = {}, collections.Counter()
    for i, (key, value) in enumerate(tensors(state_dict).items()):
        if value.is_floating_point():
            value = value.half() if i % 2 else value.bfloat16()
            count[str(value.dtype)] += 1
        half[key] = value
    path = tmp_path / "half.pth"
    torch.save(half, path)

    result, weights_path, manifest = _convert(tmp_path, path, "accepted_float16_bfloat16")
    assert "note: " in result.stdout and "converted to float32" in result.stdout
    notes = manifest["dtype_notes"]
    assert sum("float16 converted to float32" in n and "bfloat16" not in n for n in notes) == count["torch.float16"]
    assert sum("bfloat16 converted to float32" in n for n in notes) == count["torch.bfloat16"]
    widened = {key: (value.float() if value.is_floating_point() else value).numpy() for key, value in half.items()}
    _assert_artifact_holds(weights_path, widened)

    # Parity passed at the float32 noise floor, which only the widened weights can give: the
    # float32 originals move the logits by far more than the reported difference.
    logits = manifest["parity"]["outputs"]["logits"]["max_abs"]
    assert manifest["parity"]["passed"] and logits < 1e-5
    spec = normalize_spec(TINY_SPEC)
    x = torch.from_numpy(parity_inputs(64, 64, seed=0))
    with torch.inference_mode():
        drift = (load_reference(spec, NUM_CLASSES, widened)(x) - load_reference(spec, NUM_CLASSES, state_dict)(x))
    assert float(drift.abs().max()) > 100 * logits
