"""``rkdsc bench``: side-by-side benchmarks of the emulator in one run.

    rkdsc bench [--bundle DIR] [--images N] [--edges 1,3,32] [--rounds R] [--out FILE.json]
    rkdsc bench --soak-s SECONDS --edges 32 [--soak-images N] [--sample-every S]

0. **the data plane against its goals** (``goal_rows``, ``GOALS``; first table, PASS / FAIL per row):
   images/s with 1 edge (batch ``--batch-size``) >= 0.8x in-process and with 3 edges >= 1.0x; the
   per-image p99 at batch 1 with one frame in flight (``batch_size = 1``, ``max_in_flight = 1``)
   <= the in-process batch-1 p99 + 2 ms; the relay's channel cost per complex symbol *as the relay
   calls it* <= 50 ns (the frames per ``channel.simulate`` call are read from the relay's own metrics,
   ``rkdsc_relay_channel_seconds_count`` observed once per call against ``rkdsc_relay_frames_total``,
   and that call pattern is timed: today one call per frame, ``z [1, K]``); the many-edge run (the
   largest ``--edges`` above 3, 32 by default) >= 0.9x the 3-edge images/s with 0 errors. Ratios and
   differences are per round, side by side; the row gives the median and the range. The many-edge
   run's devices go to edge processes of ``--edges-per-process`` devices (16: 32 devices in 2
   ``rkdsc fleet`` processes; each device its own stream, identity and link through the relay, as
   32 boards would have), and are run again as a process each for comparison
   (``networked_process_per_device``, in the row's detail; docs/decisions.md, "32 devices, how many
   processes").
1. **in-process vs networked**: the same N images (the first N of the image folder) through
   ``InProcessPipeline`` (read + preprocess + encode + channel + decode in this process, in
   batches of ``--batch-size``) and through the real topology (``rkdsc.common.experiments.demo.run_demo``: server,
   relay and edge devices as separate processes talking gRPC on localhost) with each ``--edges``
   count of edge devices (each sends the N images), and the batch-1 runs (``--latency-images``).
   Reported: images per second (networked: all answered images / the window from the first
   edge's start of streaming to the last edge's end, from each edge's wall time and the time it
   wrote its summary, so service and process start-up are excluded; they are listed apart) and
   p50 / p99 latency per image (from the start of encoding the image's batch to its result, the
   edge client's definition; in-process: the batch's wall time), the edge's round trip
   (``rtt_ms``), and what the relay and server measured themselves (``services``: relay frames
   per channel call, channel ns per symbol inside the relay, server mean decode batch), and the CPU
   per answered image by role while streaming (``cpu_us_per_image``: the edge processes' own CPU
   time over their runs, summed, and the relay's and the server's from ``/proc`` between the start
   gate and the last edge's exit), so a row that falls short says which process paid for it.
2. **edge encoder, torch vs onnxruntime** at batch 1 and 32 with equal thread counts
   (``rkdsc.common.experiments.timing``), on a same-weight pair only: the torch twin is rebuilt
   through the method registry (the training work dir's weights when it is still there, the
   seeded weights of a random test bundle, else the provenance's architecture with random
   weights); a twin that does not hold the bundle's weights is compared with its own ONNX
   export instead of the bundle's file (``encoder.ort_source`` and a note say so); without a
   twin onnxruntime is timed alone, with the reason in ``encoder.torch_source``.
3. **channel cost on the relay**: ``rkdsc.common.channel.simulate`` on many frames, in ns per
   complex symbol, for AWGN and Rayleigh block fading, both batched (all frames in one call)
   and per frame (one call per frame, as the relay does).
4. **bytes on the wire** per image (the serialized uplink ``Frame``) against the raw image
   (H x W x 3 bytes at the model's input size), the float32 input tensor and the image file.
5. **soak** (``--soak-s``, ``run_soak``; instead of 0-4): the largest ``--edges`` count of edge
   devices through one relay and server for that long; the edge client sends its images once,
   so each device is a sequence of ``rkdsc edge`` processes (``--soak-images`` images each, the
   last ones sized to end with the soak). Reported: images, errors, failed edge runs, images/s,
   latency, and the server's and relay's RSS (``/proc/PID/status`` VmRSS), thread count
   (Threads) and open file descriptors when ready, at the start (every device streaming), every
   ``--sample-every`` seconds and at the end. Exit status 1 when an image got no answer, an edge
   run failed or a service did not stop cleanly.

The bundle: ``--bundle``, else ``deploy/bundle`` when present, else a small random bundle
(``rkdsc.common.bundle.build_random_bundle``, needs torch) in a temporary folder. Images:
``--data DIR`` (class sub-folders), else the held-back digits (task ``digits``) or synthetic
images named by the task's classes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rkdsc.common.experiments.bench_format import DEFAULT_ROUNDS, bench_markdown, plot_goals, soak_markdown
from rkdsc.common.cliargs import int_list
from rkdsc.common.config import TransmitterConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BUNDLE = REPO_ROOT / "deploy" / "bundle"
DEFAULT_EDGES = (1, 3, 32)      # edge-device counts of the networked runs; the largest above 3: the many-edge row
DEFAULT_MANY_PER_PROCESS = 16   # devices per edge process in the many-edge runs (32 devices: 2 fleet processes)
DEFAULT_SOAK_IMAGES = 512       # soak: images per edge run (at most)
# the data plane's goals (issue "Data plane: the network must cost less than what it emulates")
GOALS = {
    "throughput_1_edge": {"threshold": 0.8, "text": ">= 0.8x in-process"},
    "throughput_3_edges": {"threshold": 1.0, "text": ">= 1.0x in-process"},
    "latency_p99_batch1": {"threshold": 2.0, "text": "<= in-process p99 + 2 ms"},
    "relay_channel_ns_per_symbol": {"threshold": 50.0, "text": "<= 50 ns"},
    "scale_many_edges": {"threshold": 0.9, "text": ">= 0.9x the 3-edge figure, 0 errors"},
}


def _write_json(out: str | os.PathLike, doc: dict) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def goals_plot_path(out: str | os.PathLike) -> Path:
    """Where ``--out FILE.json`` puts the goals' plot: FILE.png (never the JSON itself)."""
    png = Path(out).with_suffix(".png")
    return png if png != Path(out) else Path(f"{out}.png")


