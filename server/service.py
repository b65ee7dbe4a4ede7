"""The edge server: CAT decoder + semantic decoder behind gRPC (``rkdsc.v1.EdgeServer``).

    handle, port = create_server(cfg)   # loads + verifies the bundle, binds, metrics endpoint
    handle.start()                      # health SERVING
    handle.stop()                       # NOT_SERVING, drain in-flight frames, stop
    cli(argv) -> exit status            # `rkdsc server`: 0, or 2 for a bad config / bundle / port

Per frame: validate (transmitter, task, received symbols complex64 [K] or [1, K], h, SNR,
label, frame id not seen before) -> ``complex_to_real(y, compact_dim)`` -> dynamic batch
across transmitters (``rkdsc.server.batcher``) -> ``ServerModel.decode`` with the frame's SNR ->
top-k softmax scores. A frame that breaks a rule ends its stream (or unary call) with
INVALID_ARGUMENT, or RESOURCE_EXHAUSTED for size, whose message starts with the field; a
full queue or a draining server answers that frame with a Result whose ``error`` is set
(RESOURCE_EXHAUSTED / UNAVAILABLE) and the stream goes on.

Client strings are bounded (``transmitter_id``, ``task``, ``fading`` at most 128 characters,
``file`` at most 4096 bytes: INVALID_ARGUMENT naming the field and its length) and appear in
messages only shortened (``frames.shown``). Frame ids are remembered in a bounded window per
transmitter (``FrameIdRegistry``). A bad frame on ``Decode`` ends the stream only after the
results of the frames accepted before it were delivered.

Numeric guards (never an OK result with NaN scores): ``received`` must be finite and each
symbol's magnitude at most ``received_limit(K)`` = sqrt(K) + 10, the largest value an
MMSE-equalized unit-power frame can take (INVALID_ARGUMENT "received: ..."); decoder output
that is not finite anyway is answered with a Result whose ``error`` is INTERNAL
("decoder output: ...", outcome ``failed``) and the stream goes on. ``Decode`` runs on the shared
stream pump (``rkdsc.common.service.pump``). Importing this module does not import
onnxruntime (``rkdsc.common.bundle`` loads its runtime lazily).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

import rkdsc.common.bundle as bundle_lib
from rkdsc.common import channel
from rkdsc.common.bundle import BundleError
from rkdsc.common.channel import FADINGS
from rkdsc.common.config import Config, shown_ids
from rkdsc.common.metrics import UNKNOWN_LABEL, MetricsEndpoint, MetricsPortError, ServerMetrics
from rkdsc.common.medium.hooks import decoder_snr_db
from rkdsc.common.service import (SERVER_MAX_MESSAGE_BYTES, SNR_LIMIT_DB, FrameIdRegistry, FrameRejected,
                                  ServiceHandle, StreamSlots, build_grpc_server, check_batch, check_client_strings,
                                  check_finite, check_symbol_rows, check_symbols, handler_threads, invalid, pump, run_cli, serve, shown,
                                  status_code_from_value)
from rkdsc.common.service.security import SERVER, SERVER_POLICY, Guard, describe, server_credentials
from rkdsc.common.service.codecs import codec_infos, codec_view
from rkdsc.v1 import emulator_pb2 as pb
from rkdsc.v1 import emulator_pb2_grpc as pb_grpc
from rkdsc.server.batcher import Decoded, Draining, DynamicBatcher, QueueFull

log = logging.getLogger("rkdsc.server")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["EdgeServer"].full_name  # "rkdsc.v1.EdgeServer"
UNARY_THREADS = 32  # handler threads kept for unary calls and health beyond the stream slots
UNCONFIGURED_TRANSMITTERS = 256  # transmitters whose frame ids are remembered when any id is accepted
NOISE_TAIL = 10.0  # bound on |n| / sigma used by received_limit: P(|n| > 10 sigma) = e^-100 per symbol


def received_limit(k: int) -> float:
    """Largest |y_k| an MMSE-equalized frame of K unit-average-power symbols can have.

    z_hat = (|h|^2 z + conj(h) n) / (|h|^2 + sigma^2): the signal term is at most |z_k| <= sqrt(K)
    (all of a frame's power in one symbol), the noise term at most |n_k| / (2 sigma) (the
    maximum of |h| / (|h|^2 + sigma^2) over h), for any SNR and any fading. With
    |n_k| <= NOISE_TAIL * sigma (|n|^2 / sigma^2 is Exp(1)) the limit is sqrt(K) + 5; we allow
    twice the noise term, sqrt(K) + 10, so a real frame is never refused."""
    return math.sqrt(k) + NOISE_TAIL


def _check_magnitude(y: np.ndarray, field: str, limit: float) -> None:
    peak = float(np.max(np.abs(y.astype(np.complex128)))) if y.size else 0.0
    if not peak <= limit:
        where = int(np.argmax(np.abs(y.astype(np.complex128)).ravel()))
        raise invalid(f"{field}: symbol {where} has magnitude {peak:.6g}, larger than {limit:.6g} = sqrt(K) + "
                      f"{NOISE_TAIL:g} with K = {y.size}, the most an MMSE-equalized unit-power frame can "
                      f"reach at any SNR (rkdsc.server.service.received_limit)")


def batcher_limits(cfg: Config) -> dict[str, Any]:
    """The [server] settings every DynamicBatcher of the server takes (default codecs and the others)."""
    srv = cfg.server
    return {"max_batch": srv.max_batch, "max_wait_s": srv.max_wait_ms / 1000.0, "queue_size": srv.queue_size,
            "queue_wait_s": srv.queue_wait_ms / 1000.0}


# ============================================================================ codecs (adaptive rate)

def codec_runtimes(bundle, cfg: Config, observer) -> dict[tuple[str, str], "_TaskRuntime"]:
    """A decoder and a batcher for every codec of every task besides the task's default one."""
    out: dict[tuple[str, str], _TaskRuntime] = {}
    for name in bundle.task_names:
        spec = bundle.task(name)
        for c in spec.codecs:
            if (c.edge, c.server) == (spec.edge, spec.server):
                continue
            model = bundle_lib.ServerModel(bundle, name, codec=c.name, spin_wait=cfg.server.onnx_spin_wait)
            batcher = DynamicBatcher(model.decode, **batcher_limits(cfg), name=f"decode[{name}/{c.name}]",
                                     on_batch=observer(name))
            out[(name, c.name)] = _TaskRuntime(codec_view(spec, c.name), model, batcher)
    return out


