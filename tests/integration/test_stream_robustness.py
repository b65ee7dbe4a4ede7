"""Streams never stall silently: more concurrent edge streams than the services' old handler
pools are served at the same time, and a server stream that ends with frames unanswered
reaches the edge device as an error (not as a clean end it would wait on)."""
from __future__ import annotations

import queue
import threading
import time
from concurrent import futures

import grpc
import pytest

from rkdsc.basestation import relay
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
from tests.conftest import Services, make_frame

OLD_SERVER_POOL = 32  # handler threads of the edge server before they were sized from the topology


def test_more_concurrent_streams_than_the_old_pool_are_served_together(make_config, bundle):
    """Every stream stays open until all of them got their first result: with a pool smaller
    than the number of streams, the last streams would never be served (each stream holds a
    handler thread for its lifetime)."""
    n = OLD_SERVER_POOL + 4
    cfg, _ = make_config(transmitters=[{"id": f"tx-{i}", "seed": i} for i in range(n)],
                         server={"max_batch": 64, "max_wait_ms": 5.0})
    svc = Services(cfg, bundle)
    try:
        k = bundle.task("digits").symbols_per_image
        release = threading.Event()
        first: queue.Queue = queue.Queue()
        errors: list[str] = []

        def stream(i: int) -> None:
            def frames():
                yield make_frame(k, f"tx-{i}", frame_id=1, seed=i)
                release.wait(60)

            try:
                call = svc.relay_stub.Transmit(frames(), timeout=60)
                for res in call:
                    first.put(res.transmitter_id)
            except grpc.RpcError as exc:
                errors.append(f"tx-{i}: {exc.code().name}: {exc.details()}")

        threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        got, deadline = set(), time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline and not errors:
            try:
                got.add(first.get(timeout=0.5))
            except queue.Empty:
                pass
        release.set()
        for t in threads:
            t.join(30)
        assert not errors, errors[:3]
        assert len(got) == n, f"only {len(got)} of {n} concurrent streams got a result"
    finally:
        svc.close()


class _ServerThatDropsTheRest(pb_grpc.EdgeServerServicer):
    """Answers the first frame of a Decode stream, then ends the stream (status OK)."""

    def __init__(self, spec):
        self.spec = spec

    def GetInfo(self, request, context):
        return pb.ServerInfo(tasks=[pb.TaskInfo(name=self.spec.name, num_classes=self.spec.num_classes,
                                                class_names=[str(c) for c in self.spec.class_names],
                                                compact_dim=self.spec.compact_dim,
                                                symbols_per_image=self.spec.symbols_per_image)])

    def Decode(self, request_iterator, context):
        for i, cf in enumerate(request_iterator):
            if i == 0:
                yield pb.Result(frame_id=cf.frame_id, transmitter_id=cf.transmitter_id, task=cf.task,
                                predicted_class=0, predicted_name="0", score=1.0)
            else:
                return


@pytest.fixture
def relay_before_a_dropping_server(make_config, bundle):
    spec = bundle.task("digits")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_EdgeServerServicer_to_server(_ServerThatDropsTheRest(spec), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    cfg, _ = make_config(basestation={"server_addr": f"127.0.0.1:{port}"})
    handle, relay_port = relay.create_server(cfg)
    handle.start()
    chan = grpc.insecure_channel(f"127.0.0.1:{relay_port}")
    from rkdsc.common.experiments.demo import wait_serving

    wait_serving(f"127.0.0.1:{relay_port}", timeout_s=20)
    yield pb_grpc.RelayStub(chan), spec
    chan.close()
    handle.stop(1.0)
    handle.upstream.close()
    server.stop(0)


def test_a_server_stream_ending_with_frames_unanswered_is_an_error_at_the_edge(relay_before_a_dropping_server):
    stub, spec = relay_before_a_dropping_server
    k = spec.symbols_per_image
    done = threading.Event()

    def frames():
        for i in range(3):
            yield make_frame(k, "edge-near", frame_id=10 + i, seed=i)
        done.wait(20)  # keep the uplink open: the edge still waits for its results

    call = stub.Transmit(frames(), timeout=20)
    results = []
    with pytest.raises(grpc.RpcError) as info:
        for res in call:
            results.append(res)
    done.set()
    assert [r.frame_id for r in results] == [10]
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "unanswered" in info.value.details()
