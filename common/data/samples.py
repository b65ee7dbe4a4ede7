"""Sample images for the demo: the held-back digits split as PNG files, or the held-out split
of any training preset as an image folder.

    rkdsc samples --out runs/samples/digits [--count N] [--size 32 | --bundle deploy/bundle]
    rkdsc samples --task shapes --out runs/samples/shapes [--bundle deploy/bundle]  # generated shapes
    rkdsc samples --preset my.toml --split val --out runs/mine-val     # a preset's held-out images
    rkdsc samples --workdir runs/mine --split val --out runs/mine-val  # the preset a work dir was trained with

writes ``OUT/<digit>/NNNN.png`` (NNNN = the index in scikit-learn's digits set), one RGB
PNG per held-back digit (``rkdsc.common.data.digits.split_indices``: the part training never
sees), upscaled with PIL bilinear to the bundle's input size (32 by default); with ``--task
shapes`` the 400 held-back generated shapes (``rkdsc.common.data.shapes``, a seed training never
uses) as ``OUT/<shape>/NNNN.png`` at the bundle's shapes input size (40 by default). The output
is deterministic: same arguments, same bytes. The folder is written next to the target
and renamed into place, so a half-written folder is never taken for a complete one.

With ``--preset`` / ``--workdir`` it writes ``OUT/<class>/<file>`` for every image of the
preset's ``--split``: ``val`` = the validation split ``build_datasets`` holds out of training
(``data.val_fraction`` of every class, seeded by the preset's seed: the same images on every
machine), ``heldout`` = the final-evaluation split (digits: the held-back part; image
folders: the same as ``val``). Image-folder data sets are copied file by file (the original
files); digits and CIFAR-100 are written as PNGs at the preset's input size. The folder is
what ``rkdsc edge`` / ``rkdsc demo`` (``[[transmitters]] images``) and ``rkdsc evaluate --data``
read, so a served model is measured on images it was not trained on.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from rkdsc.common.data.digits import DIGITS_CLASS_NAMES, load_digits_arrays, split_indices, upscale_rgb

DEFAULT_SIZE = 32  # pixels, when no bundle is given


@contextlib.contextmanager
def _folder_in_place(out_dir: Path) -> Iterator[Path]:
    """A new folder beside ``out_dir`` that replaces it when the block succeeds (and is removed
    when it fails), so a half-written folder is never taken for a complete one."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it 0700; the folder is meant to be shared (containers)
    try:
        yield tmp
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


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
    with _folder_in_place(out_dir) as tmp:
        for name in DIGITS_CLASS_NAMES:
            (tmp / name).mkdir()
        for idx, img in zip(held, rgb):
            Image.fromarray(img).save(tmp / DIGITS_CLASS_NAMES[labels[idx]] / f"{idx:04d}.png",
                                      format="PNG", optimize=False)
    return sorted(out_dir.glob("*/*.png"))


def write_shapes_samples(out_dir: str | os.PathLike, count: int | None = None, size: int | None = None,
                         overwrite: bool = False) -> list[Path]:
    """Write the first `count` held-back generated shapes (all 400 when None) as
    OUT/<shape>/NNNN.png (NNNN = the index in the held-back draw, ``rkdsc.common.data.shapes``:
    a seed training never uses), at ``size`` pixels (default ``SHAPES_SIZE``, 40). Deterministic."""
    from PIL import Image

    from rkdsc.common.data import shapes

    out_dir = Path(out_dir)
    size = shapes.SHAPES_SIZE if size is None else int(size)
    n = shapes.SHAPES_HELDOUT_COUNT if count is None else int(count)
    if n < 1:
        raise ValueError(f"count: expected an integer >= 1, got {count!r}")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: exists and is not empty (use --force to replace it)")
    images, labels = shapes.generate_shapes(n, size, shapes.SHAPES_HELDOUT_SEED)
    with _folder_in_place(out_dir) as tmp:
        for name in shapes.SHAPES_CLASS_NAMES:
            (tmp / name).mkdir()
        for i, (img, label) in enumerate(zip(images, labels)):
            Image.fromarray(img).save(tmp / shapes.SHAPES_CLASS_NAMES[label] / f"{i:04d}.png", format="PNG",
                                      optimize=False)
    return sorted(out_dir.glob("*/*.png"))


# the embedded tasks whose held-back samples can be generated: task name -> writer(out, count, size)
GENERATED_SAMPLES = {"digits": lambda out, count=None, size=DEFAULT_SIZE, overwrite=False:
                     write_samples(out, count, size or DEFAULT_SIZE, overwrite),
                     "shapes": write_shapes_samples}


SPLITS = ("val", "heldout")


def _safe_name(name: str) -> str:
    return "".join("_" if c in '/\\' or ord(c) < 32 else c for c in str(name)).strip() or "_"


