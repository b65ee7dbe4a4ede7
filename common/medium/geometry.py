"""Device positions over emulated time: static, constant velocity, or piecewise-linear waypoints.

Coordinates: metres in the ground plane with the base station at the origin; ``t`` in seconds
of emulated time. ``distance_2d_m(t) = |position(t)|``; the 3D distance adds the antenna height
difference (``rkdsc.common.channel.pathloss.distance_3d_m``). ``distance_moved_m(t)`` is the path
length travelled since t = 0 (it drives the shadowing and fading processes, so both stay
correct when the speed changes). Propagation delay is ``d_3D / c``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rkdsc.common.channel.pathloss import C_M_PER_S

__all__ = ["Trajectory", "propagation_delay_s"]


def propagation_delay_s(d3d_m: float) -> float:
    """One-way propagation delay ``d / c`` (s) over ``d3d_m`` metres."""
    return float(d3d_m) / C_M_PER_S


@dataclass(frozen=True)
class Trajectory:
    """Waypoints ``(t_s, x_m, y_m)`` (times strictly increasing) joined by straight segments at
    constant speed, then ``velocity_after`` (vx, vy in m/s) from the last waypoint on. Before the
    first waypoint the device is at the first waypoint."""
    waypoints: tuple[tuple[float, float, float], ...]
    velocity_after: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self):
        if not self.waypoints:
            raise ValueError("waypoints: expected at least one (t_s, x_m, y_m) point, got none")
        times = [w[0] for w in self.waypoints]
        if any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError(f"waypoints: expected strictly increasing times, got {times}")

    # --------------------------------------------------------------- constructors
    @classmethod
    def static(cls, x_m: float, y_m: float = 0.0) -> "Trajectory":
        return cls(((0.0, float(x_m), float(y_m)),))

    @classmethod
    def radial(cls, distance_m: float, azimuth_deg: float = 0.0, speed_m_per_s: float = 0.0,
               direction_deg: float = 0.0) -> "Trajectory":
        """Start ``distance_m`` from the base station at ``azimuth_deg``; move at ``speed_m_per_s``
        in the direction ``direction_deg`` relative to straight away from the base station
        (0 = walking away, 180 = towards it, 90 = tangential)."""
        az = math.radians(azimuth_deg)
        heading = az + math.radians(direction_deg)
        x, y = distance_m * math.cos(az), distance_m * math.sin(az)
        return cls(((0.0, x, y),), (speed_m_per_s * math.cos(heading), speed_m_per_s * math.sin(heading)))

    # --------------------------------------------------------------- queries
    def _segment(self, t: float) -> tuple[float, float, float, float]:
        """(x, y, vx, vy) at time t (plain floats: this is called for every slot)."""
        wp = self.waypoints
        if t <= wp[0][0]:
            return wp[0][1], wp[0][2], 0.0, 0.0
        for (t0, x0, y0), (t1, x1, y1) in zip(wp, wp[1:]):
            if t < t1:
                vx, vy = (x1 - x0) / (t1 - t0), (y1 - y0) / (t1 - t0)
                return x0 + vx * (t - t0), y0 + vy * (t - t0), vx, vy
        vx, vy = self.velocity_after
        dt = t - wp[-1][0]
        return wp[-1][1] + vx * dt, wp[-1][2] + vy * dt, vx, vy

    def position(self, t_s: float) -> np.ndarray:
        return np.array(self._segment(float(t_s))[:2])

    def velocity(self, t_s: float) -> np.ndarray:
        return np.array(self._segment(float(t_s))[2:])

    def speed_m_per_s(self, t_s: float) -> float:
        return math.hypot(*self._segment(float(t_s))[2:])

    def distance_2d_m(self, t_s: float) -> float:
        return math.hypot(*self._segment(float(t_s))[:2])

    def distance_moved_m(self, t_s: float) -> float:
        t = float(t_s)
        wp = self.waypoints
        if t <= wp[0][0]:
            return 0.0
        total = 0.0
        for (t0, x0, y0), (t1, x1, y1) in zip(wp, wp[1:]):
            seg = math.hypot(x1 - x0, y1 - y0)
            if t < t1:
                return total + seg * (t - t0) / (t1 - t0)
            total += seg
        return total + math.hypot(*self.velocity_after) * (t - wp[-1][0])
