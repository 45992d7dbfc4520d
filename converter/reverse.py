"""Keras CvT weights back to an official-layout PyTorch state dict, through the same mapping rows.

The inverse of converter/port.py; what Keras cannot hold (source dtypes, BatchNorm step counters) comes
from the `torch_layout` entry that the conversion writes into the manifest.
"""

from collections import Counter

import numpy as np
import torch

from converter.layout import is_ignored, official_shapes
from converter.mapping import MappingMismatch, keras_variables, mapping_rows
from cvt_spec import ArtifactError
from cvt_spec.errors import shown

# An artifact whose manifest has no `torch_layout` entry gets these.
DEFAULT_TORCH_LAYOUT = {"dtype": "float32", "dtype_exceptions": {}, "num_batches_tracked": 0,
                        "num_batches_tracked_exceptions": {}}


def _most_common_and_exceptions(values):
    if not values:
        return None, {}
    common = Counter(values.values()).most_common(1)[0][0]
    return common, {key: value for key, value in values.items() if value != common}


def torch_layout_facts(state_dict: dict) -> dict:
    """The source's float dtypes and BatchNorm step counters, as one common value plus exceptions.

    Real checkpoints are uniform, so the entry stays small; a synthetic one lists every counter.
    A counter that is not an integer scalar is left out (exported as the common value).
    """
    dtypes = {key: str(np.asarray(value).dtype) for key, value in state_dict.items() if not is_ignored(key)}
    counters = {
        key: int(np.asarray(value).item())
        for key, value in state_dict.items()
        if is_ignored(key) and np.size(value) == 1 and np.issubdtype(np.asarray(value).dtype, np.integer)
    }
    dtype, dtype_exceptions = _most_common_and_exceptions(dtypes)
    counter, counter_exceptions = _most_common_and_exceptions(counters)
    return {
        "dtype": dtype, "dtype_exceptions": dtype_exceptions,
        "num_batches_tracked": counter or 0, "num_batches_tracked_exceptions": counter_exceptions,
    }


def _torch_dtype(name, key):
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ArtifactError(
            f"the manifest's torch_layout gives {key} the dtype {shown(name)}, expected a floating-point torch dtype"
        )
    return dtype


def official_state_dict(model, torch_layout: dict | None = None) -> dict:
    """{official key: torch tensor} of a built `cvt_tf.CvT`, in the official state-dict order.

    Every Keras variable is read once through its mapping row; float tensors get the source dtype,
    BatchNorm `num_batches_tracked` the source counter (int64 scalars), so official_ref loads the
    result with `strict=True`.

    Args:
        torch_layout: the manifest's `torch_layout` entry; None means float32 and zero counters.

    Raises:
        ArtifactError: the manifest's torch_layout names a dtype that is not a float dtype.
        MappingMismatch: a Keras variable is missing or its shape does not give the official one (a bug).
    """
    layout = {**DEFAULT_TORCH_LAYOUT, **(torch_layout or {})}
    spec, num_classes = model.spec, model.num_classes if model.head is not None else 0
    variables = keras_variables(model)
    rows = {row.torch_key: row for row in mapping_rows(spec, num_classes)}
    problems, state_dict = [], {}
    for key, (shape, _) in official_shapes(spec, num_classes).items():
        if is_ignored(key):
            count = layout["num_batches_tracked_exceptions"].get(key, layout["num_batches_tracked"])
            state_dict[key] = torch.tensor(count, dtype=torch.int64)
            continue
        row = rows[key]
        variable = variables.get(row.keras_path)
        if variable is None:
            problems.append(f"no Keras variable {row.keras_path} for {key}")
            continue
        array = np.ascontiguousarray(row.keras_to_torch(np.asarray(variable.numpy())))
        if array.shape != shape:
            problems.append(f"{row.keras_path} gives {key} the shape {array.shape}, expected {shape}")
            continue
        dtype = _torch_dtype(layout["dtype_exceptions"].get(key, layout["dtype"]), key)
        state_dict[key] = torch.from_numpy(array).to(dtype)
    if problems:
        raise MappingMismatch(f"the Keras model does not fit the official layout ({len(problems)} problems): "
                         + "; ".join(problems))
    return state_dict
