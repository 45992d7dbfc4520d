"""Recognising a checkpoint without a --config: the variant from its keys and shapes, the resolution from its name.

Pure functions over {key: shape} and file names: no framework import, no file access.
"""

import re
from dataclasses import dataclass
from pathlib import PurePath

from cvt_spec.errors import RecognitionError
from cvt_spec.spec import normalize_spec
from cvt_spec.stages import mlp_width
from cvt_spec.variants import VARIANTS

# What the weights determine. NUM_HEADS, strides, paddings and drop rates leave no trace in any
# shape, so they come from the one predefined variant whose weights look exactly like these.
SIGNATURE_KEYS = (
    "NUM_STAGES", "DIM_EMBED", "DEPTH", "PATCH_SIZE", "MLP_RATIO", "QKV_BIAS", "CLS_TOKEN",
    "QKV_PROJ_METHOD", "KERNEL_QKV",
)
# `avg` and `linear` projections hold no weights, so a checkpoint cannot tell them apart.
WEIGHTLESS_PROJECTION = "avg or linear"

PATCH_KEY = re.compile(r"stage(\d+)\.patch_embed\.proj\.weight")
BLOCK_KEY = re.compile(r"stage(\d+)\.blocks\.(\d+)\.")
# `384x384` standing alone between non-digits, as in CvT-21-384x384-IN-1k.pth.
RESOLUTION_IN_NAME = re.compile(r"(?<![0-9])([1-9][0-9]{1,3})x([1-9][0-9]{1,3})(?![0-9])", re.IGNORECASE)
VERSION_IN_NAME = re.compile(r"(?<![a-z0-9])IN-?(1k|22k)(?![a-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Recognized:
    variant: str
    spec: dict  # the variant's normalized SPEC
    num_classes: int
    resolution: tuple  # (height, width)
    version: str  # "1k", "22k", or None when the name does not say
    name: str  # default artifact name, e.g. cvt-21-384x384_1k


def _stage_signature(shapes, i):
    patch = shapes[f"stage{i}.patch_embed.proj.weight"]
    if len(patch) != 4 or patch[2] != patch[3]:
        raise RecognitionError(f"stage{i}.patch_embed.proj.weight has shape {tuple(patch)}, expected (dim, in, k, k)")
    dim = patch[0]
    blocks = sorted({int(m.group(2)) for key in shapes if (m := BLOCK_KEY.match(key)) and int(m.group(1)) == i})
    if blocks != list(range(len(blocks))) or not blocks:
        raise RecognitionError(f"stage{i} has blocks {blocks}, expected 0, 1, ... with no gap")
    first = f"stage{i}.blocks.0."
    fc1 = shapes.get(first + "mlp.fc1.weight")
    if fc1 is None:
        raise RecognitionError(f"{first}mlp.fc1.weight is missing: not a CvT block")
    conv = shapes.get(first + "attn.conv_proj_k.conv.weight")
    return {
        "DIM_EMBED": dim,
        "DEPTH": len(blocks),
        "PATCH_SIZE": patch[2],
        "MLP_RATIO": fc1[0] / dim,
        "QKV_BIAS": first + "attn.proj_q.bias" in shapes,
        "CLS_TOKEN": f"stage{i}.cls_token" in shapes,
        "QKV_PROJ_METHOD": "dw_bn" if conv is not None else WEIGHTLESS_PROJECTION,
        "KERNEL_QKV": conv[2] if conv is not None else None,
    }


def checkpoint_signature(shapes: dict) -> dict:
    """The SIGNATURE_KEYS of a state dict given as {key: shape}, plus `num_classes` (0 without head).

    Raises:
        RecognitionError: the keys are not those of a CvT state dict; names the missing key.
    """
    stages = sorted(int(m.group(1)) for key in shapes if (m := PATCH_KEY.fullmatch(key)))
    if not stages:
        sample = ", ".join(list(shapes)[:3]) or "no keys at all"
        raise RecognitionError(f"no stage0.patch_embed.proj.weight: not a CvT state dict (it starts with {sample})")
    if stages != list(range(len(stages))):
        raise RecognitionError(f"stages {stages} are not numbered 0, 1, ... with no gap")
    in_chans = shapes["stage0.patch_embed.proj.weight"][1]
    if in_chans != 3:
        raise RecognitionError(f"stage0.patch_embed.proj.weight takes {in_chans} input channels, expected 3 (RGB)")
    per_stage = [_stage_signature(shapes, i) for i in stages]
    signature = {"NUM_STAGES": len(stages)}
    for key in SIGNATURE_KEYS[1:]:
        signature[key] = [stage[key] for stage in per_stage]
    head = shapes.get("head.weight")
    signature["num_classes"] = head[0] if head is not None else 0
    return signature


def spec_signature(spec: dict) -> dict:
    """The SIGNATURE_KEYS a checkpoint of this normalized SPEC would show."""
    weighted = [method == "dw_bn" for method in spec["QKV_PROJ_METHOD"]]
    return {
        **{key: spec[key] for key in SIGNATURE_KEYS},
        # The weights show the MLP width, so the ratio only as precisely as `mlp_width` keeps it.
        "MLP_RATIO": [mlp_width(d, r) / d for d, r in zip(spec["DIM_EMBED"], spec["MLP_RATIO"], strict=True)],
        "QKV_PROJ_METHOD": [
            m if w else WEIGHTLESS_PROJECTION for m, w in zip(spec["QKV_PROJ_METHOD"], weighted, strict=True)
        ],
        "KERNEL_QKV": [k if w else None for k, w in zip(spec["KERNEL_QKV"], weighted, strict=True)],
    }


def _differences(found, expected):
    return [f"{key} {found[key]} (not {expected[key]})" for key in SIGNATURE_KEYS if found[key] != expected[key]]


def recognize_variant(shapes: dict, variants: dict | None = None) -> tuple[str, dict, int]:
    """(variant name, normalized SPEC, num_classes) of the one predefined variant these weights fit.

    Args:
        shapes: {state-dict key: shape tuple}.
        variants: {name: SPEC}; the predefined table by default.

    Raises:
        RecognitionError: no variant or more than one fits; the message shows the signature read
            from the weights and how the nearest variant differs.
    """
    variants = VARIANTS if variants is None else variants
    found = checkpoint_signature(shapes)
    specs = {name: normalize_spec(spec) for name, spec in variants.items()}
    matches = [name for name, spec in specs.items() if not _differences(found, spec_signature(spec))]
    if len(matches) == 1:
        return matches[0], specs[matches[0]], found["num_classes"]
    if matches:
        raise RecognitionError(
            f"the weights fit {', '.join(matches)} alike (they differ only in what weights do not show, "
            "e.g. NUM_HEADS); pass --config NAME or --spec FILE"
        )
    nearest = min(specs, key=lambda name: len(_differences(found, spec_signature(specs[name]))))
    differences = "; ".join(_differences(found, spec_signature(specs[nearest])))
    raise RecognitionError(
        f"the weights fit no predefined variant (nearest {nearest} differs in: {differences}); NUM_HEADS, "
        "strides and paddings cannot be read from weights: pass --spec FILE with the model's SPEC"
    )


def resolution_from_name(file_name: str) -> tuple[int, int] | None:
    """(height, width) written in a file name as HxW, e.g. 384x384, or None if it has none.

    Raises:
        RecognitionError: the name holds two different sizes.
    """
    sizes = {(int(h), int(w)) for h, w in RESOLUTION_IN_NAME.findall(PurePath(file_name).name)}
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sorted(sizes))
        raise RecognitionError(f"the name {PurePath(file_name).name} holds several resolutions ({listed}); pass --res")
    return sizes.pop() if sizes else None


