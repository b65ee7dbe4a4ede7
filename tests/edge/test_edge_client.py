"""EdgeClient against a real relay + server: outputs, unreadable images, SNR feedback, CLI."""
from __future__ import annotations

import json
import shutil

import pytest

from rkdsc.edge.client import EdgeClient
from rkdsc.edge.client import cli as edge_cli


@pytest.fixture
def images_with_a_broken_file(tmp_path, sample_dir):
    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder


def test_client_answers_every_image_and_reports_the_unreadable_one(services, bundle, images_with_a_broken_file,
                                                                    tmp_path):
    cfg = services.cfg
    tx = cfg.transmitter("edge-near")
    out = tmp_path / "out"
    summary = EdgeClient(cfg, tx, bundle=bundle).run(images_with_a_broken_file, out)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    n_good = len(list(images_with_a_broken_file.glob("*/*.png"))) - 1
    assert len(records) == n_good + 1
    broken = [r for r in records if r["file"] == "3/broken.png"]
    assert len(broken) == 1 and broken[0]["error"].startswith("unreadable image")
    good = [r for r in records if r["error"] is None]
    assert len(good) == n_good
    names = list(bundle.task("digits").class_names)
    for r in good:
        assert r["transmitter"] == "edge-near" and r["predicted_class"] in names
        assert 0 < r["score"] <= 1 and r["latency_ms"] > 0 and r["link_snr_db"] == 20.0
        assert r["label"] == r["file"].split("/")[0]
        assert r["correct"] == (r["predicted_class"] == r["label"])
    assert summary == json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["answered"], summary["errors"]) == (n_good + 1, n_good, 1)
    assert summary["accuracy"] == pytest.approx(sum(r["correct"] for r in good) / n_good)
    assert summary["symbols_per_image"] == bundle.task("digits").symbols_per_image
    assert summary["stream_error"] is None and summary["latency_ms"]["p99"] >= summary["latency_ms"]["p50"]
    # one FrameBatch per encoded batch and one ResultBatch back (the window holds more than a batch)
    batches = -(-(n_good + 1) // tx.batch_size)  # the broken file is read in one of them
    assert summary["frames_per_uplink_message"] == pytest.approx(n_good / batches)
    assert 1 <= summary["results_per_downlink_message"] <= tx.batch_size


def test_encoder_snr_follows_the_relay_feedback(services, bundle, sample_dir, tmp_path):
    cfg = services.cfg
    tx = cfg.transmitter("edge-near")          # link: 20 dB
    tx.initial_snr_estimate_db = 0.0          # the device starts with a wrong guess
    tx.batch_size = tx.max_in_flight = 4
    client = EdgeClient(cfg, tx, bundle=bundle)
    summary = client.run(sample_dir, tmp_path / "out")
    assert summary["answered"] == summary["images"] == 24
    assert client.snr_estimate_db == 20.0 and summary["link_snr_db"] == 20.0
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    used = [r["encoder_snr_db"] for r in sorted(records, key=lambda r: r["frame_id"])]
    # batch 1 used the guess; a window of one batch is stop-and-wait, so batch 2 is read and
    # encoded only after batch 1's results (and their feedback) came back: every later batch used it
    assert used[:4] == [0.0] * 4 and used[4:] == [20.0] * 20


def test_run_inside_a_running_event_loop_streams_on_a_thread_of_its_own(services, bundle, sample_dir, tmp_path):
    # a notebook or an async application calls run() with a loop running in its thread: the
    # grpc.aio stream cannot asyncio.run() there, so it runs on a thread of its own
    import asyncio

    async def caller():
        return EdgeClient(services.cfg, services.cfg.transmitter("edge-near"), bundle=bundle).run(sample_dir,
                                                                                                   tmp_path / "o")

    summary = asyncio.run(caller())
    assert summary["stream_error"] is None and summary["answered"] == summary["images"] == 24


def test_unreachable_relay_is_a_stream_error_not_a_hang(make_config, bundle, sample_dir):
    cfg, _ = make_config()
    client = EdgeClient(cfg, cfg.transmitter("edge-near"), bundle=bundle, relay_addr="127.0.0.1:1",
                        connect_timeout_s=0.5)
    summary = client.run(sample_dir)
    assert "not reachable" in summary["stream_error"]
    assert summary["answered"] == 0 and summary["errors"] == summary["images"] == 24


def test_cli_rejects_an_unknown_transmitter_and_a_missing_folder(make_config, tmp_path, capsys):
    _, path = make_config()
    assert edge_cli(["--config", str(path), "--id", "nobody", "--out", str(tmp_path / "o")]) == 2
    assert "nobody" in capsys.readouterr().err
    assert edge_cli(["--config", str(path), "--id", "edge-near", "--out", str(tmp_path / "o"),
                     "--images", str(tmp_path / "missing")]) == 2
    assert "image folder not found" in capsys.readouterr().err


def test_start_gate_writes_the_ready_file_then_waits_and_times_out_without_streaming(make_config, tmp_path, capsys):
    import threading
    import time

    from rkdsc.edge.client import wait_for_start

    _, path = make_config()
    ready, gate = tmp_path / "ready.json", tmp_path / "start"
    rc = edge_cli(["--config", str(path), "--id", "edge-near", "--out", str(tmp_path / "o"), "--relay", "127.0.0.1:1",
                   "--ready-file", str(ready), "--start-file", str(gate), "--start-timeout", "0.2"])
    assert rc == 2 and "did not appear within 0.2 s" in capsys.readouterr().err
    assert json.loads(ready.read_text())["id"] == "edge-near"
    assert not (tmp_path / "o" / "results.jsonl").exists()  # nothing streamed before the gate
    # the gate opens while waiting: wait_for_start returns True soon after
    opener = threading.Timer(0.1, gate.write_text, args=("go\n",))
    opener.start()
    t0 = time.monotonic()
    assert wait_for_start(None, str(gate), "edge-near", 5.0) is True
    assert 0.05 < time.monotonic() - t0 < 2.0
    opener.join()
