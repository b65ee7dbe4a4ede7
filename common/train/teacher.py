"""The preset's teacher: a local checkpoint, or a small teacher the preset trains itself.

``get_teacher(preset, workdir, log=print) -> Teacher`` (``rkdsc.common.models.teacher.Teacher``,
frozen, eval mode):

* ``[teacher] checkpoint`` given: ``build_teacher(name, checkpoint, feature_dim, img_size,
  **timm_kwargs)`` (no download ever; the paper preset points this at CLIP ViT-B/16 weights).
* no checkpoint and ``train_epochs > 0``: "no pretrained teacher checkpoint given: training the
  preset's own teacher". The model (timm's, or ``rkdsc.common.models.cnn``'s ``resnet9``;
  ``num_classes = feature_dim`` unless timm_kwargs says otherwise, so its last linear layer is the
  feature projection) plus a linear classifier on the feature_dim-d output are trained with
  cross-entropy (``label_smoothing``; ``train_optimizer`` AdamW or SGD-Nesterov; a linear warm-up
  over ``train_warmup`` of the steps, then per-step cosine to 1 % of ``train_lr`` or, with
  ``train_schedule = "onecycle"``, linear to 0; ``train_clip_norm``; channels_last;
  ``train_threads`` intra-op threads; seeded, ``data.augment`` on the fly) on the preset's train
  split; the validation accuracy is measured every epoch, with wall and process CPU seconds and
  the load average. Writes ``workdir/teacher/teacher.safetensors`` (a whole-Teacher state dict,
  ``backbone.*`` keys), ``head.safetensors`` (the linear classifier) and ``teacher.json``
  (val accuracy, epochs, time, history, the build arguments, sha256, the content key).
  Interrupted, it resumes: after each epoch ``workdir/teacher/checkpoint/`` holds the weights,
  optimizer, schedule, history and generator states (with the content key); the next call goes on
  from the last whole epoch (bit-exact with ``data.num_workers = 0``) and removes it when done.
* Reuse by content: ``teacher_fingerprint(preset)`` is the teacher section (less checkpoint,
  cache_dir and train_threads), the seed and the data's identity (data settings plus sha256 of
  the train and validation images and labels); its sha256 is the teacher's key. A finished
  teacher is also stored under ``CACHE/<key>/`` (CACHE = ``teacher.cache_dir``, else
  ``$RKDSC_TEACHER_CACHE``, else ``WORKDIR/../teacher-cache``). A later call reuses
  ``workdir/teacher/`` when its fingerprint matches, else copies ``CACHE/<key>/`` in when that
  one matches (other work dirs, the ablation, seeds of the same teacher), else trains (a
  changed setting retrains and says so).
* neither: ``TeacherError`` naming ``teacher.checkpoint``.

Every returned teacher carries ``checkpoint_path`` and ``checkpoint_sha256`` (the file the
weights came from), used in feature-cache keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from rkdsc.common.train.common import (file_sha256, load_checkpoint, load_weights, make_loader, pick_device, progress,
                                       save_checkpoint, save_weights, seed_everything, write_json)


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


NOT_RECIPE = ("checkpoint", "cache_dir", "train_threads")  # teacher keys that do not change the trained weights


def teacher_fingerprint(preset) -> dict[str, Any]:
    """What a self-trained teacher depends on (a change retrains it): the teacher recipe, the seed
    and the data's identity (settings and the sha256 of the split's images and labels)."""
    from rkdsc.common.data.datasets import build_datasets
    from rkdsc.common.train.features import dataset_sha256

    t, d = preset.teacher, preset.data
    recipe = {k: v for k, v in dataclasses.asdict(t).items() if k not in NOT_RECIPE}
    recipe["timm_kwargs"] = teacher_build_kwargs(preset)
    train_ds, val_ds, _ = build_datasets(preset)
    return {"teacher": recipe, "seed": preset.seed,
            "data": {"dataset": d.dataset, "input_size": d.input_size, "mean": d.mean, "std": d.std,
                     "val_fraction": d.val_fraction, "max_per_class": d.max_per_class, "augment": d.augment,
                     "train_n": len(train_ds), "val_n": len(val_ds),
                     "train_sha256": dataset_sha256(train_ds), "val_sha256": dataset_sha256(val_ds)}}


def teacher_key(fingerprint: dict[str, Any]) -> str:
    """sha256 of a teacher fingerprint (the cache folder's name)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True, default=str).encode()).hexdigest()


def teacher_cache_root(preset, workdir: str | Path) -> Path:
    """``teacher.cache_dir``, else ``$RKDSC_TEACHER_CACHE``, else ``WORKDIR/../teacher-cache``."""
    raw = preset.teacher.cache_dir or os.environ.get("RKDSC_TEACHER_CACHE", "")
    return Path(raw).expanduser() if raw else Path(workdir).resolve().parent / "teacher-cache"


TEACHER_FILES = ("teacher.safetensors", "head.safetensors", "teacher.json")


def _valid_teacher_dir(folder: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    """teacher.json of ``folder`` when its fingerprint matches and the weights' sha256 verifies."""
    wfile, meta_file = folder / "teacher.safetensors", folder / "teacher.json"
    if not (wfile.is_file() and meta_file.is_file() and (folder / "head.safetensors").is_file()):
        return None
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    ok = (json.loads(json.dumps(meta.get("fingerprint"), default=str)) == json.loads(json.dumps(fingerprint, default=str))
          and meta.get("sha256") == file_sha256(wfile))
    return meta if ok else None


def _copy_teacher_dir(src: Path, dst: Path) -> None:
    """Copy the teacher files src -> dst through a temporary folder (an interrupted copy leaves no
    half-written teacher)."""
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in TEACHER_FILES:
        shutil.copy2(src / name, tmp / name)
    if dst.exists():
        shutil.rmtree(dst)
    try:
        os.replace(tmp, dst)
    except OSError:  # another process stored the same key first
        shutil.rmtree(tmp, ignore_errors=True)


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
    wfile = out / "teacher.safetensors"
    fp = teacher_fingerprint(preset)
    key = teacher_key(fp)
    meta = _valid_teacher_dir(out, fp)
    if meta is not None:
        log(f"teacher: reusing {wfile} (val acc {meta.get('val_acc', float('nan')):.4f})")
        return _attach(_build(preset, wfile), wfile).to(device)
    stale = f"teacher: {wfile} was trained with other settings: " if wfile.is_file() else "teacher: "
    cached = teacher_cache_root(preset, workdir) / key
    meta = _valid_teacher_dir(cached, fp)
    if meta is not None:
        _copy_teacher_dir(cached, out)
        log(f"{stale}reusing the cached teacher {cached} (val acc {meta.get('val_acc', float('nan')):.4f}, "
            f"trained in {meta.get('time_s', float('nan')):.0f} s)")
        return _attach(_build(preset, wfile), wfile).to(device)
    if wfile.is_file():
        log(f"{stale}retraining")
    log("no pretrained teacher checkpoint given: training the preset's own teacher")
    train_teacher(preset, out, log=log, device=device, fingerprint=fp)
    try:
        _copy_teacher_dir(out, cached)
        log(f"teacher: stored in the cache as {cached}")
    except OSError as exc:  # a read-only cache must not fail the run
        log(f"teacher: not cached ({cached}: {exc})")
    return _attach(_build(preset, wfile), wfile).to(device)


def lr_factor(step: int, total: int, warmup: float, schedule: str) -> float:
    """Learning-rate multiplier at optimizer step ``step`` of ``total``: linear warm-up over
    ``warmup`` of the steps (at least one), then cosine to 0.01 or (``"onecycle"``) linear to 0."""
    warm = max(1, int(round(warmup * total)))
    if step < warm:
        return (step + 1) / warm
    q = (step - warm) / max(1, total - warm)
    if schedule == "onecycle":
        return max(0.0, 1.0 - q)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * q))


