"""Validation of frames at a service boundary, shared by the relay and the edge server.

    FrameRejected(code, message)   # a frame that breaks a rule; `message` starts with the field
    invalid(message)               # -> FrameRejected(INVALID_ARGUMENT, message)
    check_symbols(tensor, field, k, shapes=None, check_power=False) -> complex64 [1, K]
    check_finite(value, field, lo, hi) -> float
    check_client_strings(msg)      # transmitter_id / task / fading <= 128 chars, file <= 4096 bytes
    check_batch(msg, max_rows)     # a FrameBatch / ChannelFrameBatch: its strings, 1..max_rows frames
    check_symbol_rows(tensor, field, k, n, shapes=None, check_power=False) -> complex64 [N, K]
    shown(value)                   # a client string as it may appear in a message or a log line
    bounded(message)               # a status message cut to MAX_STATUS_CHARS
    FrameIdRegistry(window=...).claim(transmitter_id, frame_id)   # each frame id once per transmitter
    FrameIdRegistry.claim_many(transmitter_id, frame_ids)          # all of them, or none
    SNR_LIMIT_DB, POWER_TOLERANCE, MAX_ID_CHARS, MAX_FILE_BYTES, SERVER_MAX_MESSAGE_BYTES

Guarantees: every check raises FrameRejected (never another exception for bad input) and
changes nothing; oversized payloads are RESOURCE_EXHAUSTED, everything else INVALID_ARGUMENT.
A client string appears in a message only through ``shown`` (at most SHOWN_CHARS of it, plus
its length), so no status message or log line grows with what a client sends.
"""
from __future__ import annotations

import heapq
import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Iterable

import grpc
import numpy as np

from rkdsc.common.wire import WireError, decode_tensor

if TYPE_CHECKING:
    from rkdsc.v1 import emulator_pb2 as pb

__all__ = ["SNR_LIMIT_DB", "POWER_TOLERANCE", "MAX_ID_CHARS", "MAX_FILE_BYTES", "SHOWN_CHARS", "MAX_STATUS_CHARS",
           "SERVER_MAX_MESSAGE_BYTES", "FrameRejected", "invalid", "shown", "bounded", "check_client_strings",
           "check_batch", "check_symbols", "check_symbol_rows", "check_finite", "FrameIdRegistry"]

SNR_LIMIT_DB = 100.0  # |snr_db| above this is rejected (noise_var would under/overflow float32)
POWER_TOLERANCE = 1e-2  # relative tolerance on mean |z|^2 = 1 of transmitted symbols
MAX_ID_CHARS = 128       # transmitter_id, task, fading: at most this many characters (as the topology allows)
MAX_FILE_BYTES = 4096    # file: at most this many UTF-8 bytes (PATH_MAX)
SHOWN_CHARS = 64         # at most this many characters of a client string appear in a message
MAX_STATUS_CHARS = 2048  # a status message is cut here (gRPC carries it in a header of ~8 KiB)
SERVER_MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # the edge server's gRPC message limit (both ways); the relay
                                            # forwards nothing larger


