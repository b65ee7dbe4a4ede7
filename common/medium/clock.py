"""Emulated clocks: the time axis the medium's figures are measured on.

* ``VirtualClock`` (mode ``"virtual"``): emulated time advances only when the emulation says so
  (``advance_to``), never with the host; the emulation runs as fast as the host allows and
  gives the same figures for the same seed whatever the host load.
* ``WallClock`` (mode ``"wall"``): emulated time is the host's monotonic time since the clock
  was made; figures then include the host's own delays (Python, gRPC, a loaded CPU).

Both give ``now_s()`` in seconds from the start of the run and refuse to go backwards.
"""
from __future__ import annotations

import time

__all__ = ["CLOCKS", "VirtualClock", "WallClock", "make_clock"]

CLOCKS = ("virtual", "wall")


class VirtualClock:
    mode = "virtual"

    def __init__(self, start_s: float = 0.0):
        self._now = float(start_s)

    def now_s(self) -> float:
        return self._now

    def advance_to(self, t_s: float) -> float:
        """Move to ``t_s`` (a ValueError when it is in the past); the new time."""
        if t_s < self._now:
            raise ValueError(f"t_s: the virtual clock is at {self._now!r} s, cannot go back to {t_s!r} s")
        self._now = float(t_s)
        return self._now


class WallClock:
    mode = "wall"

    def __init__(self, monotonic=time.monotonic):
        self._monotonic = monotonic
        self._t0 = monotonic()

    def now_s(self) -> float:
        return self._monotonic() - self._t0

    def advance_to(self, t_s: float) -> float:
        """Wall time cannot be moved: sleep until ``t_s`` (no-op when already past)."""
        delay = t_s - self.now_s()
        if delay > 0:
            time.sleep(delay)
        return self.now_s()


def make_clock(mode: str):
    if mode == "virtual":
        return VirtualClock()
    if mode == "wall":
        return WallClock()
    raise ValueError(f"clock: expected one of {', '.join(CLOCKS)}, got {mode!r}")
