"""Validation of frames at a service boundary, shared by the relay and the edge server.

    FrameRejected(code, message)   # a frame that breaks a rule; `message` starts with the field
    invalid(message)               # -> FrameRejected(INVALID_ARGUMENT, message)
    check_symbols(tensor, field, k, shapes=None, check_power=False) -> complex64 [1, K]
    check_finite(value, field, lo, hi) -> float
    FrameIdRegistry().claim(transmitter_id, frame_id)   # each frame id once per transmitter
    SNR_LIMIT_DB, POWER_TOLERANCE

Guarantees: every check raises FrameRejected (never another exception for bad input) and
changes nothing; oversized payloads are RESOURCE_EXHAUSTED, everything else INVALID_ARGUMENT.
"""
from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Iterable

import grpc
import numpy as np

from rkdsc.common.wire import WireError, decode_tensor

if TYPE_CHECKING:
    from rkdsc.v1 import emulator_pb2 as pb

__all__ = ["SNR_LIMIT_DB", "POWER_TOLERANCE", "FrameRejected", "invalid", "check_symbols", "check_finite",
           "FrameIdRegistry"]

SNR_LIMIT_DB = 100.0  # |snr_db| above this is rejected (noise_var would under/overflow float32)
POWER_TOLERANCE = 1e-2  # relative tolerance on mean |z|^2 = 1 of transmitted symbols


class FrameRejected(Exception):
    """A frame that breaks a rule: `code` is the gRPC status, `message` starts with the field."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> FrameRejected:
    return FrameRejected(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_symbols(t: "pb.Tensor", field: str, k: int, *, shapes: Iterable[tuple[int, ...]] | None = None,
                  check_power: bool = False) -> np.ndarray:
    """Validate a complex64 tensor of K symbols ([K] or [1, K] unless `shapes`) -> complex64 [1, K].

    Oversized payloads -> RESOURCE_EXHAUSTED, anything else wrong -> INVALID_ARGUMENT; the
    message starts with `field`.
    """
    shapes = [tuple(s) for s in (shapes or [(k,), (1, k)])]
    limit = max(int(np.prod(s)) for s in shapes) * 8  # complex64 = 8 bytes
    if len(t.data) > limit:
        raise FrameRejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{field}.data: {len(t.data)} bytes is larger than the limit of {limit} bytes "
                            f"({limit // 8} complex64 symbols)")
    if t.dtype != "complex64":
        raise invalid(f"{field}.dtype: expected 'complex64', got {t.dtype!r}")
    shape = tuple(int(d) for d in t.shape)
    if shape not in shapes:
        raise invalid(f"{field}.shape: expected one of {[list(s) for s in shapes]}, got {list(shape)}")
    try:
        arr = decode_tensor(t.data, t.dtype, list(t.shape), field=field, expected_dtype="complex64",
                            max_bytes=limit)
    except WireError as exc:
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.kind == "size" else grpc.StatusCode.INVALID_ARGUMENT
        raise FrameRejected(code, str(exc)) from None
    arr = arr.reshape(1, -1) if arr.ndim == 1 or arr.shape[0] == 1 else arr
    if check_power:
        power = float(np.mean(arr.real.astype(np.float64) ** 2 + arr.imag.astype(np.float64) ** 2))
        if abs(power - 1.0) > POWER_TOLERANCE:
            raise invalid(f"{field}: average power {power:.6g}, expected 1 (transmitters normalize "
                          f"each frame to unit average power, rkdsc.common.channel.normalize_power)")
    return arr


def check_finite(value: float, field: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """`value` as a float when finite and in [lo, hi]; else INVALID_ARGUMENT naming `field`."""
    if not math.isfinite(value) or not lo <= value <= hi:
        raise invalid(f"{field}: expected a finite value in [{lo}, {hi}], got {value!r}")
    return float(value)


class FrameIdRegistry:
    """Frame ids seen per transmitter (a frame id may be used once per transmitter)."""

    def __init__(self) -> None:
        self._seen: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def claim(self, transmitter_id: str, frame_id: int) -> None:
        with self._lock:
            seen = self._seen.setdefault(transmitter_id, set())
            if frame_id in seen:
                raise invalid(f"frame_id: frame {frame_id} of transmitter {transmitter_id!r} was already "
                              f"received (frame ids must be unique per transmitter)")
            seen.add(frame_id)
