"""Image folders and preprocessing with Pillow + numpy (no torch; the edge service uses it).

Folder layouts (``list_images``):
- class sub-folders ``ROOT/<class>/**/<file>``: labels are the indices of the sub-folder
  names in sorted order (like torchvision's ImageFolder); files directly in ROOT are
  skipped and reported;
- flat ``ROOT/<file>``: no labels.
Any regular file Pillow can open counts as an image, whatever its extension; hidden files
(``.name``) are ignored. Anything that is not a regular file (a named pipe / FIFO, a socket,
a device, a dangling link) is skipped with its reason in ``ImageList.errors`` and never
opened: opening a FIFO blocks until a writer appears, which would hang a run forever.
Files Pillow cannot read are reported one by one in ``ImageList.errors`` (and by
``iter_batches`` when they fail at decode time) and skipped; they never stop a run.

One reading path: ``open_image`` (header only) and ``load_rgb`` (pixels) are the only places
that open image files, for the edge, ``rkdsc evaluate`` / ``bench`` and the training datasets
(``rkdsc.common.data.datasets``). Every failure while reading, whatever Pillow or the OS
raised (OSError, UnidentifiedImageError, DecompressionBombError, SyntaxError, ValueError,
MemoryError, struct errors of a broken plugin, ...), comes out as ONE exception type,
``ImageReadError`` (a subclass of OSError, so code that catches OSError keeps working), whose
message names the file. ``READ_ERRORS`` is the tuple to catch.

Decompression bombs: an image whose header claims more than ``MAX_IMAGE_PIXELS`` pixels
(width x height; default 89,478,485 = Pillow's own default limit, about 256 MiB of RGB) is
refused before any pixel is decoded, naming the file and its claimed size. Pillow itself
only *warns* (DecompressionBombWarning) between its limit and twice its limit and decodes
anyway, and raises DecompressionBombError above twice its limit; here both become the same
refusal, and the warning is not emitted (the refusal says it).

``preprocess(pil_image, input_spec)`` is the single definition of the model input:
RGB conversion -> bilinear resize to ``input.size`` -> /255 -> (x - mean) / std -> [3, H, W].
"""
from __future__ import annotations

import os
import re
import stat
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps

# Largest width x height an image may claim (its header) before it is refused unread.
# Pillow's default limit; Pillow raises by itself above twice its own limit
# (Image.MAX_IMAGE_PIXELS), so the effective limit is min(this, 2 * Image.MAX_IMAGE_PIXELS).
MAX_IMAGE_PIXELS: int = 89_478_485


class ImageReadError(OSError):
    """An image file could not be read (or was refused unread); ``str()`` names the file.

    ``path``: the file; ``reason``: why, without the path (e.g. ``"UnidentifiedImageError:
    cannot identify image file"``, ``"not a regular file (named pipe (FIFO)); never opened"``,
    ``"image claims 30000 x 30000 = 900,000,000 pixels, more than the limit of ..."``).
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable (multiprocessing data loaders) with its two fields
        return (type(self), (self.path, self.reason))


# What callers of open_image / load_rgb (and anything built on them) catch: every read
# failure is converted into ImageReadError.
READ_ERRORS: tuple[type[BaseException], ...] = (ImageReadError,)

_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _kind(mode: int) -> str:
    """Name of a non-regular file type (st_mode)."""
    for test, name in ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISSOCK, "socket"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISDIR, "directory")):
        if test(mode):
            return name
    return f"special file (mode {stat.filemode(mode)})"


def _not_regular(path: Path) -> str | None:
    """None for a regular file (or a link to one), else why it is skipped (no open())."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if stat.S_ISREG(st.st_mode):
        return None
    return f"not a regular file ({_kind(st.st_mode)}); skipped, never opened"


def _open_regular(path: Path):
    """Open `path` for reading, refusing anything but a regular file without blocking.

    O_NONBLOCK makes open() of a FIFO return at once instead of waiting for a writer (it has
    no effect on regular files); fstat on the opened descriptor then decides, so a file that
    is swapped for a FIFO after listing is refused too.
    """
    fh = open(path, "rb", opener=lambda p, flags: os.open(p, flags | _NONBLOCK))
    try:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ImageReadError(path, f"not a regular file ({_kind(mode)}); not read")
    except BaseException:
        fh.close()
        raise
    return fh


def _bomb_reason(claimed: str) -> str:
    return (f"image claims {claimed}, more than the limit of {MAX_IMAGE_PIXELS:,} pixels "
            f"(decompression-bomb guard, rkdsc.common.data.images.MAX_IMAGE_PIXELS); not decoded")


