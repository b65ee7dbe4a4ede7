"""KDL-DARTS (Algorithm 1) and DARTS over the Table I depth space -> arch.json.

Search space: ``SearchableStudent`` (common/models/student.py): four MixedLayers, candidate
``j`` of layer ``l`` = the first ``j`` Bottleneck blocks of the layer's chain, mixed by
``softmax(alpha_l / T_alpha)`` (Eq. 13) with the Eq. (14) shortcut. ``alpha`` is ``[4, max_depth]``.

Data (Eq. 21, first order): the preset's train split (optionally ``search.max_images`` of it) is
cut into two stratified halves, the *weight half* (D_train of Alg. 1) and the *architecture
half* (D_val of Alg. 1). The preset's validation split is used only to report accuracy.

Every step (Alg. 1 lines 4-7):
1. alpha step on an architecture-half batch: minimise
   ``L_val + lambda_J * sum_l sum_j beta_lj * alpha_lj`` (Eqs. 17-19) over alpha only;
   first-order DARTS, i.e. Eq. (21) with xi = 0 (the weights are taken as they are).
2. weight step on a weight-half batch: minimise ``L_train`` over the network weights and
   the search head.

Losses. The search needs a classifier on the student feature to measure the task loss, so a
``ClassifierHead(feature_dim, num_classes, head.hidden)`` is trained together with the network
weights (in the weight step only) and thrown away afterwards (Alg. 1 yields only a*).
* KDL-DARTS: ``L = kd_weight * MSE(h, h^Tea) + (1 - kd_weight) * CE(head(h), y)`` - the KD
  objective of Eq. (11) with the channel left out (the channel codec does not exist yet during
  the search) - in both steps, h^Tea from the teacher feature cache; plus the penalty in the
  alpha step.
* DARTS: ``L = CE(head(h), y)`` in both steps, no penalty.
With ``kd_weight = 0`` the MSE term is not computed at all and with ``lambda_j = 0`` the
penalty is skipped, so KDL-DARTS with both at 0 executes exactly DARTS's computation (same seed
-> bit-identical alphas); only the final selection rule differs unless ``selection="alpha"``.

Penalty factors (Eq. 17): ``beta_l = softmax((|o_lj| / max_k |o_lk|) / T_beta)`` with ``|o_lj|`` the
parameters of candidate j of layer l (``candidate_params()``), normalised per layer
(docs/decisions.md, "Search: normalised penalty factors").

Final selection (Alg. 1 line 11, k = 1: one depth per layer). The mixture weights
``w_l = softmax(alpha_l / T_alpha)`` (not the raw alpha, which may be negative and are only
defined up to a per-layer constant) are multiplied by ``(1 - beta_l)``; KDL-DARTS takes
``argmax_j w_lj * (1 - beta_lj)``, DARTS ``argmax_j alpha_lj``. For equal alphas the first rule
never picks a deeper candidate than the second (1 - beta falls with size).

Optimisers: cosine schedules from lr_w / lr_alpha to their minima over the epochs; the alpha
optimizer defaults to SGD (docs/decisions.md, "Search: SGD for alpha").

Distributed: under torchrun the student and the head are wrapped in DistributedDataParallel
(common/train/ddp.py) and each half is sharded with a DistributedSampler; the step functions
``arch_step`` / ``weight_step`` take whatever module they are given (a DDP-wrapped alpha step
uses a full backward so DDP all-reduces the alpha gradient). Rank 0 writes files.

Outputs in ``workdir/search-<method>/``: ``arch.json`` (see ``run_search``), ``search.jsonl``
(one record per epoch) and ``checkpoint/`` (resume with ``resume=True``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Subset

METHODS = ("kdl-darts", "darts")
SELECTIONS = ("alpha-beta", "alpha")
BETA_NORMALIZATION = "per-layer max: |o_lj| / max_k |o_lk|"


# -- Eqs. (17)-(19) and the selection rule --------------------------------------------------

def penalty_factors(candidate_params: list[list[int]], t_beta: float) -> torch.Tensor:
    """Eq. (17) with per-layer normalised counts: beta [L, D] (rows sum to 1)."""
    counts = torch.tensor(candidate_params, dtype=torch.float64)
    norm = counts / counts.max(dim=1, keepdim=True).values
    return torch.softmax(norm / t_beta, dim=1).float()


def complexity_penalty(alphas: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """sum_l J^(l) = sum_l sum_j beta_lj * alpha_lj (Eq. 18); its gradient is beta (Eq. 20)."""
    return (beta.to(alphas) * alphas).sum()


def selection_metric(alphas: torch.Tensor, beta: torch.Tensor, t_alpha: float, rule: str) -> torch.Tensor:
    """[L, D] score whose row-wise argmax is the chosen candidate: "alpha-beta" = softmax(alpha /
    T_alpha) * (1 - beta) (Alg. 1 line 11), "alpha" = alpha (DARTS)."""
    a = alphas.detach().float().cpu()
    if rule == "alpha":
        return a
    if rule == "alpha-beta":
        return torch.softmax(a / t_alpha, dim=1) * (1.0 - beta.float().cpu())
    raise ValueError(f"selection: expected one of {', '.join(SELECTIONS)}, got {rule!r}")


def select_depths(alphas: torch.Tensor, beta: torch.Tensor, t_alpha: float, rule: str) -> list[int]:
    """Depth (1-based number of blocks) per layer."""
    return [int(j) + 1 for j in selection_metric(alphas, beta, t_alpha, rule).argmax(dim=1)]


def fixed_params(model: nn.Module) -> int:
    """Parameters of a SearchableStudent outside the candidate chains (stem, Eq. 14 shortcuts,
    attention pool): the part every derived Student has."""
    chain = sum(p.numel() for layer in model.layers for p in layer.blocks.parameters())
    total = sum(p.numel() for n, p in model.named_parameters() if n != "alphas")
    return total - chain


def selected_params(fixed: int, candidate_params: list[list[int]], depths: list[int]) -> int:
    """Parameter count of Student(cfg, depths) = fixed part + the chosen candidates."""
    return int(fixed + sum(candidate_params[l][d - 1] for l, d in enumerate(depths)))


# -- the two steps (model-agnostic: plain modules or DDP wrappers) ------------------------

def search_loss(student: nn.Module, head: nn.Module, x: torch.Tensor, y: torch.Tensor,
                teacher_feat: torch.Tensor | None, kd_weight: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, logits): kd_weight * MSE(h, h^Tea) + (1 - kd_weight) * CE (Eq. 11 without the
    channel); exactly CE when kd_weight == 0."""
    h = student(x)  # [B, F]
    logits = head(h)  # [B, C]
    ce = F.cross_entropy(logits, y)
    if kd_weight > 0:
        return kd_weight * F.mse_loss(h, teacher_feat) + (1.0 - kd_weight) * ce, logits
    return ce, logits


