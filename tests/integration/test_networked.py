"""The whole online path over real localhost gRPC: equal to the in-process pipeline, metrics
that agree with what was sent, the demo end to end, and services refusing a bad bundle."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from rkdsc.common.bundle import InProcessPipeline
from rkdsc.common.data.images import list_images, load_rgb, preprocess
from rkdsc.edge.client import EdgeClient
from tests.conftest import metric, write_toml

ROOT = Path(__file__).resolve().parents[2]


def in_process_reference(bundle, tx, sample_dir):
    """InProcessPipeline with the link's seed, one image (one simulate call) at a time, in
    file order: the draws the relay makes for this transmitter."""
    pipe = InProcessPipeline(bundle, tx.task, seed=tx.seed)
    listing = list_images(sample_dir, check=False)
    out = {}
    for path in listing.paths:
        x = preprocess(load_rgb(path), bundle.input)[None]  # [1, 3, H, W]
        r = pipe.run(x, tx.effective_snr_db, tx.fading)
        out[str(path.relative_to(sample_dir))] = r["probs"][0]
    return out


@pytest.mark.parametrize("batched,read_ahead,shared_channel",
                         [(True, True, False), (True, False, False), (False, True, False), (True, False, True),
                          (False, False, True)],
                         ids=["TransmitBatch", "TransmitBatch-no-read-ahead", "Transmit", "TransmitBatch-shared-channel",
                              "Transmit-shared-channel"])
def test_networked_path_equals_in_process_pipeline_and_metrics_agree(services, bundle, sample_dir, tmp_path, batched,
                                                                      read_ahead, shared_channel):
    # batched messages (one channel call per message) and single frames give the in-process
    # pipeline's results for the same seeds: the k-th frame of a link sees the k-th draw either way,
    # whether the edge reads the next batch's images on a thread (read_ahead) or not, and whether
    # each device streams from its own thread over its own channel or all three are coroutines of
    # one event loop sharing one channel (a fleet's way)
    import asyncio

    import grpc

    from rkdsc.common.service import channel_options

    cfg = services.cfg
    for tx in cfg.transmitters:
        tx.batch_messages = batched
        tx.read_ahead = read_ahead
    summaries, errors = {}, []
    clients = [EdgeClient(cfg, tx, bundle=bundle, frame_id_base=0) for tx in cfg.transmitters]
    if shared_channel:
        async def together():
            chan = grpc.aio.insecure_channel(cfg.relay_addr, options=channel_options(cfg.basestation.max_message_bytes))
            try:
                done = await asyncio.gather(*(c.run_async(sample_dir, tmp_path / c.tx.id, channel=chan)
                                              for c in clients))
            finally:
                await chan.close()
            summaries.update({c.tx.id: s for c, s in zip(clients, done)})

        asyncio.run(together())
    else:
        def run(client):
            try:
                summaries[client.tx.id] = client.run(sample_dir, tmp_path / client.tx.id)
            except Exception as exc:  # pragma: no cover - surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(c,)) for c in clients]  # 3 devices at once
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors and len(summaries) == 3
    spec = bundle.task("digits")
    n = len(list_images(sample_dir, check=False).paths)
    total_correct = {}
    for tx in cfg.transmitters:
        records = [json.loads(line) for line in (tmp_path / tx.id / "results.jsonl").read_text().splitlines()]
        assert len(records) == n and all(r["error"] is None for r in records)
        ref = in_process_reference(bundle, tx, sample_dir)
        for r in records:
            probs = ref[r["file"]]
            assert r["predicted_index"] == int(np.argmax(probs)), (tx.id, r["file"])
            top = [s for _, s in r["top_k"]]
            assert top == pytest.approx(sorted(probs.tolist(), reverse=True)[:3], abs=1e-4), (tx.id, r["file"])
            assert r["encoder_snr_db"] == tx.effective_snr_db == r["link_snr_db"]
        total_correct[tx.id] = sum(r["correct"] for r in records)
        assert summaries[tx.id]["correct"] == total_correct[tx.id]

    server = services.metrics("server")
    relay = services.metrics("relay")
    for tx in cfg.transmitters:
        lab = {"transmitter": tx.id, "task": "digits"}
        assert metric(server, "rkdsc_frames_total", outcome="ok", **lab) == n
        assert metric(server, "rkdsc_symbols_total", **lab) == n * spec.symbols_per_image
        assert metric(server, "rkdsc_labelled_total", **lab) == n
        assert metric(server, "rkdsc_correct_total", **lab) == total_correct[tx.id]
        assert metric(relay, "rkdsc_relay_frames_total", transmitter=tx.id, outcome="ok") == n
        assert metric(relay, "rkdsc_link_snr_db", transmitter=tx.id) == tx.effective_snr_db
    assert metric(server, "rkdsc_batch_size_sum", task="digits") == 3 * n
    assert metric(server, "rkdsc_decode_seconds_count", task="digits") == \
        metric(server, "rkdsc_batch_size_count", task="digits")
    assert metric(server, "rkdsc_queue_seconds_count", task="digits") == 3 * n
    assert metric(relay, "rkdsc_relay_roundtrip_seconds_count") == 3 * n
    # one channel call per message: per frame on Transmit, per encoded batch on TransmitBatch
    # (the window, max_in_flight, is at least a batch here, so no batch is split)
    assert all(tx.max_in_flight >= tx.batch_size > 1 for tx in cfg.transmitters)
    messages = sum(math.ceil(n / tx.batch_size) for tx in cfg.transmitters) if batched else 3 * n
    assert metric(relay, "rkdsc_relay_channel_seconds_count") == messages


def test_airtime_and_propagation_emulation_keep_results_unchanged(make_config, bundle, sample_dir, tmp_path):
    from tests.conftest import Services

    cfg, _ = make_config(basestation={"symbol_rate_hz": 1e5, "propagation_delay_ms": 2.0})
    svc = Services(cfg, bundle)
    try:
        tx = cfg.transmitter("edge-mid")
        summary = EdgeClient(cfg, tx, bundle=bundle, frame_id_base=0).run(sample_dir, tmp_path / "o")
        assert summary["answered"] == summary["images"]
        records = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
        ref = in_process_reference(bundle, tx, sample_dir)
        assert all(r["predicted_index"] == int(np.argmax(ref[r["file"]])) for r in records)
    finally:
        svc.close()


def test_demo_runs_the_topology_as_processes_and_writes_the_summary(bundle_dir, tmp_path, monkeypatch):
    from rkdsc.common.experiments.demo import run_demo

    monkeypatch.chdir(tmp_path)  # the services are started by their installed module names, from anywhere

    # no `images`: the default samples folder runs/samples/digits (under root) is generated
    config = write_toml(tmp_path / "tiny.toml", {}, {"bundle": {"path": str(bundle_dir)},
                                                     "server": {"max_wait_ms": 1.0}}, [
        {"id": "near", "snr_db": 20.0, "fading": "awgn", "seed": 1, "limit": 8, "batch_size": 4},
        {"id": "far", "snr_db": -5.0, "fading": "rayleigh", "seed": 2, "limit": 6, "batch_size": 4},
    ])
    out = tmp_path / "demo"
    summary = run_demo(config, out, quiet=True)
    assert (tmp_path / "runs" / "samples" / "digits").is_dir()
    written = json.loads((out / "summary.json").read_text())
    assert written == json.loads(json.dumps(summary))
    assert set(written) >= {"transmitters", "wall_s"} and written["ok"] is True
    rows = {r["id"]: r for r in written["transmitters"]}
    assert list(rows) == ["near", "far"]
    for tid, n in (("near", 8), ("far", 6)):
        r = rows[tid]
        assert set(r) >= {"id", "task", "snr_db", "fading", "images", "answered", "errors", "accuracy",
                          "latency_ms", "symbols_per_image"}
        assert set(r["latency_ms"]) >= {"p50", "p99"}
        assert (r["images"], r["answered"], r["errors"]) == (n, n, 0)
    assert (rows["near"]["snr_db"], rows["far"]["fading"]) == (20.0, "rayleigh")
    assert written["server_metrics"]["rkdsc_frames_total{outcome=ok}"] == 14
    assert written["relay_metrics"]["rkdsc_relay_frames_total{outcome=ok}"] == 14
    for name in ("server", "relay", "edge-near", "edge-far"):
        assert (out / "logs" / f"{name}.log").exists()
    assert "rkdsc_frames_total" in (out / "metrics" / "server.prom").read_text()
    assert "stopped" in (out / "logs" / "server.log").read_text()  # graceful SIGTERM path


def test_demo_started_together_streams_every_edge_after_the_gate_opens(bundle_dir, sample_dir, tmp_path):
    """run_demo(start_together=True) (rkdsc bench): each edge loads, writes its ready file and waits;
    the gate opens once all are ready, and no edge's stream started before it."""
    from rkdsc.common.experiments.demo import run_demo

    config = write_toml(tmp_path / "t.toml", {}, {"bundle": {"path": str(bundle_dir)}}, [
        {"id": f"e{i}", "images": str(sample_dir), "seed": i, "limit": 8, "batch_size": 4} for i in range(3)])
    out = tmp_path / "gated"
    summary = run_demo(config, out, quiet=True, start_together=True)
    assert summary["ok"] and [r["answered"] for r in summary["transmitters"]] == [8, 8, 8]
    opened = float((out / "run" / "start").read_text())
    # CPU while streaming: each edge's own (its summary, within its wall time on one thread of
    # work plus helpers), the services' from the gate to the last exit
    assert set(summary["services_cpu_s"]) == {"server", "relay"}
    # (10 ms ticks from /proc: 24 images may take less than one)
    assert all(0 <= v <= (os.cpu_count() or 1) * summary["wall_s"] for v in summary["services_cpu_s"].values())
    for i in range(3):
        assert json.loads((out / "run" / f"edge-e{i}.json").read_text())["id"] == f"e{i}"
        edge = json.loads((out / "edges" / f"e{i}" / "summary.json").read_text())
        assert 0 < edge["process_cpu_s"] <= (os.cpu_count() or 1) * edge["wall_s"] + 0.02, edge
        assert summary["transmitters"][i]["process_cpu_s"] == edge["process_cpu_s"]
        started = (out / "edges" / f"e{i}" / "summary.json").stat().st_mtime - edge["wall_s"]
        assert started >= opened - 0.05, (f"e{i}", started, opened)


