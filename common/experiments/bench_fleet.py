"""``rkdsc bench --fleet 1,16,64,256``: how cost grows with the number of emulated devices.

For each device count N: a topology with one ``[[fleets]]`` entry of N devices (ids
``dev-0000``..., SNRs drawn in ``snr_db_range``), ``replicas`` edge-server processes, one relay
dialling them all (``basestation.server_addr`` = the replicas' address list, gRPC round_robin) and
one ``rkdsc fleet`` process emulating every device (one onnxruntime session per codec, at most
``concurrency`` devices streaming at once). Every process is on this machine, on free ports.

Per row: images sent / answered / errors, aggregate images/s (answered / the fleet's wall time),
per-image latency p50 / p99, the peak resident memory (VmHWM) of the fleet process, of each
replica and of the relay, and memory per device: the fleet's peak / N and the marginal cost
(peak at N - peak at the first count) / (N - first count). Writes ``fleet.json`` and
``fleet.png`` (images/s and p99 against devices; memory per device) to ``out_dir``.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["run_fleet_bench", "fleet_table", "plot_fleet"]

DEFAULT_COUNTS = (1, 16, 64, 256)


def write_fleet_topology(path: Path, bundle_dir: Path, images: Path, task: str, devices: int, limit: int,
                         batch_size: int, snr_db_range: tuple[float, float], max_in_flight: int) -> Path:
    from rkdsc.common.experiments.bench import topology_header

    lines = topology_header(path, bundle_dir) + [
             "[[fleets]]", 'name = "fleet"', 'id_pattern = "dev-{index:04d}"', f"count = {int(devices)}",
             f'task = "{task}"', f"snr_db_range = [{float(snr_db_range[0])}, {float(snr_db_range[1])}]",
             'fading = "awgn"', "seed_base = 1000", f'images = "{images}"', f"batch_size = {int(batch_size)}",
             f"limit = {int(limit)}", f"max_in_flight = {int(max_in_flight)}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def bench_fleet_once(bundle_dir: Path, images: Path, task: str, devices: int, limit: int, work: Path, *,
                     replicas: int = 2, concurrency: int = 64, batch_size: int = 4, max_in_flight: int = 8,
                     snr_db_range: tuple[float, float] = (0.0, 20.0), timeout_s: float = 900.0) -> dict[str, Any]:
    """One row: N devices in one fleet process through one relay and ``replicas`` servers."""
    from rkdsc.common.experiments.bench import _start_service, proc_status
    from rkdsc.common.experiments.demo import Child

    out = work / f"fleet-{devices}"
    for sub in ("logs", "run"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    cfg = write_fleet_topology(work / f"topology-fleet-{devices}.toml", bundle_dir, images, task, devices, limit,
                               batch_size, snr_db_range, max_in_flight)
    children: list = []
    peaks: dict[str, float] = {}
    try:
        servers = []
        for r in range(replicas):
            child, addr, info = _start_service(f"server-{r}", "rkdsc.server", cfg, out, {}, "RKDSC_SERVER")
            children.append(child)
            servers.append((child, addr, info))
        relay, relay_addr, _ = _start_service("relay", "rkdsc.basestation", cfg, out,
                                              {"RKDSC_SERVER_ADDR": ",".join(a for _, a, _ in servers)}, "RKDSC_RELAY")
        children.append(relay)
        fleet_out = out / "devices"
        args = [sys.executable, "-c", "from rkdsc.edge.fleet import main; main()", "--config", str(cfg),
                "--fleet", "fleet", "--out", str(fleet_out), "--relay", relay_addr,
                "--concurrency", str(int(concurrency))]
        fleet = Child("fleet", args, {**os.environ, "PYTHONUNBUFFERED": "1"}, out / "logs" / "fleet.log")
        children.append(fleet)
        watched = {"fleet": fleet, "relay": relay, **{f"server-{i}": c for i, (c, _, _) in enumerate(servers)}}
        stop = threading.Event()

        def sample() -> None:  # VmHWM is a peak already; sampling keeps the last value before exit
            while not stop.is_set():
                for name, c in watched.items():
                    v = (proc_status(c.proc.pid) or {}).get("rss_peak_mb")
                    if v is not None:
                        peaks[name] = max(peaks.get(name, 0.0), v)
                stop.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        try:
            status = fleet.proc.wait(timeout=timeout_s)
        except Exception:  # noqa: BLE001 - a hung fleet is a failed row, not a hung benchmark
            fleet.kill()
            status = None
        wall = time.perf_counter() - t0
        stop.set()
        sampler.join(2)
        summary_path = fleet_out / "fleet-summary.json"
        s = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
        per_replica = [_frames_decoded(info.get("metrics_port")) for _, _, info in servers]
    finally:
        for c in reversed(children):
            c.stop()
    fleet_peak = peaks.get("fleet")
    return {
        "devices": devices, "replicas": replicas, "concurrency": concurrency, "images_per_device": limit,
        "batch_size": batch_size, "exit_status": status, "wall_s": wall,
        "images": s.get("images"), "answered": s.get("answered"), "errors": s.get("errors"),
        "devices_ok": s.get("devices_ok"), "images_per_s": s.get("images_per_s"),
        "latency_ms": s.get("latency_ms"), "fleet_rss_peak_mb": fleet_peak,
        "fleet_rss_per_device_mb": fleet_peak / devices if fleet_peak else None,
        "relay_rss_peak_mb": peaks.get("relay"),
        "server_rss_peak_mb": [peaks.get(f"server-{i}") for i in range(replicas)],
        "total_rss_peak_mb": sum(v for v in peaks.values()) if peaks else None,
        "frames_per_replica": per_replica, "out": str(out),
    }


def _frames_decoded(metrics_port: int | None) -> float | None:
    """Frames a replica answered OK (the sum of its rkdsc_frames_total{outcome="ok"}), from its /metrics."""
    import urllib.request

    from rkdsc.common.metrics import parse_metrics

    if not metrics_port:
        return None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{int(metrics_port)}/metrics", timeout=5) as r:
            values = parse_metrics(r.read().decode("utf-8"))
    except OSError:
        return None
    return sum(v for (name, labels), v in values.items()
               if name == "rkdsc_frames_total" and dict(labels).get("outcome") == "ok")


def run_fleet_bench(counts: tuple[int, ...] = DEFAULT_COUNTS, *, bundle: str | None = None, images: int = 16,
                    data: str | None = None, task: str | None = None, replicas: int = 2, concurrency: int = 64,
                    batch_size: int = 4, work_dir: str | None = None, out: str | None = None,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every row of ``counts``; returns the document (also ``fleet.json`` / ``fleet.png`` next to ``out``)."""
    import tempfile

    from rkdsc.common.bundle import load_bundle
    from rkdsc.common.experiments.bench import prepare_images, resolve_bundle

    if not counts or min(counts) < 1:
        raise ValueError(f"--fleet: expected device counts >= 1, got {list(counts)}")
    if replicas < 1:
        raise ValueError(f"--replicas: expected an integer >= 1, got {replicas}")
    tmp = tempfile.TemporaryDirectory(prefix="rkdsc-fleet-") if work_dir is None else None
    work = Path(work_dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        bundle_dir, how = resolve_bundle(bundle, work, log)
        bdl = load_bundle(bundle_dir)
        task = task or bdl.task().name
        folder = prepare_images(data, bdl, task, images, work)
        rows = []
        for n in counts:
            log(f"bench: fleet of {n} device(s) x {images} images through 1 relay and {replicas} server replica(s) ...")
            rows.append(bench_fleet_once(Path(bundle_dir), folder, task, n, images, work, replicas=replicas,
                                         concurrency=concurrency, batch_size=batch_size))
        base = rows[0]
        for r in rows[1:]:
            if base["fleet_rss_peak_mb"] and r["fleet_rss_peak_mb"] and r["devices"] > base["devices"]:
                r["fleet_rss_marginal_per_device_mb"] = ((r["fleet_rss_peak_mb"] - base["fleet_rss_peak_mb"])
                                                         / (r["devices"] - base["devices"]))
        doc = {"bundle": str(bundle_dir), "bundle_source": how, "task": task, "images_per_device": images,
               "replicas": replicas, "concurrency": concurrency, "batch_size": batch_size,
               "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)}, "rows": rows}
        if out:
            target = Path(out)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
            plot_fleet(doc, target.with_suffix(".png"))
        return doc
    finally:
        if tmp is not None:
            tmp.cleanup()


def _f(v, spec: str = ",.1f") -> str:
    return "n/a" if v is None else format(v, spec)


def fleet_table(doc: dict) -> str:
    """The Markdown table of a fleet document."""
    lines = ["| devices | images | answered | errors | images/s | p50 ms | p99 ms | fleet peak RSS MiB | "
             "MiB per device | marginal MiB per device | relay MiB | servers MiB | frames per replica |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        lat = r.get("latency_ms") or {}
        lines.append(f"| {r['devices']} | {r['images']} | {r['answered']} | {r['errors']} | {_f(r['images_per_s'])} | "
                     f"{_f(lat.get('p50'))} | {_f(lat.get('p99'))} | {_f(r['fleet_rss_peak_mb'], ',.0f')} | "
                     f"{_f(r['fleet_rss_per_device_mb'], ',.2f')} | {_f(r.get('fleet_rss_marginal_per_device_mb'), ',.2f')} | "
                     f"{_f(r['relay_rss_peak_mb'], ',.0f')} | "
                     f"{' + '.join(_f(v, ',.0f') for v in r['server_rss_peak_mb'])} | "
                     f"{' / '.join(_f(v, ',.0f') for v in r.get('frames_per_replica') or [])} |")
    return "\n".join(lines)


def plot_fleet(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["rows"]
    n = [r["devices"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot(n, [r["images_per_s"] or 0 for r in rows], "o-")
    axes[0].set(xscale="log", xlabel="emulated devices", ylabel="aggregate images/s", title="throughput")
    axes[1].plot(n, [(r.get("latency_ms") or {}).get("p99") or 0 for r in rows], "o-", label="p99")
    axes[1].plot(n, [(r.get("latency_ms") or {}).get("p50") or 0 for r in rows], "s--", label="p50")
    axes[1].set(xscale="log", yscale="log", xlabel="emulated devices", ylabel="per-image latency (ms)",
                title="latency")
    axes[1].legend()
    axes[2].plot(n, [r["fleet_rss_per_device_mb"] or 0 for r in rows], "o-", label="fleet peak / devices")
    axes[2].plot(n, [(r["total_rss_peak_mb"] or 0) / r["devices"] for r in rows], "s--",
                 label="fleet + relay + servers / devices")
    axes[2].set(xscale="log", yscale="log", xlabel="emulated devices", ylabel="MiB per device", title="memory")
    axes[2].legend()
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{len(rows)} fleet sizes, {doc['images_per_device']} images per device, one relay, "
                 f"{doc['replicas']} server replicas, {doc['machine']['cpus']} CPUs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
