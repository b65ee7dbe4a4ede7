"""Weights of a module <-> one ``.safetensors`` file (DDP wrappers unwrapped).

``save_weights`` writes CPU, contiguous, unshared copies atomically; ``load_weights`` loads
onto the module's own device (strict by default).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel wrapper (the module itself otherwise)."""
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def state_dict_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies of a (possibly DDP-wrapped) model's state dict."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in unwrap(model).state_dict().items()}


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Model weights -> one .safetensors file (atomic)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(state_dict_for_save(model), str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_weights(path: str | Path, model: nn.Module, strict: bool = True) -> nn.Module:
    """Load a .safetensors file into `model` (DDP wrappers unwrapped), on the model's device."""
    from safetensors.torch import load_file

    target = unwrap(model)
    try:
        device = next(target.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    target.load_state_dict(load_file(str(path), device=str(device)), strict=strict)
    return model


__all__ = ["unwrap", "state_dict_for_save", "save_weights", "load_weights"]
