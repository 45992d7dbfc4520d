"""The reference and the mapping against the official key lists (shared/official_keys)."""

import numpy as np
import pytest
import torch

from converter.layout import is_ignored, official_shapes
from converter.mapping import keras_variables, mapping_rows
from cvt_spec import variant_spec
from tests.conftest import OFFICIAL_KEYS

KEY_FILES = ["cvt-13-224", "cvt-13-384", "cvt-21-224", "cvt-21-384", "cvt-w24-384"]


def official_key_file(name):
    """[(key, shape, dtype)] in state-dict order."""
    entries = []
    for line in (OFFICIAL_KEYS / f"{name}.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, rest = line.split(" ", 1)
        shape_text, dtype = rest.rsplit(" ", 1)
        shape = tuple(int(d) for d in shape_text.strip("()").split(",") if d.strip())
        entries.append((key, shape, dtype))
    return entries


@pytest.mark.parametrize("name", KEY_FILES)
def test_reference_state_dict_equals_official_keys(name):
    variant = name.rsplit("-", 1)[0]
    shapes = official_shapes(variant_spec(variant), 1000)
    actual = [(key, shape, str(dtype).removeprefix("torch.")) for key, (shape, dtype) in shapes.items()]
    assert actual == official_key_file(name)


@pytest.mark.parametrize("variant", ["cvt-13", "cvt-21", "cvt-w24"])
def test_mapping_covers_every_official_key_once(variant):
    entries = official_key_file(f"{variant}-384")
    rows = mapping_rows(variant_spec(variant), 1000)
    mapped = [row.torch_key for row in rows]
    assert len(mapped) == len(set(mapped))
    assert sorted(mapped) == sorted(key for key, _, _ in entries if not is_ignored(key))
    ignored = [key for key, _, _ in entries if is_ignored(key)]
    assert all(key.endswith("num_batches_tracked") for key in ignored) and ignored


def test_mapping_targets_every_keras_variable_with_the_right_shape():
    from converter.steps import build_keras_model

    spec = variant_spec("cvt-13")
    variables = keras_variables(build_keras_model(spec, 1000))
    rows = mapping_rows(spec, 1000)
    assert sorted(row.keras_path for row in rows) == sorted(variables)
    shapes = {key: shape for key, shape, _ in official_key_file("cvt-13-224")}
    for row in rows:
        assert row.keras_shape_of(shapes[row.torch_key]) == tuple(variables[row.keras_path].shape), row


def test_transforms_move_values_not_only_shapes():
    rows = {row.transform: row for row in mapping_rows(variant_spec("cvt-13"), 1000)}
    conv = np.arange(64 * 3 * 7 * 7).reshape(64, 3, 7, 7)
    assert rows["conv"].torch_to_keras(conv)[2, 5, 1, 9] == conv[9, 1, 2, 5]
    depthwise = np.arange(64 * 9).reshape(64, 1, 3, 3)
    assert rows["depthwise"].torch_to_keras(depthwise)[1, 2, 7, 0] == depthwise[7, 0, 1, 2]
    dense = np.arange(12).reshape(3, 4)
    assert rows["dense"].torch_to_keras(dense)[1, 2] == dense[2, 1]
    for transform, array in [("conv", conv), ("depthwise", depthwise), ("dense", dense), ("identity", dense)]:
        np.testing.assert_array_equal(rows[transform].keras_to_torch(rows[transform].torch_to_keras(array)), array)


@pytest.mark.parametrize(
    ("variant", "total", "trainable"),
    [("cvt-13", 20_023_208, 19_997_480), ("cvt-21", 31_664_552, 31_622_696), ("cvt-w24", 277_330_792, None)],
)
def test_parameter_counts_equal_the_official_ones(variant, total, trainable):
    from cvt_tf import CvT

    model = CvT(configuration=variant)
    model.build((None, 224, 224, 3))
    assert model.count_params() == total
    counted = sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    if trainable is not None:
        assert counted == trainable
    with torch.device("meta"):
        from official_ref import build_model

        reference = build_model(variant)
    assert counted == sum(p.numel() for p in reference.parameters())
