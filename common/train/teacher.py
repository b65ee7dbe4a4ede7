"""The preset's teacher: a local checkpoint, or a small teacher the preset trains itself.

``get_teacher(preset, workdir, log=print) -> Teacher`` (``rkdsc.common.models.teacher.Teacher``,
frozen, eval mode):

* ``[teacher] checkpoint`` given: ``build_teacher(name, checkpoint, feature_dim, img_size,
  **timm_kwargs)`` (no download ever; the paper preset points this at CLIP ViT-B/16 weights).
* no checkpoint and ``train_epochs > 0``: "no pretrained teacher checkpoint given: training the
  preset's own teacher". The timm model (``num_classes = feature_dim`` unless timm_kwargs says
  otherwise, so its head is the feature projection) plus a linear classifier on the
  feature_dim-d output are trained with cross-entropy (label smoothing 0.1, AdamW, 5 % linear
  warm-up then per-step cosine to 1 % of ``train_lr``, seeded, ``data.augment`` on the fly) on
  the preset's train split; the validation accuracy is measured every epoch. Writes
  ``workdir/teacher/teacher.safetensors`` (a whole-Teacher state dict, ``backbone.*`` keys),
  ``head.safetensors`` (the linear classifier) and ``teacher.json`` (val accuracy, epochs,
  time, history, the build arguments, sha256). A later call with the same teacher and data
  settings reuses them; changed settings retrain (and say so).
* neither: ``TeacherError`` naming ``teacher.checkpoint``.

Every returned teacher carries ``checkpoint_path`` and ``checkpoint_sha256`` (the file the
weights came from), used in feature-cache keys.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from rkdsc.common.train.common import (file_sha256, load_weights, make_loader, pick_device, progress, save_weights,
                                 seed_everything, write_json)


class TeacherError(RuntimeError):
    """No usable teacher for the preset (message names the preset key)."""


def teacher_build_kwargs(preset) -> dict[str, Any]:
    """timm kwargs of the preset's teacher; self-trained teachers get num_classes = feature_dim
    (the timm head becomes the feature projection)."""
    kw = dict(preset.teacher.timm_kwargs)
    if not preset.teacher.checkpoint:
        kw.setdefault("num_classes", preset.teacher.feature_dim)
    return kw


def _build(preset, checkpoint: str | Path | None):
    from rkdsc.common.models.teacher import build_teacher

    t = preset.teacher
    return build_teacher(t.name, checkpoint, t.feature_dim, t.img_size, **teacher_build_kwargs(preset))


def _fingerprint(preset) -> dict[str, Any]:
    """What a self-trained teacher depends on (a change retrains it)."""
    t, d = preset.teacher, preset.data
    return {"name": t.name, "img_size": t.img_size, "timm_kwargs": teacher_build_kwargs(preset),
            "feature_dim": t.feature_dim, "train_epochs": t.train_epochs, "train_lr": t.train_lr,
            "batch_size": t.batch_size, "train_weight_decay": t.train_weight_decay, "seed": preset.seed,
            "data": {"dataset": d.dataset, "root": str(preset.data_root()) if d.dataset != "digits" else "",
                     "input_size": d.input_size, "mean": d.mean, "std": d.std, "val_fraction": d.val_fraction,
                     "max_per_class": d.max_per_class, "augment": d.augment}}


def _attach(teacher, path: Path):
    teacher.checkpoint_path = str(path)
    teacher.checkpoint_sha256 = file_sha256(path)
    return teacher.eval()


def get_teacher(preset, workdir: str | Path, log: Callable[[str], None] = print, device: torch.device | None = None):
    """The preset's frozen teacher (see the module docstring); on `device` (default pick_device())."""
    device = device or pick_device()
    t = preset.teacher
    if t.checkpoint:
        path = Path(t.checkpoint).expanduser()
        if not path.is_file():
            raise TeacherError(f"preset {preset.name!r}: teacher.checkpoint = {t.checkpoint!r}: no such file")
        teacher = _build(preset, path)
        log(f"teacher: {teacher.label} from {path} (a pretrained checkpoint: no classifier is trained on this data "
            "set, so it has no validation accuracy)")
        return _attach(teacher, path).to(device)
    if t.train_epochs <= 0:
        raise TeacherError(
            f"preset {preset.name!r}: teacher.checkpoint is empty and teacher.train_epochs = 0: give local weights "
            f"for {t.name!r} (--set teacher.checkpoint=/path/to/model.safetensors; nothing is downloaded) or "
            "set teacher.train_epochs > 0 to train a teacher")
    out = Path(workdir) / "teacher"
    wfile, meta_file = out / "teacher.safetensors", out / "teacher.json"
    if wfile.is_file() and meta_file.is_file():
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
        if meta.get("fingerprint") == _fingerprint(preset) and meta.get("sha256") == file_sha256(wfile):
            log(f"teacher: reusing {wfile} (val acc {meta.get('val_acc', float('nan')):.4f})")
            return _attach(_build(preset, wfile), wfile).to(device)
        log(f"teacher: {wfile} was trained with other settings: retraining")
    log("no pretrained teacher checkpoint given: training the preset's own teacher")
    train_teacher(preset, out, log=log, device=device)
    return _attach(_build(preset, wfile), wfile).to(device)