def version_from_name(file_name: str) -> str | None:
    """'1k' or '22k' from an official name such as CvT-13-384x384-IN-22k.pth, else None."""
    versions = {v.lower() for v in VERSION_IN_NAME.findall(PurePath(file_name).name)}
    return versions.pop() if len(versions) == 1 else None


def recognize(file_name: str, shapes: dict, resolution: tuple | None = None, version: str | None = None,
              variants: dict | None = None) -> Recognized:
    """Everything a conversion needs, from a checkpoint's name and its {key: shape}.

    Args:
        resolution: (height, width) from --res; read from the file name when None.
        version: '1k' or '22k' from --version; read from the file name when None.

    Raises:
        RecognitionError: the variant is not recognised, or the resolution is neither given nor
            in the file name.
    """
    variant, spec, num_classes = recognize_variant(shapes, variants)
    resolution = resolution or resolution_from_name(file_name)
    if resolution is None:
        raise RecognitionError(
            f"recognised {variant}, but the name {PurePath(file_name).name} does not say the resolution "
            "(as in CvT-21-384x384-IN-1k.pth); pass --res"
        )
    version = version or version_from_name(file_name)
    name = f"{variant}-{resolution[0]}x{resolution[1]}" + (f"_{version}" if version else "")
    return Recognized(variant, spec, num_classes, tuple(resolution), version, name)
