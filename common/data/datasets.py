"""Torch datasets of the presets: digits, CIFAR-10 / Tiny-ImageNet image folders, CIFAR-100.

``build_datasets(preset) -> (train_ds, val_ds, class_names)``; items are
``(image float32 [3, S, S] normalised with the preset's mean/std, label int64)``.

* Images are decoded once and kept in memory as uint8 ``[N, S, S, 3]`` (CIFAR-10 at 32 px:
  3 KB per image); normalisation happens per item (``ImageArrayDataset``).
* ``max_per_class`` subsamples each class deterministically (a seeded permutation of the
  class's sorted file list), then the validation split takes ``val_fraction`` of every class
  (stratified, seeded by ``preset.seed``). The same preset gives the same split on every machine.
* digits: the 1,797 scikit-learn digits are first split by ``rkdsc.common.data.digits.split_indices``
  (fixed seed) into a train part and a held-back part; train/val come from the train part
  only, and the held-back part is NEVER used in training: ``heldout_dataset(preset)`` returns it
  for the final evaluation (it is also what the demo's sample images are made of).
* cifar10 / tinyimagenet / folder read ``ROOT/<class>/<image>`` (class = sorted folder names,
  torchvision's ImageFolder convention), convert greyscale to RGB and resize to ``input_size``
  with PIL bilinear, exactly like the edge's ``rkdsc.common.data.images.preprocess``. These folders
  have no test split: ``heldout_dataset`` returns the validation split for them.
* shapes: generated (``rkdsc.common.data.shapes``) at ``input_size``; train/val come from the
  train seed, ``heldout_dataset`` is the held-back seed (never trained on; the demo's samples).
* cifar100 comes through ``torchvision.datasets.CIFAR100(download=False)``.

Decoded image folders and upscaled digits are cached per process (``_FOLDER_CACHE``,
``_DIGITS_CACHE``) so that several training steps in one process decode the images once.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from rkdsc.common.data.digits import DIGITS_CLASS_NAMES, load_digits_arrays, split_indices, upscale_rgb
from rkdsc.common.data import shapes as _shapes

_FOLDER_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]] = {}
log = logging.getLogger("rkdsc.data")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class ImageArrayDataset(Dataset):
    """uint8 images [N, S, S, 3] + labels [N] -> (float32 [3, S, S] normalised, int64)."""

    def __init__(self, images_u8: np.ndarray, labels: np.ndarray, mean, std, name: str = "", split: str = "",
                 indices: np.ndarray | None = None):
        if images_u8.ndim != 4 or images_u8.shape[-1] != 3 or images_u8.dtype != np.uint8:
            raise ValueError(f"images_u8: expected uint8 [N, S, S, 3], got {images_u8.dtype} {images_u8.shape}")
        if len(images_u8) != len(labels):
            raise ValueError(f"labels: expected {len(images_u8)} labels, got {len(labels)}")
        self.images = torch.from_numpy(np.ascontiguousarray(images_u8))  # [N, S, S, 3] uint8
        self.labels = torch.from_numpy(np.asarray(labels, dtype=np.int64))  # [N]
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.name, self.split = name, split  # dataset name and split, used in feature-cache keys
        # position of each item in the dataset's full source list (digits: the 1,797 digits;
        # folders: the sorted file list), for provenance and disjointness checks
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def _norm(self, u8: torch.Tensor) -> torch.Tensor:  # [..., S, S, 3] uint8 -> [..., 3, S, S]
        x = u8.movedim(-1, -3).float().div_(255.0)
        return (x - self.mean) / self.std

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._norm(self.images[i]), self.labels[i]

    def __getitems__(self, idx: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # batched fetch (DataLoader uses it): one normalisation for the whole batch
        idx_t = torch.as_tensor(idx, dtype=torch.long)
        x = self._norm(self.images[idx_t])
        y = self.labels[idx_t]
        return list(zip(x.unbind(0), y.unbind(0)))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images normalised [N, 3, S, S] and labels [N] (small datasets only)."""
        return self._norm(self.images), self.labels

    @property
    def input_size(self) -> int:
        return int(self.images.shape[1])