def write_split(preset, out_dir: str | os.PathLike, split: str = "val", count: int | None = None,
                overwrite: bool = False) -> list[Path]:
    """Write a preset's held-out split as an image folder OUT/<class>/<file> (see the module doc).

    ``preset``: a loaded Preset. Returns the written paths. FileExistsError when OUT is not
    empty (unless ``overwrite``). Needs torch (the training data sets)."""
    from PIL import Image

    from rkdsc.common.data import datasets

    if split not in SPLITS:
        raise ValueError(f"--split: expected one of {', '.join(SPLITS)}, got {split!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir}: exists and is not empty (use --force to replace it)")
    _, val_ds, class_names = datasets.build_datasets(preset)
    ds = val_ds if split == "val" else datasets.heldout_dataset(preset)
    folder_like = preset.data.dataset in ("folder", "cifar10", "tinyimagenet")
    files = datasets.list_class_folder(preset.data_root())[0] if folder_like else None
    n = len(ds) if count is None else min(int(count), len(ds))
    with _folder_in_place(out_dir) as tmp:
        for name in class_names:
            (tmp / _safe_name(name)).mkdir(exist_ok=True)
        for i in range(n):
            label = int(ds.labels[i])
            folder = tmp / _safe_name(class_names[label])
            src_index = int(ds.indices[i])
            if files is not None:
                src = files[src_index]
                shutil.copyfile(src, folder / src.name)
            else:
                Image.fromarray(ds.images[i].numpy()).save(folder / f"{src_index:05d}.png", format="PNG")
    return sorted(p for p in out_dir.rglob("*") if p.is_file())


def _bundle_size(bundle_dir: str, task: str = "digits") -> int:
    """The input side of ``task`` in a bundle (each task of a bundle has its own input size)."""
    from rkdsc.common.bundle.manifest import read_manifest, task_specs

    specs = {s.name: s for s in task_specs(read_manifest(bundle_dir))}
    if task not in specs:
        raise ValueError(f"{bundle_dir}: no task {task!r} (tasks: {', '.join(specs)}); pass --size")
    h, w = specs[task].input.size
    if h != w:
        raise ValueError(f"{bundle_dir}: task {task!r} input.size {[h, w]} is not square; pass --size")
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
    g.add_argument("--bundle", default=None, help="bundle directory whose input size (of --task) to use")
    p.add_argument("--task", choices=sorted(GENERATED_SAMPLES), default="digits",
                   help="which embedded task's held-back samples: digits (scikit-learn, default) or shapes "
                        "(generated, rkdsc.common.data.shapes)")
    p.add_argument("--force", action="store_true", help="replace OUT when it already has files")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--preset", metavar="NAME", default=None,
                     help="write this training preset's --split instead of the digits (a name or a .toml path)")
    src.add_argument("--workdir", metavar="DIR", default=None,
                     help="write the --split of the preset a `rkdsc train` work dir was trained with "
                          "(DIR/results.json, its --set overrides included)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a value of the --preset / --workdir preset (as given to `rkdsc train --set`)")
    p.add_argument("--split", choices=SPLITS, default="val",
                   help="with --preset / --workdir: val = the validation split training held out (default); "
                        "heldout = the final-evaluation split (digits: the held-back part; folders: = val)")
    args = p.parse_args(argv)
    if args.preset or args.workdir:
        return _cli_split(args)
    try:
        if args.task == "shapes":
            from rkdsc.common.data.shapes import SHAPES_SIZE

            size = args.size or (_bundle_size(args.bundle, "shapes") if args.bundle else SHAPES_SIZE)
        else:
            size = args.size or (_bundle_size(args.bundle) if args.bundle else DEFAULT_SIZE)
        paths = GENERATED_SAMPLES[args.task](args.out, args.count, size, overwrite=args.force)
    except (ValueError, FileExistsError, OSError) as exc:
        print(f"rkdsc samples: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} images ({size}x{size}) to {args.out}")
    return 0


def _cli_split(args: argparse.Namespace) -> int:
    from rkdsc.common.train.presets import PresetError, load_preset, parse_set_args

    try:
        if args.size or args.bundle:
            raise ValueError("--size / --bundle apply to the digits samples, not to --preset / --workdir")
        if args.workdir:
            from rkdsc.common.experiments.evaluate import preset_of_workdir

            preset = preset_of_workdir(args.workdir, args.set)
        else:
            preset = load_preset(args.preset, parse_set_args(args.set))
        paths = write_split(preset, args.out, args.split, args.count, overwrite=args.force)
    except (ValueError, FileExistsError, OSError, PresetError) as exc:
        print(f"rkdsc samples: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(paths)} images of preset {preset.name!r} split {args.split} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
