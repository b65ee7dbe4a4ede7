"""``rkdsc runs``: the runs on this machine with their key figures side by side.

    rkdsc runs                       # everything under runs/
    rkdsc runs runs/mine runs/demo   # these (a run folder, or a folder of runs)
    rkdsc runs --json

Two kinds of run folder are recognised:

* a training work dir (``rkdsc train``): ``results.json`` -> preset, data set, evaluation split
  and its ``n``, and per method the accuracy at the highest and lowest evaluated SNR (25 and
  -10 dB by default) for AWGN and Rayleigh, with the 95 % Wilson interval of the headline
  figure, encoder parameters and symbols per image;
* a demo / compose output (``rkdsc demo``): ``summary.json`` with ``transmitters`` -> devices,
  images, answered, errors, pooled accuracy over the labelled images (with its 95 % interval),
  the median of the devices' p50 latencies and the largest p99, wall time, ok.

A folder that is neither is searched one and two levels down (``runs/compose/<run id>/``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Iterable

from rkdsc.common.experiments.stats import ci95

METHOD_LABELS = {"rkd-sc": "RKD-SC", "jscc-student": "JSCC-student", "jscc-teacher": "JSCC-teacher"}


def _read(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def kind_of(folder: Path) -> str | None:
    """'train', 'demo' or None."""
    res = _read(folder / "results.json") if (folder / "results.json").is_file() else None
    if res is not None and "methods" in res:
        return "train"
    summ = _read(folder / "summary.json") if (folder / "summary.json").is_file() else None
    if summ is not None and isinstance(summ.get("transmitters"), list):
        return "demo"
    return None


def find_runs(paths: Iterable[str | Path], depth: int = 2) -> list[tuple[str, Path]]:
    """(kind, folder) of every run folder at or below each path (up to ``depth`` levels)."""
    out: list[tuple[str, Path]] = []
    seen: set[Path] = set()

    def visit(folder: Path, level: int) -> None:
        if folder in seen or not folder.is_dir():
            return
        seen.add(folder)
        kind = kind_of(folder)
        if kind:
            out.append((kind, folder))
            return
        if level < depth:
            for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
                visit(child, level + 1)

    for p in paths:
        visit(Path(p), 0)
    return out


def _acc(points: list[dict], snr: float) -> dict | None:
    for p in points or []:
        if abs(float(p["snr_db"]) - snr) < 1e-9:
            return p
    return None


def train_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per method of a training work dir."""
    res = _read(folder / "results.json") or {}
    ev = res.get("eval") or {}
    snrs = ev.get("snrs_db") or []
    hi, lo = (max(snrs), min(snrs)) if snrs else (25.0, -10.0)
    data = (res.get("preset_config") or {}).get("data") or {}
    rows = []
    for m, s in (res.get("methods") or {}).items():
        curves = s.get("curves") or {}
        row: dict[str, Any] = {"run": str(folder), "kind": "train", "preset": res.get("preset"),
                               "dataset": data.get("dataset"), "method": m, "split": ev.get("split"),
                               "n": ev.get("n"), "snr_hi_db": hi, "snr_lo_db": lo,
                               "encoder_params": s.get("encoder_params"), "symbols_per_image": s.get("symbols_per_image"),
                               "wall_s": res.get("wall_s")}
        for ch in ("awgn", "rayleigh"):
            for tag, snr in (("hi", hi), ("lo", lo)):
                p = _acc(curves.get(ch) or [], snr)
                row[f"{ch}_{tag}"] = None if p is None else p["accuracy"]
                n = (p or {}).get("n", ev.get("n"))
                row[f"{ch}_{tag}_ci95"] = None if p is None else (p.get("ci95") or ci95(p["accuracy"], n or 0))
        rows.append(row)
    return rows


