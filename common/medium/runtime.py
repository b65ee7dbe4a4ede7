"""The shared medium inside the running services: what the relay and the edge call.

* ``RelayMedium`` (relay, virtual clock): every transmitter announces how many images it will
  send (with its first frame); once all configured transmitters have (or ``announce_timeout_s``
  passed: the missing ones count as 0 images and a warning names them), the whole run is laid
  out once by ``MediumEmulator`` and ``timing(tx, index)`` gives each frame its ``FrameTiming``:
  the channel it sees (``snr_db``, the fading ``h`` at its first slot) and its ``emulated_ms``.
  Host order of arrival does not matter: the figures depend on the config and seeds only.
* ``apply_link(z, h, mean_snr_db, rng)``: the channel conventions with a given block gain:
  ``y = h z + n``, ``n ~ CN(0, 10^(-mean_snr_db / 10))`` (real parts drawn first, then imaginary),
  MMSE-equalized with perfect CSI; the effective SNR is ``mean_snr_db + 10 log10 |h|^2``.
* ``EdgeMedium`` (edge): the encoder's SNR for an image, ``device_view`` at the start of its
  batch's encode: the scheduler's view ``feedback_delay_ms`` earlier, from the same seeded link
  model the relay uses (so the feedback is deterministic in the virtual clock).

No grpc here (the services own the wire); numpy only.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from typing import Mapping

import numpy as np

from rkdsc.common.channel import make_equalizer, snr_db_to_noise_var
from rkdsc.common.medium.emulator import (FrameTiming, MediumEmulator, build_links, device_spec, device_timeline,
                                          summarize)

__all__ = ["RelayMedium", "EdgeMedium", "apply_link", "MediumNotReady"]

log = logging.getLogger("rkdsc.medium")
ANNOUNCE_TIMEOUT_S = 30.0


class MediumNotReady(RuntimeError):
    """The run could not be laid out (names the reason: an unknown transmitter, a frame index
    beyond the announced count, a conflicting announcement)."""


def apply_link(z: np.ndarray, h: complex, mean_snr_db: float, rng: np.random.Generator,
               equalizer: str = "mmse") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, h [B, 1], noise_var [B]) for symbols ``z`` [B, K] through block gain ``h``."""
    real = np.float32 if z.dtype == np.complex64 else np.float64
    noise_var = np.full(z.shape[0], snr_db_to_noise_var(float(mean_snr_db)), dtype=real)
    hh = np.full((z.shape[0], 1), h, dtype=z.dtype)
    std = np.sqrt(noise_var / 2.0)[:, None]
    n = (rng.standard_normal(z.shape) * std).astype(real) + 1j * (rng.standard_normal(z.shape) * std).astype(real)
    y = (hh * z + n.astype(z.dtype)).astype(z.dtype)
    return make_equalizer(equalizer)(y, hh, noise_var).astype(z.dtype), hh, noise_var


class RelayMedium:
    def __init__(self, cfg, symbols_per_task: Mapping[str, int], announce_timeout_s: float = ANNOUNCE_TIMEOUT_S,
                 monotonic=time.monotonic):
        if cfg.medium is None:
            raise ValueError("medium: the topology has no [medium] table")
        self.cfg = cfg
        self.symbols = dict(symbols_per_task)
        self.timeout_s = announce_timeout_s
        self._monotonic = monotonic
        self._first_announce: float | None = None
        self.totals: dict[str, int] = {}
        self._cv = threading.Condition()
        self._frames: dict[tuple[str, int], FrameTiming] | None = None
        self._emulator: MediumEmulator | None = None
        self.known = [t.id for t in cfg.transmitters]
        self.links = build_links(cfg.medium, cfg.transmitters)  # same seeds as the emulator's: same values

    def announce(self, tx: str, images_total: int) -> None:
        with self._cv:
            if tx not in self.known:
                raise MediumNotReady(f"transmitter_id: {tx!r} is not in the topology (known: {', '.join(self.known)})")
            if images_total < 1:
                raise MediumNotReady(f"images_total: expected an integer >= 1, got {images_total!r}")
            old = self.totals.get(tx)
            if old is not None and old != images_total:
                raise MediumNotReady(f"images_total: {tx!r} announced {old} images before, now {images_total}")
            if self._frames is not None and old is None:
                raise MediumNotReady(f"transmitter_id: {tx!r} announced itself after the run was laid out "
                                     f"(virtual clock: every device of the run must start together)")
            self.totals[tx] = int(images_total)
            if self._first_announce is None:
                self._first_announce = self._monotonic()
            self._cv.notify_all()

    @property
    def ready(self) -> bool:
        return self._frames is not None

    def _layout(self) -> None:
        missing = [tx for tx in self.known if tx not in self.totals]
        if missing:
            log.warning("medium: laying out the run without %s (no frame within %.0f s of the first device)",
                        ", ".join(missing), self.timeout_s)
        self._emulator = MediumEmulator.from_config(self.cfg, self.symbols, self.totals)
        self._frames = {(f.tx, f.index): f for f in self._emulator.run()}

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until the run is laid out (all announced, or the announce timeout); True when it is."""
        deadline = None if timeout_s is None else self._monotonic() + timeout_s
        with self._cv:
            while self._frames is None:
                all_in = all(tx in self.totals for tx in self.known)
                expired = (self._first_announce is not None
                           and self._monotonic() - self._first_announce >= self.timeout_s)
                if all_in or expired:
                    self._layout()
                    self._cv.notify_all()
                    break
                if deadline is not None and self._monotonic() >= deadline:
                    return False
                self._cv.wait(0.05)
            return True

    def timing(self, tx: str, index: int, timeout_s: float | None = None) -> FrameTiming:
        if not self.wait_ready(timeout_s):
            raise MediumNotReady("medium: the run is not laid out yet (waiting for every device's first frame)")
        f = self._frames.get((tx, int(index)))
        if f is None:
            raise MediumNotReady(f"image_index: {index!r} is beyond the {self.totals.get(tx, 0)} image(s) "
                                 f"{tx!r} announced")
        return f

    def gain(self, f: FrameTiming) -> complex:
        return self.links[f.tx].gain(f.first_slot_s)

    def mean_snr_db(self, f: FrameTiming) -> float:
        return self.links[f.tx].mean_snr_db(f.first_slot_s)

    def summary(self) -> dict[str, dict]:
        if self._frames is None:
            return {}
        return summarize(self._frames.values(), self._emulator.airtime_used_s())


class EdgeMedium:
    """One device's own view: the encoder SNR for each image (see the module doc)."""

    def __init__(self, cfg, transmitter_id: str, symbols: int, images_total: int):
        if cfg.medium is None:
            raise ValueError("medium: the topology has no [medium] table")
        t = cfg.transmitter(transmitter_id)
        self.link = build_links(cfg.medium, [t])[t.id]
        self.frames = {f.index: f for f in device_timeline(device_spec(cfg, t, symbols, images_total))}

    def encoder_snr_db(self, image_index: int) -> float:
        f = self.frames.get(int(image_index))
        if f is None:
            raise IndexError(f"image_index: {image_index!r} outside 0..{len(self.frames) - 1}")
        v = self.link.device_view(f.encode_start_s)
        return v if math.isfinite(v) else -100.0
