"""Two-stage Robust Knowledge Distillation (paper Sec. III.C, Algorithm 2, Eqs. 23-27).

Stage 1 (Eqs. 23-25), per transmitter/task i: the compact semantic encoder f_theta_si (the
fixed-depth ``Student`` with the KDL-DARTS depths) is trained to reproduce the frozen teacher's
feature: ``loss = MSE(student(x), h^Tea(x))`` (Eq. 23 is the mean over the N feature values,
Eq. 24 the mean over samples). The teacher features come from the feature cache
(``rkdsc.common.train.features``): computed once, the teacher never runs in the training loop.
Validation metric: the same feature MSE on the validation split.

Stage 2 (Eq. 26), all transmitters jointly; per task i and batch::

    h       = student_i(x)                                   # [B, F]
    x_c     = CATEncoder_i(h, snr_db)                         # [B, compact_dim]
    z       = normalize_power(real_to_complex(x_c))           # [B, K] unit average power
    y       = simulate(z, snr_db, fading, equalize=True)      # MMSE-equalized, perfect CSI
    x_hat   = complex_to_real(y, compact_dim)                 # [B, compact_dim]
    h_tilde = CATDecoder_i(x_hat, snr_db)                     # [B, F]
    logits  = head_i(h_tilde)                                 # [B, C]
    L_i = lambda_kd * MSE(h_tilde, h^Tea) + lambda_re * MSE(h_tilde, h.detach()) + lambda_task * CE(logits, y)

With ``stage2.lambda_anchor > 0`` (not in the paper) ``L_i += lambda_anchor * MSE(h, h^Tea)``:
stage 1's loss stays on the encoder output and holds its scale (docs/decisions.md).

``loss = mean_i L_i`` (Eq. 26's 1/n) and one optimizer updates every student, CAT encoder,
CAT decoder and head (Eq. 27). The SNR of each sample is drawn uniformly from
``stage2.snr_db_range`` and its channel uniformly from ``stage2.channels`` (per sample, so
every batch mixes AWGN and Rayleigh block fading).

The target ``h`` of L_RE is detached and the optimizer settings are the project's own (why, and
what was measured: docs/decisions.md, "stage 2: detached L_RE target" and "RKD optimizer settings").
Per-epoch randomness (data order, SNR, fading, noise) is seeded by (seed, epoch, rank), so a
resumed run repeats exactly what an uninterrupted run would have done.

Files (single task: TASK_DIR = workdir; several tasks: TASK_DIR = workdir/tasks/<task>)::

    TASK_DIR/stage1/{checkpoint/, log.jsonl, student.safetensors, stage1.json}
    workdir/stage2/{checkpoint/, log.jsonl, stage2.json, <task>/model.safetensors, <task>/model.json}

``model.json`` = the architecture (``rkdsc.common.models.spec.ModelSpec.to_json``) + class names,
input spec, training settings and metrics; ``rkdsc.common.models.registry`` rebuilds and loads it,
so export needs no preset.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rkdsc.common.models.spec import ModelSpec, config_dict
from rkdsc.common.models.system import TaskSystem
from rkdsc.common.train import ddp
from rkdsc.common.train.common import (JsonlLogger, clear_outputs, cosine_lr, default_ctx, load_checkpoint,
                                       load_weights, make_loader, progress, read_json, save_checkpoint, save_weights,
                                       seed_everything, sync_note, write_json)

VAL_SNRS_DB = (-5.0, 5.0, 20.0)  # AWGN SNRs of the per-epoch validation accuracy
WEIGHT_DECAY = 1e-4  # AdamW weight decay of stage 1, stage 2 and the baselines
GRAD_CLIP = 1.0  # max gradient norm in stage 2 and the baselines
METHOD = "rkd-sc"


# ----------------------------------------------------------------------------- tasks

@dataclass
class TaskSetup:
    """One transmitter of the paper's multi-transmitter setup."""
    name: str            # task name (bundle task name): the dataset name, or the preset name for folders
    preset: Any          # rkdsc.common.train.presets.Preset defining its data, student, CAT ratio and head
    workdir: Path        # where its teacher, searches, feature cache and stage-1 output live
    depths: list[int]    # the student's per-layer depths (Table I)
    arch_source: str     # where the depths came from (arch.json path or "preset search.depths")


