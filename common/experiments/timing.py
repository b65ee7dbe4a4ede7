"""Encoder timing, torch against onnxruntime: the one implementation ``rkdsc profile`` and
``rkdsc bench`` use.

* ``time_torch`` / ``time_ort`` / ``time_torch_interleaved``: median time per image of an edge
  module ``(image [B,3,H,W], snr_db [B]) -> [B, D]`` or an ONNX edge file (warm-up, then timed
  runs until ``repeats`` or ``budget_s``, at least 3); dicts with ``per_image_ms``, ``batch_ms``,
  ``runs``, ``min_per_image_ms``, ``images_per_s``.
* ``export_edge_onnx``: the module as an ONNX file (the project's exporter).
* ``compare_torch_ort``: both engines on the same inputs at each batch size with equal thread
  counts, one engine at a time, plus the max abs difference of their outputs. Call it only with
  an ONNX file that holds the module's own weights (``same_weights``): a difference between
  different weights measures nothing.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

PARITY_ATOL = 1e-3  # max abs difference below which an ONNX file and a torch module are the same network


def median_per_image_ms(run: Callable[[], Any], batch: int, warmup: int, repeats: int,
                        budget_s: float, sync: Callable[[], None] = lambda: None) -> dict:
    """Warm up, then time `run` until `repeats` runs or `budget_s` (at least 3 runs); per image."""
    for _ in range(warmup):
        run()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        run()
        sync()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"per_image_ms": med * 1e3 / batch, "batch_ms": med * 1e3, "runs": len(times),
            "min_per_image_ms": min(times) * 1e3 / batch,
            "images_per_s": batch / med if med > 0 else float("inf")}


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch intra-op threads = ``n`` inside the block, restored afterwards."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def _inputs(batch: int, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((batch, 3, input_size, input_size), dtype=np.float32),
            np.full((batch,), 10.0, dtype=np.float32))


def time_torch(module, input_size: int, batch: int, device: str = "cpu", warmup: int = 3,
               repeats: int = 20, budget_s: float = 3.0) -> dict:
    import torch

    time.sleep(0.2)  # let a previous onnxruntime session's spinning worker threads go idle
    module = module.to(device).eval()
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(batch, 3, input_size, input_size, generator=gen).to(device)
    snr = torch.full((batch,), 10.0).to(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def run():
        with torch.inference_mode():
            module(img, snr)

    out = median_per_image_ms(run, batch, warmup, repeats, budget_s, sync)
    module.to("cpu")
    return out


def time_torch_interleaved(modules: dict[str, Any], input_size: int, batch: int, warmup: int = 3,
                           repeats: int = 20, budget_s: float = 3.0, rounds: int = 10) -> dict[str, dict]:
    """Time several CPU modules in alternation: each of `rounds` rounds runs every module for its
    share of `repeats` (and of `budget_s`), so that load from other jobs on a shared machine falls
    on all of them alike and their ratios stay meaningful. Per module: the median over all its runs."""
    import torch

    gen = torch.Generator().manual_seed(0)
    img = torch.randn(batch, 3, input_size, input_size, generator=gen)
    snr = torch.full((batch,), 10.0)
    for m in modules.values():
        m.to("cpu").eval()
    times: dict[str, list[float]] = {name: [] for name in modules}
    per_round = max(1, -(-repeats // rounds))
    with torch.inference_mode():
        for m in modules.values():
            for _ in range(warmup):
                m(img, snr)
        for _ in range(rounds):
            for name, m in modules.items():
                start = time.perf_counter()
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    m(img, snr)
                    times[name].append(time.perf_counter() - t0)
                    if time.perf_counter() - start > budget_s / rounds:
                        break
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"per_image_ms": med * 1e3 / batch, "batch_ms": med * 1e3, "runs": len(ts), "rounds": rounds,
                     "min_per_image_ms": min(ts) * 1e3 / batch, "images_per_s": batch / med if med > 0 else float("inf")}
    return out


def ort_session(onnx_path: str | Path, threads: int):
    """(session, its output name, feeds builder ``(image, snr_db) -> {input name: array}``)."""
    from rkdsc.common.bundle.runtime import make_session

    sess = make_session(onnx_path, intra_op_threads=threads)
    names = [i.name for i in sess.get_inputs()]
    return sess, sess.get_outputs()[0].name, lambda x, snr: {n: {"image": x, "snr_db": snr}[n] for n in names}


def time_ort(onnx_path: str | Path, input_size: int, batch: int, threads: int, warmup: int = 3,
             repeats: int = 20, budget_s: float = 3.0) -> dict:
    sess, out_name, feeds_for = ort_session(onnx_path, threads)
    feeds = feeds_for(*_inputs(batch, input_size))
    return median_per_image_ms(lambda: sess.run([out_name], feeds), batch, warmup, repeats, budget_s)


def export_edge_onnx(module, input_size: int, path: str | Path) -> Path:
    """Export an edge module (image, snr_db) -> symbols to ``path`` (dynamic batch; checked)."""
    import torch

    from rkdsc.common.bundle.export import export_part

    gen = torch.Generator().manual_seed(0)
    example = (torch.randn(2, 3, input_size, input_size, generator=gen), torch.tensor([5.0, 15.0]))
    return export_part(module.eval(), Path(path), ("image", "snr_db"), "symbols", example)


def max_abs_diff(module, onnx_path: str | Path, input_size: int, batch: int = 2, threads: int = 1) -> float:
    """Max abs difference of the module's and the ONNX file's outputs on the same random inputs."""
    import torch

    sess, out_name, feeds_for = ort_session(onnx_path, threads)
    x, snr = _inputs(batch, input_size)
    with torch.inference_mode():
        ref = module.eval()(torch.from_numpy(x), torch.from_numpy(snr)).numpy()
    return float(np.max(np.abs(ref - sess.run([out_name], feeds_for(x, snr))[0])))


def compare_torch_ort(module, onnx_path: str | Path, input_size: int, batches: tuple[int, ...], threads: int,
                      repeats: int = 15, warmup: int = 2) -> dict[str, dict]:
    """Per batch size: torch and onnxruntime ms per image (``repeats`` timed runs at batch 1,
    ``max(3, repeats // 3)`` above), ``ort_speedup`` and ``max_abs_diff`` on the same inputs.
    ``onnx_path`` must hold ``module``'s own weights."""
    import torch

    sess, out_name, feeds_for = ort_session(onnx_path, threads)
    out: dict[str, dict] = {}
    with torch_threads(threads):
        for b in batches:
            x, snr = _inputs(b, input_size)
            feeds = feeds_for(x, snr)
            tx, ts = torch.from_numpy(x), torch.from_numpy(snr)
            module.eval()
            with torch.inference_mode():
                ref = module(tx, ts).numpy()
            res: dict[str, Any] = {"max_abs_diff": float(np.max(np.abs(ref - sess.run([out_name], feeds)[0])))}
            n_rep = repeats if b == 1 else max(3, repeats // 3)
            # one engine at a time: onnxruntime's worker threads keep spinning for a while after a
            # run and would slow an interleaved torch run down (and the reverse)
            t_torch = time_torch(module, input_size, b, "cpu", warmup, n_rep, float("inf"))
            t_ort = median_per_image_ms(lambda: sess.run([out_name], feeds), b, warmup, n_rep, float("inf"))
            res["torch_ms_per_image"] = t_torch["per_image_ms"]
            res["ort_ms_per_image"] = t_ort["per_image_ms"]
            res["ort_speedup"] = res["torch_ms_per_image"] / res["ort_ms_per_image"]
            out[str(b)] = res
    return out


def time_ort_only(onnx_path: str | Path, input_size: int, batches: tuple[int, ...], threads: int,
                  repeats: int = 15, warmup: int = 2) -> dict[str, dict]:
    """onnxruntime ms per image only (no torch module to compare with), same protocol as above."""
    out = {}
    for b in batches:
        n_rep = repeats if b == 1 else max(3, repeats // 3)
        out[str(b)] = {"ort_ms_per_image": time_ort(onnx_path, input_size, b, threads, warmup, n_rep,
                                                    float("inf"))["per_image_ms"]}
    return out


def matmul_gflops(threads: int, n: int = 1024, budget_s: float = 1.0) -> float:
    """This machine's float32 matmul throughput with torch at `threads` threads (GFLOPS)."""
    import torch

    with torch_threads(threads):
        gen = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
        for _ in range(2):
            a @ b
        runs, start = 0, time.perf_counter()
        best = float("inf")
        while runs < 3 or time.perf_counter() - start < budget_s:
            t0 = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t0)
            runs += 1
        return 2.0 * n ** 3 / best / 1e9


__all__ = ["PARITY_ATOL", "median_per_image_ms", "torch_threads", "time_torch", "time_torch_interleaved",
           "ort_session", "time_ort", "time_ort_only", "export_edge_onnx", "max_abs_diff", "compare_torch_ort",
           "matmul_gflops"]
