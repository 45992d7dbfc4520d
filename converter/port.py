"""Assigning a checkpoint to a Keras CvT through the mapping rows, with two-sided accounting.

Every checkpoint key is used once and every Keras variable assigned once, or one error lists all
that were not.
"""

import numpy as np

from converter.mapping import is_ignored


class MappingError(ValueError):
    """A checkpoint that does not fit the model; the message lists every offending name."""


def keras_variables(model):
    """{path relative to the model: variable} for every weight, trainable or not."""
    prefix = model.name + "/"
    return {v.path[len(prefix):] if v.path.startswith(prefix) else v.path: v for v in model.weights}


def _describe(shape):
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def check_mapping(state_dict, rows, keras_shapes):
    """Lists every problem between a checkpoint, the mapping rows and the Keras variables' {path: shape}."""
    problems = []
    mapped_keys = {row.torch_key for row in rows}
    for row in rows:
        keras_shape = keras_shapes.get(row.keras_path)
        if row.torch_key not in state_dict:
            problems.append(f"missing in checkpoint: {row.torch_key}")
        if keras_shape is None:
            problems.append(f"no Keras variable {row.keras_path} for {row.torch_key}")
        if row.torch_key in state_dict and keras_shape is not None:
            received = tuple(state_dict[row.torch_key].shape)
            expected = row.torch_shape(tuple(keras_shape))
            if received != expected:
                problems.append(
                    f"shape mismatch: {row.torch_key} is {_describe(received)}, "
                    f"expected {_describe(expected)} for {row.keras_path}"
                )
    for key in state_dict:
        if key not in mapped_keys and not is_ignored(key):
            problems.append(f"unexpected in checkpoint: {key} {_describe(tuple(state_dict[key].shape))}")
    assigned = {row.keras_path for row in rows}
    for path, keras_shape in keras_shapes.items():
        if path not in assigned:
            problems.append(f"Keras variable never assigned: {path} {_describe(tuple(keras_shape))}")
    return problems


def as_float32(key, array):
    """(float32 array, note or None); None for a tensor that is not floating point."""
    array = np.asarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        return None, None
    if array.dtype == np.float32:
        return array, None
    return array.astype(np.float32), f"{key}: {array.dtype} converted to float32"


def nonfinite_problem(key, array):
    """A description of the NaN and Inf values in a float array, or None when it has none."""
    if np.isfinite(array).all():
        return None
    nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    return f"non-finite values: {key} has {nan} NaN and {inf} Inf of {array.size} values"


def check_fit(state_dict, rows, keras_shapes):
    """Raises one MappingError listing every problem `check_mapping` finds, if any."""
    problems = check_mapping(state_dict, rows, keras_shapes)
    if problems:
        raise MappingError(
            f"checkpoint does not fit the model ({len(problems)} problems): " + "; ".join(problems)
        )


def check_values(state_dict, rows):
    """Refuses non-float tensors and NaN/Inf values, naming the key; returns float32 arrays."""
    arrays, notes = {}, []
    for row in rows:
        original = np.asarray(state_dict[row.torch_key])
        array, note = as_float32(row.torch_key, original)
        if array is None:
            raise MappingError(f"{row.torch_key}: dtype {original.dtype}, expected a floating-point tensor")
        problem = nonfinite_problem(row.torch_key, array)
        if problem:
            raise MappingError(problem)
        notes += [note] if note else []
        arrays[row.torch_key] = array
    return arrays, notes


def port_weights(state_dict, model, rows):
    """Assigns every row's checkpoint tensor to its Keras variable.

    Args:
        state_dict: {key: numpy array} in the official layout.
        model: a built `cvt_tf.CvT`.
        rows: `mapping_rows` of the model's SPEC and head.

    Returns:
        Notes on dtype conversions (empty when the checkpoint is all float32).

    Raises:
        MappingError: one error listing every missing, unexpected, unassigned and
            shape-mismatched name, or naming a non-float or non-finite tensor.
    """
    variables, arrays, notes = _checked(state_dict, model, rows)
    for row in rows:
        variables[row.keras_path].assign(row.torch_to_keras(arrays.pop(row.torch_key)))
    return notes


def _checked(state_dict, model, rows):
    """(model's variables by path, float32 arrays by key, dtype notes) once the checkpoint fits."""
    variables = keras_variables(model)
    check_fit(state_dict, rows, {path: tuple(variable.shape) for path, variable in variables.items()})
    arrays, notes = check_values(state_dict, rows)
    return variables, arrays, notes


def build_ported(state_dict, make_model, rows):
    """A model built by `make_model()` whose variables are created holding the checkpoint's values.

    Unlike building and then `port_weights`, the model's random initial weights never exist: each
    variable is created from its tensor, which is then dropped from `state_dict` (consumed), so one
    copy of the weights is alive at a time, not two. Variables without a row (DropPath seed state)
    keep their own initializers. Raises `MappingError` as `port_weights` does.
    """
    import keras

    # Variables made inside a stateless scope wait, uninitialized, for the scope's end; before it,
    # each mapped variable's initializer is replaced by its checkpoint tensor (Keras 3 keeps the
    # initializer in `_initializer` until then; `tests/test_port.py` pins that behaviour).
    with keras.StatelessScope():
        model = make_model()
        variables, arrays, _ = _checked(state_dict, model, rows)
        for row in rows:
            variables[row.keras_path]._initializer = _take_from(state_dict, arrays, row)
    return model


def _take_from(state_dict, arrays, row):
    """An initializer giving the row's float32 array once, dropping every reference to the tensor."""

    def initializer(shape, dtype=None):
        del state_dict[row.torch_key]
        return row.torch_to_keras(arrays.pop(row.torch_key))

    return initializer
