"""Collect the edge devices' results of one compose run into one summary and print a table.

    python deploy/compose_report.py [--out runs/compose] [--run ID] [--expect edge-near,...]
                                    [--discover edge] [--timeout 900]

Which run: ``--run``, else ``RKDSC_RUN_ID``, else ``OUT/current-run`` (written by the compose
`run` service, deploy/compose_run.py, at every ``docker compose up``); the run's folder is
``OUT/<run id>/``. Without any of these, OUT itself is read as one run's folder. Only that
folder is read, so results of earlier runs never leak into this summary.

Waiting: every device folder of the run has a ``status.json`` (deploy/edge_entrypoint.py,
heartbeat every 2 s while the edge runs, exit status at the end). The report waits until
every device it knows of has finished: the ``--expect`` ids, every device folder of the run,
and (``--discover SERVICE``) every running replica of a scaled service, found through the
compose network's DNS (``SERVICE`` -> addresses -> ``<project>-SERVICE-<n>`` -> ``edge-<n>``).
A device whose heartbeat stopped for ``--stale`` seconds without an exit status counts as
dead; after ``--timeout`` seconds the devices still running count as failed.

Writes ``OUT/<run id>/summary.json`` and ``OUT/summary.json`` in the format of ``rkdsc demo``:
``{"transmitters": [{"id", "task", "snr_db", "fading", "images", "answered", "errors",
"accuracy", "latency_ms": {"p50", "p99"}, "symbols_per_image", ...}], "wall_s", "run_id",
"failed": [{"id", "exit_code", "reason"}], "problems": [...], "tasks": [{"task", "transmitters",
"images", "answered", "errors", "labelled", "correct", "accuracy", ...}]}`` (``wall_s``: the
longest edge run; ``tasks``: the devices of each task pooled, printed as a second table). Exit status 0 when every device answered every image and exited 0, 1 otherwise, with one
line per failed or missing device on stderr. Standard library only; the compose `report`
service runs it.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edge_entrypoint  # noqa: E402  (run ids, DNS helpers; standard library only)


def topology_order(config: str | None) -> list[str]:
    """Transmitter ids in the order of the topology file (empty when unreadable)."""
    try:
        with open(config or "", "rb") as fh:
            return [t["id"] for t in tomllib.load(fh).get("transmitters", []) if isinstance(t, dict) and "id" in t]
    except (OSError, ValueError, KeyError):
        return []


def _read_json(path: Path) -> tuple[dict | None, str | None]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path}: unreadable: {exc}"
    return (data, None) if isinstance(data, dict) else (None, f"{path}: not a JSON object")


def _failure_reason(status: dict) -> str:
    tail = [line for line in status.get("stderr_tail") or [] if line.strip()]
    return tail[-1] if tail else "no error output"


def _natural(tid: str) -> list:
    """Sort key: edge-2 before edge-10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", tid)]


def collect(out_dir: Path, expect: list[str] | None = None, order: list[str] | None = None,
            lost: dict[str, str] | None = None) -> tuple[dict, list[str]]:
    """(summary dict, problems) from OUT/*/summary.json (+ status.json); rows in `order` first
    (topology order). `lost`: id -> why it counts as failed without an exit status (waiting)."""
    problems: list[str] = []
    order = order or []
    lost = lost or {}
    found = {p.name for p in out_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
             and ((p / "summary.json").exists() or (p / "status.json").exists())} if out_dir.is_dir() else set()
    known = set(found) | set(lost) | set(expect or [])
    ids = sorted(known, key=lambda i: (order.index(i) if i in order else len(order), _natural(i)))
    rows, failed = [], []
    for tid in ids:
        status, err = _read_json(out_dir / tid / "status.json")
        if err:
            problems.append(err)
        if tid in lost:
            failed.append({"id": tid, "exit_code": None, "reason": lost[tid]})
            problems.append(f"{tid}: failed: {lost[tid]}")
            continue
        code = status.get("exit_code") if status else None
        if status and code not in (0, None):
            reason = _failure_reason(status)
            failed.append({"id": tid, "exit_code": code, "reason": reason})
            problems.append(f"{tid}: failed (exit status {code}): {reason}")
        row, err = _read_json(out_dir / tid / "summary.json")
        if row is None:
            if err:
                problems.append(err)
            elif not (status and code not in (0, None)):
                why = "never started" if tid not in found else f"no {out_dir / tid / 'summary.json'}"
                problems.append(f"{tid}: missing: {why}")
                failed.append({"id": tid, "exit_code": code, "reason": why})
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
    return {"transmitters": rows, "wall_s": wall, "source": "docker compose", "failed": failed}, problems