def _shown(path: str | Path) -> str:
    """A path as the reports show it: relative to the working directory when under it."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


# ----------------------------------------------------------------------------- inputs

def resolve_bundle(bundle: str | None, work: Path, log: Callable[[str], None]) -> tuple[Path, str]:
    """(bundle dir, how it was chosen)."""
    if bundle:
        return Path(bundle), "given"
    if (DEFAULT_BUNDLE / "manifest.json").is_file():
        return DEFAULT_BUNDLE, "default deploy/bundle"
    try:
        from rkdsc.common.bundle import build_random_bundle
    except ImportError as exc:  # pragma: no cover - torch missing
        raise SystemExit(f"rkdsc bench: no --bundle, no {DEFAULT_BUNDLE}, and no torch to build a random one ({exc})")
    log(f"bench: no deploy/bundle; building a random test bundle in {work / 'bundle'}")
    return build_random_bundle(work / "bundle"), "random test bundle (build_random_bundle)"


def prepare_images(data: str | None, bundle, task: str, n: int, work: Path) -> Path:
    """An image folder with class sub-folders named like the task's classes (>= n images).

    The generated folder (work/images/<task>) is the bench's own: a kept --work-dir gets it
    written afresh, so a second run into the same folder sends the same images as the first."""
    if data:
        return Path(data)
    spec = bundle.task(task)
    folder = work / "images" / task
    h, w = bundle.input.size
    if task == "digits":
        from rkdsc.common.data.samples import write_samples

        files = write_samples(folder, size=h if h == w else 32, overwrite=True)
        # more than the 359 held-back digits: byte-identical copies (NNNN-rK.png) up to n, so that a
        # round streams long enough for its rate not to hang on one scheduling hiccup
        for k in range(1, -(-n // len(files))):
            for f in files[:n - k * len(files)]:
                shutil.copyfile(f, f.with_name(f"{f.stem}-r{k}{f.suffix}"))
        return folder
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        name = spec.class_names[i % spec.num_classes]
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name / f"{i:05d}.png")
    return folder


def first_images(folder: Path, n: int):
    """The n images the edge client sends with ``limit = n`` (evenly spaced over the
    class-sorted files, as ``rkdsc.edge.client.EdgeClient.run`` picks them) and their class names."""
    from rkdsc.common.data.images import list_images

    listing = list_images(folder, check=False)
    if not listing.paths:
        raise SystemExit(f"rkdsc bench: no readable images under {folder}")
    names = [listing.class_names[l] for l in listing.labels] if listing.labels is not None else [None] * len(listing)
    keep = list(range(len(listing.paths)))
    if n < len(keep):
        keep = np.unique(np.linspace(0, len(keep) - 1, n).round().astype(int)).tolist()
    return [listing.paths[i] for i in keep], [names[i] for i in keep]


# ----------------------------------------------------------------------------- 1. in-process

def bench_inprocess(bundle, task: str, paths: list[Path], names: list[str | None], batch_size: int,
                    snr_db: float, fading: str, seed: int = 0) -> dict:
    from rkdsc.common.bundle.runtime import InProcessPipeline
    from rkdsc.common.data.images import load_rgb, preprocess

    pipe = InProcessPipeline(bundle, task, seed=seed)
    index = {c: i for i, c in enumerate(pipe.spec.class_names)}
    # warm-up: the networked edges also load their sessions before the timed stream
    x0 = np.stack([preprocess(load_rgb(paths[0]), bundle.input)])
    pipe.run(x0, snr_db, fading)
    lat, correct, labelled, compute_s = [], 0, 0, 0.0
    t_all = time.perf_counter()
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        t0 = time.perf_counter()
        x = np.stack([preprocess(load_rgb(p), bundle.input) for p in chunk])
        t1 = time.perf_counter()
        out = pipe.run(x, snr_db, fading)
        t2 = time.perf_counter()
        compute_s += t2 - t1
        lat += [(t2 - t0) * 1e3] * len(chunk)
        for name, pred in zip(names[start:start + batch_size], out["pred"]):
            if name in index:
                labelled += 1
                correct += int(pred == index[name])
    wall = time.perf_counter() - t_all
    n = len(paths)
    return {"images": n, "wall_s": wall, "images_per_s": n / wall if wall > 0 else None,
            "compute_images_per_s": n / compute_s if compute_s > 0 else None,
            "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
            "accuracy": correct / labelled if labelled else None, "batch_size": batch_size}


# ----------------------------------------------------------------------------- 2. networked

def topology_header(path: Path, bundle_dir: Path) -> list[str]:
    """TOML lines of a benchmark topology before its devices: root, bundle, and the server and
    relay on localhost with free ports (0)."""
    return [f'root = "{path.parent.as_posix()}"', "", "[bundle]", f'path = "{Path(bundle_dir).resolve().as_posix()}"', "",
            "[server]", 'host = "127.0.0.1"', "port = 0", "metrics_port = 0", "",
            "[basestation]", 'host = "127.0.0.1"', "port = 0", "metrics_port = 0", ""]


_DEFAULT_READ_AHEAD = next(f.default for f in dataclasses.fields(TransmitterConfig) if f.name == "read_ahead")


def write_topology(path: Path, bundle_dir: Path, images: Path, task: str, edges: int, n: int, batch_size: int,
                   snr_db: float, fading: str, max_in_flight: int | None = None, batch_messages: bool = True,
                   read_ahead: bool | None = None) -> Path:
    lines = topology_header(path, bundle_dir)
    for i in range(edges):
        lines += ["[[transmitters]]", f'id = "edge-{i + 1}"', f'task = "{task}"', f"snr_db = {float(snr_db)}",
                  f'fading = "{fading}"', f"seed = {i + 1}", f'images = "{Path(images).resolve().as_posix()}"',
                  f"batch_size = {batch_size}", f"limit = {n}"]
        lines += ([f"max_in_flight = {int(max_in_flight)}"] if max_in_flight else [])
        lines += ([] if batch_messages else ["batch_messages = false"])
        lines += [] if read_ahead is None else [f"read_ahead = {'true' if read_ahead else 'false'}"]
        lines += [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _prom(path: Path) -> dict[str, float]:
    """Samples of a scraped /metrics file summed over their labels ({} when missing or unreadable);
    ``name{outcome=X}`` keys keep the per-outcome sums."""
    from rkdsc.common.metrics import totals_by_name

    try:
        return totals_by_name(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def service_figures(out: Path, symbols_per_frame: int) -> dict:
    """What the relay and the server measured themselves during a run (their /metrics, scraped by
    the demo before the stop): the relay's channel calls and time (``rkdsc_relay_channel_seconds``, one
    observation per ``channel.simulate`` call), frames per channel call, channel ns per complex symbol
    inside the running relay (thread hand-offs and GIL waits included), and the server's mean decode
    batch."""
    relay, server = _prom(out / "metrics" / "relay.prom"), _prom(out / "metrics" / "server.prom")
    calls, ch_s = relay.get("rkdsc_relay_channel_seconds_count"), relay.get("rkdsc_relay_channel_seconds_sum")
    frames = sum(relay.get(f"rkdsc_relay_frames_total{{outcome={o}}}", 0.0) for o in ("ok", "error"))
    rt_n, rt_s = relay.get("rkdsc_relay_roundtrip_seconds_count"), relay.get("rkdsc_relay_roundtrip_seconds_sum")
    b_n, b_sum = server.get("rkdsc_batch_size_count"), server.get("rkdsc_batch_size_sum")
    d_s = server.get("rkdsc_decode_seconds_sum")
    return {
        "relay_channel_calls": calls, "relay_frames": frames or None,
        "relay_frames_per_channel_call": (frames / calls) if calls and frames else None,
        "relay_channel_ns_per_symbol": (ch_s / (frames * symbols_per_frame) * 1e9) if ch_s and frames else None,
        "relay_roundtrip_ms_mean": (rt_s / rt_n * 1e3) if rt_n else None,
        "server_batches": b_n, "server_mean_batch": (b_sum / b_n) if b_n else None,
        "server_decode_ms_per_batch": (d_s / b_n * 1e3) if b_n and d_s is not None else None,
    }


def _edge_window(rows: list[dict]) -> float:
    """Seconds from the first edge's start of streaming to the last edge's end: each edge writes its
    summary.json when it is done (its mtime: the end) and reports its own wall time (end - start).
    Edges that start late (process start-up on a busy machine) widen the window, so the aggregate rate
    is not inflated by edges that ran one after another. Falls back to the longest edge wall time."""
    spans = []
    for r in rows:
        try:
            end = (Path(r["results"]).parent / "summary.json").stat().st_mtime
        except (OSError, KeyError):
            continue
        if r.get("wall_s"):
            spans.append((end - r["wall_s"], end))
    longest = max((r.get("wall_s") or 0.0) for r in rows) if rows else 0.0
    if len(spans) != len(rows) or not spans:
        return longest
    return max(longest, max(e for _, e in spans) - min(s for s, _ in spans))


def _by_edge_process(rows: list[dict], value: Callable[[dict], Any]) -> dict[Any, list]:
    """``value(row)`` of a run's device rows grouped by edge process (``run_demo``'s ``process``;
    a row without one is a process of its own)."""
    groups: dict[Any, list] = {}
    for i, r in enumerate(rows):
        groups.setdefault(r.get("process", i), []).append(value(r))
    return groups


def cpu_per_image(rows: list[dict], services_cpu_s: dict, answered: int) -> dict:
    """CPU microseconds per answered image by role over a run's streaming: ``edges`` (every edge
    process, its own ``process_cpu_s``; the devices of one process, a fleet, report the process's
    CPU over their own runs: counted once, the largest), ``relay``, ``server`` (``run_demo``'s
    ``services_cpu_s``) and ``total``; a role is None when a figure is missing (then ``total`` is
    None too)."""
    edge = [None if None in v else max(v)
            for v in _by_edge_process(rows, lambda r: r.get("process_cpu_s")).values()]
    by = {"edges": sum(edge) if rows and None not in edge else None,
          "relay": services_cpu_s.get("relay"), "server": services_cpu_s.get("server")}
    out = {k: (v / answered * 1e6 if v is not None and answered else None) for k, v in by.items()}
    out["total"] = None if None in out.values() else sum(out.values())
    return out


def bench_networked(bundle_dir: Path, images: Path, task: str, edges: int, n: int, batch_size: int, snr_db: float,
                    fading: str, work: Path, timeout_s: float, tag: str = "", max_in_flight: int | None = None,
                    symbols_per_frame: int | None = None, batch_messages: bool = True,
                    read_ahead: bool | None = None, edges_per_process: int = 1) -> dict:
    from rkdsc.common.experiments.demo import DemoError, run_demo

    out = work / f"net-{edges}{tag}"
    cfg = write_topology(work / f"topology-{edges}{tag}.toml", bundle_dir, images, task, edges, n, batch_size, snr_db,
                         fading, max_in_flight, batch_messages, read_ahead)
    t0 = time.perf_counter()
    failure = None
    try:
        summary = run_demo(cfg, out, timeout_s=timeout_s, limit=n, quiet=True, start_together=True,
                           edges_per_process=edges_per_process)
    except DemoError as exc:  # e.g. an edge gave up on results (result timeout): report, do not hang
        failure = str(exc)
        try:
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {"transmitters": [], "ok": False}
    total_s = time.perf_counter() - t0
    rows = summary["transmitters"]
    lat: list[float] = []
    rtt: list[float] = []
    svc: list[float] = []  # encode_ms + rtt_ms: without the wait for a free max_in_flight slot
    for r in rows:
        try:
            with open(r["results"], encoding="utf-8") as f:
                for rec in map(json.loads, f):
                    if rec.get("latency_ms") is not None:
                        lat.append(rec["latency_ms"])
                    if rec.get("rtt_ms") is not None:
                        rtt.append(rec["rtt_ms"])
                        if rec.get("encode_ms") is not None:
                            svc.append(rec["encode_ms"] + rec["rtt_ms"])
        except OSError:
            pass
    answered = sum(r["answered"] for r in rows)
    edge_wall = max((r.get("wall_s") or 0.0) for r in rows) if rows else 0.0
    window = _edge_window(rows)
    labelled = [r for r in rows if r.get("accuracy") is not None]
    cpu = cpu_per_image(rows, summary.get("services_cpu_s") or {}, answered)
    k = symbols_per_frame or (rows[0].get("symbols_per_image") if rows else None) or 1
    return {
        "edges": edges, "edges_per_process": edges_per_process,
        "edge_processes": len(_by_edge_process(rows, lambda r: None)),
        "images": sum(r["images"] for r in rows), "answered": answered,
        "errors": sum(r["errors"] for r in rows), "ok": summary.get("ok") and failure is None,
        "failure": failure, "batch_size": batch_size, "max_in_flight": max_in_flight,
        "images_per_s": answered / window if window > 0 else None,
        "per_edge_images_per_s": [r.get("images_per_s") for r in rows],
        "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
        "rtt_ms": {"p50": _percentile(rtt, 50), "p99": _percentile(rtt, 99)},
        "service_latency_ms": {"p50": _percentile(svc, 50), "p99": _percentile(svc, 99)},
        "batch_messages": batch_messages,
        "read_ahead": bool(_DEFAULT_READ_AHEAD if read_ahead is None else read_ahead),
        "edge_wall_s": edge_wall, "edge_window_s": window, "total_wall_s": total_s,
        "startup_and_teardown_s": max(0.0, total_s - window),
        "accuracy": (sum(r["accuracy"] for r in labelled) / len(labelled)) if labelled else None,
        "uplink_bytes_per_image": rows[0].get("uplink_bytes_per_image") if rows else None,
        "raw_image_bytes": rows[0].get("raw_image_bytes") if rows else None,
        "services": service_figures(out, int(k)),
        "cpu_us_per_image": cpu,
        "summary": str(out / "summary.json"),
    }


# ----------------------------------------------------------------------------- 3. encoder

def _twin_spec(prov: dict, task: str, num_classes: int):
    """(ModelSpec of the bundle task's edge part from its provenance, or None, why)."""
    from rkdsc.common.models.spec import ModelSpec, read_model_spec

    tprov = (prov.get("tasks") or {}).get(task) or {}
    method = tprov.get("method") or prov.get("method")
    if tprov.get("student") or tprov.get("teacher"):  # provenance with the architecture (ModelSpec keys)
        return read_model_spec({"num_classes": num_classes, **tprov}, method), "provenance"
    if isinstance(prov.get("preset"), str) and tprov.get("depths"):  # older bundles: depths + cat only
        from rkdsc.common.models.cat import CATConfig
        from rkdsc.common.train.presets import load_preset

        p = load_preset(prov["preset"])
        cat = CATConfig(**tprov["cat"]) if method == "rkd-sc" and tprov.get("cat") else None
        return ModelSpec(method="rkd-sc" if cat is not None else "jscc-student", feature_dim=p.teacher.feature_dim,
                         num_classes=num_classes, depths=list(tprov["depths"]), student=p.student_config(),
                         cat=cat), f"preset {prov['preset']!r}"
    return None, "the provenance describes no architecture"


def torch_edge_from_bundle(bundle, task: str):
    """(torch edge part matching the bundle's edge component or None, how it was rebuilt,
    whether it holds the bundle's own weights)."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed: torch column skipped", False
    from rkdsc.common.models.registry import get_method

    prov = bundle.manifest.get("provenance") or {}
    spec = bundle.task(task)
    method = prov.get("method")
    # (a) the training work dir is still there: the exact weights
    wd = prov.get("workdir")
    why = "no training work dir in the provenance"
    if wd and not Path(wd).is_dir():
        why = f"training work dir {wd} not found"
    elif wd:
        why = f"work dir {wd} has no weights for task {task!r}"
        try:
            m = get_method(method)
            for tdir in m.task_dirs(Path(wd)):
                if tdir.name == task:
                    system, _ = m.load(tdir)
                    return m.parts(system)[0].eval(), f"trained weights from {_shown(tdir)}", True
        except Exception as exc:  # noqa: BLE001 - fall through to an architecture-only rebuild
            why = f"loading {wd} failed: {type(exc).__name__}: {exc}"
    try:
        arch, source = _twin_spec(prov, task, spec.num_classes)
    except Exception as exc:  # noqa: BLE001
        arch, source = None, f"rebuild failed: {type(exc).__name__}: {exc}"
    if arch is None:
        return None, f"cannot rebuild a torch twin of this bundle ({why}; {source}): torch column skipped", False
    m = get_method(arch.method)
    # (b) a random test bundle: same seed, same construction order -> the same weights
    if method == "random-init":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(prov.get("seed", 0)))
            edge = m.parts(m.build(arch))[0]
        return edge.eval(), "seeded weights of the random test bundle (same as the ONNX file)", True
    # (c) the architecture only, random weights
    return m.edge(arch), f"architecture from the {source} with random weights ({why})", False


def bench_encoder(bundle, task: str, batches: tuple[int, ...], threads: int, repeats: int = 15,
                  work: Path | None = None) -> dict:
    """torch vs onnxruntime for the bundle task's edge part, on same-weight pairs only: the bundle's
    ONNX file against a torch twin holding its weights, else the twin against its own ONNX export
    (``ort_source`` says which); without a twin onnxruntime is timed alone (``torch`` false)."""
    from rkdsc.common.experiments import timing

    spec = bundle.task(task)
    size = bundle.input.size[0]
    onnx_path = bundle.component_path(spec.edge)
    edge, how, same = torch_edge_from_bundle(bundle, task)
    out: dict[str, Any] = {"threads": threads, "torch_source": how, "torch": edge is not None,
                           "same_weights": False, "ort_source": f"the bundle's edge file ({spec.edge})",
                           "batches": {}}
    with tempfile.TemporaryDirectory(prefix="rkdsc-bench-twin-", dir=work) as tmp:
        reason = None
        if edge is not None and same:
            diff = timing.max_abs_diff(edge, onnx_path, size, threads=threads)
            if diff > timing.PARITY_ATOL:
                reason = (f"the torch twin does not reproduce the bundle's file (max abs diff {diff:.3g}; "
                          "retrained after the export?)")
        elif edge is not None:
            reason = "the torch twin has random weights"
        if reason is not None:
            try:
                onnx_path = timing.export_edge_onnx(edge, size, Path(tmp) / "twin.edge.onnx")
                out["ort_source"] = (f"an ONNX export of the torch twin (same weights), because {reason}; the "
                                     "bundle's own file is not compared")
            except Exception as exc:  # noqa: BLE001 - no exporter: time onnxruntime alone
                out["torch_source"] = (f"{how}; torch column skipped: {reason} and exporting it to ONNX failed "
                                       f"({type(exc).__name__}: {exc})")
                edge, out["torch"] = None, False
        if edge is None:
            out["batches"] = timing.time_ort_only(onnx_path, size, batches, threads, repeats)
        else:
            out["same_weights"] = True
            out["batches"] = timing.compare_torch_ort(edge, onnx_path, size, batches, threads, repeats)
    return out


# ----------------------------------------------------------------------------- 4. channel

def bench_channel(symbols_per_frame: int, frames: int = 4096, per_frame_calls: int = 2000,
                  snr_db: float = 10.0, fadings: tuple[str, ...] = ("awgn", "rayleigh"),
                  relay_fading: str = "awgn", frames_per_call: float | None = None) -> dict:
    """ns per complex symbol of ``channel.simulate``: all frames in one call (batched) and one frame per
    call, per fading; and the relay's call pattern (``relay_pattern``): ``frames_per_call`` frames
    ``[m, K]`` per call (what the running relay did, from its metrics: one call per message; 1 = one
    call per frame) on one link Generator, with the relay's arguments (``equalize=True``, the Rician K
    factor): ``FrameChannel.run`` for messages (= ``channel.simulate_frames``, whose inputs the relay has
    checked at its boundary), ``channel.simulate`` for single frames."""
    from rkdsc.common import channel

    rng = np.random.default_rng(0)
    k = symbols_per_frame
    z = channel.normalize_power((rng.standard_normal((frames, k)) + 1j * rng.standard_normal((frames, k)))
                                .astype(np.complex64))
    out: dict[str, Any] = {"symbols_per_frame": k, "frames": frames, "per_frame_calls": per_frame_calls}

    def per_call_ns(block: np.ndarray, fading: str, g: np.random.Generator, calls: int, fn=channel.simulate,
                    repeats: int = 5) -> float:
        """Median over ``repeats`` timed loops of ``calls`` calls, after one warm-up call (as the
        batched reference: the median of 5)."""
        fn(block, snr_db, fading, g, equalize=True, k_factor=channel.DEFAULT_K_FACTOR)
        loops = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(calls):
                fn(block, snr_db, fading, g, equalize=True, k_factor=channel.DEFAULT_K_FACTOR)
            loops.append((time.perf_counter() - t) / (calls * block.shape[0] * k) * 1e9)
        return float(statistics.median(loops))

    for fading in dict.fromkeys((*fadings, relay_fading)):
        g = np.random.default_rng(1)
        channel.simulate(z[:8], snr_db, fading, g)  # warm-up
        times = []
        for _ in range(5):
            t = time.perf_counter()
            channel.simulate(z, snr_db, fading, g, equalize=True, k_factor=channel.DEFAULT_K_FACTOR)
            times.append(time.perf_counter() - t)
        batched = statistics.median(times) / (frames * k) * 1e9
        per_frame = per_call_ns(z[:1], fading, g, per_frame_calls)
        out[fading] = {"batched_ns_per_symbol": batched, "per_frame_ns_per_symbol": per_frame,
                       "per_frame_us_per_frame": per_frame * k / 1e3}
    m = max(1, min(frames, int(round(frames_per_call or 1))))
    g = np.random.default_rng(2)
    # the relay calls its link's FrameChannel.run (= simulate_frames, inputs checked at its boundary)
    # once per message; on the single-frame Transmit simulate once per frame
    if frames_per_call and m > 1:
        fc = channel.FrameChannel(relay_fading, channel.DEFAULT_K_FACTOR)
        nv = np.float32(channel.snr_db_to_noise_var(snr_db))
        ns = per_call_ns(z[:m], relay_fading, g, max(5, per_frame_calls // m),
                         fn=lambda x, _snr, _f, rng, **kw: fc.run(x, nv, rng))
    else:
        ns = per_call_ns(z[:m], relay_fading, g, max(5, per_frame_calls // m))
    out["relay_pattern"] = {"fading": relay_fading, "frames_per_call": m,
                            "frames_per_call_source": ("the relay's metrics in the networked runs"
                                                       if frames_per_call else "assumed (no relay metrics)"),
                            "ns_per_symbol": ns,
                            "batched_ns_per_symbol": out[relay_fading]["batched_ns_per_symbol"]}
    return out


# ----------------------------------------------------------------------------- all

def _merge_rounds(results: list[dict]) -> dict:
    """One result from several rounds of the same measurement: images/s and latency percentiles are the
    medians over the rounds (each round's own values kept under "rounds"); counts are summed."""
    med = lambda vals: float(statistics.median(vals)) if vals else None  # noqa: E731
    merged = dict(results[-1])
    for key in ("images_per_s", "compute_images_per_s"):
        if key in merged:
            merged[key] = med([r[key] for r in results if r.get(key)])
    for lat in ("latency_ms", "rtt_ms", "service_latency_ms"):
        if lat in merged:
            merged[lat] = {q: med([r[lat][q] for r in results if (r.get(lat) or {}).get(q) is not None])
                           for q in ("p50", "p99")}
    if "cpu_us_per_image" in merged:  # per role, the median over the rounds that have it
        merged["cpu_us_per_image"] = {
            role: med([r["cpu_us_per_image"][role] for r in results
                       if (r.get("cpu_us_per_image") or {}).get(role) is not None])
            for role in merged["cpu_us_per_image"]}
    for key in ("answered", "errors"):
        if key in merged:
            merged[key] = sum(r.get(key, 0) for r in results)
    if "images" in merged and "answered" in merged:
        merged["images"] = sum(r.get("images", 0) for r in results)
    if "ok" in merged:
        merged["ok"] = all(r.get("ok") for r in results)
        merged["failure"] = next((r["failure"] for r in results if r.get("failure")), None)
    merged["rounds"] = [{"images_per_s": r.get("images_per_s"), "p50_ms": r["latency_ms"].get("p50"),
                         "p99_ms": r["latency_ms"].get("p99"),
                         "service_p99_ms": (r.get("service_latency_ms") or {}).get("p99"),
                         **({"cpu_us_per_image": r["cpu_us_per_image"], "answered": r.get("answered"),
                             "edge_window_s": r.get("edge_window_s")} if "cpu_us_per_image" in r else {})}
                        for r in results]
    return merged


def _median(vals: list[float]) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(statistics.median(vals)) if vals else None


def goal_rows(doc: dict) -> list[dict]:
    """The data-plane figures against their goals (``GOALS``), one row each: ``reference`` (in-process, or
    the 3-edge run for the many-edge row), ``measured``, ``value`` (a ratio, a difference in ms or ns per
    symbol; the median over the rounds, each round under ``rounds``), ``goal`` and ``pass`` (None when
    the row was not run)."""
    r = doc.get("ratios") or {}
    ip, net = doc["inprocess"], doc["networked"]
    rows: list[dict] = []

    def add(key: str, figure: str, unit: str, measure: str, reference, measured, value, rounds, ok,
            reference_label: str = "in-process", detail: str | None = None) -> None:
        g = GOALS[key]
        rows.append({"id": key, "figure": figure, "unit": unit, "measure": measure, "reference": reference,
                     "reference_label": reference_label, "measured": measured, "value": value,
                     "rounds": rounds or [], "goal": g["text"], "threshold": g["threshold"],
                     "pass": None if value is None else bool(ok), "detail": detail})

    for e, key, figure in (("1", "throughput_1_edge", f"images/s, 1 edge (batch {doc['batch_size']})"),
                           ("3", "throughput_3_edges", f"images/s, 3 edges (batch {doc['batch_size']})")):
        v = r.get(f"networked_{e}_over_inprocess_throughput") if e in net else None
        add(key, figure, "images/s", "ratio", ip.get("images_per_s"), (net.get(e) or {}).get("images_per_s"), v,
            r.get(f"networked_{e}_over_inprocess_throughput_rounds"),
            v is not None and v >= GOALS[key]["threshold"])
    lat = doc.get("latency") or {}
    v = r.get("latency_p99_delta_ms")
    lnet = lat.get("networked") or {}
    add("latency_p99_batch1", "per-image p99, batch 1, one frame in flight", "ms", "delta",
        (lat.get("inprocess") or {}).get("latency_ms", {}).get("p99"),
        (lnet.get("service_latency_ms") or {}).get("p99") or lnet.get("latency_ms", {}).get("p99"), v,
        r.get("latency_p99_delta_ms_rounds"), v is not None and v <= GOALS["latency_p99_batch1"]["threshold"],
        detail=(f"edge rtt p99 {lnet['rtt_ms']['p99']:.2f} ms, p50 {lnet['rtt_ms']['p50']:.2f} ms"
                if (lnet.get("rtt_ms") or {}).get("p99") is not None else None))
    rp = (doc.get("channel") or {}).get("relay_pattern") or {}
    v = rp.get("ns_per_symbol")
    inside = r.get("relay_channel_ns_per_symbol_in_relay")
    add("relay_channel_ns_per_symbol", "relay channel cost per complex symbol, as the relay calls it", "ns", "value",
        rp.get("batched_ns_per_symbol"), v, v, None, v is not None and v <= GOALS["relay_channel_ns_per_symbol"]["threshold"],
        reference_label="all frames in one call",
        detail=(f"{rp.get('frames_per_call')} frame(s) per call ({rp.get('fading')})"
                + (f"; inside the running relay (1 edge, its metrics): {inside:.0f} ns" if inside else "")))
    many = doc.get("scale_edges")
    v = r.get(f"networked_{many}_over_3_throughput") if many else None
    res = net.get(str(many)) or {}
    errors = res.get("errors")
    p50 = (res.get("latency_ms") or {}).get("p50")
    per = doc.get("scale_edges_per_process") or 1
    procs = res.get("edge_processes") or (-(-many // per) if many else None)
    layout = f" ({procs} processes of {per} devices)" if many and per > 1 else ""
    add("scale_many_edges", f"{many or 'N'} edges{layout} through one relay and server", "images/s", "ratio",
        (net.get("3") or {}).get("images_per_s"), res.get("images_per_s"), v,
        r.get(f"networked_{many}_over_3_throughput_rounds"),
        v is not None and v >= GOALS["scale_many_edges"]["threshold"] and errors == 0 and res.get("ok"),
        reference_label="3 edges", detail=_many_detail(p50, errors, (net.get("3") or {}).get("cpu_us_per_image"),
                                                       res.get("cpu_us_per_image"), many,
                                                       (doc.get("networked_process_per_device") or {}).get(str(many)),
                                                       r.get(f"networked_{many}_process_per_device_over_3_throughput")))
    return rows


def _many_detail(p50: float | None, errors, cpu3: dict | None, cpu_n: dict | None, many,
                 per_device: dict | None = None, per_device_ratio: float | None = None) -> str | None:
    """The many-edge row's detail: its p50 and errors, where its CPU per image went against the
    3-edge run (the edge processes' and the relay's + server's), and the same devices as a process
    each (images/s and the ratio to the 3-edge figure), when that run was made."""
    parts = [] if p50 is None else [f"p50 {p50 / 1e3:.2f} s, {errors} errors"]
    a, b = cpu3 or {}, cpu_n or {}
    if a.get("total") is not None and b.get("total") is not None:  # total: every role was measured
        parts.append(f"CPU per image 3 -> {many} edges: edge processes {a['edges']:.0f} -> {b['edges']:.0f} us, "
                     f"relay + server {a['relay'] + a['server']:.0f} -> {b['relay'] + b['server']:.0f} us")
    if per_device and per_device.get("images_per_s"):
        parts.append(f"as {many} processes: {per_device['images_per_s']:,.0f} images/s"
                     + (f" ({per_device_ratio:.2f}x), {per_device.get('errors')} errors"
                        if per_device_ratio is not None else ""))
    return "; ".join(parts) or None


def run_bench(bundle: str | None = None, images: int = 128, out: str | None = None, data: str | None = None,
              task: str | None = None, batch_size: int = 16, snr_db: float = 10.0, fading: str = "awgn",
              edges: tuple[int, ...] = DEFAULT_EDGES, encoder_batches: tuple[int, ...] = (1, 32),
              threads: int | None = None, timeout_s: float = 600.0, work_dir: str | None = None,
              log: Callable[[str], None] = print, rounds: int = DEFAULT_ROUNDS,
              latency_images: int | None = None, tls: bool = True,
              many_per_process: int = DEFAULT_MANY_PER_PROCESS) -> dict:
    """Run every benchmark; returns the JSON document (also written to ``out``). The in-process and
    networked runs are repeated ``rounds`` times in alternation (in-process, 1 edge, 3 edges, 32 edges,
    in-process batch 1, networked batch 1 with one frame in flight, again ...), so each round's ratio is
    measured side by side; the document gives the median over the rounds and each round's values, and
    ``goals`` (``goal_rows``) the data-plane figures against their goals. ``latency_images``: images of
    the batch-1 latency runs (None: ``images``; 0: skip them). ``many_per_process``: devices per edge
    process in the runs with more than 3 edges (``python -m rkdsc.edge fleet``: each device its own
    stream, identity and link, the devices of a process coroutines of one event loop); above 1 those
    runs are also made with a process per device, side by side (``networked_process_per_device``)."""
    import onnxruntime

    from rkdsc.common.bundle import load_bundle

    if images < 1:
        raise ValueError(f"--images: expected an integer >= 1, got {images}")
    if rounds < 1:
        raise ValueError(f"--rounds: expected an integer >= 1, got {rounds}")
    if many_per_process < 1:
        raise ValueError(f"--edges-per-process: expected an integer >= 1, got {many_per_process}")
    latency_images = images if latency_images is None else int(latency_images)
    if latency_images < 0:
        raise ValueError(f"--latency-images: expected an integer >= 0, got {latency_images}")
    edges = tuple(dict.fromkeys(int(e) for e in edges))
    tmp = tempfile.TemporaryDirectory(prefix="rkdsc-bench-") if work_dir is None else None
    work = Path(work_dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        bundle_dir, how = resolve_bundle(bundle, work, log)
        bdl = load_bundle(bundle_dir)
        task = task or bdl.task().name
        spec = bdl.task(task)
        folder = prepare_images(data, bdl, task, max(images, latency_images), work)
        paths, names = first_images(folder, images)
        lat_paths, lat_names = first_images(folder, latency_images) if latency_images else ([], [])
        threads = threads or os.cpu_count() or 1
        load = os.getloadavg()[0]
        many = max((e for e in edges if e > 3), default=None)
        doc: dict[str, Any] = {
            "bundle": str(bundle_dir), "bundle_source": how, "task": task, "images_per_edge": len(paths),
            "image_folder": str(folder), "batch_size": batch_size, "snr_db": snr_db, "fading": fading,
            "compact_dim": spec.compact_dim, "symbols_per_image": spec.symbols_per_image,
            "input_size": list(bdl.input.size), "scale_edges": many,
            "scale_edges_per_process": many_per_process if many else None,
            "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "load_avg_1m": round(os.getloadavg()[0], 2), "onnxruntime": onnxruntime.__version__,
                        "python": platform.python_version()},
            "notes": ["in-process: read + preprocess + encode + channel + decode one batch after another in this "
                      "process; networked: the same steps pipelined over edge, relay and server processes (gRPC on "
                      "localhost), so on several cores it can be faster than the in-process loop",
                      "networked images/s: answered images / the window from the first edge's start of streaming "
                      "to the last edge's end (process start-up and teardown excluded, listed apart)"]
                     + ([f"{many} edges: {-(-many // many_per_process)} edge processes of up to {many_per_process} "
                         f"devices (rkdsc fleet: each device its own stream, identity and link); "
                         f"networked_process_per_device: the same {many} devices as {many} processes, for comparison"]
                        if many and many_per_process > 1 else []),
        }
        if len(paths) < images:
            msg = (f"--images {images}: the image folder {folder} holds {len(paths)} images, so each run uses "
                   f"{len(paths)}")
            doc["notes"].append(msg)
            log("bench: " + msg)
        if threads > 1 and load > (os.cpu_count() or 1):
            doc["notes"].append(f"load average {load:.1f} exceeds the {os.cpu_count()} CPUs: the torch column with "
                                f"{threads} threads is inflated by contention; --threads 1 is more stable")
        doc["rounds"] = rounds
        k_sym = spec.symbols_per_image
        inproc: list[dict] = []
        net: dict[str, list[dict]] = {str(e): [] for e in edges}
        lat_ip: list[dict] = []
        lat_net: list[dict] = []
        frame_msgs: list[dict] = []  # 1 edge, one Frame per message (Transmit): the data plane before batching
        # 1 edge, batched, with read_ahead the other way from the default (the goal rows run the default)
        other: list[dict] = []
        other_ahead = not _DEFAULT_READ_AHEAD
        other_name = "read_ahead" if other_ahead else "no_read_ahead"  # its doc and ratio keys
        per_device: list[dict] = []  # the many-edge run with a process per device (many_per_process > 1)
        for k in range(rounds):
            at = f" (round {k + 1}/{rounds})" if rounds > 1 else ""
            log(f"bench: in-process pipeline on {len(paths)} images{at} ...")
            inproc.append(bench_inprocess(bdl, task, paths, names, batch_size, snr_db, fading))
            for e in edges:
                per = many_per_process if e > 3 else 1
                log(f"bench: networked topology with {e} edge device(s) x {len(paths)} images"
                    + (f" ({-(-e // per)} processes)" if per > 1 else "") + f"{at} ...")
                net[str(e)].append(bench_networked(Path(bundle_dir), folder, task, e, len(paths), batch_size,
                                                   snr_db, fading, work, timeout_s, tag=f"-r{k + 1}",
                                                   symbols_per_frame=k_sym, edges_per_process=per))
            if many and many_per_process > 1:
                log(f"bench: networked topology with {many} edge devices, a process each, x {len(paths)} images{at} ...")
                per_device.append(bench_networked(Path(bundle_dir), folder, task, many, len(paths), batch_size,
                                                  snr_db, fading, work, timeout_s, tag=f"-per-process-r{k + 1}",
                                                  symbols_per_frame=k_sym))
            if 1 in edges:
                log(f"bench: networked, 1 edge, one frame per message (Transmit) x {len(paths)} images{at} ...")
                frame_msgs.append(bench_networked(Path(bundle_dir), folder, task, 1, len(paths), batch_size, snr_db,
                                                  fading, work, timeout_s, tag=f"-frames-r{k + 1}",
                                                  symbols_per_frame=k_sym, batch_messages=False))
                log(f"bench: networked, 1 edge, {'with' if other_ahead else 'without'} read-ahead x "
                    f"{len(paths)} images{at} ...")
                other.append(bench_networked(Path(bundle_dir), folder, task, 1, len(paths), batch_size, snr_db,
                                             fading, work, timeout_s,
                                             tag=f"-{other_name.replace('_', '-')}-r{k + 1}",
                                             symbols_per_frame=k_sym, read_ahead=other_ahead))
            if lat_paths:
                log(f"bench: batch-1 latency, one frame in flight, {len(lat_paths)} images, in-process and "
                    f"networked{at} ...")
                lat_ip.append(bench_inprocess(bdl, task, lat_paths, lat_names, 1, snr_db, fading))
                lat_net.append(bench_networked(Path(bundle_dir), folder, task, 1, len(lat_paths), 1, snr_db, fading,
                                               work, timeout_s, tag=f"-latency-r{k + 1}", max_in_flight=1,
                                               symbols_per_frame=k_sym))
        doc["inprocess"] = _merge_rounds(inproc)
        doc["networked"] = {e: _merge_rounds(res) for e, res in net.items()}
        if per_device:
            doc["networked_process_per_device"] = {str(many): _merge_rounds(per_device)}
        if frame_msgs:
            doc["networked_single_frame_messages"] = {"1": _merge_rounds(frame_msgs)}
        if other:
            doc[f"networked_{other_name}"] = {"1": _merge_rounds(other)}
        if lat_paths:
            doc["latency"] = {"images": len(lat_paths), "batch_size": 1, "max_in_flight": 1,
                              "inprocess": _merge_rounds(lat_ip), "networked": _merge_rounds(lat_net)}
        log("bench: edge encoder, torch vs onnxruntime ...")
        doc["encoder"] = bench_encoder(bdl, task, tuple(encoder_batches), threads, work=work)
        if not doc["encoder"]["torch"]:
            doc["notes"].append(doc["encoder"]["torch_source"])
        elif "twin" in doc["encoder"]["ort_source"]:
            doc["notes"].append("edge encoder: onnxruntime times " + doc["encoder"]["ort_source"])
        # the relay's call pattern: frames per channel.simulate call in the networked runs (its metrics)
        one_edge = net.get("1") or next(iter(net.values()), [])
        per_call = _median([(n.get("services") or {}).get("relay_frames_per_channel_call") for n in one_edge])
        log("bench: channel cost per symbol ...")
        doc["channel"] = bench_channel(k_sym, relay_fading=fading, frames_per_call=per_call)
        if tls:
            from rkdsc.common.experiments.bench_tls import tls_cost

            log("bench: TLS cost, mTLS vs plaintext ...")
            doc["tls"] = tls_cost(bundle_dir, frames=max(images, 100), unloaded=min(images, 100), rounds=rounds,
                                  task=task, work=work / "tls")
        # bytes on the wire
        h, w = bdl.input.size
        first = next(iter(doc["networked"].values()), {})
        up = first.get("uplink_bytes_per_image")
        files = [p.stat().st_size for p in paths]
        doc["wire"] = {"uplink_bytes_per_image": up, "symbol_payload_bytes": 8 * spec.symbols_per_image,
                       "raw_image_bytes": 3 * h * w, "input_tensor_bytes": 4 * 3 * h * w,
                       "image_file_bytes_mean": float(np.mean(files)),
                       "raw_over_wire": (3 * h * w / up) if up else None,
                       "file_over_wire": (float(np.mean(files)) / up) if up else None}
        # ratios
        r: dict[str, Any] = {}
        for e, res in net.items():  # per round, side by side; then the median and the range over rounds
            per_round = [n["images_per_s"] / i["images_per_s"] for n, i in zip(res, inproc)
                         if n.get("images_per_s") and i.get("images_per_s")]
            if per_round:
                r[f"networked_{e}_over_inprocess_throughput"] = float(statistics.median(per_round))
                r[f"networked_{e}_over_inprocess_throughput_rounds"] = per_round
            p50, p50_ip = doc["networked"][e]["latency_ms"]["p50"], doc["inprocess"]["latency_ms"]["p50"]
            if p50 and p50_ip:
                r[f"networked_{e}_over_inprocess_p50_latency"] = p50 / p50_ip
        for e in [x for x in net if x not in ("1", "3")] + ["3"]:  # N edges over 1, and over 3
            base = "1" if e == "3" else "3"
            if base in net and e in net:
                per_round = [b["images_per_s"] / a["images_per_s"] for a, b in zip(net[base], net[e])
                             if a.get("images_per_s") and b.get("images_per_s")]
                if per_round:
                    r[f"networked_{e}_over_{base}_throughput"] = float(statistics.median(per_round))
                    r[f"networked_{e}_over_{base}_throughput_rounds"] = per_round
        if per_device and "3" in net:  # the many devices as a process each, over 3 edges and over fleets
            for key, den in ((f"networked_{many}_process_per_device_over_3_throughput", net["3"]),
                             (f"networked_{many}_process_per_device_over_fleets_throughput", net[str(many)])):
                per_round = [a["images_per_s"] / b["images_per_s"] for a, b in zip(per_device, den)
                             if a.get("images_per_s") and b.get("images_per_s")]
                if per_round:
                    r[key] = float(statistics.median(per_round))
                    r[key + "_rounds"] = per_round
        if frame_msgs and "1" in net:
            per_round = [b["images_per_s"] / f["images_per_s"] for b, f in zip(net["1"], frame_msgs)
                         if b.get("images_per_s") and f.get("images_per_s")]
            if per_round:
                r["batched_over_single_frame_messages_1_edge"] = float(statistics.median(per_round))
                r["batched_over_single_frame_messages_1_edge_rounds"] = per_round
            per_round = [f["images_per_s"] / i["images_per_s"] for f, i in zip(frame_msgs, inproc)
                         if f.get("images_per_s") and i.get("images_per_s")]
            if per_round:
                r["single_frame_messages_1_over_inprocess_throughput"] = float(statistics.median(per_round))
        if other and "1" in net:
            with_, without = (other, net["1"]) if other_ahead else (net["1"], other)
            for key, num, den in (("read_ahead_over_no_read_ahead_1_edge", with_, without),
                                  (f"{other_name}_1_over_inprocess_throughput", other, inproc)):
                per_round = [a["images_per_s"] / b["images_per_s"] for a, b in zip(num, den)
                             if a.get("images_per_s") and b.get("images_per_s")]
                if per_round:
                    r[key] = float(statistics.median(per_round))
                    r[key + "_rounds"] = per_round
        if lat_paths:
            # the networked image's latency: its encode + hand-over to result (encode_ms + rtt_ms), as the
            # in-process loop's is read + encode + channel + decode (the edge encodes the next image while
            # one is in flight, so latency_ms from the start of encoding would count that wait too)
            def p99(n: dict):
                return (n.get("service_latency_ms") or {}).get("p99") or n["latency_ms"].get("p99")
            per_round = [p99(n) - i["latency_ms"]["p99"] for n, i in zip(lat_net, lat_ip)
                         if p99(n) is not None and i["latency_ms"].get("p99") is not None]
            if per_round:
                r["latency_p99_delta_ms"] = float(statistics.median(per_round))
                r["latency_p99_delta_ms_rounds"] = per_round
        inside = _median([(n.get("services") or {}).get("relay_channel_ns_per_symbol") for n in one_edge])
        if inside is not None:
            r["relay_channel_ns_per_symbol_in_relay"] = inside
        rp = doc["channel"]["relay_pattern"]
        r["relay_channel_ns_per_symbol"] = rp["ns_per_symbol"]
        if rp["batched_ns_per_symbol"]:
            r["relay_channel_as_called_over_batched"] = rp["ns_per_symbol"] / rp["batched_ns_per_symbol"]
        for b, res in doc["encoder"]["batches"].items():
            if "ort_speedup" in res:
                r[f"encoder_ort_speedup_b{b}"] = res["ort_speedup"]
        for f in ("awgn", "rayleigh"):
            c = doc["channel"].get(f)
            if c:
                r[f"channel_{f}_per_frame_over_batched"] = c["per_frame_ns_per_symbol"] / c["batched_ns_per_symbol"]
        if doc["wire"]["raw_over_wire"]:
            r["raw_image_over_wire_bytes"] = doc["wire"]["raw_over_wire"]
        doc["ratios"] = r
        doc["goals"] = goal_rows(doc)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if out:
        _write_json(out, doc)
        if doc.get("goals"):
            png = goals_plot_path(out)
            plot_goals(doc, png)
            log(f"bench: the goals' plot: {_shown(png)}")
    return doc


# ----------------------------------------------------------------------------- soak

def proc_status(pid: int) -> dict | None:
    """RSS and peak RSS (MiB, VmRSS / VmHWM), thread count (Threads) of /proc/PID/status and open file descriptors;
    None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        fds: int | None = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None
    rss, hwm = fields.get("VmRSS", "").split(), fields.get("VmHWM", "").split()
    return {"rss_mb": int(rss[0]) / 1024 if rss else None, "rss_peak_mb": int(hwm[0]) / 1024 if hwm else None,
            "threads": int(fields["Threads"]) if "Threads" in fields else None, "fds": fds}


def _soak_images(folder: Path, n: int, work: Path) -> Path:
    """An image folder holding at least n images (copies of the folder's, class sub-folders kept), so one
    edge run can send n images before it is started again."""
    from rkdsc.common.data.images import list_images

    listing = list_images(folder, check=False)
    if len(listing.paths) >= n or not listing.paths:
        return folder
    import shutil

    dst = work / "soak-images" / folder.name
    if dst.exists():
        shutil.rmtree(dst)
    count = 0
    while count < n:
        rep = count // len(listing.paths)
        for p in listing.paths:
            rel = p.relative_to(folder)
            target = dst / rel.parent / f"r{rep:03d}-{rel.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, target)
            count += 1
    return dst


def _start_service(name: str, module: str, config: Path, out: Path, env: dict[str, str], bind_prefix: str):
    """``python -m module`` on free ports, like ``rkdsc demo``: (Child, address, ready info)."""
    from rkdsc.common.experiments.demo import READY_TIMEOUT_S, Child, DemoError, wait_serving

    ready = out / "run" / f"{name}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **env, f"{bind_prefix}_BIND": "127.0.0.1:0",
           f"{bind_prefix}_METRICS_PORT": "0"}
    child = Child(name, [sys.executable, "-m", module, "--config", str(config), "--ready-file", str(ready)], env,
                  out / "logs" / f"{name}.log")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not ready.exists():
        if not child.alive():
            child.stop()
            raise DemoError(f"{name} exited with status {child.proc.returncode} before it was ready; "
                            f"log {child.log_path}:\n{child.tail()}")
        if time.monotonic() > deadline:
            child.kill()
            raise DemoError(f"{name} not ready after {READY_TIMEOUT_S:.0f} s; log {child.log_path}")
        time.sleep(0.05)
    info = json.loads(ready.read_text(encoding="utf-8"))
    addr = f"127.0.0.1:{info['port']}"
    try:
        wait_serving(addr, child)
    except Exception:
        child.kill()
        raise
    return child, addr, info


def run_soak(bundle: str | None = None, edges: int = 32, soak_s: float = 600.0, out: str | None = None,
             data: str | None = None, task: str | None = None, batch_size: int = 16, snr_db: float = 10.0,
             fading: str = "awgn", images_per_run: int = DEFAULT_SOAK_IMAGES, sample_every_s: float = 30.0,
             work_dir: str | None = None, log: Callable[[str], None] = print, grace_s: float = 300.0) -> dict:
    """``edges`` edge devices through one relay and server for ``soak_s`` seconds: each device is an
    ``rkdsc edge`` process sending ``images_per_run`` images; when one finishes before the end a new
    process takes its place (the edge client cannot loop), sized from the observed rate so the last
    runs end near ``soak_s``. Returns (and writes to ``out``) the document's ``soak`` section: errors
    (images without an answer, failed edge runs), images/s and latency over the soak, and the
    server's and relay's RSS, thread and file-descriptor counts when ready (before the edges), at the
    start (every device streaming), every ``sample_every_s`` and at the end (after the last device)."""
    from rkdsc.common.bundle import load_bundle
    from rkdsc.common.experiments.demo import Child, DemoError, scrape

    if edges < 1 or soak_s <= 0 or images_per_run < 1:
        raise ValueError(f"--soak-s / --edges / --soak-images: expected positive values, got {soak_s}, {edges}, "
                         f"{images_per_run}")
    tmp = tempfile.TemporaryDirectory(prefix="rkdsc-soak-") if work_dir is None else None
    work = Path(work_dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    children: list[Child] = []
    try:
        bundle_dir, how = resolve_bundle(bundle, work, log)
        bdl = load_bundle(bundle_dir)
        task = task or bdl.task().name
        spec = bdl.task(task)
        folder = _soak_images(prepare_images(data, bdl, task, images_per_run, work), images_per_run, work)
        sout = work / "soak"
        for sub in ("logs", "metrics", "edges", "run"):
            (sout / sub).mkdir(parents=True, exist_ok=True)
        for stale in (sout / "run").glob("*.json"):
            stale.unlink()
        cfg = write_topology(work / "topology-soak.toml", Path(bundle_dir), folder, task, edges, images_per_run,
                             batch_size, snr_db, fading)
        log(f"bench: soak, {edges} edge device(s) for {soak_s:g} s ({images_per_run} images per edge run) ...")
        server, server_addr, sinfo = _start_service("server", "rkdsc.server", cfg, sout, {}, "RKDSC_SERVER")
        children.append(server)
        relay, relay_addr, rinfo = _start_service("relay", "rkdsc.basestation", cfg, sout,
                                                  {"RKDSC_SERVER_ADDR": server_addr}, "RKDSC_RELAY")
        children.append(relay)
        services = {"server": server, "relay": relay}
        t0 = time.monotonic()
        deadline = t0 + soak_s
        samples: list[dict] = []
        running: dict[str, tuple[Child, Path, int]] = {}  # transmitter id -> (edge process, out dir, limit)
        runs: list[dict] = []
        starts = {"n": 0}

        def sample(label: str) -> None:
            samples.append({"label": label, "t_s": round(time.monotonic() - t0, 2), "edges_running": len(running),
                            **{n: proc_status(c.proc.pid) for n, c in services.items()}})

        def launch(tid: str, limit: int) -> None:
            starts["n"] += 1
            odir = sout / "edges" / tid / f"run-{starts['n']:05d}"
            args = [sys.executable, "-m", "rkdsc.edge", "--config", str(cfg), "--id", tid, "--out", str(odir),
                    "--no-progress", "--limit", str(limit)]
            child = Child(f"edge {tid}", args, {**os.environ, "PYTHONUNBUFFERED": "1", "RKDSC_RELAY_ADDR": relay_addr},
                          sout / "logs" / f"edge-{tid}-{starts['n']:05d}.log")
            children.append(child)
            running[tid] = (child, odir, limit)

        def collect(tid: str) -> None:
            child, odir, limit = running.pop(tid)
            rc = child.stop()
            children.remove(child)
            try:
                s = json.loads((odir / "summary.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                s = {}
            runs.append({"id": tid, "out": str(odir), "exit_status": rc, "images": s.get("images", limit),
                         "answered": s.get("answered", 0), "errors": s.get("errors", limit) if s else limit,
                         "wall_s": s.get("wall_s"), "failure": s.get("failure") or (None if rc == 0 else
                                                                                    f"exit status {rc}; log {child.log_path}"),
                         "ended": _mtime(odir / "summary.json")})

        def next_limit() -> int:
            """Images of a new run: what one device sends in the time left at the observed rate."""
            rates = [r["answered"] / r["wall_s"] for r in runs if r.get("wall_s") and r["answered"]]
            if not rates:
                return images_per_run
            left = deadline - time.monotonic()
            return int(max(batch_size, min(images_per_run, statistics.median(rates) * left)))

        sample("ready")
        ids = [f"edge-{i + 1}" for i in range(edges)]
        for tid in ids:
            launch(tid, images_per_run)
        first = {tid: running[tid][1] / "results.jsonl" for tid in ids}
        next_sample = t0 + sample_every_s
        failure = None
        while running:
            now = time.monotonic()
            for tid in list(running):
                if not running[tid][0].alive():
                    collect(tid)
                    if time.monotonic() < deadline - 1.0:
                        launch(tid, next_limit())
            if first and all(_nonempty(p) for p in first.values()):
                first = {}
                sample("start")
            if now >= next_sample:
                sample("periodic")
                next_sample += sample_every_s
            dead = [n for n, c in services.items() if not c.alive()]
            if dead:
                failure = f"{dead[0]} died (status {services[dead[0]].proc.returncode}); log " \
                          f"{services[dead[0]].log_path}:\n{services[dead[0]].tail()}"
                break
            if now > deadline + grace_s:
                failure = f"{len(running)} edge run(s) still going {grace_s:g} s after the end of the soak"
                break
            time.sleep(0.2)
        if first:  # the runs ended before every device had streamed (tiny soaks): the start is the ready sample
            samples.append(dict(samples[0], label="start"))
        for tid in list(running):  # only after a failure
            running[tid][0].kill()
            collect(tid)
        sample("end")
        duration = time.monotonic() - t0
        sm, rm = "", ""
        try:
            sm, rm = scrape(sinfo["metrics_port"]), scrape(rinfo["metrics_port"])
        except OSError:
            pass
        (sout / "metrics" / "server.prom").write_text(sm)
        (sout / "metrics" / "relay.prom").write_text(rm)
        exits = {}
        for name in ("relay", "server"):
            exits[name] = services[name].stop()
            children.remove(services[name])
        lat: list[float] = []
        for r in runs:
            try:
                with open(Path(r["out"]) / "results.jsonl", encoding="utf-8") as f:
                    lat += [rec["latency_ms"] for rec in map(json.loads, f) if rec.get("latency_ms") is not None]
            except OSError:
                pass
        ends = [r["ended"] for r in runs]
        starts_t = [r["ended"] - r["wall_s"] for r in runs if r.get("wall_s")]
        window = (max(ends) - min(starts_t)) if ends and starts_t else None
        answered = sum(r["answered"] for r in runs)
        errors = sum(r["errors"] for r in runs)
        failed_runs = [r for r in runs if r["exit_status"] != 0 or r.get("failure")]
        pick = lambda label: next((s for s in samples if s["label"] == label), None)  # noqa: E731
        start, end = pick("start"), pick("end")
        soak = {
            "edges": edges, "requested_s": soak_s, "duration_s": duration, "images_per_run": images_per_run,
            "batch_size": batch_size, "sample_every_s": sample_every_s, "edge_runs": len(runs),
            "images": sum(r["images"] for r in runs), "answered": answered, "errors": errors,
            "failed_runs": len(failed_runs), "failures": [r["failure"] for r in failed_runs[:5]],
            "failure": failure, "images_per_s": answered / window if window else None,
            "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
            "service_exit_status": exits,
            "server": {"start": (start or {}).get("server"), "end": (end or {}).get("server")},
            "relay": {"start": (start or {}).get("relay"), "end": (end or {}).get("relay")},
            "samples": samples, "services": service_figures(sout, spec.symbols_per_image),
            "logs": str(sout / "logs"),
        }
        soak["ok"] = (failure is None and errors == 0 and not failed_runs and all(v == 0 for v in exits.values()))
        doc = {"bundle": str(bundle_dir), "bundle_source": how, "task": task, "fading": fading, "snr_db": snr_db,
               "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                           "python": platform.python_version()},
               "soak": soak}
    finally:
        for child in children:
            child.kill()
        if tmp is not None:
            tmp.cleanup()
    if out:
        _write_json(out, doc)
    return doc


def _mtime(path: Path) -> float:
    """When a file was last written (time.time() when it is missing)."""
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc bench",
        description="Side-by-side benchmarks in one run: in-process pipeline vs the networked topology (server + "
                    "relay + 1, 3 and 32 edge devices over gRPC: 1 and 3 as a process each, 32 as processes of "
                    "--edges-per-process devices and, for comparison, as a process each; 1 edge also with one frame "
                    "per message and with read-ahead the other way from the default, for comparison), the batch-1 "
                    "latency with one frame in flight, "
                    "edge encoder torch vs onnxruntime (batch 1 and 32), the relay's channel cost per symbol as it "
                    "calls it (AWGN, Rayleigh) and bytes on the wire per image vs the raw image, with the data-plane "
                    "goals (PASS / FAIL per row). Prints tables; --out writes the JSON with ratios. --soak-s runs "
                    "the --edges devices continuously instead and reports errors and the services' RSS / threads.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="bundle directory (default: deploy/bundle when present, else a random test bundle)")
    p.add_argument("--images", type=int, default=128, help="images per edge device (and for the in-process run)")
    p.add_argument("--out", default=None, metavar="FILE.json",
                   help="write the JSON result here, and a plot of the data-plane goals next to it "
                        "(FILE.png: each round, the median, the goal line)")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="image folder with class sub-folders (default: held-back digits or synthetic images)")
    p.add_argument("--task", default=None, help="bundle task (default: the first)")
    p.add_argument("--batch-size", type=int, default=16, help="images per encode batch (edges and in-process)")
    p.add_argument("--snr", type=float, default=10.0, help="link SNR in dB")
    p.add_argument("--fading", default="awgn", choices=("awgn", "rayleigh"), help="link channel")
    p.add_argument("--edges", type=int_list(min_value=1), default=DEFAULT_EDGES,
                   help="comma-separated edge-device counts to run (the largest above 3 is the many-edge row); "
                        "with --soak-s: the largest is the number of devices")
    p.add_argument("--edges-per-process", type=int, default=DEFAULT_MANY_PER_PROCESS, metavar="N",
                   help="devices per edge process in the runs with more than 3 edges (`rkdsc fleet`: each device its "
                        "own stream, identity and link, the devices of a process share one event loop and the "
                        "models); with N > 1 those devices also run as a process each, for comparison; 1: only that")
    p.add_argument("--no-tls", dest="tls", action="store_false",
                   help="skip the TLS cost table (mTLS vs plaintext: streamed frames/s and unloaded p99)")
    p.add_argument("--latency-images", type=int, default=None,
                   help="images of the batch-1, one-frame-in-flight latency runs (default: --images; 0 = skip)")
    p.add_argument("--encoder-batches", type=int_list(min_value=1), default=(1, 32), help="batch sizes of the encoder comparison")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads = onnxruntime intra-op threads for the encoder comparison (default: all CPUs)")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help="repeat the in-process and networked runs this many times in alternation; the ratios are "
                        "per round, side by side, and the JSON gives their median and every round")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds each networked run may take")
    p.add_argument("--soak-s", type=float, default=None, metavar="SECONDS",
                   help="soak mode: run the --edges devices continuously for this long (new edge processes as old "
                        "ones finish) and report errors and the server's and relay's RSS and threads at start and end")
    p.add_argument("--soak-images", type=int, default=DEFAULT_SOAK_IMAGES,
                   help="soak mode: images per edge run (at most; the last runs are sized to end with the soak)")
    p.add_argument("--sample-every", type=float, default=30.0, metavar="SECONDS",
                   help="soak mode: sample the services' RSS and threads this often")
    p.add_argument("--fleet", type=int_list(min_value=1, example="1,16,64,256"), default=None, metavar="LIST",
                   help="fleet mode: for each device count, one `rkdsc fleet` process emulating that many devices "
                        "(--images each) through one relay and --replicas server processes; reports images/s, "
                        "latency p50/p99 and peak memory per process and per device, writes --out and a plot next "
                        "to it (bench_fleet.py)")
    p.add_argument("--replicas", type=int, default=2, help="fleet mode: edge-server replicas behind the relay")
    p.add_argument("--concurrency", type=int, default=64,
                   help="fleet mode: devices of the fleet process streaming at once (rkdsc fleet --concurrency)")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="keep the generated images, topologies and demo outputs here (default: a temp dir)")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        if args.fleet:
            from rkdsc.common.experiments.bench_fleet import fleet_table, run_fleet_bench

            doc = run_fleet_bench(tuple(args.fleet), bundle=args.bundle, images=args.images, data=args.data,
                                  task=args.task, replicas=args.replicas, concurrency=args.concurrency,
                                  work_dir=args.work_dir, out=args.out, log=log)
            print(fleet_table(doc))
            bad = [r["devices"] for r in doc["rows"] if r["exit_status"] != 0 or r["answered"] != r["images"]]
            if bad:
                print(f"rkdsc bench: fleet run(s) with {', '.join(map(str, bad))} device(s) did not answer every "
                      f"image; see {args.work_dir or 'the work dir (--work-dir to keep it)'}", file=sys.stderr)
            return 1 if bad else 0
        if args.soak_s is not None:
            doc = run_soak(args.bundle, max(args.edges), args.soak_s, args.out, args.data, args.task, args.batch_size,
                           args.snr, args.fading, args.soak_images, args.sample_every, args.work_dir, log)
        else:
            doc = run_bench(args.bundle, args.images, args.out, args.data, args.task, args.batch_size, args.snr,
                            args.fading, args.edges, args.encoder_batches, args.threads, args.timeout, args.work_dir,
                            log, rounds=args.rounds, latency_images=args.latency_images,
                            tls=args.tls, many_per_process=args.edges_per_process)
    except Exception as exc:  # noqa: BLE001 - report any failure with its type, exit non-zero
        from rkdsc.common.bundle import BundleError
        from rkdsc.common.experiments.demo import DemoError

        if isinstance(exc, (ValueError, BundleError, FileNotFoundError)):
            print(f"rkdsc bench: error: {exc}", file=sys.stderr)
            return 2
        if isinstance(exc, DemoError):
            print(f"rkdsc bench: failed: {exc}", file=sys.stderr)
            return 1
        raise
    if args.soak_s is not None:
        print(soak_markdown(doc))
        return 0 if doc["soak"]["ok"] else 1
    print(bench_markdown(doc))
    failed = [e for e, res in doc["networked"].items() if res.get("failure")]
    if doc.get("latency") and doc["latency"]["networked"].get("failure"):
        failed.append("1 (batch-1 latency)")
    if failed:
        print(f"rkdsc bench: networked run(s) with {', '.join(failed)} edge(s) failed; see the note above",
              file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    main()