def _per_class_subsample(labels: np.ndarray, max_per_class: int, seed: int) -> np.ndarray:
    """Sorted indices keeping at most `max_per_class` of each class (seeded choice)."""
    if max_per_class <= 0:
        return np.arange(len(labels))
    rng = np.random.default_rng([seed, 1])
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(np.sort(rng.permutation(idx)[:max_per_class]))
    return np.sort(np.concatenate(keep))


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx) into `labels`: round(val_fraction * n_c) of every class c to val,
    at least one image per class on each side when the class has two or more."""
    rng = np.random.default_rng([seed, 2])
    tr, va = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        va.append(idx[:n_val])
        tr.append(idx[n_val:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


def list_class_folder(root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Image files of ROOT/<class>/** (sorted by class, then path), their labels and the sorted
    class names. Listing goes through ``rkdsc.common.data.images.list_images`` (regular files
    only: a FIFO, socket or device is skipped unopened, with a warning), plus a suffix filter
    (``IMAGE_SUFFIXES``) so that annotation files next to the images (e.g. Tiny-ImageNet's
    ``*_boxes.txt``) are not read as images."""
    from rkdsc.common.data.images import list_images

    if not root.is_dir():
        raise FileNotFoundError(f"data.root {str(root)!r}: no such directory (expected ROOT/<class>/<image> "
                                "folders; see ../shared/data/README.md)")
    listing = list_images(root, check=False)
    if listing.labels is None:
        raise FileNotFoundError(f"data.root {str(root)!r}: no class sub-folders")
    special = [(p, why) for p, why in listing.errors if "not a regular file" in why or "cannot stat" in why]
    if special:
        log.warning("data.root %s: skipped %d entries that are not regular files, e.g. %s: %s",
                    root, len(special), special[0][0], special[0][1])
    pairs = [(lab, p) for p, lab in zip(listing.paths, listing.labels) if p.suffix.lower() in IMAGE_SUFFIXES]
    pairs.sort(key=lambda lp: (lp[0], str(lp[1])))
    return [p for _, p in pairs], np.asarray([lab for lab, _ in pairs], dtype=np.int64), listing.class_names


