"""The edge server never answers OK with NaN scores: received symbols beyond what an MMSE-equalized
unit-power frame can reach are refused (INVALID_ARGUMENT, naming the field), and decoder output
that is not finite is a per-frame INTERNAL error while the stream goes on. Real gRPC, in process."""
from __future__ import annotations

import grpc
import numpy as np
import pytest

from rkdsc.common import channel
from rkdsc.common.bundle import ServerModel
from rkdsc.common.wire import encode_tensor
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
from rkdsc.server.service import create_server, received_limit
from tests.server.test_service import channel_frame


def _tensor(y: np.ndarray) -> pb.Tensor:
    d, dt, sh = encode_tensor(y.astype(np.complex64))
    return pb.Tensor(data=d, dtype=dt, shape=sh)


@pytest.fixture
def serve(make_config, bundle):
    handles, channels = [], []

    def start(models=None):
        cfg, _ = make_config()
        handle, port = create_server(cfg, bundle=bundle, models=models)
        handle.start()
        chan = grpc.insecure_channel(f"127.0.0.1:{port}")
        handles.append(handle)
        channels.append(chan)
        return handle, pb_grpc.EdgeServerStub(chan)

    yield start
    for chan in channels:
        chan.close()
    for handle in handles:
        handle.stop(2.0)


def test_huge_finite_symbols_are_refused_naming_the_field_not_answered_with_nan(serve, bundle):
    handle, stub = serve()
    k = bundle.task("digits").symbols_per_image
    y = np.ones((1, k), np.complex64)
    y[0, 3] = 1e20
    with pytest.raises(grpc.RpcError) as err:
        stub.DecodeOne(channel_frame(k, frame_id=1, received=_tensor(y)), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith("received: symbol 3 has magnitude 1e+20, larger than") and "MMSE" in details
    # ... on the stream too: the bad frame ends it with its status, after the good ones
    frames = [channel_frame(k, frame_id=10 + i) for i in range(3)] + [channel_frame(k, frame_id=13, received=_tensor(y))]
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Decode(iter(frames), timeout=10))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and err.value.details().startswith("received:")
    # a frame right at the limit is fine and its scores are finite
    y = np.zeros((1, k), np.complex64)
    y[0, 0] = received_limit(k) * 0.999
    res = stub.DecodeOne(channel_frame(k, frame_id=20, received=_tensor(y)), timeout=10)
    assert res.error.code == 0 and np.isfinite(res.score) and all(np.isfinite(c.score) for c in res.top_k)
    values = handle.metrics.registry.get_sample_value
    assert values("rkdsc_frames_total", {"transmitter": "edge-near", "task": "digits", "outcome": "invalid"}) == 2


@pytest.mark.parametrize("fading", ["awgn", "rayleigh", "rayleigh_fast", "rician"])
def test_the_limit_holds_for_real_equalized_frames_at_any_snr(bundle, fading):
    """received_limit is physical: unit-power frames through the relay's channel (MMSE) never
    exceed it, from -100 dB to 100 dB, even with all power in one symbol."""
    k = bundle.task("digits").symbols_per_image
    rng = np.random.default_rng(0)
    z = channel.normalize_power((rng.standard_normal((2000, k)) + 1j * rng.standard_normal((2000, k))
                                 ).astype(np.complex64))
    spike = np.zeros((200, k), np.complex64)
    spike[:, 0] = np.sqrt(k)  # the most one symbol can carry at unit average power
    for snr in (-100.0, -30.0, -5.0, 0.0, 10.0, 40.0, 100.0):
        for x in (z, spike):
            y, _, _ = channel.simulate(x, snr, fading, rng, equalize=True)
            assert np.abs(y).max() <= received_limit(k), (snr, fading, float(np.abs(y).max()))


class NaNModel:
    """The real ServerModel, except that rows whose first value is negative come out NaN."""

    def __init__(self, model):
        self.model, self.spec = model, model.spec

    def decode(self, x, snr_db):
        logits = self.model.decode(x, snr_db).copy()
        logits[x[:, 0] < 0] = np.nan
        return logits


def test_non_finite_decoder_output_is_an_internal_error_result_and_the_stream_goes_on(serve, bundle):
    handle, stub = serve(models={"digits": NaNModel(ServerModel(bundle, "digits"))})
    spec = bundle.task("digits")
    k = spec.symbols_per_image
    frames = []
    for i in range(8):
        y = np.full((1, k), 0.5, np.complex64)
        y[0, 0] = -0.5 if i % 2 else 0.5  # odd frames -> NaN logits
        frames.append(channel_frame(k, frame_id=i, received=_tensor(y)))
    results = {r.frame_id: r for r in stub.Decode(iter(frames), timeout=20)}
    assert sorted(results) == list(range(8))  # every frame answered, the stream completed
    for i, r in results.items():
        if i % 2:
            assert r.error.code == grpc.StatusCode.INTERNAL.value[0] and not r.top_k
            assert r.error.message.startswith(f"decoder output: {spec.num_classes} of {spec.num_classes} logits "
                                              f"are not finite")
        else:
            assert r.error.code == 0 and np.isfinite(r.score) and 0 < r.score <= 1
    values = handle.metrics.registry.get_sample_value
    lab = {"transmitter": "edge-near", "task": "digits"}
    assert values("rkdsc_frames_total", {**lab, "outcome": "failed"}) == 4
    assert values("rkdsc_frames_total", {**lab, "outcome": "ok"}) == 4
    # unary: the error result becomes the call's status
    y = np.full((1, k), -0.5, np.complex64)
    with pytest.raises(grpc.RpcError) as err:
        stub.DecodeOne(channel_frame(k, frame_id=99, received=_tensor(y)), timeout=10)
    assert err.value.code() == grpc.StatusCode.INTERNAL and err.value.details().startswith("decoder output:")
