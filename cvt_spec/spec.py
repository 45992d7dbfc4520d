"""Validation of an official CvT SPEC (the MODEL.SPEC block of an experiment YAML).

`normalize_spec` turns a user's SPEC into one canonical, fully checked dict of per-stage lists.
"""

from cvt_spec.errors import SpecError, shown

PROJ_METHODS = ("dw_bn", "avg", "linear")
INITS = ("trunc_norm", "xavier")

# key -> (type, lowest allowed value, default or None when required)
PER_STAGE_KEYS = {
    "PATCH_SIZE": (int, 1, None),
    "PATCH_STRIDE": (int, 1, None),
    "PATCH_PADDING": (int, 0, None),
    "DIM_EMBED": (int, 1, None),
    "NUM_HEADS": (int, 1, None),
    "DEPTH": (int, 1, None),
    "MLP_RATIO": (float, 0.0, None),
    "ATTN_DROP_RATE": (float, 0.0, 0.0),
    "DROP_RATE": (float, 0.0, 0.0),
    "DROP_PATH_RATE": (float, 0.0, 0.0),
    "QKV_BIAS": (bool, None, None),
    "CLS_TOKEN": (bool, None, None),
    # Read by no official layer (CvT has no positional embedding); kept so YAMLs round-trip.
    "POS_EMBED": (bool, None, False),
    "QKV_PROJ_METHOD": (str, None, None),
    "KERNEL_QKV": (int, 1, None),
    "PADDING_KV": (int, 0, None),
    "STRIDE_KV": (int, 1, None),
    "PADDING_Q": (int, 0, None),
    "STRIDE_Q": (int, 1, None),
}
# Far above every published variant (at most 3 stages, width 1024, depth 20, MLP ratio 4, kernel 7),
# low enough that no SPEC from a file can make a model that exhausts memory when built.
MAX_STAGES = 16
HIGHEST = {"DIM_EMBED": 16384, "NUM_HEADS": 16384, "DEPTH": 1024, "MLP_RATIO": 64.0}
HIGHEST_GEOMETRY = 256  # kernels, strides and paddings


# Weights of the blocks (attention 4 dim^2, MLP 2 ratio dim^2, per block); cvt-w24 has 2.8e8.
MAX_BLOCK_WEIGHTS = 4_000_000_000


def _check_size(spec):
    weights = sum(depth * (4 + 2 * ratio) * dim * dim
                  for dim, depth, ratio in zip(spec["DIM_EMBED"], spec["DEPTH"], spec["MLP_RATIO"], strict=True))
    if weights > MAX_BLOCK_WEIGHTS:
        raise SpecError(
            f"SPEC DIM_EMBED {spec['DIM_EMBED']}, DEPTH {spec['DEPTH']} and MLP_RATIO {spec['MLP_RATIO']} make "
            f"about {weights:.2g} weights, more than the {MAX_BLOCK_WEIGHTS:.0e} that fit in memory here"
        )


def _highest(key):
    kind = PER_STAGE_KEYS[key][0]
    return HIGHEST.get(key, HIGHEST_GEOMETRY) if kind in (int, float) else None


def _check_number(key, value, raw):
    kind, lowest, _ = PER_STAGE_KEYS[key]
    highest = _highest(key)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
            raise SpecError(f"SPEC {key} must hold integers >= {lowest} (at most {highest}), got {shown(raw)}")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lowest <= value <= highest:
        # NaN fails both comparisons, so it is refused too.
        raise SpecError(f"SPEC {key} must hold numbers >= {lowest} (at most {highest}), got {shown(raw)}")
    return float(value)


