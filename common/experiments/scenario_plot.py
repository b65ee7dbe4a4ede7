"""The plot of a shared-medium scenario run: accuracy, SNR and emulated latency against distance
and against emulated time, per device.

    plot_scenario(read_records("OUT"), "OUT/scenario.png")   # rkdsc demo writes it for [medium] runs

A record needs ``transmitter``, ``correct`` (bool or None), ``channel_snr_db``, ``distance_m``,
``emulated_capture_s`` and ``emulated_ms`` (``total``); records without them are skipped.
``scenario_table(records)`` gives the per-device numbers the plot shows (accuracy, emulated
p50 / p99, mean distance and SNR). matplotlib is imported only when plotting (it is part of the
``train`` extra); ``plot_scenario`` returns None without it.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np

__all__ = ["read_records", "scenario_table", "plot_scenario", "write_scenario"]

NEEDED = ("transmitter", "channel_snr_db", "distance_m", "emulated_capture_s", "emulated_ms")


def read_records(out_dir: str | Path) -> list[dict]:
    """Every answered record of ``OUT/edges/*/results.jsonl`` that carries the medium's fields."""
    rows = []
    for path in sorted(Path(out_dir).glob("edges/*/results.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if all(r.get(k) is not None for k in NEEDED):
                rows.append(r)
    return rows


def _by_tx(records: Iterable[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r["transmitter"], []).append(r)
    return out


def scenario_table(records: Iterable[dict]) -> list[dict]:
    rows = []
    for tx, rs in _by_tx(records).items():
        labelled = [r for r in rs if r.get("correct") is not None]
        totals = [r["emulated_ms"]["total"] for r in rs]
        rows.append({"transmitter": tx, "images": len(rs),
                     "accuracy": (sum(bool(r["correct"]) for r in labelled) / len(labelled)) if labelled else None,
                     "emulated_p50_ms": float(np.percentile(totals, 50)),
                     "emulated_p99_ms": float(np.percentile(totals, 99)),
                     "distance_m": float(np.mean([r["distance_m"] for r in rs])),
                     "snr_db": float(np.mean([r["channel_snr_db"] for r in rs]))})
    return sorted(rows, key=lambda r: r["distance_m"])


def _binned_accuracy(x: np.ndarray, correct: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(x.min(), x.max() + 1e-9, bins + 1)
    idx = np.clip(np.digitize(x, edges) - 1, 0, bins - 1)
    centers, acc = [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            centers.append(x[m].mean())
            acc.append(correct[m].mean())
    return np.array(centers), np.array(acc)


def plot_scenario(records: list[dict], path: str | Path, title: str = "") -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    groups = _by_tx(records)
    if not groups:
        return None
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    table = {r["transmitter"]: r for r in scenario_table(records)}
    # against distance: one point per device (accuracy, mean SNR, p50 with a p99 bar)
    d = np.array([table[t]["distance_m"] for t in table])
    axes[0, 0].scatter(d, [table[t]["accuracy"] if table[t]["accuracy"] is not None else math.nan for t in table])
    axes[0, 0].set(xlabel="distance (m)", ylabel="accuracy", title="accuracy vs distance", ylim=(-0.02, 1.02))
    for tx, rs in groups.items():
        axes[0, 1].scatter([r["distance_m"] for r in rs], [r["channel_snr_db"] for r in rs], s=4, alpha=0.5)
    axes[0, 1].set(xlabel="distance (m)", ylabel="SNR (dB)", title="channel SNR per image vs distance")
    p50 = np.array([table[t]["emulated_p50_ms"] for t in table])
    p99 = np.array([table[t]["emulated_p99_ms"] for t in table])
    axes[0, 2].errorbar(d, p50, yerr=[np.zeros_like(p50), p99 - p50], fmt="o", capsize=3)
    axes[0, 2].set(xlabel="distance (m)", ylabel="emulated latency (ms)", title="emulated latency p50 (bar: p99)")
    # against emulated time: per device
    for tx, rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["emulated_capture_s"])
        t = np.array([r["emulated_capture_s"] for r in rs])
        lab = [r for r in rs if r.get("correct") is not None]
        if len(lab) >= 2:
            tl = np.array([r["emulated_capture_s"] for r in lab])
            c, a = _binned_accuracy(tl, np.array([bool(r["correct"]) for r in lab], float), min(10, len(lab)))
            axes[1, 0].plot(c, a, marker=".", label=tx)
        axes[1, 1].plot(t, [r["channel_snr_db"] for r in rs], lw=0.8, label=tx)
        axes[1, 2].plot(t, [r["emulated_ms"]["total"] for r in rs], lw=0.8, label=tx)
    axes[1, 0].set(xlabel="emulated time (s)", ylabel="accuracy (binned)", title="accuracy vs time", ylim=(-0.02, 1.02))
    axes[1, 1].set(xlabel="emulated time (s)", ylabel="SNR (dB)", title="channel SNR vs time")
    axes[1, 2].set(xlabel="emulated time (s)", ylabel="emulated latency (ms)", title="emulated latency vs time")
    if len(groups) <= 8:
        axes[1, 1].legend(fontsize=7)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_scenario(out_dir: str | Path, title: str = "") -> dict:
    """``OUT/scenario.png`` (when matplotlib is there) and ``OUT/scenario.json`` (the per-device
    table) of a finished ``[medium]`` demo run -> {"plot": path or None, "table": [...]}."""
    out_dir = Path(out_dir)
    records = read_records(out_dir)
    rows = scenario_table(records)
    plot = plot_scenario(records, out_dir / "scenario.png", title) if records else None
    result = {"plot": None if plot is None else str(plot), "images": len(records), "table": rows}
    (out_dir / "scenario.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
