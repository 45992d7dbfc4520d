"""The official CvT model (microsoft/CvT `ConvolutionalVisionTransformer`) built from a SPEC.

State-dict keys: stage{i}.cls_token, stage{i}.patch_embed.*, stage{i}.blocks.{j}.*, norm.*, head.*.
"""

import torch
from timm.layers import trunc_normal_
from torch import nn

from cvt_spec import normalize_spec, variant_spec
from official_ref.layers import Block, ConvEmbed, LayerNorm, grid_to_tokens, tokens_to_grid


def _init_trunc_normal(module):
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def _init_xavier(module):
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    """One CvT stage: conv embedding, optional cls token, blocks."""

    def __init__(self, spec, i, in_chans):
        super().__init__()
        dim = spec["DIM_EMBED"][i]
        depth = spec["DEPTH"][i]
        with_cls_token = spec["CLS_TOKEN"][i]
        # Registered first, as in the official module: cls_token precedes patch_embed in the state dict.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if with_cls_token else None
        self.patch_embed = ConvEmbed(
            in_chans, dim, spec["PATCH_SIZE"][i], spec["PATCH_STRIDE"][i], spec["PATCH_PADDING"][i]
        )
        self.pos_drop = nn.Dropout(spec["DROP_RATE"][i])
        rates = [x.item() for x in torch.linspace(0, spec["DROP_PATH_RATE"][i], depth, device="cpu")]
        self.blocks = nn.ModuleList(
            Block(
                dim, spec["NUM_HEADS"][i], spec["MLP_RATIO"][i], spec["DROP_RATE"][i], rates[j],
                qkv_bias=spec["QKV_BIAS"][i], method=spec["QKV_PROJ_METHOD"][i],
                kernel_size=spec["KERNEL_QKV"][i], stride_kv=spec["STRIDE_KV"][i],
                stride_q=spec["STRIDE_Q"][i], padding_kv=spec["PADDING_KV"][i],
                padding_q=spec["PADDING_Q"][i], with_cls_token=with_cls_token,
                attn_drop=spec["ATTN_DROP_RATE"][i],
            )
            for j in range(depth)
        )
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        self.apply(_init_xavier if spec["INIT"] == "xavier" else _init_trunc_normal)

    def forward(self, x):
        """(b, c, H, W) -> ((b, dim, h, w) grid, (b, 1, dim) cls token or None)."""
        x = self.patch_embed(x)
        b, _, h, w = x.shape
        x = grid_to_tokens(x)
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = self.pos_drop(x)
        for block in self.blocks:
            x = block(x, h, w)
        cls_token = None
        if self.cls_token is not None:
            cls_token, x = torch.split(x, [1, h * w], dim=1)
        return tokens_to_grid(x, h, w), cls_token


class ConvolutionalVisionTransformer(nn.Module):
    """CvT with the official layout. Always returns (batch, num_classes), or features if 0 classes."""

    def __init__(self, spec, num_classes=1000, in_chans=3):
        super().__init__()
        spec = normalize_spec(spec)
        self.spec = spec
        self.num_classes = num_classes
        self.num_stages = spec["NUM_STAGES"]
        for i in range(self.num_stages):
            setattr(self, f"stage{i}", VisionTransformer(spec, i, in_chans))
            in_chans = spec["DIM_EMBED"][i]
        dim = spec["DIM_EMBED"][-1]
        self.norm = LayerNorm(dim)
        self.cls_token = spec["CLS_TOKEN"][-1]
        # The official constructor calls trunc_normal_ on Identity's missing weight when
        # num_classes is 0; here the head is simply absent.
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.weight, std=0.02)

    def forward_stages(self, x):
        """{"stage{i}": (b, c, h, w) grids, "features": (b, dim), "logits": (b, num_classes)}."""
        outputs = {}
        for i in range(self.num_stages):
            x, cls_token = getattr(self, f"stage{i}")(x)
            outputs[f"stage{i}"] = x
        if self.cls_token:
            features = self.norm(cls_token)[:, 0]  # not torch.squeeze: batch 1 keeps its axis
        else:
            features = self.norm(grid_to_tokens(x)).mean(dim=1)
        outputs["features"] = features
        if self.num_classes > 0:
            outputs["logits"] = self.head(features)
        return outputs

    def forward(self, x):
        outputs = self.forward_stages(x)
        return outputs["logits"] if self.num_classes > 0 else outputs["features"]


def build_model(configuration=None, spec=None, num_classes=1000, in_chans=3):
    """The reference model of a predefined variant or of an official SPEC, in eval mode."""
    if (configuration is None) == (spec is None):
        raise ValueError("give exactly one of configuration= and spec=")
    spec = variant_spec(configuration) if configuration is not None else spec
    return ConvolutionalVisionTransformer(spec, num_classes, in_chans).eval()
