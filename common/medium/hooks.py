"""The shared medium in the running services: one call per hook, nothing at all without [medium].

* Relay: ``RelayHook.create(cfg, metrics)`` is None without a ``[medium]`` table (the relay's
  per-frame path is then unchanged). With one, ``process_batch`` / ``process`` replace the
  relay's channel for a message: the run is laid out once by ``RelayMedium`` (virtual clock,
  docs/medium.md), each row goes through its link with the fading ``h`` at its first slot and
  the mean SNR from geometry or the trace (``apply_link``; the link's own Generator draws the
  noise, row after row in arrival order, so the k-th frame of a transmitter sees the k-th noise
  draw of ``default_rng(seed)``: the per-link seeding rule holds), and the decoder's SNR per row
  goes in ``ChannelFrameBatch.row_snr_db``. ``SetLink`` overrides: a link whose ``snr_db`` or
  ``path_gain_db`` differs from the topology's uses its ``snr_db + path_gain_db`` as mean SNR.
  ``finish(res)`` fills ``Result.emulated`` (``EmulatedLatency``) and the Prometheus histograms.
* Server: ``decoder_snr_db(cb)``: ``row_snr_db`` when given (checked: N finite values), else
  ``snr_db``.
* Edge: ``EdgeHook.create(cfg, tx, symbols, entries)`` (None without ``[medium]``): the
  encoder's SNR per batch (the scheduler's view ``feedback_delay_ms`` earlier, from the same
  seeded link model), ``image_index`` / ``images_total`` on the frames, the record fields
  (``emulated_ms``, ``emulated_capture_s``, ``distance_m``, ``channel_snr_db``) and the summary
  fields (``emulated_latency_ms`` p50 / p99, ``airtime_s`` used, ``emulated_images_per_s``).

Only the virtual clock is integrated in the services (``clock = "wall"`` is refused here with a
ConfigError naming ``medium.clock``). Errors are ``FrameRejected`` (INVALID_ARGUMENT) naming the field.
"""
from __future__ import annotations

import math
import threading
import time
from typing import Any, Iterable, Mapping

import numpy as np

from rkdsc.common import channel
from rkdsc.common.config import ConfigError
from rkdsc.common.medium.emulator import EMULATED_KEYS, FrameTiming, percentile_ms
from rkdsc.common.medium.runtime import EdgeMedium, MediumNotReady, RelayMedium, apply_link
from rkdsc.common.service.frames import invalid
from rkdsc.common.wire import encode_tensor
from rkdsc.v1 import emulator_pb2 as pb

__all__ = ["RelayHook", "EdgeHook", "decoder_snr_db", "emulated_dict", "RELAY_ANNOUNCE_TIMEOUT_S"]

RELAY_ANNOUNCE_TIMEOUT_S = 45.0  # every device's first frame within this of the first (< result_timeout_s)
SNR_LIMIT_DB = 200.0
_PROTO_KEYS = {"device_queue": "device_queue_ms", "encode": "encode_ms", "uplink_queue": "uplink_queue_ms",
               "airtime": "airtime_ms", "propagation": "propagation_ms", "server": "server_ms",
               "downlink": "downlink_ms", "total": "total_ms"}


def _check_clock(cfg) -> None:
    if cfg.medium.clock != "virtual":
        raise ConfigError(f"medium.clock: the running services emulate the virtual clock only, got "
                          f"{cfg.medium.clock!r} (use clock = \"virtual\"; docs/medium.md)")


def emulated_dict(e: "pb.EmulatedLatency") -> dict[str, float]:
    """``emulated_ms`` of a Result's ``EmulatedLatency`` (keys ``EMULATED_KEYS``)."""
    return {k: float(getattr(e, _PROTO_KEYS[k])) for k in EMULATED_KEYS}


def decoder_snr_db(cb: "pb.ChannelFrameBatch"):
    """The decoder's SNR of a batched message: ``row_snr_db`` [N] when set, else ``snr_db``."""
    if not len(cb.row_snr_db):
        return cb.snr_db
    if len(cb.row_snr_db) != len(cb.frames):
        raise invalid(f"row_snr_db: expected {len(cb.frames)} values (one per frame) or none, "
                      f"got {len(cb.row_snr_db)}")
    snr = np.asarray(cb.row_snr_db, np.float64)
    if not np.all(np.isfinite(snr)) or np.any(np.abs(snr) > SNR_LIMIT_DB):
        bad = next(float(v) for v in snr if not (math.isfinite(v) and abs(v) <= SNR_LIMIT_DB))
        raise invalid(f"row_snr_db: expected finite values in [-{SNR_LIMIT_DB:g}, {SNR_LIMIT_DB:g}] dB, got {bad!r}")
    return snr.astype(np.float32)