def _stage_values(spec, key, num_stages):
    kind, _, default = PER_STAGE_KEYS[key]
    raw = spec.get(key, default)
    if not isinstance(raw, (list, tuple)):
        raw = [raw] * num_stages
    if len(raw) != num_stages:
        raise SpecError(f"SPEC {key} has {len(raw)} values, NUM_STAGES is {num_stages}: {shown(raw)}")
    values = []
    for value in raw:
        if kind is bool:
            if not isinstance(value, bool):
                raise SpecError(f"SPEC {key} must hold true/false values, got {shown(raw)}")
        elif kind is str:
            if not isinstance(value, str) or value not in PROJ_METHODS:
                raise SpecError(f"SPEC {key} values must be one of {PROJ_METHODS}, got {shown(raw)}")
        else:
            value = _check_number(key, value, raw)
        values.append(value)
    return values


def _check_stage(spec, i):
    def where(*keys):
        return ", ".join(f"{key}={spec[key][i]}" for key in keys) + f" (stage {i})"

    if spec["DIM_EMBED"][i] % spec["NUM_HEADS"][i]:
        raise SpecError(f"SPEC DIM_EMBED must be divisible by NUM_HEADS: {where('DIM_EMBED', 'NUM_HEADS')}")
    for key in ("ATTN_DROP_RATE", "DROP_RATE", "DROP_PATH_RATE"):
        if spec[key][i] >= 1.0:
            raise SpecError(f"SPEC {key} must be below 1: {where(key)}")
    method = spec["QKV_PROJ_METHOD"][i]
    kernel = spec["KERNEL_QKV"][i]
    if method == "dw_bn" and (spec["STRIDE_Q"][i] != 1 or 2 * spec["PADDING_Q"][i] != kernel - 1):
        # The block adds attention output to its input, so q must keep the grid size.
        raise SpecError(
            "SPEC dw_bn needs a size-preserving query projection (STRIDE_Q 1, "
            f"2*PADDING_Q == KERNEL_QKV-1): {where('KERNEL_QKV', 'PADDING_Q', 'STRIDE_Q')}"
        )
    if method == "avg" and 2 * spec["PADDING_KV"][i] > kernel:
        # torch.nn.AvgPool2d refuses a padding above half the kernel.
        raise SpecError(
            f"SPEC avg pooling needs PADDING_KV <= KERNEL_QKV/2: {where('KERNEL_QKV', 'PADDING_KV')}"
        )


def normalize_spec(spec: dict) -> dict:
    """Checks an official SPEC and returns it with every per-stage key as a list.

    Scalars are repeated over the stages; rates default to 0, INIT to `trunc_norm`.

    Raises:
        SpecError: a key is missing, unknown, of the wrong type or length, or the stages
            cannot be built; the message names the key and the value received.
    """
    if not isinstance(spec, dict):
        raise SpecError(f"SPEC must be a mapping of official SPEC keys, got {type(spec).__name__}")
    known = set(PER_STAGE_KEYS) | {"NUM_STAGES", "INIT"}
    unknown = sorted(set(spec) - known, key=str)
    if unknown:
        raise SpecError(f"unknown SPEC keys {shown(unknown)}; valid keys: {sorted(known)}")
    missing = sorted(
        key for key, (_, _, default) in PER_STAGE_KEYS.items()
        if default is None and key not in spec
    )
    if "NUM_STAGES" not in spec:
        missing.insert(0, "NUM_STAGES")
    if missing:
        raise SpecError(f"SPEC is missing required keys {missing}")
    num_stages = spec["NUM_STAGES"]
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or not 1 <= num_stages <= MAX_STAGES:
        raise SpecError(f"SPEC NUM_STAGES must be a positive integer (at most {MAX_STAGES}), got {shown(num_stages)}")
    init = spec.get("INIT", "trunc_norm")
    if not isinstance(init, str) or init not in INITS:
        raise SpecError(f"SPEC INIT must be one of {INITS}, got {shown(init)}")

    normalized = {"INIT": init, "NUM_STAGES": num_stages}
    for key in PER_STAGE_KEYS:
        normalized[key] = _stage_values(spec, key, num_stages)
    for i in range(num_stages):
        _check_stage(normalized, i)
    _check_size(normalized)
    return normalized
