"""T-DeepSC baseline (paper ref. [1], Zhang et al., IEEE Trans. Commun. 2024): a reimplementation.

A transformer task-oriented SC system: the transmitter is a ViT image encoder whose task token
is squeezed to ``n_values`` real values (Table II: "10 (index of KB)"); the receiver reads a
learned knowledge base (KB) with them and decodes the task with a small transformer.

Transmitter (``TDeepSCEncoder``, what Table II profiles)::

    image [B,3,H,W] -> Conv(patch, stride patch) -> [B, N, D] (N = (H/patch)^2, 196 at 224 / 16)
    -> prepend the task token, + learned position embedding -> [B, 1+N, D]
    -> depth x ViTBlock (pre-norm MHSA + MLP) -> LN -> task token [B, D]
    -> Linear(D, n_values) -> x [B, n_values] (real; 10 values = 5 complex symbols)

Receiver (``TDeepSCDecoder``)::

    x_hat [B, n_values] -> Linear(n_values, dec_dim) -> query token q [B, 1, Dd]
    tokens = [q, KB_1 .. KB_M] (M = kb_size learned entries) -> dec_depth x ViTBlock
    -> LN(q) -> ClassifierHead -> logits [B, C]

"Index of KB": the 10 values are the transmitter's scores over the receiver's 10-entry KB; the
decoder's query attends to the KB entries (a soft index; in a clean link the largest score is
the entry read most). The emulated link is analog (complex symbols through the relay's channel),
so the scores travel as 5 complex symbols, not as a ~3.3-bit digital index (see
docs/training.md, "T-DeepSC and RTSC").

SNR: trained at one fixed SNR (the paper's Fig. 6: "T-DeepSC trained at 12 dB"); neither half
uses ``snr_db`` (the edge / server parts accept and ignore it, like the JSCC baselines).

Size at the paper's input (224 px, defaults): 9.53 M parameters (+7.1 %), 2.172 GMACs (-4.2 %) of the
transmitter (Table II: 8.90 M, 2.266 "GFLOPs", which are MACs; ``count_flops`` counts 2 FLOPs per
MAC, i.e. 4.344 GFLOPs). The receiver adds 1.09 M parameters (1000 classes) and 0.01 GMACs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .heads import ClassifierHead


@dataclass
class TDeepSCConfig:
    input_size: int = 224  # square input side in pixels (paper: 224)
    patch_size: int = 16  # ViT patch side (224 / 16 = 14 x 14 = 196 patch tokens)
    embed_dim: int = 192  # encoder width D (ViT-Tiny width)
    depth: int = 21  # encoder ViT blocks (set so params / MACs land near Table II)
    n_heads: int = 3  # encoder attention heads
    mlp_ratio: float = 4.0  # MLP hidden width = mlp_ratio * width (encoder and decoder)
    n_values: int = 10  # real values sent per image (Table II: 10) = ceil(10 / 2) = 5 complex symbols
    kb_size: int = 10  # learned knowledge-base entries at the receiver
    dec_dim: int = 192  # decoder width
    dec_depth: int = 2  # decoder ViT blocks over [query, KB entries]
    dec_heads: int = 3  # decoder attention heads

    def __post_init__(self) -> None:
        if self.input_size % self.patch_size:
            raise ValueError(f"TDeepSCConfig.patch_size={self.patch_size} must divide input_size={self.input_size}")
        for w, h, name in ((self.embed_dim, self.n_heads, ""), (self.dec_dim, self.dec_heads, "dec_")):
            if w % h:
                raise ValueError(f"TDeepSCConfig.{name}heads={h} must divide the width {w}")
        if min(self.depth, self.n_values, self.kb_size, self.dec_depth) < 1:
            raise ValueError("TDeepSCConfig: depth, n_values, kb_size and dec_depth must be >= 1")

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2

    @classmethod
    def for_input(cls, input_size: int, **overrides) -> "TDeepSCConfig":
        """Paper-size config at ``input_size``: patch 16 from 128 px up, else an 8 x 8 patch grid
        (the ViT-on-CIFAR convention: 32 px -> patch 4); ``overrides`` replace any field."""
        patch = 16 if input_size >= 128 and input_size % 16 == 0 else max(1, input_size // 8)
        while input_size % patch:
            patch -= 1
        return cls(**{"input_size": input_size, "patch_size": patch, **overrides})


class Attention(nn.Module):
    """Multi-head self-attention written out (matmul / softmax), so that FLOP counting and both
    ONNX exporters see every product: [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # [3, B, h, N, d/h]
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1)  # [B, h, N, N]
        return self.proj((a @ v).transpose(1, 2).reshape(b, n, d))


