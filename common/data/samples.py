"""Sample images for the demo: the held-back digits split as PNG files.

    rkdsc samples --out runs/samples/digits [--count N] [--size 32 | --bundle deploy/bundle]

writes ``OUT/<digit>/NNNN.png`` (NNNN = the index in scikit-learn's digits set), one RGB
PNG per held-back digit (``rkdsc.common.data.digits.split_indices``: the part training never
sees), upscaled with PIL bilinear to the bundle's input size (32 by default). The output
is deterministic: same arguments, same bytes. The folder is written next to the target
and renamed into place, so a half-written folder is never taken for a complete one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from rkdsc.common.data.digits import DIGITS_CLASS_NAMES, load_digits_arrays, split_indices, upscale_rgb

DEFAULT_SIZE = 32  # pixels, when no bundle is given


def write_samples(out_dir: str | os.PathLike, count: int | None = None, size: int = DEFAULT_SIZE,
                  overwrite: bool = False) -> list[Path]:
    """Write the first `count` held-back digits (all when None) as OUT/<digit>/NNNN.png.

    Returns the written paths (sorted). Raises FileExistsError when OUT exists and is not
    empty, unless `overwrite`.
    """
    from PIL import Image

    out_dir = Path(out_dir)
    if count is not None and count < 1:
        raise ValueError(f"count: expected an integer >= 1, got {count!r}")
    if size < 1:
        raise ValueError(f"size: expected an integer >= 1, got {size!r}")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out_dir}: exists and is not empty (use --force to replace it)")
    images, labels = load_digits_arrays()
    _, held = split_indices(len(images))
    if count is not None:
        held = held[:count]
    rgb = upscale_rgb(images[held], size)  # [N, size, size, 3] uint8
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the folder is meant to be shared (containers)
    try:
        for name in DIGITS_CLASS_NAMES:
            (tmp / name).mkdir()
        for idx, img in zip(held, rgb):
            Image.fromarray(img).save(tmp / DIGITS_CLASS_NAMES[labels[idx]] / f"{idx:04d}.png",
                                      format="PNG", optimize=False)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out_dir.glob("*/*.png"))


def _bundle_size(bundle_dir: str) -> int:
    from rkdsc.common.bundle.manifest import InputSpec, read_manifest

    h, w = InputSpec.from_dict(read_manifest(bundle_dir)["input"]).size
    if h != w:
        raise ValueError(f"{bundle_dir}: input.size {[h, w]} is not square; pass --size")
    return int(h)


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rkdsc samples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (class sub-folders 0..9 are created in it)")
    p.add_argument("--count", type=int, default=None,
                   help="write only the first N held-back digits (default: all, about 360)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--size", type=int, default=None,
                   help=f"image side in pixels (default: the bundle's input size, else {DEFAULT_SIZE})")
    g.add_argument("--bundle", default=None, help="bundle directory whose input size to use")
    p.add_argument("--force", action="store_true", help="replace OUT when it already has files")
    args = p.parse_args(argv)
    try:
        size = args.size or (_bundle_size(args.bundle) if args.bundle else DEFAULT_SIZE)
        paths = write_samples(args.out, args.count, size, overwrite=args.force)
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"rkdsc samples: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} images ({size}x{size}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
