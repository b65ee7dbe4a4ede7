"""Semantic decoders (task heads) on the server side: h_tilde [B, F] -> task logits."""

from __future__ import annotations

import torch
from torch import nn


class ClassifierHead(nn.Module):
    """Image-classification head: LayerNorm -> Linear -> GELU -> Linear (hidden > 0), or a
    single Linear layer (hidden = 0, a linear probe)."""

    def __init__(self, feature_dim: int = 512, num_classes: int = 10, hidden: int = 256):
        super().__init__()
        if num_classes < 1 or hidden < 0:
            raise ValueError(f"ClassifierHead: need num_classes >= 1 and hidden >= 0, got {num_classes}, {hidden}")
        self.feature_dim, self.num_classes, self.hidden = feature_dim, num_classes, hidden
        if hidden:
            self.net = nn.Sequential(nn.LayerNorm(feature_dim), nn.Linear(feature_dim, hidden), nn.GELU(),
                                     nn.Linear(hidden, num_classes))
        else:
            self.net = nn.Sequential(nn.Linear(feature_dim, num_classes))

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # [B, F] -> [B, C]
        return self.net(h)


__all__ = ["ClassifierHead"]
