"""Tensors <-> (bytes, dtype, shape) for gRPC messages (numpy only; no torch, no grpc).

Wire format: the raw C-order element bytes, **little-endian** for every dtype (multi-byte
values are byteswapped on big-endian hosts or for big-endian input arrays), plus the dtype
name as a string and the shape as a list of non-negative ints. complex64 is two little-endian
float32 values per element (real, then imaginary). No header, no compression.

Supported dtypes: float32, float16, complex64, int64, int32, uint8.

`decode_tensor` validates everything a client can get wrong and raises `WireError` whose
message starts with the field name and quotes the offending value. `WireError.kind` is
"size" when the payload is too large (servers answer RESOURCE_EXHAUSTED) and "invalid"
otherwise (INVALID_ARGUMENT).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["MAX_NDIM", "SUPPORTED_DTYPES", "WireError", "encode_tensor", "decode_tensor"]

# dtype name on the wire -> little-endian numpy dtype
SUPPORTED_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "complex64": np.dtype("<c8"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "uint8": np.dtype("u1"),
}
MAX_NDIM = 32  # numpy's reshape limit is 64; no tensor in this project comes close
_INEXACT = {"float32", "float16", "complex64"}  # dtypes checked for NaN/Inf on decode


class WireError(ValueError):
    """A tensor field failed to encode/decode. `field` names the message field; `kind` is
    "size" (payload too large -> RESOURCE_EXHAUSTED) or "invalid" (-> INVALID_ARGUMENT)."""

    def __init__(self, field: str, message: str, *, kind: str = "invalid"):
        self.field = field
        self.message = message
        self.kind = kind
        super().__init__(f"{field}: {message}")


def _dtype_name(dtype: np.dtype) -> str | None:
    for name, wire_dtype in SUPPORTED_DTYPES.items():
        if np.dtype(dtype).newbyteorder("=") == wire_dtype.newbyteorder("="):
            return name
    return None


def encode_tensor(arr, *, field: str = "tensor") -> tuple[bytes, str, list[int]]:
    """numpy array -> (little-endian C-order bytes, dtype name, shape list).

    The array's dtype must be one of SUPPORTED_DTYPES (cast first, e.g. float64 -> float32);
    otherwise WireError(field, ...). Values are not checked (decode_tensor checks them).
    """
    a = np.asarray(arr)
    name = _dtype_name(a.dtype)
    if name is None:
        raise WireError(field, f"unsupported dtype {str(a.dtype)!r} (supported: {', '.join(SUPPORTED_DTYPES)})")
    data = np.ascontiguousarray(a, dtype=SUPPORTED_DTYPES[name]).tobytes(order="C")
    return data, name, [int(d) for d in a.shape]


def _check_shape(field: str, shape) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes, dict)) or not hasattr(shape, "__iter__"):
        raise WireError(field, f"shape must be a list of ints, got {shape!r}")
    shape = list(shape)  # also accepts protobuf repeated fields and tuples
    if len(shape) > MAX_NDIM:
        raise WireError(field, f"shape has {len(shape)} dimensions, more than the maximum {MAX_NDIM}")
    dims = []
    for d in shape:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise WireError(field, f"shape must be a list of ints, got {shape!r}")
        if d < 0:
            raise WireError(field, f"shape has a negative dimension: {[int(v) for v in shape]}")
        dims.append(int(d))
    return tuple(dims)


def decode_tensor(
    data,
    dtype: str,
    shape,
    *,
    field: str = "symbols",
    expected_shape: Sequence[int | None] | None = None,
    expected_dtype: str | None = None,
    max_bytes: int | None = None,
) -> np.ndarray:
    """(bytes, dtype name, shape) -> a writable native-endian numpy array.

    Checks, in order: dtype is supported (and equals `expected_dtype` if given); shape is a
    list of non-negative ints (and matches `expected_shape`, where None entries match any
    size); payload not larger than `max_bytes` (kind="size"); byte length equals
    prod(shape) * itemsize; float/complex values are all finite. Every failure raises
    WireError(field, message) naming the field and the offending value.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise WireError(field, f"data must be bytes, got {type(data).__name__}")
    if not isinstance(dtype, str) or dtype not in SUPPORTED_DTYPES:
        raise WireError(field, f"unknown dtype {dtype!r} (supported: {', '.join(SUPPORTED_DTYPES)})")
    if expected_dtype is not None and dtype != expected_dtype:
        raise WireError(field, f"dtype {dtype!r} does not match the expected dtype {expected_dtype!r}")
    dims = _check_shape(field, shape)
    if expected_shape is not None:
        exp = list(expected_shape)
        ok = len(exp) == len(dims) and all(e is None or int(e) == d for e, d in zip(exp, dims))
        if not ok:
            pretty = "[" + ", ".join("*" if e is None else str(e) for e in exp) + "]"
            raise WireError(field, f"shape {list(dims)} does not match the expected shape {pretty}")
    wire_dtype = SUPPORTED_DTYPES[dtype]
    nbytes = len(data) if not isinstance(data, memoryview) else data.nbytes
    expected_nbytes = math.prod(dims) * wire_dtype.itemsize
    if max_bytes is not None and max(nbytes, expected_nbytes) > max_bytes:
        raise WireError(
            field,
            f"payload too large: {max(nbytes, expected_nbytes)} bytes (shape {list(dims)}, {dtype}) > limit {max_bytes}",
            kind="size",
        )
    if nbytes != expected_nbytes:
        raise WireError(
            field,
            f"byte length {nbytes} does not match shape {list(dims)} x {dtype} "
            f"({wire_dtype.itemsize} bytes each) = {expected_nbytes}",
        )
    arr = np.frombuffer(data, dtype=wire_dtype).reshape(dims).astype(wire_dtype.newbyteorder("="))  # copy: writable, native order
    if dtype in _INEXACT and arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(-1)))[0])
        raise WireError(field, f"non-finite value {arr.reshape(-1)[bad]} at flat index {bad} (NaN/Inf not allowed)")
    return arr