class RelayHook:
    def __init__(self, cfg, metrics=None, announce_timeout_s: float = RELAY_ANNOUNCE_TIMEOUT_S):
        _check_clock(cfg)
        self.cfg = cfg
        self.metrics = metrics
        self.announce_timeout_s = announce_timeout_s
        self.capacity = float(cfg.medium.capacity_symbols_per_s)
        self.fading = cfg.medium.fading
        self.configured = {t.id: (float(t.snr_db), float(t.path_gain_db)) for t in cfg.transmitters}
        self._lock = threading.Lock()
        self._medium: RelayMedium | None = None
        self._pending: dict[tuple[str, int], FrameTiming] = {}

    @classmethod
    def create(cls, cfg, metrics=None) -> "RelayHook | None":
        return None if cfg.medium is None else cls(cfg, metrics)

    @property
    def medium(self) -> RelayMedium | None:
        return self._medium

    def _get(self, tasks: Mapping[str, "pb.TaskInfo"]) -> RelayMedium:
        with self._lock:
            if self._medium is None:
                symbols = {name: int(t.symbols_per_image) for name, t in tasks.items()}
                self._medium = RelayMedium(self.cfg, symbols, announce_timeout_s=self.announce_timeout_s)
            return self._medium

    def _timings(self, medium: RelayMedium, tx: str, indices: list[int], images_total: int) -> list[FrameTiming]:
        if images_total < 1:
            raise invalid("images_total: the topology has a [medium] table: every frame must carry its "
                          "image_index and its run's images_total (>= 1), got 0 (an edge without [medium]?)")
        try:
            medium.announce(tx, images_total)
            return [medium.timing(tx, i, timeout_s=self.announce_timeout_s + 15.0) for i in indices]
        except MediumNotReady as exc:
            raise invalid(str(exc)) from None
        except ValueError as exc:  # the layout itself (e.g. a transmitter's task unknown to the server)
            raise invalid(f"medium: {exc}") from None

    def _rows(self, link, z: np.ndarray, timings: list[FrameTiming], medium: RelayMedium):
        """Channel of rows z [N, K] under link.lock -> y [N, K], h [N, 1], noise_var [N], mean SNR [N],
        instantaneous SNR [N], channel seconds."""
        override = (float(link.snr_db), float(link.path_gain_db)) != self.configured.get(link.transmitter_id)
        ys, hs, nvs, means, insts = [], [], [], [], []
        t0 = time.perf_counter()
        for i, f in enumerate(timings):
            mean = link.effective_snr_db if override else medium.mean_snr_db(f)
            mean = float(np.clip(mean, -SNR_LIMIT_DB + 1, SNR_LIMIT_DB - 1))
            if self.fading == "doppler":
                y, h, nv = apply_link(z[i:i + 1], medium.gain(f), mean, link.rng)
            else:  # the mean SNR only: the transmitter's own fading, frame by frame
                y, h, nv = channel.simulate(z[i:i + 1], mean, link.fading, link.rng, equalize=True,
                                            k_factor=link.rician_k)
            g = float(np.mean(np.abs(h) ** 2))
            ys.append(np.asarray(y, np.complex64))
            hs.append(np.asarray(h, np.complex64))
            nvs.append(float(np.asarray(nv).reshape(-1)[0]))
            means.append(mean)
            insts.append(mean + 10 * math.log10(g) if g > 0 else -SNR_LIMIT_DB)
            link.frames += 1
        return (np.concatenate(ys), np.concatenate(hs), np.asarray(nvs), means, insts,
                time.perf_counter() - t0)

    def process_batch(self, relay, fb: "pb.FrameBatch", link, z: np.ndarray, received_ns: int, claim):
        """(ChannelFrameBatch, link states per row, deliver_at) of a validated FrameBatch; ``claim()``
        (the frame ids) runs once the medium has accepted the message."""
        medium = self._get(relay._task_info())
        timings = self._timings(medium, fb.transmitter_id, [m.image_index for m in fb.frames], fb.images_total)
        claim()
        with link.lock:
            y, h, nv, means, insts, channel_s = self._rows(link, z, timings, medium)
            states = [link.state(instantaneous_snr_db=g) for g in insts]
        self._remember(fb.transmitter_id, [m.frame_id for m in fb.frames], timings)
        relay.metrics.channel_seconds.observe(channel_s)
        y_data, y_dtype, y_shape = encode_tensor(y)
        h_data, h_dtype, h_shape = encode_tensor(h)
        cb = pb.ChannelFrameBatch(
            transmitter_id=fb.transmitter_id, task=fb.task, frames=fb.frames,
            received=pb.Tensor(data=y_data, dtype=y_dtype, shape=y_shape),
            h=pb.Tensor(data=h_data, dtype=h_dtype, shape=h_shape), noise_var=float(nv[0]), snr_db=means[0],
            row_snr_db=means, fading="rayleigh" if self.fading == "doppler" else link.fading, equalized=True,
            encoder_snr_db=fb.encoder_snr_db, edge_sent_unix_ns=fb.sent_unix_ns, relay_received_unix_ns=received_ns,
            channel_ms=channel_s * 1e3, airtime_ms=sum(f.emulated_ms()["airtime"] for f in timings), codec=fb.codec)
        return cb, states, time.monotonic()

    def process(self, relay, frame: "pb.Frame", link, z: np.ndarray, received_ns: int, claim):
        """(ChannelFrame, link state, deliver_at) of a validated single Frame (``claim`` as above)."""
        medium = self._get(relay._task_info())
        (f,) = self._timings(medium, frame.transmitter_id, [frame.image_index], frame.images_total)
        claim()
        with link.lock:
            y, h, nv, means, insts, channel_s = self._rows(link, z, [f], medium)
            state = link.state(instantaneous_snr_db=insts[0])
        self._remember(frame.transmitter_id, [frame.frame_id], [f])
        relay.metrics.channel_seconds.observe(channel_s)
        y_data, y_dtype, y_shape = encode_tensor(y)
        h_data, h_dtype, h_shape = encode_tensor(h)
        cf = pb.ChannelFrame(
            transmitter_id=frame.transmitter_id, task=frame.task, frame_id=frame.frame_id,
            received=pb.Tensor(data=y_data, dtype=y_dtype, shape=y_shape),
            h=pb.Tensor(data=h_data, dtype=h_dtype, shape=h_shape), noise_var=float(nv[0]), snr_db=means[0],
            fading="rayleigh" if self.fading == "doppler" else link.fading, equalized=True,
            encoder_snr_db=frame.encoder_snr_db, has_label=frame.has_label, label=frame.label, file=frame.file,
            edge_sent_unix_ns=frame.sent_unix_ns, relay_received_unix_ns=received_ns, channel_ms=channel_s * 1e3,
            airtime_ms=f.emulated_ms()["airtime"], codec=frame.codec)
        return cf, state, time.monotonic()

    def _remember(self, tx: str, frame_ids: Iterable[int], timings: Iterable[FrameTiming]) -> None:
        with self._lock:
            for fid, f in zip(frame_ids, timings):
                self._pending[(tx, int(fid))] = f

    def finish(self, res: "pb.Result") -> None:
        """Fill ``res.emulated`` of an answered frame (and the histograms); errors get none."""
        with self._lock:
            f = self._pending.pop((res.transmitter_id, int(res.frame_id)), None)
        if f is None or res.error.code != 0:
            return
        ms = f.emulated_ms()
        e = res.emulated
        for k, v in ms.items():
            setattr(e, _PROTO_KEYS[k], v)
        e.captured_s, e.distance_m, e.channel_snr_db = f.captured_s, f.distance_m, f.snr_db
        if self.metrics is not None:
            for k, v in ms.items():
                self.metrics.emulated_seconds.labels(f.tx, k).observe(v / 1e3)
            self.metrics.airtime_seconds.labels(f.tx).inc(f.symbols / self.capacity)


