"""Checking a loaded checkpoint against the official layout of the requested model, before conversion.

Every missing, unexpected, mis-shaped, non-float or non-finite tensor is listed in one error.
"""

import numpy as np

from converter.mapping import is_ignored
from converter.port import MappingError, as_float32, nonfinite_problem
from converter.synthetic import official_shapes


def _shape(shape):
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


class HeadMismatch(MappingError):
    """The checkpoint's classification head has another size than the requested number of classes."""

    def __init__(self, num_classes, head_shape):
        self.num_classes = num_classes
        self.head_shape = head_shape
        super().__init__(self.describe("num_classes"))

    @property
    def checkpoint_classes(self):
        return self.head_shape[0] if self.head_shape else 0

    def describe(self, option):
        wanted = f"{option} {self.num_classes}" + (" (no head)" if self.num_classes == 0 else "")
        found = (f"head.weight is {_shape(self.head_shape)}, a {self.checkpoint_classes}-class head"
                 if self.head_shape else "it has no head.weight (a headless checkpoint)")
        return f"{wanted} disagrees with the checkpoint's head: {found}; use {option} {self.checkpoint_classes}"


def check_head(state_dict, num_classes):
    """Raises HeadMismatch when the checkpoint's head does not have `num_classes` outputs."""
    head = state_dict.get("head.weight")
    if head is None:
        if num_classes > 0:
            raise HeadMismatch(num_classes, None)
        return
    if head.ndim == 2 and head.shape[0] != num_classes:
        raise HeadMismatch(num_classes, tuple(head.shape))


PROBLEM_KINDS = ("missing in checkpoint", "unexpected in checkpoint", "shape mismatch", "dtype mismatch",
                 "non-finite values")


def _problems(state_dict, expected):
    """({kind: [problem, ...]}, {key: float32 array}, dtype notes) for the expected keys."""
    problems = {kind: [] for kind in PROBLEM_KINDS}
    arrays, notes = {}, []
    for key, (shape, _) in expected.items():
        if key not in state_dict:
            if not is_ignored(key):
                problems["missing in checkpoint"].append(f"missing in checkpoint: {key} {_shape(shape)}")
            continue
        original = np.asarray(state_dict[key])
        if is_ignored(key):
            arrays[key] = original
            continue
        if tuple(original.shape) != shape:
            problems["shape mismatch"].append(
                f"shape mismatch: {key} is {_shape(original.shape)}, expected {_shape(shape)}"
            )
            continue
        array, note = as_float32(key, original)
        if array is None:
            problems["dtype mismatch"].append(f"dtype mismatch: {key} is {original.dtype}, expected float32")
            continue
        problem = nonfinite_problem(key, array)
        if problem:
            problems["non-finite values"].append(problem)
        notes += [note] if note else []
        arrays[key] = array
    for key, value in state_dict.items():
        if key not in expected:
            problems["unexpected in checkpoint"].append(f"unexpected in checkpoint: {key} {_shape(np.shape(value))}")
    return problems, arrays, notes


def validate_state_dict(state_dict, spec, num_classes):
    """The checkpoint as float32 arrays in the official layout of `spec`, checked before conversion.

    Half-precision and float64 tensors are converted to float32 with a note; BatchNorm's step
    counters (`num_batches_tracked`, unused at inference) may be absent and are then zero.

    Returns:
        (state dict of float32 arrays, dtype notes); the PyTorch reference and the Keras port both
        read these same arrays, so parity is checked on the converted weights.

    Raises:
        HeadMismatch: the head's size differs from `num_classes`.
        MappingError: one error listing every missing, unexpected, mis-shaped, non-float and
            non-finite tensor, with the expected and received shapes and dtypes.
    """
    check_head(state_dict, num_classes)
    expected = official_shapes(spec, num_classes)
    problems, arrays, notes = _problems(state_dict, expected)
    if any(problems.values()):
        summary = ", ".join(f"{len(found)} {kind}" for kind, found in problems.items() if found)
        listing = "; ".join(problem for found in problems.values() for problem in found)
        raise MappingError(f"checkpoint does not fit the model ({summary}): {listing}")
    for key, (shape, _) in expected.items():
        if key not in arrays:  # an absent num_batches_tracked
            arrays[key] = np.zeros(shape, np.int64)
    return arrays, notes