class ViTBlock(nn.Module):
    """Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)) (GELU)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.ln_1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, N, D] -> [B, N, D]
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


def init_vit(module: nn.Module) -> None:
    """ViT initialisation of every Linear in ``module``: truncated normal (std 0.02), zero bias."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


class TDeepSCEncoder(nn.Module):
    """image [B, 3, H, W] -> x [B, n_values] (real, sent to the channel)."""

    def __init__(self, cfg: TDeepSCConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.embed_dim
        self.patch = nn.Conv2d(3, D, cfg.patch_size, stride=cfg.patch_size)
        self.task_token = nn.Parameter(torch.zeros(1, 1, D))
        self.pos = nn.Parameter(torch.randn(1, 1 + cfg.num_patches, D) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(D, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.ln = nn.LayerNorm(D)
        self.to_channel = nn.Linear(D, cfg.n_values)
        init_vit(self)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        t = self.patch(image).flatten(2).transpose(1, 2)  # [B, N, D]
        t = torch.cat([self.task_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos  # [B, 1+N, D]
        for blk in self.blocks:
            t = blk(t)
        return self.to_channel(self.ln(t[:, 0]))  # [B, D] -> [B, n_values]


class TDeepSCDecoder(nn.Module):
    """x_hat [B, n_values] (received, equalized) -> logits [B, C]: a query reads the KB."""

    def __init__(self, cfg: TDeepSCConfig, num_classes: int, head_hidden: int = 0):
        super().__init__()
        self.cfg = cfg
        Dd = cfg.dec_dim
        self.from_channel = nn.Linear(cfg.n_values, Dd)
        self.kb = nn.Parameter(torch.randn(1, cfg.kb_size, Dd) * 0.02)  # the receiver's knowledge base
        self.blocks = nn.ModuleList(ViTBlock(Dd, cfg.dec_heads, cfg.mlp_ratio) for _ in range(cfg.dec_depth))
        self.ln = nn.LayerNorm(Dd)
        init_vit(self)
        self.head = ClassifierHead(Dd, num_classes, head_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.from_channel(x).unsqueeze(1)  # [B, 1, Dd]
        t = torch.cat([q, self.kb.expand(x.shape[0], -1, -1)], dim=1)  # [B, 1+M, Dd]
        for blk in self.blocks:
            t = blk(t)
        return self.head(self.ln(t[:, 0]))  # [B, C]


class CodecSystem(nn.Module):
    """encoder -> (n_values real values through the channel) -> decoder, for the baselines whose
    two halves are whole networks (T-DeepSC, RTSC). ``forward`` has JSCCSystem's signature, so the
    baseline trainer and ``jscc_accuracy`` drive it unchanged; the registry cuts it into
    ``JSCCEdgePart(encoder)`` / ``JSCCServerPart(decoder)`` (snr_db accepted, ignored)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, images: torch.Tensor, snr_db: torch.Tensor, fading_idx: torch.Tensor | None,
                channels, generator: torch.Generator | None, noise: bool = True) -> torch.Tensor:
        from .system import transmit

        x = self.encoder(images)  # [B, n_values]
        return self.decoder(transmit(x, snr_db, fading_idx, channels, generator, noise))  # [B, C]


def build_tdeepsc(cfg: TDeepSCConfig, num_classes: int, head_hidden: int = 0) -> CodecSystem:
    return CodecSystem(TDeepSCEncoder(cfg), TDeepSCDecoder(cfg, num_classes, head_hidden))


__all__ = ["TDeepSCConfig", "TDeepSCEncoder", "TDeepSCDecoder", "ViTBlock", "Attention", "CodecSystem",
           "build_tdeepsc", "init_vit"]
