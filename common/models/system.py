"""The torch systems of the methods and their two halves, exactly as exported to ONNX.

* ``TaskSystem`` (RKD-SC, trained in stage 2): student -> CAT encoder -> channel -> CAT decoder
  -> head; ``JSCCSystem`` (the JSCC baselines): encoder -> channel -> head. Both run the
  differentiable channel ``transmit`` (symbol mapping, unit power, torch channel, MMSE).
* ``EdgePart`` / ``ServerPart`` (RKD-SC) and ``JSCCEdgePart`` / ``JSCCServerPart`` are what
  ``rkdsc.common.models.registry`` cuts a system into for export.

ONNX names (docs/architecture.md): EdgePart inputs ``image`` [B,3,H,W] float32 and
``snr_db`` [B] float32, output ``symbols`` [B, compact_dim]; ServerPart inputs ``symbols``
[B, compact_dim] and ``snr_db`` [B], output ``logits`` [B, C]; the batch axis is dynamic.

The JSCC baselines (JSCC-student / JSCC-teacher) send the ``feature_dim`` semantic feature
itself, without a CAT; they accept ``snr_db`` and ignore it so every bundle has the same
interface.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .cat import CATConfig, CATDecoder, CATEncoder
from .heads import ClassifierHead

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


def transmit(x: torch.Tensor, snr_db: torch.Tensor, fading_idx: torch.Tensor | None, channels: Sequence[str],
             generator: torch.Generator | None, noise: bool = True) -> torch.Tensor:
    """Real [B, N] -> symbols -> unit power -> channel (MMSE) -> real [B, N]; differentiable in x.

    ``fading_idx`` [B] picks ``channels[fading_idx[b]]`` per sample (None: channels[0] for all).
    ``noise=False`` skips the channel (the symbols arrive as sent, still power-normalized).
    """
    from rkdsc.common.channel.torch_channel import complex_to_real, normalize_power, real_to_complex, simulate

    n = x.shape[1]
    z = normalize_power(real_to_complex(x))  # [B, K]
    if not noise:
        return complex_to_real(z, n).to(x.dtype)
    y = None
    for i, ch in enumerate(channels):
        yi = simulate(z, snr_db, ch, generator, equalize=True)[0]  # [B, K]
        if y is None:
            y = yi
        elif fading_idx is not None:
            y = torch.where((fading_idx == i)[:, None], yi, y)
        if fading_idx is None:
            break
    return complex_to_real(y, n).to(x.dtype)


class TaskSystem(nn.Module):
    """student -> CAT encoder -> channel -> CAT decoder -> head for one task (RKD-SC, stage 2)."""

    def __init__(self, student: nn.Module, cat_cfg: CATConfig, num_classes: int, head_hidden: int):
        super().__init__()
        self.student = student
        self.cat_encoder = CATEncoder(cat_cfg)
        self.cat_decoder = CATDecoder(cat_cfg)
        self.head = ClassifierHead(cat_cfg.feature_dim, num_classes, head_hidden)

    def forward(self, images: torch.Tensor, snr_db: torch.Tensor, fading_idx: torch.Tensor | None,
                channels: Sequence[str], generator: torch.Generator | None, noise: bool = True,
                encoder_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (h [B, F], h_tilde [B, F], logits [B, C])."""
        if encoder_grad:
            h = self.student(images)  # [B, F]
        else:
            with torch.no_grad():
                h = self.student(images)
        x = self.cat_encoder(h, snr_db)  # [B, compact]
        x_hat = transmit(x, snr_db, fading_idx, channels, generator, noise)  # [B, compact]
        h_tilde = self.cat_decoder(x_hat, snr_db)  # [B, F]
        return h, h_tilde, self.head(h_tilde)


class JSCCSystem(nn.Module):
    """encoder -> (feature_dim real values through the channel) -> head (the JSCC baselines).

    ``encoder`` is None for JSCC-teacher training, whose inputs are cached teacher features.
    """

    def __init__(self, encoder: nn.Module | None, feature_dim: int, num_classes: int, head_hidden: int):
        super().__init__()
        self.encoder = encoder
        self.head = ClassifierHead(feature_dim, num_classes, head_hidden)

    def forward(self, inputs: torch.Tensor, snr_db: torch.Tensor, fading_idx: torch.Tensor | None,
                channels: Sequence[str], generator: torch.Generator | None, noise: bool = True) -> torch.Tensor:
        h = inputs if self.encoder is None else self.encoder(inputs)  # [B, F]
        return self.head(transmit(h, snr_db, fading_idx, channels, generator, noise))  # [B, C]


__all__ = ["TaskSystem", "JSCCSystem", "transmit", "EdgePart", "ServerPart", "JSCCEdgePart", "JSCCServerPart",
           "EDGE_INPUTS", "EDGE_OUTPUTS", "SERVER_INPUTS", "SERVER_OUTPUTS"]
