"""Relay over real localhost gRPC (with a real edge server behind it): validation at the
boundary, link administration, link feedback, seeding, health and metrics."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from rkdsc.common.wire import encode_tensor
from rkdsc.v1 import emulator_pb2 as pb
from tests.conftest import Services, make_frame, metric


def T(a: np.ndarray) -> pb.Tensor:
    data, dtype, shape = encode_tensor(a)
    return pb.Tensor(data=data, dtype=dtype, shape=shape)


def test_relay_health_and_reflection(services):
    health = health_pb2_grpc.HealthStub(services.relay_channel)
    for name in ("", "rkdsc.v1.Relay"):
        assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == \
            health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    assert {"rkdsc.v1.Relay", "grpc.health.v1.Health"} <= set(
        ProtoReflectionDescriptorDatabase(services.relay_channel).get_services())


def test_transmit_one_returns_a_result_with_link_feedback(services, bundle):
    k = bundle.task("digits").symbols_per_image
    res = services.relay_stub.TransmitOne(make_frame(k, "edge-far", frame_id=1), timeout=20)
    assert res.error.code == 0 and len(res.top_k) == 3 and res.frame_id == 1
    assert res.link.transmitter_id == "edge-far" and res.link.fading == "awgn"
    assert res.link.snr_db == -5.0 and res.link.path_gain_db == -1.0 and res.link.effective_snr_db == -6.0
    assert res.link.instantaneous_snr_db == pytest.approx(-6.0, abs=1e-4)  # AWGN: h = 1
    assert res.decoder_snr_db == -6.0  # the server's decoder is told the effective link SNR
    assert res.relay_roundtrip_ms > 0
    # symbols may also come as [1, K]
    z = np.frombuffer(make_frame(k).symbols.data, np.complex64).reshape(1, k)
    frame = make_frame(k, "edge-far", frame_id=2, symbols=z)
    assert list(frame.symbols.shape) == [1, k]
    assert services.relay_stub.TransmitOne(frame, timeout=20).error.code == 0


def _bad_frames(k: int):
    nan = np.zeros(k, np.complex64)
    nan[2] = np.inf
    loud = np.full(k, 2.0, np.complex64)  # average power 4
    return [
        ("transmitter_id", grpc.StatusCode.INVALID_ARGUMENT, {"transmitter_id": "mallory"}),
        ("task", grpc.StatusCode.INVALID_ARGUMENT, {"task": "imagenet"}),
        ("symbols.dtype", grpc.StatusCode.INVALID_ARGUMENT, {"symbols": T(np.zeros(2 * k, np.float32))}),
        ("symbols.shape", grpc.StatusCode.INVALID_ARGUMENT, {"symbols": T(np.ones((k, 1), np.complex64))}),
        ("symbols", grpc.StatusCode.INVALID_ARGUMENT,  # bytes do not match the shape
         {"symbols": pb.Tensor(data=b"\0" * 8, dtype="complex64", shape=[k])}),
        ("symbols", grpc.StatusCode.INVALID_ARGUMENT, {"symbols": T(nan)}),
        ("symbols", grpc.StatusCode.INVALID_ARGUMENT, {"symbols": T(loud)}),
        ("symbols.data", grpc.StatusCode.RESOURCE_EXHAUSTED, {"symbols": T(np.ones(64 * k, np.complex64))}),
        ("encoder_snr_db", grpc.StatusCode.INVALID_ARGUMENT, {"encoder_snr_db": float("nan")}),
        ("label", grpc.StatusCode.INVALID_ARGUMENT, {"label": 10_000}),
    ]


def _with(frame: pb.Frame, overrides: dict) -> pb.Frame:
    for key, value in overrides.items():
        if isinstance(value, pb.Tensor):
            frame.symbols.CopyFrom(value)
        else:
            setattr(frame, key, value)
    return frame


def test_every_bad_frame_is_refused_naming_the_field_and_the_relay_keeps_serving(services, bundle):
    k = bundle.task("digits").symbols_per_image
    stub = services.relay_stub
    before = stub.GetLink(pb.LinkRequest(transmitter_id="edge-near"), timeout=10).frames
    cases = _bad_frames(k)
    for i, (field, code, overrides) in enumerate(cases):
        with pytest.raises(grpc.RpcError) as err:
            stub.TransmitOne(_with(make_frame(k, frame_id=100 + i), overrides), timeout=20)
        assert err.value.code() == code, (field, err.value.details())
        assert err.value.details().startswith(field), (field, err.value.details())
        assert stub.TransmitOne(make_frame(k, frame_id=1000 + i), timeout=20).error.code == 0
    # a frame id seen twice for one transmitter
    with pytest.raises(grpc.RpcError) as err:
        stub.TransmitOne(make_frame(k, frame_id=1000), timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("frame_id")
    # rejected frames changed nothing: only the good ones went through the link
    after = stub.GetLink(pb.LinkRequest(transmitter_id="edge-near"), timeout=10).frames
    assert after - before == len(cases)
    m = services.metrics("relay")
    assert metric(m, "rkdsc_relay_frames_total", transmitter="edge-near", outcome="ok") == len(cases)
    # every case but the unknown transmitter, plus the duplicate frame id
    assert metric(m, "rkdsc_relay_frames_total", transmitter="edge-near", outcome="invalid") == len(cases)
    assert metric(m, "rkdsc_relay_frames_total", transmitter="_unknown", outcome="invalid") == 1


def test_messages_over_the_grpc_limit_get_resource_exhausted(make_config, bundle):
    cfg, _ = make_config(basestation={"max_message_bytes": 16384})
    svc = Services(cfg, bundle)
    try:
        k = bundle.task("digits").symbols_per_image
        frame = make_frame(k, frame_id=1)
        frame.file = "x" * 20000
        with pytest.raises(grpc.RpcError) as err:
            svc.relay_stub.TransmitOne(frame, timeout=20)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert svc.relay_stub.TransmitOne(make_frame(k, frame_id=2), timeout=20).error.code == 0
    finally:
        svc.close()


def test_a_bad_frame_ends_its_stream_and_new_streams_still_work(services, bundle):
    k = bundle.task("digits").symbols_per_image
    frames = [make_frame(k, frame_id=i) for i in range(3)] + [make_frame(k, frame_id=1)]  # duplicate id
    with pytest.raises(grpc.RpcError) as err:
        list(services.relay_stub.Transmit(iter(frames), timeout=20))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("frame_id")
    results = list(services.relay_stub.Transmit(iter([make_frame(k, frame_id=10 + i) for i in range(6)]), timeout=20))
    assert sorted(r.frame_id for r in results) == list(range(10, 16))
    assert all(r.error.code == 0 and r.link.effective_snr_db == 20.0 for r in results)


def test_set_link_changes_the_snr_seen_by_the_server(services, bundle):
    k = bundle.task("digits").symbols_per_image
    stub = services.relay_stub
    state = stub.SetLink(pb.SetLinkRequest(transmitter_id="edge-mid", snr_db=3.0, path_gain_db=-2.0), timeout=10)
    assert (state.snr_db, state.path_gain_db, state.effective_snr_db, state.fading) == (3.0, -2.0, 1.0, "rayleigh")
    res = stub.TransmitOne(make_frame(k, "edge-mid", frame_id=1), timeout=20)
    assert res.decoder_snr_db == 1.0 and res.link.effective_snr_db == 1.0
    stub.SetLink(pb.SetLinkRequest(transmitter_id="edge-mid", fading="awgn", snr_db=12.0), timeout=10)
    res = stub.TransmitOne(make_frame(k, "edge-mid", frame_id=2), timeout=20)
    assert res.decoder_snr_db == 10.0 and res.link.fading == "awgn"
    got = stub.GetLink(pb.LinkRequest(transmitter_id="edge-mid"), timeout=10)
    assert (got.snr_db, got.effective_snr_db, got.frames) == (12.0, 10.0, 2)
    assert sorted(link.transmitter_id for link in stub.ListLinks(pb.ListLinksRequest(), timeout=10).links) == \
        ["edge-far", "edge-mid", "edge-near"]
    assert metric(services.metrics("relay"), "rkdsc_link_snr_db", transmitter="edge-mid") == 10.0


@pytest.mark.parametrize("request_kw, field", [
    ({"transmitter_id": "nobody", "snr_db": 1.0}, "transmitter_id"),
    ({"transmitter_id": "edge-mid", "fading": "foo"}, "fading"),
    ({"transmitter_id": "edge-mid", "snr_db": float("inf")}, "snr_db"),
    ({"transmitter_id": "edge-mid", "path_gain_db": float("nan")}, "path_gain_db"),
])
def test_set_link_validates_its_request(services, request_kw, field):
    with pytest.raises(grpc.RpcError) as err:
        services.relay_stub.SetLink(pb.SetLinkRequest(**request_kw), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith(field)
    state = services.relay_stub.GetLink(pb.LinkRequest(transmitter_id="edge-mid"), timeout=10)
    assert (state.snr_db, state.fading) == (5.0, "rayleigh")  # unchanged


def test_the_link_seed_drives_the_channel_draws(services, bundle):
    """Re-seeding a link replays its channel: the same symbols give the same scores."""
    k = bundle.task("digits").symbols_per_image
    stub = services.relay_stub
    stub.SetLink(pb.SetLinkRequest(transmitter_id="edge-mid", snr_db=-3.0), timeout=10)  # rayleigh, noisy

    def scores_after_seed(seed: int, first_id: int) -> list[list[float]]:
        stub.SetLink(pb.SetLinkRequest(transmitter_id="edge-mid", seed=seed), timeout=10)
        out = []
        for i in range(3):
            res = stub.TransmitOne(make_frame(k, "edge-mid", frame_id=first_id + i, seed=i), timeout=20)
            out.append([c.score for c in res.top_k] + [res.link.instantaneous_snr_db])
        return out

    a, b, c = scores_after_seed(7, 0), scores_after_seed(7, 10), scores_after_seed(8, 20)
    assert a == b
    assert a != c


def test_create_server_on_taken_port_names_the_address(make_config):
    """The relay shares the skeleton with the server: same error, its upstream channel released."""
    import socket

    from rkdsc.basestation import relay

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg, _ = make_config(basestation={"port": port}, name="relay.toml")
        with pytest.raises(OSError, match=f"relay: cannot bind 127.0.0.1:{port}"):
            relay.create_server(cfg)


def test_the_relay_process_logs_through_rkdsc_relay(make_config, tmp_path):
    from tests.common.service.processes import run_service_until_ready

    _, path = make_config()
    err = run_service_until_ready("rkdsc.basestation", path, tmp_path / "ready.json")
    assert "rkdsc.relay: relay: serving on port" in err and "rkdsc.relay: relay: stopped" in err
    assert "rkdsc.server" not in err


# ------------------------------------------------------------------ TransmitBatch

def make_batch(k: int, frame_ids, transmitter_id: str = "edge-near", seed: int = 0, labels=None,
               symbols=None, **overrides) -> pb.FrameBatch:
    """A valid FrameBatch: one unit-power row of K complex64 symbols per frame id."""
    from rkdsc.common.channel import normalize_power

    n = len(frame_ids)
    if symbols is None:
        rng = np.random.default_rng(seed)
        symbols = normalize_power((rng.standard_normal((n, k)) + 1j * rng.standard_normal((n, k))).astype(np.complex64))
    labels = [3] * n if labels is None else labels
    fb = pb.FrameBatch(transmitter_id=transmitter_id, task="digits", symbols=T(symbols), encoder_snr_db=10.0,
                       frames=[pb.FrameMeta(frame_id=f, has_label=True, label=lab, file=f"{f}.png")
                               for f, lab in zip(frame_ids, labels)])
    for key, value in overrides.items():
        setattr(fb, key, value)
    return fb


def test_transmit_batch_answers_each_message_in_row_order_with_one_channel_call(services, bundle):
    k = bundle.task("digits").symbols_per_image
    msgs = [make_batch(k, range(100 + 5 * m, 105 + 5 * m), seed=m) for m in range(4)]
    replies = list(services.relay_stub.TransmitBatch(iter(msgs), timeout=30))
    assert sorted(r.results[0].frame_id for r in replies) == [100, 105, 110, 115]
    for rb in replies:
        first = rb.results[0].frame_id
        assert [r.frame_id for r in rb.results] == list(range(first, first + 5))
        assert all(r.error.code == 0 and r.file == f"{r.frame_id}.png" and r.link.effective_snr_db == 20.0
                   for r in rb.results)
    frames = sorted(r.link.frames for rb in replies for r in rb.results)
    assert frames == list(range(1, 21))  # each row's feedback counts the frames of the link so far
    relay = services.metrics("relay")
    assert metric(relay, "rkdsc_relay_channel_seconds_count") == 4
    assert metric(relay, "rkdsc_relay_frames_total", transmitter="edge-near", outcome="ok") == 20


@pytest.mark.parametrize("change, field", [
    (lambda fb, k: fb.frames.add(frame_id=999), "symbols.shape"),          # 3 rows of symbols, 4 frames
    (lambda fb, k: fb.symbols.CopyFrom(T(np.vstack([np.ones((1, k), np.complex64),
                                                    2 * np.ones((2, k), np.complex64)]))), "symbols[1]"),
    (lambda fb, k: setattr(fb.frames[2], "label", 99), "frames[2].label"),
    (lambda fb, k: setattr(fb.frames[1], "frame_id", fb.frames[0].frame_id), "frame_id"),
    (lambda fb, k: setattr(fb.frames[1], "file", "x" * 5000), "frames[1].file"),
    (lambda fb, k: fb.ClearField("frames"), "frames"),
])
def test_a_bad_message_is_refused_whole_naming_the_row(services, bundle, change, field):
    k = bundle.task("digits").symbols_per_image
    fb = make_batch(k, [7, 8, 9])
    change(fb, k)
    with pytest.raises(grpc.RpcError) as err:
        list(services.relay_stub.TransmitBatch(iter([fb]), timeout=20))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field), err.value.details()
    # nothing of the refused message was claimed: the same frame ids go through afterwards
    replies = list(services.relay_stub.TransmitBatch(iter([make_batch(k, [7, 8, 9])]), timeout=20))
    assert [r.frame_id for r in replies[0].results] == [7, 8, 9]


def test_results_of_good_messages_come_before_a_bad_messages_status(services, bundle):
    k = bundle.task("digits").symbols_per_image
    good = [make_batch(k, [10 * m + i for i in range(3)], seed=m) for m in range(5)]
    bad = make_batch(k, [900, 901], symbols=np.full((2, k), np.nan, np.complex64))
    call = services.relay_stub.TransmitBatch(iter(good + [bad]), timeout=30)
    got = []
    with pytest.raises(grpc.RpcError) as err:
        for rb in call:
            got += [r.frame_id for r in rb.results]
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(got) == sorted(10 * m + i for m in range(5) for i in range(3))


def test_batched_and_single_frames_see_the_same_channel(make_config, bundle):
    """One link, reseeded: frames sent one by one on Transmit and as messages of 3 and 2 on
    TransmitBatch get the same decoder scores (the k-th frame sees the k-th draw)."""
    cfg, _ = make_config()
    svc = Services(cfg, bundle)
    try:
        k = bundle.task("digits").symbols_per_image
        rng = np.random.default_rng(4)
        from rkdsc.common.channel import normalize_power

        z = normalize_power((rng.standard_normal((5, k)) + 1j * rng.standard_normal((5, k))).astype(np.complex64))
        stub = svc.relay_stub
        stub.SetLink(pb.SetLinkRequest(transmitter_id="edge-mid", seed=77, snr_db=0.0, fading="rayleigh"), timeout=10)
        single = list(stub.Transmit(iter([make_frame(k, "edge-mid", frame_id=i, symbols=z[i]) for i in range(5)]),
                                    timeout=30))
        stub.SetLink(pb.SetLinkRequest(transmitter_id="edge-mid", seed=77), timeout=10)
        msgs = [make_batch(k, [10, 11, 12], "edge-mid", symbols=z[:3]), make_batch(k, [13, 14], "edge-mid", symbols=z[3:])]
        batched = [r for rb in stub.TransmitBatch(iter(msgs), timeout=30) for r in rb.results]
        by_row_single = {r.frame_id: r for r in single}
        by_row_batched = {r.frame_id - 10: r for r in batched}
        for i in range(5):
            a, b = by_row_single[i], by_row_batched[i]
            assert a.predicted_class == b.predicted_class
            assert [c.score for c in a.top_k] == pytest.approx([c.score for c in b.top_k], abs=1e-6)
            assert a.link.instantaneous_snr_db == pytest.approx(b.link.instantaneous_snr_db, abs=1e-9)
    finally:
        svc.close()