def resolve_run(out: Path, run: str | None, env=os.environ) -> tuple[Path, str | None]:
    """(folder of the run's device folders, run id or None for the plain OUT layout)."""
    run = run or env.get("RKDSC_RUN_ID")
    if not run:
        try:
            run = (out / edge_entrypoint.CURRENT_RUN).read_text().strip() or None
        except OSError:
            run = None
    if run is None:
        return out, None
    if not edge_entrypoint.valid_run_id(run):
        raise ValueError(f"run id {run!r}: expected letters, digits, '.', '_', '-'")
    return out / run, run


def discover(services: list[str], timeout_s: float = 1.0) -> set[str]:
    """Transmitter ids (edge-<n>) of the running replicas of `services` (compose DNS): the
    service name's addresses, each one's PTR name ``<project>-<service>-<n>.<network>``
    (names of any other shape, e.g. a host outside compose, are ignored)."""
    ids = set()
    for svc in services:
        shape = re.compile(rf"^.+[-_]{re.escape(svc)}[-_](\d+)$")
        for ip in edge_entrypoint.lookup_a(svc, timeout_s=timeout_s):
            name = edge_entrypoint.reverse_dns(ip, timeout_s=timeout_s) or ""
            m = shape.match(name.split(".")[0])
            if m:
                ids.add(f"edge-{int(m.group(1))}")
    return ids


def wait_for_devices(run_dir: Path, expect: list[str], services: list[str], timeout_s: float,
                     stale_s: float, settle_s: float = 5.0, start_grace_s: float = 60.0, poll_s: float = 1.0,
                     log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> dict[str, str]:
    """Block until every known device of the run has an exit status (see the module doc).
    Returns id -> reason for the devices that count as failed without one (dead, timed out,
    never started). A known device without a status.json is waited for `start_grace_s`
    seconds; the first `settle_s` seconds are always waited (replicas still starting)."""
    t0 = time.monotonic()
    seen: set[str] = set(expect)
    last_log = 0.0
    next_dns = 0.0
    while True:
        now = time.monotonic()
        if services and now >= next_dns:
            seen |= discover(services)
            next_dns = now + 5.0
        if run_dir.is_dir():
            seen |= {p.name for p in run_dir.iterdir() if (p / "status.json").exists() or (p / "summary.json").exists()}
        pending, lost = {}, {}
        for tid in sorted(seen):
            status, _ = _read_json(run_dir / tid / "status.json")
            if status is None:
                if (run_dir / tid / "summary.json").exists():
                    continue  # finished without a supervisor (plain `rkdsc edge --out`)
                if time.monotonic() - t0 < start_grace_s:
                    pending[tid] = "not started yet"
                else:
                    lost[tid] = f"never started (no status.json after {start_grace_s:g} s)"
            elif status.get("state") != "exited":
                age = time.time() - float(status.get("heartbeat") or status.get("started") or 0)
                if age > stale_s:
                    lost[tid] = f"no heartbeat for {age:.0f} s and no exit status (killed?)"
                else:
                    pending[tid] = "running"
        waiting = {t: w for t, w in pending.items()}
        elapsed = now - t0
        if not waiting and elapsed >= min(settle_s, timeout_s):
            return lost
        if elapsed >= timeout_s:
            return {**lost, **{t: f"still {w} after {timeout_s:g} s (--timeout)" for t, w in waiting.items()}}
        if waiting and now - last_log >= 10.0:
            log(f"compose_report: waiting for {len(waiting)} device(s): "
                + ", ".join(f"{t} ({w})" for t, w in waiting.items()))
            last_log = now
        time.sleep(poll_s)


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
                     f"{num(r.get('symbols_per_image'), '7g')}")
    return "\n".join(lines)


def task_totals(rows: list[dict]) -> list[dict]:
    """Per task, the devices of that task pooled (as ``rkdsc demo``'s ``tasks``): transmitters,
    images, answered, errors, labelled, correct, accuracy, symbols_per_image; first-seen order."""
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(str(r.get("task", "?")), {"task": str(r.get("task", "?")), "transmitters": [],
                                                     "images": 0, "answered": 0, "errors": 0, "labelled": 0,
                                                     "correct": 0, "symbols_per_image": r.get("symbols_per_image")})
        t["transmitters"].append(r.get("id"))
        for key in ("images", "answered", "errors", "labelled", "correct"):
            t[key] += int(r.get(key) or 0)
    for t in out.values():
        t["accuracy"] = t["correct"] / t["labelled"] if t["labelled"] else None
        pairs = [(r.get("symbols_per_image"), int(r.get("answered") or 0)) for r in rows
                 if str(r.get("task", "?")) == t["task"]]
        if all(isinstance(k, (int, float)) for k, _ in pairs) and sum(n for _, n in pairs):
            t["symbols_per_image"] = sum(k * n for k, n in pairs) / sum(n for _, n in pairs)
    return list(out.values())


