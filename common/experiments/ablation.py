"""Fig. 8: top-1 accuracy at -10 dB against the CAT compression ratio.

For each compression ratio ``r`` stage 2 of RKD (``rkdsc.common.train.distill.run_stage2``) is run
again from the work dir's stage-1 student, with the preset's ``cat.compression_ratio``
replaced by ``r`` (so the CAT encoder sends ``floor(F * (1 - r))`` values), into
``WORKDIR/ablation/cr-<r>/``; the trained system is then evaluated on the preset's evaluation
split (the held-back digits, otherwise the validation split; the same split ``rkdsc evaluate
--preset`` uses) over the torch twin of the channel at ``--snr`` (default -10 dB), averaged
over ``--noise-draws`` seeded noise realisations. Output: ``WORKDIR/ablation/ablation.json``
and ``fig8-<label>.png``.

    python -m rkdsc.common.experiments.ablation --workdir runs/cifar10-cpu --preset cifar10-cpu \
        --ratios 0.1,0.2,0.5,0.8,0.9 --epochs 5

JSON::

    {"preset", "workdir", "task", "snr_db", "channels", "epochs", "eval_split", "n",
     "points": [{"compression_ratio", "compact_dim", "symbols_per_image",
                 "accuracy": {"awgn": 0.41, ...}, "accuracy_at_snr": 0.41, "n": 60,
                 "ci95": {"awgn": [0.29, 0.54], ...}, "stage2_dir", "time_s"}],

``n`` is the number of evaluation images and ``ci95`` the 95 % Wilson interval over them
(``rkdsc.common.experiments.stats``; the noise draws are averaged first, so it is the
uncertainty of the finite image set); the plot draws it as error bars.
     "paper": {...}}

A ratio already trained in an earlier call is reused with ``--resume``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from rkdsc.common.cliargs import float_list, str_list
from rkdsc.common.experiments.stats import ci95, yerr

DEFAULT_RATIOS = (0.1, 0.2, 0.5, 0.8, 0.9)
# The paper's Fig. 8 endpoints (accuracy in % at -10 dB, lowest -> highest compression ratio).
PAPER_FIG8 = {"cifar10": (11.73, 63.80), "cifar100": (47.32, 16.15), "tinyimagenet": (12.76, 7.47)}


def _ratio_tag(r: float) -> str:
    return f"cr-{r:g}"


def _preset_for(workdir: Path, preset_name: str | None, sets: Sequence[str] | None):
    """The preset of the work dir: --preset, else the one recorded by stage 1 / the pipeline."""
    from rkdsc.common.train.presets import load_preset, parse_set_args, preset_from_dict

    overrides = parse_set_args(list(sets or []))
    if preset_name:
        return load_preset(preset_name, overrides)
    for f in (workdir / "stage2").glob("*/model.json"):
        spec = json.loads(f.read_text(encoding="utf-8"))
        if isinstance(spec.get("preset_config"), dict):
            from rkdsc.common.train.presets import with_overrides

            return with_overrides(preset_from_dict(spec["preset_config"], name=spec.get("preset", "preset")), overrides)
    for f in (workdir / "results.json", workdir / "stage1" / "stage1.json"):
        if f.is_file():
            name = json.loads(f.read_text(encoding="utf-8")).get("preset")
            if isinstance(name, str) and name:
                return load_preset(name, overrides)
    raise ValueError(f"--workdir {workdir}: cannot tell its preset (no stage2/*/model.json, results.json or "
                     "stage1/stage1.json naming it); pass --preset")


def evaluate_system(system, dataset, snr_db: float, channels: Sequence[str], noise_draws: int, seed: int,
                    batch_size: int, device) -> dict[str, float]:
    """Mean top-1 accuracy per channel over `noise_draws` seeded noise realisations."""
    from rkdsc.common.train.distill import system_accuracy

    out = {}
    for ch in channels:
        accs = [system_accuracy(system, dataset, batch_size, device, snr_db, ch, seed=seed + k)
                for k in range(noise_draws)]
        out[ch] = sum(accs) / len(accs)
    return out


def run_ablation(preset, workdir: str | Path, ratios: Sequence[float] = DEFAULT_RATIOS, *, snr_db: float = -10.0,
                 channels: Sequence[str] = ("awgn",), epochs: int | None = None, noise_draws: int = 3,
                 resume: bool = False, label: str | None = None, plot: bool = True,
                 log: Callable[[str], None] = print) -> dict:
    """Train stage 2 at every ratio (from the work dir's stage-1 student) and evaluate at snr_db."""
    import torch

    from rkdsc.common.models.cat import compact_dim
    from rkdsc.common.models.registry import get_method
    from rkdsc.common.models.spec import read_model_spec
    from rkdsc.common.train.distill import make_tasks, run_stage2
    from rkdsc.common.experiments.evaluate import preset_eval_dataset
    from rkdsc.common.train.presets import with_overrides

    workdir = Path(workdir)
    if not ratios:
        raise ValueError("--ratios: expected at least one compression ratio")
    for r in ratios:
        if not 0.0 <= float(r) < 1.0:
            raise ValueError(f"--ratios: compression ratio {r} outside [0, 1)")
    task = make_tasks([preset], workdir)[0]
    s1 = task.workdir / "stage1" / "student.safetensors"
    if not s1.is_file():
        raise FileNotFoundError(f"{s1}: no stage-1 student in {workdir}; run `rkdsc distill --stage 1` "
                                "(or `rkdsc train`) there first")
    dataset, _, split = preset_eval_dataset(preset)
    out_dir = workdir / "ablation"
    out_dir.mkdir(parents=True, exist_ok=True)
    n_epochs = preset.stage2.epochs if epochs is None else int(epochs)
    points = []
    for r in sorted(float(x) for x in ratios):
        p = with_overrides(preset, {"cat": {"compression_ratio": r}})
        sub = f"ablation/{_ratio_tag(r)}"
        log(f"ablation: compression ratio {r:g} -> compact dim {compact_dim(p.teacher.feature_dim, r)}, "
            f"stage 2 for {n_epochs} epochs into {workdir / sub}")
        t0 = time.time()
        summary = run_stage2(p, workdir, resume=resume, out_name=sub, epochs=n_epochs, log=log)
        from rkdsc.common.train.common import pick_device

        dev = pick_device()
        system, spec = get_method("rkd-sc").load(workdir / sub / task.name, device=dev)
        acc = evaluate_system(system, dataset, snr_db, channels, noise_draws, preset.seed,
                              preset.stage2.batch_size, dev)
        cd = read_model_spec(spec).compact_dim
        n_eval = len(dataset)
        points.append({"compression_ratio": r, "compact_dim": cd, "symbols_per_image": (cd + 1) // 2,
                       "accuracy": acc, "accuracy_at_snr": acc[channels[0]], "n": n_eval,
                       "ci95": {c: ci95(a, n_eval) for c, a in acc.items()},
                       "stage2_dir": str(workdir / sub), "stage2_time_s": summary.get("time_s"),
                       "time_s": round(time.time() - t0, 3)})
        log(f"ablation: ratio {r:g}: accuracy at {snr_db:g} dB " +
            ", ".join(f"{c} {100 * a:.2f}%" for c, a in acc.items()))
        del system
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    ds_key = preset.data.dataset
    doc: dict[str, Any] = {
        "preset": preset.name, "dataset": ds_key, "workdir": str(workdir), "task": task.name,
        "snr_db": float(snr_db), "channels": list(channels), "epochs": n_epochs, "noise_draws": noise_draws,
        "eval_split": split, "n": len(dataset), "depths": task.depths, "points": points,
        "paper": {"dataset": ds_key, "endpoints_pct": PAPER_FIG8.get(ds_key),
                  "note": "paper Fig. 8: accuracy at -10 dB from the lowest to the highest compression ratio"},
    }
    if plot:
        doc["png"] = str(plot_fig8([doc], out_dir / f"fig8-{label or preset.name}.png"))
    (out_dir / "ablation.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc


def plot_fig8(docs: Sequence[dict], out_png: str | Path, title: str | None = None) -> Path:
    """Accuracy at the ablation SNR against the compression ratio, one line per document."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.6, 4.0))
    for doc in docs:
        pts = sorted(doc["points"], key=lambda p: p["compression_ratio"])
        n = doc.get("n")
        for ch in doc["channels"]:
            accs = [p["accuracy"][ch] for p in pts]
            ns = [int(p.get("n") or n or 0) for p in pts]
            ax.errorbar([p["compression_ratio"] for p in pts], [100 * a for a in accs], yerr=yerr(accs, ns),
                        marker="o", capsize=3,
                        label=f"{doc.get('dataset', doc.get('preset'))} ({ch}, this run, n={ns[0] if ns else '?'})")
        paper = (doc.get("paper") or {}).get("endpoints_pct")
        if paper and pts:
            xs = [pts[0]["compression_ratio"], pts[-1]["compression_ratio"]]
            ax.plot(xs, list(paper), ls="--", marker="x", color="grey",
                    label=f"{doc.get('dataset')} (paper endpoints)")
    snr = docs[0]["snr_db"] if docs else -10.0
    ax.set(xlabel="CAT compression ratio", ylabel=f"top-1 accuracy at {snr:g} dB (%), bars: 95% Wilson CI",
           title=title or "Fig. 8: compression-ratio ablation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png


def _pct_ci(acc: float, n: int) -> str:
    ci = ci95(acc, n)
    return f"{100 * acc:.2f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc ablation",
        description="Fig. 8 of the paper: retrain RKD stage 2 (from the work dir's stage-1 student) at several CAT "
                    "compression ratios and report the top-1 accuracy at -10 dB for each. Writes "
                    "WORKDIR/ablation/ablation.json and a PNG.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--workdir", required=True, metavar="DIR",
                   help="pipeline / distill work dir holding stage1/student.safetensors")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="preset of the work dir (default: the one recorded in DIR/stage2/*/model.json, "
                        "DIR/results.json or DIR/stage1/stage1.json)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override a preset value (TOML literal), e.g. --set stage2.batch_size=64")
    p.add_argument("--ratios", type=float_list(lo=0.0, hi=1.0, hi_open=True, example="0.1,0.5,0.9"), default=list(DEFAULT_RATIOS),
                   help="comma-separated CAT compression ratios in [0, 1)")
    p.add_argument("--snr", type=float, default=-10.0, help="evaluation SNR in dB (Es/N0 per complex symbol)")
    p.add_argument("--channels", default="awgn",
                   help="comma-separated evaluation channels (awgn, rayleigh); the first is the headline")
    p.add_argument("--epochs", type=int, default=None, help="stage-2 epochs per ratio (default: the preset's)")
    p.add_argument("--noise-draws", type=int, default=3, help="noise realisations averaged per evaluation")
    p.add_argument("--resume", action="store_true", help="reuse ratios already trained in DIR/ablation/")
    p.add_argument("--label", default=None, help="label of the PNG file name (default: the preset name)")
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: $RKDSC_DEVICE, else CUDA if present)")
    return p


def cli(argv: list[str] | None = None) -> int:
    import os

    args = build_parser().parse_args(argv)
    if args.device:
        os.environ["RKDSC_DEVICE"] = args.device
    channels = str_list(args.channels)
    if args.noise_draws < 1:
        print("rkdsc ablation: --noise-draws must be >= 1", file=sys.stderr)
        return 2
    try:
        preset = _preset_for(Path(args.workdir), args.preset, args.set)
        doc = run_ablation(preset, args.workdir, args.ratios, snr_db=args.snr, channels=channels,
                           epochs=args.epochs, noise_draws=args.noise_draws, resume=args.resume, label=args.label)
    except (ValueError, FileNotFoundError) as exc:
        print(f"rkdsc ablation: error: {exc}", file=sys.stderr)
        return 2
    print(f"| compression ratio | compact dim | n | " + " | ".join(
        f"acc {c} @ {args.snr:g} dB (%) [95% CI]" for c in channels) + " |")
    print("|---|---|---|" + "---|" * len(channels))
    for p in doc["points"]:
        n = p.get("n", doc["n"])
        print(f"| {p['compression_ratio']:g} | {p['compact_dim']} | {n} | "
              + " | ".join(_pct_ci(p["accuracy"][c], n) for c in channels) + " |")
    print(f"\nwrote {Path(args.workdir) / 'ablation' / 'ablation.json'}" + (f" and {doc['png']}" if doc.get("png") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
