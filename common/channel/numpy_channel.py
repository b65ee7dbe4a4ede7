"""Channel models in numpy (used by the base-station relay; no torch).

Conventions (docs/architecture.md "Symbol mapping", design note "Channel conventions"):

* Symbol mapping: a real vector ``x`` of length ``N`` is zero-padded to ``2K`` with
  ``K = ceil(N / 2)`` and mapped **first half real, second half imaginary**:
  ``z_k = x[k] + j * x[K + k]``.
* Each transmitted row is normalized to unit average power, ``mean_k |z_k|^2 = 1``.
* SNR is ``Es/N0`` per complex symbol: ``n ~ CN(0, sigma^2)`` with
  ``sigma^2 = noise_var = 10^(-snr_db / 10)``, i.e. ``sigma^2 / 2`` per real dimension.
* Fading gains have ``E|h|^2 = 1``. Block fading draws one ``h`` per row (frame/image),
  constant over its ``K`` symbols; fast fading draws one ``h`` per symbol.
* The receiver has perfect CSI: every channel block returns ``(y, h)``.
* Random numbers always come from an explicit ``numpy.random.Generator``. Within one call
  the gain ``h`` is drawn first, then the noise (real parts, then imaginary parts).

Shapes: ``x`` complex ``[B, K]``; ``noise_var`` a scalar or ``[B]``; ``h`` ``[B, 1]`` for
AWGN (ones) and block fading, ``[B, K]`` for fast fading.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

__all__ = [
    "FADINGS",
    "EQUALIZERS",
    "DEFAULT_FADING",
    "DEFAULT_EQUALIZER",
    "DEFAULT_K_FACTOR",
    "AWGN",
    "RayleighBlockFading",
    "RayleighFastFading",
    "RicianBlockFading",
    "MMSE",
    "ZF",
    "normalize_power",
    "real_to_complex",
    "complex_to_real",
    "snr_db_to_noise_var",
    "make_channel",
    "make_equalizer",
    "simulate",
    "simulate_frames",
    "FrameChannel",
]

# The channel conventions' names and defaults, defined once here for the whole project
# (re-exported by rkdsc.common.channel; torch_channel, the topology config and the services
# import them from here).
FADINGS = ("awgn", "rayleigh", "rayleigh_fast", "rician")  # names accepted by simulate()
EQUALIZERS = ("mmse", "zf")  # names accepted by simulate(equalizer=...)
DEFAULT_FADING = "awgn"  # a link without a fading setting (topology config default)
DEFAULT_EQUALIZER = "mmse"  # simulate()'s equalizer when none is given
DEFAULT_K_FACTOR = 3.0  # Rician K factor (LOS power / scatter power) when none is given


# --------------------------------------------------------------------------- validation


def _require_complex_2d(x, name: str = "x") -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be complex [B, K] (ndim 2), got ndim {x.ndim} with shape {x.shape}")
    if not np.iscomplexobj(x):
        raise ValueError(f"{name} must be a complex array [B, K], got dtype {x.dtype}")
    return x


def _real_of(dtype) -> np.dtype:
    """complex64 -> float32, anything else (complex128) -> float64."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.complex64 else np.dtype(np.float64)


def _real_dtype(x: np.ndarray) -> np.dtype:
    return _real_of(x.dtype)


def _noise_var_column(noise_var, batch: int, dtype: np.dtype) -> np.ndarray:
    """Scalar or [B] noise variance -> [B, 1] column (validated: finite, >= 0)."""
    nv = np.asarray(noise_var, dtype=np.float64)
    if nv.ndim == 0:
        nv = np.full((batch,), float(nv))
    elif nv.ndim != 1 or nv.shape[0] != batch:
        raise ValueError(f"noise_var must be a scalar or shape ({batch},), got shape {nv.shape}")
    if not np.all(np.isfinite(nv)) or np.any(nv < 0):
        raise ValueError(f"noise_var must be finite and >= 0, got {nv.tolist() if nv.size <= 8 else nv}")
    return nv.astype(dtype, copy=False)[:, None]


