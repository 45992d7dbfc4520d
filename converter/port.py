"""A Keras CvT created holding a checked checkpoint's values, through the mapping rows.

The checkpoint was checked once (`converter.layout.check_state_dict`); here every mapping row must
meet one Keras variable of its shape and every variable one row, or the code itself is wrong. The
first module of the conversion that imports Keras (and so TensorFlow).
"""

import keras

from converter.layout import OfficialWeights
from converter.mapping import MappingMismatch, Row, keras_variables


def check_rows_meet_variables(rows: list[Row], shapes: dict, variables: dict) -> None:
    """Raises MappingMismatch unless the rows and the variables pair up one to one, with equal shapes.

    Args:
        shapes: {torch key: official shape} of the rows' tensors.
        variables: `keras_variables` of the model.
    """
    expected = {row.keras_path: row.keras_shape_of(shapes[row.torch_key]) for row in rows}
    found = {path: tuple(variable.shape) for path, variable in variables.items()}
    problems = [f"no Keras variable {path}" for path in expected if path not in found]
    problems += [f"no mapping row for {path}" for path in found if path not in expected]
    problems += [f"{path} is {found[path]}, its row gives {shape}" for path, shape in expected.items()
                 if path in found and found[path] != shape]
    if problems:
        raise MappingMismatch("the mapping rows do not fit the Keras model: " + "; ".join(problems))


def build_ported(weights: OfficialWeights, make_model, rows: list[Row]) -> keras.Model:
    """A model built by `make_model()` whose variables are created holding the checkpoint's values.

    The model's random initial weights never exist: each variable is created from its array, which is
    then dropped from `weights.arrays` (consumed), so one copy of the weights is alive at a time.
    Variables without a row (DropPath seed state) keep their own initializers.

    Raises:
        MappingMismatch: the rows and the model's variables do not pair up (a bug).
    """
    # Variables made inside a stateless scope wait, uninitialized, for the scope's end; before it,
    # each mapped variable's initializer is replaced by its checkpoint tensor (Keras 3 keeps the
    # initializer in `_initializer` until then; `tests/test_port.py` pins that behaviour).
    with keras.StatelessScope():
        model = make_model()
        variables = keras_variables(model)
        check_rows_meet_variables(rows, {row.torch_key: weights.arrays[row.torch_key].shape for row in rows},
                                  variables)
        for row in rows:
            variables[row.keras_path]._initializer = _take_from(weights.arrays, row)
    return model


def _take_from(arrays, row):
    """An initializer giving the row's array once, in the Keras layout, and dropping it from `arrays`."""

    def initializer(shape, dtype=None):
        return row.torch_to_keras(arrays.pop(row.torch_key))

    return initializer
