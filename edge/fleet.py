"""Many edge devices in one process: a fleet of the topology (or any transmitters) sharing one
bundle load and one onnxruntime session per (task, codec).

    runner = FleetRunner(cfg, cfg.fleet_transmitters("city", slice(0, 64)))
    summary = runner.run(out_dir="runs/city")   # OUT/<device id>/{results.jsonl,summary.json}
                                                 # + OUT/fleet-summary.json

Contract:

* Every device is an ``rkdsc.edge.client.EdgeClient`` with its own transmitter id, link, frame
  ids, SNR estimate and feedback, results.jsonl and summary.json (``OUT/<device id>/``), exactly
  as ``rkdsc edge --id ID`` writes them; only the models are shared: the first device of a task
  builds its EdgeModel per codec, the others reuse them (``FleetRunner.models``: task -> codec
  -> EdgeModel). An onnxruntime session may be run from several threads at once.
* Streams: one ``TransmitBatch`` stream per device (the single-device data plane), every device a
  coroutine of one ``grpc.aio`` event loop on one thread (``EdgeClient.run_async``): no thread per
  device and no GIL handed between threads per message; a device yields to the others whenever
  it waits on gRPC (a write, a full window). At most ``concurrency`` devices stream at a time; the
  others wait for a slot, in index order. The relay's and the server's ``max_streams`` (default
  256) bound how many streams they admit: keep ``concurrency`` below them.
* Channels: one ``grpc.aio`` channel (one HTTP/2 connection) carries every device's stream, each
  call with its device's bearer token as metadata when tokens are in use (``tls.mode`` "off" or
  "tls"). Under mutual TLS each device opens its own channel with its own certificate
  (``transmitters/<id>.pem``), since the relay authorizes frames by the caller's identity and a
  channel has one certificate. ``RKDSC_TOKEN`` would give every device the same identity: use
  the tokens file.
* ``OUT/fleet-summary.json``: devices, devices_ok, failed (id -> failure), images, answered,
  errors, images_per_s (answered / wall time), latency_ms p50/p99/mean over every answered
  image of every device, rss_peak_mb (the process's peak resident memory), concurrency,
  channels, models (sessions per task), wall_s, ok.
* ``cli(argv)`` (``rkdsc fleet``): exit status 0 when every device's run is ok, 1 when one
  failed (named on stderr), 2 for a bad config, bundle, device selection or image folder.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import rkdsc.common.bundle as bundle_lib
from rkdsc.common.bundle import BundleError
from rkdsc.common.config import Config, ConfigError, TransmitterConfig
from rkdsc.common.data.images import list_images
from rkdsc.common.service import channel_options, run_cli
from rkdsc.common.service.security import Identity, open_aio_channel
from rkdsc.edge.client import (CONNECT_TIMEOUT_S, START_TIMEOUT_S, EdgeClient, percentile, run_coroutine,
                               wait_for_start)

log = logging.getLogger("rkdsc.edge")

DEFAULT_CONCURRENCY = 64  # devices streaming at once (measured: docs/fleets.md)


class _Listings:
    """Image-folder listings shared by a fleet's devices: each folder is listed once (not once
    per device: 64 devices listing one folder cost a third of the fleet process's CPU)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_dir: dict[Path, Any] = {}

    def get(self, images_dir: Path):
        key = Path(images_dir).resolve()
        with self._lock:  # one lister per folder; the others wait for its result
            if key not in self._by_dir:
                self._by_dir[key] = list_images(images_dir, check=False)
            return self._by_dir[key]


class _Device(EdgeClient):
    """An EdgeClient that keeps its answered images' latencies for the fleet's percentiles and
    takes its folder listing from the fleet's shared ``_Listings``."""

    latencies: list[float] = []
    listings: _Listings | None = None

    def list_images(self, images_dir: Path):
        return super().list_images(images_dir) if self.listings is None else self.listings.get(images_dir)

    def summarize(self, records, *args, **kwargs):
        self.latencies = [r["latency_ms"] for r in records if r["error"] is None and r["latency_ms"] is not None]
        return super().summarize(records, *args, **kwargs)


