"""Safe loading of an official CvT checkpoint into a plain dict of numpy arrays.

Pickles are read with `weights_only=True`: code inside a malicious file never runs.
"""

import pickle
import re
import struct
import zipfile
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from cvt_spec import InputError, InputFileError
from cvt_spec.errors import shown
from cvt_spec.files import check_input_file

WRAPPER_KEYS = ("state_dict", "model")
# What torch.load (its weights-only unpickler and tensor rebuilding) and safetensors raise on damaged
# bytes, as the fuzzer found them (tests/test_fuzz.py): caught around those two calls only.
DAMAGED_FILE_ERRORS = (RuntimeError, EOFError, ValueError, IndexError, KeyError, TypeError, AttributeError,
                       AssertionError, struct.error, zipfile.BadZipFile, OSError, MemoryError, SafetensorError)
MODULE_PREFIX = "module."


class CheckpointError(InputError):
    """A checkpoint file that cannot be read as a state dict; the message names the file."""


def _is_safetensors(path, head):
    # safetensors: an 8-byte little-endian header length, then the JSON header.
    return path.suffix == ".safetensors" or (
        head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size
    )


# What zipfile raises on a damaged archive (found by the fuzzer): bad records, undecodable names, versions.
DAMAGED_ZIP_ERRORS = (zipfile.BadZipFile, UnicodeDecodeError, NotImplementedError, ValueError, EOFError,
                      struct.error, OSError)


def _check_container(path, head):
    """Refuses a zip that is damaged or holds no pickle before torch reads it."""
    try:
        names = None
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
    except DAMAGED_ZIP_ERRORS as error:
        raise CheckpointError(f"{path}: a damaged zip archive ({shown(str(error))})") from None
    if names is None:
        if head.startswith(b"PK\x03\x04"):
            raise CheckpointError(f"{path}: a damaged zip archive (its central directory is missing: truncated?)")
        return
    if not any(name.endswith("data.pkl") for name in names):
        raise CheckpointError(f"{path}: a zip archive without data.pkl, not a torch checkpoint")


def _read(path):
    with open(path, "rb") as handle:
        head = handle.read(9)
    safetensors = _is_safetensors(path, head)
    if not safetensors:
        _check_container(path, head)
    try:
        if safetensors:
            return load_file(str(path))
        # Not mmap: each tensor then owns its memory, which is freed as soon as the tensor is ported;
        # a mapped file stays resident until its last tensor goes (cvt-w24 peaked 1 GB higher).
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(f"{path}: {_unpickling_problem(error)}") from None
    except DAMAGED_FILE_ERRORS as error:
        first_sentence = (str(error).splitlines() or [type(error).__name__])[0].split(". ")[0]
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first_sentence})") from None


def _unpickling_problem(error):
    """What torch's restricted unpickler refused: a Python global (code) or damaged data."""
    text = str(error)
    called = re.search(r"GLOBAL ([\w.]+)", text)
    if called:
        return (f"not a safe torch checkpoint (refused: it calls {called[1]} on load, "
                "which could run code; only tensors are allowed)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
    return f"not a readable torch checkpoint (damaged pickle data: {detail})"


def unwrap_state_dict(loaded, source: str = "checkpoint") -> dict:
    """The tensors of a state dict, unwrapped from `state_dict`/`model` and without `module.`."""
    while isinstance(loaded, dict) and any(key in loaded for key in WRAPPER_KEYS):
        inner = next(loaded[key] for key in WRAPPER_KEYS if key in loaded)
        if not isinstance(inner, dict):
            break
        loaded = inner
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{source}: holds no state dict (found {type(loaded).__name__})")
    state_dict, original_key = {}, {}
    for key, value in loaded.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{source}: key {shown(key)} ({type(key).__name__}) is not a string")
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
        name = key.removeprefix(MODULE_PREFIX)
        if name in state_dict:
            raise CheckpointError(
                f"{source}: keys {original_key[name]} and {key} both name {name} once `{MODULE_PREFIX}` is "
                "stripped; keep one of them"
            )
        state_dict[name], original_key[name] = value, key
    return state_dict


# What torch's allocator gives every tensor. Weights at other addresses (safetensors' views into
# the file) make MKL take other code paths, and the reference's outputs then differ in the last bit.
ALIGNMENT_BYTES = 64


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor as a numpy array on a 64-byte-aligned address; bfloat16 is widened to float32 (exactly)."""
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()  # numpy has no bfloat16; float16 stays float16 until the layout check widens it
    elif tensor.data_ptr() % ALIGNMENT_BYTES:
        tensor = tensor.clone()
    return tensor.detach().numpy()


def _arrays(tensors, source, dtype_notes):
    arrays = {}
    for key, tensor in tensors.items():
        if tensor.layout != torch.strided or tensor.is_quantized:
            kind = "quantized" if tensor.is_quantized else str(tensor.layout).replace("torch.", "")
            raise CheckpointError(f"{source}: {key} is a {kind} tensor, expected a dense one")
        if tensor.dtype == torch.bfloat16 and dtype_notes is not None:
            dtype_notes.append(f"{key}: bfloat16 converted to float32")
        arrays[key] = to_numpy(tensor)
    return arrays


def load_checkpoint(path, dtype_notes: list | None = None) -> dict:
    """Reads an official checkpoint (`.pth` or safetensors) as {key: numpy array}.

    Accepts a bare state dict or one wrapped in `state_dict` or `model`; strips `module.`.

    Args:
        path: the checkpoint file; safetensors files are recognised by content, not only suffix.
        dtype_notes: a list that receives a note for each bfloat16 tensor, widened to float32
            here because numpy has no bfloat16.

    Raises:
        CheckpointError: the file is missing, not a regular file, empty, unreadable, not a torch
            checkpoint, holds objects other than tensors, or would need code execution to load.
    """
    path = Path(path)
    try:
        check_input_file(path, kind="checkpoint")
        loaded = _read(path)
    except InputFileError as error:
        raise CheckpointError(str(error)) from None
    except OSError as error:  # a file that became unreadable between the check and the read
        raise CheckpointError(f"{path}: cannot be read ({error.strerror or error})") from None
    return _arrays(unwrap_state_dict(loaded, str(path)), str(path), dtype_notes)