def test_demo_with_several_devices_per_process_runs_fleets_behind_the_gate(bundle_dir, sample_dir, tmp_path):
    """run_demo(edges_per_process=2) (the bench's many-edge row): 5 devices in 3 `python -m rkdsc.edge
    fleet` processes (2 + 2 + 1), started together; each device its own stream, results and summary."""
    from rkdsc.common.experiments.bench import cpu_per_image
    from rkdsc.common.experiments.demo import run_demo

    config = write_toml(tmp_path / "t.toml", {}, {"bundle": {"path": str(bundle_dir)}}, [
        {"id": f"e{i}", "images": str(sample_dir), "seed": i, "limit": 8, "batch_size": 4} for i in range(5)])
    out = tmp_path / "fleets"
    summary = run_demo(config, out, quiet=True, start_together=True, edges_per_process=2)
    rows = summary["transmitters"]
    assert summary["ok"] and [r["answered"] for r in rows] == [8] * 5 and all(r["ok"] for r in rows)
    assert [r["process"] for r in rows] == ["edge fleet-0"] * 2 + ["edge fleet-1"] * 2 + ["edge fleet-2"]
    opened = float((out / "run" / "start").read_text())
    for i, r in enumerate(rows):
        folder = out / "fleets" / str(i // 2) / f"e{i}"
        assert r["results"] == str(folder / "results.jsonl")
        records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
        assert len(records) == 8 and {x["transmitter"] for x in records} == {f"e{i}"}
        edge = json.loads((folder / "summary.json").read_text())
        assert (folder / "summary.json").stat().st_mtime - edge["wall_s"] >= opened - 0.05
    for k, n in enumerate((2, 2, 1)):
        assert json.loads((out / "fleets" / str(k) / "fleet-summary.json").read_text())["devices"] == n
    assert not any((out / "edges").iterdir())
    # the devices of one process report that process's CPU: counted once per process
    per_process = {}
    for r in rows:
        per_process[r["process"]] = max(per_process.get(r["process"], 0.0), r["process_cpu_s"])
    cpu = cpu_per_image(rows, summary["services_cpu_s"], 40)
    assert cpu["edges"] == pytest.approx(sum(per_process.values()) / 40 * 1e6)


def test_demo_refuses_fewer_than_one_device_per_process(capsys):
    from rkdsc.common.experiments.demo import cli

    assert cli(["--config", "deploy/topology.toml", "--edges-per-process", "0", "--quiet"]) == 2
    assert "edges_per_process: expected at least 1, got 0" in capsys.readouterr().err


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs /proc")
def test_a_failing_demo_exits_non_zero_and_leaves_no_child_behind(bundle_dir, sample_dir, tmp_path):
    from rkdsc.common.experiments.demo import DemoError, run_demo

    config = write_toml(tmp_path / "t.toml", {}, {"bundle": {"path": str(bundle_dir)}}, [
        {"id": "a", "images": str(sample_dir)}, {"id": "b", "images": str(sample_dir)}])
    out = tmp_path / "failing-demo"
    with pytest.raises(DemoError, match="still running"):
        run_demo(config, out, timeout_s=0.0, quiet=True)  # the edges cannot finish in 0 s
    assert json.loads((out / "summary.json").read_text())["ok"] is False
    assert _processes_mentioning(str(tmp_path)) == []  # server, relay and edges are gone


def test_demo_without_a_bundle_fails_with_a_clear_message(tmp_path, capsys):
    from rkdsc.common.experiments.demo import cli

    config = write_toml(tmp_path / "t.toml", {}, {"bundle": {"path": "no-such-bundle"}}, [{"id": "a"}])
    assert cli(["--config", str(config), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bundle not found" in err and "no-such-bundle" in err


def test_services_refuse_to_start_on_a_bundle_that_fails_verification(bundle_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle_dir, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    victim = bad / manifest["components"][manifest["tasks"][0]["server"]]["file"]
    victim.write_bytes(victim.read_bytes()[:-7])
    config = write_toml(tmp_path / "t.toml", {}, {"bundle": {"path": str(bad)},
                                                  "server": {"port": 0, "metrics_port": -1}}, [{"id": "a"}])
    for module in ("server", "edge"):
        args = [sys.executable, "-m", f"rkdsc.{module}", "--config", str(config)]
        if module == "edge":
            args += ["--id", "a", "--out", str(tmp_path / "o")]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode != 0, (module, proc.stderr)
        assert victim.name in proc.stderr, (module, proc.stderr)


def test_generated_grpc_code_is_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
