"""EdgeServer over real localhost gRPC: decoding, validation, health, reflection, queue
bounds, graceful drain, and refusing a bundle that fails verification."""
from __future__ import annotations

import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rkdsc.common import channel
from rkdsc.common.bundle import ServerModel, topk
from rkdsc.common.wire import encode_tensor
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
from rkdsc.server.service import cli as server_cli
from rkdsc.server.service import create_server
from tests.conftest import metric


def channel_frame(k: int, frame_id: int = 0, transmitter_id: str = "edge-near", task: str = "digits",
                  snr_db: float = 7.0, seed: int = 0, label: int | None = 4, **overrides) -> pb.ChannelFrame:
    rng = np.random.default_rng(seed)
    y = (rng.standard_normal((1, k)) + 1j * rng.standard_normal((1, k))).astype(np.complex64)
    d, dt, sh = encode_tensor(y)
    hd, hdt, hsh = encode_tensor(np.ones((1, 1), np.complex64))
    cf = pb.ChannelFrame(transmitter_id=transmitter_id, task=task, frame_id=frame_id,
                         received=pb.Tensor(data=d, dtype=dt, shape=sh), h=pb.Tensor(data=hd, dtype=hdt, shape=hsh),
                         noise_var=10 ** (-snr_db / 10), snr_db=snr_db, fading="awgn", equalized=True,
                         has_label=label is not None, label=-1 if label is None else label)
    for key, value in overrides.items():
        if isinstance(value, pb.Tensor):
            getattr(cf, key).CopyFrom(value)
        else:
            setattr(cf, key, value)
    return cf


@pytest.fixture
def server(make_config, bundle):
    cfg, _ = make_config()
    handle, port = create_server(cfg, bundle=bundle)
    handle.start()
    chan = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield handle, pb_grpc.EdgeServerStub(chan), chan
    chan.close()
    handle.stop(2.0)