def task_name(preset) -> str:
    return preset.data.dataset if preset.data.dataset != "folder" else preset.name


def resolve_depths(preset, workdir: Path, arch: Any = None, method: str = "kdl-darts") -> tuple[list[int], str]:
    """Depths from ``arch`` (arch.json path, dict with "depths", or a list); default: the
    task's ``search-<method>/arch.json`` when present, else ``preset.search.depths``."""
    if arch is None:
        path = Path(workdir) / f"search-{method}" / "arch.json"
        if path.is_file():
            arch = path
        else:
            return [int(d) for d in preset.search.depths], "preset search.depths (no search result found)"
    source = "given"
    if isinstance(arch, (str, Path)):
        source = str(arch)
        try:
            arch = json.loads(Path(arch).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"--arch {source}: no such file") from None
    if isinstance(arch, dict):
        if "depths" not in arch:
            raise ValueError(f"arch {source}: no 'depths' key (keys: {sorted(arch)})")
        arch = arch["depths"]
    depths = [int(d) for d in arch]
    mx = preset.student.max_depth
    if len(depths) != 4 or not all(1 <= d <= mx for d in depths):
        raise ValueError(f"arch {source}: depths must be 4 ints in 1..{mx} (student.max_depth), got {depths}")
    return depths, source


def make_tasks(presets: Sequence[Any], workdir: str | Path, archs: Sequence[Any] | None = None) -> list[TaskSetup]:
    """TaskSetups for one or several presets (several = the multi-transmitter setup)."""
    workdir = Path(workdir)
    if not presets:
        raise ValueError("at least one preset is needed")
    archs = list(archs or [])
    if archs and len(archs) not in (1, len(presets)):
        raise ValueError(f"--arch: give one per --preset ({len(presets)}), got {len(archs)}")
    names = [task_name(p) for p in presets]
    if len(set(names)) != len(names):
        names = [f"{task_name(p)}-{p.name}" for p in presets]
    if len(set(names)) != len(names):
        raise ValueError(f"the presets give duplicate task names {names}")
    f0 = presets[0].teacher.feature_dim
    out = []
    for i, (p, name) in enumerate(zip(presets, names)):
        if p.teacher.feature_dim != f0:
            raise ValueError(f"preset {p.name!r}: teacher.feature_dim = {p.teacher.feature_dim}, the first preset "
                             f"has {f0}; all transmitters share the feature size")
        tdir = workdir if len(presets) == 1 else workdir / "tasks" / name
        arch = archs[i] if len(archs) == len(presets) else (archs[0] if archs else None)
        depths, src = resolve_depths(p, tdir, arch)
        out.append(TaskSetup(name, p, tdir, depths, src))
    return out


# ----------------------------------------------------------------------------- modules

