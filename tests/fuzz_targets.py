"""The parsers of outside bytes, each as a fuzz target, and the seed files they start from.

A target takes arbitrary bytes and must either succeed or raise the project's own `InputError`; any
other exception is a finding. `tests/test_fuzz.py` runs them briefly (hypothesis, fixed seed) in the
suite, `python -m tests.fuzz` at length with atheris (`make fuzz`).
"""

import contextlib
import io
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from converter.checkpoint import load_checkpoint
from converter.hf_layout import to_official_layout
from converter.layout import check_state_dict
from converter.synthetic import synthetic_state_dict
from cvt_spec import InputError, normalize_spec
from cvt_spec.files import read_spec_file

# The smallest SPEC with every kind of layer: seed checkpoints of a few kB, so that mutations land
# in the containers and the pickle rather than in tensor data.
FUZZ_SPEC = normalize_spec({
    "NUM_STAGES": 2, "PATCH_SIZE": [3, 3], "PATCH_STRIDE": [2, 2], "PATCH_PADDING": [1, 1], "DIM_EMBED": [4, 8],
    "NUM_HEADS": [1, 2], "DEPTH": [1, 1], "MLP_RATIO": [1.0, 1.0], "QKV_BIAS": [True, False],
    "CLS_TOKEN": [False, True], "QKV_PROJ_METHOD": ["dw_bn", "avg"], "KERNEL_QKV": [3, 3], "PADDING_KV": [1, 1],
    "STRIDE_KV": [2, 2], "PADDING_Q": [1, 1], "STRIDE_Q": [1, 1],
})
FUZZ_CLASSES = 3


def _tensors(state_dict):
    return {key: torch.from_numpy(np.asarray(value)) for key, value in state_dict.items()}


def _torch_bytes(obj, zipped=True):
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zipped)
    return buffer.getvalue()


def _hf_state_dict(official):
    from converter.hf_layout import hf_renames

    renames = hf_renames(FUZZ_SPEC, FUZZ_CLASSES)
    return {r.hf_key: official[r.official_key] for r in renames if r.official_key in official}


def checkpoint_seeds() -> dict[str, bytes]:
    """A zip `.pth`, a legacy raw pickle, a wrapped state dict, safetensors, and the transformers layout."""
    from safetensors.torch import save

    official = synthetic_state_dict(FUZZ_SPEC, FUZZ_CLASSES, seed=0)
    tensors = _tensors(official)
    return {
        "zip.pth": _torch_bytes(tensors),
        "legacy.pth": _torch_bytes(tensors, zipped=False),
        "wrapped.pth": _torch_bytes({"model": {f"module.{k}": v for k, v in tensors.items()}, "epoch": 3}),
        "model.safetensors": save({k: v.contiguous() for k, v in tensors.items()}),
        "hf.bin": _torch_bytes(_tensors(_hf_state_dict(official))),
    }


def spec_seeds() -> dict[str, bytes]:
    """An official experiment YAML (with an anchor and alias, as YAML allows) and a JSON SPEC."""
    spec = {key: value for key, value in FUZZ_SPEC.items() if key != "INIT"}
    experiment = (
        "MODEL:\n  NAME: cls_cvt\n  NUM_CLASSES: 3\n  SPEC:\n"
        + "".join(f"    {key}: {json.dumps(value)}\n" for key, value in spec.items())
        + "TRAIN:\n  IMAGE_SIZE: &size [64, 64]\nTEST:\n  IMAGE_SIZE: *size\n  CENTER_CROP: False\n"
    )
    return {"experiment.yaml": experiment.encode(), "spec.json": json.dumps(spec).encode()}


def image_seeds() -> dict[str, bytes]:
    """Small images in the formats Pillow reads most: PNG (palette, alpha, 16-bit), JPEG, GIF, BMP, TIFF, WebP."""
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
    images = {"rgb.png": (rgb, "PNG"), "rgba.png": (rgb.convert("RGBA"), "PNG"),
              "palette.png": (rgb.convert("P"), "PNG"),
              "gray16.png": (Image.fromarray(rng.integers(0, 65535, (5, 7), dtype=np.uint16)), "PNG"),
              "photo.jpg": (rgb, "JPEG"), "anim.gif": (rgb.convert("P"), "GIF"), "image.bmp": (rgb, "BMP"),
              "image.tiff": (rgb, "TIFF"), "image.webp": (rgb, "WEBP")}
    seeds = {}
    for name, (image, kind) in images.items():
        buffer = io.BytesIO()
        image.save(buffer, kind)
        seeds[name] = buffer.getvalue()
    return seeds


def _as_file(data, name, directory):
    path = Path(directory) / name
    path.write_bytes(data)
    return path


def checkpoint_target(data: bytes, name: str = "input.pth") -> None:
    """Loading as `convert.py --checkpoint` does: the file, the transformers renames, the layout check."""
    with tempfile.TemporaryDirectory(prefix="cvt-fuzz-") as directory:
        path = _as_file(data, name, directory)
        with contextlib.suppress(InputError):
            state_dict = load_checkpoint(path, dtype_notes=[])
            state_dict, _ = to_official_layout(state_dict, FUZZ_SPEC, FUZZ_CLASSES, str(path))
            check_state_dict(state_dict, FUZZ_SPEC, FUZZ_CLASSES, str(path))


def spec_target(data: bytes, name: str | None = None) -> None:
    """Reading a `--spec` file: an experiment YAML or a JSON/YAML of SPEC keys (JSON by default if it looks so)."""
    name = name or ("input.json" if data.lstrip().startswith(b"{") else "input.yaml")
    with tempfile.TemporaryDirectory(prefix="cvt-fuzz-") as directory, contextlib.suppress(InputError):
        read_spec_file(_as_file(data, name, directory))


def image_target(data: bytes, name: str = "input.img") -> None:
    """Reading an image for `predict` / `evaluate`: decoding as the official loader did, then the transform."""
    from cvt_tf import preprocess_input
    from cvt_tf.images import load_image

    with tempfile.TemporaryDirectory(prefix="cvt-fuzz-") as directory, contextlib.suppress(InputError):
        preprocess_input([load_image(_as_file(data, name, directory))], resolution=32)


TARGETS = {"checkpoint": (checkpoint_target, checkpoint_seeds), "spec": (spec_target, spec_seeds),
           "image": (image_target, image_seeds)}