def train_teacher(preset, out_dir: str | Path, log: Callable[[str], None] = print,
                  device: torch.device | None = None) -> dict[str, Any]:
    """Train the preset's own teacher (timm model + linear head, cross-entropy) -> out_dir files."""
    from rkdsc.common.data.datasets import augment_batch, build_datasets
    from rkdsc.common.models.heads import ClassifierHead

    device = device or pick_device()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t = preset.teacher
    g = seed_everything(preset.seed)
    train_ds, val_ds, classes = build_datasets(preset)
    teacher = _build(preset, None).to(device)
    backbone = teacher.backbone
    for p in teacher.parameters():
        p.requires_grad_(True)
    head = ClassifierHead(t.feature_dim, len(classes), hidden=0).to(device)
    params = [p for p in teacher.parameters()] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=t.train_lr, weight_decay=t.train_weight_decay)
    loader = make_loader(train_ds, t.batch_size, shuffle=True, seed=preset.seed, num_workers=preset.data.num_workers,
                         drop_last=len(train_ds) > t.batch_size)
    total = max(1, t.train_epochs * len(loader))
    warm = max(1, int(0.05 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    history, t0 = [], time.time()
    n_params = sum(p.numel() for p in backbone.parameters())
    log(f"teacher: training {teacher.label} ({n_params / 1e6:.2f}M params) for "
        f"{t.train_epochs} epochs on {len(train_ds)} images ({len(classes)} classes), device {device}")
    for epoch in range(t.train_epochs):
        backbone.train()
        head.train()
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        for x, y in progress(loader, desc=f"teacher {epoch + 1}/{t.train_epochs}"):
            x = augment_batch(x, preset.data.augment, g).to(device)
            y = y.to(device)
            logits = head(_trainable_features(teacher, x))  # [B, C]
            loss = F.cross_entropy(logits, y, label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            tot_loss += loss.item() * len(y)
            tot_correct += int((logits.argmax(1) == y).sum())
            tot_n += len(y)
        val_acc = evaluate_teacher_head(teacher, head, val_ds, t.batch_size, device)
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(tot_n, 1), "train_acc": tot_correct / max(tot_n, 1),
               "val_acc": val_acc, "lr": opt.param_groups[0]["lr"], "time_s": round(time.time() - t0, 2)}
        history.append(rec)
        log(f"teacher epoch {epoch + 1}/{t.train_epochs}: loss {rec['loss']:.4f} train acc {rec['train_acc']:.4f} "
            f"val acc {val_acc:.4f} ({rec['time_s']:.0f} s)")
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    save_weights(out_dir / "teacher.safetensors", teacher, metadata={"name": t.name})
    save_weights(out_dir / "head.safetensors", head)
    meta = {"name": t.name, "label": teacher.label, "img_size": t.img_size, "feature_dim": t.feature_dim,
            "timm_kwargs": teacher_build_kwargs(preset), "num_classes": len(classes), "class_names": classes,
            "params": n_params, "epochs": t.train_epochs, "val_acc": history[-1]["val_acc"] if history else None,
            "train_acc": history[-1]["train_acc"] if history else None, "time_s": round(time.time() - t0, 2),
            "history": history, "preset": preset.name, "seed": preset.seed, "fingerprint": _fingerprint(preset),
            "sha256": file_sha256(out_dir / "teacher.safetensors"), "device": str(device)}
    write_json(out_dir / "teacher.json", meta)
    return meta


def _trainable_features(teacher, x: torch.Tensor) -> torch.Tensor:
    """Teacher forward WITH gradients (Teacher.forward runs the backbone under no_grad)."""
    if tuple(x.shape[-2:]) != teacher.img_size:
        x = F.interpolate(x, size=teacher.img_size, mode="bilinear", align_corners=False)
    h = teacher.backbone(x)  # [B, out_dim]
    return h if teacher.adapter is None else teacher.adapter(h)  # [B, F]


@torch.no_grad()
def evaluate_teacher_head(teacher, head, dataset, batch_size: int = 256, device: torch.device | None = None) -> float:
    """Top-1 accuracy of head(teacher(x)) on `dataset` (eval mode; modes restored afterwards)."""
    device = device or next(head.parameters()).device
    was = teacher.backbone.training, head.training
    teacher.backbone.eval()
    head.eval()
    correct = n = 0
    for x, y in make_loader(dataset, batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        correct += int((head(_trainable_features(teacher, x)).argmax(1) == y).sum())
        n += len(y)
    teacher.backbone.train(was[0])
    head.train(was[1])
    return correct / max(n, 1)


def teacher_head(workdir: str | Path):
    """The self-trained teacher's linear classifier (ClassifierHead, hidden=0) from workdir/teacher/."""
    from rkdsc.common.models.heads import ClassifierHead

    out = Path(workdir) / "teacher"
    meta_file = out / "teacher.json"
    if not meta_file.is_file():
        raise TeacherError(f"{meta_file}: no self-trained teacher in this work directory")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    head = ClassifierHead(meta["feature_dim"], meta["num_classes"], hidden=0)
    return load_weights(out / "head.safetensors", head).eval()


__all__ = ["get_teacher", "train_teacher", "teacher_head", "teacher_build_kwargs", "evaluate_teacher_head",
           "TeacherError"]