class FrameRejected(Exception):
    """A frame that breaks a rule: `code` is the gRPC status, `message` starts with the field."""

    def __init__(self, code: grpc.StatusCode, message: str):
        message = bounded(message)
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> FrameRejected:
    return FrameRejected(grpc.StatusCode.INVALID_ARGUMENT, message)


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` of a client string when short; else its first ``limit`` characters and its
    length: ``'aaaa'... (1048576 characters)``."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) <= limit:
            return repr(bytes(value))
        return f"{bytes(value[:limit])!r}... ({len(value)} bytes)"
    if not isinstance(value, str):
        value = str(value)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def bounded(message: str, limit: int = MAX_STATUS_CHARS) -> str:
    """``message`` cut to ``limit`` characters (a marker and the full length at the end)."""
    if len(message) <= limit:
        return message
    tail = f"... [{len(message)} characters, cut]"
    return message[:max(0, limit - len(tail))] + tail


def _check_chars(value: str, field: str, limit: int) -> None:
    if len(value) > limit:
        raise invalid(f"{field}: {len(value)} characters, longer than the limit of {limit} ({shown(value, 32)})")


def check_client_strings(msg: Any) -> None:
    """The client strings of a Frame / ChannelFrame are short: ``transmitter_id``, ``task`` (and
    ``fading`` where present) at most MAX_ID_CHARS characters, ``file`` at most MAX_FILE_BYTES
    UTF-8 bytes; else INVALID_ARGUMENT naming the field and its length."""
    _check_chars(msg.transmitter_id, "transmitter_id", MAX_ID_CHARS)
    _check_chars(msg.task, "task", MAX_ID_CHARS)
    fading = getattr(msg, "fading", None)
    if isinstance(fading, str):
        _check_chars(fading, "fading", MAX_ID_CHARS)
    n = len(msg.file)
    if n > MAX_FILE_BYTES // 4 and len(msg.file.encode("utf-8")) > MAX_FILE_BYTES:
        raise invalid(f"file: {len(msg.file.encode('utf-8'))} bytes, longer than the limit of {MAX_FILE_BYTES} "
                      f"bytes ({shown(msg.file, 32)})")


def check_batch(msg: Any, max_rows: int) -> int:
    """A batched message (``FrameBatch`` / ``ChannelFrameBatch``): its strings as in
    ``check_client_strings`` (each ``frames[i].file`` too) and 1..max_rows frames -> N.
    INVALID_ARGUMENT naming the field (``frames[3].file: ...``)."""
    _check_chars(msg.transmitter_id, "transmitter_id", MAX_ID_CHARS)
    _check_chars(msg.task, "task", MAX_ID_CHARS)
    fading = getattr(msg, "fading", None)
    if isinstance(fading, str):
        _check_chars(fading, "fading", MAX_ID_CHARS)
    n = len(msg.frames)
    if not 1 <= n <= max_rows:
        raise invalid(f"frames: expected 1 to {max_rows} frames in one message, got {n}")
    for i, meta in enumerate(msg.frames):
        if len(meta.file) > MAX_FILE_BYTES // 4 and len(meta.file.encode("utf-8")) > MAX_FILE_BYTES:
            raise invalid(f"frames[{i}].file: {len(meta.file.encode('utf-8'))} bytes, longer than the limit of "
                          f"{MAX_FILE_BYTES} bytes ({shown(meta.file, 32)})")
    return n


def _shape_text(shape: tuple[int, ...]) -> str:
    return str(list(shape)) if len(shape) <= 8 else f"{list(shape[:8])}... ({len(shape)} dimensions)"


def _decode_symbols(t: "pb.Tensor", field: str, shapes: list[tuple[int, ...]], n: int | None = None) -> np.ndarray:
    """The checks every symbol tensor passes: size (RESOURCE_EXHAUSTED), dtype complex64, one of
    ``shapes``, the wire decode; -> the array as sent. ``n``: the frames of a batched message."""
    frames = "" if n is None else f" for {n} frames"
    limit = max(int(np.prod(s)) for s in shapes) * 8  # complex64 = 8 bytes
    if len(t.data) > limit:
        raise FrameRejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{field}.data: {len(t.data)} bytes is larger than the limit of {limit} bytes "
                            f"({limit // 8} complex64 symbols{frames})")
    if t.dtype != "complex64":
        raise invalid(f"{field}.dtype: expected 'complex64', got {shown(t.dtype)}")
    shape = tuple(int(d) for d in t.shape)
    if shape not in shapes:
        raise invalid(f"{field}.shape: expected one of {[list(s) for s in shapes]}"
                      f"{'' if n is None else f' ({n} frames)'}, got {_shape_text(shape)}")
    try:
        return decode_tensor(t.data, t.dtype, list(t.shape), field=field, expected_dtype="complex64",
                             max_bytes=limit)
    except WireError as exc:
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.kind == "size" else grpc.StatusCode.INVALID_ARGUMENT
        raise FrameRejected(code, str(exc)) from None


def _row_power(arr: np.ndarray) -> np.ndarray:
    """mean |z|^2 of each row [N, K] -> [N] (float64)."""
    return np.mean(arr.real.astype(np.float64) ** 2 + arr.imag.astype(np.float64) ** 2, axis=1)


_POWER_HINT = ("expected 1 (transmitters normalize each frame to unit average power, "
               "rkdsc.common.channel.normalize_power)")


def check_symbols(t: "pb.Tensor", field: str, k: int, *, shapes: Iterable[tuple[int, ...]] | None = None,
                  check_power: bool = False) -> np.ndarray:
    """Validate a complex64 tensor of K symbols ([K] or [1, K] unless `shapes`) -> complex64 [1, K].

    Oversized payloads -> RESOURCE_EXHAUSTED, anything else wrong -> INVALID_ARGUMENT; the
    message starts with `field`.
    """
    arr = _decode_symbols(t, field, [tuple(s) for s in (shapes or [(k,), (1, k)])])
    arr = arr.reshape(1, -1) if arr.ndim == 1 or arr.shape[0] == 1 else arr
    if check_power:
        power = float(np.mean(_row_power(arr.reshape(1, -1))))
        if abs(power - 1.0) > POWER_TOLERANCE:
            raise invalid(f"{field}: average power {power:.6g}, {_POWER_HINT}")
    return arr


def check_symbol_rows(t: "pb.Tensor", field: str, k: int, n: int, *,
                      shapes: Iterable[tuple[int, ...]] | None = None, check_power: bool = False) -> np.ndarray:
    """Validate a complex64 tensor of N frames of K symbols ([N, K] unless `shapes`) -> [N, K]
    (``[N, 1]`` stays as it is). With ``check_power`` every row must have unit average power
    (the message names the first row that has not). Errors as in ``check_symbols``."""
    arr = _decode_symbols(t, field, [tuple(s) for s in (shapes or [(n, k)])], n)
    if check_power:
        power = _row_power(arr)                                              # [N]
        bad = np.flatnonzero(~(np.abs(power - 1.0) <= POWER_TOLERANCE))
        if bad.size:
            i = int(bad[0])
            raise invalid(f"{field}[{i}]: average power {float(power[i]):.6g}, {_POWER_HINT}")
    return arr


def check_finite(value: float, field: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    """`value` as a float when finite and in [lo, hi]; else INVALID_ARGUMENT naming `field`."""
    if not math.isfinite(value) or not lo <= value <= hi:
        raise invalid(f"{field}: expected a finite value in [{lo}, {hi}], got {value!r}")
    return float(value)


class _Window:
    """One transmitter's ids: the ``window`` largest ids claimed (a set + a min-heap) and the floor
    (the largest id dropped from the window; every id <= floor counts as seen)."""

    __slots__ = ("ids", "heap", "floor")

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.heap: list[int] = []
        self.floor = -1


class FrameIdRegistry:
    """Frame ids seen per transmitter, in bounded memory: a frame id is accepted at most once per
    transmitter.

    Per transmitter it keeps the ``window`` largest ids claimed and a floor, the largest id it
    dropped to stay within the window. ``claim`` refuses (INVALID_ARGUMENT, "frame_id: ...") an id
    that is in the window (a duplicate) or at or below the floor (a duplicate, or an id older
    than the last ``window`` ids: transmitters number their frames upwards, so only a stale
    retransmission gets there). Every duplicate is therefore refused, whatever the order; an
    id that was never seen is refused only when more than ``window`` larger ids of that
    transmitter came first. Memory: at most ``window`` ids for each of at most
    ``max_transmitters`` transmitters; beyond that the least recently used transmitter is
    forgotten (its duplicates are no longer detected; only a service that accepts any
    transmitter id, i.e. an edge server without ``[[transmitters]]``, can reach it).
    """

    def __init__(self, window: int = 1024, max_transmitters: int = 256) -> None:
        if window < 1 or max_transmitters < 1:
            raise ValueError(f"FrameIdRegistry: expected window >= 1 and max_transmitters >= 1, "
                             f"got {window}, {max_transmitters}")
        self.window = int(window)
        self.max_transmitters = int(max_transmitters)
        self._seen: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, transmitter_id: str, frame_id: int) -> None:
        self.claim_many(transmitter_id, (frame_id,))

    def claim_many(self, transmitter_id: str, frame_ids: Iterable[int]) -> None:
        """``claim`` each id, atomically: when one of them is refused (also a repeat inside
        ``frame_ids``), none is claimed."""
        ids = [int(f) for f in frame_ids]
        with self._lock:
            w = self._seen.get(transmitter_id)
            fresh: set[int] = set()
            for fid in ids:
                if fid in fresh or (w is not None and fid in w.ids):
                    raise invalid(f"frame_id: frame {fid} of transmitter {shown(transmitter_id)} was already "
                                  f"received (frame ids must be unique per transmitter)")
                if w is not None and fid <= w.floor:
                    raise invalid(f"frame_id: frame {fid} of transmitter {shown(transmitter_id)} is at or below "
                                  f"{w.floor}, the oldest id still remembered: it was already received or is older "
                                  f"than the transmitter's last {self.window} frame ids (frame ids must be unique "
                                  f"per transmitter and increase)")
                fresh.add(fid)
            if w is None:
                w = self._seen[transmitter_id] = _Window()
                while len(self._seen) > self.max_transmitters:
                    self._seen.popitem(last=False)
            else:
                self._seen.move_to_end(transmitter_id)
            for fid in ids:
                w.ids.add(fid)
                heapq.heappush(w.heap, fid)
                if len(w.heap) > self.window:
                    dropped = heapq.heappop(w.heap)
                    w.ids.discard(dropped)
                    w.floor = max(w.floor, dropped)

    def size(self) -> int:
        """Frame ids held, over every transmitter (at most window x max_transmitters)."""
        with self._lock:
            return sum(len(w.ids) for w in self._seen.values())

    def transmitters(self) -> int:
        with self._lock:
            return len(self._seen)
