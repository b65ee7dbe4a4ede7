"""The two halves of the semantic-communication system, exactly as exported to ONNX.

ONNX names (docs/architecture.md): EdgePart inputs ``image`` [B,3,H,W] float32 and
``snr_db`` [B] float32, output ``symbols`` [B, compact_dim]; ServerPart inputs ``symbols``
[B, compact_dim] and ``snr_db`` [B], output ``logits`` [B, C]; the batch axis is dynamic.

The JSCC baselines (JSCC-student / JSCC-teacher) send the ``feature_dim`` semantic feature
itself, without a CAT; they accept ``snr_db`` and ignore it so every bundle has the same
interface.
"""

from __future__ import annotations

import torch
from torch import nn

from .cat import CATDecoder, CATEncoder

EDGE_INPUTS, EDGE_OUTPUTS = ("image", "snr_db"), ("symbols",)
SERVER_INPUTS, SERVER_OUTPUTS = ("symbols", "snr_db"), ("logits",)


def _keep_input(out: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
    """Return `out` unchanged while using `snr_db` (a zero-width concat), so that the ONNX
    exporters keep ``snr_db`` as a graph input (the TorchScript exporter drops unused ones)."""
    return torch.cat([out, snr_db.reshape(-1, 1)[:, :0].to(out.dtype)], dim=1)  # [B, D] + [B, 0]


class EdgePart(nn.Module):
    """Semantic encoder (student) + CAT encoder: image, snr_db -> x [B, compact_dim]."""

    def __init__(self, student: nn.Module, cat_encoder: CATEncoder):
        super().__init__()
        self.student, self.cat_encoder = student, cat_encoder

    def forward(self, image: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        return self.cat_encoder(self.student(image), snr_db)  # [B,3,H,W] -> [B,F] -> [B,compact]


class ServerPart(nn.Module):
    """CAT decoder + semantic decoder (task head): symbols, snr_db -> logits [B, C]."""

    def __init__(self, cat_decoder: CATDecoder, head: nn.Module):
        super().__init__()
        self.cat_decoder, self.head = cat_decoder, head

    def forward(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        return self.head(self.cat_decoder(symbols, snr_db))  # [B,compact] -> [B,F] -> [B,C]


class JSCCEdgePart(nn.Module):
    """Baseline edge: encoder only, sends h [B, feature_dim]; snr_db is accepted and ignored."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, image: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        return _keep_input(self.encoder(image), snr_db)


class JSCCServerPart(nn.Module):
    """Baseline server: task head on the received feature; snr_db is accepted and ignored."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, symbols: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        return _keep_input(self.head(symbols), snr_db)


__all__ = ["EdgePart", "ServerPart", "JSCCEdgePart", "JSCCServerPart",
           "EDGE_INPUTS", "EDGE_OUTPUTS", "SERVER_INPUTS", "SERVER_OUTPUTS"]
