"""``rkdsc demo``: run the whole topology as separate processes on localhost.

    rkdsc demo --config deploy/topology.toml --out runs/demo

1. checks the bundle (missing or failing verification -> a clear error, exit 2);
2. generates the held-back samples of the embedded tasks (``digits``, ``shapes``) when a
   transmitter's image folder is the default samples folder (``runs/samples/<task>`` under the
   config root) and is missing, at that task's input size in the bundle;
3. starts ``python -m rkdsc.server``, waits for gRPC health SERVING, then ``python -m rkdsc.basestation``
   (SERVING once it has the server's task list), then every ``python -m rkdsc.edge`` of the
   topology at once (``--edges-per-process N``: ``python -m rkdsc.edge fleet`` processes of N
   devices each); ports are picked by the services themselves (port 0 through the
   RKDSC_*_BIND / RKDSC_*_METRICS_PORT overrides, reported back in a ready file) unless
   ``--config-ports``;
4. waits for the edges, scrapes ``/metrics`` of server and relay once
   (``OUT/metrics/*.prom``), stops relay then server with SIGTERM (graceful drain);
5. writes ``OUT/summary.json``::

       {"transmitters": [{"id", "task", "snr_db", "fading", "images", "answered", "errors",
                          "accuracy", "latency_ms": {"p50", "p99"}, "symbols_per_image", ...}],
        "tasks": [{"task", "transmitters", "images", "answered", "errors", "labelled", "correct",
                   "accuracy", "accuracy_ci95", "symbols_per_image"}],
        "wall_s", "server_metrics": {...}, "relay_metrics": {...},
        "services_cpu_s": {"server", "relay"}, "ok"}

   ``services_cpu_s``: the CPU seconds each service used while the edges streamed (from the
   start of streaming, the start gate's opening with ``start_together``, to the last edge's exit;
   ``/proc``, in 10 ms clock ticks; None where unreadable); each edge's own is ``process_cpu_s``
   in its row.

   and prints two tables: per device, and per task (the devices of a task pooled). With a
   ``[medium]`` table also ``OUT/scenario.png`` and ``OUT/scenario.json`` (docs/medium.md).
   Child logs: ``OUT/logs/*.log``; per-device results:
   ``OUT/edges/<id>/results.jsonl`` (with ``--edges-per-process N`` > 1:
   ``OUT/fleets/<k>/<id>/results.jsonl``, the devices of fleet process k).

With ``--tls`` (``run_demo(..., tls=True)``) a development CA and certificates for the server,
the relay, an admin and every transmitter are made in ``OUT/certs`` (``rkdsc certs``) and every
hop runs mutual TLS (``RKDSC_TLS=mtls``, ``RKDSC_TLS_DIR=OUT/certs`` for every child; the demo's
own health probes use the admin certificate); the summary records ``"tls": "mtls"``.

Exit status: 0 when every process succeeded, 1 when one failed (children are always
stopped: SIGTERM, then SIGKILL), 2 for a bad config or bundle. An edge fails (exit status 1)
when its stream failed or more than its ``max_failed_fraction`` of images got no answer (2:
no images); each transmitter row of the summary carries ``exit_status``, ``ok``, ``failure``
(the edge's reason) and ``errors_by_code``, and the error message names the failed device.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from rkdsc.common.config import Config, ConfigError, load_config
from rkdsc.common.experiments.stats import ci95
from rkdsc.common.process import PARENT_PID_ENV

READY_TIMEOUT_S = 120.0   # service start (model loading) limit
STOP_TIMEOUT_S = 20.0     # graceful stop limit before SIGKILL


class DemoError(RuntimeError):
    """A step of the demo failed (message says which and where the log is)."""


class Child:
    """A child process with its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "wb")
        # no preexec_fn: it would force fork() and run grpc's at-fork handlers here, which can
        # deadlock this process; the child arms its own parent-death signal (rkdsc.common.process)
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**env, PARENT_PID_ENV: str(os.getpid())}, stdin=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in text[-lines:])

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _child_env(overrides: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(overrides)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _wait_ready(child: Child, ready_file: Path, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if ready_file.exists():
            return json.loads(ready_file.read_text())
        if not child.alive():
            raise DemoError(f"{child.name} exited with status {child.proc.returncode} before it was ready; "
                            f"log {child.log_path}:\n{child.tail()}")
        time.sleep(0.05)
    raise DemoError(f"{child.name} not ready after {timeout_s:.0f} s; log {child.log_path}:\n{child.tail()}")


def wait_serving(addr: str, child: Child | None = None, timeout_s: float = READY_TIMEOUT_S,
                 service: str = "", tls: Any = None) -> None:
    """Poll grpc.health.v1.Health/Check on addr until SERVING (over TLS as the admin with ``tls``,
    the topology's [tls])."""
    from rkdsc.common.service.probe import HealthProbe

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with HealthProbe(addr, tls=tls) as probe:
        while time.monotonic() < deadline:
            if child is not None and not child.alive():
                raise DemoError(f"{child.name} exited with status {child.proc.returncode}; "
                                f"log {child.log_path}:\n{child.tail()}")
            last = probe.status(service, timeout_s=2.0)
            if last == "SERVING":
                return
            time.sleep(0.1)
    name = child.name if child else addr
    raise DemoError(f"{name} at {addr} not SERVING after {timeout_s:.0f} s (last: {last})")


def scrape(port: int | None) -> str:
    if not port:
        return ""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def _metric_totals(text: str, prefix: str) -> dict[str, float]:
    """Sum counters by name (labels folded), plus per-outcome frame counts."""
    from rkdsc.common.metrics import totals_by_name

    return totals_by_name(text, lambda name: name.startswith(prefix) and name.endswith("_total"))


def ensure_samples(cfg: Config, bundle=None) -> list[str]:
    """Generate the default samples folders that are missing (the embedded tasks ``digits`` and
    ``shapes``: their held-back parts, at the task's input size in ``bundle``); returns messages."""
    from rkdsc.common.data.samples import GENERATED_SAMPLES

    done, notes = set(), []
    for i, t in enumerate(cfg.transmitters):
        folder = Path(t.images)
        if folder.is_dir() or folder in done:
            continue
        if folder != cfg.default_images(t.task):
            raise ConfigError(f"transmitters[{i}].images: image folder not found: {folder}")
        if t.task not in GENERATED_SAMPLES:
            raise ConfigError(f"transmitters[{i}].images: {folder} is missing and samples can only be "
                              f"generated for the tasks {', '.join(map(repr, GENERATED_SAMPLES))}, not {t.task!r}")
        size = None
        if bundle is not None:
            h, w = bundle.task(t.task).input.size
            size = h if h == w else None
        paths = GENERATED_SAMPLES[t.task](folder, None, size)
        side = _image_side(paths)
        notes.append(f"generated {len(paths)} held-back {t.task} samples ({side}) in {folder}")
        done.add(folder)
    return notes


def _image_side(paths: list[Path]) -> str:
    """'WxH' of the first sample image ('?' when there is none)."""
    if not paths:
        return "?"
    from PIL import Image

    with Image.open(paths[0]) as im:
        return f"{im.width}x{im.height}"


def _edge_summary(folder: Path) -> dict:
    """A device's summary.json in its output folder ({} when it wrote none or it is unreadable)."""
    path = folder / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _ci_text(ci: list[float] | None) -> str:
    return "-" if not ci else f"{ci[0]:.3f}-{ci[1]:.3f}"


def table(rows: list[dict]) -> str:
    w = max([14] + [len(str(r["id"])) + 1 for r in rows])  # the id and task columns fit the longest value
    wt = max([9] + [len(str(r["task"])) + 1 for r in rows])
    head = (f"{'transmitter':<{w}}{'task':<{wt}}{'snr_db':>7} {'fading':<14}{'images':>7}{'answered':>9}"
            f"{'errors':>7}{'accuracy':>9}{'n':>6}{'95% CI':>14}{'p50 ms':>8}{'p99 ms':>8}{'symbols':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lat = r.get("latency_ms") or {}
        lines.append(f"{r['id']:<{w}}{r['task']:<{wt}}{r['snr_db']:>7.1f} {r['fading']:<14}{r['images']:>7}"
                     f"{r['answered']:>9}{r['errors']:>7}{_fmt(r['accuracy'], '.4f'):>9}{_fmt(r.get('labelled'), 'd'):>6}"
                     f"{_ci_text(r.get('accuracy_ci95')):>14}"
                     f"{_fmt(lat.get('p50'), '.2f'):>8}{_fmt(lat.get('p99'), '.2f'):>8}"
                     f"{_fmt(r['symbols_per_image'], 'g'):>8}")
    return "\n".join(lines)


def task_rows(rows: list[dict]) -> list[dict]:
    """Per-task totals of the transmitter rows (the devices of one task pooled), in first-seen order."""
    out: dict[str, dict] = {}
    for r in rows:
        t = out.setdefault(r["task"], {"task": r["task"], "transmitters": [], "images": 0, "answered": 0, "errors": 0,
                                       "labelled": 0, "correct": 0, "symbols_per_image": r.get("symbols_per_image")})
        t["transmitters"].append(r["id"])
        for key in ("images", "answered", "errors", "labelled", "correct"):
            t[key] += int(r.get(key) or 0)
    for t in out.values():
        t["accuracy"] = t["correct"] / t["labelled"] if t["labelled"] else None
        t["accuracy_ci95"] = ci95(t["accuracy"], t["labelled"])
        # symbols per answered image over the task's devices (their codecs may differ)
        pairs = [(r.get("symbols_per_image"), int(r.get("answered") or 0)) for r in rows if r["task"] == t["task"]]
        if all(k is not None for k, _ in pairs) and sum(n for _, n in pairs):
            t["symbols_per_image"] = sum(k * n for k, n in pairs) / sum(n for _, n in pairs)
    return list(out.values())


def task_table(tasks: list[dict]) -> str:
    wt = max([12] + [len(str(t["task"])) + 1 for t in tasks])
    head = (f"{'task':<{wt}}{'devices':>8}{'images':>8}{'answered':>9}{'errors':>7}{'accuracy':>9}{'n':>6}"
            f"{'95% CI':>14}{'symbols':>8}")
    lines = [head, "-" * len(head)]
    for t in tasks:
        lines.append(f"{t['task']:<{wt}}{len(t['transmitters']):>8}{t['images']:>8}{t['answered']:>9}{t['errors']:>7}"
                     f"{_fmt(t['accuracy'], '.4f'):>9}{t['labelled']:>6}{_ci_text(t.get('accuracy_ci95')):>14}"
                     f"{_fmt(t.get('symbols_per_image'), 'g'):>8}")
    return "\n".join(lines)


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system, every thread) a live process has used so far, from
    ``/proc/<pid>/stat``; None where that cannot be read (not Linux, the process is gone)."""
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)": state is field 3
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None


def _cpu_between(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def run_demo(config: str | os.PathLike, out: str | os.PathLike, config_ports: bool = False,
             timeout_s: float = 3600.0, limit: int | None = None, quiet: bool = False, tls: bool = False,
             start_together: bool = False, edges_per_process: int = 1) -> dict:
    """Run the topology; returns the summary dict (also written to OUT/summary.json).
    ``start_together``: every edge loads its models, then waits at a start gate (``rkdsc edge
    --ready-file/--start-file``) opened once all are loaded, so they stream together (benchmarks).
    ``edges_per_process``: devices per edge process; above 1 the transmitters, in order, go to
    ``python -m rkdsc.edge fleet`` processes of that many devices each (``OUT/fleets/<k>/<id>/``:
    each device its own stream, results and summary; OUT/edges holds single devices).
    Raises ConfigError / BundleError for bad inputs, DemoError when a process fails."""
    from rkdsc.common.bundle import BundleError, load_bundle

    if edges_per_process < 1:
        raise ConfigError(f"edges_per_process: expected at least 1, got {edges_per_process}")

    t0 = time.perf_counter()
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    config = Path(config).resolve()
    cfg = load_config(config)
    if not cfg.transmitters:
        raise ConfigError(f"{config}: transmitters: the topology has no [[transmitters]]")
    if not cfg.bundle.path.exists():
        raise BundleError(f"bundle not found: {cfg.bundle.path} (build it with `make bundle`, or point "
                          f"[bundle] path in {config} at a bundle directory)")
    bundle = load_bundle(cfg.bundle.path, verify=True)
    for i, t in enumerate(cfg.transmitters):
        bundle.task(t.task)  # unknown task -> UnknownTaskError naming the known ones
    for note in ensure_samples(cfg, bundle):
        say(note)

    out = Path(out).resolve()
    logs = out / "logs"
    for sub in ("logs", "metrics", "edges", "run"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    gate = out / "run" / "start"  # the edges' start gate (start_together)
    for stale in [*(out / "run").glob("*.json"), gate]:
        stale.unlink(missing_ok=True)
    tls_env: dict[str, str] = {}
    if tls:  # certificates on the fly; every child (and the health probes) on mutual TLS
        from rkdsc.common.certs import write_certs
        from rkdsc.common.config import apply_tls_env

        write_certs(out / "certs", [t.id for t in cfg.transmitters], reuse_ca=False)
        tls_env = {"RKDSC_TLS": "mtls", "RKDSC_TLS_DIR": str(out / "certs")}
        cfg.tls = apply_tls_env(cfg.tls, tls_env)
        cfg.tls.cert = cfg.tls.key = None  # the probes use admin.pem of the folder
        say(f"tls      mutual TLS on every hop; certificates in {out / 'certs'}")
    py = sys.executable
    children: list[Child] = []
    ok = False
    rows: list[dict] = []
    server_metrics = relay_metrics = ""
    services_cpu_s: dict[str, float | None] = {}
    scenario = None
    try:
        def start_service(name: str, module: str, env: dict[str, str], bind_prefix: str) -> tuple[Child, str, dict]:
            """Start `python -m module`, wait for its ready file and health; (child, address, ready info)."""
            if not config_ports:  # ephemeral ports, read back from the ready file
                env = {**env, f"{bind_prefix}_BIND": "127.0.0.1:0", f"{bind_prefix}_METRICS_PORT": "0"}
            ready = out / "run" / f"{name}.json"
            child = Child(name, [py, "-m", module, "--config", str(config), "--ready-file", str(ready)],
                          _child_env({**env, **tls_env}), logs / f"{name}.log")
            children.append(child)
            info = _wait_ready(child, ready, READY_TIMEOUT_S)
            addr = f"127.0.0.1:{info['port']}"
            wait_serving(addr, child, tls=cfg.tls)
            say(f"{name:<8} pid {child.proc.pid} on {addr} (metrics :{info['metrics_port']})")
            return child, addr, info

        server, server_addr, sinfo = start_service("server", "rkdsc.server", {}, "RKDSC_SERVER")
        relay, relay_addr, rinfo = start_service("relay", "rkdsc.basestation", {"RKDSC_SERVER_ADDR": server_addr},
                                                 "RKDSC_RELAY")
        # ---- edges: one process per device, or fleets of edges_per_process devices
        groups: list[tuple[Child, list, Path]] = []  # (process, its transmitters, its ready file)
        folder: dict[str, Path] = {}                 # transmitter id -> its output folder
        txs = list(cfg.transmitters)
        for k in range(0, len(txs), edges_per_process):
            chunk = txs[k:k + edges_per_process]
            if edges_per_process == 1:
                (t,) = chunk
                name, dest = t.id, out / "edges" / t.id
                folder[t.id] = dest
                args = [py, "-m", "rkdsc.edge", "--config", str(config), "--id", t.id, "--out", str(dest), "--no-progress"]
            else:
                name, dest = f"fleet-{k // edges_per_process}", out / "fleets" / f"{k // edges_per_process}"
                folder.update({t.id: dest / t.id for t in chunk})
                args = [py, "-m", "rkdsc.edge", "fleet", "--config", str(config), "--out", str(dest),
                        "--concurrency", str(len(chunk)), *(a for t in chunk for a in ("--id", t.id))]
            if limit is not None:
                args += ["--limit", str(limit)]
            ready = out / "run" / f"edge-{name}.json"
            if start_together:
                args += ["--ready-file", str(ready), "--start-file", str(gate)]
            child = Child(f"edge {name}", args, _child_env({"RKDSC_RELAY_ADDR": relay_addr, **tls_env}),
                          logs / f"edge-{name}.log")
            children.append(child)
            groups.append((child, chunk, ready))
        edges = [(t, child) for child, chunk, _ in groups for t in chunk]
        if start_together:  # open the gate once every edge process has loaded its models
            for child, _, ready in groups:
                _wait_ready(child, ready, READY_TIMEOUT_S)
            gate.write_text(f"{time.time():.6f}\n", encoding="utf-8")
        say(f"edges    {', '.join(t.id for t, _ in edges)} streaming ...")
        cpu_start = {svc.name: process_cpu_s(svc.proc.pid) for svc in (server, relay)}
        deadline = time.monotonic() + timeout_s
        failed: list[str] = []
        edge_status: dict[str, int] = {}  # transmitter id -> exit status of its edge process
        for child, chunk, _ in groups:
            try:
                rc = child.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise DemoError(f"{child.name} still running after {timeout_s:.0f} s; log {child.log_path}") from None
            edge_status.update({t.id: rc for t in chunk})
            if rc != 0:  # the devices' own verdicts (failed images by error code, stream error, no images)
                why = "; ".join(f"{t.id}: {w}" if len(chunk) > 1 else w for t in chunk
                                if (w := _edge_summary(folder[t.id]).get("failure")))
                failed.append(f"{child.name} exited with status {rc}" + (f": {why}" if why else "")
                              + f"; log {child.log_path}:\n{child.tail()}")
            for other in (server, relay):
                if not other.alive():
                    raise DemoError(f"{other.name} died (status {other.proc.returncode}); "
                                    f"log {other.log_path}:\n{other.tail()}")
        services_cpu_s = {svc.name: _cpu_between(cpu_start[svc.name], process_cpu_s(svc.proc.pid))
                          for svc in (server, relay)}
        # ---- metrics, then graceful stop (relay first: it depends on the server)
        server_metrics, relay_metrics = scrape(sinfo["metrics_port"]), scrape(rinfo["metrics_port"])
        (out / "metrics" / "server.prom").write_text(server_metrics)
        (out / "metrics" / "relay.prom").write_text(relay_metrics)
        for svc in (relay, server):
            rc = svc.stop()
            if rc != 0:
                failed.append(f"{svc.name} exited with status {rc} on SIGTERM; log {svc.log_path}:\n{svc.tail()}")
        for t, child in edges:
            s = _edge_summary(folder[t.id])
            rc = edge_status.get(t.id)
            rows.append({
                # in a fleet, one device's failure is not its neighbours': its own summary says
                "exit_status": rc, "ok": (rc == 0 or (edges_per_process > 1 and rc == 1)) and s.get("ok", rc == 0),
                "failure": s.get("failure") or (None if rc == 0 else f"edge exited with status {rc}"),
                "process": child.name,
                "errors_by_code": s.get("errors_by_code", {}),
                "id": t.id, "task": t.task, "snr_db": t.snr_db, "fading": t.fading,
                "path_gain_db": t.path_gain_db, "effective_snr_db": t.effective_snr_db,
                "images": s.get("images", 0), "answered": s.get("answered", 0), "errors": s.get("errors", 0),
                "accuracy": s.get("accuracy"), "labelled": s.get("labelled"), "correct": s.get("correct"),
                "accuracy_ci95": ci95(s.get("accuracy"), s.get("labelled") or 0),
                "latency_ms": {"p50": (s.get("latency_ms") or {}).get("p50"),
                               "p99": (s.get("latency_ms") or {}).get("p99")},
                "symbols_per_image": s.get("symbols_per_image", bundle.task(t.task).symbols_per_image),
                "rtt_ms": s.get("rtt_ms"), "images_per_s": s.get("images_per_s"), "wall_s": s.get("wall_s"),
                "process_cpu_s": s.get("process_cpu_s"),
                "uplink_bytes_per_image": s.get("uplink_bytes_per_image"),
                "raw_image_bytes": s.get("raw_image_bytes"),
                **({"emulated_latency_ms": s.get("emulated_latency_ms"), "airtime_s": s.get("airtime_s")}
                   if cfg.medium is not None else {}),
                "results": str(folder[t.id] / "results.jsonl")})
        if cfg.medium is not None:  # [medium] (issue 13): OUT/scenario.png and OUT/scenario.json
            from rkdsc.common.experiments.scenario_plot import write_scenario

            scenario = write_scenario(out, title=config.stem)
            say(f"scenario {scenario['plot'] or '(no matplotlib: no plot)'}; table {out / 'scenario.json'}")
            for r in scenario["table"]:  # the emulated system's figures (the table below is wall time)
                acc = "-" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
                say(f"  {r['transmitter']:<16} {r['distance_m']:8.1f} m {r['snr_db']:7.1f} dB  accuracy {acc}  "
                    f"emulated p50 {r['emulated_p50_ms']:.2f} ms  p99 {r['emulated_p99_ms']:.2f} ms")
        if failed:
            raise DemoError("\n".join(failed))
        ok = True
    finally:
        for child in children:
            if child.alive():
                child.kill()
        summary = {"transmitters": rows, "tasks": task_rows(rows), "wall_s": time.perf_counter() - t0, "ok": ok,
                   "tls": cfg.tls.mode,
                   "config": str(config), "bundle": str(cfg.bundle.path),
                   "server_metrics": _metric_totals(server_metrics, "rkdsc_") if server_metrics else {},
                   "relay_metrics": _metric_totals(relay_metrics, "rkdsc_relay_") if relay_metrics else {},
                   "services_cpu_s": services_cpu_s, "logs": str(logs)}
        if scenario is not None:
            summary["scenario"] = scenario
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    say("")
    say(table(rows))
    say("")
    say(task_table(summary["tasks"]))
    say(f"\nwall {summary['wall_s']:.1f} s; summary {out / 'summary.json'}; logs {logs}")
    return summary


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rkdsc demo", description=(
        "Run the topology of a config file as separate processes on localhost: edge server, "
        "base-station relay and every edge device; write OUT/summary.json and print a table. "
        "Generates the default digits samples when they are missing."))
    p.add_argument("--config", default="deploy/topology.toml", help="topology TOML file (default deploy/topology.toml)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--config-ports", action="store_true",
                   help="use the ports of the config file instead of free ports picked at start")
    p.add_argument("--limit", type=int, default=None, help="at most N images per edge device (default: the config's limit)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds the edge devices may run (default 3600)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--tls", action="store_true",
                   help="mutual TLS on every hop: a development CA and certificates for server, relay, admin and "
                        "every transmitter are made in OUT/certs (docs/security.md)")
    p.add_argument("--edges-per-process", type=int, default=1, metavar="N",
                   help="edge devices per process (default 1: a process each); above 1 the transmitters, in order, "
                        "run as `rkdsc fleet` processes of N devices (OUT/fleets/<k>/<id>/), each device still its "
                        "own stream, identity and results: for many devices on few cores")
    args = p.parse_args(argv)
    from rkdsc.common.bundle import BundleError

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        summary = run_demo(args.config, args.out, config_ports=args.config_ports, timeout_s=args.timeout,
                           limit=args.limit, quiet=args.quiet, tls=args.tls, edges_per_process=args.edges_per_process)
    except (ConfigError, BundleError, FileExistsError) as exc:
        print(f"rkdsc demo: error: {exc}", file=sys.stderr)
        return 2
    except DemoError as exc:
        print(f"rkdsc demo: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rkdsc demo: interrupted; children stopped", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0 if summary["ok"] else 1


def main() -> None:
    sys.exit(cli())