def test_get_info_health_and_reflection(server, bundle):
    handle, stub, chan = server
    info = stub.GetInfo(pb.InfoRequest(), timeout=10)
    spec = bundle.task("digits")
    assert [(t.name, t.num_classes, t.symbols_per_image, t.compact_dim) for t in info.tasks] == \
        [("digits", spec.num_classes, spec.symbols_per_image, spec.compact_dim)]
    health = health_pb2_grpc.HealthStub(chan)
    for name in ("", "rkdsc.v1.EdgeServer"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    services = set(ProtoReflectionDescriptorDatabase(chan).get_services())
    assert {"rkdsc.v1.EdgeServer", "grpc.health.v1.Health"} <= services


def test_decode_one_equals_the_server_model(server, bundle):
    handle, stub, _ = server
    spec = bundle.task("digits")
    cf = channel_frame(spec.symbols_per_image, snr_db=7.0, seed=5)
    res = stub.DecodeOne(cf, timeout=10)
    y = np.frombuffer(cf.received.data, np.complex64).reshape(1, -1)
    logits = ServerModel(bundle, "digits").decode(channel.complex_to_real(y, spec.compact_dim), np.float32([7.0]))
    idx, probs = topk(logits[0], 3)
    assert res.error.code == 0
    assert [c.index for c in res.top_k] == idx.tolist()
    assert [c.score for c in res.top_k] == pytest.approx(probs.tolist(), abs=1e-5)
    assert res.predicted_name == spec.class_names[idx[0]] and res.decoder_snr_db == 7.0
    assert res.batch_size >= 1 and res.compute_ms > 0


def _bad_frames(k: int):
    nan = np.zeros((1, k), np.complex64)
    nan[0, 1] = np.nan
    big = np.zeros((1, 4 * k), np.complex64)
    T = lambda a: pb.Tensor(**dict(zip(("data", "dtype", "shape"), encode_tensor(a))))  # noqa: E731
    return [
        ("received.dtype", grpc.StatusCode.INVALID_ARGUMENT,
         {"received": T(np.zeros((1, 2 * k), np.float32))}),
        ("received.shape", grpc.StatusCode.INVALID_ARGUMENT, {"received": T(np.zeros((k, 1), np.complex64))}),
        ("received", grpc.StatusCode.INVALID_ARGUMENT,  # byte length does not match the shape
         {"received": pb.Tensor(data=b"\0" * (8 * k - 8), dtype="complex64", shape=[1, k])}),
        ("received", grpc.StatusCode.INVALID_ARGUMENT, {"received": T(nan)}),
        ("received.data", grpc.StatusCode.RESOURCE_EXHAUSTED, {"received": T(big)}),
        ("task", grpc.StatusCode.INVALID_ARGUMENT, {"task": "imagenet"}),
        ("transmitter_id", grpc.StatusCode.INVALID_ARGUMENT, {"transmitter_id": "mallory"}),
        ("snr_db", grpc.StatusCode.INVALID_ARGUMENT, {"snr_db": float("nan")}),
        ("label", grpc.StatusCode.INVALID_ARGUMENT, {"label": 99}),
        ("h.shape", grpc.StatusCode.INVALID_ARGUMENT, {"h": T(np.ones((2, 1), np.complex64))}),
    ]


def test_every_bad_frame_is_refused_naming_the_field_and_the_server_keeps_serving(server, bundle):
    handle, stub, _ = server
    k = bundle.task("digits").symbols_per_image
    for i, (field, code, overrides) in enumerate(_bad_frames(k)):
        with pytest.raises(grpc.RpcError) as err:
            stub.DecodeOne(channel_frame(k, frame_id=100 + i, **overrides), timeout=10)
        assert err.value.code() == code, (field, err.value.details())
        assert err.value.details().startswith(field), (field, err.value.details())
        assert stub.DecodeOne(channel_frame(k, frame_id=1000 + i), timeout=10).error.code == 0  # still serving
    # a frame id seen twice for a transmitter
    with pytest.raises(grpc.RpcError) as err:
        stub.DecodeOne(channel_frame(k, frame_id=1000), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "frame_id" in err.value.details()
    # ...but the same id from another transmitter is fine
    assert stub.DecodeOne(channel_frame(k, frame_id=1000, transmitter_id="edge-far"), timeout=10).error.code == 0


def test_a_bad_frame_ends_its_stream_only(server, bundle):
    handle, stub, _ = server
    k = bundle.task("digits").symbols_per_image
    frames = [channel_frame(k, frame_id=i) for i in range(3)] + [channel_frame(k, frame_id=3, task="nope")]
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Decode(iter(frames), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("task")
    results = list(stub.Decode(iter([channel_frame(k, frame_id=10 + i) for i in range(5)]), timeout=10))
    assert sorted(r.frame_id for r in results) == list(range(10, 15))
    assert all(r.error.code == 0 for r in results)


class HeldModel:
    """Wraps the real ServerModel; decode blocks until `release` is set."""

    def __init__(self, model):
        self.model, self.spec = model, model.spec
        self.release, self.started = threading.Event(), threading.Event()

    def decode(self, x, snr):
        self.started.set()
        assert self.release.wait(20)
        return self.model.decode(x, snr)


@pytest.mark.parametrize("queue_wait_ms", [0.0, None])
def test_a_full_queue_refuses_or_holds_the_frames_that_do_not_fit(make_config, bundle, queue_wait_ms):
    """Frame 0 is being decoded (held), 1 and 2 fill the queue (queue_size 2), 3 and 4 find it full.
    queue_wait_ms = 0: they are answered RESOURCE_EXHAUSTED at once (load shedding), per frame.
    The default (30 s): the stream's reader waits for room instead, and once the held decode ends every
    frame is answered; a second stream afterwards is served as usual."""
    server = {"queue_size": 2, "max_batch": 1, "max_wait_ms": 0.0}
    cfg, _ = make_config(server=server if queue_wait_ms is None else {**server, "queue_wait_ms": queue_wait_ms})
    shedding = queue_wait_ms == 0.0
    assert cfg.server.queue_wait_ms == (0.0 if shedding else 30_000.0)
    held = HeldModel(ServerModel(bundle, "digits"))
    handle, port = create_server(cfg, bundle=bundle, models={"digits": held})
    handle.start()
    k = held.spec.symbols_per_image
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
            stub = pb_grpc.EdgeServerStub(chan)

            def requests():
                yield channel_frame(k, frame_id=0)
                assert held.started.wait(10)          # frame 0 is being decoded (held)
                for i in range(1, 5):                 # 1, 2 fill the queue; 3, 4 overflow (or wait)
                    yield channel_frame(k, frame_id=i)
                time.sleep(0.3)
                held.release.set()

            results = {r.frame_id: r for r in stub.Decode(requests(), timeout=20)}
            other = list(stub.Decode(iter([channel_frame(k, frame_id=100 + i) for i in range(3)]), timeout=20))
        assert sorted(results) == [0, 1, 2, 3, 4] and [r.error.code for r in other] == [0, 0, 0]
        assert [results[i].error.code for i in range(3)] == [0, 0, 0]
        for i in (3, 4):
            if shedding:
                assert results[i].error.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
                assert "queue" in results[i].error.message
            else:
                assert results[i].error.code == 0
        from prometheus_client import generate_latest

        from rkdsc.common.metrics import parse_metrics
        m = parse_metrics(generate_latest(handle.metrics.registry).decode())
        rejected = 2 if shedding else 0
        assert metric(m, "rkdsc_frames_total", transmitter="edge-near", task="digits", outcome="rejected") == rejected
        assert metric(m, "rkdsc_frames_total", transmitter="edge-near", task="digits", outcome="ok") == 8 - rejected
    finally:
        held.release.set()
        handle.stop(2.0)


def test_graceful_shutdown_drains_in_flight_frames(make_config, bundle):
    cfg, _ = make_config(server={"max_batch": 64, "max_wait_ms": 50.0})
    held = HeldModel(ServerModel(bundle, "digits"))
    handle, port = create_server(cfg, bundle=bundle, models={"digits": held})
    handle.start()
    k = held.spec.symbols_per_image
    chan = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.EdgeServerStub(chan)
    health = health_pb2_grpc.HealthStub(chan)
    try:
        futures = [stub.DecodeOne.future(channel_frame(k, frame_id=i), timeout=30) for i in range(4)]
        assert held.started.wait(10)
        deadline = time.monotonic() + 20
        while handle.servicer.pending < 4:  # all four are in the server (queued or being decoded)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stopper = threading.Thread(target=handle.stop, args=(20.0,))
        stopper.start()
        deadline = time.monotonic() + 10
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != \
                health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with pytest.raises(grpc.RpcError) as err:  # new frames are refused while draining
            stub.DecodeOne(channel_frame(k, frame_id=99), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        held.release.set()
        results = [f.result() for f in futures]   # every in-flight frame is answered
        assert [r.error.code for r in results] == [0, 0, 0, 0]
        stopper.join(20)
        assert not stopper.is_alive()
        with pytest.raises(grpc.RpcError) as err:
            stub.DecodeOne(channel_frame(k, frame_id=100), timeout=2)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        held.release.set()
        chan.close()
        handle.stop(1.0)


def test_server_refuses_to_start_on_a_bundle_that_fails_verification(make_config, bundle_dir, tmp_path, capsys):
    bad = tmp_path / "bad-bundle"
    shutil.copytree(bundle_dir, bad)
    victim = next(bad.glob("*.server.onnx"))
    data = bytearray(victim.read_bytes())
    data[-5] ^= 0xFF
    victim.write_bytes(data)
    _, path = make_config()
    rc = server_cli(["--config", str(path), "--bundle", str(bad)])
    err = capsys.readouterr().err
    assert rc != 0
    assert victim.name in err and "sha256" in err


def test_create_server_on_taken_port_names_the_address(make_config, bundle):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg, _ = make_config(server={"port": port})
        with pytest.raises(OSError, match=f"cannot bind 127.0.0.1:{port}"):
            create_server(cfg, bundle=bundle)
    # the relay's half of this test is in tests/basestation, the skeleton's in tests/common/service


def test_the_server_process_logs_through_rkdsc_server(make_config, tmp_path):
    from tests.common.service.processes import run_service_until_ready

    _, path = make_config()
    err = run_service_until_ready("rkdsc.server", path, tmp_path / "ready.json")
    assert "rkdsc.server: server: serving on port" in err and "rkdsc.server: server: stopped" in err
    assert "rkdsc.relay" not in err
