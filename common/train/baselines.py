"""Baselines of the paper (Sec. IV.A.2): JSCC-student, JSCC-teacher, T-DeepSC, RTSC (``rkdsc baseline``).

Both send the encoder's ``feature_dim`` real feature itself, with no CAT (``JSCCSystem``:
encoder -> channel, MMSE, perfect CSI -> ``ClassifierHead``; compression ratio 0), trained end
to end through the stage-2 channel with cross-entropy only, on ``baseline.*`` settings
(SNR range, channels, epochs, lr; AdamW 1e-4, cosine LR, grad clip 1.0 as in stage 2).

* **JSCC-student**: the searched ``Student`` (fresh seeded init, NOT distilled) + a fresh head;
  every parameter is trained.
* **JSCC-teacher**: the frozen teacher as encoder, only a fresh head is trained; training reads
  the teacher's features from the feature cache, the exported edge part runs the real teacher.
* **T-DeepSC** / **RTSC** (``rkdsc.common.models.tdeepsc`` / ``rtsc``, a ``CodecSystem``): their own
  encoder (10 / 512 real values per image) and decoder (ending in its head), every parameter
  trained from a seeded init, end to end through the same channel with cross-entropy; model sizes
  from ``Preset.tdeepsc_config()`` / ``rtsc_config()`` (``baseline.tdeepsc`` / ``baseline.rtsc``
  overrides). T-DeepSC trains at the one SNR ``baseline.tdeepsc_snr_db`` (12 dB, paper Fig. 6),
  RTSC over ``baseline.snr_db_range``; both draw the channel from ``baseline.channels``.

Files: ``workdir/baseline-<kind>/<task>/{checkpoint/, log.jsonl, baseline.json, model.safetensors,
model.json}`` (+ ``teacher.safetensors`` for JSCC-teacher, so the folder is self-contained for
export); ``model.json`` holds the ``ModelSpec`` keys, loaded through ``rkdsc.common.models.registry``.
Several presets = several tasks, each trained on its own.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from rkdsc.common.models.registry import get_method
from rkdsc.common.models.spec import ModelSpec, TeacherConfig
from rkdsc.common.models.system import JSCCSystem
from rkdsc.common.train import ddp
from rkdsc.common.train.common import (JsonlLogger, clear_outputs, cosine_lr, default_ctx, load_checkpoint,
                                       make_loader, progress, read_json, save_checkpoint, save_weights, seed_everything,
                                       sync_note, write_json)
from rkdsc.common.train.distill import (GRAD_CLIP, VAL_SNRS_DB, WEIGHT_DECAY, TaskSetup, add_common_args,
                                        draw_channel, epoch_seed, get_teacher_synced, input_spec, load_presets,
                                        make_tasks, teacher_features)

KINDS = ("jscc-student", "jscc-teacher", "t-deepsc", "rtsc")
CODECS = ("t-deepsc", "rtsc")  # baselines with their own encoder and decoder (CodecSystem)


def codec_spec(preset, kind: str, num_classes: int) -> ModelSpec:
    """The ModelSpec of T-DeepSC / RTSC for a preset (feature_dim = the values it sends)."""
    cfg = preset.tdeepsc_config() if kind == "t-deepsc" else preset.rtsc_config()
    return ModelSpec(method=kind, feature_dim=cfg.n_values, num_classes=num_classes, head_hidden=preset.head.hidden,
                     **{"tdeepsc" if kind == "t-deepsc" else "rtsc": cfg})


def train_snr_range(preset, kind: str) -> list[float]:
    """[lo, hi] dB the baseline draws its training SNR from (T-DeepSC: one fixed SNR)."""
    b = preset.baseline
    if kind == "t-deepsc":
        return [float(b.tdeepsc_snr_db)] * 2
    return [float(v) for v in b.snr_db_range]


@torch.no_grad()
def jscc_accuracy(system: nn.Module, dataset, batch_size: int, device: torch.device, snr_db: float,
                  channel: str = "awgn", seed: int = 0) -> float:
    """Top-1 accuracy at one SNR; ``dataset`` items are (input, label, ...)."""
    system = ddp.unwrap(system)
    was = system.training
    system.eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    correct = n = 0
    for batch in make_loader(dataset, batch_size, shuffle=False):
        x, y = batch[0].to(device), batch[1].to(device)
        logits = system(x, torch.full((len(x),), float(snr_db), device=device), None, [channel], gen)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    system.train(was)
    return correct / max(n, 1)


class _FeatLabel(torch.utils.data.Dataset):
    """(teacher feature, label) pairs: JSCC-teacher's training inputs."""

    def __init__(self, feats: torch.Tensor, labels: torch.Tensor):
        self.feats, self.labels = feats, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.feats[i], self.labels[i]