def arch_step(student: nn.Module, head: nn.Module, opt_alpha: torch.optim.Optimizer, alphas: torch.Tensor,
              x: torch.Tensor, y: torch.Tensor, teacher_feat: torch.Tensor | None, kd_weight: float,
              beta: torch.Tensor | None, lambda_j: float, full_backward: bool = False) -> tuple[float, float]:
    """One alpha update on an architecture-half batch; returns (L_val, penalty sum_l J^(l)).

    ``full_backward=False`` computes only d loss / d alpha (autograd.grad: no weight gradients are
    accumulated); True runs loss.backward() (needed under DDP so the alpha gradient is
    all-reduced); the weight step clears the weight gradients either way."""
    opt_alpha.zero_grad(set_to_none=True)
    loss_val, _ = search_loss(student, head, x, y, teacher_feat, kd_weight)
    loss = loss_val
    pen = torch.zeros(())
    if lambda_j > 0:
        pen = complexity_penalty(alphas, beta)
        loss = loss + lambda_j * pen  # Eq. (19)
    if full_backward:
        loss.backward()
    else:
        (alphas.grad,) = torch.autograd.grad(loss, [alphas])
    opt_alpha.step()
    return float(loss_val.detach()), float(pen.detach())


def weight_step(student: nn.Module, head: nn.Module, opt_w: torch.optim.Optimizer, x: torch.Tensor,
                y: torch.Tensor, teacher_feat: torch.Tensor | None, kd_weight: float,
                grad_clip: float = 5.0) -> tuple[float, int]:
    """One update of the network weights and the search head on a weight-half batch;
    returns (L_train, correct predictions)."""
    student.zero_grad(set_to_none=True)
    head.zero_grad(set_to_none=True)
    loss, logits = search_loss(student, head, x, y, teacher_feat, kd_weight)
    loss.backward()
    params = [p for g in opt_w.param_groups for p in g["params"]]
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(params, grad_clip)
    opt_w.step()
    return float(loss.detach()), int((logits.argmax(1) == y).sum())