def _claimed_size(fh, exc: Exception) -> str:
    """'W x H = N pixels' from the header of a file Pillow refused as a decompression bomb
    (best effort, for the message only: the format plugins' header parsers, as Image.open
    runs them, without its size check), else 'N pixels' from Pillow's message."""
    try:
        Image.init()
        fh.seek(0)
        prefix = fh.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept is not None and not accept(prefix):
                continue
            fh.seek(0)
            try:
                w, h = factory(fh, "").size
            except Exception:
                continue
            return f"{w} x {h} = {w * h:,} pixels"
    except Exception:
        pass
    m = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(m.group(1)):,} pixels" if m else "too many pixels"


def _read_failure(path: Path, exc: BaseException) -> ImageReadError:
    if isinstance(exc, ImageReadError):
        return exc
    # Pillow names the open file object (``<_io.BufferedReader name='...'>``) or the path;
    # the ImageReadError message names the file once, in front
    detail = re.sub(r"<_io\.\w+ name=.*?>", "", str(exc))
    detail = detail.replace(repr(str(path)), "").replace(str(path), "").strip(" :")
    return ImageReadError(path, f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


@contextmanager
def open_image(path: str | os.PathLike) -> Iterator[Image.Image]:
    """Context manager: a lazily opened Pillow image of a regular file whose header passed
    the size guard (no pixels decoded yet). Any failure, inside the ``with`` block too
    (``img.load()``, ``img.verify()``, ...), raises ImageReadError naming the file."""
    path = Path(path)
    try:
        with _open_regular(path) as fh:
            try:
                with warnings.catch_warnings():
                    # the size check below refuses these images with a message of its own
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    img = Image.open(fh)
            except Image.DecompressionBombError as exc:  # above twice Pillow's limit
                raise ImageReadError(path, _bomb_reason(_claimed_size(fh, exc))) from None
            with img:
                w, h = img.size
                if max(1, w) * max(1, h) > MAX_IMAGE_PIXELS:
                    raise ImageReadError(path, _bomb_reason(f"{w} x {h} = {w * h:,} pixels"))
                yield img
    except Exception as exc:  # every read failure, whatever its type; not KeyboardInterrupt
        raise _read_failure(path, exc) from (None if isinstance(exc, ImageReadError) else exc)


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


def _visible_files(folder: Path, recursive: bool, errors: list[tuple[Path, str]]) -> list[Path]:
    """Regular, non-hidden files of `folder` (recursively: of its non-hidden sub-folders too),
    sorted; anything else that is not a folder goes to `errors` with the reason."""
    candidates: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            candidates.extend(Path(dirpath) / f for f in filenames if not f.startswith("."))
    else:
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        continue
                except OSError:
                    pass
                candidates.append(Path(entry.path))
    out = []
    for p in sorted(candidates):
        why = _not_regular(p)
        if why is None:
            out.append(p)
        else:
            errors.append((p, why))
    return out


def _probe(path: Path) -> str | None:
    """None when Pillow can identify the file as an image, else the reason."""
    try:
        with open_image(path) as img:
            img.verify()  # checks the header / structure without decoding all pixels
        return None
    except READ_ERRORS as exc:
        return f"unreadable image: {exc.reason}"


def list_images(root: str | os.PathLike, check: bool = True) -> ImageList:
    """List an image folder (class sub-folders or flat); see the module doc.

    Only regular files are listed; FIFOs, sockets, devices and dangling links go to
    ``errors`` unopened. With ``check`` every file is also opened with Pillow (header and
    size guard, ``verify()``) and unreadable ones go to ``errors``.
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
        for stray in _visible_files(root, recursive=False, errors=errors):
            errors.append((stray, "not inside a class sub-folder; skipped"))
        for label, d in enumerate(class_dirs):
            for p in _visible_files(d, recursive=True, errors=errors):
                reason = _probe(p) if check else None
                if reason:
                    errors.append((p, reason))
                else:
                    paths.append(p)
                    labels.append(label)
    else:
        class_names, labels = [], None
        for p in _visible_files(root, recursive=False, errors=errors):
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
    """Read an image file (``open_image``: regular files only, size guard), apply its EXIF
    orientation and convert it to RGB. Raises ImageReadError naming the file on any failure."""
    path = Path(path)
    with open_image(path) as img:  # failures inside the block become ImageReadError too
        img.load()
        return to_rgb(ImageOps.exif_transpose(img))


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
        except READ_ERRORS as exc:
            listing.errors.append((path, f"unreadable image: {exc.reason}"))
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
