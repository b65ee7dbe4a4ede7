"""Teacher feature cache: the frozen teacher's h^Tea of every training image, computed once.

The teacher never changes during search, stage 1 and stage 2 and the cached images are not
augmented, so its features are a fixed table ``[N, F]``. ``cached_teacher_features(teacher,
dataset, cache_dir, key)`` computes them on the first call and stores
``cache_dir/<sha256 of key>.safetensors`` (tensor ``features``) with a JSON sidecar
(``<sha>.json``: the key, shape, dtype, seconds); later calls with the same key load the file.
Any change of the key (teacher, its weights, dataset, split, size, images) gives another file.

``feature_key(teacher, dataset)`` is the standard key: teacher name, the sha256 of the
teacher's weight file (checkpoint or self-trained), teacher img_size and feature_dim, dataset
name, split, input size, N and a sha256 of the dataset's uint8 images and labels (so a
different split or subsample never reuses a stale table).

``FeatureDataset(dataset, feats)`` yields ``(image, label, teacher_feature)``.

``time_feature_cache(preset, workdir)`` measures a stage-1-like epoch (student forward/backward
with the MSE to the teacher's features) with the cache against recomputing the teacher every
step, side by side on the same batches.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from rkdsc.common.train.common import make_loader, pick_device, progress, write_json


def dataset_sha256(dataset) -> str:
    """sha256 of a dataset's raw images and labels (ImageArrayDataset: uint8 tensors; otherwise
    the normalised items)."""
    h = hashlib.sha256()
    if hasattr(dataset, "images") and hasattr(dataset, "labels"):
        h.update(dataset.images.contiguous().numpy().tobytes())
        h.update(dataset.labels.contiguous().numpy().tobytes())
        h.update(dataset.mean.numpy().tobytes())
        h.update(dataset.std.numpy().tobytes())
    else:
        for i in range(len(dataset)):
            x, y = dataset[i][:2]
            h.update(x.numpy().tobytes())
            h.update(int(y).to_bytes(8, "little", signed=True))
    return h.hexdigest()


def feature_key(teacher, dataset) -> dict[str, Any]:
    """The standard cache key of (teacher, dataset)."""
    return {
        "teacher": getattr(teacher, "name", type(teacher).__name__),
        "teacher_sha256": getattr(teacher, "checkpoint_sha256", ""),
        "teacher_img_size": list(getattr(teacher, "img_size", ())),
        "feature_dim": getattr(teacher, "feature_dim", None),
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "split": getattr(dataset, "split", ""),
        "input_size": getattr(dataset, "input_size", None),
        "n": len(dataset),
        "data_sha256": dataset_sha256(dataset),
    }


def key_sha(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


@torch.no_grad()
def compute_teacher_features(teacher, dataset, batch_size: int = 256, device: torch.device | None = None,
                             desc: str = "teacher features") -> torch.Tensor:
    """teacher(x) for every item of `dataset`, in order -> float32 [N, F] on the CPU."""
    device = device or next(teacher.parameters()).device
    was = teacher.training
    teacher.eval()
    out = []
    for batch in progress(make_loader(dataset, batch_size, shuffle=False), desc=desc):
        out.append(teacher(batch[0].to(device)).float().cpu())  # [B, F]
    teacher.train(was)
    return torch.cat(out) if out else torch.zeros(0, getattr(teacher, "feature_dim", 0))


def cached_teacher_features(teacher, dataset, cache_dir: str | Path, key: dict[str, Any] | None = None,
                            batch_size: int = 256, log: Callable[[str], None] | None = None) -> torch.Tensor:
    """float32 [N, F] teacher features of `dataset`, from cache_dir when the key matches."""
    from safetensors.torch import load_file, save_file

    key = feature_key(teacher, dataset) if key is None else key
    sha = key_sha(key)
    cache_dir = Path(cache_dir)
    fpath, jpath = cache_dir / f"{sha}.safetensors", cache_dir / f"{sha}.json"
    if fpath.is_file() and jpath.is_file():
        side = json.loads(jpath.read_text(encoding="utf-8"))
        feats = load_file(str(fpath))["features"]
        if side.get("key") == json.loads(json.dumps(key, default=str)) and feats.shape[0] == len(dataset):
            if log:
                log(f"teacher features: cache hit {fpath.name[:12]} ({tuple(feats.shape)})")
            return feats
    t0 = time.time()
    feats = compute_teacher_features(teacher, dataset, batch_size)
    seconds = time.time() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = fpath.with_name(fpath.name + ".tmp")
    save_file({"features": feats.contiguous()}, str(tmp))
    tmp.replace(fpath)
    write_json(jpath, {"key": key, "shape": list(feats.shape), "dtype": str(feats.dtype), "seconds": round(seconds, 3)})
    if log:
        log(f"teacher features: computed {tuple(feats.shape)} in {seconds:.1f} s -> {fpath}")
    return feats


class FeatureDataset(Dataset):
    """(image, label, teacher_feature) for a dataset and its [N, F] teacher features."""

    def __init__(self, dataset, feats: torch.Tensor):
        if len(dataset) != len(feats):
            raise ValueError(f"feats: expected {len(dataset)} rows (one per image), got {len(feats)}")
        self.dataset, self.feats = dataset, feats

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        x, y = self.dataset[i][:2]
        return x, y, self.feats[i]

    def __getitems__(self, idx: list[int]):
        if hasattr(self.dataset, "__getitems__"):
            items = self.dataset.__getitems__(idx)
        else:
            items = [self.dataset[i] for i in idx]
        return [(x, y, self.feats[i]) for (x, y, *_), i in zip(items, idx)]


def preset_teacher_features(preset, workdir: str | Path, teacher, dataset, log: Callable[[str], None] | None = None):
    """Cached features of `dataset` under workdir/features (the pipeline's standard place)."""
    return cached_teacher_features(teacher, dataset, Path(workdir) / "features", feature_key(teacher, dataset),
                                   batch_size=preset.teacher.batch_size, log=log)


def time_feature_cache(preset, workdir: str | Path, max_batches: int = 20, log: Callable[[str], None] = print
                       ) -> dict[str, Any]:
    """Stage-1-like epoch (fixed-depth student, MSE to the teacher's features, Adam) with the
    feature cache vs recomputing the teacher's features every step; the same `max_batches`
    batches and the same initial weights both ways. Returns timings and the ratio
    ``speedup = epoch_s_recompute / epoch_s_cached``."""
    import torch.nn.functional as F

    from rkdsc.common.data.datasets import build_datasets
    from rkdsc.common.models.student import Student
    from rkdsc.common.train.common import seed_everything
    from rkdsc.common.train.teacher import get_teacher

    device = pick_device()
    teacher = get_teacher(preset, workdir, log=log, device=device)
    train_ds, _, _ = build_datasets(preset)
    bs = preset.stage1.batch_size
    cache_dir = Path(workdir) / "features"
    key = feature_key(teacher, train_ds)
    t0 = time.time()
    feats = cached_teacher_features(teacher, train_ds, cache_dir, key, batch_size=preset.teacher.batch_size)
    first_call_s = time.time() - t0
    t0 = time.time()
    feats = cached_teacher_features(teacher, train_ds, cache_dir, key, batch_size=preset.teacher.batch_size)
    load_s = time.time() - t0

    def epoch(use_cache: bool, limit: int) -> tuple[float, int]:
        seed_everything(preset.seed)
        student = Student(preset.student_config(), preset.search.depths).to(device).train()
        opt = torch.optim.Adam(student.parameters(), lr=preset.stage1.lr)
        loader = make_loader(FeatureDataset(train_ds, feats), bs, shuffle=True, seed=preset.seed)
        n = 0
        t = time.time()
        for i, (x, _, f) in enumerate(loader):
            if i >= limit:
                break
            x = x.to(device)
            target = f.to(device) if use_cache else teacher(x)  # [B, F]
            loss = F.mse_loss(student(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += 1
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.time() - t, n

    epoch(False, 2)  # warm-up (allocator, kernels) so neither timed run pays for it
    recompute_s, n = epoch(False, max_batches)
    cached_s, _ = epoch(True, max_batches)
    res = {"epoch_s_recompute": round(recompute_s, 4), "epoch_s_cached": round(cached_s, 4),
           "speedup": round(recompute_s / max(cached_s, 1e-9), 3), "batches": n, "batch_size": bs,
           "images": len(train_ds), "cache_first_call_s": round(first_call_s, 3), "cache_load_s": round(load_s, 4),
           "teacher": teacher.name, "device": str(device), "threads": torch.get_num_threads(), "preset": preset.name}
    log(f"feature cache: stage-1-like epoch of {n} batches x {bs}: recompute {recompute_s:.2f} s, cached "
        f"{cached_s:.2f} s -> {res['speedup']:.2f}x faster with the cache (cache load {load_s:.3f} s)")
    return res


__all__ = ["cached_teacher_features", "compute_teacher_features", "feature_key", "dataset_sha256", "key_sha",
           "FeatureDataset", "preset_teacher_features", "time_feature_cache"]