@torch.no_grad()
def evaluate_supernet(student: nn.Module, head: nn.Module, dataset, batch_size: int, device: torch.device
                      ) -> tuple[float, float]:
    """(accuracy, mean CE) of head(student(x)) with the current mixture, eval mode."""
    from rkdsc.common.train.common import make_loader

    modes = student.training, head.training
    student.eval()
    head.eval()
    correct = n = 0
    loss = 0.0
    for x, y in make_loader(dataset, batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        logits = head(student(x))
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += len(y)
    student.train(modes[0])
    head.train(modes[1])
    return correct / max(n, 1), loss / max(n, 1)


def _optimizer(kind: str, params, lr: float, wd: float, momentum: float, alpha: bool = False):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
    betas = (0.5, 0.999) if alpha else (0.9, 0.999)  # DARTS's alpha Adam uses beta1 = 0.5
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)


def split_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (weight half, architecture half) indices of a labelled set."""
    from rkdsc.common.data.datasets import stratified_split

    return stratified_split(labels, 0.5, seed + 7)


# -- Algorithm 1 ------------------------------------------------------------------------

def run_search(preset, method: str, workdir: str | Path, teacher=None, log: Callable[[str], None] = print, *,
               selection: str | None = None, resume: bool = False, device: torch.device | str | None = None,
               stop_after: int | None = None) -> dict[str, Any]:
    """Run KDL-DARTS or DARTS on the preset and write ``workdir/search-<method>/arch.json``.

    ``selection``: "alpha-beta" (KDL-DARTS default, Alg. 1 line 11) or "alpha" (DARTS default);
    KDL-DARTS with ``search.lambda_j = 0``, ``search.kd_weight = 0`` and ``selection="alpha"``
    reproduces DARTS exactly. ``teacher``: a frozen Teacher (default ``get_teacher``); needed
    only when the KD term is on. Returns the arch.json content:

    ``{"method", "selection", "depths": [4], "alpha": [[..]], "mixture": [[..]], "beta": [[..]],
    "metric": [[..]], "candidate_params": [[..]], "fixed_params", "selected_params",
    "supernet_params", "val_acc", "history": [{"epoch", "alpha", "mixture", "val_acc", "val_loss",
    "selected_depths", "selected_params", "loss_w", "loss_a", "penalty", "train_acc", "lr_w",
    "lr_alpha", "time_s"}], "preset", "seed", "lambda_j", "kd_weight", "t_alpha", "t_beta",
    "beta_normalization", "epochs", "steps_per_epoch", "images": {"weight_half", "arch_half",
    "val"}, "student", "teacher", "wall_s"}``.
    """
    from rkdsc.common.data.datasets import build_datasets
    from rkdsc.common.models.heads import ClassifierHead
    from rkdsc.common.models.student import SearchableStudent
    from rkdsc.common.train import ddp
    from rkdsc.common.train.common import (JsonlLogger, cosine_lr, load_checkpoint, make_loader, pick_device, progress,
                                     save_checkpoint, seed_everything, write_json)
    from rkdsc.common.train.features import FeatureDataset, preset_teacher_features

    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {method!r}")
    selection = selection or ("alpha-beta" if method == "kdl-darts" else "alpha")
    if selection not in SELECTIONS:
        raise ValueError(f"selection: expected one of {', '.join(SELECTIONS)}, got {selection!r}")
    s = preset.search
    kdl = method == "kdl-darts"
    lambda_j = s.lambda_j if kdl else 0.0
    kd_weight = s.kd_weight if kdl else 0.0
    ctx = ddp.init_distributed(device)
    device = ctx.device if ctx.distributed else (torch.device(device) if device else pick_device())
    out = Path(workdir) / f"search-{method}"
    say = log if ctx.is_main else (lambda _msg: None)
    t_start = time.time()

    # data: train split (optionally capped) -> weight half / architecture half; val split for reporting
    seed_everything(preset.seed)
    train_ds, val_ds, classes = build_datasets(preset)
    feats = torch.zeros(len(train_ds), 0)
    teacher_info = None
    if kd_weight > 0:
        if teacher is None:
            from rkdsc.common.train.teacher import get_teacher

            if ctx.is_main:
                teacher = get_teacher(preset, workdir, log=say, device=device)
            ddp.barrier(ctx)
            if not ctx.is_main:
                teacher = get_teacher(preset, workdir, log=say, device=device)
        if ctx.is_main:
            feats = preset_teacher_features(preset, workdir, teacher, train_ds, log=say)
        ddp.barrier(ctx)
        if not ctx.is_main:
            feats = preset_teacher_features(preset, workdir, teacher, train_ds)
        teacher_info = {"name": teacher.name, "sha256": getattr(teacher, "checkpoint_sha256", "")}
    labels = train_ds.labels.numpy()
    pool = np.arange(len(train_ds))
    if 0 < s.max_images < len(pool):
        pool = np.sort(np.random.default_rng([preset.seed, 3]).permutation(pool)[: s.max_images])
    w_rel, a_rel = split_halves(labels[pool], preset.seed)
    w_idx, a_idx = pool[w_rel], pool[a_rel]
    full = FeatureDataset(train_ds, feats)
    w_ds, a_ds = Subset(full, w_idx.tolist()), Subset(full, a_idx.tolist())
    bs = s.batch_size
    w_loader = make_loader(w_ds, bs, shuffle=True, seed=preset.seed + 1, num_workers=preset.data.num_workers,
                           drop_last=len(w_ds) > bs, sampler=ddp.sampler(w_ds, ctx, True, preset.seed + 1))
    a_loader = make_loader(a_ds, bs, shuffle=True, seed=preset.seed + 2, num_workers=preset.data.num_workers,
                           drop_last=len(a_ds) > bs, sampler=ddp.sampler(a_ds, ctx, True, preset.seed + 2))
    steps = min(len(w_loader), len(a_loader))

    # models and optimisers (seeded: the same seed gives the same initial weights for both methods)
    seed_everything(preset.seed)
    cfg = preset.student_config()
    net = SearchableStudent(cfg, alpha_temperature=s.t_alpha).to(device)
    head_net = ClassifierHead(cfg.feature_dim, len(classes), preset.head.hidden).to(device)
    cand = net.candidate_params()
    fixed = fixed_params(net)
    beta = penalty_factors(cand, s.t_beta).to(device)
    alphas = net.alphas
    opt_w = _optimizer(s.optimizer, list(net.weight_parameters()) + list(head_net.parameters()), s.lr_w, s.wd_w,
                       s.momentum)
    opt_a = _optimizer(s.optimizer_alpha, net.arch_parameters(), s.lr_alpha, s.wd_alpha, s.momentum, alpha=True)
    sched_w = cosine_lr(opt_w, s.epochs, s.lr_w_min)
    sched_a = cosine_lr(opt_a, s.epochs, s.lr_alpha_min)
    student, head = ddp.wrap(net, ctx), ddp.wrap(head_net, ctx)

    history: list[dict[str, Any]] = []
    start_epoch = 0
    ckpt = out / "checkpoint"
    if resume:
        state = load_checkpoint(ckpt, {"student": net, "head": head_net},
                                {"opt_w": opt_w, "opt_a": opt_a, "sched_w": sched_w, "sched_a": sched_a})
        if state is not None:
            if state.get("method") != method or state.get("selection") != selection:
                raise ValueError(f"resume: {ckpt} holds a {state.get('method')}/{state.get('selection')} search, "
                                 f"not {method}/{selection}")
            start_epoch, history = int(state["epoch"]), list(state["history"])
            torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
            say(f"search: resuming {method} at epoch {start_epoch + 1} from {ckpt}")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    jlog = JsonlLogger(out / "search.jsonl") if ctx.is_main else None
    if ctx.is_main and start_epoch == 0 and jlog.path.exists():
        jlog.path.unlink()
    say(f"search: {method} ({'KD weight ' + str(kd_weight) + ', lambda_J ' + str(lambda_j) if kdl else 'CE only'}, "
        f"selection {selection}) for {s.epochs} epochs x {steps} steps, batch {bs}; weight half {len(w_ds)}, "
        f"arch half {len(a_ds)}, val {len(val_ds)} images; supernet {fixed + sum(r[-1] for r in cand):,} params; "
        f"device {device}")

    full_backward = ctx.distributed
    for epoch in range(start_epoch, s.epochs):
        t0 = time.time()
        for k, ld in enumerate((w_loader, a_loader)):
            if hasattr(ld.sampler, "set_epoch"):
                ld.sampler.set_epoch(epoch)
            ld.generator.manual_seed(preset.seed * 100_003 + 1000 * k + epoch)  # per-epoch order: resume-exact
        student.train()
        head.train()
        sums = {"loss_w": 0.0, "loss_a": 0.0, "penalty": 0.0, "correct": 0, "n": 0}
        bar = progress(zip(w_loader, a_loader), desc=f"{method} {epoch + 1}/{s.epochs}", total=steps)
        for (xw, yw, fw), (xa, ya, fa) in bar:
            xa, ya = xa.to(device), ya.to(device)
            fa = fa.to(device) if kd_weight > 0 else None
            la, pen = arch_step(student, head, opt_a, alphas, xa, ya, fa, kd_weight, beta, lambda_j, full_backward)
            xw, yw = xw.to(device), yw.to(device)
            fw = fw.to(device) if kd_weight > 0 else None
            lw, correct = weight_step(student, head, opt_w, xw, yw, fw, kd_weight)
            sums["loss_w"] += lw
            sums["loss_a"] += la
            sums["penalty"] += pen
            sums["correct"] += correct
            sums["n"] += len(yw)
        rec_lr = (opt_w.param_groups[0]["lr"], opt_a.param_groups[0]["lr"])
        sched_w.step()
        sched_a.step()
        val_acc, val_loss = evaluate_supernet(student, head, val_ds, max(bs, 128), device)
        depths = select_depths(alphas, beta.cpu(), s.t_alpha, selection)
        rec = {"epoch": epoch + 1, "alpha": alphas.detach().cpu().tolist(),
               "mixture": net.mixture_weights().detach().cpu().tolist(), "val_acc": val_acc, "val_loss": val_loss,
               "selected_depths": depths, "selected_params": selected_params(fixed, cand, depths),
               "loss_w": sums["loss_w"] / max(steps, 1), "loss_a": sums["loss_a"] / max(steps, 1),
               "penalty": sums["penalty"] / max(steps, 1), "train_acc": sums["correct"] / max(sums["n"], 1),
               "lr_w": rec_lr[0], "lr_alpha": rec_lr[1], "time_s": round(time.time() - t0, 3)}
        history.append(rec)
        if ctx.is_main:
            jlog.log(event="epoch", method=method, **rec)
            save_checkpoint(ckpt, {"student": net, "head": head_net},
                            {"opt_w": opt_w, "opt_a": opt_a, "sched_w": sched_w, "sched_a": sched_a},
                            {"epoch": epoch + 1, "history": history, "method": method, "selection": selection,
                             "torch_rng": torch.get_rng_state().tolist()})
        say(f"{method} epoch {epoch + 1}/{s.epochs}: loss_w {rec['loss_w']:.4f} loss_a {rec['loss_a']:.4f} "
            f"val acc {val_acc:.4f} depths {depths} ({rec['selected_params']:,} params) {rec['time_s']:.1f} s")
        if stop_after is not None and epoch + 1 >= stop_after and epoch + 1 < s.epochs:
            say(f"search: stopping after epoch {epoch + 1} (resume with resume=True / --resume)")
            ddp.barrier(ctx)
            return {"method": method, "selection": selection, "complete": False, "history": history}

    depths = select_depths(alphas, beta.cpu(), s.t_alpha, selection) if s.epochs else list(s.depths)
    result = {
        "method": method, "selection": selection, "depths": depths,
        "alpha": alphas.detach().cpu().tolist(), "mixture": net.mixture_weights().detach().cpu().tolist(),
        "beta": beta.cpu().tolist(), "metric": selection_metric(alphas, beta.cpu(), s.t_alpha, selection).tolist(),
        "candidate_params": cand, "fixed_params": fixed, "selected_params": selected_params(fixed, cand, depths),
        "supernet_params": fixed + sum(r[-1] for r in cand),
        "val_acc": history[-1]["val_acc"] if history else None, "history": history,
        "preset": preset.name, "seed": preset.seed, "lambda_j": lambda_j, "kd_weight": kd_weight,
        "t_alpha": s.t_alpha, "t_beta": s.t_beta, "beta_normalization": BETA_NORMALIZATION, "epochs": s.epochs,
        "steps_per_epoch": steps, "images": {"weight_half": len(w_ds), "arch_half": len(a_ds), "val": len(val_ds)},
        "student": {"input_size": cfg.input_size, "stem_widths": list(cfg.stem_widths), "planes": list(cfg.planes),
                    "expansion": cfg.expansion, "max_depth": cfg.max_depth, "feature_dim": cfg.feature_dim,
                    "heads": cfg.heads},
        "teacher": teacher_info, "world_size": ctx.world_size, "wall_s": round(time.time() - t_start, 2),
        "complete": True,
    }
    if ctx.is_main:
        write_json(out / "arch.json", result)
        say(f"search: {method} selected depths {depths} ({result['selected_params']:,} params) -> {out / 'arch.json'}")
    ddp.barrier(ctx)
    return result


def load_arch(path: str | Path) -> dict[str, Any]:
    """Read an arch.json and check its depths."""
    import json

    arch = json.loads(Path(path).read_text(encoding="utf-8"))
    d = arch.get("depths")
    if not (isinstance(d, list) and len(d) == 4 and all(isinstance(x, int) and x >= 1 for x in d)):
        raise ValueError(f"{path}: depths = {d!r}: expected 4 ints >= 1")
    return arch


# -- CLI -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc search",
        description="KDL-DARTS (Algorithm 1: KD objective in the weight step, complexity penalty lambda_J * "
                    "sum beta*alpha in the alpha step, selection by softmax(alpha/T_alpha) * (1 - beta)) or DARTS "
                    "(cross-entropy only, selection by argmax alpha) over the Table I depth space. Writes "
                    "WORKDIR/search-METHOD/arch.json, search.jsonl and a resumable checkpoint/. Runs under "
                    "torchrun for DDP.")
    p.add_argument("--method", choices=METHODS, default="kdl-darts", help="search algorithm (default kdl-darts)")
    p.add_argument("--preset", default="default",
                   help="built-in preset name (smoke, default, cifar10-cpu, tinyimagenet-cpu, paper) or a .toml path")
    p.add_argument("--workdir", default=None, help="work directory (default: the preset's workdir_default); "
                   "the teacher and the feature cache are shared with the other steps there")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a preset value (TOML literal), e.g. --set search.epochs=5; repeatable")
    p.add_argument("--epochs", type=int, default=None, help="shortcut for --set search.epochs=N")
    p.add_argument("--selection", choices=SELECTIONS, default=None,
                   help="final selection rule (default: alpha-beta for kdl-darts, alpha for darts)")
    p.add_argument("--resume", action="store_true", help="continue from WORKDIR/search-METHOD/checkpoint")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU intra-op threads (default: $RKDSC_THREADS, else torch's default)")
    p.add_argument("--quiet", action="store_true", help="print only the final line")
    return p


def cli(argv: list[str] | None = None) -> int:
    from rkdsc.common.train.common import set_threads
    from rkdsc.common.train.presets import PresetError, load_preset, parse_set_args

    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    try:
        overrides = parse_set_args(args.overrides)
        if args.epochs is not None:
            overrides["search.epochs"] = args.epochs
        preset = load_preset(args.preset, overrides)
    except PresetError as e:
        print(f"rkdsc search: {e}", file=sys.stderr)
        return 2
    workdir = args.workdir or preset.workdir_default
    log = (lambda _m: None) if args.quiet else print
    res = run_search(preset, args.method, workdir, log=log, selection=args.selection, resume=args.resume,
                     device=args.device)
    if os.environ.get("RANK", "0") != "0":
        return 0  # under torchrun only rank 0 reports
    print(f"{args.method}: depths {res['depths']} ({res['selected_params']:,} params), val acc "
          f"{res['val_acc'] if res['val_acc'] is not None else float('nan'):.4f} -> "
          f"{Path(workdir) / f'search-{args.method}' / 'arch.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())


__all__ = ["run_search", "cli", "penalty_factors", "complexity_penalty", "selection_metric", "select_depths",
           "selected_params", "fixed_params", "search_loss", "arch_step", "weight_step", "evaluate_supernet",
           "load_arch", "METHODS", "SELECTIONS"]
