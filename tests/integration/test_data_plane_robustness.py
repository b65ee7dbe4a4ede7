"""The data plane under abuse, over real localhost gRPC: idle streams cost nothing and block
nobody, a stream beyond the limit is refused naming it, a bad frame ends only its own stream
after the results of the frames before it, frame-id memory stays bounded, huge client strings
get short errors, the relay's health follows the edge server, and SIGTERM of the relay
delivers the results of the frames in flight."""
from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rkdsc.common.service import HealthProbe
from rkdsc.common.wire import encode_tensor
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
from tests.conftest import Services, free_port, make_frame

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _wait(cond, timeout_s: float, what: str, step: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(step)


class _Idle:
    """n Transmit (or Decode) streams that send nothing until closed."""

    def __init__(self, start_call, n: int):
        self.release = threading.Event()
        self.errors: list[grpc.RpcError] = []
        self.calls = []

        def requests():
            self.release.wait(60)
            return
            yield  # noqa: unreachable - makes this a generator

        for _ in range(n):
            call = start_call(requests(), timeout=60)
            self.calls.append(call)
            threading.Thread(target=self._drain, args=(call,), daemon=True).start()

    def _drain(self, call) -> None:
        try:
            for _ in call:
                pass
        except grpc.RpcError as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self.release.set()
        for call in self.calls:
            call.cancel()


def _health(channel, service: str = "", timeout: float = 2.0) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                     timeout=timeout).status


def test_sixty_idle_streams_block_neither_a_good_request_nor_health(services, bundle):
    k = bundle.task("digits").symbols_per_image
    idle = _Idle(services.relay_stub.Transmit, 60)
    try:
        _wait(lambda: services.relay.servicer.slots.open == 60, 30, "60 open Transmit streams")
        assert services.server.servicer.slots.open == 0  # no upstream stream before a first frame
        t0 = time.monotonic()
        assert _health(services.relay_channel) == health_pb2.HealthCheckResponse.SERVING
        assert _health(services.server_channel) == health_pb2.HealthCheckResponse.SERVING
        results = list(services.relay_stub.Transmit(iter([make_frame(k, frame_id=1)]), timeout=10))
        assert [r.frame_id for r in results] == [1] and results[0].error.code == 0
        assert services.relay_stub.TransmitOne(make_frame(k, frame_id=2), timeout=10).error.code == 0
        elapsed = time.monotonic() - t0
        assert elapsed < 2.0, f"health + a stream + a unary call took {elapsed:.2f} s with 60 idle streams"
        assert not idle.errors
    finally:
        idle.close()


def test_a_stream_beyond_the_limit_gets_resource_exhausted_naming_it(make_config, bundle):
    cfg, _ = make_config(basestation={"max_streams": 3}, server={"max_streams": 2})
    svc = Services(cfg, bundle)
    idle = server_idle = None
    try:
        idle = _Idle(svc.relay_stub.Transmit, 3)
        _wait(lambda: svc.relay.servicer.slots.open == 3, 20, "3 open Transmit streams")
        with pytest.raises(grpc.RpcError) as err:
            list(svc.relay_stub.Transmit(iter([]), timeout=10))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "3 concurrent streams" in err.value.details() and "basestation.max_streams" in err.value.details()
        # unary calls and health still have their threads
        assert _health(svc.relay_channel) == health_pb2.HealthCheckResponse.SERVING
        assert svc.relay_stub.GetLink(pb.LinkRequest(transmitter_id="edge-near"), timeout=5).transmitter_id
        # the server's own limit
        server_idle = _Idle(svc.server_stub.Decode, 2)
        _wait(lambda: svc.server.servicer.slots.open == 2, 20, "2 open Decode streams")
        with pytest.raises(grpc.RpcError) as err:
            list(svc.server_stub.Decode(iter([]), timeout=10))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "server.max_streams" in err.value.details()
        assert _health(svc.server_channel) == health_pb2.HealthCheckResponse.SERVING
        # a slot that is given back is taken again
        idle.close()
        _wait(lambda: svc.relay.servicer.slots.open == 0, 20, "the relay's slots to be released")
        k = bundle.task("digits").symbols_per_image
        server_idle.close()
        _wait(lambda: svc.server.servicer.slots.open == 0, 20, "the server's slots to be released")
        assert [r.frame_id for r in svc.relay_stub.Transmit(iter([make_frame(k, frame_id=1)]), timeout=10)] == [1]
    finally:
        for i in (idle, server_idle):
            if i is not None:
                i.close()
        svc.close()


