"""How sure an accuracy is: the Wilson score interval of a binomial proportion.

    lo, hi = wilson_interval(k=49, n=50)          # (0.8950, 0.9965) at 95 %
    ci95(0.98, 50) -> [0.8950, 0.9965]            # from an accuracy and its n
    format_ci(0.98, 50) -> "98.0% [89.5, 99.6] n=50"

An accuracy measured on ``n`` images is ``k / n`` with ``k`` correct; the Wilson interval
(Wilson 1927) keeps its nominal coverage at small ``n`` and near 0 or 1, where the normal
("Wald") interval collapses to a point. With 50 images one image is 2 percentage points and
the 95 % interval of 49/50 is about 10 points wide. One function for every plot and table of
the project (``rkdsc evaluate``, ``rkdsc ablation``, ``rkdsc demo``). Stdlib only.

When an accuracy is an average over several noise draws of the same ``n`` images (ablation),
the interval uses ``n`` images, the uncertainty that comes from the finite image set.
"""
from __future__ import annotations

import math
from statistics import NormalDist

__all__ = ["wilson_interval", "ci95", "z_for", "format_ci", "yerr"]


def z_for(confidence: float) -> float:
    """Two-sided standard-normal quantile: 0.95 -> 1.95996..."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: expected a number in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def wilson_interval(k: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval (lo, hi) of k successes in n trials; (0, 1) when n == 0.

    ``k`` may be fractional (an accuracy times n that is not a whole number, e.g. averaged over
    noise draws); it must lie in [0, n].
    """
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"n: expected an integer >= 0, got {n!r}")
    n = int(n)
    if n == 0:
        return (0.0, 1.0)
    if not (math.isfinite(k) and -1e-9 <= k <= n + 1e-9):
        raise ValueError(f"k: expected a number in [0, n={n}], got {k!r}")
    z = z_for(confidence)
    p = min(max(k / n, 0.0), 1.0)
    z2n = z * z / n
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z * math.sqrt(p * (1.0 - p) / n + z2n / (4.0 * n)) / (1.0 + z2n)
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    if k <= 0:
        lo = 0.0
    if k >= n:
        hi = 1.0
    return (lo, hi)


def ci95(accuracy: float | None, n: int) -> list[float] | None:
    """[lo, hi] of the 95 % Wilson interval of an accuracy measured on n images (None if unknown)."""
    if accuracy is None or n is None or not n or not math.isfinite(accuracy):
        return None
    lo, hi = wilson_interval(accuracy * n, n)
    return [round(lo, 6), round(hi, 6)]


def format_ci(accuracy: float | None, n: int, digits: int = 1) -> str:
    """'98.0% [89.5, 99.6] n=50' (percent), '-' when the accuracy is unknown."""
    ci = ci95(accuracy, n)
    if ci is None:
        return "-"
    return f"{100 * accuracy:.{digits}f}% [{100 * ci[0]:.{digits}f}, {100 * ci[1]:.{digits}f}] n={n}"


def yerr(accuracies: list[float], ns: list[int], scale: float = 100.0) -> list[list[float]]:
    """matplotlib's asymmetric ``yerr`` ([below...], [above...]) of the 95 % intervals."""
    below, above = [], []
    for a, n in zip(accuracies, ns):
        ci = ci95(a, n) or [a, a]
        below.append(scale * max(a - ci[0], 0.0))
        above.append(scale * max(ci[1] - a, 0.0))
    return [below, above]
