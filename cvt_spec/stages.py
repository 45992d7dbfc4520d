"""One CvT stage as a typed spec, and the size rules of its convolutions and projections.

Each rule is written here once; official_ref, cvt_tf, the mapping and the bench read it.
"""

from dataclasses import dataclass

from cvt_spec.errors import SpecError
from cvt_spec.spec import normalize_spec


def query_method(method: str) -> str:
    """The projection method of q for a stage's QKV_PROJ_METHOD.

    With `avg`, q is the tokens themselves: the official code builds q's projection as `linear`.
    """
    return "linear" if method == "avg" else method


def mlp_width(dim: int, mlp_ratio: float) -> int:
    """Width of a block's MLP: int(dim * MLP_RATIO), as the official code."""
    return int(dim * mlp_ratio)


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth per block of a stage: linear from 0 to `rate`, as torch.linspace(0, rate, depth)."""
    if depth == 1:
        return [0.0]
    return [rate * j / (depth - 1) for j in range(depth)]


def conv_output_size(n: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a convolution with symmetric zero padding (ints or scalar tensors)."""
    return (n + 2 * padding - kernel) // stride + 1


def ceil_pooled_size(n: int, kernel: int, stride: int, padding: int, as_int=int) -> int:
    """Output length of torch `AvgPool2d(ceil_mode=True)`; `as_int` turns a boolean into 0/1.

    torch drops the last window when it would start in the right padding. For scalar tensors pass
    e.g. `as_int=lambda b: ops.cast(b, "int32")`.
    """
    out = (n + 2 * padding - kernel + stride - 1) // stride + 1
    return out - as_int((out - 1) * stride >= n + padding)


def projected_size(n: int, method: str, kernel: int, stride: int, padding: int) -> int:
    """Grid length after a q/k/v projection of `method` on a grid of length `n`."""
    if method == "dw_bn":
        return conv_output_size(n, kernel, stride, padding)
    if method == "avg":
        return ceil_pooled_size(n, kernel, stride, padding)
    return n


@dataclass(frozen=True)
class StageSpec:
    """The per-stage values of a normalized SPEC, named, with the rules that follow from them."""

    index: int
    dim: int
    depth: int
    num_heads: int
    mlp_ratio: float
    patch_size: int
    patch_stride: int
    patch_padding: int
    drop_rate: float
    attn_drop_rate: float
    drop_path_rate: float
    qkv_bias: bool
    cls_token: bool
    method: str
    kernel_size: int
    padding_kv: int
    stride_kv: int
    padding_q: int
    stride_q: int
    init: str

    @property
    def q_method(self) -> str:
        return query_method(self.method)

    @property
    def hidden_dim(self) -> int:
        return mlp_width(self.dim, self.mlp_ratio)

    @property
    def has_projection_weights(self) -> bool:
        """Only `dw_bn` projections hold weights (a depthwise conv and a BatchNorm)."""
        return self.method == "dw_bn"

    def grid_size(self, n: int) -> int:
        """Length of this stage's token grid for an input of length `n` (the patch embedding's output)."""
        return conv_output_size(n, self.patch_size, self.patch_stride, self.patch_padding)

    def q_size(self, n: int) -> int:
        """Grid length of the queries for a token grid of length `n`."""
        return projected_size(n, self.q_method, self.kernel_size, self.stride_q, self.padding_q)

    def kv_size(self, n: int) -> int:
        """Grid length of the keys and values for a token grid of length `n`."""
        return projected_size(n, self.method, self.kernel_size, self.stride_kv, self.padding_kv)

    def drop_path_rates(self) -> list[float]:
        return drop_path_rates(self.drop_path_rate, self.depth)


_FIELDS = {
    "dim": "DIM_EMBED", "depth": "DEPTH", "num_heads": "NUM_HEADS", "mlp_ratio": "MLP_RATIO",
    "patch_size": "PATCH_SIZE", "patch_stride": "PATCH_STRIDE", "patch_padding": "PATCH_PADDING",
    "drop_rate": "DROP_RATE", "attn_drop_rate": "ATTN_DROP_RATE", "drop_path_rate": "DROP_PATH_RATE",
    "qkv_bias": "QKV_BIAS", "cls_token": "CLS_TOKEN", "method": "QKV_PROJ_METHOD", "kernel_size": "KERNEL_QKV",
    "padding_kv": "PADDING_KV", "stride_kv": "STRIDE_KV", "padding_q": "PADDING_Q", "stride_q": "STRIDE_Q",
}


def stage_specs(spec: dict) -> tuple[StageSpec, ...]:
    """The stages of an official SPEC (checked by `normalize_spec`), first to last."""
    spec = normalize_spec(spec)
    return tuple(
        StageSpec(index=i, init=spec["INIT"], **{field: spec[key][i] for field, key in _FIELDS.items()})
        for i in range(spec["NUM_STAGES"])
    )


def check_input_size(spec: dict, height: int, width: int) -> None:
    """Checks that an image of `height` x `width` leaves every stage a non-empty grid.

    Raises:
        SpecError: a stage's patch embedding or key/value projection would get an empty input.
    """
    for stage in stage_specs(spec):
        grid = [stage.grid_size(n) for n in (height, width)]
        if min(grid) < 1:
            needed = max(stage.patch_size - 2 * stage.patch_padding, 1)
            raise SpecError(
                f"input {height}x{width} is too small: stage {stage.index} patch embedding (PATCH_SIZE "
                f"{stage.patch_size}, PATCH_PADDING {stage.patch_padding}) needs at least {needed} pixels, "
                f"gets {min(height, width)}"
            )
        height, width = grid
        kernel, padding = stage.kernel_size, stage.padding_kv
        if stage.method != "linear" and min(height, width) + 2 * padding < kernel:
            raise SpecError(
                f"input too small: stage {stage.index} has a {height}x{width} grid, its key/value projection "
                f"(KERNEL_QKV {kernel}, PADDING_KV {padding}) needs at least {kernel - 2 * padding}"
            )
