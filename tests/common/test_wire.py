"""Tests of the tensor wire encoding (rkdsc.common.wire)."""

from __future__ import annotations

import numpy as np
import pytest

from rkdsc.common.wire import SUPPORTED_DTYPES, WireError, decode_tensor, encode_tensor


def sample(dtype: str, shape) -> np.ndarray:
    rng = np.random.default_rng(0)
    if dtype == "complex64":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -(2**40)), min(info.max, 2**40), size=shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", sorted(SUPPORTED_DTYPES))
@pytest.mark.parametrize("shape", [(3, 5), (2, 1, 4), (7,), (), (0, 4)])
def test_round_trip_every_dtype(dtype, shape):
    arr = sample(dtype, shape)
    data, name, dims = encode_tensor(arr)
    assert isinstance(data, bytes) and name == dtype and dims == list(shape)
    assert all(type(d) is int for d in dims)
    assert len(data) == arr.size * arr.itemsize
    out = decode_tensor(data, name, dims, field="x")
    assert out.dtype == np.dtype(dtype) and out.shape == shape
    np.testing.assert_array_equal(out, arr)
    out[...] = 0  # writable copy, independent of the input bytes
    assert decode_tensor(data, name, dims).tolist() == arr.tolist()


def test_wire_is_little_endian_and_c_order():
    data, name, dims = encode_tensor(np.array([1, 256], dtype=np.int32))
    assert data == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    big = np.array([1.5, -2.0], dtype=">f4")
    assert encode_tensor(big)[0] == np.array([1.5, -2.0], dtype="<f4").tobytes()
    assert encode_tensor(big)[1] == "float32"
    fortran = np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3))
    assert encode_tensor(fortran)[0] == bytes([0, 1, 2, 3, 4, 5])
    z = encode_tensor(np.array([1 + 2j], np.complex64))[0]  # real then imaginary float32
    assert z == np.array([1.0, 2.0], "<f4").tobytes()


def test_encode_rejects_unsupported_dtype():
    with pytest.raises(WireError, match=r"^image: unsupported dtype 'float64'") as e:
        encode_tensor(np.zeros(3), field="image")
    assert e.value.field == "image"


GOOD = encode_tensor(np.arange(6, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize(
    "data, dtype, shape, kwargs, pattern",
    [
        (GOOD[0], "float64", [2, 3], {}, r"unknown dtype 'float64'"),
        (GOOD[0], "bfloat16", [2, 3], {}, r"unknown dtype 'bfloat16'"),
        (GOOD[0], "float32", [2, -3], {}, r"negative dimension.*\[2, -3\]"),
        (GOOD[0], "float32", [2, 2.5], {}, r"shape must be a list of ints.*2.5"),
        (GOOD[0], "float32", "2,3", {}, r"shape must be a list of ints.*'2,3'"),
        (GOOD[0], "float32", [1] * 40, {}, r"40 dimensions"),
        (GOOD[0][:-1], "float32", [2, 3], {}, r"byte length 23 .*\[2, 3\].*= 24"),
        (GOOD[0] + b"\x00" * 4, "float32", [2, 3], {}, r"byte length 28 "),
        (GOOD[0], "float32", [3, 3], {}, r"byte length 24 .*\[3, 3\].*= 36"),
        (GOOD[0], "float32", [2, 3], {"expected_shape": [None, 4]}, r"shape \[2, 3\] does not match .*\[\*, 4\]"),
        (GOOD[0], "float32", [2, 3], {"expected_shape": [6]}, r"shape \[2, 3\] does not match .*\[6\]"),
        (GOOD[0], "float32", [2, 3], {"expected_dtype": "complex64"}, r"dtype 'float32' does not match .*'complex64'"),
        ("abc", "float32", [2, 3], {}, r"data must be bytes, got str"),
    ],
)
def test_decode_errors_name_the_field_and_value(data, dtype, shape, kwargs, pattern):
    with pytest.raises(WireError, match=r"^symbols: .*" + pattern) as e:
        decode_tensor(data, dtype, shape, **kwargs)
    assert e.value.field == "symbols" and e.value.kind == "invalid"
    assert isinstance(e.value, ValueError)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", ["float32", "float16", "complex64"])
def test_decode_rejects_non_finite(dtype, bad):
    arr = np.zeros((2, 4), dtype=dtype)
    arr[1, 2] = bad
    data, name, dims = encode_tensor(arr)
    with pytest.raises(WireError, match=r"^logits: non-finite value .*(nan|inf).* flat index 6") as e:
        decode_tensor(data, name, dims, field="logits")
    assert e.value.field == "logits"
    if dtype == "complex64":  # imaginary part alone
        arr = np.zeros(3, np.complex64)
        arr[0] = complex(0, bad)
        with pytest.raises(WireError, match="non-finite"):
            decode_tensor(*encode_tensor(arr))


def test_size_limit_has_kind_size():
    with pytest.raises(WireError, match=r"^image: payload too large: 24 bytes.*limit 16") as e:
        decode_tensor(GOOD[0], "float32", [2, 3], field="image", max_bytes=16)
    assert e.value.kind == "size" and e.value.field == "image"
    # a huge declared shape is a size error before any length check or allocation
    with pytest.raises(WireError, match="payload too large") as e:
        decode_tensor(b"", "float32", [2**31, 2**31], max_bytes=1 << 20)
    assert e.value.kind == "size"
    assert decode_tensor(GOOD[0], "float32", [2, 3], max_bytes=24).shape == (2, 3)  # limit is inclusive


def test_expected_shape_wildcards_and_dtype_pass():
    out = decode_tensor(GOOD[0], "float32", (2, 3), expected_shape=[None, 3], expected_dtype="float32")
    np.testing.assert_array_equal(out, np.arange(6, dtype=np.float32).reshape(2, 3))
    out = decode_tensor(memoryview(GOOD[0]), "float32", np.array([6]), expected_shape=[6])
    assert out.shape == (6,)
