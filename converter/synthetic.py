"""Seeded synthetic checkpoints in the official layout, non-trivial everywhere.

No value is an identity (LayerNorm weights differ from 1, biases from 0, BatchNorm statistics
are random), so a mapping bug cannot hide; the logits are not flat.
"""

import hashlib

import numpy as np
import torch

from converter.layout import official_shapes


def _value(rng, key, shape):
    if key.endswith("running_var"):
        return rng.uniform(0.5, 2.0, shape)
    if key.endswith("running_mean"):
        return rng.normal(0.0, 0.2, shape)
    if key.endswith(".weight") and len(shape) == 1:  # LayerNorm and BatchNorm scales
        return rng.uniform(0.6, 1.4, shape)
    if key.endswith(".bias"):
        return rng.normal(0.0, 0.05, shape)
    if key.endswith("cls_token"):
        return rng.normal(0.0, 0.5, shape)
    if key == "head.weight":
        return rng.normal(0.0, 0.05, shape)
    fan_in = int(np.prod(shape[1:]))
    std = 0.02 if len(shape) == 2 else 1.0 / np.sqrt(fan_in)
    return rng.normal(0.0, std, shape)


def synthetic_state_dict(spec: dict, num_classes: int, seed: int = 0) -> dict:
    """{key: numpy array} with the official keys, shapes and dtypes, seeded values."""
    rng = np.random.default_rng(seed)
    state_dict = {}
    for key, (shape, dtype) in official_shapes(spec, num_classes).items():
        if dtype == torch.int64:  # num_batches_tracked
            state_dict[key] = np.asarray(rng.integers(1, 100_000), dtype=np.int64)
        else:
            state_dict[key] = _value(rng, key, shape).astype(np.float32)
    return state_dict


def content_sha256(state_dict: dict) -> str:
    """A digest of keys, shapes, dtypes and bytes: identifies a state dict independent of file format."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        array = np.ascontiguousarray(state_dict[key])
        digest.update(f"{key}:{array.shape}:{array.dtype}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_checkpoint(state_dict: dict, path) -> None:
    """Writes {key: numpy array} as an official-style `.pth` (a bare state dict of tensors)."""
    torch.save({key: torch.from_numpy(np.asarray(v)) for key, v in state_dict.items()}, path)
