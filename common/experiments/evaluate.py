"""``rkdsc evaluate``: accuracy versus SNR of deployed bundles (contract item 8, paper Fig. 6).

It evaluates exactly what is deployed: the bundle's ONNX edge and server parts through
``rkdsc.common.bundle.runtime.InProcessPipeline`` (encode -> symbol mapping -> unit power ->
numpy channel with MMSE equalization -> demapping -> decode), never the torch weights.

    rkdsc evaluate --bundle deploy/bundle --data samples/ --channel awgn --out awgn.json --plot awgn.png
    rkdsc evaluate --bundle runs/x/bundles/rkd-sc --label RKD-SC \
                   --bundle runs/x/bundles/jscc-student --label JSCC-student \
                   --preset default --channel rayleigh --out fig6-rayleigh.json --plot fig6-rayleigh.png

    rkdsc evaluate --workdir runs/mine --channel awgn --out runs/mine/heldout.json --plot heldout.png

Output (one bundle)::

    {"bundle": "...", "channel": "awgn", "points": [{"snr_db": -10.0, "accuracy": 0.41, "n": 359,
     "ci95": [0.36, 0.46]}, ...], "label": "...", "task": "...", "data": "...", "seed": 0}

``ci95`` is the 95 % Wilson interval of the accuracy over the ``n`` images
(``rkdsc.common.experiments.stats``); the plot draws it as error bars and puts ``n`` in the legend.

With several bundles the top-level keys are those of the first and ``curves`` holds one such
object per bundle. Data: ``--data DIR`` (class sub-folders, labels by folder name mapped to the
bundle's ``class_names``), ``--preset NAME`` (the preset's held-back split: for digits the
part never used in training, otherwise the validation split; no images are written) or
``--workdir DIR`` (the same split of the preset ``rkdsc train`` recorded in ``DIR/results.json``,
its ``--set`` overrides included; without ``--bundle`` every bundle of ``DIR/bundles/``).
``--data`` pointing at the folder a bundle was trained on prints a warning (and adds
``"warnings"`` to the JSON): that accuracy mixes in training images.

The noise is reproducible: the channel generator of SNR point ``i`` is
``numpy.random.default_rng([seed, i])``, the same for every bundle, so curves differ only by
the models.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rkdsc.common.channel import FADINGS
from rkdsc.common.experiments.stats import ci95, yerr
from rkdsc.common.process import env_threads

DEFAULT_SNRS_DB = [-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0]  # paper Fig. 6 x axis
CHANNELS = FADINGS  # every channel the numpy channel simulates


# ----------------------------------------------------------------------------- data

class EvalData:
    """Evaluation images for one input spec: float32 [N, 3, H, W] and class-name labels."""

    def __init__(self, images: np.ndarray, label_names: list[str], source: str):
        self.images = images            # preprocessed float32 [N, 3, H, W]
        self.label_names = label_names  # class name of each image
        self.source = source            # where the images came from (for the JSON)

    def __len__(self) -> int:
        return len(self.label_names)


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of size ``limit`` (all, in order, without a limit)."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit < 1:
        raise ValueError(f"--limit: expected an integer >= 1, got {limit}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def load_folder(root: str | os.PathLike, input_spec: Any, limit: int | None = None,
                seed: int = 0) -> EvalData:
    """Images under ``root/<class>/...`` preprocessed for ``input_spec`` (the manifest's input)."""
    from rkdsc.common.data.images import list_images, load_rgb, preprocess

    listing = list_images(root)
    if listing.labels is None:
        raise ValueError(f"--data {root}: expected class sub-folders (ROOT/<class>/<image>), found a flat folder")
    for path, why in listing.errors:
        print(f"evaluate: skipping {path}: {why}", file=sys.stderr)
    if not listing.paths:
        raise ValueError(f"--data {root}: no readable images")
    idx = _subset(len(listing.paths), limit, seed)
    images = np.stack([preprocess(load_rgb(listing.paths[i]), input_spec) for i in idx])
    names = [listing.class_names[listing.labels[i]] for i in idx]
    return EvalData(images.astype(np.float32), names, str(root))


def load_preset_split(preset: Any, limit: int | None = None, seed: int = 0) -> tuple[EvalData, dict]:
    """The preset's held-back split (digits) or validation split, as preprocessed arrays.

    ``preset``: a name / .toml path or a loaded Preset. Returns (data, input_spec) where
    input_spec = {size, mean, std} of the preset; the caller checks it against each bundle's
    input (the tensors are already normalized).
    """
    if isinstance(preset, (str, os.PathLike)):
        from rkdsc.common.train.presets import load_preset

        preset = load_preset(str(preset))
    dataset, class_names, split = preset_eval_dataset(preset)
    idx = _subset(len(dataset), limit, seed)
    xs, names = [], []
    for i in idx:
        x, y = dataset[int(i)][:2]
        xs.append(np.asarray(x, dtype=np.float32))
        names.append(class_names[int(y)])
    spec = {"size": int(preset.data.input_size), "mean": [float(v) for v in preset.data.mean],
            "std": [float(v) for v in preset.data.std]}
    return EvalData(np.stack(xs), names, f"preset:{preset.name}:{split}"), spec


def preset_eval_dataset(preset) -> tuple[Any, list[str], str]:
    """(dataset, class_names, split name): the held-back part for digits / shapes (never trained on),
    otherwise the validation split of ``build_datasets``."""
    from rkdsc.common.data import datasets

    _, val_ds, class_names = datasets.build_datasets(preset)
    if preset.data.dataset in ("digits", "shapes") and hasattr(datasets, "heldout_dataset"):
        return datasets.heldout_dataset(preset), list(class_names), "heldout"
    return val_ds, list(class_names), "val"


def preset_of_workdir(workdir: str | os.PathLike, sets: Sequence[str] | None = None) -> Any:
    """The preset a training work dir was trained with: ``results.json`` ``preset_config`` (every
    ``--set`` of the training run already applied), plus ``sets`` on top."""
    from rkdsc.common.train.presets import parse_set_args, preset_from_dict, with_overrides

    workdir = Path(workdir)
    doc = None
    for f in (workdir / "results.json", *sorted((workdir / "stage2").glob("*/model.json"))):
        if f.is_file():
            doc = json.loads(f.read_text(encoding="utf-8"))
            if isinstance(doc.get("preset_config"), dict):
                break
            doc = None
    if doc is None:
        raise ValueError(f"--workdir {workdir}: no results.json or stage2/*/model.json with the preset's settings "
                         "(train it with `rkdsc train` first, or pass --preset)")
    preset = preset_from_dict(doc["preset_config"], name=str(doc.get("preset") or doc["preset_config"].get("name")))
    return with_overrides(preset, parse_set_args(list(sets))) if sets else preset


def workdir_bundles(workdir: str | os.PathLike) -> list[str]:
    """Every exported bundle of a work dir (``WORKDIR/bundles/<method>/``), RKD-SC first."""
    found = sorted(d for d in (Path(workdir) / "bundles").glob("*") if (d / "manifest.json").is_file())
    found.sort(key=lambda d: (d.name != "rkd-sc", d.name))
    if not found:
        raise ValueError(f"--workdir {workdir}: no bundles under {Path(workdir) / 'bundles'}; pass --bundle")
    return [str(d) for d in found]


def training_data_root(manifest: dict) -> Path | None:
    """The image folder a bundle was trained on, when its provenance says (``provenance.data.root``,
    else the recorded work dir's ``results.json``); None for digits or when unknown."""
    prov = manifest.get("provenance") or {}
    data = prov.get("data") if isinstance(prov.get("data"), dict) else None
    if data is None and prov.get("workdir"):
        res = Path(str(prov["workdir"])) / "results.json"
        try:
            data = json.loads(res.read_text(encoding="utf-8")).get("preset_config", {}).get("data")
        except (OSError, ValueError, AttributeError):
            data = None
    if not isinstance(data, dict) or data.get("dataset") in (None, "digits", "shapes", "cifar100"):
        return None
    from rkdsc.common.train.presets import resolve_data_root

    root = str(data.get("root") or "")
    if Path(root).is_absolute():
        return Path(root).resolve()
    return resolve_data_root(str(data["dataset"]), root)


def training_folder_warning(data_dir: str | os.PathLike, bundle_path: str, manifest: dict) -> str | None:
    """A warning when --data is (inside, or contains) the folder the bundle was trained on."""
    root = training_data_root(manifest)
    if root is None or not str(root) or str(root) == ".":
        return None
    data = Path(data_dir).resolve()
    if not (data == root or root in data.parents or data in root.parents):
        return None
    prov = manifest.get("provenance") or {}
    where = f"--workdir {prov['workdir']}" if prov.get("workdir") else f"--preset {prov.get('preset', 'PRESET')}"
    return (f"--data {data_dir} is the training image folder of bundle {bundle_path} (data.root {root}): its "
            f"accuracy mixes in images the model was trained on; evaluate the held-out split with {where} instead "
            f"(or write it as a folder: rkdsc samples {where} --split val --out DIR)")


def _same_spec(a: dict, b: Any) -> bool:
    get = b.get if isinstance(b, dict) else (lambda k: getattr(b, k))
    size = get("size")
    size = (int(size), int(size)) if isinstance(size, (int, np.integer)) else tuple(int(v) for v in size)
    a_size = (a["size"], a["size"]) if isinstance(a["size"], int) else tuple(a["size"])
    return (a_size == size and np.allclose(a["mean"], list(get("mean")), atol=1e-6)
            and np.allclose(a["std"], list(get("std")), atol=1e-6))


# ----------------------------------------------------------------------------- evaluation

def labels_for(data: EvalData, class_names: Sequence[str], where: str,
               class_ids: Sequence[str] = ()) -> np.ndarray:
    """Map the data's class folder names onto the bundle task's class indices: a folder may be
    named by the class name or by the data set's class id (error naming the class)."""
    index = {name: i for i, name in enumerate(class_ids)} | {name: i for i, name in enumerate(class_names)}
    unknown = sorted({n for n in data.label_names if n not in index})
    if unknown:
        raise ValueError(f"{where}: class folder(s) {unknown[:10]} are not among the bundle's class_names "
                         f"{list(class_names)[:20]}")
    return np.asarray([index[n] for n in data.label_names], dtype=np.int64)


def evaluate_bundle(bundle_path: str | os.PathLike, data: EvalData, channel: str,
                    snrs_db: Sequence[float], seed: int = 0, task: str | None = None,
                    batch_size: int = 256, progress: bool = False) -> dict:
    """Accuracy of one bundle task at each SNR: {"bundle", "task", "channel", "points": [...]}."""
    from rkdsc.common.bundle.runtime import InProcessPipeline, load_bundle

    if channel not in CHANNELS:
        raise ValueError(f"--channel: expected one of {list(CHANNELS)}, got {channel!r}")
    bundle = load_bundle(bundle_path)
    pipe = InProcessPipeline(bundle, task, seed=seed, intra_op_threads=env_threads())  # $RKDSC_THREADS, as training
    labels = labels_for(data, pipe.spec.class_names, f"bundle {bundle_path} task {pipe.spec.name!r}",
                        pipe.spec.class_ids)
    n = len(data)
    points = []
    bar = None
    if progress:
        from rkdsc.common.train import common as train_common

        bar = train_common.progress(total=len(snrs_db), desc=f"evaluate {Path(bundle_path).name} {channel}")
    for i, snr in enumerate(snrs_db):
        pipe.rng = np.random.default_rng([int(seed), i])
        correct = 0
        for start in range(0, n, batch_size):
            out = pipe.run(data.images[start:start + batch_size], float(snr), channel,
                           labels=labels[start:start + batch_size])
            correct += int(out["correct"].sum())
        acc = correct / n if n else float("nan")
        points.append({"snr_db": float(snr), "accuracy": acc, "n": n, "ci95": ci95(acc, n)})
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return {"bundle": str(bundle_path), "task": pipe.spec.name, "channel": channel, "points": points}


def plot_curves(curves: Sequence[dict], path: str | os.PathLike, title: str | None = None) -> None:
    """Accuracy vs SNR, one line per curve, one panel per channel (paper Fig. 6 style)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    channels = list(dict.fromkeys(c["channel"] for c in curves))
    fig, axes = plt.subplots(1, len(channels), figsize=(5.2 * len(channels), 4.0), squeeze=False)
    names = {"awgn": "AWGN", "rayleigh": "Rayleigh block fading", "rayleigh_fast": "Rayleigh fast fading",
             "rician": "Rician block fading"}
    for ax, ch in zip(axes[0], channels):
        for c in (c for c in curves if c["channel"] == ch):
            xs = [p["snr_db"] for p in c["points"]]
            ys = [100.0 * p["accuracy"] for p in c["points"]]
            ns = [int(p.get("n") or 0) for p in c["points"]]
            n_text = "" if not any(ns) else f" (n={ns[0]})" if len(set(ns)) == 1 else f" (n={min(ns)}..{max(ns)})"
            ax.errorbar(xs, ys, yerr=yerr([p["accuracy"] for p in c["points"]], ns) if all(ns) else None,
                        marker="o", capsize=3, label=f"{c.get('label') or Path(c['bundle']).name}{n_text}")
        ax.set_xlabel("SNR (dB)")
        ax.set_ylabel("top-1 accuracy (%), bars: 95% Wilson CI")
        ax.set_title(names.get(ch, ch))
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_evaluation(bundles: Sequence[str], labels: Sequence[str] | None, channel: str,
                   snrs_db: Sequence[float], data_dir: str | None = None, preset: Any = None,
                   seed: int = 0, limit: int | None = None, task: str | None = None,
                   progress: bool = False) -> dict:
    """Evaluate several bundles on the same images and noise; returns the output JSON object.
    ``preset``: a preset name / path or a loaded Preset (its held-back / validation split)."""
    from rkdsc.common.bundle.runtime import load_bundle

    if (data_dir is None) == (preset is None):
        raise ValueError("give exactly one of --data DIR or --preset NAME")
    if labels and len(labels) != len(bundles):
        raise ValueError(f"--label: got {len(labels)} labels for {len(bundles)} bundles (give one per --bundle or none)")
    preset_data = load_preset_split(preset, limit, seed) if preset is not None else None
    folder_cache: dict[str, EvalData] = {}
    curves = []
    warnings: list[str] = []
    for i, b in enumerate(bundles):
        bundle = load_bundle(b)
        if data_dir is not None:
            warning = training_folder_warning(data_dir, b, bundle.manifest)
            if warning and warning not in warnings:
                print(f"evaluate: warning: {warning}", file=sys.stderr)
                warnings.append(warning)
        task_input = bundle.task(task).input  # the evaluated task's own preprocessing
        task_input_doc = {"size": list(task_input.size), "mean": list(task_input.mean), "std": list(task_input.std)}
        if preset_data is not None:
            data, spec = preset_data
            if not _same_spec(spec, task_input):
                raise ValueError(f"bundle {b}: input spec {task_input_doc} differs from the preset's "
                                 f"preprocessing {spec} ({data.source}); evaluate it with --data instead")
        else:
            key = json.dumps(task_input_doc, sort_keys=True)
            if key not in folder_cache:
                folder_cache[key] = load_folder(data_dir, task_input_doc, limit, seed)
            data = folder_cache[key]
        res = evaluate_bundle(b, data, channel, snrs_db, seed=seed, task=task, progress=progress)
        prov = bundle.manifest.get("provenance", {})
        res["label"] = labels[i] if labels else str(prov.get("method") or Path(b).name)
        res["data"] = data.source
        res["seed"] = int(seed)
        curves.append(res)
    out = dict(curves[0])
    if len(curves) > 1:
        out["curves"] = curves
    if warnings:
        out["warnings"] = warnings
    return out


# ----------------------------------------------------------------------------- CLI

def parse_snrs(text: str) -> list[float]:
    """'-10,-5,0' -> [-10.0, -5.0, 0.0] (also accepts 'lo:hi:step')."""
    text = text.strip()
    try:
        if ":" in text:
            lo, hi, step = (float(v) for v in text.split(":"))
            if step <= 0:
                raise ValueError
            return [float(v) for v in np.arange(lo, hi + step / 2, step)]
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--snr: expected a comma list like -10,-5,0 or lo:hi:step, got {text!r}") from None
    if not vals or not all(np.isfinite(vals)):
        raise ValueError(f"--snr: expected finite numbers, got {text!r}")
    return vals


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc evaluate",
        description="Accuracy versus SNR of one or more bundles, run exactly as deployed (ONNX edge + "
                    "numpy channel + ONNX server in one process). Writes {bundle, channel, points:[{snr_db, "
                    "accuracy, n}]} and optionally a plot (several bundles share one plot, like the paper's Fig. 6).")
    p.add_argument("--bundle", action="append", metavar="DIR",
                   help="bundle directory (repeat to compare several bundles on the same images and noise; "
                        "default with --workdir: every bundle of WORKDIR/bundles/)")
    p.add_argument("--label", action="append", metavar="NAME",
                   help="legend label of the matching --bundle (repeat once per bundle; default: the "
                        "bundle's provenance method or folder name)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", metavar="DIR",
                     help="image folder with one sub-folder per class; folder names must be the bundle's class names")
    src.add_argument("--preset", metavar="NAME",
                     help="evaluate on this training preset's held-back split (digits) or validation split "
                          "(image folders: the images training held out), without writing images; a name or a "
                          ".toml path")
    src.add_argument("--workdir", metavar="DIR",
                     help="evaluate on the held-out split of the preset a `rkdsc train` work dir was trained with "
                          "(DIR/results.json, its --set overrides included); without --bundle: every bundle of "
                          "DIR/bundles/")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a value of the --preset / --workdir preset (as given to `rkdsc train --set`), "
                        "e.g. --set data.root=/data/mine")
    p.add_argument("--channel", default="awgn", choices=CHANNELS,
                   help="channel model between edge and server (default: awgn)")
    p.add_argument("--snr", default=",".join(f"{v:g}" for v in DEFAULT_SNRS_DB), metavar="LIST",
                   help="SNR points in dB (Es/N0 per complex symbol), comma separated or lo:hi:step "
                        "(default: -10,-5,0,5,10,15,20,25)")
    p.add_argument("--out", required=True, metavar="FILE.json", help="where to write the JSON result")
    p.add_argument("--plot", metavar="FILE.png", help="also draw accuracy vs SNR into this PNG")
    p.add_argument("--task", metavar="NAME", help="bundle task to evaluate (default: the first task)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the channel noise/fading and of the --limit subset (default: 0)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate a seeded random subset of N images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def join_negative_values(argv: list[str], options: tuple[str, ...] = ("--snr",)) -> list[str]:
    """['--snr', '-10,-5'] -> ['--snr=-10,-5'] (argparse would take '-10,-5' for an option)."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in options and i + 1 < len(argv) and re.match(r"^-[\d.]", argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def cli(argv: list[str] | None = None) -> int:
    from rkdsc.common.bundle.manifest import BundleError

    from rkdsc.common.train.presets import PresetError, load_preset, parse_set_args

    args = build_parser().parse_args(join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        snrs = parse_snrs(args.snr)
        if args.set and args.data:
            raise ValueError("--set: applies to --preset or --workdir, not to --data")
        preset = args.preset
        if args.workdir:
            preset = preset_of_workdir(args.workdir, args.set)
        elif args.preset and args.set:
            preset = load_preset(args.preset, parse_set_args(args.set))
        bundles = args.bundle or (workdir_bundles(args.workdir) if args.workdir else None)
        if not bundles:
            raise ValueError("--bundle: give at least one bundle directory (or --workdir DIR to use its bundles)")
        out = run_evaluation(bundles, args.label, args.channel, snrs, data_dir=args.data,
                             preset=preset, seed=args.seed, limit=args.limit, task=args.task,
                             progress=not args.no_progress)
    except (ValueError, FileNotFoundError, BundleError, PresetError) as exc:
        print(f"rkdsc evaluate: error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    if args.plot:
        plot_curves(out.get("curves", [out]), args.plot, title=f"{out['task']} ({out['data']})")
    for c in out.get("curves", [out]):
        row = "  ".join(f"{p['snr_db']:g}dB:{100 * p['accuracy']:.1f}%" + (
            f"[{100 * p['ci95'][0]:.1f},{100 * p['ci95'][1]:.1f}]" if p.get("ci95") else "") for p in c["points"])
        print(f"{c['label']:>16s} [{c['channel']}] n={c['points'][0]['n']} (95% Wilson CI in brackets)  {row}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
