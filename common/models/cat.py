"""Channel-Aware Transformer (CAT), the channel codec of RKD-SC (Sec. III.B, Fig. 4, Sec. IV.A).

Token sequence: the student's semantic feature h [B, F] (F = 512) is ONE token of width
d_model = F, i.e. the sequence is [1, B, F] (sequence-first, as in CLIP). Self-attention over a
single token reduces to the value and output projections (the softmax over one key is 1); the
block still uses a real ``nn.MultiheadAttention`` so it is the paper's standard transformer
encoder block (8 heads, 512-d embeddings, 2048-d feed-forward layer).

CAT block (a transformer encoder block whose FFN output is smaller than its input)::

    x = LN(x + MHSA(x))                      # [1, B, d_model]
    f = Linear(d_model, d_ff) -> GELU -> Linear(d_ff, d_out)   # d_out < d_model
    out = cat([f, SNREmbedding(d_model - d_out)(snr_db)])      # back to d_model, or f alone

SNR embedding ("lightweight dense layer: linear upsampling + sigmoid"):
``sigmoid(Linear(1, n)(snr_db / 10))``; dividing by 10 keeps the 5-20 dB training range near
unit scale (0.5-2.0) so the sigmoid is not saturated at initialisation.

Encoder (one CAT block): h -> Linear(F, compact) ("single linear downsampling layer for
semantic aggregation") -> concat SNR embedding (F - compact) -> CAT block with d_out = compact,
sent to the channel without concatenation -> x [B, compact] (real).
Decoder (two CAT blocks): x -> concat SNR embedding -> CAT block (d_out = compact, concat SNR)
-> CAT block (d_out = F) -> h_tilde [B, F].

compact_dim = floor(F * (1 - compression_ratio)) (Eq. 22; Table II: 512 -> 102, 409, 460 for
ratios 0.8, 0.2, 0.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CATConfig:
    feature_dim: int = 512  # F: semantic feature size = transformer width d_model
    n_heads: int = 8  # attention heads per CAT block
    d_ff: int = 2048  # hidden width of the feed-forward layer
    compression_ratio: float = 0.8  # Eq. (22): 1 - compact_dim / feature_dim, in [0, 1)
    dropout: float = 0.0  # dropout in attention and FFN (paper: none stated)

    def __post_init__(self) -> None:
        if not 0.0 <= self.compression_ratio < 1.0:
            raise ValueError(f"CATConfig.compression_ratio must be in [0, 1), got {self.compression_ratio}")
        if self.feature_dim % self.n_heads:
            raise ValueError(f"CATConfig.n_heads={self.n_heads} must divide feature_dim={self.feature_dim}")
        if self.compact_dim < 1:
            raise ValueError(f"CATConfig.compression_ratio={self.compression_ratio} leaves no compact "
                             f"dimension for feature_dim={self.feature_dim}")

    @property
    def compact_dim(self) -> int:  # real values sent per image
        from rkdsc.common.bundle.manifest import compact_dim_for  # the project's one rule (torch-free)

        return compact_dim_for(self.feature_dim, self.compression_ratio)


def compact_dim(feature_dim: int, compression_ratio: float) -> int:
    """floor(F * (1 - r)), guarded against float error (512 * (1 - 0.8) = 102.39999...)."""
    return int(math.floor(feature_dim * (1.0 - compression_ratio) + 1e-9))


class SNREmbedding(nn.Module):
    """snr_db [B] -> [B, out_dim] = sigmoid(Linear(1, out_dim)(snr_db / 10))."""

    scale_db = 10.0  # snr_db is divided by this before the dense layer

    def __init__(self, out_dim: int):
        super().__init__()
        self.dense = nn.Linear(1, out_dim)

    def forward(self, snr_db: torch.Tensor) -> torch.Tensor:  # [B] -> [B, out_dim]
        return torch.sigmoid(self.dense(snr_db.reshape(-1, 1).to(self.dense.weight.dtype) / self.scale_db))


class CATBlock(nn.Module):
    """Transformer encoder block with a reduced FFN output and optional SNR concatenation."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, d_out: int, concat_snr: bool, dropout: float = 0.0):
        super().__init__()
        if concat_snr and d_out >= d_model:
            raise ValueError(f"CATBlock: concat_snr needs d_out < d_model, got d_out={d_out}, d_model={d_model}")
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout)  # sequence-first
        self.ln_1 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_out))
        self.snr = SNREmbedding(d_model - d_out) if concat_snr else None

    def forward(self, x: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        # x [L, B, d_model], snr_db [B] -> [L, B, d_model] (concat_snr) or [L, B, d_out]
        x = self.ln_1(x + self.attn(x, x, x, need_weights=False)[0])
        f = self.mlp(x)  # [L, B, d_out]
        if self.snr is None:
            return f
        s = self.snr(snr_db).unsqueeze(0).expand(f.shape[0], -1, -1)  # [L, B, d_model - d_out]
        return torch.cat([f, s], dim=-1)


def _with_snr(x: torch.Tensor, snr: SNREmbedding | None, snr_db: torch.Tensor) -> torch.Tensor:
    return x if snr is None else torch.cat([x, snr(snr_db)], dim=-1)  # [B, c] -> [B, F]


class CATEncoder(nn.Module):
    """h [B, F], snr_db [B] -> x [B, compact_dim] (real, sent to the channel)."""

    def __init__(self, cfg: CATConfig):
        super().__init__()
        self.cfg = cfg
        F, c = cfg.feature_dim, cfg.compact_dim
        self.down = nn.Linear(F, c)  # single linear downsampling layer (semantic aggregation)
        self.snr = SNREmbedding(F - c) if c < F else None
        self.block = CATBlock(F, cfg.n_heads, cfg.d_ff, c, concat_snr=False, dropout=cfg.dropout)

    def forward(self, h: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        x = _with_snr(self.down(h), self.snr, snr_db)  # [B, F]
        return self.block(x.unsqueeze(0), snr_db)[0]  # [1, B, F] -> [B, compact]


class CATDecoder(nn.Module):
    """x [B, compact_dim] (received, equalized), snr_db [B] -> h_tilde [B, F]."""

    def __init__(self, cfg: CATConfig):
        super().__init__()
        self.cfg = cfg
        F, c = cfg.feature_dim, cfg.compact_dim
        self.snr = SNREmbedding(F - c) if c < F else None
        self.block1 = CATBlock(F, cfg.n_heads, cfg.d_ff, c, concat_snr=c < F, dropout=cfg.dropout)
        self.block2 = CATBlock(F, cfg.n_heads, cfg.d_ff, F, concat_snr=False, dropout=cfg.dropout)

    def forward(self, x: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        x = _with_snr(x, self.snr, snr_db).unsqueeze(0)  # [1, B, F]
        return self.block2(self.block1(x, snr_db), snr_db)[0]  # [B, F]


__all__ = ["CATConfig", "compact_dim", "SNREmbedding", "CATBlock", "CATEncoder", "CATDecoder"]
