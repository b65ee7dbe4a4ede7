"""Markdown of an `rkdsc bench` JSON document (shared by `rkdsc bench` and `rkdsc report`; no grpc, no torch)."""
from __future__ import annotations

from typing import Any

DEFAULT_ROUNDS = 3  # `rkdsc bench --rounds`: in-process / networked runs alternated this many times


def _f(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def bench_markdown(doc: dict) -> str:
    """Tables of the in-process vs networked runs, the edge encoder (torch vs onnxruntime), the relay's
    channel cost and the bytes on the wire, followed by the document's notes."""
    ip = doc["inprocess"]
    base = ip.get("images_per_s")
    rounds = int(doc.get("rounds") or 1)
    ratios = doc.get("ratios") or {}
    how = (f" The in-process and networked runs alternated over {rounds} rounds: images/s and latencies are "
           "medians over the rounds, and 'x in-process' is the median of the per-round ratios (range in brackets)."
           if rounds > 1 else "")
    lines = [f"Bundle `{doc['bundle_source']}`, task `{doc['task']}`, {doc['images_per_edge']} images per edge, "
             f"batch {doc['batch_size']}, {doc['fading']} {doc['snr_db']:g} dB.{how}", "",
             "| path | images/s | x in-process | p50 ms | p99 ms | accuracy |", "|---|---|---|---|---|---|",
             f"| in-process | {_f(base, '.1f')} | 1.00 | {_f(ip['latency_ms']['p50'])} | "
             f"{_f(ip['latency_ms']['p99'])} | {_f(ip['accuracy'], '.3f')} |"]
    for e, res in doc["networked"].items():
        rate = res.get("images_per_s")
        ratio = ratios.get(f"networked_{e}_over_inprocess_throughput", rate / base if rate and base else None)
        spread = ratios.get(f"networked_{e}_over_inprocess_throughput_rounds") or []
        cell = _f(ratio) + (f" ({min(spread):.2f}-{max(spread):.2f})" if len(spread) > 1 else "")
        lines.append(f"| networked, {e} edge(s) | {_f(rate, '.1f')} | {cell} | {_f(res['latency_ms']['p50'])} | "
                     f"{_f(res['latency_ms']['p99'])} | {_f(res['accuracy'], '.3f')} |")
    for e, res in doc["networked"].items():
        if res.get("failure") or res.get("errors"):
            first = (res.get("failure") or "").strip().splitlines()[:1]
            lines.append(f"networked, {e} edge(s): {res.get('errors', 0)} of {res.get('images', 0)} images "
                         f"without a result" + (f"; failed: {first[0]}" if first else ""))
    enc = doc["encoder"]
    lines += ["", f"Edge encoder, {enc['threads']} thread(s) each (torch: {enc['torch_source']}):", "",
              "| batch | torch ms/img | onnxruntime ms/img | ORT speed-up | max abs diff |", "|---|---|---|---|---|"]
    for b, res in enc["batches"].items():
        lines.append(f"| {b} | {_f(res.get('torch_ms_per_image'), '.3f')} | {_f(res['ort_ms_per_image'], '.3f')} | "
                     f"{_f(res.get('ort_speedup'))} | {_f(res.get('max_abs_diff'), '.1e')} |")
    ch = doc["channel"]
    lines += ["", f"Relay channel (`channel.simulate`, {ch['symbols_per_frame']} symbols per frame):", "",
              "| channel | ns/symbol, frames batched | ns/symbol, one frame per call | ratio |", "|---|---|---|---|"]
    for f in ("awgn", "rayleigh"):
        if f in ch:
            b, one = ch[f]["batched_ns_per_symbol"], ch[f]["per_frame_ns_per_symbol"]
            lines.append(f"| {f} | {b:.1f} | {one:.1f} | {_f(one / b if b else None, '.1f')} |")
    wi = doc["wire"]
    lines += ["", f"Wire: {_f(wi['uplink_bytes_per_image'], '.0f')} bytes per image uplink ({wi['symbol_payload_bytes']} "
                  f"of symbols) vs {wi['raw_image_bytes']} raw image bytes ({_f(wi['raw_over_wire'])}x less) and "
                  f"{wi['image_file_bytes_mean']:.0f} image-file bytes ({_f(wi.get('file_over_wire'))}x less)."]
    for n in doc.get("notes") or []:
        lines.append(f"Note: {n}")
    return "\n".join(lines)
