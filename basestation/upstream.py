"""The relay's way to one or several edge-server replicas: the gRPC target of
``basestation.server_addr``, per-replica health, and the failover rule of an edge stream's
upstream call (used by ``rkdsc.basestation.relay``).

    target = upstream_target(cfg.basestation.server_addr)   # what the relay's channel dials
    replicas = ReplicaSet(cfg, channel, metrics)             # per-replica health (UpstreamWatch)
    replicas.check(timeout_s) -> {replica: status}           # probes each, sets the gauge, logs changes
    resendable(exc) -> bool                                  # may a failed upstream call be redone?
    error_answer(msg, code, message) -> Result | ResultBatch  # explicit errors for unanswerable frames

Forms of ``server_addr`` (validated by ``rkdsc.common.config``) and what is dialled:

- ``"host:port"``: as is; gRPC's default resolver is DNS, so a name with several addresses (a
  compose service scaled with ``--scale server=2``, a headless Kubernetes Service) is several
  replicas; ``"dns:///host:port"`` says the same explicitly.
- ``"a:1,b:2"`` (or a TOML list): IP literals (``localhost`` = 127.0.0.1), dialled as gRPC's
  ``ipv4:a:1,b:2`` (``ipv6:`` for IPv6 literals).

Load balancing is gRPC's ``round_robin`` (``skeleton.service_config``): each new upstream call
goes to the next READY replica. The relay opens one upstream stream per edge stream and keeps it
for the edge stream's life, so edge streams (devices) spread over the replicas; the frames of one
edge stream stay on one replica until its upstream call fails.

Replicas added later: when a DNS name resolves to an address it did not have before (``--scale
server=3`` on a running stack), the relay opens a fresh upstream channel (``on_new_replicas``) and
opens its new upstream streams there, over every replica; streams already open stay where they are.
gRPC's resolver alone would not see the new replica until a connection broke.

Health per replica: every address of a list, and every address a DNS name resolves to (resolved
again every ``RESOLVE_S``), is probed on its own channel (``grpc.health.v1`` of
``rkdsc.v1.EdgeServer``); the gauge ``rkdsc_relay_upstream_replica_up{replica}`` is 1 while the
replica answers SERVING, and each change is logged. A single IP address is probed over the relay's
own channel, as before. The relay is SERVING while at least one replica is.

Failover: an upstream call that ends with UNAVAILABLE, or CANCELLED that the relay did not ask
for (the replica went away: killed, crashed, stopped without grace, connection lost), is
``resendable``, and so is a stream on which the replica answers a message with UNAVAILABLE
(``refused_by_replica``: it is draining after SIGTERM and decodes no new frames): the relay
opens a new upstream call (round_robin puts it on a READY replica),
waiting at most ``FAILOVER_WAIT_S`` for one, and resends the frames in flight on it, already
channel-processed (the channel's draws are not repeated). A frame is resent at most
``RESEND_LIMIT`` times; after that, or when no replica is READY in time, it is answered with an
explicit error Result (UNAVAILABLE, ``error_answer``). Other codes end the edge's stream as before.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from typing import Any, Callable

import grpc
from prometheus_client import Counter, Gauge

from rkdsc.common.config import DNS_SCHEME, Config, server_replicas
from rkdsc.common.service import HealthProbe, grpc_options
from rkdsc.common.service.security import RELAY, open_channel
from rkdsc.common.service.skeleton import RECONNECT_BACKOFF_MS
from rkdsc.v1 import emulator_pb2 as pb

log = logging.getLogger("rkdsc.relay")

RESEND_LIMIT = 2         # times a frame in flight is resent after its upstream call failed
FAILOVER_WAIT_S = 5.0    # longest wait for a READY replica before the frames in flight become errors
RESOLVE_S = 5.0          # a DNS server_addr is resolved again this often (replicas come and go)
PROBE_MESSAGE_BYTES = 1 << 20

_LOCALHOST = "127.0.0.1"


def _host_port(entry: str) -> tuple[str, int]:
    host, _, port = entry.rpartition(":")
    return host.strip("[]"), int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _literal(entry: str) -> str:
    """``localhost:p`` -> ``127.0.0.1:p``; other entries unchanged."""
    host, port = _host_port(entry)
    return f"{_LOCALHOST}:{port}" if host == "localhost" else entry


def upstream_target(server_addr: str) -> str:
    """The gRPC target the relay dials for a validated ``basestation.server_addr``."""
    parts = server_replicas(server_addr)
    if server_addr.startswith(DNS_SCHEME) or len(parts) == 1:
        return server_addr
    parts = [_literal(p) for p in parts]
    v6 = ":" in _host_port(parts[0])[0]
    return ("ipv6:" if v6 else "ipv4:") + ",".join(parts)


def resendable(exc: grpc.RpcError) -> bool:
    """An upstream call that failed because its replica went away (not because of a frame)."""
    return exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


_UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]


def refused_by_replica(answer) -> str | None:
    """A Result, or a ResultBatch whose every row, answered UNAVAILABLE by the server: the replica
    did not decode it because it is draining or stopping (a server's own rule, never a frame's
    fault) -> its message, to resend elsewhere; None for any other answer."""
    rows = answer.results if isinstance(answer, pb.ResultBatch) else [answer]
    if rows and all(r.error.code == _UNAVAILABLE for r in rows):
        return rows[0].error.message
    return None


def error_answer(msg, code: grpc.StatusCode, message: str):
    """The answer of a ChannelFrame (a Result) or a ChannelFrameBatch (a ResultBatch, one row per
    frame) that no replica decoded: ``error`` set, ``predicted_class`` -1, the frame's echoes kept."""
    def one(tid, task, meta, sent_ns, snr_db, codec):
        return pb.Result(frame_id=meta.frame_id, transmitter_id=tid, task=task, predicted_class=-1,
                         error=pb.FrameError(code=code.value[0], message=message), decoder_snr_db=snr_db,
                         edge_sent_unix_ns=sent_ns, has_label=meta.has_label, label=meta.label, file=meta.file,
                         codec=codec, server_done_unix_ns=time.time_ns())
    if isinstance(msg, pb.ChannelFrameBatch):
        return pb.ResultBatch(results=[one(msg.transmitter_id, msg.task, m, msg.edge_sent_unix_ns, msg.snr_db,
                                           msg.codec) for m in msg.frames])
    return one(msg.transmitter_id, msg.task, msg, msg.edge_sent_unix_ns, msg.snr_db, msg.codec)


