"""The topology config's sections for the shared medium: ``[medium]`` and ``[transmitters.medium]``.

Both are optional and off by default: without ``[medium]`` nothing changes (each link is
independent, as before) and a transmitter's ``medium`` table is ignored. Validation is
``rkdsc.common.schema`` (pydantic v2), re-exported by ``rkdsc.common.config``; see
docs/medium.md for the model and docs/topology.md for the key reference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

from pydantic import PlainValidator, model_validator

from rkdsc.common.channel.pathloss import PATHLOSS_MODELS
from rkdsc.common.channel.trace import INTERPOLATIONS
from rkdsc.common.medium.clock import CLOCKS
from rkdsc.common.medium.compute import DEVICE_PROFILES, PAPER_CPU_GFLOPS, REFERENCE_CPU_MS
from rkdsc.common.medium.schedulers import SCHEDULERS
from rkdsc.common.schema import (Bool, Field, Float, Int, NonNegFloat, PosFloat, Problems, expected, one_of,
                                 schema)

__all__ = ["MEDIUM_FADINGS", "MediumConfig", "DeviceMediumConfig"]

MEDIUM_FADINGS = ("none", "doppler")  # doppler: time-correlated Rayleigh (Clarke/Jakes); none: mean SNR only


def _trace_path(value: Any) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, str) and value.strip():
        return Path(value).expanduser()
    raise expected("a non-empty string")


TracePath = Annotated[Path, PlainValidator(_trace_path)]
Waypoint = Annotated[list[Float], Field(min_length=3, max_length=3)]


@schema
class MediumConfig:
    clock: one_of(CLOCKS) = "virtual"  # virtual: event-driven emulated time (same seed -> same figures); wall: host time
    capacity_symbols_per_s: PosFloat = 1e6  # uplink capacity in complex symbols per second, shared by all
    slot_ms: PosFloat = 1.0          # scheduling slot; capacity * slot must be a whole number of symbols
    scheduler: one_of(SCHEDULERS) = "round-robin"  # who sends in each slot (round-robin, proportional-fair, max-snr)
    pf_time_constant_slots: Annotated[Float, Field(ge=1.0, le=1e9)] = 100.0  # proportional-fair averaging window
    carrier_ghz: Annotated[Float, Field(gt=0.0, le=1000.0)] = 3.5  # carrier frequency f_c (path loss, Doppler)
    bandwidth_hz: PosFloat = 1e6     # noise bandwidth of the link budget (one symbol per resource element)
    tx_power_dbm: Annotated[Float, Field(ge=-100.0, le=100.0)] = 23.0  # device transmit power
    noise_figure_db: Annotated[Float, Field(ge=0.0, le=50.0)] = 5.0  # base-station receiver noise figure
    antenna_gain_db: Annotated[Float, Field(ge=-50.0, le=100.0)] = 0.0  # total antenna gain, both ends
    pathloss: one_of(PATHLOSS_MODELS) = "umi"  # 3GPP TR 38.901 umi (street canyon), uma, or log_distance
    los: Bool = True                 # line of sight (TR 38.901 LOS or NLOS formula and sigma)
    pathloss_exponent: Annotated[Float, Field(ge=1.0, le=10.0)] = 3.0  # log-distance exponent n
    bs_height_m: Optional[Annotated[Float, Field(gt=0.0, le=1000.0)]] = None  # base-station height
                                     # (unset: the table's 10 m for umi, 25 m for uma, 10 m for log_distance)
    shadowing: Bool = True           # log-normal shadowing, Gudmundson-correlated over distance moved
    shadow_sigma_db: Optional[Annotated[Float, Field(ge=0.0, le=30.0)]] = None  # unset: TR 38.901 sigma
                                     # (umi 4 / 7.82 dB, uma 4 / 6 dB LOS / NLOS; log_distance 0)
    fading: one_of(MEDIUM_FADINGS) = "doppler"  # doppler: Clarke/Jakes Rayleigh, correlated in time by the speed;
                                     # none: the mean SNR only (the transmitter's own `fading` then applies)
    sinusoids: Annotated[Int, Field(ge=4, le=4096)] = 32  # sum-of-sinusoids terms of the Doppler fading
    feedback_delay_ms: Annotated[Float, Field(ge=0.0, le=60_000.0)] = 5.0  # the device's SNR is the scheduler's
                                     # view this long ago
    backhaul_delay_ms: Annotated[Float, Field(ge=0.0, le=60_000.0)] = 0.0  # relay <-> edge server, one way
    downlink_delay_ms: Annotated[Float, Field(ge=0.0, le=60_000.0)] = 1.0  # per result, base station -> device
    downlink_rate_bps: NonNegFloat = 0.0  # adds result_bytes * 8 / rate per result (0 = off)
    result_bytes: Annotated[Int, Field(ge=0, le=1 << 20)] = 64  # size of one result on the downlink
    server_image_ms: Annotated[Float, Field(ge=0.0, le=60_000.0)] = 0.5  # emulated decode time per image
    server_batch_ms: Annotated[Float, Field(ge=0.0, le=60_000.0)] = 0.0  # emulated fixed cost per decode batch
    host_gflops: PosFloat = PAPER_CPU_GFLOPS  # host peak the device profiles scale from
    reference_cpu_ms: Annotated[Float, Field(ge=0.0, le=60_000.0)] = REFERENCE_CPU_MS  # host encode ms per image
                                     # used by the virtual clock instead of a measurement
    snr_trace: Optional[TracePath] = None  # CSV of (time_s, snr_db) per transmitter instead of geometry
                                     # (relative to root; format: docs/medium.md)
    trace_interpolation: one_of(INTERPOLATIONS) = "linear"  # linear in dB, or previous (hold)
    seed: Annotated[Int, Field(ge=0, le=2**63 - 1)] = 0  # seed of shadowing and fading (with each link's seed)

    @model_validator(mode="after")
    def _whole_slot(self) -> "MediumConfig":
        per_slot = self.capacity_symbols_per_s * self.slot_ms / 1000.0
        if per_slot < 1 - 1e-9 or abs(per_slot - round(per_slot)) > 1e-6 * max(1.0, per_slot):
            p = Problems()
            p.note("slot_ms", f"capacity_symbols_per_s * slot_ms / 1000 must be a whole number of symbols >= 1, "
                              f"got {self.capacity_symbols_per_s:g} * {self.slot_ms:g} / 1000 = {per_slot:g}")
            p.raise_if_any()
        return self


@schema
class DeviceMediumConfig:
    distance_m: Optional[Annotated[Float, Field(ge=0.0, le=100_000.0)]] = None  # start distance from the base
                                     # station (unset, no waypoints: the link keeps its snr_db as mean SNR)
    azimuth_deg: Float = 0.0         # direction of the start position seen from the base station
    speed_mps: Annotated[Float, Field(ge=0.0, le=1000.0)] = 0.0  # speed in m/s (Doppler; movement)
    direction_deg: Float = 0.0       # heading relative to straight away from the base station (180 = towards)
    height_m: Annotated[Float, Field(gt=0.0, le=1000.0)] = 1.5  # device antenna height h_UT
    waypoints: Optional[list[Waypoint]] = None  # [[t_s, x_m, y_m], ...] piecewise-linear path (overrides distance)
    los: Optional[Bool] = None       # unset: the cell's `los`
    device: one_of(DEVICE_PROFILES) = "host"  # compute profile: host, or raspberry-pi-4b (paper: 32 GFLOPS)
    device_gflops: Optional[PosFloat] = None  # explicit device peak GFLOPS (overrides the profile)
    start_ms: Annotated[Float, Field(ge=0.0, le=1e9)] = 0.0  # emulated time the device starts
    frame_interval_ms: Annotated[Float, Field(ge=0.0, le=1e9)] = 0.0  # one image every this often (0 = back to back)

    @model_validator(mode="after")
    def _waypoint_times(self) -> "DeviceMediumConfig":
        if self.waypoints:
            times = [w[0] for w in self.waypoints]
            if any(b <= a for a, b in zip(times, times[1:])) or times[0] < 0:
                p = Problems()
                p.note("waypoints", f"expected times >= 0 and strictly increasing, got {times}")
                p.raise_if_any()
        return self

    @property
    def has_geometry(self) -> bool:
        return self.distance_m is not None or bool(self.waypoints)
