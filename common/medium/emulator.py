"""The emulated path of every frame through the shared medium, and its latency breakdown.

A frame (one image) of device ``i``::

    captured -> [device_queue] -> encode -> [uplink_queue] -> airtime -> propagation (up, backhaul)
             -> server (queue + decode) -> downlink -> propagation (backhaul, down) -> result

``emulated_ms`` (``FrameTiming.emulated_ms()``) has the keys ``device_queue``, ``encode``,
``uplink_queue``, ``airtime``, ``propagation``, ``server``, ``downlink`` and ``total`` (ms); the
parts add up to ``total`` (result time - capture time) up to float rounding.

Model of the virtual clock (``MediumEmulator.run``), stated:

* Devices are open-loop sources: image ``j`` of a device is captured at
  ``start + j * frame_interval`` (all at ``start`` when the interval is 0); images are encoded
  in batches of ``batch_size`` in order, one batch at a time, a batch starting when its last
  image is captured and the previous batch is done; its frames reach the uplink queue together
  when it is done. Encode time: ``ComputeModel.encode_s`` (reference time x device factor).
  The edge's in-flight window is a host-side limit, not modelled in emulated time.
* Uplink: ``Cell`` (slots, scheduler, FIFO per device); the scheduler sees ``LinkModel.view``.
  The channel a frame sees is the link's SNR at the start of its first slot (block fading:
  one h per frame); the encoder's SNR is the device's view when its batch starts encoding:
  the scheduler's view ``feedback_delay`` earlier.
* Propagation: ``d_3D / c`` up and down (at the frame's first slot) plus the backhaul delay
  each way.
* Server: one FIFO batch server; when free it takes every frame that has arrived, up to
  ``max_batch``; a batch of ``b`` takes ``server_batch_ms + b * server_image_ms``.
* Downlink: per result ``downlink_delay_ms + result_bytes * 8 / downlink_rate_bps``, no
  contention among results.

Everything is a pure function of the config, the bundle's symbols per task, the number of
images per device and the seeds: two runs give identical figures whatever the host load.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from rkdsc.common.channel.doppler import SumOfSinusoidsFading
from rkdsc.common.channel.pathloss import PathLoss, Shadowing
from rkdsc.common.channel.trace import SnrTrace, load_trace
from rkdsc.common.medium.cell import Cell
from rkdsc.common.medium.compute import ComputeModel
from rkdsc.common.medium.geometry import Trajectory
from rkdsc.common.medium.link import LinkModel
from rkdsc.common.medium.schedulers import ProportionalFair, make_scheduler

__all__ = ["EMULATED_KEYS", "DeviceSpec", "FrameTiming", "MediumEmulator", "build_links", "device_spec",
           "device_timeline", "percentile_ms", "summarize"]

EMULATED_KEYS = ("device_queue", "encode", "uplink_queue", "airtime", "propagation", "server", "downlink", "total")
LINK_SEED_SALT = 0x6D656469756D  # "medium": keeps the medium's draws apart from the relay's per-link noise


@dataclass
class DeviceSpec:
    id: str
    symbols: int                 # K complex symbols per image (the task's symbols_per_image)
    images: int                  # images this device sends
    batch_size: int = 16
    start_s: float = 0.0
    frame_interval_s: float = 0.0
    compute: ComputeModel = field(default_factory=ComputeModel)
    task: str = ""


@dataclass
class FrameTiming:
    tx: str
    index: int                   # image index within its device
    symbols: int
    captured_s: float
    encode_start_s: float
    ready_s: float               # encoded, in the uplink queue
    first_slot_s: float = math.nan
    sent_s: float = math.nan     # last symbol on air
    server_arrival_s: float = math.nan
    server_done_s: float = math.nan
    result_s: float = math.nan
    propagation_s: float = 0.0
    downlink_s: float = 0.0
    snr_db: float = math.nan          # the channel it saw (scheduler's view at its first slot)
    encoder_snr_db: float = math.nan  # what the device knew when encoding (view feedback_delay earlier)
    distance_m: float = math.nan      # 2D distance at its first slot
    slots: int = 0

    def emulated_ms(self) -> dict[str, float]:
        parts = {"device_queue": self.encode_start_s - self.captured_s,
                 "encode": self.ready_s - self.encode_start_s,
                 "uplink_queue": self.first_slot_s - self.ready_s,
                 "airtime": self.sent_s - self.first_slot_s,
                 "propagation": self.propagation_s,
                 "server": self.server_done_s - self.server_arrival_s,
                 "downlink": self.downlink_s}
        out = {k: v * 1e3 for k, v in parts.items()}
        out["total"] = (self.result_s - self.captured_s) * 1e3
        return out


def device_timeline(d: DeviceSpec) -> list[FrameTiming]:
    """A device's own part of the path (capture, batch, encode): it depends on no other device."""
    out, free_at = [], d.start_s
    for b0 in range(0, d.images, max(1, d.batch_size)):
        idx = list(range(b0, min(d.images, b0 + d.batch_size)))
        captured = [d.start_s + j * d.frame_interval_s for j in idx]
        start = max(free_at, captured[-1])
        ready = start + d.compute.encode_s(len(idx))
        free_at = ready
        out += [FrameTiming(d.id, j, d.symbols, c, start, ready) for j, c in zip(idx, captured)]
    return out


