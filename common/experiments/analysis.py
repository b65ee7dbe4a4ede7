"""Search analysis: the paper's Fig. 7 and Table III from ``arch.json`` files.

Input: the ``arch.json`` written by ``rkdsc.common.train.search.run_search`` for KDL-DARTS and DARTS
(``{"method", "depths", "candidate_params", "selected_params", "history": [{"epoch", "val_acc",
"selected_depths", "selected_params", ...}], ...}``).

* Fig. 7 (one PNG per data set): (left) validation accuracy of the supernet per search epoch,
  both methods; (centre) the selected architecture's parameter count per epoch (lines) over a
  histogram of those counts (bars); (right, one panel per layer 1-4) how often each
  candidate's parameter count was selected across the epochs, both methods.
* Table III: the per-layer parameters of the final architectures,
  ``candidate_params[l][depth_l - 1]`` (the layer's blocks; the Eq. (14) shortcut is shared by
  every candidate of a layer and is not counted, as in the paper's table, whose totals are the
  sums of its layer columns), and their total.

    python -m rkdsc.common.experiments.analysis --arch runs/c10/search-kdl-darts/arch.json \
        --arch runs/c10/search-darts/arch.json --label cifar10 --out-dir docs/figures
    rkdsc report search --workdir runs/cifar10-cpu --out-dir docs/figures    # same, via report
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

METHOD_ORDER = ("darts", "kdl-darts")  # Table III row order (paper: DARTS, then KDL-DARTS)
METHOD_LABEL = {"darts": "DARTS", "kdl-darts": "KDL-DARTS"}
METHOD_COLOR = {"darts": "tab:orange", "kdl-darts": "tab:blue"}
N_LAYERS = 4


class ArchError(ValueError):
    """An arch.json that lacks a field or has a malformed one (the message names both)."""


def _need(d: dict, key: str, src: str) -> Any:
    if key not in d:
        raise ArchError(f"{src}: missing field {key!r}")
    return d[key]


def validate_arch(arch: dict, src: str = "arch.json") -> dict:
    """Check the fields analysis uses; returns ``arch`` with ints normalised."""
    if not isinstance(arch, dict):
        raise ArchError(f"{src}: expected a JSON object, got {type(arch).__name__}")
    method = str(_need(arch, "method", src)).lower()
    depths = _need(arch, "depths", src)
    if not (isinstance(depths, list) and len(depths) == N_LAYERS and all(isinstance(d, int) and d >= 1 for d in depths)):
        raise ArchError(f"{src}: field 'depths' must be {N_LAYERS} ints >= 1, got {depths!r}")
    cand = _need(arch, "candidate_params", src)
    if not (isinstance(cand, list) and len(cand) == N_LAYERS and all(isinstance(r, list) and r for r in cand)):
        raise ArchError(f"{src}: field 'candidate_params' must be {N_LAYERS} non-empty lists, got {cand!r}")
    for layer, (d, row) in enumerate(zip(depths, cand)):
        if d > len(row):
            raise ArchError(f"{src}: field 'depths'[{layer}]={d} exceeds the {len(row)} candidates of "
                            f"'candidate_params'[{layer}]")
    history = arch.get("history") or []
    if not isinstance(history, list):
        raise ArchError(f"{src}: field 'history' must be a list, got {type(history).__name__}")
    for i, h in enumerate(history):
        sd = h.get("selected_depths")
        if sd is not None and (len(sd) != N_LAYERS or any(not 1 <= int(x) <= len(cand[k]) for k, x in enumerate(sd))):
            raise ArchError(f"{src}: field 'history'[{i}].selected_depths={sd!r} is not {N_LAYERS} valid depths")
    arch = dict(arch)
    arch["method"] = method
    return arch


def load_arch(path: str | Path) -> dict:
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            arch = json.load(f)
    except FileNotFoundError:
        raise ArchError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ArchError(f"{path}: not valid JSON ({exc})") from None
    return validate_arch(arch, str(path))


def layer_params(arch: dict, depths: list[int] | None = None) -> list[int]:
    """Per-layer parameters of `depths` (default: the final depths)."""
    depths = arch["depths"] if depths is None else depths
    return [int(arch["candidate_params"][l][int(d) - 1]) for l, d in enumerate(depths)]


def _acc_pct(v: Any) -> float | None:
    """Accuracies are stored as fractions in [0, 1] or percentages; return a percentage."""
    if v is None:
        return None
    v = float(v)
    return v * 100.0 if v <= 1.0 else v


def history_series(arch: dict) -> dict:
    """Per-epoch series: epochs, val_acc (%), selected_params (layer sum), per-layer params."""
    epochs, acc, total, per_layer = [], [], [], [[] for _ in range(N_LAYERS)]
    for i, h in enumerate(arch.get("history") or []):
        epochs.append(int(h.get("epoch", i)))
        acc.append(_acc_pct(h.get("val_acc")))
        sd = h.get("selected_depths")
        if sd is not None:
            lp = layer_params(arch, [int(x) for x in sd])
            total.append(sum(lp))
            for l in range(N_LAYERS):
                per_layer[l].append(lp[l])
        else:
            total.append(None)
            for l in range(N_LAYERS):
                per_layer[l].append(None)
    return {"epochs": epochs, "val_acc_pct": acc, "selected_params": total, "layer_params": per_layer}


def final_accuracy(arch: dict) -> dict:
    """Last and best validation accuracy of the search (percent; None without a history)."""
    accs = [a for a in history_series(arch)["val_acc_pct"] if a is not None]
    return {"final_val_acc_pct": accs[-1] if accs else None, "best_val_acc_pct": max(accs) if accs else None}


def table_iii(archs: dict[str, dict], label: str = "") -> dict:
    """Table III rows for the given methods (keys "darts" / "kdl-darts") + the comparison."""
    rows = []
    for method in sorted(archs, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m)):
        arch = archs[method]
        lp = layer_params(arch)
        rows.append({"dataset": label, "method": method, "depths": list(arch["depths"]),
                     "layer_params": lp, "layer_params_m": [p / 1e6 for p in lp],
                     "total_params": sum(lp), "total_params_m": sum(lp) / 1e6,
                     "selected_params_reported": arch.get("selected_params"),
                     "epochs": len(arch.get("history") or []), **final_accuracy(arch)})
    doc: dict[str, Any] = {"dataset": label, "rows": rows, "comparison": None}
    by = {r["method"]: r for r in rows}
    if "darts" in by and "kdl-darts" in by:
        d, k = by["darts"], by["kdl-darts"]
        cmp: dict[str, Any] = {
            "param_reduction_pct": (100.0 * (d["total_params"] - k["total_params"]) / d["total_params"]
                                    if d["total_params"] else None)}
        for key in ("final_val_acc_pct", "best_val_acc_pct"):
            a, b = k[key], d[key]
            cmp[key.replace("_pct", "_gain_pp")] = (a - b) if a is not None and b is not None else None
            cmp[key.replace("_pct", "_gain_rel_pct")] = (100.0 * (a - b) / b) if a is not None and b else None
        doc["comparison"] = cmp
    return doc


def table_iii_markdown(tables: list[dict]) -> str:
    lines = ["| Dataset | Method | Depths | L1 (M) | L2 (M) | L3 (M) | L4 (M) | Total (M) | final val acc (%) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for t in tables:
        for r in t["rows"]:
            acc = "n/a" if r["final_val_acc_pct"] is None else f"{r['final_val_acc_pct']:.2f}"
            lines.append(f"| {r['dataset'] or '-'} | {METHOD_LABEL.get(r['method'], r['method'])} | "
                         f"{r['depths']} | " + " | ".join(f"{p:.4f}" for p in r["layer_params_m"])
                         + f" | {r['total_params_m']:.4f} | {acc} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- Fig. 7

def plot_fig7(archs: dict[str, dict], out_png: str | Path, title: str = "") -> Path:
    """One row of Fig. 7 for one data set (see module docstring); returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    methods = sorted(archs, key=lambda m: (METHOD_ORDER.index(m) if m in METHOD_ORDER else 99, m))
    series = {m: history_series(archs[m]) for m in methods}
    fig = plt.figure(figsize=(17, 4.2), constrained_layout=True)
    grid = fig.add_gridspec(1, 3, width_ratios=[1.0, 1.2, 2.4])
    ax_acc = fig.add_subplot(grid[0])
    ax_par = fig.add_subplot(grid[1])
    sub = grid[2].subgridspec(1, N_LAYERS)
    ax_layers = [fig.add_subplot(sub[l]) for l in range(N_LAYERS)]

    for m in methods:
        s, color, name = series[m], METHOD_COLOR.get(m), METHOD_LABEL.get(m, m)
        pts = [(e, a) for e, a in zip(s["epochs"], s["val_acc_pct"]) if a is not None]
        if pts:
            ax_acc.plot(*zip(*pts), color=color, label=name, marker="." if len(pts) < 30 else None)
    ax_acc.set(xlabel="search epoch", ylabel="validation accuracy (%)", title="accuracy")
    ax_acc.grid(alpha=0.3)
    ax_acc.legend(fontsize=8)

    # centre: histogram of the selected total parameters (bars, bottom axis = count) and the
    # per-epoch evolution (lines, top axis = epoch)
    ax_ev = ax_par.twiny()
    all_tot = [t for m in methods for t in series[m]["selected_params"] if t is not None]
    if all_tot:
        lo, hi = min(all_tot) / 1e6, max(all_tot) / 1e6
        bins = 12 if hi > lo else 1
        for m in methods:
            tot = [t / 1e6 for t in series[m]["selected_params"] if t is not None]
            if tot:
                ax_par.hist(tot, bins=bins, range=(lo, hi + 1e-9) if hi > lo else (lo - 0.01, lo + 0.01),
                            orientation="horizontal", alpha=0.35, color=METHOD_COLOR.get(m),
                            label=f"{METHOD_LABEL.get(m, m)} (histogram)")
        for m in methods:
            s = series[m]
            pts = [(e, t / 1e6) for e, t in zip(s["epochs"], s["selected_params"]) if t is not None]
            if pts:
                ax_ev.plot(*zip(*pts), color=METHOD_COLOR.get(m), lw=1.5)
    ax_par.set(xlabel="epochs selected (bars)", ylabel="selected parameters (M)", title="selected parameters")
    ax_ev.set_xlabel("search epoch (lines)", fontsize=8)
    ax_par.legend(fontsize=7, loc="lower right")
    ax_par.grid(alpha=0.3)

    # right: per-layer selection frequency of each candidate's parameter count
    for l, ax in enumerate(ax_layers):
        width = 0.8 / max(1, len(methods))
        cands = max(len(archs[m]["candidate_params"][l]) for m in methods)
        for i, m in enumerate(methods):
            counts = Counter(p for p in series[m]["layer_params"][l] if p is not None)
            cand = archs[m]["candidate_params"][l]
            freq = [counts.get(int(c), 0) for c in cand]
            xs = [j + 1 + (i - (len(methods) - 1) / 2) * width for j in range(len(cand))]
            ax.bar(xs, freq, width=width, color=METHOD_COLOR.get(m), label=METHOD_LABEL.get(m, m))
        ref = archs[methods[0]]["candidate_params"][l]
        ax.set_xticks(range(1, cands + 1))
        ax.set_xticklabels([f"{j + 1}\n{ref[j] / 1e6:.3f}" if j < len(ref) else str(j + 1) for j in range(cands)],
                           fontsize=6)
        ax.set(title=f"layer {l + 1}", xlabel="blocks / params (M)")
        if l == 0:
            ax.set_ylabel("epochs selected")
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