def _nan_frame(k: int, frame_id: int) -> pb.Frame:
    frame = make_frame(k, frame_id=frame_id)
    z = np.frombuffer(frame.symbols.data, np.complex64).copy()
    z[0] = np.nan
    data, dtype, shape = encode_tensor(z)
    frame.symbols.CopyFrom(pb.Tensor(data=data, dtype=dtype, shape=shape))
    return frame


def test_five_good_frames_then_a_bad_one_give_five_results_then_the_error(services, bundle):
    k = bundle.task("digits").symbols_per_image
    frames = [make_frame(k, frame_id=i, seed=i) for i in range(5)] + [_nan_frame(k, 5), make_frame(k, frame_id=6)]
    results = []
    with pytest.raises(grpc.RpcError) as err:
        for res in services.relay_stub.Transmit(iter(frames), timeout=20):
            results.append(res)
    assert sorted(r.frame_id for r in results) == [0, 1, 2, 3, 4]
    assert all(r.error.code == 0 for r in results)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("symbols")


def _channel_frame(k: int, frame_id: int, received: np.ndarray | None = None) -> pb.ChannelFrame:
    y = received if received is not None else (np.ones((1, k), np.complex64) * 0.5)
    data, dtype, shape = encode_tensor(y.astype(np.complex64))
    return pb.ChannelFrame(transmitter_id="edge-near", task="digits", frame_id=frame_id,
                           received=pb.Tensor(data=data, dtype=dtype, shape=shape), snr_db=10.0, noise_var=0.1,
                           fading="awgn", equalized=True)


def test_the_servers_decode_stream_delivers_the_results_before_a_bad_frame(services, bundle):
    k = bundle.task("digits").symbols_per_image
    bad = np.ones((1, k), np.complex64)
    bad[0, 0] = np.inf
    frames = [_channel_frame(k, 100 + i) for i in range(5)] + [_channel_frame(k, 105, bad), _channel_frame(k, 106)]
    results = []
    with pytest.raises(grpc.RpcError) as err:
        for res in services.server_stub.Decode(iter(frames), timeout=20):
            results.append(res)
    assert sorted(r.frame_id for r in results) == [100, 101, 102, 103, 104]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("received")


