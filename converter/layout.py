"""The official state-dict layout: its keys and shapes, and the one check every checkpoint goes through.

Every missing, unexpected, mis-shaped, non-float or non-finite tensor is listed in one error; the
conversion, verify, predict, export and the Hugging Face renames all use this module.
"""

from dataclasses import dataclass, field

import numpy as np

from cvt_spec import InputError
from official_ref import official_state_dict_shapes

# BatchNorm's step counter: in every official checkpoint, without effect on inference and without a
# Keras variable. It may be absent (it is then zero) and is never mapped.
IGNORED_SUFFIXES = (".num_batches_tracked",)

PROBLEM_KINDS = ("missing in checkpoint", "unexpected in checkpoint", "shape mismatch", "dtype mismatch",
                 "non-finite values")


def is_ignored(key: str) -> bool:
    return key.endswith(IGNORED_SUFFIXES)


def format_shape(shape) -> str:
    """`(16, 3, 7, 7)`, `(48,)` or `()`: a shape as torch prints it."""
    return "(" + ", ".join(str(d) for d in shape) + (",)" if len(shape) == 1 else ")")


def official_shapes(spec: dict, num_classes: int) -> dict:
    """{key: (shape, torch dtype)} of the official state dict of `spec` with a `num_classes` head."""
    return official_state_dict_shapes(spec, num_classes)


class LayoutError(InputError):
    """A checkpoint that does not fit the layout it must have; the message lists every offending name."""

    @classmethod
    def listing(cls, what: str, problems: dict) -> "LayoutError":
        """One error for {kind: [problem, ...]}: `WHAT (2 missing in checkpoint, ...): problem; problem`."""
        summary = ", ".join(f"{len(found)} {kind}" for kind, found in problems.items() if found)
        details = "; ".join(problem for found in problems.values() for problem in found)
        return cls(f"{what} ({summary}): {details}")


class HeadMismatch(LayoutError):
    """The checkpoint's classification head has another size than the requested number of classes."""

    def __init__(self, num_classes: int, head_shape: tuple | None, source: str = ""):
        self.num_classes = num_classes
        self.head_shape = head_shape
        self.source = source
        super().__init__(self.describe("num_classes"))

    @property
    def checkpoint_classes(self) -> int:
        return self.head_shape[0] if self.head_shape else 0

    def describe(self, option: str) -> str:
        """The message naming `option` (e.g. `--num-classes`) as the setting that disagrees."""
        wanted = f"{option} {self.num_classes}" + (" (no head)" if self.num_classes == 0 else "")
        found = (f"head.weight is {format_shape(self.head_shape)}, a {self.checkpoint_classes}-class head"
                 if self.head_shape else "it has no head.weight (a headless checkpoint)")
        prefix = f"{self.source}: " if self.source else ""
        return f"{prefix}{wanted} disagrees with the checkpoint's head: {found}; use {option} {self.checkpoint_classes}"


def key_problems(found: dict, expected: dict, optional=is_ignored) -> dict:
    """{kind: [problem]} of the keys of `found` against `expected` (both {key: shape}).

    Keys for which `optional(key)` holds may be absent. Shapes are compared where both have the key.
    """
    problems = {kind: [] for kind in PROBLEM_KINDS}
    for key, shape in expected.items():
        if key not in found:
            if not optional(key):
                problems["missing in checkpoint"].append(f"missing in checkpoint: {key} {format_shape(shape)}")
        elif tuple(found[key]) != tuple(shape) and not optional(key):
            problems["shape mismatch"].append(
                f"shape mismatch: {key} is {format_shape(found[key])}, expected {format_shape(shape)}"
            )
    for key, shape in found.items():
        if key not in expected:
            problems["unexpected in checkpoint"].append(f"unexpected in checkpoint: {key} {format_shape(shape)}")
    return problems


def as_float32(key: str, array: np.ndarray) -> tuple:
    """(float32 array, note or None); (None, None) for a tensor that is not floating point."""
    if not np.issubdtype(array.dtype, np.floating):
        return None, None
    if array.dtype == np.float32:
        return array, None
    return array.astype(np.float32), f"{key}: {array.dtype} converted to float32"


def nonfinite_problem(key: str, array: np.ndarray) -> str | None:
    """A description of the NaN and Inf values in a float array, or None when it has none."""
    if np.isfinite(array).all():
        return None
    nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    return f"non-finite values: {key} has {nan} NaN and {inf} Inf of {array.size} values"


@dataclass
class OfficialWeights:
    """A checkpoint that passed `check_state_dict`: float32 arrays in the official layout.

    The PyTorch reference and the Keras port both read these arrays, so parity is checked on the
    converted weights; the port takes them as they are, without checking again.
    """

    arrays: dict
    notes: list = field(default_factory=list)  # dtype conversions, e.g. "head.weight: float16 converted to float32"


def check_head(state_dict: dict, num_classes: int, source: str = "") -> None:
    """Raises HeadMismatch when the checkpoint's head does not have `num_classes` outputs."""
    head = state_dict.get("head.weight")
    if head is None:
        if num_classes > 0:
            raise HeadMismatch(num_classes, None, source)
        return
    if np.ndim(head) == 2 and np.shape(head)[0] != num_classes:
        raise HeadMismatch(num_classes, tuple(np.shape(head)), source)


def _check_values(state_dict, expected, problems):
    """Float32 arrays of the keys that have the expected shape; dtype and NaN/Inf problems go in `problems`."""
    arrays, notes = {}, []
    for key, (shape, _) in expected.items():
        if key not in state_dict:
            arrays[key] = np.zeros(shape, np.int64)  # an absent num_batches_tracked
            continue
        original = np.asarray(state_dict[key])
        if is_ignored(key) or original.shape != shape:
            arrays[key] = original
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
    return arrays, notes


def check_state_dict(state_dict: dict, spec: dict, num_classes: int, source: str = "",
                     target: str = "the model") -> OfficialWeights:
    """The checkpoint as float32 arrays in the official layout of `spec`, checked before any use.

    Half-precision and float64 tensors are converted to float32 with a note; BatchNorm's step
    counters (`num_batches_tracked`, unused at inference) may be absent and are then zero.

    Args:
        source: the checkpoint's name for messages, e.g. its path.
        target: what it must fit, for messages.

    Raises:
        HeadMismatch: the head's size differs from `num_classes`.
        LayoutError: one error listing every missing, unexpected, mis-shaped, non-float and
            non-finite tensor, with the expected and received shapes and dtypes.
    """
    check_head(state_dict, num_classes, source)
    expected = official_shapes(spec, num_classes)
    problems = key_problems({key: np.shape(value) for key, value in state_dict.items()},
                            {key: shape for key, (shape, _) in expected.items()})
    arrays, notes = _check_values(state_dict, expected, problems)
    if any(problems.values()):
        prefix = f"{source}: checkpoint" if source else "checkpoint"
        raise LayoutError.listing(f"{prefix} does not fit {target}", problems)
    return OfficialWeights(arrays, notes)