def _optimizer(t, params):
    if t.train_optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.train_lr, momentum=0.9, nesterov=True, weight_decay=t.train_weight_decay)
    return torch.optim.AdamW(params, lr=t.train_lr, weight_decay=t.train_weight_decay)


def train_teacher(preset, out_dir: str | Path, log: Callable[[str], None] = print,
                  device: torch.device | None = None, fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train the preset's own teacher (model + linear head, cross-entropy) -> out_dir files."""
    t = preset.teacher
    old_threads = torch.get_num_threads()
    if t.train_threads:
        torch.set_num_threads(t.train_threads)
    try:
        return _train_teacher(preset, Path(out_dir), log, device or pick_device(),
                              fingerprint if fingerprint is not None else teacher_fingerprint(preset))
    finally:
        torch.set_num_threads(old_threads)


def _train_teacher(preset, out_dir: Path, log: Callable[[str], None], device: torch.device,
                   fingerprint: dict[str, Any]) -> dict[str, Any]:
    from rkdsc.common.data.datasets import augment_batch, build_datasets
    from rkdsc.common.models.heads import ClassifierHead

    out_dir.mkdir(parents=True, exist_ok=True)
    t = preset.teacher
    g = seed_everything(preset.seed)
    train_ds, val_ds, classes = build_datasets(preset)
    teacher = _build(preset, None).to(device).to(memory_format=torch.channels_last)
    backbone = teacher.backbone
    for p in teacher.parameters():
        p.requires_grad_(True)
    head = ClassifierHead(t.feature_dim, len(classes), hidden=0).to(device)
    params = [p for p in teacher.parameters()] + list(head.parameters())
    opt = _optimizer(t, params)
    loader = make_loader(train_ds, t.batch_size, shuffle=True, seed=preset.seed, num_workers=preset.data.num_workers,
                         drop_last=len(train_ds) > t.batch_size)
    total = max(1, t.train_epochs * len(loader))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, t.train_warmup, t.train_schedule))
    key = teacher_key(fingerprint)
    ckpt = out_dir / "checkpoint"
    resumed = _resume_state(ckpt, key, t.train_epochs, log)
    history, start, t_prev, c_prev = [], 0, 0.0, 0.0
    if resumed is not None:
        load_checkpoint(ckpt, {"teacher": teacher, "head": head}, {"opt": opt, "sched": sched})
        history, start = resumed["history"], int(resumed["epoch"])
        t_prev, c_prev = float(resumed["time_s"]), float(resumed["cpu_s"])
        g.set_state(_rng_from_hex(resumed["rng"]["augment"]))
        torch.set_rng_state(_rng_from_hex(resumed["rng"]["torch"]))
        log(f"teacher: resuming after epoch {start}/{t.train_epochs} from {ckpt} "
            f"(val acc {history[-1]['val_acc']:.4f})")
    t0, c0 = time.time() - t_prev, time.process_time() - c_prev
    n_params = sum(p.numel() for p in backbone.parameters())
    log(f"teacher: training {teacher.label} ({n_params / 1e6:.2f}M params) for "
        f"{t.train_epochs} epochs on {len(train_ds)} images ({len(classes)} classes), device {device}, "
        f"{torch.get_num_threads()} threads, {t.train_optimizer} lr {t.train_lr:g} ({t.train_schedule})")
    for epoch in range(start, t.train_epochs):
        backbone.train()
        head.train()
        tot_loss, tot_correct, tot_n = 0.0, 0, 0
        te, ce = time.time(), time.process_time()
        if resumed is not None and epoch == start:  # the data order continues where it stopped (exactly
            loader.generator.set_state(_rng_from_hex(resumed["rng"]["loader"]))  # with num_workers = 0)
        for x, y in progress(loader, desc=f"teacher {epoch + 1}/{t.train_epochs}"):
            x = augment_batch(x, preset.data.augment, g).to(device)
            y = y.to(device)
            logits = head(_trainable_features(teacher, x))  # [B, C]
            loss = F.cross_entropy(logits, y, label_smoothing=t.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.train_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, t.train_clip_norm)
            opt.step()
            sched.step()
            if not math.isfinite(loss.item()):
                raise TeacherError(
                    f"preset {preset.name!r}: teacher training diverged in epoch {epoch + 1} (loss {loss.item()}, "
                    f"lr {opt.param_groups[0]['lr']:.4g}): lower teacher.train_lr = {t.train_lr:g} or set "
                    f"teacher.train_clip_norm (now {t.train_clip_norm:g})")
            tot_loss += loss.item() * len(y)
            tot_correct += int((logits.argmax(1) == y).sum())
            tot_n += len(y)
        val_acc = evaluate_teacher_head(teacher, head, val_ds, t.batch_size, device)
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(tot_n, 1), "train_acc": tot_correct / max(tot_n, 1),
               "val_acc": val_acc, "lr": opt.param_groups[0]["lr"], "time_s": round(time.time() - t0, 2),
               "epoch_s": round(time.time() - te, 2), "epoch_cpu_s": round(time.process_time() - ce, 2),
               "load_avg_1m": round(os.getloadavg()[0], 2)}
        history.append(rec)
        if epoch + 1 < t.train_epochs:  # an interrupted training resumes after the last whole epoch
            save_checkpoint(ckpt, {"teacher": teacher, "head": head}, {"opt": opt, "sched": sched},
                            {"epoch": epoch + 1, "epochs": t.train_epochs, "key": key, "history": history,
                             "time_s": time.time() - t0, "cpu_s": time.process_time() - c0,
                             "rng": {"augment": _rng_hex(g.get_state()), "torch": _rng_hex(torch.get_rng_state()),
                                     "loader": _rng_hex(loader.generator.get_state())}})
        log(f"teacher epoch {epoch + 1}/{t.train_epochs}: loss {rec['loss']:.4f} train acc {rec['train_acc']:.4f} "
            f"val acc {val_acc:.4f} ({rec['epoch_s']:.0f} s wall, {rec['epoch_cpu_s']:.0f} s CPU, "
            f"load {rec['load_avg_1m']:.2f}; {rec['time_s']:.0f} s in all)")
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    save_weights(out_dir / "teacher.safetensors", teacher, metadata={"name": t.name})
    save_weights(out_dir / "head.safetensors", head)
    meta = {"name": t.name, "label": teacher.label, "img_size": t.img_size, "feature_dim": t.feature_dim,
            "timm_kwargs": teacher_build_kwargs(preset), "num_classes": len(classes), "class_names": classes,
            "params": n_params, "epochs": t.train_epochs, "val_acc": history[-1]["val_acc"] if history else None,
            "train_acc": history[-1]["train_acc"] if history else None, "time_s": round(time.time() - t0, 2),
            "cpu_s": round(time.process_time() - c0, 2), "threads": torch.get_num_threads(),
            "history": history, "preset": preset.name, "seed": preset.seed, "fingerprint": fingerprint,
            "key": teacher_key(fingerprint), "sha256": file_sha256(out_dir / "teacher.safetensors"),
            "device": str(device)}
    write_json(out_dir / "teacher.json", meta)
    shutil.rmtree(ckpt, ignore_errors=True)  # the finished teacher replaces it
    return meta