def _decode(paths: list[Path], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read through ``rkdsc.common.data.images.load_rgb`` (the edge's reading path: regular
    files only, decompression-bomb guard, EXIF orientation, RGB conversion) -> bilinear resize
    to size x size -> (uint8 [M, size, size, 3], bool [N] which paths were readable).
    Unreadable files are skipped with a warning naming each (the first few) and a count."""
    from PIL import Image

    from rkdsc.common.data.images import READ_ERRORS, load_rgb

    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    ok = np.ones(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        try:
            im = load_rgb(p)
        except READ_ERRORS as exc:
            ok[i] = False
            if (~ok).sum() <= 5:
                log.warning("skipping unreadable training image %s", exc)
            continue
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(im)
    if not ok.all():
        log.warning("skipped %d of %d training images (unreadable)", int((~ok).sum()), len(paths))
    return out[ok], ok


def _load_folder(root: Path, size: int, max_per_class: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    key = (str(root), size, max_per_class, seed)
    if key not in _FOLDER_CACHE:
        files, labels, classes = list_class_folder(root)
        keep = _per_class_subsample(labels, max_per_class, seed)
        images, ok = _decode([files[i] for i in keep], size)
        if len(keep) and not ok.any():
            raise ValueError(f"data.root {str(root)!r}: none of the {len(keep)} images could be read")
        keep = keep[ok]
        _FOLDER_CACHE[key] = (images, labels[keep], keep, classes)
    return _FOLDER_CACHE[key]


def _tiny_imagenet_names(root: Path, wnids: list[str]) -> list[str]:
    """wnid -> first words from classes.tsv next to train/ (falls back to the wnid)."""
    tsv = root.parent / "classes.tsv"
    words = {}
    if tsv.is_file():
        for line in tsv.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                words[parts[0]] = parts[1].split(",")[0].strip()
    return [words.get(w, w) for w in wnids]


def _load_cifar100(root: Path, size: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from torchvision.datasets import CIFAR100

    try:
        ds = CIFAR100(str(root), train=True, download=False)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"data.root {str(root)!r}: CIFAR-100 not found ({e}). It cannot be downloaded here; "
            f"on a machine with internet run `python -c \"from torchvision.datasets import CIFAR100; "
            f"CIFAR100('{root}', download=True)\"` and point data.root at that folder.") from None
    images = np.asarray(ds.data, dtype=np.uint8)  # [50000, 32, 32, 3]
    if size != images.shape[1]:
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])
    return images, np.asarray(ds.targets, dtype=np.int64), list(ds.classes)


_DIGITS_CACHE: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _digits_rgb(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size not in _DIGITS_CACHE:
        images, labels = load_digits_arrays()
        _DIGITS_CACHE[size] = (upscale_rgb(images, size), labels)
    return _DIGITS_CACHE[size]


def _all_images(preset) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Every usable training image of the preset (after max_per_class): images u8, labels,
    source indices, class names. For digits only the train part (never the held-back part)."""
    d = preset.data
    if d.dataset == "digits":
        rgb, labels = _digits_rgb(d.input_size)
        train_idx, _ = split_indices(len(labels))
        src = train_idx[_per_class_subsample(labels[train_idx], d.max_per_class, preset.seed)]
        return rgb[src], labels[src], src, list(DIGITS_CLASS_NAMES)
    if d.dataset == "shapes":  # generated at the input size: the train part only
        rgb, labels = _shapes.train_part(d.input_size)
        src = _per_class_subsample(labels, d.max_per_class, preset.seed)
        return rgb[src], labels[src], src, list(_shapes.SHAPES_CLASS_NAMES)
    root = preset.data_root()
    if d.dataset == "cifar100":
        images, labels, classes = _load_cifar100(root, d.input_size)
        keep = _per_class_subsample(labels, d.max_per_class, preset.seed)
        return images[keep], labels[keep], keep, classes
    images, labels, keep, classes = _load_folder(root, d.input_size, d.max_per_class, preset.seed)
    if d.dataset == "tinyimagenet":
        classes = _tiny_imagenet_names(root, classes)
    return images, labels, keep, classes


def build_datasets(preset) -> tuple[ImageArrayDataset, ImageArrayDataset, list[str]]:
    """(train_ds, val_ds, class_names) of the preset; deterministic in preset.seed."""
    d = preset.data
    images, labels, src, classes = _all_images(preset)
    tr, va = stratified_split(labels, d.val_fraction, preset.seed)
    name = d.dataset if d.dataset != "folder" else f"folder:{preset.data_root()}"
    mk = lambda idx, split: ImageArrayDataset(images[idx], labels[idx], d.mean, d.std, name, split,  # noqa: E731
                                              indices=src[idx])
    return mk(tr, "train"), mk(va, "val"), classes


def class_ids(preset) -> list[str]:
    """The data set's own class ids, index-aligned with the class names of ``build_datasets``:
    the class folder names for image folders (Tiny-ImageNet's wnids, whose names are words),
    else the class names themselves."""
    d = preset.data
    if d.dataset in ("folder", "cifar10", "tinyimagenet"):
        return list(list_class_folder(preset.data_root())[2])
    return list(_all_images(preset)[3])


def heldout_dataset(preset) -> ImageArrayDataset:
    """Final-evaluation split: the digits' held-back part (never trained on); for image
    folders / CIFAR-100 (no test split available) the validation split of build_datasets."""
    d = preset.data
    if d.dataset == "digits":
        rgb, labels = _digits_rgb(d.input_size)
        _, held_idx = split_indices(len(labels))
        return ImageArrayDataset(rgb[held_idx], labels[held_idx], d.mean, d.std, "digits", "heldout",
                                 indices=held_idx)
    if d.dataset == "shapes":  # the held-back seed: never trained on
        rgb, labels = _shapes.heldout_part(d.input_size)
        return ImageArrayDataset(rgb, labels, d.mean, d.std, "shapes", "heldout")
    return build_datasets(preset)[1]


def augment_batch(x: torch.Tensor, mode: str, generator: torch.Generator | None = None, pad: int = 4) -> torch.Tensor:
    """Batch augmentation on normalised images [B, 3, S, S]: "crop" = zero-padded random crop
    (shift by up to `pad` pixels), "crop-flip" = that plus a random horizontal flip; "none" = x."""
    if mode == "none":
        return x
    if mode not in ("crop", "crop-flip"):
        raise ValueError(f"augment mode: expected none | crop | crop-flip, got {mode!r}")
    b, _, s, _ = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    off = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator)
    out = torch.stack([padded[i, :, off[i, 0]:off[i, 0] + s, off[i, 1]:off[i, 1] + s] for i in range(b)])
    if mode == "crop-flip":
        flip = torch.rand(b, generator=generator) < 0.5
        out[flip] = out[flip].flip(-1)
    return out


__all__ = ["ImageArrayDataset", "build_datasets", "heldout_dataset", "augment_batch", "stratified_split",
           "list_class_folder"]