def rss_peak_mb() -> float:
    """Peak resident memory of this process in MiB (ru_maxrss: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class FleetRunner:
    """Several devices of the topology in this process (dependencies come in through __init__)."""

    def __init__(self, cfg: Config, transmitters: Sequence[TransmitterConfig], bundle=None,
                 relay_addr: str | None = None, concurrency: int | None = None, intra_op_threads: int | None = 1,
                 frame_id_base: int | None = None, connect_timeout_s: float = CONNECT_TIMEOUT_S):
        if not transmitters:
            raise ConfigError("fleet: no devices selected")
        self.cfg = cfg
        self.transmitters = list(transmitters)
        self.relay_addr = relay_addr or cfg.relay_addr
        self.bundle = bundle if bundle is not None else bundle_lib.load_bundle(cfg.bundle.path, verify=True)
        self.concurrency = max(1, min(int(concurrency or DEFAULT_CONCURRENCY), len(self.transmitters)))
        # one channel for all unless each device's certificate is its identity (mutual TLS)
        self.shared_channel = cfg.tls.mode != "mtls"
        self.models: dict[str, dict[str, Any]] = {}  # task -> codec name -> EdgeModel (one session each)
        self.clients: list[_Device] = []
        self.listings = _Listings()
        for tx in self.transmitters:
            client = _Device(cfg, tx, bundle=self.bundle, relay_addr=self.relay_addr, progress=False,
                             intra_op_threads=intra_op_threads, frame_id_base=frame_id_base,
                             connect_timeout_s=connect_timeout_s, models=self.models.get(tx.task))
            client.listings = self.listings
            self.models.setdefault(tx.task, client.codec_models)
            self.clients.append(client)

    def run(self, out_dir: str | Path | None = None, images_dir: str | Path | None = None,
            limit: int | None = None) -> dict[str, Any]:
        """Run every device (at most ``concurrency`` at once); write each device's outputs under
        ``out_dir/<id>/`` and ``out_dir/fleet-summary.json``; return the fleet summary (the
        devices' own summaries under ``"summaries"``, not written to the fleet file).
        ``run_async`` on an event loop of its own."""
        return run_coroutine(self.run_async(out_dir, images_dir, limit))

    async def run_async(self, out_dir: str | Path | None = None, images_dir: str | Path | None = None,
                        limit: int | None = None) -> dict[str, Any]:
        """``run`` as a coroutine of the caller's event loop (every device a task of it)."""
        out = None if out_dir is None else Path(out_dir)
        summaries: dict[str, dict] = {}
        failed: dict[str, str] = {}
        slots = asyncio.Semaphore(self.concurrency)  # FIFO: waiting devices start in index order
        t0 = time.perf_counter()
        chan = None
        if self.shared_channel:  # inside the loop that uses it
            chan, _ = open_aio_channel(self.relay_addr, self.cfg.tls, Identity.transmitter(self.transmitters[0].id),
                                       options=channel_options(self.cfg.basestation.max_message_bytes))

        async def one(client: _Device) -> None:
            tid = client.tx.id
            async with slots:
                try:
                    s = await client.run_async(images_dir, None if out is None else out / tid, limit, channel=chan)
                except Exception as exc:  # noqa: BLE001 - one device's crash is its failure, not the fleet's
                    log.exception("fleet: device %s failed", tid)
                    failed[tid] = f"INTERNAL: {type(exc).__name__}: {exc}"
                    return
            summaries[tid] = s
            if not s["ok"]:
                failed[tid] = s["failure"]

        try:
            await asyncio.gather(*(one(c) for c in self.clients))
        finally:
            if chan is not None:
                await chan.close()
        wall_s = time.perf_counter() - t0
        lat = [v for c in self.clients for v in c.latencies]
        answered = sum(s["answered"] for s in summaries.values())
        summary = {
            "devices": len(self.clients), "devices_ok": len(self.clients) - len(failed),
            "failed": {c.tx.id: failed[c.tx.id] for c in self.clients if c.tx.id in failed},
            "images": sum(s["images"] for s in summaries.values()), "answered": answered,
            "errors": sum(s["errors"] for s in summaries.values()),
            "images_per_s": answered / wall_s if wall_s > 0 else None,
            "latency_ms": {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                           "mean": float(np.mean(lat)) if lat else None},
            "rss_peak_mb": rss_peak_mb(), "concurrency": self.concurrency,
            "channels": 1 if self.shared_channel else len(self.clients),
            "models": {task: sorted(m) for task, m in self.models.items()},
            "relay": self.relay_addr, "wall_s": wall_s, "ok": not failed,
        }
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            tmp = out / "fleet-summary.json.tmp"
            tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
            tmp.replace(out / "fleet-summary.json")
        return {**summary, "summaries": [summaries[c.tx.id] for c in self.clients if c.tx.id in summaries]}


def parse_devices(text: str, count: int) -> slice:
    """'A:B' (Python slice of device indices, either end optional), or 'N' (one device) -> slice."""
    try:
        if ":" in text:
            a, _, b = text.partition(":")
            sl = slice(int(a) if a.strip() else None, int(b) if b.strip() else None)
        else:
            i = int(text)
            sl = slice(i, i + 1)
    except ValueError:
        raise ConfigError(f"--devices: expected START:STOP of device indices (e.g. 0:64), got {text!r}") from None
    if not range(count)[sl]:
        raise ConfigError(f"--devices: {text!r} selects no device of the fleet's {count}")
    return sl


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rkdsc fleet", description=(
        "Run many edge devices in one process: the devices of a [[fleets]] entry (--fleet, optionally "
        "--devices A:B) and/or transmitters by id (--id, repeatable). One bundle load and one onnxruntime "
        "session per (task, codec) serve them all; each device streams on its own TransmitBatch stream "
        "with its own identity and link, and writes OUT/<id>/results.jsonl + summary.json as `rkdsc edge` "
        "does; OUT/fleet-summary.json aggregates them (images/s, latency p50/p99, peak RSS). Exit status: "
        "0 when every device's run is ok, 1 when one failed, 2 for a bad config, bundle or selection."))
    p.add_argument("--config", required=True, help="topology TOML file")
    p.add_argument("--fleet", default=None, help="fleet name ([[fleets]] name) whose devices to run")
    p.add_argument("--devices", default=None, metavar="A:B",
                   help="only these device indices of the fleet (a Python slice: 0:64, 64:, 5)")
    p.add_argument("--id", action="append", default=[], metavar="ID",
                   help="also run this transmitter ([[transmitters]] or fleet device id; repeatable)")
    p.add_argument("--out", required=True, help="output folder: OUT/<id>/ per device, OUT/fleet-summary.json")
    p.add_argument("--relay", default=None, help="relay host:port (overrides RKDSC_RELAY_ADDR and the config)")
    p.add_argument("--images", default=None, help="image folder of every device (overrides the topology)")
    p.add_argument("--bundle", default=None, help="bundle directory (overrides [bundle] path)")
    p.add_argument("--limit", type=int, default=None, help="at most N images per device (overrides limit; 0 = all)")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY,
                   help=f"devices streaming at once (default {DEFAULT_CONCURRENCY}; keep it below the relay's "
                        f"and the server's max_streams)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads of each shared model")
    p.add_argument("--frame-id-base", type=int, default=None,
                   help="first frame id of every device (default: from the clock, unique across runs)")
    p.add_argument("--result-timeout", type=float, default=None, metavar="SECONDS",
                   help="per-frame result timeout of every device (overrides result_timeout_s)")
    p.add_argument("--ready-file", default=None, metavar="PATH",
                   help="write this file (JSON: id, pid) once the models are loaded, before streaming")
    p.add_argument("--start-file", default=None, metavar="PATH",
                   help="start gate, as `rkdsc edge --start-file`: wait until this file exists before streaming "
                        "(exit status 2 when it does not appear within --start-timeout)")
    p.add_argument("--start-timeout", type=float, default=START_TIMEOUT_S, metavar="SECONDS",
                   help=f"longest wait for --start-file (default {START_TIMEOUT_S:g})")

    def build(args: argparse.Namespace, cfg: Config) -> FleetRunner:
        if args.bundle:
            cfg.bundle.path = Path(args.bundle).resolve()
        if args.concurrency < 1:
            raise ConfigError(f"--concurrency: expected at least 1, got {args.concurrency}")
        txs: list[TransmitterConfig] = []
        if args.fleet is not None:
            fleet = cfg.fleet(args.fleet)
            sl = None if args.devices is None else parse_devices(args.devices, fleet.count)
            txs = cfg.fleet_transmitters(args.fleet, sl)
        elif args.devices is not None:
            raise ConfigError("--devices: needs --fleet NAME")
        txs += [cfg.transmitter(i) for i in args.id]
        if not txs:
            raise ConfigError("rkdsc fleet: nothing to run: give --fleet NAME and/or --id ID")
        if len({t.id for t in txs}) != len(txs):
            raise ConfigError("--id: a device is selected twice")
        for tx in txs:
            if args.result_timeout is not None:
                if not args.result_timeout > 0:
                    raise ValueError(f"--result-timeout: expected seconds > 0, got {args.result_timeout}")
                tx.result_timeout_s = float(args.result_timeout)
            images = Path(args.images) if args.images else tx.images
            if not images.is_dir():
                raise ConfigError(f"transmitters[{tx.id}].images: image folder not found: {images}")
        return FleetRunner(cfg, txs, relay_addr=args.relay, concurrency=args.concurrency,
                           intra_op_threads=args.threads, frame_id_base=args.frame_id_base)

    return run_cli(p, argv, build, _run, errors=(BundleError, ValueError), log_level="WARNING")


def _run(args: argparse.Namespace, runner: FleetRunner) -> int:
    if not wait_for_start(args.ready_file, args.start_file, "fleet", args.start_timeout):
        print(f"rkdsc fleet: error: --start-file {args.start_file} did not appear within {args.start_timeout:g} s",
              file=sys.stderr)
        return 2
    s = runner.run(args.out, images_dir=args.images, limit=args.limit)
    p50 = s["latency_ms"]["p50"]
    print(f"fleet: {s['devices_ok']}/{s['devices']} devices ok, {s['answered']}/{s['images']} images answered, "
          f"{s['errors']} errors, {s['images_per_s'] or 0:.1f} images/s, p50 latency "
          f"{float('nan') if p50 is None else p50:.2f} ms, peak RSS {s['rss_peak_mb']:.0f} MiB -> {args.out}")
    for tid, why in list(s["failed"].items())[:10]:
        print(f"rkdsc fleet: error: {tid}: {why}", file=sys.stderr)
    if len(s["failed"]) > 10:
        print(f"rkdsc fleet: ... {len(s['failed']) - 10} more failed devices: {Path(args.out) / 'fleet-summary.json'}",
              file=sys.stderr)
    return 0 if s["ok"] else 1


def main() -> None:
    sys.exit(cli())
