"""Safe loading of an official CvT checkpoint into a plain dict of numpy arrays.

Pickles are read with `weights_only=True`: code inside a malicious file never runs.
"""

import pickle
import zipfile
from pathlib import Path

import torch

WRAPPER_KEYS = ("state_dict", "model")
MODULE_PREFIX = "module."


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read as a state dict; the message names the file."""


def _read(path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))


def unwrap_state_dict(loaded, source="checkpoint"):
    """The tensors of a state dict, unwrapped from `state_dict`/`model` and without `module.`."""
    while isinstance(loaded, dict) and any(key in loaded for key in WRAPPER_KEYS):
        inner = next(loaded[key] for key in WRAPPER_KEYS if key in loaded)
        if not isinstance(inner, dict):
            break
        loaded = inner
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{source}: holds no state dict (found {type(loaded).__name__})")
    state_dict = {}
    for key, value in loaded.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {key} is a {type(value).__name__}, not a tensor")
        name = key[len(MODULE_PREFIX):] if key.startswith(MODULE_PREFIX) else key
        state_dict[name] = value
    return state_dict


def to_numpy(tensor):
    # numpy has no bfloat16: widen it here; float16 stays float16 until the port widens it.
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()
    return tensor.detach().numpy()


def load_checkpoint(path):
    """Reads an official checkpoint (`.pth` or `.safetensors`) as {key: numpy array}.

    Accepts a bare state dict or one wrapped in `state_dict` or `model`; strips `module.`.

    Raises:
        CheckpointError: the file is missing, unreadable, not a torch checkpoint, holds
            objects other than tensors, or would need code execution to load.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, expected a checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: file is empty")
    try:
        loaded = _read(path)
    except PermissionError as error:
        raise CheckpointError(f"{path}: cannot be read ({error.strerror})") from None
    except pickle.UnpicklingError as error:
        reason = str(error).splitlines()[0] if "weights_only" not in str(error) else (
            "refused: it holds objects other than tensors, which could run code on load"
        )
        raise CheckpointError(f"{path}: not a safe torch checkpoint ({reason})") from None
    except Exception as error:  # torch raises many types for damaged files
        first_line = (str(error).splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({first_line})") from None
    return {key: to_numpy(value) for key, value in unwrap_state_dict(loaded, str(path)).items()}
