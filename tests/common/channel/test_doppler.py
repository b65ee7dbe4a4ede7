"""Clarke/Jakes time-correlated Rayleigh fading: the autocorrelation against J0(2 pi f_d tau),
unit power, Rayleigh envelope (statistical, seeded; tolerances with their standard errors)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from rkdsc.common.channel.doppler import SumOfSinusoidsFading, bessel_j0, doppler_hz

R = 3000  # independent realizations (links)


def test_doppler_and_our_j0():
    assert doppler_hz(1.4, 3.5) == pytest.approx(1.4 * 3.5e9 / 299_792_458.0)
    assert doppler_hz(0.0, 28.0) == 0.0
    x = np.linspace(0, 40, 81)
    np.testing.assert_allclose(bessel_j0(x), special.j0(x), atol=1e-10)


@pytest.fixture(scope="module")
def ensemble():
    lags = np.linspace(0.0, 2.0, 21)            # f_d * tau, in Doppler periods
    starts = (0.0, 7.31)                         # two start points per link (stationarity)
    prods = []
    for seed in range(R):
        f = SumOfSinusoidsFading(np.random.default_rng(seed), 32)
        for x0 in starts:
            h = f.at_wavelengths(x0 + lags)
            prods.append(h * np.conj(h[0]))
    return lags, np.array(prods)


def test_autocorrelation_is_j0(ensemble):
    """E[h(t + tau) h*(t)] = J0(2 pi f_d tau). The estimate averages 2 x 3000 products; Re and Im
    of each product have variance <= 1/2, so the standard error is <= sqrt(1 / (2 * 6000)) =
    0.009 (the two start points of one link are correlated: <= 0.013). Tolerance 0.05 (~4 SE).
    At f_d tau = 0.6 the correlation is J0(3.77) = -0.40: an exponential (AR(1)) model fails."""
    lags, prods = ensemble
    r = prods.mean(axis=0)
    target = special.j0(2 * math.pi * lags)
    assert np.max(np.abs(r.real - target)) < 0.05, np.round(r.real - target, 3)
    assert np.max(np.abs(r.imag)) < 0.05
    assert r.real[6] < -0.3  # f_d tau = 0.6


def test_unit_power_and_rayleigh_envelope(ensemble):
    """E|h|^2 = 1: |h|^2 ~ Exp(1) has std 1, SE 1/sqrt(6000) = 0.013, tolerance 0.06.
    P(|h|^2 < 0.1) = 1 - e^-0.1 = 0.095 (Rayleigh): SE sqrt(0.095 * 0.905 / 6000) = 0.004,
    tolerance 0.02 (the 32-term sum is close to, not exactly, Gaussian)."""
    _, prods = ensemble
    p = prods[:, 0].real  # |h(x0)|^2
    assert abs(p.mean() - 1) < 0.06
    assert abs(np.mean(p < 0.1) - (1 - math.exp(-0.1))) < 0.02


def test_time_average_power_of_one_link_is_one():
    f = SumOfSinusoidsFading(np.random.default_rng(11), 32)
    x = np.arange(0, 2000, 0.05)  # 2000 wavelengths
    assert abs(np.mean(np.abs(f.at_wavelengths(x)) ** 2) - 1) < 0.05


def test_static_device_keeps_one_draw_and_at_time_is_x_equals_fd_t():
    f = SumOfSinusoidsFading(np.random.default_rng(1), 16)
    assert f.at_time(0.0, 0.0) == f.at_time(100.0, 0.0)
    np.testing.assert_allclose(f.at_time(np.array([0.25, 1.0]), 20.0), f.at_wavelengths(np.array([5.0, 20.0])))
    g = SumOfSinusoidsFading(np.random.default_rng(1), 16)
    assert g.at_wavelengths(3.3) == f.at_wavelengths(3.3)  # seed -> same process


def test_scalar_and_array_paths_agree():
    f = SumOfSinusoidsFading(np.random.default_rng(4), 32)
    xs = np.array([0.0, 0.37, 12.5])
    np.testing.assert_allclose([f.at_wavelengths(float(x)) for x in xs], f.at_wavelengths(xs), atol=1e-12)
