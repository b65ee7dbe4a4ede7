"""The base-station relay (``rkdsc.v1.Relay``): applies each transmitter's channel and
forwards the received symbols + CSI to the edge server; results come back the same way
with the link state as feedback.

    handle, port = create_server(cfg)   # binds; the upstream channel to the server is lazy
    handle.start()                      # SERVING while the edge server is SERVING and its tasks known
    cli(argv) -> exit status            # `rkdsc basestation`: 0, or 2 for a bad config / port

Per transmitter (``[[transmitters]]`` of the topology) the relay keeps a ``Link``:
``snr_db``, ``fading``, ``path_gain_db``, ``rician_k`` (the K factor of ``fading = "rician"``,
default ``channel.DEFAULT_K_FACTOR`` = 3) and its own ``numpy.random.Generator`` seeded
with ``seed``. Every frame goes through the link's ``FrameChannel`` (bit for bit
``rkdsc.common.channel.simulate(z [1, K], snr_db + path_gain_db, fading, rng, equalize=True,
k_factor=rician_k)``), in arrival order, under the link's lock:
the k-th frame of a transmitter sees the k-th draw of ``default_rng(seed)``, exactly like
``InProcessPipeline(seed=seed).run`` called once per image (batch of 1) in the same order.
``SetLink`` changes a link at run time (``seed`` re-seeds its Generator).

``TransmitBatch`` carries a whole encoded batch per message (``FrameBatch``: symbols ``[N, K]``
and N ``FrameMeta``): every rule above holds per row (a bad row refuses the whole message,
naming the row, and claims none of its frame ids), the link's channel runs once per message
(``FrameChannel.run`` = ``channel.simulate_frames``, whose row i sees exactly the draws of the
i-th of N single frames, so the seeding rule holds however frames are grouped), the server gets
one ``ChannelFrameBatch`` per message on one ``DecodeBatch`` stream, and each ``ResultBatch``
that comes back answers one message, rows in order, each Result with its own link feedback.

Optional emulation: airtime ``K / symbol_rate_hz`` seconds per frame (frames of one link
queue behind each other), and ``propagation_delay_ms`` added once on the uplink and once on
the downlink (latency only; it does not limit throughput).

With a ``[medium]`` table the shared cell replaces that per frame (``rkdsc.common.medium.hooks``,
docs/medium.md): SNR from geometry or a trace, Doppler-correlated fading, the scheduler's
emulated queueing and airtime, and ``Result.emulated`` on every answered frame.

Validation at the boundary (before anything is changed): unknown transmitter or task,
symbols not complex64 ``[K]`` / ``[1, K]``, byte length, NaN/Inf, average power not 1,
non-finite encoder SNR, label out of range, frame id already seen for that transmitter ->
INVALID_ARGUMENT; symbols larger than K complex64 values -> RESOURCE_EXHAUSTED (and gRPC
itself refuses messages above ``basestation.max_message_bytes``). On ``Transmit`` a bad
frame ends that stream with the status; other and new streams are unaffected.

Client strings are bounded before anything else: ``transmitter_id`` and ``task`` at most 128
characters, ``file`` at most 4096 bytes (INVALID_ARGUMENT naming the field and its length);
a message or log line shows at most 64 characters of them (``frames.shown``). So a frame the
relay accepts always fits the server's message limit when forwarded (checked too).

``Transmit`` runs on the shared stream pump (``rkdsc.common.service.pump``): frames go to the
server on one ``EdgeServer.Decode`` stream per edge stream, opened on the stream's first
accepted frame (an idle edge stream costs the server nothing); results come back in the order
the server answers; the stream ends when the server's stream ends (an error, or frames left
unanswered, ends it with that status). A bad frame stops the reading; the results of the
frames accepted before it are delivered, then the stream ends with the frame's status.
At most ``basestation.max_streams`` Transmit streams are open at a time; one more is refused
with RESOURCE_EXHAUSTED naming that field, and the handler pool keeps 64 threads for unary
calls and health beyond them.

Health follows the upstream (``UpstreamWatch``): SERVING while the edge server answers its
health check with SERVING (or, without a health service, answers GetInfo) and its task list
is known; NOT_SERVING while it is unreachable or not serving, checked every
``HEALTH_POLL_S`` and at once when the upstream channel's connectivity changes. The channel
reconnects with a backoff of at most 2 s (``channel_options``). On SIGTERM (drain) the relay
stops accepting frames and streams, waits for the server's results of the frames in flight,
delivers them, then ends each stream with UNAVAILABLE.

Server replicas (``rkdsc.basestation.upstream``): ``basestation.server_addr`` may name several
(``"a:1,b:2"``, a TOML list, or a DNS name with several addresses, ``"dns:///server:50051"``);
the upstream channel balances new streams round_robin over them, the relay is SERVING while at
least one replica is (gauge ``rkdsc_relay_upstream_replica_up{replica}``), and an upstream stream
whose replica goes away (UNAVAILABLE / CANCELLED, or a draining replica's UNAVAILABLE answer) is
reopened on another replica with its frames in flight resent (``_Uplink._failover``: at most
``RESEND_LIMIT`` times each, then an explicit UNAVAILABLE error Result per frame); the edge's
stream goes on.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import grpc
import numpy as np

from rkdsc.common import channel
from rkdsc.common.channel import FADINGS
from rkdsc.common.config import Config, check_server_addr, shown_ids
from rkdsc.common.medium.hooks import RelayHook
from rkdsc.common.metrics import UNKNOWN_LABEL, MetricsEndpoint, RelayMetrics
from rkdsc.common.service import (SERVER_MAX_MESSAGE_BYTES, SNR_LIMIT_DB, FrameIdRegistry, FrameRejected,
                                  HealthProbe, RequestQueue, ServiceHandle, StreamPump, StreamSlots,
                                  build_grpc_server, channel_options, check_batch, check_client_strings,
                                  check_finite, check_symbol_rows, check_symbols, handler_threads, invalid, run_cli, serve, set_health, shown)
from rkdsc.common.service.security import RELAY, RELAY_POLICY, Guard, authorize_frame, describe, open_channel, \
    server_credentials
from rkdsc.common.service.codecs import frame_symbols
from rkdsc.common.wire import encode_tensor
from rkdsc.basestation.upstream import (FAILOVER_WAIT_S, RESEND_LIMIT, ReplicaSet, error_answer,
                                        refused_by_replica, resendable, upstream_target, wait_ready)
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc

log = logging.getLogger("rkdsc.relay")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Relay"].full_name  # "rkdsc.v1.Relay"
PATH_GAIN_LIMIT_DB = 200.0
RICIAN_K_LIMIT = 1e6        # largest accepted Rician K factor (linear), as in the topology
INFO_WAIT_S = 30.0       # how long a frame waits for the server's task list before UNAVAILABLE
UPSTREAM_TIMEOUT_S = 60.0  # deadline of one TransmitOne -> DecodeOne call
HEALTH_POLL_S = 1.0      # the edge server's health is checked this often (and on connectivity changes)
HEALTH_TIMEOUT_S = 2.0   # deadline of one upstream health check / GetInfo
MAX_BATCH_ROWS = 4096    # frames in one FrameBatch at most (basestation.max_message_bytes bounds it first)
UNARY_THREADS = 64       # handler threads kept for unary calls and health beyond the stream slots
SERVER_SERVICE = pb.DESCRIPTOR.services_by_name["EdgeServer"].full_name  # "rkdsc.v1.EdgeServer"

RngFactory = Callable[[int], np.random.Generator]


@dataclass
class Link:
    """One transmitter's channel, owned by the relay."""
    transmitter_id: str
    snr_db: float                 # configured SNR (Es/N0 per complex symbol), dB
    fading: str                   # one of FADINGS
    path_gain_db: float           # added to snr_db
    seed: int                     # seed of rng
    rng: np.random.Generator      # draws h and n for this link only
    frames: int = 0               # frames sent through the link
    rician_k: float = channel.DEFAULT_K_FACTOR  # Rician K factor (linear), used when fading = "rician"
    busy_until: float = 0.0       # airtime emulation: monotonic time the link is free again
    lock: threading.Lock = field(default_factory=threading.Lock)
    _channel: tuple | None = None     # (fading, rician_k, FrameChannel) of the batched path
    _noise_var: tuple | None = None   # (effective snr_db, noise_var float32) of the batched path

    def frame_channel(self) -> tuple[channel.FrameChannel, np.float32]:
        """The link's channel for whole messages and its noise variance (cached until SetLink
        changes fading, K factor or SNR). Call under ``lock``."""
        if self._channel is None or self._channel[:2] != (self.fading, self.rician_k):
            self._channel = (self.fading, self.rician_k, channel.FrameChannel(self.fading, self.rician_k))
        snr = self.effective_snr_db
        if self._noise_var is None or self._noise_var[0] != snr:
            self._noise_var = (snr, channel.snr_db_to_noise_var(np.asarray([snr])).astype(np.float32)[0])
        return self._channel[2], self._noise_var[1]

    @property
    def effective_snr_db(self) -> float:
        return self.snr_db + self.path_gain_db

    def state(self, instantaneous_snr_db: float | None = None) -> pb.LinkState:
        eff = self.effective_snr_db
        return pb.LinkState(transmitter_id=self.transmitter_id, snr_db=self.snr_db,
                            path_gain_db=self.path_gain_db, effective_snr_db=eff, fading=self.fading,
                            seed=self.seed, frames=self.frames, rician_k=self.rician_k,
                            instantaneous_snr_db=eff if instantaneous_snr_db is None else instantaneous_snr_db)