def device_spec(cfg, t, symbols: int, images: int) -> DeviceSpec:
    """The ``DeviceSpec`` of transmitter config ``t`` in topology ``cfg`` (with a [medium] table)."""
    m, dev = cfg.medium, t.medium
    compute = ComputeModel(device=dev.device if dev else "host", device_gflops=dev.device_gflops if dev else None,
                           host_gflops=m.host_gflops, reference_cpu_ms=m.reference_cpu_ms)
    return DeviceSpec(t.id, int(symbols), int(images), t.batch_size, (dev.start_ms if dev else 0.0) / 1e3,
                      (dev.frame_interval_ms if dev else 0.0) / 1e3, compute, t.task)


def _link_rng(medium_seed: int, link_seed: int) -> np.random.Generator:
    return np.random.default_rng([int(medium_seed), int(link_seed), LINK_SEED_SALT])


def build_links(medium, transmitters, trace: SnrTrace | None = None) -> dict[str, LinkModel]:
    """``LinkModel`` per transmitter from a ``MediumConfig`` and ``TransmitterConfig`` s. A
    transmitter with a position (``medium.distance_m`` or ``waypoints``) gets its SNR from
    geometry; with a trace file, from the trace; otherwise its ``snr_db + path_gain_db`` is the
    mean SNR. Fading (``medium.fading = "doppler"``) applies to all."""
    if trace is None and medium.snr_trace is not None:
        trace = load_trace(medium.snr_trace, medium.trace_interpolation)
    links = {}
    for t in transmitters:
        dev = t.medium
        rng = _link_rng(medium.seed, t.seed)
        los = medium.los if dev is None or dev.los is None else dev.los
        pl = PathLoss(model=medium.pathloss, fc_ghz=medium.carrier_ghz, los=los, h_bs_m=medium.bs_height_m,
                      h_ut_m=dev.height_m if dev is not None else 1.5, exponent=medium.pathloss_exponent,
                      shadow_sigma_db=medium.shadow_sigma_db)
        traj = None
        if dev is not None and dev.waypoints:
            traj = Trajectory(tuple(tuple(w) for w in dev.waypoints))
        elif dev is not None and dev.distance_m is not None:
            traj = Trajectory.radial(dev.distance_m, dev.azimuth_deg, dev.speed_mps, dev.direction_deg)
        use_trace = trace if (trace is not None and t.id in trace.samples) else None
        shadow = (Shadowing(pl.sigma_db, pl.decorrelation_m, rng)
                  if medium.shadowing and traj is not None and use_trace is None else None)
        fading = SumOfSinusoidsFading(rng, medium.sinusoids) if medium.fading == "doppler" else None
        links[t.id] = LinkModel(t.id, trajectory=traj, pathloss=pl, tx_power_dbm=medium.tx_power_dbm,
                                bandwidth_hz=medium.bandwidth_hz, noise_figure_db=medium.noise_figure_db,
                                antenna_gain_db=medium.antenna_gain_db, shadowing=shadow, fading=fading,
                                trace=use_trace, fixed_snr_db=t.snr_db + t.path_gain_db, fc_ghz=medium.carrier_ghz,
                                feedback_delay_s=medium.feedback_delay_ms / 1e3)
    return links


