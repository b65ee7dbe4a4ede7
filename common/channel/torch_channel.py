"""Channel models in torch: the training twin of `numpy_channel` (same names, same conventions).

* Symbol mapping ``z_k = x[k] + j * x[K + k]`` (first half real, second half imaginary, zero pad
  to ``2K``, ``K = ceil(N / 2)``); rows normalized to ``mean_k |z_k|^2 = 1``.
* ``noise_var = sigma^2 = 10^(-snr_db / 10)`` per complex symbol (``sigma^2 / 2`` per real dim).
* ``E|h|^2 = 1``; block fading: one ``h`` per row, fast fading: one per symbol.
* Everything is differentiable with respect to ``x`` (gradients flow through the channel,
  the equalizer, ``normalize_power`` and the real/complex mapping). Device and dtype follow
  ``x`` (complex64 or complex128). Randomness comes from an optional ``torch.Generator``
  (``None`` uses torch's global generator); the generator must live on ``x``'s device.
  Within one call ``h`` is drawn first, then the noise.
* Unlike the numpy twin, `simulate` does not scan ``x`` for NaN/Inf; the other inputs are
  validated the same way.
* ``FADINGS``, ``EQUALIZERS`` and the defaults are the numpy twin's (imported, not redefined).

Statistics match the numpy twin; the random streams themselves differ (different generators).
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import torch
from torch import Tensor, nn

# The names and defaults are the numpy twin's (one definition for both twins).
from rkdsc.common.channel.numpy_channel import DEFAULT_EQUALIZER, DEFAULT_K_FACTOR, EQUALIZERS, FADINGS

__all__ = [
    "FADINGS",
    "EQUALIZERS",
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


# --------------------------------------------------------------------------- validation


def _require_complex_2d(x, name: str = "x") -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be complex [B, K] (ndim 2), got ndim {x.ndim} with shape {tuple(x.shape)}")
    if not x.is_complex():
        raise ValueError(f"{name} must be a complex tensor [B, K], got dtype {x.dtype}")
    return x


def _real_of(dtype: torch.dtype) -> torch.dtype:
    """complex64 -> float32, complex128 -> float64 (complex32 promoted to float32)."""
    return torch.float64 if dtype == torch.complex128 else torch.float32


def _require_generator(generator) -> torch.Generator | None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"rng must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _noise_var_column(noise_var, batch: int, like: Tensor) -> Tensor:
    """Scalar / [B] (float, array or tensor) -> real [B, 1] on like's device (differentiable if a tensor)."""
    rdt = _real_of(like.dtype)
    if isinstance(noise_var, Tensor):
        nv = noise_var.to(device=like.device, dtype=rdt)
    else:
        nv = torch.as_tensor(np.asarray(noise_var, dtype=np.float64), dtype=rdt, device=like.device)
    if nv.ndim == 0:
        nv = nv.expand(batch)
    elif nv.ndim != 1 or nv.shape[0] != batch:
        raise ValueError(f"noise_var must be a scalar or shape ({batch},), got shape {tuple(nv.shape)}")
    if not bool(torch.isfinite(nv).all()) or bool((nv < 0).any()):
        raise ValueError(f"noise_var must be finite and >= 0, got {nv.detach().cpu().tolist()[:8]}")
    return nv[:, None]


def _complex_normal(shape, like_dtype: torch.dtype, device, generator, var: float | Tensor = 1.0) -> Tensor:
    """Samples of CN(0, var): var/2 per real dimension. `var` broadcasts against `shape`."""
    rdt = _real_of(like_dtype)
    re = torch.randn(shape, generator=generator, dtype=rdt, device=device)
    im = torch.randn(shape, generator=generator, dtype=rdt, device=device)
    scale = torch.sqrt(torch.as_tensor(var, dtype=rdt, device=device) / 2)
    return torch.complex(re * scale, im * scale)


# --------------------------------------------------------------------------- deterministic helpers


def snr_db_to_noise_var(snr_db):
    """SNR in dB (Es/N0 per complex symbol) -> sigma^2 = 10^(-snr_db/10). Float in, float out;
    tensor in, tensor out (same device/dtype, float32 for integer tensors)."""
    if isinstance(snr_db, Tensor):
        s = snr_db if snr_db.is_floating_point() else snr_db.to(torch.float32)
        return torch.pow(10.0, -s / 10.0)
    if isinstance(snr_db, Real):
        return 10.0 ** (-float(snr_db) / 10.0)
    return np.power(10.0, -np.asarray(snr_db, dtype=np.float64) / 10.0)