def _rng_hex(state: torch.Tensor) -> str:
    return bytes(state.numpy().tobytes()).hex()


def _rng_from_hex(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray.fromhex(text), dtype=torch.uint8).clone()


def _resume_state(ckpt: Path, key: str, epochs: int, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The state of an interrupted training of this teacher (same content key and epoch count), or
    None: no checkpoint, or one of other settings (said, then trained over)."""
    f = ckpt / "state.json"
    if not f.is_file():
        return None
    try:
        state = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log(f"teacher: {f} is unreadable ({exc}): training from the start")
        return None
    if state.get("key") != key or state.get("epochs") != epochs:
        log(f"teacher: {ckpt} was written with other settings: training from the start")
        return None
    return state


def _trainable_features(teacher, x: torch.Tensor) -> torch.Tensor:
    """Teacher forward WITH gradients (Teacher.forward runs the backbone under no_grad)."""
    if tuple(x.shape[-2:]) != teacher.img_size:
        x = F.interpolate(x, size=teacher.img_size, mode="bilinear", align_corners=False)
    h = teacher.backbone(x.contiguous(memory_format=torch.channels_last))  # [B, out_dim]
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
           "teacher_fingerprint", "teacher_key", "teacher_cache_root", "lr_factor", "TeacherError"]