class MediumEmulator:
    """The virtual-clock emulation of a whole run (see the module doc)."""

    def __init__(self, devices: Iterable[DeviceSpec], links: Mapping[str, LinkModel], *,
                 capacity_symbols_per_s: float, slot_s: float, scheduler="round-robin",
                 max_batch: int = 32, server_image_ms: float = 0.5, server_batch_ms: float = 0.0,
                 backhaul_delay_s: float = 0.0, downlink_delay_s: float = 0.0, downlink_rate_bps: float = 0.0,
                 result_bytes: int = 64):
        self.devices = list(devices)
        self.links = dict(links)
        missing = [d.id for d in self.devices if d.id not in self.links]
        if missing:
            raise ValueError(f"links: no link model for {', '.join(missing)}")
        self.cell = Cell(capacity_symbols_per_s, slot_s, scheduler, [d.id for d in self.devices],
                         link_view=lambda tx, t: self.links[tx].view(t))
        self.max_batch = int(max_batch)
        self.server_image_ms, self.server_batch_ms = server_image_ms, server_batch_ms
        self.backhaul_s = backhaul_delay_s
        self.downlink_s = downlink_delay_s + (result_bytes * 8 / downlink_rate_bps if downlink_rate_bps > 0 else 0.0)

    @classmethod
    def from_config(cls, cfg, symbols_per_task: Mapping[str, int], images: Mapping[str, int]) -> "MediumEmulator":
        """From a topology ``Config`` with a ``[medium]`` table, the bundle's symbols per task and
        the number of images each transmitter sends."""
        m = cfg.medium
        if m is None:
            raise ValueError("medium: the topology has no [medium] table")
        devices = []
        for t in cfg.transmitters:
            if t.task not in symbols_per_task:
                raise ValueError(f"transmitters[{t.id}].task: unknown task {t.task!r} "
                                 f"(known: {', '.join(symbols_per_task)})")
            devices.append(device_spec(cfg, t, symbols_per_task[t.task], images.get(t.id, 0)))
        scheduler = (ProportionalFair(m.pf_time_constant_slots) if m.scheduler == "proportional-fair"
                     else make_scheduler(m.scheduler))
        return cls(devices, build_links(m, cfg.transmitters), capacity_symbols_per_s=m.capacity_symbols_per_s,
                   slot_s=m.slot_ms / 1e3, scheduler=scheduler, max_batch=cfg.server.max_batch,
                   server_image_ms=m.server_image_ms, server_batch_ms=m.server_batch_ms,
                   backhaul_delay_s=m.backhaul_delay_ms / 1e3, downlink_delay_s=m.downlink_delay_ms / 1e3,
                   downlink_rate_bps=m.downlink_rate_bps, result_bytes=m.result_bytes)

    # ------------------------------------------------------------------ stages
    def _server(self, frames: list[FrameTiming]) -> None:
        order = sorted(frames, key=lambda f: (f.server_arrival_s, f.tx, f.index))
        i, free_at, n = 0, 0.0, len(order)
        while i < n:
            start = max(free_at, order[i].server_arrival_s)
            j = i
            while j < n and j - i < self.max_batch and order[j].server_arrival_s <= start:
                j += 1
            done = start + (self.server_batch_ms + (j - i) * self.server_image_ms) / 1e3
            for f in order[i:j]:
                f.server_done_s = done
            free_at, i = done, j

    def run(self) -> list[FrameTiming]:
        """Every frame's emulated path, in (device order, image index) order."""
        frames = [f for d in self.devices for f in device_timeline(d)]
        by_key = {(f.tx, f.index): f for f in frames}
        for f in sorted(frames, key=lambda f: (f.ready_s, f.tx, f.index)):
            self.cell.submit(f.tx, (f.tx, f.index), f.symbols, f.ready_s)
        for rec in self.cell.run():
            f = by_key[rec.key]
            link = self.links[f.tx]
            f.first_slot_s, f.sent_s, f.slots = rec.first_slot_start_s, rec.done_s, rec.slots
            f.snr_db = link.view(f.first_slot_s)
            f.encoder_snr_db = link.device_view(f.encode_start_s)
            f.distance_m = link.distance_2d_m(f.first_slot_s)
            prop_one_way = link.propagation_s(f.first_slot_s)
            f.server_arrival_s = f.sent_s + prop_one_way + self.backhaul_s
            f.propagation_s = 2 * (prop_one_way + self.backhaul_s)
        self._server(frames)
        for f in frames:
            f.downlink_s = self.downlink_s
            f.result_s = f.server_done_s + f.downlink_s + f.propagation_s / 2
        return frames

    def airtime_used_s(self) -> dict[str, float]:
        return {d.id: self.cell.airtime_used_s(d.id) for d in self.devices}


def percentile_ms(values, q: float) -> float:
    vals = np.asarray(list(values), float)
    return float(np.percentile(vals, q)) if vals.size else math.nan


def summarize(frames: Iterable[FrameTiming], airtime_s: Mapping[str, float] | None = None) -> dict[str, dict]:
    """Per transmitter: ``emulated_latency_ms`` {p50, p99}, ``airtime_s`` used, frames, mean SNR."""
    by_tx: dict[str, list[FrameTiming]] = {}
    for f in frames:
        by_tx.setdefault(f.tx, []).append(f)
    out = {}
    for tx, fs in by_tx.items():
        totals = [f.emulated_ms()["total"] for f in fs]
        out[tx] = {"frames": len(fs),
                   "emulated_latency_ms": {"p50": percentile_ms(totals, 50), "p99": percentile_ms(totals, 99)},
                   "airtime_s": (airtime_s or {}).get(tx, math.nan),
                   "snr_db_mean": float(np.mean([f.snr_db for f in fs]))}
    return out
