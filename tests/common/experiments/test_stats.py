"""The one Wilson interval of the project: known values and its coverage (statistical)."""
from __future__ import annotations

import numpy as np
import pytest

from rkdsc.common.experiments.stats import ci95, format_ci, wilson_interval, yerr, z_for


def test_known_values():
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)
    # n = 50, k = 49 (one image is 2 pp): statsmodels proportion_confint(49, 50, method="wilson")
    lo, hi = wilson_interval(49, 50)
    assert (lo, hi) == (pytest.approx(0.895046, abs=1e-6), pytest.approx(0.996461, abs=1e-6))
    assert wilson_interval(25, 50) == (pytest.approx(0.366445, abs=1e-6), pytest.approx(0.633555, abs=1e-6))
    assert wilson_interval(50, 50) == (pytest.approx(0.928652, abs=1e-6), 1.0)
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.277533, abs=1e-6))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert ci95(0.98, 50) == [pytest.approx(0.895046, abs=1e-6), pytest.approx(0.996461, abs=1e-6)]
    assert ci95(None, 50) is None and ci95(0.5, 0) is None
    assert format_ci(0.98, 50) == "98.0% [89.5, 99.6] n=50"
    below, above = yerr([0.98], [50])
    assert below[0] == pytest.approx(100 * (0.98 - 0.895046), abs=1e-3) and above[0] == pytest.approx(1.6461, abs=1e-3)


def test_the_interval_narrows_with_n_and_contains_the_estimate():
    widths = [np.subtract(*wilson_interval(0.8 * n, n)[::-1]) for n in (10, 50, 250, 1250)]
    assert all(a > b for a, b in zip(widths, widths[1:]))
    for k in range(0, 51):
        lo, hi = wilson_interval(k, 50)
        assert 0.0 <= lo <= k / 50 <= hi <= 1.0


@pytest.mark.parametrize("bad", [(-1, 10), (11, 10), (float("nan"), 10), (1, -3), (1, 2.5)])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        wilson_interval(*bad)


@pytest.mark.parametrize("n", [20, 50, 100, 359])
def test_coverage_of_the_95_percent_interval(n):
    """Over many simulated binomial draws (true accuracy p ~ U[0.05, 0.95]) the 95 % interval
    holds the true p in 93..97 % of them."""
    rng = np.random.default_rng([2024, n])
    p = rng.uniform(0.05, 0.95, 20_000)
    k = rng.binomial(n, p)
    table = np.array([wilson_interval(j, n) for j in range(n + 1)])  # [n + 1, 2]
    lo, hi = table[k, 0], table[k, 1]
    coverage = float(np.mean((lo <= p) & (p <= hi)))
    assert 0.93 <= coverage <= 0.97, coverage