def pick_codec(rt: "_TaskRuntime", codecs: dict, codec: str) -> "_TaskRuntime":
    """The runtime of codec ``codec`` of task runtime ``rt`` (INVALID_ARGUMENT naming ``codec``)."""
    if not codec or codec == rt.spec.default_codec.name:
        return rt
    other = codecs.get((rt.spec.name, codec))
    if other is None:
        codec_view(rt.spec, codec)  # raises, naming the known codecs
        raise invalid(f"codec: {shown(codec)} has no decoder on this server")
    return other


# ============================================================================ the servicer

MAX_BATCH_ROWS = 4096  # frames in one ChannelFrameBatch at most (the message limit bounds it first)


class _Row:
    """One frame of a ChannelFrameBatch, with the attributes of a ChannelFrame that results use."""
    __slots__ = ("transmitter_id", "task", "frame_id", "has_label", "label", "file", "snr_db", "channel_ms",
                 "edge_sent_unix_ns")

    def __init__(self, cb: pb.ChannelFrameBatch, meta: pb.FrameMeta):
        self.transmitter_id, self.task, self.snr_db = cb.transmitter_id, cb.task, cb.snr_db
        self.channel_ms, self.edge_sent_unix_ns = cb.channel_ms, cb.edge_sent_unix_ns
        self.frame_id, self.has_label, self.label, self.file = meta.frame_id, meta.has_label, meta.label, meta.file


@dataclass
class _TaskRuntime:
    spec: Any               # rkdsc.common.bundle.TaskSpec
    model: Any              # rkdsc.common.bundle.ServerModel
    batcher: DynamicBatcher

    @property
    def names(self) -> list[str]:
        """The task's class names as str, by class index (made once)."""
        if "_names" not in self.__dict__:
            self.__dict__["_names"] = [str(c) for c in self.spec.class_names]
        return self.__dict__["_names"]


