"""Markdown of an `rkdsc bench` JSON document (shared by `rkdsc bench` and `rkdsc report`; no grpc, no torch),
and ``plot_goals``: the data-plane goals as a figure (each round, the median, the goal line)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

DEFAULT_ROUNDS = 3  # `rkdsc bench --rounds`: in-process / networked runs alternated this many times


def _f(v: Any, spec: str = ".2f") -> str:
    return "n/a" if v is None else format(v, spec)


def _goal_cells(row: dict) -> tuple[str, str, str]:
    """(reference, measured, ratio / difference) cells of a goal row."""
    unit, m = row.get("unit"), row.get("measure")
    spec = {"images/s": ",.0f", "ms": ".2f", "ns": ",.0f"}.get(unit, ".2f")
    ref = "n/a" if row.get("reference") is None else f"{format(row['reference'], spec)} {unit}"
    if row.get("reference_label") and row.get("reference_label") != "in-process":
        ref = f"{row['reference_label']}: {ref}"
    meas = "not run" if row.get("measured") is None else f"{format(row['measured'], spec)} {unit}"
    if row.get("detail"):
        meas += f" ({row['detail']})"
    v, rounds = row.get("value"), [x for x in row.get("rounds") or [] if x is not None]
    if v is None:
        return ref, meas, "n/a"
    if m == "ratio":
        cell = f"{v:.2f}x"
        spread = f" ({min(rounds):.2f}-{max(rounds):.2f})" if len(rounds) > 1 else ""
    elif m == "delta":
        cell = f"{v:+.2f} ms"
        spread = f" ({min(rounds):+.2f} to {max(rounds):+.2f})" if len(rounds) > 1 else ""
    else:
        ratio = v / row["reference"] if row.get("reference") else None
        cell = f"{v:,.0f} {unit}" + (f" = {ratio:.0f}x batched" if ratio else "")
        spread = ""
    return ref, meas, cell + spread


def goals_markdown(doc: dict) -> list[str]:
    """The data-plane goal table (``doc["goals"]``, from ``rkdsc.common.experiments.bench.goal_rows``):
    one row per figure with the reference, the measurement, the ratio or difference (median over the
    rounds, range in brackets) and PASS / FAIL against the goal; [] for documents without goals."""
    rows = doc.get("goals")
    if not rows:
        return []
    lines = ["Data plane against its goals (side by side in this run):", "",
             "| figure | reference | networked / as called | ratio / difference | goal | verdict |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        ref, meas, cell = _goal_cells(row)
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[row.get("pass")]
        lines.append(f"| {row['figure']} | {ref} | {meas} | {cell} | {row['goal']} | {verdict} |")
    done = [r for r in rows if r.get("pass") is not None]
    lines += ["", f"{sum(1 for r in done if r['pass'])} of {len(done)} goals met"
              + (f" ({len(rows) - len(done)} not run)" if len(done) < len(rows) else "") + ".", ""]
    return lines


def soak_markdown(doc: dict) -> str:
    """The soak result (``rkdsc bench --soak-s``): errors, rate, latency and the server's and relay's RSS,
    threads and file descriptors at ready / start / end, and every sample."""
    s = doc["soak"]
    lat = s.get("latency_ms") or {}
    lines = [f"Soak: {s['edges']} edge device(s) for {s['duration_s']:.0f} s (asked {s['requested_s']:g} s), "
             f"{s['edge_runs']} edge runs of at most {s['images_per_run']} images, batch {s['batch_size']}; bundle "
             f"`{doc.get('bundle_source')}`, {doc.get('fading')} {doc.get('snr_db', 0):g} dB.", "",
             f"{s['answered']} of {s['images']} images answered, **{s['errors']} errors**, {s['failed_runs']} failed "
             f"edge runs; {_f(s.get('images_per_s'), '.1f')} images/s; latency p50 {_f(lat.get('p50'), '.1f')} ms, "
             f"p99 {_f(lat.get('p99'), '.1f')} ms; exit status on SIGTERM: "
             + ", ".join(f"{k} {v}" for k, v in (s.get("service_exit_status") or {}).items())
             + f". Verdict: {'PASS' if s.get('ok') else 'FAIL'}.", "",
             "| sample | t s | edges running | server RSS MiB | server threads | server fds | relay RSS MiB | "
             "relay threads | relay fds |", "|---|---|---|---|---|---|---|---|---|"]
    for x in s.get("samples") or []:
        sv, rl = x.get("server") or {}, x.get("relay") or {}
        lines.append(f"| {x['label']} | {x['t_s']:.1f} | {x['edges_running']} | {_f(sv.get('rss_mb'), '.1f')} | "
                     f"{_f(sv.get('threads'), 'd')} | {_f(sv.get('fds'), 'd')} | {_f(rl.get('rss_mb'), '.1f')} | "
                     f"{_f(rl.get('threads'), 'd')} | {_f(rl.get('fds'), 'd')} |")
    for name in ("server", "relay"):
        a, b = (s.get(name) or {}).get("start") or {}, (s.get(name) or {}).get("end") or {}
        if a.get("rss_mb") is not None and b.get("rss_mb") is not None:
            lines.append(f"{name}: RSS {a['rss_mb']:.1f} -> {b['rss_mb']:.1f} MiB ({b['rss_mb'] - a['rss_mb']:+.1f}), "
                         f"threads {a['threads']} -> {b['threads']}, fds {a.get('fds')} -> {b.get('fds')} "
                         f"(start -> end)")
    if s.get("failure"):
        lines.append(f"Failed: {s['failure']}")
    for f in s.get("failures") or []:
        lines.append(f"Edge run failed: {f}")
    return "\n".join(lines)


def bench_markdown(doc: dict) -> str:
    """Tables of the in-process vs networked runs, the edge encoder (torch vs onnxruntime; the max abs
    difference only for a same-weight pair), the relay's channel cost and the bytes on the wire,
    followed by the document's notes."""
    ip = doc["inprocess"]
    base = ip.get("images_per_s")
    rounds = int(doc.get("rounds") or 1)
    ratios = doc.get("ratios") or {}
    how = (f" The in-process and networked runs alternated over {rounds} rounds: images/s and latencies are "
           "medians over the rounds, and 'x in-process' is the median of the per-round ratios (range in brackets)."
           if rounds > 1 else "")
    lines = [f"Bundle `{doc['bundle_source']}`, task `{doc['task']}`, {doc['images_per_edge']} images per edge, "
             f"batch {doc['batch_size']}, {doc['fading']} {doc['snr_db']:g} dB.{how}", "", *goals_markdown(doc),
             "| path | images/s | x in-process | p50 ms | p99 ms | accuracy |", "|---|---|---|---|---|---|",
             f"| in-process | {_f(base, '.1f')} | 1.00 | {_f(ip['latency_ms']['p50'])} | "
             f"{_f(ip['latency_ms']['p99'])} | {_f(ip['accuracy'], '.3f')} |"]
    def rate_row(name: str, res: dict, ratio_key: str) -> str:
        """A networked run's row: images/s, its ratio to in-process (median and range over the rounds)."""
        rate = res.get("images_per_s")
        ratio = ratios.get(ratio_key, rate / base if rate and base else None)
        spread = ratios.get(ratio_key + "_rounds") or []
        cell = _f(ratio) + (f" ({min(spread):.2f}-{max(spread):.2f})" if len(spread) > 1 else "")
        return (f"| {name} | {_f(rate, '.1f')} | {cell} | {_f(res['latency_ms']['p50'])} | "
                f"{_f(res['latency_ms']['p99'])} | {_f(res['accuracy'], '.3f')} |")

    for e, res in doc["networked"].items():
        lines.append(rate_row(f"networked, {e} edge(s)", res, f"networked_{e}_over_inprocess_throughput"))
    for e, res in (doc.get("networked_single_frame_messages") or {}).items():
        rate = res.get("images_per_s")
        lines.append(f"| networked, {e} edge(s), one frame per message (Transmit; before batching) | "
                     f"{_f(rate, '.1f')} | {_f(rate / base if rate and base else None)} | "
                     f"{_f(res['latency_ms']['p50'])} | {_f(res['latency_ms']['p99'])} | {_f(res['accuracy'], '.3f')} |")
    for name, label in (("read_ahead", "with read-ahead (`read_ahead = true`)"),
                        ("no_read_ahead", "without read-ahead (`read_ahead = false`)")):
        for e, res in (doc.get(f"networked_{name}") or {}).items():
            lines.append(rate_row(f"networked, {e} edge(s), {label}", res, f"{name}_{e}_over_inprocess_throughput"))
    lat = doc.get("latency")
    if lat:
        for name, res in (("in-process, batch 1", lat["inprocess"]),
                          (f"networked, 1 edge, batch 1, {lat.get('max_in_flight', 1)} frame in flight", lat["networked"])):
            lines.append(f"| {name} ({lat['images']} images) | {_f(res.get('images_per_s'), '.1f')} | "
                         f"{_f(res['images_per_s'] / base if res.get('images_per_s') and base else None)} | "
                         f"{_f(res['latency_ms']['p50'])} | {_f(res['latency_ms']['p99'])} | "
                         f"{_f(res.get('accuracy'), '.3f')} |")
        svc = (lat["networked"].get("service_latency_ms") or {})
        if svc.get("p99") is not None:
            lines += ["", f"Batch 1, networked: encode + hand-over to result (`encode_ms + rtt_ms`, without the wait "
                          f"for the in-flight slot while the next image is encoded ahead) p50 {_f(svc.get('p50'))} ms, "
                          f"p99 {_f(svc['p99'])} ms: the latency row above compares this p99."]
    batched = ratios.get("batched_over_single_frame_messages_1_edge")
    if batched:
        lines += ["", f"Batched messages over one frame per message, 1 edge: {batched:.2f}x images/s."]
    ahead = ratios.get("read_ahead_over_no_read_ahead_1_edge")
    if ahead:
        spread = ratios.get("read_ahead_over_no_read_ahead_1_edge_rounds") or []
        lines += ["", f"Reading the next batch ahead over not, 1 edge: {ahead:.2f}x images/s"
                      + (f" ({min(spread):.2f}-{max(spread):.2f} over the rounds)." if len(spread) > 1 else ".")]
    runs = [(f"{e} edge(s)", res) for e, res in doc["networked"].items()]
    if lat:
        runs.append(("1 edge, batch 1", lat["networked"]))
    runs = [(n, res["services"]) for n, res in runs if res.get("services")]
    if runs:
        lines += ["", "Inside the services (their own /metrics, last round):", "",
                  "| networked run | relay frames per channel call | relay channel ns/symbol | relay round trip ms | "
                  "server mean batch | server decode ms/batch |", "|---|---|---|---|---|---|"]
        for n, sv in runs:
            lines.append(f"| {n} | {_f(sv.get('relay_frames_per_channel_call'), '.1f')} | "
                         f"{_f(sv.get('relay_channel_ns_per_symbol'), ',.0f')} | {_f(sv.get('relay_roundtrip_ms_mean'))} | "
                         f"{_f(sv.get('server_mean_batch'), '.1f')} | {_f(sv.get('server_decode_ms_per_batch'))} |")
        lines.append("")
    cpu = [(f"{e} edge(s)", res["cpu_us_per_image"]) for e, res in doc["networked"].items()
           if (res.get("cpu_us_per_image") or {}).get("total") is not None]
    if cpu:
        lines += ["CPU per answered image while streaming, by role (us; edge processes: each its own CPU time, "
                  "summed; relay and server: /proc; medians over the rounds):", "",
                  "| networked run | edge processes | relay | server | all |", "|---|---|---|---|---|"]
        for n, c in cpu:
            lines.append(f"| {n} | {c['edges']:.0f} | {c['relay']:.0f} | {c['server']:.0f} | {c['total']:.0f} |")
        lines.append("")
    for e, res in doc["networked"].items():
        if res.get("failure") or res.get("errors"):
            first = (res.get("failure") or "").strip().splitlines()[:1]
            lines.append(f"networked, {e} edge(s): {res.get('errors', 0)} of {res.get('images', 0)} images "
                         f"without a result" + (f"; failed: {first[0]}" if first else ""))
    enc = doc["encoder"]
    # older documents have no "same_weights": their random-weight twins were compared with the bundle's file
    same = enc.get("same_weights", "random weights" not in str(enc.get("torch_source", "")))
    ort = f"; onnxruntime: {enc['ort_source']}" if enc.get("ort_source") else ""
    lines += ["", f"Edge encoder, {enc['threads']} thread(s) each (torch: {enc['torch_source']}{ort}):", "",
              "| batch | torch ms/img | onnxruntime ms/img | ORT speed-up | max abs diff |", "|---|---|---|---|---|"]
    for b, res in enc["batches"].items():
        diff = _f(res.get("max_abs_diff"), ".1e") if same else "n/a (different weights)"
        lines.append(f"| {b} | {_f(res.get('torch_ms_per_image'), '.3f')} | {_f(res['ort_ms_per_image'], '.3f')} | "
                     f"{_f(res.get('ort_speedup'))} | {diff} |")
    ch = doc["channel"]
    lines += ["", f"Relay channel (`channel.simulate`, {ch['symbols_per_frame']} symbols per frame):", "",
              "| channel | ns/symbol, frames batched | ns/symbol, one frame per call | ratio |", "|---|---|---|---|"]
    for f in ("awgn", "rayleigh"):
        if f in ch:
            b, one = ch[f]["batched_ns_per_symbol"], ch[f]["per_frame_ns_per_symbol"]
            lines.append(f"| {f} | {b:.1f} | {one:.1f} | {_f(one / b if b else None, '.1f')} |")
    rp = ch.get("relay_pattern")
    if rp:
        lines += ["", f"As the relay calls it ({rp['frames_per_call']} frame(s) per call, from "
                      f"{rp.get('frames_per_call_source', 'its metrics')}; {rp['fading']}): "
                      f"{rp['ns_per_symbol']:.1f} ns per symbol, "
                      f"{rp['ns_per_symbol'] * rp['frames_per_call'] * ch['symbols_per_frame'] / 1e3:.1f} us per call."]
    wi = doc["wire"]
    lines += ["", f"Wire: {_f(wi['uplink_bytes_per_image'], '.0f')} bytes per image uplink ({wi['symbol_payload_bytes']} "
                  f"of symbols) vs {wi['raw_image_bytes']} raw image bytes ({_f(wi['raw_over_wire'])}x less) and "
                  f"{wi['image_file_bytes_mean']:.0f} image-file bytes ({_f(wi.get('file_over_wire'))}x less)."]
    if doc.get("tls"):
        from rkdsc.common.experiments.bench_tls import tls_markdown

        lines += ["", tls_markdown(doc["tls"])]
    for n in doc.get("notes") or []:
        lines.append(f"Note: {n}")
    return "\n".join(lines)