def wait_ready(channel: grpc.Channel, timeout_s: float) -> bool:
    """True once the channel has a READY connection (round_robin: to at least one replica)."""
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        return False
    return True


class ReplicaSet:
    """The replicas of ``basestation.server_addr`` and their last health (see the module doc)."""

    def __init__(self, cfg: Config, channel: grpc.Channel, metrics: Any, service: str,
                 resolve_s: float = RESOLVE_S):
        self.cfg = cfg
        self.service = service
        self.resolve_s = resolve_s
        addr = cfg.basestation.server_addr
        parts = server_replicas(addr)
        self.name: str | None = None                 # a DNS name to resolve, or None
        self.fixed: list[str] = []                   # the replicas of a list
        if len(parts) > 1:
            self.fixed = [_literal(p) for p in parts]
        else:
            host, port = _host_port(parts[0])
            if _is_ip(host) or host == "localhost":
                self.fixed = [parts[0]]
            else:
                self.name, self.port = host, port
        # one IP address: probed over the relay's channel (the behaviour of a single server)
        self.shared = channel if (self.name is None and len(self.fixed) == 1) else None
        self.up = Gauge("rkdsc_relay_upstream_replica_up", "1 while the edge-server replica answers its health "
                        "check with SERVING, else 0", ["replica"], registry=metrics.registry)
        self.resent = Counter("rkdsc_relay_upstream_resent_frames_total", "Frames in flight resent on a new "
                              "upstream call after their replica went away", registry=metrics.registry)
        self.failed_over = Counter("rkdsc_relay_upstream_failovers_total", "Upstream calls reopened after "
                                   "their replica went away", registry=metrics.registry)
        self.status: dict[str, str] = {}
        self._probes: dict[str, HealthProbe] = {}
        self._channels: dict[str, grpc.Channel] = {}   # the probes' own channels
        self._resolved_at = -1e9
        self._known: list[str] = list(self.fixed)
        self._lock = threading.Lock()
        # called with the new addresses when a DNS name gains replicas (the relay redials: gRPC's own
        # resolver looks again only when a connection breaks, so its channel would never use them)
        self.on_new_replicas: Callable[[list[str]], None] | None = None

    @property
    def several(self) -> bool:
        """More than one replica possible (a list, or a DNS name): health is per replica."""
        return self.shared is None

    def _resolve(self) -> list[str]:
        if self.name is None:
            return self.fixed
        now = time.monotonic()
        if now - self._resolved_at >= self.resolve_s:
            self._resolved_at = now
            try:
                infos = socket.getaddrinfo(self.name, self.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                log.info("relay: cannot resolve the edge server name %s (%s)", self.name, exc)
                infos = []
            found = []
            for family, *_rest, sockaddr in infos:
                ip = sockaddr[0]
                entry = f"[{ip}]:{self.port}" if family == socket.AF_INET6 else f"{ip}:{self.port}"
                if entry not in found:
                    found.append(entry)
            if found != self._known:
                log.info("relay: %s resolves to %s", self.name, ", ".join(found) or "nothing")
            added = [f for f in found if f not in self._known]
            had = bool(self._known)
            self._known = found
            if added and had and self.on_new_replicas is not None:
                self.on_new_replicas(added)
        return self._known

    def _probe(self, replica: str) -> HealthProbe:
        probe = self._probes.get(replica)
        if probe is None:
            if self.shared is not None:
                probe = HealthProbe(replica, channel=self.shared)
            else:
                tls = self.cfg.tls
                options = grpc_options(PROBE_MESSAGE_BYTES) + [
                    ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                    ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
                    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1])]
                if self.name is not None and tls is not None and tls.mode != "off" and not tls.server_name:
                    options.append(("grpc.ssl_target_name_override", self.name))  # the certificate names the name
                channel = open_channel(replica, tls, RELAY, options=options)
                self._channels[replica] = channel
                probe = HealthProbe(replica, channel=channel)
            self._probes[replica] = probe
        return probe

    def record(self, replica: str, status: str) -> None:
        """Keep one replica's status: gauge and a log line on change."""
        before = self.status.get(replica)
        self.status[replica] = status
        self.up.labels(replica).set(1.0 if status == "SERVING" else 0.0)
        if before != status:
            serving = sum(s == "SERVING" for s in self.status.values())
            log.info("relay: edge-server replica %s is %s (%s); %d of %d replica(s) SERVING", replica,
                     "up" if status == "SERVING" else "down", status, serving, len(self.status))

    def check(self, timeout_s: float) -> dict[str, str]:
        """Probe every replica once -> {replica: status name} (gauge and logs updated)."""
        with self._lock:
            replicas = self._resolve()
            for gone in [r for r in self._probes if r not in replicas]:
                self._probes.pop(gone).close()
                if gone in self._channels:
                    self._channels.pop(gone).close()
                self.status.pop(gone, None)
                try:
                    self.up.remove(gone)
                except KeyError:
                    pass
                log.info("relay: edge-server replica %s is no longer named by %s", gone,
                         self.cfg.basestation.server_addr)
            out = {}
            for replica in replicas:
                out[replica] = self._probe(replica).status(self.service, timeout_s=timeout_s)
                self.record(replica, out[replica])
            return out

    def close(self) -> None:
        with self._lock:
            for probe in self._probes.values():
                probe.close()
            for channel in self._channels.values():
                channel.close()
            self._probes.clear()
            self._channels.clear()
