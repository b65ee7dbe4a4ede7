"""One device's link to the base station over emulated time: mean SNR from geometry (or a trace),
time-correlated fading, the scheduler's view and the device's delayed view.

``LinkModel.snr_db(t)`` is the instantaneous SNR (Es/N0 per complex symbol, dB)::

    mean_snr_db(t) = P_tx + G - PL(d_2D(t)) - S(s(t)) - N       (geometry; pathloss.py)
                   = trace(t)                                     (SNR trace file instead)
                   = fixed_snr_db                                 (neither: the configured snr_db)
    snr_db(t)      = mean_snr_db(t) + 10 log10 |h(s(t) / lambda)|^2   (doppler fading; else + 0)

with ``s(t)`` the distance moved. The base station is assumed to estimate ``snr_db(t)`` perfectly
at the time it schedules (``view``); the device learns it over the feedback path, so its encoder
uses ``device_view(t) = view(max(0, t - feedback_delay_s))``. Every random draw (shadowing, fading)
comes from the link's own Generator; the values depend on the seed only, not on query order.
"""
from __future__ import annotations

import math

import numpy as np

from rkdsc.common.channel.doppler import SumOfSinusoidsFading, wavelength_m
from rkdsc.common.channel.pathloss import PathLoss, Shadowing, distance_3d_m, snr_db_from_budget
from rkdsc.common.channel.trace import SnrTrace
from rkdsc.common.medium.geometry import Trajectory, propagation_delay_s

__all__ = ["LinkModel", "GAIN_FLOOR"]

GAIN_FLOOR = 1e-12  # |h|^2 floor so that a deep fade stays a finite SNR
CACHE_SIZE = 4096  # snr_db(t) values kept (cleared when full)


class LinkModel:
    def __init__(self, tx: str, *, trajectory: Trajectory | None = None, pathloss: PathLoss | None = None,
                 tx_power_dbm: float = 23.0, bandwidth_hz: float = 1e6, noise_figure_db: float = 5.0,
                 antenna_gain_db: float = 0.0, shadowing: Shadowing | None = None,
                 fading: SumOfSinusoidsFading | None = None, trace: SnrTrace | None = None,
                 fixed_snr_db: float = 10.0, fc_ghz: float = 3.5, feedback_delay_s: float = 0.0):
        self.tx = tx
        self.trajectory = trajectory
        self.pathloss = pathloss
        self.tx_power_dbm, self.bandwidth_hz = tx_power_dbm, bandwidth_hz
        self.noise_figure_db, self.antenna_gain_db = noise_figure_db, antenna_gain_db
        self.shadowing, self.fading, self.trace = shadowing, fading, trace
        self.fixed_snr_db = fixed_snr_db
        self.wavelength_m = wavelength_m(fc_ghz)
        self.feedback_delay_s = feedback_delay_s
        # P_tx + G - N: snr_db_from_budget with the loss terms taken out (computed once)
        self._budget_db = float(snr_db_from_budget(tx_power_dbm, 0.0, bandwidth_hz, noise_figure_db, 0.0,
                                                   antenna_gain_db))
        self._cache: dict[float, float] = {}   # t -> snr_db(t): the value is a function of t only
        if trajectory is not None and pathloss is None:
            raise ValueError(f"{tx}: a trajectory needs a path-loss model")

    def distance_2d_m(self, t_s: float) -> float:
        return self.trajectory.distance_2d_m(t_s) if self.trajectory is not None else math.nan

    def distance_3d_m(self, t_s: float) -> float:
        if self.trajectory is None:
            return 0.0
        return float(distance_3d_m(self.trajectory.distance_2d_m(t_s), self.pathloss.bs_height_m,
                                   self.pathloss.h_ut_m))

    def _moved_m(self, t_s: float) -> float:
        return self.trajectory.distance_moved_m(t_s) if self.trajectory is not None else 0.0

    def mean_snr_db(self, t_s: float) -> float:
        if self.trace is not None:
            return float(self.trace.snr_db(self.tx, t_s))
        if self.trajectory is None:
            return float(self.fixed_snr_db)
        pl = float(self.pathloss(self.trajectory.distance_2d_m(t_s)))
        shadow = self.shadowing.at(self._moved_m(t_s)) if self.shadowing is not None else 0.0
        return self._budget_db - pl - shadow

    def gain(self, t_s: float) -> complex:
        """The fading gain h at time t (1 without fading)."""
        if self.fading is None:
            return 1.0 + 0.0j
        return complex(self.fading.at_wavelengths(self._moved_m(t_s) / self.wavelength_m))

    def snr_db(self, t_s: float) -> float:
        t = float(t_s)
        hit = self._cache.get(t)
        if hit is None:
            g = max(abs(self.gain(t)) ** 2, GAIN_FLOOR)
            hit = self.mean_snr_db(t) + 10.0 * math.log10(g)
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            self._cache[t] = hit
        return hit

    view = snr_db  # the scheduler's view: perfect estimation at the base station

    def device_view(self, t_s: float) -> float:
        return self.snr_db(max(0.0, t_s - self.feedback_delay_s))

    def propagation_s(self, t_s: float) -> float:
        return propagation_delay_s(self.distance_3d_m(t_s))

    @staticmethod
    def sample(model: "LinkModel", times) -> np.ndarray:
        return np.array([model.snr_db(t) for t in times])