# ----------------------------------------------------------------------------- work dirs

def find_archs(workdir: str | Path) -> dict[str, Path]:
    """{"kdl-darts": path, "darts": path} for the arch.json files present in a work dir."""
    workdir = Path(workdir)
    found = {}
    for method in ("kdl-darts", "darts"):
        p = workdir / f"search-{method}" / "arch.json"
        if p.is_file():
            found[method] = p
    return found


def analyze(arch_paths: dict[str, str | Path], label: str, out_dir: str | Path) -> dict:
    """Table III (JSON + Markdown) and the Fig. 7 PNG for one data set; returns the document."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archs = {}
    for key, p in arch_paths.items():
        arch = load_arch(p)
        archs[arch["method"] if arch["method"] in METHOD_ORDER else key] = arch
    doc = table_iii(archs, label)
    slug = label or "search"
    doc["fig7_png"] = str(plot_fig7(archs, out_dir / f"fig7-{slug}.png",
                                    title=f"Fig. 7 ({slug}): KDL-DARTS vs DARTS"))
    doc["series"] = {m: history_series(a) for m, a in archs.items()}
    doc["sources"] = {m: str(p) for m, p in arch_paths.items()}
    (out_dir / f"table3-{slug}.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    (out_dir / f"table3-{slug}.md").write_text(table_iii_markdown([doc]) + "\n", encoding="utf-8")
    return doc


def analyze_workdir(workdir: str | Path, out_dir: str | Path, label: str | None = None) -> dict | None:
    """analyze() on the arch.json files of a pipeline work dir; None when it has none."""
    paths = find_archs(workdir)
    if not paths:
        return None
    return analyze(paths, label or Path(workdir).name, out_dir)


def build_parser(prog: str = "rkdsc report search") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Fig. 7 (search curves and per-layer selection histograms, PNG) and Table III "
                    "(per-layer parameters of the final architectures, Markdown + JSON) from KDL-DARTS / "
                    "DARTS arch.json files.")
    p.add_argument("--arch", action="append", default=[], metavar="FILE",
                   help="an arch.json (repeat for KDL-DARTS and DARTS); the method is read from the file")
    p.add_argument("--workdir", action="append", default=[], metavar="DIR",
                   help="a pipeline work dir with search-kdl-darts/ and search-darts/ (repeatable)")
    p.add_argument("--label", default=None, help="data-set label for --arch files (default: 'search')")
    p.add_argument("--out-dir", default="docs/figures", help="where the PNGs, table3-*.json and *.md go")
    return p


def cli(argv: list[str] | None = None, prog: str = "rkdsc report search") -> int:
    args = build_parser(prog).parse_args(argv)
    if not args.arch and not args.workdir:
        print(f"{prog}: give --arch FILE (twice, KDL-DARTS and DARTS) or --workdir DIR", file=sys.stderr)
        return 2
    docs = []
    try:
        if args.arch:
            paths = {}
            for p in args.arch:
                paths[load_arch(p)["method"]] = p
            docs.append(analyze(paths, args.label or "search", args.out_dir))
        for wd in args.workdir:
            doc = analyze_workdir(wd, args.out_dir)
            if doc is None:
                print(f"{prog}: {wd}: no search-*/arch.json (not run)", file=sys.stderr)
            else:
                docs.append(doc)
    except ArchError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    print(table_iii_markdown(docs))
    for d in docs:
        c = d["comparison"]
        if c:
            print(f"\n{d['dataset']}: KDL-DARTS vs DARTS: {c['param_reduction_pct']:.1f}% fewer parameters"
                  + ("" if c["final_val_acc_gain_pp"] is None else
                     f", final val accuracy {c['final_val_acc_gain_pp']:+.2f} pp") + f"; figure {d['fig7_png']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli(prog="python -m rkdsc.common.experiments.analysis"))
