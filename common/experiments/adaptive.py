"""``rkdsc adaptive``: SNR-adaptive rate, one task with several codecs (compression ratios).

    rkdsc adaptive build --task shapes --codec cr-0.95=B1 --codec cr-0.8=B2 --codec cr-0.5=B3 \\
        --default cr-0.8 --preset default-shapes --margin 0.02 --snr -10:25:5 --out runs/adaptive/bundle
    rkdsc adaptive eval --bundle runs/adaptive/bundle --preset default-shapes --snr -10:25:2.5 \\
        --out docs/figures/adaptive-rate.json --plot docs/figures/adaptive-rate.png

``build``: each ``--codec NAME=BUNDLE`` (a one-task bundle of ``--task``, one compression ratio)
is evaluated in process (``InProcessPipeline``, the numpy channel ``--channel``) on the preset's
**validation** split at every ``--snr``; the rate policy ``fewest-symbols-within-margin``
(``rkdsc.common.bundle.codecs.fewest_symbols_policy``: at each SNR the fewest symbols whose
accuracy is within ``--margin`` of the best codec's) is computed from those numbers and recorded
in the manifest with them (``rkdsc.common.bundle.codecs.combine_codecs``).

``eval``: on the preset's final-evaluation split (held-back digits / shapes; a split the policy
never saw) at every ``--snr``: each fixed codec's accuracy and symbols per image, and the adaptive
policy's (the codec ``TaskSpec.choose_codec`` picks at that link SNR, as the edge does from the
relay's feedback). Each SNR point draws the same seeded noise for every codec. Writes JSON
``{"bundle", "task", "channel", "split", "n", "policy", "codecs": [{name, compression_ratio,
symbols_per_image}], "points": [{"snr_db", "fixed": {codec: accuracy}, "adaptive": {"codec",
"accuracy", "symbols_per_image"}}]}``, a two-panel plot (accuracy and symbols per image against
SNR) and, with ``--markdown``, a table.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def _split_data(preset, split: str):
    """EvalData of a preset split: ``val`` (the training run's validation split) or ``heldout``."""
    from rkdsc.common.data import datasets
    from rkdsc.common.experiments.evaluate import EvalData, preset_eval_dataset

    if split == "val":
        _, ds, class_names = datasets.build_datasets(preset)
        name = "val"
    else:
        ds, class_names, name = preset_eval_dataset(preset)
    x, y = ds.tensors()
    return EvalData(x.numpy().astype(np.float32), [class_names[int(i)] for i in y.numpy()],
                    f"preset:{preset.name}:{name}")


def _check_input(bundle, task: str, preset) -> None:
    """The preset's preprocessing must be the task's (the split tensors are already normalised)."""
    from rkdsc.common.experiments.evaluate import _same_spec

    d = preset.data
    want = {"size": int(d.input_size), "mean": list(d.mean), "std": list(d.std)}
    got = bundle.task(task).input
    if not _same_spec(want, got):
        raise ValueError(f"bundle {bundle.path} task {task!r}: input {list(got.size)} mean {list(got.mean)} std "
                         f"{list(got.std)} differs from preset {preset.name!r}'s preprocessing {want}")


def _accuracy_curve(bundle, task: str, codec: str | None, data, channel: str, snrs: Sequence[float],
                    seed: int) -> dict[float, float]:
    from rkdsc.common.bundle.runtime import InProcessPipeline
    from rkdsc.common.experiments.evaluate import labels_for

    pipe = InProcessPipeline(bundle, task, seed=seed, codec=codec)
    labels = labels_for(data, pipe.spec.class_names, f"bundle {bundle.path} task {task!r}", pipe.spec.class_ids)
    out = {}
    for i, snr in enumerate(snrs):
        pipe.rng = np.random.default_rng([int(seed), i])  # the same draws for every codec at this SNR
        correct = 0
        for start in range(0, len(data), 256):
            r = pipe.run(data.images[start:start + 256], float(snr), channel, labels=labels[start:start + 256])
            correct += int(r["correct"].sum())
        out[float(snr)] = correct / len(data)
    return out


def build(task: str, codecs: dict[str, str], default: str, preset, out: str, margin: float, snrs: Sequence[float],
          channel: str = "awgn", seed: int = 0) -> dict:
    from rkdsc.common.bundle.codecs import combine_codecs, fewest_symbols_policy
    from rkdsc.common.bundle.runtime import load_bundle

    data = _split_data(preset, "val")
    accuracy, symbols, recorded = {}, {}, {}
    for name, path in codecs.items():
        b = load_bundle(path)
        _check_input(b, task, preset)
        accuracy[name] = _accuracy_curve(b, task, None, data, channel, snrs, seed)
        symbols[name] = b.task(task).symbols_per_image
        recorded[name] = {channel: {f"{s:g}dB": round(a, 4) for s, a in accuracy[name].items()},
                          "split": data.source, "n": len(data)}
    policy = fewest_symbols_policy(accuracy, symbols, margin, channel=channel, split=data.source)
    combine_codecs(codecs, out, task, default, accuracy=recorded, policy=policy,
                   provenance={"command": " ".join(["rkdsc", *sys.argv[1:]]) if sys.argv else "",
                               "rate_policy_from": data.source})
    return {"policy": policy, "accuracy": accuracy, "symbols": symbols}


def evaluate(bundle_path: str, preset, snrs: Sequence[float], channel: str = "awgn", task: str | None = None,
             seed: int = 1) -> dict:
    from rkdsc.common.bundle.runtime import load_bundle

    b = load_bundle(bundle_path)
    spec = b.task(task)
    if not spec.codecs:
        raise ValueError(f"bundle {bundle_path}: task {spec.name!r} has no codecs (build one with `rkdsc adaptive build`)")
    _check_input(b, spec.name, preset)
    data = _split_data(preset, "heldout")
    fixed = {c.name: _accuracy_curve(b, spec.name, c.name, data, channel, snrs, seed) for c in spec.codecs}
    points = []
    for snr in snrs:
        chosen = spec.choose_codec(snr)
        points.append({"snr_db": float(snr), "fixed": {n: acc[float(snr)] for n, acc in fixed.items()},
                       "adaptive": {"codec": chosen.name, "accuracy": fixed[chosen.name][float(snr)],
                                    "symbols_per_image": chosen.symbols_per_image}})
    return {"bundle": str(bundle_path), "task": spec.name, "channel": channel, "split": data.source, "n": len(data),
            "seed": seed, "policy": spec.rate_policy,
            "codecs": [{"name": c.name, "compression_ratio": c.compression_ratio,
                        "symbols_per_image": c.symbols_per_image} for c in spec.codecs],
            "points": points}


def markdown(doc: dict, snrs: Sequence[float] | None = None) -> str:
    """Accuracy and symbols per image at each SNR: each fixed codec, then the adaptive policy."""
    pts = [p for p in doc["points"] if snrs is None or p["snr_db"] in snrs]
    codecs = doc["codecs"]
    head = "| SNR (dB) | " + " | ".join(f"{c['name']} ({c['symbols_per_image']} sym)" for c in codecs) + \
           " | adaptive | adaptive codec (symbols) |"
    lines = [head, "|" + "---|" * (len(codecs) + 3)]
    for p in pts:
        cells = [f"{p['fixed'][c['name']]:.3f}" for c in codecs]
        a = p["adaptive"]
        lines.append(f"| {p['snr_db']:g} | " + " | ".join(cells) +
                     f" | {a['accuracy']:.3f} | {a['codec']} ({a['symbols_per_image']}) |")
    return "\n".join(lines)


def plot(doc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    snrs = [p["snr_db"] for p in doc["points"]]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for c in doc["codecs"]:
        ax1.plot(snrs, [p["fixed"][c["name"]] for p in doc["points"]], marker="o", ms=3,
                 label=f"fixed {c['name']} ({c['symbols_per_image']} sym)")
        ax2.plot(snrs, [c["symbols_per_image"]] * len(snrs), ls="--")
    ax1.plot(snrs, [p["adaptive"]["accuracy"] for p in doc["points"]], color="k", lw=2, label="adaptive")
    ax2.plot(snrs, [p["adaptive"]["symbols_per_image"] for p in doc["points"]], color="k", lw=2, label="adaptive")
    margin = (doc.get("policy") or {}).get("margin")
    ax1.set(xlabel="link SNR (dB)", ylabel="top-1 accuracy", title=f"{doc['task']}, {doc['channel']} ({doc['split']}, "
                                                                    f"n={doc['n']})")
    ax2.set(xlabel="link SNR (dB)", ylabel="complex symbols per image",
            title=f"adaptive: fewest symbols within {margin:g} of the best" if margin is not None else "adaptive")
    ax1.grid(alpha=0.3)
    ax2.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _codec_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"--codec: expected NAME=BUNDLE, got {text!r}")
    return name, path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rkdsc adaptive", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="combine one-task bundles (one per compression ratio) into one task with "
                                     "codecs and a rate policy evaluated on the validation split")
    b.add_argument("--task", required=True, help="the task name in every source bundle")
    b.add_argument("--codec", action="append", type=_codec_arg, required=True, metavar="NAME=BUNDLE",
                   help="a codec name and its one-task bundle (repeat, at least two)")
    b.add_argument("--default", required=True, help="the codec used without feedback (a --codec NAME)")
    b.add_argument("--preset", required=True, help="the preset whose validation split the policy is evaluated on")
    b.add_argument("--margin", type=float, default=0.02, help="accuracy margin of the policy (default 0.02)")
    b.add_argument("--snr", default="-10:25:5", help="SNR grid in dB (default -10:25:5)")
    b.add_argument("--channel", default="awgn", help="channel of the evaluation (default awgn)")
    b.add_argument("--out", required=True, help="bundle directory to write")
    e = sub.add_parser("eval", help="accuracy and symbols per image against SNR: adaptive vs every fixed codec")
    e.add_argument("--bundle", required=True)
    e.add_argument("--task", default=None, help="task (default: the first)")
    e.add_argument("--preset", required=True, help="the preset whose final-evaluation split is used")
    e.add_argument("--snr", default="-10:25:2.5", help="SNR grid in dB (default -10:25:2.5)")
    e.add_argument("--channel", default="awgn")
    e.add_argument("--out", required=True, help="JSON file to write")
    e.add_argument("--plot", default=None, help="PNG file to write")
    e.add_argument("--markdown", default=None, help="markdown table file to write")
    return p


def cli(argv: list[str] | None = None) -> int:
    from rkdsc.common.experiments.evaluate import join_negative_values, parse_snrs
    from rkdsc.common.train.presets import PresetError, load_preset

    args = build_parser().parse_args(join_negative_values(list(sys.argv[1:] if argv is None else argv)))
    try:
        preset = load_preset(args.preset)
        snrs = parse_snrs(args.snr)
        if args.command == "build":
            codecs = dict(args.codec)
            if len(codecs) < 2:
                raise ValueError("--codec: expected at least two codecs")
            res = build(args.task, codecs, args.default, preset, args.out, args.margin, snrs, args.channel)
            print(f"wrote {args.out}: policy " + ", ".join(f"{r['snr_db']:g} dB -> {r['codec']}"
                                                          for r in res["policy"]["table"]))
            return 0
        doc = evaluate(args.bundle, preset, snrs, args.channel, args.task)
    except (PresetError, ValueError, FileNotFoundError) as exc:
        print(f"rkdsc adaptive: error: {exc}", file=sys.stderr)
        return 2
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot:
        plot(doc, args.plot)
    table = markdown(doc)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(cli())


__all__ = ["build", "evaluate", "markdown", "plot", "cli"]