def _sleep_until(t: float) -> None:
    delay = t - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class _Uplink:
    """One Transmit stream's way to the server: an ``EdgeServer.Decode`` call opened on the
    stream's first accepted frame, the frames in flight on it, and the responder thread that
    pushes the server's results to the edge's stream (``StreamPump.deliver``)."""

    def __init__(self, relay: "RelayServicer", stream: StreamPump, batched: bool = False):
        self.relay = relay
        self.stream = stream
        self.batched = batched                  # TransmitBatch: DecodeBatch upstream, one entry per message
        self.lock = threading.Lock()
        # (transmitter, first frame id) -> [LinkState (a list of them per row when batched), perf_counter at send]
        self.inflight: dict[tuple[str, int], list] = {}
        self.queue: RequestQueue | None = None  # (deliver_at, ChannelFrame) for the server
        self.call = None
        self.accepting = True
        self.closing = threading.Event()        # this side cancels the upstream call itself

    @staticmethod
    def _key(msg) -> tuple[str, int]:
        """A ChannelFrame's / Result's key, or a batch's: its transmitter and first frame id."""
        if isinstance(msg, pb.ChannelFrameBatch):
            return msg.transmitter_id, msg.frames[0].frame_id
        if isinstance(msg, pb.ResultBatch):
            first = msg.results[0] if msg.results else pb.Result()
            return first.transmitter_id, first.frame_id
        return msg.transmitter_id, msg.frame_id

    def _send(self, item: tuple[float, "pb.ChannelFrame | pb.ChannelFrameBatch"]):
        deliver_at, cf = item
        _sleep_until(deliver_at)
        cf.relay_sent_unix_ns = time.time_ns()
        with self.lock:
            entry = self.inflight.get(self._key(cf))
            if entry is not None:
                entry[1] = time.perf_counter()
        return cf

    def forward(self, cf, state, deliver_at: float) -> None:
        """Queue a processed frame (or batch: ``state`` is then the list of its rows' link states)
        for the server, opening the upstream call on the first one."""
        with self.lock:
            if not self.accepting:
                raise FrameRejected(grpc.StatusCode.UNAVAILABLE, "relay: this stream is closing, no new frames")
            if self.call is None:
                self.queue = RequestQueue(self._send)
                self.call = (self.relay.stub.DecodeBatch if self.batched else self.relay.stub.Decode)(self.queue)
                threading.Thread(target=self._respond, name="relay-responder", daemon=True).start()
            self.inflight[self._key(cf)] = [state, time.perf_counter(), cf, 0]  # + the message, times resent
            self.queue.put((deliver_at, cf))

    def close(self) -> None:
        """No more frames: half-close the upstream call (the server answers what it has, then its
        end ends the edge's stream); without an upstream call, end the edge's stream now."""
        with self.lock:
            if not self.accepting:
                return
            self.accepting = False
            q = self.queue
        if q is None:
            self.stream.finish()
        else:
            q.close()

    def stop(self, code: grpc.StatusCode, message: str) -> None:
        """Drain: take no more frames, deliver the results of those in flight, then end with `code`."""
        self.stream.stop(code, message)
        self.close()

    def cancel(self) -> None:
        """The edge's stream is over: cancel the upstream call."""
        self.closing.set()
        with self.lock:
            self.accepting = False
            q, call = self.queue, self.call
        if q is not None:
            q.close()
        if call is not None:
            call.cancel()

    def _lost(self) -> int:
        """Frames sent upstream and not answered."""
        with self.lock:
            if not self.batched:
                return len(self.inflight)
            return sum(len(entry[0]) for entry in self.inflight.values())

    def _failover(self, why: str) -> str:
        """The upstream call failed because its replica went away (``upstream.resendable``): open a
        new call (round_robin: on a READY replica) and resend the frames in flight on it, each at
        most ``RESEND_LIMIT`` times, answering the others with an explicit UNAVAILABLE error.
        -> "resent" (go on with ``self.call``), "idle" (nothing in flight: the next frame opens a
        call), "done" (every frame answered and the edge half-closed) or "no" (the stream is over)."""
        relay, replicas = self.relay, self.relay.replicas
        with self.lock:
            if self.closing.is_set():
                return "no"
            answers, resend = [], []
            for key, entry in list(self.inflight.items()):
                entry[3] += 1
                if entry[3] > RESEND_LIMIT:
                    del self.inflight[key]
                    answers.append((entry, error_answer(entry[2], grpc.StatusCode.UNAVAILABLE,
                                                        f"server: {why}; not answered after {RESEND_LIMIT} "
                                                        f"resend(s) to another replica")))
                else:
                    resend.append(entry[2])
            if self.queue is not None:
                self.queue.close()
            if not resend:
                how = "idle" if self.accepting else "done"
                self.call = None if self.accepting else self.call
                self.queue = None if self.accepting else self.queue
            else:
                how = "resent"
                self.queue = RequestQueue(self._send)  # frames forwarded from now on queue behind the resent
                for cf in resend:
                    self.queue.put((0.0, cf))
                if not self.accepting:
                    self.queue.close()
            queue_ = self.queue
        for entry, answer in answers:
            state, sent = entry[:2]
            if self.batched:
                self.stream.deliver(relay._finish_batch(answer, state, None))
            else:
                self.stream.deliver(relay._finish(answer, state, None))
        rows = sum(len(e[0]) if self.batched else 1 for e, _ in answers)
        log.warning("relay: %s (%s stream); %s", why, self.stream.name,
                    f"resending {len(resend)} message(s) in flight on a new upstream call" if resend else
                    "nothing left to resend" + (f", {rows} frame(s) answered with UNAVAILABLE" if rows else ""))
        if how != "resent":
            return how
        if replicas is not None:
            replicas.failed_over.inc()
            replicas.resent.inc(sum(len(cf.frames) if self.batched else 1 for cf in resend))
        if not wait_ready(relay.upstream_channel, FAILOVER_WAIT_S):
            log.warning("relay: no edge-server replica READY within %.1f s; trying anyway", FAILOVER_WAIT_S)
        call = (relay.stub.DecodeBatch if self.batched else relay.stub.Decode)(queue_)
        with self.lock:
            self.call = call
            cancelled = self.closing.is_set()
        if cancelled:
            call.cancel()
        return "resent"

    def _respond(self) -> None:
        while True:
            call = self.call
            how = self._respond_to(call)
            if how != "resent":
                return

    def _respond_to(self, call) -> str:
        relay, stream = self.relay, self.stream
        try:
            for res in call:
                refused = refused_by_replica(res)
                if refused is not None and not self.closing.is_set():  # a draining replica: elsewhere
                    call.cancel()
                    how = self._failover(f"a replica answered UNAVAILABLE ({refused})")
                    if how in ("done", "no"):
                        stream.finish()
                    return how
                arrived = time.monotonic()
                with self.lock:
                    entry = self.inflight.pop(self._key(res), None)
                if relay.propagation_s > 0:
                    _sleep_until(arrived + relay.propagation_s)
                state, sent = (entry[:2] if entry is not None else (None, None))
                roundtrip = None if sent is None else time.perf_counter() - sent
                if self.batched:
                    stream.deliver(relay._finish_batch(res, state, roundtrip))
                else:
                    stream.deliver(relay._finish(res, state, roundtrip))
            lost = self._lost()
            if lost:  # the server ended its stream OK without answering every frame
                for _ in range(lost):
                    relay.metrics.frames.labels(UNKNOWN_LABEL, "failed").inc()
                stream.fail(grpc.StatusCode.UNAVAILABLE,
                            f"server: the decode stream ended with {lost} frame(s) unanswered")
                return "failed"
            stream.finish()
            return "finished"
        except grpc.RpcError as exc:
            if not self.closing.is_set() and resendable(exc):  # the replica went away (upstream.py)
                how = self._failover(f"the edge server's stream ended with {exc.code().name}: {exc.details()}")
                if how == "done":
                    stream.finish()
                if how != "no":
                    return how
            lost = self._lost()
            if exc.code() == grpc.StatusCode.CANCELLED and (self.closing.is_set() or not lost):
                stream.finish()
                return "finished"
            for _ in range(lost):
                relay.metrics.frames.labels(UNKNOWN_LABEL, "failed").inc()
            stream.fail(exc.code(), f"server: {exc.details()}")
            return "failed"


