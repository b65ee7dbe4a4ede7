"""The edge server: CAT decoder + semantic decoder behind gRPC (``rkdsc.v1.EdgeServer``).

    handle, port = create_server(cfg)   # loads + verifies the bundle, binds, metrics endpoint
    handle.start()                      # health SERVING
    handle.stop()                       # NOT_SERVING, drain in-flight frames, stop

Per frame: validate (transmitter, task, received symbols complex64 [K] or [1, K], h, SNR,
label, frame id not seen before) -> ``complex_to_real(y, compact_dim)`` -> dynamic batch
across transmitters (``rkdsc.server.batcher``) -> ``ServerModel.decode`` with the frame's SNR ->
top-k softmax scores. A frame that breaks a rule ends its stream (or unary call) with
INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for size, whose message starts with the field; a
full queue or a draining server answers that frame with a Result whose ``error`` is set
(RESOURCE_EXHAUSTED / UNAVAILABLE) and the stream goes on.

The gRPC plumbing shared with the relay (health + reflection, ``ServiceHandle``,
signal-driven ``serve``, symbol validation) lives here too; importing this module does
not import onnxruntime (``rkdsc.common.bundle`` loads its runtime lazily).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import rkdsc.common.bundle as bundle_lib
from rkdsc.common import channel
from rkdsc.common.bundle import BundleError
from rkdsc.common.config import FADINGS, Config, ConfigError, load_config
from rkdsc.common.metrics import UNKNOWN_LABEL, MetricsEndpoint, ServerMetrics
from rkdsc.common.wire import WireError, decode_tensor
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
from rkdsc.server.batcher import Decoded, Draining, DynamicBatcher, QueueFull

log = logging.getLogger("rkdsc.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EdgeServer"].full_name  # "rkdsc.v1.EdgeServer"
SNR_LIMIT_DB = 100.0  # |snr_db| above this is rejected (noise_var would under/overflow float32)
POWER_TOLERANCE = 1e-2  # relative tolerance on mean |z|^2 = 1 of transmitted symbols


# ============================================================================ shared plumbing

class FrameRejected(Exception):
    """A frame that breaks a rule: `code` is the gRPC status, `message` starts with the field."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> FrameRejected:
    return FrameRejected(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_symbols(t: pb.Tensor, field: str, k: int, *, shapes: Iterable[tuple[int, ...]] | None = None,
                  check_power: bool = False) -> np.ndarray:
    """Validate a complex64 tensor of K symbols ([K] or [1, K] unless `shapes`) -> complex64 [1, K].

    Oversized payloads -> RESOURCE_EXHAUSTED, anything else wrong -> INVALID_ARGUMENT; the
    message starts with `field`.
    """
    shapes = [tuple(s) for s in (shapes or [(k,), (1, k)])]
    limit = max(int(np.prod(s)) for s in shapes) * 8  # complex64 = 8 bytes
    if len(t.data) > limit:
        raise FrameRejected(grpc.StatusCode.RESOURCE_EXHAUSTED,
                            f"{field}.data: {len(t.data)} bytes is larger than the limit of {limit} bytes "
                            f"({limit // 8} complex64 symbols)")
    if t.dtype != "complex64":
        raise invalid(f"{field}.dtype: expected 'complex64', got {t.dtype!r}")
    shape = tuple(int(d) for d in t.shape)
    if shape not in shapes:
        raise invalid(f"{field}.shape: expected one of {[list(s) for s in shapes]}, got {list(shape)}")
    try:
        arr = decode_tensor(t.data, t.dtype, list(t.shape), field=field, expected_dtype="complex64",
                            max_bytes=limit)
    except WireError as exc:
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if exc.kind == "size" else grpc.StatusCode.INVALID_ARGUMENT
        raise FrameRejected(code, str(exc)) from None
    arr = arr.reshape(1, -1) if arr.ndim == 1 or arr.shape[0] == 1 else arr
    if check_power:
        power = float(np.mean(arr.real.astype(np.float64) ** 2 + arr.imag.astype(np.float64) ** 2))
        if abs(power - 1.0) > POWER_TOLERANCE:
            raise invalid(f"{field}: average power {power:.6g}, expected 1 (transmitters normalize "
                          f"each frame to unit average power, rkdsc.common.channel.normalize_power)")
    return arr


def check_finite(value: float, field: str, lo: float = -math.inf, hi: float = math.inf) -> float:
    if not math.isfinite(value) or not lo <= value <= hi:
        raise invalid(f"{field}: expected a finite value in [{lo}, {hi}], got {value!r}")
    return float(value)


class FrameIdRegistry:
    """Frame ids seen per transmitter (a frame id may be used once per transmitter)."""

    def __init__(self) -> None:
        self._seen: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def claim(self, transmitter_id: str, frame_id: int) -> None:
        with self._lock:
            seen = self._seen.setdefault(transmitter_id, set())
            if frame_id in seen:
                raise invalid(f"frame_id: frame {frame_id} of transmitter {transmitter_id!r} was already "
                              f"received (frame ids must be unique per transmitter)")
            seen.add(frame_id)


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
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", service_name):
        health_servicer.set(name, status)


def build_grpc_server(add_servicer: Callable[[Any, grpc.Server], None], servicer: Any, *, bind: str,
                      service_name: str, max_workers: int, max_message_bytes: int,
                      thread_prefix: str) -> tuple[grpc.Server, health.HealthServicer, int]:
    """The part every service shares: thread pool, message limits, servicer, health (NOT_SERVING
    until set) and reflection, bound to ``bind``. Raises OSError naming the address when the
    port cannot be bound (the caller releases what it built)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=thread_prefix),
                         options=grpc_options(max_message_bytes))
    add_servicer(servicer, server)
    health_servicer = add_health_and_reflection(server, service_name)
    try:  # grpcio raises RuntimeError on a failed bind (older versions returned port 0)
        port = server.add_insecure_port(bind)
    except RuntimeError:
        port = 0
    if port == 0:
        server.stop(None)
        raise OSError(f"{thread_prefix}: cannot bind {bind} (address in use or not available)")
    return server, health_servicer, port


def grpc_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [("grpc.max_receive_message_length", int(max_message_bytes)),
            ("grpc.max_send_message_length", int(max_message_bytes)),
            ("grpc.so_reuseport", 0)]


class ServiceHandle:
    """A created (not yet started) service: the grpc.Server plus what its shutdown needs."""

    def __init__(self, grpc_server: grpc.Server, port: int, service_name: str,
                 health_servicer: health.HealthServicer, metrics_endpoint: MetricsEndpoint | None,
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


def serve(handle: ServiceHandle, ready_file: str | None = None, name: str = "service") -> int:
    """Start, write the ready file (JSON: port, metrics_port, pid), serve until SIGTERM/SIGINT,
    then stop gracefully. Returns the exit status (0)."""
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


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# ============================================================================ the servicer

@dataclass
class _TaskRuntime:
    spec: Any               # rkdsc.common.bundle.TaskSpec
    model: Any              # rkdsc.common.bundle.ServerModel
    batcher: DynamicBatcher


_END = object()


class _Abort:
    def __init__(self, code: grpc.StatusCode, message: str):
        self.code, self.message = code, message


class EdgeServerServicer(pb_grpc.EdgeServerServicer):
    """Decodes channel frames from the relay; dependencies come in through __init__."""

    def __init__(self, bundle, cfg: Config, metrics: ServerMetrics, models: dict[str, Any] | None = None):
        self.bundle = bundle
        self.cfg = cfg
        self.metrics = metrics
        self.top_k = cfg.server.top_k
        # an empty transmitter list in the config means: accept any transmitter id
        self.known_transmitters = {t.id for t in cfg.transmitters}
        self.frame_ids = FrameIdRegistry()
        self.tasks: dict[str, _TaskRuntime] = {}
        for name in bundle.task_names:
            model = (models or {}).get(name) or bundle_lib.ServerModel(bundle, name)
            batcher = DynamicBatcher(model.decode, max_batch=cfg.server.max_batch,
                                     max_wait_s=cfg.server.max_wait_ms / 1000.0,
                                     queue_size=cfg.server.queue_size, name=f"decode[{name}]",
                                     on_batch=self._batch_observer(name))
            self.tasks[name] = _TaskRuntime(model.spec, model, batcher)
        self.manifest_sha256 = bundle_lib.sha256_file(Path(bundle.path) / bundle_lib.MANIFEST_NAME)

    def _batch_observer(self, task: str):
        def observe(batch_size: int, compute_s: float) -> None:
            self.metrics.batch_size.labels(task).observe(batch_size)
            self.metrics.decode_seconds.labels(task).observe(compute_s)
        return observe

    # ------------------------------------------------------------------ per frame
    def _label_tx(self, transmitter_id: str) -> str:
        if self.known_transmitters:
            return transmitter_id if transmitter_id in self.known_transmitters else UNKNOWN_LABEL
        return transmitter_id if transmitter_id and len(transmitter_id) <= 128 else UNKNOWN_LABEL

    def _validate(self, cf: pb.ChannelFrame) -> tuple[_TaskRuntime, np.ndarray]:
        tid = cf.transmitter_id
        if not tid:
            raise invalid("transmitter_id: must not be empty")
        if self.known_transmitters and tid not in self.known_transmitters:
            raise invalid(f"transmitter_id: unknown transmitter {tid!r} "
                          f"(known: {', '.join(sorted(self.known_transmitters))})")
        rt = self.tasks.get(cf.task)
        if rt is None:
            raise invalid(f"task: unknown task {cf.task!r} (known: {', '.join(self.tasks)})")
        k = rt.spec.symbols_per_image
        y = check_symbols(cf.received, "received", k)
        if cf.HasField("h") and (cf.h.data or list(cf.h.shape)):
            check_symbols(cf.h, "h", k, shapes=[(1, 1), (1, k)])
        check_finite(cf.snr_db, "snr_db", -SNR_LIMIT_DB, SNR_LIMIT_DB)
        check_finite(cf.noise_var, "noise_var", 0.0)
        if cf.fading and cf.fading not in FADINGS:
            raise invalid(f"fading: expected one of {', '.join(FADINGS)}, got {cf.fading!r}")
        if cf.has_label and not 0 <= cf.label < rt.spec.num_classes:
            raise invalid(f"label: expected a class index in [0, {rt.spec.num_classes}), got {cf.label}")
        self.frame_ids.claim(tid, cf.frame_id)
        x = channel.complex_to_real(y, rt.spec.compact_dim)[0]  # [1, K] complex -> [compact_dim]
        return rt, np.ascontiguousarray(x, dtype=np.float32)

    def _error_result(self, cf: pb.ChannelFrame, code: grpc.StatusCode, message: str) -> pb.Result:
        return pb.Result(frame_id=cf.frame_id, transmitter_id=cf.transmitter_id, task=cf.task,
                         predicted_class=-1, error=pb.FrameError(code=code.value[0], message=message),
                         decoder_snr_db=cf.snr_db, edge_sent_unix_ns=cf.edge_sent_unix_ns,
                         has_label=cf.has_label, label=cf.label, file=cf.file,
                         server_done_unix_ns=time.time_ns())

    def submit(self, cf: pb.ChannelFrame) -> futures.Future:
        """Validate and queue one frame -> Future[pb.Result]. Raises FrameRejected for a bad
        frame; a full queue / draining server gives an already-completed error Result."""
        tx_label = self._label_tx(cf.transmitter_id)
        task_label = cf.task if cf.task in self.tasks else UNKNOWN_LABEL
        try:
            rt, x = self._validate(cf)
        except FrameRejected:
            self.metrics.frames.labels(tx_label, task_label, "invalid").inc()
            raise
        out: futures.Future = futures.Future()
        try:
            inner = rt.batcher.submit(x, cf.snr_db)
        except QueueFull as exc:
            self.metrics.frames.labels(tx_label, task_label, "rejected").inc()
            out.set_result(self._error_result(cf, grpc.StatusCode.RESOURCE_EXHAUSTED, f"queue: {exc}"))
            return out
        except Draining as exc:
            self.metrics.frames.labels(tx_label, task_label, "draining").inc()
            out.set_result(self._error_result(cf, grpc.StatusCode.UNAVAILABLE, str(exc)))
            return out

        def done(f: futures.Future) -> None:
            try:
                decoded: Decoded = f.result()
            except Draining as exc:
                self.metrics.frames.labels(tx_label, task_label, "draining").inc()
                out.set_result(self._error_result(cf, grpc.StatusCode.UNAVAILABLE, str(exc)))
                return
            except Exception as exc:  # model failure
                log.exception("decode failed for %s/%s", cf.transmitter_id, cf.frame_id)
                self.metrics.frames.labels(tx_label, task_label, "failed").inc()
                out.set_result(self._error_result(cf, grpc.StatusCode.INTERNAL, f"decode failed: {exc}"))
                return
            try:
                result = self._result(cf, rt, decoded, tx_label)
            except Exception as exc:  # noqa: BLE001 - the frame must get an answer, never none
                log.exception("building the result failed for %s/%s", cf.transmitter_id, cf.frame_id)
                self.metrics.frames.labels(tx_label, task_label, "failed").inc()
                result = self._error_result(cf, grpc.StatusCode.INTERNAL, f"result failed: {exc}")
            out.set_result(result)

        inner.add_done_callback(done)
        return out

    def _result(self, cf: pb.ChannelFrame, rt: _TaskRuntime, d: Decoded, tx_label: str) -> pb.Result:
        idx, probs = bundle_lib.topk(d.logits, self.top_k)  # [k], [k]
        names = rt.spec.class_names
        top = [pb.ClassScore(index=int(i), name=str(names[int(i)]), score=float(p)) for i, p in zip(idx, probs)]
        m, task = self.metrics, rt.spec.name
        m.frames.labels(tx_label, task, "ok").inc()
        m.symbols.labels(tx_label, task).inc(rt.spec.symbols_per_image)
        m.queue_seconds.labels(task).observe(d.queue_s)
        if cf.has_label:
            m.labelled.labels(tx_label, task).inc()
            if int(idx[0]) == cf.label:
                m.correct.labels(tx_label, task).inc()
        return pb.Result(frame_id=cf.frame_id, transmitter_id=cf.transmitter_id, task=task, top_k=top,
                         predicted_class=top[0].index, predicted_name=top[0].name, score=top[0].score,
                         decoder_snr_db=cf.snr_db, queue_ms=d.queue_s * 1e3, compute_ms=d.compute_s * 1e3,
                         batch_size=d.batch_size, channel_ms=cf.channel_ms,
                         edge_sent_unix_ns=cf.edge_sent_unix_ns, server_done_unix_ns=time.time_ns(),
                         has_label=cf.has_label, label=cf.label, file=cf.file)

    # ------------------------------------------------------------------ RPCs
    def Decode(self, request_iterator, context):
        out: queue.Queue = queue.Queue()
        lock = threading.Lock()
        state = {"pending": 0, "reader_done": False}

        def deliver(f: futures.Future) -> None:
            out.put(f.result())

        def reader() -> None:
            try:
                for cf in request_iterator:
                    try:
                        fut = self.submit(cf)
                    except FrameRejected as exc:
                        out.put(_Abort(exc.code, exc.message))
                        return
                    except Exception as exc:  # noqa: BLE001 - end the stream with an error, never
                        # silently: the relay and the edge would wait for this frame's result
                        log.exception("Decode: frame %s of %r failed", cf.frame_id, cf.transmitter_id)
                        out.put(_Abort(grpc.StatusCode.INTERNAL,
                                       f"server: frame {cf.frame_id} failed: {type(exc).__name__}: {exc}"))
                        return
                    with lock:
                        state["pending"] += 1
                    fut.add_done_callback(deliver)
            except Exception as exc:  # the client went away / cancelled
                log.debug("Decode stream reader ended: %r", exc)
            finally:
                out.put(_END)

        threading.Thread(target=reader, name="decode-reader", daemon=True).start()
        while True:
            try:
                item = out.get(timeout=1.0)
            except queue.Empty:
                if not context.is_active():
                    return
                continue
            if item is _END:
                state["reader_done"] = True
            elif isinstance(item, _Abort):
                context.abort(item.code, item.message)
            else:
                with lock:
                    state["pending"] -= 1
                yield item
            with lock:
                if state["reader_done"] and state["pending"] == 0:
                    return

    def DecodeOne(self, request, context):
        try:
            result = self.submit(request).result()
        except FrameRejected as exc:
            context.abort(exc.code, exc.message)
        if result.error.code != 0:
            context.abort(grpc.StatusCode(_code_by_value(result.error.code)), result.error.message)
        return result

    def GetInfo(self, request, context):
        tasks = [pb.TaskInfo(name=rt.spec.name, num_classes=rt.spec.num_classes,
                             class_names=[str(c) for c in rt.spec.class_names],
                             compact_dim=rt.spec.compact_dim, symbols_per_image=rt.spec.symbols_per_image)
                 for rt in self.tasks.values()]
        return pb.ServerInfo(tasks=tasks, bundle=str(self.bundle.path), bundle_sha256=self.manifest_sha256,
                             top_k=self.top_k, max_batch=self.cfg.server.max_batch)

    # ------------------------------------------------------------------ lifecycle
    @property
    def pending(self) -> int:
        return sum(rt.batcher.pending for rt in self.tasks.values())

    def drain(self, timeout_s: float) -> bool:
        """Stop taking frames, decode everything queued; True when all batchers finished."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for rt in self.tasks.values():
            ok &= rt.batcher.close(drain=True, timeout=max(0.0, deadline - time.monotonic()))
        return ok


def _code_by_value(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def status_code_from_value(value: int) -> grpc.StatusCode:
    """grpc.StatusCode for its integer value (UNKNOWN when none)."""
    return _code_by_value(value)


# ============================================================================ create / main

def handler_threads(cfg: Config, base: int) -> int:
    """gRPC handler threads for a service of this topology.

    A bidirectional stream (``Relay.Transmit``, ``EdgeServer.Decode``) holds one handler thread
    for its whole lifetime, and a stream arriving when every thread is taken waits, unserved,
    until another stream ends. So the pool keeps ``base`` threads for unary calls (health,
    GetInfo, SetLink, ...) plus two per transmitter of the topology (its stream, and a
    reconnecting or overlapping second one)."""
    return int(base) + 2 * len(cfg.transmitters)


def create_server(cfg: Config, bundle=None, max_workers: int | None = None,
                  models: dict[str, Any] | None = None) -> tuple[ServiceHandle, int]:
    """Load (and verify) the bundle, build the servicer, bind ``server.host:port`` (0 = free
    port) and the metrics endpoint (``server.metrics_port``; 0 = free port, -1 = none).
    ``max_workers`` (handler threads) defaults to ``handler_threads(cfg, 32)``.
    ``models`` (task -> object with ``spec`` and ``decode``) replaces the ServerModels.
    Raises BundleError naming the file when the bundle fails verification."""
    if bundle is None:
        bundle = bundle_lib.load_bundle(cfg.bundle.path, verify=True)
    metrics = ServerMetrics()
    servicer = EdgeServerServicer(bundle, cfg, metrics, models=models)
    if max_workers is None:
        max_workers = handler_threads(cfg, 32)
    try:
        server, health_servicer, port = build_grpc_server(
            pb_grpc.add_EdgeServerServicer_to_server, servicer, bind=cfg.server_bind, service_name=SERVICE_NAME,
            max_workers=max_workers, max_message_bytes=4 * 1024 * 1024, thread_prefix="server")
    except OSError:
        for rt in servicer.tasks.values():
            rt.batcher.close(drain=False)
        raise
    endpoint = MetricsEndpoint(metrics.registry, cfg.server.metrics_port, cfg.server.host) \
        if cfg.server.metrics_port >= 0 else None
    handle = ServiceHandle(server, port, SERVICE_NAME, health_servicer, endpoint, servicer,
                           drain=servicer.drain, drain_timeout_s=cfg.server.drain_timeout_s)
    handle.metrics = metrics
    return handle, port


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rkdsc server", description=(
        "Run the edge server (CAT decoder + semantic decoder) as a gRPC service with health, "
        "reflection and Prometheus /metrics. Stops gracefully on SIGTERM/SIGINT (drains "
        "in-flight frames). Endpoints can be overridden with RKDSC_SERVER_BIND and "
        "RKDSC_SERVER_METRICS_PORT."))
    p.add_argument("--config", required=True, help="topology TOML file (sections [bundle] and [server])")
    p.add_argument("--bundle", default=None, help="bundle directory (overrides [bundle] path)")
    p.add_argument("--ready-file", default=None,
                   help="write JSON {port, metrics_port, pid} here once serving (used by `rkdsc demo`)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = p.parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = load_config(args.config)
        if args.bundle:
            cfg.bundle.path = Path(args.bundle).resolve()
        handle, _ = create_server(cfg)
    except (ConfigError, BundleError, OSError) as exc:
        print(f"rkdsc server: error: {exc}", file=sys.stderr)
        return 2
    return serve(handle, args.ready_file, name="server")


def main() -> None:
    sys.exit(cli())