def _labels(ds) -> torch.Tensor:
    if hasattr(ds, "labels"):
        return torch.as_tensor(ds.labels)
    return torch.as_tensor([int(ds[i][1]) for i in range(len(ds))])


def run_baseline(preset, kind: str, workdir: str | Path, arch: Any = None, teacher=None, *,
                 task: TaskSetup | None = None, resume: bool = False, ctx: ddp.DistContext | None = None,
                 log: Callable[[str], None] = print, stop_after_epochs: int | None = None) -> dict:
    """Train one JSCC baseline for one task; returns (and writes) its summary."""
    from rkdsc.common.data.datasets import build_datasets, class_ids
    from rkdsc.common.models.complexity import count_params
    from rkdsc.common.models.student import Student

    if kind not in KINDS:
        raise ValueError(f"baseline kind: expected one of {list(KINDS)}, got {kind!r}")
    ctx = default_ctx(ctx)
    task = task or make_tasks([preset], workdir, [arch] if arch is not None else None)[0]
    p, dev, b = task.preset, ctx.device, task.preset.baseline
    out = get_method(kind).root(workdir) / task.name
    done = read_json(out / "baseline.json")
    if resume and done is not None and done.get("epochs") == b.epochs:
        log(f"{kind} [{task.name}]: reusing {out / 'baseline.json'}")
        return done
    if not resume:
        clear_outputs(out, ctx, ("checkpoint", "log.jsonl", "baseline.json"))

    train_ds, val_ds, class_names = build_datasets(p)
    fdim = p.teacher.feature_dim
    seed_everything(p.seed)
    snr_range = train_snr_range(p, kind)
    if kind == "jscc-student":
        encoder = Student(p.student_config(), task.depths)
        system = JSCCSystem(encoder, fdim, len(class_names), p.head.hidden).to(dev)
        train_data, val_data = train_ds, val_ds
    elif kind in CODECS:
        codec_arch = codec_spec(p, kind, len(class_names))
        system = get_method(kind).build(codec_arch).to(dev)
        train_data, val_data = train_ds, val_ds
    else:
        teacher = teacher if teacher is not None else get_teacher_synced(p, task.workdir, ctx, log)
        f_tr, f_va = teacher_features(p, task.workdir, teacher, [train_ds, val_ds], ctx, log)
        system = JSCCSystem(None, fdim, len(class_names), p.head.hidden).to(dev)
        train_data, val_data = _FeatLabel(f_tr, _labels(train_ds)), _FeatLabel(f_va, _labels(val_ds))
    model = ddp.wrap(system, ctx)
    params = [q for q in system.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=b.lr, weight_decay=WEIGHT_DECAY)
    sched = cosine_lr(opt, b.epochs, b.lr_min)
    logger = JsonlLogger(out / "log.jsonl") if ctx.is_main else None
    state = load_checkpoint(out / "checkpoint", {"system": system}, {"opt": opt, "sched": sched}) if resume else None
    start, t_prev = (int(state["epoch"]), float(state["time_s"])) if state else (0, 0.0)
    if state is None and logger:
        logger.path.unlink(missing_ok=True)  # no checkpoint: the log starts over too
    trained = {"jscc-student": "student encoder + head", "t-deepsc": "encoder + decoder (every parameter)",
               "rtsc": "encoder + decoder (every parameter)"}.get(kind, "head only (teacher frozen, features from the cache)")
    log(f"{kind} [{task.name}]: trains {trained}; {count_params(system, trainable_only=True):,} trainable params, "
        f"{b.epochs} epochs, SNR {snr_range} dB, channels {b.channels}, device {dev}")
    t0 = time.time() - t_prev
    vals: dict = state.get("val", {}) if state else {}
    ran = 0
    for epoch in range(start, b.epochs):
        if stop_after_epochs is not None and ran >= stop_after_epochs:
            break
        torch.manual_seed(epoch_seed(p.seed, epoch, ctx.rank))
        gen = torch.Generator(device=dev)
        gen.manual_seed(epoch_seed(p.seed, epoch, ctx.rank, stream=1))
        sampler = ddp.sampler(train_data, ctx, shuffle=True, seed=p.seed)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = make_loader(train_data, b.batch_size, shuffle=True, seed=epoch_seed(p.seed, epoch, 0, stream=2),
                             sampler=sampler, num_workers=p.data.num_workers if kind != "jscc-teacher" else 0)
        model.train()
        tot, correct, n = 0.0, 0, 0
        for x, y in progress(loader, desc=f"{kind} {task.name} {epoch + 1}/{b.epochs}"):
            x, y = x.to(dev), y.to(dev)
            snr, fidx = draw_channel(len(x), snr_range, b.channels, gen, dev)
            logits = model(x, snr, fidx, b.channels, gen)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
            tot += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            n += len(y)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        ddp.sync_buffers(system, ctx)
        vals = {f"val_acc_awgn_{s:g}db": jscc_accuracy(system, val_data, b.batch_size, dev, s, "awgn", p.seed)
                for s in VAL_SNRS_DB}
        elapsed = time.time() - t0
        rec = {"baseline": kind, "task": task.name, "epoch": epoch + 1,
               "loss_task": ddp.all_reduce_mean(tot / max(n, 1), ctx),
               "train_acc": ddp.all_reduce_mean(correct / max(n, 1), ctx), **vals, "lr": lr,
               "time_s": round(elapsed, 3)}
        if logger:
            logger.log(rec)
            save_checkpoint(out / "checkpoint", {"system": system}, {"opt": opt, "sched": sched},
                            {"epoch": epoch + 1, "epochs": b.epochs, "val": vals, "time_s": elapsed, "seed": p.seed,
                             "rng": "seeded from (seed, epoch, rank) at each epoch start"})
        ddp.barrier(ctx)
        log(f"{kind} [{task.name}] epoch {epoch + 1}/{b.epochs}: loss {rec['loss_task']:.4f} val acc (awgn) "
            + " ".join(f"{k.split('_')[-1]} {v:.3f}" for k, v in vals.items()) + f" ({elapsed:.0f} s)")
        ran += 1
    else:
        if kind == "jscc-student":
            arch = ModelSpec(method=kind, feature_dim=fdim, num_classes=len(class_names), head_hidden=p.head.hidden,
                             depths=task.depths, student=p.student_config())
            params = {"encoder": count_params(system.encoder), "head": count_params(system.head)}
        elif kind in CODECS:
            arch = codec_arch
            params = {"encoder": count_params(system.encoder), "decoder": count_params(system.decoder)}
        else:
            from rkdsc.common.train.teacher import teacher_build_kwargs

            arch = ModelSpec(method=kind, feature_dim=fdim, num_classes=len(class_names), head_hidden=p.head.hidden,
                             teacher=TeacherConfig(name=p.teacher.name, img_size=p.teacher.img_size, feature_dim=fdim,
                                                   timm_kwargs=teacher_build_kwargs(p),
                                                   source=getattr(teacher, "checkpoint_path", "")))
            params = {"encoder": count_params(teacher), "head": count_params(system.head)}
        spec: dict[str, Any] = {
            "task": task.name, "class_names": list(class_names), "class_ids": class_ids(p), **arch.to_json(),
            "input": input_spec(p), "snr_train_db": snr_range, "channels": list(b.channels),
            "preset": p.name, "preset_config": p.to_dict(), "seed": p.seed, "epochs": b.epochs, "val": vals,
            "trained": trained, "params": params}
        summary = {**{k: spec[k] for k in ("task", "method", "epochs", "val", "params", "trained", "seed")},
                   "time_s": round(time.time() - t0, 3), "ddp": sync_note(system, ctx)}
        if ctx.is_main:
            save_weights(out / "model.safetensors", system)
            if kind == "jscc-teacher":
                save_weights(out / "teacher.safetensors", teacher)
            write_json(out / "model.json", spec)
            write_json(out / "baseline.json", summary)
        ddp.barrier(ctx)
        return summary
    return {"task": task.name, "stopped_after_epoch": start + ran, "epochs": b.epochs}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc baseline",
        description="Train a baseline through the channel with the task loss only (no distillation, no CAT). "
                    "jscc-student: the searched student architecture + head, both trained from scratch. "
                    "jscc-teacher: the frozen teacher as encoder, only the head is trained. "
                    "t-deepsc: ViT encoder -> 10 values / KB-reading decoder, trained at baseline.tdeepsc_snr_db. "
                    "rtsc: real-time ViT codec (32x32 native) -> 512 values / ViT decoder.")
    p.add_argument("kind", choices=KINDS, help="which baseline")
    add_common_args(p)
    p.add_argument("--arch", action="append", metavar="ARCH.json",
                   help="jscc-student architecture (one per --preset); default: TASK_DIR/search-kdl-darts/arch.json, "
                        "else the preset's search.depths")
    p.add_argument("--stop-after-epochs", type=int, metavar="N",
                   help="end after N epochs, keeping the checkpoint (continue with --resume)")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rkdsc.common.train.common import set_threads

    set_threads()  # $RKDSC_THREADS, else torch's default
    ctx = ddp.init_distributed(args.device)
    log = print if ctx.is_main else (lambda s: None)
    try:
        presets = load_presets(args.preset, args.set)
        for t in make_tasks(presets, args.workdir, args.arch):
            run_baseline(t.preset, args.kind, args.workdir, task=t, resume=args.resume, ctx=ctx, log=log,
                         stop_after_epochs=args.stop_after_epochs)
        return 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"rkdsc baseline: error: {exc}", file=sys.stderr)
        return 2
    finally:
        ddp.cleanup(ctx)


if __name__ == "__main__":
    sys.exit(cli())
