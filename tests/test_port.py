"""Porting without a second copy of the weights: `build_ported` and the channels_first view."""

import numpy as np
import pytest

from converter.layout import LayoutError, check_state_dict, is_ignored
from converter.mapping import MappingMismatch, keras_variables, mapping_rows
from converter.parity import channels_first_view, parity_inputs
from converter.port import build_ported
from converter.steps import build_keras_model
from converter.synthetic import synthetic_state_dict
from cvt_spec import normalize_spec
from tests.conftest import ported, tiny_spec


def test_variables_are_created_holding_the_checkpoint_and_the_checkpoint_is_consumed(spec):
    state_dict = synthetic_state_dict(spec, 10, seed=3)
    rows = mapping_rows(spec, 10)
    assigned = build_keras_model(spec, 10)
    variables = keras_variables(assigned)
    for row in rows:  # the plain way, for comparison: build random weights, then assign each
        variables[row.keras_path].assign(row.torch_to_keras(state_dict[row.torch_key]))

    checked = check_state_dict(dict(state_dict), spec, 10)
    created = build_ported(checked, lambda: build_keras_model(spec, 10), rows)

    expected = keras_variables(assigned)
    actual = keras_variables(created)
    assert actual.keys() == expected.keys()
    for path, variable in expected.items():
        np.testing.assert_array_equal(actual[path].numpy(), variable.numpy(), err_msg=path)
    consumed = checked.arrays
    assert consumed and all(is_ignored(key) for key in consumed)  # only num_batches_tracked is left


def test_a_checkpoint_that_does_not_fit_is_refused_and_the_next_port_is_unaffected(spec):
    rows = mapping_rows(spec, 10)
    broken = synthetic_state_dict(spec, 10)
    del broken["norm.weight"]
    with pytest.raises(LayoutError, match="missing in checkpoint: norm.weight"):
        build_ported(check_state_dict(broken, spec, 10), lambda: build_keras_model(spec, 10), rows)
    # A failure inside the port's stateless scope: rows of this SPEC, a model with one block fewer.
    shallower = normalize_spec(tiny_spec(DEPTH=[1, 1, 1]))
    with pytest.raises(MappingMismatch, match="no Keras variable stage2/block1/norm1/gamma"):
        build_ported(check_state_dict(synthetic_state_dict(spec, 10), spec, 10),
                     lambda: build_keras_model(shallower, 10), rows)
    state_dict = synthetic_state_dict(spec, 10, seed=4)
    model = build_ported(check_state_dict(dict(state_dict), spec, 10), lambda: build_keras_model(spec, 10), rows)
    np.testing.assert_array_equal(keras_variables(model)["norm/gamma"].numpy(), state_dict["norm.weight"])


def test_the_channels_first_view_computes_what_a_channels_first_model_computes(spec):
    state_dict = synthetic_state_dict(spec, 10, seed=1)
    model = ported(spec, state_dict)
    twin = ported(spec, state_dict, data_format="channels_first")
    images = parity_inputs(48, 40, batch=2, seed=1)

    with channels_first_view(model) as view:
        np.testing.assert_allclose(view(images, training=False), twin(images, training=False), atol=1e-6)
    assert model.data_format == "channels_last"
    np.testing.assert_allclose(
        model(np.transpose(images, (0, 2, 3, 1)), training=False), twin(images, training=False), atol=1e-6
    )
