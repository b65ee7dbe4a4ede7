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

    def __call__(self, x: np.ndarray, noise_var, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        x = _require_complex_2d(x)
        rng = _require_rng(rng)
        rdt = _real_dtype(x)
        h = self.sample_gain(x.shape[0], x.shape[1], rng, dtype=x.dtype)
        nv = _noise_var_column(noise_var, x.shape[0], rdt)  # [B, 1]
        n = _complex_normal(rng, x.shape, rdt, nv)  # [B, K]
        return (h * x + n).astype(x.dtype, copy=False), h

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class RayleighBlockFading(AWGN):
    """Flat Rayleigh block fading: y = h x + n, one h ~ CN(0, 1) per row, constant over its symbols."""

    name = "rayleigh"

    def sample_gain(self, batch, num_symbols, rng, dtype=np.complex64):
        return _complex_normal(rng, (batch, 1), _real_of(dtype)).astype(dtype)  # [B, 1]


class RayleighFastFading(AWGN):
    """Flat Rayleigh fast fading: y_k = h_k x_k + n_k, one independent h_k ~ CN(0, 1) per symbol."""

    name = "rayleigh_fast"

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
    x = _require_complex_2d(x)
    if not isinstance(fading, str) or fading not in FADINGS:
        raise ValueError(f"fading must be one of {list(FADINGS)}, got {fading!r}")
    if not isinstance(equalizer, str) or equalizer not in EQUALIZERS:
        raise ValueError(f"equalizer must be one of {list(EQUALIZERS)}, got {equalizer!r}")
    rng = _require_rng(rng)
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one symbol per row, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite, got NaN or Inf values")
    snr = _snr_db_vector(snr_db, x.shape[0])
    noise_var = snr_db_to_noise_var(snr).astype(_real_dtype(x))  # [B]
    channel = make_channel(fading, k_factor)
    y, h = channel(x, noise_var, rng)
    if equalize:
        y = make_equalizer(equalizer)(y, h, noise_var)
    return y, h, noise_var
