"""``rkdsc bench``: side-by-side benchmarks of the emulator in one run.

    rkdsc bench [--bundle DIR] [--images N] [--out FILE.json]

1. **in-process vs networked**: the same N images (the first N of the image folder) through
   ``InProcessPipeline`` (read + preprocess + encode + channel + decode in this process, in
   batches of ``--batch-size``) and through the real topology (``rkdsc.common.experiments.demo.run_demo``: server,
   relay and edge devices as separate processes talking gRPC on localhost) with one and with
   three edge devices (each sends the N images). Reported: images per second (networked:
   all answered images / the longest edge wall time, so service start-up is excluded; it is
   listed apart) and p50 / p99 latency per image (from the start of encoding the image's batch
   to its result, the edge client's definition; in-process: the batch's wall time).
2. **edge encoder, torch vs onnxruntime** at batch 1 and 32 with equal thread counts: the
   torch twin is rebuilt from the bundle's provenance (the training work dir's weights when it
   is still there, the seeded weights of a random test bundle, else the preset's architecture
   with random weights); skipped with a note when torch or the architecture is unavailable.
3. **channel cost on the relay**: ``rkdsc.common.channel.simulate`` on many frames, in ns per
   complex symbol, for AWGN and Rayleigh block fading, both batched (all frames in one call)
   and per frame (one call per frame, as the relay does).
4. **bytes on the wire** per image (the serialized uplink ``Frame``) against the raw image
   (H x W x 3 bytes at the model's input size), the float32 input tensor and the image file.

The bundle: ``--bundle``, else ``deploy/bundle`` when present, else a small random bundle
(``rkdsc.common.bundle.build_random_bundle``, needs torch) in a temporary folder. Images:
``--data DIR`` (class sub-folders), else the held-back digits (task ``digits``) or synthetic
images named by the task's classes.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from rkdsc.common.experiments.bench_format import DEFAULT_ROUNDS, bench_markdown
from rkdsc.common.cliargs import int_list

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BUNDLE = REPO_ROOT / "deploy" / "bundle"


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
    """An image folder with class sub-folders named like the task's classes (>= n images)."""
    if data:
        return Path(data)
    spec = bundle.task(task)
    folder = work / "images" / task
    h, w = bundle.input.size
    if task == "digits":
        from rkdsc.common.data.samples import write_samples

        write_samples(folder, size=h if h == w else 32)
        return folder
    from PIL import Image

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

def write_topology(path: Path, bundle_dir: Path, images: Path, task: str, edges: int, n: int, batch_size: int,
                   snr_db: float, fading: str) -> Path:
    lines = [f'root = "{path.parent.as_posix()}"', "", "[bundle]", f'path = "{Path(bundle_dir).resolve().as_posix()}"', "",
             "[server]", 'host = "127.0.0.1"', "port = 0", "metrics_port = 0", "",
             "[basestation]", 'host = "127.0.0.1"', "port = 0", "metrics_port = 0", ""]
    for i in range(edges):
        lines += ["[[transmitters]]", f'id = "edge-{i + 1}"', f'task = "{task}"', f"snr_db = {float(snr_db)}",
                  f'fading = "{fading}"', f"seed = {i + 1}", f'images = "{Path(images).resolve().as_posix()}"',
                  f"batch_size = {batch_size}", f"limit = {n}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def bench_networked(bundle_dir: Path, images: Path, task: str, edges: int, n: int, batch_size: int, snr_db: float,
                    fading: str, work: Path, timeout_s: float, tag: str = "") -> dict:
    from rkdsc.common.experiments.demo import DemoError, run_demo

    out = work / f"net-{edges}{tag}"
    cfg = write_topology(work / f"topology-{edges}{tag}.toml", bundle_dir, images, task, edges, n, batch_size, snr_db,
                         fading)
    t0 = time.perf_counter()
    failure = None
    try:
        summary = run_demo(cfg, out, timeout_s=timeout_s, limit=n, quiet=True)
    except DemoError as exc:  # e.g. an edge gave up on results (result timeout): report, do not hang
        failure = str(exc)
        try:
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            summary = {"transmitters": [], "ok": False}
    total_s = time.perf_counter() - t0
    rows = summary["transmitters"]
    lat: list[float] = []
    for r in rows:
        try:
            with open(r["results"], encoding="utf-8") as f:
                lat += [rec["latency_ms"] for rec in map(json.loads, f) if rec.get("latency_ms") is not None]
        except OSError:
            pass
    answered = sum(r["answered"] for r in rows)
    edge_wall = max((r.get("wall_s") or 0.0) for r in rows) if rows else 0.0
    labelled = [r for r in rows if r.get("accuracy") is not None]
    return {
        "edges": edges, "images": sum(r["images"] for r in rows), "answered": answered,
        "errors": sum(r["errors"] for r in rows), "ok": summary.get("ok") and failure is None,
        "failure": failure,
        "images_per_s": answered / edge_wall if edge_wall > 0 else None,
        "per_edge_images_per_s": [r.get("images_per_s") for r in rows],
        "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
        "edge_wall_s": edge_wall, "total_wall_s": total_s, "startup_and_teardown_s": max(0.0, total_s - edge_wall),
        "accuracy": (sum(r["accuracy"] for r in labelled) / len(labelled)) if labelled else None,
        "uplink_bytes_per_image": rows[0].get("uplink_bytes_per_image") if rows else None,
        "raw_image_bytes": rows[0].get("raw_image_bytes") if rows else None,
        "summary": str(out / "summary.json"),
    }