def normalize_power(x: Tensor) -> Tensor:
    """Scale each row of complex `x` [B, K] to mean_k |z_k|^2 = 1 (all-zero rows stay zero, no NaN;
    gradients stay finite there too)."""
    x = _require_complex_2d(x)
    if x.shape[1] == 0:
        return x.clone()
    power = (x.real.square() + x.imag.square()).mean(dim=1, keepdim=True)  # [B, 1]
    nonzero = power > 0
    scale = torch.where(nonzero, torch.rsqrt(torch.where(nonzero, power, torch.ones_like(power))), torch.zeros_like(power))
    return x * scale


def real_to_complex(x: Tensor) -> Tensor:
    """Real [B, N] -> complex [B, K], K = ceil(N / 2): zero pad to 2K, z_k = x[k] + j x[K + k].

    float32 / float16 / bfloat16 give complex64, float64 gives complex128 (like the numpy twin).
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"x must be real [B, N] (ndim 2), got ndim {x.ndim} with shape {tuple(x.shape)}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"x must be a real (float or integer) tensor, got dtype {x.dtype}")
    rdt = torch.float64 if x.dtype in (torch.float64, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8) else torch.float32
    x = x.to(rdt)
    n = x.shape[1]
    k = (n + 1) // 2
    if 2 * k != n:
        x = torch.nn.functional.pad(x, (0, 2 * k - n))  # [B, 2K]
    return torch.complex(x[:, :k], x[:, k:])


def complex_to_real(z: Tensor, n: int) -> Tensor:
    """Inverse of `real_to_complex`: complex [B, K] -> real [B, n]; requires ceil(n / 2) == K."""
    z = _require_complex_2d(z, "z")
    k = z.shape[1]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0 or (int(n) + 1) // 2 != k:
        raise ValueError(f"n must be an integer with ceil(n / 2) == K = {k} (i.e. {max(2 * k - 1, 0)} or {2 * k}), got {n!r}")
    return torch.cat([z.real, z.imag], dim=1)[:, : int(n)]


# --------------------------------------------------------------------------- channel blocks


class AWGN(nn.Module):
    """Additive white Gaussian noise: y = x + n, n ~ CN(0, noise_var). Returns (y, h = ones [B, 1])."""

    name = "awgn"

    def sample_gain(self, batch: int, num_symbols: int, generator=None, dtype=torch.complex64, device=None) -> Tensor:
        return torch.ones((batch, 1), dtype=dtype, device=device)  # [B, 1]

    def forward(self, x: Tensor, noise_var, rng: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        x = _require_complex_2d(x)
        rng = _require_generator(rng)
        h = self.sample_gain(x.shape[0], x.shape[1], rng, dtype=x.dtype, device=x.device)
        nv = _noise_var_column(noise_var, x.shape[0], x)  # [B, 1]
        n = _complex_normal(tuple(x.shape), x.dtype, x.device, rng, nv)  # [B, K]
        return h * x + n, h


class RayleighBlockFading(AWGN):
    """Flat Rayleigh block fading: y = h x + n, one h ~ CN(0, 1) per row, constant over its symbols."""

    name = "rayleigh"

    def sample_gain(self, batch, num_symbols, generator=None, dtype=torch.complex64, device=None):
        return _complex_normal((batch, 1), dtype, device, generator).to(dtype)  # [B, 1]


class RayleighFastFading(AWGN):
    """Flat Rayleigh fast fading: y_k = h_k x_k + n_k, one independent h_k ~ CN(0, 1) per symbol."""

    name = "rayleigh_fast"

    def sample_gain(self, batch, num_symbols, generator=None, dtype=torch.complex64, device=None):
        return _complex_normal((batch, num_symbols), dtype, device, generator).to(dtype)  # [B, K]


class RicianBlockFading(AWGN):
    """Flat Rician block fading with E|h|^2 = 1 exactly:
    h = sqrt(K / (K + 1)) * exp(j * los_phase_rad) + sqrt(1 / (K + 1)) * CN(0, 1), one per row."""

    name = "rician"

    def __init__(self, k_factor: float = DEFAULT_K_FACTOR, los_phase_rad: float = 0.0):
        super().__init__()
        if isinstance(k_factor, bool) or not isinstance(k_factor, Real) or not math.isfinite(k_factor) or k_factor < 0:
            raise ValueError(f"k_factor must be a finite number >= 0, got {k_factor!r}")
        if isinstance(los_phase_rad, bool) or not isinstance(los_phase_rad, Real) or not math.isfinite(los_phase_rad):
            raise ValueError(f"los_phase_rad must be a finite number, got {los_phase_rad!r}")
        self.k_factor = float(k_factor)
        self.los_phase_rad = float(los_phase_rad)

    def sample_gain(self, batch, num_symbols, generator=None, dtype=torch.complex64, device=None):
        k = self.k_factor
        los = math.sqrt(k / (k + 1.0)) * complex(math.cos(self.los_phase_rad), math.sin(self.los_phase_rad))
        scatter = _complex_normal((batch, 1), dtype, device, generator, 1.0 / (k + 1.0))
        return (scatter + los).to(dtype)  # [B, 1]

    def extra_repr(self) -> str:
        return f"k_factor={self.k_factor}, los_phase_rad={self.los_phase_rad}"


# --------------------------------------------------------------------------- equalizers


def _check_equalizer_inputs(y, h):
    y = _require_complex_2d(y, "y")
    if not isinstance(h, Tensor) or h.ndim != 2 or h.shape[0] != y.shape[0] or h.shape[1] not in (1, y.shape[1]):
        shape = tuple(h.shape) if isinstance(h, Tensor) else type(h).__name__
        raise ValueError(f"h must be a tensor of shape ({y.shape[0]}, 1) or {tuple(y.shape)}, got {shape}")
    return y, h


class MMSE(nn.Module):
    """Per-symbol linear MMSE with perfect CSI: z_hat = conj(h) y / (|h|^2 + noise_var)."""

    name = "mmse"

    def forward(self, y: Tensor, h: Tensor, noise_var) -> Tensor:
        y, h = _check_equalizer_inputs(y, h)
        nv = _noise_var_column(noise_var, y.shape[0], y)  # [B, 1]
        return torch.conj(h) * y / (h.real.square() + h.imag.square() + nv)


class ZF(nn.Module):
    """Zero-forcing with perfect CSI: z_hat = y / h (noise_var accepted and ignored)."""

    name = "zf"

    def forward(self, y: Tensor, h: Tensor, noise_var=None) -> Tensor:
        y, h = _check_equalizer_inputs(y, h)
        return y / h


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


def make_equalizer(equalizer: str) -> nn.Module:
    """Equalizer block for a name in EQUALIZERS."""
    if equalizer == "mmse":
        return MMSE()
    if equalizer == "zf":
        return ZF()
    raise ValueError(f"equalizer must be one of {list(EQUALIZERS)}, got {equalizer!r}")


def _snr_db_vector(snr_db, batch: int, like: Tensor) -> Tensor:
    rdt = _real_of(like.dtype)
    if isinstance(snr_db, Tensor):
        s = snr_db.detach().to(device=like.device, dtype=rdt)
    else:
        if isinstance(snr_db, (str, bytes)):
            raise ValueError(f"snr_db must be a float or a [B] tensor/array, got {snr_db!r}")
        try:
            s = torch.as_tensor(np.asarray(snr_db, dtype=np.float64), dtype=rdt, device=like.device)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"snr_db must be a float or a [B] tensor/array, got {snr_db!r}") from exc
    if s.ndim == 0:
        s = s.expand(batch)
    elif s.ndim != 1 or s.shape[0] != batch:
        raise ValueError(f"snr_db must be a float or shape ({batch},) to match x [B={batch}, K], got shape {tuple(s.shape)}")
    finite = torch.isfinite(s)
    if not bool(finite.all()):
        idx = int((~finite).nonzero()[0, 0])
        raise ValueError(f"snr_db must be finite, got {float(s[idx])} (at index {idx})")
    return s


def simulate(
    x: Tensor,
    snr_db,
    fading: str,
    rng: torch.Generator | None = None,
    equalize: bool = True,
    equalizer: str = DEFAULT_EQUALIZER,
    *,
    k_factor: float = DEFAULT_K_FACTOR,
) -> tuple[Tensor, Tensor, Tensor]:
    """Send complex symbols `x` [B, K] through a channel; return (y, h, noise_var). Differentiable in x.

    snr_db: float, [B] tensor or array (per-sample Es/N0 in dB; no gradient through it);
    fading: one of FADINGS ("rician" uses `k_factor`); rng: torch.Generator or None.
    equalize=True returns the MMSE/ZF estimate (perfect CSI), equalize=False the raw y = h x + n.
    h: [B, 1] for AWGN (ones) and block fading, [B, K] for "rayleigh_fast"; noise_var: real [B].
    """
    x = _require_complex_2d(x)
    if not isinstance(fading, str) or fading not in FADINGS:
        raise ValueError(f"fading must be one of {list(FADINGS)}, got {fading!r}")
    if not isinstance(equalizer, str) or equalizer not in EQUALIZERS:
        raise ValueError(f"equalizer must be one of {list(EQUALIZERS)}, got {equalizer!r}")
    rng = _require_generator(rng)
    if x.shape[1] == 0:
        raise ValueError(f"x must have at least one symbol per row, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.complex64, torch.complex128):
        x = x.to(torch.complex64)
    snr = _snr_db_vector(snr_db, x.shape[0], x)
    noise_var = snr_db_to_noise_var(snr)  # [B]
    channel = make_channel(fading, k_factor)
    y, h = channel(x, noise_var, rng)
    if equalize:
        y = make_equalizer(equalizer)(y, h, noise_var)
    return y, h, noise_var