def _require_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator (e.g. np.random.default_rng(0)), got {type(rng).__name__}")
    return rng


def _complex_normal(rng: np.random.Generator, shape, real_dtype: np.dtype, var: float | np.ndarray = 1.0) -> np.ndarray:
    """Samples of CN(0, var): var/2 per real dimension. `var` broadcasts against `shape`."""
    re = rng.standard_normal(shape, dtype=real_dtype)
    im = rng.standard_normal(shape, dtype=real_dtype)
    scale = np.sqrt(np.asarray(var, dtype=real_dtype) / 2).astype(real_dtype)
    return (re * scale + 1j * (im * scale)).astype(np.result_type(real_dtype, np.complex64))


# --------------------------------------------------------------------------- deterministic helpers


def snr_db_to_noise_var(snr_db):
    """SNR in dB (Es/N0 per complex symbol) -> complex noise variance sigma^2 = 10^(-snr_db/10).

    Each real dimension then carries sigma^2 / 2. Accepts a float or an array (returned as array).
    """
    noise_var = np.power(10.0, -np.asarray(snr_db, dtype=np.float64) / 10.0)
    return float(noise_var) if isinstance(snr_db, Real) else noise_var


def normalize_power(x: np.ndarray) -> np.ndarray:
    """Scale each row of complex `x` [B, K] to unit average power mean_k |z_k|^2 = 1.

    All-zero rows stay zero (no NaN). Returns a new array with the dtype of `x`.
    """
    x = _require_complex_2d(x)
    if x.shape[1] == 0:
        return x.copy()
    power = np.mean(x.real.astype(np.float64) ** 2 + x.imag.astype(np.float64) ** 2, axis=1, keepdims=True)  # [B, 1]
    scale = np.where(power > 0, 1.0 / np.sqrt(np.where(power > 0, power, 1.0)), 0.0)
    return (x * scale.astype(_real_dtype(x))).astype(x.dtype, copy=False)


def real_to_complex(x: np.ndarray) -> np.ndarray:
    """Real [B, N] -> complex [B, K], K = ceil(N / 2): zero pad to 2K, z_k = x[k] + j x[K + k].

    float32 / float16 input gives complex64, float64 (or integer) input gives complex128.
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be real [B, N] (ndim 2), got ndim {x.ndim} with shape {x.shape}")
    if np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"x must be a real (float or integer) array, got dtype {x.dtype}")
    real_dtype = np.float32 if x.dtype in (np.float16, np.float32) else np.float64
    b, n = x.shape
    k = (n + 1) // 2
    padded = np.zeros((b, 2 * k), dtype=real_dtype)
    padded[:, :n] = x
    return (padded[:, :k] + 1j * padded[:, k:]).astype(np.result_type(real_dtype, np.complex64))


def complex_to_real(z: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `real_to_complex`: complex [B, K] -> real [B, n] (concat real, imag; drop padding).

    `n` must satisfy ceil(n / 2) == K. complex64 gives float32, complex128 gives float64.
    """
    z = _require_complex_2d(z, "z")
    k = z.shape[1]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or (int(n) + 1) // 2 != k:
        raise ValueError(f"n must be an integer with ceil(n / 2) == K = {k} (i.e. {max(2 * k - 1, 0)} or {2 * k}), got {n!r}")
    return np.concatenate([z.real, z.imag], axis=1)[:, : int(n)].astype(_real_dtype(z), copy=False)


# --------------------------------------------------------------------------- channel blocks


