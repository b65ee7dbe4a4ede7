"""Edge encoder speed on CPU: onnxruntime vs torch, batch 1 and 32, side by side in one run.

The edge part is the paper's: Student (Table I template, 224x224, depths 1,2,2,2 by
default) + CAT encoder (F = 512, 8 heads, d_ff 2048, ratio 0.8 -> 102 values), randomly
initialised (weights do not change the speed). It is exported with the project's exporter
(``rkdsc.common.bundle.export.export_part``) and timed with ``torch.set_num_threads(T)`` and an
onnxruntime session with ``intra_op_num_threads = T``. Per batch size: a few warm-up runs
of each, then N rounds that time torch and onnxruntime alternately (so drifting machine
load hits both alike); medians are reported. Prints one JSON line.

    .venv/bin/python bench/edge_encoder_ort_vs_torch.py [--threads 2] [--repeats 20]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from rkdsc.common.bundle.export import export_part  # noqa: E402
from rkdsc.common.bundle.runtime import make_session  # noqa: E402
from rkdsc.common.models.cat import CATConfig, CATEncoder  # noqa: E402
from rkdsc.common.models.complexity import count_params  # noqa: E402
from rkdsc.common.models.student import Student, StudentConfig  # noqa: E402
from rkdsc.common.models.system import EdgePart  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/edge_encoder_ort_vs_torch.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--input-size", type=int, default=224, help="square input side in pixels (default 224)")
    p.add_argument("--depths", type=int, nargs=4, default=[1, 2, 2, 2], help="student depth per layer (default 1 2 2 2)")
    p.add_argument("--ratio", type=float, default=0.8, help="CAT compression ratio (default 0.8 -> 102 values)")
    p.add_argument("--d-ff", type=int, default=2048, help="CAT feed-forward width (default 2048, the paper's)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads = onnxruntime intra-op threads (default: all CPUs)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes (default 1 32)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up runs per engine and batch (default 3)")
    p.add_argument("--repeats", type=int, default=20, help="timed rounds at batch 1 (default 20)")
    p.add_argument("--repeats-large", type=int, default=7, help="timed rounds at batch > 1 (default 7)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    scfg = StudentConfig(input_size=args.input_size)
    ccfg = CATConfig(feature_dim=scfg.feature_dim, d_ff=args.d_ff, compression_ratio=args.ratio)
    edge = EdgePart(Student(scfg, args.depths), CATEncoder(ccfg)).eval()
    rng = np.random.default_rng(args.seed)
    size = args.input_size

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "edge.onnx"
        t0 = time.perf_counter()
        example = (torch.randn(2, 3, size, size), torch.tensor([0.0, 10.0]))
        export_part(edge, path, ("image", "snr_db"), "symbols", example)
        export_s = time.perf_counter() - t0
        sess = make_session(path, intra_op_threads=args.threads)
        onnx_bytes = path.stat().st_size

        results = {}
        for batch in args.batches:
            images = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
            snr = rng.uniform(-10, 25, batch).astype(np.float32)
            timg, tsnr = torch.from_numpy(images), torch.from_numpy(snr)
            feeds = {"image": images, "snr_db": snr}

            def run_torch():
                with torch.inference_mode():
                    return edge(timg, tsnr).numpy()

            def run_ort():
                return sess.run(["symbols"], feeds)[0]

            max_abs = float(np.max(np.abs(run_torch() - run_ort())))
            for _ in range(args.warmup):
                run_torch()
                run_ort()
            t_torch, t_ort = [], []
            for _ in range(args.repeats if batch == 1 else args.repeats_large):
                t = time.perf_counter()
                run_torch()
                t_torch.append(time.perf_counter() - t)
                t = time.perf_counter()
                run_ort()
                t_ort.append(time.perf_counter() - t)
            torch_ms, ort_ms = 1e3 * statistics.median(t_torch), 1e3 * statistics.median(t_ort)
            results[str(batch)] = {
                "torch_ms": round(torch_ms, 3), "ort_ms": round(ort_ms, 3),
                "torch_ms_per_image": round(torch_ms / batch, 3), "ort_ms_per_image": round(ort_ms / batch, 3),
                "ort_over_torch_time": round(ort_ms / torch_ms, 3),
                "ort_speedup": round(torch_ms / ort_ms, 3),
                "rounds": len(t_torch), "max_abs_diff": max_abs,
            }

    print(json.dumps({
        "bench": "edge_encoder_ort_vs_torch",
        "input_size": size, "depths": args.depths, "compression_ratio": args.ratio, "d_ff": args.d_ff,
        "compact_dim": ccfg.compact_dim, "params": count_params(edge), "onnx_bytes": onnx_bytes,
        "export_s": round(export_s, 2), "threads": args.threads, "warmup": args.warmup,
        "batches": results,
        "torch": torch.__version__, "onnxruntime": ort.__version__,
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "load_avg_1m": round(os.getloadavg()[0], 2)},
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