class RelayServicer(pb_grpc.RelayServicer):
    """Channel emulation between the edge devices and the edge server."""

    def __init__(self, cfg: Config, server_channel: grpc.Channel, metrics: RelayMetrics,
                 rng_factory: RngFactory = np.random.default_rng):
        self.cfg = cfg
        self.stub = pb_grpc.EdgeServerStub(server_channel)
        self.upstream_channel = server_channel      # failover waits on it for a READY replica
        self.replicas: ReplicaSet | None = None     # create_server sets it (rkdsc.basestation.upstream)
        self.metrics = metrics
        self.rng_factory = rng_factory
        self.symbol_rate_hz = cfg.basestation.symbol_rate_hz
        self.propagation_s = cfg.basestation.propagation_delay_ms / 1000.0
        self.links: dict[str, Link] = {}
        for t in cfg.transmitters:
            self.links[t.id] = Link(t.id, t.snr_db, t.fading, t.path_gain_db, t.seed, rng_factory(t.seed),
                                    rician_k=t.rician_k)
            metrics.link_snr_db.labels(t.id).set(t.effective_snr_db)
        self.medium = RelayHook.create(cfg, metrics)  # [medium] (issue 13); None: nothing new per frame
        # configured transmitters only reach the registry: at most len(links) windows
        self.frame_ids = FrameIdRegistry(max_transmitters=max(1, len(self.links)))
        self.slots = StreamSlots(cfg.basestation.max_streams, "relay: Transmit", "basestation.max_streams")
        self.result_wait_s = cfg.server.drain_timeout_s  # longest wait for accepted frames' results
        self._tasks: dict[str, pb.TaskInfo] = {}
        self._info_ready = threading.Event()
        self._draining = threading.Event()
        self._active = 0
        self._active_cv = threading.Condition()
        self._uplinks: set[_Uplink] = set()  # open Transmit streams (guarded by _active_cv)

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    # ------------------------------------------------------------------ server info
    def refresh_info(self, timeout_s: float = HEALTH_TIMEOUT_S) -> bool:
        """Ask the server for its tasks once; True when it answered (the task list is updated)."""
        try:
            info = self.stub.GetInfo(pb.InfoRequest(), timeout=timeout_s)
        except grpc.RpcError as exc:
            log.info("relay: edge server at %s did not answer GetInfo (%s)", self.cfg.basestation.server_addr,
                     exc.code().name)
            return False
        tasks = {t.name: t for t in info.tasks}
        if tasks.keys() != self._tasks.keys() or not self._info_ready.is_set():
            log.info("relay: edge server has tasks %s", ", ".join(tasks))
        self._tasks = tasks
        self._info_ready.set()
        return True

    def _task_info(self) -> dict[str, pb.TaskInfo]:
        if not self._info_ready.wait(INFO_WAIT_S):
            raise FrameRejected(grpc.StatusCode.UNAVAILABLE,
                                f"server: the edge server at {self.cfg.basestation.server_addr} has not answered yet")
        return self._tasks

    # ------------------------------------------------------------------ per frame
    def _link(self, transmitter_id: str) -> Link:
        link = self.links.get(transmitter_id)
        if link is None:
            known = shown_ids(self.links) if self.links else "(none configured)"  # a fleet: thousands
            raise invalid(f"transmitter_id: unknown transmitter {shown(transmitter_id)} (known: {known})")
        return link

    def _tx_label(self, transmitter_id: str) -> str:
        return transmitter_id if transmitter_id in self.links else UNKNOWN_LABEL

    def _admit(self, msg) -> tuple[Link, pb.TaskInfo, int]:
        """The checks a Frame and a FrameBatch share once their strings are bounded: a configured
        transmitter, a task the server has, the K of the message's codec ("" = the task's
        default) -> (link, task, K)."""
        link = self._link(msg.transmitter_id)
        tasks = self._task_info()
        task = tasks.get(msg.task)
        if task is None:
            raise invalid(f"task: unknown task {shown(msg.task)} (known: {', '.join(tasks)})")
        return link, task, frame_symbols(task, msg.codec)

    def _through_link(self, link: Link, z: np.ndarray, k: int) -> tuple:
        """One call of the link's channel for the frames z [N, K] under its lock (row i sees the
        draws the i-th of N single frames would see), its airtime after what the link is still
        sending, and the link feedback of each row -> (y, h, noise_var, snr_db, fading, states,
        channel_s, airtime_s, deliver_at)."""
        n = z.shape[0]
        with link.lock:
            snr, fading = link.effective_snr_db, link.fading
            fc, nv = link.frame_channel()
            t0 = time.perf_counter()
            y, h, noise_var = fc.run(z, nv, link.rng)  # = channel.simulate_frames: [N, K], [N, 1|K], [N]
            channel_s = time.perf_counter() - t0
            airtime_s = n * k / self.symbol_rate_hz if self.symbol_rate_hz > 0 else 0.0
            tx_start = max(time.monotonic(), link.busy_until)
            link.busy_until = tx_start + airtime_s
            deliver_at = link.busy_until + self.propagation_s
            gains = np.mean(np.abs(h) ** 2, axis=1)  # [N]: the instantaneous SNR of each row, for feedback
            with np.errstate(divide="ignore"):
                inst = snr + 10.0 * np.log10(gains.astype(np.float64))
            states = []
            for g in inst.tolist():
                link.frames += 1
                states.append(link.state(instantaneous_snr_db=g if math.isfinite(g) else -SNR_LIMIT_DB))
        self.metrics.channel_seconds.observe(channel_s)
        return y, h, noise_var, snr, fading, states, channel_s, airtime_s, deliver_at

    @staticmethod
    def _tensors(y: np.ndarray, h: np.ndarray) -> dict[str, pb.Tensor]:
        out = {}
        for name, a in (("received", y), ("h", h)):
            data, dtype, shape = encode_tensor(a.astype(np.complex64, copy=False))
            out[name] = pb.Tensor(data=data, dtype=dtype, shape=shape)
        return out

    @staticmethod
    def _check_size(msg, what: str, hint: str = "") -> None:
        size = msg.ByteSize()
        if size > SERVER_MAX_MESSAGE_BYTES:  # cannot happen with the bounds above unless K is huge
            raise FrameRejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"symbols: the {what} would be {size} bytes, more than the edge server's "
                                f"limit of {SERVER_MAX_MESSAGE_BYTES} bytes{hint}")

    def process(self, frame: pb.Frame) -> tuple[pb.ChannelFrame, pb.LinkState, float]:
        """Validate, apply the link's channel -> (channel frame, link feedback, deliver_at).

        deliver_at (time.monotonic) accounts for airtime and the uplink propagation delay.
        Raises FrameRejected; nothing changes for a rejected frame."""
        if self._draining.is_set():
            raise FrameRejected(grpc.StatusCode.UNAVAILABLE, "relay: shutting down, no new frames")
        received_ns = time.time_ns()
        check_client_strings(frame)
        link, task, k = self._admit(frame)
        z = check_symbols(frame.symbols, "symbols", k, check_power=True)  # [1, K]
        check_finite(frame.encoder_snr_db, "encoder_snr_db", -SNR_LIMIT_DB, SNR_LIMIT_DB)
        if frame.has_label and not 0 <= frame.label < task.num_classes:
            raise invalid(f"label: expected a class index in [0, {task.num_classes}), got {frame.label}")
        if self.medium is not None:  # [medium]: the shared cell's channel and emulated time (issue 13)
            return self.medium.process(self, frame, link, z, received_ns,
                                       lambda: self.frame_ids.claim(frame.transmitter_id, frame.frame_id))
        self.frame_ids.claim(frame.transmitter_id, frame.frame_id)
        y, h, noise_var, snr, fading, states, channel_s, airtime_s, deliver_at = self._through_link(link, z, k)
        cf = pb.ChannelFrame(
            transmitter_id=frame.transmitter_id, task=frame.task, frame_id=frame.frame_id, **self._tensors(y, h),
            noise_var=float(noise_var[0]), snr_db=snr, fading=fading, equalized=True,
            encoder_snr_db=frame.encoder_snr_db, has_label=frame.has_label, label=frame.label,
            file=frame.file, edge_sent_unix_ns=frame.sent_unix_ns, relay_received_unix_ns=received_ns,
            channel_ms=channel_s * 1e3, airtime_ms=airtime_s * 1e3, codec=frame.codec)
        self._check_size(cf, "channel frame")
        return cf, states[0], deliver_at

    def process_batch(self, fb: pb.FrameBatch) -> tuple[pb.ChannelFrameBatch, list[pb.LinkState], float]:
        """``process`` for a FrameBatch: every rule per row, then one channel call for the whole
        message -> (channel batch, link feedback per row, deliver_at). Raises FrameRejected;
        nothing changes for a rejected message."""
        if self._draining.is_set():
            raise FrameRejected(grpc.StatusCode.UNAVAILABLE, "relay: shutting down, no new frames")
        received_ns = time.time_ns()
        n = check_batch(fb, MAX_BATCH_ROWS)
        link, task, k = self._admit(fb)
        z = check_symbol_rows(fb.symbols, "symbols", k, n, check_power=True)  # [N, K]
        check_finite(fb.encoder_snr_db, "encoder_snr_db", -SNR_LIMIT_DB, SNR_LIMIT_DB)
        for i, meta in enumerate(fb.frames):
            if meta.has_label and not 0 <= meta.label < task.num_classes:
                raise invalid(f"frames[{i}].label: expected a class index in [0, {task.num_classes}), "
                              f"got {meta.label}")
        if self.medium is not None:  # [medium]: the shared cell's channel and emulated time (issue 13)
            return self.medium.process_batch(self, fb, link, z, received_ns,
                                             lambda: self.frame_ids.claim_many(fb.transmitter_id,
                                                                               [m.frame_id for m in fb.frames]))
        self.frame_ids.claim_many(fb.transmitter_id, [m.frame_id for m in fb.frames])
        y, h, noise_var, snr, fading, states, channel_s, airtime_s, deliver_at = self._through_link(link, z, k)
        cb = pb.ChannelFrameBatch(
            transmitter_id=fb.transmitter_id, task=fb.task, frames=fb.frames, **self._tensors(y, h),
            noise_var=float(noise_var[0]), snr_db=snr, fading=fading, equalized=True,
            encoder_snr_db=fb.encoder_snr_db, edge_sent_unix_ns=fb.sent_unix_ns, relay_received_unix_ns=received_ns,
            channel_ms=channel_s * 1e3, airtime_ms=airtime_s * 1e3, codec=fb.codec)
        self._check_size(cb, "channel batch", " (send fewer frames per message)")
        return cb, states, deliver_at

    def _finish_batch(self, rb: pb.ResultBatch, states: list[pb.LinkState] | None,
                      roundtrip_s: float | None) -> pb.ResultBatch:
        for i, res in enumerate(rb.results):
            self._finish(res, states[i] if states is not None and i < len(states) else None, roundtrip_s)
        return rb

    def _finish(self, res: pb.Result, state: pb.LinkState | None, roundtrip_s: float | None) -> pb.Result:
        if self.medium is not None:  # [medium]: Result.emulated (issue 13)
            self.medium.finish(res)
        if state is not None:
            res.link.CopyFrom(state)
        if roundtrip_s is not None:
            res.relay_roundtrip_ms = roundtrip_s * 1e3
            self.metrics.roundtrip_seconds.observe(roundtrip_s)
        res.relay_returned_unix_ns = time.time_ns()
        outcome = "ok" if res.error.code == 0 else "error"
        self.metrics.frames.labels(self._tx_label(res.transmitter_id), outcome).inc()
        return res

    def _reject_batch(self, fb: pb.FrameBatch, exc: FrameRejected) -> None:
        self.metrics.frames.labels(self._tx_label(fb.transmitter_id), "invalid").inc(max(1, len(fb.frames)))
        first = fb.frames[0].frame_id if fb.frames else None
        log.info("relay: rejected a message of %d frame(s) (first %s) of %s: %s %s", len(fb.frames), first,
                 shown(fb.transmitter_id), exc.code.name, exc.message)

    def _reject(self, frame: pb.Frame, exc: FrameRejected) -> None:
        self.metrics.frames.labels(self._tx_label(frame.transmitter_id), "invalid").inc()
        log.info("relay: rejected frame %s of %s: %s %s", frame.frame_id, shown(frame.transmitter_id),
                 exc.code.name, exc.message)

    # ------------------------------------------------------------------ RPCs
    def _enter(self, context, uplink: "_Uplink | None" = None) -> None:
        with self._active_cv:
            if self._draining.is_set():
                context.abort(grpc.StatusCode.UNAVAILABLE, "relay: shutting down")
            if uplink is not None:
                self.slots.acquire(context)  # RESOURCE_EXHAUSTED naming basestation.max_streams
                self._uplinks.add(uplink)
            self._active += 1

    def _leave(self, uplink: "_Uplink | None" = None) -> None:
        with self._active_cv:
            self._active -= 1
            if uplink is not None:
                self._uplinks.discard(uplink)
                self.slots.release()
            self._active_cv.notify_all()

    def TransmitOne(self, request, context):
        self._enter(context)
        try:
            try:
                authorize_frame(context, request.transmitter_id)  # security: a device sends only as itself
                cf, state, deliver_at = self.process(request)
            except FrameRejected as exc:
                self._reject(request, exc)
                context.abort(exc.code, exc.message)
            _sleep_until(deliver_at)
            cf.relay_sent_unix_ns = time.time_ns()
            t0 = time.perf_counter()
            try:
                res = self.stub.DecodeOne(cf, timeout=UPSTREAM_TIMEOUT_S)
            except grpc.RpcError as exc:
                self.metrics.frames.labels(self._tx_label(request.transmitter_id), "failed").inc()
                context.abort(exc.code(), f"server: {exc.details()}")
            roundtrip = time.perf_counter() - t0
            if self.propagation_s > 0:
                time.sleep(self.propagation_s)
            return self._finish(res, state, roundtrip)
        finally:
            self._leave()

    def Transmit(self, request_iterator, context):
        # results come from the upstream stream (responder), pushed in its order; the edge's
        # stream ends when that one does (or, without one, when the edge half-closes)
        yield from self._relay_stream(request_iterator, context, batched=False)

    def TransmitBatch(self, request_iterator, context):
        # Transmit with batched messages: one DecodeBatch upstream per edge stream, one channel
        # call per message, each ResultBatch answering one FrameBatch
        yield from self._relay_stream(request_iterator, context, batched=True)

    def _relay_stream(self, request_iterator, context, batched: bool):
        """Transmit / TransmitBatch: read the edge's messages on the pump, process each (one
        frame, or one FrameBatch), forward it on this stream's upstream call; the results come
        back through the uplink's responder."""
        name = "relay: TransmitBatch" if batched else "relay: Transmit"
        stream = StreamPump(context, log, name=name, thread_name="relay-reader",
                            end_when_idle=False, on_abort=lambda: uplink.cancel(), drain_s=self.result_wait_s)
        uplink = _Uplink(self, stream, batched=batched)
        self._enter(context, uplink)
        process, reject = (self.process_batch, self._reject_batch) if batched else (self.process, self._reject)

        def submit(msg) -> None:
            try:
                if not uplink.accepting:
                    raise FrameRejected(grpc.StatusCode.UNAVAILABLE, "relay: this stream is closing, no new frames")
                authorize_frame(context, msg.transmitter_id)  # security: a device sends only as itself
                uplink.forward(*process(msg))
            except FrameRejected as exc:
                reject(msg, exc)
                raise
            return None                      # its result comes back through the responder

        def failed(msg, exc: Exception) -> FrameRejected:
            # a bug must end the stream with an error, never silently (the edge would wait for the result)
            frames = [m.frame_id for m in msg.frames] if batched else [msg.frame_id]
            what = f"message (first frame {frames[0] if frames else None})" if batched else f"frame {frames[0]}"
            log.exception("relay: %s of %s failed", what, shown(msg.transmitter_id))
            self.metrics.frames.labels(self._tx_label(msg.transmitter_id), "failed").inc(max(1, len(frames)))
            return FrameRejected(grpc.StatusCode.INTERNAL, f"relay: {what} failed: {type(exc).__name__}: {exc}")

        try:
            stream.start(request_iterator, submit, on_error=failed, on_requests_done=uplink.close)
            yield from stream.results()
        finally:
            uplink.cancel()
            self._leave(uplink)

    def GetLink(self, request, context):
        link = self.links.get(request.transmitter_id)
        if link is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"transmitter_id: unknown transmitter "
                          f"{shown(request.transmitter_id)} (known: {shown_ids(self.links)})")
        with link.lock:
            return link.state()

    def ListLinks(self, request, context):
        links = []
        for link in self.links.values():
            with link.lock:
                links.append(link.state())
        return pb.ListLinksResponse(links=links)

    def SetLink(self, request, context):
        link = self.links.get(request.transmitter_id)
        if link is None:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"transmitter_id: unknown transmitter "
                          f"{shown(request.transmitter_id)} (known: {shown_ids(self.links)})")
        try:
            if request.HasField("snr_db"):
                check_finite(request.snr_db, "snr_db", -SNR_LIMIT_DB, SNR_LIMIT_DB)
            if request.HasField("path_gain_db"):
                check_finite(request.path_gain_db, "path_gain_db", -PATH_GAIN_LIMIT_DB, PATH_GAIN_LIMIT_DB)
            if request.HasField("fading") and request.fading not in FADINGS:
                raise invalid(f"fading: expected one of {', '.join(FADINGS)}, got {shown(request.fading)}")
            if request.HasField("rician_k"):
                check_finite(request.rician_k, "rician_k", 0.0, RICIAN_K_LIMIT)
            snr = request.snr_db if request.HasField("snr_db") else link.snr_db
            gain = request.path_gain_db if request.HasField("path_gain_db") else link.path_gain_db
            check_finite(snr + gain, "snr_db + path_gain_db", -SNR_LIMIT_DB, SNR_LIMIT_DB)
        except FrameRejected as exc:
            context.abort(exc.code, exc.message)
        with link.lock:
            if request.HasField("snr_db"):
                link.snr_db = float(request.snr_db)
            if request.HasField("path_gain_db"):
                link.path_gain_db = float(request.path_gain_db)
            if request.HasField("fading"):
                link.fading = request.fading
            if request.HasField("rician_k"):
                link.rician_k = float(request.rician_k)
            if request.HasField("seed"):
                link.seed = int(request.seed)
                link.rng = self.rng_factory(link.seed)
            state = link.state()
        self.metrics.link_snr_db.labels(link.transmitter_id).set(state.effective_snr_db)
        log.info("relay: link %s now snr_db=%g path_gain_db=%g fading=%s rician_k=%g seed=%d", link.transmitter_id,
                 state.snr_db, state.path_gain_db, state.fading, state.rician_k, state.seed)
        return state

    # ------------------------------------------------------------------ lifecycle
    def drain(self, timeout_s: float) -> bool:
        """Refuse new RPCs and frames; every open Transmit stream stops reading, gets the server's
        results of its frames in flight, then ends with UNAVAILABLE; wait for them to finish."""
        self._draining.set()
        deadline = time.monotonic() + timeout_s
        with self._active_cv:
            uplinks = list(self._uplinks)
        for uplink in uplinks:
            uplink.stop(grpc.StatusCode.UNAVAILABLE,
                        "relay: shutting down; the results of the frames accepted before were delivered")
        with self._active_cv:
            while self._active > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._active_cv.wait(remaining)
        return True


