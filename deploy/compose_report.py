"""Collect the edge devices' results of a compose run into one summary and print a table.

    python deploy/compose_report.py [--out runs/compose] [--expect edge-near,edge-mid,...]

Reads ``OUT/<id>/summary.json`` (written by each edge device, ``rkdsc edge --out OUT/<id>``)
and writes ``OUT/summary.json`` in the format of ``rkdsc demo``:
``{"transmitters": [{"id", "task", "snr_db", "fading", "images", "answered", "errors",
"accuracy", "latency_ms": {"p50", "p99"}, "symbols_per_image", ...}], "wall_s"}``
(``wall_s``: the longest edge run). Exit status 0 when every expected device (default:
every folder found) answered every image, 1 otherwise. Standard library only; the compose
`report` service runs it once all edge devices have finished.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tomllib
from pathlib import Path


def topology_order(config: str | None) -> list[str]:
    """Transmitter ids in the order of the topology file (empty when unreadable)."""
    try:
        with open(config or "", "rb") as fh:
            return [t["id"] for t in tomllib.load(fh).get("transmitters", []) if isinstance(t, dict) and "id" in t]
    except (OSError, ValueError, KeyError):
        return []


def collect(out_dir: Path, expect: list[str] | None = None,
            order: list[str] | None = None) -> tuple[dict, list[str]]:
    """(summary dict, problems) from OUT/*/summary.json; rows in `order` first (topology order)."""
    problems: list[str] = []
    order = order or []
    found = {p.parent.name: p for p in sorted(out_dir.glob("*/summary.json"))}
    ids = list(expect) if expect else sorted(found, key=lambda i: (order.index(i) if i in order else len(order), i))
    rows = []
    for tid in ids:
        path = found.get(tid)
        if path is None:
            problems.append(f"{tid}: no {out_dir / tid / 'summary.json'}")
            continue
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: unreadable: {exc}")
            continue
        rows.append(row)
        if row.get("stream_error"):
            problems.append(f"{tid}: stream error: {row['stream_error']}")
        if row.get("answered") != row.get("images") or row.get("errors"):
            problems.append(f"{tid}: {row.get('answered')}/{row.get('images')} images answered, "
                            f"{row.get('errors')} errors")
        if not row.get("images"):
            problems.append(f"{tid}: no images")
    wall = max((float(r.get("wall_s") or 0.0) for r in rows), default=0.0)
    return {"transmitters": rows, "wall_s": wall, "source": "docker compose"}, problems


def table(summary: dict) -> str:
    head = f"{'id':<12} {'task':<8} {'snr_db':>7} {'fading':<9} {'images':>6} {'answered':>8} " \
           f"{'errors':>6} {'accuracy':>8} {'p50 ms':>8} {'p99 ms':>8} {'symbols':>7}"
    lines = [head, "-" * len(head)]

    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "n/a"

    for r in summary["transmitters"]:
        lat = r.get("latency_ms") or {}
        lines.append(f"{r.get('id', '?'):<12} {r.get('task', '?'):<8} {num(r.get('snr_db'), '7.1f')} "
                     f"{r.get('fading', '?'):<9} {num(r.get('images'), '6d')} {num(r.get('answered'), '8d')} "
                     f"{num(r.get('errors'), '6d')} {num(r.get('accuracy'), '8.4f')} "
                     f"{num(lat.get('p50'), '8.2f')} {num(lat.get('p99'), '8.2f')} "
                     f"{num(r.get('symbols_per_image'), '7d')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compose_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("RKDSC_OUT", "runs/compose"),
                   help="results folder with one sub-folder per edge device (default: $RKDSC_OUT or runs/compose)")
    p.add_argument("--config", default=os.environ.get("RKDSC_CONFIG", "deploy/topology.toml"),
                   help="topology file whose transmitter order the table follows (default: $RKDSC_CONFIG)")
    p.add_argument("--expect", default=None,
                   help="comma-separated transmitter ids that must be present (default: every folder found)")
    args = p.parse_args(argv)
    out = Path(args.out)
    expect = [s for s in args.expect.split(",") if s] if args.expect else None
    summary, problems = collect(out, expect, topology_order(args.config))
    print(table(summary))
    try:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {out / 'summary.json'}")
    except OSError as exc:
        problems.append(f"{out / 'summary.json'}: cannot write: {exc}")
    for msg in problems:
        print(f"compose_report: {msg}", file=sys.stderr)
    if not summary["transmitters"]:
        print(f"compose_report: no edge results under {out}", file=sys.stderr)
        return 1
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
