"""Networked path (edge -> relay -> server over localhost gRPC, separate processes) against
the in-process pipeline, in one run; prints one JSON document.

    .venv/bin/python bench/networked_vs_inprocess.py [--bundle DIR] [--images 200] [--out FILE]

* in-process: ``InProcessPipeline`` over the same image files in batches of
  ``--batch-size`` (read + preprocess + encode + channel + decode in one process, onnxruntime
  with its default thread count); per-image latency = its batch's wall time.
* networked: ``rkdsc.common.experiments.demo.run_demo`` with 1 and with 3 edge devices (each sends all N
  images; one onnxruntime thread per edge device, the server with its default); throughput
  = answered images / the longest edge wall time (service start-up excluded, reported
  apart); per-image latency = the edge client's ``latency_ms`` (start of encoding the
  image's batch -> its result, including waiting for a flow-control slot); ``rtt_ms`` =
  frame handed to gRPC -> its result (uplink, channel, server queue + decode, downlink).
* unloaded latency: batch 1 and one frame in flight (networked), batch 1 (in-process).
* bytes on the wire per image: the serialized uplink ``Frame`` and downlink ``Result``
  (protobuf bytes; gRPC adds a 5-byte message prefix and HTTP/2 a 9-byte frame header per
  DATA frame), against the raw image at the bundle's input size (H x W x 3 uint8).

The bundle: ``--bundle``, else ``deploy/bundle`` when it exists, else a small random
bundle (needs torch). Images: the first N held-back digits at the bundle's input size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def pct(values, q):
    return float(np.percentile(np.asarray(values, np.float64), q)) if values else None


def in_process(bundle, task: str, images: Path, batch_size: int, snr_db: float, fading: str) -> dict:
    from rkdsc.common.bundle import InProcessPipeline
    from rkdsc.common.data.images import list_images, load_rgb, preprocess

    pipe = InProcessPipeline(bundle, task, seed=1)
    paths = list_images(images, check=False).paths
    warm = np.stack([preprocess(load_rgb(paths[0]), bundle.input)])
    pipe.run(warm, snr_db, fading)  # session warm-up, as the services are warm
    lat: list[float] = []
    t0 = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        tb = time.perf_counter()
        x = np.stack([preprocess(load_rgb(p), bundle.input) for p in paths[i:i + batch_size]])
        pipe.run(x, snr_db, fading)
        lat += [(time.perf_counter() - tb) * 1e3] * len(x)
    wall = time.perf_counter() - t0
    return {"images": len(paths), "wall_s": wall, "images_per_s": len(paths) / wall,
            "latency_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99)}}


def networked(bundle_dir: Path, task: str, images: Path, n: int, edges: int, batch_size: int, snr_db: float,
              fading: str, work: Path, max_in_flight: int = 32, name: str | None = None) -> dict:
    from rkdsc.common.experiments.demo import run_demo

    lines = [f'[bundle]\npath = "{bundle_dir.as_posix()}"', "[server]\nport = 0\nmetrics_port = 0",
             "[basestation]\nport = 0\nmetrics_port = 0"]
    for i in range(edges):
        lines.append(f'[[transmitters]]\nid = "edge-{i + 1}"\ntask = "{task}"\nsnr_db = {snr_db}\n'
                     f'fading = "{fading}"\nseed = {i + 1}\nimages = "{images.as_posix()}"\n'
                     f"batch_size = {batch_size}\nlimit = {n}\nmax_in_flight = {max_in_flight}")
    name = name or f"net-{edges}"
    cfg = work / f"topology-{name}.toml"
    cfg.write_text("\n\n".join(lines) + "\n")
    t0 = time.perf_counter()
    summary = run_demo(cfg, work / name, quiet=True)
    total = time.perf_counter() - t0
    rows = summary["transmitters"]
    lat, rtt, up, down = [], [], [], []
    for r in rows:
        with open(r["results"]) as fh:
            recs = [rec for rec in map(json.loads, fh) if rec["error"] is None]
        lat += [rec["latency_ms"] for rec in recs]
        rtt += [rec["rtt_ms"] for rec in recs]
        s = json.loads((Path(r["results"]).parent / "summary.json").read_text())
        up.append(s["uplink_bytes_per_image"])
        down.append(s["downlink_bytes_per_image"])
    answered = sum(r["answered"] for r in rows)
    edge_wall = max(r["wall_s"] for r in rows)
    return {"edges": edges, "batch_size": batch_size, "max_in_flight": max_in_flight, "images": sum(r["images"] for r in rows), "answered": answered,
            "errors": sum(r["errors"] for r in rows), "ok": summary["ok"],
            "images_per_s": answered / edge_wall, "edge_wall_s": edge_wall,
            "startup_and_teardown_s": total - edge_wall,
            "latency_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99)},
            "rtt_ms": {"p50": pct(rtt, 50), "p99": pct(rtt, 99)},
            "uplink_frame_bytes_per_image": float(np.mean(up)), "downlink_result_bytes_per_image": float(np.mean(down))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", default=None, help="bundle dir (default deploy/bundle, else a random bundle)")
    p.add_argument("--images", type=int, default=200, help="images per edge device (default 200)")
    p.add_argument("--batch-size", type=int, default=16, help="edge / in-process batch size (default 16)")
    p.add_argument("--snr", type=float, default=10.0, help="link SNR in dB (default 10)")
    p.add_argument("--fading", default="awgn", help="fading (default awgn)")
    p.add_argument("--out", default=None, help="also write the JSON here")
    args = p.parse_args(argv)

    from rkdsc.common.bundle import load_bundle
    from rkdsc.common.data.samples import write_samples

    with tempfile.TemporaryDirectory(prefix="rkdsc-bench-") as tmp:
        work = Path(tmp)
        if args.bundle:
            bundle_dir = Path(args.bundle).resolve()
        elif (ROOT / "deploy" / "bundle" / "manifest.json").exists():
            bundle_dir = ROOT / "deploy" / "bundle"
        else:
            from rkdsc.common.bundle import build_random_bundle

            bundle_dir = Path(build_random_bundle(work / "bundle")).resolve()
        bundle = load_bundle(bundle_dir)
        task = bundle.task().name
        h, w = bundle.input.size
        images = work / "images"
        write_samples(images, count=args.images, size=h)
        ip = in_process(bundle, task, images, args.batch_size, args.snr, args.fading)
        net = {str(e): networked(bundle_dir, task, images, args.images, e, args.batch_size, args.snr, args.fading, work)
               for e in (1, 3)}
        # unloaded latency: one image at a time, one frame in flight
        n_lat = min(args.images, 100)
        ip_1 = in_process(bundle, task, images, 1, args.snr, args.fading)
        net_1 = networked(bundle_dir, task, images, n_lat, 1, 1, args.snr, args.fading, work, max_in_flight=1,
                          name="net-latency")
        spec = bundle.task(task)
        raw = 3 * h * w
        up = net["1"]["uplink_frame_bytes_per_image"]
        doc = {
            "bundle": str(bundle_dir), "provenance": bundle.manifest.get("provenance", {}).get("method"),
            "task": task, "input_size": [h, w], "symbols_per_image": spec.symbols_per_image,
            "images_per_edge": args.images, "batch_size": args.batch_size, "snr_db": args.snr, "fading": args.fading,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "inprocess": ip, "networked": net,
            "unloaded_latency": {"note": "batch 1, one frame in flight", "inprocess": ip_1, "networked": net_1},
            "ratios": {"networked_1_over_inprocess": net["1"]["images_per_s"] / ip["images_per_s"],
                       "networked_3_over_inprocess": net["3"]["images_per_s"] / ip["images_per_s"],
                       "networked_3_over_1": net["3"]["images_per_s"] / net["1"]["images_per_s"]},
            "bytes_per_image": {
                "raw_image_uint8": raw, "float32_input": 4 * raw,
                "symbol_payload": 8 * spec.symbols_per_image,
                "uplink_frame": up, "uplink_frame_with_grpc_framing": up + 5 + 9,
                "downlink_result": net["1"]["downlink_result_bytes_per_image"],
                "uplink_over_raw": up / raw},
        }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
