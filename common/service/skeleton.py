"""The gRPC skeleton every service is built on (the relay and the edge server; the CLI helper
also serves the edge client).

    server, health, port = build_grpc_server(add_servicer, servicer, bind=..., service_name=...,
                                             max_workers=..., max_message_bytes=..., thread_prefix=...)
    handle = ServiceHandle(server, port, service_name, health, metrics_endpoint, servicer,
                           on_start=None, drain=None, drain_timeout_s=10.0)
    handle.start(); handle.stop(grace_s)          # SERVING / NOT_SERVING, drain, stop, close /metrics
    serve(handle, ready_file, name, logger)       # start, ready file, run until SIGTERM/SIGINT, stop
    run_cli(parser, argv, build, run, errors=(...), log_level="INFO")   # the services' cli() shape
    grpc_options(max_message_bytes), add_health_and_reflection(server, name), set_health(h, name, on)
    server_options(max_message_bytes)             # grpc_options + keepalive of the server side
    channel_options(max_message_bytes)            # grpc_options + keepalive, reconnect backoff and the
                                                  # retry policy (gRPC service config) of every client
    slots = StreamSlots(limit, what, field); slots.acquire(context) ... slots.release()
    handler_threads(cfg, base, max_streams=None), status_code_from_value(value, default), setup_logging(...)

Guarantees: health is NOT_SERVING from build until ``start`` (or the service's ``on_start``)
sets SERVING, and NOT_SERVING again before draining; ``stop`` runs once (later calls return
at once) and takes at most about ``grace_s``; a port that cannot be bound is an OSError
naming the address, with the half-built server stopped. A stream beyond ``StreamSlots``'
limit is refused at once with RESOURCE_EXHAUSTED naming the limit and its config field, and
``handler_threads(cfg, base, max_streams)`` sizes the pool so that ``base`` threads are left to
unary calls (health, GetInfo, ...) while every stream slot is taken.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from rkdsc.common.config import ConfigError, load_config

if TYPE_CHECKING:
    from rkdsc.common.config import Config
    from rkdsc.common.metrics import MetricsEndpoint

__all__ = ["grpc_options", "server_options", "channel_options", "service_config", "StreamSlots",
           "add_health_and_reflection", "set_health", "build_grpc_server", "ServiceHandle",
           "serve", "setup_logging", "run_cli", "handler_threads", "status_code_from_value"]

T = TypeVar("T")

# The services' GIL switch interval, set by run_cli in every service process: Python's default,
# 5 ms. A shorter interval (0.5 ms, kept from 2026-12-01 to 2026-12-07 for batch-1 latency) forces
# a thread computing in Python to hand over the GIL ten times as often; with 32 edges on two cores
# that cost 4-42 % of the images/s in six of six alternated pairs, and the batch-1 p99 showed no
# penalty at 5 ms (docs/decisions.md "The GIL switch interval back to Python's 5 ms").
SWITCH_INTERVAL_S = 0.005


def grpc_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """Channel/server options: message size limits both ways, no SO_REUSEPORT."""
    return [("grpc.max_receive_message_length", int(max_message_bytes)),
            ("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.so_reuseport", 0)]


KEEPALIVE_TIME_MS = 20_000          # clients ping an otherwise silent connection this often
KEEPALIVE_TIMEOUT_MS = 10_000       # ... and drop it when the ping is not answered in this time
SERVER_KEEPALIVE_TIME_MS = 60_000   # servers ping their clients (a dead edge's stream is cancelled)
RECONNECT_BACKOFF_MS = (100, 2_000)  # a lost connection is retried after 100 ms, then at most every 2 s
# unary calls that are safe to repeat: retried on UNAVAILABLE (never DecodeOne / TransmitOne / SetLink:
# a repeated frame is a duplicate frame id; streams are not retried either)
RETRYABLE_METHODS: tuple[tuple[str, str | None], ...] = (
    ("grpc.health.v1.Health", "Check"), ("rkdsc.v1.EdgeServer", "GetInfo"),
    ("rkdsc.v1.Relay", "GetLink"), ("rkdsc.v1.Relay", "ListLinks"))


def service_config(retry_methods: Sequence[tuple[str, str | None]] = RETRYABLE_METHODS) -> str:
    """gRPC service config (JSON) of every client channel: ``round_robin`` over every address the
    name resolves to (a headless Service's pods, a ``dns:///`` name, a ``ipv4:a,b`` list: each new
    stream goes to the next ready server replica), and ``retry_methods`` retried on UNAVAILABLE,
    4 attempts, 0.1 s doubling to 1 s."""
    names = [{"service": svc, **({"method": m} if m else {})} for svc, m in retry_methods]
    return json.dumps({"loadBalancingConfig": [{"round_robin": {}}], "methodConfig": [{
        "name": names,
        "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def server_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """A service's server options: ``grpc_options``, pings to its clients every 60 s (a client that
    is gone is noticed and its streams end), and the clients' 20 s keepalive pings allowed."""
    return grpc_options(max_message_bytes) + [
        ("grpc.keepalive_time_ms", SERVER_KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS * 2),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
        ("grpc.http2.max_pings_without_data", 0)]


def channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    """A client channel's options (the relay's upstream, the edge's uplink): ``grpc_options``,
    keepalive pings (20 s, 10 s timeout) while calls are open, reconnection after 100 ms backing
    off to at most 2 s (gRPC's default grows to 120 s: a server back after a minute would then
    wait up to two more), and ``service_config()`` (retries of the idempotent unary calls)."""
    return grpc_options(max_message_bytes) + [
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config())]


class StreamSlots:
    """At most ``limit`` concurrent streams of one kind (``what``, e.g. "relay: Transmit"); ``field``
    is the config field that sets the limit. ``acquire(context)`` takes a slot or aborts the call
    with RESOURCE_EXHAUSTED naming the limit and the field; ``release()`` gives it back."""

    def __init__(self, limit: int, what: str, field: str):
        self.limit, self.what, self.field = int(limit), what, field
        self._open = 0
        self._lock = threading.Lock()

    @property
    def open(self) -> int:
        with self._lock:
            return self._open

    def try_acquire(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def acquire(self, context: grpc.ServicerContext) -> None:
        if not self.try_acquire():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"{self.what}: {self.limit} concurrent streams are open, the limit ({self.field} = "
                          f"{self.limit}); retry later, or raise {self.field}")

    def release(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)


def add_health_and_reflection(server: grpc.Server, service_name: str) -> health.HealthServicer:
    """Register grpc.health.v1.Health (NOT_SERVING until set) and server reflection."""
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        (service_name, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    return health_servicer


def set_health(health_servicer: health.HealthServicer, service_name: str, serving: bool) -> None:
    """SERVING or NOT_SERVING for both the overall ("") and the named service."""
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", service_name):
        health_servicer.set(name, status)


def build_grpc_server(add_servicer: Callable[[Any, grpc.Server], None], servicer: Any, *, bind: str,
                      service_name: str, max_workers: int, max_message_bytes: int,
                      thread_prefix: str, credentials: grpc.ServerCredentials | None = None,
                      interceptors: Sequence[grpc.ServerInterceptor] = ()) -> tuple[grpc.Server, health.HealthServicer, int]:
    """The part every service shares: thread pool, message limits, servicer, health (NOT_SERVING
    until set) and reflection, bound to ``bind`` (TLS with ``credentials``, see
    ``rkdsc.common.service.security``; ``interceptors``: e.g. its ``Guard``). Raises OSError
    naming the address when the port cannot be bound (the caller releases what it built)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_prefix),
                         options=server_options(max_message_bytes), interceptors=list(interceptors) or None)
    add_servicer(servicer, server)
    health_servicer = add_health_and_reflection(server, service_name)
    try:  # grpcio raises RuntimeError on a failed bind (older versions returned port 0)
        port = server.add_secure_port(bind, credentials) if credentials is not None else server.add_insecure_port(bind)
    except RuntimeError:
        port = 0
    if port == 0:
        server.stop(None)
        raise OSError(f"{thread_prefix}: cannot bind {bind} (address in use or not available)")
    return server, health_servicer, port


class ServiceHandle:
    """A created (not yet started) service: the grpc.Server plus what its shutdown needs."""

    def __init__(self, grpc_server: grpc.Server, port: int, service_name: str,
                 health_servicer: health.HealthServicer, metrics_endpoint: "MetricsEndpoint | None",
                 servicer: Any, on_start: Callable[[], None] | None = None,
                 drain: Callable[[float], None] | None = None, drain_timeout_s: float = 10.0):
        self.grpc_server = grpc_server
        self.port = port
        self.service_name = service_name
        self.health = health_servicer
        self.metrics_endpoint = metrics_endpoint
        self.servicer = servicer
        self.metrics: Any = None           # the service's metrics object (ServerMetrics / RelayMetrics)
        self.drain_timeout_s = drain_timeout_s
        self._on_start = on_start
        self._drain = drain
        self._stopped = threading.Event()
        self._stop_lock = threading.Lock()

    @property
    def metrics_port(self) -> int | None:
        return self.metrics_endpoint.port if self.metrics_endpoint else None

    def start(self) -> "ServiceHandle":
        """Start serving; health SERVING now, or when the service's ``on_start`` decides."""
        self.grpc_server.start()
        if self._on_start is not None:
            self._on_start()
        else:
            set_health(self.health, self.service_name, True)
        return self

    def stop(self, grace_s: float | None = None) -> None:
        """Graceful: NOT_SERVING, drain in-flight frames, stop the gRPC server, close /metrics."""
        with self._stop_lock:
            if self._stopped.is_set():
                return
            grace_s = self.drain_timeout_s if grace_s is None else grace_s
            deadline = time.monotonic() + grace_s
            set_health(self.health, self.service_name, False)
            if self._drain is not None:
                self._drain(grace_s)
            self.grpc_server.stop(max(0.0, deadline - time.monotonic())).wait()
            if self.metrics_endpoint is not None:
                self.metrics_endpoint.close()
            self._stopped.set()

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._stopped.wait(timeout)


def serve(handle: ServiceHandle, ready_file: str | None = None, name: str = "service",
          logger: logging.Logger | None = None) -> int:
    """Start, write the ready file (JSON: port, metrics_port, pid), serve until SIGTERM/SIGINT,
    then stop gracefully. Returns the exit status (0). Logs through ``logger`` (default: the
    logger ``rkdsc.<name>``), each line prefixed with ``name``."""
    log = logger if logger is not None else logging.getLogger(f"rkdsc.{name}")
    stop = threading.Event()

    def on_signal(signum, frame):
        log.info("%s: received %s, shutting down", name, signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        handle.start()
        log.info("%s: serving on port %d (metrics port %s)", name, handle.port, handle.metrics_port)
        if ready_file:
            tmp = Path(f"{ready_file}.tmp")
            tmp.write_text(json.dumps({"port": handle.port, "metrics_port": handle.metrics_port,
                                       "pid": os.getpid()}))
            os.replace(tmp, ready_file)
        while not stop.wait(0.5):
            pass
        handle.stop()
        log.info("%s: stopped", name)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 0


def setup_logging(level: str = "INFO", default: str = "INFO") -> None:
    """Root logging to stderr at ``level`` (``default`` when the name is not a level)."""
    logging.basicConfig(level=getattr(logging, level.upper(), getattr(logging, default)),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
            build: Callable[[argparse.Namespace, "Config"], T], run: Callable[[argparse.Namespace, T], int], *,
            errors: tuple[type[BaseException], ...] = (), log_level: str = "INFO") -> int:
    """The services' ``cli()``: adds ``--log-level`` (default ``log_level``) to ``parser`` (which
    has ``--config``), parses ``argv``, sets up logging, loads the config and calls
    ``build(args, cfg)`` (with the GIL switch interval set to SWITCH_INTERVAL_S). A ConfigError or one of ``errors`` there prints
    ``<prog>: error: <message>`` to stderr and returns 2; otherwise returns ``run(args, built)``."""
    parser.add_argument("--log-level", default=log_level, help=f"logging level (default {log_level})")
    args = parser.parse_args(argv)
    setup_logging(args.log_level, default=log_level)
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        built = build(args, load_config(args.config))
    except (ConfigError, *errors) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    return run(args, built)


def handler_threads(cfg: "Config", base: int, max_streams: int | None = None) -> int:
    """gRPC handler threads for a service of this topology: ``base`` (unary calls: health,
    GetInfo, SetLink, ...) plus one per stream the service admits (``max_streams``, its
    ``StreamSlots`` limit; a stream holds its handler thread while it is open, and one beyond
    the limit only for the moment it takes to refuse it). Without ``max_streams``: two per
    transmitter (its stream, and a reconnecting or overlapping second one)."""
    if max_streams is None:
        return int(base) + 2 * len(cfg.transmitters)
    return int(base) + int(max_streams)


def status_code_from_value(value: int, default: Any = grpc.StatusCode.UNKNOWN) -> Any:
    """grpc.StatusCode for its integer value (``default``, UNKNOWN unless given, when none)."""
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return default