def _topk():
    """``rkdsc.common.bundle.topk``, looked up once (the package resolves it lazily)."""
    global _TOPK
    if _TOPK is None:
        _TOPK = bundle_lib.topk
    return _TOPK


_TOPK = None


class EdgeServerServicer(pb_grpc.EdgeServerServicer):
    """Decodes channel frames from the relay; dependencies come in through __init__."""

    def __init__(self, bundle, cfg: Config, metrics: ServerMetrics, models: dict[str, Any] | None = None):
        self.bundle = bundle
        self.cfg = cfg
        self.metrics = metrics
        self.top_k = cfg.server.top_k
        # an empty transmitter list in the config means: accept any transmitter id
        self.known_transmitters = {t.id for t in cfg.transmitters}
        # bounded: a window of ids per transmitter, and at most the configured transmitters (or
        # UNCONFIGURED_TRANSMITTERS when any id is accepted)
        self.frame_ids = FrameIdRegistry(max_transmitters=len(self.known_transmitters) or UNCONFIGURED_TRANSMITTERS)
        self.slots = StreamSlots(cfg.server.max_streams, "server: Decode", "server.max_streams")
        self.tasks: dict[str, _TaskRuntime] = {}
        for name in bundle.task_names:
            model = (models or {}).get(name) or bundle_lib.ServerModel(bundle, name, spin_wait=cfg.server.onnx_spin_wait)
            batcher = DynamicBatcher(model.decode, **batcher_limits(cfg), name=f"decode[{name}]",
                                     on_batch=self._batch_observer(name),
                                     others_may_send=lambda: self.slots.open > 1)
            self.tasks[name] = _TaskRuntime(model.spec, model, batcher)
        # (task, codec) -> the decoder and batcher of a task's other codecs (SNR-adaptive rate)
        self.codecs: dict[tuple[str, str], _TaskRuntime] = codec_runtimes(bundle, cfg, self._batch_observer)
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

    def _check_sender(self, tid: str) -> None:
        if not tid:
            raise invalid("transmitter_id: must not be empty")
        if self.known_transmitters and tid not in self.known_transmitters:
            raise invalid(f"transmitter_id: unknown transmitter {shown(tid)} "
                          f"(known: {shown_ids(sorted(self.known_transmitters))})")

    def _check_channel(self, msg) -> None:
        check_finite(msg.snr_db, "snr_db", -SNR_LIMIT_DB, SNR_LIMIT_DB)
        check_finite(msg.noise_var, "noise_var", 0.0)
        if msg.fading and msg.fading not in FADINGS:
            raise invalid(f"fading: expected one of {', '.join(FADINGS)}, got {shown(msg.fading)}")

    def _check_label(self, item, rt: _TaskRuntime, field: str = "label") -> None:
        if item.has_label and not 0 <= item.label < rt.spec.num_classes:
            raise invalid(f"{field}: expected a class index in [0, {rt.spec.num_classes}), got {item.label}")

    def _task(self, name: str, codec: str = "") -> _TaskRuntime:
        rt = self.tasks.get(name)
        if rt is None:
            raise invalid(f"task: unknown task {shown(name)} (known: {', '.join(self.tasks)})")
        return pick_codec(rt, self.codecs, codec)  # the frame's codec ("" = the task's default)

    def _validate(self, cf: pb.ChannelFrame) -> tuple[_TaskRuntime, np.ndarray]:
        tid = cf.transmitter_id
        if not tid:
            raise invalid("transmitter_id: must not be empty")
        check_client_strings(cf)
        self._check_sender(tid)
        rt = self._task(cf.task, cf.codec)
        k = rt.spec.symbols_per_image
        y = check_symbols(cf.received, "received", k)
        _check_magnitude(y, "received", received_limit(k))
        if cf.HasField("h") and (cf.h.data or list(cf.h.shape)):
            check_symbols(cf.h, "h", k, shapes=[(1, 1), (1, k)])
        self._check_channel(cf)
        self._check_label(cf, rt)
        self.frame_ids.claim(tid, cf.frame_id)
        x = channel.complex_to_real(y, rt.spec.compact_dim)[0]  # [1, K] complex -> [compact_dim]
        return rt, np.ascontiguousarray(x, dtype=np.float32)

    def _validate_batch(self, cb: pb.ChannelFrameBatch) -> tuple[_TaskRuntime, np.ndarray]:
        """A ChannelFrameBatch -> (task, x [N, compact_dim]); every rule of ``_validate``, per row."""
        tid = cb.transmitter_id
        if not tid:
            raise invalid("transmitter_id: must not be empty")
        n = check_batch(cb, MAX_BATCH_ROWS)
        self._check_sender(tid)
        rt = self._task(cb.task, cb.codec)
        k = rt.spec.symbols_per_image
        y = check_symbol_rows(cb.received, "received", k, n)                  # [N, K]
        _check_magnitude(y, "received", received_limit(k))
        if cb.HasField("h") and (cb.h.data or list(cb.h.shape)):
            check_symbol_rows(cb.h, "h", k, n, shapes=[(n, 1), (n, k)])
        self._check_channel(cb)
        for i, meta in enumerate(cb.frames):
            self._check_label(meta, rt, f"frames[{i}].label")
        self.frame_ids.claim_many(tid, [m.frame_id for m in cb.frames])
        x = channel.complex_to_real(y, rt.spec.compact_dim)                 # [N, K] complex -> [N, compact_dim]
        return rt, np.ascontiguousarray(x, dtype=np.float32)

    def _error_result(self, cf, code: grpc.StatusCode, message: str) -> pb.Result:
        """``cf``: a ChannelFrame, or a ``_Row`` of a batch."""
        return pb.Result(frame_id=cf.frame_id, transmitter_id=cf.transmitter_id, task=cf.task,
                         predicted_class=-1, error=pb.FrameError(code=code.value[0], message=message),
                         decoder_snr_db=cf.snr_db, edge_sent_unix_ns=cf.edge_sent_unix_ns,
                         has_label=cf.has_label, label=cf.label, file=cf.file,
                         server_done_unix_ns=time.time_ns())

    def _failed(self, cf, rt: _TaskRuntime, decoded: "Decoded | None", exc: BaseException | None,
                tx_label: str, task_label: str) -> pb.Result:
        """The error Result of a frame that has no answer (``cf``: a ChannelFrame or a ``_Row``):
        the server is draining (``exc`` Draining), the model failed (``exc``), or its logits are
        not finite (``decoded``)."""
        if isinstance(exc, Draining):
            self.metrics.frames.labels(tx_label, task_label, "draining").inc()
            return self._error_result(cf, grpc.StatusCode.UNAVAILABLE, str(exc))
        if exc is not None:  # model failure
            log.error("decode failed for %s/%s: %s: %s", shown(cf.transmitter_id), cf.frame_id,
                      type(exc).__name__, exc)
            self.metrics.frames.labels(tx_label, task_label, "failed").inc()
            return self._error_result(cf, grpc.StatusCode.INTERNAL, f"decode failed: {exc}")
        bad = int(np.count_nonzero(~np.isfinite(decoded.logits)))
        if bad:  # the input passed every check, so this is the model's fault: INTERNAL
            log.error("decode of %s/%s gave %d non-finite logits", shown(cf.transmitter_id), cf.frame_id, bad)
            self.metrics.frames.labels(tx_label, task_label, "failed").inc()
            return self._error_result(
                cf, grpc.StatusCode.INTERNAL,
                f"decoder output: {bad} of {decoded.logits.size} logits are not finite (NaN or inf) for "
                f"frame {cf.frame_id}; the received symbols were within bounds, so the model "
                f"({rt.spec.server}) is at fault")

    def _queue_error(self, rows: list, exc: Exception, tx_label: str, task_label: str) -> list[pb.Result]:
        full = isinstance(exc, QueueFull)
        self.metrics.frames.labels(tx_label, task_label, "rejected" if full else "draining").inc(len(rows))
        code = grpc.StatusCode.RESOURCE_EXHAUSTED if full else grpc.StatusCode.UNAVAILABLE
        message = f"queue: {exc}" if full else str(exc)
        return [self._error_result(r, code, message) for r in rows]

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
        except (QueueFull, Draining) as exc:
            out.set_result(self._queue_error([cf], exc, tx_label, task_label)[0])
            return out

        def done(f: futures.Future) -> None:
            exc = f.exception()
            out.set_result(self._outcomes([cf], rt, [exc or f.result()], tx_label, task_label)[0])

        inner.add_done_callback(done)
        return out

    def submit_batch(self, cb: pb.ChannelFrameBatch) -> futures.Future:
        """Validate and queue a batched message -> Future[pb.ResultBatch] (one Result per row, in
        row order). Raises FrameRejected for a bad message (no row of it is decoded); a full
        queue / draining server answers every row with an error Result."""
        tx_label = self._label_tx(cb.transmitter_id)
        task_label = cb.task if cb.task in self.tasks else UNKNOWN_LABEL
        try:
            rt, x = self._validate_batch(cb)
            snr = decoder_snr_db(cb)  # [medium]: one SNR per row (issue 13); else cb.snr_db
        except FrameRejected:
            self.metrics.frames.labels(tx_label, task_label, "invalid").inc(max(1, len(cb.frames)))
            raise
        rows = [_Row(cb, m) for m in cb.frames]
        out: futures.Future = futures.Future()
        try:
            inner = rt.batcher.submit_many(x, snr)
        except (QueueFull, Draining) as exc:
            out.set_result(pb.ResultBatch(results=self._queue_error(rows, exc, tx_label, task_label)))
            return out

        def done(f: futures.Future) -> None:
            exc = f.exception()
            decoded = [exc] * len(rows) if exc else f.result()  # Decoded, or the exception of a failed row
            out.set_result(pb.ResultBatch(results=self._outcomes(rows, rt, decoded, tx_label, task_label)))

        inner.add_done_callback(done)
        return out

    def _outcomes(self, rows: list["_Row"], rt: _TaskRuntime, decoded: list, tx_label: str,
                  task_label: str) -> list[pb.Result]:
        """The Results of a message's rows (ChannelFrames or ``_Row``s), in row order: the decoded
        rows with finite logits get their top-k in one vectorized call and their counters once per
        message; every other row (a failed decode, non-finite logits) goes through ``_failed``."""
        good = [i for i, d in enumerate(decoded) if not isinstance(d, BaseException)]
        if good:
            logits = np.stack([decoded[i].logits for i in good])                  # [M, C]
            finite = np.isfinite(logits).all(axis=1)                             # [M]
            if not finite.all():
                good = [i for i, ok in zip(good, finite.tolist()) if ok]
                logits = logits[finite]
        results: list = [None] * len(rows)
        if good:
            try:
                self._good_results(rows, rt, decoded, good, logits, tx_label, results)
            except Exception as err:  # noqa: BLE001 - every frame gets an answer, never none
                log.exception("building the results of a message of %s failed", shown(rows[0].transmitter_id))
                self.metrics.frames.labels(tx_label, task_label, "failed").inc(len(good))
                for i in good:
                    results[i] = self._error_result(rows[i], grpc.StatusCode.INTERNAL, f"result failed: {err}")
        for i, (r, d) in enumerate(zip(rows, decoded)):
            if results[i] is None:
                exc = d if isinstance(d, BaseException) else None
                results[i] = self._failed(r, rt, None if exc else d, exc, tx_label, task_label)
        return results

    def _good_results(self, rows, rt: _TaskRuntime, decoded: list, good: list[int], logits: np.ndarray,
                      tx_label: str, results: list) -> None:
        idx, probs = _topk()(logits, self.top_k)                                # [M, k], [M, k]
        idx_l, probs_l = idx.tolist(), probs.tolist()
        names = rt.names
        spec, task = rt.spec, rt.spec.name
        codec, k_sym = spec.default_codec.name, spec.symbols_per_image
        queue = self.metrics.queue_seconds.labels(task)
        labelled = correct = 0
        done_ns = time.time_ns()
        for j, i in enumerate(good):
            r, d = rows[i], decoded[i]
            top = [pb.ClassScore(index=c, name=names[c], score=p) for c, p in zip(idx_l[j], probs_l[j])]
            queue.observe(d.queue_s)
            if r.has_label:
                labelled += 1
                correct += idx_l[j][0] == r.label
            results[i] = pb.Result(
                frame_id=r.frame_id, transmitter_id=r.transmitter_id, task=task, top_k=top,
                predicted_class=top[0].index, predicted_name=top[0].name, score=top[0].score,
                decoder_snr_db=r.snr_db, queue_ms=d.queue_s * 1e3, compute_ms=d.compute_s * 1e3,
                batch_size=d.batch_size, channel_ms=r.channel_ms, edge_sent_unix_ns=r.edge_sent_unix_ns,
                server_done_unix_ns=done_ns, has_label=r.has_label, label=r.label, file=r.file,
                codec=codec, symbols_per_image=k_sym)
        m = self.metrics
        m.frames.labels(tx_label, task, "ok").inc(len(good))
        m.symbols.labels(tx_label, task).inc(k_sym * len(good))
        if labelled:
            m.labelled.labels(tx_label, task).inc(labelled)
        if correct:
            m.correct.labels(tx_label, task).inc(correct)

    # ------------------------------------------------------------------ RPCs
    def Decode(self, request_iterator, context):
        yield from self._decode_stream(request_iterator, context, batched=False)

    def DecodeBatch(self, request_iterator, context):
        yield from self._decode_stream(request_iterator, context, batched=True)

    def _decode_stream(self, request_iterator, context, batched: bool):
        """Decode / DecodeBatch on the shared pump: each message's result (a Result, or the
        ResultBatch of a ChannelFrameBatch) in completion order."""
        def failed(msg, exc: Exception) -> FrameRejected:
            # the relay and the edge would wait for this frame's result: end the stream with an error
            first = (msg.frames[0].frame_id if msg.frames else None) if batched else msg.frame_id
            what = f"message (first frame {first})" if batched else f"frame {first}"
            log.exception("%s: %s of %s failed", "DecodeBatch" if batched else "Decode", what,
                          shown(msg.transmitter_id))
            return FrameRejected(grpc.StatusCode.INTERNAL, f"server: {what} failed: {type(exc).__name__}: {exc}")

        self.slots.acquire(context)  # RESOURCE_EXHAUSTED naming server.max_streams
        try:
            yield from pump(request_iterator, self.submit_batch if batched else self.submit, context, log,
                            name="DecodeBatch stream" if batched else "Decode stream", thread_name="decode-reader",
                            on_error=failed, drain_s=self.cfg.server.drain_timeout_s)
        finally:
            self.slots.release()

    def DecodeOne(self, request, context):
        try:
            result = self.submit(request).result()
        except FrameRejected as exc:
            context.abort(exc.code, exc.message)
        if result.error.code != 0:
            context.abort(status_code_from_value(result.error.code), result.error.message)
        return result

    def GetInfo(self, request, context):
        tasks = [pb.TaskInfo(name=rt.spec.name, num_classes=rt.spec.num_classes,
                             class_names=[str(c) for c in rt.spec.class_names],
                             compact_dim=rt.spec.compact_dim, symbols_per_image=rt.spec.symbols_per_image,
                             codecs=codec_infos(rt.spec))
                 for rt in self.tasks.values()]
        return pb.ServerInfo(tasks=tasks, bundle=str(self.bundle.path), bundle_sha256=self.manifest_sha256,
                             top_k=self.top_k, max_batch=self.cfg.server.max_batch)

    # ------------------------------------------------------------------ lifecycle
    @property
    def pending(self) -> int:
        return sum(rt.batcher.pending for rt in [*self.tasks.values(), *self.codecs.values()])

    def drain(self, timeout_s: float) -> bool:
        """Stop taking frames, decode everything queued; True when all batchers finished."""
        deadline = time.monotonic() + timeout_s
        ok = True
        for rt in [*self.tasks.values(), *self.codecs.values()]:
            ok &= rt.batcher.close(drain=True, timeout=max(0.0, deadline - time.monotonic()))
        return ok


