"""Frozen large-scale teacher (timm) producing the semantic targets h^Tea [B, 512].

The paper's teacher is CLIP's ViT image tower. In timm the tags
``vit_base_patch16_clip_224.openai`` (86.19M parameters) and ``vit_base_patch32_clip_224.openai``
(87.85M, the count the paper quotes) already end in CLIP's 512-d projection head. Models are
always built with ``pretrained=False`` (nothing is downloaded); weights come from ``checkpoint``:

* ``.safetensors`` (``safetensors.torch.load_file``) or ``.pt``/``.pth``/``.bin``
  (``torch.load(weights_only=True)``; pickles are never loaded);
* a plain state dict, or one wrapped under ``"state_dict"`` / ``"model"``;
* keys of the timm model itself, keys of a whole ``Teacher`` (``backbone.*`` and ``adapter.*``,
  as ``Teacher.state_dict()`` writes them), or a format timm's own ``checkpoint_filter_fn`` for
  the architecture converts (e.g. OpenAI / open_clip ``visual.*`` keys);
* loading is strict: missing or unexpected keys and shape mismatches raise ``CheckpointError``.

The backbone is frozen (``requires_grad=False``) and stays in eval mode even when a parent
module calls ``.train()``. When the backbone's output size differs from ``feature_dim`` a
linear ``adapter`` maps it to ``feature_dim``; the adapter is the only trainable part (it must
be trained, e.g. with a task head, before its outputs are meaningful targets). Inputs whose
size differs from the backbone's ``img_size`` are resized with bilinear interpolation.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class CheckpointError(ValueError):
    """A teacher checkpoint that cannot be loaded (names the file and the offending keys)."""


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors or .pt/.pth/.bin (weights_only), unwrapping
    ``{"state_dict": ...}`` / ``{"model": ...}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    elif path.suffix in (".pt", ".pth", ".bin"):
        sd = torch.load(path, map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"checkpoint {path}: unknown suffix {path.suffix!r} "
                              "(expected .safetensors, .pt, .pth or .bin)")
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"checkpoint {path}: not a state dict of tensors")
    return sd


def _mismatch(model: nn.Module, sd: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(sd) if sd[k].shape != own[k].shape)
    return missing, unexpected, shapes


def _fmt(name: str, items: list[str], limit: int = 10) -> str:
    more = f" ... (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{name} ({len(items)}): {', '.join(items[:limit])}{more}"


class Teacher(nn.Module):
    """Frozen timm backbone (+ trainable adapter when needed): image [B,3,H,W] -> [B, feature_dim]."""

    def __init__(self, backbone: nn.Module, name: str, img_size: tuple[int, int], feature_dim: int, out_dim: int,
                 label: str | None = None):
        super().__init__()
        self.name, self.img_size, self.feature_dim, self.out_dim = name, img_size, feature_dim, out_dim
        self.label = label or name  # what reports call it: the timm name, plus what changed the model
        self.backbone = backbone.eval()
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.adapter = nn.Linear(out_dim, feature_dim) if out_dim != feature_dim else None

    def train(self, mode: bool = True) -> "Teacher":
        super().train(mode)
        self.backbone.eval()  # frozen: BN / dropout stay in inference mode
        return self

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] -> [B, feature_dim]
        if tuple(image.shape[-2:]) != self.img_size:
            image = F.interpolate(image, size=self.img_size, mode="bilinear", align_corners=False)
        with torch.no_grad():
            h = self.backbone(image)  # [B, out_dim]
        return h if self.adapter is None else self.adapter(h)

    def load_checkpoint(self, path: str | Path) -> None:
        """Strictly load a backbone or whole-Teacher state dict (see module docstring)."""
        sd = load_state_dict_file(path)
        if any(k.startswith("backbone.") for k in sd):
            target = self  # a whole Teacher state dict
        else:
            target = self.backbone
            missing, unexpected, _ = _mismatch(target, sd)
            filt = getattr(sys.modules.get(type(self.backbone).__module__), "checkpoint_filter_fn", None)
            if (missing or unexpected) and filt is not None:
                try:
                    converted = filt(dict(sd), self.backbone)
                except Exception:  # noqa: BLE001 - the filter is a best effort conversion
                    converted = None
                if converted is not None and not any(_mismatch(target, converted)[:2]):
                    sd = converted
        missing, unexpected, shapes = _mismatch(target, sd)
        if missing or unexpected or shapes:
            found = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
            parts = [_fmt(n, items) for n, items in found if items]
            raise CheckpointError(f"checkpoint {path} does not match teacher {self.name!r}: " + "; ".join(parts))
        target.load_state_dict(sd, strict=True)


def _output_dim(model: nn.Module) -> int:
    num_classes = getattr(model, "num_classes", 0)
    if num_classes:
        return int(num_classes)
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def teacher_label(name: str, timm_kwargs: dict | None = None, img_size: int | None = None,
                  default_img_size: int | None = None) -> str:
    """The teacher as reports name it: the timm name when the model is that model, otherwise the
    name plus the arguments that made it a different one, e.g.
    ``vit_tiny_patch16_224 (img_size=32, patch_size=8, embed_dim=64, depth=1, num_heads=2, num_classes=64)``.
    ``img_size`` counts only when it differs from the model's own (``default_img_size``)."""
    parts = []
    if img_size is not None and img_size != default_img_size:
        parts.append(f"img_size={img_size}")
    parts += [f"{k}={v}" for k, v in (timm_kwargs or {}).items() if k != "img_size"]
    return f"{name} ({', '.join(parts)})" if parts else name