class UpstreamWatch:
    """The relay's health follows the edge server's: ``on_change(True)`` while the server answers
    its health check with SERVING (a server without a health service: while it answers GetInfo)
    and its task list was fetched (again after every outage: a new server may have other tasks),
    ``on_change(False)`` while it does not. Checked every ``poll_s`` on a daemon thread, and at
    once when the channel's connectivity changes (TRANSIENT_FAILURE / SHUTDOWN count as down
    right away). ``on_change`` is called on every change, first with the first check's result."""

    def __init__(self, servicer: RelayServicer, channel: grpc.Channel, on_change: Callable[[bool], None],
                 poll_s: float = HEALTH_POLL_S, timeout_s: float = HEALTH_TIMEOUT_S,
                 replicas: "ReplicaSet | None" = None):
        self.replicas = replicas  # several server replicas: SERVING while one is (rkdsc.basestation.upstream)
        self.servicer = servicer
        self.channel = channel
        self.on_change = on_change
        self.poll_s, self.timeout_s = poll_s, timeout_s
        self.probe = HealthProbe(servicer.cfg.basestation.server_addr, channel=channel)
        self.serving: bool | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "UpstreamWatch":
        self.channel.subscribe(self._on_connectivity, try_to_connect=True)
        self._thread = threading.Thread(target=self._run, name="relay-upstream-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """No more checks and no more ``on_change`` calls once this returns."""
        with self._lock:
            self._stop.set()
        self._wake.set()
        try:
            self.channel.unsubscribe(self._on_connectivity)
        except Exception:  # noqa: BLE001 - a closed channel has nothing to unsubscribe
            pass
        if self.replicas is not None:
            self.replicas.close()

    def _on_connectivity(self, state: grpc.ChannelConnectivity) -> None:
        if state in (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN):
            self._set(False, f"upstream channel {state.name}")
        self._wake.set()

    def _replica_status(self) -> str:
        """The upstream's health status: over the channel for one server; with several replicas
        SERVING while any replica is (each probed on its own, ``ReplicaSet.check``)."""
        if self.replicas is None or not self.replicas.several:
            status = self.probe.status(SERVER_SERVICE, timeout_s=self.timeout_s)
            if self.replicas is not None:
                self.replicas.record(self.replicas.fixed[0], status)
            return status
        states = self.replicas.check(self.timeout_s)
        for wanted in ("SERVING", "UNIMPLEMENTED"):
            if wanted in states.values():
                return wanted
        return "no replica SERVING (" + (", ".join(f"{r} {s}" for r, s in states.items()) or "none resolved") + ")"

    def check(self) -> tuple[bool, str]:
        status = self._replica_status()
        if status not in ("SERVING", "UNIMPLEMENTED"):
            return False, f"health check: {status}"
        if status == "UNIMPLEMENTED" or not self.serving or not self.servicer._info_ready.is_set():
            if not self.servicer.refresh_info(self.timeout_s):
                return False, "GetInfo failed"
        return True, "SERVING"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                up, why = self.check()
            except Exception as exc:  # noqa: BLE001 - the watch must go on
                up, why = False, f"{type(exc).__name__}: {exc}"
            if not self._stop.is_set():
                self._set(up, why)
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _set(self, up: bool, why: str) -> None:
        with self._lock:
            if self.serving == up or self._stop.is_set():
                return
            self.serving = up
            log.info("relay: edge server at %s is %s (%s); relay health %s", self.servicer.cfg.basestation.server_addr,
                     "up" if up else "down", why, "SERVING" if up else "NOT_SERVING")
            self.on_change(up)


class UpstreamChannels:
    """Every upstream channel of a relay (the first, and one more each time replicas were added)."""

    def __init__(self, first: grpc.Channel):
        self._lock = threading.Lock()
        self.all = [first]

    def add(self, channel: grpc.Channel) -> None:
        with self._lock:
            self.all.append(channel)

    def close(self) -> None:
        with self._lock:
            for channel in self.all:
                channel.close()


def create_server(cfg: Config, rng_factory: RngFactory = np.random.default_rng,
                  max_workers: int | None = None) -> tuple[ServiceHandle, int]:
    """Build the relay: servicer, gRPC server bound to ``basestation.host:port`` (0 = free
    port), metrics endpoint, and a (lazy) channel to ``basestation.server_addr`` (keepalive,
    reconnect backoff and retries from ``channel_options``)."""
    bs = cfg.basestation
    credentials = server_credentials(cfg.tls, RELAY)   # TLSError (a ConfigError) before anything is built
    guard = Guard(cfg.tls, RELAY_POLICY, "relay")
    metrics = RelayMetrics()
    def dial() -> grpc.Channel:
        return open_channel(upstream_target(bs.server_addr), cfg.tls, RELAY,
                            options=channel_options(SERVER_MAX_MESSAGE_BYTES))

    upstream = dial()
    channels = UpstreamChannels(upstream)
    servicer = RelayServicer(cfg, upstream, metrics, rng_factory)
    servicer.upstream_channel = upstream
    servicer.replicas = ReplicaSet(cfg, upstream, metrics, SERVER_SERVICE)  # per-replica health, failover counts

    def redial(added: list[str]) -> None:
        """New replicas behind the DNS name: new upstream streams go over a fresh channel (all replicas)."""
        fresh = dial()
        channels.add(fresh)
        servicer.upstream_channel = fresh
        servicer.stub = pb_grpc.EdgeServerStub(fresh)
        log.info("relay: new edge-server replica(s) %s: upstream streams opened from now on are spread "
                 "over every replica (a fresh channel)", ", ".join(added))

    servicer.replicas.on_new_replicas = redial
    if max_workers is None:  # one thread per admitted Transmit stream, plus room for unary calls
        max_workers = handler_threads(cfg, UNARY_THREADS, bs.max_streams)
    endpoint = None
    try:  # either port failing (an OSError naming the address and the field) releases everything
        if bs.metrics_port >= 0:
            endpoint = MetricsEndpoint(metrics.registry, bs.metrics_port, cfg.metrics.host or bs.host,
                                       web_config=cfg.metrics.web_config)
        server, health_servicer, port = build_grpc_server(
            pb_grpc.add_RelayServicer_to_server, servicer, bind=cfg.relay_bind, service_name=SERVICE_NAME,
            max_workers=max_workers, max_message_bytes=bs.max_message_bytes, thread_prefix="relay",
            credentials=credentials, interceptors=guard.interceptors)
    except OSError:
        if endpoint is not None:
            endpoint.close()
        channels.close()
        raise

    def on_change(up: bool) -> None:
        set_health(health_servicer, SERVICE_NAME, up and not servicer.draining)

    watch = UpstreamWatch(servicer, upstream, on_change, replicas=servicer.replicas)

    def drain(timeout_s: float) -> None:
        watch.stop()
        set_health(health_servicer, SERVICE_NAME, False)
        servicer.drain(timeout_s)

    handle = ServiceHandle(server, port, SERVICE_NAME, health_servicer, endpoint, servicer,
                           on_start=watch.start, drain=drain, drain_timeout_s=cfg.server.drain_timeout_s)
    handle.metrics = metrics
    handle.upstream = channels  # .close() closes every upstream channel the relay opened
    handle.watch = watch
    log.info("relay: %s on %s:%d; upstream to %s", describe(cfg.tls, guard), bs.host, port, bs.server_addr)
    return handle, port


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rkdsc basestation", description=(
        "Run the base-station relay: per-transmitter channel emulation (AWGN / fading, SNR, "
        "path gain, seed), forwarding to the edge server, results + link feedback back to "
        "the edge devices. gRPC health, reflection and Prometheus /metrics included; stops "
        "gracefully on SIGTERM/SIGINT. Endpoints can be overridden with RKDSC_RELAY_BIND, "
        "RKDSC_RELAY_METRICS_PORT and RKDSC_SERVER_ADDR. TLS / mutual TLS: [tls] of the topology or "
        "RKDSC_TLS=mtls RKDSC_TLS_DIR=DIR (docs/security.md)."))
    p.add_argument("--config", required=True, help="topology TOML file ([basestation] and [[transmitters]])")
    p.add_argument("--server", default=None, help="host:port of the edge server, or its replicas: 'a:1,b:2' (IP "
                   "addresses) or 'dns:///name:port' (overrides basestation.server_addr; docs/deployment.md)")
    p.add_argument("--ready-file", default=None,
                   help="write JSON {port, metrics_port, pid} here once listening (used by `rkdsc demo`)")

    def build(args: argparse.Namespace, cfg: Config) -> ServiceHandle:
        if args.server:
            cfg.basestation.server_addr = check_server_addr(args.server, "--server")
        return create_server(cfg)[0]

    def run(args: argparse.Namespace, handle: ServiceHandle) -> int:
        try:
            return serve(handle, args.ready_file, name="relay", logger=log)
        finally:
            handle.upstream.close()

    return run_cli(p, argv, build, run, errors=(OSError,))


def main() -> None:
    sys.exit(cli())
