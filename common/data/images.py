"""Image folders and preprocessing with Pillow + numpy (no torch; the edge service uses it).

Folder layouts (``list_images``):
- class sub-folders ``ROOT/<class>/**/<file>``: labels are the indices of the sub-folder
  names in sorted order (like torchvision's ImageFolder); files directly in ROOT are
  skipped and reported;
- flat ``ROOT/<file>``: no labels.
Any file Pillow can open counts as an image, whatever its extension; hidden files
(``.name``) are ignored. Files Pillow cannot read are reported one by one in
``ImageList.errors`` (and by ``iter_batches`` when they fail at decode time) and skipped;
they never stop a run.

``preprocess(pil_image, input_spec)`` is the single definition of the model input:
RGB conversion -> bilinear resize to ``input.size`` -> /255 -> (x - mean) / std -> [3, H, W].
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

_READ_ERRORS = (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError,
                SyntaxError)


@dataclass
class ImageList:
    """The result of listing an image folder."""
    root: Path                          # the folder that was listed
    paths: list[Path]                   # readable image files, sorted (by class, then path)
    labels: list[int] | None            # label index per path (class layout), None when flat
    class_names: list[str]              # sorted class sub-folder names ([] when flat)
    errors: list[tuple[Path, str]] = field(default_factory=list)  # (file, why it was skipped)

    def __len__(self) -> int:
        return len(self.paths)


def _visible_files(folder: Path, recursive: bool) -> list[Path]:
    out = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            out.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    else:
        out = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    return sorted(out)


def _probe(path: Path) -> str | None:
    """None when Pillow can identify the file as an image, else the reason."""
    try:
        with Image.open(path) as img:
            img.verify()  # checks the header / structure without decoding all pixels
        return None
    except _READ_ERRORS as exc:
        return f"unreadable image: {type(exc).__name__}: {exc}"


def list_images(root: str | os.PathLike, check: bool = True) -> ImageList:
    """List an image folder (class sub-folders or flat); see the module doc.

    With ``check`` every file is opened with Pillow and unreadable ones go to ``errors``.
    Raises FileNotFoundError naming the folder when it does not exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    errors: list[tuple[Path, str]] = []
    paths: list[Path] = []
    if class_dirs:
        class_names = [d.name for d in class_dirs]
        labels: list[int] | None = []
        for stray in _visible_files(root, recursive=False):
            errors.append((stray, "not inside a class sub-folder; skipped"))
        for label, d in enumerate(class_dirs):
            for p in _visible_files(d, recursive=True):
                reason = _probe(p) if check else None
                if reason:
                    errors.append((p, reason))
                else:
                    paths.append(p)
                    labels.append(label)
    else:
        class_names, labels = [], None
        for p in _visible_files(root, recursive=False):
            reason = _probe(p) if check else None
            if reason:
                errors.append((p, reason))
            else:
                paths.append(p)
    return ImageList(root=root, paths=paths, labels=labels, class_names=class_names, errors=errors)


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Greyscale is replicated to three channels; RGBA / LA / palette-with-transparency drop
    the alpha channel (the colour values underneath are kept); 16-bit and 32-bit greyscale
    are scaled to 0..255 from their full range (65535 for 16-bit, the image maximum
    for float / 32-bit int).
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") else max(float(arr.max()), 1.0)
        if mode == "I" and arr.max() <= 255:
            top = 255.0
        grey = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(grey[..., None], 3, axis=-1))
    if mode == "P":
        img = img.convert("RGBA")
    return img.convert("RGB")


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file, apply its EXIF orientation, and convert it to RGB."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)


@dataclass(frozen=True)
class _Spec:
    size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _spec(input_spec) -> _Spec:
    """Accept the manifest's ``input`` dict or any object with size/mean/std attributes
    (``rkdsc.common.bundle.manifest.InputSpec``); size is an int or (H, W)."""
    get = input_spec.get if isinstance(input_spec, dict) else (lambda k: getattr(input_spec, k))
    size, mean, std = get("size"), get("mean"), get("std")
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    else:
        hw = (int(size[0]), int(size[1]))
    if hw[0] < 1 or hw[1] < 1:
        raise ValueError(f"input.size: expected positive, got {size!r}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"input.mean / input.std: expected 3 values each, got {mean!r} / {std!r}")
    if any(float(s) <= 0 for s in std):
        raise ValueError(f"input.std: expected positive values, got {std!r}")
    return _Spec(hw, tuple(float(v) for v in mean), tuple(float(v) for v in std))


def preprocess(pil_image: Image.Image, input_spec) -> np.ndarray:
    """PIL image -> float32 [3, H, W]: RGB, bilinear resize to input.size, /255, (x-mean)/std."""
    spec = _spec(input_spec)
    h, w = spec.size
    img = to_rgb(pil_image)
    if img.size != (w, h):
        img = img.resize((w, h), resample=Image.Resampling.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)  # [H, W, 3] in [0, 1]
    x = (x - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # [H, W, 3] -> [3, H, W]


def preprocess_batch(images: Sequence[Image.Image], input_spec) -> np.ndarray:
    """A list of PIL images -> float32 [B, 3, H, W]."""
    spec = _spec(input_spec)
    h, w = spec.size
    if not images:
        return np.zeros((0, 3, h, w), dtype=np.float32)
    return np.stack([preprocess(img, spec) for img in images])


def iter_batches(listing: ImageList, input_spec, batch_size: int = 32,
                 limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray | None, list[Path]]]:
    """Yield (images float32 [b,3,H,W], labels int64 [b] or None, paths) over a listing.

    Files that fail to decode are appended to ``listing.errors`` and skipped.
    ``limit`` stops after that many images.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected int >= 1, got {batch_size!r}")
    spec = _spec(input_spec)
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    paths: list[Path] = []
    done = 0
    for i, path in enumerate(listing.paths):
        if limit is not None and done >= limit:
            break
        try:
            arrays.append(preprocess(load_rgb(path), spec))
        except _READ_ERRORS as exc:
            listing.errors.append((path, f"unreadable image: {type(exc).__name__}: {exc}"))
            continue
        paths.append(path)
        if listing.labels is not None:
            labels.append(listing.labels[i])
        done += 1
        if len(arrays) == batch_size:
            yield (np.stack(arrays), np.asarray(labels, dtype=np.int64) if listing.labels is not None
                   else None, paths)
            arrays, labels, paths = [], [], []
    if arrays:
        yield (np.stack(arrays), np.asarray(labels, dtype=np.int64) if listing.labels is not None
               else None, paths)
