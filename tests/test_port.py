"""Porting without a second copy of the weights: `build_ported` and the channels_first view."""

import numpy as np
import pytest

from converter.mapping import is_ignored, mapping_rows
from converter.parity import channels_first_view, parity_inputs
from converter.pipeline import build_keras_model
from converter.port import MappingError, build_ported, keras_variables, port_weights
from converter.synthetic import synthetic_state_dict


def test_variables_are_created_holding_the_checkpoint_and_the_checkpoint_is_consumed(spec):
    state_dict = synthetic_state_dict(spec, 10, seed=3)
    rows = mapping_rows(spec, 10)
    assigned = build_keras_model(spec, 10)
    port_weights(dict(state_dict), assigned, rows)

    consumed = dict(state_dict)
    created = build_ported(consumed, lambda: build_keras_model(spec, 10), rows)

    expected = keras_variables(assigned)
    actual = keras_variables(created)
    assert actual.keys() == expected.keys()
    for path, variable in expected.items():
        np.testing.assert_array_equal(actual[path].numpy(), variable.numpy(), err_msg=path)
    assert consumed and all(is_ignored(key) for key in consumed)  # only num_batches_tracked is left


def test_a_checkpoint_that_does_not_fit_is_refused_and_the_next_port_is_unaffected(spec):
    rows = mapping_rows(spec, 10)
    broken = synthetic_state_dict(spec, 10)
    del broken["norm.weight"]
    with pytest.raises(MappingError, match="missing in checkpoint: norm.weight"):
        build_ported(broken, lambda: build_keras_model(spec, 10), rows)
    state_dict = synthetic_state_dict(spec, 10, seed=4)
    model = build_ported(dict(state_dict), lambda: build_keras_model(spec, 10), rows)
    np.testing.assert_array_equal(keras_variables(model)["norm/gamma"].numpy(), state_dict["norm.weight"])


def test_the_channels_first_view_computes_what_a_channels_first_model_computes(spec):
    state_dict = synthetic_state_dict(spec, 10, seed=1)
    rows = mapping_rows(spec, 10)
    model = build_ported(dict(state_dict), lambda: build_keras_model(spec, 10), rows)
    twin = build_keras_model(spec, 10, "channels_first")
    port_weights(dict(state_dict), twin, rows)
    images = parity_inputs(48, 40, batch=2, seed=1)

    with channels_first_view(model) as view:
        np.testing.assert_allclose(view(images, training=False), twin(images, training=False), atol=1e-6)
    assert model.data_format == "channels_last"
    np.testing.assert_allclose(
        model(np.transpose(images, (0, 2, 3, 1)), training=False), twin(images, training=False), atol=1e-6
    )
