"""`rkdsc edge` as a real process against a real relay + server: its exit status reflects failed
images (max_failed_fraction), stderr counts them by error code, an empty image folder is a clear
failure, and results.jsonl is written as results come (a killed edge leaves every answered
image on disk)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rkdsc.common.bundle import ServerModel

RKDSC = str(Path(sys.executable).with_name("rkdsc"))


class BlockAfter:
    """The real ServerModel; once `n` frames were decoded, decode waits for `release`."""

    def __init__(self, model, n: int):
        self.model, self.spec, self.n = model, model.spec, n
        self.count = 0
        self.release = threading.Event()

    def decode(self, x, snr_db):
        if self.count >= self.n:
            self.release.wait(60)
        self.count += len(x)
        return self.model.decode(x, snr_db)


class Stack:
    """Server (with the given models) + relay in this process, real gRPC on free ports."""

    def __init__(self, cfg, bundle, models=None):
        from rkdsc.basestation import relay
        from rkdsc.common.experiments.demo import wait_serving
        from rkdsc.server.service import create_server

        self.server, port = create_server(cfg, bundle=bundle, models=models)
        self.server.start()
        cfg.basestation.server_addr = f"127.0.0.1:{port}"
        self.relay, rport = relay.create_server(cfg)
        self.relay.start()
        self.relay_addr = f"127.0.0.1:{rport}"
        wait_serving(self.relay_addr, timeout_s=30)

    def close(self):
        self.relay.stop(2.0)
        self.relay.upstream.close()
        self.server.stop(2.0)


@pytest.fixture
def stack(make_config, bundle):
    stacks = []

    def start(models=None, **config):
        cfg, path = make_config(**config)
        s = Stack(cfg, bundle, models)
        stacks.append(s)
        return s, path

    yield start
    for s in stacks:
        s.close()


def _edge(path: Path, out: Path, relay: str, *extra: str, tx: str = "edge-near") -> subprocess.CompletedProcess:
    return subprocess.run([RKDSC, "edge", "--config", str(path), "--id", tx, "--out", str(out), "--relay", relay,
                           "--no-progress", *extra], capture_output=True, text=True, timeout=180)


class Counted:
    """Every third frame (in decode order) of the real model fails: 8 of 24, whatever the batching."""

    def __init__(self, model):
        self.model, self.spec = model, model.spec
        self.count = 0
        self.lock = threading.Lock()

    def decode(self, x, snr_db):
        import numpy as np

        rows = []
        for i in range(len(x)):
            with self.lock:
                n, self.count = self.count, self.count + 1
            if n % 3 == 0:
                rows.append(None)
            else:
                rows.append(self.model.decode(x[i:i + 1], snr_db[i:i + 1])[0])
        if any(r is None for r in rows):  # a batch with a failing frame fails as a whole: decode
            raise RuntimeError("model exploded")  # frames one at a time (max_batch = 1) in the test
        return np.stack(rows)


def test_failed_frames_make_the_exit_status_1_with_counts_by_error_code(stack, bundle, tmp_path):
    s, path = stack(models={"digits": Counted(ServerModel(bundle, "digits"))}, server={"max_batch": 1})
    out = tmp_path / "out"
    proc = _edge(path, out, s.relay_addr)
    assert proc.returncode == 1, proc.stderr
    assert "edge-near: 8 of 24 images failed: INTERNAL 8" in proc.stderr
    assert "rkdsc edge: error: edge-near: 8 of 24 images failed (33.3%, more than max_failed_fraction 0): " \
           "INTERNAL 8" in proc.stderr
    assert "INTERNAL: decode failed: model exploded" in proc.stderr and "... 3 more; every record:" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["answered"], summary["errors"], summary["errors_by_code"]) == (16, 8, {"INTERNAL": 8})
    assert summary["ok"] is False and summary["stream_error"] is None
    assert summary["failure"].startswith("8 of 24 images failed")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["error_code"] or "" for r in records) == [""] * 16 + ["INTERNAL"] * 8
    # the threshold is the user's: a flag ...
    proc = _edge(path, tmp_path / "o2", s.relay_addr, "--max-failed-fraction", "0.5")
    assert proc.returncode == 0, proc.stderr
    assert "8 of 24 images failed (within max_failed_fraction 0.5): INTERNAL 8" in proc.stderr
    assert json.loads((tmp_path / "o2" / "summary.json").read_text())["ok"] is True


def test_max_failed_fraction_comes_from_the_topology(stack, bundle, tmp_path):
    s, path = stack(models={"digits": Counted(ServerModel(bundle, "digits"))}, server={"max_batch": 1},
                    transmitters=[{"id": "lenient", "max_failed_fraction": 0.4},
                                  {"id": "strict", "max_failed_fraction": 0.2}])
    assert _edge(path, tmp_path / "a", s.relay_addr, tx="lenient").returncode == 0
    proc = _edge(path, tmp_path / "b", s.relay_addr, tx="strict")
    assert proc.returncode == 1 and "more than max_failed_fraction 0.2" in proc.stderr, proc.stderr


def test_an_empty_image_folder_is_a_clear_failure_naming_the_folder(make_config, tmp_path):
    _, path = make_config()
    empty = tmp_path / "empty"
    (empty / "3").mkdir(parents=True)  # a class folder without files is still no image
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = _edge(path, out, "127.0.0.1:1", "--images", str(empty))  # never connects: nothing to send
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - t0 < 60
    assert f"rkdsc edge: error: edge-near: no images in {empty}: nothing was sent" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["images"], summary["ok"]) == (0, False) and str(empty) in summary["failure"]
    assert (out / "results.jsonl").read_text() == ""


def test_results_are_on_disk_as_they_come_so_a_killed_edge_loses_no_answer(stack, bundle, tmp_path):
    model = BlockAfter(ServerModel(bundle, "digits"), n=8)
    s, path = stack(models={"digits": model})
    out = tmp_path / "out"
    proc = subprocess.Popen([RKDSC, "edge", "--config", str(path), "--id", "edge-near", "--out", str(out),
                             "--relay", s.relay_addr, "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        lines: list[str] = []
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()[1]  # still waiting on the blocked frames
            results = out / "results.jsonl"
            lines = results.read_text().splitlines() if results.exists() else []
            if len(lines) >= 8:
                break
            time.sleep(0.1)
        assert len(lines) >= 8, lines
        proc.send_signal(signal.SIGKILL)  # a crash: no cleanup, no final rewrite
        proc.wait(30)
    finally:
        model.release.set()
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) >= 8 and all(r["error"] is None and r["predicted_class"] is not None for r in records)
    assert len({r["file"] for r in records}) == len(records)
    assert not (out / "summary.json").exists()


def test_a_bomb_and_a_fifo_in_the_folder_cost_only_themselves(stack, sample_dir, tmp_path):
    """The edge as a process: a decompression-bomb header and a named pipe next to good images.
    No traceback, no hang; every good image answered and on disk; the bomb is a failed image
    naming its claimed size (exit 1 under the default threshold); the FIFO is reported, never opened."""
    import os
    import shutil

    from tests.common.data.test_image_reading import bomb_png

    folder = tmp_path / "images"
    shutil.copytree(sample_dir, folder)
    first_class = sorted(p.name for p in folder.iterdir())[0]
    bomb_png(folder / first_class / "bomb.png", 30000, 30000)
    os.mkfifo(folder / first_class / "pipe.png")
    good = sum(1 for p in sample_dir.rglob("*") if p.is_file())
    s, path = stack(transmitters=[{"id": "edge-near", "images": str(folder), "batch_size": 4}])
    out = tmp_path / "out"
    proc = _edge(path, out, s.relay_addr)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "named pipe" in proc.stderr and "pipe.png" in proc.stderr
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    answered = [r for r in records if r["error"] is None]
    assert len(answered) == good
    (bomb,) = [r for r in records if r["file"].endswith("bomb.png")]
    assert bomb["error_code"] == "UNREADABLE" and "30000 x 30000" in bomb["error"]
    (pipe,) = [r for r in records if r["file"].endswith("pipe.png")]
    assert pipe["error_code"] == "SKIPPED" and "named pipe" in pipe["error"], pipe