# ----------------------------------------------------------------------------- 3. encoder

def torch_edge_from_bundle(bundle, task: str):
    """(torch EdgePart matching the bundle's edge component, how it was rebuilt) or (None, why)."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "torch is not installed: torch column skipped"
    from rkdsc.common.models.cat import CATConfig, CATEncoder
    from rkdsc.common.models.student import Student, StudentConfig
    from rkdsc.common.models.system import EdgePart, JSCCEdgePart

    prov = bundle.manifest.get("provenance") or {}
    spec = bundle.task(task)
    method = prov.get("method")
    # (a) the training work dir is still there: the exact weights
    wd = prov.get("workdir")
    why = "no training work dir in the provenance"
    if wd and Path(wd).is_dir() and method in ("rkd-sc", "jscc-student", "jscc-teacher"):
        why = f"work dir {wd} has no weights for task {task!r}"
        try:
            if method == "rkd-sc":
                from rkdsc.common.train.distill import load_task_system

                if (Path(wd) / "stage2" / task / "model.json").is_file():
                    system, _ = load_task_system(Path(wd) / "stage2" / task)
                    return EdgePart(system.student, system.cat_encoder).eval(), f"trained weights from {_shown(Path(wd) / 'stage2' / task)}"
            else:
                from rkdsc.common.train.baselines import load_jscc_parts
                from rkdsc.common.train.export import task_dirs

                for tdir in task_dirs(Path(wd), method):
                    encoder, _, s = load_jscc_parts(tdir)
                    if s.get("task") == task:
                        return JSCCEdgePart(encoder).eval(), f"trained weights from {_shown(tdir)}"
        except Exception as exc:  # noqa: BLE001 - fall through to an architecture-only rebuild
            why = f"loading {wd} failed: {type(exc).__name__}: {exc}"
    # (b) a random test bundle: same seed, same construction order -> the same weights
    if method == "random-init" and "student" in prov and "cat" in prov:
        import torch

        st, cat = prov["student"], prov["cat"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(prov.get("seed", 0)))
            scfg = StudentConfig(input_size=bundle.input.size[0], stem_widths=tuple(st["stem_widths"]),
                                 planes=tuple(st["planes"]), feature_dim=bundle.feature_dim, heads=int(cat["n_heads"]))
            ccfg = CATConfig(feature_dim=bundle.feature_dim, n_heads=int(cat["n_heads"]), d_ff=int(cat["d_ff"]),
                             compression_ratio=spec.compression_ratio)
            edge = EdgePart(Student(scfg, list(st["depths"])), CATEncoder(ccfg))
        return edge.eval(), "seeded weights of the random test bundle (same as the ONNX file)"
    # (c) the preset's architecture with random weights
    tprov = (prov.get("tasks") or {}).get(task) or {}
    if isinstance(prov.get("preset"), str) and tprov.get("depths"):
        try:
            from rkdsc.common.train.presets import load_preset

            p = load_preset(prov["preset"])
            student = Student(p.student_config(), tprov["depths"])
            if method == "rkd-sc" and tprov.get("cat"):
                edge = EdgePart(student, CATEncoder(CATConfig(**tprov["cat"])))
            else:
                edge = JSCCEdgePart(student)
            return edge.eval(), f"architecture of preset {prov['preset']!r} with random weights ({why})"
        except Exception as exc:  # noqa: BLE001
            why = f"{why}; preset rebuild failed: {type(exc).__name__}: {exc}"
    return None, f"cannot rebuild a torch twin of this bundle ({why}): torch column skipped"


def bench_encoder(bundle, task: str, batches: tuple[int, ...], threads: int, repeats: int = 15) -> dict:
    from rkdsc.common.bundle.runtime import make_session

    spec = bundle.task(task)
    sess = make_session(bundle.component_path(spec.edge), intra_op_threads=threads)
    edge, how = torch_edge_from_bundle(bundle, task)
    h, w = bundle.input.size
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {"threads": threads, "torch_source": how, "torch": edge is not None, "batches": {}}
    if edge is not None:
        import torch

        prev = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        for b in batches:
            x = rng.standard_normal((b, 3, h, w), dtype=np.float32)
            snr = np.full((b,), 10.0, dtype=np.float32)
            feeds = {i.name: {"image": x, "snr_db": snr}[i.name] for i in sess.get_inputs()}
            run_ort = lambda: sess.run(["symbols"], feeds)[0]  # noqa: E731
            res: dict[str, Any] = {}
            if edge is not None:
                tx, ts = torch.from_numpy(x), torch.from_numpy(snr)

                def run_torch():
                    with torch.inference_mode():
                        return edge(tx, ts).numpy()

                res["max_abs_diff"] = float(np.max(np.abs(run_torch() - run_ort())))
            # one engine at a time: onnxruntime's worker threads keep spinning for a while after a
            # run and would slow an interleaved torch run down (and the reverse)
            n_rep = repeats if b == 1 else max(3, repeats // 3)
            t_ort, t_torch = [], []
            if edge is not None:
                time.sleep(0.2)
                for _ in range(2):
                    run_torch()
                for _ in range(n_rep):
                    t = time.perf_counter()
                    run_torch()
                    t_torch.append(time.perf_counter() - t)
            for _ in range(2):
                run_ort()
            for _ in range(n_rep):
                t = time.perf_counter()
                run_ort()
                t_ort.append(time.perf_counter() - t)
            res["ort_ms_per_image"] = 1e3 * statistics.median(t_ort) / b
            if t_torch:
                res["torch_ms_per_image"] = 1e3 * statistics.median(t_torch) / b
                res["ort_speedup"] = res["torch_ms_per_image"] / res["ort_ms_per_image"]
            out["batches"][str(b)] = res
    finally:
        if edge is not None:
            torch.set_num_threads(prev)
    return out


# ----------------------------------------------------------------------------- 4. channel

def bench_channel(symbols_per_frame: int, frames: int = 4096, per_frame_calls: int = 2000,
                  snr_db: float = 10.0, fadings: tuple[str, ...] = ("awgn", "rayleigh")) -> dict:
    from rkdsc.common import channel

    rng = np.random.default_rng(0)
    k = symbols_per_frame
    z = channel.normalize_power((rng.standard_normal((frames, k)) + 1j * rng.standard_normal((frames, k)))
                                .astype(np.complex64))
    out: dict[str, Any] = {"symbols_per_frame": k, "frames": frames, "per_frame_calls": per_frame_calls}
    for fading in fadings:
        g = np.random.default_rng(1)
        channel.simulate(z[:8], snr_db, fading, g)  # warm-up
        times = []
        for _ in range(5):
            t = time.perf_counter()
            channel.simulate(z, snr_db, fading, g)
            times.append(time.perf_counter() - t)
        batched = statistics.median(times) / (frames * k) * 1e9
        one = z[:1]
        t = time.perf_counter()
        for _ in range(per_frame_calls):
            channel.simulate(one, snr_db, fading, g)
        per_frame = (time.perf_counter() - t) / (per_frame_calls * k) * 1e9
        out[fading] = {"batched_ns_per_symbol": batched, "per_frame_ns_per_symbol": per_frame,
                       "per_frame_us_per_frame": per_frame * k / 1e3}
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
    merged["latency_ms"] = {q: med([r["latency_ms"][q] for r in results if r["latency_ms"].get(q) is not None])
                            for q in ("p50", "p99")}
    for key in ("answered", "errors"):
        if key in merged:
            merged[key] = sum(r.get(key, 0) for r in results)
    if "images" in merged and "answered" in merged:
        merged["images"] = sum(r.get("images", 0) for r in results)
    if "ok" in merged:
        merged["ok"] = all(r.get("ok") for r in results)
        merged["failure"] = next((r["failure"] for r in results if r.get("failure")), None)
    merged["rounds"] = [{"images_per_s": r.get("images_per_s"), "p50_ms": r["latency_ms"].get("p50"),
                         "p99_ms": r["latency_ms"].get("p99")} for r in results]
    return merged


def run_bench(bundle: str | None = None, images: int = 128, out: str | None = None, data: str | None = None,
              task: str | None = None, batch_size: int = 16, snr_db: float = 10.0, fading: str = "awgn",
              edges: tuple[int, ...] = (1, 3), encoder_batches: tuple[int, ...] = (1, 32), threads: int | None = None,
              timeout_s: float = 600.0, work_dir: str | None = None, log: Callable[[str], None] = print,
              rounds: int = DEFAULT_ROUNDS) -> dict:
    """Run every benchmark; returns the JSON document (also written to ``out``). The in-process and
    networked runs are repeated ``rounds`` times in alternation (in-process, 1 edge, 3 edges, again ...),
    so each round's networked / in-process ratio is measured side by side; the document gives the
    median over the rounds and each round's values."""
    import onnxruntime

    from rkdsc.common.bundle import load_bundle

    if images < 1:
        raise ValueError(f"--images: expected an integer >= 1, got {images}")
    if rounds < 1:
        raise ValueError(f"--rounds: expected an integer >= 1, got {rounds}")
    tmp = tempfile.TemporaryDirectory(prefix="rkdsc-bench-") if work_dir is None else None
    work = Path(work_dir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    try:
        bundle_dir, how = resolve_bundle(bundle, work, log)
        bdl = load_bundle(bundle_dir)
        task = task or bdl.task().name
        spec = bdl.task(task)
        folder = prepare_images(data, bdl, task, images, work)
        paths, names = first_images(folder, images)
        threads = threads or os.cpu_count() or 1
        load = os.getloadavg()[0]
        doc: dict[str, Any] = {
            "bundle": str(bundle_dir), "bundle_source": how, "task": task, "images_per_edge": len(paths),
            "image_folder": str(folder), "batch_size": batch_size, "snr_db": snr_db, "fading": fading,
            "compact_dim": spec.compact_dim, "symbols_per_image": spec.symbols_per_image,
            "input_size": list(bdl.input.size),
            "machine": {"processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                        "load_avg_1m": round(os.getloadavg()[0], 2), "onnxruntime": onnxruntime.__version__,
                        "python": platform.python_version()},
            "notes": ["in-process: read + preprocess + encode + channel + decode one batch after another in this "
                      "process; networked: the same steps pipelined over edge, relay and server processes (gRPC on "
                      "localhost), so on several cores it can be faster than the in-process loop"],
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
        inproc: list[dict] = []
        net: dict[str, list[dict]] = {str(e): [] for e in edges}
        for k in range(rounds):
            at = f" (round {k + 1}/{rounds})" if rounds > 1 else ""
            log(f"bench: in-process pipeline on {len(paths)} images{at} ...")
            inproc.append(bench_inprocess(bdl, task, paths, names, batch_size, snr_db, fading))
            for e in edges:
                log(f"bench: networked topology with {e} edge device(s) x {len(paths)} images{at} ...")
                net[str(e)].append(bench_networked(Path(bundle_dir), folder, task, e, len(paths), batch_size,
                                                   snr_db, fading, work, timeout_s, tag=f"-r{k + 1}"))
        doc["inprocess"] = _merge_rounds(inproc)
        doc["networked"] = {e: _merge_rounds(res) for e, res in net.items()}
        log("bench: edge encoder, torch vs onnxruntime ...")
        doc["encoder"] = bench_encoder(bdl, task, tuple(encoder_batches), threads)
        if not doc["encoder"]["torch"]:
            doc["notes"].append(doc["encoder"]["torch_source"])
        log("bench: channel cost per symbol ...")
        doc["channel"] = bench_channel(spec.symbols_per_image)
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
        if "1" in net and "3" in net:
            per_round = [b["images_per_s"] / a["images_per_s"] for a, b in zip(net["1"], net["3"])
                         if a.get("images_per_s") and b.get("images_per_s")]
            if per_round:
                r["networked_3_over_1_throughput"] = float(statistics.median(per_round))
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
    finally:
        if tmp is not None:
            tmp.cleanup()
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rkdsc bench",
        description="Side-by-side benchmarks in one run: in-process pipeline vs the networked topology (server + "
                    "relay + 1 and 3 edge processes over gRPC), edge encoder torch vs onnxruntime (batch 1 and 32), "
                    "the relay's channel cost per symbol (AWGN, Rayleigh) and bytes on the wire per image vs the raw "
                    "image. Prints a table; --out writes the JSON with ratios.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="bundle directory (default: deploy/bundle when present, else a random test bundle)")
    p.add_argument("--images", type=int, default=128, help="images per edge device (and for the in-process run)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the JSON result here")
    p.add_argument("--data", default=None, metavar="DIR",
                   help="image folder with class sub-folders (default: held-back digits or synthetic images)")
    p.add_argument("--task", default=None, help="bundle task (default: the first)")
    p.add_argument("--batch-size", type=int, default=16, help="images per encode batch (edges and in-process)")
    p.add_argument("--snr", type=float, default=10.0, help="link SNR in dB")
    p.add_argument("--fading", default="awgn", choices=("awgn", "rayleigh"), help="link channel")
    p.add_argument("--edges", type=int_list(min_value=1), default=(1, 3), help="comma-separated edge-device counts to run")
    p.add_argument("--encoder-batches", type=int_list(min_value=1), default=(1, 32), help="batch sizes of the encoder comparison")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads = onnxruntime intra-op threads for the encoder comparison (default: all CPUs)")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help="repeat the in-process and networked runs this many times in alternation; the ratios are "
                        "per round, side by side, and the JSON gives their median and every round")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds each networked run may take")
    p.add_argument("--work-dir", default=None, metavar="DIR",
                   help="keep the generated images, topologies and demo outputs here (default: a temp dir)")
    p.add_argument("--quiet", action="store_true", help="print only the table")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    try:
        doc = run_bench(args.bundle, args.images, args.out, args.data, args.task, args.batch_size, args.snr,
                        args.fading, args.edges, args.encoder_batches, args.threads, args.timeout, args.work_dir, log,
                        rounds=args.rounds)
    except Exception as exc:  # noqa: BLE001 - report any failure with its type, exit non-zero
        from rkdsc.common.bundle import BundleError

        if isinstance(exc, (ValueError, BundleError, FileNotFoundError)):
            print(f"rkdsc bench: error: {exc}", file=sys.stderr)
            return 2
        raise
    print(bench_markdown(doc))
    failed = [e for e, res in doc["networked"].items() if res.get("failure")]
    if failed:
        print(f"rkdsc bench: networked run(s) with {', '.join(failed)} edge(s) failed; see the note above",
              file=sys.stderr)
        return 1
    return 0


def main() -> None:
    sys.exit(cli())


if __name__ == "__main__":
    main()
