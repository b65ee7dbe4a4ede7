"""Multi-process / multi-GPU training through ``torchrun`` (torch.distributed, DDP).

Recipe (one machine, N processes; each process sees one GPU, or the CPU with gloo)::

    torchrun --nproc_per_node 2 -m rkdsc.common.train.distill --preset cifar10-cpu --workdir runs/c10 --stage both

``init_distributed()`` reads the launcher's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``; ``MASTER_ADDR``/``MASTER_PORT`` are set by torchrun) and initialises the
process group: NCCL when CUDA is available, gloo otherwise. Without those variables it returns
a single-process context and nothing else changes, so the same training code runs alone or
under torchrun.

What the training loops do with it:
- each rank reads a disjoint shard of the training set (``DistributedSampler``, reshuffled per
  epoch with ``set_epoch``); the global batch is ``world_size * batch_size``;
- models are wrapped in ``DistributedDataParallel`` (gradients all-reduced, BatchNorm buffers
  broadcast from rank 0 every forward), so the weights stay identical on every rank; at the end
  of every epoch ``sync_buffers`` copies rank 0's BatchNorm statistics to all ranks (each rank's
  last forward updated them from its own shard) so parameters AND buffers are bit-identical;
- only rank 0 writes checkpoints, logs, feature caches and final weights; the others wait at
  a barrier where rank 0 writes something they read afterwards;
- validation runs on every rank over the full validation split (cheap at our sizes), so every
  rank takes the same decisions.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistContext:
    """Where this process stands in a (possibly single-process) run."""
    rank: int = 0          # global rank (0 = the one that writes files)
    world_size: int = 1    # number of processes
    local_rank: int = 0    # rank on this machine (selects the GPU)
    device: torch.device = torch.device("cpu")  # the device this process trains on
    backend: str = ""      # "nccl" | "gloo" | "" (not distributed)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def init_distributed(device: str | torch.device | None = None) -> DistContext:
    """Initialise torch.distributed from torchrun's environment variables.

    ``device``: "cpu" forces gloo on the CPU even where CUDA exists; None picks CUDA (one GPU
    per local rank, NCCL) when available, else the CPU (gloo). Safe to call twice.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    if world <= 1:  # a single process: the usual device choice ($RKDSC_DEVICE, else CUDA when available)
        from rkdsc.common.train.common import pick_device

        return DistContext(0, 1, 0, pick_device(str(device) if device is not None else None), "")
    want_cpu = device is not None and torch.device(device).type == "cpu"
    use_cuda = torch.cuda.is_available() and not want_cpu
    if use_cuda:
        dev = torch.device("cuda", local % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} must be in [0, WORLD_SIZE={world})")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, backend)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group (no-op for a single process)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def wrap(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around ``model`` when running distributed, else ``model``."""
    if not ctx.distributed:
        return model
    if not any(p.requires_grad for p in model.parameters()):
        return model  # nothing to synchronise (a frozen module)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def sampler(dataset, ctx: DistContext, shuffle: bool, seed: int):
    """DistributedSampler (drop_last=False, pads to equal shards) when distributed, else None."""
    if not ctx.distributed:
        return None
    from torch.utils.data.distributed import DistributedSampler

    return DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank,
                              shuffle=shuffle, seed=seed, drop_last=False)


def sync_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank.

    DDP broadcasts buffers at the start of each forward, so after the last training step of an
    epoch every rank holds the statistics of its own last batch; calling this before validation
    and checkpointing makes every rank evaluate and hold exactly what rank 0 saves.
    """
    if not ctx.distributed:
        return
    for buf in unwrap(module).buffers():
        if ctx.backend == "nccl" or buf.device.type == "cpu":
            dist.broadcast(buf.data, src=0)
        else:
            tmp = buf.data.cpu()
            dist.broadcast(tmp, src=0)
            buf.data.copy_(tmp)


def all_reduce_mean(value: float, ctx: DistContext) -> float:
    """Mean of a float over ranks (the float itself for a single process)."""
    if not ctx.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64,
                     device=ctx.device if ctx.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def state_checksum(module: nn.Module) -> str:
    """sha256 over a module's parameters and buffers (names, shapes, raw bytes): equal on all
    ranks exactly when their weights are bit-identical."""
    digest = hashlib.sha256()
    for name, tensor in sorted(unwrap(module).state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def gather_strings(value: str, ctx: DistContext) -> list[str]:
    """Every rank's string, in rank order (a one-element list for a single process)."""
    if not ctx.distributed:
        return [value]
    out: list[str | None] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return [str(v) for v in out]


__all__ = ["DistContext", "init_distributed", "cleanup", "barrier", "wrap", "unwrap", "sampler", "sync_buffers",
           "all_reduce_mean", "state_checksum", "gather_strings"]
