"""The edge device never waits forever for a result: a relay that swallows a frame, or that
ends the stream (status OK) with frames unanswered, ends the run with the frames marked as
errors and ``stream_error`` set (exit status 1) instead of a hang."""
from __future__ import annotations

import json
import threading
import time
from concurrent import futures

import grpc
import pytest

from rkdsc.edge.client import EdgeClient
from rkdsc.edge.client import cli as edge_cli
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc

HANG_GUARD_S = 30.0  # a run that takes longer than this counts as the old hang


class _FakeRelay(pb_grpc.RelayServicer):
    """Answers every frame except the `drop`-th ones (0-based arrival order); with
    `end_after` it ends the stream (status OK) after that many frames."""

    def __init__(self, drop: set[int] = frozenset(), end_after: int | None = None):
        self.drop, self.end_after = set(drop), end_after
        self.received = 0

    def Transmit(self, request_iterator, context):
        for i, frame in enumerate(request_iterator):
            self.received += 1
            if self.end_after is not None and i >= self.end_after:
                return  # OK status with frames unanswered
            if i in self.drop:
                continue
            yield pb.Result(frame_id=frame.frame_id, transmitter_id=frame.transmitter_id, task=frame.task,
                            predicted_class=0, predicted_name="0", score=1.0,
                            top_k=[pb.ClassScore(index=0, name="0", score=1.0)])
        while self.drop and context.is_active():  # like a relay still waiting for the lost result
            time.sleep(0.05)

    def TransmitBatch(self, request_iterator, context):
        i = 0
        for fb in request_iterator:
            results = []
            for meta in fb.frames:
                self.received += 1
                if self.end_after is not None and i >= self.end_after:
                    if results:
                        yield pb.ResultBatch(results=results)
                    return  # OK status with frames unanswered
                if i not in self.drop:
                    results.append(pb.Result(frame_id=meta.frame_id, transmitter_id=fb.transmitter_id, task=fb.task,
                                             predicted_class=0, predicted_name="0", score=1.0,
                                             top_k=[pb.ClassScore(index=0, name="0", score=1.0)]))
                i += 1
            if results:
                yield pb.ResultBatch(results=results)
        while self.drop and context.is_active():
            time.sleep(0.05)


@pytest.fixture
def fake_relay():
    servers = []

    def start(servicer):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_RelayServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(0)


def _run_guarded(client: EdgeClient, images, out) -> dict:
    box: dict = {}
    t = threading.Thread(target=lambda: box.update(summary=client.run(images, out)), daemon=True)
    t.start()
    t.join(HANG_GUARD_S)
    assert not t.is_alive(), f"the edge client still waits after {HANG_GUARD_S} s (hang)"
    return box["summary"]


@pytest.mark.parametrize("batched", [True, False], ids=["TransmitBatch", "Transmit"])
def test_a_frame_without_a_result_is_an_error_after_the_result_timeout(make_config, bundle, sample_dir, fake_relay,
                                                                        tmp_path, batched):
    cfg, _ = make_config()
    tx = cfg.transmitter("edge-near")
    tx.batch_messages = batched
    tx.batch_size, tx.max_in_flight, tx.result_timeout_s = 4, 8, 1.0
    addr = fake_relay(_FakeRelay(drop={5}))
    t0 = time.monotonic()
    summary = _run_guarded(EdgeClient(cfg, tx, bundle=bundle, relay_addr=addr), sample_dir, tmp_path / "out")
    elapsed = time.monotonic() - t0
    assert elapsed < 15.0
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    timed_out = [r for r in records if (r["error"] or "").startswith("DEADLINE_EXCEEDED: no result within 1 s")]
    assert len(timed_out) >= 1
    assert summary["errors"] >= 1 and summary["answered"] + summary["errors"] == summary["images"] == 24
    assert summary["stream_error"].startswith("DEADLINE_EXCEEDED: no result within 1 s")
    assert all(r["error"] is None or "DEADLINE_EXCEEDED" in r["error"] or r["error"].startswith("no result")
               for r in records)


@pytest.mark.parametrize("batched", [True, False], ids=["TransmitBatch", "Transmit"])
def test_a_relay_that_ends_the_stream_early_is_a_stream_error_not_a_hang(make_config, bundle, sample_dir, fake_relay,
                                                                         tmp_path, batched):
    # the old client waited forever on its full window when the stream ended with status OK
    cfg, _ = make_config()
    tx = cfg.transmitter("edge-near")
    tx.batch_messages = batched
    tx.batch_size, tx.max_in_flight, tx.result_timeout_s = 4, 4, 60.0
    addr = fake_relay(_FakeRelay(end_after=6))
    summary = _run_guarded(EdgeClient(cfg, tx, bundle=bundle, relay_addr=addr), sample_dir, tmp_path / "out")
    assert summary["stream_error"] and "unanswered" in summary["stream_error"]
    assert summary["answered"] == 6 and summary["errors"] == 18


def test_cli_result_timeout_exits_non_zero_with_a_clear_message(make_config, sample_dir, fake_relay, tmp_path, capsys):
    _, path = make_config()
    addr = fake_relay(_FakeRelay(drop={0}))
    rc = edge_cli(["--config", str(path), "--id", "edge-near", "--out", str(tmp_path / "out"), "--relay", addr,
                   "--result-timeout", "0.5", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "DEADLINE_EXCEEDED: no result within 0.5 s" in err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["errors"] >= 1


def test_result_timeout_comes_from_the_topology(make_config):
    cfg, _ = make_config(transmitters=[{"id": "a", "result_timeout_s": 2.5}, {"id": "b"}])
    assert cfg.transmitter("a").result_timeout_s == 2.5 and cfg.transmitter("b").result_timeout_s == 60.0