class AWGN:
    """Additive white Gaussian noise: y = x + n, n ~ CN(0, noise_var). Returns (y, h = ones [B, 1])."""

    name = "awgn"

    def sample_gain(self, batch: int, num_symbols: int, rng: np.random.Generator, dtype=np.complex64) -> np.ndarray:
        return np.ones((batch, 1), dtype=dtype)  # [B, 1]

    def gain_normals_per_row(self, num_symbols: int) -> int:
        """Standard normals ``sample_gain`` draws per row (frame)."""
        return 0

    def normals_per_row(self, num_symbols: int) -> int:
        """Standard normals one row (frame) of ``__call__`` draws: the gain's, then 2K of noise."""
        return self.gain_normals_per_row(num_symbols) + 2 * num_symbols

    def __call__(self, x: np.ndarray, noise_var, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = _require_complex_2d(x)
        rng = _require_rng(rng)
        nv = _noise_var_column(noise_var, x.shape[0], _real_dtype(x))  # [B, 1]
        return self._apply(x, nv, rng)

    def _apply(self, x: np.ndarray, nv: np.ndarray, normals) -> tuple[np.ndarray, np.ndarray]:
        # normals: a Generator, or _RowOrderedNormals (simulate_frames)
        h = self.sample_gain(x.shape[0], x.shape[1], normals, dtype=x.dtype)
        n = _complex_normal(normals, x.shape, _real_dtype(x), nv)  # [B, K]
        return (h * x + n).astype(x.dtype, copy=False), h

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RayleighBlockFading(AWGN):
    """Flat Rayleigh block fading: y = h x + n, one h ~ CN(0, 1) per row, constant over its symbols."""

    name = "rayleigh"

    def gain_normals_per_row(self, num_symbols: int) -> int:
        return 2

    def sample_gain(self, batch, num_symbols, rng, dtype=np.complex64):
        return _complex_normal(rng, (batch, 1), _real_of(dtype)).astype(dtype)  # [B, 1]


class RayleighFastFading(AWGN):
    """Flat Rayleigh fast fading: y_k = h_k x_k + n_k, one independent h_k ~ CN(0, 1) per symbol."""

    name = "rayleigh_fast"

    def gain_normals_per_row(self, num_symbols: int) -> int:
        return 2 * num_symbols

    def sample_gain(self, batch, num_symbols, rng, dtype=np.complex64):
        return _complex_normal(rng, (batch, num_symbols), _real_of(dtype)).astype(dtype)  # [B, K]


class RicianBlockFading(AWGN):
    """Flat Rician block fading with E|h|^2 = 1 exactly.

    h = sqrt(K / (K + 1)) * exp(j * los_phase_rad) + sqrt(1 / (K + 1)) * CN(0, 1), one per row.
    K = 0 is Rayleigh; K -> inf tends to AWGN.
    """

    name = "rician"

    def __init__(self, k_factor: float = DEFAULT_K_FACTOR, los_phase_rad: float = 0.0):
        if isinstance(k_factor, bool) or not isinstance(k_factor, Real) or not math.isfinite(k_factor) or k_factor < 0:
            raise ValueError(f"k_factor must be a finite number >= 0, got {k_factor!r}")
        if isinstance(los_phase_rad, bool) or not isinstance(los_phase_rad, Real) or not math.isfinite(los_phase_rad):
            raise ValueError(f"los_phase_rad must be a finite number, got {los_phase_rad!r}")
        self.k_factor = float(k_factor)
        self.los_phase_rad = float(los_phase_rad)

    def gain_normals_per_row(self, num_symbols: int) -> int:
        return 2

    def sample_gain(self, batch, num_symbols, rng, dtype=np.complex64):
        k = self.k_factor
        los = math.sqrt(k / (k + 1.0)) * complex(math.cos(self.los_phase_rad), math.sin(self.los_phase_rad))
        scatter = _complex_normal(rng, (batch, 1), _real_of(dtype), 1.0 / (k + 1.0))
        return (los + scatter).astype(dtype)  # [B, 1]

    def __repr__(self) -> str:
        return f"RicianBlockFading(k_factor={self.k_factor}, los_phase_rad={self.los_phase_rad})"


# --------------------------------------------------------------------------- equalizers


def _check_equalizer_inputs(y, h):
    y = _require_complex_2d(y, "y")
    h = np.asarray(h)
    if h.ndim != 2 or h.shape[0] != y.shape[0] or h.shape[1] not in (1, y.shape[1]):
        raise ValueError(f"h must have shape ({y.shape[0]}, 1) or {y.shape}, got {h.shape}")
    return y, h


class MMSE:
    """Per-symbol linear MMSE with perfect CSI: z_hat = conj(h) y / (|h|^2 + noise_var)."""

    name = "mmse"

    def __call__(self, y: np.ndarray, h: np.ndarray, noise_var) -> np.ndarray:
        y, h = _check_equalizer_inputs(y, h)
        nv = _noise_var_column(noise_var, y.shape[0], _real_dtype(y))  # [B, 1]
        return (np.conj(h) * y / (h.real**2 + h.imag**2 + nv)).astype(y.dtype, copy=False)


class ZF:
    """Zero-forcing with perfect CSI: z_hat = y / h (noise_var accepted and ignored)."""

    name = "zf"

    def __call__(self, y: np.ndarray, h: np.ndarray, noise_var=None) -> np.ndarray:
        y, h = _check_equalizer_inputs(y, h)
        return (y / h).astype(y.dtype, copy=False)


# --------------------------------------------------------------------------- factory + simulate


def make_channel(fading: str, k_factor: float = DEFAULT_K_FACTOR) -> AWGN:
    """Channel block for a fading name in FADINGS."""
    if fading == "awgn":
        return AWGN()
    if fading == "rayleigh":
        return RayleighBlockFading()
    if fading == "rayleigh_fast":
        return RayleighFastFading()
    if fading == "rician":
        return RicianBlockFading(k_factor)
    raise ValueError(f"fading must be one of {list(FADINGS)}, got {fading!r}")


def make_equalizer(equalizer: str):
    """Equalizer block for a name in EQUALIZERS."""
    if equalizer == "mmse":
        return MMSE()
    if equalizer == "zf":
        return ZF()
    raise ValueError(f"equalizer must be one of {list(EQUALIZERS)}, got {equalizer!r}")


def _snr_db_vector(snr_db, batch: int) -> np.ndarray:
    if isinstance(snr_db, (str, bytes)):
        raise ValueError(f"snr_db must be a float or a [B] array, got {snr_db!r}")
    try:
        s = np.asarray(snr_db, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"snr_db must be a float or a [B] array, got {snr_db!r}") from exc
    if s.ndim == 0:
        s = np.full((batch,), float(s))
    elif s.ndim != 1 or s.shape[0] != batch:
        raise ValueError(f"snr_db must be a float or shape ({batch},) to match x [B={batch}, K], got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        bad = s[~np.isfinite(s)]
        raise ValueError(f"snr_db must be finite, got {bad[0]} (at index {int(np.flatnonzero(~np.isfinite(s))[0])})")
    return s


def simulate(
    x: np.ndarray,
    snr_db,
    fading: str,
    rng: np.random.Generator,
    equalize: bool = True,
    equalizer: str = DEFAULT_EQUALIZER,
    *,
    k_factor: float = DEFAULT_K_FACTOR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Send complex symbols `x` [B, K] through a channel; return (y, h, noise_var).

    snr_db: float or [B] (per-sample Es/N0 in dB); fading: one of FADINGS ("rician" uses
    `k_factor`); rng: numpy.random.Generator. With equalize=True, y is the equalized estimate
    (MMSE or ZF with perfect CSI); with equalize=False, y = h * x + n raw.
    h: [B, 1] for block fading and AWGN (ones), [B, K] for "rayleigh_fast". noise_var: [B].
    The dtype of y and h follows x (complex64 or complex128); noise_var is the matching float.
    """
    x, noise_var, channel = _simulate_inputs(x, snr_db, fading, rng, equalizer, k_factor)
    y, h = channel._apply(x, noise_var[:, None], rng)
    if equalize:
        y = make_equalizer(equalizer)(y, h, noise_var)
    return y, h, noise_var


def simulate_frames(
    x: np.ndarray,
    snr_db,
    fading: str,
    rng: np.random.Generator,
    equalize: bool = True,
    equalizer: str = DEFAULT_EQUALIZER,
    *,
    k_factor: float = DEFAULT_K_FACTOR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``simulate`` for B frames of one link in one vectorized call, with the draws of B
    one-frame calls: the result equals, bit for bit, ``simulate(x[i:i + 1], snr_db[i], ...)``
    called for i = 0, 1, ..., B - 1 in order on the same Generator, and leaves it in the same
    state. (``simulate`` itself draws every row's gain first, then all the noise, so its
    draws depend on how frames are grouped; this one does not: the k-th frame of a link sees
    the k-th frame's draws however the frames travel.) Same arguments and returns; the
    arithmetic is ``FrameChannel``'s."""
    x, noise_var, _ = _simulate_inputs(x, snr_db, fading, rng, equalizer, k_factor)
    return FrameChannel(fading, k_factor, equalizer if equalize else None).run(x, noise_var, rng)


_SCALARS = (float, np.float32, np.float64)  # noise_var types taken as one value for the whole message


class FrameChannel:
    """One link's channel for whole messages of frames: ``simulate_frames`` with the fading, the
    K factor and the equalizer fixed, and each call cut to its arithmetic (about ten numpy
    operations, no checks: the caller validates at its boundary, as the relay does).

        fc = FrameChannel("rayleigh", equalizer="mmse")
        y, h, noise_var = fc.run(x [B, K] complex64, noise_var (float or [B]), rng)

    The operations are those of the channel blocks and equalizers above, in the same dtype
    (skipping only multiplications by an AWGN gain of exactly 1), so the results equal
    ``simulate`` one frame at a time bit for bit (tests/common/channel); draws are row-ordered
    as in ``simulate_frames``. The returned ``h`` of AWGN and ``noise_var`` are read-only arrays
    shared between calls with the same noise variance and batch size. Not thread-safe: it draws
    into one buffer per message shape, so it is one link's, called under the link's lock (as its
    Generator must be anyway)."""

    def __init__(self, fading: str, k_factor: float = DEFAULT_K_FACTOR, equalizer: str | None = DEFAULT_EQUALIZER):
        self.block = make_channel(fading, k_factor)
        self.fading = fading
        self.equalizer = equalizer
        self._plans: dict = {}  # (B, K, dtype) -> _plan (draw buffer, views, constants per noise_var)
        if equalizer is not None and equalizer not in EQUALIZERS:
            raise ValueError(f"equalizer must be one of {list(EQUALIZERS)} or None, got {equalizer!r}")

    def run(self, x: np.ndarray, noise_var, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b, k = x.shape
        plan = self._plans.get((b, k, x.dtype))
        if plan is None:
            plan = self._plan(b, k, x.dtype)
        rdt, g, u, noise_t, consts = plan
        rng.standard_normal(dtype=rdt, out=u)                               # [B, g + 2K], row i: frame i's draws
        scalar = type(noise_var) in _SCALARS or np.ndim(noise_var) == 0
        if scalar:  # one link SNR for the message: the per-SNR constants are computed once
            c = consts.get(noise_var) if type(noise_var) in _SCALARS else None
            if c is None:
                c = self._constants(float(noise_var), b, rdt, x.dtype, consts)
            nv_col, scale, den, nv_rows, ones = c
        else:
            nv_rows = np.asarray(noise_var, dtype=rdt)
            nv_col = nv_rows[:, None]                                       # [B, 1]
            scale = np.sqrt(nv_col / 2).astype(rdt)[:, :, None]             # [B, 1, 1]
            den = np.repeat(rdt(1) / (rdt(1) + nv_rows), 2 * k).reshape(b, 2 * k)  # [B, 2K]: 1 / (1 + nv)
            ones = np.ones((b, 1), dtype=x.dtype)
        y = np.empty((b, k), dtype=x.dtype)                                 # n ~ CN(0, noise_var), then y
        yv = y.view(rdt)                                                    # [B, 2K]: (re, im) pairs
        # row layout of u: [gain | re K | im K] -> the interleaved pairs of y, scaled in one call
        # (written through y's [B, 2, K] transposed view: the inner loop runs over K, not over 2)
        np.multiply(noise_t, scale, out=yv.reshape(b, k, 2).transpose(0, 2, 1))
        if g == 0:                                                          # AWGN: h = 1, y = x + n
            h = ones
            np.add(x, y, out=y)
            if self.equalizer == "mmse":
                # conj(1) y / (1 + nv): the complex division by a real denominator d is, in numpy's
                # (Smith's) algorithm, each part times the reciprocal 1 / d: a float multiply
                np.multiply(yv, den, out=yv)
            return y, h, nv_rows
        h = self.block.sample_gain(b, k, _RowOrderedNormals(u[:, :g]), dtype=x.dtype)  # [B, 1|K]
        y = h * x + y
        if self.equalizer == "mmse":
            y = np.conj(h) * y / (h.real**2 + h.imag**2 + nv_col)
        elif self.equalizer == "zf":
            y = y / h
        return y.astype(x.dtype, copy=False), h, nv_rows

    def _plan(self, b: int, k: int, cdt: np.dtype) -> tuple:
        """Per message shape: the real dtype, the gain's normals per row, a draw buffer [B, g + 2K]
        reused by every call of that shape (a FrameChannel is one link's, called under its lock),
        the noise part of it as [B, 2, K], and the per-noise-variance constants."""
        rdt = np.float32 if cdt == np.complex64 else np.float64
        g = self.block.gain_normals_per_row(k)
        u = np.empty((b, g + 2 * k), dtype=rdt)
        plan = (rdt, g, u, u[:, g:].reshape(b, 2, k), {})
        if len(self._plans) >= 64:
            self._plans.clear()
        self._plans[(b, k, cdt)] = plan
        return plan

    @staticmethod
    def _constants(noise_var: float, b: int, rdt, cdt, cache: dict) -> tuple:
        """(noise_var, its per-dimension scale, 1 / the AWGN MMSE denominator, noise_var [B], ones [B, 1])
        for a scalar noise variance, computed as ``simulate`` computes them and kept for the next
        call (read-only arrays: they are shared between calls)."""
        nv = rdt(noise_var)
        # 0-d arrays, not numpy scalars: a ufunc takes them several times faster
        c = (nv, np.sqrt(np.asarray(nv) / 2).astype(rdt), np.asarray(rdt(1) / (rdt(1) + nv), dtype=rdt),
             np.full((b,), nv, dtype=rdt), np.ones((b, 1), dtype=cdt))
        for arr in c[3:]:
            arr.flags.writeable = False
        if len(cache) >= 64:
            cache.clear()
        cache[noise_var] = c
        return c


class _RowOrderedNormals:
    """Stands in for the Generator inside a ``FrameChannel`` call: each ``standard_normal`` of
    shape (B, c) a channel block asks for is the next c columns of ``block`` [B, per], whose
    rows were drawn one frame after another (row i = what frame i alone would have drawn)."""

    def __init__(self, block: np.ndarray):
        self.block = block
        self.offset = 0

    def standard_normal(self, shape, dtype=None) -> np.ndarray:
        rows, cols = shape
        out = self.block[:, self.offset:self.offset + cols]
        if out.shape != (rows, cols):
            raise RuntimeError(f"a channel block drew more normals than it declared ({self.block.shape[1]} per row)")
        self.offset += cols
        return out


def _simulate_inputs(x, snr_db, fading, rng, equalizer, k_factor):
    x = _require_complex_2d(x)
    if not isinstance(fading, str) or fading not in FADINGS:
        raise ValueError(f"fading must be one of {list(FADINGS)}, got {fading!r}")
    if not isinstance(equalizer, str) or equalizer not in EQUALIZERS:
        raise ValueError(f"equalizer must be one of {list(EQUALIZERS)}, got {equalizer!r}")
    _require_rng(rng)
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one symbol per row, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite, got NaN or Inf values")
    snr = _snr_db_vector(snr_db, x.shape[0])
    noise_var = snr_db_to_noise_var(snr).astype(_real_dtype(x))  # [B]
    return x, noise_var, make_channel(fading, k_factor)
