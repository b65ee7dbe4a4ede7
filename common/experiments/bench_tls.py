"""The cost of TLS on the data path: plaintext against (mutual) TLS, side by side in one run.

    doc = tls_cost(bundle_dir, frames=400, unloaded=100, rounds=2, mode="mtls")
    print(tls_markdown(doc))

For each round and each mode (plaintext first, then TLS, alternating over ``rounds``): a fresh
edge server and relay (``python -m rkdsc.server`` / ``rkdsc.basestation``, free localhost ports,
the same topology but for ``[tls]``), and one client with a transmitter's identity that

* connects (``connect_ms``: channel ready, i.e. TCP + the TLS handshake);
* sends ``unloaded`` frames one at a time (``TransmitOne``, one in flight: the unloaded
  latency, ``p50_ms`` / ``p99_ms``);
* streams ``frames`` frames on one ``Transmit`` stream with up to ``window`` in flight
  (``frames_per_s``: throughput of the hop pair edge -> relay -> server -> back).

Frames are random unit-power complex64 symbols of the task's size (no edge model: only the
hops are measured; the server decodes them with the bundle's real model). The result has one
entry per mode with the median over rounds and every round's figures, and the ratios
``tls / plaintext`` (throughput ratio below 1 and p99 ratio above 1 are the cost).
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["tls_cost", "tls_markdown"]

TRANSMITTER = "bench-tls"


def _topology(path: Path, bundle_dir: Path, task: str) -> Path:
    path.write_text("\n".join([
        "[bundle]", f'path = "{bundle_dir}"', "",
        "[server]", 'host = "127.0.0.1"', "port = 0", "metrics_port = -1", "max_wait_ms = 1.0", "",
        "[basestation]", 'host = "127.0.0.1"', "port = 0", "metrics_port = -1", "",
        "[[transmitters]]", f'id = "{TRANSMITTER}"', f'task = "{task}"', "snr_db = 10.0", 'fading = "awgn"',
        "seed = 1", ""]))
    return path


def _start(name: str, module: str, config: Path, work: Path, env: dict[str, str], prefix: str, tls) -> tuple[Any, str]:
    from rkdsc.common.experiments.demo import READY_TIMEOUT_S, Child, DemoError, wait_serving

    ready = work / f"{name}.json"
    ready.unlink(missing_ok=True)
    child = Child(name, [sys.executable, "-m", module, "--config", str(config), "--ready-file", str(ready)],
                  {**os.environ, "PYTHONUNBUFFERED": "1", **env, f"{prefix}_BIND": "127.0.0.1:0"},
                  work / f"{name}.log")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if not child.alive() or time.monotonic() > deadline:
            child.kill()
            raise DemoError(f"{name} did not start; log {child.log_path}:\n{child.tail()}")
        time.sleep(0.05)
    addr = f"127.0.0.1:{json.loads(ready.read_text())['port']}"
    try:
        wait_serving(addr, child, tls=tls)
    except Exception:
        child.kill()
        raise
    return child, addr


def _frames(k: int, n: int, task: str, first_id: int, seed: int) -> list:
    from rkdsc.common import channel
    from rkdsc.common.wire import encode_tensor
    from rkdsc.v1 import emulator_pb2 as pb

    rng = np.random.default_rng(seed)
    z = channel.normalize_power(rng.standard_normal((n, k)) + 1j * rng.standard_normal((n, k))).astype(np.complex64)
    out = []
    for i in range(n):
        data, dtype, shape = encode_tensor(z[i])
        out.append(pb.Frame(transmitter_id=TRANSMITTER, task=task, frame_id=first_id + i, encoder_snr_db=10.0,
                            symbols=pb.Tensor(data=data, dtype=dtype, shape=shape), has_label=False, label=-1))
    return out


def _measure(relay_addr: str, tls, k: int, task: str, frames: int, unloaded: int, window: int) -> dict:
    from rkdsc.common.certs import Identity
    from rkdsc.common.service import RequestQueue, channel_options
    from rkdsc.common.service.security import open_channel, wait_connected
    from rkdsc.v1 import emulator_pb2_grpc as pb_grpc

    t0 = time.perf_counter()
    chan = open_channel(relay_addr, tls, Identity.transmitter(TRANSMITTER), options=channel_options(4 << 20))
    try:
        wait_connected(chan, 30.0)
        connect_ms = (time.perf_counter() - t0) * 1e3
        stub = pb_grpc.RelayStub(chan)
        warm = _frames(k, 10, task, 0, 0)
        for f in warm:
            stub.TransmitOne(f, timeout=30)
        lat = []
        for f in _frames(k, unloaded, task, 100, 1):
            s = time.perf_counter()
            stub.TransmitOne(f, timeout=30)
            lat.append((time.perf_counter() - s) * 1e3)
        todo = _frames(k, frames, task, 1_000_000, 2)
        slots = threading.Semaphore(window)
        q = RequestQueue()
        call = stub.Transmit(q)
        got = [0]

        def feed():
            for f in todo:
                slots.acquire()
                q.put(f)
            q.close()

        s = time.perf_counter()
        threading.Thread(target=feed, daemon=True).start()
        for res in call:
            if res.error.code:
                raise RuntimeError(f"bench_tls: frame {res.frame_id} failed: {res.error.message}")
            got[0] += 1
            slots.release()
        wall = time.perf_counter() - s
        if got[0] != frames:
            raise RuntimeError(f"bench_tls: {got[0]} of {frames} results")
    finally:
        chan.close()
    arr = np.asarray(lat)
    return {"connect_ms": connect_ms, "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99)),
            "frames_per_s": frames / wall}


def tls_cost(bundle_dir: str | os.PathLike, frames: int = 400, unloaded: int = 100, rounds: int = 2,
             mode: str = "mtls", window: int = 32, task: str | None = None,
             work: str | os.PathLike | None = None) -> dict:
    """Plaintext and ``mode`` (``tls`` or ``mtls``) measured alternately; see the module doc."""
    from rkdsc.common.bundle import load_bundle
    from rkdsc.common.certs import write_certs
    from rkdsc.common.config import TLSConfig

    if mode not in ("tls", "mtls"):
        raise ValueError(f"mode: expected tls or mtls, got {mode!r}")
    bundle_dir = Path(bundle_dir).resolve()
    bundle = load_bundle(bundle_dir, verify=True)
    task = task or bundle.task_names[0]
    k = bundle.task(task).symbols_per_image
    tmp = None if work is not None else tempfile.TemporaryDirectory(prefix="rkdsc-bench-tls-")
    root = Path(work) if work is not None else Path(tmp.name)
    root.mkdir(parents=True, exist_ok=True)
    try:
        certs = root / "certs"
        write_certs(certs, [TRANSMITTER], reuse_ca=False)
        config = _topology(root / "topology.toml", bundle_dir, task)
        runs: dict[str, list[dict]] = {"plaintext": [], mode: []}
        for r in range(rounds):
            for label in ("plaintext", mode):
                env = {"RKDSC_TLS": "off" if label == "plaintext" else mode, "RKDSC_TLS_DIR": str(certs)}
                tls = TLSConfig(mode=env["RKDSC_TLS"], dir=certs)
                work_r = root / f"round{r}-{label}"
                work_r.mkdir(exist_ok=True)
                children = []
                try:
                    server, server_addr = _start("server", "rkdsc.server", config, work_r, env, "RKDSC_SERVER", tls)
                    children.append(server)
                    relay, relay_addr = _start("relay", "rkdsc.basestation", config, work_r,
                                               {**env, "RKDSC_SERVER_ADDR": server_addr}, "RKDSC_RELAY", tls)
                    children.append(relay)
                    runs[label].append(_measure(relay_addr, tls, k, task, frames, unloaded, window))
                finally:
                    for child in reversed(children):
                        child.stop()
        doc: dict[str, Any] = {"mode": mode, "frames": frames, "unloaded_calls": unloaded, "rounds": rounds,
                               "window": window, "task": task, "symbols_per_frame": k}
        for label, rows in runs.items():
            doc[label] = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
            doc[label]["per_round"] = rows
        doc["throughput_ratio"] = doc[mode]["frames_per_s"] / doc["plaintext"]["frames_per_s"]
        doc["p99_ratio"] = doc[mode]["p99_ms"] / doc["plaintext"]["p99_ms"]
        doc["p50_ratio"] = doc[mode]["p50_ms"] / doc["plaintext"]["p50_ms"]
        return doc
    finally:
        if tmp is not None:
            tmp.cleanup()


def tls_markdown(doc: dict) -> str:
    """A markdown table of ``tls_cost``'s result (for the bench report)."""
    mode = doc["mode"]
    lines = [f"TLS cost ({mode} vs plaintext; {doc['frames']} streamed frames, {doc['unloaded_calls']} unloaded "
             f"calls, median of {doc['rounds']} rounds, K = {doc['symbols_per_frame']} symbols)", "",
             "| hop security | frames/s (stream) | unloaded p50 ms | unloaded p99 ms | connect ms |",
             "|---|---:|---:|---:|---:|"]
    for label in ("plaintext", mode):
        r = doc[label]
        lines.append(f"| {label} | {r['frames_per_s']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
                     f"{r['connect_ms']:.1f} |")
    lines.append(f"| ratio {mode} / plaintext | {doc['throughput_ratio']:.3f} | {doc['p50_ratio']:.3f} | "
                 f"{doc['p99_ratio']:.3f} | |")
    return "\n".join(lines)