_AXIS_LABEL = {"ratio": "x reference", "delta": "ms over in-process", "value": "ns per symbol"}


def plot_goals(doc: dict, path: str | Path) -> list[str]:
    """One panel per goal row of ``doc["goals"]``: each round's value (dots), the median (bar), the
    goal's threshold (dashed) and the side of it that passes (shaded); the title carries the verdict.
    Writes a PNG to ``path``; returns the verdicts drawn ("PASS", "FAIL" or "not run"), row by row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc.get("goals") or []
    if not rows:
        raise ValueError("goals: the bench document has no goal rows to plot")
    fig, axes = plt.subplots(1, len(rows), figsize=(3.1 * len(rows), 3.6), squeeze=False)
    verdicts = []
    for ax, row in zip(axes[0], rows):
        v, t = row.get("value"), float(row["threshold"])
        rounds = [x for x in row.get("rounds") or [] if x is not None]
        verdict = "not run" if v is None or row.get("pass") is None else ("PASS" if row["pass"] else "FAIL")
        verdicts.append(verdict)
        upward = row.get("measure") == "ratio"  # ratios pass at or above the line; ms and ns at or below
        if v is not None:
            color = {"PASS": "tab:green", "FAIL": "tab:red"}.get(verdict, "tab:gray")
            ax.bar([0], [v], width=0.5, color=color, alpha=0.55, label="median")
            if rounds:
                xs = [(i - (len(rounds) - 1) / 2) * 0.08 for i in range(len(rounds))]
                ax.plot(xs, rounds, "k.", markersize=8, label="rounds")
        else:
            ax.text(0, t / 2, "not run", ha="center", va="center")
        drawn = [t, *([v] if v is not None else []), *rounds]
        top, bottom = max(drawn) * 1.25, min([0.0, *drawn]) * 1.25
        ax.set_ylim(bottom, top)
        ax.axhline(t, color="k", linestyle="--", linewidth=1, label="goal")
        ax.axhspan(*((t, top) if upward else (bottom, t)), alpha=0.08, color="tab:green")  # the passing side
        ax.set_xlim(-0.6, 0.6)
        ax.set_xticks([])
        ax.set_ylabel(_AXIS_LABEL.get(row.get("measure"), row.get("unit") or ""))
        ax.set_title("\n".join([*textwrap.wrap(row["figure"], 38), f"{row['goal']}: {verdict}"]), fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower left")
    machine = doc.get("machine") or {}
    fig.suptitle(f"rkdsc bench: {sum(v == 'PASS' for v in verdicts)} of {len(rows)} goals met "
                 f"({doc.get('images_per_edge', '?')} images per edge, {doc.get('rounds', '?')} rounds, "
                 f"{machine.get('cpus', '?')} CPUs)", fontsize=10)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return verdicts