# ============================================================================ create / main

def create_server(cfg: Config, bundle=None, max_workers: int | None = None,
                  models: dict[str, Any] | None = None) -> tuple[ServiceHandle, int]:
    """Load (and verify) the bundle, build the servicer, bind ``server.host:port`` (0 = free
    port) and the metrics endpoint (``server.metrics_port``; 0 = free port, -1 = none).
    ``max_workers`` (handler threads) defaults to ``handler_threads(cfg, 32, server.max_streams)``:
    32 threads for unary calls and health beyond the ``server.max_streams`` Decode streams
    admitted at a time (one more is refused with RESOURCE_EXHAUSTED naming the field).
    ``models`` (task -> object with ``spec`` and ``decode``) replaces the ServerModels.
    Raises BundleError naming the file when the bundle fails verification."""
    credentials = server_credentials(cfg.tls, SERVER)  # TLSError (a ConfigError) before anything is built
    guard = Guard(cfg.tls, SERVER_POLICY, "server")   # only the relay's identity may call EdgeServer
    if bundle is None:
        bundle = bundle_lib.load_bundle(cfg.bundle.path, verify=True)
    if problems := bundle_lib.topology_task_problems(cfg, bundle):  # every transmitter's task is served here
        raise BundleError("\n".join(problems))
    metrics = ServerMetrics()
    servicer = EdgeServerServicer(bundle, cfg, metrics, models=models)
    if max_workers is None:
        max_workers = handler_threads(cfg, UNARY_THREADS, cfg.server.max_streams)
    endpoint = None
    try:  # either port failing (an OSError naming the address and the field) releases everything
        if cfg.server.metrics_port >= 0:
            endpoint = MetricsEndpoint(metrics.registry, cfg.server.metrics_port, cfg.metrics.host or cfg.server.host,
                                       web_config=cfg.metrics.web_config)
        server, health_servicer, port = build_grpc_server(
            pb_grpc.add_EdgeServerServicer_to_server, servicer, bind=cfg.server_bind, service_name=SERVICE_NAME,
            max_workers=max_workers, max_message_bytes=SERVER_MAX_MESSAGE_BYTES, thread_prefix="server",
            credentials=credentials, interceptors=guard.interceptors)
    except OSError as exc:
        if endpoint is not None:
            endpoint.close()
        for rt in [*servicer.tasks.values(), *servicer.codecs.values()]:
            rt.batcher.close(drain=False)
        if not isinstance(exc, MetricsPortError):  # the gRPC port: name its config field too
            raise OSError(f"server.host/server.port (or RKDSC_SERVER_BIND): {exc}") from None
        raise
    handle = ServiceHandle(server, port, SERVICE_NAME, health_servicer, endpoint, servicer,
                           drain=servicer.drain, drain_timeout_s=cfg.server.drain_timeout_s)
    handle.metrics = metrics
    log.info("server: %s on %s:%d", describe(cfg.tls, guard), cfg.server.host, port)
    return handle, port


