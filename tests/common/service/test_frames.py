"""Frame validation shared by the relay and the server: check_symbols, check_finite, FrameIdRegistry."""
from __future__ import annotations

import math

import grpc
import numpy as np
import pytest

from rkdsc.common.channel import normalize_power
from rkdsc.common.service import (POWER_TOLERANCE, SNR_LIMIT_DB, FrameIdRegistry, FrameRejected, check_finite,
                                  check_symbols, invalid)
from rkdsc.common.wire import encode_tensor
from rkdsc.v1 import emulator_pb2 as pb

K = 6


def T(a: np.ndarray) -> pb.Tensor:
    data, dtype, shape = encode_tensor(a)
    return pb.Tensor(data=data, dtype=dtype, shape=shape)


def unit(shape=(K,), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((1, K)) + 1j * rng.standard_normal((1, K))).astype(np.complex64)
    return normalize_power(z).astype(np.complex64).reshape(shape)


@pytest.mark.parametrize("shape", [(K,), (1, K)])
def test_check_symbols_accepts_k_or_1_by_k_and_returns_1_by_k(shape):
    z = unit(shape)
    out = check_symbols(T(z), "symbols", K, check_power=True)
    assert out.shape == (1, K) and out.dtype == np.complex64
    np.testing.assert_array_equal(out, z.reshape(1, K))


def _rejected(tensor, **kw) -> FrameRejected:
    with pytest.raises(FrameRejected) as err:
        check_symbols(tensor, "symbols", K, **kw)
    return err.value


@pytest.mark.parametrize("tensor, code, start", [
    (T(np.zeros(2 * K, np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "symbols.dtype"),
    (T(np.zeros((K, 1), np.complex64)), grpc.StatusCode.INVALID_ARGUMENT, "symbols.shape"),
    (pb.Tensor(data=b"\0" * 8, dtype="complex64", shape=[K]), grpc.StatusCode.INVALID_ARGUMENT, "symbols"),
    (T(np.full(K, np.nan, np.complex64)), grpc.StatusCode.INVALID_ARGUMENT, "symbols"),
    (T(np.ones(4 * K, np.complex64)), grpc.StatusCode.RESOURCE_EXHAUSTED, "symbols.data"),
])
def test_check_symbols_names_the_field_and_picks_the_status(tensor, code, start):
    exc = _rejected(tensor)
    assert exc.code == code and exc.message.startswith(start) and str(exc) == exc.message


def test_check_symbols_power_and_custom_shapes():
    loud = np.full(K, 2.0, np.complex64)  # average power 4
    assert "average power" in _rejected(T(loud), check_power=True).message
    assert check_symbols(T(loud), "symbols", K).shape == (1, K)  # power unchecked unless asked
    slightly = unit() * np.sqrt(1 + POWER_TOLERANCE / 2)
    check_symbols(T(slightly.astype(np.complex64)), "symbols", K, check_power=True)
    h = np.ones((1, 1), np.complex64)
    assert check_symbols(T(h), "h", K, shapes=[(1, 1), (1, K)]).shape == (1, 1)
    assert _rejected(T(np.ones((2, 1), np.complex64)), shapes=[(1, 1), (1, K)]).message.startswith("symbols.shape")


def test_check_finite():
    assert check_finite(3, "snr_db", -SNR_LIMIT_DB, SNR_LIMIT_DB) == 3.0
    for bad in (math.nan, math.inf, SNR_LIMIT_DB + 1):
        with pytest.raises(FrameRejected) as err:
            check_finite(bad, "snr_db", -SNR_LIMIT_DB, SNR_LIMIT_DB)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.message.startswith("snr_db")
    assert invalid("x: y").code == grpc.StatusCode.INVALID_ARGUMENT


def test_frame_ids_are_claimed_once_per_transmitter():
    ids = FrameIdRegistry()
    ids.claim("a", 1)
    ids.claim("b", 1)
    with pytest.raises(FrameRejected) as err:
        ids.claim("a", 1)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.message.startswith("frame_id")


def test_frame_ids_stay_bounded_and_every_duplicate_is_refused():
    """100k frames of one transmitter: the registry holds one window of ids, an immediate
    duplicate and an old id are still refused, ids in any order within the window are fine."""
    import tracemalloc

    ids = FrameIdRegistry(window=1024)
    base = 1_700_000_000_000_000
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(100_000):
            ids.claim("edge-near", base + i)
        grown, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ids.size() == 1024
    assert grown - before < 1_000_000  # the unbounded set held ~8 MB per 100k ids
    for dup in (base + 99_999, base + 99_000, base + 5):  # immediate, inside the window, below the floor
        with pytest.raises(FrameRejected) as err:
            ids.claim("edge-near", dup)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and err.value.message.startswith("frame_id")
    ids.claim("edge-near", base + 100_001)   # out of order inside the window: accepted
    ids.claim("edge-near", base + 100_000)
    # transmitters beyond max_transmitters: the least recently used one is forgotten
    few = FrameIdRegistry(window=4, max_transmitters=2)
    for t in ("a", "b", "c"):
        few.claim(t, 1)
    assert few.transmitters() == 2
    with pytest.raises(FrameRejected):
        few.claim("c", 1)


def test_client_strings_are_bounded_and_shown_short():
    from rkdsc.common.service import MAX_FILE_BYTES, MAX_ID_CHARS, bounded, check_client_strings, shown
    from rkdsc.v1 import emulator_pb2 as pb

    assert shown("edge-near") == "'edge-near'"
    long = shown("x" * 1_000_000)
    assert len(long) < 120 and "(1000000 characters)" in long
    assert len(bounded("y" * 100_000)) <= 2048 and bounded("short") == "short"
    check_client_strings(pb.Frame(transmitter_id="t" * MAX_ID_CHARS, task="digits", file="f" * MAX_FILE_BYTES))
    cases = [("transmitter_id", {"transmitter_id": "t" * (1 << 20)}), ("task", {"task": "k" * 129}),
             ("file", {"file": "é" * 2049}), ("fading", {"fading": "f" * 200})]
    for field, kw in cases:
        msg = (pb.ChannelFrame if field == "fading" else pb.Frame)(**{"transmitter_id": "a", "task": "b", **kw})
        with pytest.raises(FrameRejected) as err:
            check_client_strings(msg)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.message.startswith(f"{field}: ") and len(err.value.message) < 200
    # a status message built from anything is cut
    assert len(FrameRejected(grpc.StatusCode.INTERNAL, "z" * 50_000).message) <= 2048
