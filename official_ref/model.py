"""The official CvT model (microsoft/CvT `ConvolutionalVisionTransformer`) built from a SPEC.

State-dict keys: stage{i}.cls_token, stage{i}.patch_embed.*, stage{i}.blocks.{j}.*, norm.*, head.*.
"""

import numpy as np
import torch
from timm.layers import trunc_normal_
from torch import nn

from cvt_spec import InputError, StageSpec, normalize_spec, stage_specs, variant_spec
from official_ref.layers import Block, ConvEmbed, LayerNorm, grid_to_tokens, tokens_to_grid


def _initializer(linear_weight_init):
    """The official `_init_weights_*`: Linear weights by `linear_weight_init`, zero biases, unit norms."""

    def initialize(module):
        if isinstance(module, nn.Linear):
            linear_weight_init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    return initialize


INITS = {
    "trunc_norm": _initializer(lambda weight: trunc_normal_(weight, std=0.02)),
    "xavier": _initializer(nn.init.xavier_uniform_),
}


class VisionTransformer(nn.Module):
    """One CvT stage: conv embedding, optional cls token, blocks."""

    def __init__(self, stage: StageSpec, in_chans: int):
        super().__init__()
        # Registered first, as in the official module: cls_token precedes patch_embed in the state dict.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, stage.dim)) if stage.cls_token else None
        self.patch_embed = ConvEmbed(in_chans, stage.dim, stage.patch_size, stage.patch_stride, stage.patch_padding)
        self.pos_drop = nn.Dropout(stage.drop_rate)
        self.blocks = nn.ModuleList(Block(stage, rate) for rate in stage.drop_path_rates())
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=0.02)
        self.apply(INITS[stage.init])

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

    def __init__(self, spec: dict, num_classes: int = 1000, in_chans: int = 3):
        super().__init__()
        self.spec = normalize_spec(spec)
        stages = stage_specs(self.spec)
        self.num_classes = num_classes
        self.num_stages = len(stages)
        for stage in stages:
            setattr(self, f"stage{stage.index}", VisionTransformer(stage, in_chans))
            in_chans = stage.dim
        dim = stages[-1].dim
        self.norm = LayerNorm(dim)
        self.cls_token = stages[-1].cls_token
        # The official constructor calls trunc_normal_ on Identity's missing weight when
        # num_classes is 0; here the head is simply absent.
        self.head = nn.Linear(dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            trunc_normal_(self.head.weight, std=0.02)

    def forward_stages(self, x: torch.Tensor) -> dict:
        """{"stage{i}": (b, c, h, w) grids, "features": (b, dim), "logits": (b, num_classes)}."""
        outputs = {}
        for i in range(self.num_stages):
            x, cls_token = getattr(self, f"stage{i}")(x)
            outputs[f"stage{i}"] = x
        # [:, 0], not torch.squeeze: batch 1 keeps its axis.
        features = self.norm(cls_token)[:, 0] if self.cls_token else self.norm(grid_to_tokens(x)).mean(dim=1)
        outputs["features"] = features
        if self.num_classes > 0:
            outputs["logits"] = self.head(features)
        return outputs

    def forward(self, x):
        outputs = self.forward_stages(x)
        return outputs["logits"] if self.num_classes > 0 else outputs["features"]


def build_model(configuration: str | None = None, spec: dict | None = None, num_classes: int = 1000,
                in_chans: int = 3) -> ConvolutionalVisionTransformer:
    """The reference model of a predefined variant or of an official SPEC, in eval mode, randomly initialized."""
    if (configuration is None) == (spec is None):
        raise InputError("give exactly one of configuration= and spec=")
    spec = variant_spec(configuration) if configuration is not None else spec
    return ConvolutionalVisionTransformer(spec, num_classes, in_chans).eval()


def official_state_dict_shapes(spec: dict, num_classes: int) -> dict:
    """{key: (shape, torch dtype)} of the official state dict, from a model on the meta device (no memory)."""
    with torch.device("meta"):
        model = ConvolutionalVisionTransformer(spec, num_classes)
    return {key: (tuple(t.shape), t.dtype) for key, t in model.state_dict().items()}


def load_reference(spec: dict, num_classes: int, state_dict: dict) -> ConvolutionalVisionTransformer:
    """The reference model holding `state_dict` (numpy arrays or tensors), loaded with strict=True, in eval mode.

    Built on the meta device and loaded with `assign=True`: float32 tensors are shared with the arrays
    (no copy; others are converted to float32), and no memory or time goes into random weights that
    would be replaced at once.
    """
    with torch.device("meta"):
        model = ConvolutionalVisionTransformer(spec, num_classes)
    tensors = {key: _float32(value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value)))
               for key, value in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


def _float32(tensor):
    """Floating tensors as float32 (the model's dtype; a copy only when they are not), others as they are."""
    return tensor.float() if tensor.is_floating_point() else tensor
