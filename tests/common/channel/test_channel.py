"""Statistical and exact tests of the channel models (numpy API and the torch twin).

Tolerances: estimates of a power from N independent complex Gaussian samples have a relative
standard deviation of 1/sqrt(N). Every statistical bound below is at least ~4 standard
deviations wide for the sample size used (stated at each test), and all seeds are fixed, so
the tests are deterministic yet would fail for a convention error (a 3 dB slip is 100%, the
Rician "factor 2" bug is 50% in E|h|^2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

import rkdsc.common.channel as ch
from rkdsc.common.channel import torch_channel as tch
from rkdsc.common.channel import normalize_power, simulate

SNRS_DB = (-10.0, 0.0, 10.0, 25.0)


def unit_power_symbols(rng: np.random.Generator, batch: int, k: int, dtype=np.complex64) -> np.ndarray:
    z = rng.standard_normal((batch, k)) + 1j * rng.standard_normal((batch, k))
    return ch.normalize_power(z.astype(dtype))


def power_db(z) -> float:
    z = np.asarray(z)
    return 10.0 * np.log10(np.mean(np.abs(z.astype(np.complex128)) ** 2))


# --------------------------------------------------------------------------- deterministic parts


def test_snr_db_to_noise_var_is_es_over_n0():
    assert ch.snr_db_to_noise_var(0.0) == 1.0
    assert ch.snr_db_to_noise_var(10.0) == pytest.approx(0.1, rel=1e-12)
    assert ch.snr_db_to_noise_var(-10) == pytest.approx(10.0, rel=1e-12)
    np.testing.assert_allclose(ch.snr_db_to_noise_var(np.array([0.0, 20.0])), [1.0, 0.01], rtol=1e-12)
    assert float(tch.snr_db_to_noise_var(torch.tensor(20.0, dtype=torch.float64))) == pytest.approx(0.01, rel=1e-12)


def test_normalize_power_unit_rows_and_zero_rows():
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((5, 37)) * 7 + 1j * rng.standard_normal((5, 37))).astype(np.complex64)
    x[2] = 0
    z = ch.normalize_power(x)
    assert z.dtype == np.complex64 and z.shape == x.shape
    p = np.mean(np.abs(z) ** 2, axis=1)
    np.testing.assert_allclose(p[[0, 1, 3, 4]], 1.0, rtol=1e-5)  # float32 rounding only
    assert np.all(z[2] == 0) and np.all(np.isfinite(z))
    # scaling is per row: each row is a positive multiple of its input
    ratio = z[0] / x[0]
    np.testing.assert_allclose(ratio, ratio[0].real, rtol=1e-5)


@pytest.mark.parametrize("n", [1, 6, 7, 102, 409])
def test_real_to_complex_layout_and_round_trip(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((3, n)).astype(np.float32)
    z = ch.real_to_complex(x)
    k = (n + 1) // 2
    assert z.shape == (3, k) and z.dtype == np.complex64
    padded = np.concatenate([x, np.zeros((3, 2 * k - n), np.float32)], axis=1)
    np.testing.assert_array_equal(z.real, padded[:, :k])  # first half real
    np.testing.assert_array_equal(z.imag, padded[:, k:])  # second half imaginary
    back = ch.complex_to_real(z, n)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, x)
    # float64 stays double precision
    assert ch.real_to_complex(x.astype(np.float64)).dtype == np.complex128


def test_complex_to_real_rejects_inconsistent_length():
    z = np.zeros((2, 4), np.complex64)
    for bad in (6, 9, -1, 7.0):
        with pytest.raises(ValueError, match=r"n must be.*K = 4.*got"):
            ch.complex_to_real(z, bad)


# --------------------------------------------------------------------------- AWGN and SNR convention


@pytest.mark.parametrize("snr_db", SNRS_DB)
def test_awgn_measured_snr_matches_target(snr_db):
    # 64 x 1024 = 65,536 complex noise samples: relative std of the power estimate 0.39%
    # (0.017 dB); tolerance 0.1 dB (~6 std).
    rng = np.random.default_rng(100)
    x = unit_power_symbols(rng, 64, 1024)
    y, h, noise_var = ch.simulate(x, snr_db, "awgn", rng, equalize=False)
    assert y.shape == x.shape and y.dtype == np.complex64
    assert h.shape == (64, 1) and np.all(h == 1)
    assert noise_var.shape == (64,)
    np.testing.assert_allclose(noise_var, 10 ** (-snr_db / 10), rtol=1e-6)
    measured_snr_db = power_db(x) - power_db(y - x)
    assert abs(measured_snr_db - snr_db) < 0.1, measured_snr_db


@pytest.mark.parametrize("snr_db", [0.0, 10.0])
def test_noise_per_real_dimension_is_half_sigma2(snr_db):
    # 65,536 samples per dimension: std of a variance estimate sqrt(2/N) = 0.55%; tolerance 3%.
    rng = np.random.default_rng(7)
    x = unit_power_symbols(rng, 64, 1024)
    y, _, noise_var = ch.simulate(x, snr_db, "awgn", rng, equalize=False)
    n = (y - x).astype(np.complex128).ravel()
    half = noise_var[0] / 2
    assert abs(np.var(n.real) / half - 1) < 0.03
    assert abs(np.var(n.imag) / half - 1) < 0.03
    assert abs(np.mean(n.real)) < 4 * np.sqrt(half / n.size)  # zero mean, 4 std
    corr = np.corrcoef(n.real, n.imag)[0, 1]
    assert abs(corr) < 0.02  # independent I and Q: std 1/sqrt(N) = 0.004


def test_per_sample_snr_each_row_gets_its_own_noise():
    # 8 rows x 32,768 symbols: per-row std 0.55% (0.024 dB); tolerance 0.1 dB (~4 std).
    snrs = np.array([-10.0, -5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0])
    rng = np.random.default_rng(3)
    x = unit_power_symbols(rng, len(snrs), 32768)
    y, _, noise_var = ch.simulate(x, snrs, "awgn", rng, equalize=False)
    np.testing.assert_allclose(noise_var, 10 ** (-snrs / 10), rtol=1e-6)
    for row, snr_db in enumerate(snrs):
        measured = -power_db((y - x)[row])
        assert abs(measured - snr_db) < 0.1, (row, measured)


# --------------------------------------------------------------------------- Rayleigh block fading


def test_rayleigh_block_power_distribution_and_independence():
    # 100,000 frames: std of mean |h|^2 is 1/sqrt(B) = 0.32%; tolerance 2% (~6 std).
    rng = np.random.default_rng(11)
    b = 100_000
    x = unit_power_symbols(rng, b, 2)
    _, h, _ = ch.simulate(x, 10.0, "rayleigh", rng, equalize=False)
    assert h.shape == (b, 1) and h.dtype == np.complex64
    h = h[:, 0].astype(np.complex128)
    assert abs(np.mean(np.abs(h) ** 2) - 1) < 0.02
    assert abs(np.mean(h)) < 0.02  # zero-mean (std 0.0032)
    # |h| ~ Rayleigh(scale = 1/sqrt(2)) for h ~ CN(0, 1); a 3 dB slip gives p ~ 0.
    ks = stats.kstest(np.abs(h[:20_000]), stats.rayleigh(scale=1 / np.sqrt(2)).cdf)
    assert ks.pvalue > 0.01, ks
    # independence across frames: lag-1 correlations have std 1/sqrt(B) = 0.0032; bound 0.02.
    rho = np.mean(h[:-1] * np.conj(h[1:])) / np.mean(np.abs(h) ** 2)
    assert abs(rho) < 0.02, rho
    p = np.abs(h) ** 2
    assert abs(np.corrcoef(p[:-1], p[1:])[0, 1]) < 0.02


def test_rayleigh_block_gain_is_constant_over_the_frame():
    # If the channel applied anything other than the returned h, constant over the row,
    # the residual y - h x would carry signal power (~0 dB) instead of noise at -10 dB.
    # 64 x 1024 samples, tolerance 0.1 dB as for AWGN.
    rng = np.random.default_rng(5)
    x = unit_power_symbols(rng, 64, 1024)
    y, h, noise_var = ch.simulate(x, 10.0, "rayleigh", rng, equalize=False)
    assert h.shape == (64, 1)
    assert abs(-power_db(y - h * x) - 10.0) < 0.1
    # same through the block class, with a noise-free channel: y / x is h on every symbol
    block = ch.RayleighBlockFading()
    y0, h0 = block(x, 0.0, np.random.default_rng(6))
    assert h0.shape == (64, 1)
    np.testing.assert_allclose(y0 / x, np.broadcast_to(h0, x.shape), rtol=1e-4, atol=1e-5)


def test_rayleigh_fast_fading_varies_per_symbol():
    # 200 x 500 = 100,000 gains: E|h|^2 within 2% (~6 std).
    rng = np.random.default_rng(13)
    x = unit_power_symbols(rng, 200, 500)
    y, h, _ = ch.simulate(x, 80.0, "rayleigh_fast", rng, equalize=False)
    assert h.shape == (200, 500)
    h128 = h.astype(np.complex128)
    assert abs(np.mean(np.abs(h128) ** 2) - 1) < 0.02
    # within a frame the gains spread like CN(0, 1): per-row std of h is ~1, not ~0
    assert np.mean(np.std(h128, axis=1)) > 0.9
    # adjacent symbols are uncorrelated (std 1/sqrt(N) = 0.0032; bound 0.02)
    rho = np.mean(h128[:, :-1] * np.conj(h128[:, 1:]))
    assert abs(rho) < 0.02
    # the returned per-symbol gain is the one applied (SNR 80 dB: noise ~1e-4 in amplitude)
    np.testing.assert_allclose(y, h * x, atol=1e-3)


# --------------------------------------------------------------------------- Rician


@pytest.mark.parametrize("k_factor", [0.0, 1.0, 3.0, 10.0])
def test_rician_unit_power_and_distribution(k_factor):
    # 100,000 frames: E|h|^2 within 2% (std <= 0.32%), LOS mean within 0.02 (std <= 0.0032).
    rng = np.random.default_rng(17)
    x = unit_power_symbols(rng, 100_000, 2)
    _, h, _ = ch.simulate(x, 10.0, "rician", rng, equalize=False, k_factor=k_factor)
    assert h.shape == (100_000, 1)
    h = h[:, 0].astype(np.complex128)
    assert abs(np.mean(np.abs(h) ** 2) - 1) < 0.02
    los = np.sqrt(k_factor / (k_factor + 1))
    assert abs(np.mean(h) - los) < 0.02
    # |h| ~ Rice(nu = LOS amplitude, sigma^2 = 1 / (2 (K + 1)) per real dimension)
    sigma = np.sqrt(1 / (2 * (k_factor + 1)))
    ks = stats.kstest(np.abs(h[:20_000]), stats.rice(b=los / sigma, scale=sigma).cdf)
    assert ks.pvalue > 0.01, ks


def test_rician_rejects_bad_k_factor():
    with pytest.raises(ValueError, match=r"k_factor.*-1"):
        ch.RicianBlockFading(-1.0)
    with pytest.raises(ValueError, match=r"k_factor.*nan"):
        ch.simulate(np.ones((2, 3), np.complex64), 10.0, "rician", np.random.default_rng(0), k_factor=float("nan"))


# --------------------------------------------------------------------------- equalizers


@pytest.mark.parametrize("fading", ch.FADINGS)
def test_mmse_and_zf_equal_their_formulas(fading):
    rng = np.random.default_rng(0)
    x = unit_power_symbols(rng, 16, 33)
    snrs = np.linspace(-5, 20, 16)
    y, h, nv = ch.simulate(x, snrs, fading, np.random.default_rng(42), equalize=False)
    y_mmse, h2, nv2 = ch.simulate(x, snrs, fading, np.random.default_rng(42), equalize=True)
    y_zf, h3, _ = ch.simulate(x, snrs, fading, np.random.default_rng(42), equalizer="zf")
    np.testing.assert_array_equal(h, h2)  # equalization draws no random numbers
    np.testing.assert_array_equal(h, h3)
    np.testing.assert_array_equal(nv, nv2)
    y, h = y.astype(np.complex128), h.astype(np.complex128)
    expected_mmse = np.conj(h) * y / (np.abs(h) ** 2 + nv[:, None])
    np.testing.assert_allclose(y_mmse, expected_mmse, rtol=1e-5, atol=1e-6)  # complex64 rounding
    np.testing.assert_allclose(y_zf, y / h, rtol=1e-5, atol=1e-6)
    # block classes directly
    np.testing.assert_allclose(ch.MMSE()(y, h, nv), expected_mmse, rtol=1e-12)
    np.testing.assert_allclose(ch.ZF()(y, h), y / h, rtol=1e-12)


def test_mmse_awgn_scales_by_one_over_one_plus_sigma2():
    rng = np.random.default_rng(1)
    x = unit_power_symbols(rng, 4, 8)
    y_raw, _, nv = ch.simulate(x, 0.0, "awgn", np.random.default_rng(2), equalize=False)
    y_eq, _, _ = ch.simulate(x, 0.0, "awgn", np.random.default_rng(2))
    np.testing.assert_allclose(y_eq, y_raw / (1 + nv[:, None]), rtol=1e-6)  # = y / 2 at 0 dB


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(fading="nakagami"), r"fading.*'nakagami'"),
        (dict(x=np.ones((2, 3, 4), np.complex64)), r"x must be.*ndim 2.*ndim 3"),
        (dict(x=np.ones(3, np.complex64)), r"x must be.*ndim 1"),
        (dict(x=np.ones((2, 3), np.float32)), r"x must be a complex.*float32"),
        (dict(snr_db=float("nan")), r"snr_db must be finite.*nan"),
        (dict(snr_db=np.array([1.0, np.nan])), r"snr_db must be finite.*nan.*index 1"),
        (dict(snr_db=np.array([1.0, 2.0, 3.0])), r"snr_db.*\(2,\).*got shape \(3,\)"),
        (dict(snr_db=np.zeros((2, 1))), r"snr_db.*got shape \(2, 1\)"),
        (dict(snr_db="ten"), r"snr_db.*'ten'"),
        (dict(equalizer="lmmse"), r"equalizer.*'lmmse'"),
        (dict(x=np.array([[1, np.nan]], np.complex64), snr_db=1.0), r"x must be finite"),
    ],
)
def test_simulate_validates_inputs(kwargs, pattern):
    args = dict(x=np.ones((2, 3), np.complex64), snr_db=10.0, fading="awgn", rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        ch.simulate(**args)


def test_simulate_requires_a_numpy_generator():
    with pytest.raises(TypeError, match=r"rng must be a numpy.random.Generator.*int"):
        ch.simulate(np.ones((2, 3), np.complex64), 10.0, "awgn", 0)


def test_numpy_api_imports_without_torch():
    code = "import sys, rkdsc.common.channel, rkdsc.common.wire; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=Path(__file__).resolve().parents[2])


# --------------------------------------------------------------------------- torch twin


def test_torch_twin_deterministic_parts_match_numpy():
    rng = np.random.default_rng(21)
    for n in (101, 102):
        x = rng.standard_normal((6, n)).astype(np.float32) * 3
        x[4] = 0  # an all-zero row stays zero in both
        z_np = ch.normalize_power(ch.real_to_complex(x))
        z_t = tch.normalize_power(tch.real_to_complex(torch.from_numpy(x)))
        assert z_t.dtype == torch.complex64
        np.testing.assert_allclose(z_t.numpy(), z_np, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(tch.complex_to_real(tch.real_to_complex(torch.from_numpy(x)), n).numpy(), x)
        np.testing.assert_array_equal(tch.complex_to_real(torch.from_numpy(z_np), n).numpy(), ch.complex_to_real(z_np, n))
    # equalizers on identical inputs
    y = unit_power_symbols(rng, 4, 9, np.complex128)
    h = unit_power_symbols(rng, 4, 1, np.complex128)
    nv = np.array([1.0, 0.1, 0.01, 0.5])
    np.testing.assert_allclose(tch.MMSE()(torch.from_numpy(y), torch.from_numpy(h), torch.from_numpy(nv)).numpy(), ch.MMSE()(y, h, nv), rtol=1e-12)
    np.testing.assert_allclose(tch.ZF()(torch.from_numpy(y), torch.from_numpy(h)).numpy(), ch.ZF()(y, h), rtol=1e-12)


@pytest.mark.parametrize("snr_db", SNRS_DB)
def test_torch_twin_noise_power_matches_numpy(snr_db):
    # Both twins measured on 65,536 samples: each within 0.1 dB of the target, and within
    # 0.15 dB of each other (difference of two estimates: std 0.024 dB).
    rng = np.random.default_rng(31)
    x_np = unit_power_symbols(rng, 64, 1024)
    x_t = torch.from_numpy(x_np)
    y_np, _, nv_np = ch.simulate(x_np, snr_db, "awgn", rng, equalize=False)
    y_t, h_t, nv_t = tch.simulate(x_t, snr_db, "awgn", torch.Generator().manual_seed(31), equalize=False)
    assert y_t.dtype == torch.complex64 and h_t.shape == (64, 1) and nv_t.shape == (64,)
    np.testing.assert_allclose(nv_t.numpy(), nv_np, rtol=1e-6)
    m_np = -power_db(y_np - x_np)
    m_t = -power_db((y_t - x_t).numpy())
    assert abs(m_np - snr_db) < 0.1 and abs(m_t - snr_db) < 0.1, (m_np, m_t)
    assert abs(m_np - m_t) < 0.15
    # per real dimension sigma^2 / 2 in the torch twin too (3%, see the numpy test)
    n = (y_t - x_t).numpy().astype(np.complex128).ravel()
    assert abs(np.var(n.real) / (nv_np[0] / 2) - 1) < 0.03
    assert abs(np.var(n.imag) / (nv_np[0] / 2) - 1) < 0.03


@pytest.mark.parametrize("fading, kw", [("rayleigh", {}), ("rayleigh_fast", {}), ("rician", {"k_factor": 3.0}), ("rician", {"k_factor": 10.0})])
def test_torch_twin_fading_statistics_match_numpy(fading, kw):
    # 100,000 gains each: E|h|^2 within 2% of 1 for both twins (std 0.32%), KS of |h| against
    # the same reference distribution (p > 0.01) for the torch twin.
    b, k = (100_000, 1) if fading != "rayleigh_fast" else (200, 500)
    rng = np.random.default_rng(41)
    x_np = unit_power_symbols(rng, b, k)
    _, h_np, _ = ch.simulate(x_np, 10.0, fading, rng, equalize=False, **kw)
    y_t, h_t, _ = tch.simulate(torch.from_numpy(x_np), 10.0, fading, torch.Generator().manual_seed(41), equalize=False, **kw)
    assert tuple(h_t.shape) == h_np.shape
    p_np = np.mean(np.abs(h_np.astype(np.complex128)) ** 2)
    p_t = np.mean(np.abs(h_t.numpy().astype(np.complex128)) ** 2)
    assert abs(p_np - 1) < 0.02 and abs(p_t - 1) < 0.02, (p_np, p_t)
    kf = kw.get("k_factor", 0.0)
    los, sigma = np.sqrt(kf / (kf + 1)), np.sqrt(1 / (2 * (kf + 1)))
    mag = np.abs(h_t.numpy().ravel()[:20_000])
    ref = stats.rice(b=los / sigma, scale=sigma) if kf > 0 else stats.rayleigh(scale=sigma)
    assert stats.kstest(mag, ref.cdf).pvalue > 0.01
    assert abs(np.mean(h_t.numpy()) - los) < 0.02


def test_torch_per_sample_snr_tensor():
    # same sizes and tolerance as the numpy per-sample test (0.1 dB, ~4 std)
    snrs = torch.tensor([-10.0, 0.0, 10.0, 25.0])
    x = torch.from_numpy(unit_power_symbols(np.random.default_rng(8), 4, 32768))
    y, _, nv = tch.simulate(x, snrs, "awgn", torch.Generator().manual_seed(8), equalize=False)
    np.testing.assert_allclose(nv.numpy(), 10 ** (-snrs.numpy() / 10), rtol=1e-6)
    for row in range(4):
        measured = -power_db((y - x)[row].numpy())
        assert abs(measured - float(snrs[row])) < 0.1, (row, measured)


@pytest.mark.parametrize("fading", tch.FADINGS)
@pytest.mark.parametrize("equalizer", tch.EQUALIZERS)
def test_torch_gradients_flow_through_x(fading, equalizer):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(8, 21, generator=g, dtype=torch.float64, requires_grad=True)
    feats_zero = torch.cat([feats[:7], torch.zeros(1, 21, dtype=torch.float64)])  # zero row: no NaN grads
    z = tch.normalize_power(tch.real_to_complex(feats_zero))
    assert z.dtype == torch.complex128  # dtype follows the input
    y, h, nv = tch.simulate(z, torch.linspace(0, 20, 8, dtype=torch.float64), fading, g, equalizer=equalizer)
    assert y.dtype == torch.complex128 and h.dtype == torch.complex128 and nv.dtype == torch.float64
    assert y.device == z.device
    loss = tch.complex_to_real(y, 21).square().sum()
    loss.backward()
    assert feats.grad is not None and torch.all(torch.isfinite(feats.grad))
    assert feats.grad[:7].abs().sum() > 0


def test_torch_mmse_and_zf_equal_their_formulas():
    x = torch.from_numpy(unit_power_symbols(np.random.default_rng(2), 16, 33, np.complex128))
    snrs = torch.linspace(-5, 20, 16, dtype=torch.float64)
    for fading in tch.FADINGS:
        y, h, nv = tch.simulate(x, snrs, fading, torch.Generator().manual_seed(9), equalize=False)
        y_m, h_m, _ = tch.simulate(x, snrs, fading, torch.Generator().manual_seed(9))
        y_z, _, _ = tch.simulate(x, snrs, fading, torch.Generator().manual_seed(9), equalizer="zf")
        torch.testing.assert_close(h, h_m, rtol=0, atol=0)  # same generator state -> same draw
        torch.testing.assert_close(y_m, h.conj() * y / (h.abs() ** 2 + nv[:, None]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(y_z, y / h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        (dict(fading="nakagami"), r"fading.*'nakagami'"),
        (dict(x=torch.ones(2, 3, 4, dtype=torch.complex64)), r"x must be.*ndim 3"),
        (dict(x=torch.ones(2, 3)), r"x must be a complex.*float32"),
        (dict(snr_db=float("nan")), r"snr_db must be finite.*nan"),
        (dict(snr_db=torch.tensor([1.0, 2.0, 3.0])), r"snr_db.*\(2,\).*got shape \(3,\)"),
        (dict(equalizer="lmmse"), r"equalizer.*'lmmse'"),
    ],
)
def test_torch_simulate_validates_inputs(kwargs, pattern):
    args = dict(x=torch.ones(2, 3, dtype=torch.complex64), snr_db=10.0, fading="awgn")
    args.update(kwargs)
    with pytest.raises(ValueError, match=pattern):
        tch.simulate(**args)


def test_torch_generator_reproducible_and_optional():
    x = torch.ones(3, 5, dtype=torch.complex64)
    a = tch.simulate(x, 5.0, "rayleigh", torch.Generator().manual_seed(1))
    b = tch.simulate(x, 5.0, "rayleigh", torch.Generator().manual_seed(1))
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    y, h, nv = tch.simulate(x, 5.0, "rayleigh")  # global generator
    assert y.shape == (3, 5) and h.shape == (3, 1) and nv.shape == (3,)


# --------------------------------------------------------------------------- simulate_frames

@pytest.mark.parametrize("fading", ["awgn", "rayleigh", "rayleigh_fast", "rician"])
@pytest.mark.parametrize("equalizer", ["mmse", "zf"])
def test_simulate_frames_equals_one_call_per_frame_bit_for_bit(fading, equalizer):
    """The relay's batched call: B frames in one call draw exactly what B one-frame calls draw,
    in order, and leave the Generator in the same state (the seeding rule of the relay)."""
    from rkdsc.common.channel import simulate_frames

    src = np.random.default_rng(11)
    for b, k in [(1, 26), (7, 26), (16, 5)]:
        x = normalize_power((src.standard_normal((b, k)) + 1j * src.standard_normal((b, k))).astype(np.complex64))
        snr = src.uniform(-10, 25, b)
        g_one, g_all = np.random.default_rng(3), np.random.default_rng(3)
        one = [simulate(x[i:i + 1], snr[i], fading, g_one, equalizer=equalizer, k_factor=2.5) for i in range(b)]
        y, h, nv = simulate_frames(x, snr, fading, g_all, equalizer=equalizer, k_factor=2.5)
        assert y.dtype == np.complex64 and h.shape == ((b, k) if fading == "rayleigh_fast" else (b, 1))
        np.testing.assert_array_equal(y, np.concatenate([o[0] for o in one]))
        np.testing.assert_array_equal(h, np.concatenate([o[1] for o in one]))
        np.testing.assert_array_equal(nv, np.concatenate([o[2] for o in one]))
        assert g_one.bit_generator.state == g_all.bit_generator.state


def test_simulate_frames_grouping_does_not_change_the_draws():
    """Frames sent as messages of 3, 1 and 4 see the same channel as 8 single frames."""
    from rkdsc.common.channel import simulate_frames

    x = normalize_power(np.random.default_rng(1).standard_normal((8, 26)).astype(np.complex64) * (1 + 1j))
    ref = simulate_frames(x, 5.0, "rayleigh", np.random.default_rng(9))[0]
    g = np.random.default_rng(9)
    parts = [simulate_frames(x[a:b], 5.0, "rayleigh", g)[0] for a, b in [(0, 3), (3, 4), (4, 8)]]
    np.testing.assert_array_equal(np.concatenate(parts), ref)
    # ... whereas simulate draws all gains of a call first: grouping changes its draws
    assert not np.array_equal(simulate(x, 5.0, "rayleigh", np.random.default_rng(9))[0], ref)


def test_simulate_frames_validates_like_simulate():
    from rkdsc.common.channel import simulate_frames

    g = np.random.default_rng(0)
    with pytest.raises(ValueError, match="fading"):
        simulate_frames(np.ones((2, 3), np.complex64), 0.0, "foo", g)
    with pytest.raises(ValueError, match="snr_db"):
        simulate_frames(np.ones((2, 3), np.complex64), [1.0, 2.0, 3.0], "awgn", g)
    with pytest.raises(ValueError, match="finite"):
        simulate_frames(np.full((2, 3), np.nan, np.complex64), 0.0, "awgn", g)


@pytest.mark.parametrize("fading", ["awgn", "rayleigh", "rayleigh_fast", "rician"])
def test_frame_channel_with_one_link_snr_equals_simulate_per_frame(fading):
    """The relay's call: FrameChannel.run with the link's scalar noise variance (its constants
    cached across calls) gives simulate's per-frame results bit for bit, call after call."""
    src = np.random.default_rng(2)
    fc = ch.FrameChannel(fading, 2.0)
    g_one, g_all = np.random.default_rng(8), np.random.default_rng(8)
    for b in (16, 16, 3):
        x = normalize_power((src.standard_normal((b, 26)) + 1j * src.standard_normal((b, 26))).astype(np.complex64))
        nv = np.float32(ch.snr_db_to_noise_var(np.asarray([7.0])).astype(np.float32)[0])
        y, h, noise_var = fc.run(x, nv, g_all)
        one = [simulate(x[i:i + 1], 7.0, fading, g_one, k_factor=2.0) for i in range(b)]
        np.testing.assert_array_equal(y, np.concatenate([o[0] for o in one]))
        np.testing.assert_array_equal(h, np.concatenate([o[1] for o in one]))
        np.testing.assert_array_equal(noise_var, np.concatenate([o[2] for o in one]))


@pytest.mark.parametrize("fading", ["awgn", "rayleigh", "rayleigh_fast"])
def test_frame_channel_outputs_survive_the_next_call(fading):
    """FrameChannel reuses one draw buffer per message shape: what a call returned stays as it
    was after later calls of the same and of other shapes, and still equals simulate_frames."""
    src = np.random.default_rng(4)
    fc = ch.FrameChannel(fading)
    g, g_ref = np.random.default_rng(9), np.random.default_rng(9)
    kept = []
    for b in (16, 16, 5, 16, 5):
        x = normalize_power((src.standard_normal((b, 12)) + 1j * src.standard_normal((b, 12))).astype(np.complex64))
        y, h, nv = fc.run(x, np.float32(0.1), g)
        ref = ch.simulate_frames(x, 10.0, fading, g_ref)  # noise_var 10^(-10/10) = 0.1
        kept.append((y, y.copy(), h, h.copy(), ref))
    for y, y0, h, h0, ref in kept:
        np.testing.assert_array_equal(y, y0)
        np.testing.assert_array_equal(h, h0)
        np.testing.assert_array_equal(y, ref[0])
    assert len({id(k[0]) for k in kept}) == len(kept)