def task_table(tasks: list[dict]) -> str:
    head = f"{'task':<12} {'devices':>7} {'images':>6} {'answered':>8} {'errors':>6} {'accuracy':>8} {'n':>6}"
    lines = [head, "-" * len(head)]
    for t in tasks:
        acc = "n/a" if t["accuracy"] is None else f"{t['accuracy']:8.4f}"
        lines.append(f"{t['task']:<12} {len(t['transmitters']):>7} {t['images']:>6} {t['answered']:>8} "
                     f"{t['errors']:>6} {acc:>8} {t['labelled']:>6}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="compose_report.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("RKDSC_OUT", "runs/compose"),
                   help="results root (default: $RKDSC_OUT or runs/compose)")
    p.add_argument("--run", default=None,
                   help="run id (default: $RKDSC_RUN_ID, else OUT/current-run, else OUT is the run's folder)")
    p.add_argument("--config", default=os.environ.get("RKDSC_CONFIG", "deploy/topology.toml"),
                   help="topology file whose transmitter order the table follows (default: $RKDSC_CONFIG)")
    p.add_argument("--expect", default=os.environ.get("RKDSC_REPORT_EXPECT") or None,
                   help="comma-separated transmitter ids that must be present (default: $RKDSC_REPORT_EXPECT; "
                        "the devices found are reported in any case)")
    p.add_argument("--discover", default=os.environ.get("RKDSC_REPORT_DISCOVER", ""),
                   help="comma-separated compose services whose running replicas (edge-<n>) are waited for, "
                        "found through Docker's DNS (default: $RKDSC_REPORT_DISCOVER)")
    p.add_argument("--timeout", type=float, default=float(os.environ.get("RKDSC_REPORT_TIMEOUT_S", 900)),
                   help="longest wait for the devices, seconds (default: $RKDSC_REPORT_TIMEOUT_S or 900)")
    p.add_argument("--stale", type=float, default=30.0,
                   help="a running device whose heartbeat is older than this (seconds) counts as dead (default 30)")
    p.add_argument("--no-wait", action="store_true", help="report what is there now")
    args = p.parse_args(argv)
    out = Path(args.out)
    expect = [s for s in args.expect.split(",") if s] if args.expect else []
    services = [s for s in args.discover.split(",") if s]
    try:
        run_dir, run_id = resolve_run(out, args.run)
    except ValueError as exc:
        print(f"compose_report: {exc}", file=sys.stderr)
        return 1
    if run_id:
        print(f"compose_report: run {run_id} ({run_dir})", flush=True)
    # the plain layout (no run id: results of `rkdsc edge --out` runs) has nothing to wait for
    lost = {} if args.no_wait else wait_for_devices(
        run_dir, expect, services, args.timeout, args.stale,
        settle_s=5.0 if (run_id and services) else 0.0, start_grace_s=60.0 if run_id else 0.0)
    summary, problems = collect(run_dir, expect, topology_order(args.config), lost)
    summary = {**summary, "run_id": run_id, "state": "failed" if problems else "ok", "problems": problems}
    summary["tasks"] = task_totals(summary["transmitters"])
    print(table(summary))
    print()
    print(task_table(summary["tasks"]))
    targets = [run_dir / "summary.json"] + ([out / "summary.json"] if run_id else [])
    for target in targets:
        try:
            target.write_text(json.dumps(summary, indent=2) + "\n")
            print(f"wrote {target}")
        except OSError as exc:
            problems.append(f"{target}: cannot write: {exc}")
    for msg in problems:
        print(f"compose_report: {msg}", file=sys.stderr)
    if not summary["transmitters"]:
        print(f"compose_report: no edge results under {run_dir}", file=sys.stderr)
        return 1
    if problems:
        print(f"compose_report: FAILED: {len(summary['failed'])} device(s) failed or missing"
              + (f" ({', '.join(f['id'] for f in summary['failed'])})" if summary["failed"] else "")
              + f", {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
