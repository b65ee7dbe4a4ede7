"""Time-correlated Rayleigh fading with a Doppler spread (Clarke 1968 / Jakes 1974), numpy only.

Model (sum of sinusoids, Clarke's isotropic scattering with stratified arrival angles and
random phases, in the spirit of Zheng & Xiao 2003)::

    h(x) = M^(-1/2) * sum_{n=1..M} exp(j (2 pi x cos(alpha_n) + phi_n)),
    alpha_n = (2 pi (n - 1) + theta) / M,   theta, phi_n ~ U[0, 2 pi) i.i.d.

``x`` is the distance moved in wavelengths (``x = s / lambda``; at constant speed
``x = f_d t`` with the maximum Doppler ``f_d = v f_c / c``). Because each ``alpha_n`` is uniform
over its own 1/M of the circle, the ensemble autocorrelation is exactly Clarke's
``E[h(t + tau) h*(t)] = J0(2 pi f_d tau)``, ``E|h|^2 = 1``, real and imaginary parts uncorrelated;
``h`` tends to ``CN(0, 1)`` as M grows (M = 32 by default). Working in distance moved keeps the
correlation right when the speed changes along a trajectory. A device at rest (``f_d = 0``) keeps
one Rayleigh draw for the whole run. Random numbers come only from the given Generator, all at
construction (theta first, then the M phases).
"""
from __future__ import annotations

import math

import numpy as np

from rkdsc.common.channel.pathloss import C_M_PER_S

__all__ = ["doppler_hz", "wavelength_m", "SumOfSinusoidsFading", "bessel_j0"]

DEFAULT_SINUSOIDS = 32


def wavelength_m(fc_ghz: float) -> float:
    return C_M_PER_S / (fc_ghz * 1e9)


def doppler_hz(speed_m_per_s: float, fc_ghz: float) -> float:
    """Maximum Doppler shift ``f_d = v f_c / c`` (Hz) for a speed in m/s and a carrier in GHz."""
    return float(speed_m_per_s) / wavelength_m(fc_ghz)


def bessel_j0(x) -> np.ndarray:
    """J0(x) by the integral ``(1/pi) int_0^pi cos(x sin t) dt`` (composite Simpson, 2001 points:
    error < 1e-12 for |x| < 100). For tests and docs; numpy has no J0."""
    x = np.asarray(x, float)
    t = np.linspace(0.0, math.pi, 2001)
    w = np.ones_like(t)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    vals = np.cos(x[..., None] * np.sin(t))
    return (vals @ w) * (t[1] - t[0]) / 3.0 / math.pi


class SumOfSinusoidsFading:
    """One link's time-correlated Rayleigh gain, ``h(x)`` for ``x`` = distance moved in wavelengths.

    ``at_wavelengths(x)`` accepts a scalar or an array; ``at_time(t_s, f_d_hz)`` is ``x = f_d t``."""

    def __init__(self, rng: np.random.Generator, n_sinusoids: int = DEFAULT_SINUSOIDS):
        if n_sinusoids < 1:
            raise ValueError(f"n_sinusoids: expected an integer >= 1, got {n_sinusoids!r}")
        theta = rng.uniform(0.0, 2.0 * math.pi)
        self.n = int(n_sinusoids)
        self.alpha = (2.0 * math.pi * np.arange(self.n) + theta) / self.n
        self.phi = rng.uniform(0.0, 2.0 * math.pi, self.n)
        self._cos = np.cos(self.alpha)
        self._two_pi_cos = 2.0 * math.pi * self._cos

    def at_wavelengths(self, x):
        if isinstance(x, (float, int)):  # scalar fast path (called every slot): a complex
            return complex(np.exp(1j * (self._two_pi_cos * x + self.phi)).sum()) / math.sqrt(self.n)
        x = np.asarray(x, float)
        phase = 2.0 * math.pi * x[..., None] * self._cos + self.phi
        return np.exp(1j * phase).sum(axis=-1) / math.sqrt(self.n)

    def at_time(self, t_s, f_d_hz: float):
        return self.at_wavelengths(np.asarray(t_s, float) * f_d_hz)