class EdgeHook:
    def __init__(self, cfg, tx, symbols: int, entries: list):
        _check_clock(cfg)
        self.capacity = float(cfg.medium.capacity_symbols_per_s)
        self.symbols = int(symbols)
        self.positions = {e.index: pos for pos, e in enumerate(entries)}
        self.images_total = len(entries)
        self.medium = EdgeMedium(cfg, tx.id, symbols, max(1, len(entries)))

    @classmethod
    def create(cls, cfg, tx, symbols: int, entries: list) -> "EdgeHook | None":
        return None if cfg.medium is None or not entries else cls(cfg, tx, symbols, entries)

    def position(self, entry) -> int:
        return self.positions[entry.index]

    def encoder_snr_db(self, entry) -> float:
        """The SNR the encoder uses for the batch of ``entry`` (the base station's view, delayed)."""
        return float(self.medium.encoder_snr_db(self.position(entry)))

    def stamp(self, msg, entry=None) -> None:
        """image_index / images_total on a Frame (entry given) or images_total on a FrameBatch."""
        msg.images_total = self.images_total
        if entry is not None:
            msg.image_index = self.position(entry)

    @staticmethod
    def record(res: "pb.Result") -> dict[str, Any]:
        if not res.HasField("emulated"):
            return {}
        e = res.emulated
        return {"emulated_ms": emulated_dict(e), "emulated_capture_s": e.captured_s, "distance_m": e.distance_m,
                "channel_snr_db": e.channel_snr_db}

    def summary(self, answered: list[dict]) -> dict[str, Any]:
        rows = [r for r in answered if r.get("emulated_ms")]
        totals = [r["emulated_ms"]["total"] for r in rows]
        span_s = (max(r["emulated_capture_s"] + r["emulated_ms"]["total"] / 1e3 for r in rows)
                  - min(r["emulated_capture_s"] for r in rows)) if rows else None
        return {"emulated_latency_ms": {"p50": percentile_ms(totals, 50) if totals else None,
                                        "p99": percentile_ms(totals, 99) if totals else None},
                "airtime_s": len(rows) * self.symbols / self.capacity,
                "emulated_span_s": span_s,
                "emulated_images_per_s": (len(rows) / span_s) if span_s else None}
