"""Path loss against the TR 38.901 formulas at chosen points, the link budget, and the shadowing
spread and correlation (statistical, seeded; each tolerance is stated with its standard error)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from rkdsc.common.channel import pathloss as pl

C = 299_792_458.0


def lg(x):
    return math.log10(x)


def test_free_space_matches_the_textbook_constant():
    # FSPL(d[m], f[GHz]) = 32.45 + 20 log10 f + 20 log10 d (constant rounded to 0.01 dB)
    for d, f in ((1.0, 1.0), (1000.0, 2.4), (37.0, 28.0)):
        assert float(pl.fspl_db(d, f)) == pytest.approx(32.45 + 20 * lg(f) + 20 * lg(d), abs=0.01)


def test_breakpoint_distance():
    # d'_BP = 4 (10 - 1)(1.5 - 1) 3.5e9 / c = 210.1 m for UMi at 3.5 GHz
    assert pl.breakpoint_distance_m(3.5, 10.0, 1.5) == pytest.approx(4 * 9 * 0.5 * 3.5e9 / C)
    assert pl.breakpoint_distance_m(3.5, 10.0, 1.5) == pytest.approx(210.14, abs=0.01)


@pytest.mark.parametrize("d2d", [10.0, 100.0, 200.0, 500.0, 3000.0])
def test_umi_los_and_nlos_at_chosen_points(d2d):
    fc, hbs, hut = 3.5, 10.0, 1.5
    d3d = math.hypot(d2d, hbs - hut)
    dbp = 4 * (hbs - 1) * (hut - 1) * fc * 1e9 / C
    if d2d <= dbp:
        los = 32.4 + 21 * lg(d3d) + 20 * lg(fc)
    else:
        los = 32.4 + 40 * lg(d3d) + 20 * lg(fc) - 9.5 * lg(dbp ** 2 + (hbs - hut) ** 2)
    nlos = max(los, 35.3 * lg(d3d) + 22.4 + 21.3 * lg(fc) - 0.3 * (hut - 1.5))
    assert float(pl.umi_los_db(d2d, fc, hut)) == pytest.approx(los, abs=1e-9)
    assert float(pl.umi_nlos_db(d2d, fc, hut)) == pytest.approx(nlos, abs=1e-9)
    assert float(pl.path_loss_db("umi", d2d, fc, los=False)) == pytest.approx(nlos, abs=1e-9)


@pytest.mark.parametrize("d2d,fc,hut", [(50.0, 3.5, 1.5), (800.0, 2.0, 1.5), (1500.0, 28.0, 10.0)])
def test_uma_los_and_nlos_at_chosen_points(d2d, fc, hut):
    hbs = 25.0
    d3d = math.hypot(d2d, hbs - hut)
    dbp = 4 * (hbs - 1) * (hut - 1) * fc * 1e9 / C
    if d2d <= dbp:
        los = 28.0 + 22 * lg(d3d) + 20 * lg(fc)
    else:
        los = 28.0 + 40 * lg(d3d) + 20 * lg(fc) - 9 * lg(dbp ** 2 + (hbs - hut) ** 2)
    nlos = max(los, 13.54 + 39.08 * lg(d3d) + 20 * lg(fc) - 0.6 * (hut - 1.5))
    assert float(pl.uma_los_db(d2d, fc, hut)) == pytest.approx(los, abs=1e-9)
    assert float(pl.uma_nlos_db(d2d, fc, hut)) == pytest.approx(nlos, abs=1e-9)


def test_dual_slope_is_nearly_continuous_at_the_breakpoint_and_increasing():
    for fn, hbs in ((pl.umi_los_db, 10.0), (pl.uma_los_db, 25.0)):
        dbp = pl.breakpoint_distance_m(3.5, hbs, 1.5)
        below, above = float(fn(dbp * (1 - 1e-9), 3.5)), float(fn(dbp * (1 + 1e-9), 3.5))
        assert abs(above - below) < 0.5  # the table's two slopes meet (to ~0.1 dB) at d'_BP
        d = np.linspace(10, 5000, 500)
        assert np.all(np.diff(fn(d, 3.5)) > 0)
        assert np.all(pl.umi_nlos_db(d, 3.5) >= pl.umi_los_db(d, 3.5))


def test_log_distance_with_exponent_two_is_free_space():
    d = np.array([1.0, 10.0, 250.0])
    np.testing.assert_allclose(pl.log_distance_db(d, 3.5, 2.0), pl.fspl_db(d, 3.5), atol=1e-9)
    # n = 3.5: 35 dB per decade beyond d0
    assert float(pl.log_distance_db(100.0, 3.5, 3.5) - pl.log_distance_db(10.0, 3.5, 3.5)) == pytest.approx(35.0)


def test_validity_ranges_are_reported():
    assert pl.validity_problem("umi", 100.0, 3.5, 1.5) is None
    assert "d_2D = 5 m outside 10..5000 m" in pl.validity_problem("umi", 5.0, 3.5, 1.5)
    assert "f_c = 200 GHz" in pl.validity_problem("uma", 100.0, 200.0, 1.5)
    assert pl.validity_problem("log_distance", 1.0, 999.0, 50.0) is None
    with pytest.raises(ValueError, match=r"model: expected one of umi, uma, log_distance, got 'rma'"):
        pl.PathLoss(model="rma")


def test_link_budget():
    assert pl.noise_power_dbm(1e6, 5.0) == pytest.approx(-109.0)
    assert pl.noise_power_dbm(20e6, 9.0) == pytest.approx(-174 + 10 * lg(20e6) + 9)
    # 23 dBm, 100 dB loss, 1 MHz, NF 5 dB, 3 dB shadowing: 23 - 100 - 3 + 109 = 29 dB
    assert float(pl.snr_db_from_budget(23.0, 100.0, 1e6, 5.0, shadowing_db=3.0)) == pytest.approx(29.0)
    with pytest.raises(ValueError, match="bandwidth_hz"):
        pl.noise_power_dbm(0.0, 5.0)


def test_table_sigmas():
    assert pl.PathLoss("umi", los=False).sigma_db == 7.82
    assert pl.PathLoss("uma", los=False).sigma_db == 6.0
    assert pl.PathLoss("umi").sigma_db == 4.0
    assert pl.PathLoss("log_distance", shadow_sigma_db=8.0).sigma_db == 8.0


@pytest.mark.parametrize("sigma", [4.0, 7.82])
def test_shadowing_spread_and_gudmundson_correlation(sigma):
    # 4000 independent links. Sample std: standard error sigma / sqrt(2n) = 1.1%, bound 5% (~4.5 SE).
    # Mean: SE sigma / sqrt(n) = 0.016 sigma, bound 0.07 sigma. Correlation at one decorrelation
    # distance exp(-1) = 0.368: SE (1 - rho^2) / sqrt(n) = 0.014, bound 0.06; at 3 d_corr 0.050.
    n, dc = 4000, 13.0
    s0, s1, s3 = [], [], []
    for seed in range(n):
        sh = pl.Shadowing(sigma, dc, np.random.default_rng(seed))
        s3.append(sh.at(3 * dc))      # queried out of order on purpose: the grid fills in order
        s0.append(sh.at(0.0))
        s1.append(sh.at(dc))
    s0, s1, s3 = map(np.array, (s0, s1, s3))
    assert abs(s0.std(ddof=1) / sigma - 1) < 0.05
    assert abs(s1.std(ddof=1) / sigma - 1) < 0.05
    assert abs(s0.mean()) < 0.07 * sigma
    assert abs(np.corrcoef(s0, s1)[0, 1] - math.exp(-1)) < 0.06
    assert abs(np.corrcoef(s0, s3)[0, 1] - math.exp(-3)) < 0.06


def test_shadowing_depends_on_the_seed_only_not_the_query_order():
    a = pl.Shadowing(6.0, 10.0, np.random.default_rng(3))
    b = pl.Shadowing(6.0, 10.0, np.random.default_rng(3))
    pts = [0.0, 7.3, 20.0, 55.5]
    forward = [a.at(p) for p in pts]
    backward = [b.at(p) for p in reversed(pts)][::-1]
    assert forward == backward
    assert pl.Shadowing(0.0, 10.0, np.random.default_rng(0)).at(100.0) == 0.0


@pytest.mark.parametrize("model,los", [("umi", True), ("umi", False), ("uma", True), ("uma", False),
                                       ("log_distance", True)])
def test_scalar_and_array_paths_agree(model, los):
    m = pl.PathLoss(model=model, fc_ghz=3.5, los=los, h_ut_m=2.0, exponent=3.3)
    d = np.array([1.0, 10.0, 99.0, 210.0, 700.0, 4999.0])
    np.testing.assert_allclose([m(float(x)) for x in d], m(d), rtol=0, atol=1e-9)
    assert isinstance(m(50.0), float)