def cli(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="rkdsc server", description=(
        "Run the edge server (CAT decoder + semantic decoder) as a gRPC service with health, "
        "reflection and Prometheus /metrics. Stops gracefully on SIGTERM/SIGINT (drains "
        "in-flight frames). Endpoints can be overridden with RKDSC_SERVER_BIND and "
        "RKDSC_SERVER_METRICS_PORT. TLS / mutual TLS: [tls] of the topology or RKDSC_TLS=mtls "
        "RKDSC_TLS_DIR=DIR (docs/security.md); only the relay's identity may call it."))
    p.add_argument("--config", required=True, help="topology TOML file (sections [bundle] and [server])")
    p.add_argument("--bundle", default=None, help="bundle directory (overrides [bundle] path)")
    p.add_argument("--ready-file", default=None,
                   help="write JSON {port, metrics_port, pid} here once serving (used by `rkdsc demo`)")

    def build(args: argparse.Namespace, cfg: Config) -> ServiceHandle:
        if args.bundle:
            cfg.bundle.path = Path(args.bundle).resolve()
        return create_server(cfg)[0]

    return run_cli(p, argv, build, lambda args, handle: serve(handle, args.ready_file, name="server", logger=log),
                   errors=(BundleError, OSError))


def main() -> None:
    sys.exit(cli())
