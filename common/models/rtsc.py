"""RTSC baseline (paper ref. [36], Yoo et al., ICC Workshops 2022): a reimplementation.

A real-time ViT semantic-communication model for CIFAR-size images (32 x 32): a small conv stem
cuts the image to an 8 x 8 grid of tokens, ViT blocks mix them, and every token is squeezed to
``values_per_token`` real values: 64 tokens x 8 = 512 real values = 256 complex symbols per image
(Table II: 512; the original sends a 1/6 bandwidth ratio of a 32 x 32 x 3 image, 3072 / 6 = 512).
The original receiver reconstructs the image; here (the paper uses it for classification) the
receiver mirrors the ViT and ends in a classification head.

Transmitter (``RTSCEncoder``, what Table II profiles)::

    image [B,3,H,W] -> resized to native x native (32; avg-pool when H is a multiple, else bilinear)
    -> Conv3x3(3, c1) GELU -> Conv3x3(c1, c2, stride 2) GELU -> Conv3x3(c2, c2) GELU
    -> Conv3x3(c2, D, stride 2)
    -> [B, 64, D] tokens (8 x 8) + learned position embedding -> depth x ViTBlock -> LN
    -> Linear(D, values_per_token) per token -> flatten -> x [B, 512] (real)

Receiver (``RTSCDecoder``)::

    x_hat [B, 512] -> [B, 64, 8] -> Linear(8, D) + position embedding -> dec_depth x ViTBlock
    -> LN -> mean over tokens -> ClassifierHead -> logits [B, C]

The model always runs at its native 32 x 32 whatever the bundle's input size (Table II lists it
as data-set independent: 0.72 M parameters, 0.071 "GFLOPs", which are MACs). Defaults: 0.687 M
parameters (-4.6 %), 0.0711 GMACs (+0.1 %; 0.142 GFLOPs at 2 per MAC) for the transmitter at any
input size. ``snr_db`` is accepted and ignored by both halves (trained over the baseline SNR range,
like the JSCC baselines).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .heads import ClassifierHead
from .tdeepsc import CodecSystem, ViTBlock, init_vit


@dataclass
class RTSCConfig:
    native_size: int = 32  # side the model runs at (inputs are resized to it; the original: CIFAR 32 px)
    stem_widths: tuple[int, int] = (48, 96)  # channels of the conv at native size and of the two at native / 2
    embed_dim: int = 112  # ViT width D (tokens after the second stride-2 conv: (native / 4)^2 = 64)
    depth: int = 3  # encoder ViT blocks
    n_heads: int = 4  # attention heads (encoder and decoder)
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * D
    values_per_token: int = 8  # real values each token sends: 64 x 8 = 512 per image (256 symbols)
    dec_depth: int = 3  # decoder ViT blocks

    def __post_init__(self) -> None:
        if len(self.stem_widths) != 2:
            raise ValueError(f"RTSCConfig.stem_widths must have 2 entries, got {self.stem_widths}")
        if self.native_size % 4 or self.native_size < 4:
            raise ValueError(f"RTSCConfig.native_size must be a positive multiple of 4, got {self.native_size}")
        if self.embed_dim % self.n_heads:
            raise ValueError(f"RTSCConfig.n_heads={self.n_heads} must divide embed_dim={self.embed_dim}")
        if min(self.depth, self.dec_depth, self.values_per_token) < 1:
            raise ValueError("RTSCConfig: depth, dec_depth and values_per_token must be >= 1")

    @property
    def num_tokens(self) -> int:
        return (self.native_size // 4) ** 2

    @property
    def n_values(self) -> int:  # real values sent per image
        return self.num_tokens * self.values_per_token


def to_native(image: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, size, size]: average pooling when H and W are multiples of ``size``
    (224 -> 32: 7 x 7 areas), else bilinear resizing (the shapes are fixed at export time)."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    if (h, w) == (size, size):
        return image
    if h % size == 0 and w % size == 0:
        return F.avg_pool2d(image, (h // size, w // size))
    return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)


class RTSCEncoder(nn.Module):
    """image [B, 3, H, W] -> x [B, n_values] (real, sent to the channel)."""

    def __init__(self, cfg: RTSCConfig):
        super().__init__()
        self.cfg = cfg
        c1, c2 = cfg.stem_widths
        D = cfg.embed_dim
        self.stem = nn.Sequential(nn.Conv2d(3, c1, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.GELU(),
                                  nn.Conv2d(c2, c2, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(c2, D, 3, stride=2, padding=1))  # native -> native / 4
        self.pos = nn.Parameter(torch.randn(1, cfg.num_tokens, D) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(D, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.ln = nn.LayerNorm(D)
        self.to_channel = nn.Linear(D, cfg.values_per_token)
        init_vit(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        t = self.stem(to_native(image, self.cfg.native_size)).flatten(2).transpose(1, 2) + self.pos  # [B, 64, D]
        for blk in self.blocks:
            t = blk(t)
        return self.to_channel(self.ln(t)).flatten(1)  # [B, 64, 8] -> [B, 512]


class RTSCDecoder(nn.Module):
    """x_hat [B, n_values] (received, equalized) -> logits [B, C]."""

    def __init__(self, cfg: RTSCConfig, num_classes: int, head_hidden: int = 0):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.from_channel = nn.Linear(cfg.values_per_token, D)
        self.pos = nn.Parameter(torch.randn(1, cfg.num_tokens, D) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(D, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.dec_depth))
        self.ln = nn.LayerNorm(D)
        init_vit(self)
        self.head = ClassifierHead(D, num_classes, head_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.from_channel(x.reshape(x.shape[0], self.cfg.num_tokens, self.cfg.values_per_token)) + self.pos
        for blk in self.blocks:
            t = blk(t)
        return self.head(self.ln(t).mean(dim=1))  # [B, 64, D] -> [B, D] -> [B, C]


def build_rtsc(cfg: RTSCConfig, num_classes: int, head_hidden: int = 0) -> CodecSystem:
    return CodecSystem(RTSCEncoder(cfg), RTSCDecoder(cfg, num_classes, head_hidden))


__all__ = ["RTSCConfig", "RTSCEncoder", "RTSCDecoder", "to_native", "build_rtsc"]