def build_teacher(name: str = "vit_base_patch16_clip_224.openai", checkpoint: str | Path | None = None,
                  feature_dim: int = 512, img_size: int | None = None, **timm_kwargs) -> Teacher:
    """timm.create_model(name, pretrained=False, img_size=img_size, **timm_kwargs), frozen.

    ``img_size`` (when given) is passed to timm (ViTs resize their patch grid) and is the size
    inputs are resized to; without it the model's own input size is used. Names of
    ``rkdsc.common.models.cnn.LOCAL_MODELS`` (``resnet9``) are built from there instead of timm. Example of a small
    self-trained teacher: ``build_teacher("vit_tiny_patch16_224", img_size=32, patch_size=4,
    num_classes=512)``.
    """
    from rkdsc.common.models.cnn import LOCAL_MODELS

    kwargs = dict(timm_kwargs)
    if name in LOCAL_MODELS:  # this library's 32-px CNNs (cnn.py): no img_size argument, inputs are resized
        backbone = LOCAL_MODELS[name](**kwargs)
    else:
        import timm

        if img_size is not None:
            kwargs["img_size"] = img_size
        try:
            backbone = timm.create_model(name, pretrained=False, **kwargs)
        except TypeError:
            if img_size is None:
                raise
            kwargs.pop("img_size")  # a CNN without an img_size argument: only resize the inputs
            backbone = timm.create_model(name, pretrained=False, **kwargs)
    if img_size is not None:
        size = (img_size, img_size)
    elif getattr(getattr(backbone, "patch_embed", None), "img_size", None) is not None:
        size = tuple(backbone.patch_embed.img_size)
    else:
        size = tuple(backbone.pretrained_cfg.get("input_size", (3, 224, 224))[-2:])
    default_size = (getattr(backbone, "pretrained_cfg", None) or {}).get("input_size", (3, None, None))[-1]
    label = teacher_label(name, timm_kwargs, img_size, default_size)
    teacher = Teacher(backbone, name, (int(size[0]), int(size[1])), feature_dim, _output_dim(backbone), label=label)
    if checkpoint is not None:
        teacher.load_checkpoint(checkpoint)
    return teacher


__all__ = ["Teacher", "build_teacher", "teacher_label", "CheckpointError", "load_state_dict_file"]