def test_frame_id_memory_stays_bounded_and_an_immediate_duplicate_is_refused(services, bundle):
    k = bundle.task("digits").symbols_per_image
    n = 1500  # more than the window (1024 ids per transmitter)
    base = 10_000_000
    frames = (make_frame(k, frame_id=base + i, seed=i % 7) for i in range(n))
    results = list(services.relay_stub.Transmit(frames, timeout=120))
    assert len(results) == n and all(r.error.code == 0 for r in results)
    relay_ids, server_ids = services.relay.servicer.frame_ids, services.server.servicer.frame_ids
    assert relay_ids.size() <= relay_ids.window and server_ids.size() <= server_ids.window
    for dup in (base + n - 1, base):  # the last id again, and one older than the window
        with pytest.raises(grpc.RpcError) as err:
            services.relay_stub.TransmitOne(make_frame(k, frame_id=dup), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("frame_id")
    assert services.relay_stub.TransmitOne(make_frame(k, frame_id=base + n), timeout=10).error.code == 0


def test_huge_client_strings_get_short_invalid_argument_and_short_log_lines(services, bundle, caplog):
    caplog.set_level(logging.DEBUG)
    k = bundle.task("digits").symbols_per_image
    stub = services.relay_stub
    huge_id = make_frame(k, frame_id=1)
    huge_id.transmitter_id = "m" * (1 << 20)
    for call in (lambda f: stub.TransmitOne(f, timeout=10), lambda f: list(stub.Transmit(iter([f]), timeout=10))):
        with pytest.raises(grpc.RpcError) as err:
            call(huge_id)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("transmitter_id: 1048576 characters") and len(err.value.details()) < 300
    with pytest.raises(grpc.RpcError) as err:
        stub.GetLink(pb.LinkRequest(transmitter_id="g" * (1 << 20)), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(err.value.details()) < 300
    # a frame padded to nearly 4 MiB through `file` is refused by the relay (not accepted, then refused upstream)
    padded = make_frame(k, frame_id=2)
    padded.file = "p" * (4 * 1024 * 1024 - 4096)
    with pytest.raises(grpc.RpcError) as err:
        stub.TransmitOne(padded, timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("file: ")
    # the server: a 10 kB transmitter id or task gets its status delivered, short
    for field in ("transmitter_id", "task"):
        cf = _channel_frame(k, 7)
        setattr(cf, field, "s" * 10_000)
        with pytest.raises(grpc.RpcError) as err:
            services.server_stub.DecodeOne(cf, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)
        assert len(err.value.details()) < 300
    longest = max((len(r.getMessage()) for r in caplog.records), default=0)
    assert longest < 2000, f"a log line of {longest} characters"
    assert stub.TransmitOne(make_frame(k, frame_id=3), timeout=10).error.code == 0  # still serving


def test_relay_health_follows_the_edge_server(make_config, bundle):
    from rkdsc.basestation import relay
    from rkdsc.server.service import create_server

    port = free_port()
    cfg, _ = make_config(server={"port": port}, basestation={"server_addr": f"127.0.0.1:{port}"})
    server, _ = create_server(cfg, bundle=bundle)
    server.start()
    handle, relay_port = relay.create_server(cfg)
    handle.start()
    probe = HealthProbe(f"127.0.0.1:{relay_port}")
    chan = grpc.insecure_channel(f"127.0.0.1:{relay_port}")
    k = bundle.task("digits").symbols_per_image
    try:
        _wait(lambda: probe.status() == "SERVING", 20, "relay SERVING with the server up")
        server.stop(0.5)
        t0 = time.monotonic()
        _wait(lambda: probe.status() == "NOT_SERVING", 10, "relay NOT_SERVING after the server stopped")
        down_s = time.monotonic() - t0
        cfg2, _ = make_config(server={"port": port}, name="again.toml")
        server = create_server(cfg2, bundle=bundle)[0]
        server.start()
        t0 = time.monotonic()
        _wait(lambda: probe.status() == "SERVING", 15, "relay SERVING again with a new server on the port")
        up_s = time.monotonic() - t0
        res = pb_grpc.RelayStub(chan).TransmitOne(make_frame(k, frame_id=1), timeout=10)
        assert res.error.code == 0
        print(f"relay NOT_SERVING {down_s:.2f} s after the server stopped, SERVING {up_s:.2f} s after it returned")
    finally:
        chan.close()
        probe.close()
        handle.stop(1.0)
        handle.upstream.close()
        server.stop(0.5)


class _SlowModel:
    """The real ServerModel, each decode batch taking `delay_s` (frames stay in flight)."""

    def __init__(self, model, delay_s: float):
        self.model, self.spec, self.delay_s = model, model.spec, delay_s
        self.started = threading.Event()

    def decode(self, x, snr_db):
        self.started.set()
        time.sleep(self.delay_s)
        return self.model.decode(x, snr_db)


def test_sigterm_of_the_relay_delivers_the_results_of_frames_in_flight(make_config, bundle, tmp_path):
    from rkdsc.common.bundle import ServerModel
    from rkdsc.server.service import create_server

    cfg, _ = make_config(server={"max_batch": 16, "max_wait_ms": 50.0})
    slow = _SlowModel(ServerModel(bundle, "digits"), delay_s=1.0)
    server, server_port = create_server(cfg, bundle=bundle, models={"digits": slow})
    server.start()
    _, path = make_config(basestation={"server_addr": f"127.0.0.1:{server_port}"}, name="relay.toml")
    ready = tmp_path / "relay-ready.json"
    proc = subprocess.Popen([sys.executable, "-m", "rkdsc.basestation", "--config", str(path), "--ready-file",
                             str(ready)], cwd=REPO, stderr=subprocess.PIPE, text=True)
    chan = None
    try:
        _wait(lambda: ready.exists() or proc.poll() is not None, 60, "the relay's ready file")
        assert proc.poll() is None, proc.communicate()[1]
        addr = f"127.0.0.1:{json.loads(ready.read_text())['port']}"
        with HealthProbe(addr) as probe:
            _wait(lambda: probe.status() == "SERVING", 30, "relay SERVING")
        chan = grpc.insecure_channel(addr)
        k = bundle.task("digits").symbols_per_image
        hold = threading.Event()

        def frames():
            for i in range(8):
                yield make_frame(k, frame_id=i, seed=i)
            hold.wait(30)  # the edge keeps its uplink open

        results, box = [], {}

        def consume():
            try:
                for res in pb_grpc.RelayStub(chan).Transmit(frames(), timeout=60):
                    results.append(res)
            except grpc.RpcError as exc:
                box["err"] = exc

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        assert slow.started.wait(20), "the server never started decoding"
        _wait(lambda: server.servicer.pending == 8, 20, "all 8 frames at the server")
        assert not results  # the frames are in flight (each decode batch takes 1 s)
        proc.send_signal(signal.SIGTERM)
        t.join(30)
        hold.set()
        assert not t.is_alive()
        assert sorted(r.frame_id for r in results) == list(range(8))
        assert all(r.error.code == 0 for r in results)
        err = box.get("err")
        assert err is not None and err.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in err.details()
        _, log_text = proc.communicate(timeout=30)
        assert proc.returncode == 0, log_text
    finally:
        if chan is not None:
            chan.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        server.stop(1.0)
