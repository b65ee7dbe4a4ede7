"""Small CNN teachers for 32-px inputs, built by name next to timm's models.

``LOCAL_MODELS`` maps a teacher name to a constructor taking timm-style keyword arguments
(``num_classes``, ``in_chans``) plus its own; ``build_teacher`` looks names up here before
asking timm, so a preset says ``[teacher] name = "resnet9"`` exactly as it names a timm model.

``resnet9``: the DAWNBench ResNet-9 (D. Page, "How to train your ResNet", 2018), widths
``width * (1, 2, 4, 8)``: prep conv -> [conv, pool, residual pair] -> [conv, pool] -> [conv, pool,
residual pair] -> global max-pool -> linear ``8 * width -> num_classes`` times ``scale`` (Page's
0.125: without it SGD at his learning rates diverges). Each conv is 3x3 +
BatchNorm + ReLU, with the 2x2 max-pool before BatchNorm (same result order as Page's net, BN and
ReLU on a quarter of the pixels). The final linear layer is the feature projection (the teacher's
``feature_dim``), as CLIP's projection head is for the paper's ViT teacher. Input [B, 3, H, W]
with H, W multiples of 8 -> [B, num_classes].
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class _Residual(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(c, c), _conv_bn(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResNet9(nn.Module):
    """Page's ResNet-9 at ``width`` (64 = the original, 6.57M params): [B,3,H,W] -> [B, num_classes]."""

    pretrained_cfg = {"input_size": (3, 32, 32)}  # what build_teacher reads when no img_size is given

    def __init__(self, num_classes: int = 256, width: int = 64, in_chans: int = 3, scale: float = 0.125):
        super().__init__()
        if width < 1 or num_classes < 1 or in_chans < 1 or not scale > 0:
            raise ValueError(f"resnet9: width, num_classes and in_chans must be >= 1 and scale > 0, got width={width}, "
                             f"num_classes={num_classes}, in_chans={in_chans}, scale={scale}")
        c = [width, 2 * width, 4 * width, 8 * width]
        self.num_classes, self.num_features, self.width, self.scale = num_classes, c[3], width, float(scale)
        self.features = nn.Sequential(
            _conv_bn(in_chans, c[0]),                            # [B, w, H, W]
            _conv_bn(c[0], c[1], pool=True), _Residual(c[1]),   # [B, 2w, H/2, W/2]
            _conv_bn(c[1], c[2], pool=True),                     # [B, 4w, H/4, W/4]
            _conv_bn(c[2], c[3], pool=True), _Residual(c[3]),   # [B, 8w, H/8, W/8]
            nn.AdaptiveMaxPool2d(1), nn.Flatten())               # [B, 8w]
        self.fc = nn.Linear(c[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)) * self.scale  # [B, num_classes]


def resnet9(**kwargs) -> ResNet9:
    """``ResNet9(**kwargs)``; unknown arguments raise ValueError naming them."""
    allowed = {"num_classes", "width", "in_chans", "scale"}
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ValueError(f"teacher.timm_kwargs for resnet9: unknown argument(s) {unknown} "
                         f"(accepted: {', '.join(sorted(allowed))})")
    return ResNet9(**kwargs)


LOCAL_MODELS = {"resnet9": resnet9}

__all__ = ["ResNet9", "resnet9", "LOCAL_MODELS"]
