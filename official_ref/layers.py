"""PyTorch building blocks of the official CvT (lib/models/cls_cvt.py), written anew.

Module and parameter names follow the official state dict exactly.
"""

from collections import OrderedDict

import torch
from timm.layers import DropPath
from torch import nn

from cvt_spec import SpecError, StageSpec


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the activation `get_cls_model` passes to the official model."""

    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype, eps 1e-5."""

    def __init__(self, dim):
        super().__init__(dim, eps=1e-5)

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def grid_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(b, c, h, w) -> (b, h*w, c)."""
    return x.flatten(2).transpose(1, 2)


def tokens_to_grid(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(b, h*w, c) -> (b, c, h, w)."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


def build_projection(method: str, dim: int, kernel_size: int, padding: int, stride: int) -> nn.Module | None:
    """The conv projection of q, k or v: None for `linear` (identity)."""
    if method == "dw_bn":
        return nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(dim, dim, kernel_size, stride=stride, padding=padding,
                               bias=False, groups=dim)),
            ("bn", nn.BatchNorm2d(dim)),
        ]))
    if method == "avg":
        return nn.Sequential(OrderedDict([
            ("avg", nn.AvgPool2d(kernel_size, stride=stride, padding=padding, ceil_mode=True)),
        ]))
    if method == "linear":
        return None
    raise SpecError(f"unknown QKV_PROJ_METHOD {method!r}; valid: dw_bn, avg, linear")


class Attention(nn.Module):
    """The official convolutional attention of one stage's block."""

    def __init__(self, stage: StageSpec):
        super().__init__()
        dim = stage.dim
        self.num_heads = stage.num_heads
        self.scale = dim ** -0.5  # whole width, as the official code
        self.with_cls_token = stage.cls_token
        self.method = stage.method
        self.conv_proj_q = build_projection(stage.q_method, dim, stage.kernel_size, stage.padding_q, stage.stride_q)
        self.conv_proj_k = build_projection(stage.method, dim, stage.kernel_size, stage.padding_kv, stage.stride_kv)
        self.conv_proj_v = build_projection(stage.method, dim, stage.kernel_size, stage.padding_kv, stage.stride_kv)
        self.proj_q = nn.Linear(dim, dim, bias=stage.qkv_bias)
        self.proj_k = nn.Linear(dim, dim, bias=stage.qkv_bias)
        self.proj_v = nn.Linear(dim, dim, bias=stage.qkv_bias)
        self.attn_drop = nn.Dropout(stage.attn_drop_rate)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(stage.drop_rate)

    def _qkv(self, x, h, w):
        if self.method == "linear":
            # The official forward raises UnboundLocalError for `linear`; its evident intent is
            # q = k = v = the tokens, cls token included.
            return x, x, x
        if self.with_cls_token:
            cls_token, x = torch.split(x, [1, h * w], dim=1)
        grid = tokens_to_grid(x, h, w)
        outputs = []
        for projection in (self.conv_proj_q, self.conv_proj_k, self.conv_proj_v):
            tokens = x if projection is None else grid_to_tokens(projection(grid))
            if self.with_cls_token:
                tokens = torch.cat((cls_token, tokens), dim=1)
            outputs.append(tokens)
        return outputs

    def _heads(self, x):
        b, t, c = x.shape
        return x.reshape(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x, h, w):
        q, k, v = self._qkv(x, h, w)
        q, k, v = self._heads(self.proj_q(q)), self._heads(self.proj_k(k)), self._heads(self.proj_v(v))
        attn = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        x = self.attn_drop(attn) @ v
        x = x.transpose(1, 2).flatten(2)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    def __init__(self, dim, hidden_dim, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = QuickGELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm attention and MLP, each added back through stochastic depth at rate `drop_path`."""

    def __init__(self, stage: StageSpec, drop_path: float):
        super().__init__()
        self.norm1 = LayerNorm(stage.dim)
        self.attn = Attention(stage)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = LayerNorm(stage.dim)
        self.mlp = Mlp(stage.dim, stage.hidden_dim, stage.drop_rate)

    def forward(self, x, h, w):
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConvEmbed(nn.Module):
    """Overlapping patch embedding: strided conv with symmetric padding, then LayerNorm."""

    def __init__(self, in_chans, dim, patch_size, stride, padding):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=stride, padding=padding)
        self.norm = LayerNorm(dim)

    def forward(self, x):
        x = self.proj(x)
        _, _, h, w = x.shape
        return tokens_to_grid(self.norm(grid_to_tokens(x)), h, w)