def draw_channel(batch: int, snr_db_range: Sequence[float], channels: Sequence[str], generator: torch.Generator,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample SNR ~ U[lo, hi] dB and channel index ~ U{0..len(channels)-1}."""
    lo, hi = float(snr_db_range[0]), float(snr_db_range[1])
    snr = lo + (hi - lo) * torch.rand(batch, generator=generator, device=device)  # [B]
    idx = torch.randint(0, len(channels), (batch,), generator=generator, device=device)  # [B]
    return snr, idx


def input_spec(preset) -> dict:
    return {"size": int(preset.data.input_size), "mean": [float(v) for v in preset.data.mean],
            "std": [float(v) for v in preset.data.std]}


# ----------------------------------------------------------------------------- shared helpers

def epoch_seed(seed: int, epoch: int, rank: int = 0, stream: int = 0) -> int:
    """Seed of one epoch's randomness (data order, SNR/fading/noise) on one rank."""
    return (int(seed) * 1_000_003 + epoch * 7919 + rank * 104_729 + stream * 15_485_863) % (2**63 - 1)


def teacher_features(preset, task_dir: Path, teacher, datasets: Sequence[Any], ctx: ddp.DistContext,
                     log: Callable[[str], None]) -> list[torch.Tensor]:
    """Cached teacher features of each dataset; rank 0 fills the cache, the others read it."""
    from rkdsc.common.train.features import preset_teacher_features

    if ctx.is_main:
        feats = [preset_teacher_features(preset, task_dir, teacher, ds, log=log) for ds in datasets]
    ddp.barrier(ctx)
    if not ctx.is_main:
        feats = [preset_teacher_features(preset, task_dir, teacher, ds) for ds in datasets]
    return feats


def get_teacher_synced(preset, task_dir: Path, ctx: ddp.DistContext, log: Callable[[str], None]):
    """get_teacher on rank 0 first (it may train the teacher), then on the other ranks."""
    from rkdsc.common.train.teacher import get_teacher

    teacher = None
    if ctx.is_main:
        teacher = get_teacher(preset, task_dir, log=log, device=ctx.device)
    ddp.barrier(ctx)
    if not ctx.is_main:
        teacher = get_teacher(preset, task_dir, log=lambda s: None, device=ctx.device)
    return teacher


@torch.no_grad()
def feature_mse(student: nn.Module, dataset, feats: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Eqs. (23)-(24) on a dataset: mean over samples of the per-sample feature MSE."""
    from rkdsc.common.train.features import FeatureDataset

    was = student.training
    student.eval()
    tot, n = 0.0, 0
    for x, _, f in make_loader(FeatureDataset(dataset, feats), batch_size, shuffle=False):
        h = student(x.to(device))
        tot += float(F.mse_loss(h, f.to(device), reduction="sum")) / h.shape[1]
        n += h.shape[0]
    student.train(was)
    return tot / max(n, 1)


@torch.no_grad()
def system_accuracy(system: nn.Module, dataset, batch_size: int, device: torch.device, snr_db: float,
                    channel: str = "awgn", seed: int = 0, noise: bool = True) -> float:
    """Top-1 accuracy of a TaskSystem at one SNR (fixed noise seed)."""
    system = ddp.unwrap(system)
    was = system.training
    system.eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    correct = n = 0
    for batch in make_loader(dataset, batch_size, shuffle=False):
        x, y = batch[0].to(device), batch[1].to(device)
        snr = torch.full((x.shape[0],), float(snr_db), device=device)
        _, _, logits = system(x, snr, None, [channel], gen, noise=noise)
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    system.train(was)
    return correct / max(n, 1)


# ----------------------------------------------------------------------------- stage 1

def run_stage1(preset, workdir: str | Path, arch: Any = None, teacher=None, *, task: TaskSetup | None = None,
               resume: bool = False, ctx: ddp.DistContext | None = None, log: Callable[[str], None] = print,
               stop_after_epochs: int | None = None) -> dict:
    """Stage 1 (Eqs. 23-25) for one task: distil the teacher's features into the student.

    Returns the stage-1 summary (also written to TASK_DIR/stage1/stage1.json). With ``resume``
    a finished stage is reused and an interrupted one continues from its last checkpoint.
    ``stop_after_epochs`` ends this call after that many epochs (checkpoint kept; resume later).
    """
    from rkdsc.common.data.datasets import build_datasets
    from rkdsc.common.models.complexity import count_params
    from rkdsc.common.models.student import Student
    from rkdsc.common.train.features import FeatureDataset

    ctx = default_ctx(ctx)
    task = task or make_tasks([preset], workdir, [arch] if arch is not None else None)[0]
    preset, dev, s1 = task.preset, ctx.device, task.preset.stage1
    out = task.workdir / "stage1"
    done = read_json(out / "stage1.json")
    if resume and done is not None and done.get("epochs") == s1.epochs and done.get("depths") == task.depths:
        log(f"stage 1 [{task.name}]: reusing {out / 'stage1.json'} (val MSE {done['val_mse_final']:.5f})")
        return done
    if not resume:
        clear_outputs(out, ctx, ("checkpoint", "log.jsonl", "stage1.json", "student.safetensors"))
    if teacher is None:
        teacher = get_teacher_synced(preset, task.workdir, ctx, log)
    train_ds, val_ds, _ = build_datasets(preset)
    feats_tr, feats_va = teacher_features(preset, task.workdir, teacher, [train_ds, val_ds], ctx, log)

    seed_everything(preset.seed)
    student = Student(preset.student_config(), task.depths).to(dev)
    model = ddp.wrap(student, ctx)
    opt = torch.optim.AdamW(student.parameters(), lr=s1.lr, weight_decay=WEIGHT_DECAY)
    sched = cosine_lr(opt, s1.epochs, s1.lr_min)
    logger = JsonlLogger(out / "log.jsonl") if ctx.is_main else None
    state = load_checkpoint(out / "checkpoint", {"student": student}, {"opt": opt, "sched": sched}) if resume else None
    if state is not None:
        start, mse0, t_prev = int(state["epoch"]), float(state["val_mse_init"]), float(state["time_s"])
        log(f"stage 1 [{task.name}]: resuming after epoch {start}/{s1.epochs}")
    else:
        start, t_prev = 0, 0.0
        mse0 = feature_mse(student, val_ds, feats_va, s1.batch_size, dev)
        if logger:
            logger.path.unlink(missing_ok=True)  # no checkpoint: the log starts over too
            logger.log(stage=1, task=task.name, epoch=0, val_mse=mse0, time_s=0.0)
    log(f"stage 1 [{task.name}]: student depths {task.depths} ({count_params(student):,} params, from "
        f"{task.arch_source}), {len(train_ds)} train / {len(val_ds)} val images, {s1.epochs} epochs, "
        f"device {dev}, world {ctx.world_size}")
    data = FeatureDataset(train_ds, feats_tr)
    t0 = time.time() - t_prev
    mse_va = mse0 if start == 0 else float(state.get("val_mse", mse0))
    ran = 0
    for epoch in range(start, s1.epochs):
        if stop_after_epochs is not None and ran >= stop_after_epochs:
            break
        torch.manual_seed(epoch_seed(preset.seed, epoch, ctx.rank))
        sampler = ddp.sampler(data, ctx, shuffle=True, seed=preset.seed)
        if sampler is not None:
            sampler.set_epoch(epoch)
        loader = make_loader(data, s1.batch_size, shuffle=True, seed=epoch_seed(preset.seed, epoch), sampler=sampler,
                             num_workers=preset.data.num_workers)
        model.train()
        tot, n = 0.0, 0
        for x, _, f in progress(loader, desc=f"stage1 {task.name} {epoch + 1}/{s1.epochs}"):
            x, f = x.to(dev), f.to(dev)
            loss = F.mse_loss(model(x), f)  # Eq. (23) averaged over the batch (Eq. 24)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(x)
            n += len(x)
        lr = opt.param_groups[0]["lr"]
        sched.step()
        ddp.sync_buffers(student, ctx)
        mse_va = feature_mse(student, val_ds, feats_va, s1.batch_size, dev)
        train_mse = ddp.all_reduce_mean(tot / max(n, 1), ctx)
        elapsed = time.time() - t0
        rec = {"stage": 1, "task": task.name, "epoch": epoch + 1, "train_mse": train_mse, "val_mse": mse_va,
               "lr": lr, "time_s": round(elapsed, 3)}
        if logger:
            logger.log(rec)
            save_checkpoint(out / "checkpoint", {"student": student}, {"opt": opt, "sched": sched},
                            {"epoch": epoch + 1, "epochs": s1.epochs, "val_mse_init": mse0, "val_mse": mse_va,
                             "time_s": elapsed, "seed": preset.seed, "depths": task.depths,
                             "rng": "torch.manual_seed(epoch_seed(seed, epoch, rank)) at each epoch start",
                             "preset": preset.name})
        ddp.barrier(ctx)
        log(f"stage 1 [{task.name}] epoch {epoch + 1}/{s1.epochs}: train MSE {train_mse:.5f}  val MSE {mse_va:.5f} "
            f"({elapsed:.0f} s)")
        ran += 1
    else:
        sync = sync_note(student, ctx)
        sync["samples_per_rank_last_epoch"] = [int(v) for v in ddp.gather_strings(str(n if ran else 0), ctx)]
        summary = {"task": task.name, "preset": preset.name, "seed": preset.seed, "depths": task.depths,
                   "arch_source": task.arch_source, "epochs": s1.epochs, "val_mse_init": mse0,
                   "val_mse_final": mse_va, "student_params": count_params(student),
                   "time_s": round(time.time() - t0, 3), "ddp": sync,
                   "student_config": config_dict(preset.student_config())}
        if ctx.is_main:
            save_weights(out / "student.safetensors", student)
            write_json(out / "stage1.json", summary)
        ddp.barrier(ctx)
        return summary
    return {"task": task.name, "stopped_after_epoch": start + ran, "epochs": s1.epochs, "val_mse": mse_va}


# ----------------------------------------------------------------------------- stage 2

@dataclass
class _TaskData:
    task: TaskSetup
    system: TaskSystem
    model: nn.Module          # DDP wrapper or the system
    train: Any                # FeatureDataset of the train split
    val: Any                  # val dataset (image, label)
    val_feats: torch.Tensor   # teacher features of the val split
    class_names: list[str]


def run_stage2(presets: Any, workdir: str | Path, archs: Sequence[Any] | None = None, *,
               tasks: Sequence[TaskSetup] | None = None, teachers: Sequence[Any] | None = None,
               resume: bool = False, ctx: ddp.DistContext | None = None, log: Callable[[str], None] = print,
               stop_after_epochs: int | None = None, out_name: str = "stage2", train_encoder: bool = True,
               noise: bool = True, epochs: int | None = None) -> dict:
    """Stage 2 (Eqs. 26-27): joint training of every task's student, CAT encoder/decoder and head
    through the channel. ``presets``: one Preset or a list (several transmitters); stage-2
    hyperparameters come from the first. Students start from each task's stage-1 weights.

    ``train_encoder=False, noise=False`` is the ablation used to measure what stage 2 adds: the
    stage-1 encoder stays frozen and the CAT and head are trained with the same loss on
    noiseless symbols ("stage-1-only system"); write it under another ``out_name``.
    """
    from rkdsc.common.data.datasets import build_datasets, class_ids
    from rkdsc.common.models.complexity import count_params
    from rkdsc.common.train.features import FeatureDataset

    ctx = default_ctx(ctx)
    presets = list(presets) if isinstance(presets, (list, tuple)) else [presets]
    tasks = list(tasks) if tasks is not None else make_tasks(presets, workdir, archs)
    workdir = Path(workdir)
    p0 = tasks[0].preset
    s2, dev = p0.stage2, ctx.device
    n_epochs = s2.epochs if epochs is None else int(epochs)
    out = workdir / out_name
    done = read_json(out / "stage2.json")
    if resume and done is not None and done.get("epochs") == n_epochs and [t["task"] for t in done["tasks"]] == [t.name for t in tasks]:
        log(f"stage 2: reusing {out / 'stage2.json'}")
        return done
    if not resume:
        clear_outputs(out, ctx, ("checkpoint", "log.jsonl", "stage2.json"))

    seed_everything(p0.seed)
    items: list[_TaskData] = []
    for i, task in enumerate(tasks):
        p = task.preset
        s1_file = task.workdir / "stage1" / "student.safetensors"
        if not s1_file.is_file():
            raise FileNotFoundError(f"stage 2 [{task.name}]: {s1_file} not found; run stage 1 first "
                                    f"(rkdsc distill --stage 1)")
        s1 = read_json(task.workdir / "stage1" / "stage1.json") or {}
        if s1.get("depths", task.depths) != task.depths:
            raise ValueError(f"stage 2 [{task.name}]: stage 1 used depths {s1['depths']}, now {task.depths}")
        teacher = teachers[i] if teachers else get_teacher_synced(p, task.workdir, ctx, log)
        train_ds, val_ds, class_names = build_datasets(p)
        f_tr, f_va = teacher_features(p, task.workdir, teacher, [train_ds, val_ds], ctx, log)
        torch.manual_seed(epoch_seed(p0.seed, 0, 0, stream=100 + i))  # CAT / head init
        from rkdsc.common.models.student import Student

        student = Student(p.student_config(), task.depths)
        load_weights(s1_file, student)
        system = TaskSystem(student, p.cat_config(), len(class_names), p.head.hidden).to(dev)
        if not train_encoder:
            for q in system.student.parameters():
                q.requires_grad_(False)
        items.append(_TaskData(task, system, ddp.wrap(system, ctx), FeatureDataset(train_ds, f_tr), val_ds, f_va,
                               list(class_names)))
    params = [q for it in items for q in it.system.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=s2.lr, weight_decay=WEIGHT_DECAY)
    sched = cosine_lr(opt, n_epochs, s2.lr_min)
    models = {it.task.name: it.system for it in items}
    logger = JsonlLogger(out / "log.jsonl") if ctx.is_main else None
    state = load_checkpoint(out / "checkpoint", models, {"opt": opt, "sched": sched}) if resume else None
    start, t_prev = (int(state["epoch"]), float(state["time_s"])) if state else (0, 0.0)
    if state:
        log(f"stage 2: resuming after epoch {start}/{n_epochs}")
    elif logger:
        logger.path.unlink(missing_ok=True)  # no checkpoint: the log starts over too
    mode = "joint" if train_encoder and noise else f"ablation(train_encoder={train_encoder}, noise={noise})"
    log(f"stage 2 ({mode}): tasks {[it.task.name for it in items]}, {n_epochs} epochs, SNR {s2.snr_db_range} dB, "
        f"channels {s2.channels}, lambdas kd/re/task {s2.lambda_kd}/{s2.lambda_re}/{s2.lambda_task}, device {dev}")
    t0 = time.time() - t_prev
    last_val: dict = state.get("val", {}) if state else {}
    ran = 0
    for epoch in range(start, n_epochs):
        if stop_after_epochs is not None and ran >= stop_after_epochs:
            break
        torch.manual_seed(epoch_seed(p0.seed, epoch, ctx.rank))
        gen = torch.Generator(device=dev)
        gen.manual_seed(epoch_seed(p0.seed, epoch, ctx.rank, stream=1))
        loaders = []
        for i, it in enumerate(items):
            sampler = ddp.sampler(it.train, ctx, shuffle=True, seed=p0.seed + i)
            if sampler is not None:
                sampler.set_epoch(epoch)
            loaders.append(make_loader(it.train, s2.batch_size, shuffle=True, sampler=sampler,
                                       seed=epoch_seed(p0.seed, epoch, 0, stream=2 + i),
                                       num_workers=it.task.preset.data.num_workers))
        steps = max(len(ld) for ld in loaders)
        iters = [iter(ld) for ld in loaders]
        for it in items:
            it.system.train()
            if not train_encoder:
                it.system.student.eval()  # frozen encoder: BatchNorm statistics stay as in stage 1
        sums = {it.task.name: {"kd": 0.0, "re": 0.0, "task": 0.0, "anchor": 0.0, "acc": 0.0, "n": 0} for it in items}
        for _ in progress(range(steps), desc=f"stage2 {epoch + 1}/{n_epochs}"):
            losses = []
            for i, it in enumerate(items):
                try:
                    x, y, f = next(iters[i])
                except StopIteration:  # shorter task data: start it over
                    iters[i] = iter(loaders[i])
                    x, y, f = next(iters[i])
                x, y, f = x.to(dev), y.to(dev), f.to(dev)
                snr, fidx = draw_channel(len(x), s2.snr_db_range, s2.channels, gen, dev)
                h, h_tilde, logits = it.model(x, snr, fidx, s2.channels, gen, noise=noise, encoder_grad=train_encoder)
                l_kd = F.mse_loss(h_tilde, f)
                l_re = F.mse_loss(h_tilde, h.detach())  # detached target: see the module docstring
                l_task = F.cross_entropy(logits, y)
                l_i = s2.lambda_kd * l_kd + s2.lambda_re * l_re + s2.lambda_task * l_task
                s = sums[it.task.name]
                if s2.lambda_anchor > 0:  # stage 1's loss on the encoder output (not in Eq. 26)
                    l_anchor = F.mse_loss(h, f)
                    l_i = l_i + s2.lambda_anchor * l_anchor
                    s["anchor"] += l_anchor.item() * len(x)
                losses.append(l_i)
                s["kd"] += l_kd.item() * len(x)
                s["re"] += l_re.item() * len(x)
                s["task"] += l_task.item() * len(x)
                s["acc"] += float((logits.argmax(1) == y).sum())
                s["n"] += len(x)
            loss = torch.stack(losses).mean()  # Eq. (26): 1/n sum over transmitters
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
            opt.step()
        lr = opt.param_groups[0]["lr"]
        sched.step()
        for it in items:
            ddp.sync_buffers(it.system, ctx)
        rec: dict[str, Any] = {"stage": 2, "epoch": epoch + 1, "lr": lr, "tasks": {}}
        last_val = {}
        for it in items:
            s = sums[it.task.name]
            nn_ = max(s["n"], 1)
            vals = {f"val_acc_awgn_{snr:g}db": system_accuracy(it.system, it.val, s2.batch_size, dev, snr, "awgn",
                                                                seed=p0.seed) for snr in VAL_SNRS_DB}
            tr = {k: ddp.all_reduce_mean(s[k] / nn_, ctx) for k in ("kd", "re", "task", "anchor", "acc")}
            rec["tasks"][it.task.name] = {"loss_kd": tr["kd"], "loss_re": tr["re"], "loss_task": tr["task"],
                                          **({"loss_anchor": tr["anchor"]} if s2.lambda_anchor > 0 else {}),
                                          "train_acc": tr["acc"], **vals}
            last_val[it.task.name] = vals
        rec["loss"] = sum(s2.lambda_kd * v["loss_kd"] + s2.lambda_re * v["loss_re"] + s2.lambda_task * v["loss_task"]
                          + s2.lambda_anchor * v.get("loss_anchor", 0.0) for v in rec["tasks"].values()) / len(items)
        elapsed = time.time() - t0
        rec["time_s"] = round(elapsed, 3)
        if logger:
            logger.log(rec)
            save_checkpoint(out / "checkpoint", models, {"opt": opt, "sched": sched},
                            {"epoch": epoch + 1, "epochs": n_epochs, "val": last_val, "time_s": elapsed,
                             "seed": p0.seed, "tasks": [t.name for t in tasks],
                             "rng": "seeded from (seed, epoch, rank) at each epoch start"})
        ddp.barrier(ctx)
        short = "  ".join(f"{n}: " + " ".join(f"{k.split('_')[-1]} {v:.3f}" for k, v in vals.items())
                          for n, vals in last_val.items())
        log(f"stage 2 epoch {epoch + 1}/{n_epochs}: loss {rec['loss']:.4f}  val acc (awgn) {short} ({elapsed:.0f} s)")
        ran += 1
    else:
        summary = {"method": METHOD if (train_encoder and noise) else "stage1-only-ablation", "epochs": n_epochs,
                   "time_s": round(time.time() - t0, 3), "seed": p0.seed, "preset": p0.name,
                   "stage2": dataclasses.asdict(s2), "train_encoder": train_encoder, "noise": noise, "tasks": []}
        for it in items:
            p = it.task.preset
            arch = ModelSpec(method=summary["method"], feature_dim=p.teacher.feature_dim,
                             num_classes=len(it.class_names), head_hidden=p.head.hidden, depths=it.task.depths,
                             student=p.student_config(), cat=p.cat_config())
            spec = {"task": it.task.name, "class_names": it.class_names, "class_ids": class_ids(p),
                    **arch.to_json(), "input": input_spec(p),
                    "snr_train_db": [float(v) for v in s2.snr_db_range], "channels": list(s2.channels),
                    "preset": p.name, "preset_config": p.to_dict(), "seed": p.seed,
                    "params": {"student": count_params(it.system.student),
                               "cat_encoder": count_params(it.system.cat_encoder),
                               "cat_decoder": count_params(it.system.cat_decoder),
                               "head": count_params(it.system.head)},
                    "val": last_val.get(it.task.name, {}), "ddp": sync_note(it.system, ctx)}
            if ctx.is_main:
                save_weights(out / it.task.name / "model.safetensors", it.system)
                write_json(out / it.task.name / "model.json", spec)
            summary["tasks"].append({k: spec[k] for k in ("task", "depths", "params", "val", "ddp")})
        if ctx.is_main:
            write_json(out / "stage2.json", summary)
        ddp.barrier(ctx)
        return summary
    return {"stopped_after_epoch": start + ran, "epochs": n_epochs}


# ----------------------------------------------------------------------------- CLI

def load_presets(names: Sequence[str], sets: Sequence[str] | None) -> list[Any]:
    from rkdsc.common.train.presets import load_preset, parse_set_args

    overrides = parse_set_args(list(sets or []))
    return [load_preset(n, overrides) for n in names]


def add_common_args(p: argparse.ArgumentParser, multi: bool = True) -> None:
    p.add_argument("--preset", action="append", required=True, metavar="NAME",
                   help="training preset (name of a built-in preset or a .toml path)"
                        + ("; repeat for several transmitters, one task each (stage-2 settings come from the first)"
                           if multi else ""))
    p.add_argument("--workdir", required=True, metavar="DIR", help="work directory (outputs, checkpoints, logs)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a preset value (TOML literal), e.g. --set stage1.epochs=5; applies to every preset")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished stages and continue an interrupted one from its last checkpoint "
                        "(without it the stage starts over)")
    p.add_argument("--device", metavar="DEV", help="cpu | cuda | cuda:N (default: $RKDSC_DEVICE, else CUDA when available)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc distill",
        description="Two-stage robust knowledge distillation (paper Alg. 2). Stage 1: student <- teacher "
                    "features (MSE, Eqs. 23-25). Stage 2: student + CAT encoder/decoder + head trained jointly "
                    "through the channel (Eq. 26). Runs under torchrun for several processes/GPUs.")
    add_common_args(p)
    p.add_argument("--stage", choices=("1", "2", "both"), default="both", help="which stage(s) to run (default: both)")
    p.add_argument("--arch", action="append", metavar="ARCH.json",
                   help="arch.json of the search (one per --preset); default: TASK_DIR/search-kdl-darts/arch.json, "
                        "else the preset's search.depths")
    p.add_argument("--stop-after-epochs", type=int, metavar="N",
                   help="end after N epochs of the running stage, keeping the checkpoint (continue with --resume)")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rkdsc.common.train.common import set_threads

    set_threads()  # $RKDSC_THREADS, else torch's default
    ctx = ddp.init_distributed(args.device)
    log = print if ctx.is_main else (lambda s: None)
    if ctx.distributed:
        print(f"rkdsc distill: rank {ctx.rank}/{ctx.world_size} on {ctx.device} ({ctx.backend})", flush=True)
    try:
        presets = load_presets(args.preset, args.set)
        tasks = make_tasks(presets, args.workdir, args.arch)
        if args.stage in ("1", "both"):
            for t in tasks:
                res = run_stage1(t.preset, args.workdir, task=t, resume=args.resume, ctx=ctx, log=log,
                                 stop_after_epochs=args.stop_after_epochs)
                if "stopped_after_epoch" in res:
                    log(f"stage 1 [{t.name}]: stopped after epoch {res['stopped_after_epoch']} (--stop-after-epochs)")
                    return 0
        if args.stage in ("2", "both"):
            res = run_stage2(presets, args.workdir, tasks=tasks, resume=args.resume, ctx=ctx, log=log,
                             stop_after_epochs=args.stop_after_epochs)
            if "stopped_after_epoch" in res:
                log(f"stage 2: stopped after epoch {res['stopped_after_epoch']} (--stop-after-epochs)")
        return 0
    except (ValueError, FileNotFoundError) as exc:
        print(f"rkdsc distill: error: {exc}", file=sys.stderr)
        return 2
    finally:
        ddp.cleanup(ctx)


if __name__ == "__main__":
    sys.exit(cli())