def demo_row(folder: Path) -> dict[str, Any]:
    """Pooled figures of a demo output."""
    s = _read(folder / "summary.json") or {}
    txs = s.get("transmitters") or []
    labelled = correct = 0
    for t in txs:
        if t.get("accuracy") is None:
            continue
        n = t.get("labelled")
        n = t.get("answered", 0) if n is None else n
        labelled += n
        correct += round(t["accuracy"] * n)
    p50s = sorted(v for v in ((t.get("latency_ms") or {}).get("p50") for t in txs) if v is not None)
    p99s = [v for v in ((t.get("latency_ms") or {}).get("p99") for t in txs) if v is not None]
    acc = correct / labelled if labelled else None
    return {"run": str(folder), "kind": "demo", "devices": len(txs),
            "images": sum(int(t.get("images") or 0) for t in txs),
            "answered": sum(int(t.get("answered") or 0) for t in txs),
            "errors": sum(int(t.get("errors") or 0) for t in txs),
            "labelled": labelled, "accuracy": acc, "accuracy_ci95": ci95(acc, labelled),
            "p50_ms": p50s[len(p50s) // 2] if p50s else None, "p99_ms": max(p99s) if p99s else None,
            "wall_s": s.get("wall_s"), "ok": s.get("ok"),
            "snr_db": [t.get("effective_snr_db", t.get("snr_db")) for t in txs]}


def _f(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _acc_text(v: float | None, ci: list[float] | None = None) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.1f}" + (f" [{100 * ci[0]:.0f},{100 * ci[1]:.0f}]" if ci else "")


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def format_report(train: list[dict], demos: list[dict]) -> str:
    parts = []
    if train:
        heads = ["run", "preset", "method", "split", "n"]
        rows = []
        for r in train:
            rows.append([r["run"], str(r["preset"]), METHOD_LABELS.get(r["method"], r["method"]), str(r["split"]),
                         _f(r["n"], "d"),
                         _acc_text(r["awgn_hi"], r["awgn_hi_ci95"]), _acc_text(r["awgn_lo"], r["awgn_lo_ci95"]),
                         _acc_text(r["rayleigh_hi"]), _acc_text(r["rayleigh_lo"]),
                         _f(r["encoder_params"], ","), _f(r["symbols_per_image"], "d")])
        hi = {r["snr_hi_db"] for r in train}
        lo = {r["snr_lo_db"] for r in train}
        hi_t = f"{hi.pop():g}" if len(hi) == 1 else "hi"
        lo_t = f"{lo.pop():g}" if len(lo) == 1 else "lo"
        heads += [f"AWGN {hi_t} dB % [95% CI]", f"AWGN {lo_t} dB % [95% CI]", f"Rayl. {hi_t} dB %", f"Rayl. {lo_t} dB %",
                  "enc. params", "symbols"]
        parts.append("training runs (accuracy on the evaluation split; hi/lo = highest/lowest SNR evaluated):\n"
                     + _table(heads, rows))
    if demos:
        rows = [[r["run"], str(r["devices"]), str(r["images"]), str(r["answered"]), str(r["errors"]),
                 _acc_text(r["accuracy"], r["accuracy_ci95"]), _f(r["labelled"], "d"), _f(r["p50_ms"], ".1f"),
                 _f(r["p99_ms"], ".1f"), _f(r["wall_s"], ".1f"), str(r["ok"])] for r in demos]
        parts.append("demo runs (pooled over the devices; p50 = median of the devices' p50, p99 = the largest):\n"
                     + _table(["run", "devices", "images", "answered", "errors", "accuracy % [95% CI]", "n",
                               "p50 ms", "p99 ms", "wall s", "ok"], rows))
    return "\n\n".join(parts) if parts else "no runs found"


def collect(paths: Iterable[str | Path]) -> tuple[list[dict], list[dict]]:
    train, demos = [], []
    for kind, folder in find_runs(paths):
        if kind == "train":
            train += train_rows(folder)
        else:
            demos.append(demo_row(folder))
    return train, demos


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="rkdsc runs",
        description="List training work dirs (results.json of `rkdsc train`) and demo outputs (summary.json of "
                    "`rkdsc demo`) with their key figures side by side: for training runs the accuracy per method "
                    "at the highest and lowest evaluated SNR with n and the 95% Wilson interval; for demo runs the "
                    "devices, answered frames, pooled accuracy and latency percentiles.")
    p.add_argument("dirs", nargs="*", default=["runs"], metavar="DIR",
                   help="run folders, or folders holding runs (searched two levels down; default: runs)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON ({train: [...], demo: [...]})")
    args = p.parse_args(argv)
    missing = [d for d in args.dirs if not Path(d).exists()]
    if missing:
        print(f"rkdsc runs: error: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    train, demos = collect(args.dirs)
    if args.json:
        print(json.dumps({"train": train, "demo": demos}, indent=2))
    else:
        print(format_report(train, demos))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
