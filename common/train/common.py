"""Small shared utilities of the training code: seeding, cosine schedules, JSONL logs,
checkpoints with resume, device choice, data loaders, progress bars, and the run-folder helpers
of every trainer (``read_json``, ``clear_outputs``, ``default_ctx``, ``sync_note``). Weight files
are ``rkdsc.common.models.weights`` (re-exported here).

Checkpoint layout (``save_checkpoint(path, models, optimizers, state)``), a directory::

    path/<model name>.safetensors    weights (state_dict, tensors made contiguous and unshared)
    path/<optimizer name>.optim.pt   optimizer state (torch.save; read back with weights_only=True)
    path/state.json                  anything JSON-serialisable (epoch, history, rng seeds ...)

Writes go to a temporary directory that replaces ``path`` at the end, so an interrupted save
never leaves a half-written checkpoint; ``state.json`` is written last and marks it complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from rkdsc.common.models.weights import load_weights, save_weights, state_dict_for_save
from rkdsc.common.process import env_threads


def make_deterministic() -> None:
    """Deterministic algorithms wherever torch has them (``use_deterministic_algorithms``,
    warn_only: an op without a deterministic kernel warns instead of failing), no cuDNN
    autotuning, cuBLAS's deterministic workspace (``CUBLAS_WORKSPACE_CONFIG``, effective when set
    before CUDA starts). Uninitialised memory is not filled (a cost, and correct code never reads
    it). Repeats are then exact on one machine with the same thread count; other CPUs or thread
    counts round differently."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA) and turn on ``make_deterministic``; returns a
    torch.Generator seeded with `seed` for data order and augmentation."""
    make_deterministic()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def cosine_lr(opt: torch.optim.Optimizer, epochs: int, lr_min: float | list[float]) -> torch.optim.lr_scheduler.LRScheduler:
    """CosineAnnealingLR from each group's lr down to `lr_min` over `epochs` scheduler steps
    (one step per epoch)."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(epochs), 1), eta_min=lr_min)


def pick_device(prefer: str | None = None) -> torch.device:
    """`prefer` or $RKDSC_DEVICE when set ("cpu", "cuda", "cuda:1"), else CUDA when available, else CPU."""
    name = prefer or os.environ.get("RKDSC_DEVICE", "")
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {name!r} requested but CUDA is not available")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def progress(iterable: Iterable | None = None, desc: str = "", total: int | None = None, leave: bool = False, **kw):
    """tqdm progress bar; shown on a terminal, hidden otherwise or when $RKDSC_PROGRESS=0
    (=1 forces it on)."""
    from tqdm.auto import tqdm

    env = os.environ.get("RKDSC_PROGRESS", "")
    disable = {"0": True, "1": False}.get(env, None)  # None: tqdm hides it when stderr is no TTY
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable, dynamic_ncols=True, **kw)


def make_loader(dataset, batch_size: int, shuffle: bool, seed: int = 0, num_workers: int = 0,
                drop_last: bool = False, sampler=None) -> torch.utils.data.DataLoader:
    """DataLoader with a seeded shuffling generator (same seed -> same order) and seeded workers
    (``seed_worker``); `sampler` (e.g. a DistributedSampler) replaces the shuffling."""
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
        num_workers=num_workers, drop_last=drop_last, generator=g, persistent_workers=num_workers > 0,
        worker_init_fn=seed_worker if num_workers > 0 else None)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: seed python's and numpy's generators from the worker's torch seed
    (which the loader derives from its seeded generator), so worker-side randomness repeats."""
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


class JsonlLogger:
    """Append one JSON object per line: ``log(event="epoch", epoch=3, loss=0.1)`` or ``log({...})``.
    Each record gets a wall-clock ``time`` (seconds since the epoch)."""

    def __init__(self, path: str | Path, echo=None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.echo = echo  # optional callable(str) that also receives each line

    def log(self, record: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
        rec = {"time": round(time.time(), 3), **(record or {}), **fields}
        line = json.dumps(rec, default=_json_default)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        if self.echo is not None:
            self.echo(line)
        return rec

    __call__ = log

    def read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _json_default(o: Any):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, (np.ndarray, torch.Tensor)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(path: str | Path, obj: Any) -> None:
    """Atomic pretty JSON write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | Path) -> Any:
    """The JSON document at ``path``, or None when there is no such file."""
    path = Path(path)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def default_ctx(ctx=None):
    """``ctx``, else a single-process ``ddp.DistContext`` on ``pick_device()``."""
    from rkdsc.common.train import ddp

    return ctx if ctx is not None else ddp.DistContext(device=pick_device())


def clear_outputs(out: str | Path, ctx, names=("checkpoint", "log.jsonl")) -> None:
    """Remove a previous run's outputs ``out/<name>`` on rank 0, then wait for every rank
    (a run without --resume starts over)."""
    from rkdsc.common.train import ddp

    out = Path(out)
    if ctx.is_main:
        for n in names:
            p = out / n
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    ddp.barrier(ctx)


def sync_note(module: nn.Module, ctx) -> dict:
    """Per-rank weight checksums of ``module`` (all equal when DDP kept the replicas in sync)."""
    from rkdsc.common.train import ddp

    sums = ddp.gather_strings(ddp.state_checksum(module), ctx)
    return {"world_size": ctx.world_size, "rank_weight_sha256": sums, "in_sync": len(set(sums)) == 1}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | Path, models: dict[str, nn.Module], optimizers: dict[str, Any] | None = None,
                    state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint directory (see the module docstring); optimizers may include LR schedulers
    (anything with state_dict())."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name, model in models.items():
        save_weights(tmp / f"{name}.safetensors", model)
    for name, opt in (optimizers or {}).items():
        torch.save(opt.state_dict(), tmp / f"{name}.optim.pt")
    write_json(tmp / "state.json", state or {})
    old = path.with_name(path.name + ".old")
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
    return path


def load_checkpoint(path: str | Path, models: dict[str, nn.Module], optimizers: dict[str, Any] | None = None,
                    strict: bool = True) -> dict[str, Any] | None:
    """Restore what `save_checkpoint` wrote into the given models / optimizers and return the
    state dict; None when `path` holds no complete checkpoint."""
    path = Path(path)
    if not (path / "state.json").is_file():
        return None
    for name, model in models.items():
        load_weights(path / f"{name}.safetensors", model, strict=strict)
    for name, opt in (optimizers or {}).items():
        f = path / f"{name}.optim.pt"
        if f.is_file():
            opt.load_state_dict(torch.load(f, map_location="cpu", weights_only=True))
    return json.loads((path / "state.json").read_text(encoding="utf-8"))


def set_threads(n: int | None = None) -> int:
    """Intra-op CPU threads: `n`, else $RKDSC_THREADS, else torch's default. Small models on
    shared cores run much faster with 1 thread (OpenMP threads spin-wait when oversubscribed)."""
    k = n if n is not None else env_threads()
    if k is not None:
        if int(k) < 1:
            raise ValueError(f"threads: expected an int >= 1, got {k!r}")
        torch.set_num_threads(int(k))
    return torch.get_num_threads()


__all__ = [
    "seed_everything", "make_deterministic", "seed_worker", "cosine_lr", "pick_device", "progress", "make_loader", "JsonlLogger", "write_json",
    "file_sha256", "read_json", "default_ctx", "clear_outputs", "sync_note", "set_threads", "save_weights", "load_weights", "state_dict_for_save", "save_checkpoint", "load_checkpoint",
]
